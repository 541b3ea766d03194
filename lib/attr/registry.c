/* attr.c - the method registry and parameter handling (see attr.h).
 * Parameter names and defaults follow Captum where Captum has the method. */
#include "attr/family.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The families, in listing order: each exports one table of its methods
 * (family.h), so the registry names no method and no family names another. */
static const esg_method *const FAMILIES[] = {
	esg_gradient_methods, esg_layer_methods, esg_perturb_methods,
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

const esg_method *esg_method_at(size_t i)
{
	for (size_t f = 0; f < COUNT(FAMILIES); f++)
		for (const esg_method *m = FAMILIES[f]; m->name; m++)
			if (i-- == 0)
				return m;
	return NULL;
}

int esg_method_layer(const esg_method *m) { return m ? m->layer : ESG_LAYER_NONE; }
int esg_method_layer_optional(const esg_method *m) { return m && m->layer_optional; }

/* A method with a method-valued parameter (noise_tunnel's base) wraps another. */
static int wraps_a_method(const esg_method *m)
{
	for (const esg_param_spec *s = m->params; s && s->key; s++)
		if (s->kind == ESG_P_METHOD)
			return 1;
	return 0;
}
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
	const esg_method *m;
	for (size_t i = 0; (m = esg_method_at(i)); i++)
		if (strcmp(m->name, name) == 0)
			return m;
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
	for (int i = 0; i < p->n; i++) {
		free(p->val[i]);
		free(p->key[i]);
	}
	memset(p, 0, sizeof *p);
}

const char *esg_params_key(const esg_params *p, int i)
{
	return p->key[i] ? p->key[i] : p->spec[i]->key;
}

static int find_slot(const esg_params *p, const char *key)
{
	for (int i = 0; i < p->n; i++)
		if (strcmp(esg_params_key(p, i), key) == 0)
			return i;
	return -1;
}

/* A "prefix.*" spec stands for every key "prefix.NAME". */
static int is_family(const esg_param_spec *s)
{
	size_t n = strlen(s->key);
	return n >= 2 && strcmp(s->key + n - 2, ".*") == 0;
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

/* Check a value against its spec (key: as given, for "prefix.*" specs);
 * returns a new normalised string. */
static char *check_value(const esg_param_spec *s, const char *key, const char *v)
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
		if (!m || wraps_a_method(m) || m->layer) {
			esg_set_error("parameter %s: '%s' is not a method noise_tunnel can wrap", s->key, v);
			return NULL;
		}
		return strdup(v);
	}
	case ESG_P_STRING:
		return strdup(v);
	case ESG_P_LRP:
		return esg_lrp_check_param(key, v) ? NULL : strdup(v);
	}
	return NULL;
}

static const esg_param_spec *spec_in(const esg_param_spec *list, const char *key)
{
	for (; list && list->key; list++) {
		if (strcmp(list->key, key) == 0)
			return list;
		size_t n = strlen(list->key);
		if (is_family(list) && strncmp(list->key, key, n - 1) == 0 && key[n - 1])
			return list;
	}
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

static int add_param_key(esg_params *p, const esg_param_spec *s, const char *key, const char *v)
{
	char *nv = check_value(s, key, v);
	if (!nv)
		return -1;
	int i = find_slot(p, key);
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
	p->key[p->n] = is_family(s) ? strdup(key) : NULL;
	if (is_family(s) && !p->key[p->n]) {
		free(nv);
		return esg_set_error("out of memory");
	}
	p->val[p->n++] = nv;
	return 0;
}

static int add_param(esg_params *p, const esg_param_spec *s, const char *v)
{
	return add_param_key(p, s, s->key, v);
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
		if (add_param_key(out, s, key, val))
			goto fail;
	}
	/* defaults, in declaration order */
	const esg_param_spec *lists[2] = { m->params, out->base ? out->base->params : NULL };
	for (int l = 0; l < 2; l++)
		for (const esg_param_spec *s = lists[l]; s && s->key; s++)
			if (!is_family(s) && find_slot(out, s->key) < 0 && add_param(out, s, s->def))
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
		cJSON_AddItemToObject(o, esg_params_key(p, i), v);
	}
	char *txt = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!txt)
		esg_set_error("out of memory");
	return txt;
}
