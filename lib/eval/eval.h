/* eval.h - how trustworthy are attribution maps (esg-metric, esg-randomise).
 *
 *  - model-free scores (metric.c): similarity between maps (randomisation
 *    sanity checks), agreement with a ground-truth mask, curve helpers;
 *  - model metrics: records opened for scoring and a model's scores of a
 *    batch (scoring.c), infidelity and max-sensitivity (faithfulness.c)
 *    with the re-run of the recorded method (rerun.c), deletion and
 *    insertion curves (curves.c);
 *  - parameter randomisation (randomise.c): which parameters each step
 *    changes, to what, and the manifest that says so.
 *
 * Maps are float32 arrays of n values.  Functions that can be undefined
 * (a constant map, a mask with no positives) return NAN.  Nothing prints;
 * errors are -1 (or NULL) with esg_error() set.
 */
#ifndef ESG_EVAL_H
#define ESG_EVAL_H

#include "attr/attr.h"
#include "shim/esg_torch.h"
#include "stream/stream.h"

#include <stddef.h>
#include <stdint.h>

/* ---- model-free scores (metric.c) ------------------------------------ */

/* Average ranks (1-based; ties share the mean of their ranks) of v[0..n). */
int esg_rank_avg(const double *v, int64_t n, double *rank);

/* Spearman rank correlation of a and b: the Pearson correlation of their
 * average ranks.  absolute: rank |a| and |b| instead. NAN if either is
 * constant. */
double esg_spearman(const float *a, const float *b, int64_t n, int absolute);

/* SSIM (Wang et al. 2004) of two maps of nsp (2 or 3) spatial axes dim[]:
 * Gaussian window sigma (1.5 in the paper), radius floor(3.5 sigma + 0.5)
 * (scikit-image's; 5 for sigma 1.5: the paper's 11-tap window), normalised,
 * shrunk on axes shorter than the window; statistics over the
 * "valid" positions only (no padding); K1 = 0.01, K2 = 0.03, population
 * (co)variances; data_range L (<= 0: max - min over both maps, 1 if that
 * is 0).  The mean SSIM over the valid positions goes to *out. */
int esg_ssim(const float *a, const float *b, int nsp, const int64_t *dim,
	     double sigma, double data_range, double *out);

/* The mean over chans channels of the SSIM (data range from the maps) of
 * maps a and b [chans, dim...], each channel made absolute first if
 * `absolute`, then rescaled to [0, 1] by its own range if `rescale`. */
int esg_ssim_channels(const float *a, const float *b, int64_t chans, int nsp, const int64_t *dim,
		      double sigma, int absolute, int rescale, double *out);

/* Intersection over union of the top-k fractions (0 < frac <= 1) of |a|
 * and |b| (ceil(frac * n) elements each; ties by index). */
double esg_topk_iou(const float *a, const float *b, int64_t n, double frac);

/* Ground truth (mask m: nonzero = inside). */
/* Sum of the positive attribution inside the mask over its total; NAN if
 * no attribution is positive. */
double esg_mass_in_mask(const float *a, const float *m, int64_t n);
/* 1 if the (first) largest attribution lies inside the mask, else 0. */
int esg_pointing_game(const float *a, const float *m, int64_t n);
/* Area under the ROC curve of a as a score for m (Mann-Whitney U with
 * average ranks for ties); NAN if the mask is empty or full. */
double esg_auroc(const float *a, const float *m, int64_t n);

/* Indices sorted by decreasing v, ties by increasing index. */
int esg_argsort_desc(const float *v, int64_t n, int64_t *idx);
/* Trapezoid area under y[0..n) sampled at uniform fractions 0 .. 1. */
double esg_trapz_unit(const double *y, int n);

/* ---- records opened for scoring (scoring.c) ---------------------------
 * A record written by esg-attr as the metrics read it.  Errors of the
 * functions that take one do not name the record: the caller adds its
 * source and number to the message. */
typedef struct esg_eval_record {
	esg_record *r;           /* owned */
	const char *source;      /* the caller's name of its stream (rows, messages) */
	size_t index;            /* 0-based place in that stream; keys the random draws */
	float *x, *a;            /* image (NULL if none), attribution: F32 copies */
	int ndim, andim;
	int64_t shape[ESG_MAX_DIMS], ashape[ESG_MAX_DIMS];
	int64_t N, numel, anumel;
	int64_t *target;         /* N, or NULL if the record has no esg.target */
	int per_patch;           /* esg-attr --patch without --target: no one target */
	const char *method;      /* esg.method_alias, else esg.method, else "" */
	const char *params;      /* esg.params, else "{}" */
} esg_eval_record;

/* Open r (taken over: esg_eval_record_close frees it, and so does a failed
 * open, which leaves source and index set for the message): the tensor
 * 'attribution' [N, ...] is required, 'image' too if need_image. */
int esg_eval_record_open(esg_eval_record *R, esg_record *r, const char *source, size_t index,
			 int need_image);
void esg_eval_record_close(esg_eval_record *R);
/* R fits a model metric: it has an image and one target per item, and
 * (shaped_like_image) an attribution shaped like the image.  Messages
 * start with `metric`. */
int esg_eval_check(const esg_eval_record *R, const char *metric, int shaped_like_image);

/* The scored model, shared by the model metrics. */
typedef struct esg_eval_model {
	esg_model *model;        /* borrowed; gives per-class scores [N, C] */
	long internal_batch;     /* at most this many inputs per model call */
} esg_eval_model;

/* s[i] = output[i, target[i]] of the model on n inputs xs, each shaped
 * shape[1..ndim) (shape[0] is ignored), in chunks of internal_batch. */
int esg_eval_scores(const esg_eval_model *M, int ndim, const int64_t *shape, const float *xs,
		    int64_t n, const int64_t *target, double *s);

/* ---- model metrics (faithfulness.c, curves.c) -------------------------
 * Parameters (esg-metric --param; doc/evaluation.md has the definitions). */
typedef struct esg_eval_params {
	long n_perturb;          /* perturbations of infidelity and max_sensitivity */
	int perturbation;        /* infidelity: 0 gaussian, 1 towards the baseline */
	double noise_std;        /* infidelity's Gaussian perturbation */
	int normalize;           /* infidelity: scale sum(a * I) by beta */
	int mbi;                 /* multiply_by_inputs: -1 auto, 0, 1 */
	double radius;           /* max_sensitivity: radius of the L-inf ball */
	const esg_tensor *perturbations;  /* borrowed F32 [S] + the image's shape,
	                                   * or NULL: drawn from seed */
	uint64_t seed;
	long n_steps;            /* deletion / insertion: fractions 0, 1/n, ..., 1 */
	double fill;             /* deletion / insertion: value of removed elements */
} esg_eval_params;
#define ESG_EVAL_PARAMS_INIT { .n_perturb = 10, .noise_std = 0.003, .mbi = -1, \
			       .radius = 0.02, .n_steps = 20 }

/* Room for a metric's parameters as JSON (the table's metric_params). */
#define ESG_METRIC_PARAMS_BYTES 256

/* Infidelity and max-sensitivity (Yeh et al. 2019, as Captum) of each item
 * of R into value[0..N); the parameters used, as JSON, into mp. */
int esg_infidelity(const esg_eval_model *M, const esg_eval_params *p, const esg_eval_record *R,
		   double *value, char mp[ESG_METRIC_PARAMS_BYTES]);
int esg_max_sensitivity(const esg_eval_model *M, const esg_eval_params *p,
			const esg_eval_record *R, double *value, char mp[ESG_METRIC_PARAMS_BYTES]);

/* The deletion (insert 0) or insertion (insert 1) curve of item b of R:
 * score[k] (k = 0 .. n_steps) of the input with the top k / n_steps of the
 * attribution set to the baseline (or of the baseline with it inserted),
 * normalised[k] = 1 at the full input and 0 at the full baseline, and
 * *area under the normalised curve; the parameters used into mp. */
int esg_curve(const esg_eval_model *M, const esg_eval_params *p, const esg_eval_record *R,
	      int insert, int64_t b, double *score, double *normalised, double *area,
	      char mp[ESG_METRIC_PARAMS_BYTES]);

/* ---- the recorded method, run again (rerun.c) -------------------------
 * What the record's esg.* metadata says about the run that made its map.
 * `who` starts the messages that a missing or bad piece gives. */
typedef struct esg_rerun {
	const esg_method *method;
	esg_params params;       /* owned */
	uint64_t seed;
	int ibatch;
	const char *layer;       /* borrowed from the record */
	int layer_call, upsample;
	const char *who;
} esg_rerun;
int esg_rerun_open(esg_rerun *U, const esg_eval_record *R, const char *who);
/* The map of the recorded method at input x (shaped like R's image) into
 * out (R->anumel floats). */
int esg_rerun_at(const esg_rerun *U, const esg_eval_model *M, const esg_eval_record *R,
		 const float *x, float *out);
void esg_rerun_close(esg_rerun *U);

/* The record's baselines (esg.baseline; "zero" if none), built for input x
 * as its run built them (random ones from its esg.seed): *n new buffers
 * shaped like x in *bl. */
int esg_eval_baselines(const esg_eval_record *R, const float *x, float ***bl, int *n);

/* ---- parameter randomisation (randomise.c) -----------------------------
 * Sanity checks by parameter randomisation (Adebayo et al. 2018).  Layers
 * are groups of parameters changed together, ordered by execution; step s
 * (0-based) changes the s-th layer from the output: on top of the earlier
 * steps (cascading) or alone (independent).  New values come from
 * esg_rng_init(seed, fnv1a64(parameter name), 0x52414e44), so a parameter
 * gets the same values in every step, mode and run. */
typedef enum esg_init {
	ESG_INIT_DEFAULT,        /* the layer type's own reset (kaiming_uniform, ones/zeros) */
	ESG_INIT_GAUSSIAN,       /* N(mean, std) of the original parameter */
	ESG_INIT_UNIFORM,        /* U(mean - std, mean + std) */
	ESG_INIT_COUNT
} esg_init;
/* "default", "gaussian", "uniform". */
const char *esg_init_name(esg_init init);

typedef struct esg_randomise_opts {
	const char *model_name;  /* the model's file, for messages and the manifest */
	int cascading;
	esg_init init;
	uint64_t seed;
	char *const *layers;     /* modules (or parameters), each with every parameter
	                          * below it; n_layers 0: every module that owns
	                          * parameters and that forward calls */
	size_t n_layers;
} esg_randomise_opts;

typedef struct esg_randomisation esg_randomisation;

/* The layers of model m and their order; m and P (esg_model_params(m), np
 * entries) are borrowed for the plan's life.  NULL with an error if a
 * named layer holds no parameter or shares one with another, or if no
 * parameter is used. */
esg_randomisation *esg_randomise_plan(esg_model *m, const esg_param_info *P, size_t np,
				      const esg_randomise_opts *o);
/* Read the original values of every parameter of the layers and draw the
 * new ones. */
int esg_randomise_draw(esg_randomisation *R);
size_t esg_randomise_steps(const esg_randomisation *R);
/* Put step s into the model (call for s = 0, 1, ... in turn: independent
 * mode puts the previous step's layer back first). */
int esg_randomise_apply(esg_randomisation *R, size_t s);
/* The file name of step s: step-NN-LAYER.pt ('/' in a name becomes '_'). */
void esg_randomise_file(const esg_randomisation *R, size_t s, char *buf, size_t n);
/* The manifest (new JSON text, free()): the run's settings, the layers,
 * and per step every parameter that differs from the original and how it
 * was drawn (doc/evaluation.md). */
char *esg_randomise_manifest(const esg_randomisation *R, const char *model_sha256);
void esg_randomise_free(esg_randomisation *R);

#endif
