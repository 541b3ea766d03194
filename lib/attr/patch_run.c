/* patch_run.c - patchwise (sliding-window) attribution: one method run per
 * patch, blended into the whole volume (attr.h, patch.h). */
#include "attr/attr.h"
#include "shim/esg_torch.h"
#include "attr/patch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Argmax of the model's scores on the patch, forwarded in chunks. */
static int patch_targets(esg_attr_job *job, const esg_attr_job *sub, int64_t *target)
{
	size_t item = 1;
	for (int d = 1; d < sub->ndim; d++)
		item *= (size_t)sub->shape[d];
	int64_t sh[ESG_MAX_DIMS];
	memcpy(sh, sub->shape, sizeof sh);
	int64_t N = sub->shape[0];
	int64_t B = esg_model_batch_fit(job->model, 0, (int64_t)item, item * sizeof(float),
					job->internal_batch > 0 ? job->internal_batch : ESG_DEFAULT_INTERNAL_BATCH);
	for (int64_t i0 = 0; i0 < N; i0 += B) {
		sh[0] = N - i0 < B ? N - i0 : B;
		esg_tensor *out;
		if (esg_model_forward(job->model, sub->x + (size_t)i0 * item, sub->ndim, sh, &out))
			return -1;
		job->passes++;
		job->evaluations += sh[0];
		int ok = out->ndim == 2 && out->shape[0] == sh[0] && out->shape[1] > 0;
		for (int64_t b = 0; ok && b < sh[0]; b++) {
			int64_t C = out->shape[1], best = 0;
			for (int64_t c = 1; c < C; c++)
				if (esg_tensor_get(out, b * C + c) > esg_tensor_get(out, b * C + best))
					best = c;
			target[i0 + b] = best;
		}
		char s[128];
		esg_shape_str(out->ndim, out->shape, s, sizeof s);
		esg_torch_tensor_free(out);
		if (!ok)
			return esg_set_error("model output is %s, not per-class scores [N, C]; "
					     "wrap a segmentation model with esg-wrap", s);
	}
	return 0;
}

int esg_attr_run_patches(esg_attr_job *job, esg_patch_run *p)
{
	const esg_patch_grid *g = p->grid;
	if (g->nsp != job->ndim - 2)
		return esg_set_error("%d patch axes for %d spatial axes", g->nsp, job->ndim - 2);
	for (int d = 0; d < g->nsp; d++)
		if (g->vol[d] != job->shape[2 + d])
			return esg_set_error("the patch grid is not the input's");
	int64_t N = job->shape[0], C = job->shape[1], K = 0;
	size_t pv = g->patch_voxels;
	int rc = -1, nb = job->n_baselines;
	float *w = esg_patch_weights(g, (esg_blend)p->blend);
	float *xs = malloc((size_t)(N * C) * pv * sizeof *xs);
	float *as = malloc((size_t)(N * C) * pv * sizeof *as);
	float *wsum = calloc(g->vol_voxels, sizeof *wsum);
	float **bls = calloc((size_t)(nb ? nb : 1), sizeof *bls);
	double *dl = calloc((size_t)N, sizeof *dl);
	int64_t *tg = malloc((size_t)N * sizeof *tg);
	float *acc = NULL;        /* job->attr, or a K-channel map */
	int ok = w && xs && as && wsum && bls && dl && tg;
	for (int i = 0; ok && i < nb; i++)
		ok = (bls[i] = malloc((size_t)(N * C) * pv * sizeof **bls)) != NULL;
	if (!ok) {
		esg_set_error("out of memory for patches of %zu voxels", pv);
		goto done;
	}
	p->origin_set = 0;
	job->has_delta = 0;
	if (job->delta)
		memset(job->delta, 0, (size_t)N * sizeof *job->delta);
	for (int64_t i = 0; i < g->n; i++) {
		int64_t origin[ESG_PATCH_AXES];
		esg_patch_origin(g, i, origin);
		char at[160];
		int len = snprintf(at, sizeof at, "patch %lld/%lld at", (long long)i + 1, (long long)g->n);
		for (int d = 0; d < g->nsp && len < (int)sizeof at; d++)
			len += snprintf(at + len, sizeof at - len, "%s%lld", d ? "," : " ", (long long)origin[d]);
		esg_attr_job sub = *job;
		for (int d = 0; d < g->nsp; d++)
			sub.shape[2 + d] = g->size[d];
		esg_patch_crop(g, origin, job->x, N * C, xs);
		for (int b = 0; b < nb; b++)
			esg_patch_crop(g, origin, job->baselines[b], N * C, bls[b]);
		sub.x = xs;
		sub.baselines = bls;
		sub.attr = as;
		sub.delta = dl;
		sub.layer_attr = NULL;
		sub.passes = sub.evaluations = 0;
		sub.has_delta = 0;
		sub.progress = NULL;  /* the patches are the progress */
		int set = esg_model_set_origin(job->model, origin, g->size, g->nsp);
		if (set < 0) {
			esg_prefix_error("%s", at);
			goto done;
		}
		p->origin_set |= set;
		if (p->per_patch_target) {
			if (patch_targets(job, &sub, tg)) {
				esg_prefix_error("%s", at);
				goto done;
			}
			sub.target = tg;
		}
		if (p->patch_targets)
			memcpy(p->patch_targets + i * N, sub.target, (size_t)N * sizeof *tg);
		if (esg_attr_run(&sub)) {
			free(sub.layer_attr);
			esg_prefix_error("%s", at);
			goto done;
		}
		job->passes += sub.passes;
		job->evaluations += sub.evaluations;
		const float *res = sub.layer_attr ? sub.layer_attr : as;
		int64_t k = sub.layer_attr ? sub.out_shape[1] : C;
		int grid = !sub.layer_attr || sub.out_ndim == job->ndim;
		for (int d = 0; sub.layer_attr && grid && d < g->nsp; d++)
			grid = sub.out_shape[2 + d] == g->size[d];
		if (!grid || (acc && k != K)) {
			char s[128];
			esg_shape_str(sub.out_ndim, sub.out_shape, s, sizeof s);
			free(sub.layer_attr);
			esg_set_error("%s: the map is %s, not on the patch's grid: patches are blended on "
				      "the input grid (layer maps: --upsample)", at, s);
			goto done;
		}
		if (!acc) {
			K = k;
			acc = K == C ? job->attr : malloc((size_t)(N * K) * g->vol_voxels * sizeof *acc);
			if (!acc) {
				free(sub.layer_attr);
				esg_set_error("out of memory for the whole-volume map");
				goto done;
			}
			memset(acc, 0, (size_t)(N * K) * g->vol_voxels * sizeof *acc);
		}
		esg_patch_accumulate(g, origin, res, N * K, w, acc, wsum);
		free(sub.layer_attr);
		if (sub.has_delta && job->delta) {
			job->has_delta = 1;
			for (int64_t n = 0; n < N; n++)
				job->delta[n] = fmax(job->delta[n], fabs(dl[n]));
		}
		/* layer facts are the same for every patch but the shapes' grid */
		job->upsampled = sub.upsampled;
		job->act_ndim = sub.act_ndim;
		memcpy(job->act_shape, sub.act_shape, sizeof job->act_shape);
		if (job->progress)
			job->progress(job->progress_ctx, "patches", i + 1, g->n);
	}
	esg_patch_normalise(g, acc, N * K, wsum);
	job->out_ndim = job->ndim;
	memcpy(job->out_shape, job->shape, sizeof job->out_shape);
	job->out_shape[1] = K;
	job->layer_attr = acc == job->attr ? NULL : acc;
	acc = NULL;
	rc = 0;
done:
	if (acc != job->attr)
		free(acc);
	for (int i = 0; bls && i < nb; i++)
		free(bls[i]);
	free(bls);
	free(w);
	free(xs);
	free(as);
	free(wsum);
	free(dl);
	free(tg);
	return rc;
}
