#!/usr/bin/env bash
# Evaluation of the demo 3D U-Net on phantom 1000 (doc/evaluation.md, "Results"):
#  - block-level cascading randomisation; saliency and integrated gradients of
#    each randomised model vs the trained model's (spearman, ssim, top-k IoU)
#    with one fixed objective (the vessel score over the true vessels) and, for
#    saliency, with each model's own prediction as the objective;
#  - ground truth on the vessel mask, faithfulness and sensitivity of the
#    gradient methods.
# Usage: share/demo/eval_unet3d.sh OUTDIR   (tools from $ESG_BIN, default build/bin;
# about 15 minutes on 2 cores)
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PATH=${ESG_BIN:-$ROOT/build/bin}:$PATH
M=$ROOT/share/models/unet3d.pt
O=${1:?usage: eval_unet3d.sh OUTDIR}
mkdir -p "$O" && cd "$O"
T="--threads ${THREADS:-2}"
esg-load --normalise zscore "$ROOT/share/data/phantom1000_image.nii.gz" -o ph.st.zst
esg-load --tensor mask "$ROOT/share/data/phantom1000_vessels.nii.gz" -o vessels.st.zst
esg-wrap -m "$M" --reduce fixed-mask --mask vessels.st.zst -o w0.pt     # fixed objective
esg-wrap -m "$M" --reduce fixed-mask --input ph.st.zst -o wp0.pt        # own prediction
esg-randomise -m "$M" --mode cascading --seed 1 --layers head,dec1,up1,dec2,up2,bottleneck,enc2,enc1 -o casc
esg-attr $T -m w0.pt --method saliency --target 1 -o sal_orig.st.zst ph.st.zst
esg-attr $T -m w0.pt --method integrated_gradients --param n_steps=16 --internal-batch 4 --target 1 -o ig_orig.st.zst ph.st.zst
esg-attr $T -m wp0.pt --method saliency --target 1 -o psal_orig.st.zst ph.st.zst
for f in casc/step-*.pt; do
	tag=$(basename "$f" .pt)
	esg-wrap -m "$f" --reduce fixed-mask --mask vessels.st.zst -o w_$tag.pt
	esg-wrap -m "$f" --reduce fixed-mask --input ph.st.zst -o wp_$tag.pt
	esg-attr $T -m w_$tag.pt --method saliency --target 1 -o sal_$tag.st.zst ph.st.zst
	esg-attr $T -m wp_$tag.pt --method saliency --target 1 -o psal_$tag.st.zst ph.st.zst
	esg-attr $T -m w_$tag.pt --method integrated_gradients --param n_steps=16 --internal-batch 4 --target 1 \
		-o ig_$tag.st.zst ph.st.zst
done
for m in sal ig psal; do
	esg-metric --metric spearman,spearman_abs,ssim,ssim_abs,topk_iou ${m}_orig.st.zst ${m}_step-*.st.zst -o sim_$m.tsv
done
esg-render --strip strip_sal.png --mip sal_orig.st.zst sal_step-*.st.zst
esg-render --strip strip_ig.png --mip ig_orig.st.zst ig_step-*.st.zst

gt() { tag=$1; shift; esg-attr $T -m wp0.pt --target 1 "$@" -o gt_$tag.st.zst ph.st.zst; }
gt saliency --method saliency
gt input_x_gradient --method input_x_gradient
gt integrated_gradients --method integrated_gradients --param n_steps=16 --internal-batch 4
gt guided_backprop --method guided_backprop
gt deconvolution --method deconvolution
gt deeplift --method deeplift
gt smoothgrad --method smoothgrad --param base=saliency --param nt_samples=8 --param stdevs=0.2 --internal-batch 4
gt gradient_shap --method gradient_shap --param n_samples=8 --baseline uniform:-1,1:4 --internal-batch 4
esg-metric $T -m wp0.pt --metric mass_in_mask,pointing_game,auroc,deletion,insertion,infidelity \
	--mask vessels.st.zst --param n_steps=10 --param n_perturb_samples=5 --param noise_std=0.05 \
	--curves curves.tsv -o gt.tsv gt_*.st.zst
esg-metric $T -m wp0.pt --metric max_sensitivity --param n_perturb_samples=3 -o sens.tsv \
	gt_saliency.st.zst gt_input_x_gradient.st.zst gt_guided_backprop.st.zst gt_deconvolution.st.zst \
	gt_deeplift.st.zst gt_integrated_gradients.st.zst
esg-render --curve-plot curves.png curves.tsv
echo "tables: $O/sim_sal.tsv $O/sim_ig.tsv $O/sim_psal.tsv $O/gt.tsv $O/sens.tsv"
