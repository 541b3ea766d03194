/* test_patch - the sliding-window grid and blending weights (lib/attr/patch_grid.c). */
#include "attr/patch.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static int origins_are(int64_t vol, int64_t patch, double overlap, int n, const int64_t *want)
{
	esg_patch_grid g;
	if (esg_patch_grid_init(&g, 1, &vol, &patch, overlap) || g.n != n)
		return 0;
	for (int i = 0; i < n; i++) {
		int64_t o;
		esg_patch_origin(&g, i, &o);
		if (o != want[i])
			return 0;
	}
	return 1;
}

int main(void)
{
	/* grid: step floor(size (1 - overlap)), last origin aligned to the end */
	ok(origins_are(10, 4, 0.25, 3, (int64_t[]){ 0, 3, 6 }), "vol 10, patch 4, overlap 0.25: 0 3 6");
	ok(origins_are(9, 4, 0.5, 4, (int64_t[]){ 0, 2, 4, 5 }), "vol 9, patch 4, overlap 0.5: 0 2 4 5");
	ok(origins_are(8, 4, 0, 2, (int64_t[]){ 0, 4 }), "overlap 0: tiles");
	ok(origins_are(5, 1, 0.75, 5, (int64_t[]){ 0, 1, 2, 3, 4 }), "step never below 1");
	ok(origins_are(6, 6, 0.25, 1, (int64_t[]){ 0 }), "patch = volume: one patch");
	esg_patch_grid g;
	int64_t vol[3] = { 5, 9, 7 }, patch[3] = { 8, 4, 7 };
	ok(esg_patch_grid_init(&g, 3, vol, patch, 0.25) == 0 && g.size[0] == 5 && g.clamped &&
	   g.count[0] == 1 && g.count[1] == 3 && g.count[2] == 1 && g.n == 3 &&
	   g.patch_voxels == 5 * 4 * 7 && g.vol_voxels == 5 * 9 * 7,
	   "3D: a patch larger than the volume is clamped");
	int64_t o[3];
	esg_patch_origin(&g, 2, o);
	ok(o[0] == 0 && o[1] == 5 && o[2] == 0, "3D: last origin (0, 5, 0)");
	int64_t v2[2] = { 7, 10 }, p2[2] = { 4, 4 };
	esg_patch_grid_init(&g, 2, v2, p2, 0.25);
	esg_patch_origin(&g, 4, o);
	ok(g.n == 2 * 3 && o[0] == 3 && o[1] == 3, "2D: C order, first axis slowest");
	ok(esg_patch_grid_init(&g, 1, vol, patch, 1.0) && strstr(esg_error(), "overlap"), "overlap 1 refused");
	ok(esg_patch_grid_init(&g, 1, vol, patch, -0.1), "negative overlap refused");
	ok(esg_patch_grid_init(&g, 0, vol, patch, 0.1), "no spatial axis refused");

	/* parsing */
	int64_t s[ESG_PATCH_AXES];
	int n;
	ok(esg_patch_parse("64,32,16", s, &n) == 0 && n == 3 && s[0] == 64 && s[2] == 16, "parse 64,32,16");
	ok(esg_patch_parse("8x8", s, &n) == 0 && n == 2, "parse 8x8");
	ok(esg_patch_parse("4,,5", s, &n) && esg_patch_parse("0,4", s, &n) && esg_patch_parse("4,5x", s, &n) &&
	   esg_patch_parse("a", s, &n) && esg_patch_parse("", s, &n) && esg_patch_parse("-4", s, &n),
	   "bad sizes refused");
	esg_blend b;
	ok(esg_blend_parse("mean", &b) == 0 && b == ESG_BLEND_MEAN && esg_blend_parse("gaussian", &b) == 0 &&
	   b == ESG_BLEND_GAUSSIAN && esg_blend_parse("cosine", &b), "blend names");

	/* weights */
	int64_t v1 = 20, p1 = 8;
	esg_patch_grid_init(&g, 1, &v1, &p1, 0.5);
	float *w = esg_patch_weights(&g, ESG_BLEND_GAUSSIAN);
	/* c = 3.5, sigma = 1: w(0) = exp(-3.5^2 / 2) / exp(-0.5^2 / 2) = exp(-6) */
	ok(w && near(w[0], exp(-6.0), 1e-9, 1e-6) && near(w[3], 1, 0, 1e-7) && w[0] == w[7] && w[2] == w[5],
	   "1D gaussian: symmetric, max 1, w(0) = exp(-6)");
	free(w);
	int64_t vv[2] = { 8, 8 }, pp[2] = { 8, 8 };
	esg_patch_grid_init(&g, 2, vv, pp, 0.5);
	w = esg_patch_weights(&g, ESG_BLEND_GAUSSIAN);
	ok(w && near(w[0], 1e-3, 0, 1e-6) && near(w[3 * 8 + 3], 1, 0, 1e-7), "2D gaussian: floored at 1e-3");
	free(w);
	w = esg_patch_weights(&g, ESG_BLEND_MEAN);
	int ones = w != NULL;
	for (size_t i = 0; ones && i < g.patch_voxels; i++)
		ones = w[i] == 1;
	ok(ones, "mean: all ones");
	free(w);

	/* crop, accumulate, normalise: the blend of a constant is that constant,
	 * and crops read the right voxels */
	int64_t v3[3] = { 5, 6, 7 }, p3[3] = { 3, 4, 4 };
	esg_patch_grid_init(&g, 3, v3, p3, 0.3);
	int64_t M = 2;
	float *src = malloc(M * g.vol_voxels * sizeof *src), *acc = calloc(M * g.vol_voxels, sizeof *acc);
	float *ws = calloc(g.vol_voxels, sizeof *ws), *crop = malloc(M * g.patch_voxels * sizeof *crop);
	w = esg_patch_weights(&g, ESG_BLEND_GAUSSIAN);
	for (size_t i = 0; i < M * g.vol_voxels; i++)
		src[i] = (float)i;
	int crops_ok = 1;
	for (int64_t i = 0; i < g.n; i++) {
		esg_patch_origin(&g, i, o);
		esg_patch_crop(&g, o, src, M, crop);
		/* last voxel of item 1 in this patch */
		size_t want = g.vol_voxels + ((size_t)(o[0] + 2) * 6 + (size_t)(o[1] + 3)) * 7 + (size_t)(o[2] + 3);
		crops_ok &= crop[2 * g.patch_voxels - 1] == (float)want && crop[0] == (float)((o[0] * 6 + o[1]) * 7 + o[2]);
		for (size_t k = 0; k < M * g.patch_voxels; k++)
			crop[k] = k < g.patch_voxels ? 2.5f : -1.0f;
		esg_patch_accumulate(&g, o, crop, M, w, acc, ws);
	}
	ok(crops_ok, "crops read the patch's voxels");
	esg_patch_normalise(&g, acc, M, ws);
	int const_ok = 1;
	for (size_t i = 0; i < g.vol_voxels; i++)
		const_ok &= near(acc[i], 2.5, 0, 1e-6) && near(acc[g.vol_voxels + i], -1, 0, 1e-6) && ws[i] > 0;
	ok(const_ok, "every voxel covered; a constant blends to itself");
	free(src);
	free(acc);
	free(ws);
	free(crop);
	free(w);
	return tap_done();
}
