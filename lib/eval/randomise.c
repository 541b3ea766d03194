/* randomise.c - parameter randomisation for sanity checks (Adebayo et al.
 * 2018): which layers each step changes, in which order, to which values,
 * and the manifest that says so.  The shim reads and writes the parameters
 * (shim/params.cpp); the caller saves the models.
 *
 * Random draws come from the project's own PRNG (attr.h: xoshiro256**), one
 * stream per parameter keyed by (seed, FNV-1a 64 of the parameter's name),
 * so a parameter gets the same values in every step and every run, whatever
 * the libtorch version or thread count. */
#include "eval/eval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const INIT_NAMES[ESG_INIT_COUNT] = { "default", "gaussian", "uniform" };

const char *esg_init_name(esg_init init)
{
	return (unsigned)init < ESG_INIT_COUNT ? INIT_NAMES[init] : "?";
}

/* A layer: a group of parameters randomised together. */
typedef struct layer {
	char *name;
	int order;          /* execution position (min over its parameters) */
	size_t *params;     /* indices into the parameter list */
	size_t n;
} layer;

/* How one parameter is re-drawn: U(lo, hi) or N(mean, sd) or a constant. */
typedef struct draw {
	enum { D_UNIFORM, D_NORMAL, D_CONST } kind;
	double a, b;            /* lo, hi | mean, sd | value */
	char how[96];
} draw;

typedef struct param_state {
	float *orig, *rand;
	int64_t n;
	double mean, sd;
	draw d;
	int changed;        /* any value differs from the original */
} param_state;

struct esg_randomisation {
	esg_model *m;                 /* borrowed */
	const esg_param_info *P;      /* borrowed */
	size_t np;
	esg_randomise_opts o;
	layer *L;                     /* execution order: the last is the top layer */
	size_t nl;
	param_state *S;               /* np, filled for the layers' parameters */
};

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

/* 1 if `name` is module `mod` or below it. */
static int under(const char *name, const char *mod)
{
	size_t n = strlen(mod);
	if (!n)
		return 1;
	return !strncmp(name, mod, n) && (name[n] == 0 || name[n] == '.');
}

static int add_param(layer *l, size_t i)
{
	size_t *p = realloc(l->params, (l->n + 1) * sizeof *p);
	if (!p)
		return esg_set_error("out of memory");
	l->params = p;
	l->params[l->n++] = i;
	return 0;
}

static layer *new_layer(esg_randomisation *R, const char *name, int order)
{
	layer *L = realloc(R->L, (R->nl + 1) * sizeof *L);
	if (!L) {
		esg_set_error("out of memory");
		return NULL;
	}
	R->L = L;
	layer *l = &L[R->nl++];
	memset(l, 0, sizeof *l);
	l->name = strdup(name);
	l->order = order;
	if (!l->name) {
		esg_set_error("out of memory");
		return NULL;
	}
	return l;
}

/* The layers the caller named: each module (or parameter) with every
 * parameter below it; no two may share one. */
static int named_layers(esg_randomisation *R)
{
	const esg_param_info *P = R->P;
	for (size_t k = 0; k < R->o.n_layers; k++) {
		const char *t = R->o.layers[k];
		layer *l = new_layer(R, t, -1);
		if (!l)
			return -1;
		for (size_t i = 0; i < R->np; i++)
			if (under(P[i].module, t) || !strcmp(P[i].name, t)) {
				if (add_param(l, i))
					return -1;
				if (P[i].order >= 0 && (l->order < 0 || P[i].order < l->order))
					l->order = P[i].order;
			}
		if (!l->n)
			return esg_set_error("model '%s' has no module or parameter '%s' with parameters "
					     "(esg-attr -m MODEL --list-layers shows the modules)",
					     R->o.model_name, t);
		for (size_t j = 0; j + 1 < R->nl; j++)
			for (size_t a = 0; a < R->L[j].n; a++)
				for (size_t b = 0; b < l->n; b++)
					if (R->L[j].params[a] == l->params[b])
						return esg_set_error("'%s' and '%s' overlap (both hold '%s')",
								     R->L[j].name, t, P[l->params[b]].name);
	}
	return 0;
}

/* Every module that owns parameters and that forward calls (the list is
 * sorted by execution order, so a module's parameters are adjacent). */
static int called_layers(esg_randomisation *R)
{
	const esg_param_info *P = R->P;
	for (size_t i = 0; i < R->np; i++) {
		if (P[i].order < 0)
			continue;  /* never called: cannot change the output */
		layer *l = R->nl ? &R->L[R->nl - 1] : NULL;
		if (!l || strcmp(l->name, P[i].module)) {
			if (!(l = new_layer(R, P[i].module, P[i].order)))
				return -1;
		}
		if (add_param(l, i))
			return -1;
	}
	if (!R->nl)
		return esg_set_error("model '%s' has no parameters that forward uses", R->o.model_name);
	return 0;
}

/* Stable insertion sort by execution order; never-called last. */
static void sort_layers(layer *L, size_t nl)
{
	for (size_t i = 1; i < nl; i++) {
		layer t = L[i];
		int ot = t.order < 0 ? 1 << 30 : t.order;
		size_t j = i;
		while (j > 0 && (L[j - 1].order < 0 ? 1 << 30 : L[j - 1].order) > ot) {
			L[j] = L[j - 1];
			j--;
		}
		L[j] = t;
	}
}

esg_randomisation *esg_randomise_plan(esg_model *m, const esg_param_info *P, size_t np,
				      const esg_randomise_opts *o)
{
	esg_randomisation *R = calloc(1, sizeof *R);
	if (!R) {
		esg_set_error("out of memory");
		return NULL;
	}
	R->m = m;
	R->P = P;
	R->np = np;
	R->o = *o;
	if (o->n_layers ? named_layers(R) : called_layers(R)) {
		esg_randomise_free(R);
		return NULL;
	}
	sort_layers(R->L, R->nl);
	return R;
}

size_t esg_randomise_steps(const esg_randomisation *R)
{
	return R->nl;
}

/* Step s changes the s-th layer from the output. */
static const layer *step_layer(const esg_randomisation *R, size_t s)
{
	return &R->L[R->nl - 1 - s];
}

static double fan_in(const esg_param_info *p)
{
	double f = p->ndim >= 2 ? (double)p->shape[1] : 1;
	for (int d = 2; d < p->ndim; d++)
		f *= (double)p->shape[d];
	return f;
}

/* The layer type's own initialisation, as nn.Conv / nn.Linear / norms reset. */
static void plan_default(const esg_param_info *P, size_t np, size_t i, draw *d)
{
	const esg_param_info *p = &P[i];
	if (strstr(p->module_type, "Norm") && p->ndim <= 1) {
		int w = !strcmp(p->leaf, "weight");
		d->kind = D_CONST;
		d->a = w ? 1 : 0;
		snprintf(d->how, sizeof d->how, "%s", w ? "ones" : "zeros");
		return;
	}
	if (p->ndim >= 2) {
		double b = 1 / sqrt(fan_in(p));
		d->kind = D_UNIFORM;
		d->a = -b;
		d->b = b;
		snprintf(d->how, sizeof d->how, "kaiming_uniform(a=sqrt(5))");
		return;
	}
	/* a bias: U(+-1/sqrt(fan_in)) of its module's weight, as nn.Conv / nn.Linear */
	double f = 0;
	for (size_t j = 0; j < np; j++)
		if (!strcmp(P[j].module, p->module) && !strcmp(P[j].leaf, "weight") && P[j].ndim >= 2)
			f = fan_in(&P[j]);
	const char *what = "uniform(+-1/sqrt(fan_in))";
	if (f <= 0) {
		int64_t n = 1;
		for (int k = 0; k < p->ndim; k++)
			n *= p->shape[k];
		f = n > 0 ? (double)n : 1;
		what = "uniform(+-1/sqrt(numel))";
	}
	d->kind = D_UNIFORM;
	d->a = -1 / sqrt(f);
	d->b = 1 / sqrt(f);
	snprintf(d->how, sizeof d->how, "%s", what);
}

static void stats(const float *v, int64_t n, double *mean, double *sd)
{
	double s = 0, ss = 0;
	for (int64_t i = 0; i < n; i++)
		s += v[i];
	*mean = n ? s / (double)n : 0;
	for (int64_t i = 0; i < n; i++)
		ss += (v[i] - *mean) * (v[i] - *mean);
	*sd = n > 1 ? sqrt(ss / (double)(n - 1)) : 0;  /* torch.std: unbiased */
}

/* Parameter i's original values, how it is re-drawn, and the new values. */
static int draw_param(const esg_randomisation *R, size_t i, param_state *s)
{
	esg_tensor *t = NULL;
	if (esg_model_param_get(R->m, R->P[i].name, &t))
		return -1;
	s->n = esg_tensor_numel(t);
	s->orig = t->data;
	t->data = NULL;
	esg_torch_tensor_free(t);
	stats(s->orig, s->n, &s->mean, &s->sd);
	if (R->o.init == ESG_INIT_DEFAULT) {
		plan_default(R->P, R->np, i, &s->d);
	} else if (R->o.init == ESG_INIT_GAUSSIAN) {
		s->d.kind = D_NORMAL;
		s->d.a = s->mean;
		s->d.b = s->sd;
		snprintf(s->d.how, sizeof s->d.how, "normal(mean, std)");
	} else {
		s->d.kind = D_UNIFORM;
		s->d.a = s->mean - s->sd;
		s->d.b = s->mean + s->sd;
		snprintf(s->d.how, sizeof s->d.how, "uniform(mean - std, mean + std)");
	}
	s->rand = malloc((size_t)(s->n ? s->n : 1) * sizeof *s->rand);
	if (!s->rand)
		return esg_set_error("out of memory");
	esg_rng r;
	esg_rng_init(&r, R->o.seed, fnv1a(R->P[i].name), 0x52414e44 /* "RAND" */);
	for (int64_t k = 0; k < s->n; k++) {
		double v = s->d.kind == D_CONST ? s->d.a :
			   s->d.kind == D_UNIFORM ? s->d.a + (s->d.b - s->d.a) * esg_rng_uniform(&r) :
			   s->d.a + s->d.b * esg_rng_normal(&r);
		s->rand[k] = (float)v;
		s->changed |= s->rand[k] != s->orig[k];
	}
	return 0;
}

int esg_randomise_draw(esg_randomisation *R)
{
	R->S = calloc(R->np ? R->np : 1, sizeof *R->S);
	if (!R->S)
		return esg_set_error("out of memory");
	for (size_t l = 0; l < R->nl; l++)
		for (size_t k = 0; k < R->L[l].n; k++)
			if (draw_param(R, R->L[l].params[k], &R->S[R->L[l].params[k]]))
				return -1;
	return 0;
}

/* Write the layer's parameters into the model: new (1) or original (0). */
static int set_layer(const esg_randomisation *R, const layer *l, int randomised)
{
	for (size_t k = 0; k < l->n; k++) {
		size_t i = l->params[k];
		const param_state *s = &R->S[i];
		if (esg_model_param_set(R->m, R->P[i].name, randomised ? s->rand : s->orig, s->n))
			return -1;
	}
	return 0;
}

int esg_randomise_apply(esg_randomisation *R, size_t s)
{
	/* independent: the previous step's layer goes back first */
	if (!R->o.cascading && s > 0 && set_layer(R, step_layer(R, s - 1), 0))
		return -1;
	return set_layer(R, step_layer(R, s), 1);
}

void esg_randomise_file(const esg_randomisation *R, size_t s, char *buf, size_t n)
{
	const char *name = step_layer(R, s)->name;
	snprintf(buf, n, "step-%02zu-%s.pt", s + 1, name[0] ? name : "root");
	for (char *c = buf; *c; c++)
		if (*c == '/')
			*c = '_';
}

static cJSON *shape_json(const esg_param_info *p)
{
	cJSON *a = cJSON_CreateArray();
	for (int d = 0; d < p->ndim; d++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber((double)p->shape[d]));
	return a;
}

static cJSON *param_json(const esg_param_info *p, const param_state *s)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", p->name);
	cJSON_AddStringToObject(o, "module", p->module);
	cJSON_AddStringToObject(o, "module_type", p->module_type);
	cJSON_AddItemToObject(o, "shape", shape_json(p));
	cJSON_AddStringToObject(o, "init", s->d.how);
	if (s->d.kind == D_UNIFORM) {
		cJSON_AddNumberToObject(o, "low", s->d.a);
		cJSON_AddNumberToObject(o, "high", s->d.b);
	} else if (s->d.kind == D_NORMAL) {
		cJSON_AddNumberToObject(o, "mean", s->d.a);
		cJSON_AddNumberToObject(o, "std", s->d.b);
	} else {
		cJSON_AddNumberToObject(o, "value", s->d.a);
	}
	cJSON_AddNumberToObject(o, "original_mean", s->mean);
	cJSON_AddNumberToObject(o, "original_std", s->sd);
	cJSON_AddBoolToObject(o, "changed", s->changed);
	return o;
}

/* Step s: its layer, file, and every parameter that differs from the
 * original in that file (all steps so far in cascading mode). */
static cJSON *step_json(const esg_randomisation *R, size_t s)
{
	char file[512];
	esg_randomise_file(R, s, file, sizeof file);
	cJSON *js = cJSON_CreateObject();
	cJSON_AddNumberToObject(js, "step", (double)(s + 1));
	cJSON_AddStringToObject(js, "layer", step_layer(R, s)->name);
	cJSON_AddStringToObject(js, "file", file);
	cJSON *rl = cJSON_AddArrayToObject(js, "randomised_layers");
	cJSON *pl = cJSON_AddArrayToObject(js, "parameters");
	for (size_t t = R->o.cascading ? 0 : s; t <= s; t++) {
		const layer *l = step_layer(R, t);
		cJSON_AddItemToArray(rl, cJSON_CreateString(l->name));
		for (size_t k = 0; k < l->n; k++)
			cJSON_AddItemToArray(pl, param_json(&R->P[l->params[k]], &R->S[l->params[k]]));
	}
	return js;
}

char *esg_randomise_manifest(const esg_randomisation *R, const char *model_sha256)
{
	cJSON *man = cJSON_CreateObject();
	cJSON_AddStringToObject(man, "format", "esg-randomise manifest 1");
	cJSON_AddStringToObject(man, "producer", "esg-randomise " ESG_VERSION);
	cJSON_AddStringToObject(man, "model", R->o.model_name);
	cJSON_AddStringToObject(man, "model_sha256", model_sha256);
	cJSON_AddStringToObject(man, "mode", R->o.cascading ? "cascading" : "independent");
	cJSON_AddStringToObject(man, "init", esg_init_name(R->o.init));
	cJSON_AddNumberToObject(man, "seed", (double)R->o.seed);
	cJSON_AddStringToObject(man, "prng", "xoshiro256** per parameter, "
				"esg_rng_init(seed, fnv1a64(name), 0x52414e44)");
	cJSON *jl = cJSON_AddArrayToObject(man, "layers");   /* execution order */
	for (size_t l = 0; l < R->nl; l++)
		cJSON_AddItemToArray(jl, cJSON_CreateString(R->L[l].name));
	cJSON *steps = cJSON_AddArrayToObject(man, "steps");
	for (size_t s = 0; s < R->nl; s++)
		cJSON_AddItemToArray(steps, step_json(R, s));
	char *txt = cJSON_Print(man);
	cJSON_Delete(man);
	if (!txt)
		esg_set_error("out of memory");
	return txt;
}

void esg_randomise_free(esg_randomisation *R)
{
	if (!R)
		return;
	for (size_t i = 0; R->S && i < R->np; i++) {
		free(R->S[i].orig);
		free(R->S[i].rand);
	}
	free(R->S);
	for (size_t l = 0; l < R->nl; l++) {
		free(R->L[l].name);
		free(R->L[l].params);
	}
	free(R->L);
	free(R);
}
