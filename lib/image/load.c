/* load.c - format detection and loading through the table of formats
 * (format.h): each format says whether a file's first bytes are its own and
 * loads it; this file knows no format by itself. */
#include "image/format.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* In sniffing order: magic numbers first, NIfTI (named files) last. */
static const esg_image_format *const FORMATS[] = {
	&esg_format_png, &esg_format_npy, &esg_format_nifti,
};
#define N_FORMATS (sizeof FORMATS / sizeof *FORMATS)

static const esg_image_format *sniff(const char *path)
{
	unsigned char head[ESG_SNIFF_BYTES] = { 0 };
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t got = fread(head, 1, sizeof head, f);
	fclose(f);
	for (size_t i = 0; i < N_FORMATS; i++)
		if (FORMATS[i]->sniff(head, got, path))
			return FORMATS[i];
	return NULL;
}

esg_format esg_sniff_format(const char *path)
{
	const esg_image_format *fmt = sniff(path);
	return fmt ? fmt->id : ESG_FMT_UNKNOWN;
}

esg_image *esg_load_image(const char *path, const esg_load_opts *opts)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		esg_set_error("cannot open '%s': %s", path, strerror(errno));
		return NULL;
	}
	fclose(f);
	const esg_image_format *fmt = sniff(path);
	if (fmt)
		return fmt->load(path, opts);
	esg_set_error("'%s': not a NIfTI (.nii, .nii.gz), PNG or NPY file", path);
	return NULL;
}
