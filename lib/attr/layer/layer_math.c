/* layer_math.c - the arithmetic of the layer methods (layer_math.h), kept
 * apart from layer/layer.c so that it links (and is unit-tested) without
 * libtorch. */
#include "attr/layer/layer_math.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void esg_gradcam_map(const float *act, const float *grad, int64_t C, int64_t S,
		     int sum_channels, int relu, float *map)
{
	if (sum_channels)
		memset(map, 0, (size_t)S * sizeof *map);
	for (int64_t c = 0; c < C; c++) {
		const float *a = act + c * S, *g = grad + c * S;
		double m = 0;
		for (int64_t s = 0; s < S; s++)
			m += g[s];
		float w = (float)(m / (double)S);
		float *o = sum_channels ? map : map + c * S;
		for (int64_t s = 0; s < S; s++)
			o[s] = sum_channels ? o[s] + w * a[s] : w * a[s];
	}
	if (relu)
		for (int64_t s = 0; s < (sum_channels ? S : C * S); s++)
			map[s] = map[s] > 0 ? map[s] : 0;
}

int esg_gradcampp_map(const float *act, const float *grad, int64_t C, int64_t S,
		      double scale, float *map)
{
	double *acc = calloc((size_t)S, sizeof *acc);
	if (!acc)
		return -1;
	for (int64_t c = 0; c < C; c++) {
		const float *a = act + c * S, *g = grad + c * S;
		double asum = 0, w = 0;
		for (int64_t s = 0; s < S; s++)
			asum += a[s];
		for (int64_t s = 0; s < S; s++) {
			/* second and third derivatives of exp(score): scale g^2, scale g^3 */
			double g1 = g[s], g2 = scale * g1 * g1, g3 = g2 * g1;
			double den = 2 * g2 + asum * g3;
			double alpha = den != 0 ? g2 / den : 0;
			double d1 = scale * g1;
			w += alpha * (d1 > 0 ? d1 : 0);
		}
		for (int64_t s = 0; s < S; s++)
			acc[s] += w * a[s];
	}
	int over = 0;
	for (int64_t s = 0; s < S; s++) {
		map[s] = acc[s] > 0 ? (float)acc[s] : 0;
		over |= !isfinite(map[s]);
	}
	free(acc);
	return over;
}

void esg_linear_approx_map(const float *act, const float *grad, int64_t C, int64_t S, float *map)
{
	memset(map, 0, (size_t)S * sizeof *map);
	for (int64_t c = 0; c < C; c++)
		for (int64_t s = 0; s < S; s++)
			map[s] += act[c * S + s] * grad[c * S + s];
}

int esg_minmax(float *v, size_t n)
{
	if (!n)
		return 1;
	float lo = v[0], hi = v[0];
	for (size_t i = 1; i < n; i++) {
		lo = v[i] < lo ? v[i] : lo;
		hi = v[i] > hi ? v[i] : hi;
	}
	if (!(hi > lo))
		return 1;
	for (size_t i = 0; i < n; i++)
		v[i] = (v[i] - lo) / (hi - lo);
	return 0;
}

void esg_softmax(const double *s, const unsigned char *use, int n, double *w)
{
	double mx = -INFINITY, sum = 0;
	for (int i = 0; i < n; i++)
		if ((!use || use[i]) && s[i] > mx)
			mx = s[i];
	for (int i = 0; i < n; i++) {
		w[i] = (!use || use[i]) ? exp(s[i] - mx) : 0;
		sum += w[i];
	}
	for (int i = 0; i < n && sum > 0; i++)
		w[i] /= sum;
}

void esg_excitation_map(const float *p, int64_t C, int64_t S, int mode, int k, int clamp, float *map)
{
	for (int64_t s = 0; s < S; s++) {
		double v = 0;
		if (mode == 2) {
			v = p[k * S + s];
		} else {
			for (int64_t c = 0; c < C; c++)
				v += p[c * S + s];
			if (mode == 1)
				v /= (double)C;
		}
		map[s] = (float)(clamp && v < 0 ? 0 : v);
	}
}
