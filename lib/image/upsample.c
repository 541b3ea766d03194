/* upsample.c - F.interpolate's linear and nearest modes (see image.h). */
#include "image/image.h"
#include "stream/stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *esg_upsample_name(int n_spatial)
{
	static const char *const names[] = { "linear", "bilinear", "trilinear" };
	return n_spatial >= 1 && n_spatial <= 3 ? names[n_spatial - 1] : "linear-nd";
}

/* Resize one axis: src viewed as [outer, in, inner] -> dst [outer, out, inner]. */
static void resize_axis(const float *src, float *dst, size_t outer, int64_t in, int64_t out,
			size_t inner, esg_up_mode mode)
{
	/* PyTorch: scale = (float)in / out, computed in float for float tensors */
	float scale = (float)in / (float)out;
	for (int64_t o = 0; o < out; o++) {
		int64_t i0, i1;
		float l0 = 1, l1 = 0;
		if (in == out) {
			i0 = i1 = o;
		} else if (mode == ESG_UP_NEAREST) {
			i0 = out == 2 * in ? o >> 1 : (int64_t)floorf((float)o * scale);
			if (i0 > in - 1)
				i0 = in - 1;
			i1 = i0;
		} else {
			float r = scale * ((float)o + 0.5f) - 0.5f;
			if (r < 0)
				r = 0;
			i0 = (int64_t)r;
			i1 = i0 + (i0 < in - 1 ? 1 : 0);
			l1 = r - (float)i0;
			if (l1 > 1)
				l1 = 1;
			l0 = 1 - l1;
		}
		for (size_t a = 0; a < outer; a++) {
			const float *s0 = src + (a * (size_t)in + (size_t)i0) * inner;
			const float *s1 = src + (a * (size_t)in + (size_t)i1) * inner;
			float *d = dst + (a * (size_t)out + (size_t)o) * inner;
			if (l1 == 0)
				memcpy(d, s0, inner * sizeof *d);
			else
				for (size_t j = 0; j < inner; j++)
					d[j] = l0 * s0[j] + l1 * s1[j];
		}
	}
}

int esg_upsample(const float *src, int ndim, const int64_t *shape, const int64_t *out_sp,
		 esg_up_mode mode, float *dst)
{
	if (ndim < 3 || ndim > ESG_MAX_DIMS)
		return esg_set_error("upsample: need [N, C, spatial...], got %d axes", ndim);
	int64_t cur[ESG_MAX_DIMS];
	size_t biggest = 1, n_in = 1, n_out = 1;
	for (int d = 0; d < ndim; d++) {
		if (shape[d] < 1 || (d >= 2 && out_sp[d - 2] < 1))
			return esg_set_error("upsample: empty axis %d", d);
		cur[d] = shape[d];
		n_in *= (size_t)shape[d];
		n_out *= (size_t)(d >= 2 ? out_sp[d - 2] : shape[d]);
	}
	/* the largest intermediate: axes resized one after another */
	size_t run = n_in;
	biggest = n_in;
	for (int d = 2; d < ndim; d++) {
		run = run / (size_t)shape[d] * (size_t)out_sp[d - 2];
		if (run > biggest)
			biggest = run;
	}
	float *a = malloc(biggest * sizeof *a), *b = malloc(biggest * sizeof *b);
	if (!a || !b) {
		free(a);
		free(b);
		return esg_set_error("upsample: out of memory");
	}
	memcpy(a, src, n_in * sizeof *a);
	for (int d = 2; d < ndim; d++) {
		size_t outer = 1, inner = 1;
		for (int e = 0; e < d; e++)
			outer *= (size_t)cur[e];
		for (int e = d + 1; e < ndim; e++)
			inner *= (size_t)cur[e];
		resize_axis(a, b, outer, cur[d], out_sp[d - 2], inner, mode);
		cur[d] = out_sp[d - 2];
		float *t = a;
		a = b;
		b = t;
	}
	memcpy(dst, a, n_out * sizeof *dst);
	free(a);
	free(b);
	return 0;
}
