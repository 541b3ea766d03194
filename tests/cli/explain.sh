#!/usr/bin/env bash
# needs: torch
# esg-explain (lib/explain, lib/shim/explain.cpp):
#  - every method against a plain-PyTorch reference (tests/py/ref_explain.py:
#    forward hooks, autograd, torch.optim) on fixture models, 2D and 3D, with
#    the same start image and the same transforms (off, or replayed: pad, roll, zoom, rotation, flips): the
#    final image within 1e-4 of its range, the trace within 1e-4 of its max;
#  - fixture truths: feature_vis of an oriented filter is its tiling
#    (|r| >= 0.9), invert of an early layer recovers IN (r >= 0.95),
#    class_model raises the shipped classifier's class score (final > initial,
#    >= 90 % of 4-step block means up);
#  - deepdream raises the chosen activation norm >= 5x in 20 steps on the
#    shipped 2D classifier (the shipped aneurysm angiogram, block3.relu,
#    defaults) and 3D U-Net (the shipped phantom's central 16^3, enc1.conv2
#    channel 3, lr=0.15);
#  - the record: image in IN's geometry (shape, affine, metadata kept), the
#    objective's trace, esg.* metadata; seeds; --shape;
#  - bad input: one line, exit 1 / 2, nothing written, an old output kept.
. "$(dirname "$0")/lib.sh"

BIN=$(dirname "$(command -v esg-explain)")
$PYTHON "$ESG_ROOT/tests/fixtures/make_explain_models.py" fx >/dev/null 2>&1 || { not_ok "fixture models"; done_testing; }
X="esg-explain --threads 2"

# ---- the references and the fixture truths (TAP from Python, renumbered) ----
$PYTHON "$ESG_ROOT/tests/py/ref_explain.py" --bin "$BIN" --fixtures fx >ref.tap 2>ref.err
while IFS= read -r line; do
	case "$line" in
	"ok "*"# SKIP"*) skip "${line#*# SKIP }" ;;
	"ok "*) ok "${line#ok [0-9]* - }" ;;
	"not ok "*) not_ok "${line#not ok [0-9]* - }" ;;
	esac
done <ref.tap
grep -q '^1\.\.' ref.tap || not_ok "ref_explain.py did not finish: $(tail -c 300 ref.err)"

# ---- the shipped models ------------------------------------------------------
M2="$ESG_ROOT/share/models/classifier2d.pt"
M3="$ESG_ROOT/share/models/unet3d.pt"
meta() { $PYTHON -c '
import sys
sys.path.insert(0, sys.argv[1] + "/tests/py")
import ref_layer as R
ts, m = R.read_stream(sys.argv[2])[0]
print(m.get(sys.argv[3], ""))' "$ESG_ROOT" "$1" "$2"; }
ratio_at_least() { $PYTHON -c 'import sys; a, b, r = map(float, sys.argv[1:]); sys.exit(0 if b >= r * a > 0 else 1)' "$@"; }

$PYTHON - "$ESG_ROOT" <<'EOF'
import sys
import numpy as np
sys.path.insert(0, sys.argv[1] + "/tests/py")
import ref_layer as R
a = np.load(sys.argv[1] + "/share/data/angio2d_20001_aneurysm.npy").astype(np.float64)
a = ((a - a.mean()) / a.std()).astype(np.float32)
aff = "[0.5,0,0,-16,0,0.5,0,-16,0,0,1,0,0,0,0,1]"
R.write_stream("a2d.st.zst", [({"image": a.reshape(1, 1, 64, 64)}, {"esg.affine": aff, "esg.name": "a2d"})])
rng = np.random.default_rng(3)
v = rng.standard_normal((1, 1, 16, 16, 16)).astype(np.float32)
R.write_stream("v16.st.zst", [({"image": v}, {"esg.affine": aff})])
bad = v.copy()
bad[0, 0, 3, 4, 5] = np.nan
R.write_stream("nan.st.zst", [({"image": bad}, {})])
EOF

if $X -m "$M2" --method deepdream --layer block3.relu a2d.st.zst -o dd2.st.zst 2>err; then
	i=$(meta dd2.st.zst esg.objective_initial); f=$(meta dd2.st.zst esg.objective_final)
	if ratio_at_least "$i" "$f" 5; then ok "deepdream on classifier2d block3.relu: norm $i -> $f (>= 5x in 20 steps)"
	else not_ok "deepdream on classifier2d: norm $i -> $f, not 5x"; fi
else not_ok "deepdream on classifier2d: $(head -c 300 err)"; fi
# the shipped phantom, z-scored, its central 16^3 (a vessel crosses it)
esg-load --normalise zscore "$ESG_ROOT/share/data/phantom1000_image.nii.gz" -o ph.st.zst 2>err &&
$PYTHON - "$ESG_ROOT" <<'EOF' || not_ok "phantom crop: $(head -c 300 err)"
import sys
sys.path.insert(0, sys.argv[1] + "/tests/py")
import ref_layer as R
(ts, m), = R.read_stream("ph.st.zst")
R.write_stream("ph16.st.zst", [({"image": ts["image"][:, :, 24:40, 24:40, 24:40].copy()}, {"esg.affine": m["esg.affine"]})])
EOF
if $X -m "$M3" --method deepdream --layer enc1.conv2 --channel 3 --param lr=0.15 ph16.st.zst -o dd3.st.zst 2>err; then
	i=$(meta dd3.st.zst esg.objective_initial); f=$(meta dd3.st.zst esg.objective_final)
	if ratio_at_least "$i" "$f" 5; then ok "deepdream on unet3d enc1.conv2 channel 3: norm $i -> $f (>= 5x in 20 steps)"
	else not_ok "deepdream on unet3d: norm $i -> $f, not 5x"; fi
else not_ok "deepdream on unet3d: $(head -c 300 err)"; fi

# class_model on the shipped classifier: the score rises, in expectation (the
# means of 4-step blocks, one blur each: the blur itself lowers the score)
for t in 0 1; do
	if $X -m "$M2" --method class_model --target $t --steps 40 --shape 1,1,64,64 -o cm$t.st.zst 2>err; then
		if $PYTHON - "$ESG_ROOT" cm$t.st.zst <<'EOF' >cm.txt
import sys
import numpy as np
sys.path.insert(0, sys.argv[1] + "/tests/py")
import ref_layer as R
(ts, m), = R.read_stream(sys.argv[2])
tr = ts["objective"][0]
up = float(np.mean(np.diff(tr.reshape(-1, 4).mean(1)) >= 0))
i, f = float(m["esg.objective_initial"]), float(m["esg.objective_final"])
print("%.4g -> %.4g, %.0f%% of 4-step blocks up" % (i, f, 100 * up))
sys.exit(0 if f > i and tr[-1] > tr[0] and up >= 0.9 else 1)
EOF
		then ok "class_model on classifier2d raises class $t's score: $(cat cm.txt)"
		else not_ok "class_model on classifier2d, class $t: $(cat cm.txt)"; fi
	else not_ok "class_model on classifier2d: $(head -c 300 err)"; fi
done

# the record: geometry, metadata, trace
$PYTHON - "$ESG_ROOT" <<'EOF' >rec.tap
import json, sys
sys.path.insert(0, sys.argv[1] + "/tests/py")
import ref_layer as R
(ts, m), = R.read_stream("dd2.st.zst")
(t0, m0), = R.read_stream("a2d.st.zst")
good = (ts["image"].shape == (1, 1, 64, 64) and ts["objective"].shape == (1, 20) and
        (ts["input"] == t0["image"]).all() and m["esg.affine"] == m0["esg.affine"] and
        m["esg.name"] == "a2d" and m["esg.method"] == "deepdream" and m["esg.layer"] == "block3.relu" and
        m["esg.layer_call"] == "0" and m["esg.steps"] == "20" and m["esg.seed"] == "0" and
        m["esg.objective"] == "l2_norm" and json.loads(m["esg.params"])["lr"] == 0.05 and
        float(m["esg.objective_final"]) > float(m["esg.objective_initial"]) > 0 and
        (ts["image"] != ts["input"]).any())
print("ok" if good else "not ok", "- the record: image, input, objective [1, 20], affine and name kept, esg.* metadata")
EOF
while read -r s rest; do [ "$s" = ok ] && ok "${rest#- }" || not_ok "${rest#- }"; done <rec.tap

# seeds: same seed same image, another seed another; --shape without IN
$X -m fx/net2d.pt --method feature_vis --layer relu2 --channel 1 --steps 5 --shape 2,1,16,16 --seed 7 -o s7a.st.zst 2>err &&
$X -m fx/net2d.pt --method feature_vis --layer relu2 --channel 1 --steps 5 --shape 2,1,16,16 --seed 7 -o s7b.st.zst 2>>err &&
$X -m fx/net2d.pt --method feature_vis --layer relu2 --channel 1 --steps 5 --shape 2,1,16,16 --seed 8 -o s8.st.zst 2>>err
if $PYTHON - "$ESG_ROOT" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1] + "/tests/py")
import ref_layer as R
(a, ma), = R.read_stream("s7a.st.zst")
(b, mb), = R.read_stream("s8.st.zst")
(c, mc), = R.read_stream("s7b.st.zst")
assert (a["image"] == c["image"]).all() and (a["objective"] == c["objective"]).all()
assert a["image"].shape == (2, 1, 16, 16) and a["objective"].shape == (2, 5)
assert not (a["image"] == b["image"]).all()
assert not (a["image"][0] == a["image"][1]).all()      # item i: seed + i
assert ma["esg.objective_initial"].startswith("[")    # one value per item
EOF
then ok "--shape 2,1,16,16: two items, seeds S and S + 1; the same seed the same image, another another"
else not_ok "--shape / seeds"; fi

# ---- bad input: one line, exit 1 / 2, nothing written, an old output kept ----
echo old >keep.st.zst
expect_fail "unknown method: exit 2" 2 "unknown method 'dream'" $X -m fx/net2d.pt --method dream fx.st.zst -o keep.st.zst
expect_fail "unknown parameter: exit 2" 2 "unknown parameter 'octaves' for method feature_vis" \
	$X -m fx/net2d.pt --method feature_vis --layer relu1 --shape 1,1,16,16 --param octaves=2 -o keep.st.zst
expect_fail "bad parameter value: exit 2" 2 "parameter lr" \
	$X -m fx/net2d.pt --method invert --layer relu1 --param lr=-1 v16.st.zst -o keep.st.zst
expect_fail "momentum without sgd: exit 2" 2 "momentum is SGD's" \
	$X -m fx/net2d.pt --method invert --layer relu1 --param momentum=0.9 v16.st.zst -o keep.st.zst
expect_fail "missing --layer: exit 2" 2 "needs --layer" $X -m fx/net2d.pt --method deepdream a2d.st.zst -o keep.st.zst
expect_fail "class_model without --target: exit 2" 2 "needs --target" \
	$X -m fx/net2d.pt --method class_model --shape 1,1,16,16 -o keep.st.zst
expect_fail "--channel on invert: exit 2" 2 "channel: method invert takes none" \
	$X -m fx/net2d.pt --method invert --layer relu1 --channel 1 a2d.st.zst -o keep.st.zst
expect_fail "--unit without --channel: exit 2" 2 "unit needs --channel" \
	$X -m fx/net2d.pt --method feature_vis --layer relu1 --unit 1,1 --shape 1,1,16,16 -o keep.st.zst
expect_fail "--shape for deepdream: exit 2" 2 "starts from IN" \
	$X -m fx/net2d.pt --method deepdream --layer relu1 --shape 1,1,16,16 -o keep.st.zst
expect_fail "rotate in 3D: exit 2" 2 "rotation is 2D only" \
	$X -m fx/net3d.pt --method feature_vis --layer relu1 --shape 1,1,12,12,12 --param rotate=5 -o keep.st.zst
expect_fail "unknown layer: exit 1" 1 "model has no layer 'relu9'" \
	$X -m fx/net2d.pt --method deepdream --layer relu9 a2d.st.zst -o keep.st.zst
expect_fail "a call the model does not make: exit 1" 1 "layer 'relu1' has 1 call site\(s\); call index 1 is out of range" \
	$X -m fx/net2d.pt --method deepdream --layer relu1:1 a2d.st.zst -o keep.st.zst
expect_fail "channel past the layer's width: exit 1" 1 "channel 4 is out of range: layer 'relu1' has 4 channels" \
	$X -m fx/net2d.pt --method deepdream --layer relu1 --channel 4 a2d.st.zst -o keep.st.zst
expect_fail "unit past the layer's grid: exit 1" 1 "unit index 9 is out of range on axis 1" \
	$X -m fx/net2d.pt --method feature_vis --layer relu1 --channel 0 --unit 0,9 --shape 1,1,16,16 -o keep.st.zst
expect_fail "unit with the wrong number of axes: exit 1" 1 "unit gives 3 index\(es\)" \
	$X -m fx/net2d.pt --method feature_vis --layer relu1 --channel 0 --unit 0,1,2 --shape 1,1,16,16 -o keep.st.zst
expect_fail "target past the classes: exit 1" 1 "target 3 is out of range: the model has 3 classes" \
	$X -m fx/net2d.pt --method class_model --target 3 --shape 1,1,16,16 -o keep.st.zst
expect_fail "class_model on a segmentation output: exit 1" 1 "not per-class scores" \
	$X -m "$M3" --method class_model --target 1 --steps 1 --shape 1,1,8,8,8 -o keep.st.zst
expect_fail "NaN in IN: exit 1" 1 "nan.st.zst: record 1: tensor 'image' has 1 non-finite value" \
	$X -m fx/net3d.pt --method deepdream --layer relu1 nan.st.zst -o keep.st.zst
expect_fail "a 3D image on a 2D model: exit 1" 1 "record 1: deepdream: libtorch: " \
	$X -m fx/net2d.pt --method deepdream --layer relu1 v16.st.zst -o keep.st.zst
expect_fail "decorrelate on one channel (--shape): exit 2" 2 "decorrelate: needs a 3-channel 2D image" \
	$X -m fx/net2d.pt --method feature_vis --layer relu1 --param decorrelate=true --steps 1 --shape 1,1,16,16 -o keep.st.zst
if [ "$(cat keep.st.zst)" = old ]; then ok "after every failure the old output is kept"; else not_ok "old output replaced"; fi
no_file "no temporary files left" .esg-*  keep.st.zst.*
expect_fail "--timeout: exit 124" 124 "timed out" \
	$X -m "$M2" --method feature_vis --layer relu4 --channel 0 --shape 1,1,64,64 --steps 100000 --timeout 2 -o keep.st.zst
if [ "$(cat keep.st.zst)" = old ]; then ok "--timeout: the old output is kept"; else not_ok "--timeout: old output replaced"; fi

done_testing
