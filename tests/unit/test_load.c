/* test_load.c - esg-load's library parts: the NPY parser (good and malformed
 * headers), axis reversal, crop / pad and slice affine math, normalisation
 * and percentiles against values worked out by hand. */
#include "image/image.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* An NPY document: version, header text (padded here), then data. */
static size_t npy_doc(unsigned char *buf, int major, const char *hdr, const void *data,
		      size_t nbytes)
{
	size_t pre = major == 1 ? 10 : 12, hl = strlen(hdr);
	memcpy(buf, "\x93NUMPY", 6);
	buf[6] = (unsigned char)major;
	buf[7] = 0;
	buf[8] = (unsigned char)(hl & 0xff);
	buf[9] = (unsigned char)(hl >> 8);
	if (major > 1)
		buf[10] = buf[11] = 0;
	memcpy(buf + pre, hdr, hl);
	memcpy(buf + pre + hl, data, nbytes);
	return pre + hl + nbytes;
}

static void test_npy_good(void)
{
	unsigned char buf[4096];
	esg_npy o;
	float f[6] = { 0, 1, 2, 3, 4, 5 };
	size_t n = npy_doc(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   \n",
			   f, sizeof f);
	ok(esg_npy_parse(buf, n, "a", &o) == 0 && o.kind == 'f' && o.itemsize == 4 &&
	   o.ndim == 2 && o.shape[0] == 2 && o.shape[1] == 3 && !o.fortran_order &&
	   o.data_bytes == 24, "v1 header: <f4 (2, 3)");
	esg_image *im = esg_npy_image(buf, n, "a", NULL);
	ok(im && im->nsp == 2 && im->dim[0] == 2 && im->dim[1] == 3 && im->data[4] == 4 &&
	   strcmp(im->axes, "ij") == 0 && im->affine[0] == 1 && im->affine[15] == 1,
	   "C order (2, 3) -> [2, 3], identity affine");
	esg_image_free(im);

	/* Fortran order: logical a[r][c] stored column-major */
	n = npy_doc(buf, 2, "{\"shape\": (2, 3), \"fortran_order\": True, \"descr\": \"<f4\"}\n", f,
		    sizeof f);
	im = esg_npy_image(buf, n, "a", NULL);
	/* stored 0..5 column-major: a[0][1] = 2, a[1][0] = 1, a[1][2] = 5 */
	ok(im && im->data[1] == 2 && im->data[3] == 1 && im->data[5] == 5,
	   "v2 header, fortran_order, keys in any order, double quotes");
	esg_image_free(im);

	/* big-endian int16 and 1-D shape with trailing comma */
	unsigned char be[4] = { 0xff, 0xfe, 0x01, 0x00 }; /* -2, 256 */
	n = npy_doc(buf, 3, "{'descr': '>i2', 'fortran_order': False, 'shape': (2,), }\n", be, 4);
	im = esg_npy_image(buf, n, "a", NULL);
	ok(im && im->nsp == 1 && im->data[0] == -2 && im->data[1] == 256, "v3, >i2 converted");
	esg_image_free(im);

	/* half, bool, uint64 */
	uint16_t h[3] = { 0x3c00, 0xc000, 0x0001 };
	n = npy_doc(buf, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", h, 6);
	im = esg_npy_image(buf, n, "a", NULL);
	ok(im && im->data[0] == 1 && im->data[1] == -2 && im->data[2] == ldexpf(1, -24), "<f2");
	esg_image_free(im);
	unsigned char b[3] = { 0, 1, 2 };
	n = npy_doc(buf, 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", b, 3);
	im = esg_npy_image(buf, n, "a", NULL);
	ok(im && im->data[0] == 0 && im->data[1] == 1 && im->data[2] == 1, "|b1");
	esg_image_free(im);
	uint64_t u[1] = { 1ull << 40 };
	n = npy_doc(buf, 1, "{'descr': '<u8', 'fortran_order': False, 'shape': (1,), }", u, 8);
	im = esg_npy_image(buf, n, "a", NULL);
	ok(im && im->data[0] == ldexpf(1, 40), "<u8");
	esg_image_free(im);

	/* layout: (N=2, H=1, W=2, C=3) -> [N, C, H, W] */
	float g[12];
	for (int i = 0; i < 12; i++)
		g[i] = (float)i;
	n = npy_doc(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2, 3), }", g,
		    sizeof g);
	esg_load_opts lo = { 0, 0, "NHWC" };
	im = esg_npy_image(buf, n, "a", &lo);
	/* out[n][c][0][w] = in[n][0][w][c] = n*6 + w*3 + c */
	ok(im && im->n == 2 && im->c == 3 && im->nsp == 2 && im->data[1 * 6 + 2 * 2 + 1] == 6 + 3 + 2,
	   "layout NHWC -> [N, C, H, W]");
	esg_image_free(im);
	lo.layout = "NCW";
	ok(!esg_npy_image(buf, n, "a", &lo) && strstr(esg_error(), "has 3 letters"),
	   "layout length checked: %s", esg_error());
}

static void bad(const char *hdr, const char *want)
{
	unsigned char buf[1024];
	float f[6] = { 0 };
	size_t n = npy_doc(buf, 1, hdr, f, sizeof f);
	esg_npy o;
	int rc = esg_npy_parse(buf, n, "x.npy", &o);
	ok(rc == -1 && strstr(esg_error(), want), "malformed %s -> %s", hdr, esg_error());
}

static void test_npy_bad(void)
{
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3) ", "expected ',' or '}'");
	bad("{'descr': '<f4', 'fortran_order': False}", "missing 'shape'");
	bad("{'descr': '<f4', 'shape': (6,)}", "missing 'fortran_order'");
	bad("{'descr': '<c8', 'fortran_order': False, 'shape': (3,)}", "unsupported NPY dtype '<c8'");
	bad("{'descr': '|O', 'fortran_order': False, 'shape': (3,)}", "object arrays");
	bad("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}", "structured");
	bad("{'descr': '<f4', 'fortran_order': maybe, 'shape': (6,)}", "True or False");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (-6,)}", "bad shape");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", "unknown key 'x'");
	bad("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", "twice");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (7,)}", "truncated NPY data");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (5,)}", "trailing data");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999)}",
	    "too large");
	bad("{'descr': '<f4, 'fortran_order': False, 'shape': (6,)}", "unsupported NPY dtype");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (6,}", "bad shape");
	bad("", "expected '{'");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (6,)} junk", "text after");
	bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,6)}", "more than");

	unsigned char buf[256] = "\x93NUMPY\x01\x00\xff\x00{";
	esg_npy o;
	ok(esg_npy_parse(buf, 11, "x", &o) == -1 && strstr(esg_error(), "truncated NPY header"),
	   "header length beyond the buffer: %s", esg_error());
	buf[6] = 4;
	ok(esg_npy_parse(buf, 11, "x", &o) == -1 && strstr(esg_error(), "version 4"),
	   "unknown version: %s", esg_error());
	ok(esg_npy_parse("PK\3\4", 4, "x", &o) == -1 && strstr(esg_error(), "not an NPY"),
	   "not NPY: %s", esg_error());
	/* a 4-D array without layout, and an empty array */
	float f[1] = { 0 };
	size_t n = npy_doc(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1)}", f, 4);
	ok(!esg_npy_image(buf, n, "x", NULL) && strstr(esg_error(), "--layout"), "4 axes: %s",
	   esg_error());
	n = npy_doc(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3)}", f, 0);
	ok(!esg_npy_image(buf, n, "x", NULL) && strstr(esg_error(), "empty"), "empty: %s",
	   esg_error());
}

static void test_reverse(void)
{
	float src[24], dst[24];
	for (int i = 0; i < 24; i++)
		src[i] = (float)i;
	int64_t d[3] = { 2, 3, 4 };
	esg_reverse_axes_f32(src, dst, 3, d);
	int good = 1;
	for (int a = 0; a < 2; a++)
		for (int b = 0; b < 3; b++)
			for (int c = 0; c < 4; c++)
				good &= dst[(c * 3 + b) * 2 + a] == src[(a * 3 + b) * 4 + c];
	ok(good, "3D reversal [2,3,4] -> [4,3,2]");
	/* a tiled 2D transpose larger than one tile */
	enum { R = 37, C = 70 };
	float *s = malloc(R * C * sizeof *s), *t = malloc(R * C * sizeof *t);
	for (int i = 0; i < R * C; i++)
		s[i] = (float)i;
	int64_t d2[2] = { R, C };
	esg_reverse_axes_f32(s, t, 2, d2);
	good = 1;
	for (int r = 0; r < R; r++)
		for (int c = 0; c < C; c++)
			good &= t[c * R + r] == s[r * C + c];
	ok(good, "2D transpose 37x70 across tiles");
	free(s);
	free(t);
}

/* A 3D test image [1, 1, 4, 3, 2] holding its flat index, oblique affine. */
static esg_image *test_image(void)
{
	esg_image *im = calloc(1, sizeof *im);
	im->n = im->c = 1;
	im->nsp = 3;
	im->dim[0] = 4, im->dim[1] = 3, im->dim[2] = 2;
	strcpy(im->axes, "ijk");
	im->data = malloc(24 * sizeof(float));
	for (int i = 0; i < 24; i++)
		im->data[i] = (float)i;
	double A[16] = { 0.8, 0.6, 0, 10, -0.6, 0.8, 0, 20, 0, 0, 2, 30, 0, 0, 0, 1 };
	memcpy(im->affine, A, sizeof A);
	for (int a = 0; a < 3; a++)
		im->spacing[a] = a + 1;
	return im;
}

static void world(const double *A, double i, double j, double k, double *w)
{
	for (int r = 0; r < 3; r++)
		w[r] = A[r * 4] * i + A[r * 4 + 1] * j + A[r * 4 + 2] * k + A[r * 4 + 3];
}

static void test_geometry(void)
{
	int64_t dim[3] = { 7, 5, 4 }, mult[3] = { 4, 4, 4 }, off[3], nd[3];
	ok(esg_fit_multiple(3, dim, mult, 0, 0, off, nd) == 0 && nd[0] == 8 && nd[1] == 8 &&
	   nd[2] == 4 && off[0] == 0 && off[1] == -1 && off[2] == 0,
	   "pad centre 7,5,4 to 4: 8,8,4 with offsets 0,-1,0 (odd voxel after)");
	ok(esg_fit_multiple(3, dim, mult, 1, 0, off, nd) == 0 && nd[0] == 4 && nd[1] == 4 &&
	   off[0] == 1 && off[1] == 0, "crop centre 7 -> 4 removes 1 before, 2 after");
	ok(esg_fit_multiple(3, dim, mult, 1, 1, off, nd) == 0 && off[0] == 0 && off[1] == 0,
	   "crop at the end keeps the origin");
	int64_t small[1] = { 3 }, m8[1] = { 8 };
	ok(esg_fit_multiple(1, small, m8, 1, 0, off, nd) == -1 && strstr(esg_error(), "cannot crop"),
	   "crop smaller than the multiple refused");

	/* affine shift by hand: origin + 2*col_i - 1*col_k */
	double A[16] = { 0.8, 0.6, 0, 10, -0.6, 0.8, 0, 20, 0, 0, 2, 30, 0, 0, 0, 1 };
	int64_t o3[3] = { 2, 0, -1 };
	esg_affine_shift(A, "ijk", o3);
	ok(near(A[3], 11.6, 1e-12, 0) && near(A[7], 18.8, 1e-12, 0) && near(A[11], 28, 1e-12, 0) &&
	   A[0] == 0.8 && A[10] == 2, "affine shift by hand: (11.6, 18.8, 28)");
	/* with reversed axes the tensor offsets are (k, j, i) */
	double B[16] = { 0.8, 0.6, 0, 10, -0.6, 0.8, 0, 20, 0, 0, 2, 30, 0, 0, 0, 1 };
	int64_t o3r[3] = { -1, 0, 2 };
	esg_affine_shift(B, "kji", o3r);
	ok(memcmp(A, B, sizeof A) == 0, "same shift through axes 'kji'");

	/* crop/pad an image: values move, the world point of each kept voxel stays */
	esg_image *im = test_image();
	double A0[16];
	memcpy(A0, im->affine, sizeof A0);
	int64_t co[3] = { 1, -1, 0 }, cn[3] = { 2, 5, 2 };
	ok(esg_image_crop_pad(im, co, cn, -7) == 0 && im->dim[0] == 2 && im->dim[1] == 5,
	   "crop i / pad j");
	/* new (0, 1, 1) = old (1, 0, 1) = 1*6 + 0*2 + 1 = 7; new (0, 0, 0) is padding */
	ok(im->data[(0 * 5 + 1) * 2 + 1] == 7 && im->data[0] == -7 && im->data[(1 * 5 + 4) * 2] == -7,
	   "crop/pad values (%g %g)", im->data[3], im->data[0]);
	double w0[3], w1[3];
	world(A0, 1, 0, 1, w0);
	world(im->affine, 0, 1, 1, w1);
	ok(near(w0[0], w1[0], 1e-12, 0) && near(w0[1], w1[1], 1e-12, 0) && near(w0[2], w1[2], 1e-12, 0),
	   "kept voxel keeps its world coordinates");
	esg_image_free(im);

	/* slice k = 1: [4, 3] with axes "ij", origin moved along k */
	im = test_image();
	ok(esg_image_slice(im, 'k', 1) == 0 && im->nsp == 2 && strcmp(im->axes, "ij") == 0 &&
	   im->dim[0] == 4 && im->dim[1] == 3 && im->data[5] == 11 && im->spacing[1] == 2,
	   "slice k=1: values, axes, spacing");
	ok(near(im->affine[11], 32, 1e-12, 0) && near(im->affine[3], 10, 1e-12, 0),
	   "slice k=1 moves the origin by one k column");
	ok(esg_image_slice(im, 'k', 0) == -1 && strstr(esg_error(), "no voxel axis 'k'"),
	   "no second k slice: %s", esg_error());
	ok(esg_image_slice(im, 'j', 3) == -1 && strstr(esg_error(), "outside"), "index checked");
	esg_image_free(im);

	/* reversing an image: data and metadata follow */
	im = test_image();
	ok(esg_image_reverse(im) == 0 && strcmp(im->axes, "kji") == 0 && im->dim[0] == 2 &&
	   im->spacing[0] == 3 && im->data[1] == 6, "reverse image to kji");
	esg_image_free(im);

	/* channels: stack two, mismatch refused */
	esg_image *a = test_image(), *b = test_image(), *c = test_image();
	ok(esg_image_cat_channels(a, b) == 0 && a->c == 2 && a->data[24 + 5] == 5, "stack channels");
	c->dim[2] = 1;
	ok(esg_image_cat_channels(a, c) == -1 && strstr(esg_error(), "shapes differ"), "%s",
	   esg_error());
	esg_image_free(a);
}

static void test_norm(void)
{
	float x[5] = { 1, 2, 3, 4, 10 };
	ok(esg_normalise(x, 5, ESG_NORM_MINMAX, 0, 0, 0) == 0 && x[0] == 0 && x[4] == 1 &&
	   near(x[1], 1.0 / 9, 1e-7, 0), "minmax by hand");
	float z[4] = { 2, 4, 4, 6 }; /* mean 4, population sd sqrt(2) */
	ok(esg_normalise(z, 4, ESG_NORM_ZSCORE, 0, 0, 0) == 0 && near(z[0], -sqrt(2), 1e-6, 0) &&
	   z[1] == 0 && near(z[3], sqrt(2), 1e-6, 0), "zscore by hand");
	float k[3] = { 5, 5, 5 };
	ok(esg_normalise(k, 3, ESG_NORM_ZSCORE, 0, 0, 0) == 0 && k[0] == 0, "constant -> 0");
	/* percentile: values 0..10; p10 = 1, p90 = 9 (linear, as numpy) */
	float p[11];
	for (int i = 0; i < 11; i++)
		p[10 - i] = (float)i;
	ok(esg_normalise(p, 11, ESG_NORM_PERCENTILE, 10, 90, 0) == 0 && p[10] == 0 && p[9] == 0 &&
	   near(p[5], 0.5, 1e-7, 0) && p[0] == 1 && near(p[8], 1.0 / 8, 1e-7, 0),
	   "percentile clip 10..90 by hand");
	float q[4] = { 1, 2, 3, 4 };
	double pv[3], pp[3] = { 0, 50, 25 };
	ok(esg_percentile(q, 4, pp, 3, pv) == 0 && pv[0] == 1 && pv[1] == 2.5 && pv[2] == 1.75,
	   "percentiles 0/50/25 of 1..4 = 1, 2.5, 1.75 (numpy linear)");
	float nz[5] = { 0, 2, 0, 4, 6 };
	ok(esg_normalise(nz, 5, ESG_NORM_MINMAX, 0, 0, 1) == 0 && nz[0] == 0 && nz[1] == 0 &&
	   nz[3] == 0.5 && nz[4] == 1, "nonzero minmax: zeros stay, stats from 2,4,6");
	float bad[2] = { 1, NAN };
	ok(esg_normalise(bad, 2, ESG_NORM_MINMAX, 0, 0, 0) == -1 && strstr(esg_error(), "non-finite"),
	   "NaN refused");
	/* quickselect on many ties and a larger shuffled array */
	enum { N = 1001 };
	float *r = malloc(N * sizeof *r);
	for (int i = 0; i < N; i++)
		r[i] = (float)((i * 7919) % N) / 10; /* a permutation of 0..100 step .1 */
	double v[2], ps[2] = { 0.5, 99.5 };
	ok(esg_percentile(r, N, ps, 2, v) == 0 && near(v[0], 0.5, 1e-5, 0) && near(v[1], 99.5, 1e-5, 0),
	   "percentiles of a permuted 0..100: %g %g", v[0], v[1]);
	for (int i = 0; i < N; i++)
		r[i] = (float)(i % 3);
	ok(esg_percentile(r, N, ps + 1, 1, v) == 0 && v[0] == 2, "ties");
	free(r);
}

static void test_channels(void)
{
	esg_image im = { .n = 1, .c = 4, .nsp = 1, .dim = { 2 }, .axes = "i" };
	float d[8] = { 100, 0, 50, 0, 10, 200, 255, 255 }; /* R G B A planes */
	im.data = malloc(sizeof d);
	memcpy(im.data, d, sizeof d);
	ok(esg_image_channels(&im, ESG_CHAN_GRAY) == 0 && im.c == 1 &&
	   near(im.data[0], 0.299 * 100 + 0.587 * 50 + 0.114 * 10, 1e-4, 0) &&
	   near(im.data[1], 0.114 * 200, 1e-4, 0), "RGBA -> gray (601 luma)");
	ok(esg_image_channels(&im, ESG_CHAN_RGB) == 0 && im.c == 3 && im.data[4] == im.data[0],
	   "gray -> rgb replicates");
	free(im.data);
}

int main(void)
{
	test_npy_good();
	test_npy_bad();
	test_reverse();
	test_geometry();
	test_norm();
	test_channels();
	return tap_done();
}
