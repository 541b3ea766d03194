/* test_record.c - records, metadata, dtype conversion, errors. */
#include "stream/stream.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_dtypes(void)
{
	esg_dtype t;
	ok(esg_dtype_parse("BF16", &t) == 0 && t == ESG_BF16, "parse BF16");
	ok(esg_dtype_parse("C64", &t) == -1 && strstr(esg_error(), "unknown dtype 'C64'"),
	   "unknown dtype named in the error: %s", esg_error());
	ok(esg_dtype_size(ESG_I64) == 8 && esg_dtype_size(ESG_BOOL) == 1, "dtype sizes");

	esg_record *r = esg_record_new();
	int64_t shape[1] = { 4 };
	esg_tensor *h = esg_record_add(r, "half", ESG_F16, 1, shape);
	uint16_t hv[4] = { 0x3c00, 0xc000, 0x0001, 0x7bff }; /* 1, -2, 2^-24, 65504 */
	memcpy(h->data, hv, sizeof hv);
	float *f = esg_tensor_to_f32(h);
	ok(f[0] == 1.0f && f[1] == -2.0f && f[2] == ldexpf(1, -24) && f[3] == 65504.0f,
	   "F16 -> F32 exact incl. subnormal and max (%g %g %g %g)", f[0], f[1], f[2], f[3]);
	free(f);
	esg_tensor *b = esg_record_add(r, "bf", ESG_BF16, 1, shape);
	uint16_t bv[4] = { 0x3f80, 0xc040, 0x0000, 0x4049 }; /* 1, -3, 0, 3.140625 */
	memcpy(b->data, bv, sizeof bv);
	ok(esg_tensor_get(b, 0) == 1.0 && esg_tensor_get(b, 1) == -3.0 &&
	   esg_tensor_get(b, 3) == 3.140625, "BF16 -> double exact");
	esg_tensor *i = esg_record_add(r, "i16", ESG_I16, 1, shape);
	int16_t iv[4] = { -32768, -1, 0, 32767 };
	memcpy(i->data, iv, sizeof iv);
	ok(esg_tensor_get(i, 0) == -32768 && esg_tensor_get(i, 3) == 32767, "I16 range");
	esg_record_free(r);
}

static void test_record(void)
{
	esg_record *r = esg_record_new();
	int64_t shape[5] = { 1, 1, 2, 3, 4 };
	float data[24];
	for (int i = 0; i < 24; i++)
		data[i] = (float)i / 2;
	esg_tensor *t = esg_record_add_f32(r, "image", 5, shape, data);
	ok(t && esg_tensor_numel(t) == 24 && esg_tensor_nbytes(t) == 96, "numel and bytes");
	ok(esg_record_add(r, "image", ESG_F32, 1, shape) == NULL &&
	   strstr(esg_error(), "duplicate tensor name 'image'"), "duplicate name refused");
	int64_t neg[2] = { 2, -1 };
	ok(esg_record_add(r, "x", ESG_F32, 2, neg) == NULL, "negative dimension refused");
	ok(esg_record_add(r, "x", ESG_F32, ESG_MAX_DIMS + 1, shape) == NULL, "rank > max refused");
	esg_record_add(r, "mask", ESG_U8, 5, shape);
	ok(esg_record_get(r, "attribution") == NULL &&
	   strstr(esg_error(), "has: image, mask"), "missing tensor lists the present ones: %s", esg_error());
	char s[64];
	esg_shape_str(5, shape, s, sizeof s);
	ok(strcmp(s, "[1, 1, 2, 3, 4]") == 0, "shape string %s", s);

	ok(esg_meta_set(r, "esg.source", "a.nii") == 0 && esg_meta_set(r, "esg.source", "b.nii") == 0 &&
	   strcmp(esg_meta_get(r, "esg.source"), "b.nii") == 0 && r->n_meta == 1, "meta set replaces");
	double aff[16] = { 0.7, 0.1, 0, -90.25, -0.1, 0.7, 0, 1e-17, 0, 0, 1.5, 3, 0, 0, 0, 1 }, back[16];
	esg_meta_set_affine(r, aff);
	ok(esg_meta_get_affine(r, back) == 0 && memcmp(aff, back, sizeof aff) == 0,
	   "affine round-trips bit-exactly through JSON");
	esg_meta_set(r, "esg.affine", "[1,2,3]");
	ok(esg_meta_get_affine(r, back) == -1 && strstr(esg_error(), "3 numbers"), "short affine refused");
	esg_meta_set(r, "esg.affine", "{bad");
	ok(esg_meta_get_affine(r, back) == -1, "malformed affine refused");
	esg_meta_remove(r, "esg.affine");
	ok(esg_meta_get_affine(r, back) == 1, "absent affine reported as absent");

	char *argv[] = { "esg-load", "a \"b\".nii" };
	esg_meta_stamp(r, "esg-load", 2, argv);
	ok(strcmp(esg_meta_get(r, "esg.args"), "[\"esg-load\",\"a \\\"b\\\".nii\"]") == 0,
	   "args stored as a JSON array with escaping: %s", esg_meta_get(r, "esg.args"));
	ok(strcmp(esg_meta_get(r, "esg.format"), ESG_FORMAT_VERSION) == 0, "format version stamped");

	esg_record *c = esg_record_copy(r);
	ok(c && c->n_tensors == 2 && memcmp(esg_record_find(c, "image")->data, data, sizeof data) == 0 &&
	   strcmp(esg_meta_get(c, "esg.source"), "b.nii") == 0, "deep copy");
	ok(esg_record_remove(c, "image") == 0 && c->n_tensors == 1 && esg_record_find(c, "mask"),
	   "remove keeps the others");
	esg_record_free(c);
	esg_record_free(r);
	esg_record_free(NULL);
}

static void test_errors(void)
{
	esg_set_error("bad header");
	esg_prefix_error("record %d", 3);
	ok(strcmp(esg_error(), "record 3: bad header") == 0, "prefixed error: %s", esg_error());
}

int main(void)
{
	test_dtypes();
	test_record();
	test_errors();
	return tap_done();
}
