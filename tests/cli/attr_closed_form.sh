#!/usr/bin/env bash
# needs: torch
# esg-attr against closed forms: on the linear fixture f(x) = W x + b,
# IG = (x - x') * W[t] exactly (Gauss-Legendre and Riemann), DeepLift = IG,
# saliency = |W[t]|, input x gradient = x * W[t]; completeness of IG and
# DeepLift on a ReLU net within the reported delta; reproducibility (same seed,
# any --internal-batch, any --threads); errors and --list-* output.
. "$(dirname "$0")/lib.sh"

PY="$PYTHON $ESG_ROOT/tests/py/ref_attr.py"
$PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx >/dev/null || { not_ok "fixture models"; done_testing; }
$PY inputs fx in || { not_ok "input streams"; done_testing; }
A="esg-attr --threads 1"

# expect.py OUT KIND: the closed form for the linear fixture (W[c, i] = (c+1)(i-1.5))
cat >expect.py <<'EOF'
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import safetensors_ref as st
path, kind = sys.argv[2], sys.argv[3]
extra = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
W = np.array([[(c + 1) * (i - 1.5) for i in range(4)] for c in range(3)])
b = np.array([0.5, -1.0, 2.0])
meta, ts = st.read_stream(path)[0]
d = {t[0]: np.array(t[3], dtype=np.float64) for t in ts}
x, a = d["image"], d["attribution"]
tg = json.loads(meta["esg.target"])
t = np.array(tg if isinstance(tg, list) else [tg] * len(x))
w = W[t]
exp = {"ig": (x - extra) * w, "ig_trap": (x - extra) * w * (1 - 1 / extra if extra else 1),
       "sal": np.abs(w), "grad": w, "ixg": x * w}[kind]
if kind == "ig_trap":  # riemann_trapezoid, n steps: Captum's weights sum to (n-1)/n
    n = json.loads(meta["esg.params"])["n_steps"]
    exp = x * w * (n - 1) / n
err = np.abs(a - exp).max()
ok = err <= 1e-5 * max(1, np.abs(exp).max())
if kind == "ig" and "esg.delta" in meta:  # delta = sum(attr) - (f(x) - f(x'))
    fx = (x @ W.T + b)[np.arange(len(x)), t]
    fb = ((0 * x + extra) @ W.T + b)[np.arange(len(x)), t]
    want = a.sum(1) - (fx - fb)
    ok &= np.allclose(json.loads(meta["esg.delta"]), want, atol=1e-5)
print("max error %.3g" % err)
sys.exit(0 if ok else 1)
EOF
EX="$PYTHON expect.py $ESG_ROOT/tests/py"

check "IG gausslegendre on linear = x * W[t]" $A -m fx/linear.pt --method integrated_gradients --target 1 -o ig.st.zst in/lin.st.zst
check "  ... closed form within 1e-5, delta reported" $EX ig.st.zst ig
for m in riemann_left riemann_right riemann_middle; do
	check "IG $m, baseline const:0.5 = (x - 0.5) * W[t]" \
		$A -m fx/linear.pt --method integrated_gradients --param method=$m --param n_steps=7 --baseline const:0.5 -o ig_$m.st.zst in/lin.st.zst
	check "  ... closed form within 1e-5" $EX ig_$m.st.zst ig 0.5
done
check "IG riemann_trapezoid keeps Captum's weights ((n-1)/n of the integral)" \
	$A -m fx/linear.pt --method integrated_gradients --param method=riemann_trapezoid --param n_steps=10 -o igt.st.zst in/lin.st.zst
check "  ... x * W[t] * 9/10" $EX igt.st.zst ig_trap
check "DeepLift on linear = IG, baseline const:0.5" $A -m fx/linear.pt --method deeplift --baseline const:0.5 -o dl.st.zst in/lin.st.zst
check "  ... closed form within 1e-5" $EX dl.st.zst ig 0.5
check "saliency on linear = |W[t]| (abs=true default)" $A -m fx/linear.pt --method saliency --target 2 -o sal.st.zst in/lin.st.zst
check "  ... closed form" $EX sal.st.zst sal
check "saliency abs=false = W[t]" $A -m fx/linear.pt --method saliency --param abs=false --target 0 -o g.st.zst in/lin.st.zst
check "  ... closed form" $EX g.st.zst grad
check "input_x_gradient on linear = x * W[t] (target = argmax)" $A -m fx/linear.pt --method input_x_gradient -o ixg.st.zst in/lin.st.zst
check "  ... closed form" $EX ixg.st.zst ixg
check "grad_x_image is the same map" $A -m fx/linear.pt --method grad_x_image -o gxi.st.zst in/lin.st.zst
check "  ... identical to input_x_gradient" esg-compare -q -t attribution gxi.st.zst ixg.st.zst

# completeness on a ReLU net: |sum(attr) - (f(x) - f(x'))| is the reported delta
cat >complete.py <<'EOF'
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
import safetensors_ref as st
model, path, tol = torch.jit.load(sys.argv[2]), sys.argv[3], float(sys.argv[4])
bad = 0
for meta, ts in st.read_stream(path):
    d = {t[0]: np.array(t[3], dtype=np.float32) for t in ts}
    x = torch.tensor(d["image"])
    t = json.loads(meta["esg.target"]); t = t if isinstance(t, list) else [t] * len(x)
    with torch.no_grad():
        fx = model(x)[range(len(x)), t].double()
        fb = model(torch.zeros_like(x))[range(len(x)), t].double()
    s = d["attribution"].reshape(len(x), -1).astype(np.float64).sum(1)
    delta = np.array(json.loads(meta["esg.delta"]))
    gap = (fx - fb).numpy()
    print("sum", s, "f(x)-f(0)", gap, "delta", delta)
    bad |= not np.allclose(s - gap, delta, atol=1e-4)          # delta is what it says
    bad |= not (np.abs(delta) <= tol * np.maximum(1, np.abs(gap))).all()  # and small
sys.exit(bad)
EOF
check "IG n_steps=100 on relu_functional (2 items)" $A -m fx/relu_functional_script.pt --method integrated_gradients --param n_steps=100 -o igr.st.zst in/x2d.st.zst
check "  ... completeness within the reported delta, |delta| < 1e-3 |f(x)-f(0)|" $PYTHON complete.py "$ESG_ROOT/tests/py" fx/relu_functional_script.pt igr.st.zst 1e-3
check "DeepLift on relu_inplace_trace" $A -m fx/relu_inplace_trace.pt --method deeplift -o dlr.st.zst in/x2d.st.zst
check "  ... completeness: |delta| < 1e-4 |f(x)-f(0)| (rescale rule is exact)" $PYTHON complete.py "$ESG_ROOT/tests/py" fx/relu_inplace_trace.pt dlr.st.zst 1e-4

# reproducibility
for s in 1 2; do
	$A -m fx/relu_module_script.pt --method smoothgrad --param stdevs=0.3 --seed 5 -o sg$s.st.zst in/x2d.st.zst
done
check "same seed: identical attribution" esg-compare -q -t attribution sg1.st.zst sg2.st.zst
$A -m fx/relu_module_script.pt --method smoothgrad --param stdevs=0.3 --seed 6 -o sg3.st.zst in/x2d.st.zst
if esg-compare -q -t attribution sg1.st.zst sg3.st.zst; then not_ok "another seed: another attribution"; else ok "another seed: another attribution"; fi
$A -m fx/relu_module_script.pt --method smoothgrad --param stdevs=0.3 --seed 5 --internal-batch 1 -o sg4.st.zst in/x2d.st.zst
check "--internal-batch 1 vs 8: same map within 1e-6" esg-compare -q -a 1e-6 -t attribution sg1.st.zst sg4.st.zst
esg-attr --threads 2 -m fx/relu_module_script.pt --method gradient_shap --param stdevs=0.2 --param n_samples=4 \
	--baseline uniform:-1,1:3 --seed 9 --internal-batch 3 -o gs1.st.zst in/x2d.st.zst
$A -m fx/relu_module_script.pt --method gradient_shap --param stdevs=0.2 --param n_samples=4 \
	--baseline uniform:-1,1:3 --seed 9 -o gs2.st.zst in/x2d.st.zst
check "gradient_shap: --threads 2 --internal-batch 3 vs 1 thread, batch 8: within 1e-6" \
	esg-compare -q -a 1e-6 -t attribution gs1.st.zst gs2.st.zst

# metadata
cat >meta.py <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import safetensors_ref as st
meta, ts = st.read_stream(sys.argv[2])[0]
p = json.loads(meta["esg.params"])
need = ["esg.method", "esg.params", "esg.target", "esg.model", "esg.model_sha256", "esg.passes",
        "esg.seconds", "esg.seed", "esg.delta"]
missing = [k for k in need if k not in meta]
import hashlib
sha = hashlib.sha256(open(meta["esg.model"], "rb").read()).hexdigest()
ok = not missing and p == {"n_steps": 50, "method": "gausslegendre"} and meta["esg.model_sha256"] == sha \
    and meta["esg.method"] == "integrated_gradients" and int(meta["esg.passes"]) >= 7
print(missing, p, meta.get("esg.passes"))
sys.exit(0 if ok else 1)
EOF
check "metadata: method, params with defaults, target, SHA-256 of the model, passes, seconds, seed, delta" \
	$PYTHON meta.py "$ESG_ROOT/tests/py" ig.st.zst

# errors: one line, exit 1 (runtime) or 2 (usage), no output left behind
expect_fail "missing model: exit 1" 1 "nope.pt" $A -m nope.pt --method saliency -o e1.st.zst in/lin.st.zst
no_file "  ... no output" e1.st.zst
expect_fail "target out of range: exit 1" 1 "target 7.*out of range" $A -m fx/linear.pt --method saliency --target 7 -o e2.st.zst in/lin.st.zst
no_file "  ... no output" e2.st.zst
expect_fail "negative target: usage error" 2 "target: -1" $A -m fx/linear.pt --method saliency --target -1 in/lin.st.zst
expect_fail "unknown method: usage error naming it" 2 "unknown method 'foo'" $A -m fx/linear.pt --method foo in/lin.st.zst
esg-attr --list-methods >methods.txt
planned=""
for m in excitation_backprop contrastive_excitation_backprop layer_guided_backprop deep_dream feature_vis \
	inverted_representation; do
	grep -q "^$m " methods.txt || { planned=$m; break; }
done
if [ -n "$planned" ]; then
	expect_fail "planned method ($planned): not implemented yet" 2 "$planned.*not implemented" $A -m fx/linear.pt --method $planned in/lin.st.zst
else
	skip "every planned method is implemented"
fi
expect_fail "noise_tunnel cannot wrap a layer method" 2 "base: 'layer_activation'" $A -m fx/linear.pt --method noise_tunnel --param base=layer_activation in/lin.st.zst
expect_fail "unknown --param key" 2 "unknown parameter 'n_step'" $A -m fx/linear.pt --method integrated_gradients --param n_step=3 in/lin.st.zst
expect_fail "bad --param value" 2 "n_steps: 'x'" $A -m fx/linear.pt --method integrated_gradients --param n_steps=x in/lin.st.zst
expect_fail "bad --param choice" 2 "method: 'simpson' is not one of" $A -m fx/linear.pt --method integrated_gradients --param method=simpson in/lin.st.zst
expect_fail "alias-fixed parameter" 2 "fixed by the alias smoothgrad" $A -m fx/linear.pt --method smoothgrad --param nt_type=vargrad in/lin.st.zst
expect_fail "bad baseline spec" 2 "unknown baseline" $A -m fx/linear.pt --method integrated_gradients --baseline gauss:1 in/lin.st.zst
expect_fail "two baselines for IG" 2 "takes one baseline" $A -m fx/linear.pt --method integrated_gradients --baseline zero --baseline const:1 in/lin.st.zst
expect_fail "--layer on a gradient method" 2 "takes no layer" $A -m fx/linear.pt --method saliency --layer fc in/lin.st.zst
expect_fail "image shape wrong for the model: exit 1" 1 "record 1" $A -m fx/linear.pt --method saliency -o e3.st.zst in/x2d.st.zst
no_file "  ... no output" e3.st.zst
expect_fail "segmentation model without esg-wrap: exit 1" 1 "esg-wrap" $A -m fx/seg.pt --method saliency -o e4.st.zst in/seg.st.zst
no_file "  ... no output" e4.st.zst
: >empty.st.zst
expect_fail "empty input" 1 "no records" $A -m fx/linear.pt --method saliency -o e5.st.zst empty.st.zst
no_file "  ... no output" e5.st.zst

# listings
esg-attr --list-methods >methods.txt
ok_all=1
for m in saliency input_x_gradient integrated_gradients noise_tunnel gradient_shap guided_backprop deconvolution \
	deeplift deeplift_shap grad_x_image smoothgrad smoothgrad_sq vargrad; do
	grep -q "^$m " methods.txt || { ok_all=0; echo "# missing $m"; }
done
[ $ok_all = 1 ] && grep -q "n_steps=50" methods.txt && grep -q "nt_samples=5" methods.txt && grep -q "abs=true" methods.txt \
	&& { [ -z "$planned" ] || ! grep -q "^$planned " methods.txt; } && ok "--list-methods: every method, parameters and defaults" || not_ok "--list-methods"
check "--list-layers" $A -m fx/relu_module_script.pt --list-layers
grep -q "^conv1	Conv2d" .out && grep -q "^act	ReLU" .out && ok "  ... names conv1 and act with types" || not_ok "  ... layer list"
done_testing
