/* esg-explain - explainability: images optimised through a model to show
 * what a layer or a class has learnt (deepdream, feature_vis, class_model,
 * invert), in the input's geometry. */
#include "attr/attr.h"
#include "cli.h"
#include "explain/explain.h"
#include "stream/stream.h"
#include "shim/esg_torch.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char USAGE[] =
	"Usage: esg-explain -m MODEL --method NAME [--layer L[:K]] [--channel K] [--unit I,J[,K]]\n"
	"                   [--target N] [--param KEY=VALUE]... [--steps N] [--seed S]\n"
	"                   [--threads N] [--device DEV] [-o OUT] [IN | --shape N,C,...]\n"
	"       esg-explain --list-methods\n"
	"\n"
	"Optimise an image through the model to show what a layer, a channel, a unit or a\n"
	"class has learnt, and write one record per input record (or one for --shape) with\n"
	"the tensor 'image' (the optimised image, in the input's geometry: same shape, affine\n"
	"and metadata), 'objective' ([N, steps]: the objective at each step; [1, steps] for a\n"
	"batch optimised together, --param diversity) and, when IN is given, 'input' (IN's\n"
	"image).  esg.objective_initial / esg.objective_final hold the objective for the start\n"
	"and the final image.\n"
	"\n"
	"Methods (esg-explain --list-methods shows their parameters):\n"
	"  deepdream    gradient ascent on the L2 norm of --layer's (or --channel's) activation,\n"
	"               from IN; octaves and jitter (Mordvintsev et al.)\n"
	"  feature_vis  from noise: maximise --channel's mean, --channel at --unit, or the\n"
	"               layer's mean square; pixel / fft parameterisation, transforms (Lucid)\n"
	"  class_model  maximise the score of class --target with L2 decay and blur (Simonyan\n"
	"               et al. 2014); the model must give [N, C] scores (esg-wrap)\n"
	"  invert       reconstruct IN from --layer's representation (Mahendran & Vedaldi 2015)\n"
	"\n"
	"Options:\n"
	"  -m, --model FILE        TorchScript model\n"
	"      --method NAME       deepdream | feature_vis | class_model | invert\n"
	"      --layer NAME[:K]    layer (dotted submodule name; :K its K-th call, 0-based)\n"
	"      --channel K         channel of the layer (deepdream, feature_vis)\n"
	"      --unit I,J[,K]      feature_vis: the unit of --channel at this position of the\n"
	"                          layer's grid (one index per spatial axis)\n"
	"      --target N          class (class_model)\n"
	"      --param KEY=VALUE   method parameter (repeatable)\n"
	"      --steps N           optimiser steps (deepdream: per octave); default: the method's\n"
	"      --label TEXT        the result's name in reports (esg.label; a pipeline's\n"
	"                          explain entry), default: the method\n"
	"      --seed S            seed of the noise and the random transforms (default 0); item\n"
	"                          i of the stream (0-based) uses S + i (a batch optimised\n"
	"                          together, --param diversity: its first item's)\n"
	"      --shape N,C,...     without IN: the image's geometry (feature_vis, class_model)\n"
	CLI_MEMORY_HELP("   ", "                          ")
	"      --threads N         libtorch threads (default 0: all cores)\n"
	"      --device DEV        cpu (default) or cuda:N\n"
	"  -o, --output FILE       write here atomically instead of stdout\n"
	"      --list-methods      list the methods, their parameters and defaults\n"
	CLI_TIMEOUT_HELP("   ", "                          ")
	CLI_NONFINITE_HELP("   ", "                          ")
	"  -h, --help              show this help\n"
	"      --version           show the version\n"
	"\n"
	CLI_EXIT_STATUS_HELP;

enum { OPT_METHOD = 256, OPT_LAYER, OPT_CHANNEL, OPT_UNIT, OPT_TARGET, OPT_PARAM, OPT_STEPS,
       OPT_SEED, OPT_SHAPE, OPT_LABEL, OPT_THREADS, OPT_DEVICE, OPT_LIST_METHODS, OPT_VERSION };

static const struct option LONGOPTS[] = {
	{ "model", required_argument, NULL, 'm' },
	{ "method", required_argument, NULL, OPT_METHOD },
	{ "layer", required_argument, NULL, OPT_LAYER },
	{ "channel", required_argument, NULL, OPT_CHANNEL },
	{ "unit", required_argument, NULL, OPT_UNIT },
	{ "target", required_argument, NULL, OPT_TARGET },
	{ "param", required_argument, NULL, OPT_PARAM },
	{ "steps", required_argument, NULL, OPT_STEPS },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "shape", required_argument, NULL, OPT_SHAPE },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "output", required_argument, NULL, 'o' },
	{ "list-methods", no_argument, NULL, OPT_LIST_METHODS },
	CLI_TIMEOUT_LONGOPT,
	CLI_NONFINITE_LONGOPT,
	CLI_MEMORY_LONGOPT,
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

#define MAX_PARAMS 64

typedef struct opts {
	const char *model, *method, *layer, *device, *out, *in, *shape, *label;
	char layer_name[256];
	char *params[MAX_PARAMS];
	int n_params;
	long threads;
	esg_explain_request rq;
	int ndim;                       /* --shape */
	int64_t dims[ESG_MAX_DIMS];
} opts;

static void list_methods(void)
{
	const esg_explain_method *e;
	for (size_t i = 0; (e = esg_explain_at(i)); i++) {
		printf("%-14s %s (steps %d; %s%s%s%s%s)\n", e->m.name, e->m.summary, e->steps,
		       e->input == ESG_EX_REQUIRED ? "IN" : "IN or --shape",
		       e->layer == ESG_EX_REQUIRED ? ", --layer" : "",
		       e->channel == ESG_EX_OPTIONAL ? ", [--channel" : "",
		       e->channel == ESG_EX_OPTIONAL ? (e->unit == ESG_EX_OPTIONAL ? " [--unit]]" : "]") : "",
		       e->target == ESG_EX_REQUIRED ? ", --target" : "");
		for (const esg_param_spec *p = e->m.params; p && p->key; p++) {
			char kv[96];
			snprintf(kv, sizeof kv, "%s=%s", p->key, p->def);
			printf("    %-28s %s%s%s%s\n", kv, p->help, p->choices ? " [" : "",
			       p->choices ? p->choices : "", p->choices ? "]" : "");
		}
	}
	cli_finish_stdout();
	exit(0);
}

/* "I,J[,K]" or "N,C,..." into v; returns the count. */
static int parse_list(const char *opt, const char *s, int64_t *v, long lo)
{
	char *dup = strdup(s), *save = NULL;
	int n = 0;
	if (!dup)
		cli_die(EXIT_RUNTIME, "out of memory");
	for (char *t = strtok_r(dup, ",x", &save); t; t = strtok_r(NULL, ",x", &save)) {
		if (n == ESG_MAX_DIMS)
			cli_usage("%s: more than %d values", opt, ESG_MAX_DIMS);
		v[n++] = cli_long(opt, t, lo, 1L << 20);
	}
	free(dup);
	if (!n)
		cli_usage("%s: no values in '%s'", opt, s);
	return n;
}

static void parse(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->device = "cpu";
	o->rq.channel = -1;
	o->rq.target = -1;
	o->rq.steps = -1;
	int c, list = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:o:h", LONGOPTS, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'o': o->out = optarg; break;
		case OPT_METHOD: o->method = optarg; break;
		case OPT_LAYER: o->layer = optarg; break;
		case OPT_CHANNEL: o->rq.channel = (int)cli_long("--channel", optarg, 0, 1L << 30); break;
		case OPT_UNIT: o->rq.n_unit = parse_list("--unit", optarg, o->rq.unit, 0); break;
		case OPT_TARGET: o->rq.target = cli_long("--target", optarg, 0, 1L << 30); break;
		case OPT_STEPS: o->rq.steps = (int)cli_long("--steps", optarg, 0, 10000000); break;
		case OPT_SHAPE: o->shape = optarg; break;
		case OPT_LABEL:
			if (!optarg[0])
				cli_usage("--label: must not be empty");
			o->label = optarg;
			break;
		case OPT_PARAM:
			if (o->n_params == MAX_PARAMS)
				cli_usage("too many --param options");
			o->params[o->n_params++] = optarg;
			break;
		case OPT_SEED: {
			char *end;
			unsigned long long s = strtoull(optarg, &end, 10);
			if (end == optarg || *end || optarg[0] == '-')
				cli_usage("--seed: '%s' is not a non-negative integer", optarg);
			o->rq.seed = s;
			break;
		}
		case CLI_OPT_MEMORY: cli_memory_option(optarg); break;
		case OPT_THREADS: o->threads = cli_long("--threads", optarg, 0, 4096); break;
		case OPT_DEVICE: o->device = optarg; break;
		case OPT_LIST_METHODS: list = 1; break;
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
	if (list)
		list_methods();
	if (o->layer) {
		/* NAME:K names the K-th call (a trailing :digits only) */
		snprintf(o->layer_name, sizeof o->layer_name, "%s", o->layer);
		char *colon = strrchr(o->layer_name, ':');
		if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
			o->rq.layer_call = (int)cli_long("--layer", colon + 1, 0, 1L << 20);
			*colon = 0;
		}
		if (!o->layer_name[0])
			cli_usage("--layer: empty layer name");
		o->rq.layer = o->layer_name;
	}
	if (o->shape) {
		o->ndim = parse_list("--shape", o->shape, o->dims, 1);
		if (o->ndim != 4 && o->ndim != 5)
			cli_usage("--shape: give N,C,H,W or N,C,D,H,W (e.g. 1,1,64,64)");
	}
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static void progress(void *ctx, int64_t done, int64_t total)
{
	cli_progress((const char *)ctx, done, total);
}

typedef struct run {
	const opts *o;
	const esg_explain_method *em;
	esg_params params;
	char *params_json;
	esg_model *model;
	char sha[65];
	uint64_t item;          /* items so far, over the stream */
} run;

static void set_values(esg_record *r, const char *key, const double *v, int64_t n)
{
	if (n == 1)
		esg_meta_setf(r, key, "%.9g", v[0]);
	else
		esg_meta_set_doubles(r, key, v, (int)n);
}

/* Optimise every item of r's image (or of --shape's geometry when r has
 * none) and put the results into r. */
static void process(run *R, esg_record *r, size_t index, const char *in_name, int argc, char **argv)
{
	const opts *o = R->o;
	double t0 = now();
	esg_torch_calls_reset();
	int ndim;
	int64_t shape[ESG_MAX_DIMS];
	float *x = NULL;
	esg_tensor *img = o->in ? esg_record_get(r, "image") : NULL;
	if (o->in) {
		if (!img)
			cli_die(EXIT_RUNTIME, "%s: record %zu: %s", in_name, index + 1, esg_error());
		if (img->ndim != 4 && img->ndim != 5)
			cli_die(EXIT_RUNTIME, "%s: record %zu: tensor 'image' must be [N, C, H, W] or "
				"[N, C, D, H, W], not %d-dimensional", in_name, index + 1, img->ndim);
		cli_check_finite(in_name, index, img);
		ndim = img->ndim;
		memcpy(shape, img->shape, sizeof shape);
		if (!(x = esg_tensor_to_f32(img)))
			cli_die_lib();
	} else {
		ndim = o->ndim;
		memcpy(shape, o->dims, sizeof shape);
	}
	int64_t N = shape[0], item = 1;
	for (int d = 1; d < ndim; d++)
		item *= shape[d];
	if (N < 1 || item < 1)
		cli_die(EXIT_RUNTIME, "%s: record %zu: empty image", in_name, index + 1);

	esg_explain_spec spec;
	if (esg_explain_setup(R->em, &R->params, &o->rq, ndim - 2, shape[1], &spec))
		cli_die(EXIT_RUNTIME, "%s: record %zu: %s: %s", in_name, index + 1, R->em->m.name, esg_error());
	int64_t T = esg_explain_trace_len(&spec);
	/* diversity: the batch is one optimisation (one trace, one seed) */
	int joint = spec.diversity > 0;
	int64_t rows = joint ? 1 : N;
	float *out = malloc((size_t)(N * item) * sizeof *out);
	float *trace = malloc((size_t)(N * (T ? T : 1)) * sizeof *trace);
	double *init = malloc((size_t)N * sizeof *init), *fin = malloc((size_t)N * sizeof *fin);
	double *bound = malloc((size_t)N * sizeof *bound);
	if (!out || !trace || !init || !fin || !bound)
		cli_die(EXIT_RUNTIME, "out of memory for record %zu", index + 1);
	int64_t ishape[ESG_MAX_DIMS];
	memcpy(ishape, shape, sizeof ishape);
	ishape[0] = joint ? N : 1;
	for (int64_t b = 0; b < rows; b++) {
		const float *xb = x ? x + b * item : NULL;
		bound[b] = esg_explain_for_item(&R->params, &spec, o->rq.seed, R->item, xb, item * ishape[0]);
		R->item += (uint64_t)ishape[0];
		if (esg_model_explain(R->model, &spec, xb, ndim, ishape, out + b * item, trace + b * T,
				      &init[b], &fin[b], progress, (void *)R->em->m.name))
			cli_die(EXIT_RUNTIME, "%s: record %zu: %s: %s", in_name, index + 1, R->em->m.name,
				esg_error());
	}
	cli_check_finite_f32(in_name, index, "image", out, N * item);

	if (x) {
		esg_record_remove(r, "input");
		if (!esg_record_add_f32(r, "input", ndim, shape, x))
			cli_die_lib();
	}
	esg_record_remove(r, "image");
	if (!esg_record_add_f32(r, "image", ndim, shape, out))
		cli_die_lib();
	int64_t tshape[2] = { rows, T };
	esg_record_remove(r, "objective");
	if (!esg_record_add_f32(r, "objective", 2, tshape, trace))
		cli_die_lib();
	esg_meta_set(r, "esg.method", R->em->m.name);
	if (o->label)
		esg_meta_set(r, "esg.label", o->label);
	else
		esg_meta_remove(r, "esg.label");
	esg_meta_set(r, "esg.params", R->params_json);
	esg_meta_set(r, "esg.objective", esg_explain_objective_name(spec.objective));
	set_values(r, "esg.objective_initial", init, rows);
	set_values(r, "esg.objective_final", fin, rows);
	if (spec.alpha_weight > 0 || spec.tv_weight > 0)
		set_values(r, "esg.bound", bound, rows);
	else
		esg_meta_remove(r, "esg.bound");
	if (o->rq.layer) {
		esg_meta_set(r, "esg.layer", o->rq.layer);
		esg_meta_setf(r, "esg.layer_call", "%d", o->rq.layer_call);
	} else {
		esg_meta_remove(r, "esg.layer");
		esg_meta_remove(r, "esg.layer_call");
	}
	if (o->rq.channel >= 0)
		esg_meta_setf(r, "esg.channel", "%d", o->rq.channel);
	else
		esg_meta_remove(r, "esg.channel");
	if (o->rq.n_unit) {
		double u[ESG_MAX_DIMS];
		for (int i = 0; i < o->rq.n_unit; i++)
			u[i] = (double)o->rq.unit[i];
		esg_meta_set_doubles(r, "esg.unit", u, o->rq.n_unit);
	} else {
		esg_meta_remove(r, "esg.unit");
	}
	if (o->rq.target >= 0) {
		esg_meta_setf(r, "esg.target", "%lld", (long long)o->rq.target);
		esg_meta_set(r, "esg.target_source", "option");
	} else {
		esg_meta_remove(r, "esg.target");
		esg_meta_remove(r, "esg.target_source");
	}
	/* what an attribution record carries would mislead here */
	esg_meta_remove(r, "esg.delta");
	esg_meta_remove(r, "esg.baseline");
	esg_record_remove(r, "attribution");
	esg_meta_setf(r, "esg.steps", "%d", spec.steps);
	esg_meta_setf(r, "esg.seed", "%llu", (unsigned long long)o->rq.seed);
	esg_meta_set(r, "esg.model", o->model);
	esg_meta_set(r, "esg.model_sha256", R->sha);
	char *calls = esg_torch_calls_json();
	if (!calls)
		cli_die_lib();
	esg_meta_set(r, "esg.model_calls", calls);
	free(calls);
	esg_meta_stamp(r, "esg-explain", argc, argv);
	esg_meta_setf(r, "esg.seconds", "%.6f", now() - t0);
	free(x);
	free(out);
	free(trace);
	free(init);
	free(fin);
	free(bound);
}

int main(int argc, char **argv)
{
	cli_init("esg-explain", argc, argv);
	opts o;
	parse(argc, argv, &o);
	if (!o.model)
		cli_usage("no model: give -m MODEL");
	if (!o.method)
		cli_usage("no method: give --method NAME (see --list-methods)");
	run R;
	memset(&R, 0, sizeof R);
	R.o = &o;
	R.em = esg_explain_find(o.method);
	if (!R.em)
		cli_usage("--method: %s", esg_error());
	if (esg_params_resolve(&R.em->m, NULL, o.params, o.n_params, &R.params))
		cli_usage("--method %s: %s", o.method, esg_error());
	if (R.em->input == ESG_EX_REQUIRED && o.shape)
		cli_usage("--shape: method %s starts from IN (give IN, not --shape)", o.method);
	if (o.in && o.shape)
		cli_usage("--shape: IN gives the geometry already");
	if (!o.in && !o.shape && R.em->input == ESG_EX_OPTIONAL)
		cli_usage("method %s needs IN or --shape N,C,... for the image's geometry", o.method);
	/* the checks that need no image, before the model is loaded */
	esg_explain_spec probe;
	if (esg_explain_check(R.em, &R.params, &o.rq) ||
	    (o.shape && esg_explain_setup(R.em, &R.params, &o.rq, o.ndim - 2, o.dims[1], &probe)))
		cli_usage("--method %s: %s", o.method, esg_error());
	R.params_json = esg_params_json(&R.params);
	if (!R.params_json)
		cli_die_lib();

	if (esg_torch_set_threads((int)o.threads))
		cli_die_lib();
	esg_torch_set_memory(cli_memory_budget(), 1);
	if (esg_sha256_file(o.model, R.sha))
		cli_die(EXIT_RUNTIME, "model: %s", esg_error());
	R.model = esg_model_load(o.model, o.device);
	if (!R.model)
		cli_die_lib();

	FILE *in = NULL;
	esg_reader *rd = NULL;
	if (o.in || R.em->input == ESG_EX_REQUIRED) {
		in = cli_open_in(o.in, 1);
		if (!(rd = esg_reader_open(in, cli_in_name(o.in))))
			cli_die_lib();
	}
	FILE *out = cli_open_out(o.out, 1);
	esg_writer *w = esg_writer_open(out, 0);
	if (!w)
		cli_die_lib();
	size_t n = 0;
	if (rd) {
		esg_record *r;
		int got;
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
	} else {
		esg_record *r = esg_record_new();
		if (!r)
			cli_die_lib();
		process(&R, r, 0, "--shape", argc, argv);
		if (esg_writer_put(w, r))
			cli_die_lib();
		esg_record_free(r);
	}
	if (esg_writer_close(w))
		cli_die_lib();
	cli_commit_out(out);
	if (rd)
		esg_reader_free(rd);
	if (in && in != stdin)
		fclose(in);
	esg_params_clear(&R.params);
	free(R.params_json);
	esg_model_free(R.model);
	return 0;
}
