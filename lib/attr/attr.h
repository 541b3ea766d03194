/* attr.h - attribution methods, written in C over the torch shim; the
 * public header of lib/attr/.
 *
 * Layers:
 *  - numerical helpers with no libtorch (numeric.c): a seeded PRNG,
 *    Gauss-Legendre and Riemann quadrature, Gaussian blur, SHA-256;
 *  - the method registry and parameter handling (registry.c): names,
 *    aliases, parameters with Captum's names and defaults, validation, JSON;
 *  - baselines (baseline.c), the entry point (run.c) and patchwise runs
 *    (patch_grid.c, patch_run.c);
 *  - the methods, one folder per family (gradient/, layer/, perturb/), each
 *    exporting a table of its methods to the registry (family.h).
 *
 * Images are float32 [N, C, spatial...] in C order; "an item" is one of the
 * N leading slices.  Nothing here prints or exits (see stream/stream.h).
 */
#ifndef ESG_ATTR_H
#define ESG_ATTR_H

#include "stream/stream.h"

/* ---- PRNG: xoshiro256** seeded through splitmix64 --------------------
 * Streams are independent of thread count and of --internal-batch: each
 * consumer (noise tunnel, GradientShap draws, each random baseline) owns a
 * stream keyed by (seed, record, stream id).  The exact recipe (written
 * down so that tests/py/ref_attr.py can replay it):
 *   k = seed ^ (record * 0xD1B54A32D192ED03) ^ (stream * 0x8CB92BA72F3D8DD7)
 *   s[0..3] = four successive splitmix64(k) outputs
 *   uniform = (next() >> 11) * 2^-53                  in [0, 1)
 *   normal  = sqrt(-2 ln(1 - u1)) * cos(2 pi u2)     (one per two uniforms)
 */
typedef struct esg_rng {
	uint64_t s[4];
} esg_rng;

enum {
	ESG_STREAM_NOISE_TUNNEL = 1,
	ESG_STREAM_SHAP = 2,
	ESG_STREAM_PERTURB = 3,    /* perturbation methods (perturb/perturb.c) */
	ESG_STREAM_BASELINE = 16   /* + index of the --baseline option */
};

void esg_rng_init(esg_rng *r, uint64_t seed, uint64_t record, uint64_t stream);
uint64_t esg_rng_next(esg_rng *r);
double esg_rng_uniform(esg_rng *r);
double esg_rng_normal(esg_rng *r);

/* ---- quadrature for integrated gradients -----------------------------
 * Gauss-Legendre nodes (ascending, on [-1, 1]) and weights of order n,
 * by Newton iteration on P_n; 1 <= n <= 100000. */
int esg_gauss_legendre(int n, double *x, double *w);
/* Captum's alphas and step weights on [0, 1] for n steps:
 * "gausslegendre" (alpha = (1 + x)/2, weight w/2), "riemann_left",
 * "riemann_right", "riemann_middle", "riemann_trapezoid" (Captum's: alphas
 * linspace(0, 1, n), weights 1/n with both ends halved). */
int esg_ig_steps(const char *method, int n, double *alpha, double *weight);

/* ---- Gaussian blur ----------------------------------------------------
 * Normalised kernel exp(-t^2 / 2 sigma^2), t = -r..r, r = ceil(4 sigma)
 * (scipy.ndimage's truncate=4).  New array of 2r+1 doubles. */
double *esg_gauss_kernel(double sigma, int *radius);
/* Blur in place along every spatial axis (axes 2..ndim-1) of an
 * [N, C, spatial...] float array, separably, with scipy's "reflect"
 * boundary (d c b a | a b c d | d c b a). */
int esg_blur(float *data, int ndim, const int64_t *shape, double sigma);

/* ---- SHA-256 ----------------------------------------------------------- */
void esg_sha256(const void *data, size_t n, uint8_t digest[32]);
/* Hex digest of a file's bytes into hex[65]. */
int esg_sha256_file(const char *path, char hex[65]);

/* ---- method registry and parameters ---------------------------------- */

typedef enum esg_param_kind {
	ESG_P_INT, ESG_P_FLOAT, ESG_P_BOOL, ESG_P_CHOICE, ESG_P_METHOD,
	ESG_P_STRING,         /* free text, checked by the method (lists, mask specs) */
	ESG_P_LRP             /* text checked by LRP's rule tables (attr/lrp.c): rule.TYPE
	                       * values, rule_file, z-box bounds */
} esg_param_kind;

typedef struct esg_param_spec {
	const char *key;      /* "prefix.*": a family of keys (rule.Conv3d, ...), no default */
	esg_param_kind kind;
	const char *def;      /* default, as a string */
	const char *choices;  /* ESG_P_CHOICE: "a|b|c" */
	double lo, hi;        /* numeric range (inclusive) */
	const char *help;
} esg_param_spec;

/* Whether a method needs a layer, and what it gives (esg_method.layer). */
enum {
	ESG_LAYER_NONE = 0,   /* no layer */
	ESG_LAYER_MAP,        /* layer-shaped result; upsampling off by default */
	ESG_LAYER_CAM,        /* one-channel map; upsampled to the input grid by default */
	ESG_LAYER_INPUT       /* needs a layer, result shaped like the input */
};

struct esg_attr_job;

/* A method: its family's table (attr/family.h) holds one of these. */
typedef struct esg_method {
	const char *name;
	const char *summary;
	const esg_param_spec *params;  /* NULL-key terminated */
	int baseline;                  /* 0 none, 1 one baseline, 2 a distribution */
	int single_pass;               /* one gradient per item: noise tunnel batches samples */
	int has_delta;                 /* reports a convergence delta */
	int (*run)(struct esg_attr_job *job);
	int layer;                     /* ESG_LAYER_*: needs --layer, and what it gives */
	int layer_optional;            /* may also run without a layer (excitation
	                                * backprop: the map at the input) */
	int patch_batch;               /* patches may share its calls (no random
	                                * draws, and each call names its rows'
	                                * items: esg_attr_set_windows): an item's
	                                * rows in a call (2: DeepLift's [x;
	                                * baseline]); 0: one patch at a time */
} esg_method;

int esg_method_layer(const esg_method *m);            /* m->layer (NULL: none) */
int esg_method_layer_optional(const esg_method *m);   /* m->layer_optional */

/* An alias: another name for a method with some parameters fixed. */
typedef struct esg_method_alias {
	const char *name;
	const char *method;
	const char *params;            /* "key=value,key=value" */
	const char *summary;
} esg_method_alias;

/* Implemented methods, in listing order; NULL past the end. */
const esg_method *esg_method_at(size_t i);
const esg_method_alias *esg_alias_at(size_t i);
/* By name (aliases resolved: *alias set to the alias or NULL).  NULL with an
 * error set if unknown; a planned-but-unimplemented method gets its own
 * message. */
const esg_method *esg_method_find(const char *name, const esg_method_alias **alias);
/* 1 if name is in the project's method list but not implemented yet. */
int esg_method_planned(const char *name);

#define ESG_MAX_PARAMS 32
typedef struct esg_params {
	int n;
	const esg_param_spec *spec[ESG_MAX_PARAMS];
	char *val[ESG_MAX_PARAMS];       /* owned */
	char *key[ESG_MAX_PARAMS];       /* owned: the key as given for a "prefix.*" spec, else NULL */
	const esg_method *base;          /* noise_tunnel: the wrapped method */
} esg_params;

/* Resolve "key=value" strings against a method (and an alias's fixed
 * params): unknown keys, bad values and out-of-range numbers fail with a
 * message naming them; defaults fill in the rest.  noise_tunnel takes the
 * parameters of its base method as well. */
int esg_params_resolve(const esg_method *m, const esg_method_alias *alias,
		       char *const *kv, int n_kv, esg_params *out);
void esg_params_clear(esg_params *p);
const char *esg_params_str(const esg_params *p, const char *key);  /* NULL if absent */
long esg_params_int(const esg_params *p, const char *key);
double esg_params_double(const esg_params *p, const char *key);
int esg_params_bool(const esg_params *p, const char *key);
/* The key of parameter i (0 <= i < p->n): its spec's, or the key as given
 * for a "prefix.*" spec. */
const char *esg_params_key(const esg_params *p, int i);
/* New JSON object of every effective parameter (numbers as numbers). */
char *esg_params_json(const esg_params *p);

/* ---- baselines --------------------------------------------------------
 * SPEC: zero | const:V | blur:SIGMA | uniform:LO,HI[:K] | file:PATH[:TENSOR]
 * uniform draws K samples (default 1); a file tensor shaped like the image,
 * like one item ([1, C, ...], broadcast), or [K, C, ...] for a one-item
 * image (a distribution of K baselines). */
typedef struct esg_baseline {
	enum { ESG_BL_ZERO, ESG_BL_CONST, ESG_BL_BLUR, ESG_BL_UNIFORM, ESG_BL_FILE } kind;
	double a, b;
	int k;
	esg_tensor *file;    /* owned, F32 copy */
	char *spec;          /* owned */
} esg_baseline;

/* Parse a SPEC (file: loads the tensor now). */
int esg_baseline_parse(const char *spec, esg_baseline *out);
void esg_baseline_clear(esg_baseline *b);
/* Build the baselines of one record: appends new [N, C, ...] float buffers
 * to *list (realloc'ed), updating *n. */
int esg_baseline_build(const esg_baseline *b, int index, const float *x,
		       int ndim, const int64_t *shape, uint64_t seed,
		       uint64_t record, float ***list, int *n);

/* ---- feature masks (feature_mask.c) --------------------------------------
 * A feature mask gives every element of one item ([C, spatial...], C order)
 * a feature id 0 .. n-1; the elements of one feature are perturbed together.
 * SPEC:
 *   voxel               every element (channel and voxel) its own feature
 *                       (Captum's default when no feature_mask is given)
 *   grid:B[,B...]       blocks of B voxels per spatial axis (one B: all axes),
 *                       the last block of an axis may be smaller; all
 *                       channels of a voxel share its feature
 *   slic:N[,M]          about N SLIC supervoxels (2D or 3D) of the item's
 *                       channel-mean intensity, compactness M (default 0.1,
 *                       intensity scaled to [0, 1]); channels shared
 *   file:PATH[:TENSOR]  a label volume: a NIfTI file (.nii, .nii.gz; read in
 *                       the record's esg.axes order) or a stream tensor
 *                       (default "mask"), shaped like the spatial grid, like
 *                       [1, 1, spatial] / [C, spatial] / [1, C, spatial];
 *                       distinct values become features (in increasing order)
 */
typedef struct esg_fmask_spec {
	enum { ESG_FM_VOXEL, ESG_FM_GRID, ESG_FM_SLIC, ESG_FM_FILE } kind;
	int nblock;
	int64_t block[ESG_MAX_DIMS];
	int n_segments;
	double compactness;
	char *path, *tensor;   /* owned (file:) */
	char *spec;            /* owned */
} esg_fmask_spec;

typedef struct esg_fmask {
	int32_t *id;           /* numel ids, owned */
	size_t numel;
	int64_t n;             /* features */
	/* elements of each feature (CSR): elem[start[f] .. start[f+1]) */
	int64_t *start;        /* n + 1, owned */
	int64_t *elem;         /* numel, owned */
} esg_fmask;

int esg_fmask_parse(const char *spec, esg_fmask_spec *out);
void esg_fmask_spec_clear(esg_fmask_spec *s);
/* The mask of one item x with shape dims[0..nd-1] = [C, spatial...].
 * axes: the record's esg.axes ("ijk", "kji", ...) or NULL for "ijk". */
int esg_fmask_build(const esg_fmask_spec *s, const float *x, int nd, const int64_t *dims,
		    const char *axes, esg_fmask *out);
void esg_fmask_free(esg_fmask *m);
/* Fill out->start / out->elem from out->id (ids must be 0 .. n-1). */
int esg_fmask_index(esg_fmask *m);

/* Grid labels over a spatial grid of nsp axes: block b[a] voxels per axis. */
int64_t esg_grid_labels(int nsp, const int64_t *dim, const int64_t *block, int32_t *label);
/* SLIC (Achanta et al. 2012) on a scalar image of nsp (1..3) spatial axes:
 * k-means in (intensity, position) started on a regular grid of about
 * n_segments seeds, each voxel searching the seeds within 2S (S the seed
 * spacing), distance d^2 = dI^2 + (ds / S)^2 * m^2 with intensity scaled to
 * [0, 1]; 10 iterations; then labels renumbered 0 .. n-1 without gaps.
 * Connectivity is not enforced (a supervoxel may be split in pieces).
 * Returns the number of labels, or -1. */
int64_t esg_slic(const float *img, int nsp, const int64_t *dim, int n_segments,
		 double compactness, int32_t *label);

/* ---- running a method ------------------------------------------------- */

struct esg_model;

typedef struct esg_attr_job {
	/* in */
	struct esg_model *model;
	const esg_method *method;
	const esg_params *params;
	int ndim;
	int64_t shape[ESG_MAX_DIMS];     /* [N, C, spatial...] */
	const float *x;
	const int64_t *target;           /* N class indices */
	float *const *baselines;         /* n_baselines buffers shaped like x */
	int n_baselines;
	int internal_batch;              /* max items per forward/backward */
	uint64_t seed, record;
	esg_rng *rng_nt, *rng_shap;      /* NULL: esg_attr_run makes them */
	/* out */
	float *attr;                     /* caller buffer shaped like x */
	double *delta;                   /* caller buffer of N, or NULL */
	int has_delta;                   /* set if delta was computed */
	int64_t passes;                  /* model calls (forward or forward+backward) */
	int64_t evaluations;             /* items evaluated over all calls */
	/* optional: progress of long methods (the library never prints; a
	 * tool connects this to cli_progress) and the record's esg.axes
	 * (spatial axis order, for label volumes read from NIfTI files) */
	void (*progress)(void *ctx, const char *what, int64_t done, int64_t total);
	void *progress_ctx;
	const char *axes;                /* NULL: "ijk" */
	/* layer methods (layer/layer.c); zero means the defaults */
	const char *layer;               /* dotted submodule name */
	int layer_call;                  /* which call of it (0-based) */
	int upsample;                    /* 0: the method's default, 1: on, 2: off */
	int channel_mode;                /* 0: all channels, 1: sum, 2: mean, 3: only `channel` */
	int channel;
	/* out, layer methods */
	float *layer_attr;               /* new (free()): the result when not shaped like x */
	int out_ndim;                    /* shape of the result (x's or layer_attr's) */
	int64_t out_shape[ESG_MAX_DIMS];
	int act_ndim;                    /* the layer's output shape, N first */
	int64_t act_shape[ESG_MAX_DIMS];
	const char *upsampled;           /* interpolation applied ("bilinear"...) or NULL */
	/* out, occlusion / feature ablation: how the windows were evaluated
	 * ("crop rf=..." or "off: reason", lib/attr/local.h), "" otherwise */
	char local[200];
	/* out, the gradient family: how one item's calls were split into
	 * tiles when it did not fit the memory budget ("grid ... rf ...",
	 * lib/attr/local.h), "" when it fitted */
	char tiles[300];
	struct esg_local *tiler;         /* internal: the tiles' receptive field */
	const struct esg_attr_windows *windows; /* internal: a batch of patches */
	int64_t tile_items;              /* internal: a sub-job's item m is the record's
	                                  * item m % tile_items (0: m) */
} esg_attr_job;

/* Run job->method.  The default --internal-batch: the most items per call
 * (under --internal-batch auto, fewer when the memory budget asks). */
#define ESG_DEFAULT_INTERNAL_BATCH 8
int esg_attr_run(esg_attr_job *job);
/* How many items of the job go into the next model call (grad: with
 * autograd), each also taking host_bytes_per_item in the caller's buffers:
 * job->internal_batch, or fewer to fit the memory budget when batches are
 * sized automatically (esg_model_batch_fit); at least 1. */
int esg_attr_batch_fit(const esg_attr_job *job, int grad, size_t host_bytes_per_item);
/* The class scores of one item x ([1, C, spatial...] as shape says) of a
 * model wrapped by esg-wrap fixed-mask or argmax (item: its index in the
 * record, for a mask per item), tile by tile without
 * autograd (lib/attr/local.h): for a target pass whose whole-volume forward
 * the memory budget refused.  scores: room for max_classes; *n_classes,
 * *calls (model calls made) and info (the grid and receptive field, or why
 * tiles cannot be used: then -1) are set. */
int esg_attr_scores_tiled(struct esg_model *m, int ndim, const int64_t *shape, const float *x,
			  int64_t item, double *scores, int max_classes, int *n_classes, int64_t *calls,
			  char *info, size_t info_size);

/* A batch of patches run as one job (patch_run.c): item m of the job is
 * item m % items of the record, cropped at origin + (m / items) * nsp; the
 * model's fixed mask is scored over that window. */
typedef struct esg_attr_windows {
	const int64_t *origin;       /* nsp values per patch */
	int64_t size[ESG_MAX_DIMS];
	int nsp;
	int64_t items;               /* the record's items */
} esg_attr_windows;
/* Before each model call of a job with windows: the call's n rows are the
 * job's items item[0..n) (NULL: first, first + 1, ...); the model takes
 * their windows for that call (esg_model_set_windows).  Nothing to do
 * without windows. */
int esg_attr_set_windows(const esg_attr_job *job, int64_t n, const int *item, int64_t first);

/* ---- patchwise attribution (patch_run.c) ------------------------------
 * job as for esg_attr_run, on the whole volume (x, baselines built on the
 * whole input, attr x-shaped); each patch of the grid is cropped from x and
 * from every baseline and run through job->method (random streams restart
 * at every patch: each patch is the run the same options would give on
 * that crop); the maps are blended into job->attr with the grid's weights.
 * Methods with patch_batch run several patches per job, so that they share
 * calls (how many: batch_patches in patch_run.c; one by one if a shared job
 * fails).  A map with another channel count than x comes back as
 * job->layer_attr [N, K, spatial...]; one off the patch's grid is
 * an error.  job->delta gets max |delta| over the patches; passes and
 * evaluations are summed.  Memory: a batch of patches of x, of each
 * baseline and of the map, plus the whole-volume weight sums. */
struct esg_patch_grid;
typedef struct esg_patch_run {
	const struct esg_patch_grid *grid;
	int blend;                   /* esg_blend (patch.h) */
	int per_patch_target;        /* 1: each patch's target is the argmax of the
	                              * model's scores on that patch (job->target
	                              * is ignored) */
	int64_t *patch_targets;      /* out, optional: grid->n * N targets, patch-major */
	int origin_set;              /* out: 1 if the model took the patch origins */
	int64_t batch;               /* out: the most patches that shared a job */
	char unbatched[300];         /* out: why patches went one by one after
	                              * a shared job failed ("" if none did) */
} esg_patch_run;
int esg_attr_run_patches(esg_attr_job *job, esg_patch_run *p);

#endif
