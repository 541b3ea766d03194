#!/usr/bin/python3
"""Train the demo 3D U-Net (vessel segmentation) on synthetic TOF-MRA phantoms.

  /usr/bin/python3 share/demo/train_unet3d.py --out share/models/unet3d.pt

Trains on phantoms with seeds 1..--n-train (64^3, share/demo/phantom.py) with
random 32^3 crops (batch 2, half of them centred near a vessel)
and flips for 600 steps on 2 CPU threads, then evaluates Dice on held-out
seeds 1000..1004, traces the model in eval() mode with a 1x1x64x64x64 example
and saves the TorchScript file.  Deterministic for a given --seed (same torch
build and thread count).

Input normalisation is exactly what `esg-load --normalize zscore` does: per
volume, (x - mean) / std over every voxel, std the population std (ddof 0).
Output: [N, 2, D, H, W] logits, channel 0 background, channel 1 vessel.
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

HELD_OUT = (1000, 1001, 1002, 1003, 1004)


class Block(nn.Module):
	"""conv-BN-ReLU twice; relu1 is in-place (as in many published U-Nets),
	relu2 is not, so tools meet both kinds."""

	def __init__(self, cin, cout):
		super().__init__()
		self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)
		self.bn1 = nn.BatchNorm3d(cout)
		self.relu1 = nn.ReLU(inplace=True)
		self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
		self.bn2 = nn.BatchNorm3d(cout)
		self.relu2 = nn.ReLU()

	def forward(self, x):
		x = self.relu1(self.bn1(self.conv1(x)))
		return self.relu2(self.bn2(self.conv2(x)))


class UNet3D(nn.Module):
	"""Two-level 3D U-Net, base 8 channels: 8 -> 16 -> 32 (bottleneck)."""

	def __init__(self, cin=1, ncls=2, base=8):
		super().__init__()
		self.enc1 = Block(cin, base)
		self.pool1 = nn.MaxPool3d(2)
		self.enc2 = Block(base, 2 * base)
		self.pool2 = nn.MaxPool3d(2)
		self.bottleneck = Block(2 * base, 4 * base)
		self.up2 = nn.ConvTranspose3d(4 * base, 2 * base, 2, stride=2)
		self.dec2 = Block(4 * base, 2 * base)
		self.up1 = nn.ConvTranspose3d(2 * base, base, 2, stride=2)
		self.dec1 = Block(2 * base, base)
		self.head = nn.Conv3d(base, ncls, 1)

	def forward(self, x):
		e1 = self.enc1(x)
		e2 = self.enc2(self.pool1(e1))
		b = self.bottleneck(self.pool2(e2))
		d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
		d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
		return self.head(d1)


def zscore(x):
	"""What esg-load --normalize zscore does: whole volume, population std."""
	x = x.astype(np.float64)
	return ((x - x.mean()) / x.std()).astype(np.float32)


def load_phantom(seed, size=64):
	"""Image as written to disk (int16, x1000) so training sees the same
	values as a user loading the shipped .nii.gz, then z-scored."""
	img, mask, _, _ = phantom.make_phantom(seed, size, 3)
	return zscore(phantom.to_int16(img)), mask.astype(np.int64)


def dice(pred, gt):
	inter = np.logical_and(pred, gt).sum()
	s = pred.sum() + gt.sum()
	return 2.0 * inter / s if s else 1.0


def predict(model, x):
	with torch.no_grad():
		return model(torch.from_numpy(x)[None, None]).argmax(1)[0].numpy()


def random_crop(rng, vols, masks, fg, crop):
	"""A crop anywhere, or (half of the time) one around a vessel voxel."""
	i = rng.integers(len(vols))
	v, m = vols[i], masks[i]
	if rng.random() < 0.5 and len(fg[i]):
		c = fg[i][rng.integers(len(fg[i]))]
		o = [int(np.clip(cc - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, s - crop))
		     for cc, s in zip(c, v.shape)]
	else:
		o = [rng.integers(0, s - crop + 1) for s in v.shape]
	sl = tuple(slice(a, a + crop) for a in o)
	v, m = v[sl], m[sl]
	for ax in range(3):  # flips keep tubes tubes
		if rng.random() < 0.5:
			v, m = np.flip(v, ax), np.flip(m, ax)
	return np.ascontiguousarray(v), np.ascontiguousarray(m)


def loss_fn(logits, target):
	# Vessels are ~0.6 % of voxels: cross-entropy with a vessel weight plus
	# soft Dice on the vessel channel.
	w = torch.tensor([1.0, 5.0])
	ce = F.cross_entropy(logits, target, weight=w)
	p = logits.softmax(1)[:, 1]
	t = (target == 1).float()
	sd = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
	return ce + sd


def main():
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	ap.add_argument("--out", default="share/models/unet3d.pt")
	ap.add_argument("--n-train", type=int, default=40)
	ap.add_argument("--steps", type=int, default=600)
	ap.add_argument("--max-minutes", type=float, default=45.0,
			help="safety cap; stopping on it makes the run machine-dependent")
	ap.add_argument("--crop", type=int, default=32)
	ap.add_argument("--batch", type=int, default=2)
	ap.add_argument("--threads", type=int, default=2)
	ap.add_argument("--seed", type=int, default=0)
	a = ap.parse_args()
	torch.set_num_threads(a.threads)
	torch.manual_seed(a.seed)
	rng = np.random.default_rng(a.seed)
	t0 = time.time()
	data = [load_phantom(s) for s in range(1, a.n_train + 1)]
	vols, masks = [d[0] for d in data], [d[1] for d in data]
	fg = [np.argwhere(m == 1) for m in masks]
	held = [load_phantom(s) for s in HELD_OUT]
	print("data: %d train + %d held-out phantoms in %.1f s" % (len(vols), len(held), time.time() - t0), flush=True)
	model = UNet3D()
	opt = torch.optim.Adam(model.parameters(), lr=3e-3)
	t1 = time.time()
	step = 0
	while step < a.steps:
		if time.time() - t1 > a.max_minutes * 60.0:
			print("warning: stopped at step %d by --max-minutes" % step, flush=True)
			break
		# Learning rate: 3e-3, then 1e-3 after 60 %, 3e-4 after 85 % of the steps.
		frac = step / a.steps
		lr = 3e-3 if frac < 0.6 else (1e-3 if frac < 0.85 else 3e-4)
		for g in opt.param_groups:
			g["lr"] = lr
		xs, ys = zip(*[random_crop(rng, vols, masks, fg, a.crop) for _ in range(a.batch)])
		x = torch.from_numpy(np.stack(xs))[:, None]
		y = torch.from_numpy(np.stack(ys))
		model.train()
		loss = loss_fn(model(x), y)
		opt.zero_grad()
		loss.backward()
		opt.step()
		step += 1
		if step % 50 == 0:
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
