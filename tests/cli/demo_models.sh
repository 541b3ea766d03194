#!/usr/bin/env bash
# The shipped demo models (share/models) on the shipped demo data (share/data):
# shapes, layer names, Dice >= 0.80 for the U-Net, correct classes for the 2D
# classifier; and the phantom generator is deterministic by seed.
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
expect_fail "phantom.py: --out-png with 3D is a usage error" 2 "needs --dim 2" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1 --out-png x.png
done_testing
