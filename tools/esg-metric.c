/* esg-metric - how trustworthy are the maps: infidelity and max-sensitivity
 * (Yeh et al. 2019, as Captum), similarity between maps (randomisation
 * sanity checks), ground-truth scores against a mask, deletion / insertion
 * curves.  Reads records written by esg-attr; writes a tidy table, one row
 * per record x item x metric. */
#include "attr/attr.h"
#include "cli.h"
#include "stream/stream.h"
#include "image/image.h"
#include "shim/esg_torch.h"
#include "eval/eval.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
	"Usage: esg-metric [-m MODEL] --metric NAME[,NAME...] [--mask FILE] [--param KEY=VALUE]...\n"
	"                  [--format tsv|jsonl] [--curves FILE] [-o OUT] [IN...]\n"
	"\n"
	"Score the attribution maps in records written by esg-attr (tensors 'image' and\n"
	"'attribution', metadata esg.method, esg.params, esg.target, ...).  Writes a table\n"
	"with one row per record, item and metric: source, record, item, method, params,\n"
	"target, metric, value, metric_params (TSV with a header, or JSON lines), so tables\n"
	"of many runs concatenate.  IN defaults to stdin.\n"
	"\n"
	"Metrics (model: needs -m MODEL, the scored model the maps were made with):\n"
	"  infidelity       (model) mean over perturbations I of (sum(a * I) - (f(x) - f(x - I)))^2\n"
	"  max_sensitivity  (model) max over d in the L-inf ball of ||phi(x) - phi(x + d)|| / ||phi(x)||,\n"
	"                   re-running the recorded method with its recorded parameters\n"
	"  deletion         (model) normalised area under f(x with the top fraction set to the baseline)\n"
	"  insertion        (model) normalised area under f(baseline with the top fraction of x)\n"
	"  spearman, spearman_abs, ssim, ssim_abs, topk_iou\n"
	"                   similarity of each map with the map of the same record in the first IN\n"
	"                   (give the original maps first, then randomised ones)\n"
	"  mass_in_mask, pointing_game, auroc\n"
	"                   agreement with a ground-truth mask (--mask, or the record's 'mask')\n"
	"\n"
	"Parameters (--param KEY=VALUE):\n"
	"  n_perturb_samples=10  perturbations of infidelity and max_sensitivity\n"
	"  perturbation=gaussian infidelity: gaussian (x - N(0, noise_std^2)) or baseline\n"
	"                        (x - u (x - baseline), u ~ U(0, 1) per element)\n"
	"  noise_std=0.003       infidelity's Gaussian perturbation\n"
	"  normalize=false       infidelity: scale sum(a * I) by beta = E[I.a df] / E[(I.a)^2]\n"
	"  multiply_by_inputs=auto  infidelity: divide I by (x - baseline) (auto: for methods\n"
	"                        whose maps are multiplied by x - baseline, as Captum)\n"
	"  perturb_radius=0.02   max_sensitivity: radius of the L-inf ball\n"
	"  perturbations=FILE    a stream whose tensor 'perturbations' [S, N, C, ...] holds the\n"
	"                        perturbations (I of infidelity, d of max_sensitivity)\n"
	"  seed=0                seed of the perturbations\n"
	"  sigma=1.5             ssim: Gaussian window\n"
	"  ssim_normalise=minmax ssim: rescale each map to [0, 1] first (or none)\n"
	"  topk=10               topk_iou: percentage of elements\n"
	"  n_steps=20            deletion / insertion: fractions 0, 1/n, ..., 1\n"
	"  baseline=0            deletion / insertion: value of removed elements\n"
	"\n"
	"Options:\n"
	"  -m, --model FILE        TorchScript model giving per-class scores [N, C]\n"
	"      --metric LIST       metrics, comma-separated\n"
	"      --mask FILE         ground truth: NIfTI / PNG / NPY (read like esg-load, with the\n"
	"                          record's esg.axes) or a stream (tensor 'mask' or the only one)\n"
	"      --param KEY=VALUE   metric parameter (repeatable)\n"
	"      --format FMT        tsv (default) or jsonl\n"
	"      --curves FILE       write the deletion / insertion curves as TSV\n"
	"      --internal-batch N  at most N inputs per model call (default 8)\n"
	"      --threads N         libtorch threads (default 0: all cores)\n"
	"      --device DEV        cpu (default) or cuda:N\n"
	"      --amp, --amp-dtype D\n"
	"                          the model passes (and re-run methods) in mixed precision,\n"
	"                          as esg-attr --amp (default: float32, even for maps made\n"
	"                          with --amp: a warning says so); recorded in metric_params\n"
	"  -o, --output FILE       write the table here atomically instead of stdout\n"
	CLI_TIMEOUT_HELP("   ", "                          ")
	"  -h, --help              show this help\n"
	"      --version           show the version\n"
	"\n"
	CLI_EXIT_STATUS_HELP;

enum { OPT_AMP = 0x7e10, OPT_AMP_DTYPE }; /* mixed precision (--amp) */
enum { OPT_METRIC = 256, OPT_MASK, OPT_PARAM, OPT_FORMAT, OPT_CURVES, OPT_IBATCH, OPT_THREADS,
       OPT_DEVICE, OPT_VERSION };

static const struct option LONGOPTS[] = {
	{ "model", required_argument, NULL, 'm' },
	{ "metric", required_argument, NULL, OPT_METRIC },
	{ "mask", required_argument, NULL, OPT_MASK },
	{ "param", required_argument, NULL, OPT_PARAM },
	{ "format", required_argument, NULL, OPT_FORMAT },
	{ "curves", required_argument, NULL, OPT_CURVES },
	{ "internal-batch", required_argument, NULL, OPT_IBATCH },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "amp", no_argument, NULL, OPT_AMP },
	{ "amp-dtype", required_argument, NULL, OPT_AMP_DTYPE },
	{ "output", required_argument, NULL, 'o' },
	CLI_TIMEOUT_LONGOPT,
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

enum metric_id {
	M_INFIDELITY, M_SENSITIVITY, M_DELETION, M_INSERTION,
	M_SPEARMAN, M_SPEARMAN_ABS, M_SSIM, M_SSIM_ABS, M_TOPK,
	M_MASS, M_POINTING, M_AUROC, M_COUNT
};
static const char *METRIC_NAMES[M_COUNT] = {
	"infidelity", "max_sensitivity", "deletion", "insertion",
	"spearman", "spearman_abs", "ssim", "ssim_abs", "topk_iou",
	"mass_in_mask", "pointing_game", "auroc"
};
#define NEEDS_MODEL(m) ((m) <= M_INSERTION)
#define IS_SIMILARITY(m) ((m) >= M_SPEARMAN && (m) <= M_TOPK)
#define NEEDS_MASK(m) ((m) >= M_MASS)

/* ---- options and parameters ------------------------------------------ */

typedef struct mparams {
	long n_perturb;
	int perturbation;        /* 0 gaussian, 1 baseline */
	double noise_std;
	int normalize;
	int mbi;                 /* -1 auto, 0, 1 */
	double radius;
	const char *perturbations;
	uint64_t seed;
	double sigma, topk;
	int ssim_minmax;         /* rescale each map to [0, 1] before SSIM */
	long n_steps;
	double fill;
} mparams;

typedef struct opts {
	const char *model, *mask, *out, *curves, *device;
	int want[M_COUNT];
	int order[M_COUNT], n_metrics;
	int jsonl;
	long ibatch, threads;
	esg_amp amp;
	char **in;
	int n_in;
	mparams p;
} opts;

static int parse_bool(const char *key, const char *v)
{
	if (!strcmp(v, "true") || !strcmp(v, "1"))
		return 1;
	if (!strcmp(v, "false") || !strcmp(v, "0"))
		return 0;
	cli_usage("--param %s: '%s' is not true or false", key, v);
}

static void set_param(mparams *p, const char *kv)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv)
		cli_usage("--param '%s': expected KEY=VALUE", kv);
	char key[64];
	snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
	const char *v = eq + 1;
	char opt[80];
	snprintf(opt, sizeof opt, "--param %s", key);
	if (!strcmp(key, "n_perturb_samples"))
		p->n_perturb = cli_long(opt, v, 1, 1000000);
	else if (!strcmp(key, "perturbation")) {
		if (strcmp(v, "gaussian") && strcmp(v, "baseline"))
			cli_usage("--param perturbation: '%s' is not gaussian or baseline", v);
		p->perturbation = !strcmp(v, "baseline");
	} else if (!strcmp(key, "noise_std")) {
		p->noise_std = cli_double(opt, v);
		if (!(p->noise_std >= 0))
			cli_usage("--param noise_std: must be >= 0");
	} else if (!strcmp(key, "normalize"))
		p->normalize = parse_bool(key, v);
	else if (!strcmp(key, "multiply_by_inputs"))
		p->mbi = !strcmp(v, "auto") ? -1 : parse_bool(key, v);
	else if (!strcmp(key, "perturb_radius")) {
		p->radius = cli_double(opt, v);
		if (!(p->radius >= 0))
			cli_usage("--param perturb_radius: must be >= 0");
	} else if (!strcmp(key, "perturbations"))
		p->perturbations = v;
	else if (!strcmp(key, "seed"))
		p->seed = (uint64_t)cli_long(opt, v, 0, 0x7fffffffffffffffL);
	else if (!strcmp(key, "sigma")) {
		p->sigma = cli_double(opt, v);
		if (!(p->sigma > 0))
			cli_usage("--param sigma: must be > 0");
	} else if (!strcmp(key, "ssim_normalise")) {
		if (strcmp(v, "minmax") && strcmp(v, "none"))
			cli_usage("--param ssim_normalise: '%s' is not minmax or none", v);
		p->ssim_minmax = !strcmp(v, "minmax");
	} else if (!strcmp(key, "topk")) {
		p->topk = cli_double(opt, v);
		if (!(p->topk > 0 && p->topk <= 100))
			cli_usage("--param topk: a percentage in (0, 100], not '%s'", v);
	} else if (!strcmp(key, "n_steps"))
		p->n_steps = cli_long(opt, v, 1, 100000);
	else if (!strcmp(key, "baseline"))
		p->fill = cli_double(opt, v);
	else
		cli_usage("--param: unknown key '%s' (see esg-metric --help)", key);
}

static void parse(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->device = "cpu";
	o->ibatch = ESG_DEFAULT_INTERNAL_BATCH;
	o->p = (mparams){ .n_perturb = 10, .noise_std = 0.003, .mbi = -1, .radius = 0.02,
			  .sigma = 1.5, .ssim_minmax = 1, .topk = 10, .n_steps = 20 };
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:o:h", LONGOPTS, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'o': o->out = optarg; break;
		case OPT_METRIC: {
			char *dup = strdup(optarg), *save = NULL;
			if (!dup)
				cli_die(EXIT_RUNTIME, "out of memory");
			for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				int k = -1;
				for (int i = 0; i < M_COUNT; i++)
					if (!strcmp(t, METRIC_NAMES[i]))
						k = i;
				if (!strcmp(t, "sensitivity_max"))
					k = M_SENSITIVITY;
				if (k < 0)
					cli_usage("--metric: unknown metric '%s' (see esg-metric --help)", t);
				if (!o->want[k])
					o->order[o->n_metrics++] = k;
				o->want[k] = 1;
			}
			free(dup);
			break;
		}
		case OPT_MASK: o->mask = optarg; break;
		case OPT_PARAM: set_param(&o->p, optarg); break;
		case OPT_FORMAT:
			if (strcmp(optarg, "tsv") && strcmp(optarg, "jsonl"))
				cli_usage("--format: '%s' is not tsv or jsonl", optarg);
			o->jsonl = !strcmp(optarg, "jsonl");
			break;
		case OPT_CURVES: o->curves = optarg; break;
		case OPT_IBATCH: o->ibatch = cli_long("--internal-batch", optarg, 1, 1L << 20); break;
		case OPT_THREADS: o->threads = cli_long("--threads", optarg, 0, 4096); break;
		case OPT_DEVICE: o->device = optarg; break;
		case OPT_AMP: cli_amp_option(&o->amp, NULL); break;
		case OPT_AMP_DTYPE: cli_amp_option(&o->amp, optarg); break;
		case CLI_OPT_TIMEOUT: cli_timeout_option(optarg); break;
		case 'h': cli_help(USAGE);
		case OPT_VERSION: cli_version();
		case ':': cli_usage("option '%s' needs a value", argv[optind - 1]);
		default: cli_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	o->in = argv + optind;
	o->n_in = argc - optind;
	if (!o->n_metrics)
		cli_usage("no metric: give --metric NAME[,NAME...]");
	int model = 0, sim = 0;
	for (int i = 0; i < M_COUNT; i++) {
		model |= o->want[i] && NEEDS_MODEL(i);
		sim |= o->want[i] && IS_SIMILARITY(i);
	}
	if (o->amp && !model)
		cli_usage("--amp: none of the metrics runs the model");
	if (model && !o->model)
		cli_usage("metric %s needs the model: give -m MODEL",
			  METRIC_NAMES[o->want[M_INFIDELITY] ? M_INFIDELITY : o->want[M_SENSITIVITY] ?
				       M_SENSITIVITY : o->want[M_DELETION] ? M_DELETION : M_INSERTION]);
	if (sim && o->n_in < 2)
		cli_usage("similarity metrics compare maps: give the original stream and at least one more");
	if (o->curves && !o->want[M_DELETION] && !o->want[M_INSERTION])
		cli_usage("--curves: needs --metric deletion or insertion");
	for (int i = 0; i < o->n_in; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(o->in[i], "-") && !strcmp(o->in[j], "-"))
				cli_usage("stdin ('-') given twice");
}

/* ---- the table ---------------------------------------------------------- */

typedef struct out_ctx {
	FILE *f, *curves;
	int jsonl;
} out_ctx;

/* A row's record context. */
typedef struct rowctx {
	const char *source, *method, *params;
	size_t record;
} rowctx;

static void tsv_field(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc(*s == '\t' || *s == '\n' ? ' ' : *s, f);
}

/* The model's precision under --amp ("bf16", "fp16"), NULL in float32: the
 * model metrics record it in their metric_params. */
static const char *g_amp;

static void emit(out_ctx *oc, const rowctx *rc, int64_t item, long long target, const char *metric,
		 double value, const char *mparams_json)
{
	char with_amp[1400];
	if (g_amp && (!strcmp(metric, "infidelity") || !strcmp(metric, "max_sensitivity") ||
		      !strcmp(metric, "deletion") || !strcmp(metric, "insertion")) &&
	    mparams_json[0] == '{') {
		snprintf(with_amp, sizeof with_amp, "{\"amp\":\"%s\"%s%s", g_amp,
			 mparams_json[1] == '}' ? "" : ",", mparams_json + 1);
		mparams_json = with_amp;
	}
	if (oc->jsonl) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "source", rc->source);
		cJSON_AddNumberToObject(o, "record", (double)rc->record);
		cJSON_AddNumberToObject(o, "item", (double)item);
		cJSON_AddStringToObject(o, "method", rc->method);
		cJSON *pj = cJSON_Parse(rc->params);
		cJSON_AddItemToObject(o, "params", pj ? pj : cJSON_CreateString(rc->params));
		if (target >= 0)
			cJSON_AddNumberToObject(o, "target", (double)target);
		else
			cJSON_AddNullToObject(o, "target");
		cJSON_AddStringToObject(o, "metric", metric);
		if (isfinite(value))
			cJSON_AddNumberToObject(o, "value", value);
		else
			cJSON_AddNullToObject(o, "value");
		cJSON *mj = cJSON_Parse(mparams_json);
		cJSON_AddItemToObject(o, "metric_params", mj ? mj : cJSON_CreateObject());
		char *s = cJSON_PrintUnformatted(o);
		if (!s)
			cli_die(EXIT_RUNTIME, "out of memory");
		fprintf(oc->f, "%s\n", s);
		free(s);
		cJSON_Delete(o);
		return;
	}
	tsv_field(oc->f, rc->source);
	fprintf(oc->f, "\t%zu\t%lld\t", rc->record, (long long)item);
	tsv_field(oc->f, rc->method);
	fputc('\t', oc->f);
	tsv_field(oc->f, rc->params);
	if (target >= 0)
		fprintf(oc->f, "\t%lld\t%s\t", target, metric);
	else
		fprintf(oc->f, "\t\t%s\t", metric);
	if (isfinite(value))
		fprintf(oc->f, "%.9g\t", value);
	else
		fprintf(oc->f, "nan\t");
	tsv_field(oc->f, mparams_json);
	fputc('\n', oc->f);
}

/* ---- record helpers ------------------------------------------------------ */

typedef struct rec {
	esg_record *r;
	const char *src;
	size_t index;
	float *x, *a;            /* image, attribution (F32 copies) */
	int ndim, andim;
	int64_t shape[ESG_MAX_DIMS], ashape[ESG_MAX_DIMS];
	int64_t N, numel, anumel;
	int64_t *target;         /* N, or NULL if the record has no esg.target */
	int per_patch;           /* esg-attr --patch without --target: no one target */
} rec;

noreturn static void die_rec(const rec *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
noreturn static void die_rec(const rec *R, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	cli_die(EXIT_RUNTIME, "%s: record %zu: %s", R->src, R->index + 1, msg);
}

static void rec_open(rec *R, esg_record *r, const char *src, size_t index, int need_image)
{
	memset(R, 0, sizeof *R);
	R->r = r;
	R->src = src;
	R->index = index;
	esg_tensor *a = esg_record_get(r, "attribution");
	if (!a)
		die_rec(R, "%s (run esg-attr first)", esg_error());
	R->andim = a->ndim;
	memcpy(R->ashape, a->shape, sizeof a->shape);
	R->anumel = esg_tensor_numel(a);
	if (a->ndim < 1 || a->shape[0] < 1)
		die_rec(R, "tensor 'attribution' must be [N, ...] with N >= 1");
	R->a = esg_tensor_to_f32(a);
	if (!R->a)
		cli_die_lib();
	R->N = a->shape[0];
	esg_tensor *x = esg_record_find(r, "image");
	if (x) {
		R->ndim = x->ndim;
		memcpy(R->shape, x->shape, sizeof x->shape);
		R->numel = esg_tensor_numel(x);
		R->x = esg_tensor_to_f32(x);
		if (!R->x)
			cli_die_lib();
	} else if (need_image) {
		die_rec(R, "record has no tensor 'image'");
	}
	const char *t = esg_meta_get(r, "esg.target");
	R->per_patch = t && !strcmp(t, "per-patch");
	if (t && !R->per_patch) {
		R->target = malloc((size_t)R->N * sizeof *R->target);
		cJSON *j = cJSON_Parse(t);
		int okj = j && (cJSON_IsNumber(j) || (cJSON_IsArray(j) && cJSON_GetArraySize(j) == R->N));
		for (int64_t b = 0; okj && b < R->N; b++) {
			cJSON *v = cJSON_IsNumber(j) ? j : cJSON_GetArrayItem(j, (int)b);
			okj = cJSON_IsNumber(v) && v->valuedouble >= 0;
			R->target[b] = okj ? (int64_t)v->valuedouble : 0;
		}
		cJSON_Delete(j);
		if (!okj)
			die_rec(R, "esg.target '%s' is not a class index or an array of %lld", t,
				(long long)R->N);
	}
}

static void rec_close(rec *R)
{
	free(R->x);
	free(R->a);
	free(R->target);
	esg_record_free(R->r);
}

/* The attribution must be shaped like the image for the model metrics. */
static void need_input_shaped(const rec *R, const char *metric)
{
	if (!R->x)
		die_rec(R, "%s: record has no tensor 'image'", metric);
	if (!R->target)
		die_rec(R, "%s: record has %s", metric, R->per_patch ?
			"a target per patch (esg-attr --patch without --target), not one to score" :
			"no esg.target");
	char s1[128], s2[128];
	esg_shape_str(R->ndim, R->shape, s1, sizeof s1);
	esg_shape_str(R->andim, R->ashape, s2, sizeof s2);
	if (R->ndim != R->andim || memcmp(R->shape, R->ashape, (size_t)R->ndim * sizeof *R->shape))
		die_rec(R, "%s needs an attribution shaped like the image (%s), not %s "
			"(upsample layer maps: esg-attr --upsample)", metric, s1, s2);
}

/* ---- the model side ------------------------------------------------------ */

typedef struct ctx {
	const opts *o;
	esg_model *model;
	char sha[65];                /* of -m, to warn about maps of another model */
	int warned;
	int warned_amp;              /* maps made with another precision */
	out_ctx oc;
	esg_tensor *pert;            /* --param perturbations: [S, N, C, ...] */
	esg_tensor *mask_t;          /* stream mask (F32) */
	esg_image *mask_img;         /* NIfTI / PNG / NPY mask */
	int64_t classes;
} ctx;

/* Scores output[b, target[b]] of n inputs (each `item` floats) in chunks. */
static void scores(ctx *C, const rec *R, const float *xs, int64_t n, const int64_t *tg, double *s)
{
	int64_t item = R->numel / R->N;
	int64_t sh[ESG_MAX_DIMS];
	memcpy(sh, R->shape, sizeof sh);
	for (int64_t i0 = 0; i0 < n; i0 += C->o->ibatch) {
		sh[0] = n - i0 < C->o->ibatch ? n - i0 : C->o->ibatch;
		esg_tensor *out = NULL;
		if (esg_model_forward(C->model, xs + i0 * item, R->ndim, sh, &out))
			die_rec(R, "model: %s", esg_error());
		if (out->ndim != 2 || out->shape[0] != sh[0]) {
			char s[128];
			esg_shape_str(out->ndim, out->shape, s, sizeof s);
			die_rec(R, "model output is %s, not per-class scores [N, C]; use the wrapped model "
				"the maps were made with (esg-wrap)", s);
		}
		const float *o = out->data;
		for (int64_t b = 0; b < sh[0]; b++) {
			int64_t t = tg[i0 + b];
			if (t >= out->shape[1])
				die_rec(R, "esg.target %lld is out of range: the model has %lld classes",
					(long long)t, (long long)out->shape[1]);
			s[i0 + b] = o[b * out->shape[1] + t];
		}
		esg_torch_tensor_free(out);
	}
}

/* Perturbation sample s (numel floats): from the file or drawn. */
static void perturbation(ctx *C, const rec *R, int64_t s, esg_rng *rng, int kind, float *buf)
{
	if (C->pert) {
		const float *p = C->pert->data;
		memcpy(buf, p + s * R->numel, (size_t)R->numel * sizeof *buf);
		return;
	}
	for (int64_t i = 0; i < R->numel; i++)
		buf[i] = kind == 0 ? (float)(C->o->p.noise_std * esg_rng_normal(rng)) :
		         kind == 1 ? (float)esg_rng_uniform(rng) :
			 (float)(C->o->p.radius * (2 * esg_rng_uniform(rng) - 1));
}

static int64_t n_samples(ctx *C, const rec *R, const char *metric)
{
	if (!C->pert)
		return C->o->p.n_perturb;
	const esg_tensor *p = C->pert;
	char s1[128], s2[128];
	esg_shape_str(p->ndim, p->shape, s1, sizeof s1);
	esg_shape_str(R->ndim, R->shape, s2, sizeof s2);
	if (p->ndim != R->ndim + 1 || memcmp(p->shape + 1, R->shape, (size_t)R->ndim * sizeof *R->shape))
		die_rec(R, "%s: perturbations %s do not fit the image %s (want [S] + the image's shape)",
			metric, s1, s2);
	return p->shape[0];
}

static cJSON *json_parse_meta(const rec *R, const char *key)
{
	const char *v = esg_meta_get(R->r, key);
	if (!v)
		return NULL;
	cJSON *j = cJSON_Parse(v);
	if (!j)
		die_rec(R, "metadata %s is not JSON: %s", key, v);
	return j;
}

/* The recorded baselines (esg.baseline), built for input x. */
static void record_baselines(const rec *R, const float *x, uint64_t seed, float ***bl, int *n)
{
	cJSON *j = json_parse_meta(R, "esg.baseline");
	int count = j && cJSON_IsArray(j) ? cJSON_GetArraySize(j) : 0;
	for (int i = 0; i < (count ? count : 1); i++) {
		const char *spec = count ? cJSON_GetArrayItem(j, i)->valuestring : "zero";
		esg_baseline b;
		if (!spec || esg_baseline_parse(spec, &b))
			die_rec(R, "esg.baseline: %s", spec ? esg_error() : "not a list of strings");
		if (esg_baseline_build(&b, i, x, R->ndim, R->shape, seed, R->index, bl, n))
			die_rec(R, "baseline %s: %s", spec, esg_error());
		esg_baseline_clear(&b);
	}
	cJSON_Delete(j);
}

static uint64_t meta_u64(const rec *R, const char *key, uint64_t dflt)
{
	const char *v = esg_meta_get(R->r, key);
	return v ? strtoull(v, NULL, 10) : dflt;
}

/* Captum's multiply_by_inputs: maps of these methods carry (x - baseline). */
static int multiplies_by_inputs(const char *method, const char *params)
{
	static const char *const M[] = { "integrated_gradients", "input_x_gradient", "deeplift",
		"deeplift_shap", "gradient_shap", "occlusion", "feature_ablation",
		"shapley_value_sampling", NULL };
	const char *name = method;
	cJSON *j = NULL;
	if (!strcmp(method, "noise_tunnel") && params && (j = cJSON_Parse(params))) {
		cJSON *b = cJSON_GetObjectItem(j, "base");
		if (cJSON_IsString(b))
			name = b->valuestring;
	}
	int r = 0;
	for (int i = 0; M[i]; i++)
		r |= !strcmp(name, M[i]);
	cJSON_Delete(j);
	return r;
}

static void infidelity(ctx *C, const rec *R, const rowctx *rc)
{
	need_input_shaped(R, "infidelity");
	const mparams *p = &C->o->p;
	int64_t S = n_samples(C, R, "infidelity"), N = R->N, item = R->numel / N;
	int mbi = p->mbi >= 0 ? p->mbi : multiplies_by_inputs(rc->method, rc->params);
	float **bl = NULL;
	int nbl = 0;
	float *base = calloc((size_t)R->numel, sizeof *base);
	float *xt = malloc((size_t)R->numel * sizeof *xt), *buf = malloc((size_t)R->numel * sizeof *buf);
	double *fx = malloc((size_t)N * sizeof *fx), *fp = malloc((size_t)N * sizeof *fp);
	double *ia = calloc((size_t)(S * N), sizeof *ia), *df = calloc((size_t)(S * N), sizeof *df);
	if (!base || !xt || !buf || !fx || !fp || !ia || !df)
		cli_die(EXIT_RUNTIME, "out of memory");
	if (mbi || p->perturbation == 1) {
		/* the baseline: the recorded one (the mean of a distribution) */
		record_baselines(R, R->x, meta_u64(R, "esg.seed", 0), &bl, &nbl);
		for (int k = 0; k < nbl; k++) {
			for (int64_t i = 0; i < R->numel; i++)
				base[i] += bl[k][i] / (float)nbl;
			free(bl[k]);
		}
		free(bl);
	}
	scores(C, R, R->x, N, R->target, fx);
	esg_rng rng;
	esg_rng_init(&rng, p->seed, R->index, 0x494e4644 /* "INFD" */);
	for (int64_t s = 0; s < S; s++) {
		/* buf = I (what is subtracted from x) */
		perturbation(C, R, s, &rng, p->perturbation == 1 ? 1 : 0, buf);
		if (!C->pert && p->perturbation == 1)
			for (int64_t i = 0; i < R->numel; i++)
				buf[i] *= R->x[i] - base[i];
		for (int64_t i = 0; i < R->numel; i++)
			xt[i] = R->x[i] - buf[i];
		scores(C, R, xt, N, R->target, fp);
		for (int64_t b = 0; b < N; b++) {
			double acc = 0;
			for (int64_t i = b * item; i < (b + 1) * item; i++) {
				double I = buf[i];
				if (mbi) {  /* Captum's safe_div(x - x~, x - baseline), default 1 */
					double d = (double)R->x[i] - base[i];
					I = I / (d != 0 ? d : 1);
				}
				acc += (double)R->a[i] * I;
			}
			ia[s * N + b] = acc;
			df[s * N + b] = fx[b] - fp[b];
		}
	}
	char mp[256];
	snprintf(mp, sizeof mp, "{\"n_perturb_samples\":%lld,\"perturbation\":\"%s\",\"noise_std\":%.9g,"
		 "\"normalize\":%s,\"multiply_by_inputs\":%s,\"seed\":%llu}", (long long)S,
		 C->pert ? "file" : p->perturbation ? "baseline" : "gaussian", p->noise_std,
		 p->normalize ? "true" : "false", mbi ? "true" : "false", (unsigned long long)p->seed);
	for (int64_t b = 0; b < N; b++) {
		double beta = 1;
		if (p->normalize) {
			double num = 0, den = 0;
			for (int64_t s = 0; s < S; s++) {
				num += ia[s * N + b] * df[s * N + b];
				den += ia[s * N + b] * ia[s * N + b];
			}
			beta = den > 0 ? num / den : 0;
		}
		double v = 0;
		for (int64_t s = 0; s < S; s++) {
			double e = beta * ia[s * N + b] - df[s * N + b];
			v += e * e;
		}
		emit(&C->oc, rc, b, R->target[b], "infidelity", v / (double)S, mp);
	}
	free(base);
	free(xt);
	free(buf);
	free(fx);
	free(fp);
	free(ia);
	free(df);
}

/* Re-run the recorded method at x (the same parameters, target, seed,
 * baselines and layer) into *out (anumel floats). */
typedef struct rerun {
	const esg_method *method;
	esg_params params;
	uint64_t seed;
	int ibatch;
	const char *layer;
	int layer_call, upsample;
} rerun;

static void rerun_setup(const rec *R, rerun *U)
{
	memset(U, 0, sizeof *U);
	const char *name = esg_meta_get(R->r, "esg.method");
	if (!name)
		die_rec(R, "max_sensitivity: record has no esg.method");
	const esg_method_alias *alias = NULL;
	U->method = esg_method_find(name, &alias);
	if (!U->method)
		die_rec(R, "max_sensitivity: %s", esg_error());
	cJSON *j = json_parse_meta(R, "esg.params");
	char *kv[ESG_MAX_PARAMS];
	int n = 0;
	for (cJSON *e = j ? j->child : NULL; e && n < ESG_MAX_PARAMS; e = e->next) {
		char val[512];
		if (cJSON_IsBool(e))
			snprintf(val, sizeof val, "%s", cJSON_IsTrue(e) ? "true" : "false");
		else if (cJSON_IsNumber(e))
			snprintf(val, sizeof val, "%.17g", e->valuedouble);
		else if (cJSON_IsString(e))
			snprintf(val, sizeof val, "%s", e->valuestring);
		else
			die_rec(R, "esg.params: '%s' is neither a number, a string nor a boolean", e->string);
		size_t len = strlen(e->string) + strlen(val) + 2;
		kv[n] = malloc(len);
		snprintf(kv[n++], len, "%s=%s", e->string, val);
	}
	cJSON_Delete(j);
	if (esg_params_resolve(U->method, NULL, kv, n, &U->params))
		die_rec(R, "max_sensitivity: recorded parameters: %s", esg_error());
	for (int i = 0; i < n; i++)
		free(kv[i]);
	U->seed = meta_u64(R, "esg.seed", 0);
	U->ibatch = (int)meta_u64(R, "esg.internal_batch", ESG_DEFAULT_INTERNAL_BATCH);
	if (U->ibatch < 1)
		U->ibatch = ESG_DEFAULT_INTERNAL_BATCH;
	U->layer = esg_meta_get(R->r, "esg.layer");
	U->layer_call = (int)meta_u64(R, "esg.layer_call", 0);
	const char *up = esg_meta_get(R->r, "esg.upsample");
	U->upsample = !U->layer ? 0 : up && strcmp(up, "none") ? 1 : 2;
}

static void rerun_at(ctx *C, const rec *R, rerun *U, const float *x, float *out)
{
	float **bl = NULL;
	int nbl = 0;
	const esg_method *need = U->params.base ? U->params.base : U->method;
	if (need->baseline)
		record_baselines(R, x, U->seed, &bl, &nbl);
	float *attr = malloc((size_t)R->numel * sizeof *attr);
	double *delta = calloc((size_t)R->N, sizeof *delta);
	if (!attr || !delta)
		cli_die(EXIT_RUNTIME, "out of memory");
	esg_attr_job job = { 0 };
	job.model = C->model;
	job.method = U->method;
	job.params = &U->params;
	job.ndim = R->ndim;
	memcpy(job.shape, R->shape, sizeof job.shape);
	job.x = x;
	job.target = R->target;
	job.baselines = bl;
	job.n_baselines = nbl;
	job.internal_batch = U->ibatch;
	job.seed = U->seed;
	job.record = R->index;
	job.attr = attr;
	job.delta = delta;
	job.axes = esg_meta_get(R->r, "esg.axes");
	job.layer = U->layer;
	job.layer_call = U->layer_call;
	job.upsample = U->upsample;
	if (esg_attr_run(&job))
		die_rec(R, "max_sensitivity: re-running %s: %s", U->method->name, esg_error());
	const float *res = job.layer_attr ? job.layer_attr : attr;
	int64_t n = 1;
	for (int d = 0; d < (job.layer_attr ? job.out_ndim : R->ndim); d++)
		n *= job.layer_attr ? job.out_shape[d] : R->shape[d];
	if (n != R->anumel)
		die_rec(R, "max_sensitivity: the re-run gives %lld values, the record's attribution has %lld",
			(long long)n, (long long)R->anumel);
	memcpy(out, res, (size_t)n * sizeof *out);
	free(job.layer_attr);
	free(attr);
	free(delta);
	for (int k = 0; k < nbl; k++)
		free(bl[k]);
	free(bl);
}

static void max_sensitivity(ctx *C, const rec *R, const rowctx *rc)
{
	if (!R->x)
		die_rec(R, "max_sensitivity: record has no tensor 'image'");
	if (!R->target)
		die_rec(R, "max_sensitivity: record has %s", R->per_patch ?
			"a target per patch (esg-attr --patch without --target), not one to score" :
			"no esg.target");
	/* the re-run knows no patches: it would explain another map */
	if (esg_meta_get(R->r, "esg.patch"))
		die_rec(R, "max_sensitivity: the map was made patch by patch (esg.patch); "
			"re-running it is not supported");
	rerun U;
	rerun_setup(R, &U);
	int64_t S = n_samples(C, R, "max_sensitivity"), N = R->N, aitem = R->anumel / N;
	float *xp = malloc((size_t)R->numel * sizeof *xp), *phi = malloc((size_t)R->anumel * sizeof *phi);
	double *best = calloc((size_t)N, sizeof *best);
	if (!xp || !phi || !best)
		cli_die(EXIT_RUNTIME, "out of memory");
	esg_rng rng;
	esg_rng_init(&rng, C->o->p.seed, R->index, 0x53454e53 /* "SENS" */);
	for (int64_t s = 0; s < S; s++) {
		perturbation(C, R, s, &rng, 2, xp);
		for (int64_t i = 0; i < R->numel; i++)
			xp[i] += R->x[i];
		rerun_at(C, R, &U, xp, phi);
		for (int64_t b = 0; b < N; b++) {
			double num = 0, den = 0;
			for (int64_t i = b * aitem; i < (b + 1) * aitem; i++) {
				double d = (double)R->a[i] - phi[i];
				num += d * d;
				den += (double)R->a[i] * R->a[i];
			}
			double v = sqrt(num) / (den > 0 ? sqrt(den) : 1);
			if (v > best[b])
				best[b] = v;
		}
	}
	char mp[256];
	snprintf(mp, sizeof mp, "{\"n_perturb_samples\":%lld,\"perturb_radius\":%.9g,\"norm\":\"fro\","
		 "\"seed\":%llu%s}", (long long)S, C->o->p.radius, (unsigned long long)C->o->p.seed,
		 C->pert ? ",\"perturbations\":\"file\"" : "");
	for (int64_t b = 0; b < N; b++)
		emit(&C->oc, rc, b, R->target[b], "max_sensitivity", best[b], mp);
	esg_params_clear(&U.params);
	free(xp);
	free(phi);
	free(best);
}

/* Deletion (insert = 0) or insertion (insert = 1) curve of every item. */
static void curve(ctx *C, const rec *R, const rowctx *rc, int insert)
{
	const char *name = insert ? "insertion" : "deletion";
	need_input_shaped(R, name);
	const mparams *p = &C->o->p;
	int64_t N = R->N, item = R->numel / N, K = p->n_steps + 1;
	float *xs = malloc((size_t)(K * item) * sizeof *xs);
	int64_t *idx = malloc((size_t)item * sizeof *idx), *tg = malloc((size_t)K * sizeof *tg);
	double *f = malloc((size_t)K * sizeof *f), *y = malloc((size_t)K * sizeof *y);
	if (!xs || !idx || !tg || !f || !y)
		cli_die(EXIT_RUNTIME, "out of memory");
	char mp[160];
	snprintf(mp, sizeof mp, "{\"n_steps\":%ld,\"baseline\":%.9g,\"order\":\"attribution descending\"}",
		 p->n_steps, p->fill);
	for (int64_t b = 0; b < N; b++) {
		const float *x = R->x + b * item;
		if (esg_argsort_desc(R->a + b * item, item, idx))
			cli_die_lib();
		for (int64_t k = 0; k < K; k++) {
			float *xk = xs + k * item;
			int64_t cnt = (int64_t)llround((double)k / (double)p->n_steps * (double)item);
			for (int64_t i = 0; i < item; i++)
				xk[i] = insert ? (float)p->fill : x[i];
			for (int64_t i = 0; i < cnt; i++)
				xk[idx[i]] = insert ? x[idx[i]] : (float)p->fill;
			tg[k] = R->target[b];
		}
		scores(C, R, xs, K, tg, f);
		/* normalised: 1 at the full input, 0 at the full baseline */
		double full = insert ? f[K - 1] : f[0], none = insert ? f[0] : f[K - 1];
		for (int64_t k = 0; k < K; k++)
			y[k] = full != none ? (f[k] - none) / (full - none) : NAN;
		emit(&C->oc, rc, b, R->target[b], name, esg_trapz_unit(y, (int)K), mp);
		if (C->oc.curves)
			for (int64_t k = 0; k < K; k++) {
				tsv_field(C->oc.curves, rc->source);
				fprintf(C->oc.curves, "\t%zu\t%lld\t%s\t%lld\t%s\t%.9g\t%.9g\t%.9g\n", rc->record,
					(long long)b, rc->method, (long long)R->target[b], name,
					(double)k / (double)p->n_steps, f[k], y[k]);
			}
	}
	free(xs);
	free(idx);
	free(tg);
	free(f);
	free(y);
}

/* ---- similarity and ground truth ---------------------------------------- */

/* Rescale to [0, 1] by the map's own range (all 0 if constant). */
static void minmax(float *v, int64_t n)
{
	float lo = v[0], hi = v[0];
	for (int64_t i = 1; i < n; i++) {
		lo = v[i] < lo ? v[i] : lo;
		hi = v[i] > hi ? v[i] : hi;
	}
	for (int64_t i = 0; i < n; i++)
		v[i] = hi > lo ? (float)(((double)v[i] - lo) / ((double)hi - lo)) : 0;
}

static void similarity(ctx *C, const rec *R, const rec *ref, const rowctx *rc, int metric)
{
	char s1[128], s2[128];
	esg_shape_str(R->andim, R->ashape, s1, sizeof s1);
	esg_shape_str(ref->andim, ref->ashape, s2, sizeof s2);
	if (R->andim != ref->andim || memcmp(R->ashape, ref->ashape, (size_t)R->andim * sizeof *R->ashape))
		die_rec(R, "%s: attribution %s differs in shape from the reference's %s (%s)",
			METRIC_NAMES[metric], s1, s2, ref->src);
	int64_t N = R->N, item = R->anumel / N;
	char mp[1200];
	cJSON *refname = cJSON_CreateString(ref->src);
	char *rn = cJSON_PrintUnformatted(refname);
	cJSON_Delete(refname);
	if (metric == M_SSIM || metric == M_SSIM_ABS)
		snprintf(mp, sizeof mp, "{\"reference\":%s,\"sigma\":%.9g,\"K1\":0.01,\"K2\":0.03,"
			 "\"normalise\":\"%s\",\"data_range\":\"maps\"}", rn, C->o->p.sigma,
			 C->o->p.ssim_minmax ? "minmax" : "none");
	else if (metric == M_TOPK)
		snprintf(mp, sizeof mp, "{\"reference\":%s,\"topk\":%.9g}", rn, C->o->p.topk);
	else
		snprintf(mp, sizeof mp, "{\"reference\":%s}", rn);
	free(rn);
	float *ta = NULL, *tb = NULL;
	for (int64_t b = 0; b < N; b++) {
		const float *a = ref->a + b * item, *m = R->a + b * item;
		double v;
		if (metric == M_SPEARMAN || metric == M_SPEARMAN_ABS) {
			v = esg_spearman(a, m, item, metric == M_SPEARMAN_ABS);
		} else if (metric == M_TOPK) {
			v = esg_topk_iou(a, m, item, C->o->p.topk / 100);
		} else {
			int nsp = R->andim - 2;
			if (nsp < 1 || nsp > 3)
				die_rec(R, "%s needs maps [N, C, spatial...] with 1 to 3 spatial axes, not %s",
					METRIC_NAMES[metric], s1);
			int64_t chans = R->ashape[1], per = item / chans;
			if (!ta) {
				ta = malloc((size_t)per * sizeof *ta);
				tb = malloc((size_t)per * sizeof *tb);
				if (!ta || !tb)
					cli_die(EXIT_RUNTIME, "out of memory");
			}
			v = 0;
			for (int64_t c = 0; c < chans; c++) {
				for (int64_t i = 0; i < per; i++) {
					ta[i] = a[c * per + i];
					tb[i] = m[c * per + i];
					if (metric == M_SSIM_ABS) {
						ta[i] = fabsf(ta[i]);
						tb[i] = fabsf(tb[i]);
					}
				}
				if (C->o->p.ssim_minmax) {
					minmax(ta, per);
					minmax(tb, per);
				}
				double sv;
				if (esg_ssim(ta, tb, nsp, R->ashape + 2, C->o->p.sigma, 0, &sv))
					die_rec(R, "%s", esg_error());
				v += sv / (double)chans;
			}
		}
		emit(&C->oc, rc, b, R->target ? R->target[b] : -1, METRIC_NAMES[metric], v, mp);
	}
	free(ta);
	free(tb);
}

/* The mask for a record's attribution: n values per item (broadcast). */
static const float *mask_for(ctx *C, const rec *R, int64_t item, int64_t *mnumel, int64_t *chans)
{
	const float *m = NULL;
	int64_t n = 0;
	esg_tensor *own = esg_record_find(R->r, "mask");
	if (C->o->mask) {
		if (!C->mask_t && !C->mask_img) {
			FILE *f = fopen(C->o->mask, "rb");
			unsigned char mg[4] = { 0 };
			if (!f)
				cli_die(EXIT_RUNTIME, "--mask %s: cannot open: %s", C->o->mask, strerror(errno));
			size_t got = fread(mg, 1, 4, f);
			if (got == 4 && mg[0] == 0x28 && mg[1] == 0xb5 && mg[2] == 0x2f && mg[3] == 0xfd) {
				rewind(f);
				esg_reader *rd = esg_reader_open(f, C->o->mask);
				esg_record *r = NULL;
				if (!rd || esg_reader_next(rd, &r) != 1)
					cli_die(EXIT_RUNTIME, "--mask %s: %s", C->o->mask,
						esg_error()[0] ? esg_error() : "no records");
				esg_tensor *t = esg_record_find(r, "mask");
				if (!t && r->n_tensors == 1)
					t = &r->tensors[0];
				if (!t)
					cli_die(EXIT_RUNTIME, "--mask %s: the first record has no tensor 'mask'",
						C->o->mask);
				C->mask_t = calloc(1, sizeof *C->mask_t);
				C->mask_t->ndim = t->ndim;
				memcpy(C->mask_t->shape, t->shape, sizeof t->shape);
				C->mask_t->data = esg_tensor_to_f32(t);
				esg_record_free(r);
				esg_reader_free(rd);
			} else {
				const char *axes = esg_meta_get(R->r, "esg.axes");
				esg_load_opts lo = { .reverse = axes && !strcmp(axes, "kji") };
				C->mask_img = esg_load_image(C->o->mask, &lo);
				if (!C->mask_img)
					cli_die(EXIT_RUNTIME, "--mask %s: %s", C->o->mask, esg_error());
			}
			fclose(f);
		}
		m = C->mask_t ? C->mask_t->data : C->mask_img->data;
		n = C->mask_t ? esg_tensor_numel(C->mask_t) : C->mask_img->n * C->mask_img->c *
								  esg_image_voxels(C->mask_img);
	} else if (own) {
		static float *owned;   /* the current record's mask */
		free(owned);
		owned = esg_tensor_to_f32(own);
		m = owned;
		n = esg_tensor_numel(own);
	} else {
		die_rec(R, "no mask: give --mask FILE or add a tensor 'mask' to the records");
	}
	/* accepted: one spatial map (all channels), one item, or the whole record */
	int64_t spatial = R->andim >= 2 ? item / R->ashape[1] : item;
	/* where the mask knows its spatial shape, it must be the map's */
	int nsp = R->andim - 2, mnsp = 0;
	const int64_t *mdim = NULL;
	if (C->mask_img && C->o->mask) {
		mnsp = C->mask_img->nsp;
		mdim = C->mask_img->dim;
	} else if (C->mask_t && C->o->mask && C->mask_t->ndim >= nsp) {
		mnsp = nsp;
		mdim = C->mask_t->shape + C->mask_t->ndim - nsp;
	}
	if (mdim && nsp >= 1 && (mnsp != nsp || memcmp(mdim, R->ashape + 2, (size_t)nsp * sizeof *mdim))) {
		char s1[128], s2[128];
		esg_shape_str(mnsp, mdim, s1, sizeof s1);
		esg_shape_str(nsp, R->ashape + 2, s2, sizeof s2);
		die_rec(R, "the mask's spatial shape %s is not the attribution's %s", s1, s2);
	}
	if (n == spatial && R->andim >= 2)
		*chans = R->ashape[1];
	else if (n == item || n == item * R->N)
		*chans = 1;
	else {
		char s[128];
		esg_shape_str(R->andim, R->ashape, s, sizeof s);
		die_rec(R, "the mask has %lld voxels; the attribution %s needs %lld (one map), %lld "
			"(one item) or %lld", (long long)n, s, (long long)spatial, (long long)item,
			(long long)(item * R->N));
	}
	*mnumel = n;
	return m;
}

static void ground_truth(ctx *C, const rec *R, const rowctx *rc, int metric)
{
	int64_t N = R->N, item = R->anumel / N, mn, chans;
	const float *m = mask_for(C, R, item, &mn, &chans);
	float *mm = malloc((size_t)item * sizeof *mm);
	if (!mm)
		cli_die(EXIT_RUNTIME, "out of memory");
	char mp[256];
	snprintf(mp, sizeof mp, "{\"mask\":\"%s\"}", C->o->mask ? "file" : "record");
	for (int64_t b = 0; b < N; b++) {
		const float *mb = mn == item * N ? m + b * item : m;
		for (int64_t c = 0; c < chans; c++)
			memcpy(mm + c * (item / chans), mb, (size_t)(item / chans) * sizeof *mm);
		const float *a = R->a + b * item;
		double v = metric == M_MASS ? esg_mass_in_mask(a, mm, item) :
			   metric == M_POINTING ? esg_pointing_game(a, mm, item) : esg_auroc(a, mm, item);
		emit(&C->oc, rc, b, R->target ? R->target[b] : -1, METRIC_NAMES[metric], v, mp);
	}
	free(mm);
}

/* ---- main ---------------------------------------------------------------- */

static void load_perturbations(ctx *C)
{
	const char *path = C->o->p.perturbations;
	FILE *f = fopen(path, "rb");
	if (!f)
		cli_die(EXIT_RUNTIME, "--param perturbations=%s: cannot open: %s", path, strerror(errno));
	esg_reader *rd = esg_reader_open(f, path);
	esg_record *r = NULL;
	if (!rd || esg_reader_next(rd, &r) != 1)
		cli_die(EXIT_RUNTIME, "--param perturbations=%s: %s", path,
			esg_error()[0] ? esg_error() : "no records");
	esg_tensor *t = esg_record_find(r, "perturbations");
	if (!t && r->n_tensors == 1)
		t = &r->tensors[0];
	if (!t)
		cli_die(EXIT_RUNTIME, "--param perturbations=%s: no tensor 'perturbations'", path);
	C->pert = calloc(1, sizeof *C->pert);
	C->pert->ndim = t->ndim;
	memcpy(C->pert->shape, t->shape, sizeof t->shape);
	C->pert->data = esg_tensor_to_f32(t);
	if (!C->pert->data)
		cli_die_lib();
	esg_record_free(r);
	esg_reader_free(rd);
	fclose(f);
}

static void process(ctx *C, rec *R, const rec *ref)
{
	rowctx rc;
	rc.source = R->src;
	rc.record = R->index;
	rc.method = esg_meta_get(R->r, "esg.method_alias");
	if (!rc.method)
		rc.method = esg_meta_get(R->r, "esg.method");
	if (!rc.method)
		rc.method = "";
	rc.params = esg_meta_get(R->r, "esg.params");
	if (!rc.params)
		rc.params = "{}";
	const char *msha = esg_meta_get(R->r, "esg.model_sha256");
	if (C->model && msha && strcmp(msha, C->sha) && !C->warned) {
		int model_metric = 0;
		for (int q = 0; q < M_COUNT; q++)
			model_metric |= C->o->want[q] && NEEDS_MODEL(q);
		if (model_metric) {
			cli_warn("%s: record %zu was made with another model (%s) than -m %s", R->src,
				 R->index + 1, esg_meta_get(R->r, "esg.model") ? esg_meta_get(R->r, "esg.model") : "?",
				 C->o->model);
			C->warned = 1;
		}
	}
	const char *amp = esg_meta_get(R->r, "esg.amp");
	const char *ours = C->model ? esg_amp_name(esg_model_amp(C->model)) : "off";
	if (C->model && !C->warned_amp && strcmp(amp ? amp : "off", ours)) {
		cli_warn("%s: record %zu was made %s%s%s; the model passes here run %s%s", R->src,
			 R->index + 1, amp ? "with --amp (" : "in float32", amp ? amp : "",
			 amp ? ")" : "", strcmp(ours, "off") ? "in " : "in float32",
			 strcmp(ours, "off") ? ours : "");
		C->warned_amp = 1;
	}
	for (int k = 0; k < C->o->n_metrics; k++) {
		int m = C->o->order[k];
		if (IS_SIMILARITY(m)) {
			if (ref)
				similarity(C, R, ref, &rc, m);
			continue;
		}
		switch (m) {
		case M_INFIDELITY: infidelity(C, R, &rc); break;
		case M_SENSITIVITY: max_sensitivity(C, R, &rc); break;
		case M_DELETION: curve(C, R, &rc, 0); break;
		case M_INSERTION: curve(C, R, &rc, 1); break;
		default: ground_truth(C, R, &rc, m); break;
		}
	}
}

int main(int argc, char **argv)
{
	cli_init("esg-metric", argc, argv);
	opts o;
	parse(argc, argv, &o);
	ctx C;
	memset(&C, 0, sizeof C);
	C.o = &o;
	C.oc.jsonl = o.jsonl;
	if (o.p.perturbations)
		load_perturbations(&C);
	if (o.model) {
		if (esg_torch_set_threads((int)o.threads))
			cli_die_lib();
		C.model = esg_model_load(o.model, o.device);
		if (!C.model)
			cli_die_lib();
		if (o.amp && esg_model_set_amp(C.model, o.amp))
			cli_usage("--amp: %s", esg_error());
		g_amp = o.amp ? esg_amp_name(esg_model_amp(C.model)) : NULL;
		if (esg_sha256_file(o.model, C.sha))
			cli_die(EXIT_RUNTIME, "model: %s", esg_error());
	}
	int sim = 0;
	for (int i = 0; i < M_COUNT; i++)
		sim |= o.want[i] && IS_SIMILARITY(i);

	char *stdin_only[1] = { "-" };
	char **ins = o.n_in ? o.in : stdin_only;
	int n_in = o.n_in ? o.n_in : 1;

	C.oc.f = cli_open_out(o.out, 0);
	if (o.curves) {
		C.oc.curves = cli_open_out(o.curves, 0);
		fprintf(C.oc.curves, "source\trecord\titem\tmethod\ttarget\tcurve\tfraction\tscore\tnormalised\n");
	}
	if (!o.jsonl)
		fprintf(C.oc.f, "source\trecord\titem\tmethod\tparams\ttarget\tmetric\tvalue\tmetric_params\n");

	/* the first input's records are the similarity reference: kept */
	rec *refs = NULL;
	size_t n_refs = 0;
	for (int k = 0; k < n_in; k++) {
		const char *name = cli_in_name(ins[k]);
		FILE *in = cli_open_in(ins[k], 1);
		esg_reader *rd = esg_reader_open(in, name);
		if (!rd)
			cli_die_lib();
		esg_record *r;
		int got;
		size_t i = 0;
		while ((got = esg_reader_next(rd, &r)) == 1) {
			rec R;
			int model_metric = 0;
			for (int q = 0; q < M_COUNT; q++)
				model_metric |= o.want[q] && NEEDS_MODEL(q);
			rec_open(&R, r, name, i, model_metric);
			if (sim && k > 0 && i >= n_refs)
				die_rec(&R, "the reference %s has only %zu records", cli_in_name(ins[0]), n_refs);
			process(&C, &R, sim && k > 0 ? &refs[i] : NULL);
			if (sim && k == 0) {
				rec *t = realloc(refs, (n_refs + 1) * sizeof *refs);
				if (!t)
					cli_die(EXIT_RUNTIME, "out of memory");
				refs = t;
				refs[n_refs++] = R;
			} else {
				rec_close(&R);
			}
			i++;
		}
		if (got < 0)
			cli_die_lib();
		if (i == 0)
			cli_die(EXIT_RUNTIME, "%s: no records (empty input; did the upstream command fail?)", name);
		if (sim && k > 0 && i != n_refs)
			cli_die(EXIT_RUNTIME, "%s has %zu records, the reference %s has %zu", name, i,
				cli_in_name(ins[0]), n_refs);
		esg_reader_free(rd);
		if (in != stdin)
			fclose(in);
	}
	if (C.oc.curves)
		cli_commit_out(C.oc.curves);
	cli_commit_out(C.oc.f);
	for (size_t i = 0; i < n_refs; i++)
		rec_close(&refs[i]);
	free(refs);
	if (C.pert) {
		free(C.pert->data);
		free(C.pert);
	}
	if (C.mask_t) {
		free(C.mask_t->data);
		free(C.mask_t);
	}
	esg_image_free(C.mask_img);
	esg_model_free(C.model);
	return 0;
}
