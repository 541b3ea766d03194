/* test_layer_math.c - upsampling (lib/image/upsample.c) and the layer-method
 * arithmetic (lib/attr/layer/layer_math.h) against values worked out by hand. */
#include "attr/layer/layer_math.h"
#include "stream/stream.h"
#include "tap.h"
#include "image/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int all_near(const float *a, const double *b, size_t n, double tol)
{
	for (size_t i = 0; i < n; i++)
		if (!near(a[i], b[i], tol, 0))
			return 0;
	return 1;
}

static void test_linear(void)
{
	/* 1D: [0, 1] -> 4; source coordinates -0.25 (clamped), 0.25, 0.75, 1.25 */
	float src[4] = { 0, 1 }, dst[64];
	int64_t sh[3] = { 1, 1, 2 }, o1[1] = { 4 };
	double want1[4] = { 0, 0.25, 0.75, 1 };
	ok(esg_upsample(src, 3, sh, o1, ESG_UP_LINEAR, dst) == 0 && all_near(dst, want1, 4, 1e-7),
	   "linear 2 -> 4 is [0, .25, .75, 1] (align_corners=False)");

	/* 2D: [[0, 1], [2, 3]] -> 4x4 = W v W^T, W rows (1,0) (.75,.25) (.25,.75) (0,1) */
	float v[4] = { 0, 1, 2, 3 };
	int64_t sh2[4] = { 1, 1, 2, 2 }, o2[2] = { 4, 4 };
	double W[4][2] = { { 1, 0 }, { .75, .25 }, { .25, .75 }, { 0, 1 } }, want2[16];
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++) {
			want2[i * 4 + j] = 0;
			for (int a = 0; a < 2; a++)
				for (int b = 0; b < 2; b++)
					want2[i * 4 + j] += W[i][a] * W[j][b] * v[a * 2 + b];
		}
	int rc = esg_upsample(v, 4, sh2, o2, ESG_UP_LINEAR, dst);
	ok(rc == 0 && all_near(dst, want2, 16, 1e-6), "bilinear 2x2 -> 4x4 by hand (row 1: %g %g %g %g)",
	   dst[4], dst[5], dst[6], dst[7]);

	/* downsampling 3 -> 2: scale 1.5, coordinates 0.25 and 1.75 */
	float d3[3] = { 1, 5, 9 };
	int64_t sh3[3] = { 1, 1, 3 }, o3[1] = { 2 };
	double want3[2] = { 0.75 * 1 + 0.25 * 5, 0.25 * 5 + 0.75 * 9 };
	ok(esg_upsample(d3, 3, sh3, o3, ESG_UP_LINEAR, dst) == 0 && all_near(dst, want3, 2, 1e-6),
	   "linear 3 -> 2 is [2, 8]");

	/* trilinear 2x2x2 -> 3x3x3 of v = 4i + 2j + k: scale 2/3, coordinates 0 (clamped),
	 * 0.5, 1.167 (clamped at the edge) -> f = [0, .5, 1] on each axis */
	float cube[8];
	for (int i = 0; i < 8; i++)
		cube[i] = (float)(4 * (i >> 2) + 2 * ((i >> 1) & 1) + (i & 1));
	int64_t sh4[5] = { 1, 1, 2, 2, 2 }, o4[3] = { 3, 3, 3 };
	double f[3] = { 0, 0.5, 1 }, want4[27];
	for (int a = 0; a < 3; a++)
		for (int b = 0; b < 3; b++)
			for (int c = 0; c < 3; c++)
				want4[(a * 3 + b) * 3 + c] = 4 * f[a] + 2 * f[b] + f[c];
	ok(esg_upsample(cube, 5, sh4, o4, ESG_UP_LINEAR, dst) == 0 && all_near(dst, want4, 27, 1e-6),
	   "trilinear 2^3 -> 3^3 of 4i + 2j + k is 4f(a) + 2f(b) + f(c), f = [0, .5, 1]");

	/* items and channels are independent: [2, 2, 2] -> [2, 2, 4] */
	float bc[8] = { 0, 1, 10, 20, -1, 1, 3, 3 };
	int64_t sh5[3] = { 2, 2, 2 }, o5[1] = { 4 };
	double want5[16] = { 0, .25, .75, 1, 10, 12.5, 17.5, 20, -1, -.5, .5, 1, 3, 3, 3, 3 };
	ok(esg_upsample(bc, 3, sh5, o5, ESG_UP_LINEAR, dst) == 0 && all_near(dst, want5, 16, 1e-6),
	   "batch and channels resized independently");

	int64_t same[2] = { 2, 2 };
	double want6[4] = { 0, 1, 2, 3 };
	ok(esg_upsample(v, 4, sh2, same, ESG_UP_LINEAR, dst) == 0 && all_near(dst, want6, 4, 0),
	   "same size is the identity");
	ok(esg_upsample(v, 2, sh2, same, ESG_UP_LINEAR, dst) == -1 && strstr(esg_error(), "spatial"),
	   "no spatial axis: %s", esg_error());
	ok(!strcmp(esg_upsample_name(2), "bilinear") && !strcmp(esg_upsample_name(3), "trilinear"),
	   "interpolation names");
}

static void test_nearest(void)
{
	float src[5] = { 0, 1, 2, 3, 4 }, dst[8];
	int64_t sh[3] = { 1, 1, 2 }, o[1] = { 4 };
	double w1[4] = { 0, 0, 1, 1 };
	ok(esg_upsample(src, 3, sh, o, ESG_UP_NEAREST, dst) == 0 && all_near(dst, w1, 4, 0), "nearest 2 -> 4");
	int64_t sh3[3] = { 1, 1, 3 }, o5[1] = { 5 };
	double w2[5] = { 0, 0, 1, 1, 2 };  /* floor(o * 0.6) */
	ok(esg_upsample(src, 3, sh3, o5, ESG_UP_NEAREST, dst) == 0 && all_near(dst, w2, 5, 0), "nearest 3 -> 5");
	int64_t sh5[3] = { 1, 1, 5 }, o3[1] = { 3 };
	double w3[3] = { 0, 1, 3 };        /* floor(o * 5/3) */
	ok(esg_upsample(src, 3, sh5, o3, ESG_UP_NEAREST, dst) == 0 && all_near(dst, w3, 3, 0), "nearest 5 -> 3");
}

/* Captum's one-conv net at arange(16), target 0: conv1 output and the
 * gradient of the score at it (relu1 and fc1 row 0 = (1,1,1,1,1,-1,-1,-1)). */
static const float ACT[8] = { -5, 4, 31, 40, -30, -21, 6, 15 };
static const float GRAD[8] = { 0, 1, 1, 1, 0, 0, -1, -1 };

static void test_maps(void)
{
	float m[8];
	double gc[4] = { 11.25, 13.5, 20.25, 22.5 };  /* .75 ch0 - .5 ch1 */
	esg_gradcam_map(ACT, GRAD, 2, 4, 1, 0, m);
	ok(all_near(m, gc, 4, 1e-6), "Grad-CAM of the one-conv net: Captum's [[11.25, 13.5], [20.25, 22.5]]");
	double gcs[8] = { -3.75, 3, 23.25, 30, 15, 10.5, -3, -7.5 };
	esg_gradcam_map(ACT, GRAD, 2, 4, 0, 0, m);
	ok(all_near(m, gcs, 8, 1e-6), "Grad-CAM without channel summation: w_c A_c");
	double gcr[8] = { 0, 3, 23.25, 30, 15, 10.5, 0, 0 };
	esg_gradcam_map(ACT, GRAD, 2, 4, 0, 1, m);
	ok(all_near(m, gcr, 8, 1e-6), "Grad-CAM relu_attributions");

	/* Grad-CAM++: ch0 sum 70, alpha = 1/(2 + 70) where g = 1, w0 = 3/72 scale;
	 * ch1: relu(scale g) = 0 -> w1 = 0.  map = relu(w0 ch0) */
	double pp[4] = { 0, 4.0 / 24, 31.0 / 24, 40.0 / 24 };
	esg_gradcampp_map(ACT, GRAD, 2, 4, 1, m);
	ok(all_near(m, pp, 4, 1e-6), "Grad-CAM++ of the one-conv net by hand: %g %g %g %g", m[0], m[1], m[2], m[3]);
	double pp2[4] = { 0, 8.0 / 24, 62.0 / 24, 80.0 / 24 };
	esg_gradcampp_map(ACT, GRAD, 2, 4, 2, m);
	ok(all_near(m, pp2, 4, 1e-6), "Grad-CAM++ scales with exp(score) (alpha does not)");
	ok(esg_gradcampp_map(ACT, GRAD, 2, 4, exp(100.0), m) == 1, "Grad-CAM++: a scale past float's range says so");

	double la[4] = { 0, 4, 25, 25 };
	esg_linear_approx_map(ACT, GRAD, 2, 4, m);
	ok(all_near(m, la, 4, 1e-6), "linear approximation: sum_c A g");

	/* excitation maps from P [2, 4]: channel sum, mean, one channel, clamped */
	double es[4] = { -35, -17, 37, 55 }, em[4] = { -17.5, -8.5, 18.5, 27.5 }, e1c[4] = { -30, -21, 6, 15 };
	double ec[4] = { 0, 0, 37, 55 };
	esg_excitation_map(ACT, 2, 4, 0, 0, 0, m);
	ok(all_near(m, es, 4, 1e-6), "excitation map: P summed over channels");
	esg_excitation_map(ACT, 2, 4, 1, 0, 0, m);
	ok(all_near(m, em, 4, 1e-6), "excitation map: channel mean");
	esg_excitation_map(ACT, 2, 4, 2, 1, 0, m);
	ok(all_near(m, e1c, 4, 1e-6), "excitation map: one channel");
	esg_excitation_map(ACT, 2, 4, 0, 0, 1, m);
	ok(all_near(m, ec, 4, 1e-6), "contrastive excitation map: the sum clamped at 0");
	float inplace[8];
	memcpy(inplace, ACT, sizeof inplace);
	esg_excitation_map(inplace, 2, 4, 0, 0, 0, inplace);
	ok(all_near(inplace, es, 4, 1e-6), "excitation map in place (map = P's first values)");

	float v[3] = { 2, 4, 6 }, c[3] = { 5, 5, 5 };
	double mm[3] = { 0, 0.5, 1 }, cc[3] = { 5, 5, 5 };
	ok(esg_minmax(v, 3) == 0 && all_near(v, mm, 3, 0), "min-max normalisation");
	ok(esg_minmax(c, 3) == 1 && all_near(c, cc, 3, 0), "a constant map is reported and left alone");

	double s[3] = { 1, 2, 3 }, w[3];
	unsigned char use[3] = { 1, 0, 1 };
	esg_softmax(s, use, 3, w);
	double e1 = exp(1), e3 = exp(3);
	ok(near(w[0], e1 / (e1 + e3), 1e-15, 0) && w[1] == 0 && near(w[2], e3 / (e1 + e3), 1e-15, 0),
	   "softmax over the used entries");
	double big[2] = { 1000, 1001 };
	esg_softmax(big, NULL, 2, w);
	ok(near(w[1], 1 / (1 + exp(-1)), 1e-15, 0), "softmax is stable for large scores");
}

int main(void)
{
	test_linear();
	test_nearest();
	test_maps();
	return tap_done();
}
