#!/usr/bin/env bash
# needs: torch
# esg-attr's layer methods and the CAM family (lib/attr/layer/layer.c):
#  - hand values on Captum's one-conv net (Grad-CAM [[11.25, 13.5], [20.25, 22.5]],
#    activations, bilinear upsampling by hand);
#  - every method against plain-PyTorch references with Python hooks
#    (tests/py/ref_layer.py) on fixture models: BN + in-place ReLU + max pool,
#    2D and 3D, scripted and traced, a module called twice (NAME:K);
#    tolerance |esg - ref| <= 1e-4 max|ref| + 1e-6, deltas within 1e-3;
#  - conductance completeness on a smooth net (sum = f(x) - f(0) - delta);
#  - the shipped U-Net (wrapped with esg-wrap --reduce fixed-mask; encoder,
#    decoder and bottleneck layers) and 2D classifier, when they are there;
#  - options and errors: --list-layers shapes, --channel, --layer-call,
#    --internal-batch invariance, bad layers, no output left behind.
. "$(dirname "$0")/lib.sh"

$PYTHON "$ESG_ROOT/tests/fixtures/make_layer_models.py" lm >/dev/null 2>&1 || { not_ok "fixture models"; done_testing; }
A="esg-attr --threads 1"

# ---- the references (TAP from Python, renumbered into this script's plan) ----
$PYTHON "$ESG_ROOT/tests/py/ref_layer.py" --bin "$ESG_BIN" --fixtures lm --shipped --root "$ESG_ROOT" >ref.tap 2>ref.err
while IFS= read -r line; do
	case "$line" in
	"ok "*"# SKIP"*) skip "${line#*# SKIP }" ;;
	"ok "*) ok "${line#ok [0-9]* - }" ;;
	"not ok "*) not_ok "${line#not ok [0-9]* - }" ;;
	esac
done <ref.tap
grep -q '^1\.\.' ref.tap || { not_ok "ref_layer.py did not finish: $(tail -c 300 ref.err)"; }

# ---- options ------------------------------------------------------------------
$PYTHON - <<'EOF'
import sys
sys.path.insert(0, __import__("os").environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R, make_layer_models as LM
R.write_stream("net2d.st.zst", [({"image": LM.example_input("net2d").numpy()}, {})])
R.write_stream("twice.st.zst", [({"image": LM.example_input("twice2d").numpy()}, {})])
EOF

if $A -m lm/net2d_script.pt --list-layers --shape 1,2,12,12 >layers.tsv 2>err; then
	grep -qP '^b1\.bn\tBatchNorm2d\t1\t\[1, 4, 12, 12\]$' layers.tsv && grep -qP '^pool\tMaxPool2d\t1\t\[1, 4, 6, 6\]$' layers.tsv &&
		grep -qP '^fc\tLinear\t1\t\[1, 3\]$' layers.tsv && ok "--list-layers --shape prints output shapes" ||
		not_ok "--list-layers shapes: $(head -c 300 layers.tsv)"
else not_ok "--list-layers --shape: $(cat err)"; fi
if $A -m lm/twice2d_script.pt --list-layers twice.st.zst >layers2.tsv 2>err; then
	grep -qP '^block\tSequential\t2\t\[2, 2, 8, 8\] \[2, 2, 8, 8\]$' layers2.tsv && ok "--list-layers IN: one shape per call" ||
		not_ok "--list-layers IN: $(head -c 300 layers2.tsv)"
else not_ok "--list-layers IN: $(cat err)"; fi

# NAME:K is --layer-call K
$A -m lm/twice2d_script.pt --method layer_gradcam --layer block:1 -o k1.st.zst twice.st.zst 2>err &&
$A -m lm/twice2d_script.pt --method layer_gradcam --layer block --layer-call 1 -o k2.st.zst twice.st.zst 2>>err &&
$A -m lm/twice2d_script.pt --method layer_gradcam --layer block -o k0.st.zst twice.st.zst 2>>err
check "--layer NAME:1 equals --layer NAME --layer-call 1, and differs from call 0" $PYTHON - <<'EOF'
import sys, os, numpy as np
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
(a, ma), (b, mb), (c, mc) = [R.read_stream(f)[0] for f in ("k1.st.zst", "k2.st.zst", "k0.st.zst")]
assert np.array_equal(a["attribution"], b["attribution"])
assert not np.allclose(a["attribution"], c["attribution"])
assert ma["esg.layer"] == "block" and ma["esg.layer_call"] == "1" and mc["esg.layer_call"] == "0"
assert ma["esg.upsample"] == "none"   # the block keeps the input grid: nothing to resize
EOF

# --channel: one channel, sum, mean of the layer's activations
for c in 2 sum mean; do
	$A -m lm/net2d_script.pt --method layer_activation --layer b2.conv --channel $c -o ch_$c.st.zst net2d.st.zst 2>err || not_ok "--channel $c: $(cat err)"
done
$A -m lm/net2d_script.pt --method layer_activation --layer b2.conv -o ch_all.st.zst net2d.st.zst
check "--channel K|sum|mean select and reduce the layer map (1e-6)" $PYTHON - <<'EOF'
import sys, os, json, numpy as np
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
full, meta = R.read_stream("ch_all.st.zst")[0]
a = full["attribution"]
assert a.shape == (2, 6, 6, 6) and json.loads(meta["esg.layer_shape"]) == [2, 6, 6, 6], a.shape
for c, want in (("2", a[:, 2:3]), ("sum", a.sum(1, keepdims=True)), ("mean", a.mean(1, keepdims=True))):
    got = R.read_stream("ch_%s.st.zst" % c)[0][0]["attribution"]
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-6), c
EOF

# --internal-batch does not change results (float rounding only)
for ib in 1 16; do
	$A -m lm/net2d_script.pt --method layer_conductance --layer b1.bn --param n_steps=6 --internal-batch $ib \
		-o ib$ib.st.zst net2d.st.zst 2>err || not_ok "--internal-batch $ib: $(cat err)"
	$A -m lm/net2d_script.pt --method score_cam --layer b2.conv --internal-batch $ib -o sc$ib.st.zst net2d.st.zst 2>err ||
		not_ok "score_cam --internal-batch $ib: $(cat err)"
done
check "--internal-batch 1 and 16 agree (conductance, score_cam; 1e-6 relative)" $PYTHON - <<'EOF'
import sys, os, numpy as np
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
for p in ("ib", "sc"):
    a, b = [R.read_stream("%s%d.st.zst" % (p, i))[0][0]["attribution"] for i in (1, 16)]
    assert np.allclose(a, b, atol=1e-6 * np.abs(a).max()), p
EOF

# upsampled output on the input grid, metadata
$A -m lm/net2d_script.pt --method gradcam_pp --layer b2.conv -o pp.st.zst net2d.st.zst 2>err || not_ok "gradcam_pp: $(cat err)"
check "gradcam_pp is upsampled to the image's shape by default (esg.upsample bilinear)" $PYTHON - <<'EOF'
import sys, os, json
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
ts, m = R.read_stream("pp.st.zst")[0]
assert ts["attribution"].shape == ts["image"].shape == (2, 2, 12, 12)
assert m["esg.upsample"] == "bilinear" and json.loads(m["esg.layer_shape"]) == [2, 6, 6, 6] and m["esg.method"] == "gradcam_pp"
assert (ts["attribution"] >= 0).all()
EOF

# Grad-CAM++'s exp(score) factor: left out by default; kept (exp_score=true)
# it takes the map past float's range for a score of 200 (a fixed-mask score
# is larger still): one line, no output
cat >big.py <<'EOF'
import sys, os, torch
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
class Big(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    def forward(self, x):
        return self.conv(x).relu().mean([2, 3]) + 200.0
torch.manual_seed(0)
torch.jit.script(Big().eval()).save("big.pt")
R.write_stream("big.st.zst", [({"image": torch.rand(1, 1, 8, 8).numpy()}, {})])
EOF
$PYTHON big.py 2>err || not_ok "the score-200 model: $(cat err)"
$A -m big.pt --method gradcam_pp --layer conv --target 0 -o ppd.st.zst big.st.zst 2>err &&
	$A -m big.pt --method gradcam_pp --layer conv --target 0 --param exp_score=false -o ppf.st.zst big.st.zst 2>>err &&
	check "gradcam_pp: exp_score=false by default (a score of 200 is fine)" \
		esg-compare --quiet --rtol 0 --tensor attribution ppd.st.zst ppf.st.zst ||
	not_ok "gradcam_pp at a score of 200: $(cat err)"
expect_fail "gradcam_pp exp_score=true at a score of 200: past float's range, one line" 1 \
	"^esg-attr: error: big.st.zst: record 1: gradcam_pp: .*exp_score=true: the map times exp\(200\.[0-9]*\) is past float's range: use exp_score=false, the default$" \
	$A -m big.pt --method gradcam_pp --layer conv --target 0 --param exp_score=true -o ppt.st.zst big.st.zst
no_file "and no output" ppt.st.zst

# ---- errors: one line, exit 1 or 2, no output file ------------------------------
expect_fail "a layer method without --layer is a usage error" 2 "needs --layer" \
	$A -m lm/net2d_script.pt --method layer_gradcam -o e1.st.zst net2d.st.zst
no_file "no output after a usage error" e1.st.zst
expect_fail "an unknown layer names close ones" 1 "no layer 'b2.cnv'.*b2.conv" \
	$A -m lm/net2d_script.pt --method layer_gradcam --layer b2.cnv -o e2.st.zst net2d.st.zst
no_file "no output after an unknown layer" e2.st.zst
expect_fail "a call index past the last call" 1 "call index 2 is out of range" \
	$A -m lm/twice2d_script.pt --method layer_gradcam --layer block:2 -o e3.st.zst twice.st.zst
expect_fail "--layer on a method without layers" 2 "takes no layer" \
	$A -m lm/net2d_script.pt --method saliency --layer b1.bn net2d.st.zst
expect_fail "--layer NAME:K and --layer-call disagree" 2 "disagree" \
	$A -m lm/twice2d_script.pt --method layer_gradcam --layer block:1 --layer-call 0 twice.st.zst
expect_fail "--channel past the last channel" 1 "channel 9 is out of range" \
	$A -m lm/net2d_script.pt --method layer_activation --layer b2.conv --channel 9 -o e4.st.zst net2d.st.zst
no_file "no output after a bad channel" e4.st.zst
expect_fail "--upsample of a flat layer" 1 "nothing to upsample" \
	$A -m lm/net2d_script.pt --method layer_activation --layer fc --upsample -o e5.st.zst net2d.st.zst
expect_fail "score_cam on a flat layer" 1 "choose a convolutional layer" \
	$A -m lm/net2d_script.pt --method score_cam --layer fc net2d.st.zst
expect_fail "layer_guided_backprop: --upsample does not apply" 1 "does not apply" \
	$A -m lm/net2d_script.pt --method layer_guided_backprop --layer b2.conv --upsample -o e6.st.zst net2d.st.zst
no_file "no output after an option that does not apply" e6.st.zst
expect_fail "noise_tunnel can't wrap a layer method" 2 "not a method noise_tunnel can wrap" \
	$A -m lm/net2d_script.pt --method noise_tunnel --param base=layer_gradcam net2d.st.zst
expect_fail "a planned method (deep_dream) is not implemented yet" 2 "not implemented yet" \
	$A -m lm/net2d_script.pt --method deep_dream --layer b1.bn net2d.st.zst

done_testing
