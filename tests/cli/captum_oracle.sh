#!/usr/bin/env bash
# needs: torch
# esegeta against Captum 0.8 itself (tests/py/captum_oracle.py): every method
# esegeta shares with Captum -- gradient, DeepLift (both halves of the issue-13
# fix: Captum's map by default, completeness of maxpool_rule=complete), layer,
# CAM, perturbation, noise tunnel / GradientShap with esegeta's draws
# replayed, infidelity and max-sensitivity -- on fixture models with 2x2 and
# overlapping 3x3/2 max pools, batch norm, residual additions, concatenation
# skips, 2D and 3D, and on the shipped classifier.  Tolerance: max|esg -
# Captum| <= 1e-5 * max|Captum| (metrics 1e-3, stated in the driver).
# Captum is looked for in $CAPTUM_PATH, default ../shared/captum beside the
# checkout; without it: one skipped test saying so.
. "$(dirname "$0")/lib.sh"

export CAPTUM_PATH=${CAPTUM_PATH:-$ESG_ROOT/../shared/captum}
export ESG_BIN=${ESG_BIN:-$ESG_ROOT/${BUILD:-build}/bin}
while IFS= read -r line; do
	case "$line" in
	PASS*) ok "${line#PASS }" ;;
	SKIP*) skip "${line#SKIP }" ;;
	"#"*) echo "$line" ;;
	*) not_ok "${line#FAIL }" ;;
	esac
done < <(OMP_NUM_THREADS=1 "$PYTHON" "$ESG_ROOT/tests/py/captum_oracle.py" "$T/work" 2>&1 ||
	echo "FAIL captum_oracle.py exited with an error")
done_testing
