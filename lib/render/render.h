/* esg_render.h - turning tensors into what people look at: float volumes in
 * NIfTI voxel order, views (slice, mosaic, maximum-intensity projection),
 * colour maps, overlays and colour bars into RGB buffers; PNG and NIfTI
 * writers.  Pure computation except the two writers; never prints.
 *
 * Display orientation (3D).  The voxel axes i, j, k are matched to the
 * nearest anatomical axes R, A, S of the record's affine (permutations and
 * flips only, no reslicing), then shown as neuroimaging viewers do in their
 * default neurological layout:
 *   axial     cuts S; columns run left->right (subject's right on the
 *             right), rows anterior at the top;
 *   coronal   cuts A; columns left->right, rows superior at the top;
 *   sagittal  cuts R; columns anterior->posterior (nose on the left),
 *             rows superior at the top.
 * With radiological set, axial and coronal columns are mirrored (subject's
 * right on the left).  A 2D tensor [N, C, H, W] is shown as an array:
 * rows = H, columns = W.
 */
#ifndef ESG_RENDER_H
#define ESG_RENDER_H

#include "stream/stream.h"

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

/* ---- views ----------------------------------------------------------- */

typedef enum esg_view { ESG_AXIAL, ESG_CORONAL, ESG_SAGITTAL } esg_view;
int esg_view_parse(const char *s, esg_view *out);

/* For world axis w (0 = R, 1 = A, 2 = S): the voxel axis closest to it and
 * whether that axis points the opposite way (toward L, P, I). */
typedef struct esg_orient { int axis[3]; int flip[3]; } esg_orient;
/* From an affine (NULL: identity, i.e. RAS voxel axes). */
void esg_orient_from_affine(const double *aff, esg_orient *o);

/* Geometry of one view of a volume: which voxel axis is cut, which runs
 * along columns / rows, and whether each is mirrored on screen. */
typedef struct esg_geom {
	int cut, col, row;        /* voxel axes 0..2 */
	int col_flip, row_flip;   /* 1: column 0 / row 0 is the axis' last voxel */
	int64_t w, h, depth;      /* columns, rows, slices */
} esg_geom;
void esg_geom_make(const esg_vol *v, const esg_orient *o, esg_view view,
		   int radiological, esg_geom *g);

/* A 2D float picture, row-major, row 0 at the top; NaN = nothing there. */
typedef struct esg_plane { int64_t w, h; float *v; } esg_plane;
void esg_plane_free(esg_plane *p);

/* Slice `index` (voxel index along g->cut) of frame 0 of v. */
int esg_plane_slice(const esg_vol *v, const esg_geom *g, int64_t index, esg_plane *out);
/* Projections along g->cut: maximum, minimum, or the signed value of
 * largest magnitude. */
typedef enum esg_proj { ESG_PROJ_MAX, ESG_PROJ_MIN, ESG_PROJ_ABSMAX } esg_proj;
int esg_plane_project(const esg_vol *v, const esg_geom *g, esg_proj how, esg_plane *out);
/* The `count` slice indices of a mosaic of a `depth`-slice volume: evenly
 * spaced, slice m = floor((2m + 1) * depth / (2 * count)). */
void esg_mosaic_indices(int64_t depth, int count, int64_t *idx);
/* The first and last slice along g->cut holding a non-zero, non-NaN voxel
 * (0 and depth-1 when there is none), so mosaics skip empty slices. */
void esg_vol_extent(const esg_vol *v, const esg_geom *g, int64_t *first, int64_t *last);
/* Tile planes (all the same size) into a grid `cols` wide, row by row;
 * empty cells are NaN. */
int esg_plane_tile(const esg_plane *tiles, int count, int cols, esg_plane *out);
/* Nearest-neighbour resize to w x h (aspect correction and zoom). */
int esg_plane_resize(const esg_plane *in, int64_t w, int64_t h, esg_plane *out);

/* ---- colour ---------------------------------------------------------- */

typedef enum esg_sign { ESG_SIGN_POSITIVE, ESG_SIGN_NEGATIVE, ESG_SIGN_ABS, ESG_SIGN_ALL } esg_sign;
int esg_sign_parse(const char *s, esg_sign *out);
/* The projection a maximum-intensity projection of a map uses per sign. */
esg_proj esg_sign_proj(esg_sign s);

typedef struct esg_cmap esg_cmap;
/* Known: gray, hot, viridis (sequential), bwr, rdwhgn (diverging). NULL
 * with an error naming the known ones. */
const esg_cmap *esg_cmap_find(const char *name);
const char *esg_cmap_name(const esg_cmap *c);
/* Colour at x in [0, 1] (clamped). */
void esg_cmap_rgb(const esg_cmap *c, double x, unsigned char rgb[3]);

/* p-th percentile (0..100, linear interpolation between order statistics as
 * numpy's default) of the non-NaN values; -1 if there are none. */
int esg_render_percentile(const float *v, int64_t n, double p, double *out);
/* The colour-scale maximum of a map under a sign: the clip_percentile-th
 * percentile of the magnitudes of the voxels the sign selects (positive:
 * v > 0, negative: v < 0, absolute/all: v != 0).  1 when none. */
double esg_map_scale(const float *v, int64_t n, esg_sign s, double clip_percentile);
/* Normalised colour coordinate of value x: sequential signs give
 * clamp(m / vmax, 0, 1) of the selected magnitude m; ALL gives
 * (clamp(x / vmax, -1, 1) + 1) / 2.  *magnitude gets |value| / vmax after
 * sign selection (for thresholds).  NaN x gives NaN. */
double esg_map_norm(double x, esg_sign s, double vmax, double *magnitude);

/* Gray background: (x - lo) / (hi - lo) clamped, NaN black.  rgb is w*h*3. */
void esg_render_gray(const esg_plane *p, double lo, double hi, unsigned char *rgb);
/* Colour a map into rgb.  overlay = 0: every pixel gets its colour (NaN
 * black; magnitudes <= threshold coloured as 0).  overlay = 1: pixels with
 * magnitude > threshold (a fraction of vmax) are blended over what rgb
 * holds with opacity alpha; the others are left alone. */
void esg_render_map(const esg_plane *p, esg_sign s, double vmax, const esg_cmap *c,
		    double threshold, double alpha, int overlay, unsigned char *rgb);

/* An RGB canvas. */
typedef struct esg_canvas { int64_t w, h; unsigned char *rgb; } esg_canvas;
void esg_canvas_free(esg_canvas *im);
/* Add a vertical colour bar right of the picture: a new, wider canvas.
 * lo_label / hi_label (may be NULL) are written beside its ends with a
 * small digit font (digits, '-', '.', 'e', '+'). */
int esg_canvas_add_colorbar(const esg_canvas *in, const esg_cmap *c, double c0, double c1,
			   const char *lo_label, const char *hi_label, esg_canvas *out);
/* Draw text (digits, - . e +) at x, y with the built-in 5x7 font, scale 1. */
void esg_draw_text(esg_canvas *im, int64_t x, int64_t y, const char *s, const unsigned char rgb[3]);

/* ---- writers --------------------------------------------------------- */

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

#endif
