/* perturb/perturb.c - the perturbation and surrogate family, in C over the
 * torch shim: occlusion, feature ablation, feature permutation, Shapley
 * value sampling, KernelSHAP, LIME, RISE, extremal perturbations.
 *
 * Every method (but extremal perturbations, which needs gradients) turns
 * into a list of perturbed copies of an item, pushed into a forward batcher
 * that evaluates at most job->internal_batch of them per call (no autograd:
 * esg_model_forward) and hands back the target scores in push order.  The
 * random draws come from one stream (ESG_STREAM_PERTURB) consumed in a fixed
 * order, so results depend on --seed only, not on --internal-batch or
 * --threads (beyond float rounding in the model).
 */
#include "attr/family.h"
#include "shim/esg_torch.h"
#include "attr/perturb/perturb.h"
#include "attr/local.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters (Captum's names and defaults where Captum has the method) ---- */

#define LOCAL { "local", ESG_P_CHOICE, "auto", "auto|off", 0, 0, \
	"auto: evaluate only the crop a window can change when the model is local and its score a " \
	"voxel sum (esg-wrap fixed-mask / argmax; else the whole volume, reason in esg.local); off: always the whole volume" }

#define FMASK { "feature_mask", ESG_P_STRING, "voxel", NULL, 0, 0, \
	"features: voxel | grid:B[,B,B] | slic:N[,COMPACTNESS] | file:PATH[:TENSOR]" }

static const esg_param_spec esg_p_occlusion[] = {
	{ "sliding_window_shapes", ESG_P_STRING, "8", NULL, 0, 0,
	  "window per item axis, channel first as Captum (C,D,H,W), or per spatial axis / one for all "
	  "(then all channels)" },
	{ "strides", ESG_P_STRING, "", NULL, 0, 0,
	  "window step, same forms (empty: the window shape; Captum's default is 1)" },
	LOCAL,
	ESG_PARAM_END
};
static const esg_param_spec esg_p_fmask[] = { FMASK, ESG_PARAM_END };
static const esg_param_spec esg_p_ablation[] = { FMASK, LOCAL, ESG_PARAM_END };
static const esg_param_spec esg_p_shapley[] = {
	{ "n_samples", ESG_P_INT, "25", NULL, 1, 1000000, "random feature orders" },
	FMASK, ESG_PARAM_END
};
static const esg_param_spec esg_p_rise[] = {
	{ "n_masks", ESG_P_INT, "4000", NULL, 1, 100000000, "random masks" },
	{ "s", ESG_P_INT, "7", NULL, 1, 100000, "mask grid cells per spatial axis" },
	{ "p1", ESG_P_FLOAT, "0.5", NULL, 1e-6, 1, "probability that a grid cell is kept" },
	ESG_PARAM_END
};
static const esg_param_spec esg_p_extremal[] = {
	{ "areas", ESG_P_STRING, "0.1", NULL, 0, 0, "target area fractions, comma separated (maps averaged)" },
	{ "max_iter", ESG_P_INT, "800", NULL, 1, 1000000, "optimisation iterations" },
	{ "step", ESG_P_INT, "7", NULL, 1, 100000, "mask parameter spacing (voxels)" },
	{ "sigma", ESG_P_FLOAT, "21", NULL, 0, 1e6, "mask smoothness (voxels; interpolation std sigma/2)" },
	{ "max_blur", ESG_P_FLOAT, "20", NULL, 1e-3, 1e4, "Gaussian blur of the perturbation (voxels)" },
	{ "variant", ESG_P_CHOICE, "preserve", "preserve|delete", 0, 0,
	  "keep the score with the mask (preserve) or lower it by removing the mask (delete)" },
	{ "jitter", ESG_P_BOOL, "true", NULL, 0, 0, "flip the input along the last axis every other iteration" },
	ESG_PARAM_END
};
static const esg_param_spec esg_p_lime[] = {
	{ "n_samples", ESG_P_INT, "50", NULL, 1, 10000000, "random feature subsets" },
	FMASK,
	{ "interpretable_model", ESG_P_CHOICE, "lasso", "lasso|ridge|linear", 0, 0,
	  "weighted surrogate, with intercept (Captum: SkLearnLasso(alpha=0.01))" },
	{ "alpha", ESG_P_FLOAT, "0.01", NULL, 0, 1e30, "lasso / ridge penalty" },
	{ "kernel_width", ESG_P_FLOAT, "1.0", NULL, 1e-12, 1e30,
	  "similarity exp(-d^2 / (2 width^2)), d the cosine distance to the input" },
	ESG_PARAM_END
};
static const esg_param_spec esg_p_kernel_shap[] = {
	{ "n_samples", ESG_P_INT, "25", NULL, 1, 10000000, "feature subsets (all and none first)" },
	FMASK, ESG_PARAM_END
};

/* ---- the forward batcher ----------------------------------------------------- */

/* Scores arrive as double: a wrapper's float64 sum keeps the change a small
 * window makes to a score over millions of voxels. */
typedef void (*score_fn)(void *ctx, int64_t tag, double score, int slot);

typedef struct fb {
	esg_attr_job *job;
	int64_t shape[ESG_MAX_DIMS];
	size_t item;
	int cap, used, fitted;   /* fitted: cap sized after a measured call */
	float *x;
	int64_t *target, *tag;
	score_fn fn;
	void *ctx;
	const char *what;
	int64_t done, total;
} fb;

static size_t item_numel(const esg_attr_job *job)
{
	size_t n = 1;
	for (int d = 1; d < job->ndim; d++)
		n *= (size_t)job->shape[d];
	return n;
}

static void fb_close(fb *b)
{
	free(b->x);
	free(b->target);
	free(b->tag);
	memset(b, 0, sizeof *b);
}

static int fb_open(fb *b, esg_attr_job *job, score_fn fn, void *ctx, const char *what)
{
	memset(b, 0, sizeof *b);
	b->job = job;
	memcpy(b->shape, job->shape, sizeof b->shape);
	b->item = item_numel(job);
	/* buffers for the most items a call may get (untouched past those used) */
	size_t max = (size_t)job->internal_batch;
	b->cap = esg_attr_batch_fit(job, 0, b->item * sizeof *b->x);
	b->fn = fn;
	b->ctx = ctx;
	b->what = what;
	b->x = malloc(max * b->item * sizeof *b->x);
	b->target = malloc(max * sizeof *b->target);
	b->tag = malloc(max * sizeof *b->tag);
	if (!b->x || !b->target || !b->tag) {
		fb_close(b);
		return esg_set_error("out of memory for an internal batch of %d items of %zu values",
				     job->internal_batch, b->item);
	}
	return 0;
}

static float *fb_slot(fb *b) { return b->x + (size_t)b->used * b->item; }

static void progress(esg_attr_job *job, const char *what, int64_t done, int64_t total)
{
	if (job->progress && total > 0)
		job->progress(job->progress_ctx, what, done < total ? done : total, total);
}

static int fb_flush(fb *b)
{
	if (!b->used)
		return 0;
	esg_attr_job *job = b->job;
	int n = b->used;
	b->shape[0] = n;
	esg_tensor *out = NULL;
	if (esg_model_forward(job->model, b->x, job->ndim, b->shape, &out))
		return -1;
	int ok = out->ndim == 2 && out->shape[0] == n;
	int64_t c = ok ? out->shape[1] : 0, bad = -1;
	for (int i = 0; ok && i < n; i++)
		if (b->target[i] < 0 || b->target[i] >= c)
			bad = i;
	if (!ok || bad >= 0) {
		char s[128];
		esg_shape_str(out->ndim, out->shape, s, sizeof s);
		esg_torch_tensor_free(out);
		if (!ok)
			return esg_set_error("model output is %s, not [N, C] scores "
					     "(wrap a segmentation model with esg-wrap)", s);
		return esg_set_error("target %lld is out of range: the model has %lld outputs",
				     (long long)b->target[bad], (long long)c);
	}
	job->passes++;
	job->evaluations += n;
	b->used = 0;
	for (int i = 0; i < n; i++)
		b->fn(b->ctx, b->tag[i], esg_tensor_get(out, i * c + b->target[i]), i);
	esg_torch_tensor_free(out);
	b->done += n;
	if (b->done < b->total)  /* the last line (with its newline) comes from fb_finish */
		progress(job, b->what, b->done, b->total);
	/* the first call measured what an item costs: size the rest by it */
	if (!b->fitted) {
		b->cap = esg_attr_batch_fit(job, 0, b->item * sizeof *b->x);
		b->fitted = 1;
	}
	return 0;
}

static int fb_push(fb *b, int64_t target, int64_t tag)
{
	b->target[b->used] = target;
	b->tag[b->used] = tag;
	if (++b->used == b->cap)
		return fb_flush(b);
	return 0;
}

static int fb_finish(fb *b)
{
	if (fb_flush(b))
		return -1;
	progress(b->job, b->what, b->total, b->total);
	return 0;
}

/* ---- helpers ----------------------------------------------------------------- */

static int64_t rand_below(esg_rng *r, int64_t n)
{
	int64_t k = (int64_t)(esg_rng_uniform(r) * (double)n);
	return k >= n ? n - 1 : k;
}

/* A uniformly random permutation (Fisher-Yates, from the top). */
static void rand_perm(esg_rng *r, int64_t *p, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		p[i] = i;
	for (int64_t i = n - 1; i > 0; i--) {
		int64_t j = rand_below(r, i + 1), t = p[i];
		p[i] = p[j];
		p[j] = t;
	}
}

/* Parse "a,b,c" into up to max positive integers; returns the count. */
static int parse_ints(const char *key, const char *s, int64_t *v, int max)
{
	int n = 0;
	const char *p = s;
	for (;;) {
		char *end;
		errno = 0;
		long long x = strtoll(p, &end, 10);
		if (errno || end == p || x < 1 || x > 1LL << 40)
			return esg_set_error("parameter %s: '%s' is not a list of positive integers", key, s);
		if (n == max)
			return esg_set_error("parameter %s: '%s' has more than %d values", key, s, max);
		v[n++] = x;
		if (!*end)
			return n;
		if (*end != ',')
			return esg_set_error("parameter %s: '%s' is not a list of positive integers", key, s);
		p = end + 1;
	}
}

static int parse_doubles(const char *key, const char *s, double *v, int max, double lo, double hi)
{
	int n = 0;
	const char *p = s;
	for (;;) {
		char *end;
		errno = 0;
		double x = strtod(p, &end);
		if (errno || end == p || !(x > lo && x < hi))
			return esg_set_error("parameter %s: '%s' is not a list of numbers in (%g, %g)", key, s, lo, hi);
		if (n == max)
			return esg_set_error("parameter %s: '%s' has more than %d values", key, s, max);
		v[n++] = x;
		if (!*end)
			return n;
		if (*end != ',')
			return esg_set_error("parameter %s: '%s' is not a list of numbers", key, s);
		p = end + 1;
	}
}

static int fmask_for(esg_attr_job *job, const esg_fmask_spec *s, int m, esg_fmask *out)
{
	size_t item = item_numel(job);
	if (esg_fmask_build(s, job->x + (size_t)m * item, job->ndim - 1, job->shape + 1, job->axes, out))
		return -1;
	return 0;
}

static int fmask_spec(esg_attr_job *job, esg_fmask_spec *s)
{
	const char *spec = esg_params_str(job->params, "feature_mask");
	return esg_fmask_parse(spec ? spec : "voxel", s);
}

/* ---- occlusion ----------------------------------------------------------------
 * Captum's Occlusion: windows start at k * stride along every item axis
 * (channel axis included), k = 0 .. ceil((n - w) / s), clipped at the end;
 * an element's attribution is the mean, over the windows covering it, of
 * f(x) - f(x with the window set to the baseline). */

typedef struct occ {
	esg_attr_job *job;
	int nd;                          /* item axes: C, spatial... */
	int64_t dims[ESG_MAX_DIMS], win[ESG_MAX_DIMS], stride[ESG_MAX_DIMS], cnt[ESG_MAX_DIMS];
	int64_t W;                       /* windows per item */
	size_t item;
	float *attr, *count;             /* current item */
	double f0;
} occ;

/* Box of window w: [lo, hi) per item axis. */
static void occ_box(const occ *o, int64_t w, int64_t *lo, int64_t *hi)
{
	for (int a = o->nd - 1; a >= 0; a--) {
		int64_t k = w % o->cnt[a];
		w /= o->cnt[a];
		lo[a] = k * o->stride[a];
		hi[a] = lo[a] + o->win[a] < o->dims[a] ? lo[a] + o->win[a] : o->dims[a];
	}
}

/* For every contiguous run of the box (along the last axis): op 0 copies
 * src into dst, op 1 adds v to dst and 1 to cnt. */
static void box_apply(const occ *o, const int64_t *lo, const int64_t *hi, int op, float *dst,
		      const float *src, float v, float *cnt)
{
	int nd = o->nd;
	int64_t idx[ESG_MAX_DIMS];
	for (int a = 0; a < nd; a++) {
		if (lo[a] >= hi[a])
			return;
		idx[a] = lo[a];
	}
	size_t len = (size_t)(hi[nd - 1] - lo[nd - 1]);
	for (;;) {
		size_t off = 0;
		for (int a = 0; a < nd; a++)
			off = off * (size_t)o->dims[a] + (size_t)idx[a];
		if (op == 0) {
			memcpy(dst + off, src + off, len * sizeof *dst);
		} else {
			for (size_t j = 0; j < len; j++) {
				dst[off + j] += v;
				cnt[off + j] += 1;
			}
		}
		int a = nd - 2;
		for (; a >= 0; a--) {
			if (++idx[a] < hi[a])
				break;
			idx[a] = lo[a];
		}
		if (a < 0)
			return;
	}
}

static void occ_consume(void *ctx, int64_t tag, double score, int slot)
{
	(void)slot;
	occ *o = ctx;
	if (tag < 0) {
		o->f0 = score;
		return;
	}
	int64_t lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS];
	occ_box(o, tag, lo, hi);
	box_apply(o, lo, hi, 1, o->attr, NULL, o->f0 - score, o->count);
}

/* Window-like list: as many values as item axes (Captum: channel first), or
 * one per spatial axis / one for all spatial axes (the channel axis then
 * spans all channels). */
static int parse_window(const char *key, const char *s, const int64_t *dims, int nd,
			const int64_t *fill, int64_t *out)
{
	int64_t v[ESG_MAX_DIMS];
	int n = parse_ints(key, s, v, ESG_MAX_DIMS);
	if (n < 0)
		return -1;
	if (n == nd) {
		memcpy(out, v, (size_t)nd * sizeof *v);
	} else if (nd > 1 && (n == nd - 1 || n == 1)) {
		out[0] = fill ? fill[0] : dims[0];
		for (int a = 1; a < nd; a++)
			out[a] = v[n == 1 ? 0 : a - 1];
	} else {
		return esg_set_error("parameter %s: '%s' has %d values; want %d (channel and spatial "
				     "axes, as Captum), %d (spatial axes) or 1", key, s, n, nd, nd - 1);
	}
	return 0;
}

/* ---- receptive-field-local evaluation (lib/attr/local.h) -------------------------
 * Shared by occlusion and feature ablation: 1 if --param local=auto and
 * the model evaluates locally (L is open, item 0 started), 0 to evaluate
 * the whole volume (job->local says why), -1 on error. */
static int local_begin(esg_attr_job *job, esg_local *L, const int64_t *box, esg_local_fn fn, void *ctx)
{
	const char *lp = esg_params_str(job->params, "local");
	if (lp && !strcmp(lp, "off")) {
		snprintf(job->local, sizeof job->local, "off: --param local=off");
		return 0;
	}
	int rc = esg_local_open(L, job->model, job->ndim, job->shape, job->x, box, job->internal_batch, fn, ctx);
	if (!rc && L->on)
		rc = esg_local_item(L, job->x, 0, job->target[0]);
	job->passes += L->passes;
	job->evaluations += L->evaluations;
	L->passes = L->evaluations = 0;
	snprintf(job->local, sizeof job->local, "%s", L->info);
	if (rc || !L->on) {
		esg_local_close(L);
		return rc ? -1 : 0;
	}
	return 1;
}

static int local_end(esg_attr_job *job, esg_local *L, int rc)
{
	job->passes += L->passes;
	job->evaluations += L->evaluations;
	esg_local_close(L);
	return rc;
}

/* Occlusion, window by window on crops. */
static void occ_local_consume(void *ctx, int64_t tag, double delta)
{
	occ *o = ctx;
	int64_t lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS];
	occ_box(o, tag, lo, hi);
	box_apply(o, lo, hi, 1, o->attr, NULL, (float)-delta, o->count);
}

static int occ_local(esg_attr_job *job, occ *o, esg_local *L, float *count)
{
	int nsp = o->nd - 1, rc = 0;
	int64_t total = job->shape[0] * o->W;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		const float *x = job->x + (size_t)m * o->item, *bl = job->baselines[0] + (size_t)m * o->item;
		if (m > 0 && (rc = esg_local_item(L, x, m, job->target[m])))
			break;
		o->attr = job->attr + (size_t)m * o->item;
		o->count = count;
		memset(o->attr, 0, o->item * sizeof *o->attr);
		memset(count, 0, o->item * sizeof *count);
		for (int64_t w = 0; w < o->W && !rc; w++) {
			int64_t lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS], olo[ESG_MAX_DIMS], ohi[ESG_MAX_DIMS],
				clo[ESG_MAX_DIMS], chi[ESG_MAX_DIMS], idx[ESG_MAX_DIMS], cd[ESG_MAX_DIMS];
			occ_box(o, w, lo, hi);
			int empty = 0;
			for (int a = 0; a < o->nd; a++)
				empty |= lo[a] >= hi[a];
			if (empty)      /* a window past the end (stride > window): no change */
				continue;
			esg_local_boxes(L, lo + 1, hi + 1, olo, ohi, clo, chi);
			float *p = esg_local_slot(L, olo, ohi, clo, chi);
			if (!p) {
				rc = -1;
				break;
			}
			/* the window (inside the crop) at the baseline */
			size_t cv = 1, V = o->item / (size_t)o->dims[0];
			for (int a = 0; a < nsp; a++) {
				cd[a] = chi[a] - clo[a];
				cv *= (size_t)cd[a];
			}
			size_t len = (size_t)(hi[nsp] - lo[nsp]);
			for (int64_t c = lo[0]; c < hi[0]; c++) {
				memcpy(idx, lo + 1, (size_t)nsp * sizeof *idx);
				for (;;) {
					size_t g = 0, k = 0;
					for (int a = 0; a < nsp; a++) {
						g = g * (size_t)o->dims[a + 1] + (size_t)idx[a];
						k = k * (size_t)cd[a] + (size_t)(idx[a] - clo[a]);
					}
					memcpy(p + (size_t)c * cv + k, bl + (size_t)c * V + g, len * sizeof *p);
					int a = nsp - 2;
					for (; a >= 0; a--) {
						if (++idx[a] < hi[a + 1])
							break;
						idx[a] = lo[a + 1];
					}
					if (a < 0)
						break;
				}
			}
			rc = esg_local_commit(L, w);
			progress(job, "occlusion crops", m * o->W + w + 1, total);
		}
		if (!rc)
			rc = esg_local_flush(L);
		for (size_t j = 0; j < o->item && !rc; j++)
			o->attr[j] = count[j] > 0 ? o->attr[j] / count[j] : 0;
	}
	return rc;
}

static int esg_run_occlusion(esg_attr_job *job)
{
	occ o = { 0 };
	o.job = job;
	o.nd = job->ndim - 1;
	o.item = item_numel(job);
	if (o.nd < 1)
		return esg_set_error("occlusion needs an image [N, C, ...]");
	memcpy(o.dims, job->shape + 1, (size_t)o.nd * sizeof *o.dims);
	const char *ws = esg_params_str(job->params, "sliding_window_shapes");
	const char *ss = esg_params_str(job->params, "strides");
	if (parse_window("sliding_window_shapes", ws, o.dims, o.nd, NULL, o.win))
		return -1;
	if (ss && *ss) {
		if (parse_window("strides", ss, o.dims, o.nd, o.win, o.stride))
			return -1;
	} else {
		memcpy(o.stride, o.win, sizeof o.win);
	}
	o.W = 1;
	for (int a = 0; a < o.nd; a++) {
		if (o.win[a] > o.dims[a])
			return esg_set_error("sliding_window_shapes: window %lld is larger than the item "
					     "axis %d of size %lld (axis 0 is the channel axis)",
					     (long long)o.win[a], a, (long long)o.dims[a]);
		o.cnt[a] = (o.dims[a] - o.win[a] + o.stride[a] - 1) / o.stride[a] + 1;
		o.W *= o.cnt[a];
	}
	o.attr = NULL;
	float *count = malloc(o.item * sizeof *count);
	fb b;
	if (!count)
		return esg_set_error("out of memory");
	esg_local L;
	int lc = o.nd > 1 ? local_begin(job, &L, o.win + 1, occ_local_consume, &o) : 0;
	if (o.nd <= 1)
		snprintf(job->local, sizeof job->local, "off: the input has no spatial axes");
	if (lc) {
		int rc = lc < 0 ? -1 : local_end(job, &L, occ_local(job, &o, &L, count));
		free(count);
		return rc;
	}
	if (fb_open(&b, job, occ_consume, &o, "occlusion evaluations")) {
		free(count);
		return -1;
	}
	b.total = job->shape[0] * (o.W + 1);
	int rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		const float *x = job->x + (size_t)m * o.item, *bl = job->baselines[0] + (size_t)m * o.item;
		o.attr = job->attr + (size_t)m * o.item;
		o.count = count;
		memset(o.attr, 0, o.item * sizeof *o.attr);
		memset(count, 0, o.item * sizeof *count);
		memcpy(fb_slot(&b), x, o.item * sizeof(float));
		rc = fb_push(&b, job->target[m], -1);
		for (int64_t w = 0; w < o.W && !rc; w++) {
			int64_t lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS];
			float *p = fb_slot(&b);
			memcpy(p, x, o.item * sizeof *p);
			occ_box(&o, w, lo, hi);
			box_apply(&o, lo, hi, 0, p, bl, 0, NULL);
			rc = fb_push(&b, job->target[m], w);
		}
		if (!rc)
			rc = fb_flush(&b);
		/* elements no window covers (stride > window) get 0 (Captum: 0/0) */
		for (size_t j = 0; j < o.item && !rc; j++)
			o.attr[j] = count[j] > 0 ? o.attr[j] / count[j] : 0;
	}
	if (!rc)
		rc = fb_finish(&b);
	fb_close(&b);
	free(count);
	return rc;
}

/* ---- feature ablation ------------------------------------------------------------
 * Each feature (all its elements together) set to the baseline; its
 * elements get f(x) - f(ablated). */

typedef struct abl {
	const esg_fmask *mask;
	float *attr;
	double f0;
} abl;

static void abl_consume(void *ctx, int64_t tag, double score, int slot)
{
	(void)slot;
	abl *a = ctx;
	if (tag < 0) {
		a->f0 = score;
		return;
	}
	const esg_fmask *fm = a->mask;
	for (int64_t i = fm->start[tag]; i < fm->start[tag + 1]; i++)
		a->attr[fm->elem[i]] = a->f0 - score;
}

/* Feature ablation on crops: a feature's crop covers the bounding box of
 * its elements. */
static void abl_local_consume(void *ctx, int64_t tag, double delta)
{
	abl *a = ctx;
	const esg_fmask *fm = a->mask;
	for (int64_t i = fm->start[tag]; i < fm->start[tag + 1]; i++)
		a->attr[fm->elem[i]] = (float)-delta;
}

static int abl_local(esg_attr_job *job, abl *ab, esg_local *L, const esg_fmask_spec *spec)
{
	size_t item = item_numel(job);
	int nsp = job->ndim - 2, rc = 0;
	size_t V = item / (size_t)job->shape[1];
	esg_fmask fm = { 0 };
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		const float *x = job->x + (size_t)m * item, *bl = job->baselines[0] + (size_t)m * item;
		if (m > 0 && (rc = esg_local_item(L, x, m, job->target[m])))
			break;
		if ((rc = fmask_for(job, spec, m, &fm)))
			break;
		ab->mask = &fm;
		ab->attr = job->attr + (size_t)m * item;
		memset(ab->attr, 0, item * sizeof *ab->attr);
		for (int64_t f = 0; f < fm.n && !rc; f++) {
			int64_t lo[ESG_MAX_DIMS], hi[ESG_MAX_DIMS], olo[ESG_MAX_DIMS], ohi[ESG_MAX_DIMS],
				clo[ESG_MAX_DIMS], chi[ESG_MAX_DIMS], v[ESG_MAX_DIMS], cd[ESG_MAX_DIMS];
			if (fm.start[f] == fm.start[f + 1])
				continue;
			for (int64_t i = fm.start[f]; i < fm.start[f + 1]; i++) {
				size_t s = (size_t)fm.elem[i] % V;
				for (int a = nsp - 1; a >= 0; a--) {
					v[a] = (int64_t)(s % (size_t)job->shape[2 + a]);
					s /= (size_t)job->shape[2 + a];
				}
				for (int a = 0; a < nsp; a++) {
					if (i == fm.start[f] || v[a] < lo[a])
						lo[a] = v[a];
					if (i == fm.start[f] || v[a] + 1 > hi[a])
						hi[a] = v[a] + 1;
				}
			}
			esg_local_boxes(L, lo, hi, olo, ohi, clo, chi);
			float *p = esg_local_slot(L, olo, ohi, clo, chi);
			if (!p) {
				rc = -1;
				break;
			}
			size_t cv = 1;
			for (int a = 0; a < nsp; a++) {
				cd[a] = chi[a] - clo[a];
				cv *= (size_t)cd[a];
			}
			for (int64_t i = fm.start[f]; i < fm.start[f + 1]; i++) {
				size_t e = (size_t)fm.elem[i], c = e / V, s = e % V, k = 0;
				for (int a = nsp - 1; a >= 0; a--) {
					v[a] = (int64_t)(s % (size_t)job->shape[2 + a]);
					s /= (size_t)job->shape[2 + a];
				}
				for (int a = 0; a < nsp; a++)
					k = k * (size_t)cd[a] + (size_t)(v[a] - clo[a]);
				p[c * cv + k] = bl[e];
			}
			rc = esg_local_commit(L, f);
			progress(job, "feature_ablation crops", f + 1, fm.n);
		}
		if (!rc)
			rc = esg_local_flush(L);
		esg_fmask_free(&fm);
	}
	esg_fmask_free(&fm);
	return rc;
}

static int esg_run_feature_ablation(esg_attr_job *job)
{
	size_t item = item_numel(job);
	esg_fmask_spec spec;
	esg_fmask fm = { 0 };
	abl a = { 0 };
	fb b;
	if (fmask_spec(job, &spec))
		return -1;
	esg_local L;
	int lc = job->ndim > 2 ? local_begin(job, &L, NULL, abl_local_consume, &a) : 0;
	if (job->ndim <= 2)
		snprintf(job->local, sizeof job->local, "off: the input has no spatial axes");
	if (lc) {
		int rc = lc < 0 ? -1 : local_end(job, &L, abl_local(job, &a, &L, &spec));
		esg_fmask_spec_clear(&spec);
		return rc;
	}
	if (fb_open(&b, job, abl_consume, &a, "feature_ablation evaluations")) {
		esg_fmask_spec_clear(&spec);
		return -1;
	}
	int rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		if ((rc = fmask_for(job, &spec, m, &fm)))
			break;
		b.total = job->shape[0] * (fm.n + 1);
		const float *x = job->x + (size_t)m * item, *bl = job->baselines[0] + (size_t)m * item;
		a.mask = &fm;
		a.attr = job->attr + (size_t)m * item;
		memcpy(fb_slot(&b), x, item * sizeof(float));
		rc = fb_push(&b, job->target[m], -1);
		for (int64_t f = 0; f < fm.n && !rc; f++) {
			float *p = fb_slot(&b);
			memcpy(p, x, item * sizeof *p);
			for (int64_t i = fm.start[f]; i < fm.start[f + 1]; i++)
				p[fm.elem[i]] = bl[fm.elem[i]];
			rc = fb_push(&b, job->target[m], f);
		}
		if (!rc)
			rc = fb_flush(&b);
		esg_fmask_free(&fm);
	}
	if (!rc)
		rc = fb_finish(&b);
	fb_close(&b);
	esg_fmask_free(&fm);
	esg_fmask_spec_clear(&spec);
	return rc;
}

/* ---- feature permutation ------------------------------------------------------------
 * Captum's FeaturePermutation: each feature's values are shuffled across
 * the N items of the record (one random permutation per feature, never the
 * identity); item m's elements of the feature get f(x_m) - f(permuted x_m).
 * The mask is built on item 0 and shared by all items. */

typedef struct perm_ctx {
	const esg_fmask *mask;
	esg_attr_job *job;
	size_t item;
	double *f0;
} perm_ctx;

static void perm_consume(void *ctx, int64_t tag, double score, int slot)
{
	(void)slot;
	perm_ctx *c = ctx;
	int64_t N = c->job->shape[0];
	if (tag < 0) {
		c->f0[-tag - 1] = score;
		return;
	}
	int64_t f = tag / N, m = tag % N;
	float *a = c->job->attr + (size_t)m * c->item;
	for (int64_t i = c->mask->start[f]; i < c->mask->start[f + 1]; i++)
		a[c->mask->elem[i]] = c->f0[m] - score;
}

static int esg_run_feature_permutation(esg_attr_job *job)
{
	int64_t N = job->shape[0];
	if (N < 2)
		return esg_set_error("feature_permutation shuffles features across the items of a "
				     "record: it needs N >= 2 items, the image has N = %lld", (long long)N);
	size_t item = item_numel(job);
	esg_fmask_spec spec;
	esg_fmask fm = { 0 };
	esg_rng rng;
	esg_rng_init(&rng, job->seed, job->record, ESG_STREAM_PERTURB);
	double *f0 = malloc((size_t)N * sizeof *f0);
	int64_t *perm = malloc((size_t)N * sizeof *perm);
	perm_ctx c = { &fm, job, item, f0 };
	fb b;
	int rc = -1;
	if (!f0 || !perm) {
		free(f0);
		free(perm);
		return esg_set_error("out of memory");
	}
	if (fmask_spec(job, &spec)) {
		free(f0);
		free(perm);
		return -1;
	}
	if (fmask_for(job, &spec, 0, &fm) || fb_open(&b, job, perm_consume, &c, "feature_permutation evaluations"))
		goto out;
	b.total = N * (fm.n + 1);
	rc = 0;
	for (int64_t m = 0; m < N && !rc; m++) {
		memcpy(fb_slot(&b), job->x + (size_t)m * item, item * sizeof(float));
		rc = fb_push(&b, job->target[m], -1 - m);
	}
	for (int64_t f = 0; f < fm.n && !rc; f++) {
		int same;
		do {
			rand_perm(&rng, perm, N);
			same = 1;
			for (int64_t m = 0; m < N; m++)
				same &= perm[m] == m;
		} while (same);
		for (int64_t m = 0; m < N && !rc; m++) {
			float *p = fb_slot(&b);
			const float *src = job->x + (size_t)perm[m] * item;
			memcpy(p, job->x + (size_t)m * item, item * sizeof *p);
			for (int64_t i = fm.start[f]; i < fm.start[f + 1]; i++)
				p[fm.elem[i]] = src[fm.elem[i]];
			rc = fb_push(&b, job->target[m], f * N + m);
		}
	}
	if (!rc)
		rc = fb_finish(&b);
	fb_close(&b);
out:
	esg_fmask_free(&fm);
	esg_fmask_spec_clear(&spec);
	free(f0);
	free(perm);
	return rc;
}

/* ---- Shapley value sampling -------------------------------------------------------
 * Captum's ShapleyValueSampling: n_samples random feature orders; along
 * each, starting from the baseline, features are switched to the input one
 * by one and each gets its marginal change of the score; averaged. */

typedef struct shap_ctx {
	double *acc;      /* per feature */
	double fbase, prev;
} shap_ctx;

static void shap_consume(void *ctx, int64_t tag, double score, int slot)
{
	(void)slot;
	shap_ctx *c = ctx;
	if (tag == -1) {
		c->fbase = score;
		return;
	}
	if (tag & 1)      /* first step of an order */
		c->prev = c->fbase;
	c->acc[tag >> 1] += (double)score - c->prev;
	c->prev = score;
}

static int esg_run_shapley_value_sampling(esg_attr_job *job)
{
	size_t item = item_numel(job);
	int S = (int)esg_params_int(job->params, "n_samples");
	esg_fmask_spec spec;
	esg_fmask fm = { 0 };
	esg_rng rng;
	esg_rng_init(&rng, job->seed, job->record, ESG_STREAM_PERTURB);
	shap_ctx c = { 0 };
	float *cur = malloc(item * sizeof *cur);
	int64_t *perm = NULL;
	fb b;
	if (!cur)
		return esg_set_error("out of memory");
	if (fmask_spec(job, &spec)) {
		free(cur);
		return -1;
	}
	if (fb_open(&b, job, shap_consume, &c, "shapley_value_sampling evaluations")) {
		esg_fmask_spec_clear(&spec);
		free(cur);
		return -1;
	}
	int rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		if ((rc = fmask_for(job, &spec, m, &fm)))
			break;
		b.total = job->shape[0] * (fm.n * S + 1);
		free(perm);
		free(c.acc);
		perm = malloc((size_t)fm.n * sizeof *perm);
		c.acc = calloc((size_t)fm.n, sizeof *c.acc);
		if (!perm || !c.acc) {
			rc = esg_set_error("out of memory");
			break;
		}
		const float *x = job->x + (size_t)m * item, *bl = job->baselines[0] + (size_t)m * item;
		memcpy(fb_slot(&b), bl, item * sizeof(float));
		rc = fb_push(&b, job->target[m], -1);
		for (int s = 0; s < S && !rc; s++) {
			rand_perm(&rng, perm, fm.n);
			memcpy(cur, bl, item * sizeof *cur);
			for (int64_t i = 0; i < fm.n && !rc; i++) {
				int64_t f = perm[i];
				for (int64_t k = fm.start[f]; k < fm.start[f + 1]; k++)
					cur[fm.elem[k]] = x[fm.elem[k]];
				memcpy(fb_slot(&b), cur, item * sizeof *cur);
				rc = fb_push(&b, job->target[m], (f << 1) | (i == 0));
			}
		}
		if (!rc)
			rc = fb_flush(&b);
		float *a = job->attr + (size_t)m * item;
		for (size_t j = 0; j < item && !rc; j++)
			a[j] = (float)(c.acc[fm.id[j]] / S);
		esg_fmask_free(&fm);
	}
	if (!rc)
		rc = fb_finish(&b);
	fb_close(&b);
	esg_fmask_free(&fm);
	esg_fmask_spec_clear(&spec);
	free(cur);
	free(perm);
	free(c.acc);
	return rc;
}

/* ---- surrogates: KernelSHAP and LIME ----------------------------------------------
 * Binary samples z over the features (1: the input's values, 0: the
 * baseline's), one forward pass each, then a weighted linear fit of the
 * scores on z; the coefficients are the attributions. */

typedef struct sur_ctx {
	double *y;
} sur_ctx;

static void sur_consume(void *ctx, int64_t tag, double score, int slot)
{
	(void)slot;
	((sur_ctx *)ctx)->y[tag] = score;
}

/* Pick k of the M features at random into z (0/1 doubles). */
static void pick_k(esg_rng *r, int64_t *idx, int64_t M, int64_t k, double *z)
{
	for (int64_t i = 0; i < M; i++) {
		idx[i] = i;
		z[i] = 0;
	}
	for (int64_t i = 0; i < k; i++) {
		int64_t j = i + rand_below(r, M - i), t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
		z[idx[i]] = 1;
	}
}

static int run_surrogate(esg_attr_job *job, int kernel_shap)
{
	size_t item = item_numel(job);
	int S = (int)esg_params_int(job->params, "n_samples");
	const char *model = kernel_shap ? "linear" : esg_params_str(job->params, "interpretable_model");
	double alpha = kernel_shap ? 0 : esg_params_double(job->params, "alpha");
	double kw = kernel_shap ? 1 : esg_params_double(job->params, "kernel_width");
	esg_fmask_spec spec;
	esg_fmask fm = { 0 };
	esg_rng rng;
	esg_rng_init(&rng, job->seed, job->record, ESG_STREAM_PERTURB);
	double *Z = NULL, *w = NULL, *coef = NULL, *probs = NULL, *cdf = NULL;
	int64_t *idx = NULL;
	sur_ctx c = { NULL };
	fb b;
	if (fmask_spec(job, &spec))
		return -1;
	if (fb_open(&b, job, sur_consume, &c, kernel_shap ? "kernel_shap evaluations" : "lime evaluations")) {
		esg_fmask_spec_clear(&spec);
		return -1;
	}
	int rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		if ((rc = fmask_for(job, &spec, m, &fm)))
			break;
		int64_t M = fm.n;
		b.total = job->shape[0] * S;
		free(Z), free(w), free(coef), free(probs), free(cdf), free(idx), free(c.y);
		Z = malloc((size_t)S * M * sizeof *Z);
		w = malloc((size_t)S * sizeof *w);
		coef = malloc((size_t)M * sizeof *coef);
		probs = malloc((size_t)M * sizeof *probs);
		cdf = malloc((size_t)M * sizeof *cdf);
		idx = malloc((size_t)M * sizeof *idx);
		c.y = malloc((size_t)S * sizeof *c.y);
		if (!Z || !w || !coef || !probs || !cdf || !idx || !c.y) {
			rc = esg_set_error("out of memory for %d samples of %lld features", S, (long long)M);
			break;
		}
		if (kernel_shap) {
			if (M < 2) {
				rc = esg_set_error("kernel_shap needs at least 2 features, the mask has %lld",
						   (long long)M);
				break;
			}
			esg_kernel_shap_probs((int)M, probs);
			double s = 0;
			for (int64_t k = 0; k < M; k++)
				cdf[k] = s += probs[k];
		}
		const float *x = job->x + (size_t)m * item, *bl = job->baselines[0] + (size_t)m * item;
		double xx = 0;
		for (size_t j = 0; j < item; j++)
			xx += (double)x[j] * x[j];
		for (int s = 0; s < S && !rc; s++) {
			double *z = Z + (size_t)s * M;
			int64_t kept = 0;
			if (kernel_shap && s < 2) {   /* Captum: all features, then none */
				for (int64_t f = 0; f < M; f++)
					z[f] = s == 0;
				kept = s == 0 ? M : 0;
			} else if (kernel_shap) {
				double u = esg_rng_uniform(&rng);
				int64_t k = 1;
				while (k < M - 1 && cdf[k] <= u)
					k++;
				pick_k(&rng, idx, M, k, z);
				kept = k;
			} else {
				for (int64_t f = 0; f < M; f++)
					kept += z[f] = esg_rng_uniform(&rng) < 0.5;
			}
			float *p = fb_slot(&b);
			memcpy(p, bl, item * sizeof *p);
			for (int64_t f = 0; f < M; f++)
				if (z[f] != 0)
					for (int64_t i = fm.start[f]; i < fm.start[f + 1]; i++)
						p[fm.elem[i]] = x[fm.elem[i]];
			if (kernel_shap) {
				/* Captum: a huge weight on the all / none samples, 1 elsewhere
				 * (the kernel is in the sampling distribution) */
				w[s] = kept == 0 || kept == M ? 1e6 : 1;
			} else {
				/* Captum's default similarity: exp(-d^2 / (2 width^2)),
				 * d = 1 - cosine(x, perturbed) over the whole item */
				double xp = 0, pp = 0;
				for (size_t j = 0; j < item; j++) {
					xp += (double)x[j] * p[j];
					pp += (double)p[j] * p[j];
				}
				double den = sqrt(xx * pp);
				double d = 1 - xp / (den > 1e-8 ? den : 1e-8);
				w[s] = exp(-d * d / (2 * kw * kw));
			}
			rc = fb_push(&b, job->target[m], s);
		}
		if (!rc)
			rc = fb_flush(&b);
		if (rc)
			break;
		if (!strcmp(model, "lasso"))
			rc = esg_lasso(Z, c.y, w, S, (int)M, 1, alpha, 1000, 1e-4, coef, NULL);
		else
			rc = esg_wls(Z, c.y, w, S, (int)M, 1, !strcmp(model, "ridge") ? alpha : 0, coef, NULL);
		float *a = job->attr + (size_t)m * item;
		for (size_t j = 0; j < item && !rc; j++)
			a[j] = (float)coef[fm.id[j]];
		esg_fmask_free(&fm);
	}
	if (!rc)
		rc = fb_finish(&b);
	fb_close(&b);
	esg_fmask_free(&fm);
	esg_fmask_spec_clear(&spec);
	free(Z), free(w), free(coef), free(probs), free(cdf), free(idx), free(c.y);
	return rc;
}

static int esg_run_kernel_shap(esg_attr_job *job) { return run_surrogate(job, 1); }
static int esg_run_lime(esg_attr_job *job) { return run_surrogate(job, 0); }

/* ---- RISE (Petsiuk et al. 2018) ------------------------------------------------------
 * n_masks random masks: a grid of s cells per spatial axis, each 1 with
 * probability p1, upsampled linearly to (s + 1) * ceil(n / s) voxels per
 * axis (skimage resize order 1, 'reflect', as the reference code), shifted
 * by a random offset in [0, cell) and cropped to the image; perturbed input
 * = baseline + M (x - baseline) (x * M for the zero baseline); saliency =
 * sum_i f(x_i) M_i / (n_masks p1).  Masks are shared by all channels. */

typedef struct rise_ctx {
	float *masks;     /* cap x V, by batch slot */
	double *sal;      /* V, current item (double: thousands of masks) */
	int64_t V;
} rise_ctx;

static void rise_consume(void *ctx, int64_t tag, double score, int slot)
{
	(void)tag;
	rise_ctx *c = ctx;
	const float *mk = c->masks + (size_t)slot * c->V;
	for (int64_t v = 0; v < c->V; v++)
		c->sal[v] += (double)score * mk[v];
}

static int64_t mirror(int64_t i, int64_t n)
{
	if (n == 1)
		return 0;
	int64_t p = 2 * (n - 1);
	i %= p;
	if (i < 0)
		i += p;
	return i < n ? i : p - i;
}

static int esg_run_rise(esg_attr_job *job)
{
	int nsp = job->ndim - 2;
	if (nsp < 1 || nsp > 3)
		return esg_set_error("rise needs 1 to 3 spatial axes, the image has %d", nsp);
	int Nm = (int)esg_params_int(job->params, "n_masks");
	int s = (int)esg_params_int(job->params, "s");
	double p1 = esg_params_double(job->params, "p1");
	size_t item = item_numel(job);
	int64_t C = job->shape[1], V = (int64_t)item / C, G = 1;
	const int64_t *dim = job->shape + 2;
	for (int a = 0; a < nsp; a++)
		G *= s;
	esg_rng rng;
	esg_rng_init(&rng, job->seed, job->record, ESG_STREAM_PERTURB);
	rise_ctx c = { 0 };
	c.V = V;
	fb b;
	if (fb_open(&b, job, rise_consume, &c, "rise evaluations"))
		return -1;
	b.total = job->shape[0] * Nm;
	c.masks = malloc((size_t)job->internal_batch * V * sizeof *c.masks);
	float *grid = malloc((size_t)G * sizeof *grid);
	/* per axis, per voxel: two grid indices and weights */
	int64_t maxd = 0;
	for (int a = 0; a < nsp; a++)
		maxd = dim[a] > maxd ? dim[a] : maxd;
	int64_t *i0 = malloc((size_t)nsp * maxd * 2 * sizeof *i0);
	float *w0 = malloc((size_t)nsp * maxd * sizeof *w0);
	c.sal = malloc((size_t)V * sizeof *c.sal);
	int rc = -1;
	if (!c.masks || !grid || !i0 || !w0 || !c.sal) {
		esg_set_error("out of memory");
		goto out;
	}
	rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		const float *x = job->x + (size_t)m * item, *bl = job->baselines[0] + (size_t)m * item;
		float *a = job->attr + (size_t)m * item;
		memset(c.sal, 0, (size_t)V * sizeof *c.sal);
		for (int i = 0; i < Nm && !rc; i++) {
			for (int64_t g = 0; g < G; g++)
				grid[g] = esg_rng_uniform(&rng) < p1;
			for (int ax = 0; ax < nsp; ax++) {
				int64_t cell = (dim[ax] + s - 1) / s, up = (int64_t)(s + 1) * cell;
				int64_t sh = rand_below(&rng, cell);
				double scale = (double)s / up;
				for (int64_t v = 0; v < dim[ax]; v++) {
					double u = (v + sh + 0.5) * scale - 0.5;
					double f = floor(u);
					i0[(ax * maxd + v) * 2] = mirror((int64_t)f, s);
					i0[(ax * maxd + v) * 2 + 1] = mirror((int64_t)f + 1, s);
					w0[ax * maxd + v] = (float)(u - f);
				}
			}
			float *mk = c.masks + (size_t)b.used * V;
			int64_t idx[3] = { 0, 0, 0 };
			for (int64_t v = 0; v < V; v++) {
				double val = 0;
				for (int corner = 0; corner < (1 << nsp); corner++) {
					double wt = 1;
					int64_t g = 0;
					for (int ax = 0; ax < nsp; ax++) {
						int hi = corner >> ax & 1;
						float t = w0[ax * maxd + idx[ax]];
						wt *= hi ? t : 1 - t;
						g = g * s + i0[(ax * maxd + idx[ax]) * 2 + hi];
					}
					val += wt * grid[g];
				}
				mk[v] = (float)val;
				for (int ax = nsp - 1; ax >= 0; ax--) {
					if (++idx[ax] < dim[ax])
						break;
					idx[ax] = 0;
				}
			}
			float *p = fb_slot(&b);
			for (int64_t ch = 0; ch < C; ch++)
				for (int64_t v = 0; v < V; v++) {
					size_t j = (size_t)(ch * V + v);
					p[j] = bl[j] + mk[v] * (x[j] - bl[j]);
				}
			rc = fb_push(&b, job->target[m], i);
		}
		if (!rc)
			rc = fb_flush(&b);
		for (int64_t v = 0; v < V && !rc; v++)
			a[v] = (float)(c.sal[v] / (Nm * p1));
		for (int64_t ch = 1; ch < C && !rc; ch++)
			memcpy(a + ch * V, a, (size_t)V * sizeof *a);
	}
	if (!rc)
		rc = fb_finish(&b);
out:
	fb_close(&b);
	free(c.masks);
	free(c.sal);
	free(grid);
	free(i0);
	free(w0);
	return rc;
}

/* ---- extremal perturbations (Fong, Patrick & Vedaldi 2019) ---------------------------
 * After TorchRay's extremal_perturbation: a mask m in [0, 1] per target
 * area a, smooth by construction, is optimised to keep the target score
 * high ("preserve": x_p = m x + (1 - m) blur(x)) or low ("delete":
 * x_p = (1 - m) x + m blur(x)) while its sorted values match a vector of
 * (1 - a) V zeros and a V ones: energy = reward - lambda mean((sort(m) -
 * ref)^2), lambda = 300 growing by 1.0035 per iteration; SGD, learning rate
 * 0.01, momentum 0.9 with dampening 0.9; the parameters are clamped to
 * [0, 1]; the input is flipped along the last axis every other iteration
 * (jitter).  The mask is the parameter grid (one value per step voxels per
 * axis) interpolated with normalised Gaussian weights (std sigma / 2) --
 * separable and linear, where TorchRay uses a smooth-max of kernels; the
 * blur is one Gaussian of max_blur voxels where TorchRay interpolates a
 * pyramid of blurs.  The attribution is the mask (mean over the areas),
 * the same for every channel. */

typedef struct interp {
	int nsp;
	int64_t n[3], d[3];       /* parameter grid and image sizes */
	double *A[3];             /* d[a] x n[a] */
} interp;

static void interp_free(interp *it)
{
	for (int a = 0; a < 3; a++)
		free(it->A[a]);
}

static int interp_init(interp *it, int nsp, const int64_t *dim, int step, double sigma)
{
	memset(it, 0, sizeof *it);
	it->nsp = nsp;
	double sd = sigma / 2 > 0.5 ? sigma / 2 : 0.5;
	for (int a = 0; a < nsp; a++) {
		it->d[a] = dim[a];
		it->n[a] = (dim[a] + step - 1) / step;
		it->A[a] = malloc((size_t)(it->d[a] * it->n[a]) * sizeof(double));
		if (!it->A[a])
			return esg_set_error("out of memory");
		for (int64_t v = 0; v < it->d[a]; v++) {
			double s = 0, *row = it->A[a] + v * it->n[a];
			for (int64_t k = 0; k < it->n[a]; k++) {
				double c = step * k + (step - 1) / 2.0, t = (v - c) / sd;
				s += row[k] = exp(-0.5 * t * t);
			}
			for (int64_t k = 0; k < it->n[a]; k++)
				row[k] /= s;
		}
	}
	return 0;
}

/* out = (A_0 x A_1 x ...) in (forward: grid -> image) or its transpose.
 * tmp: two buffers of max(image, grid) size. */
static void interp_apply(const interp *it, int transpose, const double *in, double *out,
			 double *t0, double *t1)
{
	int64_t sz[3];
	for (int a = 0; a < it->nsp; a++)
		sz[a] = transpose ? it->d[a] : it->n[a];
	const double *src = in;
	for (int a = 0; a < it->nsp; a++) {
		double *dst = a == it->nsp - 1 ? out : (a % 2 ? t1 : t0);
		int64_t pre = 1, post = 1, nin = sz[a], nout = transpose ? it->n[a] : it->d[a];
		for (int b = 0; b < a; b++)
			pre *= sz[b];
		for (int b = a + 1; b < it->nsp; b++)
			post *= sz[b];
		const double *A = it->A[a];
		int64_t nc = it->n[a];
		for (int64_t p = 0; p < pre; p++)
			for (int64_t r = 0; r < nout; r++) {
				double *o = dst + (p * nout + r) * post;
				for (int64_t q = 0; q < post; q++)
					o[q] = 0;
				for (int64_t k = 0; k < nin; k++) {
					double wgt = transpose ? A[k * nc + r] : A[r * nc + k];
					if (wgt == 0)
						continue;
					const double *i = src + (p * nin + k) * post;
					for (int64_t q = 0; q < post; q++)
						o[q] += wgt * i[q];
				}
			}
		sz[a] = nout;
		src = dst;
	}
}

typedef struct keyed {
	float v;
	int64_t i;
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
	const keyed *x = a, *y = b;
	if (x->v != y->v)
		return x->v < y->v ? -1 : 1;
	return (x->i > y->i) - (x->i < y->i);
}

/* Flip a [C, spatial...] array along its last axis. */
static void flip_last(float *p, size_t item, int64_t last)
{
	for (size_t r = 0; r < item; r += (size_t)last)
		for (int64_t i = 0, j = last - 1; i < j; i++, j--) {
			float t = p[r + i];
			p[r + i] = p[r + j];
			p[r + j] = t;
		}
}

static int esg_run_extremal_perturbation(esg_attr_job *job)
{
	int nsp = job->ndim - 2;
	if (nsp < 1 || nsp > 3)
		return esg_set_error("extremal_perturbation needs 1 to 3 spatial axes, the image has %d", nsp);
	double areas[64];
	int K = parse_doubles("areas", esg_params_str(job->params, "areas"), areas, 64, 0, 1);
	if (K < 0)
		return -1;
	int T = (int)esg_params_int(job->params, "max_iter");
	int step = (int)esg_params_int(job->params, "step");
	double sigma = esg_params_double(job->params, "sigma");
	double max_blur = esg_params_double(job->params, "max_blur");
	int del = !strcmp(esg_params_str(job->params, "variant"), "delete");
	int jitter = esg_params_bool(job->params, "jitter");
	size_t item = item_numel(job);
	int64_t C = job->shape[1], V = (int64_t)item / C, last = job->shape[job->ndim - 1];
	interp it;
	if (interp_init(&it, nsp, job->shape + 2, step, sigma)) {
		interp_free(&it);
		return -1;
	}
	int64_t P = 1;
	for (int a = 0; a < nsp; a++)
		P *= it.n[a];
	int cap = esg_attr_batch_fit(job, 1, 2 * item * sizeof(float));
	if (cap > K)
		cap = K;
	int64_t bshape[ESG_MAX_DIMS];
	memcpy(bshape, job->shape, sizeof bshape);
	size_t big = (size_t)(V > P ? V : P);
	double *par = malloc((size_t)K * P * sizeof *par), *mom = calloc((size_t)K * P, sizeof *mom);
	double *mask = malloc((size_t)K * V * sizeof *mask), *gm = malloc((size_t)V * sizeof *gm);
	double *gp = malloc((size_t)P * sizeof *gp), *t0 = malloc(big * sizeof *t0), *t1 = malloc(big * sizeof *t1);
	float *blur = malloc(item * sizeof *blur), *xb = malloc((size_t)cap * item * sizeof *xb);
	float *grad = malloc((size_t)cap * item * sizeof *grad), *score = malloc((size_t)cap * sizeof *score);
	int64_t *tg = malloc((size_t)cap * sizeof *tg);
	keyed *ks = malloc((size_t)V * sizeof *ks);
	int rc = -1;
	if (!par || !mom || !mask || !gm || !gp || !t0 || !t1 || !blur || !xb || !grad || !score || !tg || !ks) {
		esg_set_error("out of memory");
		goto out;
	}
	rc = 0;
	int64_t total = job->shape[0] * (int64_t)T, done = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		const float *x = job->x + (size_t)m * item;
		float *out = job->attr + (size_t)m * item;
		int64_t bs[ESG_MAX_DIMS];
		memcpy(bs, job->shape, sizeof bs);
		bs[0] = 1;
		memcpy(blur, x, item * sizeof *blur);
		if ((rc = esg_blur(blur, job->ndim, bs, max_blur)))
			break;
		for (size_t i = 0; i < (size_t)K * P; i++) {
			par[i] = 1;  /* TorchRay starts from ones */
			mom[i] = 0;
		}
		double lambda = 300;
		for (int t = 0; t < T && !rc; t++) {
			for (int k = 0; k < K; k++)
				interp_apply(&it, 0, par + (size_t)k * P, mask + (size_t)k * V, t0, t1);
			for (int k0 = 0; k0 < K && !rc; k0 += cap) {
				int nb = K - k0 < cap ? K - k0 : cap;
				for (int k = 0; k < nb; k++) {
					const double *mk = mask + (size_t)(k0 + k) * V;
					float *p = xb + (size_t)k * item;
					for (int64_t c = 0; c < C; c++)
						for (int64_t v = 0; v < V; v++) {
							size_t j = (size_t)(c * V + v);
							float mv = (float)(del ? 1 - mk[v] : mk[v]);
							p[j] = mv * x[j] + (1 - mv) * blur[j];
						}
					if (jitter && t % 2 == 0)
						flip_last(p, item, last);
					tg[k] = job->target[m];
				}
				bshape[0] = nb;
				if ((rc = esg_model_grad(job->model, ESG_RULE_PLAIN, xb, NULL, job->ndim, bshape,
							 tg, grad, score)))
					break;
				job->passes++;
				job->evaluations += nb;
				for (int k = 0; k < nb; k++) {
					int ka = k0 + k;
					float *g = grad + (size_t)k * item;
					const double *mk = mask + (size_t)ka * V;
					if (jitter && t % 2 == 0)
						flip_last(g, item, last);
					/* d reward / d m = sum_c g (x - blur), both variants */
					for (int64_t v = 0; v < V; v++) {
						double s = 0;
						for (int64_t c = 0; c < C; c++) {
							size_t j = (size_t)(c * V + v);
							s += (double)g[j] * ((double)x[j] - blur[j]);
						}
						gm[v] = -s;  /* we minimise -energy */
					}
					for (int64_t v = 0; v < V; v++)
						ks[v] = (keyed){ (float)mk[v], v };
					qsort(ks, (size_t)V, sizeof *ks, cmp_keyed);
					int64_t zeros = (int64_t)(V * (1 - areas[ka]));
					for (int64_t r = 0; r < V; r++) {
						double ref = r < zeros ? 0 : 1;
						gm[ks[r].i] += lambda * 2 * (mk[ks[r].i] - ref) / V;
					}
					interp_apply(&it, 1, gm, gp, t0, t1);
					double *pk = par + (size_t)ka * P, *bk = mom + (size_t)ka * P;
					for (int64_t q = 0; q < P; q++) {
						bk[q] = t == 0 ? gp[q] : 0.9 * bk[q] + 0.1 * gp[q];
						double v = pk[q] - 0.01 * bk[q];
						pk[q] = v < 0 ? 0 : v > 1 ? 1 : v;
					}
				}
			}
			lambda *= 1.0035;
			if (++done < total)
				progress(job, "extremal_perturbation iterations", done, total);
		}
		/* as TorchRay: the masks of the last iteration's forward pass */
		for (int64_t v = 0; v < V && !rc; v++) {
			double s = 0;
			for (int k = 0; k < K; k++)
				s += mask[(size_t)k * V + v];
			for (int64_t c = 0; c < C; c++)
				out[c * V + v] = (float)(s / K);
		}
	}
	if (!rc)
		progress(job, "extremal_perturbation iterations", total, total);
out:
	interp_free(&it);
	free(par), free(mom), free(mask), free(gm), free(gp), free(t0), free(t1);
	free(blur), free(xb), free(grad), free(score), free(tg), free(ks);
	return rc;
}

/* ---- the family's methods, for the registry (family.h) ---- */

const esg_method esg_perturb_methods[] = {
	{ "occlusion", "f(x) - f(x with a sliding window set to the baseline), averaged over windows",
	  esg_p_occlusion, 1, 0, 0, esg_run_occlusion, 0, 0, 0 },
	{ "feature_ablation", "f(x) - f(x with one feature of a feature mask set to the baseline)",
	  esg_p_ablation, 1, 0, 0, esg_run_feature_ablation, 0, 0, 0 },
	{ "feature_permutation", "f(x) - f(x with one feature shuffled across the items of the record)",
	  esg_p_fmask, 0, 0, 0, esg_run_feature_permutation, 0, 0, 0 },
	{ "shapley_value_sampling", "Shapley values of mask features from random feature orders",
	  esg_p_shapley, 1, 0, 0, esg_run_shapley_value_sampling, 0, 0, 0 },
	{ "rise", "RISE: random smooth masks weighted by the masked scores (Petsiuk 2018)",
	  esg_p_rise, 1, 0, 0, esg_run_rise, 0, 0, 0 },
	{ "extremal_perturbation", "smooth mask of a given area that keeps the score, optimised (Fong 2019)",
	  esg_p_extremal, 0, 0, 0, esg_run_extremal_perturbation, 0, 0, 0 },
	{ "lime", "LIME: weighted linear surrogate on random feature subsets (Ribeiro 2016)",
	  esg_p_lime, 1, 0, 0, esg_run_lime, 0, 0, 0 },
	{ "kernel_shap", "KernelSHAP: linear surrogate with the Shapley kernel (Lundberg 2017)",
	  esg_p_kernel_shap, 1, 0, 0, esg_run_kernel_shap, 0, 0, 0 },
	ESG_METHOD_END
};
