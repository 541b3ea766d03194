/* run.c - the one entry point of every method, whatever its family: checks
 * what the method needs (baselines), fills the job's defaults and random
 * streams, and calls the method's run function from its family's table. */
#include "attr/attr.h"
#include "attr/local.h"
#include "shim/esg_torch.h"

#include <stdlib.h>

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
