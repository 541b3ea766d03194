/* patch.h - the sliding-window patch grid and its blending weights, shared
 * by esg-attr --patch (patchwise attribution) and esg-wrap --patch
 * (sliding-window inference for the fixed mask).  No libtorch, no printing.
 *
 * Grid (MONAI's sliding_window_inference): along each spatial axis the
 * patch is clamped to the volume; step = max(1, floor(size * (1 - overlap)));
 * origins 0, step, 2 step, ... and the last one aligned to the volume's end
 * (min(k * step, vol - size)), so every voxel is covered:
 * count = ceil((vol - size) / step) + 1.  Patches are numbered in C order of
 * their origins (the first spatial axis slowest).
 *
 * Weights: mean = 1 everywhere; gaussian = prod_d exp(-(i_d - c_d)^2 /
 * (2 s_d^2)), c_d = (size_d - 1) / 2, s_d = 0.125 size_d (MONAI's
 * sigma_scale), divided by its maximum and floored at 1e-3 (as MONAI's
 * compute_importance_map), so that edge voxels of a patch count little but
 * never zero.
 */
#ifndef ESG_PATCH_H
#define ESG_PATCH_H

#include "stream/stream.h"

#define ESG_PATCH_AXES (ESG_MAX_DIMS - 2)
#define ESG_PATCH_DEFAULT_OVERLAP 0.25
#define ESG_PATCH_SIGMA_SCALE 0.125
#define ESG_PATCH_MIN_WEIGHT 1e-3

typedef enum esg_blend { ESG_BLEND_MEAN, ESG_BLEND_GAUSSIAN } esg_blend;

typedef struct esg_patch_grid {
	int nsp;                          /* spatial axes */
	int64_t vol[ESG_PATCH_AXES];      /* the volume's spatial shape */
	int64_t size[ESG_PATCH_AXES];     /* patch size, clamped to vol */
	int64_t step[ESG_PATCH_AXES];
	int64_t count[ESG_PATCH_AXES];    /* origins per axis */
	int64_t n;                        /* patches in all */
	size_t patch_voxels, vol_voxels;
	int clamped;                      /* 1 if some axis was clamped */
} esg_patch_grid;

/* "D,H,W" (or "HxW"): up to ESG_PATCH_AXES positive sizes into size[],
 * their count into *n.  Error naming the bad part otherwise. */
int esg_patch_parse(const char *spec, int64_t *size, int *n);
/* "mean" | "gaussian". */
int esg_blend_parse(const char *s, esg_blend *out);
const char *esg_blend_name(esg_blend b);

/* The grid of nsp-axis patches over a volume; overlap in [0, 1). */
int esg_patch_grid_init(esg_patch_grid *g, int nsp, const int64_t *vol,
			const int64_t *patch, double overlap);
/* Origin (nsp voxels) of patch i, 0 <= i < g->n. */
void esg_patch_origin(const esg_patch_grid *g, int64_t i, int64_t *origin);
/* New array of g->patch_voxels weights (free()); NULL on no memory. */
float *esg_patch_weights(const esg_patch_grid *g, esg_blend b);

/* Copy the patch at origin out of M volumes src[M][vol...] into
 * dst[M][size...]. */
void esg_patch_crop(const esg_patch_grid *g, const int64_t *origin,
		    const float *src, int64_t M, float *dst);
/* acc[m][vol at origin + i] += w[i] * src[m][i] for the M maps; and
 * wsum[vol at origin + i] += w[i] when wsum is not NULL. */
void esg_patch_accumulate(const esg_patch_grid *g, const int64_t *origin,
			  const float *src, int64_t M, const float *w,
			  float *acc, float *wsum);
/* acc[m][v] /= wsum[v] for the M maps (every wsum > 0 once all patches
 * are in). */
void esg_patch_normalise(const esg_patch_grid *g, float *acc, int64_t M,
			 const float *wsum);

#endif
