/* curves.c - deletion and insertion curves: the model's score as the most
 * attributed elements are removed from the input (set to a baseline value)
 * or inserted into the baseline, most attributed first. */
#include "eval/eval.h"

#include <math.h>
#include <stdlib.h>

/* xs[k] (k = 0 .. n_steps): item b of the input with its top k / n_steps
 * (by attribution, ties by index) set to the baseline value, or the
 * baseline with them inserted. */
static int curve_inputs(const esg_eval_params *p, const esg_eval_record *R, int insert,
			int64_t b, float *xs)
{
	int64_t item = R->numel / R->N, K = p->n_steps + 1;
	int64_t *idx = malloc((size_t)item * sizeof *idx);
	if (!idx)
		return esg_set_error("out of memory");
	const float *x = R->x + b * item;
	if (esg_argsort_desc(R->a + b * item, item, idx)) {
		free(idx);
		return -1;
	}
	for (int64_t k = 0; k < K; k++) {
		float *xk = xs + k * item;
		int64_t cnt = (int64_t)llround((double)k / (double)p->n_steps * (double)item);
		for (int64_t i = 0; i < item; i++)
			xk[i] = insert ? (float)p->fill : x[i];
		for (int64_t i = 0; i < cnt; i++)
			xk[idx[i]] = insert ? x[idx[i]] : (float)p->fill;
	}
	free(idx);
	return 0;
}

int esg_curve(const esg_eval_model *M, const esg_eval_params *p, const esg_eval_record *R,
	      int insert, int64_t b, double *score, double *normalised, double *area,
	      char mp[ESG_METRIC_PARAMS_BYTES])
{
	if (esg_eval_check(R, insert ? "insertion" : "deletion", 1))
		return -1;
	int64_t item = R->numel / R->N, K = p->n_steps + 1;
	float *xs = malloc((size_t)(K * item) * sizeof *xs);
	int64_t *tg = malloc((size_t)K * sizeof *tg);
	int rc = -1;
	if (!xs || !tg) {
		esg_set_error("out of memory");
		goto done;
	}
	snprintf(mp, ESG_METRIC_PARAMS_BYTES, "{\"n_steps\":%ld,\"baseline\":%.9g,"
		 "\"order\":\"attribution descending\"}", p->n_steps, p->fill);
	for (int64_t k = 0; k < K; k++)
		tg[k] = R->target[b];
	if (curve_inputs(p, R, insert, b, xs) || esg_eval_scores(M, R->ndim, R->shape, xs, K, tg, score))
		goto done;
	/* normalised: 1 at the full input, 0 at the full baseline */
	double full = insert ? score[K - 1] : score[0], none = insert ? score[0] : score[K - 1];
	for (int64_t k = 0; k < K; k++)
		normalised[k] = full != none ? (score[k] - none) / (full - none) : NAN;
	*area = esg_trapz_unit(normalised, (int)K);
	rc = 0;
done:
	free(xs);
	free(tg);
	return rc;
}
