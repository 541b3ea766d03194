/* metric.h - scores of attribution maps that need no model (esg-metric):
 * similarity between maps (randomisation sanity checks), agreement with a
 * ground-truth mask, and curve helpers.  No libtorch; nothing prints.
 *
 * Maps are float32 arrays of n values.  Functions that can be undefined
 * (a constant map, a mask with no positives) return NAN.
 */
#ifndef ESG_METRIC_H
#define ESG_METRIC_H

#include <stdint.h>

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

#endif
