#!/usr/bin/env bash
# needs: torch
# esg-attr --method lrp / layer_lrp (layer-wise relevance propagation; the
# shim's ESG_RULE_LRP, lib/shim/rules_lrp.cpp; rule tables lib/attr/lrp.c):
#  - hand values on a linear-ReLU-linear net (epsilon rule, the bias absorbs
#    relevance, the delta says how much), at the input and at a layer (1e-6);
#  - an independent plain-PyTorch reference (tests/py/ref_lrp.py): every rule
#    and composite on a 3D net (conv, BN, max pool, conv-transpose, cat,
#    residual add, avg pools, linear), the BN canonizer, rule.* overrides and
#    a rule file, layer_lrp, a 2D net with instance norm (pass) and bilinear
#    upsampling (epsilon), and the shipped U-Net behind a fixed-mask
#    wrapper (1e-4 max|ref| + 1e-6); conservation on 2D and 3D nets without
#    biases (sum = score within 1e-4);
#  - Captum's LRP / LayerLRP themselves on 2D models they support, the shipped
#    classifier included (tests/py/captum_lrp.py, 1e-5 max|ref|; skipped with
#    one line without Captum);
#  - metadata (esg.lrp_rules, esg.delta), usage errors (unknown layer type or
#    rule, a rule on a layer it can't apply to, bad rule files: exit 2), --amp
#    refused, esg-config checking the same parameters.
. "$(dirname "$0")/lib.sh"

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

torch.jit.trace(Tiny().eval(), torch.ones(1, 1, 3)).save("tiny.pt")
R.write_stream("tiny.st.zst", [({"image": torch.tensor([[[1.0, 2.0, 3.0]]]).numpy()}, {})])
EOF
# x = (1, 2, 3): z1 = W1 x + b1 = (4, 0.5), h = (4, 0.5); target 0: score = 4 + 2 * 0.5 = 5.
# epsilon rule: R_h = h * W2[0] * 5 / 5 = (4, 1); R_x = x * W1^T (R_h / z1) = x * W1^T (1, 2)
#   = (1, 2, 3) * (2, 2, -1) = (2, 4, -3): sum 3, the bias of unit 2 took 1 * 2 = 2: delta = 3 - 5 = -2
hand() {  # DESC OUT EXPECTED(python list) DELTA ARGS...
	local d=$1 out=$2 want=$3 delta=$4; shift 4
	if $A -m tiny.pt "$@" -o "$out" tiny.st.zst 2>err; then
		check "$d" $PYTHON - "$out" "$want" "$delta" <<'EOF'
import sys, os, json, numpy as np
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import ref_layer as R
ts, meta = R.read_stream(sys.argv[1])[0]
got = ts["attribution"]
want = np.array(eval(sys.argv[2]), np.float32)
assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6, (got, want)
assert abs(json.loads(meta["esg.delta"])[0] - float(sys.argv[3])) <= 1e-6, meta["esg.delta"]
assert "Linear=epsilon:" in meta["esg.lrp_rules"], meta.get("esg.lrp_rules")
EOF
	else not_ok "$d: $(cat err)"; fi
}
hand "tiny net, target 0: epsilon rule at the input by hand (2, 4, -3), delta -2" h0.st.zst "[[[2, 4, -3]]]" -2 \
	--method lrp --target 0
hand "tiny net, target 0: layer_lrp at fc1 by hand (4, 1), delta 0" h1.st.zst "[[[4, 1]]]" 0 \
	--method layer_lrp --target 0 --layer fc1 --no-upsample

# ---- references: plain PyTorch and Captum ------------------------------------------
relay() {  # TAP from a Python driver
	local tap=$1 err=$2 name=$3
	while IFS= read -r line; do
		case "$line" in
		"ok "*"# SKIP"*) skip "${line#*# SKIP }" ;;
		"ok "*) ok "${line#ok [0-9]* - }" ;;
		"not ok "*) not_ok "${line#not ok [0-9]* - }" ;;
		esac
	done <"$tap"
	grep -q '^1\.\.' "$tap" || not_ok "$name did not finish: $(tail -c 300 "$err")"
}
$PYTHON "$ESG_ROOT/tests/py/ref_lrp.py" --bin "$ESG_BIN" --shipped --root "$ESG_ROOT" >ref.tap 2>ref.err
relay ref.tap ref.err ref_lrp.py
$PYTHON "$ESG_ROOT/tests/py/captum_lrp.py" --bin "$ESG_BIN" --root "$ESG_ROOT" >cap.tap 2>cap.err
relay cap.tap cap.err captum_lrp.py

# ---- errors ------------------------------------------------------------------------
expect_fail "an unknown layer type is a usage error" 2 "unknown layer type 'Conv4d'" \
	$A -m tiny.pt --method lrp --param rule.Conv4d=epsilon -o e1.st.zst tiny.st.zst
expect_fail "an unknown rule is a usage error" 2 "unknown rule 'zminus'" \
	$A -m tiny.pt --method lrp --param rule.Linear=zminus -o e2.st.zst tiny.st.zst
expect_fail "a rule that does not apply to the layer type is a usage error" 2 "applies to conv / linear layers only" \
	$A -m tiny.pt --method lrp --param rule.MaxPool2d=gamma -o e3.st.zst tiny.st.zst
expect_fail "alpha - beta must be 1" 2 "alpha - beta must be 1" \
	$A -m tiny.pt --method lrp --param rule.Linear=alpha_beta:3:1 -o e4.st.zst tiny.st.zst
printf 'Linear = epsilon\nConv2d gamma\n' >bad.rules
expect_fail "a bad rule file line names file and line" 2 "bad.rules:2: 'Conv2d gamma' is not TYPE = RULE" \
	$A -m tiny.pt --method lrp --param rule_file=bad.rules -o e5.st.zst tiny.st.zst
expect_fail "a missing rule file is a usage error" 2 "rule_file 'nope.rules'" \
	$A -m tiny.pt --method lrp --param rule_file=nope.rules -o e6.st.zst tiny.st.zst
expect_fail "z-box bounds must be numbers" 2 "low: 'x' is not a number or auto" \
	$A -m tiny.pt --method lrp --param low=x -o e7.st.zst tiny.st.zst
expect_fail "--amp is refused (ratios of small numbers)" 1 "not supported with the lrp backward rule" \
	$A -m tiny.pt --method lrp --amp -o e8.st.zst tiny.st.zst
no_file "no output left behind on errors" e1.st.zst e2.st.zst e3.st.zst e4.st.zst e5.st.zst e6.st.zst e7.st.zst e8.st.zst
if $A --list-methods 2>/dev/null | grep -q '^layer_lrp ' && $A --list-methods | grep -q '^lrp '; then
	ok "--list-methods lists lrp and layer_lrp"
else not_ok "--list-methods does not list lrp / layer_lrp"; fi

# ---- esg-config checks the same parameters ---------------------------------------------
cfg() {
	cat >"$1" <<EOF
{"output": "o", "inputs": [{"image": "$ESG_ROOT/share/data/angio2d_20001_aneurysm.png", "name": "a"}],
 "models": [{"name": "c", "file": "$ESG_ROOT/share/models/classifier2d.pt"}], "target": 1,
 "methods": [{"name": "lrp", "params": {"composite": "epsilon_plus", "rule.Conv2d": "gamma:0.5", $2}}]}
EOF
}
cfg good.json '"rule.MaxPool": "wta"'
check "esg-config accepts lrp with rule.* overrides" esg-config good.json
cfg bad.json '"rule.Conv9d": "wta"'
expect_fail "esg-config names an unknown layer type" 1 "methods\[0\].params: parameter rule.Conv9d: unknown layer type" \
	esg-config bad.json

done_testing
