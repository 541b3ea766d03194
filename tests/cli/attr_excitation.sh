#!/usr/bin/env bash
# needs: torch
# esg-attr --method excitation_backprop / contrastive_excitation_backprop
# (Zhang et al. 2016; the shim's ESG_RULE_EXCITATION*):
#  - hand values on a linear-ReLU-linear net (bias ignored, W+ only,
#    contrastive dual unit, clamping), at the input and at a layer, and the
#    same net written with addmm (1e-6);
#  - conservation: with eps -> 0 the map sums to the start signal (1 for a
#    one-hot target) at the input and at layers, signed input, BN, max and
#    mean pools included (1e-4);
#  - plain-PyTorch references with autograd Functions (tests/py/ref_excitation.py)
#    on the layer fixtures (BN + in-place ReLU + max pool, 2D and 3D, scripted
#    and traced, a module called twice) and share/models/classifier2d.pt;
#    tolerance 1e-4 max|ref| + 1e-6;
#  - usage errors and no output left behind.
. "$(dirname "$0")/lib.sh"

$PYTHON "$ESG_ROOT/tests/fixtures/make_layer_models.py" lm >/dev/null 2>&1 || { not_ok "fixture models"; done_testing; }
A="esg-attr --threads 1"

# ---- hand values ------------------------------------------------------------------
$PYTHON - <<'EOF'
import sys, os, torch, torch.nn as nn
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 2)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.5, 1.0, -1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, 1.0]))
            self.fc2.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 3.0]]))

    def forward(self, x):                      # x [N, 1, 3]
        return self.fc2(self.relu(self.fc1(x))).flatten(1)

torch.jit.trace(Tiny().eval(), torch.ones(1, 1, 3)).save("tiny.pt")  # traced: no source on stdin

class TinyMM(nn.Module):
    """The same net as addmm(b, x, W.t()) (Linear in older exports)."""
    def __init__(self):
        super().__init__()
        t = Tiny()
        self.w1, self.b1, self.w2 = t.fc1.weight, t.fc1.bias, t.fc2.weight
        self.b2 = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        h = torch.relu(torch.addmm(self.b1, x.flatten(1), self.w1.t()))
        return torch.addmm(self.b2, h, self.w2.t())

m = torch.jit.trace(TinyMM().eval(), torch.ones(1, 1, 3))
assert "aten::addmm" in str(m.inlined_graph)
m.save("tinymm.pt")
R.write_stream("tiny.st.zst", [({"image": torch.tensor([[[1.0, 2.0, 3.0]]]).numpy()}, {})])
EOF
# x = (1, 2, 3): h = relu(W1 x + b1) = (4, 0.5); the rule ignores b1: W1+ x = (4, 2.5).
# target 0: W2+ row (1, 2), W2+ h = 5: P_h = (4*1, 0.5*2)/5 = (0.8, 0.2);
#   P_x = x * W1+^T (0.8/4, 0.2/2.5) = (1, 2, 3) * (0.24, 0.08, 0.2) = (0.24, 0.16, 0.6)
# target 1: W2+ row (0, 3): P_h = (0, 1), P_x = (1, 2, 3) * (0.2, 0.4, 0) = (0.2, 0.8, 0);
#   dual (-W2)+ row (1, 0): P_h = (1, 0), P_x = (1, 2, 3) * (0.25, 0, 0.25) = (0.25, 0, 0.75);
#   contrastive: max(P - P_dual, 0) = (0, 0.8, 0) at x, max((0, 1) - (1, 0), 0) = (0, 1) at fc1
hand() {  # DESC OUT EXPECTED(python list) ARGS...
	local d=$1 out=$2 want=$3; shift 3
	if $A -m "${M:-tiny.pt}" "$@" -o "$out" tiny.st.zst 2>err; then
		check "$d" $PYTHON - "$out" "$want" <<'EOF'
import sys, os, numpy as np
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
got = R.read_stream(sys.argv[1])[0][0]["attribution"]
want = np.array(eval(sys.argv[2]), np.float32)
assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6, (got, want)
EOF
	else not_ok "$d: $(cat err)"; fi
}
hand "tiny net, target 0: P at the input by hand (0.24, 0.16, 0.6)" h0.st.zst "[[[0.24, 0.16, 0.6]]]" \
	--method excitation_backprop --target 0
hand "tiny net, target 1: P at the input by hand (0.2, 0.8, 0)" h1.st.zst "[[[0.2, 0.8, 0]]]" \
	--method excitation_backprop --target 1
hand "tiny net, target 0: P at layer fc1 (0.8, 0.2)" h2.st.zst "[[[0.8, 0.2]]]" \
	--method excitation_backprop --target 0 --layer fc1 --no-upsample
hand "tiny net, target 1: contrastive at the input (0, 0.8, 0)" h3.st.zst "[[[0, 0.8, 0]]]" \
	--method contrastive_excitation_backprop --target 1
hand "tiny net, target 1: contrastive at fc1 (0, 1)" h4.st.zst "[[[0, 1]]]" \
	--method contrastive_excitation_backprop --target 1 --layer fc1 --no-upsample
M=tinymm.pt hand "the same net with addmm: target 0 at the input (0.24, 0.16, 0.6)" h5.st.zst \
	"[[[0.24, 0.16, 0.6]]]" --method excitation_backprop --target 0
M=tinymm.pt hand "the same net with addmm: contrastive, target 1 (0, 0.8, 0)" h6.st.zst "[[[0, 0.8, 0]]]" \
	--method contrastive_excitation_backprop --target 1

# ---- conservation -----------------------------------------------------------------
$PYTHON - <<'EOF'
import sys, os
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R, make_layer_models as LM
for n in ("net2d", "net3d"):
    R.write_stream(n + ".st.zst", [({"image": LM.example_input(n)[:1].numpy()}, {})])
EOF
cons() {  # DESC MODEL INPUT CHANNELS ARGS...
	local d=$1 m=$2 in=$3 c=$4; shift 4
	if $A -m "$m" --method excitation_backprop "$@" -o cons.st.zst "$in" 2>err; then
		check "$d" $PYTHON - "$c" <<'EOF'
import sys, os, numpy as np
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
a = R.read_stream("cons.st.zst")[0][0]["attribution"].astype(np.float64)
s = a.sum() / int(sys.argv[1])       # the input map repeats over the input's channels
assert abs(s - 1) <= 1e-4, s
assert np.abs(a).max() > 0
EOF
	else not_ok "$d: $(cat err)"; fi
}
cons "conservation: net2d input map sums to 1 (2 channels, signed input, BN, max pool, mean)" \
	lm/net2d_trace.pt net2d.st.zst 2 --target 1
cons "conservation: net2d layer b1.bn map sums to 1" lm/net2d_script.pt net2d.st.zst 1 --target 1 --layer b1.bn --no-upsample
cons "conservation: net3d input map sums to 1 (3D)" lm/net3d_script.pt net3d.st.zst 1 --target 0
cons "conservation: net3d layer conv2 map sums to 1" lm/net3d_trace.pt net3d.st.zst 1 --target 0 --layer conv2 --no-upsample

# ---- references --------------------------------------------------------------------
$PYTHON "$ESG_ROOT/tests/py/ref_excitation.py" --bin "$ESG_BIN" --fixtures lm --shipped --root "$ESG_ROOT" >ref.tap 2>ref.err
while IFS= read -r line; do
	case "$line" in
	"ok "*"# SKIP"*) skip "${line#*# SKIP }" ;;
	"ok "*) ok "${line#ok [0-9]* - }" ;;
	"not ok "*) not_ok "${line#not ok [0-9]* - }" ;;
	esac
done <ref.tap
grep -q '^1\.\.' ref.tap || { not_ok "ref_excitation.py did not finish: $(tail -c 300 ref.err)"; }

# ---- errors ------------------------------------------------------------------------
expect_fail "--upsample without --layer is a usage error" 2 "without --layer" \
	$A -m tiny.pt --method excitation_backprop --upsample -o e1.st.zst tiny.st.zst
expect_fail "--channel without --layer is a usage error" 2 "without --layer" \
	$A -m tiny.pt --method contrastive_excitation_backprop --channel 0 -o e2.st.zst tiny.st.zst
expect_fail "an unknown layer names the closest" 1 "no layer 'fc3'.*closest" \
	$A -m tiny.pt --method excitation_backprop --layer fc3 -o e3.st.zst tiny.st.zst
expect_fail "--channel out of range" 1 "channel 5 is out of range" \
	$A -m tiny.pt --method excitation_backprop --layer fc1 --channel 5 -o e4.st.zst tiny.st.zst
no_file "no output left behind on errors" e1.st.zst e2.st.zst e3.st.zst e4.st.zst
if $A --list-methods 2>/dev/null | grep -q '^contrastive_excitation_backprop '; then ok "--list-methods lists the methods"
else not_ok "--list-methods does not list contrastive_excitation_backprop"; fi

done_testing
