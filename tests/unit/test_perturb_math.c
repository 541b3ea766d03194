/* test_perturb_math.c - feature masks (grid, SLIC, voxel, parsing), the
 * linear solvers (weighted least squares, ridge, lasso, Jacobi eigen) on
 * hand-computed cases, and the KernelSHAP weights, including a full
 * enumeration where the kernel-weighted regression must give the exact
 * Shapley values. */
#include "attr/attr.h"
#include "attr/perturb/perturb.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_grid(void)
{
	/* 5 x 4 grid, blocks 2 x 3: 3 x 2 blocks */
	int64_t dim[2] = { 5, 4 }, blk[2] = { 2, 3 };
	int32_t lab[20];
	static const int32_t want[20] = {
		0, 0, 0, 1,
		0, 0, 0, 1,
		2, 2, 2, 3,
		2, 2, 2, 3,
		4, 4, 4, 5,
	};
	ok(esg_grid_labels(2, dim, blk, lab) == 6, "grid 5x4 / 2x3 has 6 blocks");
	ok(memcmp(lab, want, sizeof want) == 0, "grid labels, last blocks clipped");

	/* through the spec: 2 channels share the labels */
	esg_fmask_spec s;
	esg_fmask m;
	int64_t dims[3] = { 2, 5, 4 };
	ok(esg_fmask_parse("grid:2,3", &s) == 0, "parse grid:2,3");
	ok(esg_fmask_build(&s, NULL, 3, dims, NULL, &m) == 0, "build grid mask");
	ok(m.n == 6 && memcmp(m.id, want, sizeof want) == 0 && memcmp(m.id + 20, want, sizeof want) == 0,
	   "both channels carry the grid labels");
	int csr = m.start[0] == 0 && m.start[6] == 40;
	for (int f = 0; f < 6; f++)
		for (int64_t i = m.start[f]; i < m.start[f + 1]; i++)
			csr &= m.id[m.elem[i]] == f;
	ok(csr, "feature -> elements index is consistent");
	esg_fmask_free(&m);
	esg_fmask_spec_clear(&s);

	ok(esg_fmask_parse("grid:2", &s) == 0 && esg_fmask_build(&s, NULL, 3, dims, NULL, &m) == 0 &&
	   m.n == 6, "grid:2 applies to every spatial axis (3 x 2 blocks)");
	esg_fmask_free(&m);
	esg_fmask_spec_clear(&s);

	ok(esg_fmask_parse("voxel", &s) == 0 && esg_fmask_build(&s, NULL, 3, dims, NULL, &m) == 0 &&
	   m.n == 40 && m.id[39] == 39, "voxel: every element its own feature (channels too)");
	esg_fmask_free(&m);
	esg_fmask_spec_clear(&s);

	const char *badspecs[] = { "grid:", "grid:0", "grid:2,x", "slic:0", "slic:4,-1", "voxels", "file:", "" };
	for (size_t i = 0; i < sizeof badspecs / sizeof *badspecs; i++) {
		int rc = esg_fmask_parse(badspecs[i], &s);
		ok(rc == -1 && strstr(esg_error(), "feature_mask"), "bad spec '%s' refused: %s", badspecs[i],
		   esg_error());
	}
	ok(esg_fmask_parse("grid:2,2,2", &s) == 0 && esg_fmask_build(&s, NULL, 3, dims, NULL, &m) == -1 &&
	   strstr(esg_error(), "3 block sizes for 2 spatial axes"), "grid with the wrong count: %s", esg_error());
	esg_fmask_spec_clear(&s);
}

/* Two halves of different intensity: no supervoxel may straddle them. */
static void check_slic(int nsp, int64_t side, int nseg)
{
	int64_t dim[3] = { side, side, side }, V = 1;
	for (int a = 0; a < nsp; a++)
		V *= side;
	float *img = malloc((size_t)V * sizeof *img);
	int32_t *lab = malloc((size_t)V * sizeof *lab);
	int64_t last = side;  /* size of the last axis */
	for (int64_t v = 0; v < V; v++)
		img[v] = (v % last) < side / 2 ? 0.0f : 1.0f;
	int64_t n = esg_slic(img, nsp, dim, nseg, 0.1, lab);
	ok(n >= nseg / 2 && n <= 2 * nseg, "slic %dD %lld^%d asked %d: %lld supervoxels", nsp,
	   (long long)side, nsp, nseg, (long long)n);
	int *side_of = malloc((size_t)(n > 0 ? n : 1) * sizeof *side_of);
	int *used = calloc((size_t)(n > 0 ? n : 1), sizeof *used);
	for (int64_t k = 0; k < n; k++)
		side_of[k] = -1;
	int straddle = 0, range = 1;
	for (int64_t v = 0; v < V; v++) {
		int32_t k = lab[v];
		if (k < 0 || k >= n) {
			range = 0;
			continue;
		}
		used[k] = 1;
		int sd = img[v] > 0.5f;
		if (side_of[k] < 0)
			side_of[k] = sd;
		else if (side_of[k] != sd)
			straddle = 1;
	}
	int all = 1;
	for (int64_t k = 0; k < n; k++)
		all &= used[k];
	ok(range && all, "slic %dD labels are 0..n-1, all used", nsp);
	ok(!straddle, "slic %dD: no supervoxel crosses the intensity edge", nsp);
	/* the same input gives the same labels */
	int32_t *lab2 = malloc((size_t)V * sizeof *lab2);
	ok(esg_slic(img, nsp, dim, nseg, 0.1, lab2) == n && memcmp(lab, lab2, (size_t)V * sizeof *lab) == 0,
	   "slic %dD is deterministic", nsp);
	free(lab2);
	free(side_of);
	free(used);
	free(img);
	free(lab);
}

static void check_lsq(void)
{
	/* y = 2 + 3 x1 - x2 exactly: any positive weights recover it */
	double X[12] = { 0, 0, 1, 0, 0, 1, 1, 1, 2, 1, 3, 5 }, y[6], w[6] = { 1, 2, 3, 0.5, 1, 4 };
	for (int i = 0; i < 6; i++)
		y[i] = 2 + 3 * X[2 * i] - X[2 * i + 1];
	double c[2] = { 0 }, b = 0;
	ok(esg_wls(X, y, w, 6, 2, 1, 0, c, &b) == 0 && near(c[0], 3, 1e-10, 0) && near(c[1], -1, 1e-10, 0) &&
	   near(b, 2, 1e-10, 0), "exact linear data: coef 3, -1, intercept 2 (got %g %g %g)", c[0], c[1], b);

	/* by hand: x = 0 1 2, y = 1 2 4, w = 1 1 2 -> slope 17/11, intercept 9/11 */
	double x1[3] = { 0, 1, 2 }, y1[3] = { 1, 2, 4 }, w1[3] = { 1, 1, 2 };
	ok(esg_wls(x1, y1, w1, 3, 1, 1, 0, c, &b) == 0 && near(c[0], 17.0 / 11, 1e-12, 0) &&
	   near(b, 9.0 / 11, 1e-12, 0), "weighted fit by hand: %.15g %.15g (17/11, 9/11)", c[0], b);

	/* underdetermined: x1 + x2 = 2 -> the minimum-norm solution (1, 1) */
	double x2[2] = { 1, 1 }, y2[1] = { 2 };
	ok(esg_wls(x2, y2, NULL, 1, 2, 0, 0, c, NULL) == 0 && near(c[0], 1, 1e-12, 0) && near(c[1], 1, 1e-12, 0),
	   "minimum-norm solution (%g, %g)", c[0], c[1]);
	/* rank-deficient with more rows than columns: two identical columns */
	double x3[8] = { 1, 1, 2, 2, 3, 3, 4, 4 }, y3[4] = { 2, 4, 6, 8 };
	ok(esg_wls(x3, y3, NULL, 4, 2, 0, 0, c, NULL) == 0 && near(c[0], 1, 1e-9, 0) && near(c[1], 1, 1e-9, 0),
	   "rank-deficient: minimum norm (%g, %g)", c[0], c[1]);

	/* ridge: sum xy / (sum x^2 + lambda) = 5 / 6 */
	double x4[2] = { 1, 2 }, y4[2] = { 1, 2 };
	ok(esg_wls(x4, y4, NULL, 2, 1, 0, 1, c, NULL) == 0 && near(c[0], 5.0 / 6, 1e-12, 0), "ridge 5/6: %g", c[0]);
	/* ridge in the dual (more features than samples): (X X^T + l) z = y, coef = X^T z
	 * X = [1 1], y = 2, l = 1: z = 2/3, coef = (2/3, 2/3) */
	ok(esg_wls(x2, y2, NULL, 1, 2, 0, 1, c, NULL) == 0 && near(c[0], 2.0 / 3, 1e-12, 0) &&
	   near(c[1], 2.0 / 3, 1e-12, 0), "ridge, dual form: (%g, %g)", c[0], c[1]);

	/* lasso on an orthogonal design: soft-thresholded least squares.
	 * u = 1/4, z_j = 1/2, rho = (1, 1/4): coef = (1 - a, 1/4 - a) / (1/2) */
	double x5[8] = { 1, 0, -1, 0, 0, 1, 0, -1 }, y5[4] = { 2, -2, 0.5, -0.5 };
	ok(esg_lasso(x5, y5, NULL, 4, 2, 0, 0.1, 1000, 1e-12, c, NULL) == 0 && near(c[0], 1.8, 1e-12, 0) &&
	   near(c[1], 0.3, 1e-12, 0), "lasso alpha 0.1: (%g, %g) want (1.8, 0.3)", c[0], c[1]);
	ok(esg_lasso(x5, y5, NULL, 4, 2, 0, 0.3, 1000, 1e-12, c, NULL) == 0 && near(c[0], 1.4, 1e-12, 0) &&
	   c[1] == 0, "lasso alpha 0.3 zeroes the small coefficient: (%g, %g)", c[0], c[1]);
	/* lasso with weights and intercept equals sklearn's on this case:
	 * Lasso(alpha=0.01).fit(x, y, sample_weight=w) with x = 0 1 2, y = 1 2 4, w = 1 1 2
	 * (weights only rescale: slope = (Sxy/sw - a) / (Sxx/sw)) */
	double sl = (4.25 / 4 - 0.01) / (2.75 / 4);
	ok(esg_lasso(x1, y1, w1, 3, 1, 1, 0.01, 1000, 1e-12, c, &b) == 0 && near(c[0], sl, 1e-12, 0) &&
	   near(b, 2.75 - sl * 1.25, 1e-12, 0), "weighted lasso with intercept: %.12g %.12g", c[0], b);

	/* eigen: A v = lambda v */
	double A[9] = { 4, 1, 2, 1, 3, 0, 2, 0, 5 }, A0[9], ev[3], V[9];
	memcpy(A0, A, sizeof A);
	esg_sym_eigen(A, 3, ev, V);
	double err = 0, tr = 0;
	for (int k = 0; k < 3; k++) {
		tr += ev[k];
		for (int i = 0; i < 3; i++) {
			double s = 0;
			for (int j = 0; j < 3; j++)
				s += A0[i * 3 + j] * V[j * 3 + k];
			err = fmax(err, fabs(s - ev[k] * V[i * 3 + k]));
		}
	}
	ok(err < 1e-12 && near(tr, 12, 1e-12, 0), "Jacobi eigenpairs (max residual %g)", err);
}

/* A 4-player game with interactions; Shapley values by enumeration against
 * the KernelSHAP regression over all coalitions with the Shapley kernel. */
static double game(int s)
{
	int a = s & 1, b = s >> 1 & 1, c = s >> 2 & 1, d = s >> 3 & 1;
	return 1.0 + 2 * a - b + 3 * a * b + 0.5 * b * c * d - 2 * c * d + 0.25 * d;
}

static void check_kernel_shap(void)
{
	double p[4];
	ok(esg_kernel_shap_probs(4, p) == 0 && p[0] == 0 && near(p[1], 1 / 2.75, 1e-15, 0) &&
	   near(p[2], 0.75 / 2.75, 1e-15, 0) && near(p[3], 1 / 2.75, 1e-15, 0),
	   "Captum's size distribution for M = 4: 0, 1, 0.75, 1 (normalised)");
	ok(esg_kernel_shap_probs(1, p) == -1, "fewer than 2 features refused");
	ok(near(esg_kernel_shap_weight(4, 1), 0.25, 1e-14, 0) && near(esg_kernel_shap_weight(4, 2), 0.125, 1e-14, 0) &&
	   isinf(esg_kernel_shap_weight(4, 0)), "Shapley kernel weights: 1/4, 1/8, inf");

	const int M = 4;
	double phi[4] = { 0 };
	for (int i = 0; i < M; i++)
		for (int s = 0; s < 16; s++) {
			if (s >> i & 1)
				continue;
			int k = __builtin_popcount(s);
			/* |S|! (M - |S| - 1)! / M! */
			double fk = 1, fr = 1;
			for (int t = 2; t <= k; t++)
				fk *= t;
			for (int t = 2; t <= M - k - 1; t++)
				fr *= t;
			phi[i] += fk * fr / 24 * (game(s | 1 << i) - game(s));
		}
	double X[64], y[16], w[16], c[4], b;
	for (int s = 0; s < 16; s++) {
		for (int i = 0; i < M; i++)
			X[s * 4 + i] = s >> i & 1;
		y[s] = game(s);
		double kw = esg_kernel_shap_weight(M, __builtin_popcount(s));
		w[s] = isinf(kw) ? 1e9 : kw;
	}
	ok(esg_wls(X, y, w, 16, 4, 1, 0, c, &b) == 0, "kernel regression over all 16 coalitions");
	double err = 0;
	for (int i = 0; i < M; i++)
		err = fmax(err, fabs(c[i] - phi[i]));
	ok(err < 1e-6, "kernel-weighted regression = Shapley values by enumeration (max error %g; "
	   "phi = %g %g %g %g)", err, phi[0], phi[1], phi[2], phi[3]);
	ok(near(phi[0] + phi[1] + phi[2] + phi[3], game(15) - game(0), 1e-12, 0), "efficiency: sum phi = v(N) - v(0)");
}

/* file:PATH[:TENSOR] with a stream tensor: distinct values -> ids in order */
static void check_file(void)
{
	char path[] = "/tmp/test_perturb_mask.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
	esg_record *r = esg_record_new();
	float v[20];
	for (int i = 0; i < 20; i++)
		v[i] = (float)(100 - 7 * ((i / 4) / 2 * 2 + (i % 4) / 3));  /* grid 2x3 labels, decreasing */
	int64_t sh[4] = { 1, 1, 5, 4 };
	esg_record_add_f32(r, "labels", 4, sh, v);
	esg_writer *w = f ? esg_writer_open(f, 0) : NULL;
	ok(w && esg_writer_put(w, r) == 0 && esg_writer_close(w) == 0 && fclose(f) == 0, "write a label stream");
	esg_record_free(r);
	char spec[96];
	snprintf(spec, sizeof spec, "file:%s:labels", path);
	esg_fmask_spec s;
	esg_fmask m;
	int64_t dims[3] = { 2, 5, 4 };
	ok(esg_fmask_parse(spec, &s) == 0 && esg_fmask_build(&s, NULL, 3, dims, NULL, &m) == 0, "build from a stream tensor");
	int good = m.n == 6;
	for (int c = 0; c < 2 && good; c++)
		for (int i = 0; i < 20; i++)
			good &= m.id[c * 20 + i] == 5 - ((i / 4) / 2 * 2 + (i % 4) / 3);
	ok(good, "labels become ids 0..5 in increasing value order, shared by the channels");
	esg_fmask_free(&m);
	int64_t wrong[3] = { 1, 4, 5 };
	ok(esg_fmask_build(&s, NULL, 3, wrong, NULL, &m) == -1 && strstr(esg_error(), "does not fit"),
	   "a label volume of another shape is refused: %s", esg_error());
	esg_fmask_spec_clear(&s);
	snprintf(spec, sizeof spec, "file:%s:nope", path);
	ok(esg_fmask_parse(spec, &s) == 0 && esg_fmask_build(&s, NULL, 3, dims, NULL, &m) == -1 &&
	   strstr(esg_error(), "nope"), "a missing tensor is named: %s", esg_error());
	esg_fmask_spec_clear(&s);
	ok(esg_fmask_parse("file:/nonexistent/x.nii.gz", &s) == 0 &&
	   esg_fmask_build(&s, NULL, 3, dims, NULL, &m) == -1 && strstr(esg_error(), "/nonexistent/x.nii.gz"),
	   "a missing file is named: %s", esg_error());
	esg_fmask_spec_clear(&s);
	remove(path);
}

int main(void)
{
	check_grid();
	check_file();
	check_slic(2, 16, 4);
	check_slic(3, 12, 8);
	check_slic(1, 40, 5);
	check_lsq();
	check_kernel_shap();
	return tap_done();
}
