/* esg-randomise - parameter randomisation for sanity checks (Adebayo et al.
 * 2018): write randomised copies of a TorchScript model, cascading (top
 * layer first, cumulative) or independent (one layer at a time), with a
 * manifest of every parameter changed and how.  Which parameters each step
 * changes and to what is lib/eval/randomise.c's; this file parses options,
 * makes the directory and writes the files. */
#include "cli.h"
#include "eval/eval.h"
#include "shim/esg_torch.h"
#include "stream/stream.h"

#include <errno.h>
#include <getopt.h>
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
	CLI_NONFINITE_HELP(" ", "                        ")
	CLI_MEMORY_HELP(" ", "                        ")
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
	CLI_NONFINITE_LONGOPT,
	CLI_MEMORY_LONGOPT,
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

typedef struct opts {
	const char *model, *dir, *layers, *device;
	char *names_buf;    /* --layers, split in place at commas into names */
	char **names;
	size_t n_names;
	int cascading;
	esg_init init;
	uint64_t seed;
} opts;

/* Step files written so far, as pending temporary files (tools/cli.c
 * removes them on any failure, signal or --timeout); renamed into place
 * only once the manifest is complete, so a failed run leaves the
 * directory as it was. */
static const char **written;
static size_t n_written;

static void split_layers(opts *o)
{
	char *save = NULL;
	if (!(o->names_buf = strdup(o->layers)))
		cli_die(EXIT_RUNTIME, "out of memory");
	for (char *t = strtok_r(o->names_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char **n = realloc(o->names, (o->n_names + 1) * sizeof *n);
		if (!n)
			cli_die(EXIT_RUNTIME, "out of memory");
		o->names = n;
		o->names[o->n_names++] = t;
	}
}

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
			for (int i = 0; i < ESG_INIT_COUNT; i++)
				if (!strcmp(optarg, esg_init_name((esg_init)i)))
					k = i;
			if (k < 0)
				cli_usage("--init: '%s' is not default, gaussian or uniform", optarg);
			o->init = (esg_init)k;
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
		case CLI_OPT_NONFINITE: cli_nonfinite_option(); esg_torch_set_check_finite(0); break;
		case CLI_OPT_MEMORY: cli_memory_option(optarg); break;
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
	if (o->layers)
		split_layers(o);
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

/* The layers of the model and their new values (lib/eval/randomise.c). */
static esg_randomisation *plan(const opts *o, esg_model *m, const esg_param_info *P, size_t np)
{
	if (o->layers && !o->n_names)
		cli_usage("--layers: empty list");
	esg_randomise_opts ro = { .model_name = o->model, .cascading = o->cascading,
				  .init = o->init, .seed = o->seed, .layers = o->names,
				  .n_layers = o->n_names };
	esg_randomisation *R = esg_randomise_plan(m, P, np, &ro);
	if (!R)  /* the messages about named layers are about --layers */
		cli_die(EXIT_RUNTIME, "%s%s", o->n_names ? "--layers: " : "", esg_error());
	if (esg_randomise_draw(R))
		cli_die_lib();
	return R;
}

/* Every step's model, then the manifest; all committed together. */
static void write_steps(const opts *o, esg_model *m, esg_randomisation *R, const char *sha)
{
	for (size_t s = 0; s < esg_randomise_steps(R); s++) {
		char file[512];
		if (esg_randomise_apply(R, s))
			cli_die_lib();
		esg_randomise_file(R, s, file, sizeof file);
		save_step(m, o->dir, file);
	}
	char *txt = esg_randomise_manifest(R, sha);
	if (!txt)
		cli_die_lib();
	char *mpath = path_join(o->dir, "manifest.json");
	FILE *f = cli_open_out(mpath, 0);
	fputs(txt, f);
	fputc('\n', f);
	for (size_t i = 0; i < n_written; i++) /* the steps, then the manifest */
		cli_commit_path(written[i]);
	cli_commit_out(f);
	cli_keep_dirs();
	free(txt);
	free(mpath);
}

int main(int argc, char **argv)
{
	cli_init("esg-randomise", argc, argv);
	opts o;
	parse(argc, argv, &o);
	char sha[65];
	if (esg_sha256_file(o.model, sha))
		cli_die(EXIT_RUNTIME, "model: %s", esg_error());
	esg_torch_set_memory(cli_memory_budget(), 1);
	esg_model *m = esg_model_load(o.model, o.device);
	if (!m)
		cli_die_lib();
	size_t np;
	esg_param_info *P = esg_model_params(m, &np);
	if (!P)
		cli_die(EXIT_RUNTIME, "model '%s': %s", o.model, esg_error());
	esg_randomisation *R = plan(&o, m, P, np);
	make_dir(o.dir);
	write_steps(&o, m, R, sha);

	esg_randomise_free(R);
	free(written);
	free(o.names);
	free(o.names_buf);
	esg_model_params_free(P, np);
	esg_model_free(m);
	return 0;
}
