/* cli.h - what every esg-* tool shares: messages, exits, inputs and
 * atomic outputs.  Program code only (it prints and exits); lib/ never does.
 *
 * Exit statuses: 0 success, 1 runtime failure, 2 usage error, 124 timed out
 * (--timeout; the status GNU timeout(1) uses).
 */
#ifndef ESG_CLI_H
#define ESG_CLI_H

#include <stdio.h>
#include <stdint.h>
#include <stdnoreturn.h>

#include "shim/esg_torch.h"
#include "attr/patch.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_TIMEOUT 124

/* --timeout SECONDS, shared by every tool: put CLI_TIMEOUT_LONGOPT in the
 * getopt_long table, CLI_TIMEOUT_HELP in the help text, and call
 * cli_timeout_option(optarg) for CLI_OPT_TIMEOUT. */
#define CLI_OPT_TIMEOUT 0x7e01
#define CLI_TIMEOUT_LONGOPT { "timeout", required_argument, NULL, CLI_OPT_TIMEOUT }
/* PAD: spaces after "--timeout SECONDS" up to the help column; COL: that
 * column's indentation (the tools align their help differently). */
#define CLI_TIMEOUT_HELP(PAD, COL) \
	"      --timeout SECONDS" PAD "stop after SECONDS (decimal; 0: never) of wall time:\n" \
	COL "no output is left (an older one is kept), exit 124\n"
/* --allow-nonfinite, shared by the libtorch tools: NaN / Inf in an input
 * tensor, a model parameter, the model's output or a written map is an error
 * unless this is given.  CLI_NONFINITE_LONGOPT in the getopt_long table,
 * CLI_NONFINITE_HELP in the help text, and for CLI_OPT_NONFINITE call
 * cli_nonfinite_option() and esg_torch_set_check_finite(0) (the shim's
 * checks of model parameters and outputs; cli.o links without the shim). */
#define CLI_OPT_NONFINITE 0x7e02
#define CLI_NONFINITE_LONGOPT { "allow-nonfinite", no_argument, NULL, CLI_OPT_NONFINITE }
#define CLI_NONFINITE_HELP(PAD, COL) \
	"      --allow-nonfinite" PAD "let NaN / Inf through (inputs, model parameters and\n" \
	COL "outputs, maps); default: one line naming them, exit 1\n"
/* --memory SIZE|PERCENT, shared by the libtorch tools: CLI_MEMORY_LONGOPT in
 * the getopt_long table, CLI_MEMORY_HELP in the help text, and for
 * CLI_OPT_MEMORY call cli_memory_option(optarg).  After parsing, hand
 * cli_memory_budget() to esg_torch_set_memory (cli.o links without the shim). */
#define CLI_OPT_MEMORY 0x7e03
#define CLI_MEMORY_LONGOPT { "memory", required_argument, NULL, CLI_OPT_MEMORY }
#define CLI_MEMORY_HELP(PAD, COL) \
	"      --memory SIZE|PCT" PAD "memory budget of the process (6G, 500M, or 50% of what\n" \
	COL "it may use: the smaller of MemAvailable and the cgroup's\n" \
	COL "room); default $ESG_MEMORY, else 80%.  Batches are sized\n" \
	COL "to it; a model call that does not fit fails, exit 1\n"
/* --internal-batch auto|N: the same help line in every libtorch tool */
#define CLI_IBATCH_HELP(COL) \
	"      --internal-batch auto|N\n" \
	COL "items per model call: auto (default) sizes batches to\n" \
	COL "--memory, at most 8; N: up to N, an error if they don't fit\n"
#define CLI_EXIT_STATUS_HELP \
	"Exit status: 0 success, 1 runtime failure, 2 usage error, 124 timed out (--timeout).\n"

void cli_nonfinite_option(void);
void cli_memory_option(const char *arg);
/* The budget in bytes: --memory, else $ESG_MEMORY (the same forms), else
 * 80% of what this process may use. */
uint64_t cli_memory_budget(void);
/* --internal-batch auto|N: N, or 0 for auto. */
long cli_internal_batch(const char *arg);
/* Unless --allow-nonfinite: die naming the stream, the record (0-based
 * index, printed 1-based), the tensor and how many values are NaN / Inf. */
void cli_check_finite(const char *in_name, size_t index, const esg_tensor *t);
/* cli_check_finite on every tensor of the record. */
void cli_check_record_finite(const char *in_name, size_t index, const esg_record *r);
/* The same for a float buffer the tool is about to write as tensor NAME. */
void cli_check_finite_f32(const char *in_name, size_t index, const char *name,
			  const float *v, int64_t n);

/* Call first: remembers the program name and installs cleanup handlers. */
void cli_init(const char *prog, int argc, char **argv);
const char *cli_prog(void);

/* "PROG: error: MSG" on stderr, remove pending outputs, exit code. */
noreturn void cli_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Usage error: message plus "Try 'PROG --help'.", exit 2. */
noreturn void cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Die with the library's last error (esg_error()), exit 1. */
noreturn void cli_die_lib(void);
/* "PROG: warning: MSG" on stderr. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "PROG VERSION" to stdout and exit 0. */
noreturn void cli_version(void);
/* Write help text to stdout, check the write, exit 0. */
noreturn void cli_help(const char *text);

/* Parse --timeout's value (decimal seconds >= 0, else a usage error) and
 * arm the timer (0 disarms).  When it fires: pending outputs are removed,
 * "PROG: error: timed out after S s (--timeout)" goes to stderr and the
 * process _exit()s with EXIT_TIMEOUT, whatever thread it was in.  The timer
 * is disarmed when the first output is committed (from then on the run
 * finishes) and by cli_die / cli_usage. */
void cli_timeout_option(const char *arg);
void cli_set_timeout(double seconds);
/* Register a directory this run created, removed (if empty) on failure,
 * timeout or signal like a pending output; cli_keep_dirs() forgets them. */
void cli_created_dir(const char *dir);
void cli_keep_dirs(void);

/* Numeric option parsing: whole string, range checked, or usage error
 * naming the option. */
long cli_long(const char *opt, const char *s, long lo, long hi);
double cli_double(const char *opt, const char *s);

/* Open an input: NULL or "-" is stdin (refused if it is a terminal, for
 * binary streams).  Dies on failure. */
FILE *cli_open_in(const char *path, int binary);
/* Name for messages: "stdin" for NULL / "-". */
const char *cli_in_name(const char *path);

/* Open an output: NULL or "-" is stdout (refused if a terminal and binary);
 * otherwise a temporary file beside path, renamed over path by
 * cli_commit_out() and removed if the process dies first (error, signal). */
FILE *cli_open_out(const char *path, int binary);
/* Flush, check and close the output; rename into place.  Dies on failure. */
void cli_commit_out(FILE *f);
/* A temporary path beside `path` registered for removal on failure; the
 * caller writes it by name (libnifti, libpng-by-name) then calls
 * cli_commit_path.  Returns a static-lifetime string. */
const char *cli_temp_path(const char *path);
void cli_commit_path(const char *tmp);

/* Progress on stderr, only when stderr is a terminal. */
void cli_progress(const char *what, int64_t done, int64_t total);

/* Check stdout at exit (for tools that printed text); dies with 1 on error. */
void cli_finish_stdout(void);

/* The sliding-window options of esg-attr and esg-wrap: --patch D,H,W,
 * --overlap F, --blend mean|gaussian. */
typedef struct cli_patch {
	const char *spec, *blend_name;     /* as given; spec NULL: no --patch */
	int64_t size[ESG_PATCH_AXES];
	int axes;
	double overlap;                    /* < 0 until given */
	esg_blend blend;
} cli_patch;
#define CLI_PATCH_INIT { .overlap = -1, .blend = ESG_BLEND_GAUSSIAN }
/* Take option `opt` ("--patch", "--overlap" or "--blend"); usage error if bad. */
void cli_patch_option(cli_patch *p, const char *opt, const char *arg);
/* After the options: --overlap or --blend need --patch; the default overlap. */
void cli_patch_done(cli_patch *p);

/* --amp (arg NULL: keep a dtype already chosen, else auto) and
 * --amp-dtype bf16|fp16 (esg-attr, esg-metric). */
void cli_amp_option(esg_amp *amp, const char *arg);

#endif
