/* patch_run.c - patchwise (sliding-window) attribution: the patches are
 * cropped, run through the method and blended into the whole volume
 * (attr.h, patch.h).  Where the method allows it (esg_method.patch_batch),
 * several patches go as one job whose items are the patches' items, so
 * that they share model calls; the model's fixed mask is then scored over
 * each row's own window (esg_attr_set_windows). */
#include "attr/attr.h"
#include "shim/esg_torch.h"
#include "attr/patch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Argmax of the model's scores on the job's items, forwarded in chunks. */
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
		if (esg_attr_set_windows(sub, sh[0], NULL, i0) ||
		    esg_model_forward(job->model, sub->x + (size_t)i0 * item, sub->ndim, sh, &out))
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

/* What the patches of one batch need: crops of x and of every baseline,
 * their maps, deltas, targets and origins, for up to `room` patches. */
typedef struct pbatch {
	int64_t room;
	float *xs, *as, **bls;
	double *dl;
	int64_t *tg, *origin;
} pbatch;

static void pb_free(pbatch *b, int nb)
{
	for (int i = 0; b->bls && i < nb; i++)
		free(b->bls[i]);
	free(b->bls);
	free(b->xs);
	free(b->as);
	free(b->dl);
	free(b->tg);
	free(b->origin);
	memset(b, 0, sizeof *b);
}

static int pb_alloc(pbatch *b, int64_t P, const esg_attr_job *job, const esg_patch_grid *g)
{
	int nb = job->n_baselines;
	size_t n = (size_t)(P * job->shape[0]), vals = n * (size_t)job->shape[1] * g->patch_voxels;
	if (P <= b->room)
		return 0;
	pb_free(b, nb);
	b->xs = malloc(vals * sizeof *b->xs);
	b->as = malloc(vals * sizeof *b->as);
	b->bls = calloc((size_t)(nb ? nb : 1), sizeof *b->bls);
	b->dl = calloc(n, sizeof *b->dl);
	b->tg = malloc(n * sizeof *b->tg);
	b->origin = malloc((size_t)P * ESG_PATCH_AXES * sizeof *b->origin);
	int ok = b->xs && b->as && b->bls && b->dl && b->tg && b->origin;
	for (int i = 0; ok && i < nb; i++)
		ok = (b->bls[i] = malloc(vals * sizeof **b->bls)) != NULL;
	if (!ok) {
		pb_free(b, nb);
		return esg_set_error("out of memory for %lld patches of %zu voxels", (long long)P,
				     g->patch_voxels);
	}
	b->room = P;
	return 0;
}

/* The blended whole-volume map, its channels and weight sums. */
typedef struct blend {
	const float *w;
	float *acc, *wsum;   /* acc: job->attr, or a K-channel map */
	int64_t K;
} blend;

/* How many patches share a job, when the method allows it: as many as one
 * model call takes items, but on the CPU only up to calls of two rows
 * (patch_batch is a patch item's rows in a call: 2 for DeepLift's [x;
 * baseline]).  Measured at 128x128x96 with 64x64x48 patches (bench/
 * patches.md): saliency 8.9 s one by one (each lone row runs with a copy
 * of itself), 5.9 s two a job, 6.5 s eight; Grad-CAM 9.8, 4.9, 6.5 s;
 * DeepLift 9.9 s one by one, 10.8 two a job, 14.6 eight: larger calls cost
 * more per voxel on the CPU.  ESG_PATCH_BATCH=N asks for N instead (for
 * tests and comparisons: 1 runs them one by one). */
static int64_t batch_patches(const esg_attr_job *job, const esg_patch_grid *g)
{
	int64_t N = job->shape[0];
	if (!job->method->patch_batch)
		return 1;
	const char *e = getenv("ESG_PATCH_BATCH");
	int64_t want = e && atoll(e) > 0 ? atoll(e)
		: esg_model_on_cpu(job->model) ? 2 / (job->method->patch_batch * N) : INT64_MAX;
	if (want < 2)
		return 1;
	esg_attr_job one = *job;
	for (int d = 0; d < g->nsp; d++)
		one.shape[2 + d] = g->size[d];
	size_t item = g->patch_voxels * (size_t)job->shape[1];
	int64_t fit = esg_attr_batch_fit(&one, 1, 4 * item * sizeof(float));
	/* under a budget (with an explicit --internal-batch too), shared calls
	 * take at most half the room: what the allocator does not see (small
	 * blocks, oneDNN's scratch) grows with the call, and a patch alone
	 * already fits (96x96x80 Grad-CAM under 500M, patches chosen for the
	 * budget: 612 MiB peak with the whole room, 544 one by one) */
	int64_t values = esg_model_values_fit(job->model, 1, 4 * sizeof(float));
	if (values > 0 && values / (2 * (int64_t)item) < fit)
		fit = values / (2 * (int64_t)item);
	int64_t P = fit / N > 1 ? fit / N : 1;
	return P < want ? P : want;
}

/* Patches first .. first + P - 1 as one job, blended into bl. */
static int run_batch(esg_attr_job *job, esg_patch_run *p, int64_t first, int64_t P, pbatch *b,
		     blend *bl)
{
	const esg_patch_grid *g = p->grid;
	int64_t N = job->shape[0], C = job->shape[1];
	size_t pv = g->patch_voxels, vals = (size_t)(N * C) * pv;
	char at[160];
	int len = P == 1 ? snprintf(at, sizeof at, "patch %lld/%lld at", (long long)first + 1, (long long)g->n)
			 : snprintf(at, sizeof at, "patches %lld-%lld/%lld at", (long long)first + 1,
				    (long long)(first + P), (long long)g->n);
	esg_attr_windows win = { .origin = b->origin, .nsp = g->nsp, .items = N };
	esg_attr_job sub = *job;
	for (int d = 0; d < g->nsp; d++)
		sub.shape[2 + d] = win.size[d] = g->size[d];
	sub.shape[0] = P * N;
	for (int64_t q = 0; q < P; q++) {
		int64_t *origin = b->origin + q * g->nsp;
		esg_patch_origin(g, first + q, origin);
		for (int d = 0; q == 0 && d < g->nsp && len < (int)sizeof at; d++)
			len += snprintf(at + len, sizeof at - len, "%s%lld", d ? "," : " ", (long long)origin[d]);
		esg_patch_crop(g, origin, job->x, N * C, b->xs + q * vals);
		for (int k = 0; k < job->n_baselines; k++)
			esg_patch_crop(g, origin, job->baselines[k], N * C, b->bls[k] + q * vals);
		/* checks that the mask covers the window; the one window of a lone patch */
		int set = esg_model_set_origin(job->model, origin, g->size, g->nsp);
		if (set < 0)
			return esg_prefix_error("%s", at);
		p->origin_set |= set;
		if (!p->per_patch_target)
			memcpy(b->tg + q * N, job->target, (size_t)N * sizeof *b->tg);
	}
	sub.x = b->xs;
	sub.baselines = b->bls;
	sub.attr = b->as;
	sub.delta = b->dl;
	sub.target = b->tg;
	sub.layer_attr = NULL;
	sub.passes = sub.evaluations = 0;
	sub.has_delta = 0;
	sub.progress = NULL;  /* the patches are the progress */
	sub.windows = P > 1 ? &win : NULL;
	int rc = p->per_patch_target ? patch_targets(job, &sub, b->tg) : 0;
	if (!rc)
		rc = esg_attr_run(&sub);
	if (P > 1)
		(void)esg_model_set_windows(job->model, 0, NULL, NULL, NULL, 0);
	/* the passes made count, a failed shared job's too: they took the time */
	job->passes += sub.passes;
	job->evaluations += sub.evaluations;
	if (rc) {
		free(sub.layer_attr);
		return esg_prefix_error("%s", at);
	}
	if (p->patch_targets)
		memcpy(p->patch_targets + first * N, b->tg, (size_t)(P * N) * sizeof *b->tg);
	const float *res = sub.layer_attr ? sub.layer_attr : b->as;
	int64_t k = sub.layer_attr ? sub.out_shape[1] : C;
	int grid = !sub.layer_attr || sub.out_ndim == job->ndim;
	for (int d = 0; sub.layer_attr && grid && d < g->nsp; d++)
		grid = sub.out_shape[2 + d] == g->size[d];
	if (!grid || (bl->acc && k != bl->K)) {
		char s[128];
		esg_shape_str(sub.out_ndim, sub.out_shape, s, sizeof s);
		free(sub.layer_attr);
		return esg_set_error("%s: the map is %s, not on the patch's grid: patches are blended on "
				     "the input grid (layer maps: --upsample)", at, s);
	}
	if (!bl->acc) {
		bl->K = k;
		size_t n = (size_t)(N * k) * g->vol_voxels;
		bl->acc = k == C ? job->attr : malloc(n * sizeof *bl->acc);
		if (!bl->acc) {
			free(sub.layer_attr);
			return esg_set_error("out of memory for the whole-volume map");
		}
		memset(bl->acc, 0, n * sizeof *bl->acc);
	}
	for (int64_t q = 0; q < P; q++)
		esg_patch_accumulate(g, b->origin + q * g->nsp, res + (size_t)(q * N * k) * pv, N * k, bl->w,
				     bl->acc, bl->wsum);
	free(sub.layer_attr);
	for (int64_t n = 0; sub.has_delta && job->delta && n < P * N; n++) {
		job->has_delta = 1;
		job->delta[n % N] = fmax(job->delta[n % N], fabs(b->dl[n]));
	}
	/* layer facts are the same for every patch but the shapes' grid */
	job->upsampled = sub.upsampled;
	job->act_ndim = sub.act_ndim;
	memcpy(job->act_shape, sub.act_shape, sizeof job->act_shape);
	job->act_shape[0] = N;
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
	int64_t N = job->shape[0];
	int rc = -1;
	pbatch b = { 0 };
	blend bl = { 0 };
	float *w = esg_patch_weights(g, (esg_blend)p->blend);
	bl.w = w;
	bl.wsum = calloc(g->vol_voxels, sizeof *bl.wsum);
	if (!w || !bl.wsum) {
		esg_set_error("out of memory for patches of %zu voxels", g->patch_voxels);
		goto done;
	}
	p->origin_set = 0;
	p->batch = 0;
	p->unbatched[0] = 0;
	job->has_delta = 0;
	if (job->delta)
		memset(job->delta, 0, (size_t)N * sizeof *job->delta);
	int batching = job->method->patch_batch;
	for (int64_t i = 0; i < g->n;) {
		int64_t P = batching ? batch_patches(job, g) : 1;
		if (P > g->n - i)
			P = g->n - i;
		if (pb_alloc(&b, P, job, g))
			goto done;
		if (run_batch(job, p, i, P, &b, &bl)) {
			if (P == 1)
				goto done;
			/* shared calls failed (a call the budget refused, say):
			 * the rest go one by one, as patches always could */
			snprintf(p->unbatched, sizeof p->unbatched, "%s", esg_error());
			batching = 0;
			continue;
		}
		if (P > p->batch)
			p->batch = P;
		i += P;
		if (job->progress)
			job->progress(job->progress_ctx, "patches", i, g->n);
	}
	esg_patch_normalise(g, bl.acc, N * bl.K, bl.wsum);
	job->out_ndim = job->ndim;
	memcpy(job->out_shape, job->shape, sizeof job->out_shape);
	job->out_shape[1] = bl.K;
	job->layer_attr = bl.acc == job->attr ? NULL : bl.acc;
	bl.acc = NULL;
	rc = 0;
done:
	if (bl.acc != job->attr)
		free(bl.acc);
	pb_free(&b, job->n_baselines);
	free(w);
	free(bl.wsum);
	return rc;
}
