/* esg_load.h - images (NIfTI-1/2, PNG, NPY) to model-ready float32 arrays,
 * and the preprocessing esg-load applies before a model (slice, intensity
 * normalisation, crop / pad keeping the affine right).
 *
 * Axis conventions (see also man/esg-load.1):
 *  - An image is float32, C order [N, C, s0, s1, ...] with 1..3 spatial axes.
 *  - axes[] names the original voxel axis of each spatial tensor axis:
 *    'i', 'j', 'k' are the NIfTI voxel axes (dim[1], dim[2], dim[3]).
 *    "ijk" (the default) is exactly nibabel's get_fdata() array; "kji"
 *    (reverse) is the file's own memory order.  PNG: i = row, j = column.
 *  - affine is 4x4 row-major voxel -> world (RAS+ mm) and always takes the
 *    voxel index in i, j, k order, whatever the tensor order; a voxel axis
 *    missing from axes[] (a 2D slice or a 2D image) has index 0.
 *  - spacing[] is per spatial tensor axis, in tensor order.
 * Library rules as in esg.h: no printing, -1 / NULL with esg_error().
 */
#ifndef ESG_LOAD_H
#define ESG_LOAD_H

#include "stream/stream.h"

#define ESG_MAX_SPATIAL 3

typedef struct esg_image {
	int64_t n;                        /* records (1 unless 4D -> records or NPY N axis) */
	int64_t c;                        /* channels */
	int nsp;                          /* spatial axes, 1..ESG_MAX_SPATIAL */
	int64_t dim[ESG_MAX_SPATIAL];     /* spatial sizes, tensor order */
	char axes[ESG_MAX_SPATIAL + 1];   /* "ijk", "kji", "ij", ... */
	double affine[16];
	double spacing[ESG_MAX_SPATIAL];
	float *data;                      /* owned, n * c * prod(dim) floats */
} esg_image;

typedef struct esg_load_opts {
	int reverse;            /* spatial axes in reverse order (k, j, i) */
	int volumes_as_records; /* NIfTI 4th dimension -> records, not channels */
	const char *layout;     /* NPY only: one letter per array axis, N = records,
				 * C = channels, any other letter spatial; NULL = all spatial */
} esg_load_opts;

typedef enum esg_format { ESG_FMT_UNKNOWN, ESG_FMT_NIFTI, ESG_FMT_PNG, ESG_FMT_NPY } esg_format;

/* Guess a file's format from its first bytes (and its name for NIfTI). */
esg_format esg_sniff_format(const char *path);

/* Load any supported file; opts may be NULL.  new, freed with esg_image_free. */
esg_image *esg_load_image(const char *path, const esg_load_opts *opts);
esg_image *esg_load_nifti(const char *path, const esg_load_opts *opts);
esg_image *esg_load_png(const char *path, const esg_load_opts *opts);
esg_image *esg_load_npy(const char *path, const esg_load_opts *opts);
void esg_image_free(esg_image *im);

int64_t esg_image_voxels(const esg_image *im);   /* prod(dim) */

/* ---- NPY on a memory buffer (the fuzzer's entry point) ---------------- */

typedef struct esg_npy {
	char kind;              /* 'f', 'i', 'u', 'b' */
	int itemsize;           /* bytes */
	int big_endian;
	int fortran_order;
	int ndim;               /* 0 .. ESG_MAX_DIMS */
	int64_t shape[ESG_MAX_DIMS];
	size_t data_offset;     /* where the data starts in the buffer */
	size_t data_bytes;      /* prod(shape) * itemsize */
} esg_npy;

/* Parse and check the header of an NPY document of `size` bytes (the data
 * must follow it exactly).  name is used in messages. */
int esg_npy_parse(const void *buf, size_t size, const char *name, esg_npy *out);
/* Parse and convert to an image (layout as in esg_load_opts). */
esg_image *esg_npy_image(const void *buf, size_t size, const char *name,
			 const esg_load_opts *opts);

/* ---- array helpers ---------------------------------------------------- */

/* dst = src with its nd axes reversed (src C order with shape dims[]);
 * dst, C order, has shape dims[nd-1], ..., dims[0].  Cache-tiled. */
void esg_reverse_axes_f32(const float *src, float *dst, int nd, const int64_t *dims);
/* Reverse the spatial axes of every [n, c] block in place (ijk <-> kji);
 * axes[] and spacing[] follow.  The affine does not change. */
int esg_image_reverse(esg_image *im);

/* ---- preprocessing (lib/preprocess.c) --------------------------------- */

typedef enum esg_norm {
	ESG_NORM_NONE, ESG_NORM_MINMAX, ESG_NORM_ZSCORE, ESG_NORM_PERCENTILE
} esg_norm;

/* Normalise n floats in place:
 *  minmax: (x - min) / (max - min), a constant array becomes 0;
 *  zscore: (x - mean) / sd (population sd), a constant array becomes 0;
 *  percentile: clip to the lo-th and hi-th percentiles (0..100, linear
 *  interpolation between order statistics as numpy.percentile) and rescale
 *  that range to [0, 1].
 * nonzero: statistics from the non-zero values only (x == 0 stays 0).
 * Non-finite values are refused. */
int esg_normalise(float *x, int64_t n, esg_norm mode, double lo, double hi, int nonzero);
/* Each channel of each record separately. */
int esg_image_normalise(esg_image *im, esg_norm mode, double lo, double hi, int nonzero);
/* numpy.percentile(x, p) (linear) over n values; sorts a copy. */
int esg_percentile(const float *x, int64_t n, const double *p, int np, double *out);

/* Sizes for fitting dims to multiples of mult[]: crop (down to a multiple,
 * at least mult) or pad (up to a multiple); the removed / added voxels go
 * half before and half after (centre: the odd one after) or all after (end).
 * off[a] is the original index of the new voxel 0 along axis a: positive
 * when cropping, negative when padding. */
int esg_fit_multiple(int nsp, const int64_t *dim, const int64_t *mult, int crop,
		     int at_end, int64_t *off, int64_t *newdim);
/* Move the affine's origin so that world coordinates of kept voxels stay:
 * new voxel 0 along tensor axis a is old voxel off[a]. */
void esg_affine_shift(double affine[16], const char *axes, const int64_t *off);
/* Crop and / or pad every [n, c] block to newdim, new voxel 0 being old
 * voxel off[] (voxels outside the old grid get pad_value); affine follows. */
int esg_image_crop_pad(esg_image *im, const int64_t *off, const int64_t *newdim,
		       float pad_value);
/* Keep the one slice at index along the tensor spatial axis holding voxel
 * axis letter ('i', 'j', 'k'), dropping that axis; the affine's origin moves
 * to the slice so (remaining axes, 0) maps to the same world points. */
int esg_image_slice(esg_image *im, char letter, int64_t index);
/* New image holding record r only (n = 1). */
esg_image *esg_image_record(const esg_image *im, int64_t r);
/* Channel conversion of gray (1), gray+alpha (2), RGB (3), RGBA (4) images:
 * gray = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, as PIL's convert('L') but
 * not rounded), alpha dropped; rgb replicates gray; no-alpha drops alpha. */
typedef enum esg_chan { ESG_CHAN_KEEP, ESG_CHAN_GRAY, ESG_CHAN_RGB, ESG_CHAN_NOALPHA } esg_chan;
int esg_image_channels(esg_image *im, esg_chan mode);
/* Concatenate b's channels after a's (same n, spatial dims); frees b. */
int esg_image_cat_channels(esg_image *a, esg_image *b);

#endif
