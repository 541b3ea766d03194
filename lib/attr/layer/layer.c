/* layer/layer.c - layer attribution and the CAM family, in C over the shim's
 * layer calls (capture, layer gradient, replacement).
 *
 * Definitions follow Captum (LayerActivation, LayerGradientXActivation,
 * LayerGradCam, GuidedGradCam, LayerConductance, InternalInfluence,
 * LayerIntegratedGradients, LayerDeepLift(Shap), LayerGradientShap) and the
 * papers where Captum has no such method (Grad-CAM++, Score-CAM; TorchRay's
 * linear approximation).  Model evaluations are grouped into calls of at
 * most job->internal_batch items, as in gradient/gradient.c; results do not
 * depend on the grouping beyond float rounding.
 *
 * A layer method first computes a layer-shaped map ([N, C_l, spatial...]),
 * then (common to all) selects or reduces channels, upsamples to the input
 * grid when asked (F.interpolate, align_corners=False), and hands back
 * either x-shaped data in job->attr or a new buffer in job->layer_attr.
 * The per-item arithmetic is in layer_math.c, interpolation in upsample.c;
 * layer_guided_backprop uses lib/shim/layer.cpp's layer-objective gradient.
 * Excitation backprop (Zhang 2016) uses the shim's excitation rule: the
 * layer "gradient" is the marginal winning probability P.
 */
#include "attr/family.h"
#include "attr/layer/layer_math.h"
#include "shim/esg_torch.h"
#include "image/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- one run: the layer, its shape, the shim calls ---------------------------- */

typedef struct lrun {
	esg_attr_job *job;
	esg_layer_ref L;
	int N;
	size_t item;              /* input values per item */
	int cap;                  /* items per call */
	int lndim;                /* the layer's output [N, ...] */
	int64_t lshape[ESG_MAX_DIMS];
	size_t litem;             /* layer values per item (0 until known) */
	float *ax;                /* act(x), N * litem, when asked for */
	double *fx;               /* f(x) per item, when ax was asked for */
	/* the layer-shaped result */
	int rndim;
	int64_t rshape[ESG_MAX_DIMS];
	size_t ritem;
	float *res;
	int res_pending;          /* allocate res (res_c channels) once the shape is known */
	int64_t res_c;
	double *fd;               /* convergence delta: weighted f sums per item */
	int reduced;              /* the method already applied --channel */
} lrun;

static void lr_close(lrun *r)
{
	free(r->ax);
	free(r->fx);
	free(r->res);
	free(r->fd);
}

static size_t numel_from(int ndim, const int64_t *shape, int from)
{
	size_t n = 1;
	for (int d = from; d < ndim; d++)
		n *= (size_t)shape[d];
	return n;
}

/* Learn (or check) the layer's per-item shape from a tensor of `rows` items. */
static int lr_learn(lrun *r, const esg_tensor *t, int64_t rows)
{
	char s[128];
	esg_shape_str(t->ndim, t->shape, s, sizeof s);
	if (t->dtype != ESG_F32 || t->ndim < 1 || t->shape[0] != rows)
		return esg_set_error("layer '%s' output is %s, expected %lld items first", r->L.name, s,
				     (long long)rows);
	if (!r->litem) {
		r->lndim = t->ndim;
		memcpy(r->lshape, t->shape, sizeof r->lshape);
		r->lshape[0] = r->N;
		r->litem = numel_from(t->ndim, t->shape, 1);
		if (!r->litem)
			return esg_set_error("layer '%s' output %s is empty", r->L.name, s);
		return 0;
	}
	int same = t->ndim == r->lndim;
	for (int d = 1; same && d < t->ndim; d++)
		same = t->shape[d] == r->lshape[d];
	if (!same)
		return esg_set_error("layer '%s' output changed shape to %s between calls", r->L.name, s);
	return 0;
}

/* Scores out[b, target[b]] of an output that must be [B, C]. */
static int out_scores(const esg_tensor *out, int64_t B, const int64_t *target, float *score)
{
	char s[128];
	esg_shape_str(out->ndim, out->shape, s, sizeof s);
	if (out->ndim != 2 || out->shape[0] != B)
		return esg_set_error("model output is %s, not per-class scores [N, C] "
				     "(wrap a segmentation model with esg-wrap)", s);
	int64_t C = out->shape[1];
	for (int64_t b = 0; b < B; b++) {
		if (target[b] < 0 || target[b] >= C)
			return esg_set_error("target %lld is out of range: the model has %lld outputs",
					     (long long)target[b], (long long)C);
		score[b] = (float)esg_tensor_get(out, b * C + target[b]);
	}
	return 0;
}

static void shape_b(const lrun *r, int64_t B, int64_t *sh)
{
	memcpy(sh, r->job->shape, sizeof r->job->shape);
	sh[0] = B;
}

/* Capture the layer at B inputs, the job's items items[0..B) (NULL: first,
 * first + 1, ...): act (B * litem, may be NULL until the shape is known:
 * then *act_new gets a malloc'ed copy) and scores. */
static int lr_capture(lrun *r, const float *x, int64_t B, const int *items, int64_t first,
		      const int64_t *target, float **act, float *score)
{
	int64_t sh[ESG_MAX_DIMS];
	shape_b(r, B, sh);
	esg_tensor *a = NULL, *o = NULL;
	if (esg_attr_set_windows(r->job, B, items, first))
		return -1;
	int rc = esg_model_forward_capture(r->job->model, r->L, x, r->job->ndim, sh, &a,
					   score ? &o : NULL);
	if (!rc)
		rc = lr_learn(r, a, B);
	if (!rc && score)
		rc = out_scores(o, B, target, score);
	if (!rc) {
		if (!*act)
			*act = malloc((size_t)B * r->litem * sizeof **act);
		if (!*act)
			rc = esg_set_error("out of memory");
		else
			memcpy(*act, a->data, (size_t)B * r->litem * sizeof **act);
	}
	r->job->passes++;
	r->job->evaluations += B;
	esg_torch_tensor_free(a);
	esg_torch_tensor_free(o);
	return rc;
}

/* Capture every item of a buffer shaped like x (in chunks): new N * litem
 * activations; f (per-item scores) added with weight w if not NULL. */
static int lr_capture_all(lrun *r, const float *x, float **act, double *f, double w)
{
	float *score = malloc((size_t)r->cap * sizeof *score);
	float *chunk = NULL;
	int rc = score ? 0 : esg_set_error("out of memory");
	*act = NULL;
	for (int m0 = 0; m0 < r->N && !rc; m0 += r->cap) {
		int B = r->N - m0 < r->cap ? r->N - m0 : r->cap;
		rc = lr_capture(r, x + (size_t)m0 * r->item, B, NULL, m0, r->job->target + m0, &chunk, score);
		if (rc)
			break;
		if (!*act && !(*act = malloc((size_t)r->N * r->litem * sizeof **act)))
			rc = esg_set_error("out of memory");
		if (!rc)
			memcpy(*act + (size_t)m0 * r->litem, chunk, (size_t)B * r->litem * sizeof **act);
		for (int b = 0; f && b < B; b++)
			f[m0 + b] += w * score[b];
		free(chunk);
		chunk = NULL;
	}
	free(chunk);
	free(score);
	if (rc) {
		free(*act);
		*act = NULL;
	}
	return rc;
}

/* ax: 0 learn the layer's shape from the first gradient call (no extra
 * forward), 1 from a capture of one item, 2 capture act(x) of every item. */
static int lr_open(lrun *r, esg_attr_job *job, int ax)
{
	memset(r, 0, sizeof *r);
	r->job = job;
	r->L.name = job->layer;
	r->L.call = job->layer_call;
	r->N = (int)job->shape[0];
	r->item = numel_from(job->ndim, job->shape, 1);
	r->cap = esg_attr_batch_fit(job, 1, 3 * r->item * sizeof(float));
	if (!job->layer || !job->layer[0])
		return esg_set_error("method %s needs a layer (--layer NAME; esg-attr --list-layers "
				     "shows them)", job->method->name);
	r->fd = calloc((size_t)r->N, sizeof *r->fd);
	if (!r->fd)
		return esg_set_error("out of memory");
	if (!ax)
		return 0;
	if (ax == 2) {
		r->fx = calloc((size_t)r->N, sizeof *r->fx);
		if (!r->fx)
			return esg_set_error("out of memory");
		return lr_capture_all(r, job->x, &r->ax, r->fx, 1);
	}
	/* learn the layer's shape on one item */
	float *a = NULL;
	int rc = lr_capture(r, job->x, 1, NULL, 0, job->target, &a, NULL);
	free(a);
	return rc;
}

static int64_t lr_channels(const lrun *r) { return r->lndim >= 2 ? r->lshape[1] : 1; }
static int64_t lr_spatial(const lrun *r) { return r->lndim >= 2 ? (int64_t)numel_from(r->lndim, r->lshape, 2) : 1; }

/* The result buffer: per item, C channels (0: the layer's) of the layer's
 * spatial grid; deferred until the layer's shape is known. */
static int lr_result(lrun *r, int64_t C)
{
	if (!r->litem) {
		r->res_pending = 1;
		r->res_c = C;
		return 0;
	}
	r->res_pending = 0;
	if (!C)
		C = lr_channels(r);
	r->rndim = r->lndim;
	memcpy(r->rshape, r->lshape, sizeof r->rshape);
	if (r->rndim >= 2)
		r->rshape[1] = C;
	r->ritem = numel_from(r->rndim, r->rshape, 1);
	r->res = calloc((size_t)r->N * r->ritem, sizeof *r->res);
	return r->res ? 0 : esg_set_error("out of memory");
}

/* ---- batches of model points ---------------------------------------------------- */

typedef struct lpt {
	int m;        /* item */
	int k;        /* baseline index */
	int s;        /* step / sample */
	float w;      /* weight */
} lpt;

enum lkind {
	LB_GRAD,      /* layer gradient at x (and ref for DeepLift) */
	LB_REPLACE,   /* x with the layer replaced by act: gradient w.r.t. act */
	LB_FORWARD    /* plain forward: scores only */
};

/* act2: DeepLift's reference activations, or the activations at aux inputs */
typedef void (*lconsume)(void *ctx, const lpt *t, const float *act, const float *act2,
			 const float *grad, float score, float score2);

typedef struct lbatch {
	lrun *r;
	enum lkind kind;
	esg_backward_rule rule;
	int cap, used, want_aux, fitted; /* fitted: cap sized after a measured call */
	float *x, *ref, *aux, *act_in;
	float *score, *score2;
	int64_t *target;
	lpt *tags;
	int *items;               /* the tags' items, for a patch batch's windows */
	lconsume fn;
	void *ctx;
} lbatch;

static void lb_close(lbatch *b)
{
	free(b->x);
	free(b->ref);
	free(b->aux);
	free(b->act_in);
	free(b->score);
	free(b->score2);
	free(b->target);
	free(b->tags);
	free(b->items);
	memset(b, 0, sizeof *b);
}

/* want_aux: also capture the layer at aux inputs (act2 / score2). */
static int lb_open(lbatch *b, lrun *r, enum lkind kind, esg_backward_rule rule, int want_aux,
		   lconsume fn, void *ctx)
{
	memset(b, 0, sizeof *b);
	b->r = r;
	b->kind = kind;
	b->rule = rule;
	b->cap = r->cap;
	b->want_aux = want_aux;
	b->fn = fn;
	b->ctx = ctx;
	/* buffers for the most items a call may get (untouched past those used) */
	size_t max = (size_t)r->job->internal_batch, n = max * r->item;
	b->x = malloc(n * sizeof *b->x);
	b->ref = esg_rule_is_deeplift(rule) ? malloc(n * sizeof *b->ref) : NULL;
	b->aux = want_aux ? malloc(n * sizeof *b->aux) : NULL;
	b->act_in = kind == LB_REPLACE ? malloc(max * r->litem * sizeof *b->act_in) : NULL;
	b->score = malloc(max * sizeof *b->score);
	b->score2 = calloc(max, sizeof *b->score2);
	b->target = malloc(max * sizeof *b->target);
	b->tags = malloc(max * sizeof *b->tags);
	b->items = malloc(max * sizeof *b->items);
	if (!b->items || !b->x || (esg_rule_is_deeplift(rule) && !b->ref) || (want_aux && !b->aux) ||
	    (kind == LB_REPLACE && !b->act_in) || !b->score || !b->score2 || !b->target || !b->tags) {
		lb_close(b);
		return esg_set_error("out of memory for an internal batch of %d items", r->cap);
	}
	return 0;
}

static float *lb_x(lbatch *b) { return b->x + (size_t)b->used * b->r->item; }
static float *lb_ref(lbatch *b) { return b->ref + (size_t)b->used * b->r->item; }
static float *lb_aux(lbatch *b) { return b->aux + (size_t)b->used * b->r->item; }
static float *lb_act(lbatch *b) { return b->act_in + (size_t)b->used * b->r->litem; }

static int lb_flush(lbatch *b)
{
	if (!b->used)
		return 0;
	lrun *r = b->r;
	esg_attr_job *job = r->job;
	int n = b->used, rc = 0;
	int64_t sh[ESG_MAX_DIMS];
	shape_b(r, n, sh);
	float *act2 = NULL;
	esg_tensor *a = NULL, *g = NULL, *o = NULL;
	float *gbuf = NULL;
	for (int i = 0; i < n; i++)
		b->items[i] = b->tags[i].m;
	if (b->want_aux)
		rc = lr_capture(r, b->aux, n, b->items, 0, b->target, &act2, b->score2);
	if (!rc)
		rc = esg_attr_set_windows(job, n, b->items, 0);
	if (rc)
		goto out;
	if (b->kind == LB_GRAD) {
		rc = esg_model_layer_grad(job->model, r->L, b->rule, b->x, b->ref, job->ndim, sh, b->target,
					  &a, &g, b->score);
		int64_t rows = esg_rule_is_deeplift(b->rule) ? 2 * n : n;
		if (!rc)
			rc = lr_learn(r, a, rows);
		if (!rc)
			rc = lr_learn(r, g, rows);
		if (!rc && r->res_pending)
			rc = lr_result(r, r->res_c);
	} else if (b->kind == LB_REPLACE) {
		esg_tensor t = { 0 };
		t.name = "activation";
		t.dtype = ESG_F32;
		t.ndim = r->lndim;
		memcpy(t.shape, r->lshape, sizeof t.shape);
		t.shape[0] = n;
		t.data = b->act_in;
		gbuf = malloc((size_t)n * r->litem * sizeof *gbuf);
		if (!gbuf)
			rc = esg_set_error("out of memory");
		if (!rc)
			rc = esg_model_forward_replace(job->model, r->L, b->x, job->ndim, sh, &t, b->target,
						       gbuf, &o);
		if (!rc)
			rc = out_scores(o, n, b->target, b->score);
	} else {
		rc = esg_model_forward(job->model, b->x, job->ndim, sh, &o);
		if (!rc)
			rc = out_scores(o, n, b->target, b->score);
	}
	if (rc)
		goto out;
	job->passes++;
	job->evaluations += n;
	for (int i = 0; i < n; i++) {
		const float *ai = NULL, *a2 = NULL, *gi = NULL;
		if (b->kind == LB_GRAD) {
			ai = (const float *)a->data + (size_t)i * r->litem;
			gi = (const float *)g->data + (size_t)i * r->litem;
			if (esg_rule_is_deeplift(b->rule))
				a2 = (const float *)a->data + (size_t)(n + i) * r->litem;
		} else if (b->kind == LB_REPLACE) {
			ai = b->act_in + (size_t)i * r->litem;
			gi = gbuf + (size_t)i * r->litem;
		}
		if (act2)
			a2 = act2 + (size_t)i * r->litem;
		b->fn(b->ctx, &b->tags[i], ai, a2, gi, b->score[i], b->score2[i]);
	}
	b->used = 0;
	/* the first call measured what an item costs: size the rest by it */
	if (!b->fitted) {
		r->cap = b->cap = esg_attr_batch_fit(job, 1, 3 * r->item * sizeof(float));
		b->fitted = 1;
	}
out:
	esg_torch_tensor_free(a);
	esg_torch_tensor_free(g);
	esg_torch_tensor_free(o);
	free(gbuf);
	free(act2);
	return rc;
}

static int lb_push(lbatch *b, int64_t target, lpt t)
{
	b->target[b->used] = target;
	b->tags[b->used] = t;
	if (++b->used == b->cap)
		return lb_flush(b);
	return 0;
}

/* Add w * f(item m of buf) to r->fd[m] for every item (plain forwards). */
static void fd_consume(void *ctx, const lpt *t, const float *a, const float *a2, const float *g,
		       float score, float score2)
{
	(void)a, (void)a2, (void)g, (void)score2;
	((lrun *)ctx)->fd[t->m] += t->w * (double)score;
}

static int lr_fd_add(lrun *r, const float *buf, double w)
{
	lbatch f;
	if (lb_open(&f, r, LB_FORWARD, ESG_RULE_PLAIN, 0, fd_consume, r))
		return -1;
	int rc = 0;
	for (int m = 0; m < r->N && !rc; m++) {
		memcpy(lb_x(&f), buf + (size_t)m * r->item, r->item * sizeof(float));
		rc = lb_push(&f, r->job->target[m], (lpt){ m, 0, 0, (float)w });
	}
	if (!rc)
		rc = lb_flush(&f);
	lb_close(&f);
	return rc;
}

/* delta[m] = sum(res[m]) - fd[m] */
static void lr_delta(lrun *r)
{
	if (!r->job->delta)
		return;
	for (int m = 0; m < r->N; m++) {
		double s = 0;
		const float *a = r->res + (size_t)m * r->ritem;
		for (size_t j = 0; j < r->ritem; j++)
			s += a[j];
		r->job->delta[m] = s - r->fd[m];
	}
	r->job->has_delta = 1;
}

/* ---- the methods ------------------------------------------------------------------ */

typedef struct mctx {
	lrun *r;
	int mode;
	int relu, sum;          /* Grad-CAM */
	int exp_score;          /* Grad-CAM++ */
	char why[160];          /* set by a consumer on failure: its message */
	float *prev_a, *prev_g; /* conductance: the previous step */
	int prev_m;
	int K;
	int mode_ch;            /* excitation: 0 sum, 1 mean, 2 channel K */
} mctx;

enum { M_GXA, M_GRADCAM, M_GRADCAMPP, M_LINAPPROX, M_ACC_G, M_COND, M_DL, M_GSHAP, M_EB, M_LRP };

static void grad_consume(void *ctx, const lpt *t, const float *a, const float *a2, const float *g,
			 float score, float score2)
{
	mctx *c = ctx;
	lrun *r = c->r;
	float *o = r->res + (size_t)t->m * r->ritem;
	int64_t C = lr_channels(r), S = lr_spatial(r);
	switch (c->mode) {
	case M_GXA:
		for (size_t j = 0; j < r->litem; j++)
			o[j] = a[j] * g[j];
		break;
	case M_GRADCAM:
		esg_gradcam_map(a, g, C, S, c->sum, c->relu, o);
		break;
	case M_GRADCAMPP: {
		double scale = c->exp_score ? exp((double)score) : 1;
		int rc = isfinite(scale) ? esg_gradcampp_map(a, g, C, S, scale, o) : 1;
		if (rc && !c->why[0]) {
			if (rc < 0)
				snprintf(c->why, sizeof c->why, "out of memory for the Grad-CAM++ weights");
			else
				snprintf(c->why, sizeof c->why, "exp_score=true: the map times exp(%.6g) is past "
					 "float's range: use exp_score=false, the default", (double)score);
		}
		break;
	}
	case M_LINAPPROX:
		esg_linear_approx_map(a, g, C, S, o);
		break;
	case M_EB:     /* P: channel sum (default), mean or one channel; contrastive: >= 0 */
		esg_excitation_map(g, C, S, c->mode_ch, c->K, c->relu, o);
		break;
	case M_LRP:    /* relevance at the layer: score * the rule pass's signal */
		for (size_t j = 0; j < r->litem; j++)
			o[j] = score * g[j];
		r->fd[t->m] = score;
		break;
	case M_ACC_G:  /* internal influence, layer IG: sum of w * grad */
		for (size_t j = 0; j < r->litem; j++)
			o[j] += t->w * g[j];
		break;
	case M_COND:   /* grad at step s-1 times (act_s - act_{s-1}) */
		if (t->s > 0 && c->prev_m == t->m)
			for (size_t j = 0; j < r->litem; j++)
				o[j] += c->prev_g[j] * (a[j] - c->prev_a[j]);
		memcpy(c->prev_a, a, r->litem * sizeof *a);
		memcpy(c->prev_g, g, r->litem * sizeof *g);
		c->prev_m = t->m;
		break;
	case M_DL:     /* (act - act_ref) * multipliers, averaged over baselines */
		for (size_t j = 0; j < r->litem; j++)
			o[j] += t->w * ((a[j] - a2[j]) * g[j]);
		break;
	case M_GSHAP:  /* (act(noisy x) - act(baseline_k)) * grad, averaged over samples */
		for (size_t j = 0; j < r->litem; j++)
			o[j] += t->w * (g[j] * (a2[j] - c->prev_a[(size_t)(t->m * c->K + t->k) * r->litem + j]));
		r->fd[t->m] += t->w * (double)score2;
		break;
	}
}

/* One layer gradient per item; the consumer makes the map. */
static int run_per_item(lrun *r, mctx *c, esg_backward_rule rule)
{
	lbatch b;
	if (lb_open(&b, r, LB_GRAD, rule, 0, grad_consume, c))
		return -1;
	int rc = 0;
	for (int m = 0; m < r->N && !rc; m++) {
		memcpy(lb_x(&b), r->job->x + (size_t)m * r->item, r->item * sizeof(float));
		rc = lb_push(&b, r->job->target[m], (lpt){ m, 0, 0, 1 });
	}
	if (!rc)
		rc = lb_flush(&b);
	lb_close(&b);
	if (!rc && c->why[0])
		rc = esg_set_error("%s", c->why);
	return rc;
}

static int m_layer_activation(lrun *r)
{
	if (lr_result(r, lr_channels(r)))
		return -1;
	memcpy(r->res, r->ax, (size_t)r->N * r->litem * sizeof *r->res);
	return 0;
}

static int m_gxa(lrun *r)
{
	mctx c = { .r = r, .mode = M_GXA };
	return lr_result(r, 0) || run_per_item(r, &c, ESG_RULE_PLAIN) ? -1 : 0;
}

static int m_gradcam(lrun *r, int relu, int sum)
{
	mctx c = { .r = r, .mode = M_GRADCAM };
	c.relu = relu;
	c.sum = sum;
	return lr_result(r, sum ? 1 : 0) || run_per_item(r, &c, ESG_RULE_PLAIN) ? -1 : 0;
}

static int m_gradcampp(lrun *r)
{
	mctx c = { .r = r, .mode = M_GRADCAMPP };
	c.exp_score = esg_params_bool(r->job->params, "exp_score");
	return lr_result(r, 1) || run_per_item(r, &c, ESG_RULE_PLAIN) ? -1 : 0;
}

static int m_linear_approx(lrun *r)
{
	mctx c = { .r = r, .mode = M_LINAPPROX };
	return lr_result(r, 1) || run_per_item(r, &c, ESG_RULE_PLAIN) ? -1 : 0;
}

static int eb_channel(const esg_attr_job *job, int64_t C, int *mode, int *k)
{
	*mode = job->channel_mode == 2 ? 1 : job->channel_mode == 3 ? 2 : 0;
	*k = job->channel;
	if (*mode == 2 && (job->channel < 0 || job->channel >= C))
		return esg_set_error("--channel %d is out of range: the layer has %lld channels (0..%lld)",
				     job->channel, (long long)C, (long long)C - 1);
	return 0;
}

/* Excitation backprop (Zhang et al. 2016) at the layer: the marginal winning
 * probabilities summed over channels (TorchRay); contrastive: minus the
 * dual unit's, clamped at 0.  The shape comes from a one-item probe. */
static int m_excitation(lrun *r, int contrast)
{
	mctx c = { .r = r, .mode = M_EB, .relu = contrast };
	if (eb_channel(r->job, lr_channels(r), &c.mode_ch, &c.K) || lr_result(r, 1))
		return -1;
	r->reduced = 1;
	return run_per_item(r, &c, contrast ? ESG_RULE_EXCITATION_CONTRAST : ESG_RULE_EXCITATION);
}

/* Without a layer: P at the input, summed over its channels (clamped for
 * the contrastive map) and repeated over them. */
static int eb_input(esg_attr_job *job, int contrast)
{
	if (job->upsample || job->channel_mode)
		return esg_set_error("%s without --layer gives a map on the input grid: %s does not apply",
				     job->method->name, job->upsample ? "--upsample" : "--channel");
	int64_t C = job->shape[1];
	size_t item = numel_from(job->ndim, job->shape, 1), vox = numel_from(job->ndim, job->shape, 2);
	int N = (int)job->shape[0], cap = esg_attr_batch_fit(job, 1, 2 * item * sizeof(float));
	esg_backward_rule rule = contrast ? ESG_RULE_EXCITATION_CONTRAST : ESG_RULE_EXCITATION;
	float *map = malloc(vox * sizeof *map);
	if (!map)
		return esg_set_error("out of memory");
	for (int m0 = 0; m0 < N; m0 += cap) {
		int B = N - m0 < cap ? N - m0 : cap;
		int64_t sh[ESG_MAX_DIMS];
		memcpy(sh, job->shape, sizeof sh);
		sh[0] = B;
		if (esg_model_grad(job->model, rule, job->x + (size_t)m0 * item, NULL, job->ndim, sh,
				   job->target + m0, job->attr + (size_t)m0 * item, NULL)) {
			free(map);
			return -1;
		}
		job->passes++;
		job->evaluations += B;
	}
	for (int m = 0; m < N; m++) {
		float *a = job->attr + (size_t)m * item;
		esg_excitation_map(a, C, (int64_t)vox, 0, 0, contrast, map);
		for (int64_t c = 0; c < C; c++)
			memcpy(a + (size_t)c * vox, map, vox * sizeof *map);
	}
	free(map);
	job->out_ndim = job->ndim;
	memcpy(job->out_shape, job->shape, sizeof job->out_shape);
	job->act_ndim = 0;
	return 0;
}

/* Layer LRP (Captum's LayerLRP): the relevance at the layer's output, with
 * the rule table of lrp.c; delta = sum(map) - score. */
static int m_layer_lrp(lrun *r)
{
	char *spec = esg_lrp_table(r->job->params);
	if (!spec || esg_model_set_lrp(r->job->model, spec)) {
		free(spec);
		return -1;
	}
	free(spec);
	mctx c = { .r = r, .mode = M_LRP };
	if (lr_result(r, 0) || run_per_item(r, &c, ESG_RULE_LRP))
		return -1;
	lr_delta(r);
	return 0;
}

/* Alphas and weights of n points (Captum's approximation_parameters). */
static int steps(const esg_attr_job *job, int n, double **alpha, double **weight)
{
	*alpha = malloc((size_t)n * sizeof **alpha);
	*weight = malloc((size_t)n * sizeof **weight);
	if (!*alpha || !*weight)
		return esg_set_error("out of memory");
	return esg_ig_steps(esg_params_str(job->params, "method"), n, *alpha, *weight);
}

/* Conductance (n_steps + 1 points, Captum) and internal influence (n_steps
 * points weighted): gradients at baseline + alpha (x - baseline). */
static int m_path(lrun *r, int conductance)
{
	esg_attr_job *job = r->job;
	int n = (int)esg_params_int(job->params, "n_steps");
	int pts = conductance ? n + 1 : n;
	double *alpha = NULL, *weight = NULL;
	mctx c = { .r = r, .mode = conductance ? M_COND : M_ACC_G };
	c.prev_m = -1;
	lbatch b = { 0 };
	int rc = -1;
	c.prev_a = malloc(r->litem * sizeof *c.prev_a);
	c.prev_g = malloc(r->litem * sizeof *c.prev_g);
	if (!c.prev_a || !c.prev_g) {
		esg_set_error("out of memory");
		goto out;
	}
	if (steps(job, pts, &alpha, &weight) || lr_result(r, lr_channels(r)) ||
	    lb_open(&b, r, LB_GRAD, ESG_RULE_PLAIN, 0, grad_consume, &c))
		goto out;
	const float *bl = job->baselines[0];
	rc = 0;
	for (int m = 0; m < r->N && !rc; m++) {
		const float *x = job->x + (size_t)m * r->item, *z = bl + (size_t)m * r->item;
		for (int s = 0; s < pts && !rc; s++) {
			float a = (float)alpha[s], *p = lb_x(&b);
			for (size_t j = 0; j < r->item; j++)
				p[j] = z[j] + a * (x[j] - z[j]);
			rc = lb_push(&b, job->target[m], (lpt){ m, 0, s, (float)weight[s] });
		}
	}
	if (!rc)
		rc = lb_flush(&b);
	if (!rc && conductance) {
		rc = lr_fd_add(r, job->x, 1) || lr_fd_add(r, bl, -1);
		if (!rc)
			lr_delta(r);
	}
out:
	lb_close(&b);
	free(alpha);
	free(weight);
	free(c.prev_a);
	free(c.prev_g);
	return rc;
}

/* Layer integrated gradients: the layer's output interpolated between its
 * values at the baseline and at x, everything else fed by x (Captum). */
static int m_layer_ig(lrun *r)
{
	esg_attr_job *job = r->job;
	int n = (int)esg_params_int(job->params, "n_steps");
	double *alpha = NULL, *weight = NULL;
	float *ab = NULL;
	mctx c = { .r = r, .mode = M_ACC_G };
	lbatch b = { 0 };
	int rc = -1;
	for (int m = 0; m < r->N; m++)
		r->fd[m] = r->fx[m];
	if (steps(job, n, &alpha, &weight) || lr_result(r, lr_channels(r)) ||
	    lr_capture_all(r, job->baselines[0], &ab, r->fd, -1) ||
	    lb_open(&b, r, LB_REPLACE, ESG_RULE_PLAIN, 0, grad_consume, &c))
		goto out;
	rc = 0;
	for (int m = 0; m < r->N && !rc; m++) {
		const float *ax = r->ax + (size_t)m * r->litem, *a0 = ab + (size_t)m * r->litem;
		for (int s = 0; s < n && !rc; s++) {
			memcpy(lb_x(&b), job->x + (size_t)m * r->item, r->item * sizeof(float));
			float a = (float)alpha[s], *p = lb_act(&b);
			for (size_t j = 0; j < r->litem; j++)
				p[j] = a0[j] + a * (ax[j] - a0[j]);
			rc = lb_push(&b, job->target[m], (lpt){ m, 0, s, (float)weight[s] });
		}
	}
	if (!rc)
		rc = lb_flush(&b);
	if (!rc) {
		for (size_t i = 0; i < (size_t)r->N * r->litem; i++)
			r->res[i] *= r->ax[i] - ab[i];
		lr_delta(r);
	}
out:
	lb_close(&b);
	free(alpha);
	free(weight);
	free(ab);
	return rc;
}

/* Layer DeepLift over every baseline (one for layer_deeplift), averaged. */
static int m_layer_deeplift(lrun *r)
{
	esg_attr_job *job = r->job;
	int K = job->n_baselines;
	mctx c = { .r = r, .mode = M_DL };
	lbatch b = { 0 };
	int rc = -1;
	esg_backward_rule rule = ESG_DEEPLIFT_COMPLETE(job->params) ? ESG_RULE_DEEPLIFT_COMPLETE
								    : ESG_RULE_DEEPLIFT;
	if (lr_result(r, 0) || lb_open(&b, r, LB_GRAD, rule, 0, grad_consume, &c))
		goto out;
	rc = 0;
	for (int m = 0; m < r->N && !rc; m++)
		for (int k = 0; k < K && !rc; k++) {
			memcpy(lb_x(&b), job->x + (size_t)m * r->item, r->item * sizeof(float));
			memcpy(lb_ref(&b), job->baselines[k] + (size_t)m * r->item, r->item * sizeof(float));
			rc = lb_push(&b, job->target[m], (lpt){ m, k, 0, 1.0f / K });
		}
	if (!rc)
		rc = lb_flush(&b);
	if (!rc)
		rc = lr_fd_add(r, job->x, 1);
	for (int k = 0; k < K && !rc; k++)
		rc = lr_fd_add(r, job->baselines[k], -1.0 / K);
	if (!rc)
		lr_delta(r);
out:
	lb_close(&b);
	return rc;
}

/* Layer GradientShap (Captum: noise tunnel over LayerInputBaselineXGradient).
 * Per item, per sample, from the shap stream in the order of
 * gradient/gradient.c's gradient_shap: u (baseline floor(u K)), one normal per
 * element if stdevs > 0, alpha.  Attribution: mean over samples of
 * grad(layer at b + alpha (x_s - b)) * (act(x_s) - act(b)). */
static int m_layer_gshap(lrun *r)
{
	esg_attr_job *job = r->job;
	int K = job->n_baselines, S = (int)esg_params_int(job->params, "n_samples");
	double sd = esg_params_double(job->params, "stdevs");
	mctx c = { .r = r, .mode = M_GSHAP };
	c.K = K;
	lbatch b = { 0 };
	float *ab = NULL;
	double *fb = calloc((size_t)r->N * K, sizeof *fb), *tmp = calloc((size_t)r->N, sizeof *tmp);
	int rc = -1;
	/* act(b_k) for every item and baseline, item-major: [m][k] */
	c.prev_a = malloc((size_t)r->N * K * r->litem * sizeof *c.prev_a);
	if (!fb || !tmp || !c.prev_a) {
		esg_set_error("out of memory");
		goto out;
	}
	for (int k = 0; k < K; k++) {
		memset(tmp, 0, (size_t)r->N * sizeof *tmp);
		if (lr_capture_all(r, job->baselines[k], &ab, tmp, 1))
			goto out;
		for (int m = 0; m < r->N; m++) {
			memcpy(c.prev_a + ((size_t)m * K + k) * r->litem, ab + (size_t)m * r->litem,
			       r->litem * sizeof *ab);
			fb[(size_t)m * K + k] = tmp[m];
		}
		free(ab);
		ab = NULL;
	}
	if (lr_result(r, lr_channels(r)) || lb_open(&b, r, LB_GRAD, ESG_RULE_PLAIN, 1, grad_consume, &c))
		goto out;
	rc = 0;
	for (int m = 0; m < r->N && !rc; m++) {
		const float *x = job->x + (size_t)m * r->item;
		for (int s = 0; s < S && !rc; s++) {
			int k = (int)(esg_rng_uniform(job->rng_shap) * K);
			if (k >= K)
				k = K - 1;
			float *xs = lb_aux(&b);
			for (size_t j = 0; j < r->item; j++)
				xs[j] = sd > 0 ? x[j] + (float)(sd * esg_rng_normal(job->rng_shap)) : x[j];
			float a = (float)esg_rng_uniform(job->rng_shap);
			const float *z = job->baselines[k] + (size_t)m * r->item;
			float *p = lb_x(&b);
			for (size_t j = 0; j < r->item; j++)
				p[j] = z[j] + a * (xs[j] - z[j]);
			r->fd[m] -= fb[(size_t)m * K + k] / S;
			rc = lb_push(&b, job->target[m], (lpt){ m, k, s, 1.0f / S });
		}
	}
	if (!rc)
		rc = lb_flush(&b);
	if (!rc)
		lr_delta(r);
out:
	lb_close(&b);
	free(ab);
	free(fb);
	free(tmp);
	free(c.prev_a);
	return rc;
}

/* Score-CAM (Wang et al. 2020, Algorithm 1): each channel of act(x),
 * upsampled to the input grid and min-max normalised, masks the input;
 * the masked inputs' target scores, softmax-normalised over channels,
 * weight the channels: map = ReLU(sum_k w_k A_k).  Constant channels
 * (no mask) get weight 0. */
typedef struct sc_ctx {
	double *score;  /* per channel of the current item */
} sc_ctx;

static void sc_consume(void *ctx, const lpt *t, const float *a, const float *a2, const float *g,
		       float score, float score2)
{
	(void)a, (void)a2, (void)g, (void)score2;
	((sc_ctx *)ctx)->score[t->k] = score;
}

static int m_score_cam(lrun *r)
{
	esg_attr_job *job = r->job;
	if (r->lndim != job->ndim)
		return esg_set_error("score_cam: layer '%s' output has %d axes, the input %d: "
				     "choose a convolutional layer", r->L.name, r->lndim, job->ndim);
	int64_t C = lr_channels(r), S = lr_spatial(r);
	int64_t Cin = job->shape[1];
	size_t vox = r->item / (size_t)Cin;   /* input grid values */
	int64_t ish[ESG_MAX_DIMS];
	memcpy(ish, r->lshape, sizeof ish);
	ish[0] = 1;
	float *up = malloc((size_t)C * vox * sizeof *up);
	double *sc = malloc((size_t)C * sizeof *sc), *w = malloc((size_t)C * sizeof *w);
	unsigned char *use = malloc((size_t)C);
	sc_ctx sx = { sc };
	lbatch b = { 0 };
	int rc = -1;
	if (!up || !sc || !w || !use) {
		esg_set_error("out of memory");
		goto out;
	}
	if (lr_result(r, 1) || lb_open(&b, r, LB_FORWARD, ESG_RULE_PLAIN, 0, sc_consume, &sx))
		goto out;
	rc = 0;
	for (int m = 0; m < r->N && !rc; m++) {
		const float *A = r->ax + (size_t)m * r->litem;
		rc = esg_upsample(A, r->lndim, ish, job->shape + 2, ESG_UP_LINEAR, up);
		for (int64_t k = 0; k < C && !rc; k++) {
			float *mk = up + (size_t)k * vox;
			use[k] = !esg_minmax(mk, vox);
			sc[k] = 0;
			if (!use[k])
				continue;
			const float *x = job->x + (size_t)m * r->item;
			float *p = lb_x(&b);
			for (int64_t ci = 0; ci < Cin; ci++)
				for (size_t j = 0; j < vox; j++)
					p[(size_t)ci * vox + j] = x[(size_t)ci * vox + j] * mk[j];
			rc = lb_push(&b, job->target[m], (lpt){ m, (int)k, 0, 1 });
		}
		if (!rc)
			rc = lb_flush(&b);  /* this item's scores are complete */
		if (rc)
			break;
		esg_softmax(sc, use, (int)C, w);
		float *o = r->res + (size_t)m * r->ritem;
		for (int64_t k = 0; k < C; k++)
			for (int64_t s = 0; s < S && w[k] != 0; s++)
				o[s] += (float)w[k] * A[k * S + s];
		for (int64_t s = 0; s < S; s++)
			o[s] = o[s] > 0 ? o[s] : 0;
	}
out:
	lb_close(&b);
	free(up);
	free(sc);
	free(w);
	free(use);
	return rc;
}

/* ---- after the method: channels, upsampling, where the result goes ---------------- */

static int select_channels(lrun *r)
{
	esg_attr_job *job = r->job;
	if (!job->channel_mode || r->reduced)
		return 0;
	if (r->rndim < 2)
		return esg_set_error("layer '%s' output has no channel axis to select from", r->L.name);
	int64_t C = r->rshape[1];
	size_t S = numel_from(r->rndim, r->rshape, 2);
	if (job->channel_mode == 3 && (job->channel < 0 || job->channel >= C))
		return esg_set_error("--channel %d is out of range: the map has %lld channels (0..%lld)",
				     job->channel, (long long)C, (long long)C - 1);
	for (int m = 0; m < r->N; m++) {
		const float *src = r->res + (size_t)m * r->ritem;
		float *dst = r->res + (size_t)m * S;  /* in place: dst never overtakes src */
		if (job->channel_mode == 3) {
			memmove(dst, src + (size_t)job->channel * S, S * sizeof *dst);
			continue;
		}
		for (size_t s = 0; s < S; s++) {
			double v = 0;
			for (int64_t c = 0; c < C; c++)
				v += src[(size_t)c * S + s];
			dst[s] = (float)(job->channel_mode == 2 ? v / (double)C : v);
		}
	}
	r->rshape[1] = 1;
	r->ritem = S;
	return 0;
}

static int deliver(lrun *r, int cam_default)
{
	esg_attr_job *job = r->job;
	if (select_channels(r))
		return -1;
	int up = job->upsample == 1 || (job->upsample == 0 && cam_default);
	int spatial_ok = r->rndim == job->ndim;
	if (up && !spatial_ok) {
		if (job->upsample == 1)
			return esg_set_error("layer '%s' output has %d axes and the input %d: nothing to upsample",
					     r->L.name, r->rndim, job->ndim);
		up = 0;
	}
	if (up) {
		int same = 1;
		for (int d = 2; d < job->ndim; d++)
			same &= r->rshape[d] == job->shape[d];
		size_t n = (size_t)r->N * (size_t)r->rshape[1] * numel_from(job->ndim, job->shape, 2);
		float *dst = malloc(n * sizeof *dst);
		if (!dst)
			return esg_set_error("out of memory");
		if (esg_upsample(r->res, r->rndim, r->rshape, job->shape + 2, ESG_UP_LINEAR, dst)) {
			free(dst);
			return -1;
		}
		free(r->res);
		r->res = dst;
		for (int d = 2; d < job->ndim; d++)
			r->rshape[d] = job->shape[d];
		r->ritem = numel_from(r->rndim, r->rshape, 1);
		job->upsampled = same ? NULL : esg_upsample_name(job->ndim - 2);
	}
	/* x-shaped: an upsampled one-channel map repeats over x's channels;
	 * otherwise only a map that already has x's shape */
	int grid = spatial_ok;
	for (int d = 2; grid && d < job->ndim; d++)
		grid = r->rshape[d] == job->shape[d];
	if (grid && (r->rshape[1] == job->shape[1] || (up && r->rshape[1] == 1))) {
		size_t vox = numel_from(job->ndim, job->shape, 2);
		for (int m = 0; m < r->N; m++)
			for (int64_t c = 0; c < job->shape[1]; c++)
				memcpy(job->attr + ((size_t)m * job->shape[1] + c) * vox,
				       r->res + (size_t)m * r->ritem + (r->rshape[1] == 1 ? 0 : (size_t)c * vox),
				       vox * sizeof(float));
		job->out_ndim = job->ndim;
		memcpy(job->out_shape, job->shape, sizeof job->out_shape);
		return 0;
	}
	job->layer_attr = r->res;
	r->res = NULL;
	job->out_ndim = r->rndim;
	memcpy(job->out_shape, r->rshape, sizeof job->out_shape);
	return 0;
}

/* Guided Grad-CAM (Captum's GuidedGradCam): guided backprop times the
 * ReLU'd Grad-CAM map interpolated to the input grid ("nearest" by
 * default, as Captum). */
static int m_guided_gradcam(lrun *r)
{
	esg_attr_job *job = r->job;
	if (m_gradcam(r, 1, 1))
		return -1;
	if (r->lndim != job->ndim)
		return esg_set_error("guided_gradcam: layer '%s' output has %d axes, the input %d: "
				     "choose a convolutional layer", r->L.name, r->lndim, job->ndim);
	const char *mode = esg_params_str(job->params, "interpolate_mode");
	esg_up_mode um = mode && !strcmp(mode, "nearest") ? ESG_UP_NEAREST : ESG_UP_LINEAR;
	size_t vox = numel_from(job->ndim, job->shape, 2);
	float *map = malloc((size_t)r->N * vox * sizeof *map);
	float *g = malloc((size_t)r->cap * r->item * sizeof *g);
	int rc = -1;
	if (!map || !g) {
		esg_set_error("out of memory");
		goto out;
	}
	if (esg_upsample(r->res, r->rndim, r->rshape, job->shape + 2, um, map))
		goto out;
	rc = 0;
	for (int m0 = 0; m0 < r->N && !rc; m0 += r->cap) {
		int B = r->N - m0 < r->cap ? r->N - m0 : r->cap;
		int64_t sh[ESG_MAX_DIMS];
		shape_b(r, B, sh);
		rc = esg_model_grad(job->model, ESG_RULE_GUIDED, job->x + (size_t)m0 * r->item, NULL,
				    job->ndim, sh, job->target + m0, g, NULL);
		if (rc)
			break;
		job->passes++;
		job->evaluations += B;
		for (int b = 0; b < B; b++)
			for (int64_t c = 0; c < job->shape[1]; c++)
				for (size_t j = 0; j < vox; j++) {
					size_t i = ((size_t)b * job->shape[1] + c) * vox + j;
					job->attr[(size_t)m0 * r->item + i] = g[i] * map[(size_t)(m0 + b) * vox + j];
				}
	}
	job->out_ndim = job->ndim;
	memcpy(job->out_shape, job->shape, sizeof job->out_shape);
	job->upsampled = um == ESG_UP_NEAREST ? "nearest" : esg_upsample_name(job->ndim - 2);
out:
	free(map);
	free(g);
	return rc;
}

/* Layer activation with guided backprop (the CNN-visualisation literature's
 * "layer activation guided backprop", as in TorchEsegeta): the input
 * gradient of sum |A_k| (one channel with --channel K, else all) with
 * guided ReLUs below the layer. */
static int m_layer_guided_backprop(lrun *r)
{
	esg_attr_job *job = r->job;
	if (job->channel_mode == 1 || job->channel_mode == 2)
		return esg_set_error("layer_guided_backprop takes --channel K (one channel) or none (all)");
	int ch = job->channel_mode == 3 ? job->channel : -1;
	for (int m0 = 0; m0 < r->N; m0 += r->cap) {
		int B = r->N - m0 < r->cap ? r->N - m0 : r->cap;
		int64_t sh[ESG_MAX_DIMS];
		shape_b(r, B, sh);
		esg_tensor *a = NULL;
		int rc = esg_model_layer_input_grad(job->model, r->L, ESG_RULE_GUIDED, job->x + (size_t)m0 * r->item,
						    job->ndim, sh, ch, job->attr + (size_t)m0 * r->item,
						    m0 ? NULL : &a);
		if (!rc && a)
			rc = lr_learn(r, a, B);  /* the layer's shape, for the metadata */
		esg_torch_tensor_free(a);
		if (rc)
			return -1;
		job->passes++;
		job->evaluations += B;
	}
	job->out_ndim = job->ndim;
	memcpy(job->out_shape, job->shape, sizeof job->out_shape);
	return 0;
}

/* ---- entry points (attr.c's METHODS) ---------------------------------------------- */

typedef enum lmethod {
	L_ACT, L_GXA, L_GRADCAM, L_GRADCAMPP, L_GUIDED_GRADCAM, L_SCORECAM, L_COND, L_INFL, L_IG,
	L_DL, L_GSHAP, L_LINAPPROX, L_GUIDED_BP, L_EB, L_CEB, L_LRP
} lmethod;

static int run_layer(esg_attr_job *job, lmethod which)
{
	lrun r;
	/* act(x) first, or a one-item probe for the shape, or neither */
	int ax = which == L_ACT || which == L_SCORECAM || which == L_IG ? 2 :
		 which == L_COND || which == L_INFL || which == L_GSHAP || which == L_GUIDED_BP ||
		 which == L_EB || which == L_CEB ? 1 : 0;
	job->layer_attr = NULL;
	job->upsampled = NULL;
	if ((which == L_EB || which == L_CEB) && (!job->layer || !job->layer[0]))
		return eb_input(job, which == L_CEB);
	if ((which == L_GUIDED_GRADCAM && job->channel_mode) || ((which == L_GUIDED_GRADCAM ||
	    which == L_GUIDED_BP) && job->upsample))
		return esg_set_error("%s gives a map on the input grid: %s does not apply", job->method->name,
				     job->upsample ? "--upsample" : "--channel");
	int rc = lr_open(&r, job, ax);
	if (!rc) {
		switch (which) {
		case L_ACT: rc = m_layer_activation(&r); break;
		case L_GXA: rc = m_gxa(&r); break;
		case L_GRADCAM:
			rc = m_gradcam(&r, esg_params_bool(job->params, "relu_attributions"),
				       esg_params_bool(job->params, "attr_dim_summation"));
			break;
		case L_GRADCAMPP: rc = m_gradcampp(&r); break;
		case L_GUIDED_GRADCAM: rc = m_guided_gradcam(&r); break;
		case L_SCORECAM: rc = m_score_cam(&r); break;
		case L_COND: rc = m_path(&r, 1); break;
		case L_INFL: rc = m_path(&r, 0); break;
		case L_IG: rc = m_layer_ig(&r); break;
		case L_DL: rc = m_layer_deeplift(&r); break;
		case L_GSHAP: rc = m_layer_gshap(&r); break;
		case L_LINAPPROX: rc = m_linear_approx(&r); break;
		case L_GUIDED_BP: rc = m_layer_guided_backprop(&r); break;
		case L_EB: rc = m_excitation(&r, 0); break;
		case L_CEB: rc = m_excitation(&r, 1); break;
		case L_LRP: rc = m_layer_lrp(&r); break;
		}
	}
	job->act_ndim = r.lndim;
	memcpy(job->act_shape, r.lshape, sizeof job->act_shape);
	if (!rc && which != L_GUIDED_GRADCAM && which != L_GUIDED_BP)
		rc = deliver(&r, esg_method_layer(job->method) == ESG_LAYER_CAM);
	if (rc && r.L.name && !strstr(esg_error(), r.L.name))
		esg_prefix_error("layer '%s'", r.L.name);
	lr_close(&r);
	return rc;
}

static int esg_run_layer_activation(esg_attr_job *job) { return run_layer(job, L_ACT); }
static int esg_run_layer_gradient_x_activation(esg_attr_job *job) { return run_layer(job, L_GXA); }
static int esg_run_layer_gradcam(esg_attr_job *job) { return run_layer(job, L_GRADCAM); }
static int esg_run_gradcam_pp(esg_attr_job *job) { return run_layer(job, L_GRADCAMPP); }
static int esg_run_guided_gradcam(esg_attr_job *job) { return run_layer(job, L_GUIDED_GRADCAM); }
static int esg_run_score_cam(esg_attr_job *job) { return run_layer(job, L_SCORECAM); }
static int esg_run_layer_conductance(esg_attr_job *job) { return run_layer(job, L_COND); }
static int esg_run_internal_influence(esg_attr_job *job) { return run_layer(job, L_INFL); }
static int esg_run_layer_integrated_gradients(esg_attr_job *job) { return run_layer(job, L_IG); }
static int esg_run_layer_deeplift(esg_attr_job *job) { return run_layer(job, L_DL); }
static int esg_run_layer_deeplift_shap(esg_attr_job *job) { return run_layer(job, L_DL); }
static int esg_run_layer_gradient_shap(esg_attr_job *job) { return run_layer(job, L_GSHAP); }
static int esg_run_linear_approx(esg_attr_job *job) { return run_layer(job, L_LINAPPROX); }
static int esg_run_layer_guided_backprop(esg_attr_job *job) { return run_layer(job, L_GUIDED_BP); }
static int esg_run_excitation_backprop(esg_attr_job *job) { return run_layer(job, L_EB); }
static int esg_run_contrastive_excitation_backprop(esg_attr_job *job) { return run_layer(job, L_CEB); }
static int esg_run_layer_lrp(esg_attr_job *job) { return run_layer(job, L_LRP); }

/* ---- parameters (Captum's names and defaults) ------------------------------------- */

#define QUAD(def) \
	{ "n_steps", ESG_P_INT, "50", NULL, 1, 100000, "number of integration steps" }, \
	{ "method", ESG_P_CHOICE, def, \
	  "gausslegendre|riemann_left|riemann_right|riemann_middle|riemann_trapezoid", \
	  0, 0, "quadrature rule (riemann_* need n_steps >= 2)" }

static const esg_param_spec esg_p_layer_none[] = { ESG_PARAM_END };
static const esg_param_spec esg_p_layer_gradcam[] = {
	{ "relu_attributions", ESG_P_BOOL, "false", NULL, 0, 0, "ReLU of the map (Captum's default: no)" },
	{ "attr_dim_summation", ESG_P_BOOL, "true", NULL, 0, 0, "sum the weighted channels (one map)" },
	ESG_PARAM_END
};
static const esg_param_spec esg_p_gradcam_pp[] = {
	{ "exp_score", ESG_P_BOOL, "false", NULL, 0, 0,
	  "scale the map by exp(score), the paper's closed form (past float's range for scores above ~88)" },
	ESG_PARAM_END
};
static const esg_param_spec esg_p_guided_gradcam[] = {
	{ "interpolate_mode", ESG_P_CHOICE, "nearest", "nearest|bilinear|trilinear", 0, 0,
	  "interpolation of the Grad-CAM map to the input grid (Captum: nearest)" },
	ESG_PARAM_END
};
static const esg_param_spec esg_p_layer_path[] = { QUAD("gausslegendre"), ESG_PARAM_END };
static const esg_param_spec esg_p_layer_deeplift[] = { ESG_PARAM_MAXPOOL_RULE, ESG_PARAM_END };
static const esg_param_spec esg_p_layer_gshap[] = {
	{ "n_samples", ESG_P_INT, "5", NULL, 1, 1000000, "random samples per input" },
	{ "stdevs", ESG_P_FLOAT, "0.0", NULL, 0, 1e30, "standard deviation of the noise added to the input" },
	ESG_PARAM_END
};

/* ---- the family's methods, for the registry (family.h) ---- */

const esg_method esg_layer_methods[] = {
	{ "layer_activation", "the layer's output", esg_p_layer_none, 0, 0, 0,
	  esg_run_layer_activation, ESG_LAYER_MAP, 0, 1 },
	{ "layer_gradient_x_activation", "the layer's output times its gradient", esg_p_layer_none, 0, 0, 0,
	  esg_run_layer_gradient_x_activation, ESG_LAYER_MAP, 0, 1 },
	{ "layer_gradcam", "Grad-CAM: channel-mean gradients times activations (Selvaraju 2017)",
	  esg_p_layer_gradcam, 0, 0, 0, esg_run_layer_gradcam, ESG_LAYER_CAM, 0, 1 },
	{ "gradcam_pp", "Grad-CAM++: higher-order channel weights (Chattopadhyay 2018)", esg_p_gradcam_pp,
	  0, 0, 0, esg_run_gradcam_pp, ESG_LAYER_CAM, 0, 1 },
	{ "guided_gradcam", "guided backprop times the upsampled ReLU(Grad-CAM) of a layer",
	  esg_p_guided_gradcam, 0, 0, 0, esg_run_guided_gradcam, ESG_LAYER_INPUT, 0, 0 },
	{ "score_cam", "Score-CAM: channels as input masks, weighted by softmax of masked scores (Wang 2020)",
	  esg_p_layer_none, 0, 0, 0, esg_run_score_cam, ESG_LAYER_CAM, 0, 1 },
	{ "layer_conductance", "conductance of the layer's units (Dhamdhere 2018)", esg_p_layer_path, 1, 0, 1,
	  esg_run_layer_conductance, ESG_LAYER_MAP, 0, 1 },
	{ "internal_influence", "layer gradients integrated along the input path (Leino 2018)",
	  esg_p_layer_path, 1, 0, 0, esg_run_internal_influence, ESG_LAYER_MAP, 0, 1 },
	{ "layer_integrated_gradients", "integrated gradients over the layer's output",
	  esg_p_layer_path, 1, 0, 1, esg_run_layer_integrated_gradients, ESG_LAYER_MAP, 0, 1 },
	{ "layer_deeplift", "DeepLift rescale at the layer: (act - act_baseline) times the multipliers",
	  esg_p_layer_deeplift, 1, 0, 1, esg_run_layer_deeplift, ESG_LAYER_MAP, 0, 2 },
	{ "layer_deeplift_shap", "layer DeepLift averaged over a distribution of baselines", esg_p_layer_deeplift,
	  2, 0, 1, esg_run_layer_deeplift_shap, ESG_LAYER_MAP, 0, 2 },
	{ "layer_gradient_shap", "GradientShap at the layer: gradients at random points times (act - act_baseline)",
	  esg_p_layer_gshap, 2, 0, 1, esg_run_layer_gradient_shap, ESG_LAYER_MAP, 0, 0 },
	{ "linear_approx", "linear approximation (TorchRay): activation times gradient summed over channels",
	  esg_p_layer_none, 0, 0, 0, esg_run_linear_approx, ESG_LAYER_MAP, 0, 1 },
	{ "layer_guided_backprop", "input gradient of sum |layer output| (one channel: --channel K), guided ReLUs",
	  esg_p_layer_none, 0, 0, 0, esg_run_layer_guided_backprop, ESG_LAYER_INPUT, 0, 0 },
	{ "excitation_backprop", "marginal winning probabilities, W+ rule at linear ops (Zhang 2016); "
	  "no layer: at the input", esg_p_layer_none, 0, 0, 0, esg_run_excitation_backprop, ESG_LAYER_CAM, 1, 0 },
	{ "contrastive_excitation_backprop", "excitation backprop minus the last linear layer's dual unit, "
	  "clamped at 0 (Zhang 2016)", esg_p_layer_none, 0, 0, 0, esg_run_contrastive_excitation_backprop, ESG_LAYER_CAM, 1, 0 },
	{ "layer_lrp", "LRP relevance at the layer's output (Captum's LayerLRP); the rules of lrp",
	  esg_lrp_params, 0, 0, 1, esg_run_layer_lrp, ESG_LAYER_MAP, 0, 1 },
	ESG_METHOD_END
};
