/* linsolve.c - weighted least squares, ridge, lasso and a symmetric
 * eigensolver for the surrogate methods (LIME, KernelSHAP); see perturb.h.
 * Problems are small (samples x features of a few thousand at most), so
 * plain dense O(n^3) code in double is enough. */
#include "attr/perturb/perturb.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int esg_sym_eigen(double *a, int n, double *w, double *v)
{
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++)
			v[i * n + j] = i == j;
	for (int sweep = 0; sweep < 100; sweep++) {
		double off = 0, tot = 0;
		for (int i = 0; i < n; i++)
			for (int j = 0; j < n; j++) {
				double e = a[i * n + j] * a[i * n + j];
				if (i == j)
					tot += e;
				else
					off += e;
			}
		if (off <= 1e-30 * (tot + off) || off == 0)
			break;
		for (int p = 0; p < n - 1; p++)
			for (int q = p + 1; q < n; q++) {
				double apq = a[p * n + q];
				if (apq == 0)
					continue;
				double th = (a[q * n + q] - a[p * n + p]) / (2 * apq);
				double t = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
				double c = 1 / sqrt(t * t + 1), s = t * c;
				for (int k = 0; k < n; k++) {  /* columns p, q */
					double akp = a[k * n + p], akq = a[k * n + q];
					a[k * n + p] = c * akp - s * akq;
					a[k * n + q] = s * akp + c * akq;
				}
				for (int k = 0; k < n; k++) {  /* rows p, q */
					double apk = a[p * n + k], aqk = a[q * n + k];
					a[p * n + k] = c * apk - s * aqk;
					a[q * n + k] = s * apk + c * aqk;
				}
				for (int k = 0; k < n; k++) {
					double vkp = v[k * n + p], vkq = v[k * n + q];
					v[k * n + p] = c * vkp - s * vkq;
					v[k * n + q] = s * vkp + c * vkq;
				}
			}
	}
	for (int i = 0; i < n; i++)
		w[i] = a[i * n + i];
	return 0;
}

/* Solve g x = r for symmetric positive semi-definite g (m x m, destroyed):
 * Cholesky when well conditioned, else the pseudo-inverse (minimum norm). */
static int sym_solve(double *g, int m, const double *r, double *x)
{
	double dmax = 0;
	for (int i = 0; i < m; i++)
		dmax = fmax(dmax, g[i * m + i]);
	double *l = malloc((size_t)m * m * sizeof *l);
	if (!l)
		return esg_set_error("out of memory");
	memcpy(l, g, (size_t)m * m * sizeof *l);
	int ok = dmax > 0;
	for (int j = 0; j < m && ok; j++) {
		double d = l[j * m + j];
		for (int k = 0; k < j; k++)
			d -= l[j * m + k] * l[j * m + k];
		if (d <= 1e-10 * dmax) {
			ok = 0;
			break;
		}
		d = sqrt(d);
		l[j * m + j] = d;
		for (int i = j + 1; i < m; i++) {
			double s = l[i * m + j];
			for (int k = 0; k < j; k++)
				s -= l[i * m + k] * l[j * m + k];
			l[i * m + j] = s / d;
		}
	}
	if (ok) {
		for (int i = 0; i < m; i++) {  /* L z = r */
			double s = r[i];
			for (int k = 0; k < i; k++)
				s -= l[i * m + k] * x[k];
			x[i] = s / l[i * m + i];
		}
		for (int i = m - 1; i >= 0; i--) {  /* L^T x = z */
			double s = x[i];
			for (int k = i + 1; k < m; k++)
				s -= l[k * m + i] * x[k];
			x[i] = s / l[i * m + i];
		}
		free(l);
		return 0;
	}
	/* pseudo-inverse: x = V diag(1/w) V^T r over the eigenvalues above tol */
	double *w = malloc((size_t)m * sizeof *w), *t = malloc((size_t)m * sizeof *t);
	if (!w || !t) {
		free(l);
		free(w);
		free(t);
		return esg_set_error("out of memory");
	}
	esg_sym_eigen(g, m, w, l);
	double wmax = 0;
	for (int i = 0; i < m; i++)
		wmax = fmax(wmax, fabs(w[i]));
	double tol = wmax * m * DBL_EPSILON * 16;
	for (int k = 0; k < m; k++) {
		double s = 0;
		for (int i = 0; i < m; i++)
			s += l[i * m + k] * r[i];
		t[k] = w[k] > tol ? s / w[k] : 0;
	}
	for (int i = 0; i < m; i++) {
		double s = 0;
		for (int k = 0; k < m; k++)
			s += l[i * m + k] * t[k];
		x[i] = s;
	}
	free(l);
	free(w);
	free(t);
	return 0;
}

/* Weighted centring: A = sqrt(w) (X - mean_w X), b = sqrt(w) (y - mean_w y). */
static void centre(const double *X, const double *y, const double *w, int n, int p,
		   int intercept, double *A, double *b, double *xm, double *ym)
{
	double sw = 0;
	for (int i = 0; i < n; i++)
		sw += w ? w[i] : 1;
	*ym = 0;
	for (int j = 0; j < p; j++)
		xm[j] = 0;
	if (intercept && sw > 0) {
		for (int i = 0; i < n; i++) {
			double wi = w ? w[i] : 1;
			*ym += wi * y[i];
			for (int j = 0; j < p; j++)
				xm[j] += wi * X[(size_t)i * p + j];
		}
		*ym /= sw;
		for (int j = 0; j < p; j++)
			xm[j] /= sw;
	}
	for (int i = 0; i < n; i++) {
		double s = sqrt(w ? w[i] : 1);
		b[i] = s * (y[i] - *ym);
		for (int j = 0; j < p; j++)
			A[(size_t)i * p + j] = s * (X[(size_t)i * p + j] - xm[j]);
	}
}

int esg_wls(const double *X, const double *y, const double *w, int n, int p,
	    int intercept, double ridge, double *coef, double *icept)
{
	if (n < 1 || p < 1)
		return esg_set_error("least squares: %d samples, %d features", n, p);
	for (int i = 0; w && i < n; i++)
		if (!(w[i] >= 0) || !isfinite(w[i]))
			return esg_set_error("least squares: weight %d is %g", i, w[i]);
	int m = p <= n ? p : n;  /* solve on the smaller Gram matrix */
	double *A = malloc((size_t)n * p * sizeof *A), *b = malloc((size_t)n * sizeof *b);
	double *xm = malloc((size_t)p * sizeof *xm), *g = malloc((size_t)m * m * sizeof *g);
	double *r = malloc((size_t)m * sizeof *r), *z = malloc((size_t)m * sizeof *z);
	int rc = -1;
	if (!A || !b || !xm || !g || !r || !z) {
		esg_set_error("out of memory");
		goto out;
	}
	double ym;
	centre(X, y, w, n, p, intercept, A, b, xm, &ym);
	if (p <= n) {  /* (A^T A + ridge I) coef = A^T b */
		for (int j = 0; j < p; j++) {
			for (int k = j; k < p; k++) {
				double s = 0;
				for (int i = 0; i < n; i++)
					s += A[(size_t)i * p + j] * A[(size_t)i * p + k];
				g[j * m + k] = g[k * m + j] = s;
			}
			g[j * m + j] += ridge;
			double s = 0;
			for (int i = 0; i < n; i++)
				s += A[(size_t)i * p + j] * b[i];
			r[j] = s;
		}
		if (sym_solve(g, m, r, coef))
			goto out;
	} else {  /* coef = A^T (A A^T + ridge I)^+ b: the minimum-norm solution */
		for (int i = 0; i < n; i++)
			for (int k = i; k < n; k++) {
				double s = 0;
				for (int j = 0; j < p; j++)
					s += A[(size_t)i * p + j] * A[(size_t)k * p + j];
				g[i * m + k] = g[k * m + i] = s + (i == k ? ridge : 0);
			}
		if (sym_solve(g, m, b, z))
			goto out;
		for (int j = 0; j < p; j++) {
			double s = 0;
			for (int i = 0; i < n; i++)
				s += A[(size_t)i * p + j] * z[i];
			coef[j] = s;
		}
	}
	if (icept) {
		double c = ym;
		for (int j = 0; j < p; j++)
			c -= xm[j] * coef[j];
		*icept = intercept ? c : 0;
	}
	rc = 0;
out:
	free(A);
	free(b);
	free(xm);
	free(g);
	free(r);
	free(z);
	return rc;
}

int esg_lasso(const double *X, const double *y, const double *w, int n, int p,
	      int intercept, double alpha, int max_iter, double tol, double *coef,
	      double *icept)
{
	if (n < 1 || p < 1)
		return esg_set_error("lasso: %d samples, %d features", n, p);
	double sw = 0;
	for (int i = 0; i < n; i++) {
		double wi = w ? w[i] : 1;
		if (!(wi >= 0) || !isfinite(wi))
			return esg_set_error("lasso: weight %d is %g", i, wi);
		sw += wi;
	}
	if (!(sw > 0))
		return esg_set_error("lasso: all sample weights are zero");
	double *A = malloc((size_t)n * p * sizeof *A), *b = malloc((size_t)n * sizeof *b);
	double *xm = malloc((size_t)p * sizeof *xm), *z = malloc((size_t)p * sizeof *z);
	if (!A || !b || !xm || !z) {
		free(A);
		free(b);
		free(xm);
		free(z);
		return esg_set_error("out of memory");
	}
	double ym;
	/* with weights u = w / sum(w): A = sqrt(u) Xc, b = sqrt(u) yc */
	double *u = malloc((size_t)n * sizeof *u);
	if (!u) {
		free(A);
		free(b);
		free(xm);
		free(z);
		return esg_set_error("out of memory");
	}
	for (int i = 0; i < n; i++)
		u[i] = (w ? w[i] : 1) / sw;
	centre(X, y, u, n, p, intercept, A, b, xm, &ym);
	free(u);
	for (int j = 0; j < p; j++) {
		double s = 0;
		for (int i = 0; i < n; i++)
			s += A[(size_t)i * p + j] * A[(size_t)i * p + j];
		z[j] = s;
		coef[j] = 0;
	}
	/* b becomes the residual b - A coef */
	for (int it = 0; it < max_iter; it++) {
		double dmax = 0, cmax = 0;
		for (int j = 0; j < p; j++) {
			if (z[j] == 0)
				continue;
			double rho = 0, old = coef[j];
			for (int i = 0; i < n; i++)
				rho += A[(size_t)i * p + j] * (b[i] + A[(size_t)i * p + j] * old);
			double v = rho > alpha ? rho - alpha : rho < -alpha ? rho + alpha : 0;
			v /= z[j];
			if (v != old) {
				for (int i = 0; i < n; i++)
					b[i] -= A[(size_t)i * p + j] * (v - old);
				coef[j] = v;
			}
			dmax = fmax(dmax, fabs(v - old));
			cmax = fmax(cmax, fabs(v));
		}
		if (dmax <= tol * cmax || cmax == 0)
			break;
	}
	if (icept) {
		double c = ym;
		for (int j = 0; j < p; j++)
			c -= xm[j] * coef[j];
		*icept = intercept ? c : 0;
	}
	free(A);
	free(b);
	free(xm);
	free(z);
	return 0;
}

int esg_kernel_shap_probs(int M, double *p)
{
	if (M < 2)
		return esg_set_error("KernelSHAP needs at least 2 features, got %d", M);
	double s = 0;
	p[0] = 0;
	for (int k = 1; k < M; k++)
		s += p[k] = (double)(M - 1) / ((double)k * (M - k));
	for (int k = 1; k < M; k++)
		p[k] /= s;
	return 0;
}

double esg_kernel_shap_weight(int M, int k)
{
	if (k <= 0 || k >= M)
		return INFINITY;
	/* log C(M, k) for large M */
	double lc = lgamma(M + 1.0) - lgamma(k + 1.0) - lgamma(M - k + 1.0);
	return (M - 1) / ((double)k * (M - k)) * exp(-lc);
}
