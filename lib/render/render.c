/* render.c - volumes, views, colour maps, overlays and colour bars (see
 * render.h).  Pure computation: no I/O. */
#include "render/render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- views ----------------------------------------------------------- */

int esg_view_parse(const char *s, esg_view *out)
{
	static const char *names[] = { "axial", "coronal", "sagittal" };
	for (int i = 0; i < 3; i++)
		if (strcmp(s, names[i]) == 0) {
			*out = (esg_view)i;
			return 0;
		}
	return esg_set_error("unknown view '%s' (known: axial, coronal, sagittal)", s);
}

void esg_orient_from_affine(const double *aff, esg_orient *o)
{
	static const int perms[6][3] = { { 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
					 { 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 } };
	double m[3][3] = { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } };
	if (aff) {
		double size[3];
		esg_affine_voxel_sizes(aff, size);
		for (int w = 0; w < 3; w++)
			for (int a = 0; a < 3; a++)
				m[w][a] = aff[4 * w + a] / (size[a] > 0 ? size[a] : 1);
	}
	/* the permutation whose voxel axes line up best with R, A, S */
	int best = 0;
	double best_score = -1;
	for (int p = 0; p < 6; p++) {
		double s = 0;
		for (int w = 0; w < 3; w++)
			s += fabs(m[w][perms[p][w]]);
		if (s > best_score + 1e-12) {
			best_score = s;
			best = p;
		}
	}
	for (int w = 0; w < 3; w++) {
		o->axis[w] = perms[best][w];
		o->flip[w] = m[w][o->axis[w]] < 0;
	}
}

void esg_geom_make(const esg_vol *v, const esg_orient *o, esg_view view,
		   int radiological, esg_geom *g)
{
	memset(g, 0, sizeof *g);
	if (v->spatial == 2) { /* an array: rows = H, columns = W */
		g->row = v->axis_h;
		g->col = v->axis_w;
		g->cut = 3 - v->axis_h - v->axis_w;
	} else {
		enum { R, A, S };
		switch (view) {
		case ESG_AXIAL:
			g->cut = o->axis[S];
			g->col = o->axis[R], g->col_flip = o->flip[R] ^ !!radiological;
			g->row = o->axis[A], g->row_flip = !o->flip[A];
			break;
		case ESG_CORONAL:
			g->cut = o->axis[A];
			g->col = o->axis[R], g->col_flip = o->flip[R] ^ !!radiological;
			g->row = o->axis[S], g->row_flip = !o->flip[S];
			break;
		case ESG_SAGITTAL:
			g->cut = o->axis[R];
			g->col = o->axis[A], g->col_flip = !o->flip[A];
			g->row = o->axis[S], g->row_flip = !o->flip[S];
			break;
		}
	}
	g->w = v->dim[g->col];
	g->h = v->dim[g->row];
	g->depth = v->dim[g->cut];
}

void esg_geom_pixels(const esg_geom *g, const double aff[16], int aspect, int64_t *w, int64_t *h)
{
	double vs[3] = { 1, 1, 1 };
	if (aspect)
		esg_affine_voxel_sizes(aff, vs);
	double sc = vs[g->col], sr = vs[g->row], m = sc < sr ? sc : sr;
	if (!(m > 0))
		sc = sr = m = 1;
	*w = llround((double)g->w * sc / m);
	*h = llround((double)g->h * sr / m);
}

void esg_plane_free(esg_plane *p)
{
	if (p) {
		free(p->v);
		p->v = NULL;
	}
}

static int plane_alloc(esg_plane *p, int64_t w, int64_t h)
{
	p->w = w;
	p->h = h;
	p->v = malloc((size_t)(w * h) * sizeof(float));
	if (!p->v)
		return esg_set_error("out of memory for a %lldx%lld picture", (long long)w, (long long)h);
	return 0;
}

/* Offset of the voxel shown at (row r, column c) of slice `index`. */
static int64_t voxel_at(const esg_vol *v, const esg_geom *g, int64_t r, int64_t c, int64_t index)
{
	int64_t x[3];
	x[g->col] = g->col_flip ? g->w - 1 - c : c;
	x[g->row] = g->row_flip ? g->h - 1 - r : r;
	x[g->cut] = index;
	return x[0] + v->dim[0] * (x[1] + v->dim[1] * x[2]);
}

int esg_plane_slice(const esg_vol *v, const esg_geom *g, int64_t index, esg_plane *out)
{
	if (index < 0 || index >= g->depth)
		return esg_set_error("slice %lld is out of range 0..%lld", (long long)index,
				     (long long)g->depth - 1);
	if (plane_alloc(out, g->w, g->h) < 0)
		return -1;
	for (int64_t r = 0; r < g->h; r++)
		for (int64_t c = 0; c < g->w; c++)
			out->v[r * g->w + c] = v->data[voxel_at(v, g, r, c, index)];
	return 0;
}

int esg_plane_project(const esg_vol *v, const esg_geom *g, esg_proj how, esg_plane *out)
{
	if (plane_alloc(out, g->w, g->h) < 0)
		return -1;
	for (int64_t r = 0; r < g->h; r++)
		for (int64_t c = 0; c < g->w; c++) {
			float best = NAN;
			for (int64_t k = 0; k < g->depth; k++) {
				float x = v->data[voxel_at(v, g, r, c, k)];
				if (isnan(x))
					continue;
				if (isnan(best) || (how == ESG_PROJ_MAX && x > best) ||
				    (how == ESG_PROJ_MIN && x < best) ||
				    (how == ESG_PROJ_ABSMAX && fabsf(x) > fabsf(best)))
					best = x;
			}
			out->v[r * g->w + c] = best;
		}
	return 0;
}

void esg_mosaic_indices(int64_t depth, int count, int64_t *idx)
{
	for (int m = 0; m < count; m++)
		idx[m] = (2 * (int64_t)m + 1) * depth / (2 * (int64_t)count);
}

void esg_vol_extent(const esg_vol *v, const esg_geom *g, int64_t *first, int64_t *last)
{
	int64_t lo = -1, hi = -1;
	for (int64_t k = 0; k < g->depth; k++)
		for (int64_t r = 0; r < g->h; r++)
			for (int64_t c = 0; c < g->w; c++) {
				float x = v->data[voxel_at(v, g, r, c, k)];
				if (x != 0 && !isnan(x)) {
					if (lo < 0)
						lo = k;
					hi = k;
					r = g->h, c = g->w; /* next slice */
				}
			}
	*first = lo < 0 ? 0 : lo;
	*last = lo < 0 ? g->depth - 1 : hi;
}

int esg_plane_tile(const esg_plane *tiles, int count, int cols, esg_plane *out)
{
	if (count <= 0 || cols <= 0)
		return esg_set_error("a mosaic needs at least one tile");
	int rows = (count + cols - 1) / cols;
	int64_t tw = tiles[0].w, th = tiles[0].h;
	if (plane_alloc(out, tw * cols, th * rows) < 0)
		return -1;
	for (int64_t i = 0; i < out->w * out->h; i++)
		out->v[i] = NAN;
	for (int t = 0; t < count; t++) {
		int64_t x0 = (t % cols) * tw, y0 = (t / cols) * th;
		for (int64_t r = 0; r < th; r++)
			memcpy(out->v + (y0 + r) * out->w + x0, tiles[t].v + r * tw, (size_t)tw * sizeof(float));
	}
	return 0;
}

int esg_plane_resize(const esg_plane *in, int64_t w, int64_t h, esg_plane *out)
{
	if (w < 1)
		w = 1;
	if (h < 1)
		h = 1;
	if (plane_alloc(out, w, h) < 0)
		return -1;
	for (int64_t r = 0; r < h; r++) {
		int64_t sr = (2 * r + 1) * in->h / (2 * h);
		for (int64_t c = 0; c < w; c++) {
			int64_t sc = (2 * c + 1) * in->w / (2 * w);
			out->v[r * w + c] = in->v[sr * in->w + sc];
		}
	}
	return 0;
}

int esg_plane_grid(const esg_vol *v, const esg_geom *g, const int64_t *idx, int n, esg_proj how,
		   int64_t tw, int64_t th, esg_plane *out, int *cols)
{
	esg_plane *t = calloc((size_t)n, sizeof *t);
	if (!t)
		return esg_set_error("out of memory");
	int rc = 0;
	for (int k = 0; k < n && rc == 0; k++) {
		esg_plane raw = { 0, 0, NULL };
		rc = idx[k] == ESG_PROJECTION ? esg_plane_project(v, g, how, &raw)
					      : esg_plane_slice(v, g, idx[k], &raw);
		if (rc == 0)
			rc = esg_plane_resize(&raw, tw, th, &t[k]);
		esg_plane_free(&raw);
	}
	int c = 1;
	while (c * c < n)
		c++;
	if (rc == 0)
		rc = esg_plane_tile(t, n, c, out);
	for (int k = 0; k < n; k++)
		esg_plane_free(&t[k]);
	free(t);
	if (cols)
		*cols = c;
	return rc;
}

/* ---- colour ---------------------------------------------------------- */

int esg_sign_parse(const char *s, esg_sign *out)
{
	static const char *names[] = { "positive", "negative", "absolute_value", "all" };
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			*out = (esg_sign)i;
			return 0;
		}
	return esg_set_error("unknown sign '%s' (known: positive, negative, absolute_value, all)", s);
}

esg_proj esg_sign_proj(esg_sign s)
{
	switch (s) {
	case ESG_SIGN_POSITIVE: return ESG_PROJ_MAX;
	case ESG_SIGN_NEGATIVE: return ESG_PROJ_MIN;
	default: return ESG_PROJ_ABSMAX;
	}
}

struct stop { double x, r, g, b; };
struct esg_cmap { const char *name; int n; const struct stop *s; };

/* matplotlib's definitions (hot: its segment data; viridis: 9 samples). */
static const struct stop gray_s[] = { { 0, 0, 0, 0 }, { 1, 1, 1, 1 } };
static const struct stop hot_s[] = { { 0, 0.0416, 0, 0 }, { 0.365079, 1, 0, 0 },
				     { 0.746032, 1, 1, 0 }, { 1, 1, 1, 1 } };
#define H(v) ((v) / 255.0)
static const struct stop viridis_s[] = {
	{ 0.000, H(68), H(1), H(84) },    { 0.125, H(71), H(44), H(122) },
	{ 0.250, H(59), H(82), H(139) },  { 0.375, H(44), H(114), H(142) },
	{ 0.500, H(33), H(145), H(140) }, { 0.625, H(39), H(173), H(129) },
	{ 0.750, H(94), H(201), H(98) },  { 0.875, H(170), H(220), H(50) },
	{ 1.000, H(253), H(231), H(37) },
};
#undef H
static const struct stop bwr_s[] = { { 0, 0, 0, 1 }, { 0.5, 1, 1, 1 }, { 1, 1, 0, 0 } };
/* Captum's default for signed maps: red - white - green */
static const struct stop rdwhgn_s[] = { { 0, 1, 0, 0 }, { 0.5, 1, 1, 1 }, { 1, 0, 0.5, 0 } };

#define CMAP(name, s) { name, (int)(sizeof s / sizeof *s), s }
static const struct esg_cmap cmaps[] = {
	CMAP("gray", gray_s), CMAP("hot", hot_s), CMAP("viridis", viridis_s),
	CMAP("bwr", bwr_s), CMAP("rdwhgn", rdwhgn_s),
};

const esg_cmap *esg_cmap_find(const char *name)
{
	for (size_t i = 0; i < sizeof cmaps / sizeof *cmaps; i++)
		if (strcmp(name, cmaps[i].name) == 0)
			return &cmaps[i];
	esg_set_error("unknown colour map '%s' (known: gray, hot, viridis, bwr, rdwhgn)", name);
	return NULL;
}

const char *esg_cmap_name(const esg_cmap *c) { return c->name; }

static unsigned char to_byte(double v)
{
	v = v < 0 ? 0 : v > 1 ? 1 : v;
	return (unsigned char)lround(v * 255.0);
}

void esg_cmap_rgb(const esg_cmap *c, double x, unsigned char rgb[3])
{
	if (!(x > 0)) /* also NaN */
		x = 0;
	if (x > 1)
		x = 1;
	int i = 0;
	while (i < c->n - 2 && x > c->s[i + 1].x)
		i++;
	const struct stop *a = &c->s[i], *b = &c->s[i + 1];
	double t = (x - a->x) / (b->x - a->x);
	rgb[0] = to_byte(a->r + t * (b->r - a->r));
	rgb[1] = to_byte(a->g + t * (b->g - a->g));
	rgb[2] = to_byte(a->b + t * (b->b - a->b));
}

/* The k-th smallest of s[0..n) (Hoare's selection, expected linear time);
 * leaves s[0..k) <= s[k] <= s[k+1..n). */
static float select_kth(float *s, int64_t n, int64_t k)
{
	int64_t lo = 0, hi = n - 1;
	while (lo < hi) {
		float pivot = s[lo + (hi - lo) / 2];
		int64_t i = lo, j = hi;
		while (i <= j) {
			while (s[i] < pivot)
				i++;
			while (s[j] > pivot)
				j--;
			if (i <= j) {
				float t = s[i];
				s[i++] = s[j];
				s[j--] = t;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			break;
	}
	return s[k];
}

int esg_render_percentile(const float *v, int64_t n, double p, double *out)
{
	float *s = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	if (!s)
		return esg_set_error("out of memory");
	int64_t m = 0;
	for (int64_t i = 0; i < n; i++)
		if (!isnan(v[i]))
			s[m++] = v[i];
	if (m == 0) {
		free(s);
		return -1;
	}
	p = p < 0 ? 0 : p > 100 ? 100 : p;
	double pos = p / 100.0 * (double)(m - 1);
	int64_t lo = (int64_t)floor(pos);
	double a = select_kth(s, m, lo), b = a;
	if (lo + 1 < m) { /* the next order statistic: the least of the rest */
		b = s[lo + 1];
		for (int64_t i = lo + 2; i < m; i++)
			if (s[i] < b)
				b = s[i];
	}
	*out = a + (pos - (double)lo) * (b - a);
	free(s);
	return 0;
}

void esg_render_window(const float *v, int64_t n, double clip, double *lo, double *hi)
{
	if (esg_render_percentile(v, n, 100 - clip, lo) < 0 || esg_render_percentile(v, n, clip, hi) < 0)
		*lo = 0, *hi = 1;
}

/* Magnitude of x under a sign (0 when the sign does not select it). */
static double sign_mag(double x, esg_sign s)
{
	switch (s) {
	case ESG_SIGN_POSITIVE: return x > 0 ? x : 0;
	case ESG_SIGN_NEGATIVE: return x < 0 ? -x : 0;
	default: return fabs(x);
	}
}

double esg_map_scale(const float *v, int64_t n, esg_sign s, double clip_percentile)
{
	float *m = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	if (!m)
		return 1;
	int64_t k = 0;
	for (int64_t i = 0; i < n; i++) {
		if (isnan(v[i]))
			continue;
		double a = sign_mag(v[i], s);
		if (a > 0)
			m[k++] = (float)a;
	}
	double vmax = 1;
	if (k > 0 && esg_render_percentile(m, k, clip_percentile, &vmax) < 0)
		vmax = 1;
	free(m);
	return vmax > 0 && isfinite(vmax) ? vmax : 1;
}

double esg_map_norm(double x, esg_sign s, double vmax, double *magnitude)
{
	if (isnan(x)) {
		if (magnitude)
			*magnitude = NAN;
		return NAN;
	}
	double m = sign_mag(x, s) / vmax;
	if (magnitude)
		*magnitude = m;
	if (s == ESG_SIGN_ALL) {
		double t = x / vmax;
		t = t < -1 ? -1 : t > 1 ? 1 : t;
		return (t + 1) / 2;
	}
	return m > 1 ? 1 : m;
}

void esg_render_gray(const esg_plane *p, double lo, double hi, unsigned char *rgb)
{
	double span = hi > lo ? hi - lo : 1;
	for (int64_t i = 0; i < p->w * p->h; i++) {
		float x = p->v[i];
		unsigned char g = isnan(x) ? 0 : to_byte((x - lo) / span);
		rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g;
	}
}

void esg_render_map(const esg_plane *p, esg_sign s, double vmax, const esg_cmap *c,
		    double threshold, double alpha, int overlay, unsigned char *rgb)
{
	double zero = esg_map_norm(0, s, vmax, NULL);
	for (int64_t i = 0; i < p->w * p->h; i++) {
		unsigned char *o = rgb + 3 * i;
		double mag, t = esg_map_norm(p->v[i], s, vmax, &mag);
		if (isnan(t)) {
			if (!overlay)
				o[0] = o[1] = o[2] = 0;
			continue;
		}
		if (!(mag > threshold)) {
			if (overlay)
				continue;
			t = zero;
		}
		unsigned char col[3];
		esg_cmap_rgb(c, t, col);
		for (int k = 0; k < 3; k++)
			o[k] = overlay ? (unsigned char)lround((1 - alpha) * o[k] + alpha * col[k]) : col[k];
	}
}

/* 5x7 glyphs, one byte per row, bit 4 = leftmost column. */
static const struct { char ch; unsigned char rows[7]; } font[] = {
	{ '0', { 0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e } },
	{ '1', { 0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e } },
	{ '2', { 0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f } },
	{ '3', { 0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e } },
	{ '4', { 0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02 } },
	{ '5', { 0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e } },
	{ '6', { 0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e } },
	{ '7', { 0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 } },
	{ '8', { 0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e } },
	{ '9', { 0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c } },
	{ '-', { 0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00 } },
	{ '+', { 0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00 } },
	{ '.', { 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c } },
	{ 'e', { 0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e } },
};
#define GLYPH_W 6 /* advance: 5 columns and a space */
#define GLYPH_H 7

void esg_draw_text(esg_canvas *im, int64_t x, int64_t y, const char *s, const unsigned char rgb[3])
{
	for (; *s; s++, x += GLYPH_W)
		for (size_t g = 0; g < sizeof font / sizeof *font; g++) {
			if (font[g].ch != *s)
				continue;
			for (int r = 0; r < GLYPH_H; r++)
				for (int c = 0; c < 5; c++) {
					int64_t px = x + c, py = y + r;
					if (!(font[g].rows[r] & (0x10 >> c)) || px < 0 || py < 0 ||
					    px >= im->w || py >= im->h)
						continue;
					memcpy(im->rgb + 3 * (py * im->w + px), rgb, 3);
				}
		}
}

int esg_canvas_add_colorbar(const esg_canvas *in, const esg_cmap *c, double c0, double c1,
			   const char *lo_label, const char *hi_label, esg_canvas *out)
{
	enum { GAP = 4, BAR = 12, LGAP = 3 };
	int labels = (lo_label || hi_label) && in->h >= 2 * GLYPH_H + 2;
	size_t ln = 0;
	if (labels) {
		ln = lo_label ? strlen(lo_label) : 0;
		size_t hn = hi_label ? strlen(hi_label) : 0;
		ln = hn > ln ? hn : ln;
	}
	out->w = in->w + GAP + BAR + (labels ? LGAP + (int64_t)ln * GLYPH_W : GAP);
	out->h = in->h;
	out->rgb = calloc((size_t)(out->w * out->h), 3);
	if (!out->rgb)
		return esg_set_error("out of memory");
	for (int64_t r = 0; r < in->h; r++)
		memcpy(out->rgb + 3 * r * out->w, in->rgb + 3 * r * in->w, (size_t)in->w * 3);
	int64_t x0 = in->w + GAP;
	for (int64_t r = 0; r < out->h; r++) {
		double t = out->h > 1 ? 1 - (double)r / (double)(out->h - 1) : 1;
		unsigned char col[3];
		esg_cmap_rgb(c, c0 + t * (c1 - c0), col);
		for (int64_t x = x0; x < x0 + BAR; x++)
			memcpy(out->rgb + 3 * (r * out->w + x), col, 3);
	}
	if (labels) {
		static const unsigned char white[3] = { 255, 255, 255 };
		if (hi_label)
			esg_draw_text(out, x0 + BAR + LGAP, 0, hi_label, white);
		if (lo_label)
			esg_draw_text(out, x0 + BAR + LGAP, out->h - GLYPH_H, lo_label, white);
	}
	return 0;
}
