/* report.c - the HTML report of esg-render --html (see report.h). */
#include "render/report.h"
#include "image/image.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ----------------------------------------------------- */

size_t esg_base64_encode(const void *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *s = in;
	size_t o = 0, i = 0;
	for (; i + 2 < n; i += 3) {
		unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (i < n) {
		unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	return o;
}

static char *xstrdup(const char *s)
{
	char *d = s ? strdup(s) : NULL;
	if (s && !d)
		esg_set_error("out of memory");
	return d;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0) {
		s = NULL;
		esg_set_error("out of memory");
	}
	va_end(ap);
	return s;
}

/* Grow *p (of *cap elements of size sz) to hold n + 1. */
static int grow(void *p, size_t *cap, size_t n, size_t sz)
{
	if (n < *cap)
		return 0;
	size_t c = *cap ? 2 * *cap : 8;
	void *q = realloc(*(void **)p, c * sz);
	if (!q)
		return esg_set_error("out of memory");
	*(void **)p = q;
	*cap = c;
	return 0;
}

/* A growing string. */
typedef struct { char *s; size_t n, cap; } sbuf_t;
static int sb_put(sbuf_t *b, const char *t)
{
	size_t k = strlen(t);
	if (b->n + k + 1 > b->cap) {
		size_t cap = (b->n + k + 1) * 2;
		char *q = realloc(b->s, cap);
		if (!q) {
			free(b->s);
			b->s = NULL;
			return esg_set_error("out of memory");
		}
		b->s = q;
		b->cap = cap;
	}
	memcpy(b->s + b->n, t, k + 1);
	b->n += k;
	return 0;
}

/* The file name of path without one of the suffixes (first match). */
static char *base_name(const char *path, const char *const *suffixes)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	size_t n = strlen(b);
	for (; suffixes && *suffixes; suffixes++) {
		size_t k = strlen(*suffixes);
		if (n > k && strcmp(b + n - k, *suffixes) == 0) {
			n -= k;
			break;
		}
	}
	char *s = malloc(n + 1);
	if (!s) {
		esg_set_error("out of memory");
		return NULL;
	}
	memcpy(s, b, n);
	s[n] = 0;
	return s;
}

/* ---- the report -------------------------------------------------------- */

/* One PNG sprite: `tiles` pictures of w x h, `cols` to a row. */
struct pic {
	unsigned char *png;
	size_t n;
	int64_t w, h;
	int tiles, cols;
	uint64_t key; /* backgrounds: a hash of the pixels, to store each once */
};

/* One record's map. */
struct entry {
	char *input, *model, *label, *sha, *caption, *title;
	char *source;    /* esg.source as given ("" if none) */
	char *dir;       /* randomisation steps: the models' folder; else NULL */
	char *step_name; /* "NN NAME" */
	char *file;      /* the stream it came from (NULL: unknown) */
	size_t index;    /* its record number there */
	long step;
	int map, bg;     /* pics */
	int64_t depth;   /* slices along the view (1 for 2D) */
	int64_t w, h;    /* tile size */
	int replaced;    /* a later record has the same cell */
	int explain;     /* an esg-explain record: its image, no map (the gallery) */
	char *layer;     /* explanations: the gallery's group (esg.layer[:call], or "class score") */
	char *trace;     /* explanations: the objective per step as SVG points ("" if none) */
};

struct manifest { char *dir, *sha, *mode; };

struct table { char *name, *buf, *raw; char **cells; size_t ncol, nrow, nraw; };

struct esg_report {
	esg_report_opts o;
	const esg_cmap *cmap;
	struct pic *pics;
	size_t n_pics, cap_pics;
	struct entry *ents;
	size_t n_ents, cap_ents;
	struct manifest *mans;
	size_t n_mans, cap_mans;
	struct table *tabs;
	size_t n_tabs, cap_tabs;
	char **warn;
	size_t n_warn, cap_warn;
	size_t records;
};

esg_report *esg_report_new(const esg_report_opts *o)
{
	esg_report *rp = calloc(1, sizeof *rp);
	if (!rp) {
		esg_set_error("out of memory");
		return NULL;
	}
	rp->o = *o;
	if (!rp->o.title)
		rp->o.title = "esegeta report";
	if (!rp->o.tensor)
		rp->o.tensor = "attribution";
	if (!rp->o.background)
		rp->o.background = "image";
	if (rp->o.threshold < 0)
		rp->o.threshold = 0.1;
	rp->cmap = o->cmap ? o->cmap : esg_cmap_find(o->sign == ESG_SIGN_ALL ? "bwr" : "hot");
	return rp;
}

void esg_report_free(esg_report *rp)
{
	if (!rp)
		return;
	for (size_t i = 0; i < rp->n_pics; i++)
		free(rp->pics[i].png);
	for (size_t i = 0; i < rp->n_ents; i++) {
		struct entry *e = &rp->ents[i];
		free(e->input), free(e->model), free(e->label), free(e->sha), free(e->source);
		free(e->caption), free(e->title), free(e->dir), free(e->step_name), free(e->file);
		free(e->layer), free(e->trace);
	}
	for (size_t i = 0; i < rp->n_mans; i++)
		free(rp->mans[i].dir), free(rp->mans[i].sha), free(rp->mans[i].mode);
	for (size_t i = 0; i < rp->n_tabs; i++)
		free(rp->tabs[i].name), free(rp->tabs[i].buf), free(rp->tabs[i].raw), free(rp->tabs[i].cells);
	for (size_t i = 0; i < rp->n_warn; i++)
		free(rp->warn[i]);
	free(rp->pics), free(rp->ents), free(rp->mans), free(rp->tabs), free(rp->warn);
	free(rp);
}

size_t esg_report_n_warnings(const esg_report *rp) { return rp->n_warn; }
const char *esg_report_warning(const esg_report *rp, size_t i) { return rp->warn[i]; }

static void warn(esg_report *rp, char *msg)
{
	if (msg && grow(&rp->warn, &rp->cap_warn, rp->n_warn, sizeof *rp->warn) == 0)
		rp->warn[rp->n_warn++] = msg;
	else
		free(msg);
}

int esg_report_check_link(const char *t)
{
	if (!*t)
		return esg_set_error("empty link template");
	if (t[0] == '/' || t[0] == '\\')
		return esg_set_error("'%s' is absolute; give a path relative to the HTML file", t);
	/* a scheme ("http:", "file:", "c:") would leave the page or the folder */
	size_t k = strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
	if (t[k] == ':')
		return esg_set_error("'%s' names a scheme; give a path relative to the HTML file", t);
	for (const char *p = t; (p = strchr(p, '{')); p++) {
		const char *e = strchr(p, '}');
		size_t n = e ? (size_t)(e - p + 1) : 0;
		if (!(n == 7 && strncmp(p, "{input}", 7) == 0) && !(n == 7 && strncmp(p, "{model}", 7) == 0) &&
		    !(n == 8 && strncmp(p, "{method}", 8) == 0))
			return esg_set_error("'%s': unknown placeholder at '%.20s' (known: {input}, {model}, {method})",
					     t, p);
	}
	return 0;
}

/* ---- randomisation manifests ------------------------------------------- */

/* DIR/manifest.json, read once per folder: the original model's SHA-256. */
static struct manifest *manifest_for(esg_report *rp, const char *dir)
{
	for (size_t i = 0; i < rp->n_mans; i++)
		if (strcmp(rp->mans[i].dir, dir) == 0)
			return &rp->mans[i];
	if (grow(&rp->mans, &rp->cap_mans, rp->n_mans, sizeof *rp->mans) < 0)
		return NULL;
	struct manifest m = { .dir = xstrdup(dir) };
	char *path = m.dir ? xprintf("%s/manifest.json", m.dir) : NULL;
	if (!path)
		goto fail;
	FILE *f = fopen(path, "rb");
	if (!f && errno == ENOENT) /* no manifest: the strip has no original frame */
		goto done;
	if (!f) {
		esg_set_error("%s: %s", path, strerror(errno));
		goto fail;
	}
	char *txt = NULL;
	size_t n = 0, cap = 0, got;
	char buf[8192];
	while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
		if (n + got + 1 > cap) {
			cap = 2 * (n + got + 1);
			char *t2 = realloc(txt, cap);
			if (!t2) {
				free(txt);
				fclose(f);
				esg_set_error("out of memory");
				goto fail;
			}
			txt = t2;
		}
		memcpy(txt + n, buf, got);
		n += got;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(txt);
		esg_set_error("%s: read error", path);
		goto fail;
	}
	cJSON *js = txt ? (txt[n] = 0, cJSON_Parse(txt)) : NULL;
	free(txt);
	const cJSON *sha = cJSON_GetObjectItemCaseSensitive(js, "model_sha256");
	const cJSON *mode = cJSON_GetObjectItemCaseSensitive(js, "mode");
	if (!cJSON_IsString(sha)) {
		cJSON_Delete(js);
		esg_set_error("%s: %s", path, js ? "no \"model_sha256\" string (not an esg-randomise manifest)"
						 : "not JSON (expected an esg-randomise manifest)");
		goto fail;
	}
	m.sha = xstrdup(sha->valuestring);
	m.mode = cJSON_IsString(mode) ? xstrdup(mode->valuestring) : NULL;
	cJSON_Delete(js);
	if (!m.sha)
		goto fail;
done:
	free(path);
	rp->mans[rp->n_mans] = m;
	return &rp->mans[rp->n_mans++];
fail:
	free(path);
	free(m.dir), free(m.sha), free(m.mode);
	return NULL;
}

/* ---- pictures ---------------------------------------------------------- */

/* Every slice along g->cut, then (3D) the projection `proj`, each resized to
 * tw x th, tiled ceil(sqrt(tiles)) wide. */
static int sprite(const esg_vol *v, const esg_geom *g, int64_t tw, int64_t th, esg_proj proj,
		  esg_plane *out, int *tiles, int *cols)
{
	int n = (int)g->depth + (v->spatial == 3);
	int64_t *idx = malloc((size_t)n * sizeof *idx);
	if (!idx)
		return esg_set_error("out of memory");
	for (int k = 0; k < n; k++)
		idx[k] = k < g->depth ? k : ESG_PROJECTION;
	int rc = esg_plane_grid(v, g, idx, n, proj, tw, th, out, cols);
	free(idx);
	*tiles = n;
	return rc;
}

static uint64_t fnv1a(const unsigned char *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static int add_pic(esg_report *rp, const esg_png_image *im, int tiles, int cols, int64_t tw,
		   int64_t th, uint64_t key)
{
	if (grow(&rp->pics, &rp->cap_pics, rp->n_pics, sizeof *rp->pics) < 0)
		return -1;
	struct pic *p = &rp->pics[rp->n_pics];
	*p = (struct pic){ .w = tw, .h = th, .tiles = tiles, .cols = cols, .key = key };
	if (esg_png_encode(im, &p->png, &p->n) < 0)
		return -1;
	return (int)rp->n_pics++;
}

/* The gray background sprite, shared between records that show the same. */
static int background_pic(esg_report *rp, const esg_vol *bg, const esg_geom *g, int64_t tw, int64_t th)
{
	esg_plane sp;
	int tiles, cols;
	if (sprite(bg, g, tw, th, ESG_PROJ_MAX, &sp, &tiles, &cols) < 0)
		return -1;
	int64_t vox = bg->dim[0] * bg->dim[1] * bg->dim[2], npx = sp.w * sp.h;
	double lo, hi;
	esg_render_window(bg->data, vox, rp->o.clip, &lo, &hi);
	unsigned char *rgb = malloc((size_t)npx * 3);
	if (!rgb) {
		esg_plane_free(&sp);
		return esg_set_error("out of memory");
	}
	esg_render_gray(&sp, lo, hi, rgb);
	for (int64_t i = 0; i < npx; i++)
		rgb[i] = rgb[3 * i];
	uint64_t key = fnv1a(rgb, (size_t)npx, 0xcbf29ce484222325ULL);
	int64_t dims[4] = { sp.w, sp.h, tw, th };
	key = fnv1a((const unsigned char *)dims, sizeof dims, key);
	int id = -1;
	for (size_t i = 0; i < rp->n_pics && id < 0; i++)
		if (rp->pics[i].key == key && rp->pics[i].w == tw && rp->pics[i].h == th &&
		    rp->pics[i].tiles == tiles)
			id = (int)i;
	if (id < 0) {
		esg_png_image im = { ESG_PNG_GRAY, sp.w, sp.h, rgb, NULL, 0 };
		id = add_pic(rp, &im, tiles, cols, tw, th, key);
	}
	free(rgb);
	esg_plane_free(&sp);
	return id;
}

/* The map colours as a palette: index 0 transparent (NaN, at or below the
 * threshold), 1..255 the colour map from 0 to 1 with the overlay opacity,
 * so that the browser's blending over the background gives what
 * esg-render --png --overlay draws. */
static void map_palette(const esg_report *rp, unsigned char pal[256 * 4])
{
	memset(pal, 0, 4);
	for (int i = 1; i < 256; i++) {
		esg_cmap_rgb(rp->cmap, (i - 1) / 254.0, pal + 4 * i);
		pal[4 * i + 3] = (unsigned char)lround(rp->o.alpha * 255);
	}
}

static int map_pic(esg_report *rp, const esg_vol *map, const esg_geom *g, int64_t tw, int64_t th,
		   double *vmax_out)
{
	esg_plane sp;
	int tiles, cols;
	if (sprite(map, g, tw, th, esg_sign_proj(rp->o.sign), &sp, &tiles, &cols) < 0)
		return -1;
	int64_t vox = map->dim[0] * map->dim[1] * map->dim[2], npx = sp.w * sp.h;
	double vmax = esg_map_scale(map->data, vox, rp->o.sign, rp->o.clip);
	unsigned char *idx = malloc((size_t)npx);
	if (!idx) {
		esg_plane_free(&sp);
		return esg_set_error("out of memory");
	}
	for (int64_t i = 0; i < npx; i++) {
		double mag, t = esg_map_norm(sp.v[i], rp->o.sign, vmax, &mag);
		idx[i] = isnan(t) || !(mag > rp->o.threshold) ? 0 : (unsigned char)(1 + lround(t * 254));
	}
	unsigned char pal[256 * 4];
	map_palette(rp, pal);
	esg_png_image im = { ESG_PNG_PALETTE, sp.w, sp.h, idx, pal, 256 };
	int id = add_pic(rp, &im, tiles, cols, tw, th, 0);
	free(idx);
	esg_plane_free(&sp);
	*vmax_out = vmax;
	return id;
}

/* A layer map left at its layer's size: onto the image grid, trilinear
 * (bilinear in 2D) as esg-attr upsamples layer maps. */
static int resample(esg_vol *map, const int64_t dim[3])
{
	int64_t shape[5] = { 1, 1, map->dim[2], map->dim[1], map->dim[0] }, out[3] = { dim[2], dim[1], dim[0] };
	float *d = malloc((size_t)(dim[0] * dim[1] * dim[2]) * sizeof *d);
	if (!d)
		return esg_set_error("out of memory");
	if (esg_upsample(map->data, 5, shape, out, ESG_UP_LINEAR, d) < 0) {
		free(d);
		return -1;
	}
	free(map->data);
	map->data = d;
	memcpy(map->dim, dim, sizeof map->dim);
	return 0;
}

/* Render a record's map and background into e (pics, sizes). */
static int render_record(esg_report *rp, const esg_record *r, struct entry *e, double *vmax, int *resampled)
{
	const esg_report_opts *o = &rp->o;
	/* an explanation (esg-explain) is its optimised image, drawn alone */
	const esg_tensor *tm = e->explain ? NULL : esg_record_find(r, o->tensor);
	const esg_tensor *tb = esg_record_find(r, e->explain ? "image" : o->background);
	if (!tm && !e->explain)
		return esg_set_error("no tensor '%s' (--html shows attribution maps over the image, "
				     "and esg-explain's images)", o->tensor);
	if (!tb)
		return esg_set_error(e->explain ? "no tensor 'image' (an esg-explain record holds its image there)"
						: "no tensor '%s' to draw the map over", o->background);
	const char *axes = esg_meta_get(r, "esg.axes");
	esg_vol full = { .data = NULL }, map = { .data = NULL }, bg = { .data = NULL };
	int rc = -1;
	if (esg_vol_from_tensor(tb, axes, &full) < 0 ||
	    esg_vol_frame(&full, o->batch, o->channel >= 0 ? o->channel : ESG_CH_MEAN, &bg) < 0)
		goto out;
	esg_vol_free(&full);
	if (tm && (esg_vol_from_tensor(tm, axes, &full) < 0 || esg_vol_frame(&full, o->batch, o->channel, &map) < 0))
		goto out;
	if (!tm) { /* the geometry below is the image's */
		map = bg;
		map.data = NULL;
	}
	*resampled = 0;
	if (tm && memcmp(bg.dim, map.dim, sizeof bg.dim) != 0 && map.spatial == bg.spatial &&
	    (map.spatial == 3 || (map.axis_h == bg.axis_h && map.axis_w == bg.axis_w))) {
		if (resample(&map, bg.dim) < 0)
			goto out;
		*resampled = 1;
	}
	if (memcmp(bg.dim, map.dim, sizeof bg.dim) != 0) {
		esg_set_error("tensors '%s' and '%s' differ in spatial shape (%lldx%lldx%lld vs %lldx%lldx%lld)",
			      o->tensor, o->background, (long long)map.dim[0], (long long)map.dim[1],
			      (long long)map.dim[2], (long long)bg.dim[0], (long long)bg.dim[1], (long long)bg.dim[2]);
		goto out;
	}
	double aff[16];
	if (esg_vol_affine(r, &map, aff) < 0) {
		esg_prefix_error("esg.affine");
		goto out;
	}
	esg_orient ori;
	esg_geom g;
	esg_orient_from_affine(aff, &ori);
	esg_geom_make(&map, &ori, o->view, o->radiological, &g);
	esg_geom_pixels(&g, aff, o->aspect, &e->w, &e->h); /* as --png */
	e->depth = g.depth;
	if (e->w * e->h * (g.depth + 1) > (int64_t)1 << 28) {
		esg_set_error("the slices would take %lldx%lldx%lld pixels; use --no-aspect", (long long)e->w,
			      (long long)e->h, (long long)g.depth);
		goto out;
	}
	if ((e->bg = background_pic(rp, &bg, &g, e->w, e->h)) < 0 ||
	    (tm && (e->map = map_pic(rp, &map, &g, e->w, e->h, vmax)) < 0))
		goto out;
	rc = 0;
out:
	esg_vol_free(&full);
	esg_vol_free(&map);
	esg_vol_free(&bg);
	return rc;
}

/* Is path's file name step-NN-NAME.pt?  Then *dir, *step, *name. */
static int step_model(const char *path, char **dir, long *step, char **name)
{
	const char *b = strrchr(path, '/');
	const char *f = b ? b + 1 : path;
	size_t n = strlen(f);
	if (strncmp(f, "step-", 5) != 0 || n < 9 || strcmp(f + n - 3, ".pt") != 0)
		return 0;
	char *end;
	long s = strtol(f + 5, &end, 10);
	if (end == f + 5 || *end != '-' || f[5] < '0' || f[5] > '9' || end + 1 >= f + n - 3)
		return 0;
	*step = s;
	*dir = b ? xprintf("%.*s", (int)(b - path), path) : xstrdup(".");
	if (*dir && !**dir) { /* "/step-01-x.pt" */
		free(*dir);
		*dir = xstrdup("/");
	}
	*name = xprintf("%.*s %.*s", (int)(end - (f + 5)), f + 5, (int)(f + n - 3 - (end + 1)), end + 1);
	return *dir && *name ? 1 : -1;
}

/* An explanation's gallery place: its layer (with a call index past the
 * first), its row (the label, and the channel or unit it optimised, or the
 * class), and the objective's trace (esg-explain's tensor 'objective',
 * [N, steps]: the row of the batch item shown) as the points of a small SVG
 * line. */
static int explain_entry(struct entry *e, const esg_record *r, int64_t item)
{
	const char *layer = esg_meta_get(r, "esg.layer"), *call = esg_meta_get(r, "esg.layer_call");
	const char *ch = esg_meta_get(r, "esg.channel"), *unit = esg_meta_get(r, "esg.unit");
	const char *target = esg_meta_get(r, "esg.target");
	if (layer && *layer)
		e->layer = call && *call && strcmp(call, "0") ? xprintf("%s:%s", layer, call) : xstrdup(layer);
	else
		e->layer = xstrdup("class score");
	char *l = NULL;
	if (unit && *unit)
		l = xprintf("%s \xc2\xb7 unit %s", e->label, unit);
	else if (ch && *ch && strcmp(ch, "-1") && strcmp(ch, "all"))
		l = xprintf("%s \xc2\xb7 channel %s", e->label, ch);
	else if (!(layer && *layer) && target && *target)
		l = xprintf("%s \xc2\xb7 class %s", e->label, target);
	if (l) {
		free(e->label);
		e->label = l;
	}
	/* the trace: at most 64 points, scaled into a 64 x 16 box */
	sbuf_t b = { 0 };
	const esg_tensor *t = esg_record_find(r, "objective");
	int64_t n = t ? esg_tensor_numel(t) : 0, off = 0;
	if (t && t->ndim == 2) {
		n = t->shape[1];
		off = item < t->shape[0] ? item * n : 0;
	}
	double lo = INFINITY, hi = -INFINITY;
	for (int64_t i = 0; i < n; i++) {
		double v = esg_tensor_get(t, off + i);
		if (isfinite(v))
			lo = v < lo ? v : lo, hi = v > hi ? v : hi;
	}
	int k = n > 64 ? 64 : (int)n;
	for (int i = 0; i < k && n > 1 && hi >= lo; i++) {
		int64_t j = k > 1 ? (int64_t)((double)i * (double)(n - 1) / (k - 1) + 0.5) : 0;
		double v = esg_tensor_get(t, off + j);
		if (!isfinite(v))
			continue;
		double y = hi > lo ? 15 - 14 * (v - lo) / (hi - lo) : 8;
		char pt[48];
		snprintf(pt, sizeof pt, "%s%.1f,%.1f", b.n ? " " : "", 1 + 62.0 * i / (k > 1 ? k - 1 : 1), y);
		if (sb_put(&b, pt) < 0)
			return -1;
	}
	e->trace = b.s ? b.s : xstrdup("");
	return e->layer && e->label && e->trace ? 0 : -1;
}

int esg_report_add_record(esg_report *rp, const esg_record *r, const char *where, const char *file,
			  size_t index)
{
	static const char *const in_suffixes[] = { ".nii.gz", ".nii", ".png", ".npy", NULL };
	static const char *const model_suffixes[] = { ".pt", NULL };
	if (grow(&rp->ents, &rp->cap_ents, rp->n_ents, sizeof *rp->ents) < 0)
		return esg_prefix_error("%s", where);
	struct entry *e = &rp->ents[rp->n_ents];
	*e = (struct entry){ .map = -1, .bg = -1 };
	const char *source = esg_meta_get(r, "esg.source"), *model = esg_meta_get(r, "esg.model");
	const char *label = esg_meta_get(r, "esg.label");
	if (!label || !*label)
		label = esg_meta_get(r, "esg.method_alias");
	if (!label || !*label)
		label = esg_meta_get(r, "esg.method");
	/* the input's name: esg-load --name (a pipeline's), else the file's */
	const char *name = esg_meta_get(r, "esg.name");
	/* an explanation: esg-explain's optimised image and its objective, no map */
	e->explain = !esg_record_find(r, rp->o.tensor) && esg_record_find(r, "image") &&
		     (esg_meta_get(r, "esg.objective_final") || esg_record_find(r, "objective"));
	e->input = name && *name ? xstrdup(name)
				 : source && *source ? base_name(source, in_suffixes) : xstrdup("(no esg.source)");
	e->model = model && *model ? base_name(model, model_suffixes) : xstrdup("(no esg.model)");
	e->label = xstrdup(label && *label ? label : "(no esg.method)");
	e->sha = xstrdup(esg_meta_get(r, "esg.model_sha256"));
	e->source = xstrdup(source ? source : "");
	e->file = file ? xstrdup(file) : NULL;
	e->index = index;
	if (!e->source || (file && !e->file) || !e->input || !e->model || !e->label || (esg_meta_get(r, "esg.model_sha256") && !e->sha))
		goto out;
	if (e->explain && explain_entry(e, r, rp->o.batch) < 0)
		goto out;
	if (!e->explain && model && step_model(model, &e->dir, &e->step, &e->step_name) < 0)
		goto out;
	if (e->dir && !manifest_for(rp, e->dir))
		goto out;
	double vmax = 1;
	int resampled = 0;
	if (render_record(rp, r, e, &vmax, &resampled) < 0)
		goto out;
	if (resampled)
		warn(rp, xprintf("%s: the map differs in size from the image (a layer's size?); shown resampled "
				 "(linear) to the image's grid", where));

	/* caption: the cost; title (hover): everything known */
	const char *passes = esg_meta_get(r, "esg.passes"), *secs = esg_meta_get(r, "esg.seconds");
	char cap[160] = "";
	if (passes)
		snprintf(cap, sizeof cap, "%s pass%s", passes, strcmp(passes, "1") ? "es" : "");
	if (secs) {
		double s = strtod(secs, NULL);
		size_t l = strlen(cap);
		snprintf(cap + l, sizeof cap - l, "%s%.3g s", l ? " \xc2\xb7 " : "", s);
	}
	const char *o0 = esg_meta_get(r, "esg.objective_initial"), *o1 = esg_meta_get(r, "esg.objective_final");
	if (e->explain && o0 && o1) {
		size_t l = strlen(cap);
		snprintf(cap + l, sizeof cap - l, "%sobjective %.3g \xe2\x86\x92 %.3g", l ? " \xc2\xb7 " : "",
			 strtod(o0, NULL), strtod(o1, NULL));
	}
	e->caption = xstrdup(cap);
	static const char *const keys[] = { "esg.method", "esg.method_alias", "esg.params", "esg.target",
					    "esg.layer", "esg.layer_call", "esg.channel", "esg.unit", "esg.steps",
					    "esg.objective_initial", "esg.objective_final",
					    "esg.passes", "esg.seconds", "esg.model", "esg.model_sha256",
					    "esg.source", "esg.seed" };
	char *t = e->explain ? xprintf("%s \xc2\xb7 %s\nthe optimised image, gray from its %g-th to %g-th percentile",
				       e->layer, e->label, 100 - rp->o.clip, rp->o.clip)
			     : xprintf("%s\nmap scale: 0..%.4g (%s)", e->label, vmax,
				       rp->o.sign == ESG_SIGN_ALL ? "signed" : "magnitude");
	for (size_t k = 0; t && k < sizeof keys / sizeof *keys; k++) {
		const char *v = esg_meta_get(r, keys[k]);
		if (!v)
			continue;
		char *t2 = xprintf("%s\n%s: %s", t, keys[k] + 4, v);
		free(t);
		t = t2;
	}
	e->title = t;
	if (!e->caption || !e->title)
		goto out;
	if (!e->dir) /* the same grid (or gallery) cell again: the later record wins */
		for (size_t i = 0; i < rp->n_ents; i++) {
			struct entry *p = &rp->ents[i];
			if (!p->dir && !p->replaced && p->explain == e->explain && !strcmp(p->input, e->input) &&
			    !strcmp(p->model, e->model) && !strcmp(p->label, e->label) &&
			    (!e->explain || !strcmp(p->layer, e->layer))) {
				p->replaced = 1;
				warn(rp, xprintf("%s: input '%s', model '%s', %s '%s'%s%s given again; "
						 "the report shows this record", where, e->input, e->model,
						 e->explain ? "explanation" : "method", e->label,
						 e->explain ? " of " : "", e->explain ? e->layer : ""));
			}
		}
	/* inputs are named by file name: say so when two files share one */
	size_t same = 0, other = rp->n_ents;
	for (size_t i = 0; i < rp->n_ents; i++) {
		same += !strcmp(rp->ents[i].source, e->source);
		if (other == rp->n_ents && !strcmp(rp->ents[i].input, e->input) && strcmp(rp->ents[i].source, e->source))
			other = i;
	}
	if (!same && other < rp->n_ents)
		warn(rp, xprintf("%s: inputs '%s' and '%s' share the name '%s' and one section", where,
				 rp->ents[other].source, e->source, e->input));
	rp->n_ents++;
	rp->records++;
	return 0;
out:
	free(e->input), free(e->model), free(e->label), free(e->sha), free(e->source);
	free(e->caption), free(e->title), free(e->dir), free(e->step_name), free(e->file);
	free(e->layer), free(e->trace);
	return esg_prefix_error("%s", where);
}

/* ---- tables ------------------------------------------------------------ */

int esg_report_add_table(esg_report *rp, const char *name, const char *text, size_t n)
{
	if (n == 0)
		return esg_set_error("empty (expected a TSV table with a header line)");
	if (memchr(text, 0, n))
		return esg_set_error("binary data (expected a TSV table with a header line)");
	if (grow(&rp->tabs, &rp->cap_tabs, rp->n_tabs, sizeof *rp->tabs) < 0)
		return -1;
	struct table tb = { .name = xstrdup(name), .buf = malloc(n + 1), .raw = malloc(n), .nraw = n };
	size_t cap = 0, ncell = 0, line = 0;
	if (!tb.name || !tb.buf || !tb.raw)
		goto oom;
	memcpy(tb.raw, text, n);
	memcpy(tb.buf, text, n);
	tb.buf[n] = 0;
	for (char *p = tb.buf; *p;) {
		char *nl = strchr(p, '\n');
		char *next = nl ? nl + 1 : p + strlen(p);
		if (nl)
			*nl = 0;
		if (nl > p && nl[-1] == '\r')
			nl[-1] = 0;
		line++;
		if (!*p && !nl) /* no newline at the end */
			break;
		if (!*p) { /* blank lines: only at the end */
			p = next;
			continue;
		}
		size_t nf = 1;
		for (char *c = p; *c; c++)
			nf += *c == '\t';
		if (line == 1 && nf < 2) {
			esg_set_error("the first line has no tab (expected a TSV table with a header line)");
			goto fail;
		}
		if (line > 1 && nf != tb.ncol) {
			esg_set_error("line %zu has %zu fields, the header %zu (expected a TSV table)", line, nf,
				      tb.ncol);
			goto fail;
		}
		if (line == 1)
			tb.ncol = nf;
		else
			tb.nrow++;
		for (char *c = p;; c++) {
			if (ncell + 1 > cap) {
				cap = cap ? 2 * cap : 64;
				char **q = realloc(tb.cells, cap * sizeof *q);
				if (!q)
					goto oom;
				tb.cells = q;
			}
			tb.cells[ncell++] = c;
			char *tab = strchr(c, '\t');
			if (!tab)
				break;
			*tab = 0;
			c = tab;
		}
		p = next;
	}
	if (tb.ncol == 0) {
		esg_set_error("no header line (expected a TSV table with a header line)");
		goto fail;
	}
	rp->tabs[rp->n_tabs++] = tb;
	return 0;
oom:
	esg_set_error("out of memory");
fail:
	free(tb.name), free(tb.buf), free(tb.raw), free(tb.cells);
	return -1;
}

/* ---- the page ---------------------------------------------------------- */

static void put(FILE *f, const char *s) { fputs(s, f); }

/* HTML-escaped text, fit for element content and quoted attributes;
 * newlines as &#10; (tooltips keep their lines). */
static void esc(FILE *f, const char *s)
{
	for (; *s; s++)
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&#39;", f); break;
		case '\n': fputs("&#10;", f); break;
		case '\r': case '\t': fputc(' ', f); break;
		default: fputc(*s, f);
		}
}

/* Percent-encode for a URL path: keep unreserved characters, and '/' when
 * keep_slash (the template's own separators). */
static void url_part(FILE *f, const char *s, int keep_slash)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-._~", c) || (keep_slash && c == '/'))
			fputc(c, f);
		else
			fprintf(f, "%%%02X", c);
	}
}

static void put_link(FILE *f, const char *tmpl, const struct entry *e)
{
	char lit[2] = { 0, 0 };
	for (const char *p = tmpl; *p; p++) {
		if (!strncmp(p, "{input}", 7))
			url_part(f, e->input, 0), p += 6;
		else if (!strncmp(p, "{model}", 7))
			url_part(f, e->model, 0), p += 6;
		else if (!strncmp(p, "{method}", 8))
			url_part(f, e->label, 0), p += 7;
		else
			lit[0] = *p, url_part(f, lit, 1);
	}
}

static void put_data_uri(FILE *f, const struct pic *p)
{
	char out[4 * 1024];
	put(f, "data:image/png;base64,");
	for (size_t i = 0; i < p->n; i += 3 * 1024) {
		size_t k = p->n - i < 3 * 1024 ? p->n - i : 3 * 1024;
		fwrite(out, 1, esg_base64_encode(p->png + i, k, out), f);
	}
}

/* A canvas drawn by the page's script: tile k of the background, and of
 * the map on top. */
static void put_view(FILE *f, const esg_report *rp, const struct entry *e, int with_map, int zoom)
{
	const struct pic *b = &rp->pics[e->bg];
	fprintf(f, "<canvas class=\"view\" width=\"%lld\" height=\"%lld\" data-bg=\"p%d\"",
		(long long)(e->w * zoom), (long long)(e->h * zoom), e->bg);
	if (with_map)
		fprintf(f, " data-map=\"p%d\"", e->map);
	fprintf(f, " data-n=\"%lld\" data-w=\"%lld\" data-h=\"%lld\" data-cols=\"%d\"></canvas>",
		(long long)e->depth, (long long)b->w, (long long)b->h, b->cols);
}

/* report_js.c (generated from report.js by lib/render/js2c.sh): the
 * summary and evaluation views; and their style. */
extern const char esg_report_eval_js[], esg_report_eval_css[];

static const char css[] =
	"body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}\n"
	"h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccc}\n"
	".meta{color:#555}.legend{vertical-align:middle;image-rendering:pixelated;border:1px solid #999}\n"
	".controls{position:sticky;top:0;background:#fafafa;padding:.4em 0;z-index:1}\n"
	".controls input[type=range]{width:20em;vertical-align:middle}\n"
	"table.grid{border-collapse:collapse}table.grid th,table.grid td{padding:3px;vertical-align:top}\n"
	"table.grid th.row{text-align:right;font-weight:600;white-space:nowrap}\n"
	"canvas.view{display:block;background:#000;image-rendering:pixelated}\n"
	".cap{font-size:11px;color:#555;cursor:help}td.empty{color:#aaa;text-align:center}\n"
	".frames{display:flex;flex-wrap:wrap;gap:4px}figure{margin:0}\n"
	"figcaption{font-size:11px;color:#555;cursor:help}figure.original figcaption{font-weight:700}\n"
	"table.sortable{border-collapse:collapse;margin:1em 0;font-size:12px}\n"
	"table.sortable caption{text-align:left;font-weight:700;padding:.3em 0}\n"
	"table.sortable th,table.sortable td{border:1px solid #ccc;padding:2px 6px}\n"
	"table.sortable th{background:#eee;cursor:pointer;user-select:none}\n"
	"table.sortable th[aria-sort=ascending]::after{content:' \\25B2'}\n"
	"table.sortable th[aria-sort=descending]::after{content:' \\25BC'}\n"
	"#errors{color:#b00}\n"
	"svg.trace{display:block;width:100%;height:16px;margin-top:2px}\n"
	"svg.trace polyline{fill:none;stroke:#c60;stroke-width:1;vector-effect:non-scaling-stroke}\n";

static const char script[] =
	"(function(){'use strict';\n"
	"function draw(c,v,D,mip){\n"
	" var n=+c.dataset.n,w=+c.dataset.w,h=+c.dataset.h,cols=+c.dataset.cols;\n"
	" var k=n<2?0:mip?n:D>1?Math.round(v*(n-1)/(D-1)):0;\n"
	" var sx=(k%cols)*w,sy=Math.floor(k/cols)*h,g=c.getContext('2d');\n"
	" g.imageSmoothingEnabled=false;g.clearRect(0,0,c.width,c.height);\n"
	" ['bg','map'].forEach(function(key){var id=c.dataset[key];if(!id)return;\n"
	"  var im=document.getElementById(id);\n"
	"  if(im&&im.naturalWidth)g.drawImage(im,sx,sy,w,h,0,0,c.width,c.height);});\n"
	" c.dataset.tile=k;}\n"
	"function update(sec){\n"
	" var s=sec.querySelector('input.slice'),m=sec.querySelector('input.mip');\n"
	" var D=+sec.dataset.depth,v=s?+s.value:0,mip=!!(m&&m.checked),o=sec.querySelector('output.pos');\n"
	" if(s)s.disabled=mip;if(o)o.textContent=mip?'projection':v+' / '+(D-1);\n"
	" sec.querySelectorAll('canvas.view').forEach(function(c){draw(c,v,D,mip);});}\n"
	"function num(s){s=s.trim();\n"
	" if(/^[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?$/.test(s))return parseFloat(s);\n"
	" if(/^[-+]?inf(inity)?$/i.test(s))return s[0]=='-'?-Infinity:Infinity;return null;}\n"
	/* numbers by value, before any text (nan, blanks) in both directions */
	"function cmp(a,b,d){var x=num(a),y=num(b);\n"
	" if(x!==null&&y!==null)return d*(x<y?-1:x>y?1:0);if(x!==null)return -1;if(y!==null)return 1;\n"
	" return d*(a<b?-1:a>b?1:0);}\n"
	"function sortBy(th){\n"
	" var tr=th.parentNode,t=tr.closest('table'),col=Array.prototype.indexOf.call(tr.children,th);\n"
	" var asc=th.getAttribute('aria-sort')!=='ascending';\n"
	" tr.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});\n"
	" th.setAttribute('aria-sort',asc?'ascending':'descending');\n"
	" var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);\n"
	" rows.forEach(function(r,i){r.dataset.i=i;});\n"
	" rows.sort(function(a,b){\n"
	"  return cmp(a.cells[col].textContent,b.cells[col].textContent,asc?1:-1)||a.dataset.i-b.dataset.i;});\n"
	" rows.forEach(function(r){body.appendChild(r);});}\n"
	"window.addEventListener('load',function(){\n"
	" document.querySelectorAll('section.input').forEach(function(sec){\n"
	"  var s=sec.querySelector('input.slice'),m=sec.querySelector('input.mip');\n"
	"  if(s)s.addEventListener('input',function(){update(sec);});\n"
	"  if(m)m.addEventListener('change',function(){update(sec);});\n"
	"  update(sec);});\n"
	" document.querySelectorAll('table.sortable thead th').forEach(function(th){\n"
	"  th.addEventListener('click',function(){sortBy(th);});});\n"
	" document.body.dataset.ready='1';});\n"
	"})();\n";

/* The ordered distinct values of field `which` over the entries of input
 * `in` (grid entries only: steps are no columns or rows). */
static size_t distinct(const esg_report *rp, const char *in, int which, const char **out)
{
	size_t n = 0;
	for (size_t i = 0; i < rp->n_ents; i++) {
		const struct entry *e = &rp->ents[i];
		if (e->dir || e->explain || strcmp(e->input, in) != 0)
			continue;
		const char *v = which ? e->label : e->model;
		size_t k = 0;
		while (k < n && strcmp(out[k], v) != 0)
			k++;
		if (k == n)
			out[n++] = v;
	}
	return n;
}

static const struct entry *cell(const esg_report *rp, const char *in, const char *model, const char *label)
{
	for (size_t i = 0; i < rp->n_ents; i++) {
		const struct entry *e = &rp->ents[i];
		if (!e->dir && !e->explain && !e->replaced && !strcmp(e->input, in) && !strcmp(e->model, model) &&
		    !strcmp(e->label, label))
			return e;
	}
	return NULL;
}

static int cmp_step(const void *a, const void *b)
{
	const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
	if (x->step != y->step)
		return x->step < y->step ? -1 : 1;
	return x < y ? -1 : x > y; /* stable: order of the records */
}

static void put_strips(FILE *f, const esg_report *rp, const char *in, int zoom, const struct entry **tmp)
{
	int any = 0;
	for (size_t i = 0; i < rp->n_ents; i++) {
		const struct entry *s = &rp->ents[i];
		if (!s->dir || strcmp(s->input, in) != 0)
			continue;
		/* one strip per (method, folder): start it at its first step */
		size_t j = 0;
		while (j < i && !(rp->ents[j].dir && !strcmp(rp->ents[j].input, in) &&
				  !strcmp(rp->ents[j].label, s->label) && !strcmp(rp->ents[j].dir, s->dir)))
			j++;
		if (j < i)
			continue;
		size_t n = 0;
		for (size_t k = i; k < rp->n_ents; k++) {
			const struct entry *e = &rp->ents[k];
			if (e->dir && !strcmp(e->input, in) && !strcmp(e->label, s->label) && !strcmp(e->dir, s->dir))
				tmp[n++] = e;
		}
		qsort(tmp, n, sizeof *tmp, cmp_step);
		const struct manifest *m = NULL;
		for (size_t k = 0; k < rp->n_mans; k++)
			if (!strcmp(rp->mans[k].dir, s->dir))
				m = &rp->mans[k];
		const struct entry *orig = NULL;
		for (size_t k = 0; m && m->sha && k < rp->n_ents; k++) {
			const struct entry *e = &rp->ents[k];
			if (!e->dir && !e->explain && !e->replaced && e->sha && !strcmp(e->input, in) &&
			    !strcmp(e->label, s->label) &&
			    !strcmp(e->sha, m->sha))
				orig = e;
		}
		if (!any)
			put(f, "<div class=\"strips\"><h3>Randomisation</h3>\n");
		any = 1;
		put(f, "<div class=\"strip\" data-method=\"");
		esc(f, s->label);
		put(f, "\" data-dir=\"");
		esc(f, s->dir);
		put(f, "\"><h4>");
		esc(f, s->label);
		put(f, " \xc2\xb7 ");
		esc(f, s->dir);
		if (m && m->mode) {
			put(f, " (");
			esc(f, m->mode);
			put(f, ")");
		}
		if (!orig)
			put(f, m && m->sha ? " \xc2\xb7 <span class=\"note\">no record of the original model</span>"
					   : " \xc2\xb7 <span class=\"note\">no manifest.json: no original</span>");
		put(f, "</h4>\n<div class=\"frames\">");
		if (orig) {
			put(f, "<figure class=\"frame original\" data-step=\"0\">");
			put_view(f, rp, orig, 1, zoom);
			put(f, "<figcaption title=\"");
			esc(f, orig->title);
			put(f, "\">original</figcaption></figure>");
		}
		for (size_t k = 0; k < n; k++) {
			fprintf(f, "<figure class=\"frame step\" data-step=\"%ld\">", tmp[k]->step);
			put_view(f, rp, tmp[k], 1, zoom);
			put(f, "<figcaption title=\"");
			esc(f, tmp[k]->title);
			put(f, "\">");
			esc(f, tmp[k]->step_name);
			put(f, "</figcaption></figure>");
		}
		put(f, "</div></div>\n");
	}
	if (any)
		put(f, "</div>\n");
}

/* The distinct values, in record order, of an explanation field over input
 * `in` (and, for rows and columns, layer `layer`): 0 layer, 1 label, 2 model. */
static size_t distinct_explain(const esg_report *rp, const char *in, const char *layer, int which,
			       const char **out)
{
	size_t n = 0;
	for (size_t i = 0; i < rp->n_ents; i++) {
		const struct entry *e = &rp->ents[i];
		if (!e->explain || e->replaced || strcmp(e->input, in) != 0 || (layer && strcmp(e->layer, layer) != 0))
			continue;
		const char *v = which == 0 ? e->layer : which == 1 ? e->label : e->model;
		size_t k = 0;
		while (k < n && strcmp(out[k], v) != 0)
			k++;
		if (k == n)
			out[n++] = v;
	}
	return n;
}

/* A table's column headers, one per model (data-model for report.js). */
static void put_model_heads(FILE *f, const char **models, size_t n)
{
	for (size_t m = 0; m < n; m++) {
		put(f, "<th class=\"col\" scope=\"col\" data-model=\"");
		esc(f, models[m]);
		put(f, "\">");
		esc(f, models[m]);
		put(f, "</th>");
	}
}

/* A row's opening and its header cell: <tr data-KIND="label"><th>label</th>. */
static void put_row_head(FILE *f, const char *kind, const char *label)
{
	put(f, "<tr data-");
	put(f, kind);
	put(f, "=\"");
	esc(f, label);
	put(f, "\"><th class=\"row\" scope=\"row\">");
	esc(f, label);
	put(f, "</th>");
}

/* A cell's caption (its title the details) and the cell's end. */
static void put_cell_end(FILE *f, const struct entry *e)
{
	put(f, "<div class=\"cap\" title=\"");
	esc(f, e->title);
	put(f, "\">");
	esc(f, e->caption[0] ? e->caption : "details");
	put(f, "</div></td>");
}

/* The explanations of input `in`: per layer a table of what was optimised
 * (rows) by model (columns: the trained model beside its randomised copy,
 * whose pictures should look like noise).  The pictures are the section's
 * canvases: its slice slider and projection switch drive them as they do
 * the grid. */
static void put_gallery(FILE *f, const esg_report *rp, const char *in, int zoom, const char **layers,
			const char **rows, const char **cols)
{
	size_t nly = distinct_explain(rp, in, NULL, 0, layers);
	if (!nly)
		return;
	put(f, "<div class=\"explain\"><h3>Explanations</h3>\n<p class=\"meta\">What a layer or class has "
	       "learnt (esg-explain): each picture is the optimised input, gray from its own low to high "
	       "percentile; the line under it is the objective over the steps. A randomised model's pictures "
	       "should look like noise.</p>\n");
	for (size_t ly = 0; ly < nly; ly++) {
		size_t nr = distinct_explain(rp, in, layers[ly], 1, rows);
		size_t nc = distinct_explain(rp, in, layers[ly], 2, cols);
		put(f, "<div class=\"layer\" data-layer=\"");
		esc(f, layers[ly]);
		put(f, "\"><h4>");
		esc(f, layers[ly]);
		put(f, "</h4>\n<table class=\"grid gallery\"><thead><tr><th></th>");
		put_model_heads(f, cols, nc);
		put(f, "</tr></thead>\n<tbody>\n");
		for (size_t r = 0; r < nr; r++) {
			put_row_head(f, "explanation", rows[r]);
			for (size_t m = 0; m < nc; m++) {
				const struct entry *e = NULL;
				for (size_t i = 0; i < rp->n_ents && !e; i++) {
					const struct entry *x = &rp->ents[i];
					if (x->explain && !x->replaced && !strcmp(x->input, in) && !strcmp(x->layer, layers[ly]) &&
					    !strcmp(x->label, rows[r]) && !strcmp(x->model, cols[m]))
						e = x;
				}
				if (!e) {
					put(f, "<td class=\"cell empty\">\xe2\x80\x94</td>");
					continue;
				}
				put(f, "<td class=\"cell explanation\" data-model=\"");
				esc(f, e->model);
				put(f, "\">");
				put_view(f, rp, e, 0, zoom);
				if (e->trace[0]) {
					put(f, "<svg class=\"trace\" viewBox=\"0 0 64 16\" preserveAspectRatio=\"none\" "
					       "role=\"img\" aria-label=\"objective per step\"><polyline points=\"");
					put(f, e->trace);
					put(f, "\"/></svg>");
				}
				put_cell_end(f, e);
			}
			put(f, "</tr>\n");
		}
		put(f, "</tbody></table></div>\n");
	}
	put(f, "</div>\n");
}

static void put_section(FILE *f, const esg_report *rp, size_t idx, const char *in, const char **models,
			const char **labels, const char **layers, const struct entry **tmp)
{
	const esg_report_opts *o = &rp->o;
	size_t nm = distinct(rp, in, 0, models), nl = distinct(rp, in, 1, labels);
	int64_t depth = 1, tw = 1, th = 1;
	int spatial3 = 0;
	for (size_t i = 0; i < rp->n_ents; i++) {
		const struct entry *e = &rp->ents[i];
		if (strcmp(e->input, in) != 0)
			continue;
		if (e->depth > depth)
			depth = e->depth;
		tw = e->w > tw ? e->w : tw;
		th = e->h > th ? e->h : th;
		spatial3 |= rp->pics[e->bg].tiles > 1;
	}
	int zoom = o->zoom;
	if (zoom <= 0) { /* the longer side about 160 pixels */
		int64_t side = tw > th ? tw : th;
		zoom = (int)(160 / side);
		zoom = zoom < 1 ? 1 : zoom > 8 ? 8 : zoom;
	}
	int64_t start = o->slice >= 0 ? (o->slice < depth ? o->slice : depth - 1) : depth / 2;
	static const char *const views[] = { "axial", "coronal", "sagittal" };
	fprintf(f, "<section class=\"input\" id=\"input-%zu\" data-input=\"", idx);
	esc(f, in);
	fprintf(f, "\" data-depth=\"%lld\">\n<h2>", (long long)depth);
	esc(f, in);
	put(f, "</h2>\n<div class=\"controls\">");
	if (spatial3)
		fprintf(f, "<label>%s slice <input type=\"range\" class=\"slice\" min=\"0\" max=\"%lld\" value=\"%lld\" "
			   "step=\"1\"></label> <output class=\"pos\">%lld / %lld</output> "
			   "<label><input type=\"checkbox\" class=\"mip\"%s> maximum-intensity projection</label>",
			views[o->view], (long long)depth - 1, (long long)start, (long long)start,
			(long long)depth - 1, o->mip ? " checked" : "");
	else
		put(f, "2D");
	put(f, "</div>\n");
	if (nl > 0) {
		put(f, "<table class=\"grid\"><thead><tr><th></th><th class=\"col\" scope=\"col\">input</th>");
		put_model_heads(f, models, nm);
		put(f, "</tr></thead>\n<tbody>\n");
		for (size_t l = 0; l < nl; l++) {
			put_row_head(f, "method", labels[l]);
			const struct entry *first = NULL;
			for (size_t m = 0; m < nm && !first; m++)
				first = cell(rp, in, models[m], labels[l]);
			put(f, "<td class=\"cell input\">");
			put_view(f, rp, first, 0, zoom);
			put(f, "</td>");
			for (size_t m = 0; m < nm; m++) {
				const struct entry *e = cell(rp, in, models[m], labels[l]);
				if (!e) {
					put(f, "<td class=\"cell empty\">\xe2\x80\x94</td>");
					continue;
				}
				put(f, "<td class=\"cell map\" data-model=\"");
				esc(f, e->model);
				put(f, "\" data-method=\"");
				esc(f, e->label);
				put(f, "\">");
				if (o->link) {
					put(f, "<a href=\"");
					put_link(f, o->link, e);
					put(f, "\">");
				}
				put_view(f, rp, e, 1, zoom);
				if (o->link)
					put(f, "</a>");
				put_cell_end(f, e);
			}
			put(f, "</tr>\n");
		}
		put(f, "</tbody></table>\n");
	}
	put_strips(f, rp, in, zoom, tmp);
	/* models and labels are free again: the gallery's scratch lists */
	put_gallery(f, rp, in, zoom, layers, models, labels);
	put(f, "</section>\n");
}

/* A JSON string, safe inside <script> (no '<'). */
static void jstr(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == '<' || c == '>' || c == '&')
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* What the page's script draws from: every record's place (file, record
 * number, input, model, method label, randomisation step) and every table. */
static void put_data(FILE *f, const esg_report *rp)
{
	put(f, "<script type=\"application/json\" id=\"esg-data\">{\"base\":");
	jstr(f, rp->o.base ? rp->o.base : "");
	put(f, ",\n\"records\":[");
	for (size_t i = 0; i < rp->n_ents; i++) {
		const struct entry *e = &rp->ents[i];
		put(f, i ? ",\n{\"file\":" : "{\"file\":");
		jstr(f, e->file);
		fprintf(f, ",\"record\":%zu,\"input\":", e->index);
		jstr(f, e->input);
		put(f, ",\"model\":");
		jstr(f, e->model);
		put(f, ",\"method\":");
		jstr(f, e->label);
		if (e->explain) {
			put(f, ",\"explanation\":true,\"layer\":");
			jstr(f, e->layer);
		}
		if (e->dir) {
			put(f, ",\"dir\":");
			jstr(f, e->dir);
			fprintf(f, ",\"step\":%ld,\"step_name\":", e->step);
			jstr(f, e->step_name);
		}
		put(f, "}");
	}
	put(f, "],\n\"tables\":[");
	for (size_t i = 0; i < rp->n_tabs; i++) {
		const struct table *t = &rp->tabs[i];
		put(f, i ? ",\n{\"name\":" : "{\"name\":");
		jstr(f, t->name);
		fprintf(f, ",\"id\":\"table-%zu\",\"rows\":[", i);
		for (size_t r = 0; r <= t->nrow; r++) {
			put(f, r ? ",\n[" : "[");
			for (size_t c = 0; c < t->ncol; c++) {
				if (c)
					fputc(',', f);
				jstr(f, t->cells[r * t->ncol + c]);
			}
			put(f, "]");
		}
		put(f, "]}");
	}
	put(f, "]}</script>\n");
}

/* A cell of a table: paths under the page's folder relative to the page. */
static void put_cell(FILE *f, const esg_report *rp, const char *s)
{
	size_t k = rp->o.base ? strlen(rp->o.base) : 0;
	if (k && strncmp(s, rp->o.base, k) == 0 && s[k] == '/' && s[k + 1])
		s += k + 1;
	esc(f, s);
}

static void put_table(FILE *f, const esg_report *rp, const struct table *t, size_t idx)
{
	fprintf(f, "<details class=\"tidy\" id=\"table-%zu\"><summary>", idx);
	esc(f, t->name);
	fprintf(f, " \xc2\xb7 %zu row%s</summary>\n<p><a class=\"download\" download=\"", t->nrow,
		t->nrow == 1 ? "" : "s");
	esc(f, t->name);
	put(f, "\" href=\"data:text/tab-separated-values;charset=utf-8;base64,");
	char out[4 * 1024];
	for (size_t i = 0; i < t->nraw; i += 3 * 1024) {
		size_t k = t->nraw - i < 3 * 1024 ? t->nraw - i : 3 * 1024;
		fwrite(out, 1, esg_base64_encode((const unsigned char *)t->raw + i, k, out), f);
	}
	put(f, "\">download ");
	esc(f, t->name);
	put(f, "</a> (as written; paths below are relative to this page)</p>\n");
	put(f, "<table class=\"sortable\"><caption>");
	esc(f, t->name);
	put(f, "</caption>\n<thead><tr>");
	for (size_t c = 0; c < t->ncol; c++) {
		put(f, "<th scope=\"col\" title=\"sort\">");
		esc(f, t->cells[c]);
		put(f, "</th>");
	}
	put(f, "</tr></thead>\n<tbody>\n");
	for (size_t r = 0; r < t->nrow; r++) {
		put(f, "<tr>");
		for (size_t c = 0; c < t->ncol; c++) {
			put(f, "<td>");
			put_cell(f, rp, t->cells[(r + 1) * t->ncol + c]);
			put(f, "</td>");
		}
		put(f, "</tr>\n");
	}
	put(f, "</tbody></table></details>\n");
}

/* A colour bar of the map's palette, 0 (left) to 1 (right). */
static int legend_pic(esg_report *rp)
{
	enum { W = 256, H = 12 };
	unsigned char rgb[W * H * 3];
	for (int x = 0; x < W; x++) {
		unsigned char c[3];
		esg_cmap_rgb(rp->cmap, x / (W - 1.0), c);
		for (int y = 0; y < H; y++)
			memcpy(rgb + 3 * (y * W + x), c, 3);
	}
	esg_png_image im = { ESG_PNG_RGB, W, H, rgb, NULL, 0 };
	return add_pic(rp, &im, 1, 1, W, H, 0);
}

int esg_report_write(esg_report *rp, FILE *f)
{
	if (rp->n_ents == 0 && rp->n_tabs == 0)
		return esg_set_error("nothing to show: no records and no tables");
	int legend = legend_pic(rp);
	const char **ins = malloc((rp->n_ents + 1) * sizeof *ins);
	const char **a = malloc((rp->n_ents + 1) * sizeof *a), **b = malloc((rp->n_ents + 1) * sizeof *b);
	const char **ly = malloc((rp->n_ents + 1) * sizeof *ly);
	const struct entry **tmp = malloc((rp->n_ents + 1) * sizeof *tmp);
	if (legend < 0 || !ins || !a || !b || !ly || !tmp) {
		free(ins), free(a), free(b), free(ly), free(tmp);
		return legend < 0 ? -1 : esg_set_error("out of memory");
	}
	size_t nin = 0;
	for (size_t i = 0; i < rp->n_ents; i++) {
		size_t k = 0;
		while (k < nin && strcmp(ins[k], rp->ents[i].input) != 0)
			k++;
		if (k == nin)
			ins[nin++] = rp->ents[i].input;
	}
	const esg_report_opts *o = &rp->o;
	static const char *const signs[] = { "positive", "negative", "absolute_value", "all" };
	static const char *const views[] = { "axial", "coronal", "sagittal" };
	put(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	       "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
	       "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
	       "<meta name=\"generator\" content=\"esg-render " ESG_VERSION "\">\n"
	       "<script>window.esgErrors=[];window.addEventListener('error',function(e){"
	       "window.esgErrors.push(String(e.message||e));var d=document.getElementById('errors');"
	       "if(d)d.textContent+=String(e.message||e)+'\\n';});</script>\n<title>");
	esc(f, o->title);
	fprintf(f, "</title>\n<style>\n%s%s</style>\n</head><body>\n<h1>", css, esg_report_eval_css);
	esc(f, o->title);
	fprintf(f, "</h1>\n<p class=\"meta\">%zu record%s, %zu input%s, %zu table%s \xc2\xb7 %s view \xc2\xb7 "
		   "sign %s \xc2\xb7 ",
		rp->records, rp->records == 1 ? "" : "s", nin, nin == 1 ? "" : "s", rp->n_tabs,
		rp->n_tabs == 1 ? "" : "s", views[o->view], signs[o->sign]);
	fprintf(f, "<img class=\"legend\" id=\"p%d\" alt=\"colour map\" src=\"", legend);
	put_data_uri(f, &rp->pics[legend]);
	fprintf(f, "\"> %s from 0 to each map's %g-th percentile (hover a caption for it); "
		   "not drawn: at most %g of it \xc2\xb7 made by esg-render " ESG_VERSION "</p>\n",
		esg_cmap_name(rp->cmap), o->clip, o->threshold);
	put(f, "<noscript><p>The pictures are drawn by the page's script: enable JavaScript.</p></noscript>\n"
	       "<pre id=\"errors\"></pre>\n<nav><ul><li><a href=\"#summary\">summary</a></li>");
	if (rp->n_tabs)
		put(f, "<li><a href=\"#evaluation\">evaluation</a></li>");
	for (size_t i = 0; i < nin; i++) {
		fprintf(f, "<li><a href=\"#input-%zu\">", i);
		esc(f, ins[i]);
		put(f, "</a></li>");
	}
	if (rp->n_tabs)
		put(f, "<li><a href=\"#tables\">tables</a></li>");
	put(f, "</ul></nav>\n");
	/* drawn by the script from esg-data: the summary and the evaluation */
	put(f, "<section id=\"summary\" aria-label=\"summary\"></section>\n"
	       "<section id=\"evaluation\" aria-label=\"evaluation\"></section>\n");
	/* every sprite once; the canvases draw from them */
	put(f, "<div id=\"store\" hidden>\n");
	for (size_t i = 0; i < rp->n_pics; i++) {
		if ((int)i == legend)
			continue;
		fprintf(f, "<img id=\"p%zu\" alt=\"\" src=\"", i);
		put_data_uri(f, &rp->pics[i]);
		put(f, "\">\n");
	}
	put(f, "</div>\n");
	for (size_t i = 0; i < nin; i++)
		put_section(f, rp, i, ins[i], a, b, ly, tmp);
	if (rp->n_tabs) {
		put(f, "<section id=\"tables\"><h2>Tables</h2>\n"
		       "<p class=\"meta\">Every table as written, one row per file \xc2\xb7 metric; "
		       "open one to read or sort it.</p>\n");
		for (size_t i = 0; i < rp->n_tabs; i++)
			put_table(f, rp, &rp->tabs[i], i);
		put(f, "</section>\n");
	}
	put_data(f, rp);
	fprintf(f, "<script>\n%s%s</script>\n</body></html>\n", esg_report_eval_js, script);
	free(ins), free(a), free(b), free(ly), free(tmp);
	/* the legend is written; drop it so that a second write adds no other */
	free(rp->pics[legend].png);
	rp->n_pics--;
	if (ferror(f))
		return esg_set_error("write error");
	return 0;
}
