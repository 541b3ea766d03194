/* cli.h - what every esg-* tool shares: messages, exits, inputs and
 * atomic outputs.  Program code only (it prints and exits); lib/ never does.
 *
 * Exit statuses: 0 success, 1 runtime failure, 2 usage error.
 */
#ifndef ESG_CLI_H
#define ESG_CLI_H

#include <stdio.h>
#include <stdint.h>
#include <stdnoreturn.h>

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

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

#endif
