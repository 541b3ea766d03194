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
# ---- a run with the real esg-explain ------------------------------------------------
# (feature_vis with pad 0 and no random scale: its default padding and zoom give
# sizes a U-Net's skip
# connections cannot join)
run_config() { # run_config FV-PARAMS > run.json
	cat <<EOF
{"title": "explain test", "output": "out",
 "inputs": [{"image": "data/vol*_image.nii.gz", "name": "vol{*}"}], "load": {"normalise": "zscore"},
 "models": [{"name": "unet", "file": "data/unet.pt", "wrap": {"reduce": "fixed-mask"}}],
 "target": 1, "methods": [{"name": "saliency"}],
 "randomisation": {"layers": ["model.head", "model.enc1"], "inputs": ["vol1"], "methods": ["saliency"], "as_model": "unet-random"},
 "explain": {"inputs": ["vol1"], "layers": ["model.enc1"], "channels": [0], "steps": 2,
   "methods": [{"name": "deepdream"}, {"name": "fv", "method": "feature_vis", "params": $1},
     {"name": "invert"}, {"name": "class_model"}]},
 "jobs": {"threads": 1}, "report": {"zoom": 2}}
EOF
}
run_config '{"param": "pixel", "pad": 0, "scale_min": 1, "scale_max": 1}' >run.json
"$RUN" run.json BIN="$BIN" -j2 THREADS=1 >run1.out 2>run1.err
rc=$?
[ $rc = 0 ] && ok "pipelines/run with explain jobs: exit 0" || not_ok "pipelines/run: exit $rc ($(tail -n 5 run1.err run1.out))"
missing=
for m in unet unet-random; do
	for f in deepdream/model.enc1-c0 fv/model.enc1-c0 invert/model.enc1 class_model/class-1; do
		[ -s "out/explain/vol1/$m/$f.st.zst" ] || missing="$missing $m/$f"
	done
done
[ -z "$missing" ] && ok "8 explanations: 4 entries x the trained and the randomised model" || not_ok "missing:$missing"
no_file "no explanations of vol2 (explain.inputs)" out/explain/vol2
esg-render --info out/explain/vol1/unet/fv/model.enc1-c0.st.zst >info.txt
check "the record: esg.label, layer, channel, the objective's trace" bash -c "
	grep -q 'esg.label: fv' info.txt && grep -q 'esg.method: feature_vis' info.txt && grep -q 'esg.layer: model.enc1' info.txt &&
	grep -q 'esg.channel: 0' info.txt && grep -q 'esg.objective_final:' info.txt && grep -q 'tensor objective' info.txt"
check "the image keeps the input's affine" bash -c "diff <(esg-render --info out/inputs/vol1.st.zst | grep 'esg.affine') <(grep 'esg.affine' info.txt)"
LOG=out/logs/explain/vol1/unet/fv/model.enc1-c0.st.zst.log
check "the job's log: kind explain, ok, the method" bash -c "grep -q '^kind: explain' $LOG && grep -q '^status: ok' $LOG && grep -q '^method: feature_vis' $LOG"
check "the summary counts them ok" bash -c "test \$(grep -c '^explain/.*	ok	' out/summary.tsv) = 8"
check "the report has the gallery: the layer and the class score" bash -c "grep -q '<h3>Explanations</h3>' out/report.html &&
	grep -q 'data-layer=\"model.enc1\"' out/report.html && grep -q 'data-layer=\"class score\"' out/report.html"
check "... rows by entry and channel" bash -c "test \"\$(grep -o 'data-explanation=\"[^\"]*\"' out/report.html | sort -u | tr '\n' '|')\" = \
	'data-explanation=\"class_model · class 1\"|data-explanation=\"deepdream · channel 0\"|data-explanation=\"fv · channel 0\"|data-explanation=\"invert\"|'"
check "... 8 pictures, the randomised model's column beside the trained one" bash -c "
	test \$(grep -o 'td class=\"cell explanation\" data-model=\"unet\"' out/report.html | wc -l) = 4 &&
	test \$(grep -o 'td class=\"cell explanation\" data-model=\"unet-random\"' out/report.html | wc -l) = 4"
"${MK[@]}" CONFIG=run.json -q all
rc=$?
[ $rc = 0 ] && ok "make -q: everything up to date after the run" || not_ok "make -q after the run: exit $rc"
"$RUN" run.json BIN="$BIN" >run2.out 2>&1
check "a second run runs no job" bash -c "! grep -qE '^(ok|failed|timed) ' run2.out"

sleep 1
touch ref.time
run_config '{"param": "fft", "pad": 0, "scale_min": 1, "scale_max": 1}' >run.json
"$RUN" run.json BIN="$BIN" -j2 THREADS=1 >run3.out 2>&1
rc=$?
[ $rc = 0 ] && ok "rerun after fv's param pixel -> fft: exit 0" || not_ok "rerun: exit $rc ($(tail -3 run3.out))"
redone=$(grep -E '^ok ' run3.out | awk '{print $NF}' | sort | tr '\n' ' ')
want="explain/vol1/unet-random/fv/model.enc1-c0.st.zst explain/vol1/unet/fv/model.enc1-c0.st.zst report.html "
[ "$redone" = "$want" ] && ok "only fv's two explanations and the report reran" || not_ok "reran: '$redone', want '$want'"
check "deepdream's explanation kept its time" test ! out/explain/vol1/unet/deepdream/model.enc1-c0.st.zst -nt ref.time
check "esg.params of the new fv: param fft" bash -c "esg-render --info out/explain/vol1/unet/fv/model.enc1-c0.st.zst | grep -q '\"param\":\"fft\"'"

# ---- a failing explain job: no file, the others finish -----------------------------------
sed 's/"channels": \[0\]/"channels": [0, 999]/' run.json >fail.json
"$RUN" fail.json BIN="$BIN" >run4.out 2>run4.err
rc=$?
[ $rc = 1 ] && ok "a channel past the layer's width: pipelines/run exits 1" || not_ok "a bad channel: exit $rc"
no_file "the failed explanation left no file" out/explain/vol1/unet/deepdream/model.enc1-c999.st.zst
check "the failure names the tool and the channel" grep -q "explain/vol1/unet/deepdream/model.enc1-c999.st.zst: esg-explain: error: .*999" run4.err
check "the partial report still shows the explanations that finished" grep -q 'data-explanation="fv · channel 0"' out/report.html
done_testing
