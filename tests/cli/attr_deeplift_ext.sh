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
# the parameter is validated from the method table (esg-attr and esg-config alike)
n1=$(head -1 names.txt)
expect_fail "maxpool_rule=foo: one-line usage error" 2 "maxpool_rule: 'foo' is not one of captum\|complete" \
	esg-attr -m m/$n1.pt --method layer_deeplift --layer conv1 --param maxpool_rule=foo -o bad.st.zst m/$n1.x.st.zst
no_file "... no output left" bad.st.zst
check "--list-methods shows maxpool_rule for the four DeepLift methods" sh -c \
	"test \$(esg-attr --list-methods | grep -c 'maxpool_rule=captum') = 4"
done_testing
