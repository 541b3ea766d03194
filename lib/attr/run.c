/* run.c - the one entry point of every method, whatever its family: checks
 * what the method needs (baselines), fills the job's defaults and random
 * streams, and calls the method's run function from its family's table. */
#include "attr/attr.h"
#include "attr/local.h"
#include "shim/esg_torch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int esg_attr_run(esg_attr_job *job)
{
	const esg_method *m = job->method;
	/* a wrapper (noise_tunnel) needs what its base method needs */
	const esg_method *need = job->params->base ? job->params->base : m;
	if (job->ndim < 2 || job->shape[0] < 1)
		return esg_set_error("image must be [N, C, ...] with N >= 1");
	if (need->baseline && job->n_baselines < 1)
		return esg_set_error("method %s needs a baseline", need->name);
	if (need->baseline == 1 && job->n_baselines > 1)
		return esg_set_error("method %s takes one baseline, got %d "
				     "(deeplift_shap and gradient_shap take a distribution)",
				     need->name, job->n_baselines);
	if (job->internal_batch < 1)
		job->internal_batch = ESG_DEFAULT_INTERNAL_BATCH;
	esg_rng nt, shap;
	esg_rng_init(&nt, job->seed, job->record, ESG_STREAM_NOISE_TUNNEL);
	esg_rng_init(&shap, job->seed, job->record, ESG_STREAM_SHAP);
	if (!job->rng_nt)
		job->rng_nt = &nt;
	if (!job->rng_shap)
		job->rng_shap = &shap;
	job->has_delta = 0;
	job->passes = job->evaluations = 0;
	job->tiles[0] = 0;
	job->tiler = NULL;
	job->tile_items = 0;
	int rc = m->run(job);
	if (job->tiler) {
		esg_local_close(job->tiler);
		free(job->tiler);
		job->tiler = NULL;
	}
	if (job->rng_nt == &nt)
		job->rng_nt = NULL;
	if (job->rng_shap == &shap)
		job->rng_shap = NULL;
	return rc;
}

int esg_attr_batch_fit(const esg_attr_job *job, int grad, size_t host_bytes_per_item)
{
	int64_t values = 1;
	for (int d = 1; d < job->ndim; d++)
		values *= job->shape[d];
	int max = job->internal_batch > 0 ? job->internal_batch : ESG_DEFAULT_INTERNAL_BATCH;
	return esg_model_batch_fit(job->model, grad, values, host_bytes_per_item, max);
}

int esg_attr_set_windows(const esg_attr_job *job, int64_t n, const int *item, int64_t first)
{
	const esg_attr_windows *w = job->windows;
	if (!w)
		return 0;
	int64_t *mi = malloc((size_t)n * sizeof *mi);
	int64_t *org = malloc((size_t)n * (size_t)w->nsp * sizeof *org);
	int rc = mi && org ? 0 : esg_set_error("out of memory");
	for (int64_t r = 0; !rc && r < n; r++) {
		int64_t m = item ? item[r] : first + r;
		mi[r] = m % w->items;
		memcpy(org + r * w->nsp, w->origin + m / w->items * w->nsp, (size_t)w->nsp * sizeof *org);
	}
	if (!rc && esg_model_set_windows(job->model, n, mi, org, w->size, w->nsp) < 0)
		rc = -1;
	free(mi);
	free(org);
	return rc;
}

int esg_attr_scores_tiled(struct esg_model *m, int ndim, const int64_t *shape, const float *x,
			  int64_t item, double *scores, int max_classes, int *n_classes, int64_t *calls,
			  char *info, size_t info_size)
{
	esg_local L;
	memset(&L, 0, sizeof L);
	*calls = 0;
	snprintf(info, info_size, "%s", "");
	if (esg_local_open_tiles(&L, m, ndim, shape, x))
		return -1;
	int rc = -1;
	int64_t grid[ESG_MAX_DIMS];
	if (!L.on)
		esg_set_error("%s", L.info);
	else if (L.Cout > max_classes)
		esg_set_error("the model has %d classes, more than %d", L.Cout, max_classes);
	else if (!esg_local_tiled_scores(&L, x, item, 0, scores, grid)) {
		char g[64];
		esg_local_grid_str(&L, grid, g, sizeof g);
		snprintf(info, info_size, "grid %s, %s", g, L.info);
		*n_classes = L.Cout;
		rc = 0;
	}
	*calls = L.passes;
	esg_local_close(&L);
	return rc;
}
