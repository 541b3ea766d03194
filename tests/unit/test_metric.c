/* test_metric.c - lib/eval/metric.c against hand-computed values and a numpy
 * reference (tests/py/ref_metric.py small: the same arrays, numbers below). */
#include "eval/eval.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>

/* The arrays of ref_metric.py's "small" command (float32, like here). */
static float *arr(int64_t n, char kind)
{
	float *v = malloc((size_t)n * sizeof *v);
	for (int64_t i = 0; i < n; i++) {
		double x = (double)i;
		v[i] = kind == 'a' ? (float)(sin(0.7 * x + 0.3) * (double)(i % 5)) :
		       kind == 'b' ? (float)(cos(0.37 * x) + 0.1 * (double)(i % 3)) :
				     (float)((i % 7) < 3);
	}
	return v;
}

static void hand(void)
{
	/* ranks with ties: [10, 20, 20, 5] -> [2, 3.5, 3.5, 1] */
	double v[4] = { 10, 20, 20, 5 }, r[4];
	ok(esg_rank_avg(v, 4, r) == 0 && r[0] == 2 && r[1] == 3.5 && r[2] == 3.5 && r[3] == 1,
	   "average ranks share ties");
	float a[5] = { 1, 2, 3, 4, 5 }, b[5] = { 2, 4, 6, 8, 10 }, c[5] = { 5, 4, 3, 2, 1 };
	ok(near(esg_spearman(a, b, 5, 0), 1, 1e-12, 0), "spearman of a monotone pair is 1");
	ok(near(esg_spearman(a, c, 5, 0), -1, 1e-12, 0), "spearman of a reversed pair is -1");
	float s[5] = { -5, -4, 0, 4, 5 }, t[5] = { 5, 4, 0, 4, 5 };
	ok(near(esg_spearman(s, t, 5, 1), 1, 1e-12, 0), "spearman_abs ignores signs");
	ok(isnan(esg_spearman(a, (float[5]){ 1, 1, 1, 1, 1 }, 5, 0)), "spearman of a constant map is NaN");
	/* AUROC: scores 0.1 0.4 0.35 0.8, labels 0 0 1 1 -> 0.75 (sklearn's example) */
	float sc[4] = { 0.1f, 0.4f, 0.35f, 0.8f }, lb[4] = { 0, 0, 1, 1 };
	ok(near(esg_auroc(sc, lb, 4), 0.75, 1e-12, 0), "auroc of sklearn's example is 0.75");
	float tie[4] = { 1, 1, 1, 1 };
	ok(near(esg_auroc(tie, lb, 4), 0.5, 1e-12, 0), "auroc of all ties is 0.5");
	ok(isnan(esg_auroc(sc, (float[4]){ 0 }, 4)), "auroc with an empty mask is NaN");
	ok(esg_pointing_game(sc, lb, 4) == 1 && esg_pointing_game(sc, (float[4]){ 1, 1, 1, 0 }, 4) == 0,
	   "pointing game looks at the argmax");
	float at[4] = { 2, -1, 1, 1 };
	ok(near(esg_mass_in_mask(at, lb, 4), 0.5, 1e-12, 0), "mass in mask counts positive attribution only");
	ok(near(esg_topk_iou(a, b, 5, 0.4), 1, 0, 0) && near(esg_topk_iou(a, c, 5, 0.4), 0, 0, 0),
	   "top-40%% IoU: same order 1, reversed 0");
	ok(near(esg_topk_iou(a, c, 5, 0.6), 0.2, 1e-12, 0), "top-60%% IoU of reversed maps is 1/5");
	double y[3] = { 1, 0.5, 0 };
	ok(near(esg_trapz_unit(y, 3), 0.5, 1e-12, 0), "trapezoid area on [0, 1]");
	int64_t idx[4];
	ok(esg_argsort_desc(at, 4, idx) == 0 && idx[0] == 0 && idx[1] == 2 && idx[2] == 3 && idx[3] == 1,
	   "argsort descending, ties by index");
	/* SSIM of a map with itself is 1; with a constant shift < 1 */
	int64_t d2[2] = { 13, 14 };
	float *A = arr(13 * 14, 'a');
	double out;
	ok(esg_ssim(A, A, 2, d2, 1.5, 0, &out) == 0 && near(out, 1, 1e-12, 0), "ssim(a, a) = 1");
	ok(esg_ssim(A, A, 4, d2, 1.5, 0, &out) == -1, "ssim refuses 4 spatial axes");
	free(A);
}

static void numpy_ref(void)
{
	int64_t n = 60;
	float *a = arr(n, 'a'), *b = arr(n, 'b'), *m = arr(n, 'm');
	/* printed by: python3 tests/py/ref_metric.py small */
	ok(near(esg_spearman(a, b, n, 0), 0.069657708268, 1e-10, 0), "spearman = numpy reference");
	ok(near(esg_spearman(a, b, n, 1), 0.053366117708, 1e-10, 0), "spearman_abs = numpy reference");
	ok(near(esg_auroc(a, m, n), 0.473063973064, 1e-10, 0), "auroc = numpy reference");
	ok(near(esg_mass_in_mask(a, m, n), 0.421375675644, 1e-7, 0), "mass in mask = numpy reference");
	ok(esg_pointing_game(a, m, n) == 1, "pointing game = numpy reference");
	ok(near(esg_topk_iou(a, b, n, 0.10), 0.090909090909, 1e-10, 0), "top-10%% IoU = numpy reference");
	ok(near(esg_topk_iou(a, b, n, 0.25), 0.153846153846, 1e-10, 0), "top-25%% IoU = numpy reference");
	free(a);
	free(b);
	free(m);
	struct { int nsp; int64_t d[3]; double want; const char *what; } S[] = {
		{ 2, { 13, 14 }, 0.026696403665, "ssim 2D 13x14" },
		{ 3, { 12, 13, 11 }, 0.002527222950, "ssim 3D 12x13x11" },
		{ 2, { 6, 9 }, -0.005722522491, "ssim 2D 6x9 (window shrunk)" },
	};
	for (size_t i = 0; i < sizeof S / sizeof *S; i++) {
		int64_t k = S[i].d[0] * S[i].d[1] * (S[i].nsp == 3 ? S[i].d[2] : 1);
		float *x = arr(k, 'a'), *y = arr(k, 'b');
		double out = NAN;
		int rc = esg_ssim(x, y, S[i].nsp, S[i].d, 1.5, 0, &out);
		ok(rc == 0 && near(out, S[i].want, 1e-9, 0),
		   "%s = numpy reference (%.12f)", S[i].what, out);
		free(x);
		free(y);
	}
}

int main(void)
{
	hand();
	numpy_ref();
	return tap_done();
}
