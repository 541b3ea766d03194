/* esg_torch.h - the C API of the libtorch shim (lib/torch_shim.cpp).
 *
 * The only code that touches libtorch.  Compiles as C99.  No C++ exception
 * crosses this boundary: every call returns 0 / a pointer on success and
 * -1 / NULL on failure, with the message in esg_error() (lib/esg.h).
 *
 * Arrays cross the boundary as float32 C-order buffers with an explicit
 * shape; a batch is the leading axis.  Results marked "new" are owned by
 * the caller.
 */
#ifndef ESG_TORCH_H
#define ESG_TORCH_H

#include "esg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct esg_model esg_model;

/* Threads for intra-op parallelism; n <= 0 means all cores. */
int esg_torch_set_threads(int n);
/* Seed libtorch's generator (used by nothing in the shim itself today). */
void esg_torch_seed(uint64_t seed);

/* Load a TorchScript file (scripted or traced) onto a device ("cpu",
 * "cuda:N").  Parameters are set to requires_grad=false. New. */
esg_model *esg_model_load(const char *path, const char *device);
void esg_model_free(esg_model *m);
/* Save (used by esg-wrap / esg-randomise).  Atomicity is the caller's. */
int esg_model_save(esg_model *m, const char *path);

/* Forward pass without autograd.  x: [B, ...].  *out: new F32 tensor named
 * "output" with the model's output shape. */
int esg_model_forward(esg_model *m, const float *x, int ndim,
		      const int64_t *shape, esg_tensor **out);

/* How ReLU-family nonlinearities are differentiated.  The graph is rewritten
 * (functional, module and in-place ReLUs alike), never hooked. */
typedef enum esg_backward_rule {
	ESG_RULE_PLAIN,     /* ordinary autograd */
	ESG_RULE_GUIDED,    /* guided backprop: relu(grad) * [x > 0] */
	ESG_RULE_DECONV,    /* deconvolution:   relu(grad) */
	ESG_RULE_DEEPLIFT   /* DeepLift rescale (needs ref) */
} esg_backward_rule;

/* Gradient of score_b = output[b, target[b]] with respect to the input,
 * for each batch item b (output must be [B, C]).  grad: caller buffer of
 * x's size.  score: caller buffer of B floats, or NULL.
 * ESG_RULE_DEEPLIFT: ref is the baseline batch (x's shape); input and
 * baseline run as one batch and grad receives the DeepLift multipliers
 * (attribution = (x - ref) * grad).  ref is ignored by the other rules. */
int esg_model_grad(esg_model *m, esg_backward_rule rule,
		   const float *x, const float *ref, int ndim,
		   const int64_t *shape, const int64_t *target,
		   float *grad, float *score);

/* ---- layers: submodules by dotted name ------------------------------- */

typedef struct esg_layer_info {
	char *name;       /* dotted path, e.g. "enc2.conv1" */
	char *type;       /* module type, e.g. "Conv3d" */
	int calls;        /* call sites in forward (0 if never called) */
} esg_layer_info;

/* New array of *n entries in execution order; free with esg_layers_free. */
esg_layer_info *esg_model_layers(esg_model *m, size_t *n);
void esg_layers_free(esg_layer_info *l, size_t n);

/* A layer reference: dotted name and which call (0-based) when the module
 * is called more than once. */
typedef struct esg_layer_ref {
	const char *name;
	int call;
} esg_layer_ref;

/* Forward that also captures the layer's output: *act new F32 tensor;
 * *out new F32 tensor (model output), either pointer may be NULL. */
int esg_model_forward_capture(esg_model *m, esg_layer_ref layer,
			      const float *x, int ndim, const int64_t *shape,
			      esg_tensor **act, esg_tensor **out);

/* Gradient of output[b, target[b]] with respect to the layer's output at
 * input x, with the given backward rule below the output.  *act and
 * *grad_act: new F32 tensors of the layer's output shape; score as above. */
int esg_model_layer_grad(esg_model *m, esg_layer_ref layer,
			 esg_backward_rule rule, const float *x,
			 const float *ref, int ndim, const int64_t *shape,
			 const int64_t *target, esg_tensor **act,
			 esg_tensor **grad_act, float *score);

/* Forward with the layer's output replaced by act (x still feeds anything
 * that does not depend on the layer, e.g. skip connections).  If target is
 * not NULL, also the gradient of output[b, target[b]] w.r.t. act into
 * grad_act (caller buffer of act's size).  *out may be NULL. */
int esg_model_forward_replace(esg_model *m, esg_layer_ref layer,
			      const float *x, int ndim, const int64_t *shape,
			      const esg_tensor *act, const int64_t *target,
			      float *grad_act, esg_tensor **out);

/* ---- wrapping: a new scripted module around a model ------------------ */

/* Build a TorchScript module whose submodule "model" is m and whose methods
 * are compiled from TorchScript source (share/wrappers/*.py); buffers are
 * registered under their tensor names before compiling. New. */
esg_model *esg_model_wrap(esg_model *m, const char *source,
			  const esg_tensor *buffers, size_t n_buffers);

#ifdef __cplusplus
}
#endif
#endif
