/* layer_math.h - the pure arithmetic of the layer methods (lib/attr/layer/layer_math.c),
 * exposed for unit tests; no libtorch.  One item at a time: act and grad
 * are a layer output [C, S] (S = spatial values, 1 for a flat layer). */
#ifndef ESG_ATTR_LAYER_H
#define ESG_ATTR_LAYER_H

#include <stddef.h>
#include <stdint.h>

/* Grad-CAM (Captum's LayerGradCam): w_c = mean_s grad[c, s];
 * sum_channels: map[s] = sum_c w_c act[c, s]   (map has S values)
 * otherwise:    map[c, s] = w_c act[c, s]      (C * S values);
 * relu: max(map, 0). */
void esg_gradcam_map(const float *act, const float *grad, int64_t C, int64_t S,
		     int sum_channels, int relu, float *map);

/* Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19 with Y = exp(score)):
 * alpha[c, s] = g^2 / (2 g^2 + sum_s' act[c, s'] g^3) (0 where that is 0),
 * w_c = sum_s alpha[c, s] relu(scale g[c, s]), map[s] = relu(sum_c w_c act[c, s]);
 * scale = exp(score) for the paper's closed form, or 1.  S values.
 * 0; -1 out of memory; 1 when scale takes the map past float's range. */
int esg_gradcampp_map(const float *act, const float *grad, int64_t C, int64_t S,
		      double scale, float *map);

/* Linear approximation (TorchRay): map[s] = sum_c act[c, s] grad[c, s]. */
void esg_linear_approx_map(const float *act, const float *grad, int64_t C, int64_t S,
			   float *map);

/* Excitation backprop map from the marginal winning probabilities p [C, S]:
 * mode 0 sum over channels, 1 mean, 2 channel k; clamp: max(map, 0)
 * (the contrastive map).  S values; map may alias p's first S values. */
void esg_excitation_map(const float *p, int64_t C, int64_t S, int mode, int k, int clamp, float *map);

/* Min-max normalise v[0..n) to [0, 1] in place; returns 0, or 1 (and
 * leaves v untouched) when v is constant. */
int esg_minmax(float *v, size_t n);

/* Softmax of s[0..n) over the entries with use[i] != 0 (others get 0),
 * computed stably in double.  use may be NULL (all). */
void esg_softmax(const double *s, const unsigned char *use, int n, double *w);

#endif
