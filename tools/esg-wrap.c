/* esg-wrap - turn a segmentation model into a scored model ([N, C] scores)
 * by compiling a TorchScript wrapper (share/wrappers/NAME.py) around it. */
#include "cli.h"
#include "stream/stream.h"
#include "image/image.h"
#include "shim/esg_torch.h"
#include "attr/patch.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
	"Usage: esg-wrap -m MODEL --reduce argmax|otsu|fixed-mask [--mask FILE] [--input STREAM]\n"
	"                [--patch D,H,W [--overlap F] [--blend mean|gaussian]]\n"
	"                [--activation none|softmax|sigmoid] -o OUT.pt\n"
	"\n"
	"Wrap a segmentation model (output [N, C, spatial...]) into a TorchScript model\n"
	"that returns per-class scores [N, C], so that esg-attr's methods apply.\n"
	"\n"
	"Options:\n"
	"  -m, --model FILE          TorchScript model to wrap\n"
	"      --reduce R            argmax: per class, the sum of its scores over the voxels\n"
	"                            whose argmax is that class (recomputed every forward);\n"
	"                            otsu: per class, the sum over the voxels above the Otsu\n"
	"                            threshold of the min-max normalised map;\n"
	"                            fixed-mask: sums over a mask fixed now (recommended)\n"
	"      --mask FILE           fixed-mask: a region of interest shared by all classes\n"
	"                            (NIfTI / PNG / NPY read as esg-load does by default, or a\n"
	"                            stream with tensor 'mask' or 'image'); nonzero = inside\n"
	"      --input STREAM        fixed-mask: the mask is the argmax of the model's output\n"
	"                            on the first item of the first record (one-hot, per class)\n"
	"      --patch D,H,W         --input: sliding-window inference (H,W for 2D): the model\n"
	"                            runs patch by patch, its outputs are blended, then argmax\n"
	"      --overlap F           overlap of neighbouring patches, 0 <= F < 1 (default 0.25)\n"
	"      --blend B             gaussian (default; sigma 0.125 x patch size) or mean\n"
	"      --activation A        none (default), softmax (over channels) or sigmoid,\n"
	"                            applied to the output before the reduction\n"
	"      --wrappers DIR        where the wrapper sources are (default: $ESG_SHARE/wrappers,\n"
	"                            else found from the executable's location)\n"
	"      --threads N           libtorch threads (default 0: all cores)\n"
	"      --device DEV          cpu (default) or cuda:N: where --input's predictions run\n"
	"                            (the wrapped model is saved with its tensors on the CPU\n"
	"                            and runs on any device)\n"
	"  -o, --output FILE         the wrapped model (written atomically)\n"
	CLI_TIMEOUT_HELP("     ", "                            ")
	CLI_NONFINITE_HELP("     ", "                            ")
	CLI_MEMORY_HELP("     ", "                            ")
	"  -h, --help                show this help\n"
	"      --version             show the version\n"
	"\n"
	CLI_EXIT_STATUS_HELP;

enum { OPT_REDUCE = 256, OPT_MASK, OPT_INPUT, OPT_ACT, OPT_WRAPPERS, OPT_THREADS, OPT_VERSION,
       OPT_PATCH, OPT_OVERLAP, OPT_BLEND, OPT_DEVICE };

static const struct option LONGOPTS[] = {
	{ "model", required_argument, NULL, 'm' },
	{ "reduce", required_argument, NULL, OPT_REDUCE },
	{ "mask", required_argument, NULL, OPT_MASK },
	{ "input", required_argument, NULL, OPT_INPUT },
	{ "activation", required_argument, NULL, OPT_ACT },
	{ "wrappers", required_argument, NULL, OPT_WRAPPERS },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "patch", required_argument, NULL, OPT_PATCH },
	{ "overlap", required_argument, NULL, OPT_OVERLAP },
	{ "blend", required_argument, NULL, OPT_BLEND },
	{ "output", required_argument, NULL, 'o' },
	CLI_TIMEOUT_LONGOPT,
	CLI_NONFINITE_LONGOPT,
	CLI_MEMORY_LONGOPT,
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

typedef struct opts {
	const char *model, *reduce, *mask, *input, *act, *wrappers, *out, *device;
	long threads;
	cli_patch win;        /* --patch, --overlap, --blend */
} opts;

static int one_of(const char *v, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(v, *list))
			return 1;
	return 0;
}

static void parse(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof *o);
	o->act = "none";
	o->device = "cpu";
	o->win = (cli_patch)CLI_PATCH_INIT;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:o:h", LONGOPTS, NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'o': o->out = optarg; break;
		case OPT_REDUCE: o->reduce = optarg; break;
		case OPT_MASK: o->mask = optarg; break;
		case OPT_INPUT: o->input = optarg; break;
		case OPT_ACT: o->act = optarg; break;
		case OPT_WRAPPERS: o->wrappers = optarg; break;
		case OPT_THREADS: o->threads = cli_long("--threads", optarg, 0, 4096); break;
		case OPT_DEVICE: o->device = optarg; break;
		case OPT_PATCH: cli_patch_option(&o->win, "--patch", optarg); break;
		case OPT_OVERLAP: cli_patch_option(&o->win, "--overlap", optarg); break;
		case OPT_BLEND: cli_patch_option(&o->win, "--blend", optarg); break;
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
	if (!o->reduce)
		cli_usage("no reduction: give --reduce argmax|otsu|fixed-mask");
	static const char *const reds[] = { "argmax", "otsu", "fixed-mask", NULL };
	static const char *const acts[] = { "none", "softmax", "sigmoid", NULL };
	if (!one_of(o->reduce, reds))
		cli_usage("--reduce: '%s' is not argmax, otsu or fixed-mask", o->reduce);
	if (!one_of(o->act, acts))
		cli_usage("--activation: '%s' is not none, softmax or sigmoid", o->act);
	if (!o->out || !strcmp(o->out, "-"))
		cli_usage("esg-wrap writes a model file: give -o OUT.pt");
	int fixed = !strcmp(o->reduce, "fixed-mask");
	if (fixed && !o->mask && !o->input)
		cli_usage("--reduce fixed-mask needs --mask FILE or --input STREAM");
	if (!fixed && o->mask)
		cli_usage("--mask only goes with --reduce fixed-mask");
	if (o->win.spec && (!fixed || !o->input || o->mask))
		cli_usage("--patch goes with --reduce fixed-mask --input STREAM (the predicted mask)");
	cli_patch_done(&o->win);
}

/* ---- wrapper sources ---------------------------------------------------- */

static int is_dir_with(const char *dir, const char *file)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	return access(p, R_OK) == 0;
}

/* $ESG_SHARE/wrappers, PREFIX/share/esegeta/wrappers beside bin/, or a
 * share/wrappers in a folder above the executable (the build tree). */
static const char *find_wrappers(const char *opt)
{
	static char buf[PATH_MAX];
	if (opt)
		return opt;
	const char *env = getenv("ESG_SHARE");
	if (env) {
		snprintf(buf, sizeof buf, "%s/wrappers", env);
		return buf;
	}
	char exe[PATH_MAX - 64];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		snprintf(buf, sizeof buf, "%s/../share/esegeta/wrappers", exe);
		if (is_dir_with(buf, "reduce_argmax.py"))
			return buf;
		for (int up = 1; up <= 5; up++) {
			size_t len = strlen(exe);
			snprintf(exe + len, sizeof exe - len, "/..");
			snprintf(buf, sizeof buf, "%s/share/wrappers", exe);
			if (is_dir_with(buf, "reduce_argmax.py"))
				return buf;
		}
	}
	return "/usr/local/share/esegeta/wrappers";
}

static char *slurp(const char *dir, const char *name)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "rb");
	if (!f)
		cli_die(EXIT_RUNTIME, "cannot open wrapper source '%s': %s (see --wrappers)", p, strerror(errno));
	size_t cap = 4096, len = 0;
	char *s = malloc(cap);
	size_t got;
	while (s && (got = fread(s + len, 1, cap - len - 1, f)) > 0) {
		len += got;
		if (cap - len < 2) {
			char *ns = realloc(s, cap *= 2);
			if (!ns)
				free(s);
			s = ns;
		}
	}
	if (!s || ferror(f))
		cli_die(EXIT_RUNTIME, "cannot read wrapper source '%s'", p);
	fclose(f);
	s[len] = 0;
	return s;
}

/* ---- masks -------------------------------------------------------------- */

static void free_tensor(esg_tensor *t)
{
	if (t) {
		free(t->name);
		free(t->data);
		free(t);
	}
}

/* A user ROI: [1, 1, spatial...] (or the stream tensor's own [N, C, ...]), 0/1. */
static esg_tensor *load_mask(const char *path)
{
	esg_tensor *t = calloc(1, sizeof *t);
	if (!t)
		cli_die(EXIT_RUNTIME, "out of memory");
	t->name = strdup("mask");
	t->dtype = ESG_F32;
	if (esg_sniff_format(path) != ESG_FMT_UNKNOWN) {
		esg_image *im = esg_load_image(path, NULL);
		if (!im)
			cli_die(EXIT_RUNTIME, "--mask: %s", esg_error());
		if (im->n != 1 || im->c != 1)
			cli_die(EXIT_RUNTIME, "--mask '%s': want one single-channel volume, got %lld x %lld",
				path, (long long)im->n, (long long)im->c);
		t->ndim = 2 + im->nsp;
		t->shape[0] = t->shape[1] = 1;
		for (int d = 0; d < im->nsp; d++)
			t->shape[2 + d] = im->dim[d];
		t->data = im->data;
		im->data = NULL;
		esg_image_free(im);
	} else {
		FILE *f = fopen(path, "rb");
		if (!f)
			cli_die(EXIT_RUNTIME, "--mask: cannot open '%s': %s", path, strerror(errno));
		esg_reader *rd = esg_reader_open(f, path);
		esg_record *r = NULL;
		int got = rd ? esg_reader_next(rd, &r) : -1;
		if (got <= 0)
			cli_die(EXIT_RUNTIME, "--mask '%s': %s", path, got == 0 ? "no record" : esg_error());
		esg_tensor *src = esg_record_find(r, "mask");
		if (!src)
			src = esg_record_find(r, "image");
		if (!src)
			cli_die(EXIT_RUNTIME, "--mask '%s': the record has no tensor 'mask' or 'image'", path);
		if (src->ndim < 3)
			cli_die(EXIT_RUNTIME, "--mask '%s': tensor '%s' must be [N, C, spatial...]", path, src->name);
		t->ndim = src->ndim;
		memcpy(t->shape, src->shape, sizeof t->shape);
		t->data = esg_tensor_to_f32(src);
		esg_record_free(r);
		esg_reader_free(rd);
		fclose(f);
	}
	if (!t->data)
		cli_die(EXIT_RUNTIME, "out of memory");
	float *d = t->data;
	int64_t n = esg_tensor_numel(t), inside = 0;
	for (int64_t i = 0; i < n; i++)
		inside += d[i] = d[i] != 0;
	if (!inside)
		cli_warn("--mask '%s' is empty: every score will be 0", path);
	return t;
}

/* Sliding-window inference on item 0 of x: the model's outputs on the
 * patches, blended with the grid's weights, as one [1, K, spatial...]
 * output (new) -- memory of one patch plus the whole-volume output. */
static esg_tensor *predict_patches(esg_model *m, const opts *o, const float *x, int ndim,
				   const int64_t *shape, const char *name)
{
	if (o->win.axes != ndim - 2)
		cli_die(EXIT_USAGE, "--patch %s: %d size%s for the %d spatial axes of --input %s",
			o->win.spec, o->win.axes, o->win.axes == 1 ? "" : "s", ndim - 2, name);
	esg_patch_grid g;
	if (esg_patch_grid_init(&g, ndim - 2, shape + 2, o->win.size, o->win.overlap))
		cli_die(EXIT_RUNTIME, "--patch: %s", esg_error());
	int64_t C = shape[1], K = 0, psh[ESG_MAX_DIMS];
	memcpy(psh, shape, sizeof psh);
	psh[0] = 1;
	for (int d = 0; d < g.nsp; d++)
		psh[2 + d] = g.size[d];
	float *w = esg_patch_weights(&g, o->win.blend);
	float *xs = malloc((size_t)C * g.patch_voxels * sizeof *xs);
	float *wsum = calloc(g.vol_voxels, sizeof *wsum);
	if (!w || !xs || !wsum)
		cli_die(EXIT_RUNTIME, "out of memory");
	esg_tensor *acc = NULL;
	for (int64_t i = 0; i < g.n; i++) {
		int64_t origin[ESG_PATCH_AXES];
		esg_patch_origin(&g, i, origin);
		esg_patch_crop(&g, origin, x, C, xs);
		esg_tensor *y = NULL;
		if (esg_model_forward(m, xs, ndim, psh, &y))
			cli_die(EXIT_RUNTIME, "--input %s: patch %lld: %s", name, (long long)i + 1, esg_error());
		int grid = y->ndim == ndim && y->shape[0] == 1 && (!acc || y->shape[1] == K);
		for (int d = 2; grid && d < ndim; d++)
			grid = y->shape[d] == psh[d];
		if (!grid) {
			char ys[128], ps[128];
			esg_shape_str(y->ndim, y->shape, ys, sizeof ys);
			esg_shape_str(ndim, psh, ps, sizeof ps);
			cli_die(EXIT_RUNTIME, "--patch: the model's output %s on a patch %s is not on the "
				"patch's grid: sliding-window inference needs a same-size segmentation",
				ys, ps);
		}
		if (!acc) {
			K = y->shape[1];
			acc = calloc(1, sizeof *acc);
			if (!acc || !(acc->name = strdup("output")) ||
			    !(acc->data = calloc((size_t)K * g.vol_voxels, sizeof(float))))
				cli_die(EXIT_RUNTIME, "out of memory for the whole-volume output");
			acc->dtype = ESG_F32;
			acc->ndim = ndim;
			memcpy(acc->shape, shape, sizeof acc->shape);
			acc->shape[0] = 1;
			acc->shape[1] = K;
		}
		esg_patch_accumulate(&g, origin, y->data, K, w, acc->data, wsum);
		esg_torch_tensor_free(y);
		cli_progress("patches", i + 1, g.n);
	}
	esg_patch_normalise(&g, acc->data, K, wsum);
	free(w);
	free(xs);
	free(wsum);
	return acc;
}

/* Forward the first record's image: the output (new). */
static esg_tensor *predict(esg_model *m, const char *path, const opts *o)
{
	FILE *f = cli_open_in(path, 1);
	esg_reader *rd = esg_reader_open(f, cli_in_name(path));
	esg_record *r = NULL;
	int got = rd ? esg_reader_next(rd, &r) : -1;
	if (got <= 0)
		cli_die(EXIT_RUNTIME, "--input %s: %s", cli_in_name(path), got == 0 ? "no record" : esg_error());
	esg_tensor *img = esg_record_get(r, "image");
	if (!img)
		cli_die(EXIT_RUNTIME, "--input %s: %s", cli_in_name(path), esg_error());
	cli_check_finite(cli_in_name(path), 0, img);
	float *x = esg_tensor_to_f32(img);
	esg_tensor *out = NULL;
	if (x && o->win.spec)
		out = predict_patches(m, o, x, img->ndim, img->shape, cli_in_name(path));
	else if (!x || esg_model_forward(m, x, img->ndim, img->shape, &out))
		cli_die(EXIT_RUNTIME, "--input %s: %s", cli_in_name(path), esg_error());
	free(x);
	esg_record_free(r);
	esg_reader_free(rd);
	if (f != stdin)
		fclose(f);
	return out;
}

/* One-hot argmax over channels of the first item: [1, C, spatial...], so the
 * wrapped model takes any batch size. */
static esg_tensor *argmax_mask(const esg_tensor *out)
{
	esg_tensor *t = calloc(1, sizeof *t);
	if (!t)
		cli_die(EXIT_RUNTIME, "out of memory");
	*t = *out;
	t->shape[0] = 1;
	t->name = strdup("mask");
	int64_t C = out->shape[1], V = esg_tensor_numel(out) / (out->shape[0] * C);
	t->data = calloc((size_t)(C * V), sizeof(float));
	if (!t->name || !t->data)
		cli_die(EXIT_RUNTIME, "out of memory");
	const float *y = out->data;
	float *m = t->data;
	for (int64_t v = 0; v < V; v++) {
		int64_t best = 0;
		for (int64_t c = 1; c < C; c++)
			if (y[c * V + v] > y[best * V + v])
				best = c;
		m[best * V + v] = 1;
	}
	return t;
}

int main(int argc, char **argv)
{
	cli_init("esg-wrap", argc, argv);
	opts o;
	parse(argc, argv, &o);
	const char *dir = find_wrappers(o.wrappers);
	char act_name[64], red_name[64];
	snprintf(act_name, sizeof act_name, "activation_%s.py", o.act);
	snprintf(red_name, sizeof red_name, "reduce_%s.py", !strcmp(o.reduce, "fixed-mask") ? "fixed_mask" : o.reduce);
	char *act_src = slurp(dir, act_name), *sum_src = slurp(dir, "sum.py"),
	     *red_src = slurp(dir, red_name);
	size_t n = strlen(act_src) + strlen(sum_src) + strlen(red_src) + 3;
	char *src = malloc(n);
	if (!src)
		cli_die(EXIT_RUNTIME, "out of memory");
	snprintf(src, n, "%s\n%s\n%s", act_src, sum_src, red_src);

	if (esg_torch_set_threads((int)o.threads))
		cli_die_lib();
	esg_torch_set_memory(cli_memory_budget(), 1);
	/* on the device for the predictions; the wrapper is built around the
	 * model on the CPU (what esg_model_save writes anyway) */
	esg_model *m = esg_model_load(o.model, o.device);
	if (!m)
		cli_die_lib();

	esg_tensor *mask = NULL, *out = NULL;
	if (o.input) {
		out = predict(m, o.input, &o);
		char s[128];
		esg_shape_str(out->ndim, out->shape, s, sizeof s);
		if (out->ndim == 2) {
			fprintf(stderr, "esg-wrap: note: the model's output %s is already per-class scores; "
				"the wrapper passes it through%s\n", s, strcmp(o.act, "none") ? " (after the activation)" : "");
		} else if (out->ndim < 3) {
			cli_die(EXIT_RUNTIME, "model output %s is neither [N, C] nor [N, C, spatial...]", s);
		}
	}
	if (!strcmp(o.reduce, "fixed-mask")) {
		if (o.mask) {
			mask = load_mask(o.mask);
			if (out && out->ndim >= 3) {
				int fits = mask->ndim == out->ndim;
				for (int d = 2; d < out->ndim && fits; d++)
					fits = mask->shape[d] == out->shape[d];
				fits = fits && (mask->shape[1] == 1 || mask->shape[1] == out->shape[1]);
				char ms[128], os[128];
				esg_shape_str(mask->ndim, mask->shape, ms, sizeof ms);
				esg_shape_str(out->ndim, out->shape, os, sizeof os);
				if (!fits)
					cli_die(EXIT_RUNTIME, "--mask '%s' is %s; it does not fit the model output %s",
						o.mask, ms, os);
			}
		} else if (out && out->ndim >= 3) {
			mask = argmax_mask(out);
		} else {
			/* a classifier: nothing to mask, the wrapper passes through */
			mask = calloc(1, sizeof *mask);
			if (!mask || !(mask->name = strdup("mask")) || !(mask->data = calloc(1, sizeof(float))))
				cli_die(EXIT_RUNTIME, "out of memory");
			mask->dtype = ESG_F32;
			mask->ndim = 1;
			mask->shape[0] = 1;
		}
	}
	if (strcmp(o.device, "cpu") != 0) {
		esg_model_free(m);
		if (!(m = esg_model_load(o.model, "cpu")))
			cli_die_lib();
	}
	esg_model *w = esg_model_wrap(m, src, mask, mask ? 1 : 0);
	if (!w)
		cli_die_lib();
	const char *tmp = cli_temp_path(o.out);
	if (esg_model_save(w, tmp))
		cli_die(EXIT_RUNTIME, "cannot write '%s': %s", o.out, esg_error());
	cli_commit_path(tmp);
	esg_model_free(w);
	esg_model_free(m);
	free_tensor(mask);
	esg_torch_tensor_free(out);
	free(src);
	free(act_src);
	free(red_src);
	free(sum_src);
	return 0;
}
