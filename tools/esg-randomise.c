/* esg-randomise - parameter randomisation for sanity checks (Adebayo et al.
 * 2018): write randomised copies of a TorchScript model, cascading (top
 * layer first, cumulative) or independent (one layer at a time), with a
 * manifest of every parameter changed and how.
 *
 * Random draws come from the project's own PRNG (attr.h: xoshiro256**), one
 * stream per parameter keyed by (seed, FNV-1a 64 of the parameter's name),
 * so a parameter gets the same values in every step and every run, whatever
 * the libtorch version or thread count. */
#include "attr/attr.h"
#include "cli.h"
#include "stream/stream.h"
#include "shim/esg_torch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char USAGE[] =
	"Usage: esg-randomise -m MODEL --mode cascading|independent [--seed S]\n"
	"                     [--init default|gaussian|uniform] [--layers A,B,...] -o DIR\n"
	"\n"
	"Write randomised copies of a TorchScript model into DIR, one per step, as\n"
	"DIR/step-NN-LAYER.pt, and DIR/manifest.json listing, per step, every parameter\n"
	"changed and how.  Layers are the modules that own parameters (or the modules\n"
	"named by --layers, each with all parameters below it), ordered from the output\n"
	"backwards in execution order.\n"
	"  cascading    step k randomises the k layers nearest the output (cumulative)\n"
	"  independent  step k randomises only the k-th layer from the output\n"
	"\n"
	"Options:\n"
	"  -m, --model FILE      TorchScript model\n"
	"      --mode MODE       cascading or independent\n"
	"      --seed S          seed of the random draws (default 0)\n"
	"      --init KIND       default: the layer type's initialisation (conv/linear:\n"
	"                        kaiming_uniform(a=sqrt(5)) weights and U(+-1/sqrt(fan_in))\n"
	"                        biases; norms: ones/zeros); gaussian: N(mean, std) of each\n"
	"                        original parameter; uniform: U(mean - std, mean + std)\n"
	"      --layers LIST     comma-separated module names to randomise (default: every\n"
	"                        module with parameters that forward calls)\n"
	"      --device DEV      cpu (default) or cuda:N\n"
	"  -o, --output DIR      output directory (created if missing)\n"
	CLI_TIMEOUT_HELP(" ", "                        ")
	"  -h, --help            show this help\n"
	"      --version         show the version\n"
	"\n"
	CLI_EXIT_STATUS_HELP;

enum { OPT_MODE = 256, OPT_SEED, OPT_INIT, OPT_LAYERS, OPT_DEVICE, OPT_VERSION };

static const struct option LONGOPTS[] = {
	{ "model", required_argument, NULL, 'm' },
	{ "mode", required_argument, NULL, OPT_MODE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "init", required_argument, NULL, OPT_INIT },
	{ "layers", required_argument, NULL, OPT_LAYERS },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "output", required_argument, NULL, 'o' },
	CLI_TIMEOUT_LONGOPT,
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

enum init_kind { INIT_DEFAULT, INIT_GAUSSIAN, INIT_UNIFORM };
static const char *INIT_NAMES[] = { "default", "gaussian", "uniform" };

typedef struct opts {
	const char *model, *dir, *layers, *device;
	int cascading;
	enum init_kind init;
	uint64_t seed;
} opts;

/* A layer: a group of parameters randomised together. */
typedef struct layer {
	char *name;
	int order;          /* execution position (min over its parameters) */
	size_t *params;     /* indices into the parameter list */
	size_t n;
} layer;

/* Step files written so far, as pending temporary files (tools/cli.c
 * removes them on any failure, signal or --timeout); renamed into place
 * only once the manifest is complete, so a failed run leaves the
 * directory as it was. */
static const char **written;
static size_t n_written;

static void parse(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->device = "cpu";
	int mode = -1, c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:o:h", LONGOPTS, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'o': o->dir = optarg; break;
		case OPT_MODE:
			if (!strcmp(optarg, "cascading"))
				mode = 1;
			else if (!strcmp(optarg, "independent"))
				mode = 0;
			else
				cli_usage("--mode: '%s' is not cascading or independent", optarg);
			break;
		case OPT_INIT: {
			int k = -1;
			for (int i = 0; i < 3; i++)
				if (!strcmp(optarg, INIT_NAMES[i]))
					k = i;
			if (k < 0)
				cli_usage("--init: '%s' is not default, gaussian or uniform", optarg);
			o->init = (enum init_kind)k;
			break;
		}
		case OPT_SEED: {
			char *end;
			errno = 0;
			unsigned long long s = strtoull(optarg, &end, 10);
			if (end == optarg || *end || optarg[0] == '-' || errno)
				cli_usage("--seed: '%s' is not a non-negative integer", optarg);
			o->seed = s;
			break;
		}
		case OPT_LAYERS: o->layers = optarg; break;
		case OPT_DEVICE: o->device = optarg; break;
		case CLI_OPT_TIMEOUT: cli_timeout_option(optarg); break;
		case 'h': cli_help(USAGE);
		case OPT_VERSION: cli_version();
		case ':': cli_usage("option '%s' needs a value", argv[optind - 1]);
		default: cli_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		cli_usage("unexpected argument '%s'", argv[optind]);
	if (!o->model)
		cli_usage("no model: give -m MODEL");
	if (mode < 0)
		cli_usage("no mode: give --mode cascading or --mode independent");
	if (!o->dir)
		cli_usage("no output directory: give -o DIR");
	o->cascading = mode;
}

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

static void add_param(layer *l, size_t i)
{
	size_t *p = realloc(l->params, (l->n + 1) * sizeof *p);
	if (!p)
		cli_die(EXIT_RUNTIME, "out of memory");
	l->params = p;
	l->params[l->n++] = i;
	(void)0;
}

/* The layers, sorted by execution order (first executed first). */
static layer *make_layers(const opts *o, const esg_param_info *P, size_t np, size_t *nl)
{
	layer *L = NULL;
	*nl = 0;
	if (o->layers) {
		char *dup = strdup(o->layers), *save = NULL;
		if (!dup)
			cli_die(EXIT_RUNTIME, "out of memory");
		for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			L = realloc(L, (*nl + 1) * sizeof *L);
			if (!L)
				cli_die(EXIT_RUNTIME, "out of memory");
			layer *l = &L[(*nl)++];
			memset(l, 0, sizeof *l);
			l->name = strdup(t);
			l->order = -1;
			for (size_t i = 0; i < np; i++)
				if (under(P[i].module, t) || !strcmp(P[i].name, t)) {
					add_param(l, i);
					if (P[i].order >= 0 && (l->order < 0 || P[i].order < l->order))
						l->order = P[i].order;
				}
			if (!l->n)
				cli_die(EXIT_RUNTIME, "--layers: model '%s' has no module or parameter '%s' "
					"with parameters (esg-attr -m MODEL --list-layers shows the modules)",
					o->model, t);
			for (size_t j = 0; j + 1 < *nl; j++)
				for (size_t a = 0; a < L[j].n; a++)
					for (size_t b = 0; b < l->n; b++)
						if (L[j].params[a] == l->params[b])
							cli_die(EXIT_RUNTIME, "--layers: '%s' and '%s' overlap (both hold '%s')",
								L[j].name, t, P[l->params[b]].name);
		}
		free(dup);
		if (!*nl)
			cli_usage("--layers: empty list");
	} else {
		for (size_t i = 0; i < np; i++) {
			if (P[i].order < 0)
				continue;  /* never called: cannot change the output */
			layer *l = *nl ? &L[*nl - 1] : NULL;
			if (!l || strcmp(l->name, P[i].module)) {
				L = realloc(L, (*nl + 1) * sizeof *L);
				if (!L)
					cli_die(EXIT_RUNTIME, "out of memory");
				l = &L[(*nl)++];
				memset(l, 0, sizeof *l);
				l->name = strdup(P[i].module);
				l->order = P[i].order;
			}
			add_param(l, i);
		}
		if (!*nl)
			cli_die(EXIT_RUNTIME, "model '%s' has no parameters that forward uses", o->model);
	}
	/* stable insertion sort by execution order; never-called last */
	for (size_t i = 1; i < *nl; i++) {
		layer t = L[i];
		int ot = t.order < 0 ? 1 << 30 : t.order;
		size_t j = i;
		while (j > 0 && (L[j - 1].order < 0 ? 1 << 30 : L[j - 1].order) > ot) {
			L[j] = L[j - 1];
			j--;
		}
		L[j] = t;
	}
	return L;
}

/* How one parameter is re-drawn: U(lo, hi) or N(mean, sd) or a constant. */
typedef struct draw {
	enum { D_UNIFORM, D_NORMAL, D_CONST } kind;
	double a, b;            /* lo, hi | mean, sd | value */
	char how[96];
} draw;

static double fan_in(const esg_param_info *p)
{
	double f = p->ndim >= 2 ? (double)p->shape[1] : 1;
	for (int d = 2; d < p->ndim; d++)
		f *= (double)p->shape[d];
	return f;
}

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

typedef struct param_state {
	float *orig, *rand;
	int64_t n;
	double mean, sd;
	draw d;
	int changed;        /* any value differs from the original */
} param_state;

static void prepare(const opts *o, esg_model *m, const esg_param_info *P, size_t np, size_t i,
		    param_state *s)
{
	esg_tensor *t = NULL;
	if (esg_model_param_get(m, P[i].name, &t))
		cli_die_lib();
	s->n = esg_tensor_numel(t);
	s->orig = t->data;
	t->data = NULL;
	esg_torch_tensor_free(t);
	stats(s->orig, s->n, &s->mean, &s->sd);
	if (o->init == INIT_DEFAULT) {
		plan_default(P, np, i, &s->d);
	} else if (o->init == INIT_GAUSSIAN) {
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
		cli_die(EXIT_RUNTIME, "out of memory");
	esg_rng r;
	esg_rng_init(&r, o->seed, fnv1a(P[i].name), 0x52414e44 /* "RAND" */);
	for (int64_t k = 0; k < s->n; k++) {
		double v = s->d.kind == D_CONST ? s->d.a :
			   s->d.kind == D_UNIFORM ? s->d.a + (s->d.b - s->d.a) * esg_rng_uniform(&r) :
			   s->d.a + s->d.b * esg_rng_normal(&r);
		s->rand[k] = (float)v;
		s->changed |= s->rand[k] != s->orig[k];
	}
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

static void make_dir(const char *dir)
{
	struct stat st;
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			cli_die(EXIT_RUNTIME, "-o %s: exists and is not a directory", dir);
		return;
	}
	if (mkdir(dir, 0777) != 0)
		cli_die(EXIT_RUNTIME, "cannot create directory '%s': %s", dir, strerror(errno));
	cli_created_dir(dir); /* removed again if the run fails */
}

static char *path_join(const char *dir, const char *file)
{
	size_t n = strlen(dir) + strlen(file) + 2;
	char *p = malloc(n);
	if (!p)
		cli_die(EXIT_RUNTIME, "out of memory");
	snprintf(p, n, "%s/%s", dir, file);
	return p;
}

/* Save the model's current state as a temporary file for DIR/FILE,
 * committed with the manifest. */
static void save_step(esg_model *m, const char *dir, const char *file)
{
	char *path = path_join(dir, file);
	const char *tmp = cli_temp_path(path);
	if (esg_model_save(m, tmp))
		cli_die(EXIT_RUNTIME, "cannot write '%s': %s", path, esg_error());
	free(path);
	written = realloc(written, (n_written + 1) * sizeof *written);
	if (!written)
		cli_die(EXIT_RUNTIME, "out of memory");
	written[n_written++] = tmp;
}

int main(int argc, char **argv)
{
	cli_init("esg-randomise", argc, argv);
	opts o;
	parse(argc, argv, &o);

	char sha[65];
	if (esg_sha256_file(o.model, sha))
		cli_die(EXIT_RUNTIME, "model: %s", esg_error());
	esg_model *m = esg_model_load(o.model, o.device);
	if (!m)
		cli_die_lib();
	size_t np;
	esg_param_info *P = esg_model_params(m, &np);
	if (!P)
		cli_die(EXIT_RUNTIME, "model '%s': %s", o.model, esg_error());
	size_t nl;
	layer *L = make_layers(&o, P, np, &nl);
	param_state *S = calloc(np ? np : 1, sizeof *S);
	if (!S)
		cli_die(EXIT_RUNTIME, "out of memory");
	for (size_t l = 0; l < nl; l++)
		for (size_t k = 0; k < L[l].n; k++)
			prepare(&o, m, P, np, L[l].params[k], &S[L[l].params[k]]);
	make_dir(o.dir);

	cJSON *man = cJSON_CreateObject();
	cJSON_AddStringToObject(man, "format", "esg-randomise manifest 1");
	cJSON_AddStringToObject(man, "producer", "esg-randomise " ESG_VERSION);
	cJSON_AddStringToObject(man, "model", o.model);
	cJSON_AddStringToObject(man, "model_sha256", sha);
	cJSON_AddStringToObject(man, "mode", o.cascading ? "cascading" : "independent");
	cJSON_AddStringToObject(man, "init", INIT_NAMES[o.init]);
	cJSON_AddNumberToObject(man, "seed", (double)o.seed);
	cJSON_AddStringToObject(man, "prng", "xoshiro256** per parameter, "
				"esg_rng_init(seed, fnv1a64(name), 0x52414e44)");
	cJSON *jl = cJSON_AddArrayToObject(man, "layers");   /* execution order */
	for (size_t l = 0; l < nl; l++)
		cJSON_AddItemToArray(jl, cJSON_CreateString(L[l].name));
	cJSON *steps = cJSON_AddArrayToObject(man, "steps");

	/* top layer first: walk the layers from the last executed backwards */
	for (size_t s = 0; s < nl; s++) {
		layer *cur = &L[nl - 1 - s];
		for (size_t k = 0; k < cur->n; k++) {
			size_t i = cur->params[k];
			if (esg_model_param_set(m, P[i].name, S[i].rand, S[i].n))
				cli_die_lib();
		}
		char file[512];
		const char *ln = cur->name[0] ? cur->name : "root";
		snprintf(file, sizeof file, "step-%02zu-%s.pt", s + 1, ln);
		for (char *c = file; *c; c++)
			if (*c == '/')
				*c = '_';
		save_step(m, o.dir, file);

		cJSON *js = cJSON_CreateObject();
		cJSON_AddNumberToObject(js, "step", (double)(s + 1));
		cJSON_AddStringToObject(js, "layer", cur->name);
		cJSON_AddStringToObject(js, "file", file);
		cJSON *rl = cJSON_AddArrayToObject(js, "randomised_layers");
		cJSON *pl = cJSON_AddArrayToObject(js, "parameters");
		size_t first = o.cascading ? 0 : s;
		for (size_t t = first; t <= s; t++) {
			layer *l = &L[nl - 1 - t];
			cJSON_AddItemToArray(rl, cJSON_CreateString(l->name));
			for (size_t k = 0; k < l->n; k++)
				cJSON_AddItemToArray(pl, param_json(&P[l->params[k]], &S[l->params[k]]));
		}
		cJSON_AddItemToArray(steps, js);
		if (!o.cascading)  /* restore: the next step changes one layer only */
			for (size_t k = 0; k < cur->n; k++) {
				size_t i = cur->params[k];
				if (esg_model_param_set(m, P[i].name, S[i].orig, S[i].n))
					cli_die_lib();
			}
	}

	char *txt = cJSON_Print(man);
	if (!txt)
		cli_die(EXIT_RUNTIME, "out of memory");
	char *mpath = path_join(o.dir, "manifest.json");
	FILE *f = cli_open_out(mpath, 0);
	fputs(txt, f);
	fputc('\n', f);
	for (size_t i = 0; i < n_written; i++) /* the steps, then the manifest */
		cli_commit_path(written[i]);
	cli_commit_out(f);
	cli_keep_dirs();

	free(txt);
	free(mpath);
	cJSON_Delete(man);
	for (size_t i = 0; i < np; i++) {
		free(S[i].orig);
		free(S[i].rand);
	}
	free(S);
	for (size_t l = 0; l < nl; l++) {
		free(L[l].name);
		free(L[l].params);
	}
	free(L);
	free(written);
	esg_model_params_free(P, np);
	esg_model_free(m);
	return 0;
}
