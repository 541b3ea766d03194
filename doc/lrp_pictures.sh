#!/usr/bin/env bash
# The pictures of doc/methods.md's LRP section: the map of each composite on
# the shipped U-Net (share/models/unet3d.pt behind a fixed-mask wrapper of
# its own prediction, vessel class, phantom 1000), as a maximum-intensity
# projection of |relevance| (axial; doc/img/lrp_COMPOSITE_mip.png) and the
# middle axial slice of the signed map over the image (red positive, blue
# negative; doc/img/lrp_COMPOSITE_slice.png).
#   doc/lrp_pictures.sh [BUILD]        (from the repository root; BUILD: build)
set -euo pipefail
B=${1:-build}/bin
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p doc/img
"$B/esg-load" --normalise zscore share/data/phantom1000_image.nii.gz -o "$T/in.st.zst"
"$B/esg-wrap" -m share/models/unet3d.pt --reduce fixed-mask --input "$T/in.st.zst" -o "$T/unet_fixed.pt"
for c in captum epsilon_plus epsilon_plus_flat epsilon_gamma_box epsilon_alpha2_beta1; do
	"$B/esg-attr" --threads 2 -m "$T/unet_fixed.pt" --method lrp --target 1 --param composite="$c" \
		-o "$T/$c.st.zst" "$T/in.st.zst"
	"$B/esg-render" --png "doc/img/lrp_${c}_mip.png" --mip --sign absolute_value --cmap hot \
		--clip-percentile 99.9 --colorbar --zoom 2 "$T/$c.st.zst"
	"$B/esg-render" --png "doc/img/lrp_${c}_slice.png" --overlay --sign all --cmap bwr --colorbar \
		--zoom 2 "$T/$c.st.zst"
done
