# esg-wrap --reduce fixed-mask: score of class c = sum of channel c of the
# (activated) output over a mask fixed when the wrapper was made (buffer
# "mask", [1 or N, 1 or C, spatial...]: the one-hot argmax of the model's
# prediction on an input, or a user ROI shared by all classes).  The objective
# is then smooth in the input: the recommended target for attribution.
# A patch of the volume (esg-attr --patch) is scored over the mask's window
# at self.origin (set per patch through the shim; zeros by default).
# A model returning [N, C] passes through.
# .float(): under mixed precision (esg-attr --amp) the model may return bf16 /
# fp16; activation runs in float32 (a no-op for a float32 output), the sum
# over voxels in float64 (sum.py).
def forward(self, x: Tensor) -> Tensor:
    y = self.activation(self.model.forward(x).float())
    if y.dim() == 2:
        return y
    m = self.mask
    if m.shape[2:] != y.shape[2:]:
        for d in range(2, y.dim()):
            m = m.narrow(d, self.origin[d - 2], y.size(d))
    return self.voxel_sum(y * m)

# How the score sums over voxels (esg-attr's receptive-field-local occlusion
# and feature ablation, lib/attr/local.h): channel c of the activated output
# times the mask, summed -- a sum of per-voxel terms with fixed weights.
def voxel_score(self) -> str:
    return "fixed-mask"
