/* esg_torch_layer.h - one more shim primitive for the layer methods
 * (lib/torch_layer.cpp), outside the shim's contract header.  C API, same
 * conventions as esg_torch.h: 0 / -1 with esg_error(), no exception
 * crosses. */
#ifndef ESG_TORCH_LAYER_H
#define ESG_TORCH_LAYER_H

#include "shim/esg_torch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Gradient with respect to the input of the layer objective
 * sum |A[b, channel]| (channel < 0: every channel) of each item b, where A
 * is the layer's output, with the ReLUs below it differentiated by `rule`
 * (ESG_RULE_GUIDED for the "layer activation with guided backprop" of the
 * CNN-visualisation literature).  grad: caller buffer of x's size.
 * *act (may be NULL): new F32 tensor, the layer's output. */
int esg_model_layer_input_grad(esg_model *m, esg_layer_ref layer, esg_backward_rule rule,
			       const float *x, int ndim, const int64_t *shape, int channel,
			       float *grad, esg_tensor **act);

#ifdef __cplusplus
}
#endif
#endif
