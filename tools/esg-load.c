/* esg-load - images (NIfTI-1/2, PNG, NPY) to a model-ready tensor stream. */
#include "cli.h"
#include "stream/stream.h"
#include "image/image.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
	"Usage: esg-load [OPTION]... FILE... [-o OUT]\n"
	"Read NIfTI-1/2 (.nii, .nii.gz), PNG or NPY images and write a tensor stream:\n"
	"one record per image, tensor 'image' [1, C, spatial...] float32, with the\n"
	"affine (voxel i,j,k -> world) in the metadata.\n"
	"\n"
	"  -o, --output FILE        write the stream to FILE atomically (default stdout)\n"
	"  -g, --group N            every N consecutive FILEs are the channels of one\n"
	"                           record (default 1; 0: all FILEs form one record)\n"
	"      --volumes MODE       4th NIfTI dimension: channels (default) or records\n"
	"      --axes ORDER         spatial axis order: ijk (default; nibabel's get_fdata)\n"
	"                           or kji (reversed, the file's memory order)\n"
	"      --layout LETTERS     NPY axis roles, one letter per axis: N records,\n"
	"                           C channels, others spatial (e.g. NCHW, HWC, DHW)\n"
	"      --channels MODE      keep (default), gray, rgb or no-alpha (PNG colour)\n"
	"      --slice AXIS:INDEX   keep one 2D slice; AXIS i, j or k; INDEX a number or mid\n"
	"      --normalise MODE     none (default), minmax, zscore or percentile\n"
	"      --percentiles LO,HI  percentile clipping range (default 0.5,99.5)\n"
	"      --nonzero            normalisation statistics from non-zero voxels only\n"
	"      --multiple N[,N...]  crop or pad each spatial axis to a multiple of N\n"
	"      --fit MODE           pad (default) or crop, for --multiple\n"
	"      --align MODE         centre (default) or end: where voxels are added/removed\n"
	"      --pad-value V        value of padded voxels, after normalisation (default 0)\n"
	"      --tensor NAME        name of the tensor (default image)\n"
	"      --name NAME          the input's name in reports (esg.name; default: its\n"
	"                           file name without extension)\n"
	"      --level N            zstd compression level (1-19, default 3)\n"
	CLI_TIMEOUT_HELP("    ", "                           ")
	"  -h, --help               show this help and exit\n"
	"      --version            show the version and exit\n"
	"\n"
	"Steps, in order: load, channel conversion, stack channels, slice, normalise\n"
	"(per channel), crop/pad.  See esg-load(1).\n"
	"\n"
	CLI_EXIT_STATUS_HELP;

struct opts {
	const char *out, *tensor, *layout, *name;
	long group, level;
	int volumes_as_records, reverse, nonzero, crop, at_end;
	esg_chan chan;
	esg_norm norm;
	double plo, phi;
	char slice_axis;         /* 0: no slice */
	long slice_index;        /* -1: middle */
	int nmult;
	int64_t mult[ESG_MAX_SPATIAL];
	float pad_value;
};

static int pick(const char *opt, const char *arg, const char *const *names, const int *vals)
{
	for (int i = 0; names[i]; i++)
		if (strcmp(arg, names[i]) == 0)
			return vals[i];
	cli_usage("%s: unknown value '%s'", opt, arg);
}

static void parse_slice(struct opts *o, const char *arg)
{
	if (!(arg[0] == 'i' || arg[0] == 'j' || arg[0] == 'k') || (arg[1] != ':' && arg[1] != '='))
		cli_usage("--slice: '%s' is not AXIS:INDEX (AXIS i, j or k)", arg);
	o->slice_axis = arg[0];
	o->slice_index = strcmp(arg + 2, "mid") == 0 ? -1 : cli_long("--slice", arg + 2, 0, INT32_MAX);
}

static void parse_percentiles(struct opts *o, const char *arg)
{
	char *end;
	o->plo = strtod(arg, &end);
	if (*end != ',')
		cli_usage("--percentiles: '%s' is not LO,HI", arg);
	o->phi = cli_double("--percentiles", end + 1);
	if (!(o->plo >= 0 && o->plo < o->phi && o->phi <= 100))
		cli_usage("--percentiles: want 0 <= LO < HI <= 100, got '%s'", arg);
}

static void parse_multiple(struct opts *o, const char *arg)
{
	char *copy = strdup(arg), *save = NULL;
	o->nmult = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (o->nmult == ESG_MAX_SPATIAL)
			cli_usage("--multiple: at most %d values", ESG_MAX_SPATIAL);
		o->mult[o->nmult++] = cli_long("--multiple", t, 1, 1 << 20);
	}
	free(copy);
	if (!o->nmult)
		cli_usage("--multiple: no value given");
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	enum { O_VOLUMES = 256, O_AXES, O_LAYOUT, O_CHANNELS, O_SLICE, O_NORM, O_PCT, O_NONZERO,
	       O_MULT, O_FIT, O_ALIGN, O_PAD, O_TENSOR, O_LEVEL, O_VERSION, O_NAME };
	static const struct option lo[] = {
		{ "output", required_argument, 0, 'o' }, { "group", required_argument, 0, 'g' },
		{ "volumes", required_argument, 0, O_VOLUMES }, { "axes", required_argument, 0, O_AXES },
		{ "layout", required_argument, 0, O_LAYOUT },
		{ "channels", required_argument, 0, O_CHANNELS },
		{ "slice", required_argument, 0, O_SLICE }, { "normalise", required_argument, 0, O_NORM },
		{ "normalize", required_argument, 0, O_NORM },
		{ "percentiles", required_argument, 0, O_PCT }, { "nonzero", no_argument, 0, O_NONZERO },
		{ "multiple", required_argument, 0, O_MULT }, { "fit", required_argument, 0, O_FIT },
		{ "align", required_argument, 0, O_ALIGN }, { "pad-value", required_argument, 0, O_PAD },
		{ "tensor", required_argument, 0, O_TENSOR }, { "level", required_argument, 0, O_LEVEL },
		{ "name", required_argument, 0, O_NAME },
		CLI_TIMEOUT_LONGOPT,
		{ "help", no_argument, 0, 'h' }, { "version", no_argument, 0, O_VERSION },
		{ 0, 0, 0, 0 }
	};
	static const char *const vol_n[] = { "channels", "records", 0 };
	static const int vol_v[] = { 0, 1 };
	static const char *const axes_n[] = { "ijk", "kji", 0 };
	static const int axes_v[] = { 0, 1 };
	static const char *const chan_n[] = { "keep", "gray", "grey", "rgb", "no-alpha", 0 };
	static const int chan_v[] = { ESG_CHAN_KEEP, ESG_CHAN_GRAY, ESG_CHAN_GRAY, ESG_CHAN_RGB,
				      ESG_CHAN_NOALPHA };
	static const char *const norm_n[] = { "none", "minmax", "zscore", "percentile", 0 };
	static const int norm_v[] = { ESG_NORM_NONE, ESG_NORM_MINMAX, ESG_NORM_ZSCORE,
				      ESG_NORM_PERCENTILE };
	static const char *const fit_n[] = { "pad", "crop", 0 };
	static const int fit_v[] = { 0, 1 };
	static const char *const align_n[] = { "centre", "center", "end", 0 };
	static const int align_v[] = { 0, 0, 1 };
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:g:h", lo, NULL)) != -1) {
		switch (c) {
		case 'o': o->out = optarg; break;
		case 'g': o->group = cli_long("--group", optarg, 0, 1 << 20); break;
		case O_VOLUMES: o->volumes_as_records = pick("--volumes", optarg, vol_n, vol_v); break;
		case O_AXES: o->reverse = pick("--axes", optarg, axes_n, axes_v); break;
		case O_LAYOUT: o->layout = optarg; break;
		case O_CHANNELS: o->chan = pick("--channels", optarg, chan_n, chan_v); break;
		case O_SLICE: parse_slice(o, optarg); break;
		case O_NORM: o->norm = pick("--normalise", optarg, norm_n, norm_v); break;
		case O_PCT: parse_percentiles(o, optarg); break;
		case O_NONZERO: o->nonzero = 1; break;
		case O_MULT: parse_multiple(o, optarg); break;
		case O_FIT: o->crop = pick("--fit", optarg, fit_n, fit_v); break;
		case O_ALIGN: o->at_end = pick("--align", optarg, align_n, align_v); break;
		case O_PAD: o->pad_value = (float)cli_double("--pad-value", optarg); break;
		case O_TENSOR: o->tensor = optarg; break;
		case O_NAME:
			if (!*optarg)
				cli_usage("--name: must not be empty");
			o->name = optarg;
			break;
		case O_LEVEL: o->level = cli_long("--level", optarg, 1, 19); break;
		case CLI_OPT_TIMEOUT: cli_timeout_option(optarg); break;
		case 'h': cli_help(usage_text);
		case O_VERSION: cli_version();
		case ':': cli_usage("option '%s' needs a value", argv[optind - 1]);
		default: cli_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		cli_usage("no input FILE given");
	for (int i = optind; i < argc; i++)
		if (strcmp(argv[i], "-") == 0)
			cli_usage("images cannot be read from standard input; give file names");
	if (o->layout && !*o->layout)
		cli_usage("--layout: empty");
	if (!*o->tensor)
		cli_usage("--tensor: empty name");
	long nin = argc - optind;
	if (o->group == 0)
		o->group = nin;
	if (nin % o->group)
		cli_usage("--group %ld: the %ld FILEs do not split into groups of %ld", o->group, nin,
			  o->group);
}

static char *json_strings(char **s, int n)
{
	cJSON *a = cJSON_CreateArray();
	for (int i = 0; a && i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(s[i]));
	char *txt = a ? cJSON_PrintUnformatted(a) : NULL;
	cJSON_Delete(a);
	if (!txt)
		cli_die(EXIT_RUNTIME, "out of memory");
	return txt;
}

static int affine_differs(const double *a, const double *b)
{
	for (int k = 0; k < 16; k++)
		if (fabs(a[k] - b[k]) > 1e-3 * (1 + fabs(a[k])))
			return 1;
	return 0;
}

/* Load the files of one group and stack their channels. */
static esg_image *load_group(char **files, long n, const struct opts *o)
{
	esg_load_opts lo = { o->reverse, o->volumes_as_records, o->layout };
	esg_image *im = NULL;
	for (long f = 0; f < n; f++) {
		esg_image *one = esg_load_image(files[f], &lo);
		if (!one || esg_image_channels(one, o->chan) < 0) {
			if (one)
				esg_prefix_error("'%s'", files[f]);
			esg_image_free(im);
			esg_image_free(one);
			return NULL;
		}
		if (!im) {
			im = one;
			continue;
		}
		if (affine_differs(im->affine, one->affine))
			cli_warn("'%s' and '%s' have different affines; keeping the first", files[0],
				 files[f]);
		if (esg_image_cat_channels(im, one) < 0) {
			esg_prefix_error("cannot stack '%s' as channels of '%s'", files[f], files[0]);
			esg_image_free(im);
			return NULL;
		}
	}
	return im;
}

/* Slice, normalise, crop / pad one record; metadata describing it into r. */
static int preprocess(esg_image *im, const struct opts *o, esg_record *r)
{
	if (o->slice_axis) {
		const char *at = strchr(im->axes, o->slice_axis);
		int64_t idx = o->slice_index >= 0 ? o->slice_index : at ? im->dim[at - im->axes] / 2 : 0;
		if (esg_image_slice(im, o->slice_axis, idx) < 0)
			return esg_prefix_error("--slice");
		esg_meta_setf(r, "esg.slice", "{\"axis\":\"%c\",\"index\":%lld}", o->slice_axis,
			      (long long)idx);
	}
	if (esg_image_normalise(im, o->norm, o->plo, o->phi, o->nonzero) < 0)
		return -1;
	if (o->norm != ESG_NORM_NONE) {
		static const char *nm[] = { "none", "minmax", "zscore", "percentile" };
		if (o->norm == ESG_NORM_PERCENTILE)
			esg_meta_setf(r, "esg.normalise", "{\"mode\":\"percentile\",\"lo\":%g,\"hi\":%g,"
				      "\"nonzero\":%s}", o->plo, o->phi, o->nonzero ? "true" : "false");
		else
			esg_meta_setf(r, "esg.normalise", "{\"mode\":\"%s\",\"nonzero\":%s}", nm[o->norm],
				      o->nonzero ? "true" : "false");
	}
	if (o->nmult) {
		int64_t mult[ESG_MAX_SPATIAL], off[ESG_MAX_SPATIAL], nd[ESG_MAX_SPATIAL];
		double orig[ESG_MAX_SPATIAL], offd[ESG_MAX_SPATIAL];
		if (o->nmult != 1 && o->nmult != im->nsp)
			return esg_set_error("--multiple: %d values given for %d spatial axes", o->nmult,
					     im->nsp);
		for (int a = 0; a < im->nsp; a++) {
			mult[a] = o->mult[o->nmult == 1 ? 0 : a];
			orig[a] = (double)im->dim[a];
		}
		if (esg_fit_multiple(im->nsp, im->dim, mult, o->crop, o->at_end, off, nd) < 0 ||
		    esg_image_crop_pad(im, off, nd, o->pad_value) < 0)
			return esg_prefix_error("--multiple");
		for (int a = 0; a < im->nsp; a++)
			offd[a] = (double)off[a];
		esg_meta_set_doubles(r, "esg.shape_orig", orig, im->nsp);
		esg_meta_set_doubles(r, "esg.crop", offd, im->nsp);
	}
	return 0;
}

static int put_record(esg_writer *w, esg_image *im, const struct opts *o, char **files, long nf,
		      int64_t rec, int argc, char **argv)
{
	esg_record *r = esg_record_new();
	if (!r)
		return -1;
	int rc = -1;
	if (preprocess(im, o, r) < 0)
		goto out;
	int64_t shape[ESG_MAX_DIMS] = { 1, im->c };
	for (int a = 0; a < im->nsp; a++)
		shape[2 + a] = im->dim[a];
	if (!esg_record_add_f32(r, o->tensor, 2 + im->nsp, shape, im->data))
		goto out;
	double sp[ESG_MAX_SPATIAL];
	memcpy(sp, im->spacing, sizeof sp);
	if (esg_meta_set(r, "esg.source", files[0]) < 0 || esg_meta_set_affine(r, im->affine) < 0 ||
	    (o->name && esg_meta_set(r, "esg.name", o->name) < 0) ||
	    esg_meta_set_doubles(r, "esg.spacing", sp, im->nsp) < 0 ||
	    esg_meta_set(r, "esg.axes", im->axes) < 0 || esg_meta_stamp(r, "esg-load", argc, argv) < 0)
		goto out;
	if (nf > 1) {
		char *j = json_strings(files, (int)nf);
		rc = esg_meta_set(r, "esg.sources", j);
		free(j);
		if (rc < 0)
			goto out;
	}
	if (rec >= 0 && esg_meta_setf(r, "esg.volume", "%lld", (long long)rec) < 0)
		goto out;
	rc = esg_writer_put(w, r);
out:
	esg_record_free(r);
	return rc;
}

int main(int argc, char **argv)
{
	cli_init("esg-load", argc, argv);
	struct opts o = { .tensor = "image", .group = 1, .level = 3, .plo = 0.5, .phi = 99.5 };
	/* getopt_long permutes argv; esg.args records it as the user typed it */
	char **args = malloc(((size_t)argc + 1) * sizeof *args);
	if (!args)
		cli_die(EXIT_RUNTIME, "out of memory");
	memcpy(args, argv, ((size_t)argc + 1) * sizeof *args);
	parse_args(argc, argv, &o);
	FILE *out = cli_open_out(o.out, 1);
	esg_writer *w = esg_writer_open(out, (int)o.level);
	if (!w)
		cli_die_lib();
	for (int g = optind; g < argc; g += (int)o.group) {
		esg_image *im = load_group(argv + g, o.group, &o);
		if (!im)
			cli_die_lib();
		for (int64_t n = 0; n < im->n; n++) {
			esg_image *one = im->n == 1 ? im : esg_image_record(im, n);
			if (!one || put_record(w, one, &o, argv + g, o.group, im->n > 1 ? n : -1,
					       argc, args) < 0)
				cli_die(EXIT_RUNTIME, "'%s': %s", argv[g], esg_error());
			if (one != im)
				esg_image_free(one);
		}
		esg_image_free(im);
	}
	if (esg_writer_close(w) < 0)
		cli_die_lib();
	cli_commit_out(out);
	free(args);
	return 0;
}
