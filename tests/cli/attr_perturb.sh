#!/usr/bin/env bash
# needs: torch
# esg-attr perturbation and surrogate methods against independent evidence:
# closed forms on linear and additive models, Shapley values by enumeration,
# plain-PyTorch re-derivations of occlusion and feature ablation
# (tests/py/ref_perturb.py) on fixture and shipped models; determinism over
# --seed, --threads and --internal-batch; bad parameters.
. "$(dirname "$0")/lib.sh"
R="$ESG_ROOT/tests/py/ref_perturb.py"
if ! $PYTHON -c 'import torch, numpy' 2>/dev/null; then
	skip "python3 with torch and numpy is needed"
	done_testing
fi
check "fixtures" $PYTHON "$R" setup .
check "fixture models" $PYTHON "$ESG_ROOT/tests/fixtures/make_models.py" fx
A() { esg-attr --threads 1 "$@"; }
# ref CHECK ARGS...: run the Python check, keep its one-line report in the TAP output
ref() {
	local d=$1; shift
	if $PYTHON "$R" "$@" >"$T/.ref" 2>&1; then ok "$d: $(tail -1 "$T/.ref")"
	else not_ok "$d: $(tail -3 "$T/.ref" | tr '\n' ' ')"; fi
}

# ---- linear models: w (x - baseline), per element or per block (tolerance 1e-5 + 1e-4 rel) ----
A -m lin2d.pt --method occlusion --param sliding_window_shapes=1 -o o1.st.zst x2d.st.zst
ref "occlusion 1x1 windows on a linear model = w (x - 0)" linear o1.st.zst lin2d_w.npy 0 elem
A -m lin2d.pt --method occlusion --param sliding_window_shapes=2 --baseline const:0.5 -o o2.st.zst x2d.st.zst
ref "occlusion 2x2 stride 2 = block sums of w (x - 0.5)" linear o2.st.zst lin2d_w.npy 0.5 block 2
A -m linvec.pt --method occlusion --param sliding_window_shapes=1 -o o3.st.zst xv.st.zst
ref "occlusion on [N, 4] (channel axis only) = w (x - 0)" linear o3.st.zst linvec_w.npy 0 elem
A -m lin3d.pt --method feature_ablation -o a1.st.zst x3d.st.zst
ref "feature ablation, voxel mask, 3D 2-channel = w (x - 0)" linear a1.st.zst lin3d_w.npy 0 elem
A -m lin2d.pt --method feature_ablation --param feature_mask=grid:2 --baseline const:0.5 -o a2.st.zst x2d.st.zst
ref "feature ablation grid:2 = block sums of w (x - 0.5)" linear a2.st.zst lin2d_w.npy 0.5 block 2
A -m lin2d.pt --method feature_permutation --param feature_mask=grid:3 -o p1.st.zst x2d.st.zst
ref "feature permutation of 2 items = block sums of w (x_m - x_other)" linear p1.st.zst lin2d_w.npy swap block 3
A -m lin3d.pt --method shapley_value_sampling --param feature_mask=grid:2 --param n_samples=2 -o s0.st.zst x3d.st.zst
ref "shapley sampling on a linear model = block sums of w x" linear s0.st.zst lin3d_w.npy 0 block 2

# ---- Shapley values: exact on an additive model, convergent with interactions ----
A -m additive.pt --method shapley_value_sampling --param feature_mask=grid:2 --param n_samples=3 -o s1.st.zst x44.st.zst
ref "shapley sampling, additive model, 3 orders = exact (1e-5 of max)" shapley additive.pt x44.st.zst s1.st.zst 2 1e-5
A -m additive.pt --method kernel_shap --param feature_mask=grid:2 --param n_samples=12 -o k1.st.zst x44.st.zst
ref "kernel_shap, additive model, 12 samples = exact (1e-4 of max)" shapley additive.pt x44.st.zst k1.st.zst 2 1e-4
A -m additive.pt --method lime --param interpretable_model=linear --param feature_mask=grid:2 --param n_samples=30 \
	-o l1.st.zst x44.st.zst
ref "lime with a linear surrogate, additive model = exact (1e-4 of max)" shapley additive.pt x44.st.zst l1.st.zst 2 1e-4
A -m additive.pt --method lime --param feature_mask=grid:2 --param n_samples=50 -o l2.st.zst x44.st.zst
ref "lime (Captum's lasso 0.01), additive model: within 10% of max" shapley additive.pt x44.st.zst l2.st.zst 2 0.1
A -m interact.pt --internal-batch 64 --method shapley_value_sampling --param feature_mask=grid:2 --param n_samples=20 \
	-o i1.st.zst x44.st.zst
A -m interact.pt --internal-batch 256 --method shapley_value_sampling --param feature_mask=grid:2 --param n_samples=5000 \
	-o i2.st.zst x44.st.zst
if $PYTHON "$R" shapley interact.pt x44.st.zst i1.st.zst 2 0.02 >/dev/null; then
	not_ok "20 orders should not already be within 2%"
else
	ok "shapley sampling with interactions, 20 orders: not yet within 2% of max"
fi
ref "shapley sampling with interactions, 5000 orders: within 5% of max of the enumeration" \
	shapley interact.pt x44.st.zst i2.st.zst 2 0.05
A -m interact.pt --internal-batch 256 --method kernel_shap --param feature_mask=grid:2 --param n_samples=3000 \
	-o k2.st.zst x44.st.zst
ref "kernel_shap with interactions, 3000 samples: within 8% of max" shapley interact.pt x44.st.zst k2.st.zst 2 0.08

# ---- plain-PyTorch references on the fixture models (1e-5 + 1e-4 rel) ----
A -m fx/relu_module_script.pt --method occlusion --param sliding_window_shapes=1,3,3 --param strides=1,2,2 \
	-o q1.st.zst xr.st.zst
ref "occlusion, overlapping clipped windows, 2D ReLU net" occlusion fx/relu_module_script.pt xr.st.zst q1.st.zst 1,3,3 1,2,2
A -m fx/net3d.pt --method occlusion --param sliding_window_shapes=4 --param strides=2 --baseline const:0.3 \
	-o q2.st.zst xn3.st.zst
ref "occlusion 4^3 stride 2, 3D net, baseline 0.3" occlusion fx/net3d.pt xn3.st.zst q2.st.zst 4 2 0.3
A -m fx/net3d.pt --method feature_ablation --param feature_mask=grid:2 -o q3.st.zst xn3.st.zst
ref "feature ablation grid:2, 3D net" ablation fx/net3d.pt xn3.st.zst q3.st.zst 2
A -m fx/relu_module_script.pt --method feature_ablation --param feature_mask=grid:3 --baseline const:-1 \
	-o q4.st.zst xr.st.zst
ref "feature ablation grid:3 (clipped blocks), 2D net, baseline -1" ablation fx/relu_module_script.pt xr.st.zst q4.st.zst 3 -1

# ---- the same random draws replayed in Python (lib/attr/attr.h's recipe), the rest re-derived
# with numpy: lstsq / solve fits, permutations, RISE masks (1e-4 of max + 1e-4 rel) ----
A -m fx/relu_module_script.pt --method kernel_shap --param feature_mask=grid:2 --param n_samples=40 --seed 7 \
	-o rk.st.zst xr.st.zst
ref "kernel_shap, 16 features, 40 samples, 2 items = replay" replay kernel_shap fx/relu_module_script.pt xr.st.zst rk.st.zst 2 40 7
A -m fx/relu_module_script.pt --method lime --param feature_mask=grid:3 --param interpretable_model=ridge \
	--param alpha=0.5 --seed 7 -o rl.st.zst xr.st.zst
ref "lime with ridge 0.5 = replay" replay lime fx/relu_module_script.pt xr.st.zst rl.st.zst 3 50 7 ridge:0.5
A -m fx/relu_module_script.pt --method lime --param feature_mask=grid:3 --param interpretable_model=linear --seed 7 \
	-o rl2.st.zst xr.st.zst
ref "lime with least squares = replay" replay lime fx/relu_module_script.pt xr.st.zst rl2.st.zst 3 50 7 linear
A -m fx/net3d.pt --method shapley_value_sampling --param feature_mask=grid:3 --param n_samples=5 --seed 2 \
	-o rs.st.zst xn3.st.zst
ref "shapley sampling 3D, 5 orders = replay" replay shapley fx/net3d.pt xn3.st.zst rs.st.zst 3 5 2
A -m fx/net3d.pt --method rise --param n_masks=50 --param s=3 --param p1=0.4 --seed 9 -o rr.st.zst xn3.st.zst
ref "rise 3D, 50 masks = replay" rise fx/net3d.pt xn3.st.zst rr.st.zst 50 3 0.4 9
A -m fx/relu_module_script.pt --method rise --param n_masks=50 --param s=3 --seed 9 -o rr2.st.zst xr.st.zst
ref "rise 2D, 2 items = replay" rise fx/relu_module_script.pt xr.st.zst rr2.st.zst 50 3 0.5 9

# ---- segmentation models wrapped by esg-wrap (the fixture seg net) ----
if command -v esg-wrap >/dev/null && esg-wrap -m fx/seg.pt --reduce argmax -o seg_argmax.pt 2>/dev/null &&
	esg-wrap -m fx/seg.pt --reduce fixed-mask --input xr.st.zst -o seg_fixed.pt 2>/dev/null; then
	A -m seg_argmax.pt --method occlusion --param sliding_window_shapes=3 --param strides=2 -o w1.st.zst xr.st.zst
	ref "occlusion on a segmentation net wrapped with argmax = reference" occlusion seg_argmax.pt xr.st.zst w1.st.zst 3 2
	A -m seg_fixed.pt --method feature_ablation --param feature_mask=grid:2 -o w2.st.zst xr.st.zst
	ref "feature ablation on a segmentation net wrapped with fixed-mask = reference" ablation seg_fixed.pt xr.st.zst w2.st.zst 2
else
	skip "esg-wrap is needed for the wrapped segmentation models"
	skip "esg-wrap is needed for the wrapped segmentation models"
fi

# ---- label volumes: a stream tensor and NIfTI give the same features as grid:2 ----
A -m lin3d.pt --method feature_ablation --param feature_mask=grid:2 -o g.st.zst x3d.st.zst
A -m lin3d.pt --method feature_ablation --param feature_mask=file:labels.st.zst -o f1.st.zst x3d.st.zst
check "feature_mask=file:STREAM (tensor 'mask') = grid:2" esg-compare -q -t attribution f1.st.zst g.st.zst
if [ -f labels.nii.gz ]; then
	A -m lin3d.pt --method feature_ablation --param feature_mask=file:labels.nii.gz -o f2.st.zst x3d.st.zst
	check "feature_mask=file:NIfTI label volume = grid:2" esg-compare -q -t attribution f2.st.zst g.st.zst
	A -m lin3d.pt --method feature_ablation --param feature_mask=file:labels_asym.nii.gz -o f4.st.zst x3d_kji.st.zst
	A -m lin3d.pt --method feature_ablation --param feature_mask=file:labels_kji.st.zst -o f5.st.zst x3d_kji.st.zst
	check "NIfTI labels follow the record's esg.axes (kji)" esg-compare -q -t attribution f4.st.zst f5.st.zst
	A -m lin3d.pt --method feature_ablation --param feature_mask=file:labels_asym.nii.gz -o f6.st.zst x3d.st.zst
	if esg-compare -q -t attribution f4.st.zst f6.st.zst; then not_ok "the same labels read in ijk order differ"
	else ok "the same labels read in ijk order differ"; fi
else
	skip "nibabel is needed for the NIfTI label volume"
fi
check "feature_mask=slic:8 runs" A -m lin3d.pt --method feature_ablation --param feature_mask=slic:8 -o f3.st.zst x3d.st.zst

# ---- RISE and extremal perturbations find the region a model looks at ----
A -m region.pt --method rise --param n_masks=500 --param s=4 --internal-batch 50 -o r1.st.zst x16.st.zst
ref "rise: mean saliency higher inside the model's region" inside r1.st.zst region2d.npy
A -m const.pt --method rise --param n_masks=400 --param s=5 --param p1=0.3 --internal-batch 100 -o r2.st.zst x16.st.zst
ref "rise on a constant model: sum M / (n_masks p1) averages 1 (within 0.03)" mean r2.st.zst 1 0.03
A -m region.pt --method extremal_perturbation --param max_iter=100 --param step=2 --param sigma=2 --param max_blur=3 \
	--param areas=0.0625 -o e1.st.zst x16.st.zst
ref "extremal perturbation (area 1/16): mask on the model's region" inside e1.st.zst region2d.npy
A -m region3d.pt --method rise --param n_masks=300 --param s=4 --internal-batch 50 -o r3.st.zst x12.st.zst
ref "rise 3D: mean saliency higher inside the model's region" inside r3.st.zst region3d.npy
A -m region3d.pt --method extremal_perturbation --param max_iter=100 --param step=2 --param sigma=2 --param max_blur=2 \
	--param areas=0.03 -o e3.st.zst x12.st.zst
ref "extremal perturbation 3D (area 0.03): mask on the model's region" inside e3.st.zst region3d.npy
A -m region.pt --method extremal_perturbation --param max_iter=30 --param step=2 --param sigma=2 --param variant=delete \
	--param areas=0.05,0.2 -o e2.st.zst x16.st.zst
check "extremal perturbation, delete variant, two areas, runs" test -s e2.st.zst

# ---- determinism: same seed same map, threads and internal batch change nothing ----
# (feature permutation: 3 items, as 2 have only one non-identity permutation)
for m in "rise --param n_masks=30" "shapley_value_sampling --param feature_mask=grid:3 --param n_samples=4" \
	"lime --param feature_mask=grid:3 --param interpretable_model=ridge" \
	"feature_permutation --param feature_mask=grid:2"; do
	name=${m%% *}
	in=xn3.st.zst model=fx/net3d.pt
	[ "$name" = feature_permutation ] && in=x44pair.st.zst model=interact.pt
	esg-attr -m $model --method $m --seed 5 --threads 1 --internal-batch 4 -o d1.st.zst $in
	esg-attr -m $model --method $m --seed 5 --threads 1 --internal-batch 4 -o d2.st.zst $in
	esg-attr -m $model --method $m --seed 5 --threads 2 --internal-batch 1 -o d4.st.zst $in
	esg-attr -m $model --method $m --seed 6 --threads 1 --internal-batch 4 -o d5.st.zst $in
	check "$name: same seed, same map (bit for bit)" esg-compare -q -t attribution d1.st.zst d2.st.zst
	check "$name: --threads 2 --internal-batch 1 = --threads 1 --internal-batch 4 (atol 1e-6)" \
		esg-compare -q -a 1e-6 -t attribution d1.st.zst d4.st.zst
	if esg-compare -q -t attribution d1.st.zst d5.st.zst; then not_ok "$name: another seed, another map"
	else ok "$name: another seed, another map"; fi
done

esg-attr -m fx/net3d.pt --method rise --param n_masks=30 --seed 5 --threads 2 --internal-batch 4 -o d3.st.zst xn3.st.zst
esg-attr -m fx/net3d.pt --method rise --param n_masks=30 --seed 5 --threads 1 --internal-batch 4 -o d1.st.zst xn3.st.zst
check "rise: --threads 2 = --threads 1, bit for bit" esg-compare -q -t attribution d1.st.zst d3.st.zst

# ---- progress: on a terminal only ----
if command -v script >/dev/null; then
	script -qc "esg-attr --threads 1 -m interact.pt --method shapley_value_sampling --param feature_mask=grid:2 \
		--param n_samples=50 -o pg.st.zst x44.st.zst" /dev/null | tr '\r' '\n' >progress.txt
	check "progress on a terminal ends at 201/201 (100%)" grep -q "shapley_value_sampling evaluations 201/201 (100%)" progress.txt
else
	skip "script(1) is needed for the terminal test"
fi
esg-attr --threads 1 -m interact.pt --method shapley_value_sampling --param feature_mask=grid:2 \
	--param n_samples=50 -o pg.st.zst x44.st.zst 2>progress.err
check "no progress when stderr is not a terminal" test ! -s progress.err

# ---- metadata ----
check "esg.passes: 1 prediction + 2 items x (1 + 9 windows) in calls of 8 = 5" \
	bash -c "zstd -dc o2.st.zst | grep -a -q '\"esg.passes\":\"5\"'"
check "esg.evaluations: 2 predictions + 2 x 10 = 22" \
	bash -c "zstd -dc o2.st.zst | grep -a -q '\"esg.evaluations\":\"22\"'"

# ---- shipped models (when present) ----
S="$ESG_ROOT/share"
if [ -f "$S/models/classifier2d.pt" ] && command -v esg-load >/dev/null; then
	esg-load --normalise zscore "$S/data/angio2d_20001_aneurysm.npy" -o c2.st.zst
	A -m "$S/models/classifier2d.pt" --method occlusion --param sliding_window_shapes=16 --internal-batch 16 \
		-o c2o.st.zst c2.st.zst
	ref "occlusion 16x16 on classifier2d.pt = PyTorch reference" occlusion "$S/models/classifier2d.pt" c2.st.zst c2o.st.zst 16 ''
	A -m "$S/models/classifier2d.pt" --method feature_ablation --param feature_mask=grid:32 --internal-batch 16 \
		-o c2a.st.zst c2.st.zst
	ref "feature ablation grid:32 on classifier2d.pt = PyTorch reference" ablation "$S/models/classifier2d.pt" c2.st.zst c2a.st.zst 32
else
	skip "share/models/classifier2d.pt not there yet"
fi
if [ -f "$S/models/unet3d.pt" ] && command -v esg-wrap >/dev/null && command -v esg-load >/dev/null; then
	esg-wrap -m "$S/models/unet3d.pt" --reduce argmax -o unet_argmax.pt 2>/dev/null
	esg-load --normalise zscore "$S/data/phantom1000_image.nii.gz" -o u.st.zst 2>/dev/null
	if [ -s unet_argmax.pt ] && [ -s u.st.zst ]; then
		esg-attr --threads 2 -m unet_argmax.pt --method occlusion --param sliding_window_shapes=32 \
			-o uo.st.zst u.st.zst
		ref "occlusion 32^3 on the wrapped 3D U-Net = PyTorch reference" occlusion unet_argmax.pt u.st.zst uo.st.zst 32 ''
	else
		skip "esg-wrap / esg-load could not prepare the U-Net"
	fi
else
	skip "share/models/unet3d.pt or esg-wrap not there yet"
fi

# ---- bad input: one line, exit 1 (runtime) / 2 (usage), no output left ----
expect_fail "feature_permutation on one item" 1 "needs N >= 2 items" \
	A -m interact.pt --method feature_permutation --param feature_mask=grid:2 -o bad.st.zst x44.st.zst
expect_fail "unknown feature mask (usage)" 2 "feature_mask 'blob': want voxel" \
	A -m lin3d.pt --method feature_ablation --param feature_mask=blob -o bad.st.zst x3d.st.zst
expect_fail "label volume of the wrong shape" 1 "does not fit an item" \
	A -m lin3d.pt --method feature_ablation --param feature_mask=file:x2d.st.zst:image -o bad.st.zst x3d.st.zst
expect_fail "label volume tensor missing" 1 "no tensor 'nope'" \
	A -m lin3d.pt --method feature_ablation --param feature_mask=file:labels.st.zst:nope -o bad.st.zst x3d.st.zst
expect_fail "window larger than the image" 1 "window 5 is larger" \
	A -m lin3d.pt --method occlusion --param sliding_window_shapes=5 -o bad.st.zst x3d.st.zst
expect_fail "window with the wrong number of axes" 1 "has 2 values; want 4" \
	A -m lin3d.pt --method occlusion --param sliding_window_shapes=1,2 -o bad.st.zst x3d.st.zst
expect_fail "areas outside (0, 1)" 1 "parameter areas" \
	A -m region.pt --method extremal_perturbation --param areas=1.5 -o bad.st.zst x16.st.zst
expect_fail "p1 out of range" 2 "p1" A -m region.pt --method rise --param p1=0 -o bad.st.zst x16.st.zst
expect_fail "unknown interpretable model" 2 "interpretable_model" \
	A -m region.pt --method lime --param interpretable_model=tree -o bad.st.zst x16.st.zst
expect_fail "rise on an image without spatial axes" 1 "spatial axes" \
	A -m linvec.pt --method rise -o bad.st.zst xv.st.zst
no_file "no output left by the failures" bad.st.zst
done_testing
