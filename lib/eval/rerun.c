/* rerun.c - the recorded attribution run, done again at another input:
 * the method, parameters, seed, baselines and layer that the record's esg.*
 * metadata names (esg-attr writes them), so that the same run at x gives
 * the record's map again. */
#include "eval/eval.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Metadata `key` parsed as JSON into *out (NULL if the record has none). */
static int meta_json(const esg_eval_record *R, const char *key, cJSON **out)
{
	const char *v = esg_meta_get(R->r, key);
	*out = v ? cJSON_Parse(v) : NULL;
	if (v && !*out)
		return esg_set_error("metadata %s is not JSON: %s", key, v);
	return 0;
}

static uint64_t meta_u64(const esg_eval_record *R, const char *key, uint64_t dflt)
{
	const char *v = esg_meta_get(R->r, key);
	return v ? strtoull(v, NULL, 10) : dflt;
}

static void free_list(float **bl, int n)
{
	for (int k = 0; k < n; k++)
		free(bl[k]);
	free(bl);
}

int esg_eval_baselines(const esg_eval_record *R, const float *x, float ***bl, int *n)
{
	cJSON *j;
	if (meta_json(R, "esg.baseline", &j))
		return -1;
	uint64_t seed = meta_u64(R, "esg.seed", 0);
	int count = j && cJSON_IsArray(j) ? cJSON_GetArraySize(j) : 0;
	int rc = 0;
	for (int i = 0; !rc && i < (count ? count : 1); i++) {
		const char *spec = count ? cJSON_GetArrayItem(j, i)->valuestring : "zero";
		esg_baseline b;
		if (!spec) {
			rc = esg_set_error("esg.baseline: not a list of strings");
		} else if (esg_baseline_parse(spec, &b)) {
			rc = esg_prefix_error("esg.baseline");
		} else {
			if (esg_baseline_build(&b, i, x, R->ndim, R->shape, seed, R->index, bl, n))
				rc = esg_prefix_error("baseline %s", spec);
			esg_baseline_clear(&b);
		}
	}
	cJSON_Delete(j);
	if (rc) {
		free_list(*bl, *n);
		*bl = NULL;
		*n = 0;
	}
	return rc;
}

/* esg.params, a JSON object, as the KEY=VALUE strings esg-attr took. */
static int recorded_params(esg_rerun *U, const esg_eval_record *R)
{
	cJSON *j;
	if (meta_json(R, "esg.params", &j))
		return -1;
	char *kv[ESG_MAX_PARAMS];
	int n = 0, rc = 0;
	for (cJSON *e = j ? j->child : NULL; e && n < ESG_MAX_PARAMS; e = e->next) {
		char val[512];
		if (cJSON_IsBool(e))
			snprintf(val, sizeof val, "%s", cJSON_IsTrue(e) ? "true" : "false");
		else if (cJSON_IsNumber(e))
			snprintf(val, sizeof val, "%.17g", e->valuedouble);
		else if (cJSON_IsString(e))
			snprintf(val, sizeof val, "%s", e->valuestring);
		else {
			rc = esg_set_error("esg.params: '%s' is neither a number, a string nor a boolean",
					   e->string);
			break;
		}
		size_t len = strlen(e->string) + strlen(val) + 2;
		if (!(kv[n] = malloc(len))) {
			rc = esg_set_error("out of memory");
			break;
		}
		snprintf(kv[n++], len, "%s=%s", e->string, val);
	}
	cJSON_Delete(j);
	if (!rc && esg_params_resolve(U->method, NULL, kv, n, &U->params))
		rc = esg_prefix_error("%s: recorded parameters", U->who);
	for (int i = 0; i < n; i++)
		free(kv[i]);
	return rc;
}

int esg_rerun_open(esg_rerun *U, const esg_eval_record *R, const char *who)
{
	memset(U, 0, sizeof *U);
	U->who = who;
	const char *name = esg_meta_get(R->r, "esg.method");
	if (!name)
		return esg_set_error("%s: record has no esg.method", who);
	const esg_method_alias *alias = NULL;
	U->method = esg_method_find(name, &alias);
	if (!U->method)
		return esg_prefix_error("%s", who);
	if (recorded_params(U, R)) {
		esg_rerun_close(U);
		return -1;
	}
	U->seed = meta_u64(R, "esg.seed", 0);
	U->ibatch = (int)meta_u64(R, "esg.internal_batch", ESG_DEFAULT_INTERNAL_BATCH);
	if (U->ibatch < 1)
		U->ibatch = ESG_DEFAULT_INTERNAL_BATCH;
	U->layer = esg_meta_get(R->r, "esg.layer");
	U->layer_call = (int)meta_u64(R, "esg.layer_call", 0);
	const char *up = esg_meta_get(R->r, "esg.upsample");
	U->upsample = !U->layer ? 0 : up && strcmp(up, "none") ? 1 : 2;
	return 0;
}

void esg_rerun_close(esg_rerun *U)
{
	esg_params_clear(&U->params);
}

int esg_rerun_at(const esg_rerun *U, const esg_eval_model *M, const esg_eval_record *R,
		 const float *x, float *out)
{
	float **bl = NULL;
	int nbl = 0;
	const esg_method *need = U->params.base ? U->params.base : U->method;
	if (need->baseline && esg_eval_baselines(R, x, &bl, &nbl))
		return -1;
	float *attr = malloc((size_t)R->numel * sizeof *attr);
	double *delta = calloc((size_t)R->N, sizeof *delta);
	esg_attr_job job = { 0 };
	int rc = -1;
	if (!attr || !delta) {
		esg_set_error("out of memory");
		goto done;
	}
	job.model = M->model;
	job.method = U->method;
	job.params = &U->params;
	job.ndim = R->ndim;
	memcpy(job.shape, R->shape, sizeof job.shape);
	job.x = x;
	job.target = R->target;
	job.baselines = bl;
	job.n_baselines = nbl;
	job.internal_batch = U->ibatch;
	job.seed = U->seed;
	job.record = R->index;
	job.attr = attr;
	job.delta = delta;
	job.axes = esg_meta_get(R->r, "esg.axes");
	job.layer = U->layer;
	job.layer_call = U->layer_call;
	job.upsample = U->upsample;
	if (esg_attr_run(&job)) {
		esg_prefix_error("%s: re-running %s", U->who, U->method->name);
		goto done;
	}
	const float *res = job.layer_attr ? job.layer_attr : attr;
	int64_t n = 1;
	for (int d = 0; d < (job.layer_attr ? job.out_ndim : R->ndim); d++)
		n *= job.layer_attr ? job.out_shape[d] : R->shape[d];
	if (n != R->anumel) {
		esg_set_error("%s: the re-run gives %lld values, the record's attribution has %lld",
			      U->who, (long long)n, (long long)R->anumel);
		goto done;
	}
	memcpy(out, res, (size_t)n * sizeof *out);
	rc = 0;
done:
	free(job.layer_attr);
	free(attr);
	free(delta);
	free_list(bl, nbl);
	return rc;
}
