/* picture.c - the picture of one record (esg-render --png): a slice, a
 * mosaic or a projection of its map or image, over a gray background, with
 * a colour bar; and strips of such pictures side by side (see render.h). */
#include "render/render.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the picture shows of a volume: the view, the tile size (after aspect
 * and zoom) and the slices (unused by a projection). */
struct plan {
	esg_geom g;
	int64_t tile_w, tile_h;
	int64_t *slices;
	int count;
};

static int plan_picture(const esg_vol *v, const esg_vol *extent_of, const double aff[16],
			const esg_picture_opts *o, struct plan *p)
{
	esg_orient ori;
	esg_orient_from_affine(aff, &ori);
	esg_geom_make(v, &ori, o->view, o->radiological, &p->g);
	if (v->spatial == 2 && (o->mip || o->mosaic || o->slice >= 0))
		return esg_set_error("the tensor is 2D: --slice, --mosaic and --mip do not apply");
	p->count = o->mip ? 1 : o->mosaic ? o->mosaic : 1;
	if (p->count > p->g.depth)
		p->count = (int)p->g.depth;
	p->slices = malloc((size_t)p->count * sizeof *p->slices);
	if (!p->slices)
		return esg_set_error("out of memory");
	if (o->mip) {
		p->slices[0] = ESG_PROJECTION;
	} else if (o->mosaic) { /* over the slices that hold something */
		int64_t first, last;
		esg_vol_extent(extent_of, &p->g, &first, &last);
		if (p->count > last - first + 1)
			p->count = (int)(last - first + 1);
		esg_mosaic_indices(last - first + 1, p->count, p->slices);
		for (int m = 0; m < p->count; m++)
			p->slices[m] += first;
	} else {
		p->slices[0] = o->slice >= 0 ? o->slice : p->g.depth / 2;
	}
	if (!o->mip && p->slices[0] >= p->g.depth)
		return esg_set_error("--slice %lld is out of range 0..%lld for the %s view",
				     (long long)p->slices[0], (long long)p->g.depth - 1,
				     o->view == ESG_AXIAL ? "axial" : o->view == ESG_CORONAL ? "coronal" : "sagittal");
	esg_geom_pixels(&p->g, aff, o->aspect, &p->tile_w, &p->tile_h);
	p->tile_w *= o->zoom;
	p->tile_h *= o->zoom;
	if (p->tile_w * p->tile_h > (int64_t)1 << 28)
		return esg_set_error("the picture would be %lldx%lld pixels; use --no-aspect or a smaller --zoom",
				     (long long)p->tile_w, (long long)p->tile_h);
	return 0;
}

/* The plane the picture shows of one frame volume. */
static int make_plane(const esg_vol *v, const struct plan *p, esg_proj proj, esg_plane *out)
{
	return esg_plane_grid(v, &p->g, p->slices, p->count, proj, p->tile_w, p->tile_h, out, NULL);
}

/* The volumes a picture draws: the frames of the map and of the background
 * (overlay), and the map's tensor whole (a colour image). */
struct vols {
	esg_vol full, map, bg;
	int overlay;
};

static void vols_free(struct vols *v)
{
	esg_vol_free(&v->full);
	esg_vol_free(&v->map);
	esg_vol_free(&v->bg);
}

static int load_vols(const esg_record *r, const esg_tensor *t, const esg_tensor *bg,
		     const esg_picture_opts *o, struct vols *v)
{
	const char *axes = esg_meta_get(r, "esg.axes");
	int auto_ch = o->channel == ESG_PICTURE_CH_AUTO;
	if (esg_vol_from_tensor(t, axes, &v->full) < 0 ||
	    esg_vol_frame(&v->full, o->batch, auto_ch ? o->gray ? ESG_CH_MEAN : ESG_CH_SUM : o->channel,
			  &v->map) < 0)
		return -1;
	if (!(v->overlay = bg != NULL))
		return 0;
	esg_vol full_bg = { .data = NULL };
	int rc = esg_vol_from_tensor(bg, axes, &full_bg);
	if (rc == 0)
		rc = esg_vol_frame(&full_bg, o->batch, auto_ch ? ESG_CH_MEAN : o->channel, &v->bg);
	esg_vol_free(&full_bg);
	if (rc < 0)
		return -1;
	if (memcmp(v->bg.dim, v->map.dim, sizeof v->bg.dim) != 0)
		return esg_set_error("tensors '%s' and '%s' differ in spatial shape (%lldx%lldx%lld vs %lldx%lldx%lld)",
				     t->name, bg->name, (long long)v->map.dim[0], (long long)v->map.dim[1],
				     (long long)v->map.dim[2], (long long)v->bg.dim[0], (long long)v->bg.dim[1],
				     (long long)v->bg.dim[2]);
	return 0;
}

/* Channels 0, 1, 2 as red, green, blue, each windowed lo..hi. */
static int paint_colour(const esg_vol *full, const struct plan *pic, const esg_picture_opts *o,
			double lo, double hi, esg_canvas *cv)
{
	unsigned char *tmp = malloc((size_t)(cv->w * cv->h) * 3);
	if (!tmp)
		return esg_set_error("out of memory");
	int rc = 0;
	for (int ch = 0; ch < 3 && rc == 0; ch++) {
		esg_vol one = { .data = NULL };
		esg_plane p = { 0, 0, NULL };
		rc = esg_vol_frame(full, o->batch, ch, &one);
		if (rc == 0)
			rc = make_plane(&one, pic, ESG_PROJ_MAX, &p);
		if (rc == 0) {
			esg_render_gray(&p, lo, hi, tmp);
			for (int64_t i = 0; i < cv->w * cv->h; i++)
				cv->rgb[3 * i + ch] = tmp[3 * i];
		}
		esg_plane_free(&p);
		esg_vol_free(&one);
	}
	free(tmp);
	return rc;
}

/* What the colour bar shows: the colour map and its end values. */
struct bar {
	const esg_cmap *cm;
	char lo[32], hi[32];
};

static void fmt_label(char *buf, size_t n, double x)
{
	snprintf(buf, n, "%.3g", x);
}

/* An image: gray (or a colour map) windowed at the clip percentiles; a 2D
 * image of 3 channels in its colours. */
static int paint_image(const struct vols *v, const struct plan *pic, const esg_picture_opts *o,
		       esg_plane *plane, esg_canvas *cv, struct bar *b)
{
	int64_t vox = v->map.dim[0] * v->map.dim[1] * v->map.dim[2];
	double lo, hi;
	esg_render_window(v->map.data, vox, o->clip, &lo, &hi);
	const esg_cmap *gray = esg_cmap_find("gray");
	b->cm = o->cmap;
	if (o->channel == ESG_PICTURE_CH_AUTO && !o->cmap && v->full.c == 3 && v->full.spatial == 2) {
		esg_render_window(v->full.data + o->batch * 3 * vox, 3 * vox, o->clip, &lo, &hi);
		if (paint_colour(&v->full, pic, o, lo, hi, cv) < 0)
			return -1;
		b->cm = gray;
	} else if (!b->cm || b->cm == gray) {
		esg_render_gray(plane, lo, hi, cv->rgb);
		b->cm = gray;
	} else { /* a colour map on the image: window lo..hi */
		for (int64_t i = 0; i < plane->w * plane->h; i++)
			if (!isnan(plane->v[i]))
				plane->v[i] = (float)(hi > lo ? (plane->v[i] - lo) / (hi - lo) : 0);
		esg_render_map(plane, ESG_SIGN_POSITIVE, 1, b->cm, 0, 1, 0, cv->rgb);
	}
	fmt_label(b->lo, sizeof b->lo, lo);
	fmt_label(b->hi, sizeof b->hi, hi);
	return 0;
}

/* A map: coloured by sign up to the clip percentile of its magnitudes,
 * over the gray background when there is one. */
static int paint_map(const struct vols *v, const struct plan *pic, const esg_picture_opts *o,
		     const esg_plane *plane, esg_canvas *cv, struct bar *b)
{
	int64_t vox = v->map.dim[0] * v->map.dim[1] * v->map.dim[2];
	int overlay = v->overlay;
	b->cm = o->cmap ? o->cmap : esg_cmap_find(o->sign == ESG_SIGN_ALL ? "bwr" : "hot");
	double vmax = esg_map_scale(v->map.data, vox, o->sign, o->clip);
	if (overlay) {
		double lo, hi;
		esg_render_window(v->bg.data, vox, o->clip, &lo, &hi);
		esg_plane bp;
		if (make_plane(&v->bg, pic, ESG_PROJ_MAX, &bp) < 0)
			return -1;
		esg_render_gray(&bp, lo, hi, cv->rgb);
		esg_plane_free(&bp);
	}
	double thr = o->threshold >= 0 ? o->threshold : overlay ? 0.1 : 0;
	esg_render_map(plane, o->sign, vmax, b->cm, thr, overlay ? o->alpha : 1, overlay, cv->rgb);
	fmt_label(b->lo, sizeof b->lo, o->sign == ESG_SIGN_ALL ? -vmax : 0);
	snprintf(b->hi, sizeof b->hi, "%s%.3g", o->sign == ESG_SIGN_NEGATIVE ? "-" : "", vmax);
	return 0;
}

int esg_picture_make(const esg_record *r, const esg_tensor *t, const esg_tensor *bg,
		     const esg_picture_opts *o, esg_canvas *out)
{
	struct vols v = { .full = { .data = NULL }, .map = { .data = NULL }, .bg = { .data = NULL } };
	struct plan pic = { .slices = NULL };
	esg_plane plane = { 0, 0, NULL };
	esg_canvas cv = { 0, 0, NULL };
	struct bar b;
	double aff[16];
	int rc = -1;
	if (load_vols(r, t, bg, o, &v) < 0)
		goto out;
	/* without an affine or spacing: identity, square voxels */
	if (esg_vol_affine(r, &v.map, aff) < 0) {
		esg_prefix_error("esg.affine");
		goto out;
	}
	if (plan_picture(&v.map, bg ? &v.bg : &v.map, aff, o, &pic) < 0 ||
	    make_plane(&v.map, &pic, o->gray ? ESG_PROJ_MAX : esg_sign_proj(o->sign), &plane) < 0)
		goto out;
	cv = (esg_canvas){ plane.w, plane.h, calloc((size_t)(plane.w * plane.h), 3) };
	if (!cv.rgb) {
		esg_set_error("out of memory");
		goto out;
	}
	if ((o->gray ? paint_image(&v, &pic, o, &plane, &cv, &b) : paint_map(&v, &pic, o, &plane, &cv, &b)) < 0)
		goto out;
	if (o->colorbar) {
		esg_canvas wide;
		if (esg_canvas_add_colorbar(&cv, b.cm, 0, 1, b.lo, b.hi, &wide) < 0)
			goto out;
		esg_canvas_free(&cv);
		cv = wide;
	}
	*out = cv;
	cv.rgb = NULL;
	rc = 0;
out:
	esg_canvas_free(&cv);
	esg_plane_free(&plane);
	free(pic.slices);
	vols_free(&v);
	return rc;
}

/* ---- strips ------------------------------------------------------------ */

#define STRIP_GAP 4
#define LABEL_H 11

int esg_picture_strip(const esg_canvas *pics, int n, esg_canvas *out)
{
	int64_t w = 0, h = 0;
	for (int k = 0; k < n; k++) {
		w += pics[k].w + (k ? STRIP_GAP : 0);
		if (pics[k].h > h)
			h = pics[k].h;
	}
	esg_canvas s = { w, h + LABEL_H, calloc((size_t)(w * (h + LABEL_H)), 3) };
	if (!s.rgb)
		return esg_set_error("out of memory");
	static const unsigned char white[3] = { 255, 255, 255 };
	int64_t x0 = 0;
	for (int k = 0; k < n; k++) {
		for (int64_t y = 0; y < pics[k].h; y++)
			memcpy(s.rgb + 3 * ((y + LABEL_H) * w + x0), pics[k].rgb + 3 * y * pics[k].w,
			       (size_t)pics[k].w * 3);
		char lab[16];
		snprintf(lab, sizeof lab, "%d", k);
		esg_draw_text(&s, x0 + 2, 2, lab, white);
		x0 += pics[k].w + STRIP_GAP;
	}
	*out = s;
	return 0;
}
