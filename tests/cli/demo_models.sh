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
expect_fail "phantom.py: --out-png with 3D is a usage error" 2 "needs --dim 2" \
	$PYTHON "$ESG_ROOT/share/demo/phantom.py" --seed 1 --out-png x.png
done_testing
