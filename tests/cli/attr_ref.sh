#!/usr/bin/env bash
# needs: torch
# esg-attr's gradient family against independent Python references
# (tests/py/ref_attr.py: plain PyTorch autograd, the methods written from their
# definitions, random draws replayed from the PRNG recipe in lib/attr/attr.h) on
# the fixture models -- module / functional / in-place ReLU, traced and
# scripted, 2D and 3D, max pooling, wrapped segmentation models -- and on the
# demo models in share/models when they are there.
# Tolerance: |esg - ref| <= 1e-5 * max(1, max|ref|) + 1e-4 * |ref|; esg.delta
# within 1e-4 * max(1, |delta|, max|ref|).
# esg-wrap: the wrapped models load in Python, and their scores equal the
# reductions computed in Python (tests/py/ref_wrap.py, atol/rtol 1e-5).
. "$(dirname "$0")/lib.sh"

PY="$PYTHON $ESG_ROOT/tests/py/ref_attr.py"
$PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx >/dev/null || { not_ok "fixture models"; done_testing; }
$PY inputs fx in || { not_ok "input streams"; done_testing; }
A="esg-attr --threads 1"
pairs=()
n=0
# run MODEL INPUT ARGS...: one esg-attr run, checked later against the reference
run() {
	local model=$1 input=$2; shift 2
	n=$((n + 1))
	local out="case$n.st.zst"
	if $A -m "$model" -o "$out" "$@" "$input" 2>"err$n"; then
		pairs+=("$model" "$out")
		echo "$out: $(basename "$model") $*" >>cases.txt
	else
		not_ok "esg-attr $(basename "$model") $* ($(head -c 200 "err$n"))"
	fi
}

for how in script trace; do
	for kind in module functional inplace; do
		m=fx/relu_${kind}_$how.pt
		run $m in/x2d.st.zst --method guided_backprop
		run $m in/x2d.st.zst --method deconvolution
		run $m in/x2d.st.zst --method deeplift --baseline const:-0.2
	done
done
m=fx/relu_functional_trace.pt
run $m in/x2d.st.zst --method saliency --target 1
run $m in/x2d.st.zst --method saliency --param abs=false
run $m in/x2d.st.zst --method input_x_gradient --target 2
run $m in/x2d.st.zst --method integrated_gradients --param n_steps=16 --baseline blur:1.5
run $m in/x2d.st.zst --method integrated_gradients --param n_steps=9 --param method=riemann_trapezoid --baseline uniform:-1,1
run $m in/x2d.st.zst --method integrated_gradients --param n_steps=12 --param method=riemann_middle --baseline file:in/x2d.st.zst --internal-batch 5
run $m in/two.st.zst --method deeplift_shap --baseline file:in/bl3.st.zst
run $m in/x2d.st.zst --method deeplift_shap --baseline uniform:-0.5,0.5:3 --baseline zero
run $m in/two.st.zst --method gradient_shap --baseline file:in/bl3.st.zst --seed 4
run $m in/x2d.st.zst --method gradient_shap --param n_samples=7 --param stdevs=0.25 --baseline uniform:0,1:2 --seed 5 --internal-batch 3
m=fx/relu_inplace_script.pt
run $m in/x2d.st.zst --method smoothgrad --param stdevs=0.5 --param nt_samples=6 --seed 1 --internal-batch 4
run $m in/x2d.st.zst --method smoothgrad_sq --param abs=false --seed 2
run $m in/x2d.st.zst --method vargrad --param base=guided_backprop --param stdevs=0.1 --seed 3
run $m in/two.st.zst --method noise_tunnel --param base=integrated_gradients --param n_steps=6 --param nt_samples=3 --baseline const:0.1
run $m in/x2d.st.zst --method noise_tunnel --param base=deeplift --param nt_samples=2 --param stdevs=0.05 --seed 7
run $m in/two.st.zst --method noise_tunnel --param base=gradient_shap --param n_samples=3 --param nt_samples=2 --baseline file:in/bl3.st.zst --seed 8
m=fx/net3d.pt
run $m in/x3d.st.zst --method saliency
run $m in/x3d.st.zst --method guided_backprop --target 0
run $m in/x3d.st.zst --method deconvolution
run $m in/x3d.st.zst --method deeplift --baseline blur:1
run $m in/x3d.st.zst --method deeplift --param maxpool_rule=complete --baseline blur:1
run $m in/x3d.st.zst --method deeplift_shap --param maxpool_rule=complete --baseline uniform:-0.5,0.5:2
run $m in/x3d.st.zst --method integrated_gradients --param n_steps=10 --baseline blur:0.8
run $m in/x3d.st.zst --method smoothgrad --param base=input_x_gradient --param stdevs=0.2
m=fx/oneconv.pt
run $m in/oneconv.st.zst --method deeplift --target 0
run $m in/oneconv.st.zst --method guided_backprop --target 1

# wrapped segmentation model: esg-wrap, then gradient methods through the wrapper
if esg-wrap -m fx/seg.pt --reduce argmax -o wseg_argmax.pt 2>err.wrap &&
	esg-wrap -m fx/seg.pt --reduce fixed-mask --input in/x2d.st.zst --activation softmax -o wseg_fixed.pt 2>>err.wrap; then
	ok "esg-wrap: seg.pt wrapped (argmax, fixed-mask)"
	run wseg_argmax.pt in/x2d.st.zst --method saliency --target 1
	run wseg_argmax.pt in/x2d.st.zst --method integrated_gradients --param n_steps=8
	run wseg_fixed.pt in/x2d.st.zst --method integrated_gradients --param n_steps=8 --target 0
	run wseg_fixed.pt in/x2d.st.zst --method gradient_shap --baseline uniform:-1,1:2 --target 1
	esg-wrap -m fx/seg.pt --reduce otsu --activation sigmoid -o wseg_otsu.pt 2>>err.wrap &&
		run wseg_otsu.pt in/x2d.st.zst --method integrated_gradients --param n_steps=8
else
	not_ok "esg-wrap: seg.pt ($(head -c 300 err.wrap))"
fi

# the demo models, when present (small settings: CI has 2 cores)
if [ -f "$ESG_ROOT/share/models/classifier2d.pt" ]; then
	esg-load --normalise zscore "$ESG_ROOT/share/data/angio2d_20001_aneurysm.npy" -o in/angio.st.zst
	m=$ESG_ROOT/share/models/classifier2d.pt
	run $m in/angio.st.zst --method saliency
	run $m in/angio.st.zst --method integrated_gradients --param n_steps=8 --target 1
	run $m in/angio.st.zst --method smoothgrad --param nt_samples=3 --param stdevs=0.2
else
	skip "share/models/classifier2d.pt not built"
fi
if [ -f "$ESG_ROOT/share/models/unet3d.pt" ]; then
	esg-load --normalise zscore --multiple 16 "$ESG_ROOT/share/data/phantom1000_image.nii.gz" -o in/phantom.st.zst
	if esg-wrap -m "$ESG_ROOT/share/models/unet3d.pt" --reduce fixed-mask --input in/phantom.st.zst -o wunet.pt 2>err.unet; then
		run wunet.pt in/phantom.st.zst --method saliency --target 1 --internal-batch 1
		# a lone 3D item runs as a batch of two when the internal batch allows
		# (libtorch's CPU convolution is slower at batch 1); its map is the same
		run wunet.pt in/phantom.st.zst --method saliency --target 1
		check "a lone 3D item runs as a batch of two, unless --internal-batch 1 (esg.model_calls)" \
			$PYTHON - "$ESG_ROOT/tests/py" case$((n - 1)).st.zst case$n.st.zst <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import safetensors_ref as st
calls = [json.loads(st.read_stream(p)[0][0]["esg.model_calls"]) for p in sys.argv[2:]]
want = [[{"grad": True, "batch": 1, "count": 1}], [{"grad": True, "batch": 2, "count": 1}]]
sys.exit(0 if calls == want else "model calls %s, expected %s" % (calls, want))
EOF
		# blocks the shim keeps for reuse hold old data (a fresh mapping is
		# zeroed): a read of memory never written would show up here
		for c in 1 0; do
			ESG_CPU_CACHE=$c $A -m wunet.pt --method deeplift --target 1 --baseline blur:2 \
				-o cache$c.st.zst in/phantom.st.zst
		done
		check "block reuse on and off (ESG_CPU_CACHE=0): identical DeepLift maps of the U-Net" \
			esg-compare -q -t attribution cache1.st.zst cache0.st.zst
	else
		not_ok "esg-wrap unet3d.pt ($(head -c 300 err.unet))"
	fi
else
	skip "share/models/unet3d.pt not built"
fi

# one Python process checks every case
$PY check "${pairs[@]}" >ref.txt 2>ref.err
while read -r verdict name rest; do
	what=$(grep "^$name:" cases.txt | cut -d' ' -f2-)
	case $verdict in
	PASS) ok "$what ($rest)" ;;
	SKIP) skip "$what: $rest" ;;
	*) not_ok "$what: $rest" ;;
	esac
done <ref.txt
if [ "$(($(grep -c . ref.txt) * 2))" = "${#pairs[@]}" ]; then ok "the reference ran on all $n cases"
else not_ok "the reference ran on every case"; sed 's/^/#   /' ref.err | tail -5; fi

# esg-wrap: scores in Python equal the reductions computed in Python
W="$PYTHON $ESG_ROOT/tests/py/ref_wrap.py"
$PYTHON - <<'EOF'
import torch, torch.nn as nn
class Seg1(nn.Module):  # a one-channel (binary) segmentation head, for otsu's two sides
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
    def forward(self, x):
        return self.conv(x)
torch.manual_seed(3)
torch.jit.trace(Seg1().eval(), torch.zeros(1, 1, 8, 8)).save("seg1.pt")
EOF
for red in argmax otsu; do
	for act in none softmax sigmoid; do
		if esg-wrap -m fx/seg.pt --reduce $red --activation $act -o w_${red}_$act.pt 2>err.w; then
			check "esg-wrap --reduce $red --activation $act: Python scores = direct reduction" \
				$W w_${red}_$act.pt fx/seg.pt $red $act in/x2d.st.zst
		else
			not_ok "esg-wrap --reduce $red --activation $act ($(head -c 200 err.w))"
		fi
	done
done
check "esg-wrap otsu on a one-channel output" esg-wrap -m seg1.pt --reduce otsu --activation sigmoid -o w1.pt
check "  ... two scores [below, above] = direct reduction" $W w1.pt seg1.pt otsu sigmoid in/x2d.st.zst
check "esg-wrap fixed-mask from the prediction (--input)" $W wseg_fixed.pt fx/seg.pt fixed-mask softmax in/x2d.st.zst argmax
$PYTHON - <<EOF
import sys; sys.path.insert(0, "$ESG_ROOT/tests/py")
import numpy as np, safetensors_ref as st
m = np.zeros((1, 1, 8, 8), np.float32); m[..., 2:6, 1:5] = 1
st.write_stream("roi.st.zst", [([("mask", m)], {"esg.format": "1"})])
st.write_stream("roi6.st.zst", [([("mask", m[..., :6, :6])], {"esg.format": "1"})])
EOF
check "esg-wrap fixed-mask with a user ROI stream" esg-wrap -m fx/seg.pt --reduce fixed-mask --mask roi.st.zst -o wroi.pt
check "  ... Python scores = sums over the ROI" $W wroi.pt fx/seg.pt fixed-mask none in/x2d.st.zst roi.st.zst
$PYTHON -c "import nibabel as nib, numpy as np; m = np.zeros((8, 8), np.uint8); m[2:6, 1:5] = 1; \
	nib.save(nib.Nifti1Image(m, np.eye(4)), 'roi.nii.gz')"
check "esg-wrap fixed-mask with a NIfTI ROI (axes as esg-load: ijk)" esg-wrap -m fx/seg.pt --reduce fixed-mask --mask roi.nii.gz -o wnii.pt
check "  ... Python scores = sums over the same ROI" $W wnii.pt fx/seg.pt fixed-mask none in/x2d.st.zst roi.st.zst
check "esg-wrap on a classifier passes it through" esg-wrap -m fx/relu_module_script.pt --reduce argmax --input in/x2d.st.zst -o wcls.pt
grep -q "passes it through" .err && ok "  ... with a note" || not_ok "  ... with a note"
check "  ... Python scores = the classifier's" $W wcls.pt fx/relu_module_script.pt argmax none in/x2d.st.zst
expect_fail "esg-wrap: unknown reduction" 2 "reduce.*'max'" esg-wrap -m fx/seg.pt --reduce max -o bad.pt
expect_fail "esg-wrap: fixed-mask without mask or input" 2 "needs --mask" esg-wrap -m fx/seg.pt --reduce fixed-mask -o bad.pt
expect_fail "esg-wrap: missing model" 1 "nope.pt" esg-wrap -m nope.pt --reduce argmax -o bad.pt
expect_fail "esg-wrap: ROI of the wrong size" 1 "does not fit" esg-wrap -m fx/seg.pt --reduce fixed-mask --mask roi6.st.zst --input in/x2d.st.zst -o bad.pt
no_file "esg-wrap: no output left after failures" bad.pt
expect_fail "esg-wrap: no -o" 2 "give -o" esg-wrap -m fx/seg.pt --reduce argmax
done_testing
