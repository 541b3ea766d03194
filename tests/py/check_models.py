#!/usr/bin/python3
"""Check the shipped demo models on the shipped demo data (TAP output).

  /usr/bin/python3 tests/py/check_models.py [--root DIR] [--dice-floor 0.80]

unet3d.pt on share/data/phantom100[01]_image.nii.gz: output [1, 2, 64, 64, 64],
Dice of argmax == 1 against the vessel mask >= --dice-floor (0.80; the model
scores ~0.9, see share/models/README.md), batch of 2 gives the same per-item
result.  classifier2d.pt on the 2D images: output [N, 2], the aneurysm image
is class 1 and the normal one class 0.  Both models keep the layer names the
README documents.  Input is z-scored as `esg-load --normalize zscore` does.
Exit 0 when every check passes.
"""
import argparse
import os
import sys

import numpy as np
import torch

n = 0
failed = 0


def check(cond, desc):
	global n, failed
	n += 1
	print("%sok %d - %s" % ("" if cond else "not ", n, desc))
	if not cond:
		failed += 1


def zscore(x):
	x = np.asarray(x, np.float64)
	return ((x - x.mean()) / x.std()).astype(np.float32)


def dice(a, b):
	s = a.sum() + b.sum()
	return 2.0 * np.logical_and(a, b).sum() / s if s else 1.0


UNET_LAYERS = ["enc1", "enc1.conv1", "enc1.bn1", "enc1.relu1", "enc1.conv2", "enc1.bn2", "enc1.relu2",
	       "pool1", "enc2.conv1", "pool2", "bottleneck.conv2", "up2", "dec2.conv1", "up1",
	       "dec1.relu2", "head"]
CLS_LAYERS = ["block1.conv", "block1.bn", "block1.relu", "block1.pool", "block2.conv", "block3.pool",
	      "conv4", "bn4", "relu4", "global_pool", "fc"]


def main():
	ap = argparse.ArgumentParser()
	here = os.path.dirname(os.path.abspath(__file__))
	ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")))
	ap.add_argument("--dice-floor", type=float, default=0.80)
	a = ap.parse_args()
	torch.set_num_threads(2)
	import nibabel as nib
	share = os.path.join(a.root, "share")
	unet = torch.jit.load(os.path.join(share, "models", "unet3d.pt"))
	unet.eval()
	names = {k for k, _ in unet.named_modules()}
	check(all(l in names for l in UNET_LAYERS), "unet3d.pt has the documented layer names")
	xs = []
	for seed in (1000, 1001):
		img = nib.load(os.path.join(share, "data", "phantom%d_image.nii.gz" % seed))
		msk = nib.load(os.path.join(share, "data", "phantom%d_vessels.nii.gz" % seed))
		check(np.allclose(img.affine, msk.affine), "phantom%d: image and mask share the affine" % seed)
		x = zscore(img.get_fdata())
		xs.append(x)
		with torch.no_grad():
			y = unet(torch.from_numpy(x)[None, None])
		check(tuple(y.shape) == (1, 2, 64, 64, 64), "unet3d: output shape %s" % (tuple(y.shape),))
		d = dice(y.argmax(1)[0].numpy() == 1, np.asarray(msk.dataobj) == 1)
		check(d >= a.dice_floor, "unet3d: Dice %.4f >= %.2f on phantom%d" % (d, a.dice_floor, seed))
	with torch.no_grad():
		yb = unet(torch.from_numpy(np.stack(xs))[:, None])
		y1 = unet(torch.from_numpy(xs[1])[None, None])
	check(tuple(yb.shape) == (2, 2, 64, 64, 64) and torch.allclose(yb[1:], y1, atol=1e-4),
	      "unet3d: batch of 2 matches single runs (atol 1e-4)")

	cls = torch.jit.load(os.path.join(share, "models", "classifier2d.pt"))
	cls.eval()
	names = {k for k, _ in cls.named_modules()}
	check(all(l in names for l in CLS_LAYERS), "classifier2d.pt has the documented layer names")
	imgs = [zscore(np.load(os.path.join(share, "data", f)))
		for f in ("angio2d_20000_normal.npy", "angio2d_20001_aneurysm.npy")]
	with torch.no_grad():
		y = cls(torch.from_numpy(np.stack(imgs))[:, None])
	check(tuple(y.shape) == (2, 2), "classifier2d: output shape %s" % (tuple(y.shape),))
	check(y.argmax(1).tolist() == [0, 1], "classifier2d: normal -> 0, aneurysm -> 1 (%s)" % y.argmax(1).tolist())
	an = np.load(os.path.join(share, "data", "angio2d_20001_aneurysm_mask.npy"))
	check(an.shape == (64, 64) and 5 <= an.sum() <= 200, "aneurysm mask: 64x64, %d pixels" % an.sum())
	print("1..%d" % n)
	return 1 if failed else 0


if __name__ == "__main__":
	sys.exit(main())
