/* test_render.c - volumes, views, colour maps, percentiles, overlays and the
 * PNG / NIfTI writers, on tiny arrays worked out by hand. */
#include "stream/stream.h"
#include "render/render.h"
#include "tap.h"

#include <math.h>
#include <nifti2_io.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rgb_is(const unsigned char *c, int r, int g, int b)
{
	return abs(c[0] - r) <= 1 && abs(c[1] - g) <= 1 && abs(c[2] - b) <= 1;
}

static void test_cmaps(void)
{
	unsigned char c[3];
	const esg_cmap *gray = esg_cmap_find("gray"), *hot = esg_cmap_find("hot"),
		       *bwr = esg_cmap_find("bwr"), *vir = esg_cmap_find("viridis");
	ok(gray && hot && bwr && vir, "colour maps found");
	esg_cmap_rgb(gray, 0, c);
	ok(rgb_is(c, 0, 0, 0), "gray(0) black");
	esg_cmap_rgb(gray, 1, c);
	ok(rgb_is(c, 255, 255, 255), "gray(1) white");
	esg_cmap_rgb(gray, 0.5, c);
	ok(rgb_is(c, 128, 128, 128), "gray(0.5) mid gray (%d)", c[0]);
	esg_cmap_rgb(hot, 0, c);
	ok(rgb_is(c, 11, 0, 0), "hot(0) = matplotlib's (0.0416, 0, 0): %d %d %d", c[0], c[1], c[2]);
	esg_cmap_rgb(hot, 0.365079, c);
	ok(rgb_is(c, 255, 0, 0), "hot(0.365) red");
	esg_cmap_rgb(hot, 1, c);
	ok(rgb_is(c, 255, 255, 255), "hot(1) white");
	esg_cmap_rgb(bwr, 0, c);
	ok(rgb_is(c, 0, 0, 255), "bwr(0) blue");
	esg_cmap_rgb(bwr, 0.5, c);
	ok(rgb_is(c, 255, 255, 255), "bwr(0.5) white");
	esg_cmap_rgb(bwr, 1, c);
	ok(rgb_is(c, 255, 0, 0), "bwr(1) red");
	esg_cmap_rgb(vir, 0, c);
	ok(rgb_is(c, 68, 1, 84), "viridis(0) #440154");
	esg_cmap_rgb(vir, 1, c);
	ok(rgb_is(c, 253, 231, 37), "viridis(1) #fde725");
	esg_cmap_rgb(bwr, -3, c);
	ok(rgb_is(c, 0, 0, 255), "below 0 clamps");
	esg_cmap_rgb(bwr, NAN, c);
	ok(rgb_is(c, 0, 0, 255), "NaN takes the low end");
	ok(!esg_cmap_find("jet") && strstr(esg_error(), "'jet'") && strstr(esg_error(), "viridis"),
	   "unknown colour map named with the known ones: %s", esg_error());
}

/* A [1, 1, 4, 5, 6] tensor with value i + 10 j + 100 k at (i, j, k). */
static esg_record *ijk_record(void)
{
	esg_record *r = esg_record_new();
	int64_t shape[5] = { 1, 1, 4, 5, 6 };
	float v[120];
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 5; j++)
			for (int k = 0; k < 6; k++)
				v[(i * 5 + j) * 6 + k] = (float)(i + 10 * j + 100 * k);
	esg_record_add_f32(r, "image", 5, shape, v);
	return r;
}

static float at(const esg_vol *v, int i, int j, int k)
{
	return v->data[i + v->dim[0] * (j + v->dim[1] * k)];
}

static void test_volumes(void)
{
	esg_record *r = ijk_record();
	esg_vol v;
	ok(esg_vol_from_tensor(esg_record_find(r, "image"), "ijk", &v) == 0, "ijk volume");
	ok(v.dim[0] == 4 && v.dim[1] == 5 && v.dim[2] == 6 && v.n == 1 && v.c == 1, "ijk dims 4x5x6");
	ok(at(&v, 3, 2, 1) == 123 && at(&v, 0, 4, 5) == 540, "ijk voxel (3,2,1) = 123, (0,4,5) = 540");
	esg_vol_free(&v);

	/* the same numbers as a "kji" tensor [1, 1, 6, 5, 4]: memory is NIfTI order */
	esg_record *q = esg_record_new();
	int64_t shape[5] = { 1, 1, 6, 5, 4 };
	float d[120];
	for (int n = 0; n < 120; n++)
		d[n] = (float)n;
	esg_record_add_f32(q, "image", 5, shape, d);
	ok(esg_vol_from_tensor(esg_record_find(q, "image"), "kji", &v) == 0, "kji volume");
	ok(v.dim[0] == 4 && v.dim[1] == 5 && v.dim[2] == 6 && memcmp(v.data, d, sizeof d) == 0,
	   "kji: dims reversed, data already in NIfTI order");
	esg_vol_free(&v);
	ok(esg_vol_from_tensor(esg_record_find(q, "image"), "ijj", &v) == -1 &&
	   strstr(esg_error(), "esg.axes 'ijj'"), "bad esg.axes refused: %s", esg_error());
	esg_record_free(q);

	/* a 2D coronal slice "ik" [1, 1, 2, 3]: j has size 1 */
	esg_record *s = esg_record_new();
	int64_t s2[4] = { 1, 1, 2, 3 };
	esg_record_add_f32(s, "m", 4, s2, (float[]){ 0, 1, 2, 10, 11, 12 });
	ok(esg_vol_from_tensor(esg_record_find(s, "m"), "ik", &v) == 0 && v.dim[0] == 2 &&
	   v.dim[1] == 1 && v.dim[2] == 3 && at(&v, 1, 0, 2) == 12 && v.axis_h == 0 && v.axis_w == 2,
	   "2D 'ik' slice: dims 2x1x3, (1,0,2) = 12");
	esg_vol_free(&v);
	int64_t s1[1] = { 4 };
	esg_record_add_f32(s, "line", 1, s1, (float[]){ 1, 2, 3, 4 });
	ok(esg_vol_from_tensor(esg_record_find(s, "line"), NULL, &v) == -1 &&
	   strstr(esg_error(), "tensor 'line' has shape [4]"), "1D refused: %s", esg_error());
	esg_record_free(s);

	/* channels: [1, 2, 1, 1, 2] -> sum, mean, one channel */
	esg_record *c = esg_record_new();
	int64_t cs[5] = { 1, 2, 1, 1, 2 };
	esg_record_add_f32(c, "a", 5, cs, (float[]){ 1, 2, 10, 20 });
	esg_vol full, f;
	esg_vol_from_tensor(esg_record_find(c, "a"), NULL, &full);
	esg_vol_frame(&full, 0, ESG_CH_SUM, &f);
	ok(f.data[0] == 11 && f.data[1] == 22, "channel sum");
	esg_vol_free(&f);
	esg_vol_frame(&full, 0, ESG_CH_MEAN, &f);
	ok(f.data[0] == 5.5f && f.data[1] == 11, "channel mean");
	esg_vol_free(&f);
	esg_vol_frame(&full, 0, 1, &f);
	ok(f.data[0] == 10 && f.data[1] == 20, "channel 1");
	esg_vol_free(&f);
	ok(esg_vol_frame(&full, 0, 2, &f) == -1 && strstr(esg_error(), "channel 2"), "channel out of range");
	ok(esg_vol_frame(&full, 1, 0, &f) == -1 && strstr(esg_error(), "batch item 1"), "batch out of range");
	esg_vol_free(&full);
	esg_record_free(c);
	esg_record_free(r);
}

static void test_orientation(void)
{
	esg_orient o;
	esg_orient_from_affine(NULL, &o);
	ok(o.axis[0] == 0 && o.axis[1] == 1 && o.axis[2] == 2 && !o.flip[0] && !o.flip[1] && !o.flip[2],
	   "no affine: RAS");
	double lps[16] = { -2, 0, 0, 0, 0, -2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 1 };
	esg_orient_from_affine(lps, &o);
	ok(o.axis[0] == 0 && o.flip[0] && o.flip[1] && !o.flip[2], "LPS affine: i, j flipped");
	/* i -> S, j -> R, k -> -A */
	double perm[16] = { 0, 1, 0, 0, 0, 0, -1, 0, 1, 0, 0, 0, 0, 0, 0, 1 };
	esg_orient_from_affine(perm, &o);
	ok(o.axis[0] == 1 && o.axis[1] == 2 && o.axis[2] == 0 && !o.flip[0] && o.flip[1] && !o.flip[2],
	   "permuted axes: R=j, A=-k, S=i");
	double c = cos(0.35), s = sin(0.35); /* 20 degrees about S: still i ~ R */
	double obl[16] = { c, -s, 0, 0, s, c, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 };
	esg_orient_from_affine(obl, &o);
	ok(o.axis[0] == 0 && o.axis[1] == 1 && !o.flip[0] && !o.flip[1], "oblique: nearest axes");
}

static void test_views(void)
{
	esg_record *r = ijk_record();
	esg_vol v;
	esg_vol_from_tensor(esg_record_find(r, "image"), "ijk", &v);
	esg_orient o;
	esg_orient_from_affine(NULL, &o);
	esg_geom g;
	esg_plane p;

	esg_geom_make(&v, &o, ESG_AXIAL, 0, &g);
	ok(g.cut == 2 && g.w == 4 && g.h == 5 && g.depth == 6, "axial: cuts k, 4 wide, 5 high");
	esg_plane_slice(&v, &g, 3, &p);
	/* row 0 = most anterior j = 4, column 0 = leftmost i = 0 */
	ok(p.v[0] == 340 && p.v[4 * 4 + 3] == 303 && p.v[2 * 4 + 1] == 321,
	   "axial slice 3: (r0,c0) = v(0,4,3) = 340, (r4,c3) = v(3,0,3) = 303 (got %g %g)", p.v[0],
	   p.v[19]);
	esg_plane_free(&p);

	esg_geom_make(&v, &o, ESG_AXIAL, 1, &g);
	esg_plane_slice(&v, &g, 3, &p);
	ok(p.v[0] == 343 && p.v[3] == 340, "radiological axial: columns mirrored");
	esg_plane_free(&p);

	esg_geom_make(&v, &o, ESG_CORONAL, 0, &g);
	esg_plane_slice(&v, &g, 2, &p);
	ok(g.cut == 1 && g.w == 4 && g.h == 6 && p.v[0] == 520 && p.v[5 * 4 + 3] == 23,
	   "coronal slice 2: (r0,c0) = v(0,2,5) = 520, bottom right v(3,2,0) = 23");
	esg_plane_free(&p);

	esg_geom_make(&v, &o, ESG_SAGITTAL, 0, &g);
	esg_plane_slice(&v, &g, 1, &p);
	ok(g.cut == 0 && g.w == 5 && g.h == 6 && p.v[0] == 541 && p.v[5 * 5 + 4] == 1,
	   "sagittal slice 1: nose left, top = superior: (r0,c0) = v(1,4,5) = 541");
	esg_plane_free(&p);
	ok(esg_plane_slice(&v, &g, 4, &p) == -1 && strstr(esg_error(), "slice 4 is out of range 0..3"),
	   "slice out of range: %s", esg_error());

	/* MIP: max over k of i + 10 j + 100 k = i + 10 j + 500 */
	esg_geom_make(&v, &o, ESG_AXIAL, 0, &g);
	esg_plane_project(&v, &g, ESG_PROJ_MAX, &p);
	ok(p.v[0] == 540 && p.v[19] == 503, "axial MIP = slice 5");
	esg_plane_free(&p);
	esg_plane_project(&v, &g, ESG_PROJ_MIN, &p);
	ok(p.v[0] == 40 && p.v[19] == 3, "axial minimum projection = slice 0");
	esg_plane_free(&p);
	esg_vol_free(&v);
	esg_record_free(r);

	/* signed projections over [1, -5, 3] and an all-NaN ray */
	esg_record *s = esg_record_new();
	int64_t sh[3] = { 2, 1, 3 };
	esg_record_add_f32(s, "m", 3, sh, (float[]){ 1, -5, 3, NAN, NAN, NAN });
	esg_vol_from_tensor(esg_record_find(s, "m"), NULL, &v);
	esg_geom_make(&v, &o, ESG_AXIAL, 0, &g);
	esg_plane_project(&v, &g, ESG_PROJ_MAX, &p);
	ok(p.w == 2 && p.h == 1 && p.v[0] == 3 && isnan(p.v[1]), "MAX 3, all-NaN ray NaN");
	esg_plane_free(&p);
	esg_plane_project(&v, &g, ESG_PROJ_MIN, &p);
	ok(p.v[0] == -5, "MIN -5");
	esg_plane_free(&p);
	esg_plane_project(&v, &g, ESG_PROJ_ABSMAX, &p);
	ok(p.v[0] == -5, "ABSMAX keeps the sign: -5");
	esg_plane_free(&p);
	esg_vol_free(&v);
	esg_record_free(s);

	/* extent: a 1x1x6 column with values only in slices 2 and 4 */
	esg_record *e = esg_record_new();
	int64_t es[3] = { 1, 1, 6 };
	esg_record_add_f32(e, "m", 3, es, (float[]){ 0, NAN, 7, 0, -1, 0 });
	esg_vol_from_tensor(esg_record_find(e, "m"), NULL, &v);
	esg_geom_make(&v, &o, ESG_AXIAL, 0, &g);
	int64_t first, last;
	esg_vol_extent(&v, &g, &first, &last);
	ok(first == 2 && last == 4, "extent of non-zero slices: 2..4 (NaN and 0 empty)");
	memset(v.data, 0, 6 * sizeof(float));
	esg_vol_extent(&v, &g, &first, &last);
	ok(first == 0 && last == 5, "all-zero volume: the whole depth");
	esg_vol_free(&v);
	esg_record_free(e);

	int64_t idx[4];
	esg_mosaic_indices(6, 3, idx);
	ok(idx[0] == 1 && idx[1] == 3 && idx[2] == 5, "mosaic of 3 over 6: 1 3 5");
	esg_mosaic_indices(10, 4, idx);
	ok(idx[0] == 1 && idx[1] == 3 && idx[2] == 6 && idx[3] == 8, "mosaic of 4 over 10: 1 3 6 8");

	esg_plane t[3] = { { 2, 1, (float[]){ 1, 2 } }, { 2, 1, (float[]){ 3, 4 } },
			   { 2, 1, (float[]){ 5, 6 } } };
	ok(esg_plane_tile(t, 3, 2, &p) == 0 && p.w == 4 && p.h == 2 && p.v[2] == 3 && p.v[4] == 5 &&
	   isnan(p.v[6]) && isnan(p.v[7]), "tiles 2 across; empty cell NaN");
	esg_plane_free(&p);
	esg_plane q;
	ok(esg_plane_resize(&t[0], 4, 2, &q) == 0 && q.v[0] == 1 && q.v[1] == 1 && q.v[2] == 2 &&
	   q.v[7] == 2, "nearest resize 2x1 -> 4x2");
	esg_plane_free(&q);
}

static void test_percentile_sign(void)
{
	float v[] = { 5, 1, NAN, 4, 2, 3 };
	double x;
	ok(esg_render_percentile(v, 6, 50, &x) == 0 && x == 3, "median of 1..5 (NaN ignored) = 3");
	ok(esg_render_percentile(v, 6, 90, &x) == 0 && near(x, 4.6, 1e-6, 0), "p90 = 4.6 (numpy linear)");
	ok(esg_render_percentile(v, 6, 0, &x) == 0 && x == 1, "p0 = min");
	ok(esg_render_percentile(v, 6, 100, &x) == 0 && x == 5, "p100 = max");
	float nn[2] = { NAN, NAN };
	ok(esg_render_percentile(nn, 2, 50, &x) == -1, "all NaN: none");
	float big[1000];
	for (int i = 0; i < 1000; i++)
		big[i] = (float)((i * 337) % 1000); /* 0..999 shuffled */
	ok(esg_render_percentile(big, 1000, 99.5, &x) == 0 && near(x, 994.005, 1e-3, 0),
	   "p99.5 of 0..999 = 994.005 (got %g)", x);

	float m[] = { -4, -2, 0, 1, 3, NAN };
	ok(esg_map_scale(m, 6, ESG_SIGN_POSITIVE, 100) == 3, "positive scale: max of positives");
	ok(esg_map_scale(m, 6, ESG_SIGN_NEGATIVE, 100) == 4, "negative scale: max of |negatives|");
	ok(esg_map_scale(m, 6, ESG_SIGN_ABS, 100) == 4 && esg_map_scale(m, 6, ESG_SIGN_ALL, 100) == 4,
	   "absolute / all scale: max |v|");
	ok(esg_map_scale(m, 6, ESG_SIGN_POSITIVE, 50) == 2 && esg_map_scale(m, 6, ESG_SIGN_NEGATIVE, 50) == 3 &&
	   esg_map_scale(m, 6, ESG_SIGN_ABS, 50) == 2.5, "percentile of the selected magnitudes only");
	float z[] = { 0, 0 };
	ok(esg_map_scale(z, 2, ESG_SIGN_ALL, 99.5) == 1, "all-zero map: scale 1");

	double mag;
	ok(esg_map_norm(-2, ESG_SIGN_POSITIVE, 3, &mag) == 0 && mag == 0, "positive hides negatives");
	ok(near(esg_map_norm(1.5, ESG_SIGN_POSITIVE, 3, &mag), 0.5, 1e-12, 0), "positive 1.5/3 = 0.5");
	ok(near(esg_map_norm(-1.5, ESG_SIGN_NEGATIVE, 3, &mag), 0.5, 1e-12, 0) && near(mag, 0.5, 1e-12, 0),
	   "negative: |-1.5|/3");
	ok(esg_map_norm(1.5, ESG_SIGN_NEGATIVE, 3, NULL) == 0, "negative hides positives");
	ok(near(esg_map_norm(-1.5, ESG_SIGN_ABS, 3, NULL), 0.5, 1e-12, 0), "absolute_value");
	ok(esg_map_norm(6, ESG_SIGN_ABS, 3, NULL) == 1, "clipped at the scale");
	ok(esg_map_norm(-3, ESG_SIGN_ALL, 3, NULL) == 0 && esg_map_norm(0, ESG_SIGN_ALL, 3, NULL) == 0.5 &&
	   esg_map_norm(9, ESG_SIGN_ALL, 3, NULL) == 1, "all: -max..max -> 0..1");
	esg_sign sg;
	ok(esg_sign_parse("absolute_value", &sg) == 0 && sg == ESG_SIGN_ABS && esg_sign_parse("abs", &sg) == -1,
	   "sign names as Captum's");
}

static void test_render(void)
{
	/* overlay: gray 100 background, map [3, 0.2, -3, NaN], scale 3, hot, alpha .5, threshold .1 */
	esg_plane bg = { 4, 1, (float[]){ 100, 100, 100, 100 } };
	esg_plane map = { 4, 1, (float[]){ 3, 0.2f, -3, NAN } };
	unsigned char rgb[12];
	esg_render_gray(&bg, 0, 200, rgb);
	ok(rgb_is(rgb, 128, 128, 128), "gray window 0..200: 100 -> 128");
	esg_render_map(&map, ESG_SIGN_POSITIVE, 3, esg_cmap_find("hot"), 0.1, 0.5, 1, rgb);
	ok(rgb_is(rgb, 192, 192, 192), "full positive: white at half over 128 -> 192 (%d)", rgb[0]);
	ok(rgb_is(rgb + 3, 128, 128, 128), "0.2/3 below threshold 0.1: background untouched");
	ok(rgb_is(rgb + 6, 128, 128, 128) && rgb_is(rgb + 9, 128, 128, 128),
	   "negative under 'positive' and NaN: untouched");
	esg_render_map(&map, ESG_SIGN_ALL, 3, esg_cmap_find("bwr"), 0, 1, 0, rgb);
	ok(rgb_is(rgb, 255, 0, 0) && rgb_is(rgb + 6, 0, 0, 255) && rgb_is(rgb + 9, 0, 0, 0),
	   "standalone 'all': +max red, -max blue, NaN black");

	esg_canvas in = { 2, 20, calloc(2 * 20, 3) }, out;
	ok(esg_canvas_add_colorbar(&in, esg_cmap_find("gray"), 0, 1, "0", "10", &out) == 0 &&
	   out.w == 2 + 4 + 12 + 3 + 12 && out.h == 20, "colour bar widens the canvas (%lld)", (long long)out.w);
	ok(rgb_is(out.rgb + 3 * (0 * out.w + 6), 255, 255, 255) &&
	   rgb_is(out.rgb + 3 * (19 * out.w + 6), 0, 0, 0), "bar: top = map(1), bottom = map(0)");
	/* '1' of "10": its stem, column 2 of the glyph, row 3 */
	ok(rgb_is(out.rgb + 3 * (3 * out.w + 21 + 2), 255, 255, 255), "label drawn");
	esg_canvas_free(&out);
	esg_canvas_free(&in);
}

static void test_writers(void)
{
	char png[] = "/tmp/test_render_XXXXXX.png";
	int fd = mkstemps(png, 4);
	FILE *f = fdopen(fd, "wb");
	unsigned char px[2 * 3 * 3];
	memset(px, 7, sizeof px);
	esg_canvas im = { 3, 2, px };
	ok(esg_png_write(f, &im) == 0 && fclose(f) == 0, "PNG written");
	f = fopen(png, "rb");
	unsigned char head[24];
	ok(f && fread(head, 1, 24, f) == 24 && memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0 &&
	   head[19] == 3 && head[23] == 2, "PNG signature, width 3, height 2");
	if (f)
		fclose(f);
	unlink(png);

	char nii[] = "/tmp/test_render_XXXXXX.nii.gz";
	fd = mkstemps(nii, 7);
	close(fd);
	esg_vol v = { { 2, 3, 1 }, 1, 2, 3, 0, 1, (float[]){ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 } };
	double c = cos(0.3), s = sin(0.3);
	double aff[16] = { 2 * c, -3 * s, 0, 10, 2 * s, 3 * c, 0, -20, 0, 0, -4, 30, 0, 0, 0, 1 };
	ok(esg_nifti_write(nii, NULL, &v, aff, 1, 2, "test") == 0, "NIfTI written");
	nifti_image *n = nifti_image_read(nii, 1);
	ok(n && n->ndim == 4 && n->nx == 2 && n->ny == 3 && n->nz == 1 && n->nt == 2 &&
	   n->datatype == NIFTI_TYPE_FLOAT32, "4D float32 2x3x1x2");
	ok(n && ((float *)n->data)[7] == 7 && n->qform_code == 1 && n->sform_code == 2,
	   "data and codes qform 1, sform 2");
	int same = n != NULL;
	for (int r = 0; n && r < 3; r++)
		for (int k = 0; k < 4; k++)
			same &= near(n->sto_xyz.m[r][k], aff[4 * r + k], 1e-5, 0) &&
				near(n->qto_xyz.m[r][k], aff[4 * r + k], 1e-4, 0);
	ok(same, "oblique flipped affine: sform and qform both reproduce it");
	nifti_image_free(n);
	double shear[16] = { 1, 0.5, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 };
	ok(esg_nifti_write(nii, NULL, &v, shear, 1, 2, NULL) == 0 && (n = nifti_image_read(nii, 0)) &&
	   n->qform_code == 0 && n->sform_code == 2, "sheared affine: sform only, qform code 0");
	nifti_image_free(n);
	unlink(nii);
	ok(esg_nifti_write("/nonexistent/x.nii", "x.nii", &v, NULL, 0, 0, NULL) == -1 &&
	   strstr(esg_error(), "cannot create 'x.nii'"), "unwritable: %s", esg_error());
}

int main(void)
{
	test_cmaps();
	test_volumes();
	test_orientation();
	test_views();
	test_percentile_sign();
	test_render();
	test_writers();
	return tap_done();
}
