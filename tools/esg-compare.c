/* esg-compare - compare two tensor streams within a numeric tolerance. */
#include "cli.h"
#include "stream/stream.h"

#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
	"Usage: esg-compare [OPTION]... A.st.zst B.st.zst\n"
	"Compare two tensor streams record by record and tensor by tensor: the same\n"
	"records, tensor names and shapes, and values with |a - b| <= atol + rtol * |b|\n"
	"(values compared as numbers, whatever the dtype; metadata is not compared).\n"
	"Prints the differences and the worst element; exit 0 when the streams match.\n"
	"One of A and B may be '-' (standard input).\n"
	"\n"
	"  -a, --atol A        absolute tolerance (default 0)\n"
	"  -r, --rtol R        relative tolerance, times |b| (default 0)\n"
	"  -t, --tensor NAME   compare only this tensor (repeatable; default: every\n"
	"                      tensor, and both records must have the same names)\n"
	"  -q, --quiet         print nothing; only the exit status tells\n"
	"  -v, --verbose       one line per tensor compared\n"
	CLI_TIMEOUT_HELP("\n                      ", "                      ")
	"  -h, --help          show this help and exit\n"
	"      --version       show the version and exit\n"
	"\n"
	"Exit status: 0 same within tolerance, 1 different or an error, 2 usage error,\n"
	"124 timed out (--timeout).\n"
	"See esg-compare(1).\n";

struct opts {
	double atol, rtol;
	const char **tensors;
	int n_tensors, quiet, verbose;
};

/* The element that exceeds its tolerance the most (or the largest |a-b|
 * while everything is within tolerance). */
struct worst {
	int set;
	double excess, diff, a, b;
	size_t record;
	char tensor[128];
	char index[160];
};

struct totals {
	size_t records, tensors, tensors_bad, structural;
	int64_t elements, elements_bad;
	struct worst worst;       /* over all tensors */
};

static struct opts o;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	if (o.quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* "[0, 2, 5]": the C-order multi-index of flat element i. */
static void multi_index(const esg_tensor *t, int64_t i, char *buf, size_t n)
{
	int64_t idx[ESG_MAX_DIMS];
	for (int d = t->ndim - 1; d >= 0; d--) {
		idx[d] = t->shape[d] ? i % t->shape[d] : 0;
		i = t->shape[d] ? i / t->shape[d] : 0;
	}
	esg_shape_str(t->ndim, idx, buf, n);
}

/* How far |a-b| goes past the tolerance (<= 0: within).  NaN equals NaN,
 * an infinity equals the same infinity, anything else with NaN differs. */
static double excess(double a, double b, double *diff)
{
	if (isnan(a) || isnan(b)) {
		*diff = isnan(a) && isnan(b) ? 0 : INFINITY;
		return isnan(a) && isnan(b) ? -INFINITY : INFINITY;
	}
	if (a == b) {
		*diff = 0;
		return -(o.atol + o.rtol * fabs(b));
	}
	*diff = fabs(a - b);
	return *diff - (o.atol + o.rtol * fabs(b));
}

static void keep_worst(struct worst *w, const struct worst *c)
{
	if (!c->set)
		return;
	if (!w->set || c->excess > w->excess || (c->excess == w->excess && c->diff > w->diff))
		*w = *c;
}

static void compare_tensor(size_t rec, const esg_tensor *ta, const esg_tensor *tb, struct totals *tot)
{
	char sa[160], sb[160];
	esg_shape_str(ta->ndim, ta->shape, sa, sizeof sa);
	esg_shape_str(tb->ndim, tb->shape, sb, sizeof sb);
	tot->tensors++;
	if (strcmp(sa, sb) != 0) {
		tot->tensors_bad++;
		tot->structural++;
		say("record %zu, tensor '%s': shape %s in A, %s in B\n", rec, ta->name, sa, sb);
		return;
	}
	struct worst w = { 0 };
	int64_t n = esg_tensor_numel(ta), bad = 0;
	for (int64_t i = 0; i < n; i++) {
		double a = esg_tensor_get(ta, i), b = esg_tensor_get(tb, i), diff;
		double e = excess(a, b, &diff);
		bad += e > 0;
		if (!w.set || e > w.excess || (e == w.excess && diff > w.diff)) {
			w.set = 1, w.excess = e, w.diff = diff, w.a = a, w.b = b;
			multi_index(ta, i, w.index, sizeof w.index);
		}
	}
	w.record = rec;
	snprintf(w.tensor, sizeof w.tensor, "%s", ta->name);
	tot->elements += n;
	tot->elements_bad += bad;
	keep_worst(&tot->worst, &w);
	if (bad) {
		tot->tensors_bad++;
		say("record %zu, tensor '%s': %lld of %lld elements differ; worst at %s: A %.9g, B %.9g "
		    "(|a-b| %.3g)\n", rec, ta->name, (long long)bad, (long long)n, w.index, w.a, w.b, w.diff);
	} else if (o.verbose) {
		say("record %zu, tensor '%s' %s: same (max |a-b| %.3g%s%s)\n", rec, ta->name, sa,
		    w.set ? w.diff : 0.0, w.set ? " at " : "", w.set ? w.index : "");
	}
}

/* Compare one tensor name present (or not) in both records. */
static void compare_name(size_t rec, const char *name, const esg_record *ra, const esg_record *rb,
			 struct totals *tot)
{
	const esg_tensor *ta = esg_record_find(ra, name), *tb = esg_record_find(rb, name);
	if (ta && tb) {
		compare_tensor(rec, ta, tb, tot);
		return;
	}
	tot->tensors++;
	tot->tensors_bad++;
	tot->structural++;
	say("record %zu: tensor '%s' %s\n", rec, name,
	    !ta && !tb ? "is in neither stream" : ta ? "is only in A" : "is only in B");
}

static void compare_records(size_t rec, const esg_record *ra, const esg_record *rb, struct totals *tot)
{
	if (o.n_tensors) {
		for (int i = 0; i < o.n_tensors; i++)
			compare_name(rec, o.tensors[i], ra, rb, tot);
		return;
	}
	for (size_t i = 0; i < ra->n_tensors; i++)
		compare_name(rec, ra->tensors[i].name, ra, rb, tot);
	for (size_t i = 0; i < rb->n_tensors; i++)
		if (!esg_record_find(ra, rb->tensors[i].name))
			compare_name(rec, rb->tensors[i].name, ra, rb, tot);
}

static void summary(const struct totals *t)
{
	const struct worst *w = &t->worst;
	if (t->tensors_bad == 0 && t->structural == 0)
		say("same within tolerance (atol %g, rtol %g): %zu records, %zu tensors, %lld elements",
		    o.atol, o.rtol, t->records, t->tensors, (long long)t->elements);
	else
		say("different: %zu of %zu tensors and %lld of %lld elements differ, in %zu records",
		    t->tensors_bad, t->tensors, (long long)t->elements_bad, (long long)t->elements, t->records);
	if (w->set && w->excess > 0)
		say("; worst element: record %zu, tensor '%s', index %s: A %.9g, B %.9g, |a-b| %.3g "
		    "> tolerance %.3g", w->record, w->tensor, w->index, w->a, w->b, w->diff,
		    o.atol + o.rtol * fabs(w->b));
	else if (w->set)
		say("; max |a-b| %.3g at record %zu, tensor '%s', index %s (A %.9g, B %.9g)",
		    w->diff, w->record, w->tensor, w->index, w->a, w->b);
	say("\n");
}

static esg_reader *open_stream(const char *path, FILE **f)
{
	*f = cli_open_in(path, 1);
	esg_reader *rd = esg_reader_open(*f, cli_in_name(path));
	if (!rd)
		cli_die_lib();
	return rd;
}

static void parse_args(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "atol", required_argument, NULL, 'a' },
		{ "rtol", required_argument, NULL, 'r' },
		{ "tensor", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		CLI_TIMEOUT_LONGOPT,
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	opterr = 0;
	o.tensors = calloc((size_t)argc, sizeof *o.tensors);
	if (!o.tensors)
		cli_die(EXIT_RUNTIME, "out of memory");
	while ((c = getopt_long(argc, argv, ":a:r:t:qvh", longs, NULL)) != -1) {
		switch (c) {
		case 'a':
			o.atol = cli_double("--atol", optarg);
			if (o.atol < 0)
				cli_usage("--atol: %s is negative", optarg);
			break;
		case 'r':
			o.rtol = cli_double("--rtol", optarg);
			if (o.rtol < 0)
				cli_usage("--rtol: %s is negative", optarg);
			break;
		case 't':
			o.tensors[o.n_tensors++] = optarg;
			break;
		case 'q':
			o.quiet = 1;
			break;
		case 'v':
			o.verbose = 1;
			break;
		case CLI_OPT_TIMEOUT: cli_timeout_option(optarg); break;
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
	if (argc - optind != 2)
		cli_usage("expected two streams, A and B; got %d", argc - optind);
	if (!strcmp(argv[optind], "-") && !strcmp(argv[optind + 1], "-"))
		cli_usage("A and B cannot both be standard input");
}

int main(int argc, char **argv)
{
	cli_init("esg-compare", argc, argv);
	parse_args(argc, argv);
	const char *pa = argv[optind], *pb = argv[optind + 1];
	FILE *fa, *fb;
	esg_reader *ra = open_stream(pa, &fa), *rb = open_stream(pb, &fb);
	struct totals tot = { 0 };
	for (;;) {
		esg_record *a = NULL, *b = NULL;
		int na = esg_reader_next(ra, &a);
		if (na < 0)
			cli_die_lib();
		int nb = esg_reader_next(rb, &b);
		if (nb < 0)
			cli_die_lib();
		if (!na || !nb) {
			esg_record_free(a);
			esg_record_free(b);
			if (na != nb) {
				tot.structural++;
				/* count what the longer stream still holds */
				esg_reader *more = na ? ra : rb;
				esg_record *x;
				int rc;
				while ((rc = esg_reader_next(more, &x)) == 1)
					esg_record_free(x);
				if (rc < 0)
					cli_die_lib();
				say("record count: %zu in A, %zu in B\n", esg_reader_count(ra),
				    esg_reader_count(rb));
			}
			break;
		}
		tot.records++;
		compare_records(tot.records, a, b, &tot);
		esg_record_free(a);
		esg_record_free(b);
	}
	if (esg_reader_count(ra) == 0 || esg_reader_count(rb) == 0)
		cli_die(EXIT_RUNTIME, "'%s' holds no records (empty input: did the command that made it fail?)",
			cli_in_name(esg_reader_count(ra) == 0 ? pa : pb));
	summary(&tot);
	esg_reader_free(ra);
	esg_reader_free(rb);
	if (fa != stdin)
		fclose(fa);
	if (fb != stdin)
		fclose(fb);
	free(o.tensors);
	cli_finish_stdout();
	return tot.tensors_bad || tot.structural ? 1 : 0;
}
