/* esg-metric - how trustworthy are the maps: infidelity and max-sensitivity
 * (Yeh et al. 2019, as Captum), similarity between maps (randomisation
 * sanity checks), ground-truth scores against a mask, deletion / insertion
 * curves.  Reads records written by esg-attr; writes a tidy table, one row
 * per record x item x metric.  The scores are lib/eval's (eval/eval.h):
 * this file parses options, reads records, calls them and writes rows. */
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
	CLI_IBATCH_HELP("                          ")
	CLI_MEMORY_HELP("   ", "                          ")
	"      --threads N         libtorch threads (default 0: all cores)\n"
	"      --device DEV        cpu (default) or cuda:N\n"
	"      --amp, --amp-dtype D\n"
	"                          the model passes (and re-run methods) in mixed precision,\n"
	"                          as esg-attr --amp (default: float32, even for maps made\n"
	"                          with --amp: a warning says so); recorded in metric_params\n"
	"  -o, --output FILE       write the table here atomically instead of stdout\n"
	CLI_TIMEOUT_HELP("   ", "                          ")
	CLI_NONFINITE_HELP("   ", "                          ")
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
	CLI_NONFINITE_LONGOPT,
	CLI_MEMORY_LONGOPT,
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
	esg_eval_params model;   /* of the model metrics (eval/eval.h) */
	const char *perturbations;  /* the file of model.perturbations */
	double sigma, topk;
	int ssim_minmax;         /* rescale each map to [0, 1] before SSIM */
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
		p->model.n_perturb = cli_long(opt, v, 1, 1000000);
	else if (!strcmp(key, "perturbation")) {
		if (strcmp(v, "gaussian") && strcmp(v, "baseline"))
			cli_usage("--param perturbation: '%s' is not gaussian or baseline", v);
		p->model.perturbation = !strcmp(v, "baseline");
	} else if (!strcmp(key, "noise_std")) {
		p->model.noise_std = cli_double(opt, v);
		if (!(p->model.noise_std >= 0))
			cli_usage("--param noise_std: must be >= 0");
	} else if (!strcmp(key, "normalize"))
		p->model.normalize = parse_bool(key, v);
	else if (!strcmp(key, "multiply_by_inputs"))
		p->model.mbi = !strcmp(v, "auto") ? -1 : parse_bool(key, v);
	else if (!strcmp(key, "perturb_radius")) {
		p->model.radius = cli_double(opt, v);
		if (!(p->model.radius >= 0))
			cli_usage("--param perturb_radius: must be >= 0");
	} else if (!strcmp(key, "perturbations"))
		p->perturbations = v;
	else if (!strcmp(key, "seed"))
		p->model.seed = (uint64_t)cli_long(opt, v, 0, 0x7fffffffffffffffL);
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
		p->model.n_steps = cli_long(opt, v, 1, 100000);
	else if (!strcmp(key, "baseline"))
		p->model.fill = cli_double(opt, v);
	else
		cli_usage("--param: unknown key '%s' (see esg-metric --help)", key);
}

static void parse(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->device = "cpu";
	o->p = (mparams){ .model = ESG_EVAL_PARAMS_INIT, .sigma = 1.5, .ssim_minmax = 1, .topk = 10 };
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
		case OPT_IBATCH: o->ibatch = cli_internal_batch(optarg); break;
		case CLI_OPT_MEMORY: cli_memory_option(optarg); break;
		case OPT_THREADS: o->threads = cli_long("--threads", optarg, 0, 4096); break;
		case OPT_DEVICE: o->device = optarg; break;
		case OPT_AMP: cli_amp_option(&o->amp, NULL); break;
		case OPT_AMP_DTYPE: cli_amp_option(&o->amp, optarg); break;
		case CLI_OPT_TIMEOUT: cli_timeout_option(optarg); break;
		case CLI_OPT_NONFINITE: cli_nonfinite_option(); esg_torch_set_check_finite(0); break;
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
	const char *amp;      /* the model's precision under --amp ("bf16", "fp16"),
	                       * NULL in float32: the model metrics record it */
} out_ctx;

static void tsv_field(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc(*s == '\t' || *s == '\n' ? ' ' : *s, f);
}

static void emit(out_ctx *oc, const esg_eval_record *R, int64_t item, long long target,
		 const char *metric, double value, const char *mparams_json)
{
	char with_amp[1400];
	if (oc->amp && (!strcmp(metric, "infidelity") || !strcmp(metric, "max_sensitivity") ||
			!strcmp(metric, "deletion") || !strcmp(metric, "insertion")) &&
	    mparams_json[0] == '{') {
		snprintf(with_amp, sizeof with_amp, "{\"amp\":\"%s\"%s%s", oc->amp,
			 mparams_json[1] == '}' ? "" : ",", mparams_json + 1);
		mparams_json = with_amp;
	}
	if (oc->jsonl) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "source", R->source);
		cJSON_AddNumberToObject(o, "record", (double)R->index);
		cJSON_AddNumberToObject(o, "item", (double)item);
		cJSON_AddStringToObject(o, "method", R->method);
		cJSON *pj = cJSON_Parse(R->params);
		cJSON_AddItemToObject(o, "params", pj ? pj : cJSON_CreateString(R->params));
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
	tsv_field(oc->f, R->source);
	fprintf(oc->f, "\t%zu\t%lld\t", R->index, (long long)item);
	tsv_field(oc->f, R->method);
	fputc('\t', oc->f);
	tsv_field(oc->f, R->params);
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

/* ---- records ---------------------------------------------------------------- */

noreturn static void die_rec(const esg_eval_record *R, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
noreturn static void die_rec(const esg_eval_record *R, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	cli_die(EXIT_RUNTIME, "%s: record %zu: %s", R->source, R->index + 1, msg);
}

/* The library's message about record R (it does not name the record). */
noreturn static void die_rec_lib(const esg_eval_record *R)
{
	die_rec(R, "%s", esg_error());
}

typedef struct ctx {
	const opts *o;
	esg_eval_model M;            /* -m, for the model metrics */
	char sha[65];                /* of -m, to warn about maps of another model */
	int warned;
	int warned_amp;              /* maps made with another precision */
	out_ctx oc;
	esg_tensor *pert;            /* --param perturbations: [S, N, C, ...] */
	esg_tensor *mask_t;          /* stream mask (F32) */
	esg_image *mask_img;         /* NIfTI / PNG / NPY mask */
} ctx;

/* ---- the model metrics (eval/faithfulness.c, eval/curves.c) --------------- */

static void faithfulness(ctx *C, const esg_eval_record *R, int metric)
{
	double *v = malloc((size_t)R->N * sizeof *v);
	if (!v)
		cli_die(EXIT_RUNTIME, "out of memory");
	char mp[ESG_METRIC_PARAMS_BYTES];
	const esg_eval_params *p = &C->o->p.model;
	if (metric == M_INFIDELITY ? esg_infidelity(&C->M, p, R, v, mp) :
	    esg_max_sensitivity(&C->M, p, R, v, mp))
		die_rec_lib(R);
	for (int64_t b = 0; b < R->N; b++)
		emit(&C->oc, R, b, R->target[b], METRIC_NAMES[metric], v[b], mp);
	free(v);
}

/* Deletion (insert = 0) or insertion (insert = 1): a row per item, and
 * with --curves the curve. */
static void curve(ctx *C, const esg_eval_record *R, int insert)
{
	const char *name = insert ? "insertion" : "deletion";
	const esg_eval_params *p = &C->o->p.model;
	int64_t K = p->n_steps + 1;
	double *score = malloc((size_t)K * sizeof *score), area;
	double *normalised = malloc((size_t)K * sizeof *normalised);
	if (!score || !normalised)
		cli_die(EXIT_RUNTIME, "out of memory");
	char mp[ESG_METRIC_PARAMS_BYTES];
	for (int64_t b = 0; b < R->N; b++) {
		if (esg_curve(&C->M, p, R, insert, b, score, normalised, &area, mp))
			die_rec_lib(R);
		emit(&C->oc, R, b, R->target[b], name, area, mp);
		if (C->oc.curves)
			for (int64_t k = 0; k < K; k++) {
				tsv_field(C->oc.curves, R->source);
				fprintf(C->oc.curves, "\t%zu\t%lld\t%s\t%lld\t%s\t%.9g\t%.9g\t%.9g\n", R->index,
					(long long)b, R->method, (long long)R->target[b], name,
					(double)k / (double)p->n_steps, score[k], normalised[k]);
			}
	}
	free(score);
	free(normalised);
}

/* ---- similarity and ground truth ---------------------------------------- */

static void similarity(ctx *C, const esg_eval_record *R, const esg_eval_record *ref, int metric)
{
	char s1[128], s2[128];
	esg_shape_str(R->andim, R->ashape, s1, sizeof s1);
	esg_shape_str(ref->andim, ref->ashape, s2, sizeof s2);
	if (R->andim != ref->andim || memcmp(R->ashape, ref->ashape, (size_t)R->andim * sizeof *R->ashape))
		die_rec(R, "%s: attribution %s differs in shape from the reference's %s (%s)",
			METRIC_NAMES[metric], s1, s2, ref->source);
	int64_t N = R->N, item = R->anumel / N;
	char mp[1200];
	cJSON *refname = cJSON_CreateString(ref->source);
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
			if (esg_ssim_channels(a, m, R->ashape[1], nsp, R->ashape + 2, C->o->p.sigma,
					      metric == M_SSIM_ABS, C->o->p.ssim_minmax, &v))
				die_rec_lib(R);
		}
		emit(&C->oc, R, b, R->target ? R->target[b] : -1, METRIC_NAMES[metric], v, mp);
	}
}

/* The mask for a record's attribution: n values per item (broadcast). */
static const float *mask_for(ctx *C, const esg_eval_record *R, int64_t item, int64_t *mnumel, int64_t *chans)
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
				cli_check_finite(C->o->mask, 0, t);
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

static void ground_truth(ctx *C, const esg_eval_record *R, int metric)
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
		emit(&C->oc, R, b, R->target ? R->target[b] : -1, METRIC_NAMES[metric], v, mp);
	}
	free(mm);
}

/* ---- main ---------------------------------------------------------------- */

/* --param perturbations=FILE: the tensor 'perturbations' (or the only one)
 * of the stream's first record, as F32. */
static esg_tensor *load_perturbations(const char *path)
{
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
	cli_check_finite(path, 0, t);
	esg_tensor *pert = calloc(1, sizeof *pert);
	if (!pert)
		cli_die(EXIT_RUNTIME, "out of memory");
	pert->ndim = t->ndim;
	memcpy(pert->shape, t->shape, sizeof t->shape);
	pert->data = esg_tensor_to_f32(t);
	if (!pert->data)
		cli_die_lib();
	esg_record_free(r);
	esg_reader_free(rd);
	fclose(f);
	return pert;
}

static int wants_model(const opts *o)
{
	int model = 0;
	for (int q = 0; q < M_COUNT; q++)
		model |= o->want[q] && NEEDS_MODEL(q);
	return model;
}

static int wants_similarity(const opts *o)
{
	int sim = 0;
	for (int q = 0; q < M_COUNT; q++)
		sim |= o->want[q] && IS_SIMILARITY(q);
	return sim;
}

/* Warn (once) about maps made with another model or another precision. */
static void check_provenance(ctx *C, const esg_eval_record *R)
{
	esg_model *model = C->M.model;
	const char *msha = esg_meta_get(R->r, "esg.model_sha256");
	if (model && msha && strcmp(msha, C->sha) && !C->warned && wants_model(C->o)) {
		cli_warn("%s: record %zu was made with another model (%s) than -m %s", R->source,
			 R->index + 1, esg_meta_get(R->r, "esg.model") ? esg_meta_get(R->r, "esg.model") : "?",
			 C->o->model);
		C->warned = 1;
	}
	const char *amp = esg_meta_get(R->r, "esg.amp");
	const char *ours = model ? esg_amp_name(esg_model_amp(model)) : "off";
	if (model && !C->warned_amp && strcmp(amp ? amp : "off", ours)) {
		cli_warn("%s: record %zu was made %s%s%s; the model passes here run %s%s", R->source,
			 R->index + 1, amp ? "with --amp (" : "in float32", amp ? amp : "",
			 amp ? ")" : "", strcmp(ours, "off") ? "in " : "in float32",
			 strcmp(ours, "off") ? ours : "");
		C->warned_amp = 1;
	}
}

static void process(ctx *C, const esg_eval_record *R, const esg_eval_record *ref)
{
	check_provenance(C, R);
	for (int k = 0; k < C->o->n_metrics; k++) {
		int m = C->o->order[k];
		if (IS_SIMILARITY(m)) {
			if (ref)
				similarity(C, R, ref, m);
			continue;
		}
		switch (m) {
		case M_INFIDELITY:
		case M_SENSITIVITY: faithfulness(C, R, m); break;
		case M_DELETION: curve(C, R, 0); break;
		case M_INSERTION: curve(C, R, 1); break;
		default: ground_truth(C, R, m); break;
		}
	}
}

static void open_model(ctx *C, opts *o)
{
	if (esg_torch_set_threads((int)o->threads))
		cli_die_lib();
	/* --internal-batch auto (0): up to the default, fewer when --memory asks */
	esg_torch_set_memory(cli_memory_budget(), !o->ibatch);
	C->M.model = esg_model_load(o->model, o->device);
	if (!C->M.model)
		cli_die_lib();
	C->M.internal_batch = o->ibatch ? o->ibatch : ESG_DEFAULT_INTERNAL_BATCH;
	if (o->amp && esg_model_set_amp(C->M.model, o->amp))
		cli_usage("--amp: %s", esg_error());
	C->oc.amp = o->amp ? esg_amp_name(esg_model_amp(C->M.model)) : NULL;
	if (esg_sha256_file(o->model, C->sha))
		cli_die(EXIT_RUNTIME, "model: %s", esg_error());
}

/* Score every record of every input; the first input's records are kept
 * as the similarity reference of the others. */
static void score_inputs(ctx *C, char **ins, int n_in)
{
	int sim = wants_similarity(C->o), model = wants_model(C->o);
	esg_eval_record *refs = NULL;
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
			cli_check_record_finite(name, i, r);
			esg_eval_record R;
			if (esg_eval_record_open(&R, r, name, i, model))
				die_rec_lib(&R);
			if (sim && k > 0 && i >= n_refs)
				die_rec(&R, "the reference %s has only %zu records", cli_in_name(ins[0]), n_refs);
			process(C, &R, sim && k > 0 ? &refs[i] : NULL);
			if (sim && k == 0) {
				esg_eval_record *t = realloc(refs, (n_refs + 1) * sizeof *refs);
				if (!t)
					cli_die(EXIT_RUNTIME, "out of memory");
				refs = t;
				refs[n_refs++] = R;
			} else {
				esg_eval_record_close(&R);
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
	for (size_t i = 0; i < n_refs; i++)
		esg_eval_record_close(&refs[i]);
	free(refs);
}

static void open_outputs(ctx *C, const opts *o)
{
	C->oc.f = cli_open_out(o->out, 0);
	if (o->curves) {
		C->oc.curves = cli_open_out(o->curves, 0);
		fprintf(C->oc.curves, "source\trecord\titem\tmethod\ttarget\tcurve\tfraction\tscore\tnormalised\n");
	}
	if (!o->jsonl)
		fprintf(C->oc.f, "source\trecord\titem\tmethod\tparams\ttarget\tmetric\tvalue\tmetric_params\n");
}

static void free_tensor(esg_tensor *t)
{
	if (t)
		free(t->data);
	free(t);
}

int main(int argc, char **argv)
{
	cli_init("esg-metric", argc, argv);
	opts o;
	parse(argc, argv, &o);
	ctx C = { .o = &o, .oc.jsonl = o.jsonl };
	if (o.p.perturbations)
		o.p.model.perturbations = C.pert = load_perturbations(o.p.perturbations);
	if (o.model)
		open_model(&C, &o);
	char *stdin_only[1] = { "-" };
	open_outputs(&C, &o);
	score_inputs(&C, o.n_in ? o.in : stdin_only, o.n_in ? o.n_in : 1);
	/* the curves first: a pipeline takes the table (its target) as the sign
	 * that both are complete */
	if (C.oc.curves)
		cli_commit_out(C.oc.curves);
	cli_commit_out(C.oc.f);
	free_tensor(C.pert);
	free_tensor(C.mask_t);
	esg_image_free(C.mask_img);
	esg_model_free(C.M.model);
	return 0;
}
