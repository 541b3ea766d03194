/* esg_torch.h - the C API of the libtorch shim (the C++ files of lib/shim),
 * its only door: C code includes this header and nothing else of the shim.
 *
 * The only code that touches libtorch.  Compiles as C99.  No C++ exception
 * crosses this boundary: every call returns 0 / a pointer on success and
 * -1 / NULL on failure, with the message in esg_error() (lib/stream/stream.h).
 *
 * Arrays cross the boundary as float32 C-order buffers with an explicit
 * shape; a batch is the leading axis.  Results marked "new" are owned by
 * the caller.
 */
#ifndef ESG_TORCH_H
#define ESG_TORCH_H

#include "stream/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct esg_model esg_model;

/* Threads for intra-op parallelism; n <= 0 means all cores. */
int esg_torch_set_threads(int n);
/* On by default: NaN / Inf in a loaded model's parameters or buffers, or in
 * any model output (all outputs, scores included), fails the call with an
 * error naming how many; 0 lets them through. */
void esg_torch_set_check_finite(int on);
/* The memory budget, in bytes, of this process's resident memory (0:
 * none).  On the CPU each model call runs under it: a call whose large
 * blocks would take the process past it fails with an error that says how
 * much it needs and what to do, before the kernel's OOM killer would act.
 * auto_batch: esg_model_batch_fit sizes batches to it (--internal-batch
 * auto); 0: batches stay as asked (--internal-batch N).  Not on CUDA. */
void esg_torch_set_memory(uint64_t budget, int auto_batch);
/* This process's resident memory now, in bytes. */
uint64_t esg_torch_resident_bytes(void);
/* How many items of item_values input values each fit one call of m now
 * (grad: with autograd), each item also taking host_bytes_per_item in the
 * caller's buffers: from what m's calls took per input value so far (a
 * cautious guess before the first), what the budget leaves, capped at max,
 * at least 1.  max itself unless auto_batch. */
int esg_model_batch_fit(esg_model *m, int grad, int64_t item_values,
			uint64_t host_bytes_per_item, int max);
/* How many input values one call of m may take now (grad: with
 * autograd), each value also taking host_bytes_per_value in the caller's
 * buffers: as esg_model_batch_fit, for a tile of a volume.  0: no budget
 * (or CUDA). */
int64_t esg_model_values_fit(esg_model *m, int grad, double host_bytes_per_value);
/* 1 if the last error of a model call was the memory budget's refusal
 * (cleared by reading it). */
int esg_torch_budget_refused(void);
/* The model calls made since the last reset, as a JSON array of
 * {"grad": bool, "batch": B, "count": n} (new string): what a method cost,
 * recorded by esg-attr as esg.model_calls for the benchmark. */
char *esg_torch_calls_json(void);
void esg_torch_calls_reset(void);
/* Seed libtorch's generator (used by nothing in the shim itself today). */
void esg_torch_seed(uint64_t seed);

/* Load a TorchScript file (scripted or traced) onto a device ("cpu",
 * "cuda:N").  Parameters are set to requires_grad=false. New. */
esg_model *esg_model_load(const char *path, const char *device);
void esg_model_free(esg_model *m);
/* 1 if the model runs on the CPU, 0 on a GPU. */
int esg_model_on_cpu(const esg_model *m);
/* Free a standalone tensor returned "new" by the calls below (its name,
 * data and the struct); accepts NULL. */
void esg_torch_tensor_free(esg_tensor *t);
/* Save (used by esg-wrap / esg-randomise), with every tensor on the CPU
 * whatever the model's device.  Atomicity is the caller's. */
int esg_model_save(esg_model *m, const char *path);

/* Mixed precision (automatic mixed precision, "amp").  When on, every
 * later forward pass of m runs under libtorch's autocast in the given
 * dtype (convolutions, linear layers and matrix products in bf16 / fp16,
 * the ops autocast keeps in float32 in float32); inputs, gradients with
 * respect to inputs and to replaced layer activations, and the model's
 * output stay / become float32 before any score is taken.  Captured layer
 * activations and their gradients come at the layer's precision, as float32
 * arrays.  ESG_AMP_AUTO: bf16 on the CPU, fp16 on CUDA.  CPU autocast in
 * libtorch 1.13 knows bf16 only: fp16 on the CPU is refused.  The
 * DeepLift and excitation backprop rules (ratios of small differences) are
 * refused under amp by esg_model_grad / esg_model_layer_grad. */
typedef enum esg_amp {
	ESG_AMP_OFF,
	ESG_AMP_AUTO,
	ESG_AMP_BF16,
	ESG_AMP_FP16
} esg_amp;
int esg_model_set_amp(esg_model *m, esg_amp amp);
/* The dtype in force (never ESG_AMP_AUTO) and its name: "off", "bf16",
 * "fp16" (static string). */
esg_amp esg_model_amp(const esg_model *m);
const char *esg_amp_name(esg_amp amp);

/* Forward pass without autograd.  x: [B, ...].  *out: new tensor named
 * "output" with the model's output shape: F32, or F64 for [B, C] scores a
 * wrapper summed in float64 (read them with esg_tensor_get).  The outputs of
 * esg_model_forward_capture / _replace are the same. */
int esg_model_forward(esg_model *m, const float *x, int ndim,
		      const int64_t *shape, esg_tensor **out);

/* How ReLU-family nonlinearities are differentiated.  The graph is rewritten
 * (functional, module and in-place ReLUs alike), never hooked. */
typedef enum esg_backward_rule {
	ESG_RULE_PLAIN,     /* ordinary autograd */
	ESG_RULE_GUIDED,    /* guided backprop: relu(grad) * [x > 0] */
	ESG_RULE_DECONV,    /* deconvolution:   relu(grad) */
	/* DeepLift rescale (needs ref), as Captum's DeepLift computes it: its
	 * module hooks' semantics, where a rule op reading another rule op's
	 * output directly (ReLU -> MaxPool) gets the plain gradient, max-pool
	 * multipliers scattered with max_unpool (doc/methods.md) */
	ESG_RULE_DEEPLIFT,
	/* excitation backprop (Zhang et al. 2016): the backward signal is the
	 * marginal winning probability; linear ops (conv, conv-transpose,
	 * linear, addmm with a parameter weight) send P_in = a * W+^T (P_out / (W+ a)) (no bias), average
	 * pools and means the same with their own weights, eval BatchNorm
	 * likewise with the positive part of its scale; ReLU, max pools,
	 * reshapes, cat: the ordinary gradient of the signal. */
	ESG_RULE_EXCITATION,
	/* contrastive: the last linear op of the graph sends the target's
	 * P_in minus that of its dual unit (the op's weights negated) */
	ESG_RULE_EXCITATION_CONTRAST,
	/* DeepLift rescale with every rule applied and max-pool multipliers
	 * accumulated over overlapping windows: sums to f(x) - f(ref) exactly
	 * (completeness); the map differs from Captum's at max pools */
	ESG_RULE_DEEPLIFT_COMPLETE,
	/* layer-wise relevance propagation: the backward pass carries relevance
	 * (Captum's and Zennit's convention), with the rules per layer type set
	 * by esg_model_set_lrp (lib/shim/rules_lrp.cpp).  The "gradient" at the
	 * input (or a layer) is the relevance for a start signal of 1 at the
	 * target score: times the score, it is LRP's map.  Refused under amp. */
	ESG_RULE_LRP
} esg_backward_rule;

/* 1 for the DeepLift rules (they need ref and run [x; ref] as one batch). */
static inline int esg_rule_is_deeplift(esg_backward_rule r)
{
	return r == ESG_RULE_DEEPLIFT || r == ESG_RULE_DEEPLIFT_COMPLETE;
}

/* The LRP rule table of later ESG_RULE_LRP passes, as lib/attr/lrp.c
 * writes it: "TYPE=RULE[:P1[:P2]];...;canonize=none|merge_bn" with TYPE a
 * layer type (Conv1d .. Conv3d, ConvTranspose1d .. 3d, Linear, BatchNorm,
 * AvgPool1d .. 3d, AdaptiveAvgPool1d .. 3d, MaxPool1d .. 3d,
 * AdaptiveMaxPool1d .. 3d, Upsample, Add, Sum, Mul; First: the first conv /
 * linear op) and RULE one of epsilon:EPS, gamma:G, alpha_beta:A:B, zplus,
 * flat, wsquare, zbox:LOW:HIGH ("auto": the item's min / max), pass,
 * gradient.  Checked now; every type an op needs must be there. */
int esg_model_set_lrp(esg_model *m, const char *spec);
/* The table set by esg_model_set_lrp (borrowed), or NULL if none. */
const char *esg_model_lrp(const esg_model *m);

/* Gradient of score_b = output[b, target[b]] with respect to the input,
 * for each batch item b (output must be [B, C]).  grad: caller buffer of
 * x's size.  score: caller buffer of B floats, or NULL.
 * ESG_RULE_DEEPLIFT: ref is the baseline batch (x's shape); input and
 * baseline run as one batch, grad receives the DeepLift multipliers
 * (attribution = (x - ref) * grad) and score score(x) - score(ref) (the
 * rules change the backward pass only, so these are the model's own
 * scores).  ref is ignored by the other rules. */
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
 * *grad_act: new F32 tensors of the layer's output shape; score as above.
 * ESG_RULE_DEEPLIFT: ref is the baseline batch and *act / *grad_act hold
 * 2B items, x's then ref's (layer DeepLift = (act[:B] - act[B:]) *
 * grad_act[:B]). */
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

/* Gradient with respect to the input of the layer objective
 * sum |A[b, channel]| (channel < 0: every channel) of each item b, where A
 * is the layer's output, with the ReLUs below it differentiated by `rule`
 * (ESG_RULE_GUIDED for the "layer activation with guided backprop" of the
 * CNN-visualisation literature).  grad: caller buffer of x's size.
 * *act (may be NULL): new F32 tensor, the layer's output.
 * (lib/shim/layer.cpp) */
int esg_model_layer_input_grad(esg_model *m, esg_layer_ref layer, esg_backward_rule rule,
			       const float *x, int ndim, const int64_t *shape, int channel,
			       float *grad, esg_tensor **act);

/* ---- wrapping: a new scripted module around a model ------------------ */

/* Build a TorchScript module whose submodule "model" is m and whose methods
 * are compiled from TorchScript source (share/wrappers/NAME.py); buffers are
 * registered under their tensor names before compiling. New.
 * The source calls the model as self.model.forward(x): TorchScript
 * compiled from C++ has no module __call__, so self.model(x) fails. */
esg_model *esg_model_wrap(esg_model *m, const char *source,
			  const esg_tensor *buffers, size_t n_buffers);
/* (A buffer named "mask" also registers the attribute origin: List[int],
 * zeros, one per spatial axis of the mask: where an input smaller
 * than the mask lies in it; share/wrappers/reduce_fixed_mask.py crops the
 * mask there.) */

/* Patches: place an input window of `size` at `origin` (nsp spatial axes)
 * in the volume of a model that has the attribute "origin" (a fixed-mask
 * wrapper).  Returns 1 if set, 0 if the model has no such attribute, -1 if
 * its "mask" cannot match the patch (spatial axes differ, the window falls
 * outside the mask, or a mask of another size and no origin). */
int esg_model_set_origin(esg_model *m, const int64_t *origin,
			 const int64_t *size, int nsp);
/* Patch batches: one call holds items of several patches.  Sets the fixed
 * mask of the model's next call (only that one) row by row: row r is scored
 * over the window of `size` at origin[r * nsp ...] of the mask's item
 * mask_item[r] (mod the mask's items).  A call of k * rows rows repeats
 * them (DeepLift's [x; baseline], a lone item's copy).  While windows are
 * in use, a call that comes without its own is an error, never a score
 * over the wrong windows.  rows 0: back to the whole mask (and the window
 * of esg_model_set_origin).  Returns 1 if set, 0 if the model has no mask
 * (its score does not depend on where a patch lies), -1 on error (a window
 * outside the mask). */
int esg_model_set_windows(esg_model *m, int64_t rows, const int64_t *mask_item,
			  const int64_t *origin, const int64_t *size, int nsp);

/* ---- per-voxel outputs of esg-wrap wrappers -------------------------
 * For receptive-field-local perturbation (lib/attr/local.h). */

/* How the wrapper's score sums over voxels, as its source declares
 * (method voxel_score of share/wrappers/reduce_*.py), copied into buf:
 * "fixed-mask" (channel c of the activated output times the buffer "mask",
 * summed), "argmax" (channel c where c is the voxel's argmax, summed) or ""
 * (not a sum of per-voxel terms: otsu).  -1 when m is no such wrapper. */
int esg_model_voxel_score(esg_model *m, char *buf, size_t n);
/* activation(model(x)) of such a wrapper, no autograd: *out new F32
 * tensor [B, C, spatial...] (the same shape as x but C).  check 0 lets
 * NaN / Inf through (probing the receptive field); refused under amp. */
int esg_model_voxel_forward(esg_model *m, const float *x, int ndim, const int64_t *shape,
			    int check, esg_tensor **out);
/* The score sum over voxels v of w[v] * g(y_v) of such a wrapper on one
 * item x ([1, C, spatial...]; y = activation(model(x)), g(y_v) = y_v[target],
 * times [argmax_c y_v == target] when argmax), summed in double into
 * *score, and its gradient with respect to x into grad (same shape as x;
 * NULL: the score alone, no autograd).  w: [spatial...].  For a tile of a
 * volume (lib/attr/local.h): w is the mask over the outputs the tile
 * answers for, 0 elsewhere.  Refused under amp. */
int esg_model_voxel_grad(esg_model *m, const float *x, int ndim, const int64_t *shape,
			 int64_t target, int argmax, const float *w, float *grad, double *score);
/* esg_model_grad (any rule; ref for DeepLift) on one item x ([1, C,
 * spatial...]) of a fixed-mask wrapper whose mask is, for this call only,
 * w ([spatial...], the same for every class): the gradient of the target's
 * score, sum over voxels of w[v] * y_v[target], into grad, and that score
 * (DeepLift: minus the baseline's) into *score.  For a tile of a volume
 * (lib/attr/local.h) under a backward rule. */
int esg_model_mask_grad(esg_model *m, esg_backward_rule rule, const float *x, const float *ref,
			int ndim, const int64_t *shape, int64_t target, const float *w, float *grad,
			double *score);
/* A buffer or tensor attribute of the model by name (e.g. "mask"): new F32. */
int esg_model_buffer_get(esg_model *m, const char *name, esg_tensor **out);

/* ---- parameters (lib/shim/params.cpp; used by esg-randomise) --------- */

typedef struct esg_param_info {
	char *name;          /* full dotted name, e.g. "enc1.conv1.weight" */
	char *module;        /* owning module's dotted name ("" for the root) */
	char *module_type;   /* owning module's type, e.g. "Conv3d" */
	char *leaf;          /* the name inside its module, e.g. "weight" */
	int ndim;
	int64_t shape[ESG_MAX_DIMS];
	int order;           /* index of the owning module in esg_model_layers()
	                      * (execution order); -1 if it is never called */
} esg_param_info;

/* New array of *n entries: every parameter, sorted by the execution order of
 * its owning module (never-called modules last), then registration order.
 * Free with esg_model_params_free. */
esg_param_info *esg_model_params(esg_model *m, size_t *n);
void esg_model_params_free(esg_param_info *p, size_t n);
/* A parameter's values: *out new F32 tensor named like the parameter. */
int esg_model_param_get(esg_model *m, const char *name, esg_tensor **out);
/* Overwrite a parameter in place (numel must match; converted to its dtype
 * and device).  Later forwards and esg_model_save see the new values. */
int esg_model_param_set(esg_model *m, const char *name, const float *data, int64_t numel);

/* ---- explainability: optimising an input (lib/shim/explain.cpp) ------- */

/* What is optimised.  A is the layer's output for the current image (the
 * graph is cut after the layer: nothing past it is computed); "item" is the
 * one image of shape [1, C, spatial...] being optimised. */
typedef enum esg_explain_objective {
	ESG_OBJ_NORM,       /* maximise ||A||_2 (A[:, channel] if channel >= 0): deepdream */
	ESG_OBJ_CHANNEL,    /* maximise mean(A[:, channel]) (feature_vis channel) */
	ESG_OBJ_UNIT,       /* maximise A[0, channel, unit...] (feature_vis unit) */
	ESG_OBJ_LAYER,      /* maximise mean(A^2) (feature_vis layer) */
	ESG_OBJ_CLASS,      /* maximise output[0, target] (class_model; no layer) */
	ESG_OBJ_INVERT      /* minimise ||A - A(x)||^2 / ||A(x)||^2 (invert) */
} esg_explain_objective;

typedef struct esg_explain_spec {
	esg_explain_objective objective;
	esg_layer_ref layer;        /* ESG_OBJ_CLASS: unused (the model output) */
	int channel;                /* -1: the whole layer */
	int n_unit;                 /* ESG_OBJ_UNIT: one index per spatial axis of A */
	int64_t unit[ESG_MAX_DIMS];
	int64_t target;             /* ESG_OBJ_CLASS */
	int steps;                  /* optimiser steps (per octave) */
	/* the image: pixels, or a Fourier spectrum with 1/f scaling (Lucid's
	 * fft_image, rFFT over every spatial axis, norm "ortho", / 4) */
	int fft;
	int decorrelate;            /* 3-channel 2D: Lucid's colour decorrelation */
	int init_input;             /* start from x; else seeded noise of init_std */
	double init_std;
	/* optimiser: Adam (PyTorch's, bias-corrected) or SGD with momentum;
	 * lr constant or cosine-annealed to 0 over the steps; normalize_grad:
	 * the gradient divided by its mean absolute value (deepdream) */
	int sgd;
	double lr, momentum, beta1, beta2, eps;
	int cosine;
	int normalize_grad;
	/* regularisers, added to the loss that is minimised: l2_decay ||x||^2
	 * (Simonyan et al.); Mahendran & Vedaldi's normalised alpha-norm
	 * alpha_weight * sum|x|^alpha / (V B^alpha) and total variation
	 * tv_weight * sum (dx^2 + dy^2 [+ dz^2])^(tv_beta/2) / (V (B/6.5)^tv_beta)
	 * (V: voxels of the item, B: bound, > 0); Gaussian blur of the image
	 * (sigma blur_sigma, replicate border) every blur_every steps (Yosinski
	 * et al.; 0: never) */
	double l2_decay, alpha, alpha_weight, tv_beta, tv_weight, bound;
	int blur_every;
	double blur_sigma;
	/* deepdream's image pyramid: octaves levels, each octave_scale times the
	 * last; the dream's detail is upsampled (bilinear / trilinear) and
	 * blurred (octave_blur sigma) into the next level's base */
	int octaves;
	double octave_scale, octave_blur;
	/* random transforms of the image before each forward (feature_vis):
	 * zero padding of pad voxels per side, a random roll of up to jitter,
	 * a random zoom in [scale_min, scale_max], a random rotation in
	 * [-rotate, rotate] degrees (2D), random flips per axis (flip, 3D) */
	int pad, jitter, flip;
	double scale_min, scale_max, rotate;
	uint64_t seed;              /* the generator of the noise and transforms */
	/* feature_vis: weight of Lucid's diversity term (the batch's items,
	 * optimised together, pushed apart: the mean over items of the summed
	 * cosine similarities of their layer Gram matrices with the others');
	 * 0: items are independent and x holds one */
	double diversity;
} esg_explain_spec;

/* Progress: done of total steps; the library never prints. */
typedef void (*esg_explain_progress)(void *ctx, int64_t done, int64_t total);

/* The number of values esg_model_explain writes into trace: steps x octaves. */
int64_t esg_explain_trace_len(const esg_explain_spec *s);

/* Optimise one item (with diversity: the batch, together).  x: the input
 * item [1, C, spatial...] (shape, ndim; [N, ...] with diversity):
 * the start image (deepdream, init_input) or the image whose
 * representation is inverted (invert); NULL: none (noise start, shape only).
 * image: caller buffer of x's size, the optimised image.  trace: caller
 * buffer of esg_explain_trace_len values, the objective's main term (the
 * activation norm, channel mean, class score, representation loss) at
 * each step as the optimiser saw it (under that step's transforms).
 * *initial / *final: the same term for the start / the final image, without
 * transforms.  Errors: a layer the model lacks or can't cut at, a channel or
 * unit past the layer's size, a target past the output's classes, a model
 * output that is not [1, C] (class objective). */
int esg_model_explain(esg_model *m, const esg_explain_spec *s, const float *x, int ndim,
		      const int64_t *shape, float *image, float *trace, double *initial,
		      double *final, esg_explain_progress cb, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
