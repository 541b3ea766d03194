/* explain.c - the explainability methods' table and their settings
 * (explain.h).  A new method is one table entry plus, if it needs a new
 * objective, one case in lib/shim/explain.cpp. */
#include "explain/explain.h"
#include "stream/stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The optimiser's parameters, shared by every method (DEF_OPT: optimizer,
 * lr, and whether the gradient is normalised by default). */
#define OPT_PARAMS(OPT, LR, NORM) \
	{ "optimizer", ESG_P_CHOICE, OPT, "adam|sgd", 0, 0, "Adam (PyTorch's) or SGD with momentum" }, \
	{ "lr", ESG_P_FLOAT, LR, NULL, 0, 1e6, "learning rate (step size)" }, \
	{ "schedule", ESG_P_CHOICE, "constant", "constant|cosine", 0, 0, \
	  "learning rate over the steps: constant, or cosine-annealed to 0" }, \
	{ "momentum", ESG_P_FLOAT, "0", NULL, 0, 0.999999, "SGD momentum (optimizer=sgd)" }, \
	{ "beta1", ESG_P_FLOAT, "0.9", NULL, 0, 0.999999, "Adam's beta1 (optimizer=adam)" }, \
	{ "beta2", ESG_P_FLOAT, "0.999", NULL, 0, 0.999999, "Adam's beta2 (optimizer=adam)" }, \
	{ "eps", ESG_P_FLOAT, "1e-8", NULL, 0, 1, "Adam's epsilon (optimizer=adam)" }, \
	{ "normalize_grad", ESG_P_BOOL, NORM, NULL, 0, 0, \
	  "divide the gradient by its mean absolute value before each step" }

#define BOUND_PARAM \
	{ "bound", ESG_P_STRING, "auto", NULL, 0, 0, \
	  "B of the normalised regularisers (auto: max |IN|, else 1)" }
#define TV_PARAMS(W) \
	{ "tv_weight", ESG_P_FLOAT, W, NULL, 0, 1e12, \
	  "total variation weight (Mahendran & Vedaldi's normalisation)" }, \
	{ "tv_beta", ESG_P_FLOAT, "2", NULL, 1, 8, "total variation exponent beta" }

static const esg_param_spec DEEPDREAM_PARAMS[] = {
	OPT_PARAMS("sgd", "0.05", "true"),
	{ "octaves", ESG_P_INT, "1", NULL, 1, 12, "levels of the image pyramid" },
	{ "octave_scale", ESG_P_FLOAT, "1.4", NULL, 1, 4, "size ratio between pyramid levels" },
	{ "octave_blur", ESG_P_FLOAT, "0.5", NULL, 0, 100,
	  "Gaussian sigma (voxels) of the upsampled detail (0: none)" },
	{ "jitter", ESG_P_INT, "4", NULL, 0, 4096, "random roll of up to this many voxels per axis, per step" },
	{ NULL, 0, NULL, NULL, 0, 0, NULL }
};

static const esg_param_spec FEATURE_VIS_PARAMS[] = {
	OPT_PARAMS("adam", "0.05", "false"),
	{ "param", ESG_P_CHOICE, "fft", "fft|pixel",
	  0, 0, "image parameterisation: Fourier with 1/f scaling (Lucid), or pixels" },
	{ "decorrelate", ESG_P_CHOICE, "auto", "auto|true|false", 0, 0,
	  "Lucid's colour decorrelation (auto: 3-channel 2D images)" },
	{ "init_std", ESG_P_FLOAT, "0.01", NULL, 0, 1e6, "std of the starting noise (pixels or spectrum)" },
	{ "pad", ESG_P_INT, "2", NULL, 0, 4096, "zero padding per side before the other transforms" },
	{ "jitter", ESG_P_INT, "4", NULL, 0, 4096, "random roll of up to this many voxels per axis" },
	{ "scale_min", ESG_P_FLOAT, "0.95", NULL, 0.05, 20, "random zoom, lower end" },
	{ "scale_max", ESG_P_FLOAT, "1.05", NULL, 0.05, 20, "random zoom, upper end" },
	{ "rotate", ESG_P_STRING, "auto", NULL, 0, 0,
	  "random rotation of up to this many degrees, 2D only (auto: 10 in 2D, 0 in 3D)" },
	{ "flip", ESG_P_CHOICE, "auto", "auto|true|false", 0, 0,
	  "random flips per spatial axis (auto: 3D only)" },
	{ "l2_decay", ESG_P_FLOAT, "0", NULL, 0, 1e12, "weight of ||x||^2 in the loss" },
	TV_PARAMS("0"),
	{ "diversity", ESG_P_FLOAT, "0", NULL, 0, 1e12,
	  "weight of Lucid's diversity term: the N images of the batch optimised together, "
	  "pushed apart (0: each on its own)" },
	BOUND_PARAM,
	{ NULL, 0, NULL, NULL, 0, 0, NULL }
};

static const esg_param_spec CLASS_MODEL_PARAMS[] = {
	OPT_PARAMS("adam", "0.05", "false"),
	{ "init", ESG_P_CHOICE, "noise", "noise|input", 0, 0, "start from seeded noise or from IN" },
	{ "init_std", ESG_P_FLOAT, "0.01", NULL, 0, 1e6, "std of the starting noise" },
	{ "l2_decay", ESG_P_FLOAT, "0.001", NULL, 0, 1e12,
	  "lambda of Simonyan et al.'s S_c(x) - lambda ||x||^2" },
	{ "blur_every", ESG_P_INT, "4", NULL, 0, 1000000, "blur the image every this many steps (0: never)" },
	{ "blur_sigma", ESG_P_FLOAT, "0.5", NULL, 0, 100, "Gaussian sigma (voxels) of that blur" },
	{ "jitter", ESG_P_INT, "0", NULL, 0, 4096, "random roll of up to this many voxels per axis" },
	{ NULL, 0, NULL, NULL, 0, 0, NULL }
};

static const esg_param_spec INVERT_PARAMS[] = {
	OPT_PARAMS("adam", "0.05", "false"),
	{ "init_std", ESG_P_FLOAT, "0.01", NULL, 0, 1e6, "std of the starting noise" },
	{ "alpha", ESG_P_FLOAT, "6", NULL, 1, 64, "exponent of the alpha-norm regulariser" },
	{ "alpha_weight", ESG_P_FLOAT, "0.001", NULL, 0, 1e12,
	  "alpha-norm weight (Mahendran & Vedaldi's normalisation)" },
	TV_PARAMS("0.01"),
	BOUND_PARAM,
	{ NULL, 0, NULL, NULL, 0, 0, NULL }
};

static const esg_explain_method METHODS[] = {
	{ { "deepdream", "gradient ascent on a layer's (or channel's) activation norm from IN "
	    "(Mordvintsev et al.), octaves and jitter", DEEPDREAM_PARAMS, 0, 0, 0, NULL, 0, 0, 0 },
	  20, ESG_EX_REQUIRED, ESG_EX_REQUIRED, ESG_EX_OPTIONAL, ESG_EX_NO, ESG_EX_NO },
	{ { "feature_vis", "feature visualisation from noise (Lucid / Lucent optvis): a channel, "
	    "a unit (--unit) or the whole layer", FEATURE_VIS_PARAMS, 0, 0, 0, NULL, 0, 0, 0 },
	  256, ESG_EX_OPTIONAL, ESG_EX_REQUIRED, ESG_EX_OPTIONAL, ESG_EX_OPTIONAL, ESG_EX_NO },
	{ { "class_model", "class model visualisation (Simonyan et al. 2014): maximise a class "
	    "score with L2 decay and blur", CLASS_MODEL_PARAMS, 0, 0, 0, NULL, 0, 0, 0 },
	  200, ESG_EX_OPTIONAL, ESG_EX_NO, ESG_EX_NO, ESG_EX_NO, ESG_EX_REQUIRED },
	{ { "invert", "inverted representation (Mahendran & Vedaldi 2015): the image whose "
	    "layer output matches IN's", INVERT_PARAMS, 0, 0, 0, NULL, 0, 0, 0 },
	  200, ESG_EX_REQUIRED, ESG_EX_REQUIRED, ESG_EX_NO, ESG_EX_NO, ESG_EX_NO },
};

#define N_METHODS (sizeof METHODS / sizeof METHODS[0])

const esg_explain_method *esg_explain_at(size_t i)
{
	return i < N_METHODS ? &METHODS[i] : NULL;
}

const esg_explain_method *esg_explain_find(const char *name)
{
	for (size_t i = 0; i < N_METHODS; i++)
		if (name && !strcmp(METHODS[i].m.name, name))
			return &METHODS[i];
	esg_set_error("unknown method '%s' (methods: deepdream, feature_vis, class_model, invert)",
		      name ? name : "");
	return NULL;
}

static int has_param(const esg_params *p, const char *key)
{
	return esg_params_str(p, key) != NULL;
}

static double dparam(const esg_params *p, const char *key, double def)
{
	return has_param(p, key) ? esg_params_double(p, key) : def;
}

static int need(int what, int given, const char *opt, const char *method)
{
	if (what == ESG_EX_REQUIRED && !given)
		return esg_set_error("method %s needs %s", method, opt);
	if (what == ESG_EX_NO && given)
		return esg_set_error("%s: method %s takes none", opt, method);
	return 0;
}

/* "auto" or a number in [lo, hi]. */
static int auto_num(const esg_params *p, const char *key, double lo, double hi, double *out)
{
	const char *v = esg_params_str(p, key);
	if (!v || !strcmp(v, "auto")) {
		*out = NAN;
		return 0;
	}
	char *end;
	double d = strtod(v, &end);
	if (end == v || *end || !(d >= lo && d <= hi))
		return esg_set_error("parameter %s: '%s' is not auto or a number in [%g, %g]", key, v, lo, hi);
	*out = d;
	return 0;
}

int esg_explain_check(const esg_explain_method *em, const esg_params *p,
		      const esg_explain_request *rq)
{
	const char *name = em->m.name;
	if (need(em->layer, rq->layer != NULL, "--layer", name) ||
	    need(em->channel, rq->channel >= 0, "--channel", name) ||
	    need(em->unit, rq->n_unit > 0, "--unit", name) ||
	    need(em->target, rq->target >= 0, "--target", name))
		return -1;
	if (rq->n_unit > 0 && rq->channel < 0)
		return esg_set_error("--unit needs --channel (the unit is channel K at that position)");
	if (strcmp(esg_params_str(p, "optimizer"), "sgd") && esg_params_double(p, "momentum") != 0)
		return esg_set_error("parameter momentum is SGD's: add optimizer=sgd");
	if (has_param(p, "scale_min") && esg_params_double(p, "scale_min") > esg_params_double(p, "scale_max"))
		return esg_set_error("parameter scale_min (%g) is above scale_max (%g)",
				     esg_params_double(p, "scale_min"), esg_params_double(p, "scale_max"));
	double v;
	if (auto_num(p, "rotate", 0, 180, &v) || auto_num(p, "bound", 1e-30, 1e30, &v))
		return -1;
	return 0;
}

int esg_explain_setup(const esg_explain_method *em, const esg_params *p,
		      const esg_explain_request *rq, int nsp, int64_t channels,
		      esg_explain_spec *s)
{
	const char *name = em->m.name;
	memset(s, 0, sizeof *s);
	if (esg_explain_check(em, p, rq))
		return -1;
	if (nsp != 2 && nsp != 3)
		return esg_set_error("images must be 2D or 3D ([N, C, H, W] or [N, C, D, H, W]), not %dD", nsp);
	s->layer.name = rq->layer;
	s->layer.call = rq->layer_call;
	s->channel = rq->channel;
	s->n_unit = rq->n_unit;
	memcpy(s->unit, rq->unit, sizeof s->unit);
	s->target = rq->target;
	s->steps = rq->steps >= 0 ? rq->steps : em->steps;
	s->seed = rq->seed;

	s->sgd = !strcmp(esg_params_str(p, "optimizer"), "sgd");
	s->lr = esg_params_double(p, "lr");
	s->cosine = !strcmp(esg_params_str(p, "schedule"), "cosine");
	s->momentum = esg_params_double(p, "momentum");
	s->beta1 = esg_params_double(p, "beta1");
	s->beta2 = esg_params_double(p, "beta2");
	s->eps = esg_params_double(p, "eps");
	s->normalize_grad = esg_params_bool(p, "normalize_grad");
	s->init_std = dparam(p, "init_std", 0.01);
	s->l2_decay = dparam(p, "l2_decay", 0);
	s->alpha = dparam(p, "alpha", 6);
	s->alpha_weight = dparam(p, "alpha_weight", 0);
	s->tv_beta = dparam(p, "tv_beta", 2);
	s->tv_weight = dparam(p, "tv_weight", 0);
	s->diversity = dparam(p, "diversity", 0);
	s->blur_every = has_param(p, "blur_every") ? (int)esg_params_int(p, "blur_every") : 0;
	s->blur_sigma = dparam(p, "blur_sigma", 0);
	s->octaves = has_param(p, "octaves") ? (int)esg_params_int(p, "octaves") : 1;
	s->octave_scale = dparam(p, "octave_scale", 1.4);
	s->octave_blur = dparam(p, "octave_blur", 0);
	s->jitter = has_param(p, "jitter") ? (int)esg_params_int(p, "jitter") : 0;
	s->pad = has_param(p, "pad") ? (int)esg_params_int(p, "pad") : 0;
	s->scale_min = dparam(p, "scale_min", 1);
	s->scale_max = dparam(p, "scale_max", 1);
	if (has_param(p, "rotate")) {
		double r;
		if (auto_num(p, "rotate", 0, 180, &r))
			return -1;
		if (isnan(r))
			r = nsp == 2 ? 10 : 0;
		else if (r > 0 && nsp != 2)
			return esg_set_error("parameter rotate: rotation is 2D only (this image is 3D)");
		s->rotate = r;
	}
	if (has_param(p, "flip")) {
		const char *f = esg_params_str(p, "flip");
		s->flip = !strcmp(f, "auto") ? nsp == 3 : !strcmp(f, "true");
	}
	if (has_param(p, "param"))
		s->fft = !strcmp(esg_params_str(p, "param"), "fft");
	if (has_param(p, "decorrelate")) {
		const char *d = esg_params_str(p, "decorrelate");
		int rgb = nsp == 2 && channels == 3;
		if (!strcmp(d, "true") && !rgb)
			return esg_set_error("parameter decorrelate: needs a 3-channel 2D image");
		s->decorrelate = !strcmp(d, "auto") ? rgb : !strcmp(d, "true");
	}

	if (!strcmp(name, "deepdream")) {
		s->objective = ESG_OBJ_NORM;
		s->init_input = 1;
	} else if (!strcmp(name, "feature_vis")) {
		s->objective = rq->n_unit ? ESG_OBJ_UNIT : rq->channel >= 0 ? ESG_OBJ_CHANNEL : ESG_OBJ_LAYER;
	} else if (!strcmp(name, "class_model")) {
		s->objective = ESG_OBJ_CLASS;
		s->init_input = !strcmp(esg_params_str(p, "init"), "input");
	} else {
		s->objective = ESG_OBJ_INVERT;
	}
	return 0;
}

double esg_explain_for_item(const esg_params *p, esg_explain_spec *s, uint64_t seed,
			    uint64_t item, const float *x, int64_t n)
{
	s->seed = seed + item;
	double b = NAN;
	if (has_param(p, "bound"))
		auto_num(p, "bound", 1e-30, 1e30, &b);  /* checked by setup */
	if (isnan(b)) {
		b = 0;
		for (int64_t i = 0; x && i < n; i++)
			if (fabs(x[i]) > b)
				b = fabs(x[i]);
		if (!(b > 0))
			b = 1;
	}
	s->bound = b;
	return b;
}

const char *esg_explain_objective_name(esg_explain_objective o)
{
	switch (o) {
	case ESG_OBJ_NORM: return "l2_norm";
	case ESG_OBJ_CHANNEL: return "channel_mean";
	case ESG_OBJ_UNIT: return "unit";
	case ESG_OBJ_LAYER: return "mean_square";
	case ESG_OBJ_CLASS: return "class_score";
	case ESG_OBJ_INVERT: return "representation_loss";
	}
	return "?";
}
