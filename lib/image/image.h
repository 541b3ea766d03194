/* image.h - image input and output, the public header of lib/image/:
 * images (NIfTI-1/2, PNG, NPY) to model-ready float32 arrays, the
 * preprocessing esg-load applies before a model (slice, intensity
 * normalisation, crop / pad keeping the affine right), resampling, tensors as
 * NIfTI-ordered volumes, and the PNG and NIfTI writers.
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
 * Library rules as in stream/stream.h: no printing, -1 / NULL with esg_error().
 */
#ifndef ESG_IMAGE_H
#define ESG_IMAGE_H

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

/* ---- preprocessing (lib/image/preprocess.c) --------------------------------- */

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

/* ---- volumes --------------------------------------------------------- */

/* A float volume in NIfTI voxel order: element (i, j, k) of frame f is
 * data[i + nx * (j + ny * (k + nz * f))]; frames are the N * C (batch,
 * channel) pairs, n-major. */
typedef struct esg_vol {
	int64_t dim[3];   /* nx, ny, nz (an axis a 2D tensor lacks has size 1) */
	int64_t n, c;     /* batch items and channels; frames = n * c */
	int spatial;      /* 2 or 3 spatial axes in the tensor */
	/* 2D only: the NIfTI axes (0 = i, 1 = j, 2 = k) of the tensor's H and W */
	int axis_h, axis_w;
	float *data;      /* owned */
} esg_vol;

/* Build a volume from a tensor [N, C, s...] (or a bare [s...] with 2 or 3
 * axes).  axes: the record's esg.axes, the NIfTI voxel axis of each
 * spatial tensor axis ("ijk", "kji", any permutation; 2D: any two letters,
 * e.g. "ij" or "ik" for a slice; NULL means "ijk" / "ij"; a 3-letter string
 * on a 2D tensor drops its 'k'). */
int esg_vol_from_tensor(const esg_tensor *t, const char *axes, esg_vol *out);
void esg_vol_free(esg_vol *v);
/* One frame of batch item `item`: channel `channel` >= 0, or the sum
 * (ESG_CH_SUM) or mean (ESG_CH_MEAN) over channels.  New 1-frame volume. */
enum { ESG_CH_SUM = -1, ESG_CH_MEAN = -2 };
int esg_vol_frame(const esg_vol *v, int64_t item, int channel, esg_vol *out);
/* The voxel -> world affine of a record's volume v: esg.affine (return 0);
 * else esg.spacing on the diagonal (1); else the identity (2); -1 with an
 * error if esg.affine is malformed. */
int esg_vol_affine(const esg_record *r, const esg_vol *v, double aff[16]);
/* Voxel sizes (column norms of the affine's 3x3). */
void esg_affine_voxel_sizes(const double aff[16], double size[3]);

/* ---- pictures and writers ----------------------------------------------- */

/* An RGB canvas. */
typedef struct esg_canvas { int64_t w, h; unsigned char *rgb; } esg_canvas;
void esg_canvas_free(esg_canvas *im);

/* 8-bit RGB PNG to an open stream (not closed). */
int esg_png_write(FILE *f, const esg_canvas *im);

/* An 8-bit image for esg_png_encode: pixels row-major, 1 byte a pixel
 * (gray level or palette index) or 3 (RGB); palette: n_palette RGBA
 * entries (alpha goes to the tRNS chunk). */
typedef enum esg_png_type { ESG_PNG_GRAY, ESG_PNG_RGB, ESG_PNG_PALETTE } esg_png_type;
typedef struct esg_png_image {
	esg_png_type type;
	int64_t w, h;
	const unsigned char *pixels;
	const unsigned char *palette;
	int n_palette;
} esg_png_image;
/* Encode to memory (highest compression): *out is new (free()), *n its size. */
int esg_png_encode(const esg_png_image *im, unsigned char **out, size_t *n);

/* A NIfTI-1 file of float32 (gzip if path ends in ".gz"); name is the
 * file named in messages (NULL: path; for writing to a temporary).  aff: voxel->
 * world (NULL: none, pixdim 1, codes 0).  Written as sform (sform_code)
 * and, when the affine is a rotation + scaling, also as qform (qform_code;
 * else 0).  Frames become the 4th dimension when there are more than one. */
int esg_nifti_write(const char *path, const char *name, const esg_vol *v, const double *aff,
		    int qform_code, int sform_code, const char *descrip);

/* ---- resampling (upsample.c): layer maps to the input grid, like PyTorch's
 * torch.nn.functional.interpolate ------------------------------------------ */

typedef enum esg_up_mode {
	ESG_UP_LINEAR,   /* "linear" / "bilinear" / "trilinear", align_corners=False */
	ESG_UP_NEAREST   /* "nearest" (PyTorch's legacy floor rule) */
} esg_up_mode;

/* Resize the spatial axes (2 .. ndim-1) of a float [N, C, spatial...]
 * array src to the sizes out_sp[0 .. ndim-3].  Linear mode is separable:
 * one axis after another, each as PyTorch computes it (source coordinate
 * (i + 0.5) * in/out - 0.5 clamped at 0, in float); so bilinear and
 * trilinear equal PyTorch's to float rounding.  dst: caller buffer of
 * N * C * prod(out_sp) floats.  Returns 0, or -1 with an error. */
int esg_upsample(const float *src, int ndim, const int64_t *shape,
		 const int64_t *out_sp, esg_up_mode mode, float *dst);

/* PyTorch's name of linear interpolation for n spatial axes:
 * "linear", "bilinear", "trilinear" (or "linear-nd"). */
const char *esg_upsample_name(int n_spatial);

#endif
