/* scoring.c - what every model metric needs: a record of esg-attr opened
 * for scoring, and the model's score of the target class on a batch. */
#include "eval/eval.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int open_tensors(esg_eval_record *R, int need_image)
{
	esg_tensor *a = esg_record_get(R->r, "attribution");
	if (!a) {
		char why[1024];
		snprintf(why, sizeof why, "%s", esg_error());
		return esg_set_error("%s (run esg-attr first)", why);
	}
	R->andim = a->ndim;
	memcpy(R->ashape, a->shape, sizeof a->shape);
	R->anumel = esg_tensor_numel(a);
	if (a->ndim < 1 || a->shape[0] < 1)
		return esg_set_error("tensor 'attribution' must be [N, ...] with N >= 1");
	R->a = esg_tensor_to_f32(a);
	if (!R->a)
		return -1;
	R->N = a->shape[0];
	esg_tensor *x = esg_record_find(R->r, "image");
	if (x) {
		R->ndim = x->ndim;
		memcpy(R->shape, x->shape, sizeof x->shape);
		R->numel = esg_tensor_numel(x);
		R->x = esg_tensor_to_f32(x);
		if (!R->x)
			return -1;
	} else if (need_image) {
		return esg_set_error("record has no tensor 'image'");
	}
	return 0;
}

/* esg.target: one class for every item, or one per item. */
static int open_target(esg_eval_record *R)
{
	const char *t = esg_meta_get(R->r, "esg.target");
	R->per_patch = t && !strcmp(t, "per-patch");
	if (!t || R->per_patch)
		return 0;
	R->target = malloc((size_t)R->N * sizeof *R->target);
	if (!R->target)
		return esg_set_error("out of memory");
	cJSON *j = cJSON_Parse(t);
	int okj = j && (cJSON_IsNumber(j) || (cJSON_IsArray(j) && cJSON_GetArraySize(j) == R->N));
	for (int64_t b = 0; okj && b < R->N; b++) {
		cJSON *v = cJSON_IsNumber(j) ? j : cJSON_GetArrayItem(j, (int)b);
		okj = cJSON_IsNumber(v) && v->valuedouble >= 0;
		R->target[b] = okj ? (int64_t)v->valuedouble : 0;
	}
	cJSON_Delete(j);
	if (!okj)
		return esg_set_error("esg.target '%s' is not a class index or an array of %lld", t,
				     (long long)R->N);
	return 0;
}

int esg_eval_record_open(esg_eval_record *R, esg_record *r, const char *source, size_t index,
			 int need_image)
{
	memset(R, 0, sizeof *R);
	R->r = r;
	R->source = source;
	R->index = index;
	R->method = esg_meta_get(r, "esg.method_alias");
	if (!R->method)
		R->method = esg_meta_get(r, "esg.method");
	if (!R->method)
		R->method = "";
	R->params = esg_meta_get(r, "esg.params");
	if (!R->params)
		R->params = "{}";
	if (open_tensors(R, need_image) || open_target(R)) {
		esg_eval_record_close(R);
		R->source = source;
		R->index = index;
		return -1;
	}
	return 0;
}

void esg_eval_record_close(esg_eval_record *R)
{
	free(R->x);
	free(R->a);
	free(R->target);
	esg_record_free(R->r);
	memset(R, 0, sizeof *R);
}

int esg_eval_check(const esg_eval_record *R, const char *metric, int shaped_like_image)
{
	if (!R->x)
		return esg_set_error("%s: record has no tensor 'image'", metric);
	if (!R->target)
		return esg_set_error("%s: record has %s", metric, R->per_patch ?
				     "a target per patch (esg-attr --patch without --target), not one to score" :
				     "no esg.target");
	if (!shaped_like_image)
		return 0;
	char s1[128], s2[128];
	esg_shape_str(R->ndim, R->shape, s1, sizeof s1);
	esg_shape_str(R->andim, R->ashape, s2, sizeof s2);
	if (R->ndim != R->andim || memcmp(R->shape, R->ashape, (size_t)R->ndim * sizeof *R->shape))
		return esg_set_error("%s needs an attribution shaped like the image (%s), not %s "
				     "(upsample layer maps: esg-attr --upsample)", metric, s1, s2);
	return 0;
}

int esg_eval_scores(const esg_eval_model *M, int ndim, const int64_t *shape, const float *xs,
		    int64_t n, const int64_t *target, double *s)
{
	int64_t item = 1;
	for (int d = 1; d < ndim; d++)
		item *= shape[d];
	int64_t sh[ESG_MAX_DIMS];
	memcpy(sh, shape, (size_t)ndim * sizeof *sh);
	for (int64_t i0 = 0; i0 < n; i0 += sh[0]) {
		/* at most internal_batch, fewer when the memory budget asks */
		int64_t fit = esg_model_batch_fit(M->model, 0, item, (uint64_t)item * sizeof(float),
						(int)M->internal_batch);
		sh[0] = n - i0 < fit ? n - i0 : fit;
		esg_tensor *out = NULL;
		if (esg_model_forward(M->model, xs + i0 * item, ndim, sh, &out))
			return esg_prefix_error("model");
		if (out->ndim != 2 || out->shape[0] != sh[0]) {
			char str[128];
			esg_shape_str(out->ndim, out->shape, str, sizeof str);
			esg_torch_tensor_free(out);
			return esg_set_error("model output is %s, not per-class scores [N, C]; use the "
					     "wrapped model the maps were made with (esg-wrap)", str);
		}
		for (int64_t b = 0; b < sh[0]; b++) {
			int64_t t = target[i0 + b];
			if (t >= out->shape[1]) {
				int64_t classes = out->shape[1];
				esg_torch_tensor_free(out);
				return esg_set_error("esg.target %lld is out of range: the model has %lld classes",
						     (long long)t, (long long)classes);
			}
			s[i0 + b] = esg_tensor_get(out, b * out->shape[1] + t);
		}
		esg_torch_tensor_free(out);
	}
	return 0;
}
