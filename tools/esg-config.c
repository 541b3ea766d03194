/* esg-config - check a JSON run config and turn it into a Make fragment. */
#include "cli.h"
#include "config/config.h"
#include "stream/stream.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
	"Usage: esg-config [--check] CONFIG.json\n"
	"       esg-config --make FRAGMENT.mk [--output DIR] CONFIG.json\n"
	"       esg-config --get output CONFIG.json\n"
	"       esg-config --builder PAGE.html | --schema\n"
	"Check a run config (doc/config.md) from top to bottom before anything runs --\n"
	"fields, types, ranges, files, method names and their parameters -- and turn it\n"
	"into a Make fragment for pipelines/run.mk: one rule per job (load, wrap,\n"
	"randomise, attribute, render, metric), each depending on a stamp file that\n"
	"holds the job's arguments.  Stamps are rewritten only when their text\n"
	"changes, so changing one method's parameters reruns that method only.\n"
	"\n"
	"      --check          check the config only (default); prints a one-line summary\n"
	"      --make FILE      write the Make fragment to FILE (atomically) and the stamps\n"
	"                       under DIR/.args\n"
	"      --output DIR     the output folder (default: the config's \"output\")\n"
	"      --get output     print the config's output folder\n"
	"      --builder FILE   write the config builder: a self-contained HTML form (works\n"
	"                       offline) of every field, method and parameter, checked as\n"
	"                       you type with esg-config's rules and messages, that writes\n"
	"                       the JSON pipelines/run takes (no CONFIG)\n"
	"      --schema         print the schema the builder is made from, as JSON (no CONFIG)\n"
	"  -h, --help           show this help and exit\n"
	"      --version        show the version and exit\n"
	"\n"
	"Run a config with pipelines/run (make -k, a report of what finished, a summary\n"
	"of every job) or make -f pipelines/run.mk CONFIG=FILE.\n"
	"Exit status: 0 ok, 1 invalid config or runtime failure, 2 usage error.\n"
	"See esg-config(1).\n";

int main(int argc, char **argv)
{
	cli_init("esg-config", argc, argv);
	static const struct option LONGOPTS[] = {
		{ "check", no_argument, NULL, 'c' },    { "make", required_argument, NULL, 'M' },
		{ "output", required_argument, NULL, 'O' }, { "get", required_argument, NULL, 'G' },
		{ "builder", required_argument, NULL, 'B' }, { "schema", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },     { "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *make = NULL, *output = NULL, *get = NULL, *builder = NULL;
	int schema = 0;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", LONGOPTS, NULL)) != -1) {
		switch (c) {
		case 'c':
			break;
		case 'M':
			make = optarg;
			break;
		case 'O':
			output = optarg;
			break;
		case 'G':
			if (strcmp(optarg, "output"))
				cli_usage("--get: unknown field '%s' (known: output)", optarg);
			get = optarg;
			break;
		case 'B':
			builder = optarg;
			break;
		case 'S':
			schema = 1;
			break;
		case 'h':
			cli_help(usage_text);
		case 'V':
			cli_version();
		case ':':
			cli_usage("option '%s' needs a value", argv[optind - 1]);
		default:
			cli_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (builder || schema) {
		if (builder && schema)
			cli_usage("--builder and --schema: one at a time");
		if (make || output || get)
			cli_usage("%s takes no --make, --output or --get", builder ? "--builder" : "--schema");
		if (optind != argc)
			cli_usage("%s takes no config", builder ? "--builder" : "--schema");
		if (builder) {
			FILE *f = cli_open_out(builder, 0);
			if (esg_config_builder(f) < 0)
				cli_die(EXIT_RUNTIME, "%s: %s", builder, esg_error());
			cli_commit_out(f);
		} else if (esg_config_schema(stdout) < 0 || putchar('\n') == EOF)
			cli_die(EXIT_RUNTIME, "standard output: write error");
		cli_finish_stdout();
		return 0;
	}
	if (optind != argc - 1)
		cli_usage(optind == argc ? "no config given" : "one config at a time");
	const char *path = argv[optind];
	esg_config *cfg = esg_config_load(path);
	if (!cfg)
		cli_die_lib();
	if (!output)
		output = esg_config_output(cfg);
	if (get) {
		printf("%s\n", output);
	} else if (make) {
		char stamps[4096];
		snprintf(stamps, sizeof stamps, "%s/.args", output);
		FILE *f = cli_open_out(make, 0);
		int jobs = esg_config_write_make(cfg, f, stamps);
		if (jobs < 0)
			cli_die_lib();
		cli_commit_out(f);
	} else {
		/* --check: the fragment, written nowhere, counts the jobs */
		FILE *f = fopen("/dev/null", "w");
		if (!f)
			cli_die(EXIT_RUNTIME, "cannot open /dev/null");
		int jobs = esg_config_write_make(cfg, f, NULL);
		fclose(f);
		if (jobs < 0)
			cli_die_lib();
		printf("%s: ok (%d jobs, output in %s)\n", path, jobs, output);
	}
	esg_config_free(cfg);
	cli_finish_stdout();
	return 0;
}
