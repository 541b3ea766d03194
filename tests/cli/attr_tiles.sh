#!/usr/bin/env bash
# needs: torch
# Tiles: an item whose gradient call does not fit the memory budget goes
# tile by tile (lib/attr/local.h, esg_local_tiled): each tile's outputs are
# computed on their input crop (receptive field and shift period probed
# from the model) and scored alone, and the tiles' gradients add up to the
# whole volume's.  ESG_TILE_VALUES=N forces tiles of at most N input values.
# Checked: the gradient family's maps by tiles equal the whole-volume maps
# (forced tiles, and a budget of 60% of the whole run's peak on 128^3)
# within 1e-5 of their largest value (+1e-7), 2D and 3D, odd sizes, pooling
# and skip connections, fixed-mask and argmax wrappers, with more than one
# tile per axis; models that are not local, and backward rules other than
# the plain gradient, fail with one line and write nothing.
# Fixtures: tests/fixtures/make_local_models.py.
. "$(dirname "$0")/lib.sh"
if ! $PYTHON -c 'import torch, numpy' 2>/dev/null; then
	skip "python3 with torch and numpy is needed"
	done_testing
fi
check "fixture models" $PYTHON "$ESG_ROOT/tests/fixtures/make_local_models.py" .
esg-load --layout NCHW x2d_odd.npy -o x2o.st.zst
esg-load --layout NCHW x2d.npy -o x2.st.zst
esg-load --layout NCDHW x3d_odd.npy -o x3o.st.zst
esg-load --layout NCDHW x3d.npy -o x3.st.zst
W() { esg-wrap "$@" 2>/dev/null; }
W -m cnn2d.pt --reduce fixed-mask --input x2o.st.zst -o cnn2d_fm.pt
W -m cnn2d.pt --reduce argmax -o cnn2d_am.pt
W -m pool2d.pt --reduce fixed-mask --activation sigmoid --input x2.st.zst -o pool2d_fm.pt
W -m cnn3d.pt --reduce fixed-mask --input x3o.st.zst -o cnn3d_fm.pt
W -m cnn3d.pt --reduce argmax -o cnn3d_am.pt
W -m inorm3d.pt --reduce fixed-mask --input x3.st.zst -o inorm_fm.pt

# rec.py: a stream's metadata and attribution, for cmp.py and tgt.py
cat >rec.py <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import safetensors_ref as st
def rec(p):
    meta, ts = st.read_stream(p)[0]
    return meta, next(t[3] for t in ts if t[0] == "attribution")
PY
cat >cmp.py <<'PY'
import sys
import numpy as np
from rec import rec
(mw, a), (mt, b) = rec(sys.argv[2]), rec(sys.argv[3])
tiles = mt.get("esg.tiles", "")
grid = [int(g) for g in tiles.split()[1].split("x")] if tiles.startswith("grid ") else []
if "esg.tiles" in mw or not grid or int(np.prod(grid)) < 2 or max(grid) < 2:
    sys.exit("esg.tiles: whole %r, tiled %r" % (mw.get("esg.tiles"), tiles))
err = float(np.abs(a - b).max())
tol = 1e-5 * float(np.abs(a).max()) + 1e-7
print("%s: max difference %.3g (tolerance %.3g)" % (tiles, err, tol))
sys.exit(0 if err <= tol else 1)
PY

# same DESC VALUES ARGS...: the whole volume and tiles of at most VALUES input values agree
same() {
	local d=$1 v=$2; shift 2
	if esg-attr --threads 1 "$@" -o w.st.zst 2>"$T/.err" &&
		ESG_TILE_VALUES=$v esg-attr --threads 1 "$@" -o t.st.zst 2>>"$T/.err" &&
		$PYTHON cmp.py "$ESG_ROOT/tests/py" w.st.zst t.st.zst >"$T/.ref" 2>&1; then
		ok "$d: $(tail -1 "$T/.ref")"
	else
		not_ok "$d: $(tail -2 "$T/.ref" 2>/dev/null | tr '\n' ' ') $(head -c 300 "$T/.err")"
	fi
}

same "2D 37x41 fixed-mask, saliency" 600 -m cnn2d_fm.pt --method saliency --param abs=false x2o.st.zst
same "2D 37x41 argmax, integrated gradients (forward calls by tiles too)" 600 \
	-m cnn2d_am.pt --method integrated_gradients --param n_steps=4 --target 1 x2o.st.zst
same "2D pool / upsample / skip cat, 2 channels 32x30, sigmoid fixed-mask, input x gradient" 1200 \
	-m pool2d_fm.pt --method input_x_gradient x2.st.zst
same "3D 13x17x15 (odd, padded to even), strided conv / transposed conv / skip, fixed-mask, integrated gradients" 2500 \
	-m cnn3d_fm.pt --method integrated_gradients --param n_steps=4 x3o.st.zst
same "3D 24x20x22 argmax, noise tunnel (saliency, 2 samples)" 3000 \
	-m cnn3d_am.pt --method noise_tunnel --param base=saliency --param nt_samples=2 --target 1 x3.st.zst
same "3D 24x20x22 argmax, gradient SHAP (2 samples, zero and blur baselines)" 3000 \
	-m cnn3d_am.pt --method gradient_shap --param n_samples=2 --baseline zero --baseline blur:1 --target 1 x3.st.zst
same "3D 13x17x15 fixed-mask, DeepLift (rescale rule, x and baseline cropped alike)" 2500 \
	-m cnn3d_fm.pt --method deeplift x3o.st.zst
same "2D pool / upsample / skip cat, sigmoid fixed-mask, DeepLift with a blur baseline" 1200 \
	-m pool2d_fm.pt --method deeplift --baseline blur:1 x2.st.zst

# ---- the memory budget sends an item that does not fit to tiles ----
$PYTHON -c "
import numpy as np
np.random.seed(0)
np.save('c.npy', np.random.randn(1, 1, 128, 128, 128).astype(np.float32))"
esg-load --layout NCDHW c.npy -o c.st.zst
W -m cnn3d.pt --reduce fixed-mask --input c.st.zst -o c_fm.pt
cat >peak.py <<'PY'
import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as f:
    f.write("%d\n" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024))
sys.exit(rc)
PY
S="--method saliency --target 1 --threads 2"
if $PYTHON peak.py whole.mb esg-attr -m c_fm.pt $S -o cw.st.zst c.st.zst 2>"$T/.err"; then
	# 60% of the whole-volume run's peak: one item no longer fits
	budget=$(( $(cat whole.mb) * 6 / 10 ))
	if $PYTHON peak.py tiled.mb esg-attr -m c_fm.pt $S --memory ${budget}M -o ct.st.zst c.st.zst 2>"$T/.err" &&
		$PYTHON cmp.py "$ESG_ROOT/tests/py" cw.st.zst ct.st.zst >"$T/.ref" 2>&1; then
		ok "128^3 under --memory ${budget}M (whole run: $(cat whole.mb) MiB): by tiles, the same map: $(tail -1 "$T/.ref")"
	else
		not_ok "128^3 under --memory ${budget}M: $(tail -2 "$T/.ref" 2>/dev/null | tr '\n' ' ') $(head -c 300 "$T/.err")"
	fi
	mb=$(cat tiled.mb 2>/dev/null || echo 0)
	[ "$mb" -le $(( budget * 11 / 10 )) ] && ok "and its peak RSS, $mb MiB, is within 10% of the budget" ||
		not_ok "peak RSS $mb MiB under --memory ${budget}M"
else
	not_ok "the whole-volume run of 128^3 ($(head -c 300 "$T/.err"))"
fi

# ---- the target pass: a whole forward that does not fit goes by tiles ----
# 256x256x128 through the small 3D net: its whole forward needs about 900M,
# a tile far less.  Each input (x and x + 2: class 0 wins on x, 1 on x + 2)
# gets the whole run's target; maps agree but where a ReLU's input is within
# float rounding of 0 in one of the two runs (crops and the whole volume
# round a little differently, as two batch sizes may).
$PYTHON -c "
import numpy as np
np.random.seed(1)
x = np.random.randn(1, 1, 256, 256, 128).astype(np.float32)
np.save('d.npy', x); np.save('dn.npy', x + 2)"
cat >tgt.py <<'PY'
import sys
import numpy as np
from rec import rec
(mw, a), (mt, b) = rec(sys.argv[2]), rec(sys.argv[3])
how = mt.get("esg.target_tiles", "")
if "esg.target_tiles" in mw or not how.startswith("target pass by tiles: grid "):
    sys.exit("esg.target_tiles: whole %r, tiled %r" % (mw.get("esg.target_tiles"), how))
if mw["esg.target"] != mt["esg.target"]:
    sys.exit("targets differ: whole %s, tiles %s" % (mw["esg.target"], mt["esg.target"]))
off = np.abs(a - b) > 1e-5 * float(np.abs(a).max()) + 1e-7
print("target %s (%s); voxels apart: %d of %d" % (mt["esg.target"], how, off.sum(), off.size))
sys.exit(0 if off.mean() <= 1e-4 else 1)
PY
targets=""
for v in d dn; do
	esg-load --layout NCDHW $v.npy -o $v.st.zst
	W -m cnn3d.pt --reduce fixed-mask --input $v.st.zst -o ${v}_fm.pt
	if esg-attr -m ${v}_fm.pt --method saliency --threads 2 -o ${v}w.st.zst $v.st.zst 2>"$T/.err" &&
		esg-attr -m ${v}_fm.pt --method saliency --threads 2 --memory 700M -o ${v}t.st.zst $v.st.zst 2>>"$T/.err" &&
		$PYTHON tgt.py "$ESG_ROOT/tests/py" ${v}w.st.zst ${v}t.st.zst >"$T/.ref" 2>&1; then
		ok "256x256x128 ($v) under --memory 700M: the target pass by tiles: $(tail -1 "$T/.ref")"
		targets="$targets $(tail -1 "$T/.ref" | cut -d' ' -f2)"
	else
		not_ok "256x256x128 ($v) target pass by tiles: $(tail -2 "$T/.ref" 2>/dev/null | tr '\n' ' ') $(head -c 300 "$T/.err")"
	fi
done
[ "$targets" = " 0 1" ] && ok "the two inputs' targets are both classes:$targets" ||
	not_ok "the two inputs' targets:$targets (want 0 and 1)"

expect_fail "not local (instance norm): tiles refused with the reason" 1 \
	"integrated_gradients: ESG_TILE_VALUES is set; it cannot go by tiles either: off: " \
	env ESG_TILE_VALUES=2000 esg-attr --threads 1 -m inorm_fm.pt --method integrated_gradients -o bad.st.zst x3.st.zst
expect_fail "DeepLift's tiles need a fixed-mask wrapper (not argmax)" 1 "need a model wrapped --reduce fixed-mask" \
	env ESG_TILE_VALUES=2000 esg-attr --threads 1 -m cnn3d_am.pt --method deeplift --target 1 -o bad.st.zst x3.st.zst
expect_fail "guided backprop's rule (not linear in the output gradient) does not go by tiles" 1 "backward rule cannot go by tiles" \
	env ESG_TILE_VALUES=2000 esg-attr --threads 1 -m cnn3d_fm.pt --method guided_backprop -o bad.st.zst x3o.st.zst
expect_fail "a tile smaller than the receptive field allows is refused" 1 "even the smallest tile" \
	env ESG_TILE_VALUES=20 esg-attr --threads 1 -m cnn2d_fm.pt --method saliency -o bad.st.zst x2o.st.zst
no_file "nothing written by the refused runs" bad.st.zst
done_testing
