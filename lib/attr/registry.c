/* attr.c - the method registry and parameter handling (see attr.h).
 * Parameter names and defaults follow Captum where Captum has the method. */
#include "attr/attr.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* attr_gradient.c */
int esg_run_saliency(esg_attr_job *job);
int esg_run_input_x_gradient(esg_attr_job *job);
int esg_run_integrated_gradients(esg_attr_job *job);
int esg_run_noise_tunnel(esg_attr_job *job);
int esg_run_gradient_shap(esg_attr_job *job);
int esg_run_guided_backprop(esg_attr_job *job);
int esg_run_deconvolution(esg_attr_job *job);
int esg_run_deeplift(esg_attr_job *job);
int esg_run_deeplift_shap(esg_attr_job *job);

/* attr_layer.c: layer methods and the CAM family */
int esg_run_layer_activation(esg_attr_job *job);
int esg_run_layer_gradient_x_activation(esg_attr_job *job);
int esg_run_layer_gradcam(esg_attr_job *job);
int esg_run_gradcam_pp(esg_attr_job *job);
int esg_run_guided_gradcam(esg_attr_job *job);
int esg_run_score_cam(esg_attr_job *job);
int esg_run_layer_conductance(esg_attr_job *job);
int esg_run_internal_influence(esg_attr_job *job);
int esg_run_layer_integrated_gradients(esg_attr_job *job);
int esg_run_layer_deeplift(esg_attr_job *job);
int esg_run_layer_deeplift_shap(esg_attr_job *job);
int esg_run_layer_gradient_shap(esg_attr_job *job);
int esg_run_linear_approx(esg_attr_job *job);
int esg_run_layer_guided_backprop(esg_attr_job *job);
int esg_run_excitation_backprop(esg_attr_job *job);
int esg_run_contrastive_excitation_backprop(esg_attr_job *job);
extern const esg_param_spec esg_p_layer_none[], esg_p_layer_gradcam[], esg_p_gradcam_pp[],
	esg_p_guided_gradcam[], esg_p_layer_path[], esg_p_layer_gshap[];

/* attr_perturb.c: perturbation and surrogate methods */
int esg_run_occlusion(esg_attr_job *job);
int esg_run_feature_ablation(esg_attr_job *job);
int esg_run_feature_permutation(esg_attr_job *job);
int esg_run_shapley_value_sampling(esg_attr_job *job);
int esg_run_rise(esg_attr_job *job);
int esg_run_extremal_perturbation(esg_attr_job *job);
int esg_run_lime(esg_attr_job *job);
int esg_run_kernel_shap(esg_attr_job *job);
extern const esg_param_spec esg_p_occlusion[], esg_p_fmask[], esg_p_shapley[], esg_p_rise[],
	esg_p_extremal[], esg_p_lime[], esg_p_kernel_shap[];

#define END { NULL, 0, NULL, NULL, 0, 0, NULL }

static const esg_param_spec P_NONE[] = { END };
static const esg_param_spec P_SALIENCY[] = {
	{ "abs", ESG_P_BOOL, "true", NULL, 0, 0, "absolute value of the gradient (Captum's default)" },
	END
};
static const esg_param_spec P_IG[] = {
	{ "n_steps", ESG_P_INT, "50", NULL, 1, 100000, "number of integration steps" },
	{ "method", ESG_P_CHOICE, "gausslegendre",
	  "gausslegendre|riemann_left|riemann_right|riemann_middle|riemann_trapezoid",
	  0, 0, "quadrature rule (riemann_* need n_steps >= 2)" },
	END
};
static const esg_param_spec P_NT[] = {
	{ "base", ESG_P_METHOD, "saliency", NULL, 0, 0, "the method run on the noisy inputs" },
	{ "nt_type", ESG_P_CHOICE, "smoothgrad", "smoothgrad|smoothgrad_sq|vargrad", 0, 0,
	  "mean, mean of squares, or variance of the base attributions" },
	{ "nt_samples", ESG_P_INT, "5", NULL, 1, 1000000, "noisy samples per input" },
	{ "stdevs", ESG_P_FLOAT, "1.0", NULL, 0, 1e30, "standard deviation of the Gaussian noise (absolute)" },
	END
};
static const esg_param_spec P_GSHAP[] = {
	{ "n_samples", ESG_P_INT, "5", NULL, 1, 1000000, "random samples per input" },
	{ "stdevs", ESG_P_FLOAT, "0.0", NULL, 0, 1e30, "standard deviation of the noise added to the input" },
	END
};

static const esg_method METHODS[] = {
	{ "saliency", "input gradient of the target score", P_SALIENCY, 0, 1, 0, esg_run_saliency },
	{ "input_x_gradient", "input times its gradient", P_NONE, 0, 1, 0, esg_run_input_x_gradient },
	{ "integrated_gradients", "path integral of the gradient from the baseline (Sundararajan 2017)",
	  P_IG, 1, 0, 1, esg_run_integrated_gradients },
	{ "noise_tunnel", "a base method averaged over noisy copies of the input (SmoothGrad, VarGrad)",
	  P_NT, 0, 0, 0, esg_run_noise_tunnel },
	{ "gradient_shap", "gradients at random points between input and random baselines, times (input - baseline)",
	  P_GSHAP, 2, 0, 1, esg_run_gradient_shap },
	{ "guided_backprop", "gradient with ReLU backward relu(grad)*[x > 0]", P_NONE, 0, 1, 0,
	  esg_run_guided_backprop },
	{ "deconvolution", "gradient with ReLU backward relu(grad)", P_NONE, 0, 1, 0, esg_run_deconvolution },
	{ "deeplift", "DeepLift rescale rule: (input - baseline) times the multipliers", P_NONE, 1, 0, 1,
	  esg_run_deeplift },
	{ "deeplift_shap", "DeepLift averaged over a distribution of baselines", P_NONE, 2, 0, 1,
	  esg_run_deeplift_shap },
	/* layer methods (attr_layer.c) */
	{ "layer_activation", "the layer's output", esg_p_layer_none, 0, 0, 0,
	  esg_run_layer_activation },
	{ "layer_gradient_x_activation", "the layer's output times its gradient", esg_p_layer_none, 0, 0, 0,
	  esg_run_layer_gradient_x_activation },
	{ "layer_gradcam", "Grad-CAM: channel-mean gradients times activations (Selvaraju 2017)",
	  esg_p_layer_gradcam, 0, 0, 0, esg_run_layer_gradcam },
	{ "gradcam_pp", "Grad-CAM++: higher-order channel weights (Chattopadhyay 2018)", esg_p_gradcam_pp,
	  0, 0, 0, esg_run_gradcam_pp },
	{ "guided_gradcam", "guided backprop times the upsampled ReLU(Grad-CAM) of a layer",
	  esg_p_guided_gradcam, 0, 0, 0, esg_run_guided_gradcam },
	{ "score_cam", "Score-CAM: channels as input masks, weighted by softmax of masked scores (Wang 2020)",
	  esg_p_layer_none, 0, 0, 0, esg_run_score_cam },
	{ "layer_conductance", "conductance of the layer's units (Dhamdhere 2018)", esg_p_layer_path, 1, 0, 1,
	  esg_run_layer_conductance },
	{ "internal_influence", "layer gradients integrated along the input path (Leino 2018)",
	  esg_p_layer_path, 1, 0, 0, esg_run_internal_influence },
	{ "layer_integrated_gradients", "integrated gradients over the layer's output",
	  esg_p_layer_path, 1, 0, 1, esg_run_layer_integrated_gradients },
	{ "layer_deeplift", "DeepLift rescale at the layer: (act - act_baseline) times the multipliers",
	  esg_p_layer_none, 1, 0, 1, esg_run_layer_deeplift },
	{ "layer_deeplift_shap", "layer DeepLift averaged over a distribution of baselines", esg_p_layer_none,
	  2, 0, 1, esg_run_layer_deeplift_shap },
	{ "layer_gradient_shap", "GradientShap at the layer: gradients at random points times (act - act_baseline)",
	  esg_p_layer_gshap, 2, 0, 1, esg_run_layer_gradient_shap },
	{ "linear_approx", "linear approximation (TorchRay): activation times gradient summed over channels",
	  esg_p_layer_none, 0, 0, 0, esg_run_linear_approx },
	{ "layer_guided_backprop", "input gradient of sum |layer output| (one channel: --channel K), guided ReLUs",
	  esg_p_layer_none, 0, 0, 0, esg_run_layer_guided_backprop },
	{ "excitation_backprop", "marginal winning probabilities, W+ rule at linear ops (Zhang 2016); "
	  "no layer: at the input", esg_p_layer_none, 0, 0, 0, esg_run_excitation_backprop },
	{ "contrastive_excitation_backprop", "excitation backprop minus the last linear layer's dual unit, "
	  "clamped at 0 (Zhang 2016)", esg_p_layer_none, 0, 0, 0, esg_run_contrastive_excitation_backprop },
	/* perturbation and surrogate methods (attr_perturb.c) */
	{ "occlusion", "f(x) - f(x with a sliding window set to the baseline), averaged over windows",
	  esg_p_occlusion, 1, 0, 0, esg_run_occlusion },
	{ "feature_ablation", "f(x) - f(x with one feature of a feature mask set to the baseline)",
	  esg_p_fmask, 1, 0, 0, esg_run_feature_ablation },
	{ "feature_permutation", "f(x) - f(x with one feature shuffled across the items of the record)",
	  esg_p_fmask, 0, 0, 0, esg_run_feature_permutation },
	{ "shapley_value_sampling", "Shapley values of mask features from random feature orders",
	  esg_p_shapley, 1, 0, 0, esg_run_shapley_value_sampling },
	{ "rise", "RISE: random smooth masks weighted by the masked scores (Petsiuk 2018)",
	  esg_p_rise, 1, 0, 0, esg_run_rise },
	{ "extremal_perturbation", "smooth mask of a given area that keeps the score, optimised (Fong 2019)",
	  esg_p_extremal, 0, 0, 0, esg_run_extremal_perturbation },
	{ "lime", "LIME: weighted linear surrogate on random feature subsets (Ribeiro 2016)",
	  esg_p_lime, 1, 0, 0, esg_run_lime },
	{ "kernel_shap", "KernelSHAP: linear surrogate with the Shapley kernel (Lundberg 2017)",
	  esg_p_kernel_shap, 1, 0, 0, esg_run_kernel_shap },
};

static const esg_method_alias ALIASES[] = {
	{ "grad_x_image", "input_x_gradient", "", "the same map as input_x_gradient" },
	{ "smoothgrad", "noise_tunnel", "nt_type=smoothgrad", "noise_tunnel with nt_type=smoothgrad" },
	{ "smoothgrad_sq", "noise_tunnel", "nt_type=smoothgrad_sq", "noise_tunnel with nt_type=smoothgrad_sq" },
	{ "vargrad", "noise_tunnel", "nt_type=vargrad", "noise_tunnel with nt_type=vargrad" },
};

/* The project's full list (design.md); those not above are planned. */
static const char *const PLANNED[] = {
	"deep_dream", "feature_vis",
	"inverted_representation", NULL
};

#define COUNT(a) (sizeof(a) / sizeof *(a))

const esg_method *esg_method_at(size_t i) { return i < COUNT(METHODS) ? &METHODS[i] : NULL; }
const esg_method_alias *esg_alias_at(size_t i) { return i < COUNT(ALIASES) ? &ALIASES[i] : NULL; }

int esg_method_planned(const char *name)
{
	for (int i = 0; PLANNED[i]; i++)
		if (strcmp(PLANNED[i], name) == 0)
			return 1;
	return 0;
}

static const esg_method *method_by_name(const char *name)
{
	for (size_t i = 0; i < COUNT(METHODS); i++)
		if (strcmp(METHODS[i].name, name) == 0)
			return &METHODS[i];
	return NULL;
}

const esg_method *esg_method_find(const char *name, const esg_method_alias **alias)
{
	if (alias)
		*alias = NULL;
	const esg_method *m = method_by_name(name);
	if (m)
		return m;
	for (size_t i = 0; i < COUNT(ALIASES); i++)
		if (strcmp(ALIASES[i].name, name) == 0) {
			if (alias)
				*alias = &ALIASES[i];
			return method_by_name(ALIASES[i].method);
		}
	if (esg_method_planned(name))
		esg_set_error("method '%s' is not implemented yet (see --list-methods)", name);
	else
		esg_set_error("unknown method '%s' (see --list-methods)", name);
	return NULL;
}

/* ---- parameters ----------------------------------------------------------- */

void esg_params_clear(esg_params *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->val[i]);
	memset(p, 0, sizeof *p);
}

static int find_slot(const esg_params *p, const char *key)
{
	for (int i = 0; i < p->n; i++)
		if (strcmp(p->spec[i]->key, key) == 0)
			return i;
	return -1;
}

const char *esg_params_str(const esg_params *p, const char *key)
{
	int i = find_slot(p, key);
	return i < 0 ? NULL : p->val[i];
}

long esg_params_int(const esg_params *p, const char *key)
{
	const char *s = esg_params_str(p, key);
	return s ? strtol(s, NULL, 10) : 0;
}

double esg_params_double(const esg_params *p, const char *key)
{
	const char *s = esg_params_str(p, key);
	return s ? strtod(s, NULL) : 0;
}

int esg_params_bool(const esg_params *p, const char *key)
{
	const char *s = esg_params_str(p, key);
	return s && strcmp(s, "true") == 0;
}

static int in_choices(const char *choices, const char *v)
{
	size_t n = strlen(v);
	for (const char *c = choices; *c;) {
		const char *bar = strchr(c, '|');
		size_t len = bar ? (size_t)(bar - c) : strlen(c);
		if (len == n && strncmp(c, v, n) == 0)
			return 1;
		c += len + (bar != NULL);
	}
	return 0;
}

/* Check a value against its spec; returns a new normalised string. */
static char *check_value(const esg_param_spec *s, const char *v)
{
	char *end;
	errno = 0;
	switch (s->kind) {
	case ESG_P_INT: {
		long x = strtol(v, &end, 10);
		if (errno || end == v || *end) {
			esg_set_error("parameter %s: '%s' is not an integer", s->key, v);
			return NULL;
		}
		if (x < s->lo || x > s->hi) {
			esg_set_error("parameter %s: %ld is out of range [%.0f, %.0f]", s->key, x, s->lo, s->hi);
			return NULL;
		}
		char buf[32];
		snprintf(buf, sizeof buf, "%ld", x);
		return strdup(buf);
	}
	case ESG_P_FLOAT: {
		double x = strtod(v, &end);
		if (errno || end == v || *end || !isfinite(x)) {
			esg_set_error("parameter %s: '%s' is not a finite number", s->key, v);
			return NULL;
		}
		if (x < s->lo || x > s->hi) {
			esg_set_error("parameter %s: %g is out of range [%g, %g]", s->key, x, s->lo, s->hi);
			return NULL;
		}
		char buf[40];
		snprintf(buf, sizeof buf, "%.17g", x);
		return strdup(buf);
	}
	case ESG_P_BOOL:
		if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
			return strdup("true");
		if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
			return strdup("false");
		esg_set_error("parameter %s: '%s' is not a boolean (true or false)", s->key, v);
		return NULL;
	case ESG_P_CHOICE:
		if (in_choices(s->choices, v))
			return strdup(v);
		esg_set_error("parameter %s: '%s' is not one of %s", s->key, v, s->choices);
		return NULL;
	case ESG_P_METHOD: {
		const esg_method *m = method_by_name(v);
		if (!m || m->run == esg_run_noise_tunnel || esg_method_layer(m)) {
			esg_set_error("parameter %s: '%s' is not a method noise_tunnel can wrap", s->key, v);
			return NULL;
		}
		return strdup(v);
	}
	case ESG_P_STRING:
		return strdup(v);
	}
	return NULL;
}

static const esg_param_spec *spec_in(const esg_param_spec *list, const char *key)
{
	for (; list && list->key; list++)
		if (strcmp(list->key, key) == 0)
			return list;
	return NULL;
}

static void known_keys(const esg_method *m, const esg_method *base, char *buf, size_t n)
{
	buf[0] = 0;
	const esg_param_spec *lists[2] = { m->params, base ? base->params : NULL };
	for (int l = 0; l < 2; l++)
		for (const esg_param_spec *s = lists[l]; s && s->key; s++) {
			size_t len = strlen(buf);
			snprintf(buf + len, n - len, "%s%s", len ? ", " : "", s->key);
		}
	if (!buf[0])
		snprintf(buf, n, "none");
}

static int add_param(esg_params *p, const esg_param_spec *s, const char *v)
{
	char *nv = check_value(s, v);
	if (!nv)
		return -1;
	int i = find_slot(p, s->key);
	if (i >= 0) {
		free(p->val[i]);
		p->val[i] = nv;
		return 0;
	}
	if (p->n == ESG_MAX_PARAMS) {
		free(nv);
		return esg_set_error("too many parameters");
	}
	p->spec[p->n] = s;
	p->val[p->n++] = nv;
	return 0;
}

/* Split "key=value" (in place copy). */
static int split_kv(const char *kv, char *key, size_t n, const char **val)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv || (size_t)(eq - kv) >= n)
		return esg_set_error("--param '%s' is not KEY=VALUE", kv);
	memcpy(key, kv, (size_t)(eq - kv));
	key[eq - kv] = 0;
	*val = eq + 1;
	return 0;
}

int esg_params_resolve(const esg_method *m, const esg_method_alias *alias,
		       char *const *kv, int n_kv, esg_params *out)
{
	memset(out, 0, sizeof *out);
	char key[64];
	const char *val;
	/* The alias's fixed parameters come first; the user may not change them. */
	char fixed[256] = "";
	if (alias && alias->params[0]) {
		snprintf(fixed, sizeof fixed, "%s", alias->params);
		for (char *save = NULL, *tok = strtok_r(fixed, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			if (split_kv(tok, key, sizeof key, &val) || add_param(out, spec_in(m->params, key), val))
				goto fail;
		}
	}
	/* noise_tunnel: find the base first, its parameters are accepted too */
	const char *base_name = NULL;
	for (int i = 0; i < n_kv; i++)
		if (strncmp(kv[i], "base=", 5) == 0)
			base_name = kv[i] + 5;
	const esg_param_spec *bspec = spec_in(m->params, "base");
	if (bspec) {
		if (add_param(out, bspec, base_name ? base_name : bspec->def))
			goto fail;
		out->base = method_by_name(esg_params_str(out, "base"));
	}
	for (int i = 0; i < n_kv; i++) {
		if (split_kv(kv[i], key, sizeof key, &val))
			goto fail;
		for (int j = 0; j < i; j++)
			if (strncmp(kv[j], key, strlen(key)) == 0 && kv[j][strlen(key)] == '=') {
				esg_set_error("parameter %s given twice", key);
				goto fail;
			}
		if (alias && spec_in(m->params, key) && find_slot(out, key) >= 0 &&
		    strstr(alias->params, key)) {
			esg_set_error("parameter %s is fixed by the alias %s", key, alias->name);
			goto fail;
		}
		if (strcmp(key, "base") == 0 && bspec)
			continue;
		const esg_param_spec *s = spec_in(m->params, key);
		if (!s && out->base)
			s = spec_in(out->base->params, key);
		if (!s) {
			char known[512];
			known_keys(m, out->base, known, sizeof known);
			esg_set_error("unknown parameter '%s' for method %s (parameters: %s)", key, m->name, known);
			goto fail;
		}
		if (add_param(out, s, val))
			goto fail;
	}
	/* defaults, in declaration order */
	const esg_param_spec *lists[2] = { m->params, out->base ? out->base->params : NULL };
	for (int l = 0; l < 2; l++)
		for (const esg_param_spec *s = lists[l]; s && s->key; s++)
			if (find_slot(out, s->key) < 0 && add_param(out, s, s->def))
				goto fail;
	return 0;
fail:
	esg_params_clear(out);
	return -1;
}

char *esg_params_json(const esg_params *p)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	for (int i = 0; i < p->n; i++) {
		const esg_param_spec *s = p->spec[i];
		cJSON *v;
		switch (s->kind) {
		case ESG_P_INT:
		case ESG_P_FLOAT:
			v = cJSON_CreateNumber(strtod(p->val[i], NULL));
			break;
		case ESG_P_BOOL:
			v = cJSON_CreateBool(strcmp(p->val[i], "true") == 0);
			break;
		default:
			v = cJSON_CreateString(p->val[i]);
		}
		cJSON_AddItemToObject(o, s->key, v);
	}
	char *txt = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!txt)
		esg_set_error("out of memory");
	return txt;
}
