/* format.h - the table entry each image format exports to the loader
 * (load.c); for lib/image only.  A new format: one file defining an
 * esg_image_format, one line here and one in load.c's FORMATS. */
#ifndef ESG_IMAGE_FORMAT_H
#define ESG_IMAGE_FORMAT_H

#include "image/image.h"

#include <stddef.h>

/* How many leading bytes of a file the sniffers see (a NIfTI-1 header). */
#define ESG_SNIFF_BYTES 352

typedef struct esg_image_format {
	esg_format id;
	/* 1 if the file is of this format: its first bytes (got of them, zero
	 * padded to ESG_SNIFF_BYTES) and, where the format needs it, its name */
	int (*sniff)(const unsigned char *head, size_t got, const char *path);
	esg_image *(*load)(const char *path, const esg_load_opts *opts);
} esg_image_format;

extern const esg_image_format esg_format_png;     /* png.c */
extern const esg_image_format esg_format_npy;     /* npy.c */
extern const esg_image_format esg_format_nifti;   /* nifti.c */

#endif
