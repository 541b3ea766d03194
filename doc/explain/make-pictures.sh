#!/usr/bin/env bash
# doc/explain/make-pictures.sh: the pictures of doc/explain.md, each method
# on the shipped 2D classifier and 3D U-Net (and on randomised copies: the
# sanity check), made with esg-explain and drawn with esg-render --png.
# Run from the repository root after `make all`; about 5 minutes on 2 cores.
set -eu
B=${BIN:-build/bin}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
D=doc/explain
X="$B/esg-explain --threads 1"

# ---- 2D: the angiogram classifier (64 x 64), target 1 = aneurysm
$B/esg-load share/data/angio2d_20001_aneurysm.png --channels gray --normalise zscore --name aneurysm -o $T/a.st.zst
$B/esg-randomise -m share/models/classifier2d.pt --mode cascading --layers fc,conv4,block3,block2,block1 --seed 1 -o $T/r2d
M2=share/models/classifier2d.pt R2=$(ls $T/r2d/step-05-*.pt)
for m in "$M2 classifier2d" "$R2 classifier2d-randomised"; do
	set -- $m
	$X -m $1 --method deepdream --layer block2 --channel 0 --steps 20 --param octaves=2 -o $T/dd.st.zst $T/a.st.zst
	$X -m $1 --method feature_vis --layer block2 --channel 0 --steps 128 -o $T/fv.st.zst $T/a.st.zst
	$X -m $1 --method invert --layer block1 --steps 128 -o $T/inv.st.zst $T/a.st.zst
	$X -m $1 --method class_model --target 1 --steps 128 -o $T/cm.st.zst $T/a.st.zst
	for k in dd fv inv cm; do $B/esg-render --png $D/$2-$k.png --tensor image --zoom 2 $T/$k.st.zst; done
done
$B/esg-render --png $D/classifier2d-input.png --tensor image --zoom 2 $T/a.st.zst

# ---- 3D: the U-Net (64^3 phantom), wrapped on its own prediction (class 1 = vessel)
$B/esg-load share/data/phantom1000_image.nii.gz --normalise zscore --name phantom1000 -o $T/p.st.zst
$B/esg-wrap -m share/models/unet3d.pt --reduce fixed-mask --input $T/p.st.zst -o $T/unet3d.pt
$B/esg-randomise -m $T/unet3d.pt --mode cascading --seed 1 -o $T/r3d \
	--layers model.head,model.dec1,model.dec2,model.bottleneck,model.enc2,model.enc1
M3=$T/unet3d.pt R3=$(ls $T/r3d/step-06-*.pt)
for m in "$M3 unet3d" "$R3 unet3d-randomised"; do
	set -- $m
	$X -m $1 --method deepdream --layer model.enc1 --channel 0 --steps 4 -o $T/dd.st.zst $T/p.st.zst &
	pid=$!
	$X -m $1 --method feature_vis --layer model.enc1 --channel 0 --steps 16 \
		--param pad=0 --param scale_min=1 --param scale_max=1 -o $T/fv.st.zst $T/p.st.zst
	wait $pid
	$X -m $1 --method invert --layer model.enc1 --steps 16 -o $T/inv.st.zst $T/p.st.zst &
	pid=$!
	$X -m $1 --method class_model --target 1 --steps 8 -o $T/cm.st.zst $T/p.st.zst
	wait $pid
	for k in dd fv inv cm; do $B/esg-render --png $D/$2-$k.png --tensor image --slice 32 --zoom 2 $T/$k.st.zst; done
done
$B/esg-render --png $D/unet3d-input.png --tensor image --slice 32 --zoom 2 $T/p.st.zst
