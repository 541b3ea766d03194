#!/usr/bin/env bash
# needs: torch
# The shim's guided backprop (functional and in-place ReLU models, traced and
# scripted) and DeepLift (3D net with max pooling) against plain-PyTorch
# references; the wrapped model loads in Python.  See tests/py/shim_ref.py.
. "$(dirname "$0")/lib.sh"
bin=$ESG_ROOT/${BUILD:-build}/tests/test_torch_shim
if [ ! -x "$bin" ]; then skip "test_torch_shim not built"; done_testing; fi
check "fixture models" "$PYTHON" "$ESG_ROOT/tests/fixtures/make_models.py" "$T/fx"
if ESG_SHIM_FIXTURES=$T/fx ESG_SHIM_DUMP=$T/fx "$bin" >"$T/unit.tap" 2>"$T/unit.err" &&
	! grep -q '^not ok' "$T/unit.tap"; then
	ok "shim writes its maps"
else
	not_ok "shim writes its maps"
	grep '^not ok' "$T/unit.tap" | sed 's/^/#   /' | head -5
	sed 's/^/#   /' "$T/unit.err" | head -5
fi
# Python's TAP lines, renumbered into ours.
while IFS= read -r line; do
	case "$line" in
	"ok "*) ok "${line#ok * - }" ;;
	"not ok "*) not_ok "${line#not ok * - }" ;;
	esac
done < <("$PYTHON" "$ESG_ROOT/tests/py/shim_ref.py" "$T/fx" 2>"$T/py.err" || echo "not ok 0 - shim_ref.py failed: $(tail -1 "$T/py.err")")
done_testing
