/* render.h - turning tensors into what people look at: float volumes in
 * NIfTI voxel order, views (slice, mosaic, maximum-intensity projection),
 * colour maps, overlays and colour bars into RGB buffers (render.c); the
 * whole picture of a record and strips of them (picture.c); curve plots
 * (plot.c).  The volumes, the canvas and the PNG / NIfTI writers are image
 * I/O: image/image.h.  Pure computation; never prints.
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

#include "image/image.h"

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
/* The size in pixels of one picture of the view: square millimetres with
 * aspect set (the affine's smaller voxel size of the two axes shown is a
 * pixel), else a pixel a voxel. */
void esg_geom_pixels(const esg_geom *g, const double aff[16], int aspect, int64_t *w, int64_t *h);

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
/* n pictures of v along g, each resized to tw x th and tiled
 * ceil(sqrt(n)) wide (*cols, may be NULL): picture t is slice idx[t], or
 * the projection `how` where idx[t] is ESG_PROJECTION. */
#define ESG_PROJECTION (-1)
int esg_plane_grid(const esg_vol *v, const esg_geom *g, const int64_t *idx, int n, esg_proj how,
		   int64_t tw, int64_t th, esg_plane *out, int *cols);

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

/* The window of a gray picture of v: its (100 - clip)-th and clip-th
 * percentiles; 0 and 1 when v holds no number. */
void esg_render_window(const float *v, int64_t n, double clip, double *lo, double *hi);
/* Gray background: (x - lo) / (hi - lo) clamped, NaN black.  rgb is w*h*3. */
void esg_render_gray(const esg_plane *p, double lo, double hi, unsigned char *rgb);
/* Colour a map into rgb.  overlay = 0: every pixel gets its colour (NaN
 * black; magnitudes <= threshold coloured as 0).  overlay = 1: pixels with
 * magnitude > threshold (a fraction of vmax) are blended over what rgb
 * holds with opacity alpha; the others are left alone. */
void esg_render_map(const esg_plane *p, esg_sign s, double vmax, const esg_cmap *c,
		    double threshold, double alpha, int overlay, unsigned char *rgb);

/* Add a vertical colour bar right of the picture: a new, wider canvas.
 * lo_label / hi_label (may be NULL) are written beside its ends with a
 * small digit font (digits, '-', '.', 'e', '+'). */
int esg_canvas_add_colorbar(const esg_canvas *in, const esg_cmap *c, double c0, double c1,
			   const char *lo_label, const char *hi_label, esg_canvas *out);
/* Draw text (digits, - . e +) at x, y with the built-in 5x7 font, scale 1. */
void esg_draw_text(esg_canvas *im, int64_t x, int64_t y, const char *s, const unsigned char rgb[3]);

/* ---- pictures (picture.c) -------------------------------------------- */

/* How to draw a record's tensor (esg-render --png's picture options). */
#define ESG_PICTURE_CH_AUTO (-3)
typedef struct esg_picture_opts {
	esg_view view;
	int radiological;
	int aspect;         /* square millimetres; 0: a pixel a voxel */
	int zoom;           /* enlarge by this (>= 1) */
	int64_t slice;      /* voxel index along the cut axis; -1: the middle */
	int mosaic;         /* that many evenly spaced slices of those holding
			       something, in a grid; 0: one slice */
	int mip;            /* the projection along the cut axis instead */
	int64_t batch;      /* batch item */
	int channel;        /* index, ESG_CH_SUM or ESG_CH_MEAN (the background
			       takes the index, else the mean); ESG_PICTURE_CH_AUTO:
			       the sum of a map's channels, the mean of an image's
			       (a 2D 3-channel image is drawn in its colours), the
			       background's mean */
	int gray;           /* the tensor is an image: gray, windowed at the clip
			       percentiles (another cmap: that map over the window);
			       else a map, coloured by sign */
	esg_sign sign;
	const esg_cmap *cmap; /* NULL: gray for an image, hot for a map (bwr for
				 ESG_SIGN_ALL) */
	double clip;        /* the colour scale ends at this percentile */
	double threshold;   /* magnitudes <= threshold x the scale are not drawn
			       over the background; < 0: 0.1 over one, else 0 */
	double alpha;       /* opacity of the map over the background */
	int colorbar;       /* a colour bar with its end values on the right */
} esg_picture_opts;

/* The picture of tensor t of record r (whose esg.axes and affine place
 * it): a slice, a mosaic or a projection, in pixels of square millimetres
 * and as neuroimaging viewers orient it (see the top of this file).  bg:
 * NULL, or the tensor drawn in gray under the map (overlay; same spatial
 * shape); an image (o->gray) is drawn alone.  Messages name the tensors
 * and esg-render's options.  New canvas in *out. */
int esg_picture_make(const esg_record *r, const esg_tensor *t, const esg_tensor *bg,
		     const esg_picture_opts *o, esg_canvas *out);

/* n >= 1 pictures side by side, top-aligned, 4 pixels apart, under an
 * 11-pixel band where each is numbered from 0 (a randomisation strip: the
 * original map first).  New canvas in *out. */
int esg_picture_strip(const esg_canvas *pics, int n, esg_canvas *out);

/* ---- plots (plot.c) ---------------------------------------------------- */

/* One curve: n >= 1 points (x[i], y[i]). */
typedef struct esg_curve { const double *x, *y; int64_t n; } esg_curve;
/* Deletion / insertion curves (esg-metric --curves): the fraction x in
 * [0, 1] against the normalised score y, drawn from -0.25 to 1.25 (y
 * clamped there) on a white 480x360 canvas with axes and gray lines at 0
 * and 1; curve k in the k-th of 8 colours (cycling), numbered k at its last
 * point.  New canvas in *out. */
int esg_plot_curves(const esg_curve *curves, int n, esg_canvas *out);

#endif
