#!/usr/bin/env bash
# needs: torch
# Receptive-field-local occlusion and feature ablation (--param local=auto,
# lib/attr/local.h): each map equals the whole-volume evaluation
# (--param local=off) within 1e-5 of its largest value (+1e-7), and
# esg.local says what ran: on 2D and 3D, odd sizes, windows at the borders,
# strides that do not divide, channel windows, skip connections (fixture
# models and the shipped U-Net), fixed-mask and argmax wrappers; the models
# that are not local (instance norm, global context) and the otsu wrapper
# fall back to the whole volume with the reason, and give the same map.
# Fixtures: tests/fixtures/make_local_models.py.
. "$(dirname "$0")/lib.sh"
if ! $PYTHON -c 'import torch, numpy' 2>/dev/null; then
	skip "python3 with torch and numpy is needed"
	done_testing
fi
check "fixture models" $PYTHON "$ESG_ROOT/tests/fixtures/make_local_models.py" .
$PYTHON -c "
import numpy as np
a = np.load('x2d_odd.npy'); np.save('x2d_odd2.npy', np.concatenate([a, a[:, :, ::-1]], 1).copy())"
esg-load --layout NCHW x2d_odd.npy -o x2o.st.zst
esg-load --layout NCHW x2d_odd2.npy -o x2o2.st.zst
esg-load --layout NCHW x2d.npy -o x2.st.zst
esg-load --layout NCDHW x3d_odd.npy -o x3o.st.zst
esg-load --layout NCDHW x3d.npy -o x3.st.zst
W() { esg-wrap "$@" 2>/dev/null; }
W -m cnn2d.pt --reduce fixed-mask --input x2o.st.zst -o cnn2d_fm.pt
W -m cnn2d.pt --reduce argmax -o cnn2d_am.pt
W -m cnn2d.pt --reduce otsu -o cnn2d_otsu.pt
W -m pool2d.pt --reduce argmax --activation softmax -o pool2d_am.pt
W -m pool2d.pt --reduce fixed-mask --activation sigmoid --input x2.st.zst -o pool2d_fm.pt
W -m cnn3d.pt --reduce fixed-mask --input x3o.st.zst -o cnn3d_fm.pt
W -m cnn3d.pt --reduce argmax -o cnn3d_am.pt
W -m inorm3d.pt --reduce fixed-mask --input x3.st.zst -o inorm_fm.pt
W -m gpool2d.pt --reduce argmax -o gpool_am.pt

# same DESC PREFIX ARGS...: local=auto and local=off agree; auto's esg.local starts with PREFIX
same() {
	local d=$1 prefix=$2; shift 2
	if esg-attr --threads 1 "$@" --param local=auto -o a.st.zst 2>"$T/.err" &&
		esg-attr --threads 1 "$@" --param local=off -o f.st.zst 2>>"$T/.err" &&
		$PYTHON "$ESG_ROOT/tests/py/local_compare.py" a.st.zst f.st.zst 1e-5 "$prefix" >"$T/.ref" 2>&1; then
		ok "$d: $(tail -1 "$T/.ref")"
	else
		not_ok "$d: $(tail -2 "$T/.ref" 2>/dev/null | tr '\n' ' ') $(head -c 300 "$T/.err")"
	fi
}

# ---- local: crops equal the whole volume ----
same "2D 37x41 fixed-mask, 5x6 windows, strides 4,7" "crop rf=-6/+6,-6/+6 align=1" \
	-m cnn2d_fm.pt --method occlusion --param sliding_window_shapes=5,6 --param strides=4,7 x2o.st.zst
same "2D 37x41 fixed-mask, one batch of crops a call (--internal-batch 1)" "crop rf=" \
	-m cnn2d_fm.pt --internal-batch 1 --method occlusion --param sliding_window_shapes=5,6 --param strides=4,7 x2o.st.zst
same "2D 37x41 argmax, feature ablation grid:4 (blocks clipped at the border)" "crop rf=" \
	-m cnn2d_am.pt --method feature_ablation --param feature_mask=grid:4 --baseline const:0.5 x2o.st.zst
same "2D pool / upsample / skip cat, 2 channels 37x41 (padded to even), channel windows 1,3,5 strides 1,4,3" \
	"crop rf=" -m pool2d_am.pt --method occlusion --param sliding_window_shapes=1,3,5 --param strides=1,4,3 x2o2.st.zst
same "2D pool / skip, softmax argmax: shift period 2 found" "crop rf=-6/+6,-6/+6 align=2" \
	-m pool2d_am.pt --method occlusion --param sliding_window_shapes=1,3,5 --param strides=1,4,3 x2o2.st.zst
same "2D pool / skip 32x30, sigmoid fixed-mask, feature ablation grid:5" "crop rf=" \
	-m pool2d_fm.pt --method feature_ablation --param feature_mask=grid:5 x2.st.zst
same "3D 13x17x15 strided conv / transposed conv / skip add, fixed-mask, 4^3 windows stride 3" "crop rf=" \
	-m cnn3d_fm.pt --method occlusion --param sliding_window_shapes=4 --param strides=3 x3o.st.zst
same "3D 13x17x15 argmax, 5x3x4 windows strides 4,5,3" "crop rf=" \
	-m cnn3d_am.pt --method occlusion --param sliding_window_shapes=5,3,4 --param strides=4,5,3 x3o.st.zst
S="$ESG_ROOT/share"
if [ -f "$S/models/unet3d.pt" ] && [ -f "$S/data/phantom1000_image.nii.gz" ]; then
	# 96x64x64: the phantom and its mirror image, cut (at 64^3 every crop of
	# the U-Net's receptive field, radius ~25, is the whole volume)
	esg-load --normalise zscore "$S/data/phantom1000_image.nii.gz" -o u64.st.zst 2>/dev/null
	$PYTHON -c "
import sys; sys.path.insert(0, '$ESG_ROOT/tests/py')
import numpy as np
from ref_perturb import read_stream
a = read_stream('u64.st.zst')[0][0]['image']
np.save('u96.npy', np.concatenate([a, a[:, :, ::-1]], 2)[:, :, :96].copy())"
	esg-load --layout NCDHW u96.npy -o u.st.zst
	W -m "$S/models/unet3d.pt" --reduce fixed-mask --input u.st.zst -o unet_fm.pt
	same "shipped 3D U-Net (max pools, transposed convs, skip cat), fixed-mask, 96x64x64, 16^3 windows strides 80,48,48" \
		"crop rf=-25/+25,-25/+25,-25/+25 align=4" -m unet_fm.pt --threads 2 --method occlusion \
		--param sliding_window_shapes=16 --param strides=80,48,48 u.st.zst
else
	skip "share/models/unet3d.pt or the phantom is not there"
fi

# ---- not local: the whole volume, with the reason ----
same "instance norm: whole volume" "off: one input voxel changes every output voxel" \
	-m inorm_fm.pt --method occlusion --param sliding_window_shapes=6 x3.st.zst
same "global context (spatial mean): whole volume" "off: one input voxel changes every output voxel" \
	-m gpool_am.pt --method feature_ablation --param feature_mask=grid:8 x2o.st.zst
same "otsu wrapper: whole volume" "off: the wrapper's score is not a sum of per-voxel terms" \
	-m cnn2d_otsu.pt --method occlusion --param sliding_window_shapes=8 x2o.st.zst
$PYTHON -c "import numpy as np; np.save('tiny.npy', np.load('x2d_odd.npy')[:, :, :9, :11].copy())"
esg-load --layout NCHW tiny.npy -o tiny.st.zst
same "receptive field (radius 6) as large as the 9x11 volume: whole volume" \
	"off: one input voxel changes every output voxel" \
	-m cnn2d_am.pt --method occlusion --param sliding_window_shapes=2 tiny.st.zst
esg-attr --threads 1 -m cnn2d_fm.pt --method occlusion --param local=off -o off.st.zst x2o.st.zst
if $PYTHON -c "
import sys; sys.path.insert(0, '$ESG_ROOT/tests/py')
from ref_perturb import read_stream
sys.exit(read_stream('off.st.zst')[0][1].get('esg.local') != 'off: --param local=off')"; then
	ok "--param local=off: esg.local says so"
else
	not_ok "--param local=off: esg.local says so"
fi
same "a 30x30 window's corner crop is the whole 37x41 volume: whole volume" \
	"off: the crop of a region at the volume's corner is already the whole volume" \
	-m cnn2d_fm.pt --method occlusion --param sliding_window_shapes=30 --param strides=7 x2o.st.zst
expect_fail "local=maybe is refused" 2 "local" \
	esg-attr -m cnn2d_fm.pt --method occlusion --param local=maybe -o bad.st.zst x2o.st.zst
no_file "no output after the refusal" bad.st.zst
done_testing
