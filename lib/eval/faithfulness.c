/* faithfulness.c - does the map agree with the model: infidelity and
 * max-sensitivity (Yeh et al. 2019), as Captum computes them, with the
 * perturbations drawn here or read from a file. */
#include "eval/eval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum draw { DRAW_GAUSSIAN, DRAW_UNIT, DRAW_BALL };

/* Perturbation sample s (R->numel floats): from the file or drawn, as
 * N(0, noise_std^2), U(0, 1) or U(-radius, radius) per element. */
static void perturbation(const esg_eval_params *p, const esg_eval_record *R, int64_t s,
			 esg_rng *rng, enum draw kind, float *buf)
{
	if (p->perturbations) {
		const float *f = p->perturbations->data;
		memcpy(buf, f + s * R->numel, (size_t)R->numel * sizeof *buf);
		return;
	}
	for (int64_t i = 0; i < R->numel; i++)
		buf[i] = kind == DRAW_GAUSSIAN ? (float)(p->noise_std * esg_rng_normal(rng)) :
		         kind == DRAW_UNIT ? (float)esg_rng_uniform(rng) :
			 (float)(p->radius * (2 * esg_rng_uniform(rng) - 1));
}

/* How many perturbations: the file's (if it fits the image) or n_perturb. */
static int n_samples(const esg_eval_params *p, const esg_eval_record *R, const char *metric,
		     int64_t *S)
{
	const esg_tensor *t = p->perturbations;
	if (!t) {
		*S = p->n_perturb;
		return 0;
	}
	char s1[128], s2[128];
	esg_shape_str(t->ndim, t->shape, s1, sizeof s1);
	esg_shape_str(R->ndim, R->shape, s2, sizeof s2);
	if (t->ndim != R->ndim + 1 || memcmp(t->shape + 1, R->shape, (size_t)R->ndim * sizeof *R->shape))
		return esg_set_error("%s: perturbations %s do not fit the image %s (want [S] + the "
				     "image's shape)", metric, s1, s2);
	*S = t->shape[0];
	return 0;
}

/* Captum's multiply_by_inputs: maps of these methods carry (x - baseline). */
static int multiplies_by_inputs(const char *method, const char *params)
{
	static const char *const M[] = { "integrated_gradients", "input_x_gradient", "deeplift",
		"deeplift_shap", "gradient_shap", "occlusion", "feature_ablation",
		"shapley_value_sampling", NULL };
	const char *name = method;
	cJSON *j = NULL;
	if (!strcmp(method, "noise_tunnel") && params && (j = cJSON_Parse(params))) {
		cJSON *b = cJSON_GetObjectItem(j, "base");
		if (cJSON_IsString(b))
			name = b->valuestring;
	}
	int r = 0;
	for (int i = 0; M[i]; i++)
		r |= !strcmp(name, M[i]);
	cJSON_Delete(j);
	return r;
}

/* base = the mean of the record's baselines (the mean of a distribution). */
static int mean_baseline(const esg_eval_record *R, float *base)
{
	float **bl = NULL;
	int nbl = 0;
	if (esg_eval_baselines(R, R->x, &bl, &nbl))
		return -1;
	for (int k = 0; k < nbl; k++) {
		for (int64_t i = 0; i < R->numel; i++)
			base[i] += bl[k][i] / (float)nbl;
		free(bl[k]);
	}
	free(bl);
	return 0;
}

/* ia[s, b] = sum(a * I) over item b, df[s, b] = f(x) - f(x - I) for each
 * perturbation s; I divided by (x - baseline) when mbi. */
static int infidelity_terms(const esg_eval_model *M, const esg_eval_params *p,
			    const esg_eval_record *R, int64_t S, int mbi, const float *base,
			    double *ia, double *df)
{
	int64_t N = R->N, item = R->numel / N;
	float *xt = malloc((size_t)R->numel * sizeof *xt), *buf = malloc((size_t)R->numel * sizeof *buf);
	double *fx = malloc((size_t)N * sizeof *fx), *fp = malloc((size_t)N * sizeof *fp);
	int rc = -1;
	if (!xt || !buf || !fx || !fp) {
		esg_set_error("out of memory");
		goto done;
	}
	if (esg_eval_scores(M, R->ndim, R->shape, R->x, N, R->target, fx))
		goto done;
	esg_rng rng;
	esg_rng_init(&rng, p->seed, R->index, 0x494e4644 /* "INFD" */);
	for (int64_t s = 0; s < S; s++) {
		/* buf = I (what is subtracted from x) */
		perturbation(p, R, s, &rng, p->perturbation == 1 ? DRAW_UNIT : DRAW_GAUSSIAN, buf);
		if (!p->perturbations && p->perturbation == 1)
			for (int64_t i = 0; i < R->numel; i++)
				buf[i] *= R->x[i] - base[i];
		for (int64_t i = 0; i < R->numel; i++)
			xt[i] = R->x[i] - buf[i];
		if (esg_eval_scores(M, R->ndim, R->shape, xt, N, R->target, fp))
			goto done;
		for (int64_t b = 0; b < N; b++) {
			double acc = 0;
			for (int64_t i = b * item; i < (b + 1) * item; i++) {
				double I = buf[i];
				if (mbi) {  /* Captum's safe_div(x - x~, x - baseline), default 1 */
					double d = (double)R->x[i] - base[i];
					I = I / (d != 0 ? d : 1);
				}
				acc += (double)R->a[i] * I;
			}
			ia[s * N + b] = acc;
			df[s * N + b] = fx[b] - fp[b];
		}
	}
	rc = 0;
done:
	free(xt);
	free(buf);
	free(fx);
	free(fp);
	return rc;
}

int esg_infidelity(const esg_eval_model *M, const esg_eval_params *p, const esg_eval_record *R,
		   double *value, char mp[ESG_METRIC_PARAMS_BYTES])
{
	int64_t S;
	if (esg_eval_check(R, "infidelity", 1) || n_samples(p, R, "infidelity", &S))
		return -1;
	int64_t N = R->N;
	int mbi = p->mbi >= 0 ? p->mbi : multiplies_by_inputs(R->method, R->params);
	float *base = calloc((size_t)R->numel, sizeof *base);
	double *ia = calloc((size_t)(S * N), sizeof *ia), *df = calloc((size_t)(S * N), sizeof *df);
	int rc = -1;
	if (!base || !ia || !df) {
		esg_set_error("out of memory");
		goto done;
	}
	if ((mbi || p->perturbation == 1) && mean_baseline(R, base))
		goto done;
	if (infidelity_terms(M, p, R, S, mbi, base, ia, df))
		goto done;
	snprintf(mp, ESG_METRIC_PARAMS_BYTES, "{\"n_perturb_samples\":%lld,\"perturbation\":\"%s\","
		 "\"noise_std\":%.9g,\"normalize\":%s,\"multiply_by_inputs\":%s,\"seed\":%llu}",
		 (long long)S, p->perturbations ? "file" : p->perturbation ? "baseline" : "gaussian",
		 p->noise_std, p->normalize ? "true" : "false", mbi ? "true" : "false",
		 (unsigned long long)p->seed);
	for (int64_t b = 0; b < N; b++) {
		double beta = 1;
		if (p->normalize) {
			double num = 0, den = 0;
			for (int64_t s = 0; s < S; s++) {
				num += ia[s * N + b] * df[s * N + b];
				den += ia[s * N + b] * ia[s * N + b];
			}
			beta = den > 0 ? num / den : 0;
		}
		double v = 0;
		for (int64_t s = 0; s < S; s++) {
			double e = beta * ia[s * N + b] - df[s * N + b];
			v += e * e;
		}
		value[b] = v / (double)S;
	}
	rc = 0;
done:
	free(base);
	free(ia);
	free(df);
	return rc;
}

int esg_max_sensitivity(const esg_eval_model *M, const esg_eval_params *p,
			const esg_eval_record *R, double *value, char mp[ESG_METRIC_PARAMS_BYTES])
{
	if (esg_eval_check(R, "max_sensitivity", 0))
		return -1;
	/* the re-run knows no patches: it would explain another map */
	if (esg_meta_get(R->r, "esg.patch"))
		return esg_set_error("max_sensitivity: the map was made patch by patch (esg.patch); "
				     "re-running it is not supported");
	esg_rerun U;
	if (esg_rerun_open(&U, R, "max_sensitivity"))
		return -1;
	int64_t S, N = R->N, aitem = R->anumel / N;
	float *xp = NULL, *phi = NULL;
	int rc = -1;
	if (n_samples(p, R, "max_sensitivity", &S))
		goto done;
	xp = malloc((size_t)R->numel * sizeof *xp);
	phi = malloc((size_t)R->anumel * sizeof *phi);
	if (!xp || !phi) {
		esg_set_error("out of memory");
		goto done;
	}
	for (int64_t b = 0; b < N; b++)
		value[b] = 0;
	esg_rng rng;
	esg_rng_init(&rng, p->seed, R->index, 0x53454e53 /* "SENS" */);
	for (int64_t s = 0; s < S; s++) {
		perturbation(p, R, s, &rng, DRAW_BALL, xp);
		for (int64_t i = 0; i < R->numel; i++)
			xp[i] += R->x[i];
		if (esg_rerun_at(&U, M, R, xp, phi))
			goto done;
		for (int64_t b = 0; b < N; b++) {
			double num = 0, den = 0;
			for (int64_t i = b * aitem; i < (b + 1) * aitem; i++) {
				double d = (double)R->a[i] - phi[i];
				num += d * d;
				den += (double)R->a[i] * R->a[i];
			}
			double v = sqrt(num) / (den > 0 ? sqrt(den) : 1);
			if (v > value[b])
				value[b] = v;
		}
	}
	snprintf(mp, ESG_METRIC_PARAMS_BYTES, "{\"n_perturb_samples\":%lld,\"perturb_radius\":%.9g,"
		 "\"norm\":\"fro\",\"seed\":%llu%s}", (long long)S, p->radius,
		 (unsigned long long)p->seed, p->perturbations ? ",\"perturbations\":\"file\"" : "");
	rc = 0;
done:
	esg_rerun_close(&U);
	free(xp);
	free(phi);
	return rc;
}
