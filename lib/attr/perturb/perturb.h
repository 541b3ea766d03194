/* perturb.h - feature masks and small linear solvers for the perturbation
 * and surrogate methods (lib/attr_perturb.c).  No libtorch here: the unit
 * tests link this without the shim.  Library rules as in esg.h.
 */
#ifndef ESG_PERTURB_H
#define ESG_PERTURB_H

#include "stream/stream.h"

/* ---- feature masks ------------------------------------------------------
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

/* ---- linear algebra (lib/linsolve.c), double, row-major ----------------- */

/* Eigen-decomposition of the symmetric n x n matrix a (destroyed) by cyclic
 * Jacobi: eigenvalues in w, eigenvectors in the columns of v (n x n). */
int esg_sym_eigen(double *a, int n, double *w, double *v);
/* Weighted least squares with optional intercept and ridge penalty:
 * minimise sum_i w_i (y_i - c - X_i b)^2 + ridge |b|^2 (c = 0 without
 * intercept).  X is n x p.  ridge = 0 gives the minimum-norm solution when
 * the problem is rank deficient (as numpy / sklearn lstsq).  w may be NULL
 * (all ones).  coef: p values; icept may be NULL. */
int esg_wls(const double *X, const double *y, const double *w, int n, int p,
	    int intercept, double ridge, double *coef, double *icept);
/* Weighted lasso as sklearn.linear_model.Lasso with sample_weight:
 * minimise (1 / (2 sum w)) sum_i w_i (y_i - c - X_i b)^2 + alpha |b|_1, by
 * cyclic coordinate descent (max_iter sweeps, stop when the largest
 * coefficient change is below tol times the largest coefficient). */
int esg_lasso(const double *X, const double *y, const double *w, int n, int p,
	      int intercept, double alpha, int max_iter, double tol, double *coef,
	      double *icept);

/* KernelSHAP: Captum's distribution of the number k of features kept in a
 * random sample, p[k] proportional to (M - 1) / (k (M - k)) for
 * k = 1 .. M - 1, p[0] = 0 (p has M entries).  M >= 2. */
int esg_kernel_shap_probs(int M, double *p);
/* The Shapley kernel weight of a coalition of size k out of M (Lundberg &
 * Lee 2017): (M - 1) / (C(M, k) k (M - k)); infinite at k = 0 or M. */
double esg_kernel_shap_weight(int M, int k);

#endif
