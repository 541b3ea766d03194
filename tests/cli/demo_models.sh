#!/usr/bin/env bash
# The shipped demo models (share/models) on the shipped demo data (share/data):
# shapes, layer names, Dice >= 0.80 for the three 3D segmenters (U-Net,
# UNet-MSS, UNet-MSS trained with elastic deformation), the UNet-MSS graph
# (strided / transposed convolutions, instance norm, LeakyReLU), correct
# classes for the 2D classifier; the phantom generator is deterministic by
# seed, --shape N,N,N is --size N, and an anisotropic --shape gives the
# asked shape with vessels inside the brain; and the UNet-MSS training script's pieces (elastic deformation,
# deep-supervision heads) do what share/models/README.md says.
# needs: torch
. "$(dirname "$0")/lib.sh"

check "models: shapes, layer names, Dice floor, classes (tests/py/check_models.py)" \
	$PYTHON "$ESG_ROOT/tests/py/check_models.py" --root "$ESG_ROOT"
check "phantom.py: 2D phantom with an aneurysm" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --dim 2 --aneurysm --seed 20001 \
	--out-image a.npy --out-aneurysm am.npy
check "phantom.py: the same seed gives the shipped 2D image and mask" \
	cmp a.npy "$ESG_ROOT/share/data/angio2d_20001_aneurysm.npy"
check "phantom.py: the same aneurysm mask" \
	cmp am.npy "$ESG_ROOT/share/data/angio2d_20001_aneurysm_mask.npy"
check "phantom.py: 3D phantom, 32^3" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 3 --size 32 --out-image i.nii.gz --out-mask m.nii.gz
check "phantom.py: 3D image int16 and mask uint8 share an RAS affine, mask not empty" \
	$PYTHON -c '
import nibabel as nib, numpy as np
i, m = nib.load("i.nii.gz"), nib.load("m.nii.gz")
assert i.shape == m.shape == (32, 32, 32)
assert i.get_data_dtype() == np.int16 and m.get_data_dtype() == np.uint8
assert np.allclose(i.affine, m.affine) and np.allclose(np.diag(i.affine)[:3], [0.6, 0.6, 0.7])
assert 0 < np.asarray(m.dataobj).mean() < 0.1
'
check "phantom.py: seed 1000 regenerates the shipped 3D phantom voxel for voxel" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1000 --size 64 --out-image p.nii.gz --out-mask pm.nii.gz
check "phantom.py: same image, mask and affine as share/data/phantom1000_*" \
	$PYTHON -c '
import sys, nibabel as nib, numpy as np
d = sys.argv[1] + "/share/data/"
for new, old in (("p.nii.gz", "phantom1000_image.nii.gz"), ("pm.nii.gz", "phantom1000_vessels.nii.gz")):
	a, b = nib.load(new), nib.load(d + old)
	assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), old
	assert np.array_equal(a.affine, b.affine), old
' "$ESG_ROOT"
check "phantom.py: --shape 32,32,32 is --size 32 (seed 3), file for file" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 3 --shape 32,32,32 --out-image ic.nii.gz --out-mask mc.nii.gz
check "phantom.py: --shape 32,32,32 gives the same image and mask bytes as --size 32" \
	sh -c "cmp i.nii.gz ic.nii.gz && cmp m.nii.gz mc.nii.gz"
check "phantom.py: 2D --shape 64,64 --aneurysm is the shipped angio2d_20001 (image, aneurysm mask)" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --shape 64,64 --aneurysm --seed 20001 \
	--out-image as.npy --out-aneurysm ams.npy
check "phantom.py: ... byte for byte" sh -c "cmp as.npy a.npy && cmp ams.npy am.npy"
check "phantom.py: anisotropic --shape 40,48,24 (3D) and 24,56 (2D, with aneurysm), .nii.gz and .npy" \
	sh -c "$PYTHON '$ESG_ROOT/share/demo/phantom.py' --seed 5 --shape 40,48,24 --out-image s.nii.gz --out-mask sm.nii.gz &&
	$PYTHON '$ESG_ROOT/share/demo/phantom.py' --seed 5 --shape 40,48,24 --out-image s.npy --out-mask sm.npy &&
	$PYTHON '$ESG_ROOT/share/demo/phantom.py' --seed 6 --shape 24,56 --aneurysm --out-image s2.npy --out-mask sm2.npy --out-aneurysm sa2.npy"
check "phantom.py: --shape: output shapes and types; mask 0.05-10 % of voxels, inside the brain ellipsoid and bright; .npy = .nii.gz" \
	$PYTHON -c '
import nibabel as nib, numpy as np
i, m = nib.load("s.nii.gz"), nib.load("sm.nii.gz")
assert i.shape == m.shape == (40, 48, 24), i.shape
assert i.get_data_dtype() == np.int16 and m.get_data_dtype() == np.uint8
assert np.allclose(i.affine, m.affine) and np.allclose(np.diag(i.affine)[:3], [0.6, 0.6, 0.7])
img, msk = np.asarray(i.dataobj), np.asarray(m.dataobj)
f, fm = np.load("s.npy"), np.load("sm.npy")
assert f.dtype == np.float32 and f.shape == (40, 48, 24) and np.array_equal(fm, msk)
assert np.array_equal(np.clip(np.round(f * 1000.0), 0, 32767).astype(np.int16), img)
for vol, mask, extra in ((f, fm, None), (np.load("s2.npy"), np.load("sm2.npy"), np.load("sa2.npy"))):
	assert vol.shape == mask.shape and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
	assert 0.0005 < mask.mean() < 0.1, mask.mean()
	# brain: ellipsoid, semi-axes <= 0.92 of each half-axis, surface wobble 0.04 x N(0, 1)
	g = np.meshgrid(*[np.linspace(-1, 1, n) for n in mask.shape], indexing="ij")
	q = np.sqrt(sum((a / 0.92) ** 2 for a in g))
	assert q[mask > 0].max() < 1.16, q[mask > 0].max()
	# vessels are bright (>= 0.62 x partial volume), the outside is ~0.04
	assert np.percentile(vol[mask > 0], 1) > 0.25 and np.median(vol[q > 1.3]) < 0.1
	if extra is not None:
		assert extra.shape == mask.shape and 0 < extra.sum() and vol[extra > 0].mean() > 0.6
'
expect_fail "phantom.py: --size and --shape together are a usage error" 2 "not allowed with" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1 --size 32 --shape 32,32,32
expect_fail "phantom.py: --shape with 4 sizes is a usage error" 2 "want 3 .X,Y,Z. or 2" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1 --shape 32,32,32,2
expect_fail "phantom.py: --dim 2 with a 3D --shape is a usage error" 2 "does not match" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1 --dim 2 --shape 32,32,32
expect_fail "phantom.py: --shape with a side under 16 is a usage error" 2 "at least 16" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1 --shape 64,64,8
check "phantom.py: the 2D PNG decodes (zlib) to the 8-bit image, 64x64" \
	$PYTHON -c '
import struct, sys, zlib, numpy as np
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n"
w, h = struct.unpack(">II", b[16:24])
i = b.index(b"IDAT")
n = struct.unpack(">I", b[i - 4:i])[0]
raw = np.frombuffer(zlib.decompress(b[i + 4:i + 4 + n]), np.uint8).reshape(h, w + 1)[:, 1:]
x = np.load(sys.argv[2])
assert (w, h) == (64, 64)
assert np.abs(raw.astype(float) - np.clip(np.round(x / 1.3 * 255), 0, 255)).max() <= 0
' "$ESG_ROOT/share/data/angio2d_20001_aneurysm.png" "$ESG_ROOT/share/data/angio2d_20001_aneurysm.npy"
MSS="import sys; sys.path.insert(0, '$ESG_ROOT/share/demo'); import numpy as np, torch; torch.set_num_threads(1); import train_unet_mss as t"
check "train_unet_mss.py: warp() by a constant displacement is a shift (D +1, W -2), image and mask, exact" \
	$PYTHON -c "$MSS"'
rng = np.random.default_rng(1)
v = rng.normal(size=(8, 9, 10)).astype(np.float32)
m = (rng.random((8, 9, 10)) < 0.3).astype(np.int64)
d = torch.zeros(3, 8, 9, 10)
d[0] = 1.0
vd, md = t.warp(v, m, d)
assert np.allclose(vd[:-1], v[1:], atol=1e-5) and np.array_equal(md[:-1], m[1:])
d = torch.zeros(3, 8, 9, 10)
d[2] = -2.0
vd, md = t.warp(v, m, d)
assert np.allclose(vd[:, :, 2:], v[:, :, :-2], atol=1e-5) and np.array_equal(md[:, :, 2:], m[:, :, :-2])
vd, md = t.warp(v, m, torch.zeros(3, 8, 9, 10))
assert np.allclose(vd, v, atol=1e-5) and np.array_equal(md, m)
'
check "train_unet_mss.py: displacement() is seeded, smooth (neighbours differ < 1 voxel: no folding), RMS 0.5-1.5 voxels" \
	$PYTHON -c "$MSS"'
for s in range(4):
	a = t.displacement(np.random.default_rng(s), (64, 64, 64))
	b = t.displacement(np.random.default_rng(s), (64, 64, 64))
	assert tuple(a.shape) == (3, 64, 64, 64) and torch.equal(a, b)
	assert max(a.diff(dim=k).abs().max().item() for k in (1, 2, 3)) < 1.0
	assert 0.5 < a.pow(2).mean().sqrt().item() < 1.5
'
check "train_unet_mss.py: elastic() keeps the mask binary and its volume within 20 %, moves the image" \
	$PYTHON -c "$MSS"'
from train_unet3d import load_phantom
v, m = load_phantom(1000)
vd, md = t.elastic(np.random.default_rng(0), v, m)
assert set(np.unique(md)) <= {0, 1} and abs(md.sum() - m.sum()) < 0.2 * m.sum()
assert np.abs(vd - v).mean() > 0.05 and vd.dtype == np.float32
'
check "train_unet_mss.py: deep-supervision heads at 1/2, 1/4, 1/8; the shipped forward is the full-resolution output; loss trains the heads" \
	$PYTHON -c "$MSS"'
torch.manual_seed(0)
net = t.DeepSupervision(t.UNetMSS())
x = torch.randn(2, 1, 64, 64, 64)
outs = net(x)
assert [tuple(o.shape) for o in outs] == [(2, 2, 64, 64, 64), (2, 2, 32, 32, 32), (2, 2, 16, 16, 16), (2, 2, 8, 8, 8)]
assert torch.equal(net.model(x), outs[0])
y = (torch.rand(2, 64, 64, 64) < 0.01).long()
loss = t.mss_loss(outs, y)
loss.backward()
assert torch.isfinite(loss) and all(h.weight.grad.abs().sum() > 0 for h in net.heads)
'
expect_fail "phantom.py: --out-png with 3D is a usage error" 2 "needs --dim 2" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1 --out-png x.png
done_testing
