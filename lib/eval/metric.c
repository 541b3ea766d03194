/* metric.c - model-free scores of attribution maps (see metric.h). */
#include "eval/eval.h"
#include "stream/stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct keyed {
	double v;
	int64_t i;
} keyed;

static int cmp_asc(const void *pa, const void *pb)
{
	const keyed *a = pa, *b = pb;
	if (a->v < b->v)
		return -1;
	if (a->v > b->v)
		return 1;
	return (a->i > b->i) - (a->i < b->i);
}

static int cmp_desc(const void *pa, const void *pb)
{
	const keyed *a = pa, *b = pb;
	if (a->v > b->v)
		return -1;
	if (a->v < b->v)
		return 1;
	return (a->i > b->i) - (a->i < b->i);
}

static keyed *sorted(const double *v, const float *f, int64_t n, int absolute, int desc)
{
	keyed *k = malloc((size_t)(n ? n : 1) * sizeof *k);
	if (!k) {
		esg_set_error("out of memory sorting %lld values", (long long)n);
		return NULL;
	}
	for (int64_t i = 0; i < n; i++) {
		double x = v ? v[i] : (double)f[i];
		k[i].v = absolute ? fabs(x) : x;
		k[i].i = i;
	}
	qsort(k, (size_t)n, sizeof *k, desc ? cmp_desc : cmp_asc);
	return k;
}

int esg_rank_avg(const double *v, int64_t n, double *rank)
{
	keyed *k = sorted(v, NULL, n, 0, 0);
	if (!k)
		return -1;
	for (int64_t i = 0; i < n;) {
		int64_t j = i;
		while (j + 1 < n && k[j + 1].v == k[i].v)
			j++;
		double r = 0.5 * (double)(i + j) + 1;
		for (int64_t t = i; t <= j; t++)
			rank[k[t].i] = r;
		i = j + 1;
	}
	free(k);
	return 0;
}

static double pearson(const double *x, const double *y, int64_t n)
{
	double mx = 0, my = 0;
	for (int64_t i = 0; i < n; i++) {
		mx += x[i];
		my += y[i];
	}
	mx /= (double)n;
	my /= (double)n;
	double sxy = 0, sxx = 0, syy = 0;
	for (int64_t i = 0; i < n; i++) {
		sxy += (x[i] - mx) * (y[i] - my);
		sxx += (x[i] - mx) * (x[i] - mx);
		syy += (y[i] - my) * (y[i] - my);
	}
	if (sxx <= 0 || syy <= 0)
		return NAN;
	return sxy / sqrt(sxx * syy);
}

double esg_spearman(const float *a, const float *b, int64_t n, int absolute)
{
	if (n < 2)
		return NAN;
	double *buf = malloc((size_t)n * 4 * sizeof *buf);
	if (!buf)
		return NAN;
	double *va = buf, *vb = buf + n, *ra = buf + 2 * n, *rb = buf + 3 * n;
	for (int64_t i = 0; i < n; i++) {
		va[i] = absolute ? fabs((double)a[i]) : a[i];
		vb[i] = absolute ? fabs((double)b[i]) : b[i];
	}
	double r = NAN;
	if (!esg_rank_avg(va, n, ra) && !esg_rank_avg(vb, n, rb))
		r = pearson(ra, rb, n);
	free(buf);
	return r;
}

/* ---- SSIM -------------------------------------------------------------- */

/* Filter along axis `ax` of an nsp-axis array with kernel k (2r+1 taps),
 * keeping only the positions where the kernel fits ("valid"). */
static void valid_filter(const double *in, int nsp, const int64_t *dim, int ax,
			 const double *k, int r, double *out)
{
	int64_t outer = 1, inner = 1;
	for (int d = 0; d < ax; d++)
		outer *= dim[d];
	for (int d = ax + 1; d < nsp; d++)
		inner *= dim[d];
	int64_t n = dim[ax], m = n - 2 * r;
	for (int64_t o = 0; o < outer; o++)
		for (int64_t p = 0; p < m; p++)
			for (int64_t i = 0; i < inner; i++) {
				double s = 0;
				for (int t = 0; t <= 2 * r; t++)
					s += k[t] * in[(o * n + p + t) * inner + i];
				out[(o * m + p) * inner + i] = s;
			}
}

int esg_ssim(const float *a, const float *b, int nsp, const int64_t *dim,
	     double sigma, double data_range, double *out)
{
	if (nsp < 1 || nsp > 3)
		return esg_set_error("ssim: needs 1 to 3 spatial axes, not %d", nsp);
	if (!(sigma > 0))
		return esg_set_error("ssim: sigma must be positive");
	int64_t n = 1;
	for (int d = 0; d < nsp; d++)
		n *= dim[d];
	if (n < 1)
		return esg_set_error("ssim: empty map");
	if (data_range <= 0) {
		double lo = a[0], hi = a[0];
		for (int64_t i = 0; i < n; i++) {
			lo = fmin(lo, fmin(a[i], b[i]));
			hi = fmax(hi, fmax(a[i], b[i]));
		}
		data_range = hi > lo ? hi - lo : 1;
	}
	int rad0 = (int)(3.5 * sigma + 0.5), rad[3];
	double *ker[3] = { 0 };
	for (int d = 0; d < nsp; d++) {
		int r = rad0;
		if (2 * r + 1 > dim[d])
			r = (int)((dim[d] - 1) / 2);
		rad[d] = r;
		ker[d] = malloc((size_t)(2 * r + 1) * sizeof(double));
		if (!ker[d])
			goto oom;
		double s = 0;
		for (int t = -r; t <= r; t++)
			s += ker[d][t + r] = exp(-(double)t * t / (2 * sigma * sigma));
		for (int t = 0; t <= 2 * r; t++)
			ker[d][t] /= s;
	}
	/* five planes: a, b, a^2, b^2, ab; filtered axis by axis */
	double *buf = malloc((size_t)n * 10 * sizeof *buf);
	if (!buf)
		goto oom;
	double *cur = buf, *nxt = buf + 5 * n;
	for (int64_t i = 0; i < n; i++) {
		double x = a[i], y = b[i];
		cur[i] = x;
		cur[n + i] = y;
		cur[2 * n + i] = x * x;
		cur[3 * n + i] = y * y;
		cur[4 * n + i] = x * y;
	}
	int64_t d_cur[3];
	memcpy(d_cur, dim, (size_t)nsp * sizeof *d_cur);
	int64_t m = n;
	for (int ax = 0; ax < nsp; ax++) {
		int64_t mm = m / d_cur[ax] * (d_cur[ax] - 2 * rad[ax]);
		for (int q = 0; q < 5; q++)
			valid_filter(cur + q * m, nsp, d_cur, ax, ker[ax], rad[ax], nxt + q * mm);
		d_cur[ax] -= 2 * rad[ax];
		m = mm;
		double *t = cur;
		cur = nxt;
		nxt = t;
	}
	const double C1 = (0.01 * data_range) * (0.01 * data_range);
	const double C2 = (0.03 * data_range) * (0.03 * data_range);
	double sum = 0;
	for (int64_t i = 0; i < m; i++) {
		double mx = cur[i], my = cur[m + i];
		double vx = cur[2 * m + i] - mx * mx, vy = cur[3 * m + i] - my * my;
		double cxy = cur[4 * m + i] - mx * my;
		sum += (2 * mx * my + C1) * (2 * cxy + C2) /
		       ((mx * mx + my * my + C1) * (vx + vy + C2));
	}
	*out = sum / (double)m;
	free(buf);
	for (int d = 0; d < nsp; d++)
		free(ker[d]);
	return 0;
oom:
	for (int d = 0; d < nsp; d++)
		free(ker[d]);
	return esg_set_error("ssim: out of memory");
}

/* ---- top-k overlap, ground truth --------------------------------------- */

/* Rescale to [0, 1] by the map's own range (all 0 if constant). */
static void minmax(float *v, int64_t n)
{
	float lo = v[0], hi = v[0];
	for (int64_t i = 1; i < n; i++) {
		lo = v[i] < lo ? v[i] : lo;
		hi = v[i] > hi ? v[i] : hi;
	}
	for (int64_t i = 0; i < n; i++)
		v[i] = hi > lo ? (float)(((double)v[i] - lo) / ((double)hi - lo)) : 0;
}

int esg_ssim_channels(const float *a, const float *b, int64_t chans, int nsp, const int64_t *dim,
		      double sigma, int absolute, int rescale, double *out)
{
	int64_t per = 1;
	for (int d = 0; d < nsp; d++)
		per *= dim[d];
	float *ta = malloc((size_t)per * sizeof *ta), *tb = malloc((size_t)per * sizeof *tb);
	int rc = 0;
	if (!ta || !tb)
		rc = esg_set_error("out of memory");
	double v = 0;
	for (int64_t c = 0; !rc && c < chans; c++) {
		for (int64_t i = 0; i < per; i++) {
			ta[i] = a[c * per + i];
			tb[i] = b[c * per + i];
			if (absolute) {
				ta[i] = fabsf(ta[i]);
				tb[i] = fabsf(tb[i]);
			}
		}
		if (rescale) {
			minmax(ta, per);
			minmax(tb, per);
		}
		double sv;
		rc = esg_ssim(ta, tb, nsp, dim, sigma, 0, &sv);
		if (!rc)
			v += sv / (double)chans;
	}
	free(ta);
	free(tb);
	*out = v;
	return rc;
}

double esg_topk_iou(const float *a, const float *b, int64_t n, double frac)
{
	if (n < 1 || !(frac > 0) || frac > 1)
		return NAN;
	int64_t k = (int64_t)ceil(frac * (double)n - 1e-9);
	if (k < 1)
		k = 1;
	keyed *ka = sorted(NULL, a, n, 1, 1), *kb = sorted(NULL, b, n, 1, 1);
	unsigned char *in = calloc((size_t)n, 1);
	double r = NAN;
	if (ka && kb && in) {
		for (int64_t i = 0; i < k; i++)
			in[ka[i].i] = 1;
		int64_t both = 0;
		for (int64_t i = 0; i < k; i++)
			both += in[kb[i].i];
		r = (double)both / (double)(2 * k - both);
	}
	free(ka);
	free(kb);
	free(in);
	return r;
}

double esg_mass_in_mask(const float *a, const float *m, int64_t n)
{
	double in = 0, all = 0;
	for (int64_t i = 0; i < n; i++)
		if (a[i] > 0) {
			all += a[i];
			if (m[i] != 0)
				in += a[i];
		}
	return all > 0 ? in / all : NAN;
}

int esg_pointing_game(const float *a, const float *m, int64_t n)
{
	int64_t best = 0;
	for (int64_t i = 1; i < n; i++)
		if (a[i] > a[best])
			best = i;
	return n > 0 && m[best] != 0;
}

double esg_auroc(const float *a, const float *m, int64_t n)
{
	if (n < 1)
		return NAN;
	double *v = calloc((size_t)n * 2, sizeof *v);
	if (!v)
		return NAN;
	for (int64_t i = 0; i < n; i++)
		v[i] = a[i];
	double r = NAN;
	if (!esg_rank_avg(v, n, v + n)) {
		double pos = 0, sum = 0;
		for (int64_t i = 0; i < n; i++)
			if (m[i] != 0) {
				pos++;
				sum += v[n + i];
			}
		double neg = (double)n - pos;
		if (pos > 0 && neg > 0)
			r = (sum - pos * (pos + 1) / 2) / (pos * neg);
	}
	free(v);
	return r;
}

int esg_argsort_desc(const float *v, int64_t n, int64_t *idx)
{
	keyed *k = sorted(NULL, v, n, 0, 1);
	if (!k)
		return -1;
	for (int64_t i = 0; i < n; i++)
		idx[i] = k[i].i;
	free(k);
	return 0;
}

double esg_trapz_unit(const double *y, int n)
{
	if (n < 2)
		return n == 1 ? y[0] : NAN;
	double s = 0;
	for (int i = 0; i + 1 < n; i++)
		s += 0.5 * (y[i] + y[i + 1]);
	return s / (n - 1);
}
