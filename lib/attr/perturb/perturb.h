/* perturb.h - the small linear solvers of the perturbation and surrogate
 * family (linsolve.c, used by perturb.c): least squares, ridge, lasso, a
 * symmetric eigensolver and the KernelSHAP weights.  No libtorch here: the
 * unit tests link this without the shim.  Library rules as in stream.h.
 */
#ifndef ESG_PERTURB_H
#define ESG_PERTURB_H

#include "stream/stream.h"

/* ---- linear algebra (linsolve.c), double, row-major ----------------- */

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
