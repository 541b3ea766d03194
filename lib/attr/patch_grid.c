/* patch.c - sliding-window patch grid and blending weights (see patch.h). */
#include "attr/patch.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int esg_patch_parse(const char *spec, int64_t *size, int *n)
{
	*n = 0;
	const char *p = spec;
	if (!spec || !*spec)
		return esg_set_error("empty patch size (give D,H,W or H,W)");
	for (;;) {
		if (*n == ESG_PATCH_AXES)
			return esg_set_error("'%s': more than %d sizes", spec, ESG_PATCH_AXES);
		char *end;
		errno = 0;
		long long v = strtoll(p, &end, 10);
		if (end == p || v < 1 || errno || v > (1LL << 31) || (*end && *end != ',' && *end != 'x'))
			return esg_set_error("'%s': sizes must be positive integers separated by commas", spec);
		size[(*n)++] = v;
		if (!*end)
			return 0;
		p = end + 1;
	}
}

int esg_blend_parse(const char *s, esg_blend *out)
{
	if (!strcmp(s, "mean"))
		*out = ESG_BLEND_MEAN;
	else if (!strcmp(s, "gaussian"))
		*out = ESG_BLEND_GAUSSIAN;
	else
		return esg_set_error("'%s' is not mean or gaussian", s);
	return 0;
}

const char *esg_blend_name(esg_blend b)
{
	return b == ESG_BLEND_MEAN ? "mean" : "gaussian";
}

int esg_patch_grid_init(esg_patch_grid *g, int nsp, const int64_t *vol,
			const int64_t *patch, double overlap)
{
	memset(g, 0, sizeof *g);
	if (nsp < 1 || nsp > ESG_PATCH_AXES)
		return esg_set_error("patches need 1 to %d spatial axes, not %d", ESG_PATCH_AXES, nsp);
	if (!(overlap >= 0 && overlap < 1))
		return esg_set_error("overlap %g is not in [0, 1)", overlap);
	g->nsp = nsp;
	g->n = 1;
	g->patch_voxels = g->vol_voxels = 1;
	for (int d = 0; d < nsp; d++) {
		if (vol[d] < 1 || patch[d] < 1)
			return esg_set_error("empty volume or patch along axis %d", d);
		g->vol[d] = vol[d];
		g->size[d] = patch[d] < vol[d] ? patch[d] : vol[d];
		g->clamped |= patch[d] > vol[d];
		int64_t step = (int64_t)floor((double)g->size[d] * (1.0 - overlap));
		g->step[d] = step < 1 ? 1 : step;
		g->count[d] = (g->vol[d] - g->size[d] + g->step[d] - 1) / g->step[d] + 1;
		g->n *= g->count[d];
		g->patch_voxels *= (size_t)g->size[d];
		g->vol_voxels *= (size_t)g->vol[d];
	}
	return 0;
}

void esg_patch_origin(const esg_patch_grid *g, int64_t i, int64_t *origin)
{
	for (int d = g->nsp - 1; d >= 0; d--) {
		int64_t k = i % g->count[d];
		i /= g->count[d];
		int64_t o = k * g->step[d];
		origin[d] = o < g->vol[d] - g->size[d] ? o : g->vol[d] - g->size[d];
	}
}

float *esg_patch_weights(const esg_patch_grid *g, esg_blend b)
{
	float *w = malloc(g->patch_voxels * sizeof *w);
	double *axis[ESG_PATCH_AXES] = { 0 };
	int ok = w != NULL;
	for (int d = 0; ok && d < g->nsp; d++) {
		axis[d] = malloc((size_t)g->size[d] * sizeof **axis);
		ok = axis[d] != NULL;
		double c = (g->size[d] - 1) / 2.0, s = ESG_PATCH_SIGMA_SCALE * (double)g->size[d], top = 0;
		for (int64_t i = 0; ok && i < g->size[d]; i++) {
			axis[d][i] = b == ESG_BLEND_MEAN ? 1.0 : exp(-(i - c) * (i - c) / (2 * s * s));
			top = axis[d][i] > top ? axis[d][i] : top;
		}
		/* the product's maximum is the product of the axes' maxima */
		for (int64_t i = 0; ok && i < g->size[d]; i++)
			axis[d][i] /= top;
	}
	if (ok) {
		int64_t idx[ESG_PATCH_AXES] = { 0 };
		for (size_t v = 0; v < g->patch_voxels; v++) {
			double p = 1;
			for (int d = 0; d < g->nsp; d++)
				p *= axis[d][idx[d]];
			w[v] = (float)(p > ESG_PATCH_MIN_WEIGHT ? p : ESG_PATCH_MIN_WEIGHT);
			for (int d = g->nsp - 1; d >= 0 && ++idx[d] == g->size[d]; d--)
				idx[d] = 0;
		}
	}
	for (int d = 0; d < g->nsp; d++)
		free(axis[d]);
	if (!ok) {
		free(w);
		return NULL;
	}
	return w;
}

/* Visit the patch row by row (rows along the last axis): fn gets the row's
 * offset in the patch and in the volume. */
#define FOR_ROWS(g, origin, pofs, vofs, BODY) do {                              \
	int64_t idx_[ESG_PATCH_AXES] = { 0 };                                    \
	int64_t len_ = (g)->size[(g)->nsp - 1];                                  \
	size_t rows_ = (g)->patch_voxels / (size_t)len_;                         \
	for (size_t r_ = 0; r_ < rows_; r_++) {                                  \
		size_t pofs = r_ * (size_t)len_, vofs = 0;                       \
		for (int d_ = 0; d_ < (g)->nsp; d_++)                            \
			vofs = vofs * (size_t)(g)->vol[d_] +                     \
			       (size_t)((origin)[d_] + idx_[d_]);                \
		BODY                                                             \
		for (int d_ = (g)->nsp - 2; d_ >= 0 && ++idx_[d_] == (g)->size[d_]; d_--) \
			idx_[d_] = 0;                                            \
	}                                                                        \
} while (0)

void esg_patch_crop(const esg_patch_grid *g, const int64_t *origin,
		    const float *src, int64_t M, float *dst)
{
	size_t len = (size_t)g->size[g->nsp - 1];
	FOR_ROWS(g, origin, po, vo, {
		for (int64_t m = 0; m < M; m++)
			memcpy(dst + (size_t)m * g->patch_voxels + po,
			       src + (size_t)m * g->vol_voxels + vo, len * sizeof *dst);
	});
}

void esg_patch_accumulate(const esg_patch_grid *g, const int64_t *origin,
			  const float *src, int64_t M, const float *w,
			  float *acc, float *wsum)
{
	size_t len = (size_t)g->size[g->nsp - 1];
	FOR_ROWS(g, origin, po, vo, {
		for (int64_t m = 0; m < M; m++) {
			const float *s = src + (size_t)m * g->patch_voxels + po;
			float *a = acc + (size_t)m * g->vol_voxels + vo;
			for (size_t i = 0; i < len; i++)
				a[i] += w[po + i] * s[i];
		}
		if (wsum)
			for (size_t i = 0; i < len; i++)
				wsum[vo + i] += w[po + i];
	});
}

void esg_patch_normalise(const esg_patch_grid *g, float *acc, int64_t M,
			 const float *wsum)
{
	for (int64_t m = 0; m < M; m++)
		for (size_t v = 0; v < g->vol_voxels; v++)
			acc[(size_t)m * g->vol_voxels + v] /= wsum[v];
}
