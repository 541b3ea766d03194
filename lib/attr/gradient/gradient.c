/* gradient/gradient.c - the gradient family, in C over the torch shim.
 *
 * Every method turns into a list of model evaluations (an input point, a
 * target, and for DeepLift a reference), which a batcher groups into calls
 * of at most job->internal_batch items and hands back one by one to the
 * method's consumer, which accumulates on the fly.  So peak memory depends
 * on internal_batch and the image, never on n_steps or n_samples, and the
 * result does not depend on internal_batch beyond float rounding.
 */
#include "attr/family.h"
#include "attr/local.h"
#include "shim/esg_torch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tag {
	int m;       /* item of the job */
	int k;       /* baseline index */
	float w;     /* weight */
} tag;

typedef void (*consume_fn)(void *ctx, const tag *t, const float *grad, float score,
			   const float *aux);

typedef struct batcher {
	esg_attr_job *job;
	int grad;                 /* 1: esg_model_grad, 0: esg_model_forward */
	esg_backward_rule rule;
	int64_t shape[ESG_MAX_DIMS];
	size_t item, host;        /* values per item; bytes per item in the buffers */
	int cap, used, fitted;    /* fitted: cap sized after a measured call */
	int tiled;                /* one item does not fit: each goes by tiles */
	float *x, *ref, *aux, *g, *score;
	int64_t *target;
	tag *tags;
	int *items;               /* the tags' items, for a patch batch's windows */
	consume_fn fn;
	void *ctx;
	int64_t done, total;      /* progress of the gradient evaluations */
} batcher;

static size_t item_numel(const esg_attr_job *job)
{
	size_t n = 1;
	for (int d = 1; d < job->ndim; d++)
		n *= (size_t)job->shape[d];
	return n;
}

static void bt_close(batcher *b)
{
	free(b->x);
	free(b->ref);
	free(b->aux);
	free(b->g);
	free(b->score);
	free(b->target);
	free(b->tags);
	free(b->items);
	memset(b, 0, sizeof *b);
}

static int bt_open(batcher *b, esg_attr_job *job, int grad, esg_backward_rule rule,
		   int want_ref, int want_aux, consume_fn fn, void *ctx)
{
	memset(b, 0, sizeof *b);
	b->job = job;
	b->grad = grad;
	b->rule = rule;
	memcpy(b->shape, job->shape, sizeof b->shape);
	b->item = item_numel(job);
	b->host = b->item * sizeof(float) * (1 + (want_ref != 0) + (want_aux != 0) + (grad != 0));
	b->fn = fn;
	b->ctx = ctx;
	/* buffers for the most items a call may get; pages past the items
	 * used are never touched */
	size_t n = (size_t)job->internal_batch * b->item;
	b->cap = esg_attr_batch_fit(job, grad, b->host);
	b->x = malloc(n * sizeof *b->x);
	b->ref = want_ref ? malloc(n * sizeof *b->ref) : NULL;
	b->aux = want_aux ? malloc(n * sizeof *b->aux) : NULL;
	b->g = grad ? malloc(n * sizeof *b->g) : NULL;
	b->score = malloc(n / b->item * sizeof *b->score);
	b->target = malloc(n / b->item * sizeof *b->target);
	b->tags = malloc(n / b->item * sizeof *b->tags);
	b->items = malloc(n / b->item * sizeof *b->items);
	if (!b->x || (want_ref && !b->ref) || (want_aux && !b->aux) || (grad && !b->g) ||
	    !b->score || !b->target || !b->tags || !b->items) {
		bt_close(b);
		return esg_set_error("out of memory for an internal batch of %d items of %zu values",
				     job->internal_batch, (size_t)b->item);
	}
	return 0;
}

/* Where the next item goes (fill x, and ref / aux if asked for). */
static float *bt_x(batcher *b) { return b->x + (size_t)b->used * b->item; }
static float *bt_ref(batcher *b) { return b->ref + (size_t)b->used * b->item; }
static float *bt_aux(batcher *b) { return b->aux + (size_t)b->used * b->item; }

/* ESG_TILE_VALUES=N: every item goes by tiles of at most N input values
 * (for tests and comparisons; tiles are otherwise only for items that do
 * not fit the memory budget) */
static int64_t forced_tile_values(void)
{
	const char *e = getenv("ESG_TILE_VALUES");
	long long n = e ? atoll(e) : 0;
	return n > 0 ? (int64_t)n : 0;
}

/* The backward rules whose tiles add up to the whole volume's gradient:
 * linear in the output gradient, given forward values (of x, and of the
 * baseline for DeepLift) that a crop computes exactly (local.h).  Guided
 * backprop and deconvolution clamp the gradient (relu), which is not. */
static int tiles_rule(esg_backward_rule r)
{
	return r == ESG_RULE_PLAIN || esg_rule_is_deeplift(r);
}

/* A lone item whose call the memory budget refused goes by tiles
 * (esg_local_tiled) when the method's backward rule allows it and the
 * model scores locally; the receptive field is found once per job. */
static int bt_start_tiles(batcher *b)
{
	esg_attr_job *job = b->job;
	char refused[400];
	snprintf(refused, sizeof refused, "%s", forced_tile_values() ? "ESG_TILE_VALUES is set" : esg_error());
	if (job->windows)  /* patch_run.c runs the patches one by one instead */
		return esg_set_error("%s", refused);
	if (!tiles_rule(b->rule))
		return esg_set_error("%s (this method's backward rule cannot go by tiles: only the plain "
				     "gradient's and DeepLift's do)", refused);
	if (!job->tiler) {
		job->tiler = calloc(1, sizeof *job->tiler);
		if (!job->tiler)
			return esg_set_error("out of memory");
		if (esg_local_open_tiles(job->tiler, job->model, job->ndim, job->shape, b->x))
			return -1;
	}
	if (!job->tiler->on)
		return esg_set_error("%s; it cannot go by tiles either: %s", refused, job->tiler->info);
	if (b->rule != ESG_RULE_PLAIN && job->tiler->kind != ESG_LOCAL_FIXED_MASK)
		return esg_set_error("%s; it cannot go by tiles either: tiles under this method's backward "
				     "rule need a model wrapped --reduce fixed-mask", refused);
	b->tiled = 1;
	b->cap = 1;
	return 0;
}

/* The first n items of the batch, each by tiles. */
static int bt_tiles(batcher *b, int n)
{
	esg_attr_job *job = b->job;
	esg_local *L = job->tiler;
	for (int i = 0; i < n; i++) {
		double s;
		int64_t grid[ESG_MAX_DIMS];
		int64_t m = job->tile_items > 0 ? b->tags[i].m % job->tile_items : b->tags[i].m;
		if (esg_local_tiled(L, b->x + (size_t)i * b->item, b->ref ? b->ref + (size_t)i * b->item : NULL,
				    b->rule, m, b->target[i], forced_tile_values(),
				    b->grad ? b->g + (size_t)i * b->item : NULL, &s, grid))
			return -1;
		b->score[i] = (float)s;
		char g[64];
		int64_t count = esg_local_grid_str(L, grid, g, sizeof g);
		job->passes += count;
		job->evaluations += count;
		snprintf(job->tiles, sizeof job->tiles, "grid %s (last call), %s", g, L->info);
	}
	return 0;
}

/* A forward call of the batch (run items, n of them wanted): the scores. */
static int bt_forward(batcher *b, int run, int n)
{
	esg_attr_job *job = b->job;
	esg_tensor *out = NULL;
	if (esg_model_forward(job->model, b->x, job->ndim, b->shape, &out))
		return -1;
	char s[128];
	esg_shape_str(out->ndim, out->shape, s, sizeof s);
	if (out->ndim != 2 || out->shape[0] != run) {
		esg_torch_tensor_free(out);
		return esg_set_error("model output is %s, not [N, C] scores "
				     "(wrap a segmentation model with esg-wrap)", s);
	}
	int64_t c = out->shape[1];
	int bad = -1;
	for (int i = 0; i < n; i++) {
		if (b->target[i] < 0 || b->target[i] >= c)
			bad = i;
		else
			b->score[i] = (float)esg_tensor_get(out, i * c + b->target[i]);
	}
	esg_torch_tensor_free(out);
	if (bad >= 0)
		return esg_set_error("target %lld is out of range: the model has %lld outputs",
				     (long long)b->target[bad], (long long)c);
	return 0;
}

static int bt_flush(batcher *b)
{
	if (!b->used)
		return 0;
	esg_attr_job *job = b->job;
	int n = b->used, run = n;
	/* libtorch 1.13 runs most 3D convolutions of a lone CPU item through a
	 * slow path (a batch of two costs about half the time of one item
	 * alone: bench/results.md).  When the internal batch has room, a lone
	 * 3D item runs with a copy of itself, whose results are dropped
	 * (DeepLift's [x; baseline] is a batch of two already). */
	if (n == 1 && b->cap >= 2 && job->ndim == 5 && !esg_rule_is_deeplift(b->rule) &&
	    esg_model_on_cpu(job->model)) {
		memcpy(b->x + b->item, b->x, b->item * sizeof *b->x);
		b->target[1] = b->target[0];
		run = 2;
	}
	b->shape[0] = run;
	if (!b->tiled && forced_tile_values() && bt_start_tiles(b))
		return -1;
	int by_tiles = b->tiled;
	if (!by_tiles) {
		for (int i = 0; i < n; i++)
			b->items[i] = b->tags[i].m;
		if (esg_attr_set_windows(job, n, b->items, 0))
			return -1;
		(void)esg_torch_budget_refused();
		int rc = b->grad ? esg_model_grad(job->model, b->rule, b->x, b->ref, job->ndim, b->shape,
						  b->target, b->g, b->score)
				 : bt_forward(b, run, n);
		/* an explicit batch of several items that does not fit is refused */
		if (rc) {
			if (!esg_torch_budget_refused() || n > 1 || bt_start_tiles(b))
				return -1;
			by_tiles = 1;
		}
	}
	if (by_tiles) {
		if (bt_tiles(b, n))
			return -1;
	} else {
		job->passes++;
		job->evaluations += n;
	}
	b->done += n;
	if (b->grad && b->total && job->progress)
		job->progress(job->progress_ctx, job->method->name, b->done, b->total);
	for (int i = 0; i < n; i++)
		b->fn(b->ctx, &b->tags[i], b->g ? b->g + (size_t)i * b->item : NULL, b->score[i],
		      b->aux ? b->aux + (size_t)i * b->item : NULL);
	b->used = 0;
	/* the first call measured what an item costs: size the rest by it */
	if (!b->fitted) {
		b->cap = esg_attr_batch_fit(job, b->grad, b->host);
		b->fitted = 1;
	}
	return 0;
}

static int bt_push(batcher *b, int64_t target, tag t)
{
	b->target[b->used] = target;
	b->tags[b->used] = t;
	if (++b->used == b->cap)
		return bt_flush(b);
	return 0;
}

/* ---- f(x) - f(baseline) for the convergence delta ------------------------- */

typedef struct fwd_ctx {
	double *fd;  /* per item: weighted sum of scores */
} fwd_ctx;

static void fwd_consume(void *ctx, const tag *t, const float *g, float score, const float *aux)
{
	(void)g;
	(void)aux;
	((fwd_ctx *)ctx)->fd[t->m] += t->w * (double)score;
}

/* Push item m of buf with weight w into a forward batcher. */
static int fwd_push(batcher *f, const float *buf, int m, float w)
{
	memcpy(bt_x(f), buf + (size_t)m * f->item, f->item * sizeof(float));
	return bt_push(f, f->job->target[m], (tag){ m, 0, w });
}

/* delta[m] = sum(attr[m]) - fd[m] */
static void finish_delta(esg_attr_job *job, const double *fd)
{
	size_t item = item_numel(job);
	if (!job->delta)
		return;
	for (int64_t m = 0; m < job->shape[0]; m++) {
		double s = 0;
		const float *a = job->attr + (size_t)m * item;
		for (size_t j = 0; j < item; j++)
			s += a[j];
		job->delta[m] = s - fd[m];
	}
	job->has_delta = 1;
}

/* ---- one gradient per item: saliency, input x gradient, guided, deconv ---- */

enum post { POST_NONE, POST_ABS, POST_TIMES_X };

typedef struct single_ctx {
	esg_attr_job *job;
	enum post post;
	size_t item;
} single_ctx;

static void single_consume(void *ctx, const tag *t, const float *g, float score, const float *aux)
{
	(void)score;
	(void)aux;
	single_ctx *c = ctx;
	float *a = c->job->attr + (size_t)t->m * c->item;
	const float *x = c->job->x + (size_t)t->m * c->item;
	for (size_t j = 0; j < c->item; j++)
		a[j] = c->post == POST_ABS ? fabsf(g[j]) : c->post == POST_TIMES_X ? x[j] * g[j] : g[j];
}

/* One gradient of each item at its own input under rule, handed to fn. */
static int grad_per_item(esg_attr_job *job, esg_backward_rule rule, consume_fn fn, void *ctx)
{
	size_t item = item_numel(job);
	batcher b;
	if (bt_open(&b, job, 1, rule, 0, 0, fn, ctx))
		return -1;
	b.total = job->shape[0];
	int rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		memcpy(bt_x(&b), job->x + (size_t)m * item, item * sizeof(float));
		rc = bt_push(&b, job->target[m], (tag){ m, 0, 1 });
	}
	if (!rc)
		rc = bt_flush(&b);
	bt_close(&b);
	return rc;
}

static int run_single(esg_attr_job *job, esg_backward_rule rule, enum post post)
{
	single_ctx c = { job, post, item_numel(job) };
	return grad_per_item(job, rule, single_consume, &c);
}

static int esg_run_saliency(esg_attr_job *job)
{
	return run_single(job, ESG_RULE_PLAIN, esg_params_bool(job->params, "abs") ? POST_ABS : POST_NONE);
}

static int esg_run_input_x_gradient(esg_attr_job *job) { return run_single(job, ESG_RULE_PLAIN, POST_TIMES_X); }
static int esg_run_guided_backprop(esg_attr_job *job) { return run_single(job, ESG_RULE_GUIDED, POST_NONE); }
static int esg_run_deconvolution(esg_attr_job *job) { return run_single(job, ESG_RULE_DECONV, POST_NONE); }

/* ---- accumulate w * grad [* aux | * (x - baseline_k)] ------------------------ */

typedef struct acc_ctx {
	esg_attr_job *job;
	size_t item;
	int mode;     /* 0: w*g, 1: w*g*aux, 2: w*g*(x - b_k) */
} acc_ctx;

static void acc_consume(void *ctx, const tag *t, const float *g, float score, const float *aux)
{
	(void)score;
	acc_ctx *c = ctx;
	float *a = c->job->attr + (size_t)t->m * c->item;
	if (c->mode == 0) {
		for (size_t j = 0; j < c->item; j++)
			a[j] += t->w * g[j];
	} else if (c->mode == 1) {
		for (size_t j = 0; j < c->item; j++)
			a[j] += t->w * (g[j] * aux[j]);
	} else {
		const float *x = c->job->x + (size_t)t->m * c->item;
		const float *r = c->job->baselines[t->k] + (size_t)t->m * c->item;
		for (size_t j = 0; j < c->item; j++)
			a[j] += t->w * (g[j] * (x[j] - r[j]));
	}
}

static double *fd_new(const esg_attr_job *job)
{
	double *fd = calloc((size_t)job->shape[0], sizeof *fd);
	if (!fd)
		esg_set_error("out of memory");
	return fd;
}

static int esg_run_integrated_gradients(esg_attr_job *job)
{
	int n = (int)esg_params_int(job->params, "n_steps");
	const char *rule = esg_params_str(job->params, "method");
	size_t item = item_numel(job);
	double *alpha = malloc((size_t)n * sizeof *alpha), *weight = malloc((size_t)n * sizeof *weight);
	double *fd = fd_new(job);
	acc_ctx c = { job, item, 0 };
	fwd_ctx fc = { fd };
	batcher b = { 0 }, f = { 0 };
	int rc = -1;
	if (!alpha || !weight || !fd) {
		esg_set_error("out of memory");
		goto out;
	}
	if (esg_ig_steps(rule, n, alpha, weight) || bt_open(&b, job, 1, ESG_RULE_PLAIN, 0, 0, acc_consume, &c) ||
	    bt_open(&f, job, 0, ESG_RULE_PLAIN, 0, 0, fwd_consume, &fc))
		goto out;
	memset(job->attr, 0, (size_t)job->shape[0] * item * sizeof(float));
	b.total = job->shape[0] * n;
	const float *bl = job->baselines[0];
	rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		const float *x = job->x + (size_t)m * item, *r = bl + (size_t)m * item;
		for (int s = 0; s < n && !rc; s++) {
			/* as Captum: baseline + alpha * (input - baseline), in float */
			float a = (float)alpha[s], *p = bt_x(&b);
			for (size_t j = 0; j < item; j++)
				p[j] = r[j] + a * (x[j] - r[j]);
			rc = bt_push(&b, job->target[m], (tag){ m, 0, (float)weight[s] });
		}
		if (!rc)
			rc = fwd_push(&f, job->x, m, 1);
		if (!rc)
			rc = fwd_push(&f, bl, m, -1);
	}
	if (!rc)
		rc = bt_flush(&b);
	if (!rc)
		rc = bt_flush(&f);
	if (!rc) {
		for (int m = 0; m < job->shape[0]; m++) {
			float *a = job->attr + (size_t)m * item;
			const float *x = job->x + (size_t)m * item, *r = bl + (size_t)m * item;
			for (size_t j = 0; j < item; j++)
				a[j] *= x[j] - r[j];
		}
		finish_delta(job, fd);
	}
out:
	bt_close(&b);
	bt_close(&f);
	free(alpha);
	free(weight);
	free(fd);
	return rc;
}

/* DeepLift over every baseline (one for deeplift), averaged.  The rule
 * pass also gives f(x) - f(baseline) for the convergence delta: no forward
 * pass of its own. */
typedef struct dl_ctx {
	acc_ctx acc;
	double *fd;
} dl_ctx;

static void dl_consume(void *ctx, const tag *t, const float *g, float score, const float *aux)
{
	dl_ctx *c = ctx;
	acc_consume(&c->acc, t, g, score, aux);
	c->fd[t->m] += t->w * (double)score;
}

static int run_deeplift(esg_attr_job *job)
{
	size_t item = item_numel(job);
	int K = job->n_baselines;
	dl_ctx c = { { job, item, 2 }, fd_new(job) };
	batcher b = { 0 };
	int rc = -1;
	esg_backward_rule rule = ESG_DEEPLIFT_COMPLETE(job->params) ? ESG_RULE_DEEPLIFT_COMPLETE
								    : ESG_RULE_DEEPLIFT;
	if (!c.fd || bt_open(&b, job, 1, rule, 1, 0, dl_consume, &c))
		goto out;
	memset(job->attr, 0, (size_t)job->shape[0] * item * sizeof(float));
	b.total = job->shape[0] * K;
	rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		for (int k = 0; k < K && !rc; k++) {
			memcpy(bt_x(&b), job->x + (size_t)m * item, item * sizeof(float));
			memcpy(bt_ref(&b), job->baselines[k] + (size_t)m * item, item * sizeof(float));
			rc = bt_push(&b, job->target[m], (tag){ m, k, 1.0f / K });
		}
	}
	if (!rc)
		rc = bt_flush(&b);
	if (!rc)
		finish_delta(job, c.fd);
out:
	bt_close(&b);
	free(c.fd);
	return rc;
}

static int esg_run_deeplift(esg_attr_job *job) { return run_deeplift(job); }
static int esg_run_deeplift_shap(esg_attr_job *job) { return run_deeplift(job); }

/* GradientShap.  Draws per item m, per sample s, from the shap stream:
 * u (baseline index floor(u K)), then one normal per element if stdevs > 0,
 * then alpha. */
static int esg_run_gradient_shap(esg_attr_job *job)
{
	size_t item = item_numel(job);
	int K = job->n_baselines, S = (int)esg_params_int(job->params, "n_samples");
	double sd = esg_params_double(job->params, "stdevs");
	double *fd = fd_new(job);
	int *count = calloc((size_t)K, sizeof *count);
	acc_ctx c = { job, item, 1 };
	fwd_ctx fc = { fd };
	batcher b = { 0 }, f = { 0 };
	int rc = -1;
	if (!fd || !count) {
		esg_set_error("out of memory");
		goto out;
	}
	if (bt_open(&b, job, 1, ESG_RULE_PLAIN, 0, 1, acc_consume, &c) ||
	    bt_open(&f, job, 0, ESG_RULE_PLAIN, 0, 0, fwd_consume, &fc))
		goto out;
	memset(job->attr, 0, (size_t)job->shape[0] * item * sizeof(float));
	b.total = job->shape[0] * (int64_t)S;
	rc = 0;
	for (int m = 0; m < job->shape[0] && !rc; m++) {
		const float *x = job->x + (size_t)m * item;
		memset(count, 0, (size_t)K * sizeof *count);
		for (int s = 0; s < S && !rc; s++) {
			int k = (int)(esg_rng_uniform(job->rng_shap) * K);
			if (k >= K)
				k = K - 1;
			count[k]++;
			const float *xs = x;
			if (sd > 0) {
				float *p = bt_x(&f);
				for (size_t j = 0; j < item; j++)
					p[j] = x[j] + (float)(sd * esg_rng_normal(job->rng_shap));
				xs = p;
			}
			float a = (float)esg_rng_uniform(job->rng_shap);
			const float *r = job->baselines[k] + (size_t)m * item;
			float *p = bt_x(&b), *d = bt_aux(&b);
			for (size_t j = 0; j < item; j++) {
				d[j] = xs[j] - r[j];
				p[j] = r[j] + a * d[j];
			}
			rc = bt_push(&b, job->target[m], (tag){ m, k, 1.0f / S });
			if (!rc && sd > 0)
				rc = bt_push(&f, job->target[m], (tag){ m, 0, 1.0f / S });
		}
		if (!rc && sd == 0)
			rc = fwd_push(&f, job->x, m, 1);
		for (int k = 0; k < K && !rc; k++)
			if (count[k])
				rc = fwd_push(&f, job->baselines[k], m, -(float)count[k] / S);
	}
	if (!rc)
		rc = bt_flush(&b);
	if (!rc)
		rc = bt_flush(&f);
	if (!rc)
		finish_delta(job, fd);
out:
	bt_close(&b);
	bt_close(&f);
	free(fd);
	free(count);
	return rc;
}

/* ---- noise tunnel -----------------------------------------------------------
 * Samples are processed in groups: a one-pass base gets up to
 * internal_batch / N samples per call, a multi-pass base one sample at a time
 * (it batches its own steps).  Noise draws: per sample, per item, per element,
 * from the noise-tunnel stream -- the same whatever the grouping. */
static int esg_run_noise_tunnel(esg_attr_job *job)
{
	const esg_method *base = job->params->base;
	int S = (int)esg_params_int(job->params, "nt_samples");
	double sd = esg_params_double(job->params, "stdevs");
	const char *type = esg_params_str(job->params, "nt_type");
	int N = (int)job->shape[0];
	size_t item = item_numel(job);
	int G = base->single_pass ? esg_attr_batch_fit(job, 1, 4 * item * sizeof(float)) / N : 1;
	if (G < 1)
		G = 1;
	if (G > S)
		G = S;
	size_t gn = (size_t)G * N;
	float *xg = malloc(gn * item * sizeof *xg), *ag = malloc(gn * item * sizeof *ag);
	float *sq = calloc((size_t)N * item, sizeof *sq);
	int64_t *tg = malloc(gn * sizeof *tg);
	double *dg = calloc(gn, sizeof *dg), *dsum = calloc((size_t)N, sizeof *dsum);
	int rc = -1, has_delta = 0;
	if (!xg || !ag || !sq || !tg || !dg || !dsum) {
		esg_set_error("out of memory");
		goto out;
	}
	for (size_t i = 0; i < gn; i++)
		tg[i] = job->target[i % (size_t)N];
	float *sum = job->attr;
	memset(sum, 0, (size_t)N * item * sizeof *sum);
	rc = 0;
	for (int s0 = 0; s0 < S && !rc; s0 += G) {
		int g = S - s0 < G ? S - s0 : G;
		for (size_t i = 0; i < (size_t)g * N * item; i++)
			xg[i] = job->x[i % ((size_t)N * item)] + (float)(sd * esg_rng_normal(job->rng_nt));
		esg_attr_job sub = *job;
		sub.method = base;
		sub.shape[0] = (int64_t)g * N;
		sub.x = xg;
		sub.target = tg;
		sub.n_baselines = base->baseline ? job->n_baselines : 0;
		sub.baselines = base->baseline ? job->baselines : NULL;
		sub.attr = ag;
		sub.delta = dg;
		sub.has_delta = 0;
		sub.passes = sub.evaluations = 0;
		sub.progress = NULL; /* progress is counted in samples here */
		sub.tile_items = N;  /* the sub-job's tiles use the job's (closed by esg_attr_run) */
		rc = base->run(&sub);
		job->tiler = sub.tiler;
		if (sub.tiles[0])
			memcpy(job->tiles, sub.tiles, sizeof job->tiles);
		if (job->progress)
			job->progress(job->progress_ctx, job->method->name, s0 + g, S);
		job->passes += sub.passes;
		job->evaluations += sub.evaluations;
		has_delta = sub.has_delta;
		for (int gi = 0; gi < g && !rc; gi++)
			for (int m = 0; m < N; m++) {
				const float *a = ag + ((size_t)gi * N + m) * item;
				float *su = sum + (size_t)m * item, *q = sq + (size_t)m * item;
				for (size_t j = 0; j < item; j++) {
					su[j] += a[j];
					q[j] += a[j] * a[j];
				}
				dsum[m] += dg[(size_t)gi * N + m];
			}
	}
	if (rc)
		goto out;
	for (size_t i = 0; i < (size_t)N * item; i++) {
		float mean = sum[i] / S, msq = sq[i] / S;
		sum[i] = !strcmp(type, "smoothgrad") ? mean : !strcmp(type, "smoothgrad_sq") ? msq : msq - mean * mean;
	}
	/* A delta only makes sense for the mean: mean of the per-sample deltas. */
	if (has_delta && !strcmp(type, "smoothgrad") && job->delta) {
		for (int m = 0; m < N; m++)
			job->delta[m] = dsum[m] / S;
		job->has_delta = 1;
	}
out:
	free(xg);
	free(ag);
	free(sq);
	free(tg);
	free(dg);
	free(dsum);
	return rc;
}

/* ---- layer-wise relevance propagation ------------------------------------------
 * One rule pass per item (lib/shim/rules_lrp.cpp, the table from lrp.c): the
 * shim's "gradient" is the relevance for a start signal of 1 at the target,
 * so the map is score * grad (Captum: normalised relevance times the
 * output); delta = sum(map) - score. */
typedef struct lrp_ctx {
	esg_attr_job *job;
	size_t item;
} lrp_ctx;

static void lrp_consume(void *ctx, const tag *t, const float *g, float score, const float *aux)
{
	(void)aux;
	lrp_ctx *c = ctx;
	float *a = c->job->attr + (size_t)t->m * c->item;
	double s = 0;
	for (size_t j = 0; j < c->item; j++) {
		a[j] = score * g[j];
		s += a[j];
	}
	if (c->job->delta)
		c->job->delta[t->m] = s - (double)score;
}

static int esg_run_lrp(esg_attr_job *job)
{
	char *spec = esg_lrp_table(job->params);
	if (!spec || esg_model_set_lrp(job->model, spec)) {
		free(spec);
		return -1;
	}
	free(spec);
	lrp_ctx c = { job, item_numel(job) };
	int rc = grad_per_item(job, ESG_RULE_LRP, lrp_consume, &c);
	if (!rc && job->delta)
		job->has_delta = 1;
	return rc;
}

/* ---- parameters (Captum's names and defaults) ---- */

static const esg_param_spec P_NONE[] = { ESG_PARAM_END };
static const esg_param_spec P_SALIENCY[] = {
	{ "abs", ESG_P_BOOL, "true", NULL, 0, 0, "absolute value of the gradient (Captum's default)" },
	ESG_PARAM_END
};
static const esg_param_spec P_IG[] = {
	{ "n_steps", ESG_P_INT, "50", NULL, 1, 100000, "number of integration steps" },
	{ "method", ESG_P_CHOICE, "gausslegendre",
	  "gausslegendre|riemann_left|riemann_right|riemann_middle|riemann_trapezoid",
	  0, 0, "quadrature rule (riemann_* need n_steps >= 2)" },
	ESG_PARAM_END
};
static const esg_param_spec P_NT[] = {
	{ "base", ESG_P_METHOD, "saliency", NULL, 0, 0, "the method run on the noisy inputs" },
	{ "nt_type", ESG_P_CHOICE, "smoothgrad", "smoothgrad|smoothgrad_sq|vargrad", 0, 0,
	  "mean, mean of squares, or variance of the base attributions" },
	{ "nt_samples", ESG_P_INT, "5", NULL, 1, 1000000, "noisy samples per input" },
	{ "stdevs", ESG_P_FLOAT, "1.0", NULL, 0, 1e30, "standard deviation of the Gaussian noise (absolute)" },
	ESG_PARAM_END
};
static const esg_param_spec P_DEEPLIFT[] = { ESG_PARAM_MAXPOOL_RULE, ESG_PARAM_END };
static const esg_param_spec P_GSHAP[] = {
	{ "n_samples", ESG_P_INT, "5", NULL, 1, 1000000, "random samples per input" },
	{ "stdevs", ESG_P_FLOAT, "0.0", NULL, 0, 1e30, "standard deviation of the noise added to the input" },
	ESG_PARAM_END
};

/* ---- the family's methods, for the registry (family.h) ---- */

const esg_method esg_gradient_methods[] = {
	{ "saliency", "input gradient of the target score", P_SALIENCY, 0, 1, 0, esg_run_saliency, 0, 0, 1 },
	{ "input_x_gradient", "input times its gradient", P_NONE, 0, 1, 0, esg_run_input_x_gradient, 0, 0, 1 },
	{ "integrated_gradients", "path integral of the gradient from the baseline (Sundararajan 2017)",
	  P_IG, 1, 0, 1, esg_run_integrated_gradients, 0, 0, 1 },
	{ "noise_tunnel", "a base method averaged over noisy copies of the input (SmoothGrad, VarGrad)",
	  P_NT, 0, 0, 0, esg_run_noise_tunnel, 0, 0, 0 },
	{ "gradient_shap", "gradients at random points between input and random baselines, times (input - baseline)",
	  P_GSHAP, 2, 0, 1, esg_run_gradient_shap, 0, 0, 0 },
	{ "guided_backprop", "gradient with ReLU backward relu(grad)*[x > 0]", P_NONE, 0, 1, 0,
	  esg_run_guided_backprop, 0, 0, 1 },
	{ "deconvolution", "gradient with ReLU backward relu(grad)", P_NONE, 0, 1, 0, esg_run_deconvolution, 0, 0, 1 },
	{ "deeplift", "DeepLift rescale rule: (input - baseline) times the multipliers", P_DEEPLIFT, 1, 0, 1,
	  esg_run_deeplift, 0, 0, 2 },
	{ "deeplift_shap", "DeepLift averaged over a distribution of baselines", P_DEEPLIFT, 2, 0, 1,
	  esg_run_deeplift_shap, 0, 0, 2 },
	{ "lrp", "layer-wise relevance propagation: rules per layer type (Captum's LRP; Zennit's composites)",
	  esg_lrp_params, 0, 1, 1, esg_run_lrp, 0, 0, 1 },
	ESG_METHOD_END
};
