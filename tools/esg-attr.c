/* esg-attr - run one interpretability method on every record of a stream. */
#include "attr/attr.h"
#include "cli.h"
#include "stream/stream.h"
#include "shim/esg_torch.h"
#include "attr/patch.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OPT_AMP = 0x7e10, OPT_AMP_DTYPE }; /* mixed precision (--amp) */

static const char USAGE[] =
	"Usage: esg-attr -m MODEL --method NAME [--target N] [--layer NAME] [--param KEY=VALUE]...\n"
	"                [--baseline SPEC]... [--internal-batch N] [--threads N] [--device DEV]\n"
	"                [--seed S] [--patch D,H,W [--overlap F] [--blend mean|gaussian]]\n"
	"                [-o OUT] [IN]\n"
	"       esg-attr --list-methods\n"
	"       esg-attr -m MODEL --list-layers\n"
	"\n"
	"Read records (tensor 'image' [N, C, spatial...]) from IN (default stdin), add the\n"
	"tensor 'attribution' (same shape, float32) for the target class, write them to OUT\n"
	"(default stdout).  The model must give per-class scores [N, C]: wrap segmentation\n"
	"models with esg-wrap first.\n"
	"\n"
	"Options:\n"
	"  -m, --model FILE        TorchScript model\n"
	"      --method NAME       method (esg-attr --list-methods shows all, with parameters)\n"
	"      --target N          class index (default: the argmax of the model's prediction,\n"
	"                          per item, recorded in esg.target)\n"
	"      --layer NAME[:K]    layer of layer methods (dotted submodule name; :K = its\n"
	"                          K-th call, 0-based, for a module called more than once;\n"
	"                          optional for the excitation backprop methods: the input)\n"
	"      --layer-call K      the same as NAME:K\n"
	"      --upsample, --no-upsample\n"
	"                          resize layer maps to the input grid (bilinear/trilinear);\n"
	"                          default: on for layer_gradcam, gradcam_pp, score_cam and\n"
	"                          the excitation backprop methods only\n"
	"      --channel K|sum|mean  keep channel K of a layer map, or sum / average them\n"
	"      --param KEY=VALUE   method parameter, Captum's names (repeatable)\n"
	"      --baseline SPEC     zero (default) | const:V | blur:SIGMA | uniform:LO,HI[:K] |\n"
	"                          file:PATH[:TENSOR]; repeat for a distribution (shap methods)\n"
	CLI_IBATCH_HELP("                          ")
	CLI_MEMORY_HELP("   ", "                          ")
	"                          (one item that does not fit goes by exact tiles where the\n"
	"                          method and model allow, else patch-wise: esg.tiles,\n"
	"                          esg.patch_auto)\n"
	"      --threads N         libtorch threads (default 0: all cores)\n"
	"      --device DEV        cpu (default) or cuda:N\n"
	"      --amp               mixed precision: forward passes under autocast (bf16 on the\n"
	"                          CPU, fp16 on CUDA); inputs, gradients, scores and sums stay\n"
	"                          float32; not with the DeepLift / excitation backprop rules\n"
	"      --amp-dtype D       bf16 or fp16 (CUDA only); implies --amp\n"
	"      --seed S            seed of every random draw (default 0)\n"
	"      --label TEXT        the method's name in reports (esg.label; e.g. the\n"
	"                          config's name of a method run with its own parameters)\n"
	"      --patch D,H,W       attribute patch by patch (H,W for 2D; one size per spatial\n"
	"                          axis, clamped to the volume) and blend the maps; the target\n"
	"                          is --target or the argmax on each patch; memory is bounded\n"
	"                          by the patch size\n"
	"      --overlap F         overlap of neighbouring patches, 0 <= F < 1 (default 0.25)\n"
	"      --blend B           gaussian (default; sigma 0.125 x patch size) or mean\n"
	"  -o, --output FILE       write here atomically instead of stdout\n"
	"      --list-methods      list the methods, their parameters and defaults\n"
	"      --list-layers       list the model's layers (name, type, call sites; with the\n"
	"                          output shapes when --shape or IN gives an input)\n"
	"      --shape N,C,...     --list-layers: run a zero input of this shape\n"
	CLI_TIMEOUT_HELP("   ", "                          ")
	CLI_NONFINITE_HELP("   ", "                          ")
	"  -h, --help              show this help\n"
	"      --version           show the version\n"
	"\n"
	CLI_EXIT_STATUS_HELP;

enum { OPT_METHOD = 256, OPT_TARGET, OPT_LAYER, OPT_PARAM, OPT_BASELINE, OPT_IBATCH, OPT_THREADS,
       OPT_DEVICE, OPT_SEED, OPT_LIST_METHODS, OPT_LIST_LAYERS, OPT_VERSION,
       OPT_LAYER_CALL, OPT_UPSAMPLE, OPT_NO_UPSAMPLE, OPT_CHANNEL, OPT_SHAPE, OPT_LABEL,
       OPT_PATCH, OPT_OVERLAP, OPT_BLEND };

static const struct option LONGOPTS[] = {
	{ "model", required_argument, NULL, 'm' },
	{ "method", required_argument, NULL, OPT_METHOD },
	{ "target", required_argument, NULL, OPT_TARGET },
	{ "layer", required_argument, NULL, OPT_LAYER },
	{ "param", required_argument, NULL, OPT_PARAM },
	{ "baseline", required_argument, NULL, OPT_BASELINE },
	{ "internal-batch", required_argument, NULL, OPT_IBATCH },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "amp", no_argument, NULL, OPT_AMP },
	{ "amp-dtype", required_argument, NULL, OPT_AMP_DTYPE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "output", required_argument, NULL, 'o' },
	{ "list-methods", no_argument, NULL, OPT_LIST_METHODS },
	{ "list-layers", no_argument, NULL, OPT_LIST_LAYERS },
	{ "layer-call", required_argument, NULL, OPT_LAYER_CALL },
	{ "upsample", no_argument, NULL, OPT_UPSAMPLE },
	{ "no-upsample", no_argument, NULL, OPT_NO_UPSAMPLE },
	{ "channel", required_argument, NULL, OPT_CHANNEL },
	{ "shape", required_argument, NULL, OPT_SHAPE },
	{ "patch", required_argument, NULL, OPT_PATCH },
	{ "overlap", required_argument, NULL, OPT_OVERLAP },
	{ "blend", required_argument, NULL, OPT_BLEND },
	CLI_TIMEOUT_LONGOPT,
	CLI_NONFINITE_LONGOPT,
	CLI_MEMORY_LONGOPT,
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

#define MAX_LIST 64

typedef struct opts {
	const char *model, *method, *layer, *device, *out, *in, *label;
	long target;          /* -1: argmax */
	char *params[MAX_LIST];
	int n_params;
	const char *baselines[MAX_LIST];
	int n_baselines;
	long ibatch, threads; /* ibatch: the most items per call */
	int auto_batch;       /* --internal-batch auto: fewer when --memory asks */
	uint64_t seed;
	esg_amp amp;          /* --amp, --amp-dtype */
	int list_methods, list_layers;
	/* layer methods */
	char layer_name[256];
	long layer_call;      /* -1: not given */
	int upsample;         /* 0 default, 1 on, 2 off */
	int channel_mode;     /* 0 all, 1 sum, 2 mean, 3 one */
	int channel;
	const char *shape;    /* --list-layers */
	cli_patch win;        /* --patch, --overlap, --blend */
} opts;

static const char *kind_name(esg_param_kind k)
{
	switch (k) {
	case ESG_P_INT: return "int";
	case ESG_P_FLOAT: return "float";
	case ESG_P_BOOL: return "bool";
	case ESG_P_CHOICE: return "choice";
	case ESG_P_METHOD: return "method";
	case ESG_P_STRING: return "string";
	case ESG_P_LRP: return "string";
	}
	return "?";
}

static void print_params(const esg_param_spec *p)
{
	for (; p && p->key; p++) {
		char kv[96];
		snprintf(kv, sizeof kv, "%s=%s", p->key, p->def);
		printf("    %-28s %s [%s%s%s]\n", kv, p->help, kind_name(p->kind),
		       p->choices ? ": " : "", p->choices ? p->choices : "");
	}
}

static void list_methods(void)
{
	const esg_method *m;
	for (size_t i = 0; (m = esg_method_at(i)); i++) {
		printf("%-24s %s%s%s\n", m->name, m->summary,
		       m->baseline == 2 ? " (baseline distribution)" : m->baseline ? " (baseline)" : "",
		       !esg_method_layer(m) ? "" : esg_method_layer_optional(m) ? " (--layer, optional)" : " (--layer)");
		print_params(m->params);
		if (m->params && m->params[0].key && !strcmp(m->params[0].key, "base"))
			printf("    %-28s plus the parameters of the base method\n", "...");
	}
	printf("\naliases:\n");
	const esg_method_alias *a;
	for (size_t i = 0; (a = esg_alias_at(i)); i++)
		printf("%-24s %s%s%s\n", a->name, a->method, a->params[0] ? " " : "", a->params);
	cli_finish_stdout();
	exit(0);
}

/* A dummy input for --list-layers: zeros of --shape, or IN's first image. */
static float *layers_input(const opts *o, int *ndim, int64_t *shape)
{
	if (o->shape) {
		char *dup = strdup(o->shape), *save = NULL;
		if (!dup)
			cli_die(EXIT_RUNTIME, "out of memory");
		*ndim = 0;
		size_t n = 1;
		for (char *t = strtok_r(dup, ",x", &save); t; t = strtok_r(NULL, ",x", &save)) {
			if (*ndim == ESG_MAX_DIMS)
				cli_usage("--shape: more than %d axes", ESG_MAX_DIMS);
			shape[(*ndim)++] = cli_long("--shape", t, 1, 1L << 20);
			n *= (size_t)shape[*ndim - 1];
		}
		free(dup);
		if (*ndim < 2)
			cli_usage("--shape: give N,C,spatial... (e.g. 1,1,64,64,64)");
		float *x = calloc(n, sizeof *x);
		if (!x)
			cli_die(EXIT_RUNTIME, "out of memory for --shape %s", o->shape);
		return x;
	}
	if (!o->in)
		return NULL;
	FILE *in = cli_open_in(o->in, 1);
	esg_reader *rd = esg_reader_open(in, cli_in_name(o->in));
	esg_record *r = NULL;
	if (!rd || esg_reader_next(rd, &r) != 1) {
		if (rd && !esg_error()[0])
			cli_die(EXIT_RUNTIME, "%s: no records", cli_in_name(o->in));
		cli_die_lib();
	}
	esg_tensor *img = esg_record_get(r, "image");
	if (!img)
		cli_die(EXIT_RUNTIME, "%s: %s", cli_in_name(o->in), esg_error());
	*ndim = img->ndim;
	memcpy(shape, img->shape, sizeof img->shape);
	float *x = esg_tensor_to_f32(img);
	if (!x)
		cli_die_lib();
	esg_record_free(r);
	esg_reader_free(rd);
	if (in != stdin)
		fclose(in);
	return x;
}

static void list_layers(const opts *o)
{
	esg_model *m = esg_model_load(o->model, o->device);
	if (!m)
		cli_die_lib();
	size_t n;
	esg_layer_info *l = esg_model_layers(m, &n);
	if (!l)
		cli_die_lib();
	int ndim = 0;
	int64_t shape[ESG_MAX_DIMS];
	float *x = layers_input(o, &ndim, shape);
	printf(x ? "name\ttype\tcalls\tshape\n" : "name\ttype\tcalls\n");
	for (size_t i = 0; i < n; i++) {
		printf("%s\t%s\t%d", l[i].name, l[i].type, l[i].calls);
		/* one shape per call site; "-" where it can't be captured */
		for (int c = 0; x && c < (l[i].calls ? l[i].calls : 1); c++) {
			esg_layer_ref L = { l[i].name, c };
			esg_tensor *a = NULL;
			char s[128] = "-";
			if (l[i].calls && esg_model_forward_capture(m, L, x, ndim, shape, &a, NULL) == 0)
				esg_shape_str(a->ndim, a->shape, s, sizeof s);
			esg_torch_tensor_free(a);
			printf("%s%s", c ? " " : "\t", s);
		}
		printf("\n");
	}
	free(x);
	esg_layers_free(l, n);
	esg_model_free(m);
	cli_finish_stdout();
	exit(0);
}

static void parse(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->target = -1;
	o->device = "cpu";
	o->layer_call = -1;
	o->win = (cli_patch)CLI_PATCH_INIT;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:o:h", LONGOPTS, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'o': o->out = optarg; break;
		case OPT_METHOD: o->method = optarg; break;
		case OPT_TARGET: o->target = cli_long("--target", optarg, 0, 1L << 30); break;
		case OPT_LAYER: o->layer = optarg; break;
		case OPT_LAYER_CALL: o->layer_call = cli_long("--layer-call", optarg, 0, 1L << 20); break;
		case OPT_UPSAMPLE: o->upsample = 1; break;
		case OPT_NO_UPSAMPLE: o->upsample = 2; break;
		case OPT_CHANNEL:
			if (!strcmp(optarg, "sum") || !strcmp(optarg, "mean")) {
				o->channel_mode = optarg[0] == 's' ? 1 : 2;
			} else {
				o->channel_mode = 3;
				o->channel = (int)cli_long("--channel", optarg, 0, 1L << 30);
			}
			break;
		case OPT_SHAPE: o->shape = optarg; break;
		case OPT_PATCH: cli_patch_option(&o->win, "--patch", optarg); break;
		case OPT_OVERLAP: cli_patch_option(&o->win, "--overlap", optarg); break;
		case OPT_BLEND: cli_patch_option(&o->win, "--blend", optarg); break;
		case OPT_PARAM:
			if (o->n_params == MAX_LIST)
				cli_usage("too many --param options");
			o->params[o->n_params++] = optarg;
			break;
		case OPT_BASELINE:
			if (o->n_baselines == MAX_LIST)
				cli_usage("too many --baseline options");
			o->baselines[o->n_baselines++] = optarg;
			break;
		case OPT_IBATCH: o->ibatch = cli_internal_batch(optarg); break;
		case CLI_OPT_MEMORY: cli_memory_option(optarg); break;
		case OPT_THREADS: o->threads = cli_long("--threads", optarg, 0, 4096); break;
		case OPT_DEVICE: o->device = optarg; break;
		case OPT_AMP: cli_amp_option(&o->amp, NULL); break;
		case OPT_AMP_DTYPE: cli_amp_option(&o->amp, optarg); break;
		case OPT_SEED: {
			char *end;
			unsigned long long s = strtoull(optarg, &end, 10);
			if (end == optarg || *end || optarg[0] == '-')
				cli_usage("--seed: '%s' is not a non-negative integer", optarg);
			o->seed = s;
			break;
		}
		case OPT_LABEL:
			if (!optarg[0])
				cli_usage("--label: must not be empty");
			o->label = optarg;
			break;
		case OPT_LIST_METHODS: o->list_methods = 1; break;
		case OPT_LIST_LAYERS: o->list_layers = 1; break;
		case CLI_OPT_TIMEOUT: cli_timeout_option(optarg); break;
		case CLI_OPT_NONFINITE: cli_nonfinite_option(); esg_torch_set_check_finite(0); break;
		case 'h': cli_help(USAGE);
		case OPT_VERSION: cli_version();
		case ':': cli_usage("option '%s' needs a value", argv[optind - 1]);
		default: cli_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		o->in = argv[optind++];
	if (optind < argc)
		cli_usage("unexpected argument '%s' (one input at most)", argv[optind]);
	cli_patch_done(&o->win);
	o->auto_batch = !o->ibatch;
	if (o->auto_batch)
		o->ibatch = ESG_DEFAULT_INTERNAL_BATCH;
}

typedef struct run {
	const opts *o;
	esg_model *model;
	const esg_method *method;
	const esg_method_alias *alias;
	esg_params params;
	char *params_json;
	esg_baseline bl[MAX_LIST];
	int n_bl;
	char sha[65];
} run;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Forward the items in chunks: per-item argmax (targets) and the class count. */
#define MAX_TILED_CLASSES 4096

/* Item i's class scores by tiles (its whole forward did not fit): its
 * argmax into *best; how in tiles_info. */
static int predict_tiled(run *R, const float *xi, int ndim, const int64_t *shape, int64_t i,
			 int64_t *best, int64_t *passes, int64_t *evals, char *tiles_info, size_t n)
{
	char refused[400], info[240];
	snprintf(refused, sizeof refused, "%s", esg_error());
	int64_t one[ESG_MAX_DIMS], calls = 0;
	memcpy(one, shape, (size_t)ndim * sizeof *one);
	one[0] = 1;
	static double scores[MAX_TILED_CLASSES];
	int C = 0;
	int rc = esg_attr_scores_tiled(R->model, ndim, one, xi, i, scores, MAX_TILED_CLASSES, &C, &calls,
				       info, sizeof info);
	*passes += calls;
	*evals += calls;
	if (rc) {
		char why[400];
		snprintf(why, sizeof why, "%s", esg_error());
		return esg_set_error("the target pass: %s; nor by tiles: %s", refused, why);
	}
	*best = 0;
	for (int c = 1; c < C; c++)
		if (scores[c] > scores[*best])
			*best = c;
	snprintf(tiles_info, n, "target pass by tiles: %s", info);
	return 0;
}

static int predict(run *R, const float *x, int ndim, const int64_t *shape, int64_t *target,
		   int64_t *passes, int64_t *evals, char *tiles_info, size_t tiles_n)
{
	size_t item = 1;
	for (int d = 1; d < ndim; d++)
		item *= (size_t)shape[d];
	int64_t sh[ESG_MAX_DIMS];
	memcpy(sh, shape, (size_t)ndim * sizeof *sh);
	for (int64_t i0 = 0; i0 < shape[0]; i0 += sh[0]) {
		int64_t fit = esg_model_batch_fit(R->model, 0, (int64_t)item, item * sizeof(float), (int)R->o->ibatch);
		sh[0] = shape[0] - i0 < fit ? shape[0] - i0 : fit;
		esg_tensor *out;
		(void)esg_torch_budget_refused();
		if (esg_model_forward(R->model, x + i0 * item, ndim, sh, &out)) {
			/* one item that does not fit: its scores tile by tile */
			if (!target || sh[0] > 1 || !esg_torch_budget_refused() ||
			    predict_tiled(R, x + i0 * item, ndim, shape, i0, &target[i0], passes, evals,
					  tiles_info, tiles_n))
				return -1;
			continue;
		}
		(*passes)++;
		*evals += sh[0];
		char s[128];
		esg_shape_str(out->ndim, out->shape, s, sizeof s);
		int ok = out->ndim == 2 && out->shape[0] == sh[0] && out->shape[1] > 0;
		if (ok) {
			int64_t C = out->shape[1];
			for (int64_t b = 0; target && b < sh[0]; b++) {
				int64_t best = 0;
				for (int64_t c = 1; c < C; c++)
					if (esg_tensor_get(out, b * C + c) > esg_tensor_get(out, b * C + best))
						best = c;
				target[i0 + b] = best;
			}
		}
		esg_torch_tensor_free(out);
		if (!ok)
			return esg_set_error("model output is %s, not per-class scores [N, C]; "
					     "wrap a segmentation model with esg-wrap", s);
		if (!target)
			break; /* only the class count was wanted */
	}
	return 0;
}

static char *json_array_d(const double *v, int64_t n)
{
	size_t cap = 32 + (size_t)n * 26, len = 0;
	char *s = malloc(cap);
	if (!s)
		return NULL;
	len += snprintf(s, cap, "[");
	for (int64_t i = 0; i < n; i++)
		len += snprintf(s + len, cap - len, "%s%.9g", i ? "," : "", v[i]);
	snprintf(s + len, cap - len, "]");
	return s;
}

static void set_target_meta(esg_record *r, const int64_t *t, int64_t n)
{
	int same = 1;
	for (int64_t i = 1; i < n; i++)
		same &= t[i] == t[0];
	if (same) {
		esg_meta_setf(r, "esg.target", "%lld", (long long)t[0]);
		return;
	}
	double *d = malloc((size_t)n * sizeof *d);
	if (!d)
		cli_die(EXIT_RUNTIME, "out of memory");
	for (int64_t i = 0; i < n; i++)
		d[i] = (double)t[i];
	esg_meta_set_doubles(r, "esg.target", d, (int)n);
	free(d);
}

static char *baselines_json(const run *R)
{
	size_t cap = 8, len;
	for (int i = 0; i < R->n_bl; i++)
		cap += 2 * strlen(R->bl[i].spec) + 4;
	char *s = malloc(cap);
	if (!s)
		return NULL;
	len = snprintf(s, cap, "[");
	for (int i = 0; i < R->n_bl; i++) {
		len += snprintf(s + len, cap - len, "%s\"", i ? "," : "");
		for (const char *p = R->bl[i].spec; *p; p++) {
			if (*p == '"' || *p == '\\')
				s[len++] = '\\';
			s[len++] = *p;
		}
		s[len++] = '"';
	}
	snprintf(s + len, cap - len, "]");
	return s;
}

/* The library's progress hook -> the terminal (cli_progress is silent
 * unless stderr is a terminal). */
static void attr_progress(void *ctx, const char *what, int64_t done, int64_t total)
{
	(void)ctx;
	cli_progress(what, done, total);
}

/* ---- --patch: the grid of one record and what is recorded ---- */

typedef struct patched {
	cli_patch win;          /* --patch's, or the one chosen for the budget */
	char why[600];          /* chosen for the budget: why (esg.patch_auto) */
	esg_patch_grid grid;
	esg_patch_run run;
} patched;

static void patch_setup(const opts *o, patched *pt, int ndim, const int64_t *shape,
			const char *in_name, size_t index)
{
	if (!pt->why[0])
		pt->win = o->win;
	const cli_patch *w = &pt->win;
	if (w->axes != ndim - 2)
		cli_die(EXIT_USAGE, "--patch %s: %d size%s for the %d spatial axes of %s record %zu",
			w->spec, w->axes, w->axes == 1 ? "" : "s", ndim - 2, in_name, index + 1);
	if (esg_patch_grid_init(&pt->grid, ndim - 2, shape + 2, w->size, w->overlap))
		cli_die(EXIT_RUNTIME, "--patch: %s", esg_error());
	free(pt->run.patch_targets);
	pt->run.grid = &pt->grid;
	pt->run.blend = w->blend;
	/* patches chosen for the budget explain the volume's target */
	pt->run.per_patch_target = o->target < 0 && !pt->why[0];
	pt->run.patch_targets = malloc((size_t)(pt->grid.n * shape[0]) * sizeof *pt->run.patch_targets);
	if (!pt->run.patch_targets)
		cli_die(EXIT_RUNTIME, "out of memory");
}

/* esg.patch (the effective, clamped size), esg.overlap, esg.blend,
 * esg.patches, esg.patch_batch (the most patches that shared calls) and
 * esg.patch_unbatched (why the rest went one by one); per-patch targets:
 * esg.target "per-patch" and esg.patch_targets (patch-major, then item).
 * pt NULL: none of them. */
static void patch_meta(esg_record *r, patched *pt, int64_t N)
{
	static const char *const keys[] = { "esg.patch", "esg.overlap", "esg.blend", "esg.patches",
					    "esg.patch_targets", "esg.patch_auto", "esg.patch_batch",
					    "esg.patch_unbatched", NULL };
	if (!pt) {
		for (int i = 0; keys[i]; i++)
			esg_meta_remove(r, keys[i]);
		return;
	}
	const esg_patch_grid *g = &pt->grid;
	double v[ESG_PATCH_AXES];
	for (int d = 0; d < g->nsp; d++)
		v[d] = (double)g->size[d];
	esg_meta_set_doubles(r, "esg.patch", v, g->nsp);
	esg_meta_setf(r, "esg.overlap", "%.9g", pt->win.overlap);
	esg_meta_set(r, "esg.blend", esg_blend_name(pt->win.blend));
	if (pt->why[0])
		esg_meta_set(r, "esg.patch_auto", pt->why);
	else
		esg_meta_remove(r, "esg.patch_auto");
	esg_meta_setf(r, "esg.patches", "%lld", (long long)g->n);
	esg_meta_setf(r, "esg.patch_batch", "%lld", (long long)pt->run.batch);
	if (pt->run.unbatched[0])
		esg_meta_set(r, "esg.patch_unbatched", pt->run.unbatched);
	else
		esg_meta_remove(r, "esg.patch_unbatched");
	if (pt->run.per_patch_target) {
		int64_t n = g->n * N;
		double *t = malloc((size_t)n * sizeof *t);
		if (!t)
			cli_die(EXIT_RUNTIME, "out of memory");
		for (int64_t i = 0; i < n; i++)
			t[i] = (double)pt->run.patch_targets[i];
		esg_meta_set(r, "esg.target", "per-patch");
		esg_meta_set(r, "esg.target_source", "argmax per patch");
		esg_meta_set_doubles(r, "esg.patch_targets", t, (int)n);
		free(t);
	} else {
		esg_meta_remove(r, "esg.patch_targets");
	}
	free(pt->run.patch_targets);
}

/* The patch of the most input values up to `values` (C channels): the
 * volume, its largest axis cut by 16 voxels at a time (sizes stay
 * multiples of 16, which a U-Net's pooling accepts), down to 32 (smaller
 * patches would run on activations under the 1 MiB that the budget's
 * allocator sees).  0: none fits. */
static int budget_patch(int nsp, const int64_t *dims, int64_t C, double values, int64_t *size)
{
	for (int a = 0; a < nsp; a++)
		size[a] = dims[a];
	for (;;) {
		double v = (double)C;
		int big = 0;
		for (int a = 0; a < nsp; a++) {
			v *= (double)size[a];
			big = size[a] > size[big] ? a : big;
		}
		if (v <= values)
			return 1;
		int64_t s = (size[big] - 1) / 16 * 16;
		if (s < 32)
			return 0;
		size[big] = s;
	}
}

/* esg_attr_run failed: when the memory budget refused one item (and tiles
 * could not take it), run patch-wise instead, with the largest patch that
 * fits (halved while the budget refuses a patch); each patch explains the
 * volume's target.  0: done; -1: the error to report is set. */
static int run_auto_patches(run *R, esg_attr_job *job, patched *pt, const char *in_name, size_t index)
{
	char refused[1000];
	snprintf(refused, sizeof refused, "%s", esg_error());
	/* (an explicit --internal-batch N that does not fit stays refused) */
	if (job->shape[0] != 1 || job->ndim < 3 ||
	    !strstr(refused, "out of the memory budget: a model call on one item"))
		return -1;
	int nsp = job->ndim - 2;
	/* per input value: the method's call, and the patch's input, map and
	 * baselines in the patch loop */
	double values = (double)esg_model_values_fit(R->model, 1, (3.0 + job->n_baselines) * sizeof(float));
	char why[400] = "";
	while (values >= 1) {
		int64_t size[ESG_MAX_DIMS];
		if (!budget_patch(nsp, job->shape + 2, job->shape[1], values, size)) {
			snprintf(why, sizeof why, "no patch of 32 voxels a side fits");
			break;
		}
		pt->win = (cli_patch)CLI_PATCH_INIT;
		pt->win.overlap = ESG_PATCH_DEFAULT_OVERLAP;
		pt->win.axes = nsp;
		char *p = pt->why, *end = pt->why + sizeof pt->why;
		p += snprintf(p, (size_t)(end - p), "one item does not fit the memory budget: patches of ");
		for (int a = 0; a < nsp; a++) {
			pt->win.size[a] = size[a];
			p += snprintf(p, (size_t)(end - p), "%s%lld", a ? "x" : "", (long long)size[a]);
		}
		snprintf(p, (size_t)(end - p), " (at most %.0f input values), the volume's target", values);
		pt->win.spec = "auto";
		patch_setup(R->o, pt, job->ndim, job->shape, in_name, index);
		if (!esg_attr_run_patches(job, &pt->run))
			return 0;
		snprintf(why, sizeof why, "%s", esg_error());
		if (!strstr(why, "out of the memory budget"))
			break;
		values /= 2;  /* a patch cost more than measured: smaller ones */
	}
	free(pt->run.patch_targets);
	memset(pt, 0, sizeof *pt);
	return esg_set_error("%s; nor patch-wise: %s", refused, why);
}

static void process(run *R, esg_record *r, size_t index, const char *in_name, int argc, char **argv)
{
	const opts *o = R->o;
	double t0 = now();
	esg_torch_calls_reset();
	esg_tensor *img = esg_record_get(r, "image");
	if (!img)
		cli_die(EXIT_RUNTIME, "%s: record %zu: %s", in_name, index + 1, esg_error());
	if (img->ndim < 2)
		cli_die(EXIT_RUNTIME, "%s: record %zu: tensor 'image' must be [N, C, ...], not %d-dimensional",
			in_name, index + 1, img->ndim);
	cli_check_finite(in_name, index, img);
	int ndim = img->ndim;
	int64_t shape[ESG_MAX_DIMS];
	memcpy(shape, img->shape, sizeof shape);
	int64_t N = shape[0], numel = esg_tensor_numel(img);
	float *x = esg_tensor_to_f32(img);
	float *attr = malloc((size_t)(numel ? numel : 1) * sizeof *attr);
	int64_t *target = malloc((size_t)(N ? N : 1) * sizeof *target);
	double *delta = calloc((size_t)(N ? N : 1), sizeof *delta);
	if (!x || !attr || !target || !delta)
		cli_die(EXIT_RUNTIME, "out of memory for record %zu", index + 1);
	if (N < 1)
		cli_die(EXIT_RUNTIME, "%s: record %zu: tensor 'image' has no items", in_name, index + 1);

	int64_t passes = 0, evals = 0;
	char target_tiles[300] = "";
	/* With --target the method itself checks the range (every score read is
	 * checked), so no extra forward pass is spent on learning the class count. */
	if (o->target < 0 && o->win.spec) {
		memset(target, 0, (size_t)N * sizeof *target);  /* per patch, below */
	} else if (o->target < 0) {
		if (predict(R, x, ndim, shape, target, &passes, &evals, target_tiles, sizeof target_tiles))
			cli_die(EXIT_RUNTIME, "%s: record %zu: %s", in_name, index + 1, esg_error());
	}
	if (o->target >= 0) {
		for (int64_t i = 0; i < N; i++)
			target[i] = o->target;
	}

	float **bl = NULL;
	int n_bl = 0;
	for (int i = 0; i < R->n_bl; i++)
		if (esg_baseline_build(&R->bl[i], i, x, ndim, shape, o->seed, index, &bl, &n_bl))
			cli_die(EXIT_RUNTIME, "%s: record %zu: %s", in_name, index + 1, esg_error());

	esg_attr_job job = { 0 };
	job.model = R->model;
	job.method = R->method;
	job.params = &R->params;
	job.ndim = ndim;
	memcpy(job.shape, shape, sizeof shape);
	job.x = x;
	job.target = target;
	job.baselines = bl;
	job.n_baselines = n_bl;
	job.internal_batch = (int)o->ibatch;
	job.seed = o->seed;
	job.record = index;
	job.attr = attr;
	job.delta = delta;
	job.progress = attr_progress;
	job.axes = esg_meta_get(r, "esg.axes");
	job.layer = o->layer ? o->layer_name : NULL;
	job.layer_call = o->layer_call > 0 ? (int)o->layer_call : 0;
	job.upsample = o->upsample;
	job.channel_mode = o->channel_mode;
	job.channel = o->channel;
	patched pt = { 0 };
	if (o->win.spec)
		patch_setup(o, &pt, ndim, shape, in_name, index);
	if (o->win.spec ? esg_attr_run_patches(&job, &pt.run)
			: esg_attr_run(&job) && run_auto_patches(R, &job, &pt, in_name, index))
		cli_die(EXIT_RUNTIME, "%s: record %zu: %s: %s", in_name, index + 1, R->method->name, esg_error());
	passes += job.passes;

	if (job.layer_attr) {
		int64_t lnumel = 1;
		for (int d = 0; d < job.out_ndim; d++)
			lnumel *= job.out_shape[d];
		cli_check_finite_f32(in_name, index, "attribution", job.layer_attr, lnumel);
	} else
		cli_check_finite_f32(in_name, index, "attribution", attr, numel);
	esg_record_remove(r, "attribution");
	if (job.layer_attr) {
		/* a layer-shaped result */
		if (!esg_record_add_f32(r, "attribution", job.out_ndim, job.out_shape, job.layer_attr))
			cli_die_lib();
		free(job.layer_attr);
	} else if (!esg_record_add_f32(r, "attribution", ndim, shape, attr)) {
		cli_die_lib();
	}
	if (job.layer) {
		esg_meta_setf(r, "esg.layer", "%s", job.layer);
		esg_meta_setf(r, "esg.layer_call", "%d", job.layer_call);
		double ls[ESG_MAX_DIMS];
		for (int d = 0; d < job.act_ndim; d++)
			ls[d] = (double)job.act_shape[d];
		esg_meta_set_doubles(r, "esg.layer_shape", ls, job.act_ndim);
		esg_meta_set(r, "esg.upsample", job.upsampled ? job.upsampled : "none");
	} else {
		esg_meta_remove(r, "esg.layer");
		esg_meta_remove(r, "esg.layer_call");
		esg_meta_remove(r, "esg.layer_shape");
		esg_meta_remove(r, "esg.upsample");
	}
	if (job.local[0])
		esg_meta_set(r, "esg.local", job.local);
	else
		esg_meta_remove(r, "esg.local");
	if (job.tiles[0])
		esg_meta_set(r, "esg.tiles", job.tiles);
	else
		esg_meta_remove(r, "esg.tiles");
	if (target_tiles[0])
		esg_meta_set(r, "esg.target_tiles", target_tiles);
	else
		esg_meta_remove(r, "esg.target_tiles");
	const char *method_name = R->alias ? R->alias->name : R->method->name;
	esg_meta_set(r, "esg.method", R->method->name);
	if (R->alias)
		esg_meta_set(r, "esg.method_alias", method_name);
	else
		esg_meta_remove(r, "esg.method_alias");
	esg_meta_set(r, "esg.params", R->params_json);
	if (o->label)
		esg_meta_set(r, "esg.label", o->label);
	else
		esg_meta_remove(r, "esg.label");
	set_target_meta(r, target, N);
	esg_meta_set(r, "esg.target_source", o->target >= 0 ? "option" : "argmax");
	esg_meta_set(r, "esg.model", o->model);
	esg_meta_set(r, "esg.model_sha256", R->sha);
	esg_meta_setf(r, "esg.passes", "%lld", (long long)passes);
	char *calls = esg_torch_calls_json();
	if (!calls)
		cli_die_lib();
	esg_meta_set(r, "esg.model_calls", calls);
	free(calls);
	esg_meta_setf(r, "esg.evaluations", "%lld", (long long)(job.evaluations + evals));
	esg_meta_setf(r, "esg.seed", "%llu", (unsigned long long)o->seed);
	if (o->auto_batch)
		esg_meta_set(r, "esg.internal_batch", "auto");
	else
		esg_meta_setf(r, "esg.internal_batch", "%ld", o->ibatch);
	if (o->amp)
		esg_meta_set(r, "esg.amp", esg_amp_name(esg_model_amp(R->model)));
	else
		esg_meta_remove(r, "esg.amp");
	const esg_method *need = R->params.base ? R->params.base : R->method;
	if (need->baseline) {
		char *bj = baselines_json(R);
		if (!bj)
			cli_die(EXIT_RUNTIME, "out of memory");
		esg_meta_set(r, "esg.baseline", bj);
		free(bj);
	} else {
		esg_meta_remove(r, "esg.baseline");
	}
	const char *rules = esg_model_lrp(R->model);
	if (rules)
		esg_meta_set(r, "esg.lrp_rules", rules);
	else
		esg_meta_remove(r, "esg.lrp_rules");
	if (job.has_delta) {
		char *dj = json_array_d(delta, N);
		if (!dj)
			cli_die(EXIT_RUNTIME, "out of memory");
		esg_meta_set(r, "esg.delta", dj);
		free(dj);
	} else {
		esg_meta_remove(r, "esg.delta");
	}
	patch_meta(r, pt.run.grid ? &pt : NULL, N);
	esg_meta_stamp(r, "esg-attr", argc, argv);
	esg_meta_setf(r, "esg.seconds", "%.6f", now() - t0);
	for (int i = 0; i < n_bl; i++)
		free(bl[i]);
	free(bl);
	free(x);
	free(attr);
	free(target);
	free(delta);
}

int main(int argc, char **argv)
{
	cli_init("esg-attr", argc, argv);
	opts o;
	parse(argc, argv, &o);
	if (o.list_methods)
		list_methods();
	if (!o.model)
		cli_usage("no model: give -m MODEL");
	if (o.list_layers)
		list_layers(&o);
	if (!o.method)
		cli_usage("no method: give --method NAME (see --list-methods)");

	run R;
	memset(&R, 0, sizeof R);
	R.o = &o;
	R.method = esg_method_find(o.method, &R.alias);
	if (!R.method)
		cli_usage("--method: %s", esg_error());
	if (esg_params_resolve(R.method, R.alias, o.params, o.n_params, &R.params))
		cli_usage("--method %s: %s", o.method, esg_error());
	if (esg_method_layer(R.method) && !o.layer && esg_method_layer_optional(R.method)) {
		if (o.layer_call >= 0 || o.upsample || o.channel_mode)
			cli_usage("%s: method %s without --layer gives a map on the input grid",
				  o.layer_call >= 0 ? "--layer-call" : o.upsample ? "--upsample" : "--channel",
				  R.method->name);
	} else if (esg_method_layer(R.method)) {
		if (!o.layer)
			cli_usage("--method %s needs --layer NAME (esg-attr -m MODEL --list-layers shows them)",
				  R.method->name);
		/* NAME:K names the K-th call (a trailing :digits only) */
		snprintf(o.layer_name, sizeof o.layer_name, "%s", o.layer);
		char *colon = strrchr(o.layer_name, ':');
		if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
			long k = cli_long("--layer", colon + 1, 0, 1L << 20);
			if (o.layer_call >= 0 && o.layer_call != k)
				cli_usage("--layer %s and --layer-call %ld disagree", o.layer, o.layer_call);
			o.layer_call = k;
			*colon = 0;
		}
		if (!o.layer_name[0])
			cli_usage("--layer: empty layer name");
	} else if (o.layer || o.layer_call >= 0 || o.upsample || o.channel_mode) {
		cli_usage("%s: method %s takes no layer", o.layer ? "--layer" : o.layer_call >= 0 ? "--layer-call" :
			  o.upsample ? "--upsample" : "--channel", R.method->name);
	}
	/* patches blend on the input grid: a layer's own grid can't be stitched */
	int lk = esg_method_layer(R.method);
	if (o.win.spec && o.layer && ((lk == ESG_LAYER_MAP && o.upsample != 1) ||
				   (lk == ESG_LAYER_CAM && o.upsample == 2)))
		cli_usage("--patch: method %s gives maps on the layer's grid; patches are blended on "
			  "the input grid: add --upsample", R.method->name);
	const esg_method *need = R.params.base ? R.params.base : R.method;
	if (o.n_baselines && !need->baseline)
		cli_usage("--baseline: method %s takes no baseline", need->name);
	for (int i = 0; i < o.n_baselines; i++)
		if (esg_baseline_parse(o.baselines[i], &R.bl[R.n_bl++]))
			cli_die(strncmp(o.baselines[i], "file:", 5) ? EXIT_USAGE : EXIT_RUNTIME, "%s", esg_error());
	if (!o.n_baselines && esg_baseline_parse("zero", &R.bl[R.n_bl++]))
		cli_die_lib();
	if (need->baseline == 1 && R.n_bl > 1)
		cli_usage("--baseline: method %s takes one baseline, got %d "
			  "(deeplift_shap and gradient_shap take a distribution)", need->name, R.n_bl);
	if (need->baseline == 1 && R.bl[0].kind == ESG_BL_UNIFORM && R.bl[0].k > 1)
		cli_usage("--baseline: method %s takes one baseline, '%s' makes %d",
			  need->name, R.bl[0].spec, R.bl[0].k);
	/* a malformed feature mask is a usage error (a missing file is found later) */
	const char *fmask = esg_params_str(&R.params, "feature_mask");
	esg_fmask_spec fspec;
	if (fmask && esg_fmask_parse(fmask, &fspec))
		cli_usage("--param: %s", esg_error());
	if (fmask)
		esg_fmask_spec_clear(&fspec);
	R.params_json = esg_params_json(&R.params);
	if (!R.params_json)
		cli_die_lib();

	if (esg_torch_set_threads((int)o.threads))
		cli_die_lib();
	esg_torch_set_memory(cli_memory_budget(), o.auto_batch);
	if (esg_sha256_file(o.model, R.sha))
		cli_die(EXIT_RUNTIME, "model: %s", esg_error());
	R.model = esg_model_load(o.model, o.device);
	if (!R.model)
		cli_die_lib();
	if (o.amp && esg_model_set_amp(R.model, o.amp))
		cli_usage("--amp: %s", esg_error());

	FILE *in = cli_open_in(o.in, 1);
	esg_reader *rd = esg_reader_open(in, cli_in_name(o.in));
	if (!rd)
		cli_die_lib();
	FILE *out = cli_open_out(o.out, 1);
	esg_writer *w = esg_writer_open(out, 0);
	if (!w)
		cli_die_lib();
	esg_record *r;
	int got;
	size_t n = 0;
	while ((got = esg_reader_next(rd, &r)) == 1) {
		process(&R, r, n, cli_in_name(o.in), argc, argv);
		if (esg_writer_put(w, r))
			cli_die_lib();
		esg_record_free(r);
		n++;
	}
	if (got < 0)
		cli_die_lib();
	if (n == 0)
		cli_die(EXIT_RUNTIME, "%s: no records (empty input; did the upstream command fail?)",
			cli_in_name(o.in));
	if (esg_writer_close(w))
		cli_die_lib();
	cli_commit_out(out);
	esg_reader_free(rd);
	if (in != stdin)
		fclose(in);
	for (int i = 0; i < R.n_bl; i++)
		esg_baseline_clear(&R.bl[i]);
	esg_params_clear(&R.params);
	free(R.params_json);
	esg_model_free(R.model);
	return 0;
}
