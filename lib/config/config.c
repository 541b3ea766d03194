/* config.c - JSON run configs and their Make fragments (see config.h and
 * doc/config.md for the schema). */
#include "config/config.h"
#include "attr/attr.h"
#include "explain/explain.h"
#include "stream/stream.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a growing string ------------------------------------------------ */

typedef struct {
	char *s;
	size_t n, cap;
	int oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...)
{
	if (b->oom)
		return;
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (b->n + (size_t)k + 1 > b->cap) {
		size_t cap = (b->n + (size_t)k + 1) * 2;
		char *s = realloc(b->s, cap);
		if (!s) {
			b->oom = 1;
			esg_set_error("out of memory");
			return;
		}
		b->s = s;
		b->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
	va_end(ap);
	b->n += (size_t)k;
}

/* The text, owned by the caller ("" if nothing was added); NULL if out of memory. */
static char *sb_take(sbuf *b)
{
	if (b->oom) {
		free(b->s);
		esg_set_error("out of memory");
		return NULL;
	}
	if (!b->s)
		return strdup("");
	return b->s;
}

/* ---- the parsed config ------------------------------------------------ */

typedef struct {
	char *name, *image, *mask;
} cfg_input;

typedef struct {
	char *name;
	char *file;        /* the TorchScript file; NULL for the randomised model */
	char *wrap_args;   /* esg-wrap arguments; NULL: used as is */
	char *wrap_mask;   /* a file the wrapping reads */
	int per_input;     /* fixed-mask from the prediction: wrapped per input */
	int randomised;    /* the last randomisation step, shown as a model */
} cfg_model;

typedef struct {
	char *label, *method;
	char *args;        /* esg-attr arguments that change the result */
	char *deps;        /* files they read (baselines) */
	double timeout;
	int fidelity, randomise;
} cfg_method;

typedef struct {
	char *file;        /* under $(OUT)/explain/INPUT/MODEL/, without .st.zst */
	char *args;        /* esg-explain arguments that change the result */
	double timeout;
} cfg_explain;

struct esg_config {
	char *path, *output;
	cfg_input *in;
	int n_in;
	cfg_model *model;
	int n_model;
	cfg_method *meth;
	int n_meth;
	char *load_args;
	/* randomisation */
	int rand_model;        /* index into model, -1 = none */
	char *rand_args;
	int rand_steps;
	char *rand_metrics;
	unsigned char *rand_input;
	/* metrics */
	char *gt_metrics, *fid_metrics, *metric_args;
	unsigned char *fid_model;
	/* explain */
	cfg_explain *ex;
	int n_ex;
	unsigned char *ex_input, *ex_model;
	/* jobs */
	long threads, ibatch; /* ibatch 0: auto */
	char *memory;          /* jobs.memory: each libtorch job's ESG_MEMORY (NULL: the tools' default) */
	char **device;
	int n_device;
	double timeout;
	int slurm;             /* jobs.scheduler: "slurm" */
	char *slurm_vars;      /* jobs.slurm as Make variables for run.mk and run-job */
	/* report */
	int report;
	char *report_args;
};

/* ---- checking helpers -------------------------------------------------- */

static _Thread_local const char *cfg_path; /* for messages */

static int bad(const char *field, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *field, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return esg_set_error("%s: %s: %s", cfg_path, field, msg);
}

/* Field path "parent.key" or "parent[i]". */
static void field_key(char *out, size_t n, const char *parent, const char *key)
{
	if (parent[0])
		snprintf(out, n, "%s.%s", parent, key);
	else
		snprintf(out, n, "%s", key);
}

/* "a, b, c" from a NULL-terminated list, truncated to fit. */
static void join_names(const char *const *names, char *out, size_t n)
{
	out[0] = 0;
	for (size_t i = 0; names[i]; i++) {
		strncat(out, i ? ", " : "", n - strlen(out) - 1);
		strncat(out, names[i], n - strlen(out) - 1);
	}
}

static int check_keys(const cJSON *obj, const char *field, const char *const *known)
{
	if (!cJSON_IsObject(obj))
		return bad(field, "must be an object");
	for (const cJSON *it = obj->child; it; it = it->next) {
		int ok = 0;
		for (size_t i = 0; known[i] && !ok; i++)
			ok = !strcmp(it->string, known[i]);
		if (!ok) {
			char list[512];
			join_names(known, list, sizeof list);
			char f[256];
			field_key(f, sizeof f, field, it->string);
			return bad(f, "unknown field (known here: %s)", list);
		}
	}
	return 0;
}

/* Text that passes through Make and the shell unquoted: no whitespace and
 * none of the characters either would interpret. */
static int safe_arg(const char *field, const char *s)
{
	if (!s[0])
		return bad(field, "must not be empty");
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || strchr("$'\"`\\;&|<>()#*?[]{}~!^", *p))
			return bad(field, "'%s': the character '%c' can't be passed through Make and the shell "
				   "safely", s, *p == '\t' || *p == '\n' ? ' ' : *p);
	return 0;
}

/* A path used as a Make target or prerequisite: also no ':', '%' or '='. */
static int safe_path(const char *field, const char *s)
{
	if (safe_arg(field, s))
		return -1;
	for (const char *p = s; *p; p++)
		if (strchr(":%=", *p))
			return bad(field, "'%s': the character '%c' is not allowed in a path Make handles", s, *p);
	return 0;
}

/* Names become folder and file names: letters, digits, '.', '_', '-'. */
static int safe_name(const char *field, const char *s)
{
	if (!s[0])
		return bad(field, "must not be empty");
	if (s[0] == '.' || s[0] == '-')
		return bad(field, "'%s' must start with a letter, digit or '_'", s);
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      strchr("._-", *p)))
			return bad(field, "'%s': names may hold letters, digits, '.', '_' and '-' only", s);
	return 0;
}

static int file_exists(const char *field, const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return bad(field, "'%s': %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return bad(field, "'%s' is not a regular file", path);
	return 0;
}

/* Fetch an optional string (NULL if absent). */
static int get_str(const cJSON *o, const char *key, const char *parent, int required, const char **out)
{
	char f[256];
	field_key(f, sizeof f, parent, key);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	*out = NULL;
	if (!v) {
		if (required)
			return bad(f, "missing (required)");
		return 0;
	}
	if (!cJSON_IsString(v))
		return bad(f, "must be a string");
	*out = v->valuestring;
	return 0;
}

static int get_num(const cJSON *o, const char *key, const char *parent, double lo, double hi, int integer,
		   double *out)
{
	char f[256];
	field_key(f, sizeof f, parent, key);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return 0; /* keep the default */
	if (!cJSON_IsNumber(v))
		return bad(f, "must be a number");
	double d = v->valuedouble;
	if (!isfinite(d) || d < lo || d > hi)
		return bad(f, "%g is out of range [%g, %g]", d, lo, hi);
	if (integer && d != floor(d))
		return bad(f, "%g must be a whole number", d);
	*out = d;
	return 0;
}

static int get_bool(const cJSON *o, const char *key, const char *parent, int *out)
{
	char f[256];
	field_key(f, sizeof f, parent, key);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return 0;
	if (!cJSON_IsBool(v))
		return bad(f, "must be true or false");
	*out = cJSON_IsTrue(v);
	return 0;
}

static int one_of(const char *field, const char *v, const char *const *known)
{
	for (size_t i = 0; known[i]; i++)
		if (!strcmp(v, known[i]))
			return 0;
	char list[256];
	join_names(known, list, sizeof list);
	return bad(field, "unknown value '%s' (known: %s)", v, list);
}

/* An optional enumerated string appended to args as "--opt VALUE". */
static int enum_opt(const cJSON *o, const char *key, const char *parent, const char *const *known,
		    const char *opt, sbuf *args)
{
	const char *v;
	char f[256];
	field_key(f, sizeof f, parent, key);
	if (get_str(o, key, parent, 0, &v))
		return -1;
	if (!v)
		return 0;
	if (one_of(f, v, known))
		return -1;
	sb_add(args, " %s %s", opt, v);
	return 0;
}

/* A number printed the shortest way that reads back the same. */
static void num_text(char *out, size_t n, double d)
{
	if (d == floor(d) && fabs(d) < 1e15) {
		snprintf(out, n, "%.0f", d);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(out, n, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			return;
	}
}

/* A JSON scalar as a command-line value (numbers, strings, booleans). */
static int scalar_text(const cJSON *v, const char *field, char *out, size_t n)
{
	if (cJSON_IsNumber(v))
		num_text(out, n, v->valuedouble);
	else if (cJSON_IsBool(v))
		snprintf(out, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
	else if (cJSON_IsString(v)) {
		if (safe_arg(field, v->valuestring))
			return -1;
		snprintf(out, n, "%s", v->valuestring);
	} else if (cJSON_IsArray(v)) {
		/* a list of numbers: "1,8,8,8" (window shapes, strides, patches) */
		size_t k = 0;
		out[0] = 0;
		for (const cJSON *e = v->child; e; e = e->next) {
			if (!cJSON_IsNumber(e))
				return bad(field, "a list here must hold numbers only");
			char t[32];
			num_text(t, sizeof t, e->valuedouble);
			k += (size_t)snprintf(out + k, n > k ? n - k : 0, "%s%s", k ? "," : "", t);
		}
		if (!k)
			return bad(field, "must not be an empty list");
	} else
		return bad(field, "must be a number, string, boolean or list of numbers");
	return 0;
}

/* An array of names (strings); *out = new array of borrowed strings. */
static int name_list(const cJSON *o, const char *key, const char *parent, const char ***out, int *n)
{
	char f[256];
	field_key(f, sizeof f, parent, key);
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
	*out = NULL;
	*n = -1; /* absent */
	if (!a)
		return 0;
	if (!cJSON_IsArray(a))
		return bad(f, "must be a list of strings");
	int k = cJSON_GetArraySize(a);
	*out = calloc((size_t)k + 1, sizeof **out);
	if (!*out)
		return esg_set_error("out of memory");
	int i = 0;
	for (const cJSON *e = a->child; e; e = e->next, i++) {
		char fi[300];
		snprintf(fi, sizeof fi, "%s[%d]", f, i);
		if (!cJSON_IsString(e)) {
			free(*out);
			*out = NULL;
			return bad(fi, "must be a string");
		}
		if (safe_arg(fi, e->valuestring)) {
			free(*out);
			*out = NULL;
			return -1;
		}
		(*out)[i] = e->valuestring;
	}
	*n = k;
	return 0;
}

/* A comma-joined list of metric names, each one of `known`. */
/* The section's "inputs": sel[i] = 1 for each input named there (every
 * input when the field is absent); *n (may be NULL) = the names' count, -1
 * when absent. */
static int select_inputs(const esg_config *c, const cJSON *o, const char *section, unsigned char *sel, int *n)
{
	const char **v;
	int nv;
	if (name_list(o, "inputs", section, &v, &nv))
		return -1;
	for (int i = 0; i < c->n_in; i++)
		sel[i] = nv < 0;
	for (int k = 0; k < nv; k++) {
		int found = 0;
		for (int i = 0; i < c->n_in; i++)
			if (!strcmp(c->in[i].name, v[k]))
				sel[i] = found = 1;
		if (!found) {
			char fi[64];
			snprintf(fi, sizeof fi, "%s.inputs[%d]", section, k);
			int rc = bad(fi, "no input is named '%s'", v[k]);
			free(v);
			return rc;
		}
	}
	free(v);
	if (n)
		*n = nv;
	return 0;
}

static int metric_list(const cJSON *o, const char *key, const char *parent, const char *const *known,
		       const char *dflt, char **out)
{
	const char **v;
	int n;
	char f[256];
	field_key(f, sizeof f, parent, key);
	if (name_list(o, key, parent, &v, &n))
		return -1;
	sbuf b = { 0 };
	if (n < 0) {
		if (dflt)
			sb_add(&b, "%s", dflt);
	} else {
		if (!n) {
			free(v);
			return bad(f, "must not be empty (leave the field out instead)");
		}
		for (int i = 0; i < n; i++) {
			char fi[300];
			snprintf(fi, sizeof fi, "%s[%d]", f, i);
			if (one_of(fi, v[i], known)) {
				free(v);
				free(b.s);
				return -1;
			}
			sb_add(&b, "%s%s", i ? "," : "", v[i]);
		}
	}
	free(v);
	*out = sb_take(&b);
	return *out ? 0 : -1;
}

/* ---- sections ------------------------------------------------------------ */

static const char *const SIMILARITY[] = { "spearman", "spearman_abs", "ssim", "ssim_abs", "topk_iou", NULL };
static const char *const GROUND_TRUTH[] = { "mass_in_mask", "pointing_game", "auroc", NULL };
static const char *const FIDELITY[] = { "infidelity", "max_sensitivity", "deletion", "insertion", NULL };

/* The fields each object of a config may hold (K_*) and the values of its
 * enumerated fields (E_*): the parsers below check against them and
 * esg_config_schema() hands them to the builder page. */
static const char *const K_INPUT[] = { "image", "mask", "name", NULL };
static const char *const K_LOAD[] = { "normalise", "nonzero", "multiple", "fit", "align", "percentiles", "channels", "axes", NULL };
static const char *const E_NORMALISE[] = { "none", "minmax", "zscore", "percentile", NULL };
static const char *const E_FIT[] = { "pad", "crop", NULL };
static const char *const E_ALIGN[] = { "centre", "end", NULL };
static const char *const E_CHANNELS[] = { "keep", "gray", "rgb", "no-alpha", NULL };
static const char *const E_AXES[] = { "ijk", "kji", NULL };
static const char *const K_MODEL[] = { "name", "file", "wrap", NULL };
static const char *const K_WRAP[] = { "reduce", "activation", "mask", "patch", "overlap", "blend", NULL };
static const char *const E_REDUCE[] = { "argmax", "otsu", "fixed-mask", NULL };
static const char *const E_ACTIVATION[] = { "none", "softmax", "sigmoid", NULL };
static const char *const E_BLEND[] = { "mean", "gaussian", NULL };
static const char *const K_METHOD[] = { "name", "method", "params", "baselines", "layer", "channel", "upsample", "target", "timeout", "internal_batch", "seed", "patch", "overlap", "blend", "amp", NULL };
static const char *const E_METHOD_BLEND[] = { "mean", "gaussian", NULL };
static const char *const K_RANDOM[] = { "model", "mode", "layers", "seed", "init", "methods", "metrics", "inputs", "as_model", NULL };
static const char *const E_MODE[] = { "cascading", "independent", NULL };
static const char *const E_INIT[] = { "default", "gaussian", "uniform", NULL };
static const char *const K_METRICS[] = { "ground_truth", "fidelity", "methods", "models", "params", NULL };
static const char *const K_EXPLAIN[] = { "layers", "channels", "methods", "steps", "seed", "inputs", "models",
					  "timeout", NULL };
static const char *const K_EXPLAIN_LAYER[] = { "name", "call", "channels", NULL };
static const char *const K_EXPLAIN_METHOD[] = { "name", "method", "params", "layers", "channels", "unit", "target",
						 "steps", "seed", "timeout", NULL };
static const char *const K_JOBS[] = { "threads", "devices", "timeout", "internal_batch", "memory",
				       "scheduler", "slurm", NULL };
static const char *const K_REPORT[] = { "view", "zoom", NULL };
static const char *const E_VIEW[] = { "axial", "coronal", "sagittal", NULL };
static const char *const K_TOP[] = { "title", "output", "inputs", "load", "models", "target", "methods", "randomisation", "metrics", "explain", "jobs", "report", NULL };

/* Basename without the image extensions. */
static char *stem(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	char *s = strdup(b);
	if (!s)
		return NULL;
	static const char *const ext[] = { ".nii.gz", ".nii", ".hdr", ".img", ".png", ".npy", NULL };
	size_t n = strlen(s);
	for (size_t i = 0; ext[i]; i++) {
		size_t e = strlen(ext[i]);
		if (n > e && !strcmp(s + n - e, ext[i])) {
			s[n - e] = 0;
			break;
		}
	}
	return s;
}

/* Replace "{*}" in tmpl by star (NULL star: tmpl must not hold "{*}"). */
static char *fill_star(const char *tmpl, const char *star, const char *field)
{
	sbuf b = { 0 };
	for (const char *p = tmpl; *p;) {
		if (!strncmp(p, "{*}", 3)) {
			if (!star) {
				free(b.s);
				bad(field, "'{*}' needs an image pattern with exactly one '*' (and no '?' or '[')");
				return NULL;
			}
			sb_add(&b, "%s", star);
			p += 3;
		} else
			sb_add(&b, "%c", *p++);
	}
	return sb_take(&b);
}

static int add_input(esg_config *c, const char *image, const char *star, const char *name_t, const char *mask_t,
		     const char *field)
{
	cfg_input *in = realloc(c->in, ((size_t)c->n_in + 1) * sizeof *in);
	if (!in)
		return esg_set_error("out of memory");
	c->in = in;
	cfg_input *x = &c->in[c->n_in];
	memset(x, 0, sizeof *x);
	c->n_in++;
	char f[300];
	x->image = strdup(image);
	snprintf(f, sizeof f, "%s.name", field);
	x->name = name_t ? fill_star(name_t, star, f) : stem(image);
	if (!x->image || !x->name)
		return esg_set_error("out of memory");
	if (safe_path(field, x->image) || safe_name(f, x->name))
		return -1;
	if (mask_t) {
		snprintf(f, sizeof f, "%s.mask", field);
		x->mask = fill_star(mask_t, star, f);
		if (!x->mask || safe_path(f, x->mask) || file_exists(f, x->mask))
			return -1;
	}
	for (int i = 0; i < c->n_in - 1; i++)
		if (!strcmp(c->in[i].name, x->name))
			return bad(field, "input name '%s' is used twice (give inputs distinct \"name\"s)", x->name);
	return 0;
}

static int parse_inputs(esg_config *c, const cJSON *a)
{
	if (!cJSON_IsArray(a) || !cJSON_GetArraySize(a))
		return bad("inputs", "must be a non-empty list");
	const char *const *const keys = K_INPUT;
	int i = 0;
	for (const cJSON *e = a->child; e; e = e->next, i++) {
		char f[64];
		snprintf(f, sizeof f, "inputs[%d]", i);
		const char *image, *mask, *name;
		if (check_keys(e, f, keys) || get_str(e, "image", f, 1, &image) || get_str(e, "mask", f, 0, &mask) ||
		    get_str(e, "name", f, 0, &name))
			return -1;
		char fi[80];
		snprintf(fi, sizeof fi, "%s.image", f);
		if (!strpbrk(image, "*?[")) {
			if (file_exists(fi, image) || add_input(c, image, NULL, name, mask, fi))
				return -1;
			continue;
		}
		glob_t g;
		int rc = glob(image, 0, NULL, &g);
		if (rc == GLOB_NOMATCH)
			return bad(fi, "no file matches '%s'", image);
		if (rc)
			return bad(fi, "cannot expand '%s'", image);
		const char *star = strchr(image, '*');
		int one_star = star && !strchr(star + 1, '*') && !strpbrk(image, "?[");
		size_t pre = star ? (size_t)(star - image) : 0, post = star ? strlen(star + 1) : 0;
		for (size_t k = 0; k < g.gl_pathc; k++) {
			const char *p = g.gl_pathv[k];
			char starbuf[512] = "";
			if (one_star)
				snprintf(starbuf, sizeof starbuf, "%.*s", (int)(strlen(p) - pre - post), p + pre);
			if (add_input(c, p, one_star ? starbuf : NULL, name, mask, fi)) {
				globfree(&g);
				return -1;
			}
		}
		globfree(&g);
	}
	return 0;
}

static int parse_load(esg_config *c, const cJSON *o)
{
	sbuf b = { 0 };
	if (o) {
		const char *const *const keys = K_LOAD;
		const char *const *const norm = E_NORMALISE;
		const char *const *const fit = E_FIT;
		const char *const *const align = E_ALIGN;
		const char *const *const chan = E_CHANNELS;
		const char *const *const axes = E_AXES;
		int nonzero = 0;
		if (check_keys(o, "load", keys) || enum_opt(o, "normalise", "load", norm, "--normalise", &b) ||
		    enum_opt(o, "fit", "load", fit, "--fit", &b) || enum_opt(o, "align", "load", align, "--align", &b) ||
		    enum_opt(o, "channels", "load", chan, "--channels", &b) ||
		    enum_opt(o, "axes", "load", axes, "--axes", &b) || get_bool(o, "nonzero", "load", &nonzero)) {
			free(b.s);
			return -1;
		}
		if (nonzero)
			sb_add(&b, " --nonzero");
		static const char *const listed[] = { "multiple", "percentiles", NULL };
		for (size_t i = 0; listed[i]; i++) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, listed[i]);
			char f[64], t[256];
			snprintf(f, sizeof f, "load.%s", listed[i]);
			if (!v)
				continue;
			if (!cJSON_IsNumber(v) && !cJSON_IsArray(v)) {
				free(b.s);
				return bad(f, "must be a number or a list of numbers");
			}
			if (scalar_text(v, f, t, sizeof t)) {
				free(b.s);
				return -1;
			}
			sb_add(&b, " --%s %s", listed[i], t);
		}
	}
	c->load_args = sb_take(&b);
	return c->load_args ? 0 : -1;
}

static int model_index(const esg_config *c, const char *name)
{
	for (int i = 0; i < c->n_model; i++)
		if (!strcmp(c->model[i].name, name))
			return i;
	return -1;
}

/* The section's "models": sel[i] = 1 for each model named there; when the
 * field is absent, every model, or every model but the randomised copy
 * (with_randomised 0).  hint follows the "no model is named" message. *n
 * (may be NULL) as select_inputs. */
static int select_models(const esg_config *c, const cJSON *o, const char *section, unsigned char *sel,
			 int with_randomised, const char *hint, int *n)
{
	const char **v;
	int nv;
	if (name_list(o, "models", section, &v, &nv))
		return -1;
	for (int i = 0; i < c->n_model; i++)
		sel[i] = nv < 0 && (with_randomised || !c->model[i].randomised);
	for (int k = 0; k < nv; k++) {
		int i = model_index(c, v[k]);
		if (i < 0) {
			char fi[64];
			snprintf(fi, sizeof fi, "%s.models[%d]", section, k);
			int rc = bad(fi, "no model is named '%s'%s", v[k], hint);
			free(v);
			return rc;
		}
		sel[i] = 1;
	}
	free(v);
	if (n)
		*n = nv;
	return 0;
}

static int parse_models(esg_config *c, const cJSON *a)
{
	if (!cJSON_IsArray(a) || !cJSON_GetArraySize(a))
		return bad("models", "must be a non-empty list");
	int n = cJSON_GetArraySize(a);
	c->model = calloc((size_t)n + 1, sizeof *c->model); /* +1: the randomised model */
	if (!c->model)
		return esg_set_error("out of memory");
	const char *const *const keys = K_MODEL;
	const char *const *const wkeys = K_WRAP;
	const char *const *const reduce = E_REDUCE;
	const char *const *const act = E_ACTIVATION;
	const char *const *const blend = E_BLEND;
	int i = 0;
	for (const cJSON *e = a->child; e; e = e->next, i++) {
		char f[64], fw[80];
		snprintf(f, sizeof f, "models[%d]", i);
		snprintf(fw, sizeof fw, "%s.wrap", f);
		const char *name, *file;
		if (check_keys(e, f, keys) || get_str(e, "name", f, 1, &name) || get_str(e, "file", f, 1, &file))
			return -1;
		char fn[80], ff[80];
		snprintf(fn, sizeof fn, "%s.name", f);
		snprintf(ff, sizeof ff, "%s.file", f);
		if (safe_name(fn, name) || safe_path(ff, file) || file_exists(ff, file))
			return -1;
		if (model_index(c, name) >= 0)
			return bad(fn, "model name '%s' is used twice", name);
		cfg_model *m = &c->model[c->n_model];
		m->name = strdup(name);
		m->file = strdup(file);
		c->n_model++;
		if (!m->name || !m->file)
			return esg_set_error("out of memory");
		const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "wrap");
		if (!w)
			continue;
		const char *red, *mask;
		sbuf b = { 0 };
		if (check_keys(w, fw, wkeys) || get_str(w, "reduce", fw, 1, &red) || get_str(w, "mask", fw, 0, &mask)) {
			free(b.s);
			return -1;
		}
		char fr[96];
		snprintf(fr, sizeof fr, "%s.reduce", fw);
		if (one_of(fr, red, reduce))
			return -1;
		sb_add(&b, "--reduce %s", red);
		if (enum_opt(w, "activation", fw, act, "--activation", &b) || enum_opt(w, "blend", fw, blend, "--blend", &b)) {
			free(b.s);
			return -1;
		}
		static const char *const listed[] = { "patch", "overlap", NULL };
		for (size_t k = 0; listed[k]; k++) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(w, listed[k]);
			char fk[128], t[256];
			snprintf(fk, sizeof fk, "%s.%s", fw, listed[k]);
			if (v && ((!cJSON_IsNumber(v) && !cJSON_IsArray(v)) || scalar_text(v, fk, t, sizeof t))) {
				free(b.s);
				return cJSON_IsNumber(v) || cJSON_IsArray(v) ? -1 : bad(fk, "must be a number or a list");
			}
			if (v)
				sb_add(&b, " --%s %s", listed[k], t);
		}
		if (mask) {
			char fm[96];
			snprintf(fm, sizeof fm, "%s.mask", fw);
			if (strcmp(red, "fixed-mask")) {
				free(b.s);
				return bad(fm, "a mask is used only by \"reduce\": \"fixed-mask\"");
			}
			if (safe_path(fm, mask) || file_exists(fm, mask)) {
				free(b.s);
				return -1;
			}
			sb_add(&b, " --mask %s", mask);
			m->wrap_mask = strdup(mask);
		}
		m->per_input = !strcmp(red, "fixed-mask") && !mask;
		m->wrap_args = sb_take(&b);
		if (!m->wrap_args)
			return -1;
	}
	return 0;
}

static int parse_methods(esg_config *c, const cJSON *a, double top_target)
{
	if (!cJSON_IsArray(a) || !cJSON_GetArraySize(a))
		return bad("methods", "must be a non-empty list");
	c->meth = calloc((size_t)cJSON_GetArraySize(a), sizeof *c->meth);
	if (!c->meth)
		return esg_set_error("out of memory");
	const char *const *const keys = K_METHOD;
	const char *const *const blend = E_METHOD_BLEND;
	int i = 0;
	for (const cJSON *e = a->child; e; e = e->next, i++) {
		char f[64], fk[128];
		snprintf(f, sizeof f, "methods[%d]", i);
		const char *label, *name, *layer, *channel;
		if (check_keys(e, f, keys) || get_str(e, "name", f, 1, &label) || get_str(e, "method", f, 0, &name) ||
		    get_str(e, "layer", f, 0, &layer) || get_str(e, "channel", f, 0, &channel))
			return -1;
		snprintf(fk, sizeof fk, "%s.name", f);
		if (safe_name(fk, label))
			return -1;
		for (int k = 0; k < c->n_meth; k++)
			if (!strcmp(c->meth[k].label, label))
				return bad(fk, "method name '%s' is used twice (give each its own \"name\")", label);
		if (!name)
			name = label;
		snprintf(fk, sizeof fk, "%s.%s", f, name == label ? "name" : "method");
		const esg_method_alias *alias;
		const esg_method *m = esg_method_find(name, &alias);
		if (!m)
			return bad(fk, "%s", esg_error());
		cfg_method *x = &c->meth[c->n_meth++];
		sbuf b = { 0 }, deps = { 0 };
		sb_add(&b, "--method %s --label %s", name, label);
		/* parameters: checked against the method's table now */
		const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "params");
		char *kv[ESG_MAX_PARAMS];
		int n_kv = 0, rc = 0;
		if (p && !cJSON_IsObject(p))
			rc = bad(fk, "params must be an object");
		for (const cJSON *q = p ? p->child : NULL; q && !rc; q = q->next) {
			char fq[192], t[512];
			snprintf(fq, sizeof fq, "%s.params.%s", f, q->string);
			if (n_kv == ESG_MAX_PARAMS)
				rc = bad(fq, "too many parameters");
			else if (!(rc = scalar_text(q, fq, t, sizeof t)) && !(rc = safe_arg(fq, q->string))) {
				size_t len = strlen(q->string) + strlen(t) + 2;
				kv[n_kv] = malloc(len);
				if (!kv[n_kv])
					rc = esg_set_error("out of memory");
				else {
					snprintf(kv[n_kv], len, "%s=%s", q->string, t);
					sb_add(&b, " --param %s", kv[n_kv++]);
				}
			}
		}
		const esg_method *takes = m; /* whose baselines: noise tunnel's base method */
		if (!rc) {
			esg_params ep;
			char fp[96];
			snprintf(fp, sizeof fp, "%s.params", f);
			if (esg_params_resolve(m, alias, kv, n_kv, &ep))
				rc = bad(fp, "%s", esg_error());
			else {
				if (ep.base)
					takes = ep.base;
				esg_params_clear(&ep);
			}
		}
		for (int k = 0; k < n_kv; k++)
			free(kv[k]);
		/* baselines: parsed now; file baselines become prerequisites */
		const cJSON *bl = cJSON_GetObjectItemCaseSensitive(e, "baselines");
		if (!rc && bl && !cJSON_IsArray(bl))
			rc = bad(f, "baselines must be a list of strings");
		int bi = 0;
		for (const cJSON *q = bl ? bl->child : NULL; q && !rc; q = q->next, bi++) {
			char fq[128];
			snprintf(fq, sizeof fq, "%s.baselines[%d]", f, bi);
			esg_baseline base;
			if (!cJSON_IsString(q))
				rc = bad(fq, "must be a string");
			else if (!(rc = safe_arg(fq, q->valuestring))) {
				if (esg_baseline_parse(q->valuestring, &base))
					rc = bad(fq, "%s", esg_error());
				else {
					if (base.kind == ESG_BL_FILE) {
						/* file:PATH[:TENSOR] */
						char path[512];
						snprintf(path, sizeof path, "%s", q->valuestring + 5);
						char *colon = strchr(path, ':');
						if (colon)
							*colon = 0;
						if (!(rc = safe_path(fq, path)) && !(rc = file_exists(fq, path)))
							sb_add(&deps, " %s", path);
					}
					esg_baseline_clear(&base);
					sb_add(&b, " --baseline %s", q->valuestring);
				}
			}
		}
		if (!rc && !takes->baseline && bl && cJSON_GetArraySize(bl))
			rc = bad(f, "method '%s' takes no baseline", name);
		/* layer */
		int lk = esg_method_layer(m);
		if (!rc && layer) {
			snprintf(fk, sizeof fk, "%s.layer", f);
			if (lk == ESG_LAYER_NONE)
				rc = bad(fk, "method '%s' takes no layer", name);
			else if (!(rc = safe_arg(fk, layer)))
				sb_add(&b, " --layer %s", layer);
		} else if (!rc && lk != ESG_LAYER_NONE && !esg_method_layer_optional(m))
			rc = bad(f, "method '%s' needs a \"layer\" (see esg-attr --list-layers)", name);
		if (!rc && channel) {
			snprintf(fk, sizeof fk, "%s.channel", f);
			if (!(rc = safe_arg(fk, channel)))
				sb_add(&b, " --channel %s", channel);
		}
		int ups = -1, amp = 0;
		if (!rc)
			rc = get_bool(e, "upsample", f, &ups) || get_bool(e, "amp", f, &amp);
		if (!rc && ups >= 0)
			sb_add(&b, " %s", ups ? "--upsample" : "--no-upsample");
		if (!rc && amp)
			sb_add(&b, " --amp");
		double target = top_target, seed = -1, ibatch = (double)c->ibatch, overlap = -1;
		x->timeout = c->timeout;
		if (!rc)
			rc = get_num(e, "target", f, 0, 1e9, 1, &target) || get_num(e, "seed", f, 0, 1e18, 1, &seed) ||
			     get_num(e, "internal_batch", f, 1, 1 << 20, 1, &ibatch) ||
			     get_num(e, "timeout", f, 0, 1e9, 0, &x->timeout) || get_num(e, "overlap", f, 0, 0.99, 0, &overlap);
		if (!rc && target >= 0)
			sb_add(&b, " --target %.0f", target);
		if (!rc && seed >= 0)
			sb_add(&b, " --seed %.0f", seed);
		if (!rc && ibatch > 0) /* else the tools' default: auto */
			sb_add(&b, " --internal-batch %.0f", ibatch);
		const cJSON *patch = cJSON_GetObjectItemCaseSensitive(e, "patch");
		if (!rc && patch) {
			char t[128];
			snprintf(fk, sizeof fk, "%s.patch", f);
			if (!cJSON_IsArray(patch))
				rc = bad(fk, "must be a list of patch sizes, e.g. [64, 64, 64]");
			else if (!(rc = scalar_text(patch, fk, t, sizeof t)))
				sb_add(&b, " --patch %s", t);
		}
		if (!rc && overlap >= 0) {
			char t[32];
			num_text(t, sizeof t, overlap);
			sb_add(&b, " --overlap %s", t);
		}
		if (!rc)
			rc = enum_opt(e, "blend", f, blend, "--blend", &b);
		x->label = strdup(label);
		x->method = strdup(name);
		x->args = sb_take(&b);
		x->deps = sb_take(&deps);
		if (rc)
			return -1;
		if (!x->label || !x->method || !x->args || !x->deps)
			return esg_set_error("out of memory");
		x->fidelity = x->randomise = 1;
	}
	return 0;
}

static int method_index(const esg_config *c, const char *label)
{
	for (int i = 0; i < c->n_meth; i++)
		if (!strcmp(c->meth[i].label, label))
			return i;
	return -1;
}

/* A list of method names (or absent: all) selecting flags in cfg_method. */
static int select_methods(esg_config *c, const cJSON *o, const char *key, const char *parent, int fid)
{
	const char **v;
	int n;
	char f[128];
	field_key(f, sizeof f, parent, key);
	if (name_list(o, key, parent, &v, &n))
		return -1;
	if (n < 0)
		return 0;
	for (int i = 0; i < c->n_meth; i++)
		*(fid ? &c->meth[i].fidelity : &c->meth[i].randomise) = 0;
	for (int k = 0; k < n; k++) {
		int i = method_index(c, v[k]);
		if (i < 0) {
			char fi[160];
			snprintf(fi, sizeof fi, "%s[%d]", f, k);
			int rc = bad(fi, "no method is named '%s' in \"methods\"", v[k]);
			free(v);
			return rc;
		}
		*(fid ? &c->meth[i].fidelity : &c->meth[i].randomise) = 1;
	}
	free(v);
	return 0;
}

static int parse_randomisation(esg_config *c, const cJSON *o)
{
	const char *F = "randomisation";
	const char *const *const keys = K_RANDOM;
	const char *const *const mode = E_MODE;
	const char *const *const init = E_INIT;
	const char *model, *as;
	if (check_keys(o, F, keys) || get_str(o, "model", F, 0, &model) || get_str(o, "as_model", F, 0, &as))
		return -1;
	c->rand_model = model ? model_index(c, model) : 0;
	if (c->rand_model < 0)
		return bad("randomisation.model", "no model is named '%s' in \"models\"", model);
	sbuf b = { 0 };
	const char *md;
	if (get_str(o, "mode", F, 0, &md))
		return -1;
	if (md && one_of("randomisation.mode", md, mode))
		return -1;
	sb_add(&b, "--mode %s", md ? md : "cascading");
	const char **layers;
	int nl;
	if (name_list(o, "layers", F, &layers, &nl))
		return -1;
	if (nl <= 0) {
		free(layers);
		free(b.s);
		return bad("randomisation.layers", "%s", nl < 0 ? "missing (required: the layers to randomise, "
					"e.g. [\"model.dec1\", \"model.enc1\"]; see esg-randomise)" : "must not be empty");
	}
	sb_add(&b, " --layers ");
	for (int i = 0; i < nl; i++)
		sb_add(&b, "%s%s", i ? "," : "", layers[i]);
	free(layers);
	c->rand_steps = nl;
	double seed = 0;
	if (get_num(o, "seed", F, 0, 1e18, 1, &seed) || enum_opt(o, "init", F, init, "--init", &b)) {
		free(b.s);
		return -1;
	}
	sb_add(&b, " --seed %.0f", seed);
	c->rand_args = sb_take(&b);
	if (!c->rand_args || select_methods(c, o, "methods", F, 0) ||
	    metric_list(o, "metrics", F, SIMILARITY, "spearman_abs,ssim_abs,topk_iou", &c->rand_metrics))
		return -1;
	c->rand_input = calloc((size_t)c->n_in, 1);
	if (!c->rand_input)
		return esg_set_error("out of memory");
	if (select_inputs(c, o, F, c->rand_input, NULL))
		return -1;
	if (as) {
		if (safe_name("randomisation.as_model", as))
			return -1;
		if (model_index(c, as) >= 0)
			return bad("randomisation.as_model", "'%s' is already the name of a model", as);
		cfg_model *m = &c->model[c->n_model++];
		m->name = strdup(as);
		m->randomised = 1;
		m->per_input = 1;
		if (!m->name)
			return esg_set_error("out of memory");
	}
	return 0;
}

static int parse_metrics(esg_config *c, const cJSON *o)
{
	const char *F = "metrics";
	const char *const *const keys = K_METRICS;
	if (check_keys(o, F, keys) || metric_list(o, "ground_truth", F, GROUND_TRUTH, NULL, &c->gt_metrics) ||
	    metric_list(o, "fidelity", F, FIDELITY, NULL, &c->fid_metrics) || select_methods(c, o, "methods", F, 1))
		return -1;
	if (c->gt_metrics[0])
		for (int i = 0; i < c->n_in; i++)
			if (!c->in[i].mask)
				return bad("metrics.ground_truth", "input '%s' has no \"mask\" to score against",
					   c->in[i].name);
	c->fid_model = calloc((size_t)c->n_model + 1, 1);
	if (!c->fid_model)
		return esg_set_error("out of memory");
	if (select_models(c, o, F, c->fid_model, 0, "", NULL))
		return -1;
	sbuf b = { 0 };
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "params");
	if (p && !cJSON_IsObject(p))
		return bad("metrics.params", "must be an object");
	for (const cJSON *q = p ? p->child : NULL; q; q = q->next) {
		char fq[160], t[512];
		snprintf(fq, sizeof fq, "metrics.params.%s", q->string);
		if (scalar_text(q, fq, t, sizeof t) || safe_arg(fq, q->string)) {
			free(b.s);
			return -1;
		}
		sb_add(&b, " --param %s=%s", q->string, t);
	}
	c->metric_args = sb_take(&b);
	return c->metric_args ? 0 : -1;
}

/* ---- explain: esg-explain jobs (doc/config.md, doc/explain.md) ------------ */

/* The methods of esg-explain and what each takes: lib/explain's table. */

/* A list of whole numbers >= 0 (channels, a unit); *n = -1 when absent. */
static int index_list(const cJSON *o, const char *key, const char *parent, long **out, int *n)
{
	char f[256];
	field_key(f, sizeof f, parent, key);
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
	*out = NULL;
	*n = -1;
	if (!a)
		return 0;
	if (!cJSON_IsArray(a))
		return bad(f, "must be a list of whole numbers");
	int k = cJSON_GetArraySize(a), i = 0;
	*out = calloc((size_t)k + 1, sizeof **out);
	if (!*out)
		return esg_set_error("out of memory");
	for (const cJSON *e = a->child; e; e = e->next, i++) {
		double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
		if (!cJSON_IsNumber(e) || d < 0 || d > 1e9 || d != floor(d)) {
			free(*out);
			*out = NULL;
			char fi[300];
			snprintf(fi, sizeof fi, "%s[%d]", f, i);
			return cJSON_IsNumber(e) ? bad(fi, "%g is not an index (a whole number >= 0)", d)
						 : bad(fi, "must be a whole number");
		}
		(*out)[i] = (long)d;
	}
	*n = k;
	return 0;
}

/* One esg-explain job, for every input and model it applies to. */
static int ex_add(esg_config *c, const char *file, const char *base, const char *layer, const char *extra,
		  double timeout)
{
	cfg_explain *e = realloc(c->ex, ((size_t)c->n_ex + 1) * sizeof *c->ex);
	if (!e)
		return esg_set_error("out of memory");
	c->ex = e;
	e = &c->ex[c->n_ex];
	e->file = strdup(file);
	e->args = malloc(strlen(base) + strlen(layer) + strlen(extra) + 1);
	e->timeout = timeout;
	c->n_ex++;
	if (!e->file || !e->args)
		return esg_set_error("out of memory");
	sprintf(e->args, "%s%s%s", base, layer, extra);
	return 0;
}

/* explain.layers[i]: "NAME" or {"name": NAME, "call": K, "channels": [...]}. */
typedef struct {
	const char *name;
	long call;      /* -1: none given */
	long *ch;       /* NULL: the section's channels */
	int n_ch;
	char dir[300];  /* the file-name part: NAME, NAME-callK */
} ex_layer;

static int parse_explain(esg_config *c, const cJSON *o, double top_target)
{
	const char *F = "explain";
	const char *const *const keys = K_EXPLAIN;
	const char *const *const lkeys = K_EXPLAIN_LAYER;
	const char *const *const mkeys = K_EXPLAIN_METHOD;
	if (check_keys(o, F, keys))
		return -1;
	double steps = 0, seed = 0, timeout = c->timeout;
	if (get_num(o, "steps", F, 1, 1e7, 1, &steps) || get_num(o, "seed", F, 0, 1e18, 1, &seed) ||
	    get_num(o, "timeout", F, 0, 1e9, 0, &timeout))
		return -1;
	/* which inputs and models (default: all, the randomised model too) */
	c->ex_input = calloc((size_t)c->n_in + 1, 1);
	c->ex_model = calloc((size_t)c->n_model + 1, 1);
	if (!c->ex_input || !c->ex_model)
		return esg_set_error("out of memory");
	int n;
	if (select_inputs(c, o, F, c->ex_input, &n))
		return -1;
	if (n == 0)
		return bad("explain.inputs", "must not be empty (leave the field out instead)");
	if (select_models(c, o, F, c->ex_model, 1, " in \"models\" (or randomisation.as_model)", &n))
		return -1;
	if (n == 0)
		return bad("explain.models", "must not be empty (leave the field out instead)");
	/* the section's channels: default for every layer and method that takes one */
	long *chan;
	int n_chan;
	if (index_list(o, "channels", F, &chan, &n_chan))
		return -1;
	/* layers */
	const cJSON *la = cJSON_GetObjectItemCaseSensitive(o, "layers");
	int n_layer = la ? cJSON_GetArraySize(la) : 0;
	ex_layer *L = calloc((size_t)n_layer + 1, sizeof *L);
	int rc = L ? 0 : esg_set_error("out of memory");
	if (!rc && la && !cJSON_IsArray(la))
		rc = bad("explain.layers", "must be a list of layer names or {\"name\", \"call\", \"channels\"} objects");
	int li = 0;
	for (const cJSON *e = la ? la->child : NULL; e && !rc; e = e->next, li++) {
		char fl[64], fk[96];
		snprintf(fl, sizeof fl, "explain.layers[%d]", li);
		ex_layer *x = &L[li];
		x->call = -1;
		x->n_ch = -1;
		if (cJSON_IsString(e))
			x->name = e->valuestring;
		else if (cJSON_IsObject(e)) {
			double call = -1;
			if ((rc = check_keys(e, fl, lkeys)) || (rc = get_str(e, "name", fl, 1, &x->name)) ||
			    (rc = get_num(e, "call", fl, 0, 1e6, 1, &call)) ||
			    (rc = index_list(e, "channels", fl, &x->ch, &x->n_ch)))
				break;
			x->call = (long)call;
		} else {
			rc = bad(fl, "must be a layer name or an object {\"name\", \"call\", \"channels\"}");
			break;
		}
		snprintf(fk, sizeof fk, "%s%s", fl, cJSON_IsObject(e) ? ".name" : "");
		if ((rc = safe_arg(fk, x->name)))
			break;
		for (const char *p = x->name; *p && !rc; p++)
			if (strchr(":%=/", *p))
				rc = bad(fk, "'%s': the character '%c' is not allowed in a layer name here "
					 "(give a call index as \"call\")", x->name, *p);
		if (x->call >= 0)
			snprintf(x->dir, sizeof x->dir, "%s-call%ld", x->name, x->call);
		else
			snprintf(x->dir, sizeof x->dir, "%s", x->name);
		for (int k = 0; k < li && !rc; k++)
			if (!strcmp(L[k].dir, x->dir))
				rc = bad(fl, "layer '%s'%s is listed twice", x->name, x->call >= 0 ? " with this call" : "");
	}
	/* methods: one job per input x model x method x layer x channel */
	const cJSON *ma = cJSON_GetObjectItemCaseSensitive(o, "methods");
	if (!rc && (!ma || !cJSON_IsArray(ma) || !cJSON_GetArraySize(ma)))
		rc = bad("explain.methods", ma ? "must be a non-empty list" :
			 "missing (required: e.g. [{\"name\": \"deepdream\"}]; methods: deepdream, feature_vis, class_model, invert)");
	int mi = 0;
	char **labels = NULL;
	if (!rc && !(labels = calloc((size_t)cJSON_GetArraySize(ma) + 1, sizeof *labels)))
		rc = esg_set_error("out of memory");
	for (const cJSON *e = !rc ? ma->child : NULL; e && !rc; e = e->next, mi++) {
		char f[64], fk[128];
		snprintf(f, sizeof f, "explain.methods[%d]", mi);
		const char *label, *name;
		if ((rc = check_keys(e, f, mkeys)) || (rc = get_str(e, "name", f, 1, &label)) ||
		    (rc = get_str(e, "method", f, 0, &name)))
			break;
		snprintf(fk, sizeof fk, "%s.name", f);
		if ((rc = safe_name(fk, label)))
			break;
		for (int k = 0; k < mi && !rc; k++)
			if (!strcmp(labels[k], label))
				rc = bad(fk, "method name '%s' is used twice (give each its own \"name\")", label);
		if (rc)
			break;
		labels[mi] = (char *)label;
		if (!name)
			name = label;
		snprintf(fk, sizeof fk, "%s.%s", f, name == label ? "name" : "method");
		const esg_explain_method *em = esg_explain_find(name);
		if (!em) {
			rc = bad(fk, "%s", esg_error());
			break;
		}
		sbuf b = { 0 };
		sb_add(&b, "--method %s --label %s", name, label);
		/* parameters: checked against the method's table now */
		const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "params");
		char fp[96];
		snprintf(fp, sizeof fp, "%s.params", f);
		if (p && !cJSON_IsObject(p))
			rc = bad(fp, "must be an object");
		char *kv[ESG_MAX_PARAMS];
		int n_kv = 0;
		for (const cJSON *q = p ? p->child : NULL; q && !rc; q = q->next) {
			char fq[192], t[512];
			snprintf(fq, sizeof fq, "%s.params.%s", f, q->string);
			if (n_kv == ESG_MAX_PARAMS)
				rc = bad(fq, "too many parameters");
			else if (!(rc = scalar_text(q, fq, t, sizeof t)) && !(rc = safe_arg(fq, q->string))) {
				size_t len = strlen(q->string) + strlen(t) + 2;
				if (!(kv[n_kv] = malloc(len)))
					rc = esg_set_error("out of memory");
				else {
					snprintf(kv[n_kv], len, "%s=%s", q->string, t);
					sb_add(&b, " --param %s", kv[n_kv++]);
				}
			}
		}
		esg_params ep;
		int have_ep = 0;
		if (!rc) {
			if (esg_params_resolve(&em->m, NULL, kv, n_kv, &ep))
				rc = bad(fp, "%s", esg_error());
			else
				have_ep = 1;
		}
		for (int k = 0; k < n_kv; k++)
			free(kv[k]);
		double msteps = steps, mseed = seed, target = top_target, mtimeout = timeout;
		if (!rc)
			rc = get_num(e, "steps", f, 1, 1e7, 1, &msteps) || get_num(e, "seed", f, 0, 1e18, 1, &mseed) ||
			     get_num(e, "target", f, 0, 1e9, 1, &target) || get_num(e, "timeout", f, 0, 1e9, 0, &mtimeout);
		const int takes_layer = em->layer != ESG_EX_NO, takes_ch = em->channel != ESG_EX_NO;
		/* the target: a class model's class (a wrapped model's class score) */
		if (!rc && cJSON_GetObjectItemCaseSensitive(e, "target") && em->target == ESG_EX_NO)
			rc = bad(f, "method '%s' takes no \"target\"", name);
		if (!rc && em->target == ESG_EX_REQUIRED && target < 0)
			rc = bad(f, "method '%s' needs a \"target\" (here or at the top level)", name);
		if (!rc && em->target != ESG_EX_NO && target >= 0)
			sb_add(&b, " --target %.0f", target);
		if (!rc && msteps > 0)
			sb_add(&b, " --steps %.0f", msteps);
		if (!rc)
			sb_add(&b, " --seed %.0f", mseed);
		/* a unit (feature_vis, deepdream): instead of channels */
		long *unit = NULL, *mch = NULL;
		int n_unit = -1, n_mch = -1;
		if (!rc)
			rc = index_list(e, "unit", f, &unit, &n_unit) || index_list(e, "channels", f, &mch, &n_mch);
		if (!rc && n_mch >= 0 && !takes_ch)
			rc = bad(f, "method '%s' takes no \"channels\"", name);
		if (!rc && n_unit >= 0 && em->unit == ESG_EX_NO)
			rc = bad(f, "method '%s' takes no \"unit\"", name);
		if (!rc && n_unit == 0)
			rc = bad(f, "\"unit\" must not be empty");
		/* which layers */
		const char **ml = NULL;
		int n_ml = -1;
		if (!rc)
			rc = name_list(e, "layers", f, &ml, &n_ml);
		if (!rc && !takes_layer && n_ml >= 0)
			rc = bad(f, "method '%s' takes no layer (it maximises a class score)", name);
		if (!rc && takes_layer && (n_ml == 0 || (n_ml < 0 && !n_layer)))
			rc = bad(f, "method '%s' needs a layer: list some in explain.layers%s", name,
				 n_ml == 0 ? " (an empty \"layers\" selects none)" : "");
		for (int k = 0; k < n_ml && !rc; k++) {
			int found = 0;
			for (int j = 0; j < n_layer; j++)
				found |= !strcmp(L[j].name, ml[k]);
			if (!found) {
				char fi[160];
				snprintf(fi, sizeof fi, "%s.layers[%d]", f, k);
				rc = bad(fi, "no layer '%s' in explain.layers", ml[k]);
			}
		}
		char *base = sb_take(&b);
		if (!base)
			rc = -1;
		/* the jobs of this method, multiplied out over inputs and models
		 * when the fragment is written */
		for (int j = 0; j < (takes_layer ? n_layer : 1) && !rc; j++) {
			const ex_layer *x = takes_layer ? &L[j] : NULL;
			if (x && n_ml >= 0) {
				int want = 0;
				for (int k = 0; k < n_ml; k++)
					want |= !strcmp(ml[k], x->name);
				if (!want)
					continue;
			}
			char lay[400] = "";
			if (x && x->call >= 0)
				snprintf(lay, sizeof lay, " --layer %s:%ld", x->name, x->call);
			else if (x)
				snprintf(lay, sizeof lay, " --layer %s", x->name);
			const long *ch = n_mch >= 0 ? mch : x && x->n_ch >= 0 ? x->ch : chan;
			int nc = n_mch >= 0 ? n_mch : x && x->n_ch >= 0 ? x->n_ch : n_chan;
			if (!takes_ch || nc < 0)
				nc = 0;
			/* what esg-explain would refuse before loading the model */
			esg_explain_request rq = { .layer = x ? x->name : NULL, .layer_call = x && x->call > 0 ? (int)x->call : 0,
						   .channel = nc ? (int)ch[0] : -1, .n_unit = n_unit > 0 ? n_unit : 0,
						   .target = em->target != ESG_EX_NO ? (int64_t)target : -1 };
			if (esg_explain_check(em, &ep, &rq)) {
				rc = n_unit > 0 && !nc ? bad(f, "\"unit\" needs channels (the unit is a position of each channel)")
						      : bad(f, "%s", esg_error());
				break;
			}
			for (int k = 0; k < (nc ? nc : 1) && !rc; k++) {
				char file[800] = "", extra[300] = "";
				if (nc) {
					snprintf(file, sizeof file, "%s/%s-c%ld", label, x->dir, ch[k]);
					snprintf(extra, sizeof extra, " --channel %ld", ch[k]);
				}
				if (n_unit > 0) {
					snprintf(file + strlen(file), sizeof file - strlen(file), "-unit");
					snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " --unit ");
					for (int u = 0; u < n_unit; u++) {
						snprintf(file + strlen(file), sizeof file - strlen(file), "_%ld", unit[u]);
						snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "%s%ld",
							 u ? "," : "", unit[u]);
					}
				}
				if (!nc && x) /* the whole layer */
					snprintf(file, sizeof file, "%s/%s", label, x->dir);
				else if (!nc && target >= 0)
					snprintf(file, sizeof file, "%s/class-%.0f", label, target);
				else if (!nc)
					snprintf(file, sizeof file, "%s/class", label);
				rc = ex_add(c, file, base, lay, extra, mtimeout);
			}
		}
		free(base);
		if (have_ep)
			esg_params_clear(&ep);
		free(ml);
		free(unit);
		free(mch);
	}
	free(labels);
	for (int k = 0; k < n_layer; k++)
		free(L[k].ch);
	free(L);
	free(chan);
	return rc ? -1 : 0;
}

/* The kinds of job, as run-job's --kind: what jobs.slurm.local_kinds and
 * jobs.slurm.mem name (doc/cluster.md). */
static const char *const JOB_KINDS[] = { "load", "wrap", "randomise", "attr", "metric", "render",
					 "copy", "table", "report", "explain", NULL };

/* A Slurm memory size: digits and an optional K, M, G or T (srun --mem). */
static int slurm_mem(const char *field, const cJSON *v, char *out, size_t n)
{
	if (cJSON_IsNumber(v)) {
		if (v->valuedouble < 1 || v->valuedouble > 1e9 || v->valuedouble != floor(v->valuedouble))
			return bad(field, "%g is not a size in MB (a whole number >= 1)", v->valuedouble);
		snprintf(out, n, "%.0fM", v->valuedouble);
		return 0;
	}
	if (!cJSON_IsString(v))
		return bad(field, "must be a size (\"4G\", \"500M\") or a number of MB");
	const char *s = v->valuestring;
	size_t k = strspn(s, "0123456789");
	if (!k || strspn(s, "0") == k || (s[k] && (!strchr("KMGT", s[k]) || s[k + 1])))
		return bad(field, "'%s' is not a size (digits and K, M, G or T, e.g. \"4G\")", s);
	snprintf(out, n, "%s", s);
	return 0;
}

/* jobs.scheduler and jobs.slurm: how jobs run (not what they make, so none
 * of it is in the stamps). */
static int parse_scheduler(esg_config *c, const cJSON *o)
{
	static const char *const sched[] = { "local", "slurm", NULL };
	static const char *const keys[] = { "partition", "account", "args", "local_kinds", "mem", "time_margin", NULL };
	/* what each kind gets when the config says nothing (doc/cluster.md) */
	static const char *const mem_default[] = { "1G", "2G", "2G", "4G", "4G", "1G", "256M", "256M", "1G", "4G" };
	const char *s = NULL, *part = NULL, *acct = NULL;
	const cJSON *sl = o ? cJSON_GetObjectItemCaseSensitive(o, "slurm") : NULL;
	if (o && get_str(o, "scheduler", "jobs", 0, &s))
		return -1;
	if (s && one_of("jobs.scheduler", s, sched))
		return -1;
	c->slurm = s && !strcmp(s, "slurm");
	if (c->slurm && c->threads < 1)
		return bad("jobs.threads", "must be set (1 or more) with scheduler \"slurm\": it becomes --cpus-per-task");
	double margin = 60;
	if (sl && (check_keys(sl, "jobs.slurm", keys) || get_str(sl, "partition", "jobs.slurm", 0, &part) ||
		   get_str(sl, "account", "jobs.slurm", 0, &acct) ||
		   get_num(sl, "time_margin", "jobs.slurm", 0, 1e6, 0, &margin)))
		return -1;
	if ((part && safe_arg("jobs.slurm.partition", part)) || (acct && safe_arg("jobs.slurm.account", acct)))
		return -1;
	const char **args = NULL, **local = NULL;
	int na = -1, nl = -1, rc = 0;
	char mem[sizeof mem_default / sizeof *mem_default][32];
	for (size_t k = 0; k < sizeof mem_default / sizeof *mem_default; k++)
		snprintf(mem[k], sizeof mem[k], "%s", mem_default[k]);
	if (sl && (name_list(sl, "args", "jobs.slurm", &args, &na) ||
		   name_list(sl, "local_kinds", "jobs.slurm", &local, &nl)))
		rc = -1;
	for (int i = 0; !rc && i < nl; i++) {
		char f[64];
		snprintf(f, sizeof f, "jobs.slurm.local_kinds[%d]", i);
		rc = one_of(f, local[i], JOB_KINDS);
	}
	for (int i = 0; !rc && i < na; i++)
		if (args[i][0] != '-') {
			char f[64];
			snprintf(f, sizeof f, "jobs.slurm.args[%d]", i);
			rc = bad(f, "'%s' is not an option (srun/sbatch options start with '-', e.g. \"--qos=long\")", args[i]);
		}
	const cJSON *m = sl ? cJSON_GetObjectItemCaseSensitive(sl, "mem") : NULL;
	if (!rc && m && !cJSON_IsObject(m))
		rc = bad("jobs.slurm.mem", "must be an object (job kind: size)");
	for (const cJSON *e = m ? m->child : NULL; !rc && e; e = e->next) {
		char f[128];
		snprintf(f, sizeof f, "jobs.slurm.mem.%s", e->string);
		int k = 0;
		while (JOB_KINDS[k] && strcmp(JOB_KINDS[k], e->string))
			k++;
		if (!JOB_KINDS[k]) {
			char list[256];
			join_names(JOB_KINDS, list, sizeof list);
			rc = bad(f, "unknown job kind (known: %s)", list);
		} else
			rc = slurm_mem(f, e, mem[k], sizeof mem[k]);
	}
	if (!rc) {
		sbuf b = { 0 };
		char t[32];
		num_text(t, sizeof t, margin);
		sb_add(&b, "ESG_SCHEDULER := %s\nESG_SLURM_PARTITION := %s\nESG_SLURM_ACCOUNT := %s\n"
			   "ESG_SLURM_TIME_MARGIN := %s\nESG_SLURM_ARGS :=", c->slurm ? "slurm" : "local",
		       part ? part : "", acct ? acct : "", t);
		for (int i = 0; i < na; i++)
			sb_add(&b, " %s", args[i]);
		sb_add(&b, "\nESG_SLURM_LOCAL_KINDS :=");
		for (int i = 0; i < nl; i++)
			sb_add(&b, " %s", local[i]);
		sb_add(&b, "\nESG_SLURM_MEM :=");
		for (int k = 0; JOB_KINDS[k]; k++)
			sb_add(&b, " %s=%s", JOB_KINDS[k], mem[k]);
		sb_add(&b, "\n");
		c->slurm_vars = sb_take(&b);
		if (!c->slurm_vars)
			rc = -1;
	}
	free(args);
	free(local);
	return rc;
}

static int parse_jobs(esg_config *c, const cJSON *o)
{
	const char *F = "jobs";
	const char *const *const keys = K_JOBS;
	double threads = 0, ib = 0; /* 0: --internal-batch auto */
	c->timeout = 0;
	if (o && (check_keys(o, F, keys) || get_num(o, "threads", F, 0, 1024, 1, &threads) ||
		  get_num(o, "timeout", F, 0, 1e9, 0, &c->timeout) || get_num(o, "internal_batch", F, 1, 1 << 20, 1, &ib)))
		return -1;
	c->threads = (long)threads;
	c->ibatch = (long)ib;
	const char *mem = NULL;
	if (o && get_str(o, "memory", F, 0, &mem))
		return -1;
	if (mem) { /* checked here as the tools will check it, and a word for the fragment */
		uint64_t bytes;
		double share;
		if (esg_memory_parse(mem, &bytes, &share))
			return bad("jobs.memory", "%s", esg_error());
		if (!(c->memory = strdup(mem)))
			return esg_set_error("out of memory");
	}
	if (parse_scheduler(c, o))
		return -1;
	const char **dev;
	int nd;
	if (o && name_list(o, "devices", F, &dev, &nd))
		return -1;
	if (!o || nd < 0) {
		c->device = calloc(1, sizeof *c->device);
		if (!c->device || !(c->device[0] = strdup("cpu")))
			return esg_set_error("out of memory");
		c->n_device = 1;
		return 0;
	}
	if (!nd) {
		free(dev);
		return bad("jobs.devices", "must not be empty");
	}
	c->device = calloc((size_t)nd, sizeof *c->device);
	if (!c->device) {
		free(dev);
		return esg_set_error("out of memory");
	}
	for (int i = 0; i < nd; i++) {
		char fi[64];
		snprintf(fi, sizeof fi, "jobs.devices[%d]", i);
		const char *d = dev[i];
		char *end = NULL;
		int ok = !strcmp(d, "cpu") || (!strncmp(d, "cuda:", 5) && d[5] >= '0' && d[5] <= '9' &&
					       (strtol(d + 5, &end, 10), end && !*end));
		if (!ok) {
			free(dev);
			return bad(fi, "'%s' is not a device (cpu or cuda:N)", d);
		}
		c->device[c->n_device++] = strdup(d);
		if (!c->device[c->n_device - 1]) {
			free(dev);
			return esg_set_error("out of memory");
		}
	}
	free(dev);
	return 0;
}

static int parse_report(esg_config *c, const cJSON *o, const char *title)
{
	c->report = 1;
	sbuf b = { 0 };
	if (o && cJSON_IsFalse(o))
		c->report = 0;
	else if (o) {
		const char *const *const keys = K_REPORT;
		const char *const *const view = E_VIEW;
		double zoom = 0;
		if (check_keys(o, "report", keys) || enum_opt(o, "view", "report", view, "--view", &b) ||
		    get_num(o, "zoom", "report", 1, 16, 0, &zoom)) {
			free(b.s);
			return -1;
		}
		if (zoom > 0) {
			char t[32];
			num_text(t, sizeof t, zoom);
			sb_add(&b, " --zoom %s", t);
		}
	}
	if (title) {
		/* single-quoted for the shell; '$' and control characters would
		 * reach Make or break the line */
		sb_add(&b, " --title '");
		for (const char *p = title; *p; p++) {
			if (*p == '$' || *p == '\\' || (unsigned char)*p < ' ') {
				free(b.s);
				return bad("title", "the character '%c' is not allowed in a title",
					   (unsigned char)*p < ' ' ? ' ' : *p);
			}
			if (*p == '\'')
				sb_add(&b, "'\\''");
			else
				sb_add(&b, "%c", *p);
		}
		sb_add(&b, "'");
	}
	c->report_args = sb_take(&b);
	return c->report_args ? 0 : -1;
}

esg_config *esg_config_load(const char *path)
{
	cfg_path = path;
	FILE *f = fopen(path, "rb");
	if (!f) {
		esg_set_error("cannot open '%s': %s", path, strerror(errno));
		return NULL;
	}
	char *text = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n + 4096 > cap) {
			char *t = realloc(text, cap = (n + 4096) * 2);
			if (!t) {
				free(text);
				fclose(f);
				esg_set_error("out of memory");
				return NULL;
			}
			text = t;
		}
		size_t k = fread(text + n, 1, cap - n - 1, f);
		n += k;
		if (k == 0)
			break;
	}
	int err = ferror(f);
	fclose(f);
	if (err) {
		free(text);
		esg_set_error("cannot read '%s'", path);
		return NULL;
	}
	text[n] = 0;
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
	if (!j) {
		size_t at = end ? (size_t)(end - text) : 0, line = 1;
		for (size_t i = 0; i < at && i < n; i++)
			line += text[i] == '\n';
		esg_set_error("%s: not valid JSON (error at line %zu)", path, line);
		free(text);
		return NULL;
	}
	free(text);
	esg_config *c = calloc(1, sizeof *c);
	if (!c) {
		cJSON_Delete(j);
		esg_set_error("out of memory");
		return NULL;
	}
	c->rand_model = -1;
	c->path = strdup(path);
	const char *const *const keys = K_TOP;
	const char *output, *title;
	double target = -1;
	int rc = check_keys(j, "", keys) || get_str(j, "output", "", 1, &output) || get_str(j, "title", "", 0, &title) ||
		 get_num(j, "target", "", 0, 1e9, 1, &target);
	if (!rc && cJSON_GetObjectItemCaseSensitive(j, "randomisation") &&
	    !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "randomisation")))
		rc = bad("randomisation", "must be an object");
	if (!rc && !(rc = safe_path("output", output)))
		c->output = strdup(output);
	if (!rc)
		rc = parse_jobs(c, cJSON_GetObjectItemCaseSensitive(j, "jobs")) ||
		     parse_inputs(c, cJSON_GetObjectItemCaseSensitive(j, "inputs")) ||
		     parse_load(c, cJSON_GetObjectItemCaseSensitive(j, "load")) ||
		     parse_models(c, cJSON_GetObjectItemCaseSensitive(j, "models")) ||
		     parse_methods(c, cJSON_GetObjectItemCaseSensitive(j, "methods"), target);
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "randomisation");
	if (!rc && r)
		rc = parse_randomisation(c, r);
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "metrics");
	if (!rc && m)
		rc = parse_metrics(c, m);
	/* no metrics section: no esg-metric --param (the randomisation's
	 * similarity jobs still print these) */
	if (!rc && !c->metric_args && !(c->metric_args = strdup("")))
		rc = esg_set_error("out of memory");
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, "explain");
	if (!rc && x)
		rc = parse_explain(c, x, target);
	if (!rc)
		rc = parse_report(c, cJSON_GetObjectItemCaseSensitive(j, "report"), title);
	if (!rc && !c->output)
		rc = esg_set_error("out of memory");
	cJSON_Delete(j);
	if (rc) {
		esg_config_free(c);
		return NULL;
	}
	return c;
}

void esg_config_free(esg_config *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n_in; i++) {
		free(c->in[i].name);
		free(c->in[i].image);
		free(c->in[i].mask);
	}
	for (int i = 0; i < c->n_model; i++) {
		free(c->model[i].name);
		free(c->model[i].file);
		free(c->model[i].wrap_args);
		free(c->model[i].wrap_mask);
	}
	for (int i = 0; i < c->n_meth; i++) {
		free(c->meth[i].label);
		free(c->meth[i].method);
		free(c->meth[i].args);
		free(c->meth[i].deps);
	}
	for (int i = 0; i < c->n_ex; i++) {
		free(c->ex[i].file);
		free(c->ex[i].args);
	}
	free(c->ex);
	free(c->ex_input);
	free(c->ex_model);
	for (int i = 0; i < c->n_device; i++)
		free(c->device[i]);
	free(c->device);
	free(c->in);
	free(c->model);
	free(c->meth);
	free(c->path);
	free(c->output);
	free(c->load_args);
	free(c->rand_args);
	free(c->rand_metrics);
	free(c->rand_input);
	free(c->gt_metrics);
	free(c->fid_metrics);
	free(c->metric_args);
	free(c->fid_model);
	free(c->report_args);
	free(c->slurm_vars);
	free(c->memory);
	free(c);
}

const char *esg_config_output(const esg_config *c) { return c->output; }

/* ---- the Make fragment ------------------------------------------------------ */

typedef struct {
	const esg_config *c;
	FILE *out;
	const char *stamps;
	int next_device, jobs;
} gen;

static int mkdirs(const char *path)
{
	char p[4096];
	snprintf(p, sizeof p, "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, 0777) && errno != EEXIST)
				return esg_set_error("cannot create '%s': %s", p, strerror(errno));
			*s = '/';
		}
	if (mkdir(p, 0777) && errno != EEXIST)
		return esg_set_error("cannot create '%s': %s", p, strerror(errno));
	return 0;
}

/* Write `text` and a newline to path unless it already holds exactly that:
 * an unchanged stamp keeps its time, so Make leaves its job alone. */
static int write_stamp(const char *path, const char *text)
{
	size_t n = strlen(text);
	FILE *f = fopen(path, "rb");
	if (f) {
		char *old = malloc(n + 2);
		size_t k = old ? fread(old, 1, n + 2, f) : 0;
		fclose(f);
		int same = old && k == n + 1 && !memcmp(old, text, n) && old[n] == '\n';
		free(old);
		if (same)
			return 0;
	}
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = 0;
		if (mkdirs(dir))
			return -1;
	}
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
	f = fopen(tmp, "wb");
	if (!f)
		return esg_set_error("cannot write '%s': %s", tmp, strerror(errno));
	int bad_write = fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF;
	bad_write |= fclose(f) != 0;
	if (bad_write || rename(tmp, path)) {
		unlink(tmp);
		return esg_set_error("cannot write '%s': %s", path, strerror(errno));
	}
	return 0;
}

/* Run options of a job, as far as its tool has them: threads, its device
 * (round robin over the config's devices), the timeout. */
enum { RUN_THREADS = 1, RUN_DEVICE = 2 };

/* One job: "$(OUT)/target: prereqs stamp" and its recipe: run-job with the
 * job's kind and resources (what srun asks for on a cluster), then `cmd`
 * and the run options.  The stamp holds cmd (what decides the result), not
 * the run options, so changing how -- or where -- a job runs doesn't redo
 * it.  On a cluster a job's GPU is its cuda:0, so the device goes through
 * run.mk's esg_device. */
static int job(gen *g, const char *kind, const char *target, const char *prereqs, const char *cmd, int run,
	       double timeout)
{
	if (g->stamps) {
		char stamp[4096];
		snprintf(stamp, sizeof stamp, "%s/%s.args", g->stamps, target);
		if (write_stamp(stamp, cmd))
			return -1;
	}
	const char *dev = run & RUN_DEVICE ? g->c->device[g->next_device++ % g->c->n_device] : NULL;
	char t[32] = "";
	if (run && timeout > 0)
		num_text(t, sizeof t, timeout);
	fprintf(g->out, "$(OUT)/%s: %s $(OUT)/.args/%s.args\n\t$(JOB) --kind %s", target, prereqs, target, kind);
	if (run & RUN_THREADS)
		fprintf(g->out, " --cpus $(THREADS)");
	if (dev)
		fprintf(g->out, " --device %s", dev);
	if (t[0])
		fprintf(g->out, " --timeout %s", t);
	fprintf(g->out, " -- %s", cmd);
	if (run & RUN_THREADS)
		fprintf(g->out, " --threads $(THREADS)");
	if (dev)
		fprintf(g->out, " --device $(call esg_device,%s)", dev);
	if (t[0])
		fprintf(g->out, " --timeout %s", t);
	fprintf(g->out, "\n\n");
	g->jobs++;
	return 0;
}

/* Where model m is for input i (wrapped copies live in $(OUT)/models). */
static void model_path(const esg_config *c, int i, int m, char *out, size_t n)
{
	const cfg_model *x = &c->model[m];
	if (x->per_input)
		snprintf(out, n, "$(OUT)/models/%s/%s.pt", c->in[i].name, x->name);
	else if (x->wrap_args)
		snprintf(out, n, "$(OUT)/models/%s.pt", x->name);
	else
		snprintf(out, n, "%s", x->file);
}

/* Whether input i shows model m (the randomised model: only where the
 * randomisation ran). */
static int shows(const esg_config *c, int i, int m)
{
	return !c->model[m].randomised || c->rand_input[i];
}

/* The file lists the fragment defines for run.mk. */
enum { L_ATTRS, L_RANDOM_ATTRS, L_MAPS, L_GT, L_FIDELITY, L_RANDOM_TABLES, L_CURVES, L_EXPLAIN, L_COUNT };
static const char *const LIST_NAMES[L_COUNT] = { "ESG_ATTRS", "ESG_RANDOM_ATTRS", "ESG_MAPS", "ESG_GT_TABLES",
						 "ESG_FIDELITY_TABLES", "ESG_RANDOM_TABLES", "ESG_CURVE_TABLES",
						 "ESG_EXPLAINS" };

/* Append `prefix``path` to a list, one file per continued line. */
/* Is `name` one of the comma-separated metrics in `list`? */
static int has_metric(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (strncmp(p, name, n) == 0 && (p[n] == ',' || !p[n]))
			return 1;
	return 0;
}

static void list_add(sbuf *v, const char *prefix, const char *path)
{
	sb_add(v, " \\\n\t%s%s", prefix, path);
}

int esg_config_write_make(const esg_config *c, FILE *out, const char *stamp_dir)
{
	gen g = { c, out, stamp_dir, 0, 0 };
	sbuf list[L_COUNT] = { { 0 } }, b = { 0 };
	char mp[4096], rp[4096], pre[8192];
	int rc = 0;
	cfg_path = c->path;
	fprintf(out, "# Generated by esg-config from %s: edit the config, not this file.\n"
		     "# One rule per job; each depends on its stamp in $(OUT)/.args, which holds\n"
		     "# the arguments that decide its result.\n\n"
		     "ESG_CONFIG_FILE := %s\nTHREADS ?= %ld\n%s\n", c->path, c->path, c->threads, c->slurm_vars);
	if (c->memory) /* how the jobs run, not what they make: in no stamp */
		fprintf(out, "# jobs.memory: each libtorch job's memory budget (ESG_MEMORY set by the user wins)\n"
			     "export ESG_MEMORY ?= %s\n\n", c->memory);
	/* models wrapped once for every input */
	for (int m = 0; m < c->n_model && !rc; m++) {
		const cfg_model *x = &c->model[m];
		if (!x->wrap_args || x->per_input)
			continue;
		b.n = 0;
		sb_add(&b, "$(ESG_WRAP) -m %s %s -o $@", x->file, x->wrap_args);
		snprintf(pre, sizeof pre, "%s%s%s $(ESG_WRAP)", x->file, x->wrap_mask ? " " : "",
			 x->wrap_mask ? x->wrap_mask : "");
		char target[512];
		snprintf(target, sizeof target, "models/%s.pt", x->name);
		rc = b.oom || job(&g, "wrap", target, pre, b.s, RUN_THREADS, c->timeout);
	}
	for (int i = 0; i < c->n_in && !rc; i++) {
		const cfg_input *in = &c->in[i];
		const char *N = in->name;
		char input[600], target[2048];
		snprintf(input, sizeof input, "$(OUT)/inputs/%s.st.zst", N);
		fprintf(out, "# ---- input %s: %s\n", N, in->image);
		b.n = 0;
		sb_add(&b, "$(ESG_LOAD)%s --name %s %s -o $@", c->load_args, N, in->image);
		snprintf(target, sizeof target, "inputs/%s.st.zst", N);
		snprintf(pre, sizeof pre, "%s $(ESG_LOAD)", in->image);
		if (b.oom || job(&g, "load", target, pre, b.s, 0, 0))
			goto fail;
		b.n = 0;
		sb_add(&b, "$(ESG_RENDER) --nifti $@ --tensor image %s", input);
		snprintf(target, sizeof target, "maps/%s/image.nii.gz", N);
		snprintf(pre, sizeof pre, "%s $(ESG_RENDER)", input);
		if (b.oom || job(&g, "render", target, pre, b.s, 0, 0))
			goto fail;
		list_add(&list[L_MAPS], "$(OUT)/", target);
		/* models wrapped with this input's prediction */
		for (int m = 0; m < c->n_model; m++) {
			const cfg_model *x = &c->model[m];
			if (!x->per_input || x->randomised)
				continue;
			b.n = 0;
			sb_add(&b, "$(ESG_WRAP) -m %s %s --input %s -o $@", x->file, x->wrap_args, input);
			snprintf(target, sizeof target, "models/%s/%s.pt", N, x->name);
			snprintf(pre, sizeof pre, "%s %s $(ESG_WRAP)", x->file, input);
			rc = b.oom || job(&g, "wrap", target, pre, b.s, RUN_THREADS, c->timeout);
			if (rc)
				goto fail;
		}
		/* randomisation: the steps, and the last one shown as a model */
		char rdir[1024] = "";
		if (c->rand_model >= 0 && c->rand_input[i]) {
			model_path(c, i, c->rand_model, rp, sizeof rp);
			snprintf(rdir, sizeof rdir, "random/%s/%s", N, c->model[c->rand_model].name);
			b.n = 0;
			sb_add(&b, "$(ESG_RANDOMISE) -m %s %s -o $(OUT)/%s", rp, c->rand_args, rdir);
			snprintf(target, sizeof target, "%s/manifest.json", rdir);
			snprintf(pre, sizeof pre, "%s $(ESG_RANDOMISE)", rp);
			rc = b.oom || job(&g, "randomise", target, pre, b.s, RUN_DEVICE, c->timeout);
			if (rc)
				goto fail;
			for (int m = 0; m < c->n_model; m++) {
				if (!c->model[m].randomised)
					continue;
				b.n = 0;
				/* a copy renamed into place: a killed cp leaves no model */
				sb_add(&b, "$(COPY) $(OUT)/%s/step-%02d-*.pt $@", rdir, c->rand_steps);
				snprintf(target, sizeof target, "models/%s/%s.pt", N, c->model[m].name);
				snprintf(pre, sizeof pre, "$(OUT)/%s/manifest.json", rdir);
				if (b.oom || job(&g, "copy", target, pre, b.s, 0, 0))
					goto fail;
			}
		}
		/* attribution maps: every shown model x every method */
		for (int m = 0; m < c->n_model; m++) {
			if (!shows(c, i, m))
				continue;
			const char *M = c->model[m].name;
			model_path(c, i, m, mp, sizeof mp);
			sbuf maps_of = { 0 }; /* this input and model's maps */
			for (int k = 0; k < c->n_meth; k++) {
				const cfg_method *x = &c->meth[k];
				char a[1024];
				snprintf(a, sizeof a, "$(OUT)/attr/%s/%s/%s.st.zst", N, M, x->label);
				b.n = 0;
				sb_add(&b, "$(ESG_ATTR) -m %s %s -o $@ %s", mp, x->args, input);
				snprintf(target, sizeof target, "attr/%s/%s/%s.st.zst", N, M, x->label);
				snprintf(pre, sizeof pre, "%s %s%s $(ESG_ATTR)", input, mp, x->deps);
				rc = b.oom || job(&g, "attr", target, pre, b.s, RUN_THREADS | RUN_DEVICE, x->timeout);
				if (rc)
					goto fail;
				list_add(&list[L_ATTRS], "", a);
				sb_add(&maps_of, " %s", a);
				/* the map as NIfTI, for viewers and the report's links */
				b.n = 0;
				sb_add(&b, "$(ESG_RENDER) --nifti $@ --tensor attribution %s", a);
				snprintf(target, sizeof target, "maps/%s/%s/%s.nii.gz", N, M, x->label);
				snprintf(pre, sizeof pre, "%s $(ESG_RENDER)", a);
				if (b.oom || job(&g, "render", target, pre, b.s, 0, 0))
					goto fail;
				list_add(&list[L_MAPS], "$(OUT)/", target);
				if (c->fid_metrics && c->fid_metrics[0] && c->fid_model[m] && x->fidelity) {
					b.n = 0;
					sb_add(&b, "$(ESG_METRIC) -m %s --metric %s%s -o $@ %s", mp, c->fid_metrics,
					       c->metric_args, a);
					/* deletion / insertion: their curves beside the table, for the report */
					int curves = has_metric(c->fid_metrics, "deletion") || has_metric(c->fid_metrics, "insertion");
					if (curves) {
						snprintf(target, sizeof target, "metrics/%s/%s/%s.curves.tsv", N, M, x->label);
						sb_add(&b, " --curves $(OUT)/%s", target);
						list_add(&list[L_CURVES], "$(OUT)/", target);
					}
					snprintf(target, sizeof target, "metrics/%s/%s/%s.fidelity.tsv", N, M, x->label);
					snprintf(pre, sizeof pre, "%s %s $(ESG_METRIC)", a, mp);
					rc = b.oom || job(&g, "metric", target, pre, b.s, RUN_THREADS | RUN_DEVICE, c->timeout);
					if (rc)
						goto fail;
					list_add(&list[L_FIDELITY], "$(OUT)/", target);
				}
			}
			char *l = sb_take(&maps_of);
			if (!l)
				goto fail;
			if (c->gt_metrics && c->gt_metrics[0]) {
				b.n = 0;
				sb_add(&b, "$(ESG_METRIC) --metric %s --mask %s%s -o $@%s", c->gt_metrics, in->mask,
				       c->metric_args, l);
				snprintf(target, sizeof target, "metrics/%s/%s/ground_truth.tsv", N, M);
				snprintf(pre, sizeof pre, "%s%s $(ESG_METRIC)", in->mask, l);
				rc = b.oom || job(&g, "metric", target, pre, b.s, 0, 0);
				list_add(&list[L_GT], "$(OUT)/", target);
			}
			free(l);
			if (rc)
				goto fail;
		}
		/* explanations (esg-explain): every job of the explain section on
		 * every chosen model this input shows, the randomised one too */
		for (int m = 0; c->ex_input && c->ex_input[i] && m < c->n_model; m++) {
			if (!c->ex_model[m] || !shows(c, i, m))
				continue;
			model_path(c, i, m, mp, sizeof mp);
			for (int k = 0; k < c->n_ex; k++) {
				const cfg_explain *x = &c->ex[k];
				b.n = 0;
				sb_add(&b, "$(ESG_EXPLAIN) -m %s %s -o $@ %s", mp, x->args, input);
				snprintf(target, sizeof target, "explain/%s/%s/%s.st.zst", N, c->model[m].name, x->file);
				snprintf(pre, sizeof pre, "%s %s $(ESG_EXPLAIN)", input, mp);
				rc = b.oom || job(&g, "explain", target, pre, b.s, RUN_THREADS | RUN_DEVICE, x->timeout);
				if (rc)
					goto fail;
				list_add(&list[L_EXPLAIN], "$(OUT)/", target);
			}
		}
		/* maps of the randomised steps and their similarity to the original */
		if (rdir[0]) {
			const char *RM = c->model[c->rand_model].name;
			for (int k = 0; k < c->n_meth; k++) {
				const cfg_method *x = &c->meth[k];
				if (!x->randomise)
					continue;
				sbuf steps = { 0 }; /* this method's maps of the steps */
				for (int s = 1; s <= c->rand_steps; s++) {
					char a[2100];
					snprintf(target, sizeof target, "%s/%s/step-%02d.st.zst", rdir, x->label, s);
					snprintf(a, sizeof a, "$(OUT)/%s", target);
					b.n = 0;
					sb_add(&b, "$(ESG_ATTR) -m $(OUT)/%s/step-%02d-*.pt %s -o $@ %s", rdir, s, x->args,
					       input);
					snprintf(pre, sizeof pre, "%s $(OUT)/%s/manifest.json%s $(ESG_ATTR)", input, rdir,
						 x->deps);
					rc = b.oom || job(&g, "attr", target, pre, b.s, RUN_THREADS | RUN_DEVICE, x->timeout);
					if (rc) {
						free(steps.s);
						goto fail;
					}
					list_add(&list[L_RANDOM_ATTRS], "", a);
					sb_add(&steps, " %s", a);
				}
				char *l = sb_take(&steps);
				if (!l)
					goto fail;
				b.n = 0;
				sb_add(&b, "$(ESG_METRIC) --metric %s%s -o $@ $(OUT)/attr/%s/%s/%s.st.zst%s", c->rand_metrics,
				       c->metric_args, N, RM, x->label, l);
				snprintf(target, sizeof target, "metrics/%s/%s/%s.randomisation.tsv", N, RM, x->label);
				snprintf(pre, sizeof pre, "$(OUT)/attr/%s/%s/%s.st.zst%s $(ESG_METRIC)", N, RM, x->label, l);
				rc = b.oom || job(&g, "metric", target, pre, b.s, 0, 0);
				free(l);
				if (rc)
					goto fail;
				list_add(&list[L_RANDOM_TABLES], "$(OUT)/", target);
			}
		}
		fputc('\n', out);
	}
	if (rc)
		goto fail;
	for (int k = 0; k < L_COUNT && !rc; k++) {
		if (list[k].oom)
			rc = esg_set_error("out of memory");
		else
			fprintf(out, "%s :=%s\n\n", LIST_NAMES[k], list[k].s ? list[k].s : "");
	}
	fprintf(out, "ESG_REPORT := %s\nESG_REPORT_ARGS :=%s\nESG_JOB_COUNT := %d\n", c->report ? "1" : "",
		c->report_args, g.jobs);
	/* the report's own options: a stamp like the jobs' */
	if (!rc && g.stamps && c->report) {
		char stamp[4096];
		snprintf(stamp, sizeof stamp, "%s/report.html.args", g.stamps);
		rc = write_stamp(stamp, c->report_args);
	}
	for (int k = 0; k < L_COUNT; k++)
		free(list[k].s);
	free(b.s);
	if (rc || ferror(out))
		return rc ? -1 : esg_set_error("cannot write the Make fragment");
	return g.jobs;
fail:
	for (int k = 0; k < L_COUNT; k++)
		free(list[k].s);
	free(b.s);
	return -1;
}

/* ---- the schema, for the builder page --------------------------------------- */

/* What the builder page needs to know of a field beyond its name (K_*): its
 * type, values, range and meaning.  A field of K_* without a line here is
 * still offered (as a JSON value the page passes on unchecked); the page's
 * checks of these lines are tested against esg_config_load's messages
 * (tests/cli/builder.sh), which keeps the ranges here honest. */
typedef struct cfg_field {
	const char *object, *key;
	const char *type; /* string name path glob template int number bool enum names metrics
			     numbers list params baselines devices object */
	const char *const *choices;
	double lo, hi;
	int required;
	const char *help;
} cfg_field;

static const cfg_field FIELDS[] = {
	{ "", "title", "string", NULL, 0, 0, 0, "the report's title" },
	{ "", "output", "path", NULL, 0, 0, 1, "the output folder (pipelines/run ... OUT=DIR overrides)" },
	{ "", "target", "int", NULL, 0, 1e9, 0, "class index for every method (default: each item's argmax)" },
	{ "inputs[]", "image", "glob", NULL, 0, 0, 1,
	  "NIfTI / PNG / NPY file; a glob (*, ?, [..]) gives one input per file" },
	{ "inputs[]", "name", "template", NULL, 0, 0, 0,
	  "default: the file name without extension; {*} is what the glob's one * matched" },
	{ "inputs[]", "mask", "template", NULL, 0, 0, 0, "ground-truth mask (nonzero = inside) for the ground-truth metrics" },
	{ "load", "normalise", "enum", E_NORMALISE, 0, 0, 0, "intensity normalisation (esg-load --normalise)" },
	{ "load", "nonzero", "bool", NULL, 0, 0, 0, "normalise over nonzero voxels only" },
	{ "load", "fit", "enum", E_FIT, 0, 0, 0, "pad or crop to a multiple" },
	{ "load", "align", "enum", E_ALIGN, 0, 0, 0, "where padding or cropping goes" },
	{ "load", "channels", "enum", E_CHANNELS, 0, 0, 0, "channels of PNG inputs" },
	{ "load", "axes", "enum", E_AXES, 0, 0, 0, "axis order of the tensor" },
	{ "load", "multiple", "numbers", NULL, 0, 0, 0, "make each size a multiple of n (a number or a list)" },
	{ "load", "percentiles", "numbers", NULL, 0, 0, 0, "[lo, hi] of normalise: percentile" },
	{ "models[]", "name", "name", NULL, 0, 0, 1, "the column of the report" },
	{ "models[]", "file", "path", NULL, 0, 0, 1, "TorchScript model" },
	{ "models[]", "wrap", "object", NULL, 0, 0, 0, "wrap a segmentation model with esg-wrap" },
	{ "models[].wrap", "reduce", "enum", E_REDUCE, 0, 0, 1,
	  "per-class scores from a segmentation: argmax, otsu or fixed-mask (recommended)" },
	{ "models[].wrap", "activation", "enum", E_ACTIVATION, 0, 0, 0, "applied to the output first" },
	{ "models[].wrap", "mask", "path", NULL, 0, 0, 0, "fixed-mask: the ROI file (default: the model's own prediction)" },
	{ "models[].wrap", "patch", "numbers", NULL, 0, 0, 0, "sliding-window prediction: patch size" },
	{ "models[].wrap", "overlap", "numbers", NULL, 0, 0, 0, "sliding-window overlap" },
	{ "models[].wrap", "blend", "enum", E_BLEND, 0, 0, 0, "sliding-window blending" },
	{ "methods[]", "name", "name", NULL, 0, 0, 1, "the row of the report and the file name" },
	{ "methods[]", "method", "method", NULL, 0, 0, 0, "an esg-attr --list-methods name (default: name)" },
	{ "methods[]", "params", "params", NULL, 0, 0, 0, "the method's parameters" },
	{ "methods[]", "baselines", "baselines", NULL, 0, 0, 0,
	  "--baseline specs: zero, const:V, blur:S, uniform:LO,HI[:K], file:PATH[:TENSOR]" },
	{ "methods[]", "layer", "string", NULL, 0, 0, 0, "layer of layer methods (esg-attr --list-layers)" },
	{ "methods[]", "channel", "string", NULL, 0, 0, 0, "--channel of layer methods" },
	{ "methods[]", "upsample", "bool", NULL, 0, 0, 0, "--upsample / --no-upsample of layer maps" },
	{ "methods[]", "target", "int", NULL, 0, 1e9, 0, "overrides the top-level target" },
	{ "methods[]", "seed", "int", NULL, 0, 1e18, 0, "the seed (default 0)" },
	{ "methods[]", "internal_batch", "int", NULL, 1, 1 << 20, 0, "default: jobs.internal_batch" },
	{ "methods[]", "timeout", "number", NULL, 0, 1e9, 0, "seconds (default: jobs.timeout)" },
	{ "methods[]", "patch", "numbers", NULL, 0, 0, 0, "patch-based attribution: patch size, e.g. [64, 64, 64]" },
	{ "methods[]", "overlap", "number", NULL, 0, 0.99, 0, "patch overlap" },
	{ "methods[]", "blend", "enum", E_METHOD_BLEND, 0, 0, 0, "patch blending" },
	{ "methods[]", "amp", "bool", NULL, 0, 0, 0, "mixed precision (esg-attr --amp)" },
	{ "randomisation", "model", "model", NULL, 0, 0, 0, "default: the first model" },
	{ "randomisation", "mode", "enum", E_MODE, 0, 0, 0, "cascading (default) or independent" },
	{ "randomisation", "layers", "names", NULL, 0, 0, 1,
	  "layers to randomise, from the output backwards; their number is the number of steps" },
	{ "randomisation", "seed", "int", NULL, 0, 1e18, 0, "--seed (default 0)" },
	{ "randomisation", "init", "enum", E_INIT, 0, 0, 0, "re-initialisation" },
	{ "randomisation", "methods", "method_names", NULL, 0, 0, 0, "which methods (default: all)" },
	{ "randomisation", "metrics", "metrics", SIMILARITY, 0, 0, 0,
	  "similarity to the original map (default spearman_abs, ssim_abs, topk_iou)" },
	{ "randomisation", "inputs", "input_names", NULL, 0, 0, 0, "which inputs (default: all)" },
	{ "randomisation", "as_model", "name", NULL, 0, 0, 0, "also show the last step as a model of its own" },
	{ "metrics", "ground_truth", "metrics", GROUND_TRUTH, 0, 0, 0, "per input and model (every input needs a mask)" },
	{ "metrics", "fidelity", "metrics", FIDELITY, 0, 0, 0, "per input, model and method" },
	{ "metrics", "methods", "method_names", NULL, 0, 0, 0, "which methods get the fidelity metrics (default: all)" },
	{ "metrics", "models", "model_names", NULL, 0, 0, 0, "which models (default: all but as_model)" },
	{ "metrics", "params", "params", NULL, 0, 0, 0, "esg-metric --param values (e.g. n_perturb_samples)" },
	{ "jobs", "threads", "int", NULL, 0, 1024, 0, "libtorch threads per job (0: all cores)" },
	{ "jobs", "devices", "devices", NULL, 0, 0, 0, "cpu, cuda:N; given to jobs round robin (default cpu)" },
	{ "jobs", "timeout", "number", NULL, 0, 1e9, 0, "seconds, every libtorch job (0: none)" },
	{ "jobs", "internal_batch", "int", NULL, 1, 1 << 20, 0, "--internal-batch of every method (default: auto, sized to the memory budget)" },
	{ "jobs", "memory", "string", NULL, 0, 0, 0, "memory budget of each libtorch job: a size (6G, 500M) or a share (50%) (default: 80% shared among the jobs run at once)" },
	{ "report", "view", "enum", E_VIEW, 0, 0, 0, "the slicing plane of 3D inputs" },
	{ "report", "zoom", "number", NULL, 1, 16, 0, "display scale" },
};

static void schema_str(FILE *f, const char *s)
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

static void schema_list(FILE *f, const char *const *v)
{
	fputc('[', f);
	for (size_t i = 0; v && v[i]; i++) {
		if (i)
			fputc(',', f);
		schema_str(f, v[i]);
	}
	fputc(']', f);
}

static void schema_num(FILE *f, double d)
{
	char t[40];
	num_text(t, sizeof t, d);
	fputs(t, f);
}

int esg_config_schema(FILE *f)
{
	static const struct { const char *name; const char *const *keys; } OBJECTS[] = {
		{ "", K_TOP }, { "inputs[]", K_INPUT }, { "load", K_LOAD }, { "models[]", K_MODEL },
		{ "models[].wrap", K_WRAP }, { "methods[]", K_METHOD }, { "randomisation", K_RANDOM },
		{ "metrics", K_METRICS }, { "jobs", K_JOBS }, { "report", K_REPORT },
	};
	fputs("{\"format\":\"esg-config schema 1\",\"version\":", f);
	schema_str(f, ESG_VERSION);
	fputs(",\n\"objects\":{", f);
	for (size_t i = 0; i < sizeof OBJECTS / sizeof *OBJECTS; i++) {
		fputs(i ? ",\n" : "", f);
		schema_str(f, OBJECTS[i].name);
		fputc(':', f);
		schema_list(f, OBJECTS[i].keys);
	}
	fputs("},\n\"fields\":[", f);
	for (size_t i = 0; i < sizeof FIELDS / sizeof *FIELDS; i++) {
		const cfg_field *x = &FIELDS[i];
		fputs(i ? ",\n{\"object\":" : "{\"object\":", f);
		schema_str(f, x->object);
		fputs(",\"key\":", f);
		schema_str(f, x->key);
		fputs(",\"type\":", f);
		schema_str(f, x->type);
		if (x->choices) {
			fputs(",\"choices\":", f);
			schema_list(f, x->choices);
		}
		if (x->lo < x->hi) {
			fputs(",\"lo\":", f);
			schema_num(f, x->lo);
			fputs(",\"hi\":", f);
			schema_num(f, x->hi);
		}
		fprintf(f, ",\"required\":%s,\"help\":", x->required ? "true" : "false");
		schema_str(f, x->help);
		fputc('}', f);
	}
	fputs("],\n\"methods\":[", f);
	const esg_method *m;
	for (size_t i = 0; (m = esg_method_at(i)); i++) {
		int wraps = 0;
		for (const esg_param_spec *s = m->params; s && s->key; s++)
			wraps |= s->kind == ESG_P_METHOD;
		fputs(i ? ",\n{\"name\":" : "{\"name\":", f);
		schema_str(f, m->name);
		fputs(",\"summary\":", f);
		schema_str(f, m->summary);
		fprintf(f, ",\"layer\":%d,\"layer_optional\":%s,\"baseline\":%d,\"wrappable\":%s,\"params\":[",
			esg_method_layer(m), esg_method_layer_optional(m) ? "true" : "false", m->baseline,
			!wraps && !m->layer ? "true" : "false");
		static const char *const KIND[] = { "int", "float", "bool", "choice", "method", "string" };
		for (const esg_param_spec *s = m->params; s && s->key; s++) {
			fputs(s == m->params ? "{\"key\":" : ",{\"key\":", f);
			schema_str(f, s->key);
			fprintf(f, ",\"kind\":\"%s\",\"default\":", KIND[s->kind]);
			schema_str(f, s->def);
			if (s->choices) {
				fputs(",\"choices\":", f);
				schema_str(f, s->choices);
			}
			if (s->kind == ESG_P_INT || s->kind == ESG_P_FLOAT) {
				fputs(",\"lo\":", f);
				schema_num(f, s->lo);
				fputs(",\"hi\":", f);
				schema_num(f, s->hi);
			}
			fputs(",\"help\":", f);
			schema_str(f, s->help);
			fputc('}', f);
		}
		fputs("]}", f);
	}
	fputs("],\n\"aliases\":[", f);
	const esg_method_alias *a;
	for (size_t i = 0; (a = esg_alias_at(i)); i++) {
		fputs(i ? ",\n{\"name\":" : "{\"name\":", f);
		schema_str(f, a->name);
		fputs(",\"method\":", f);
		schema_str(f, a->method);
		fputs(",\"params\":", f);
		schema_str(f, a->params);
		fputs(",\"summary\":", f);
		schema_str(f, a->summary);
		fputc('}', f);
	}
	fputs("]}", f);
	return ferror(f) ? esg_set_error("write error") : 0;
}
