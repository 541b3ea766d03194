# esg-wrap --reduce argmax (TorchEsegeta's pixel-wise multi-class reduction).
# Score of class c = sum of channel c of the (activated) output over the voxels
# whose argmax over channels is c.  The argmax mask is recomputed at every
# forward pass (it carries no gradient); the gradient flows through the sum.
# A model that already returns [N, C] scores passes through unchanged.
# .float(): under mixed precision (esg-attr --amp) the model may return bf16 /
# fp16; activation runs in float32 (a no-op for a float32 output), the sum
# over voxels in float64 (sum.py).
def forward(self, x: Tensor) -> Tensor:
    y = self.activation(self.model.forward(x).float())
    if y.dim() == 2:
        return y
    idx = torch.argmax(y.detach(), dim=1, keepdim=True)
    onehot = torch.zeros_like(y).scatter_(1, idx, 1.0)
    return self.voxel_sum(y * onehot)

# How the score sums over voxels (lib/attr/local.h): channel c of the
# activated output at the voxels whose argmax is c -- each term depends on
# its own voxel's outputs only.
def voxel_score(self) -> str:
    return "argmax"
