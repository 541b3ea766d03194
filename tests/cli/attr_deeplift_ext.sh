#!/usr/bin/env bash
# needs: torch
# DeepLift's rescale rule beyond Captum: PReLU, GELU (erf and tanh), SiLU,
# Mish, Hardswish, LeakyReLU with any slope -- modules (in-place too) and
# functional calls, 2D and 3D, in traced models with a skip -- against the
# plain-PyTorch reference of tests/py/ref_deeplift_ext.py, under both
# maxpool_rule values (no max pools: the same map).  Tolerance: 1e-5 of
# max|ref|; completeness sum(attr) = f(x) - f(ref) within
# 1e-5 * max(1, |f(x) - f(ref)|).  With Captum present: Captum's DeepLift
# hooks none of these modules, its map there is (x - ref) * the gradient.
. "$(dirname "$0")/lib.sh"

PY="$PYTHON $ESG_ROOT/tests/py/ref_deeplift_ext.py"
$PY models m >names.txt || { not_ok "fixture models"; done_testing; }
while read -r name; do
	for rule in captum complete; do
		esg-attr --threads 1 -m m/$name.pt --method deeplift --target 1 --param maxpool_rule=$rule \
			--baseline file:m/$name.ref.st.zst -o m/$name.$rule.st.zst m/$name.x.st.zst 2>err.txt ||
			not_ok "esg-attr deeplift $name $rule: $(head -c 200 err.txt)"
	done
done <names.txt
while IFS= read -r line; do
	case "$line" in
	PASS*) ok "${line#PASS }" ;;
	SKIP*) skip "${line#SKIP }" ;;
	*) not_ok "${line#FAIL }" ;;
	esac
done < <($PY check m 2>&1; CAPTUM_PATH=${CAPTUM_PATH:-$ESG_ROOT/../shared/captum} $PY captum m 2>&1)
done_testing
