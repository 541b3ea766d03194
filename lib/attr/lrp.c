/* lrp.c - layer-wise relevance propagation's rule tables, shared by the
 * gradient family's lrp and the layer family's layer_lrp: the parameters,
 * their checks (esg-attr and esg-config alike), and the table of rules per
 * layer type handed to the shim (esg_model_set_lrp, lib/shim/rules_lrp.cpp).
 *
 * A table starts from a composite (Zennit's names; "captum" is Captum's
 * LRP default, epsilon everywhere), then a rule file, then --param
 * rule.TYPE=RULE overrides: a group key (Convolution, AvgPool, MaxPool)
 * first, then an exact type, then First (the first conv / linear op).
 */
#include "attr/family.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Layer types, what each may take, and the groups that name several. */
enum cls { C_WEIGHTED, C_BN, C_LINEARISH, C_MAXPOOL };

static const struct ltype {
	const char *name;
	enum cls cls;
	const char *group;     /* NULL or the group key that covers it */
} TYPES[] = {
	{ "Conv1d", C_WEIGHTED, "Convolution" }, { "Conv2d", C_WEIGHTED, "Convolution" },
	{ "Conv3d", C_WEIGHTED, "Convolution" }, { "ConvTranspose1d", C_WEIGHTED, "Convolution" },
	{ "ConvTranspose2d", C_WEIGHTED, "Convolution" }, { "ConvTranspose3d", C_WEIGHTED, "Convolution" },
	{ "Linear", C_WEIGHTED, NULL }, { "BatchNorm", C_BN, NULL },
	{ "AvgPool1d", C_LINEARISH, "AvgPool" }, { "AvgPool2d", C_LINEARISH, "AvgPool" },
	{ "AvgPool3d", C_LINEARISH, "AvgPool" }, { "AdaptiveAvgPool1d", C_LINEARISH, "AvgPool" },
	{ "AdaptiveAvgPool2d", C_LINEARISH, "AvgPool" }, { "AdaptiveAvgPool3d", C_LINEARISH, "AvgPool" },
	{ "MaxPool1d", C_MAXPOOL, "MaxPool" }, { "MaxPool2d", C_MAXPOOL, "MaxPool" },
	{ "MaxPool3d", C_MAXPOOL, "MaxPool" }, { "AdaptiveMaxPool1d", C_MAXPOOL, "MaxPool" },
	{ "AdaptiveMaxPool2d", C_MAXPOOL, "MaxPool" }, { "AdaptiveMaxPool3d", C_MAXPOOL, "MaxPool" },
	{ "Upsample", C_LINEARISH, NULL }, { "Add", C_LINEARISH, NULL }, { "Sum", C_LINEARISH, NULL },
	{ "Mul", C_LINEARISH, NULL },
};
#define N_TYPES (sizeof TYPES / sizeof *TYPES)
/* index N_TYPES: First */
#define FIRST N_TYPES

static const char *const GROUPS[] = { "Convolution", "AvgPool", "MaxPool" };

static const char *const TYPE_LIST =
	"Conv1d..Conv3d, ConvTranspose1d..3d, Linear, BatchNorm, AvgPool1d..3d, AdaptiveAvgPool1d..3d, "
	"MaxPool1d..3d, AdaptiveMaxPool1d..3d, Upsample, Add, Sum, Mul, or the groups Convolution, "
	"AvgPool, MaxPool, First";

/* A key's class: a type index, or -1 - group index for a group, FIRST. */
static int type_index(const char *name, int *group)
{
	*group = -1;
	for (size_t i = 0; i < N_TYPES; i++)
		if (!strcmp(TYPES[i].name, name))
			return (int)i;
	for (size_t g = 0; g < sizeof GROUPS / sizeof *GROUPS; g++)
		if (!strcmp(GROUPS[g], name)) {
			*group = (int)g;
			return -1;
		}
	if (!strcmp(name, "First"))
		return FIRST;
	return -2;
}

static enum cls group_cls(int g) { return g == 0 ? C_WEIGHTED : g == 1 ? C_LINEARISH : C_MAXPOOL; }

/* A rule in the shim's form: "epsilon:1e-09", "alpha_beta:2:1", "zbox:auto:auto". */
typedef struct rule {
	char s[96];
} rule;

static int parse_num(const char *s, double lo, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo)
		return -1;
	*out = v;
	return 0;
}

/* A bound of z-box: a number or "auto" (the item's min / max). */
static int parse_bound(const char *s, char *out, size_t n)
{
	double v;
	if (!strcmp(s, "auto")) {
		snprintf(out, n, "auto");
		return 0;
	}
	if (parse_num(s, -INFINITY, &v))
		return -1;
	snprintf(out, n, "%.17g", v);
	return 0;
}

/* Parse "RULE[:P[:P]]" for a layer class into the shim's form; defaults
 * from the method's parameters (eps, gamma, low, high). */
static int parse_rule(const char *key, const char *v, enum cls cls, double eps, double gamma,
		      const char *low, const char *high, rule *out)
{
	char buf[128], *parts[4] = { 0 };
	int np = 0;
	if (strlen(v) >= sizeof buf)
		return esg_set_error("parameter %s: rule '%s' is too long", key, v);
	snprintf(buf, sizeof buf, "%s", v);
	for (char *save = NULL, *t = strtok_r(buf, ":", &save); t && np < 4; t = strtok_r(NULL, ":", &save))
		parts[np++] = t;
	if (!np)
		return esg_set_error("parameter %s: empty rule", key);
	const char *r = parts[0];
	double a, b;
	int weighted_only = 1, nargs_max = 0;
	if (!strcmp(r, "epsilon")) {
		weighted_only = 0;
		nargs_max = 1;
		if (np > 1 && parse_num(parts[1], 0, &eps))
			return esg_set_error("parameter %s: epsilon '%s' is not a number >= 0", key, parts[1]);
		snprintf(out->s, sizeof out->s, "epsilon:%.17g", eps);
	} else if (!strcmp(r, "gamma")) {
		nargs_max = 1;
		if (np > 1 && parse_num(parts[1], 0, &gamma))
			return esg_set_error("parameter %s: gamma '%s' is not a number >= 0", key, parts[1]);
		snprintf(out->s, sizeof out->s, "gamma:%.17g", gamma);
	} else if (!strcmp(r, "alpha1_beta0") || !strcmp(r, "alpha2_beta1") || !strcmp(r, "alpha_beta")) {
		if (!strcmp(r, "alpha_beta")) {
			nargs_max = 2;
			if (np != 3 || parse_num(parts[1], 0, &a) || parse_num(parts[2], 0, &b))
				return esg_set_error("parameter %s: alpha_beta takes alpha_beta:ALPHA:BETA "
						     "(numbers >= 0)", key);
			if (fabs(a - b - 1) > 1e-12)
				return esg_set_error("parameter %s: alpha - beta must be 1 (got %g - %g)", key, a, b);
		} else {
			a = r[5] == '1' ? 1 : 2;
			b = a - 1;
		}
		snprintf(out->s, sizeof out->s, "alpha_beta:%.17g:%.17g", a, b);
	} else if (!strcmp(r, "zplus") || !strcmp(r, "flat") || !strcmp(r, "wsquare")) {
		snprintf(out->s, sizeof out->s, "%s", r);
	} else if (!strcmp(r, "zbox")) {
		char lo[40], hi[40];
		nargs_max = 2;
		if (np == 2)
			return esg_set_error("parameter %s: zbox takes zbox or zbox:LOW:HIGH", key);
		if (parse_bound(np > 1 ? parts[1] : low, lo, sizeof lo) ||
		    parse_bound(np > 2 ? parts[2] : high, hi, sizeof hi))
			return esg_set_error("parameter %s: z-box bounds must be numbers or auto", key);
		if (strcmp(lo, "auto") && strcmp(hi, "auto") && strtod(lo, NULL) > strtod(hi, NULL))
			return esg_set_error("parameter %s: z-box low %s is above high %s", key, lo, hi);
		snprintf(out->s, sizeof out->s, "zbox:%s:%s", lo, hi);
	} else if (!strcmp(r, "pass")) {
		if (cls != C_BN)
			return esg_set_error("parameter %s: rule pass applies to BatchNorm only", key);
		weighted_only = 0;
		snprintf(out->s, sizeof out->s, "pass");
	} else if (!strcmp(r, "gradient") || !strcmp(r, "wta")) {
		if (cls == C_WEIGHTED)
			return esg_set_error("parameter %s: rule %s does not apply to conv / linear layers", key, r);
		if (!strcmp(r, "wta") && cls != C_MAXPOOL)
			return esg_set_error("parameter %s: rule wta (winner takes all) applies to max pools only", key);
		weighted_only = 0;
		snprintf(out->s, sizeof out->s, "gradient");
	} else {
		return esg_set_error("parameter %s: unknown rule '%s' (epsilon[:EPS], gamma[:G], alpha1_beta0, "
				     "alpha2_beta1, alpha_beta:A:B, zplus, flat, wsquare, zbox[:LOW:HIGH], pass, "
				     "gradient, wta)", key, r);
	}
	if (np - 1 > nargs_max)
		return esg_set_error("parameter %s: rule %s takes %d value(s), got %d", key, r, nargs_max, np - 1);
	if (weighted_only && cls != C_WEIGHTED)
		return esg_set_error("parameter %s: rule %s applies to conv / linear layers only "
				     "(here: epsilon%s)", key, r,
				     cls == C_BN ? ", pass or gradient" : cls == C_MAXPOOL ? " or wta" : " or gradient");
	return 0;
}

/* Check one "rule.TYPE" = RULE with the default numbers. */
static int check_one(const char *key, const char *type, const char *v)
{
	int g, i = type_index(type, &g);
	if (i == -2)
		return esg_set_error("parameter %s: unknown layer type '%s' (%s)", key, type, TYPE_LIST);
	enum cls c = i == -1 ? group_cls(g) : i == (int)FIRST ? C_WEIGHTED : TYPES[i].cls;
	rule r;
	return parse_rule(key, v, c, 1e-9, 0.25, "auto", "auto", &r);
}

/* A rule file: one "TYPE = RULE" a line; '#' starts a comment. Calls fn
 * for each entry (the key "FILE:LINE" for messages). */
static int read_rule_file(const char *path,
			  int (*fn)(void *ctx, const char *where, const char *type, const char *v), void *ctx)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return esg_set_error("rule_file '%s': %s", path, strerror(errno));
	char line[512], where[600];
	int lineno = 0, rc = 0;
	while (!rc && fgets(line, sizeof line, f)) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char *p = line, *e;
		while (isspace((unsigned char)*p))
			p++;
		e = p + strlen(p);
		while (e > p && isspace((unsigned char)e[-1]))
			*--e = 0;
		if (!*p)
			continue;
		snprintf(where, sizeof where, "%s:%d", path, lineno);
		char *eq = strchr(p, '=');
		if (!eq) {
			rc = esg_set_error("%s: '%s' is not TYPE = RULE", where, p);
			break;
		}
		char *t = p, *te = eq, *v = eq + 1;
		while (te > t && isspace((unsigned char)te[-1]))
			te--;
		*te = 0;
		while (isspace((unsigned char)*v))
			v++;
		rc = fn(ctx, where, t, v);
	}
	if (!rc && ferror(f))
		rc = esg_set_error("rule_file '%s': read error", path);
	fclose(f);
	return rc;
}

static int file_check_entry(void *ctx, const char *where, const char *type, const char *v)
{
	(void)ctx;
	return check_one(where, type, v);
}

/* The check of ESG_P_LRP parameters: rule.*, rule_file, low, high. */
int esg_lrp_check_param(const char *key, const char *value)
{
	if (!strcmp(key, "rule_file"))
		return value[0] ? read_rule_file(value, file_check_entry, NULL) : 0;
	if (!strcmp(key, "low") || !strcmp(key, "high")) {
		char b[40];
		return parse_bound(value, b, sizeof b)
			       ? esg_set_error("parameter %s: '%s' is not a number or auto", key, value) : 0;
	}
	return check_one(key, key + 5, value);   /* "rule." */
}

const esg_param_spec esg_lrp_params[] = {
	{ "composite", ESG_P_CHOICE, "captum",
	  "captum|epsilon_plus|epsilon_plus_flat|epsilon_gamma_box|epsilon_alpha2_beta1", 0, 0,
	  "rules per layer type: captum (epsilon everywhere, Captum's LRP) or Zennit's composites" },
	{ "epsilon", ESG_P_FLOAT, "1e-9", NULL, 0, 1e30, "epsilon of the epsilon rule (Captum: 1e-9)" },
	{ "gamma", ESG_P_FLOAT, "0.25", NULL, 0, 1e30, "gamma of the gamma rule" },
	{ "low", ESG_P_LRP, "auto", NULL, 0, 0,
	  "z-box lowest input value (a number; auto: each item's minimum)" },
	{ "high", ESG_P_LRP, "auto", NULL, 0, 0,
	  "z-box highest input value (a number; auto: each item's maximum)" },
	{ "canonize", ESG_P_CHOICE, "auto", "auto|none|merge_bn", 0, 0,
	  "merge eval batch norm into the conv / linear op before it (auto: for Zennit's composites)" },
	{ "rule_file", ESG_P_LRP, "", NULL, 0, 0, "a file of TYPE = RULE lines (overrides the composite)" },
	{ "rule.*", ESG_P_LRP, "", NULL, 0, 0,
	  "rule.TYPE=RULE: the rule of one layer type (after rule_file), e.g. rule.Conv3d=gamma:0.25" },
	ESG_PARAM_END
};

/* ---- building the table ---------------------------------------------------- */

typedef struct table {
	rule r[N_TYPES + 1];      /* + First */
	int has_first;
	double eps, gamma;
	const char *low, *high;
} table;

static int set_key(table *t, const char *where, const char *type, const char *v, int pass)
{
	int g, i = type_index(type, &g);
	if (i == -2)
		return esg_set_error("%s: unknown layer type '%s' (%s)", where, type, TYPE_LIST);
	/* pass 0: groups, 1: exact types, 2: First */
	if ((pass == 0) != (i == -1) || (pass == 2) != (i == (int)FIRST))
		return 0;
	if (i == (int)FIRST) {
		t->has_first = 1;
		return parse_rule(where, v, C_WEIGHTED, t->eps, t->gamma, t->low, t->high, &t->r[FIRST]);
	}
	if (i >= 0)
		return parse_rule(where, v, TYPES[i].cls, t->eps, t->gamma, t->low, t->high, &t->r[i]);
	for (size_t k = 0; k < N_TYPES; k++)
		if (TYPES[k].group && !strcmp(TYPES[k].group, GROUPS[g]) &&
		    parse_rule(where, v, TYPES[k].cls, t->eps, t->gamma, t->low, t->high, &t->r[k]))
			return -1;
	return 0;
}

typedef struct file_ctx {
	table *t;
	int pass;
} file_ctx;

static int file_set_entry(void *ctx, const char *where, const char *type, const char *v)
{
	file_ctx *c = ctx;
	return set_key(c->t, where, type, v, c->pass);
}

static void set_default(table *t, size_t i, const char *s)
{
	snprintf(t->r[i].s, sizeof t->r[i].s, "%s", s);
}

char *esg_lrp_table(const esg_params *p)
{
	table t;
	memset(&t, 0, sizeof t);
	t.eps = esg_params_double(p, "epsilon");
	t.gamma = esg_params_double(p, "gamma");
	t.low = esg_params_str(p, "low");
	t.high = esg_params_str(p, "high");
	const char *comp = esg_params_str(p, "composite"), *canon = esg_params_str(p, "canonize");
	int captum = !strcmp(comp, "captum");
	char eps[64], conv[96];
	snprintf(eps, sizeof eps, "epsilon:%.17g", t.eps);
	/* Zennit's Norm rule (pools, sums) stabilises with 1e-6 */
	const char *norm = captum ? eps : "epsilon:1e-06";
	if (!strcmp(comp, "epsilon_plus") || !strcmp(comp, "epsilon_plus_flat"))
		snprintf(conv, sizeof conv, "zplus");
	else if (!strcmp(comp, "epsilon_alpha2_beta1"))
		snprintf(conv, sizeof conv, "alpha_beta:2:1");
	else if (!strcmp(comp, "epsilon_gamma_box"))
		snprintf(conv, sizeof conv, "gamma:%.17g", t.gamma);
	else
		snprintf(conv, sizeof conv, "%s", eps);
	for (size_t i = 0; i < N_TYPES; i++) {
		switch (TYPES[i].cls) {
		case C_WEIGHTED: set_default(&t, i, strcmp(TYPES[i].name, "Linear") ? conv : eps); break;
		case C_BN: set_default(&t, i, eps); break;
		case C_LINEARISH: set_default(&t, i, norm); break;
		case C_MAXPOOL: set_default(&t, i, captum ? eps : "gradient"); break;
		}
	}
	if (!strcmp(comp, "epsilon_plus_flat")) {
		t.has_first = 1;
		set_default(&t, FIRST, "flat");
	} else if (!strcmp(comp, "epsilon_gamma_box")) {
		t.has_first = 1;
		if (parse_rule("composite", "zbox", C_WEIGHTED, t.eps, t.gamma, t.low, t.high, &t.r[FIRST]))
			return NULL;
	}
	const char *file = esg_params_str(p, "rule_file");
	for (int pass = 0; pass < 3; pass++) {
		if (file && file[0]) {
			file_ctx c = { &t, pass };
			if (read_rule_file(file, file_set_entry, &c))
				return NULL;
		}
		for (int i = 0; i < p->n; i++) {
			const char *k = esg_params_key(p, i);
			if (!strncmp(k, "rule.", 5) && set_key(&t, k, k + 5, p->val[i], pass))
				return NULL;
		}
	}
	int merge = !strcmp(canon, "merge_bn") || (!strcmp(canon, "auto") && !captum);
	size_t n = 64;
	for (size_t i = 0; i <= N_TYPES; i++)
		n += strlen(t.r[i].s) + 32;
	char *s = malloc(n);
	if (!s) {
		esg_set_error("out of memory");
		return NULL;
	}
	size_t len = 0;
	for (size_t i = 0; i < N_TYPES; i++)
		len += (size_t)snprintf(s + len, n - len, "%s=%s;", TYPES[i].name, t.r[i].s);
	if (t.has_first)
		len += (size_t)snprintf(s + len, n - len, "First=%s;", t.r[FIRST].s);
	snprintf(s + len, n - len, "canonize=%s", merge ? "merge_bn" : "none");
	return s;
}
