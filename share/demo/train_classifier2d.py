#!/usr/bin/python3
"""Train the demo 2D classifier: aneurysm vs. normal in 2D angiogram phantoms.

  /usr/bin/python3 share/demo/train_classifier2d.py --out share/models/classifier2d.pt

Images are 64x64 2D phantoms (share/demo/phantom.py --dim 2): a planar vessel
tree in tissue with bias field and Rician noise; class 1 images also have a
saccular aneurysm (a round bulge on a vessel), whose mask is known, so
attribution maps can be scored against it.  Training set: seeds 10000+i,
i < --n-train, class i % 2; held-out: seeds 20000+i, i < --n-test.

Input normalisation is `esg-load --normalize zscore`: per image, (x - mean) /
std over all pixels, population std.  Input [N, 1, 64, 64]; output [N, 2]
logits, 0 = normal, 1 = aneurysm.  2 CPU threads, deterministic for --seed.
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
from train_unet3d import zscore  # noqa: E402

TRAIN_SEED0, TEST_SEED0 = 10000, 20000


class ConvBlock(nn.Sequential):
	def __init__(self, cin, cout):
		super().__init__()
		self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
		self.bn = nn.BatchNorm2d(cout)
		self.relu = nn.ReLU()
		self.pool = nn.MaxPool2d(2)


class Classifier2D(nn.Module):
	"""Three conv-BN-ReLU-maxpool blocks (16, 32, 32 channels; 64 -> 8 px),
	a last conv-BN-ReLU (the natural Grad-CAM layer, 8x8), global max
	pooling ("is there an aneurysm anywhere" is a max, and it trains much
	faster than average pooling here) and a Linear layer."""

	def __init__(self, cin=1, ncls=2):
		super().__init__()
		self.block1 = ConvBlock(cin, 16)
		self.block2 = ConvBlock(16, 32)
		self.block3 = ConvBlock(32, 32)
		self.conv4 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
		self.bn4 = nn.BatchNorm2d(64)
		self.relu4 = nn.ReLU()
		self.global_pool = nn.AdaptiveMaxPool2d(1)
		self.fc = nn.Linear(64, ncls)

	def forward(self, x):
		x = self.block3(self.block2(self.block1(x)))
		x = self.relu4(self.bn4(self.conv4(x)))
		return self.fc(torch.flatten(self.global_pool(x), 1))


def make_set(seed0, n):
	xs, ys = [], []
	for i in range(n):
		lab = i % 2
		img, _, _, _ = phantom.make_phantom(seed0 + i, 64, 2, aneurysm=bool(lab))
		xs.append(zscore(img))
		ys.append(lab)
	return np.stack(xs)[:, None], np.array(ys, np.int64)


def main():
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	ap.add_argument("--out", default="share/models/classifier2d.pt")
	ap.add_argument("--n-train", type=int, default=600)
	ap.add_argument("--n-test", type=int, default=200)
	ap.add_argument("--epochs", type=int, default=25)
	ap.add_argument("--batch", type=int, default=32)
	ap.add_argument("--threads", type=int, default=2)
	ap.add_argument("--seed", type=int, default=0)
	a = ap.parse_args()
	torch.set_num_threads(a.threads)
	torch.manual_seed(a.seed)
	rng = np.random.default_rng(a.seed)
	t0 = time.time()
	xtr, ytr = make_set(TRAIN_SEED0, a.n_train)
	xte, yte = make_set(TEST_SEED0, a.n_test)
	print("data: %d train + %d test images in %.1f s" % (len(xtr), len(xte), time.time() - t0), flush=True)
	model = Classifier2D()
	opt = torch.optim.Adam(model.parameters(), lr=2e-3)
	sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
	t1 = time.time()
	for ep in range(a.epochs):
		model.train()
		order = rng.permutation(len(xtr))
		tot = 0.0
		for b in range(0, len(order), a.batch):
			idx = order[b:b + a.batch]
			x = xtr[idx].copy()
			# Flips and 90-degree turns: an aneurysm is one whatever the view.
			if rng.random() < 0.5:
				x = x[..., ::-1]
			x = np.rot90(x, int(rng.integers(4)), axes=(2, 3))
			x = torch.from_numpy(np.ascontiguousarray(x))
			loss = F.cross_entropy(model(x), torch.from_numpy(ytr[idx]))
			opt.zero_grad()
			loss.backward()
			opt.step()
			tot += loss.item() * len(idx)
		sched.step()
		model.eval()
		with torch.no_grad():
			acc = (model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean()
		print("epoch %d  %.0f s  loss %.4f  held-out acc %.4f" % (ep + 1, time.time() - t1, tot / len(xtr), acc), flush=True)
	train_s = time.time() - t1
	model.eval()
	with torch.no_grad():
		pred = model(torch.from_numpy(xte)).argmax(1).numpy()
	acc = (pred == yte).mean()
	print("trained %d epochs in %.0f s" % (a.epochs, train_s))
	print("held-out accuracy (seeds %d..%d): %.4f (%d/%d)" % (
		TEST_SEED0, TEST_SEED0 + a.n_test - 1, acc, (pred == yte).sum(), len(yte)))
	ex = torch.from_numpy(xte[:1])
	with torch.no_grad():
		traced = torch.jit.trace(model, ex)
		assert torch.allclose(traced(ex), model(ex), atol=1e-5)
	os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
	tmp = a.out + ".tmp"
	traced.save(tmp)
	os.replace(tmp, a.out)
	print("saved %s (%d bytes, %d parameters)" % (
		a.out, os.path.getsize(a.out), sum(p.numel() for p in model.parameters())))
	print("modules:", " ".join(n for n, _ in model.named_modules() if n))


if __name__ == "__main__":
	main()
