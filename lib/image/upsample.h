/* upsample.h - resizing layer maps to the input grid, like PyTorch's
 * torch.nn.functional.interpolate (lib/upsample.c; no libtorch). */
#ifndef ESG_UPSAMPLE_H
#define ESG_UPSAMPLE_H

#include <stdint.h>

typedef enum esg_up_mode {
	ESG_UP_LINEAR,   /* "linear" / "bilinear" / "trilinear", align_corners=False */
	ESG_UP_NEAREST   /* "nearest" (PyTorch's legacy floor rule) */
} esg_up_mode;

/* Resize the spatial axes (2 .. ndim-1) of a float [N, C, spatial...]
 * array src to the sizes out_sp[0 .. ndim-3].  Linear mode is separable:
 * one axis after another, each as PyTorch computes it (source coordinate
 * (i + 0.5) * in/out - 0.5 clamped at 0, in float); so bilinear and
 * trilinear equal PyTorch's to float rounding.  dst: caller buffer of
 * N * C * prod(out_sp) floats.  Returns 0, or -1 with an error. */
int esg_upsample(const float *src, int ndim, const int64_t *shape,
		 const int64_t *out_sp, esg_up_mode mode, float *dst);

/* PyTorch's name of linear interpolation for n spatial axes:
 * "linear", "bilinear", "trilinear" (or "linear-nd"). */
const char *esg_upsample_name(int n_spatial);

#endif
