#!/usr/bin/env bash
# needs: torch
# The explain section of a run config: esg-config's checks (one line naming
# the field), the jobs it makes (one per input x model x method x layer x
# channel, the randomised model's too), then a tiny run through
# pipelines/run with the real esg-explain: the records, their logs, the
# report's gallery; a second run does nothing; a changed entry reruns only
# its own files and the report.
. "$(dirname "$0")/lib.sh"

BIN=${ESG_BIN:-$ESG_ROOT/build/bin}
RUN="$ESG_ROOT/pipelines/run"
MK=(make --no-print-directory -f "$ESG_ROOT/pipelines/run.mk" BIN="$BIN")
$PYTHON "$ESG_ROOT/tests/py/make_pipeline_data.py" data >/dev/null || { not_ok "pipeline test data"; done_testing; }

# ---- esg-config's checks ---------------------------------------------------
bad() { # bad DESC PATTERN EXPLAIN-JSON
	cat >bad.json <<EOF
{"output": "o", "inputs": [{"image": "data/vol1_image.nii.gz", "name": "vol1"}],
 "models": [{"name": "u", "file": "data/unet.pt"}], "methods": [{"name": "saliency"}],
 "randomisation": {"layers": ["head"], "as_model": "u-random"},
 "explain": $3}
EOF
	expect_fail "esg-config refuses $1" 1 "^esg-config: error: bad.json: $2" esg-config bad.json
	[ "$(wc -l <"$T/.err")" = 1 ] || not_ok "$1: one line ($(cat "$T/.err"))"
}
L='"layers": ["enc1"]'
bad "an unknown field" 'explain\.layer: unknown field \(known here: layers, ' "{\"layer\": [\"enc1\"], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "an unknown method field" 'explain\.methods\[0\]\.chanel: unknown field' "{$L, \"methods\": [{\"name\": \"deepdream\", \"chanel\": [1]}]}"
bad "no methods" 'explain\.methods: missing \(required' "{$L}"
bad "an unknown method" "explain\.methods\[0\]\.name: unknown method 'dream' \(methods: deepdream, feature_vis, class_model, invert\)" \
	"{$L, \"methods\": [{\"name\": \"dream\"}]}"
bad "an unknown method in \"method\"" "explain\.methods\[0\]\.method: unknown method 'fv'" "{$L, \"methods\": [{\"name\": \"x\", \"method\": \"fv\"}]}"
bad "a name used twice" "explain\.methods\[1\]\.name: method name 'deepdream' is used twice" \
	"{$L, \"methods\": [{\"name\": \"deepdream\"}, {\"name\": \"deepdream\"}]}"
bad "a layer method without layers" 'explain\.methods\[0\]: method .deepdream. needs a layer' "{\"methods\": [{\"name\": \"deepdream\"}]}"
bad "class_model with layers" "explain\.methods\[0\]: method 'class_model' takes no layer" \
	"{$L, \"methods\": [{\"name\": \"class_model\", \"target\": 1, \"layers\": [\"enc1\"]}]}"
bad "channels on invert" "explain\.methods\[0\]: method 'invert' takes no \"channels\"" \
	"{$L, \"methods\": [{\"name\": \"invert\", \"channels\": [1]}]}"
bad "a target on deepdream" "explain\.methods\[0\]: method 'deepdream' takes no \"target\"" \
	"{$L, \"methods\": [{\"name\": \"deepdream\", \"target\": 1}]}"
bad "a method's layer not in explain.layers" "explain\.methods\[0\]\.layers\[0\]: no layer 'dec1' in explain.layers" \
	"{$L, \"methods\": [{\"name\": \"deepdream\", \"layers\": [\"dec1\"]}]}"
bad "a channel that is no index" 'explain\.channels\[1\]: -1 is not an index' "{$L, \"channels\": [0, -1], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "a channel of the wrong type" 'explain\.channels\[0\]: must be a whole number' "{$L, \"channels\": [\"0\"], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "steps of the wrong type" 'explain\.steps: must be a number' "{$L, \"steps\": \"20\", \"methods\": [{\"name\": \"deepdream\"}]}"
bad "steps out of range" 'explain\.methods\[0\]\.steps: 0 is out of range' "{$L, \"methods\": [{\"name\": \"deepdream\", \"steps\": 0}]}"
bad "a layer given twice" "explain\.layers\[1\]: layer 'enc1' is listed twice" "{\"layers\": [\"enc1\", {\"name\": \"enc1\"}], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "a layer name with a call index" "explain\.layers\[0\]: 'enc1:1': the character ':' is not allowed .*\"call\"" \
	"{\"layers\": [\"enc1:1\"], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "an unknown layer field" 'explain\.layers\[0\]\.calls: unknown field' "{\"layers\": [{\"name\": \"enc1\", \"calls\": 1}], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "a shell metacharacter in a layer" "explain\.layers\[0\]: 'enc1;rm': the character ';'" "{\"layers\": [\"enc1;rm\"], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "an unknown model" "explain\.models\[0\]: no model is named 'v'" "{$L, \"models\": [\"v\"], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "an unknown input" "explain\.inputs\[0\]: no input is named 'vol9'" "{$L, \"inputs\": [\"vol9\"], \"methods\": [{\"name\": \"deepdream\"}]}"
bad "a unit without channels" 'explain\.methods\[0\]: "unit" needs channels' \
	"{$L, \"methods\": [{\"name\": \"feature_vis\", \"unit\": [1, 2, 2]}]}"
bad "a unit on deepdream" "explain\.methods\[0\]: method 'deepdream' takes no \"unit\"" \
	"{$L, \"channels\": [0], \"methods\": [{\"name\": \"deepdream\", \"unit\": [1, 2, 2]}]}"
bad "an unknown parameter (esg-explain's table)" "explain\.methods\[0\]\.params: .*unknown parameter 'octave'" \
	"{$L, \"methods\": [{\"name\": \"deepdream\", \"params\": {\"octave\": 2}}]}"
bad "a parameter out of range" "explain\.methods\[0\]\.params: .*octaves.* out of range" \
	"{$L, \"methods\": [{\"name\": \"deepdream\", \"params\": {\"octaves\": 0}}]}"
bad "a bad choice" "explain\.methods\[0\]\.params: .*param" \
	"{$L, \"methods\": [{\"name\": \"feature_vis\", \"params\": {\"param\": \"wavelet\"}}]}"
bad "parameters that contradict each other (esg-explain's check)" "explain\.methods\[0\]: parameter momentum is SGD's" \
	"{$L, \"methods\": [{\"name\": \"invert\", \"params\": {\"momentum\": 0.9}}]}"
bad "class_model without a target" "explain\.methods\[0\]: method 'class_model' needs a \"target\"" \
	"{\"methods\": [{\"name\": \"class_model\"}]}"
bad "params that are no object" 'explain\.methods\[0\]\.params: must be an object' "{$L, \"methods\": [{\"name\": \"deepdream\", \"params\": [1]}]}"
bad "explain that is no object" 'explain: must be an object' '[1]'

# ---- the jobs it makes ----------------------------------------------------------
cat >jobs.json <<'EOF'
{"output": "o", "inputs": [{"image": "data/vol*_image.nii.gz", "name": "vol{*}"}],
 "models": [{"name": "u", "file": "data/unet.pt", "wrap": {"reduce": "fixed-mask"}}],
 "methods": [{"name": "saliency"}], "target": 1,
 "randomisation": {"layers": ["model.head"], "inputs": ["vol1"], "as_model": "u-random"},
 "explain": {"layers": ["model.enc1", {"name": "model.dec1", "call": 0, "channels": [1]}], "channels": [0, 2], "steps": 3,
   "methods": [{"name": "deepdream"}, {"name": "fv", "method": "feature_vis", "params": {"lr": 0.1}, "layers": ["model.dec1"]},
     {"name": "whole", "method": "deepdream", "channels": [], "layers": ["model.enc1"]},
     {"name": "unit", "method": "feature_vis", "unit": [1, 2, 3], "layers": ["model.enc1"], "seed": 4},
     {"name": "invert", "steps": 5}, {"name": "class_model"}]}}
EOF
check "esg-config accepts the explain section" esg-config jobs.json
check "esg-config --make" esg-config --make jobs.mk --output o jobs.json
grep -o '^$(OUT)/explain/[^:]*' jobs.mk | sed 's|^$(OUT)/explain/||' | sort >targets.txt
sort >want.txt <<'EOF'
vol1/u/deepdream/model.enc1-c0.st.zst
vol1/u/deepdream/model.enc1-c2.st.zst
vol1/u/deepdream/model.dec1-call0-c1.st.zst
vol1/u/fv/model.dec1-call0-c1.st.zst
vol1/u/whole/model.enc1.st.zst
vol1/u/unit/model.enc1-c0-unit_1_2_3.st.zst
vol1/u/unit/model.enc1-c2-unit_1_2_3.st.zst
vol1/u/invert/model.enc1.st.zst
vol1/u/invert/model.dec1-call0.st.zst
vol1/u/class_model/class-1.st.zst
vol2/u/deepdream/model.enc1-c0.st.zst
vol2/u/deepdream/model.enc1-c2.st.zst
vol2/u/deepdream/model.dec1-call0-c1.st.zst
vol2/u/fv/model.dec1-call0-c1.st.zst
vol2/u/whole/model.enc1.st.zst
vol2/u/unit/model.enc1-c0-unit_1_2_3.st.zst
vol2/u/unit/model.enc1-c2-unit_1_2_3.st.zst
vol2/u/invert/model.enc1.st.zst
vol2/u/invert/model.dec1-call0.st.zst
vol2/u/class_model/class-1.st.zst
vol1/u-random/deepdream/model.enc1-c0.st.zst
vol1/u-random/deepdream/model.enc1-c2.st.zst
vol1/u-random/deepdream/model.dec1-call0-c1.st.zst
vol1/u-random/fv/model.dec1-call0-c1.st.zst
vol1/u-random/whole/model.enc1.st.zst
vol1/u-random/unit/model.enc1-c0-unit_1_2_3.st.zst
vol1/u-random/unit/model.enc1-c2-unit_1_2_3.st.zst
vol1/u-random/invert/model.enc1.st.zst
vol1/u-random/invert/model.dec1-call0.st.zst
vol1/u-random/class_model/class-1.st.zst
EOF
check "one job per input x model x method x layer x channel, the randomised model where it exists (30)" diff want.txt targets.txt
cmd() { grep -A1 "^\$(OUT)/explain/$1:" jobs.mk | tail -n 1; }
check "a channel job: --method, --label, --steps, --seed, --layer, --channel, the input" bash -c "cmd() { $(declare -f cmd | tail -n +2); }; cmd vol1/u/deepdream/model.enc1-c2.st.zst |
	grep -q -- '--kind explain .* -- \$(ESG_EXPLAIN) -m \$(OUT)/models/vol1/u.pt --method deepdream --label deepdream --steps 3 --seed 0 --layer model.enc1 --channel 2 -o \$@ \$(OUT)/inputs/vol1.st.zst --threads \$(THREADS)'"
check "a call index, a layer's own channels, params" bash -c "cmd() { $(declare -f cmd | tail -n +2); }; cmd vol1/u/fv/model.dec1-call0-c1.st.zst |
	grep -q -- '--method feature_vis --label fv --param lr=0.1 --steps 3 --seed 0 --layer model.dec1:0 --channel 1 '"
check "a unit of each channel; a method's own seed" bash -c "cmd() { $(declare -f cmd | tail -n +2); }; cmd vol1/u/unit/model.enc1-c2-unit_1_2_3.st.zst | grep -q -- '--seed 4 --layer model.enc1 --channel 2 --unit 1,2,3 '"
check "the whole layer: no --channel" bash -c "cmd() { $(declare -f cmd | tail -n +2); }; ! cmd vol1/u/whole/model.enc1.st.zst | grep -q -- --channel"
check "class_model: the top-level target, no layer" bash -c "cmd() { $(declare -f cmd | tail -n +2); }; cmd vol1/u/class_model/class-1.st.zst | grep -- '--target 1 ' | grep -qv -- --layer"
check "the randomised model's jobs use its copy of the last step" bash -c "cmd() { $(declare -f cmd | tail -n +2); }; cmd vol1/u-random/invert/model.enc1.st.zst | grep -q -- '-m \$(OUT)/models/vol1/u-random.pt'"
check "the explanations go to the report (ESG_EXPLAINS)" grep -q '^ESG_EXPLAINS := \\$' jobs.mk
check "a stamp per explain job" test -s o/.args/explain/vol2/u/invert/model.dec1-call0.st.zst.args
done_testing
