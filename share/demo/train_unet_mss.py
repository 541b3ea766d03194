#!/usr/bin/python3
"""Train a small UNet-MSS (DS6's multi-scale-supervised U-Net) on the phantoms.

  /usr/bin/python3 share/demo/train_unet_mss.py --out share/models/unet_mss.pt
  /usr/bin/python3 share/demo/train_unet_mss.py --deform --out share/models/unet_mss_deform.pt

The architecture follows the UNet-MSS of the DS6 paper (Chatterjee et al.,
"DS6, Deformation-aware semi-supervised learning", 2022) at a small scale:
five strided-convolution downsamplings (64^3 -> 2^3), transposed-convolution
upsampling, instance norm (affine), LeakyReLU (slope 0.01), skip
concatenations and multi-scale supervision: during training, 1x1x1 heads on
the three coarser decoder levels (32^3, 16^3, 8^3 for a 64^3 input) add
deep-supervision losses.  Those heads live in the training wrapper only; the
traced, shipped model returns the full-resolution logits [N, 2, D, H, W]
(channel 0 background, 1 vessel), the same interface as unet3d.pt.  D, H, W
must be divisible by 32.

Training: phantoms seeds 1..--n-train (64^3, share/demo/phantom.py), whole
volumes (the 2^3 bottleneck needs a 64^3 input: instance norm needs more
than one voxel), random flips on all three axes; --deform adds random elastic
deformation (see elastic()).  Evaluates Dice on held-out seeds 1000..1004,
traces the model in eval() mode with a 1x1x64x64x64 example and saves the
TorchScript file.  Deterministic for a given --seed (same torch build,
numpy and thread count).

Input normalisation is exactly what `esg-load --normalize zscore` does: per
volume, (x - mean) / std over every voxel, std the population std (ddof 0).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phantom  # noqa: E402
from train_unet3d import HELD_OUT, dice, load_phantom, predict  # noqa: E402


class Block(nn.Module):
	"""conv-IN-LeakyReLU twice; conv1 has stride `stride` (2: a strided-
	convolution downsampling).  lrelu1 is in place (graph op
	aten::leaky_relu_), lrelu2 is not (aten::leaky_relu), so tools meet both;
	no functional activations, every LeakyReLU is a named module."""

	def __init__(self, cin, cout, stride=1):
		super().__init__()
		self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
		self.norm1 = nn.InstanceNorm3d(cout, affine=True)
		self.lrelu1 = nn.LeakyReLU(0.01, inplace=True)
		self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
		self.norm2 = nn.InstanceNorm3d(cout, affine=True)
		self.lrelu2 = nn.LeakyReLU(0.01)

	def forward(self, x):
		x = self.lrelu1(self.norm1(self.conv1(x)))
		return self.lrelu2(self.norm2(self.conv2(x)))


def widths(base, cap, levels=6):
	return [min(base * 2 ** i, cap) for i in range(levels)]


class UNetMSS(nn.Module):
	"""Named like unet3d.pt by resolution: enc1 (full resolution), then
	enc2..enc5 and bottleneck, each starting with a stride-2 convolution
	(five downsamplings: 64^3 -> 2^3); up5..up1 ConvTranspose3d(2, stride 2)
	feed dec5..dec1 with [up, skip]; head 1x1x1 -> 2 classes.  encK and decK
	work at 64/2^(K-1) voxels per side, as in unet3d.pt, so enc1, enc2, dec2,
	dec1, bottleneck and head exist in all the 3D demo models.  forward()
	returns the full-resolution logits; features() also returns dec2..dec4
	for the deep-supervision heads."""

	def __init__(self, cin=1, ncls=2, base=4, cap=16):
		super().__init__()
		w = widths(base, cap)
		self.w = w
		self.enc1 = Block(cin, w[0])
		self.enc2 = Block(w[0], w[1], 2)
		self.enc3 = Block(w[1], w[2], 2)
		self.enc4 = Block(w[2], w[3], 2)
		self.enc5 = Block(w[3], w[4], 2)
		self.bottleneck = Block(w[4], w[5], 2)
		self.up5 = nn.ConvTranspose3d(w[5], w[4], 2, stride=2)
		self.dec5 = Block(2 * w[4], w[4])
		self.up4 = nn.ConvTranspose3d(w[4], w[3], 2, stride=2)
		self.dec4 = Block(2 * w[3], w[3])
		self.up3 = nn.ConvTranspose3d(w[3], w[2], 2, stride=2)
		self.dec3 = Block(2 * w[2], w[2])
		self.up2 = nn.ConvTranspose3d(w[2], w[1], 2, stride=2)
		self.dec2 = Block(2 * w[1], w[1])
		self.up1 = nn.ConvTranspose3d(w[1], w[0], 2, stride=2)
		self.dec1 = Block(2 * w[0], w[0])
		self.head = nn.Conv3d(w[0], ncls, 1)

	def features(self, x):
		e1 = self.enc1(x)
		e2 = self.enc2(e1)
		e3 = self.enc3(e2)
		e4 = self.enc4(e3)
		e5 = self.enc5(e4)
		b = self.bottleneck(e5)
		d5 = self.dec5(torch.cat([self.up5(b), e5], dim=1))
		d4 = self.dec4(torch.cat([self.up4(d5), e4], dim=1))
		d3 = self.dec3(torch.cat([self.up3(d4), e3], dim=1))
		d2 = self.dec2(torch.cat([self.up2(d3), e2], dim=1))
		d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
		return self.head(d1), (d2, d3, d4)

	def forward(self, x):
		return self.features(x)[0]


class DeepSupervision(nn.Module):
	"""Training wrapper: the model plus 1x1x1 heads on dec2, dec3, dec4
	(1/2, 1/4, 1/8 resolution).  Not shipped."""

	def __init__(self, model, ncls=2):
		super().__init__()
		self.model = model
		w = model.w
		self.heads = nn.ModuleList([nn.Conv3d(w[i], ncls, 1) for i in (1, 2, 3)])

	def forward(self, x):
		y, ds = self.model.features(x)
		return [y] + [h(d) for h, d in zip(self.heads, ds)]


def seg_loss(logits, target):
	"""As for unet3d: cross-entropy (class weights 1, 5) + soft Dice on the
	vessel channel.  Vessels are ~0.6 % of voxels."""
	w = torch.tensor([1.0, 5.0])
	ce = F.cross_entropy(logits, target, weight=w)
	p = logits.softmax(1)[:, 1]
	t = (target == 1).float()
	sd = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
	return ce + sd


DS_WEIGHTS = (1.0, 0.5, 0.25, 0.125)


def mss_loss(outs, target):
	"""Multi-scale supervision: the full-resolution loss plus the losses of
	the coarser heads against max-pooled targets (a coarse voxel is vessel
	when any of its voxels is, so thin vessels survive), weights 1, 1/2,
	1/4, 1/8 normalised to sum 1."""
	t = target[:, None].float()
	total = 0.0
	for k, (o, wk) in enumerate(zip(outs, DS_WEIGHTS)):
		tk = t if k == 0 else F.max_pool3d(t, 2 ** k)
		total = total + wk * seg_loss(o, tk[:, 0].long())
	return total / sum(DS_WEIGHTS)


def displacement(rng, shape, grid=5, sigma=2.0):
	"""A smooth random displacement field [3, D, H, W] in voxels: normal
	noise (standard deviation `sigma` voxels) on grid^3 control points per
	component, upsampled trilinearly to (2 grid)^3 and then to the volume
	(two stages: smoother than one), so displacements of ~sigma voxels vary
	over ~size / (grid - 1) voxels.  One rng.normal draw."""
	coarse = torch.from_numpy(rng.normal(0.0, sigma, size=(1, 3, grid, grid, grid)).astype(np.float32))
	mid = F.interpolate(coarse, size=(2 * grid,) * 3, mode="trilinear", align_corners=True)
	return F.interpolate(mid, size=tuple(shape), mode="trilinear", align_corners=True)[0]


def warp(v, m, disp):
	"""out(p) = v(p + disp(p)): the image resampled trilinearly, the mask
	with nearest neighbour (torch.nn.functional.grid_sample, border
	padding).  v, m numpy D x H x W; disp [3, D, H, W] in voxels along
	D, H, W."""
	shape = v.shape
	base = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
	coords = [base[i] + disp[i] for i in range(3)]
	# grid_sample wants (x, y, z) = (W, H, D) order, normalised to [-1, 1].
	g = torch.stack([2.0 * coords[i] / (shape[i] - 1) - 1.0 for i in (2, 1, 0)], dim=-1)[None]
	vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None, None]
	mt = torch.from_numpy(np.ascontiguousarray(m)).float()[None, None]
	vd = F.grid_sample(vt, g, mode="bilinear", padding_mode="border", align_corners=True)
	md = F.grid_sample(mt, g, mode="nearest", padding_mode="border", align_corners=True)
	return vd[0, 0].numpy(), md[0, 0].numpy().astype(np.int64)


def elastic(rng, v, m, grid=5, sigma=2.0):
	"""Random elastic deformation of volume v and mask m (numpy, D x H x W):
	warp() by a displacement() field.  The mask stays binary (nearest
	neighbour); thin vessels may lose or gain a voxel at their border."""
	return warp(v, m, displacement(rng, v.shape, grid, sigma))


def augment(rng, v, m, deform, p_deform):
	for ax in range(3):
		if rng.random() < 0.5:
			v, m = np.flip(v, ax), np.flip(m, ax)
	if deform and rng.random() < p_deform:
		v, m = elastic(rng, v, m)
	return np.ascontiguousarray(v), np.ascontiguousarray(m)


def main():
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	ap.add_argument("--out", default="share/models/unet_mss.pt")
	ap.add_argument("--deform", action="store_true", help="elastic deformation augmentation")
	ap.add_argument("--p-deform", type=float, default=0.5, help="probability of deforming a volume")
	ap.add_argument("--n-train", type=int, default=40)
	ap.add_argument("--steps", type=int, default=160)
	ap.add_argument("--max-minutes", type=float, default=90.0,
			help="safety cap; stopping on it makes the run machine-dependent")
	ap.add_argument("--base", type=int, default=4)
	ap.add_argument("--cap", type=int, default=16)
	ap.add_argument("--batch", type=int, default=2)
	ap.add_argument("--lr", type=float, default=3e-3)
	ap.add_argument("--threads", type=int, default=1)
	ap.add_argument("--seed", type=int, default=0)
	ap.add_argument("--init", metavar="FILE.pt",
			help="start from this traced UNet-MSS's weights (a second stage; the "
			"deep-supervision heads start afresh)")
	a = ap.parse_args()
	torch.set_num_threads(a.threads)
	torch.manual_seed(a.seed)
	rng = np.random.default_rng(a.seed)
	t0 = time.time()
	data = [load_phantom(s) for s in range(1, a.n_train + 1)]
	vols, masks = [d[0] for d in data], [d[1] for d in data]
	held = [load_phantom(s) for s in HELD_OUT]
	print("data: %d train + %d held-out phantoms in %.1f s" % (len(vols), len(held), time.time() - t0), flush=True)
	model = UNetMSS(base=a.base, cap=a.cap)
	net = DeepSupervision(model)
	if a.init:
		model.load_state_dict(torch.jit.load(a.init).state_dict())
		print("weights from %s" % a.init, flush=True)
	opt = torch.optim.Adam(net.parameters(), lr=a.lr)
	t1 = time.time()
	step = 0
	while step < a.steps:
		if time.time() - t1 > a.max_minutes * 60.0:
			print("warning: stopped at step %d by --max-minutes" % step, flush=True)
			break
		# Learning rate: lr, then lr/3 after 60 %, lr/10 after 85 % of the steps.
		frac = step / a.steps
		lr = a.lr if frac < 0.6 else (a.lr / 3 if frac < 0.85 else a.lr / 10)
		for g in opt.param_groups:
			g["lr"] = lr
		idx = rng.integers(len(vols), size=a.batch)
		xs, ys = zip(*[augment(rng, vols[i], masks[i], a.deform, a.p_deform) for i in idx])
		x = torch.from_numpy(np.stack(xs))[:, None]
		y = torch.from_numpy(np.stack(ys))
		net.train()
		loss = mss_loss(net(x), y)
		opt.zero_grad()
		loss.backward()
		opt.step()
		step += 1
		if step % 25 == 0:
			print("step %d  %.0f s  lr %.0e  loss %.4f" % (step, time.time() - t1, lr, loss.item()), flush=True)
	train_s = time.time() - t1
	model.eval()
	ds = [dice(predict(model, v) == 1, m == 1) for v, m in held]
	print("trained %d steps in %.0f s" % (step, train_s))
	print("held-out Dice (seeds %s): %s  mean %.4f" % (
		",".join(map(str, HELD_OUT)), " ".join("%.4f" % d for d in ds), np.mean(ds)))
	ex = torch.from_numpy(held[0][0])[None, None]
	with torch.no_grad():
		traced = torch.jit.trace(model, ex)
		ref = model(ex)
		assert torch.allclose(traced(ex), ref, atol=1e-5)
	os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
	tmp = a.out + ".tmp"
	traced.save(tmp)
	os.replace(tmp, a.out)
	print("saved %s (%d bytes, %d parameters)" % (
		a.out, os.path.getsize(a.out), sum(p.numel() for p in model.parameters())))
	print("modules:", " ".join(n for n, _ in model.named_modules() if n))


if __name__ == "__main__":
	main()
