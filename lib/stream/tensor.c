/* tensor.c - dtypes, element access and conversion to float32. */
#include "stream/stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *name;
	size_t size;
} dtypes[ESG_DTYPE_COUNT] = {
	[ESG_F32] = { "F32", 4 }, [ESG_F64] = { "F64", 8 },
	[ESG_F16] = { "F16", 2 }, [ESG_BF16] = { "BF16", 2 },
	[ESG_I64] = { "I64", 8 }, [ESG_I32] = { "I32", 4 },
	[ESG_I16] = { "I16", 2 }, [ESG_I8] = { "I8", 1 },
	[ESG_U8] = { "U8", 1 },   [ESG_BOOL] = { "BOOL", 1 },
};

const char *esg_dtype_name(esg_dtype t)
{
	return (unsigned)t < ESG_DTYPE_COUNT ? dtypes[t].name : "?";
}

size_t esg_dtype_size(esg_dtype t)
{
	return (unsigned)t < ESG_DTYPE_COUNT ? dtypes[t].size : 0;
}

int esg_dtype_parse(const char *name, esg_dtype *out)
{
	for (int i = 0; i < ESG_DTYPE_COUNT; i++)
		if (strcmp(name, dtypes[i].name) == 0) {
			*out = (esg_dtype)i;
			return 0;
		}
	return esg_set_error("unknown dtype '%s' (known: F32 F64 F16 BF16 I64 I32 I16 I8 U8 BOOL)", name);
}

int64_t esg_tensor_numel(const esg_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

size_t esg_tensor_nbytes(const esg_tensor *t)
{
	return (size_t)esg_tensor_numel(t) * esg_dtype_size(t->dtype);
}

static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	float f;
	if (exp == 0)           /* zero or subnormal */
		f = ldexpf((float)man, -24);
	else if (exp == 31)     /* inf or nan */
		f = man ? NAN : INFINITY;
	else
		f = ldexpf((float)(man | 0x400), (int)exp - 25);
	return sign ? -f : f;
}

static float bf16_to_float(uint16_t b)
{
	uint32_t u = (uint32_t)b << 16;
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

double esg_tensor_get(const esg_tensor *t, int64_t i)
{
	const unsigned char *p = (const unsigned char *)t->data + (size_t)i * esg_dtype_size(t->dtype);
	/* memcpy: the data of a decoded document need not be aligned */
	union { float f; double d; uint16_t u16; int64_t i64; int32_t i32; int16_t i16; } v;
	switch (t->dtype) {
	case ESG_F32: memcpy(&v.f, p, 4); return v.f;
	case ESG_F64: memcpy(&v.d, p, 8); return v.d;
	case ESG_F16: memcpy(&v.u16, p, 2); return half_to_float(v.u16);
	case ESG_BF16: memcpy(&v.u16, p, 2); return bf16_to_float(v.u16);
	case ESG_I64: memcpy(&v.i64, p, 8); return (double)v.i64;
	case ESG_I32: memcpy(&v.i32, p, 4); return v.i32;
	case ESG_I16: memcpy(&v.i16, p, 2); return v.i16;
	case ESG_I8: return (signed char)*p;
	case ESG_U8: return *p;
	case ESG_BOOL: return *p != 0;
	default: return NAN;
	}
}

int64_t esg_f32_count_nonfinite(const float *v, int64_t n)
{
	int64_t bad = 0;
	for (int64_t i = 0; i < n; i++)
		bad += !isfinite(v[i]);
	return bad;
}

int64_t esg_tensor_count_nonfinite(const esg_tensor *t)
{
	int64_t n = esg_tensor_numel(t), bad = 0;
	switch (t->dtype) {
	case ESG_F32:
		if (((uintptr_t)t->data & (sizeof(float) - 1)) == 0)
			return esg_f32_count_nonfinite(t->data, n);
		break; /* unaligned data of a decoded document: element-wise below */
	case ESG_F64:
	case ESG_F16:
	case ESG_BF16:
		break;
	default:
		return 0;
	}
	for (int64_t i = 0; i < n; i++)
		bad += !isfinite(esg_tensor_get(t, i));
	return bad;
}

float *esg_tensor_to_f32(const esg_tensor *t)
{
	int64_t n = esg_tensor_numel(t);
	float *out = malloc((size_t)(n ? n : 1) * sizeof *out);
	if (!out) {
		esg_set_error("out of memory converting tensor '%s' (%lld elements)",
			      t->name ? t->name : "?", (long long)n);
		return NULL;
	}
	if (t->dtype == ESG_F32)
		memcpy(out, t->data, (size_t)n * sizeof *out);
	else
		for (int64_t i = 0; i < n; i++)
			out[i] = (float)esg_tensor_get(t, i);
	return out;
}

void esg_shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
	size_t used = 0;
	if (n == 0)
		return;
	buf[0] = 0;
	used += (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < ndim && used < n; i++)
		used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
	if (used < n)
		snprintf(buf + used, n - used, "]");
}
