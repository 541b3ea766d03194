/* esg-render - tensor stream -> statistics, NIfTI volumes and PNG pictures. */
#include "cli.h"
#include "stream/stream.h"
#include "render/render.h"
#include "render/report.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
	"Usage: esg-render [--info | --nifti OUT.nii.gz | --png OUT.png] [options] [IN]\n"
	"       esg-render --strip OUT.png [options] IN...\n"
	"       esg-render --curve-plot OUT.png [CURVES.tsv]\n"
	"       esg-render --html OUT.html [--title TEXT] [--table FILE.tsv]...\n"
	"                  [--link TEMPLATE] [picture options] STREAM...\n"
	"Show a tensor stream: statistics, a NIfTI volume with the record's affine,\n"
	"a PNG picture (slice, mosaic, projection; overlay on the image), or one\n"
	"self-contained HTML page of many runs.\n"
	"IN is a tensor stream (*.st.zst); none or '-' reads standard input.\n"
	"\n"
	"Outputs (--nifti and --png may be given together; default --info):\n"
	"      --info               records, tensors, shapes, dtypes, statistics, metadata\n"
	"      --nifti FILE         the tensor as float32 NIfTI-1 (.nii or .nii.gz)\n"
	"      --png FILE           an RGB picture ('-' = standard output)\n"
	"      --strip FILE         the pictures of several streams side by side, numbered\n"
	"                           from 0 (a randomisation strip: the original map first)\n"
	"      --curve-plot FILE    plot esg-metric --curves output (normalised score against\n"
	"                           the fraction; each curve numbered at its end)\n"
	"      --html FILE          one page (works offline) of every record of the STREAMs:\n"
	"                           per input a grid of methods x models of overlays, one\n"
	"                           slice slider (3D), randomisation strips of the models\n"
	"                           DIR/step-NN-NAME.pt, esg-explain's images per layer\n"
	"                           and model, the --table files, sortable\n"
	"  -o FILE                  --png or --nifti by FILE's extension\n"
	"HTML page (also: --slice: the first slice shown; --mip: projections first;\n"
	"--zoom: default about 160 pixels a picture; the picture options below):\n"
	"      --title TEXT         the page's title (default: esegeta report)\n"
	"      --table FILE         a TSV table with a header line (esg-metric output),\n"
	"                           captioned with its file name (repeatable)\n"
	"      --link TEMPLATE      link each cell to its map, a path relative to the page\n"
	"                           with {input}, {model}, {method} replaced, e.g.\n"
	"                           maps/{input}/{model}/{method}.nii.gz\n"
	"What:\n"
	"  -t, --tensor NAME        tensor (default: attribution if present, else image)\n"
	"  -r, --record K           record, counting from 0 (default 0; --info: all)\n"
	"      --batch B            batch item (--png: default 0; --nifti: default all)\n"
	"      --channel C|sum|mean channel for --png (default: sum of the channels of a\n"
	"                           map, as Captum; mean for the gray image; a 2D\n"
	"                           3-channel image alone is drawn in colour)\n"
	"Picture:\n"
	"      --view V             axial, coronal or sagittal (default axial)\n"
	"      --slice INDEX        voxel index along the cut axis (default the middle)\n"
	"      --mosaic N           N evenly spaced slices in a grid\n"
	"      --mip                maximum-intensity projection along the cut axis\n"
	"      --radiological       subject's right on the left (default: on the right)\n"
	"      --overlay            the image in gray with the tensor coloured on top\n"
	"      --background NAME    the gray tensor of --overlay (default image)\n"
	"      --sign S             positive, negative, absolute_value (default) or all\n"
	"      --cmap NAME          gray, hot, viridis, bwr, rdwhgn (default: hot,\n"
	"                           bwr for --sign all, gray for the image alone)\n"
	"      --clip-percentile P  colour scale ends at this percentile (default 99.5)\n"
	"      --threshold T        magnitudes <= T x the colour scale are not drawn over\n"
	"                           the image (0..1; default 0.1 with --overlay, else 0)\n"
	"      --alpha A            overlay opacity (0..1, default 0.5)\n"
	"      --colorbar           add a colour bar with its end values\n"
	"      --zoom F             enlarge by F (1..16, default 1)\n"
	"      --no-aspect          keep one pixel per voxel (default: square millimetres)\n"
	CLI_TIMEOUT_HELP("    ", "                           ")
	"  -h, --help               this help\n"
	"      --version            the version\n"
	CLI_EXIT_STATUS_HELP
	"See esg-render(1).\n";

enum { O_INFO = 256, O_NIFTI, O_PNG, O_BATCH, O_CHANNEL, O_VIEW, O_SLICE, O_MOSAIC,
       O_MIP, O_RADIO, O_OVERLAY, O_BACKGROUND, O_SIGN, O_CMAP, O_CLIP, O_THRESH,
       O_ALPHA, O_COLORBAR, O_ZOOM, O_NOASPECT, O_VERSION, O_STRIP, O_CURVE_PLOT,
       O_HTML, O_TITLE, O_TABLE, O_LINK };

static const struct option long_opts[] = {
	{ "info", no_argument, 0, O_INFO },
	{ "nifti", required_argument, 0, O_NIFTI },
	{ "png", required_argument, 0, O_PNG },
	{ "strip", required_argument, 0, O_STRIP },
	{ "curve-plot", required_argument, 0, O_CURVE_PLOT },
	{ "html", required_argument, 0, O_HTML },
	{ "title", required_argument, 0, O_TITLE },
	{ "table", required_argument, 0, O_TABLE },
	{ "link", required_argument, 0, O_LINK },
	{ "tensor", required_argument, 0, 't' },
	{ "record", required_argument, 0, 'r' },
	{ "batch", required_argument, 0, O_BATCH },
	{ "channel", required_argument, 0, O_CHANNEL },
	{ "view", required_argument, 0, O_VIEW },
	{ "slice", required_argument, 0, O_SLICE },
	{ "mosaic", required_argument, 0, O_MOSAIC },
	{ "mip", no_argument, 0, O_MIP },
	{ "radiological", no_argument, 0, O_RADIO },
	{ "overlay", no_argument, 0, O_OVERLAY },
	{ "background", required_argument, 0, O_BACKGROUND },
	{ "sign", required_argument, 0, O_SIGN },
	{ "cmap", required_argument, 0, O_CMAP },
	{ "clip-percentile", required_argument, 0, O_CLIP },
	{ "threshold", required_argument, 0, O_THRESH },
	{ "alpha", required_argument, 0, O_ALPHA },
	{ "colorbar", no_argument, 0, O_COLORBAR },
	{ "zoom", required_argument, 0, O_ZOOM },
	{ "no-aspect", no_argument, 0, O_NOASPECT },
	CLI_TIMEOUT_LONGOPT,
	{ "help", no_argument, 0, 'h' },
	{ "version", no_argument, 0, O_VERSION },
	{ 0, 0, 0, 0 }
};

struct opts {
	int info;
	const char *nifti, *png, *tensor, *background, *in;
	const char *strip, *curve_plot;
	const char *html, *title, *link;
	char **tables;            /* --html: the --table files */
	int n_tables;
	char **ins;               /* --strip, --html: every input */
	int n_in;
	long record, batch;       /* record -1: all (--info); batch -1: default */
	int channel, channel_set; /* ESG_CH_SUM / ESG_CH_MEAN / index */
	esg_picture_opts pic;     /* the picture options as given (batch, channel
				     and gray are set per picture) */
	int overlay, sign_set, zoom_set, slice_set;
};

static double unit_interval(const char *opt, const char *s)
{
	double v = cli_double(opt, s);
	if (v < 0 || v > 1)
		cli_usage("%s: %s is out of range [0, 1]", opt, s);
	return v;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .record = -1, .batch = -1, .channel = ESG_CH_SUM, .background = "image",
			    .pic = { .slice = -1, .threshold = -1, .aspect = 1, .sign = ESG_SIGN_ABS,
				     .clip = 99.5, .alpha = 0.5, .zoom = 1 } };
	esg_picture_opts *pic = &o->pic;
	int c, slice_set = 0;
	while ((c = getopt_long(argc, argv, "ho:t:r:", long_opts, NULL)) != -1) {
		switch (c) {
		case 'o': { /* by extension */
			size_t n = strlen(optarg);
			if (n > 4 && strcmp(optarg + n - 4, ".png") == 0)
				o->png = optarg;
			else if ((n > 4 && strcmp(optarg + n - 4, ".nii") == 0) ||
				 (n > 7 && strcmp(optarg + n - 7, ".nii.gz") == 0))
				o->nifti = optarg;
			else
				cli_usage("-o: '%s' does not end in .png, .nii or .nii.gz", optarg);
			break;
		}
		case O_INFO: o->info = 1; break;
		case O_NIFTI: o->nifti = optarg; break;
		case O_PNG: o->png = optarg; break;
		case O_STRIP: o->strip = optarg; break;
		case O_CURVE_PLOT: o->curve_plot = optarg; break;
		case O_HTML: o->html = optarg; break;
		case O_TITLE: o->title = optarg; break;
		case O_LINK:
			if (esg_report_check_link(optarg) < 0)
				cli_usage("--link: %s", esg_error());
			o->link = optarg;
			break;
		case O_TABLE: /* argv outlives the options */
			o->tables = realloc(o->tables, (size_t)(o->n_tables + 1) * sizeof *o->tables);
			if (!o->tables)
				cli_die(EXIT_RUNTIME, "out of memory");
			o->tables[o->n_tables++] = optarg;
			break;
		case 't': o->tensor = optarg; break;
		case 'r': o->record = cli_long("--record", optarg, 0, 1L << 40); break;
		case O_BATCH: o->batch = cli_long("--batch", optarg, 0, 1L << 40); break;
		case O_CHANNEL:
			o->channel_set = 1;
			if (strcmp(optarg, "sum") == 0)
				o->channel = ESG_CH_SUM;
			else if (strcmp(optarg, "mean") == 0)
				o->channel = ESG_CH_MEAN;
			else
				o->channel = (int)cli_long("--channel", optarg, 0, 1 << 30);
			break;
		case O_VIEW:
			if (esg_view_parse(optarg, &pic->view) < 0)
				cli_usage("--view: %s", esg_error());
			break;
		case O_SLICE: pic->slice = cli_long("--slice", optarg, 0, 1L << 40), slice_set = 1; break;
		case O_MOSAIC: pic->mosaic = (int)cli_long("--mosaic", optarg, 1, 1024); break;
		case O_MIP: pic->mip = 1; break;
		case O_RADIO: pic->radiological = 1; break;
		case O_OVERLAY: o->overlay = 1; break;
		case O_BACKGROUND: o->background = optarg; break;
		case O_SIGN:
			if (esg_sign_parse(optarg, &pic->sign) < 0)
				cli_usage("--sign: %s", esg_error());
			o->sign_set = 1;
			break;
		case O_CMAP:
			if (!(pic->cmap = esg_cmap_find(optarg)))
				cli_usage("--cmap: %s", esg_error());
			break;
		case O_CLIP:
			pic->clip = cli_double("--clip-percentile", optarg);
			if (pic->clip <= 0 || pic->clip > 100)
				cli_usage("--clip-percentile: %s is out of range (0, 100]", optarg);
			break;
		case O_THRESH: pic->threshold = unit_interval("--threshold", optarg); break;
		case O_ALPHA: pic->alpha = unit_interval("--alpha", optarg); break;
		case O_COLORBAR: pic->colorbar = 1; break;
		case O_ZOOM: pic->zoom = (int)cli_long("--zoom", optarg, 1, 16), o->zoom_set = 1; break;
		case O_NOASPECT: pic->aspect = 0; break;
		case CLI_OPT_TIMEOUT: cli_timeout_option(optarg); break;
		case 'h': cli_help(usage_text);
		case O_VERSION: cli_version();
		default: cli_usage("unknown option (see the list of options)");
		}
	}
	o->slice_set = slice_set;
	if ((o->title || o->tables || o->link) && !o->html)
		cli_usage("--title, --table and --link belong to --html");
	if (o->html) {
		if (o->info || o->nifti || o->png || o->strip || o->curve_plot)
			cli_usage("--html makes its own page; give it without --info, --nifti, --png, --strip or --curve-plot");
		/* (--colorbar is welcome: the page always shows its colour bar) */
		if (pic->mosaic || o->record >= 0)
			cli_usage("--mosaic and --record do not apply to --html (it shows every slice of every record)");
		o->ins = argv + optind;
		o->n_in = argc - optind;
		if (o->n_in < 1)
			cli_usage("--html: give the streams to show ('-' for standard input)");
		return;
	}
	if ((o->strip || o->curve_plot) && (o->info || o->nifti || o->png || (o->strip && o->curve_plot)))
		cli_usage("--%s makes its own picture; give it without --info, --nifti, --png or --%s",
			  o->strip ? "strip" : "curve-plot", o->strip ? "curve-plot" : "strip");
	if (o->strip) {
		o->ins = argv + optind;
		o->n_in = argc - optind;
		if (o->n_in < 1)
			cli_usage("--strip: give the streams to put side by side");
		if (o->record < 0)
			o->record = 0;
		return;
	}
	if (optind < argc)
		o->in = argv[optind++];
	if (optind < argc)
		cli_usage("one input at most; '%s' is extra", argv[optind]);
	if (o->curve_plot)
		return;
	if (!o->nifti && !o->png)
		o->info = 1;
	if (o->info && (o->nifti || o->png))
		cli_usage("--info prints to standard output; give it alone");
	if (o->nifti && strcmp(o->nifti, "-") == 0)
		cli_usage("--nifti needs a file name (.nii or .nii.gz)");
	if ((pic->mip != 0) + (pic->mosaic != 0) + slice_set > 1)
		cli_usage("--slice, --mosaic and --mip exclude each other");
	if (o->record < 0 && !o->info)
		o->record = 0;
}

/* ---- --info ---------------------------------------------------------- */

/* A reader error, naming the input once (the reader may name it already). */
static noreturn void die_stream(const char *name)
{
	const char *e = esg_error();
	if (strncmp(e, name, strlen(name)) == 0)
		cli_die(EXIT_RUNTIME, "%s", e);
	cli_die(EXIT_RUNTIME, "%s: %s", name, e);
}

static void print_stats(const esg_tensor *t)
{
	int64_t n = esg_tensor_numel(t), nz = 0, nan = 0, inf = 0, fin = 0;
	double mn = INFINITY, mx = -INFINITY, sum = 0;
	for (int64_t i = 0; i < n; i++) {
		double x = esg_tensor_get(t, i);
		nz += x != 0 && !isnan(x);
		if (isnan(x)) {
			nan++;
			continue;
		}
		if (isinf(x)) {
			inf++;
			continue;
		}
		fin++;
		sum += x;
		mn = x < mn ? x : mn;
		mx = x > mx ? x : mx;
	}
	double mean = fin ? sum / (double)fin : NAN, ss = 0;
	for (int64_t i = 0; fin && i < n; i++) {
		double x = esg_tensor_get(t, i);
		if (isfinite(x))
			ss += (x - mean) * (x - mean);
	}
	double sd = fin ? sqrt(ss / (double)fin) : NAN;
	if (!fin)
		mn = mx = NAN;
	printf("    min:       %.7g\n    max:       %.7g\n    mean:      %.7g\n    std:       %.7g\n",
	       mn, mx, mean, sd);
	printf("    nonzero:   %lld\n    nan:       %lld\n    inf:       %lld\n", (long long)nz,
	       (long long)nan, (long long)inf);
}

static void print_record(const esg_record *r, size_t k)
{
	printf("record %zu:\n  tensors:     %zu\n", k, r->n_tensors);
	for (size_t i = 0; i < r->n_tensors; i++) {
		const esg_tensor *t = &r->tensors[i];
		char shp[160];
		esg_shape_str(t->ndim, t->shape, shp, sizeof shp);
		printf("  tensor %s:\n    dtype:     %s\n    shape:     %s\n    values:    %lld\n",
		       t->name, esg_dtype_name(t->dtype), shp, (long long)esg_tensor_numel(t));
		print_stats(t);
	}
	double aff[16];
	int a = esg_meta_get_affine(r, aff);
	if (a == 0) {
		double vs[3];
		esg_affine_voxel_sizes(aff, vs);
		printf("  voxel size:  %.6g %.6g %.6g\n  transform:\n", vs[0], vs[1], vs[2]);
		for (int row = 0; row < 4; row++)
			printf("    %12.6g %12.6g %12.6g %12.6g\n", aff[4 * row], aff[4 * row + 1],
			       aff[4 * row + 2], aff[4 * row + 3]);
	} else if (a < 0) {
		cli_warn("record %zu: esg.affine: %s", k, esg_error());
	}
	printf("  metadata:    %zu\n", r->n_meta);
	for (size_t i = 0; i < r->n_meta; i++)
		printf("    %s: %s\n", r->meta_keys[i], r->meta_vals[i]);
}

static void run_info(esg_reader *rd, const struct opts *o, const char *name)
{
	esg_record *r;
	int rc;
	size_t k = 0, shown = 0;
	while ((rc = esg_reader_next(rd, &r)) == 1) {
		if (o->record < 0 || (size_t)o->record == k) {
			print_record(r, k);
			shown++;
		}
		esg_record_free(r);
		k++;
		if (o->record >= 0 && (size_t)o->record < k)
			break;
	}
	if (rc < 0)
		die_stream(name);
	if (k == 0)
		cli_die(EXIT_RUNTIME, "%s: no records (empty stream; did the upstream command fail?)", name);
	if (o->record >= 0 && !shown)
		cli_die(EXIT_RUNTIME, "%s: record %ld is out of range (the stream has %zu)", name,
			o->record, k);
	if (o->record < 0)
		printf("records: %zu\n", k);
	cli_finish_stdout();
	esg_reader_free(rd);
}

/* ---- the selected record --------------------------------------------- */

static esg_record *read_record(esg_reader *rd, long want, const char *name)
{
	esg_record *r = NULL;
	int rc;
	long k = 0;
	while ((rc = esg_reader_next(rd, &r)) == 1) {
		if (k++ == want)
			return r;
		esg_record_free(r);
	}
	if (rc < 0)
		die_stream(name);
	if (k == 0)
		cli_die(EXIT_RUNTIME, "%s: no records (empty stream; did the upstream command fail?)", name);
	cli_die(EXIT_RUNTIME, "%s: record %ld is out of range (the stream has %ld)", name, want, k);
}

static const esg_tensor *get_tensor(const esg_record *r, const char *want, long k)
{
	const esg_tensor *t = esg_record_get(r, want);
	if (!t)
		cli_die(EXIT_RUNTIME, "record %ld: %s", k, esg_error());
	return t;
}

static void to_volume(const esg_record *r, const esg_tensor *t, esg_vol *v)
{
	if (esg_vol_from_tensor(t, esg_meta_get(r, "esg.axes"), v) < 0)
		cli_die_lib();
}

/* Affine, else esg.spacing on the diagonal (return 1), else identity (2). */
static int record_affine(const esg_record *r, const esg_vol *v, double aff[16])
{
	int a = esg_vol_affine(r, v, aff);
	if (a < 0)
		cli_die(EXIT_RUNTIME, "esg.affine: %s", esg_error());
	return a;
}

static void write_nifti(const esg_record *r, const struct opts *o)
{
	const char *name = o->tensor ? o->tensor
				     : esg_record_find(r, "attribution") ? "attribution" : "image";
	esg_vol v;
	to_volume(r, get_tensor(r, name, o->record), &v);
	if (o->batch >= 0) { /* keep the channels of one batch item */
		if (o->batch >= v.n)
			cli_die(EXIT_RUNTIME, "--batch %ld is out of range (tensor '%s' has %lld)",
				o->batch, name, (long long)v.n);
		int64_t vox = v.dim[0] * v.dim[1] * v.dim[2];
		memmove(v.data, v.data + o->batch * v.c * vox, (size_t)(v.c * vox) * sizeof(float));
		v.n = 1;
	}
	double aff[16];
	int how = record_affine(r, &v, aff);
	char descrip[80];
	snprintf(descrip, sizeof descrip, "esg-render %s", name);
	const char *tmp = cli_temp_path(o->nifti);
	/* scanner-based qform, sform aligned to the scan (see esg-render(1)) */
	if (esg_nifti_write(tmp, o->nifti, &v, aff, how ? 0 : 1, how ? 0 : 2, descrip) < 0)
		cli_die_lib();
	cli_commit_path(tmp);
	esg_vol_free(&v);
}

/* ---- --png ----------------------------------------------------------- */

/* The picture of one record: the tool chooses the tensors, the library draws. */
static void render_png(const esg_record *r, const struct opts *o, esg_canvas *out)
{
	const char *name = o->tensor;
	if (!name)
		name = esg_record_find(r, "attribution") || o->overlay ? "attribution" : "image";
	const esg_tensor *t = get_tensor(r, name, o->record);
	const esg_tensor *bg = o->overlay ? get_tensor(r, o->background, o->record) : NULL;
	esg_picture_opts pic = o->pic;
	pic.batch = o->batch >= 0 ? o->batch : 0;
	pic.channel = o->channel_set ? o->channel : ESG_PICTURE_CH_AUTO;
	/* the image alone is shown as a gray picture, a map in colour */
	pic.gray = !o->overlay && strcmp(name, o->background) == 0 && !o->sign_set;
	if (esg_picture_make(r, t, bg, &pic, out) < 0)
		cli_die_lib();
}

static void save_png(const char *path, const esg_canvas *cv)
{
	FILE *f = cli_open_out(path, 1);
	if (esg_png_write(f, cv) < 0)
		cli_die(EXIT_RUNTIME, "%s: %s", cli_in_name(path), esg_error());
	cli_commit_out(f);
}

static void write_png(const esg_record *r, const struct opts *o)
{
	esg_canvas cv;
	render_png(r, o, &cv);
	save_png(o->png, &cv);
	esg_canvas_free(&cv);
}

/* ---- --strip: several streams' pictures side by side ------------------- */

static void write_strip(const struct opts *o)
{
	esg_canvas *cv = calloc((size_t)o->n_in, sizeof *cv), strip;
	if (!cv)
		cli_die(EXIT_RUNTIME, "out of memory");
	for (int k = 0; k < o->n_in; k++) {
		const char *name = cli_in_name(o->ins[k]);
		FILE *in = cli_open_in(o->ins[k], 1);
		esg_reader *rd = esg_reader_open(in, name);
		if (!rd)
			cli_die_lib();
		esg_record *r = read_record(rd, o->record, name);
		render_png(r, o, &cv[k]);
		esg_record_free(r);
		esg_reader_free(rd);
		if (in != stdin)
			fclose(in);
	}
	if (esg_picture_strip(cv, o->n_in, &strip) < 0)
		cli_die_lib();
	for (int k = 0; k < o->n_in; k++)
		esg_canvas_free(&cv[k]);
	free(cv);
	save_png(o->strip, &strip);
	esg_canvas_free(&strip);
}

/* ---- --curve-plot: deletion / insertion curves -------------------------- */

/* The points of esg-metric --curves output: a curve is a run of rows that
 * agree in every column before 'fraction'; rows without a number in
 * 'normalised' are left out. */
struct points {
	double *x, *y;
	size_t n, cap;
	size_t *first;       /* curve k starts at point first[k] */
	size_t curves, cap_curves;
};

/* Room for element n of *p (of *cap elements of `size` bytes). */
static void grow(void *p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return;
	size_t c = *cap ? 2 * *cap : 256;
	void *q = realloc(*(void **)p, c * size);
	if (!q)
		cli_die(EXIT_RUNTIME, "out of memory");
	*(void **)p = q;
	*cap = c;
}

static void read_curves(FILE *in, const char *name, struct points *pt)
{
	char line[8192];
	if (!fgets(line, sizeof line, in))
		cli_die(EXIT_RUNTIME, "%s: empty (expected esg-metric --curves output)", name);
	/* columns by name */
	int col_frac = -1, col_y = -1, ncol = 0;
	for (char *save = NULL, *t = strtok_r(line, "\t\n", &save); t; t = strtok_r(NULL, "\t\n", &save), ncol++) {
		if (!strcmp(t, "fraction"))
			col_frac = ncol;
		if (!strcmp(t, "normalised"))
			col_y = ncol;
	}
	if (col_frac < 0 || col_y < 0)
		cli_die(EXIT_RUNTIME, "%s: no 'fraction' and 'normalised' columns (expected esg-metric --curves output)",
			name);
	char key[4096] = "", prev_key[4096] = "";
	while (fgets(line, sizeof line, in)) {
		char *f[64];
		int n = 0;
		for (char *save = NULL, *t = strtok_r(line, "\t\n", &save); t && n < 64; t = strtok_r(NULL, "\t\n", &save))
			f[n++] = t;
		if (n <= col_frac || n <= col_y)
			continue;
		/* a curve: every column but fraction and the values */
		key[0] = 0;
		for (int i = 0; i < n && i < col_frac; i++) {
			strncat(key, f[i], sizeof key - strlen(key) - 2);
			strncat(key, "\t", sizeof key - strlen(key) - 1);
		}
		double fr = strtod(f[col_frac], NULL), v = strtod(f[col_y], NULL);
		if (!isfinite(v))
			continue;
		if (!pt->curves || strcmp(key, prev_key) != 0) {
			grow(&pt->first, &pt->cap_curves, pt->curves, sizeof *pt->first);
			pt->first[pt->curves++] = pt->n;
			snprintf(prev_key, sizeof prev_key, "%s", key);
		}
		size_t cap = pt->cap;
		grow(&pt->x, &cap, pt->n, sizeof *pt->x);
		grow(&pt->y, &pt->cap, pt->n, sizeof *pt->y);
		pt->x[pt->n] = fr;
		pt->y[pt->n++] = v;
	}
	if (ferror(in))
		cli_die(EXIT_RUNTIME, "%s: read error", name);
	if (!pt->n)
		cli_die(EXIT_RUNTIME, "%s: no curve rows", name);
}

static void write_curve_plot(const struct opts *o)
{
	const char *name = cli_in_name(o->in);
	FILE *in = cli_open_in(o->in, 0);
	struct points pt = { 0 };
	read_curves(in, name, &pt);
	if (in != stdin)
		fclose(in);
	esg_curve *c = calloc(pt.curves, sizeof *c);
	if (!c)
		cli_die(EXIT_RUNTIME, "out of memory");
	for (size_t k = 0; k < pt.curves; k++) {
		size_t end = k + 1 < pt.curves ? pt.first[k + 1] : pt.n;
		c[k] = (esg_curve){ pt.x + pt.first[k], pt.y + pt.first[k], (int64_t)(end - pt.first[k]) };
	}
	esg_canvas plot;
	if (esg_plot_curves(c, (int)pt.curves, &plot) < 0)
		cli_die_lib();
	free(c);
	free(pt.x);
	free(pt.y);
	free(pt.first);
	save_png(o->curve_plot, &plot);
	esg_canvas_free(&plot);
}

/* ---- --html: the report of many streams -------------------------------- */

/* A whole text file (a --table), NUL-terminated. */
static char *slurp(const char *path, size_t *n)
{
	FILE *f = cli_open_in(path, 0);
	size_t cap = 1 << 16, len = 0, got;
	char *buf = malloc(cap);
	while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += got;
		if (len + 1 == cap && !(buf = realloc(buf, cap *= 2)))
			break;
	}
	if (!buf)
		cli_die(EXIT_RUNTIME, "out of memory");
	if (ferror(f))
		cli_die(EXIT_RUNTIME, "%s: read error", cli_in_name(path));
	if (f != stdin)
		fclose(f);
	buf[len] = 0;
	*n = len;
	return buf;
}

static void write_html(const struct opts *o)
{
	const esg_picture_opts *p = &o->pic;
	esg_report_opts ro = {
		.title = o->title, .link = o->link, .tensor = o->tensor, .background = o->background,
		.view = p->view, .radiological = p->radiological, .aspect = p->aspect,
		.zoom = o->zoom_set ? p->zoom : 0, .mip = p->mip, .slice = o->slice_set ? p->slice : -1,
		.batch = o->batch >= 0 ? o->batch : 0, .channel = o->channel_set ? o->channel : ESG_CH_SUM,
		.sign = p->sign, .cmap = p->cmap, .clip = p->clip, .threshold = p->threshold,
		.alpha = p->alpha,
	};
	/* the page's folder: table cells under it are shown relative to the page */
	char base[4096] = "";
	const char *slash = strrchr(o->html, '/');
	if (slash && (size_t)(slash - o->html) < sizeof base)
		snprintf(base, sizeof base, "%.*s", (int)(slash - o->html), o->html);
	ro.base = base;
	esg_report *rp = esg_report_new(&ro);
	if (!rp)
		cli_die_lib();
	for (int t = 0; t < o->n_tables; t++) {
		size_t n;
		char *txt = slurp(o->tables[t], &n);
		const char *b = strrchr(o->tables[t], '/');
		/* the caption is the base name */
		if (esg_report_add_table(rp, b ? b + 1 : o->tables[t], txt, n) < 0)
			cli_die(EXIT_RUNTIME, "%s: %s", cli_in_name(o->tables[t]), esg_error());
		free(txt);
	}
	for (int k = 0; k < o->n_in; k++) {
		const char *name = cli_in_name(o->ins[k]);
		FILE *in = cli_open_in(o->ins[k], 1);
		esg_reader *rd = esg_reader_open(in, name);
		if (!rd)
			cli_die_lib();
		esg_record *r;
		int rc;
		size_t n = 0;
		while ((rc = esg_reader_next(rd, &r)) == 1) {
			char where[600];
			snprintf(where, sizeof where, "%s: record %zu", name, n++);
			if (esg_report_add_record(rp, r, where, strcmp(o->ins[k], "-") ? o->ins[k] : NULL, n - 1) < 0)
				cli_die_lib();
			esg_record_free(r);
		}
		if (rc < 0)
			die_stream(name);
		if (n == 0)
			cli_die(EXIT_RUNTIME, "%s: no records (empty stream; did the upstream command fail?)", name);
		esg_reader_free(rd);
		if (in != stdin)
			fclose(in);
	}
	for (size_t i = 0; i < esg_report_n_warnings(rp); i++)
		cli_warn("%s", esg_report_warning(rp, i));
	FILE *f = cli_open_out(o->html, 0);
	if (esg_report_write(rp, f) < 0)
		cli_die(EXIT_RUNTIME, "%s: %s", cli_in_name(o->html), esg_error());
	cli_commit_out(f);
	esg_report_free(rp);
	free(o->tables);
}

int main(int argc, char **argv)
{
	cli_init("esg-render", argc, argv);
	struct opts o;
	parse_args(argc, argv, &o);
	if (o.html) {
		write_html(&o);
		return 0;
	}
	if (o.strip) {
		write_strip(&o);
		return 0;
	}
	if (o.curve_plot) {
		write_curve_plot(&o);
		return 0;
	}
	const char *name = cli_in_name(o.in);
	FILE *in = cli_open_in(o.in, 1);
	esg_reader *rd = esg_reader_open(in, name);
	if (!rd)
		cli_die_lib();
	if (o.info) {
		run_info(rd, &o, name);
	} else {
		esg_record *r = read_record(rd, o.record, name);
		if (o.nifti)
			write_nifti(r, &o);
		if (o.png)
			write_png(r, &o);
		esg_record_free(r);
		esg_reader_free(rd);
	}
	if (in != stdin)
		fclose(in);
	return 0;
}
