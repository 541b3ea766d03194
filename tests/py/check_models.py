#!/usr/bin/python3
"""Check the shipped demo models on the shipped demo data (TAP output).

  /usr/bin/python3 tests/py/check_models.py [--root DIR] [--dice-floor 0.80]

unet3d.pt, unet_mss.pt and unet_mss_deform.pt on
share/data/phantom100[01]_image.nii.gz: output [1, 2, 64, 64, 64], Dice of
argmax == 1 against the vessel mask >= --dice-floor (0.80; the models score
0.80-0.93, see share/models/README.md), batch of 2 gives the same per-item result.
The UNet-MSS files have what the README promises: five stride-2
convolutions, five transposed convolutions, instance norm, LeakyReLU (in
place and not) and no ReLU or max pool in their graphs, every LeakyReLU a
named module, no deep-supervision head left in the shipped file.
classifier2d.pt on the 2D images: output [N, 2], the aneurysm image is class
1 and the normal one class 0.  Every model keeps the layer names the
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
MSS_LAYERS = ["enc1", "enc1.conv1", "enc1.norm1", "enc1.lrelu1", "enc1.conv2", "enc1.norm2", "enc1.lrelu2",
	      "enc2", "enc3", "enc4", "enc5", "bottleneck", "bottleneck.conv1", "up5", "dec5", "up4", "dec4",
	      "up3", "dec3", "up2", "dec2", "dec2.lrelu2", "up1", "dec1", "dec1.norm2", "head"]
CLS_LAYERS = ["block1.conv", "block1.bn", "block1.relu", "block1.pool", "block2.conv", "block3.pool",
	      "conv4", "bn4", "relu4", "global_pool", "fc"]


def graph_ops(m):
	"""Op kinds of the inlined forward graph, with multiplicity."""
	ops = {}
	for node in m.inlined_graph.nodes():
		ops[node.kind()] = ops.get(node.kind(), 0) + 1
	return ops


def const_of(v):
	"""The constant value of a graph value (lists built of constants too)."""
	c = v.toIValue()
	if c is not None:
		return c
	node = v.node()
	if node.kind() == "prim::ListConstruct":
		return [const_of(i) for i in node.inputs()]
	raise ValueError("not a constant: %s" % node)


def conv_strides(m):
	"""(transposed, stride) of every aten::_convolution in the graph."""
	out = []
	for node in m.inlined_graph.nodes():
		if node.kind() == "aten::_convolution":
			ins = list(node.inputs())
			out.append((bool(const_of(ins[6])), tuple(const_of(ins[3]))))
	return out


def check_segmenter(share, fname, layers, floor, xs, masks):
	net = torch.jit.load(os.path.join(share, "models", fname))
	net.eval()
	names = {k for k, _ in net.named_modules()}
	missing = [l for l in layers if l not in names]
	check(not missing, "%s has the documented layer names%s" % (fname, " (missing %s)" % missing if missing else ""))
	for x, msk, seed in zip(xs, masks, (1000, 1001)):
		with torch.no_grad():
			y = net(torch.from_numpy(x)[None, None])
		check(tuple(y.shape) == (1, 2, 64, 64, 64), "%s: output shape %s" % (fname, tuple(y.shape),))
		d = dice(y.argmax(1)[0].numpy() == 1, msk == 1)
		check(d >= floor, "%s: Dice %.4f >= %.2f on phantom%d" % (fname, d, floor, seed))
	with torch.no_grad():
		yb = net(torch.from_numpy(np.stack(xs))[:, None])
		y1 = net(torch.from_numpy(xs[1])[None, None])
	check(tuple(yb.shape) == (2, 2, 64, 64, 64) and torch.allclose(yb[1:], y1, atol=1e-4),
	      "%s: batch of 2 matches single runs (atol 1e-4)" % fname)
	return net


def check_mss(net, fname):
	ops = graph_ops(net)
	convs = conv_strides(net)
	down = [c for c in convs if not c[0] and c[1] == (2, 2, 2)]
	up = [c for c in convs if c[0] and c[1] == (2, 2, 2)]
	check(len(down) == 5 and len(up) == 5,
	      "%s: five stride-2 convolutions down, five stride-2 transposed convolutions up (%d, %d)" %
	      (fname, len(down), len(up)))
	# 11 blocks (enc1..enc5, bottleneck, dec5..dec1) of two conv-IN-LeakyReLU
	check(ops.get("aten::instance_norm", 0) == 22, "%s: 22 instance norms (%d)" % (
		fname, ops.get("aten::instance_norm", 0)))
	check(ops.get("aten::leaky_relu_", 0) == 11 and ops.get("aten::leaky_relu", 0) == 11,
	      "%s: 11 in-place and 11 out-of-place LeakyReLUs (%d, %d)" % (
		      fname, ops.get("aten::leaky_relu_", 0), ops.get("aten::leaky_relu", 0)))
	bad = [k for k in ops if k in ("aten::relu", "aten::relu_", "aten::max_pool3d", "aten::batch_norm")]
	check(not bad, "%s: no ReLU, max pool or batch norm in the graph %s" % (fname, bad or ""))
	mods = [k for k, m in net.named_modules() if k]
	lrelu = [k for k in mods if k.rsplit(".", 1)[-1].startswith("lrelu")]
	check(len(lrelu) == 22, "%s: 22 LeakyReLU modules, one per graph op (%d)" % (fname, len(lrelu)))
	check(not any(k.startswith("heads") or k.startswith("model.") for k in mods),
	      "%s: no deep-supervision heads in the shipped model" % fname)
	n_params = sum(p.numel() for p in net.parameters())
	check(n_params < 250000, "%s: small (%d parameters)" % (fname, n_params))


def main():
	ap = argparse.ArgumentParser()
	here = os.path.dirname(os.path.abspath(__file__))
	ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")))
	ap.add_argument("--dice-floor", type=float, default=0.80)
	a = ap.parse_args()
	torch.set_num_threads(2)
	import nibabel as nib
	share = os.path.join(a.root, "share")
	xs, masks = [], []
	for seed in (1000, 1001):
		img = nib.load(os.path.join(share, "data", "phantom%d_image.nii.gz" % seed))
		msk = nib.load(os.path.join(share, "data", "phantom%d_vessels.nii.gz" % seed))
		check(np.allclose(img.affine, msk.affine), "phantom%d: image and mask share the affine" % seed)
		xs.append(zscore(img.get_fdata()))
		masks.append(np.asarray(msk.dataobj))
	check_segmenter(share, "unet3d.pt", UNET_LAYERS, a.dice_floor, xs, masks)
	for fname in ("unet_mss.pt", "unet_mss_deform.pt"):
		net = check_segmenter(share, fname, MSS_LAYERS, a.dice_floor, xs, masks)
		check_mss(net, fname)

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
