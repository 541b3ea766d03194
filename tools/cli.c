/* cli.c - shared program behaviour of the esg-* tools (see cli.h). */
#include "cli.h"
#include "stream/stream.h"
#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* esg-randomise holds every step file pending until its manifest is done */
#define MAX_PENDING 1024
#define MAX_DIRS 4

static const char *prog = "esg";
/* Temporary outputs not yet renamed into place; removed on any failure. */
static char *pending_tmp[MAX_PENDING];
static char *pending_dst[MAX_PENDING];
static FILE *pending_file[MAX_PENDING];
/* Directories this run created: removed (when empty) on failure. */
static char *created_dirs[MAX_DIRS];

const char *cli_prog(void) { return prog; }

static void remove_pending(void)
{
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending_tmp[i])
			unlink(pending_tmp[i]); /* async-signal-safe */
	for (int i = 0; i < MAX_DIRS; i++)
		if (created_dirs[i])
			rmdir(created_dirs[i]); /* fails, harmlessly, unless empty */
}

/* ---- --timeout ----------------------------------------------------------
 * A process-wide SIGALRM (setitimer) may land in any thread, libtorch's
 * workers included.  The handler and the main thread agree through one
 * atomic state: the handler acts only if it moves ARMED -> FIRED, and a
 * disarm (before a commit, an error exit) only if it moves ARMED ->
 * DISARMED; a main thread that finds FIRED waits for the handler's _exit.
 * So a run either commits its outputs and exits as usual, or leaves none
 * and exits 124 -- never both. */
enum { TO_OFF, TO_ARMED, TO_FIRED, TO_DISARMED };
static atomic_int timeout_state = TO_OFF;
static char timeout_msg[256];
static size_t timeout_len;

static void on_timeout(int sig)
{
	(void)sig;
	int expect = TO_ARMED;
	if (!atomic_compare_exchange_strong(&timeout_state, &expect, TO_FIRED))
		return;
	remove_pending();
	ssize_t w = write(STDERR_FILENO, timeout_msg, timeout_len);
	(void)w;
	_exit(EXIT_TIMEOUT);
}

static void timeout_disarm(void)
{
	int expect = TO_ARMED;
	if (atomic_compare_exchange_strong(&timeout_state, &expect, TO_DISARMED)) {
		struct itimerval zero = { { 0, 0 }, { 0, 0 } };
		setitimer(ITIMER_REAL, &zero, NULL);
	} else if (expect == TO_FIRED) {
		for (;;) /* the handler, in another thread, is about to _exit */
			pause();
	}
}

void cli_set_timeout(double seconds)
{
	timeout_disarm();
	atomic_store(&timeout_state, TO_OFF);
	if (!(seconds > 0))
		return;
	int n = snprintf(timeout_msg, sizeof timeout_msg,
			 "%s: error: timed out after %g s (--timeout)\n", prog, seconds);
	timeout_len = n < 0 ? 0 : (size_t)n < sizeof timeout_msg ? (size_t)n : sizeof timeout_msg - 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_timeout;
	sigfillset(&sa.sa_mask); /* no other signal handler runs inside it */
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGALRM, &sa, NULL) != 0)
		cli_die(EXIT_RUNTIME, "--timeout: cannot install the handler: %s", strerror(errno));
	struct itimerval it = { { 0, 0 }, { 0, 0 } };
	it.it_value.tv_sec = (time_t)seconds;
	it.it_value.tv_usec = (suseconds_t)((seconds - (double)it.it_value.tv_sec) * 1e6);
	if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0)
		it.it_value.tv_usec = 1;
	atomic_store(&timeout_state, TO_ARMED);
	if (setitimer(ITIMER_REAL, &it, NULL) != 0)
		cli_die(EXIT_RUNTIME, "--timeout: cannot start the timer: %s", strerror(errno));
}

void cli_timeout_option(const char *arg)
{
	char *end;
	errno = 0;
	double v = strtod(arg, &end);
	if (errno || end == arg || *end || !isfinite(v) || v < 0 || v > 1e9)
		cli_usage("--timeout: '%s' is not a number of seconds in [0, 1e9] (0: no timeout)", arg);
	cli_set_timeout(v);
}

void cli_created_dir(const char *dir)
{
	for (int i = 0; i < MAX_DIRS; i++)
		if (!created_dirs[i]) {
			created_dirs[i] = strdup(dir);
			return;
		}
}

void cli_keep_dirs(void)
{
	for (int i = 0; i < MAX_DIRS; i++) {
		char *d = created_dirs[i];
		created_dirs[i] = NULL;
		free(d);
	}
}

static void on_signal(int sig)
{
	remove_pending();
	signal(sig, SIG_DFL);
	raise(sig);
}

void cli_init(const char *name, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	prog = name;
	atexit(remove_pending); /* an output never committed is never left */
	int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGXCPU, SIGALRM };
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		signal(sigs[i], on_signal);
}

static void vmessage(const char *kind, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: %s: ", prog, kind);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

noreturn void cli_die(int code, const char *fmt, ...)
{
	timeout_disarm();
	va_list ap;
	va_start(ap, fmt);
	vmessage("error", fmt, ap);
	va_end(ap);
	remove_pending();
	exit(code);
}

noreturn void cli_usage(const char *fmt, ...)
{
	timeout_disarm();
	va_list ap;
	va_start(ap, fmt);
	vmessage("error", fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try '%s --help' for more information.\n", prog);
	remove_pending();
	exit(EXIT_USAGE);
}

noreturn void cli_die_lib(void)
{
	cli_die(EXIT_RUNTIME, "%s", esg_error());
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmessage("warning", fmt, ap);
	va_end(ap);
}

void cli_finish_stdout(void)
{
	timeout_disarm();
	if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0)
		cli_die(EXIT_RUNTIME, "cannot write standard output: %s",
			strerror(errno ? errno : EIO));
}

noreturn void cli_version(void)
{
	printf("%s %s\n", prog, ESG_VERSION);
	cli_finish_stdout();
	exit(0);
}

noreturn void cli_help(const char *text)
{
	fputs(text, stdout);
	cli_finish_stdout();
	exit(0);
}

long cli_long(const char *opt, const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end)
		cli_usage("%s: '%s' is not an integer", opt, s);
	if (v < lo || v > hi)
		cli_usage("%s: %ld is out of range [%ld, %ld]", opt, v, lo, hi);
	return v;
}

double cli_double(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v))
		cli_usage("%s: '%s' is not a finite number", opt, s);
	return v;
}

static int is_std(const char *path) { return !path || strcmp(path, "-") == 0; }

const char *cli_in_name(const char *path) { return is_std(path) ? "stdin" : path; }

FILE *cli_open_in(const char *path, int binary)
{
	if (is_std(path)) {
		if (binary && isatty(STDIN_FILENO))
			cli_usage("standard input is a terminal; give a file or pipe a stream in");
		return stdin;
	}
	FILE *f = fopen(path, binary ? "rb" : "r");
	if (!f)
		cli_die(EXIT_RUNTIME, "cannot open '%s': %s", path, strerror(errno));
	return f;
}

/* A slot is in use while it has a destination; tmp is NULL for an unnamed
 * (O_TMPFILE) output until it is linked in at commit. */
static int register_pending(char *tmp, char *dst, FILE *f)
{
	for (int i = 0; i < MAX_PENDING; i++)
		if (!pending_dst[i]) {
			pending_dst[i] = dst;
			pending_file[i] = f;
			pending_tmp[i] = tmp; /* last: the signal handler reads it */
			return i;
		}
	cli_die(EXIT_RUNTIME, "too many outputs open at once");
}

/* A device or FIFO (-o /dev/null, /dev/stdout) is written in place:
 * renaming a temporary file over it would replace the device itself. */
static int is_special(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && !S_ISREG(st.st_mode);
}

/* "DIR/NAME.tmpPID.EXT" for "DIR/NAME.EXT"; new string. */
static char *temp_name(const char *path)
{
	size_t n = strlen(path) + 32;
	char *tmp = malloc(n);
	if (!tmp)
		cli_die(EXIT_RUNTIME, "out of memory");
	/* keep the extension last: libnifti and libpng choose formats by it */
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	const char *ext = strchr(base, '.');
	if (!ext || ext == base)
		ext = path + strlen(path);
	snprintf(tmp, n, "%.*s.tmp%ld%s", (int)(ext - path), path, (long)getpid(), ext);
	return tmp;
}

const char *cli_temp_path(const char *path)
{
	if (is_special(path))
		return path;
	char *tmp = temp_name(path);
	register_pending(tmp, strdup(path), NULL);
	return tmp;
}

/* An unnamed file in the destination's folder (O_TMPFILE): whatever kills
 * the process, SIGKILL included, leaves nothing behind.  NULL where the
 * file system cannot do it. */
static FILE *open_unnamed(const char *path, int binary)
{
	char *dir = strdup(path);
	if (!dir)
		cli_die(EXIT_RUNTIME, "out of memory");
	char *slash = strrchr(dir, '/');
	if (slash)
		slash[slash == dir] = 0; /* "/x" -> "/", "a/x" -> "a" */
	int fd = open(slash ? dir : ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
	free(dir);
	if (fd < 0)
		return NULL;
	FILE *f = fdopen(fd, binary ? "wb" : "w");
	if (!f)
		close(fd);
	return f;
}

void cli_commit_path(const char *tmp)
{
	timeout_disarm(); /* committing: from here on the run finishes */
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending_tmp[i] && strcmp(pending_tmp[i], tmp) == 0) {
			if (rename(pending_tmp[i], pending_dst[i]) != 0)
				cli_die(EXIT_RUNTIME, "cannot rename '%s' to '%s': %s",
					pending_tmp[i], pending_dst[i], strerror(errno));
			char *t = pending_tmp[i];
			pending_tmp[i] = NULL;
			free(t);
			free(pending_dst[i]);
			pending_dst[i] = NULL;
			return;
		}
	if (!is_special(tmp)) /* a device written in place has nothing to rename */
		cli_die(EXIT_RUNTIME, "internal: '%s' is not a pending output", tmp);
}

FILE *cli_open_out(const char *path, int binary)
{
	if (is_std(path)) {
		if (binary && isatty(STDOUT_FILENO))
			cli_usage("refusing to write a binary stream to a terminal; use -o FILE or a pipe");
		return stdout;
	}
	if (is_special(path)) {
		FILE *d = fopen(path, binary ? "wb" : "w");
		if (!d)
			cli_die(EXIT_RUNTIME, "cannot open '%s': %s", path, strerror(errno));
		if (binary && isatty(fileno(d)))
			cli_usage("refusing to write a binary stream to a terminal ('%s')", path);
		return d;
	}
	FILE *f = open_unnamed(path, binary);
	if (f) {
		char *dst = strdup(path);
		if (!dst)
			cli_die(EXIT_RUNTIME, "out of memory");
		register_pending(NULL, dst, f);
		return f;
	}
	const char *tmp = cli_temp_path(path);
	f = fopen(tmp, binary ? "wb" : "w");
	if (!f)
		cli_die(EXIT_RUNTIME, "cannot create '%s': %s", path, strerror(errno));
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending_tmp[i] == tmp)
			pending_file[i] = f;
	return f;
}

/* Give an unnamed output a temporary name beside its destination (then
 * renamed like any other); the name is removed if we die in between. */
static void link_unnamed(int i)
{
	char proc[64], *tmp = temp_name(pending_dst[i]);
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fileno(pending_file[i]));
	unlink(tmp); /* a leftover of a killed process with our pid */
	if (linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) != 0)
		cli_die(EXIT_RUNTIME, "cannot write '%s': %s", pending_dst[i], strerror(errno));
	pending_tmp[i] = tmp;
}

void cli_commit_out(FILE *f)
{
	timeout_disarm();
	if (f == stdout) {
		cli_finish_stdout();
		return;
	}
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending_dst[i] && pending_file[i] == f) {
			int bad = fflush(f) != 0 || ferror(f);
			if (!bad && !pending_tmp[i])
				link_unnamed(i);
			bad |= fclose(f) != 0;
			pending_file[i] = NULL;
			if (bad)
				cli_die(EXIT_RUNTIME, "cannot write '%s': %s", pending_dst[i],
					strerror(errno ? errno : EIO));
			cli_commit_path(pending_tmp[i]);
			return;
		}
	/* not pending: a device or FIFO opened in place */
	if (fflush(f) != 0 || ferror(f) || fclose(f) != 0)
		cli_die(EXIT_RUNTIME, "cannot write output: %s", strerror(errno ? errno : EIO));
}

void cli_progress(const char *what, int64_t done, int64_t total)
{
	static int tty = -1;
	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	if (!tty || total <= 0)
		return;
	fprintf(stderr, "\r%s: %s %lld/%lld (%d%%)", prog, what, (long long)done,
		(long long)total, (int)(100 * done / total));
	if (done >= total)
		fputc('\n', stderr);
}

void cli_patch_option(cli_patch *p, const char *opt, const char *arg)
{
	if (!strcmp(opt, "--patch")) {
		p->spec = arg;
		if (esg_patch_parse(arg, p->size, &p->axes))
			cli_usage("--patch: %s", esg_error());
	} else if (!strcmp(opt, "--overlap")) {
		p->overlap = cli_double("--overlap", arg);
		if (!(p->overlap >= 0 && p->overlap < 1))
			cli_usage("--overlap: %s is not in [0, 1)", arg);
	} else {
		p->blend_name = arg;
		if (esg_blend_parse(arg, &p->blend))
			cli_usage("--blend: %s", esg_error());
	}
}

void cli_patch_done(cli_patch *p)
{
	if (!p->spec && (p->overlap >= 0 || p->blend_name))
		cli_usage("%s only goes with --patch", p->overlap >= 0 ? "--overlap" : "--blend");
	if (p->overlap < 0)
		p->overlap = ESG_PATCH_DEFAULT_OVERLAP;
}

void cli_amp_option(esg_amp *amp, const char *arg)
{
	if (!arg) {
		if (!*amp)
			*amp = ESG_AMP_AUTO;
	} else if (!strcmp(arg, "bf16") || !strcmp(arg, "fp16"))
		*amp = arg[0] == 'b' ? ESG_AMP_BF16 : ESG_AMP_FP16;
	else
		cli_usage("--amp-dtype: '%s' is not bf16 or fp16", arg);
}

/* ---- --allow-nonfinite -------------------------------------------------- */

static int allow_nonfinite;

void cli_nonfinite_option(void)
{
	allow_nonfinite = 1;
}

/* ---- the memory budget ------------------------------------------------------ */

static uint64_t memory_bytes;   /* --memory SIZE */
static double memory_share = 0.8; /* else this share of what the process may use */

static uint64_t read_u64(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	char line[512];
	unsigned long long v = 0;
	size_t kn = key ? strlen(key) : 0;
	while (fgets(line, sizeof line, f)) {
		if (key && strncmp(line, key, kn))
			continue;
		v = strtoull(line + kn, NULL, 10);
		break;
	}
	fclose(f);
	return v;
}

/* Room left in one cgroup folder: limit less usage (page cache counted as
 * free); UINT64_MAX without a limit. */
static uint64_t cgroup_dir_room(const char *dir, int v2)
{
	char p[4200 + 32]; /* dir (at most 4200) and a file name */
	snprintf(p, sizeof p, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
	uint64_t lim = read_u64(p, NULL);
	if (!lim || lim >= (1ULL << 60)) /* "max" reads as 0; v1 says "none" with a huge number */
		return UINT64_MAX;
	snprintf(p, sizeof p, "%s/%s", dir, v2 ? "memory.current" : "memory.usage_in_bytes");
	uint64_t use = read_u64(p, NULL);
	snprintf(p, sizeof p, "%s/memory.stat", dir);
	uint64_t cache = read_u64(p, v2 ? "file " : "total_cache ");
	use = use > cache ? use - cache : 0;
	return use < lim ? lim - use : 0;
}

/* Room left in this process's memory cgroup and its ancestors (v2
 * memory.max - memory.current, v1 memory.limit_in_bytes -
 * memory.usage_in_bytes), UINT64_MAX when none has a limit.  The path in
 * /proc/self/cgroup is from the hierarchy's root, which a container may
 * mount at /sys/fs/cgroup itself: the deepest folder that exists is taken. */
static uint64_t cgroup_room(void)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[4096], dir[4200];
	uint64_t room = UINT64_MAX;
	if (!f)
		return room;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = 0;
		int v2 = c2 == c1 + 1, v1 = !v2 && strstr(c1 + 1, "memory");
		if (!v1 && !v2)
			continue;
		const char *base = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory", *path = c2 + 1;
		struct stat sb;
		for (;;) { /* drop leading components until the folder exists */
			snprintf(dir, sizeof dir, "%s%s", base, strcmp(path, "/") ? path : "");
			if (!stat(dir, &sb) || !*path || !(path = strchr(path + 1, '/')))
				break;
		}
		if (stat(dir, &sb))
			snprintf(dir, sizeof dir, "%s", base);
		if (stat(dir, &sb))
			continue;
		for (size_t n = strlen(dir);;) { /* this folder and those above it */
			uint64_t r = cgroup_dir_room(dir, v2);
			if (r < room)
				room = r;
			char *slash = strrchr(dir, '/');
			if (n <= strlen(base) || !slash)
				break;
			*slash = 0;
			n = strlen(dir);
		}
	}
	fclose(f);
	return room;
}

static int memory_given;

/* WHAT: "--memory" or "ESG_MEMORY", for the messages */
static void memory_parse(const char *what, const char *arg)
{
	memory_given = 1;
	if (esg_memory_parse(arg, &memory_bytes, &memory_share))
		cli_usage("%s: %s", what, esg_error());
}

void cli_memory_option(const char *arg)
{
	memory_parse("--memory", arg);
}

uint64_t cli_memory_budget(void)
{
	/* ESG_MEMORY: the default of --memory (pipelines/run shares the machine
	 * among its parallel jobs through it) */
	const char *env = getenv("ESG_MEMORY");
	if (!memory_given && env && *env)
		memory_parse("ESG_MEMORY", env);
	if (memory_bytes)
		return memory_bytes;
	uint64_t avail = read_u64("/proc/meminfo", "MemAvailable:") * 1024, room = cgroup_room();
	if (!avail || room < avail)
		avail = room;
	if (avail == UINT64_MAX)
		return 0; /* nothing to go by: no budget */
	return (uint64_t)((double)avail * memory_share);
}

long cli_internal_batch(const char *arg)
{
	return !strcmp(arg, "auto") ? 0 : cli_long("--internal-batch", arg, 1, 1L << 20);
}

static void nonfinite_die(const char *in_name, size_t index, const char *what, const char *name,
			  int64_t bad, int64_t n, const char *hint)
{
	cli_die(EXIT_RUNTIME, "%s: record %zu: %s '%s' has %lld non-finite value%s (NaN or Inf) "
		"of %lld; %s", in_name, index + 1, what, name, (long long)bad, bad == 1 ? "" : "s",
		(long long)n, hint);
}

void cli_check_finite(const char *in_name, size_t index, const esg_tensor *t)
{
	int64_t bad = allow_nonfinite ? 0 : esg_tensor_count_nonfinite(t);
	if (bad)
		nonfinite_die(in_name, index, "tensor", t->name, bad, esg_tensor_numel(t),
			      "fix the input or pass --allow-nonfinite");
}

void cli_check_finite_f32(const char *in_name, size_t index, const char *name,
			  const float *v, int64_t n)
{
	int64_t bad = allow_nonfinite ? 0 : esg_f32_count_nonfinite(v, n);
	if (bad)
		nonfinite_die(in_name, index, "the result", name, bad, n,
			      "nothing written (--allow-nonfinite writes it anyway)");
}

void cli_check_record_finite(const char *in_name, size_t index, const esg_record *r)
{
	for (size_t i = 0; i < r->n_tensors; i++)
		cli_check_finite(in_name, index, &r->tensors[i]);
}
