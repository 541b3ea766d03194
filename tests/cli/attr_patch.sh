#!/usr/bin/env bash
# needs: torch
# esg-attr --patch (patchwise attribution, blended) and esg-wrap --patch
# (sliding-window inference for the fixed mask), against the independent
# Python references in tests/py/ref_patch.py (grid and weights written from
# their definition, the methods from tests/py/ref_attr.py).
# Tolerances: a patch as large as the volume gives the whole-volume map
# within 1e-6 relative; patchwise maps within 1e-5 * max(1, max|ref|) +
# 1e-4 * |ref| of the reference (ref_attr.py's); sliding-window masks exactly.
. "$(dirname "$0")/lib.sh"

R="$PYTHON $ESG_ROOT/tests/py/ref_patch.py"
$PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx >/dev/null || { not_ok "fixture models"; done_testing; }
$PYTHON "$ESG_ROOT/tests/py/ref_attr.py" inputs fx in && $R make px || { not_ok "inputs"; done_testing; }
A="esg-attr --threads 1"
N3=fx/net3d.pt
N2=fx/relu_functional_trace.pt

# reference DESC MODEL ARGS... : esg-attr with ARGS, checked later by
# ref_patch.py (one Python process for all; SEG: a fixed-mask wrapper's model)
n=0
triples=()
descs=()
reference() {
	local d=$1 model=$2; shift 2
	n=$((n + 1))
	if $A -m "$model" -o "p$n.st.zst" "$@" 2>"e$n"; then
		triples+=("$model" "p$n.st.zst" "${SEG:--}")
		descs+=("$d")
	else
		not_ok "$d (esg-attr: $(head -c 200 "e$n"))"
	fi
}
# same DESC MODEL INPUT PATCH ARGS...: --patch PATCH equals no --patch
same() {
	local d=$1 model=$2 input=$3 patch=$4; shift 4
	n=$((n + 1))
	if $A -m "$model" -o "w$n.st.zst" "$@" "$input" 2>"e$n" &&
		$A -m "$model" -o "q$n.st.zst" --patch "$patch" "$@" "$input" 2>>"e$n"; then
		check "$d" esg-compare --quiet --rtol 1e-6 --tensor attribution "q$n.st.zst" "w$n.st.zst"
	else
		not_ok "$d ($(head -c 200 "e$n"))"
	fi
}

# (a) one patch covering the volume = the whole-volume run
same "patch = volume: 3D saliency, gaussian weights" $N3 in/x3d.st.zst 6,6,6 --method saliency
same "patch larger than the volume (clamped): 2D integrated gradients" $N2 px/v2d.st.zst 40,13 \
	--method integrated_gradients --param n_steps=5 --baseline blur:1
same "patch = volume: layer_gradcam upsampled" $N3 in/x3d.st.zst 6,6,6 --method layer_gradcam --layer conv2

# (b) patchwise saliency and integrated gradients, mean and gaussian, 3D and 2D
reference "3D saliency, gaussian, per-patch targets" $N3 px/v3d.st.zst --method saliency --patch 4,5,6
esg-render --info "p$n.st.zst" >info.txt 2>&1
check "metadata: esg.patch, esg.overlap, esg.blend, esg.patches, per-patch targets" \
	test "$(grep -cE 'esg.target: per-patch|esg.patch: \[4,5,6\]|esg.overlap: 0.25|esg.blend: gaussian|esg.patches: 12$|esg.patch_targets: \[([01],){23}[01]\]' info.txt)" = 6
reference "3D saliency, mean, --target" $N3 px/v3d.st.zst --method saliency --patch 4,4,4 --blend mean --overlap 0.5 --target 1
reference "3D integrated gradients, gaussian, blur baseline" $N3 px/v3d.st.zst --method integrated_gradients \
	--param n_steps=6 --patch 5,4,6 --overlap 0.4 --baseline blur:0.8 --internal-batch 3
reference "3D integrated gradients, mean" $N3 px/v3d.st.zst --method integrated_gradients \
	--param n_steps=4 --patch 4,6,5 --overlap 0 --blend mean
reference "2D saliency, gaussian" $N2 px/v2d.st.zst --method saliency --patch 6,7 --param abs=false
reference "2D integrated gradients, mean, uniform baseline" $N2 px/v2d.st.zst --method integrated_gradients \
	--param n_steps=5 --patch 5,8 --overlap 0.6 --blend mean --baseline uniform:-1,1 --seed 3
# (c) fixed-mask wrapper: each patch scored over the mask cropped at its origin
if esg-wrap -m px/seg3d.pt --reduce fixed-mask --input px/s3d.st.zst -o wf.pt 2>err.wrap; then
	SEG=px/seg3d.pt reference "fixed-mask, 3D saliency" wf.pt px/s3d.st.zst --method saliency --patch 5,6,5
	SEG=px/seg3d.pt reference "fixed-mask, 3D integrated gradients, mean" wf.pt px/s3d.st.zst \
		--method integrated_gradients --param n_steps=4 --patch 4,8,6 --blend mean --target 1
else
	not_ok "esg-wrap fixed-mask ($(head -c 200 err.wrap))"
fi

$R check "${triples[@]}" >ref.txt 2>ref.err
i=0
while IFS= read -r line; do
	case $line in PASS*) ok "${descs[$i]}: $line" ;; *) not_ok "${descs[$i]}: $line" ;; esac
	i=$((i + 1))
done <ref.txt
[ "$i" = ${#descs[@]} ] || not_ok "ref_patch.py checked $i of ${#descs[@]} ($(tail -c 300 ref.err))"

# (d) esg-wrap --patch: the mask from sliding-window inference
for args in "5,6,5 0.5 gaussian" "4,4,4 0.25 mean"; do
	set -- $args
	if esg-wrap -m px/seg3d.pt --reduce fixed-mask --input px/s3d.st.zst --patch "$1" --overlap "$2" \
		--blend "$3" -o "sw.pt" 2>err.sw; then
		check "esg-wrap sliding window $1 overlap $2 $3 = reference" $R window sw.pt px/seg3d.pt px/s3d.st.zst "$1" "$2" "$3"
	else
		not_ok "esg-wrap --patch $args ($(head -c 200 err.sw))"
	fi
done
if esg-wrap -m fx/seg.pt --reduce fixed-mask --input px/v2d.st.zst --patch 6,6 -o sw2.pt 2>err.sw; then
	check "esg-wrap sliding window, 2D" $R window sw2.pt fx/seg.pt px/v2d.st.zst 6,6 0.25 gaussian
else
	not_ok "esg-wrap --patch 2D ($(head -c 200 err.sw))"
fi

# (f) patches batched: several patches share a job (and its model calls),
# each row scored over its own window of the fixed mask.  The same map as
# one patch at a time (ESG_PATCH_BATCH=1) within 1e-5 relative (float
# rounding of other batch sizes); (c) above checked batched runs against
# the reference.  On the CPU a job takes by default only the patches that
# make calls of two rows; ESG_PATCH_BATCH=N asks for more.  wf2.pt has a
# mask per item (v3d's two items).
meta() { esg-render --info "$1" 2>/dev/null | sed -n "s/^ *$2: //p"; }
# batched DESC MODEL INPUT ASK WANT ARGS...: ESG_PATCH_BATCH=ASK ("": the
# default) gives WANT patches a job, fewer calls and the one-by-one map
batched() {
	local d=$1 model=$2 input=$3 ask=$4 want=$5; shift 5
	n=$((n + 1))
	if ESG_PATCH_BATCH=$ask $A -m "$model" -o "b$n.st.zst" "$@" "$input" 2>"e$n" &&
		ESG_PATCH_BATCH=1 $A -m "$model" -o "u$n.st.zst" "$@" "$input" 2>>"e$n"; then
		local pb ub pc uc
		pb=$(meta "b$n.st.zst" esg.patch_batch) ub=$(meta "u$n.st.zst" esg.patch_batch)
		pc=$(meta "b$n.st.zst" esg.passes) uc=$(meta "u$n.st.zst" esg.passes)
		if [ "$pb" = "$want" ] && [ "$ub" = 1 ] && { [ "$want" = 1 ] || [ "$pc" -lt "$uc" ]; }; then
			check "$d: $pb patches a job, $pc model calls (one by one: $uc), the same map" \
				esg-compare --quiet --rtol 1e-5 --tensor attribution "b$n.st.zst" "u$n.st.zst"
		else
			not_ok "$d: esg.patch_batch $pb (want $want), one by one $ub; calls $pc, one by one $uc"
		fi
	else
		not_ok "$d ($(head -c 200 "e$n"))"
	fi
}
esg-wrap -m px/seg3d.pt --reduce fixed-mask --input px/v3d.st.zst -o wf2.pt 2>err.wrap2 ||
	not_ok "esg-wrap fixed-mask, two items ($(head -c 200 err.wrap2))"
batched "saliency, a mask per item, per-patch targets" wf2.pt px/v3d.st.zst 4 4 --method saliency --patch 4,4,4
batched "layer_gradcam upsampled, a mask per item" wf2.pt px/v3d.st.zst 4 4 --method layer_gradcam \
	--layer model.c1 --patch 4,5,4 --target 1
batched "DeepLift ([x; baseline] rows), blur baseline" wf.pt px/s3d.st.zst 8 8 --method deeplift --patch 5,6,5 \
	--baseline blur:1 --target 0
batched "DeepLift by default on the CPU: one by one (its two rows)" wf.pt px/s3d.st.zst "" 1 --method deeplift \
	--patch 5,6,5 --target 0
batched "saliency by default on the CPU: two a job, the last patch alone (a lone item's copy)" wf.pt \
	px/s3d.st.zst "" 2 --method saliency --patch 5,6,5 --target 1
batched "integrated gradients, 3 a job under --internal-batch 3" wf.pt px/s3d.st.zst 8 3 \
	--method integrated_gradients --param n_steps=4 --patch 4,8,6 --internal-batch 3
batched "2D integrated gradients, no mask" $N2 px/v2d.st.zst 4 4 --method integrated_gradients --param n_steps=5 \
	--patch 6,7
batched "gradient_shap draws at random: one by one" wf.pt px/s3d.st.zst 8 1 --method gradient_shap --patch 5,6,5 \
	--baseline zero --target 1
batched "gradient_shap by default: one by one" wf.pt px/s3d.st.zst "" 1 --method gradient_shap --patch 5,6,5 \
	--baseline zero --target 1
# a shared job that fails (here a model that takes at most two rows a
# call) leaves the rest to go one by one, and says why
cat >small.py <<'PY'
import torch
class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv3d(1, 2, 3, padding=1)
    def forward(self, x):
        if x.size(0) > 2:
            raise RuntimeError('at most two rows a call')
        return self.c(x).relu().mean([2, 3, 4])
torch.manual_seed(0)
torch.jit.script(Small().eval()).save('small.pt')
PY
$PYTHON small.py 2>err.small || not_ok "the two-row model ($(head -c 200 err.small))"
if ESG_PATCH_BATCH=8 $A -m small.pt --method saliency --patch 5,6,5 --target 1 -o fs.st.zst px/s3d.st.zst 2>e.fs &&
	ESG_PATCH_BATCH=1 $A -m small.pt --method saliency --patch 5,6,5 --target 1 -o fu.st.zst px/s3d.st.zst 2>>e.fs; then
	why=$(meta fs.st.zst esg.patch_unbatched)
	case $why in
	"patches 1-8/27 at 0,0,0: "*"at most two rows a call"*) check \
		"a shared job that fails: one by one (esg.patch_unbatched), the same map" \
		esg-compare --quiet --rtol 1e-6 --tensor attribution fs.st.zst fu.st.zst ;;
	*) not_ok "a shared job that fails: esg.patch_unbatched '$why'" ;;
	esac
else
	not_ok "a shared job that fails ($(head -c 200 e.fs))"
fi

# (e) bad input: one line on stderr, the exit status, no output file
expect_fail "wrong number of patch sizes" 2 '^esg-attr: error: --patch 4,4: 2 sizes for the 3 spatial axes' \
	$A -m $N3 --method saliency --patch 4,4 -o bad1.st.zst in/x3d.st.zst
no_file "no output after a bad --patch" bad1.st.zst
expect_fail "bad patch size" 2 '^esg-attr: error: --patch: .*positive integers' \
	$A -m $N3 --method saliency --patch 4,0,4 -o bad2.st.zst in/x3d.st.zst
expect_fail "overlap 1 out of range" 2 '^esg-attr: error: --overlap: 1 is not in \[0, 1\)' \
	$A -m $N3 --method saliency --patch 4,4,4 --overlap 1 -o bad3.st.zst in/x3d.st.zst
expect_fail "negative overlap" 2 '^esg-attr: error: --overlap: -0.1 is not in' \
	$A -m $N3 --method saliency --patch 4,4,4 --overlap -0.1 -o bad3.st.zst in/x3d.st.zst
expect_fail "unknown blend" 2 "^esg-attr: error: --blend: 'cosine' is not mean or gaussian" \
	$A -m $N3 --method saliency --patch 4,4,4 --blend cosine -o bad4.st.zst in/x3d.st.zst
expect_fail "--overlap without --patch" 2 '^esg-attr: error: --overlap only goes with --patch' \
	$A -m $N3 --method saliency --overlap 0.5 -o bad5.st.zst in/x3d.st.zst
expect_fail "layer map on the layer's grid" 2 '^esg-attr: error: --patch: method layer_activation gives maps on the layer.s grid.*--upsample' \
	$A -m $N3 --method layer_activation --layer conv2 --patch 4,4,4 -o bad6.st.zst in/x3d.st.zst
expect_fail "layer_gradcam --no-upsample" 2 '^esg-attr: error: --patch: method layer_gradcam gives maps' \
	$A -m $N3 --method layer_gradcam --layer conv2 --no-upsample --patch 4,4,4 -o bad7.st.zst in/x3d.st.zst
$PYTHON -c "
import sys; sys.path.insert(0, '$ESG_ROOT/tests/py'); import numpy as np, safetensors_ref as st
st.write_stream('xu.st.zst', [([('image', np.fromfile('fx/xu.f32', '<f4').reshape(2, 1, 8, 8, 8))], {'esg.format': '1'})])"
expect_fail "a fixed mask without origin (older wrapper) and a smaller patch" 1 \
	"^esg-attr: error: .*patch 1/27 at 0,0,0: the model's fixed mask is \[1, 1, 8, 8, 8\] and a patch \[4, 4, 4\].*no 'origin'" \
	$A -m fx/unet_script.pt --method saliency --patch 4,4,4 -o bad8.st.zst xu.st.zst
check "... the same model with a patch of its mask's size" $A -m fx/unet_script.pt --method saliency --patch 8,8,8 -o ok8.st.zst xu.st.zst
expect_fail "a fixed mask smaller than the volume" 1 "^esg-attr: error: .*the model's fixed mask \[1, 2, 9, 11, 10\] does not cover the patch" \
	$A -m wf.pt --method saliency --patch 6,6,6 -o bad9.st.zst px/big.st.zst
no_file "no output after the failures" bad2.st.zst bad3.st.zst bad4.st.zst bad5.st.zst bad6.st.zst bad7.st.zst bad8.st.zst bad9.st.zst
expect_fail "esg-wrap --patch without --input" 2 '^esg-wrap: error: --patch goes with --reduce fixed-mask --input' \
	esg-wrap -m px/seg3d.pt --reduce argmax --patch 4,4,4 -o bw.pt
expect_fail "esg-wrap --patch: wrong number of sizes" 2 '^esg-wrap: error: --patch 4,4: 2 sizes for the 3 spatial axes' \
	esg-wrap -m px/seg3d.pt --reduce fixed-mask --input px/s3d.st.zst --patch 4,4 -o bw.pt
expect_fail "esg-wrap --patch on a classifier" 1 "^esg-wrap: error: --patch: the model's output \[1, 2\] on a patch" \
	esg-wrap -m $N3 --reduce fixed-mask --input px/v3d.st.zst --patch 4,4,4 -o bw.pt
no_file "esg-wrap: no output after the failures" bw.pt

# esg-metric on patched maps: similarity works; one target or none; no re-run
check "esg-metric: similarity of two patched maps" esg-metric --metric spearman p4.st.zst p5.st.zst
expect_fail "esg-metric: model metric on per-patch targets" 1 \
	'^esg-metric: error: .*infidelity: record has a target per patch' esg-metric -m $N3 --metric infidelity p4.st.zst
expect_fail "esg-metric: max_sensitivity of a patched map" 1 \
	'^esg-metric: error: .*max_sensitivity: the map was made patch by patch' esg-metric -m $N3 --metric max_sensitivity p5.st.zst
done_testing
