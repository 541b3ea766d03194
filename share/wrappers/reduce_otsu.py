# esg-wrap --reduce otsu (TorchEsegeta's threshold reduction).
# Per item n and channel c of the (activated) output y: z = min-max normalised
# y[n, c]; t = Otsu's threshold of z from a 256-bin histogram on [0, 1], with
# bin centres as candidate thresholds (as skimage.filters.threshold_otsu);
# score[n, c] = sum of y[n, c] over the voxels with z > t.  One-channel
# outputs give two scores: [sum over z <= t, sum over z > t].
# Masks carry no gradient; a model returning [N, C] passes through.
# .float(): under mixed precision (esg-attr --amp) the model may return bf16 /
# fp16; activation runs in float32 (a no-op for a float32 output), the sum
# over voxels in float64 (sum.py).
def otsu(self, z: Tensor) -> float:
    nbins = 256
    hist = torch.histc(z, bins=nbins, min=0.0, max=1.0).double()
    centers = (torch.arange(nbins, device=z.device).double() + 0.5) / nbins
    w1 = torch.cumsum(hist, 0)
    w2 = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])
    m1 = torch.cumsum(hist * centers, 0) / w1.clamp_min(1e-300)
    m2 = torch.flip(torch.cumsum(torch.flip(hist * centers, [0]), 0), [0]) / w2.clamp_min(1e-300)
    var = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centers[int(torch.argmax(var))])

def forward(self, x: Tensor) -> Tensor:
    y = self.activation(self.model.forward(x).float())
    if y.dim() == 2:
        return y
    yf = y.flatten(2)
    yd = yf.detach()
    lo = torch.amin(yd, dim=2, keepdim=True)
    hi = torch.amax(yd, dim=2, keepdim=True)
    z = (yd - lo) / (hi - lo).clamp_min(1e-12)
    rows: List[Tensor] = []
    for i in range(z.size(0)):
        cols: List[Tensor] = []
        for j in range(z.size(1)):
            cols.append((z[i, j] > self.otsu(z[i, j])).to(yf.dtype))
        rows.append(torch.stack(cols))
    mask = torch.stack(rows)
    above = self.voxel_sum(yf * mask)
    if y.size(1) == 1:
        return torch.cat([self.voxel_sum(yf * (1.0 - mask)), above], 1)
    return above

# How the score sums over voxels (lib/attr/local.h): it does not -- the
# threshold and the min-max normalisation depend on the whole volume.
def voxel_score(self) -> str:
    return ""
