#!/usr/bin/env bash
# needs: torch
# Configs and pipelines: esg-config's checks (each bad config gets one line
# naming the field), a run of a small config through pipelines/run (logs,
# summary, tables), a second run that does nothing, a parameter change that
# reruns just that method, failures and timeouts that leave no output and
# don't stop the others (-k), a job killed mid-run, and make -j2.
. "$(dirname "$0")/lib.sh"

BIN=${ESG_BIN:-$ESG_ROOT/build/bin}
RUN="$ESG_ROOT/pipelines/run"
MK=(make --no-print-directory -f "$ESG_ROOT/pipelines/run.mk" BIN="$BIN")
$PYTHON "$ESG_ROOT/tests/py/make_pipeline_data.py" data >/dev/null || { not_ok "pipeline test data"; done_testing; }

# config METHOD-JSON... > run.json: one input, the U-Net wrapped on its prediction
config() {
	local methods
	methods=$(IFS=,; echo "$*")
	cat <<EOF
{
  "title": "pipeline test",
  "output": "out",
  "inputs": [{"image": "data/vol*_image.nii.gz", "name": "vol{*}", "mask": "data/vol{*}_vessels.nii.gz"}],
  "load": {"normalise": "zscore"},
  "models": [{"name": "unet", "file": "data/unet.pt", "wrap": {"reduce": "fixed-mask"}}],
  "target": 1,
  "methods": [$methods],
  "randomisation": {"layers": ["model.head"], "inputs": ["vol1"], "methods": ["saliency"]},
  "metrics": {"ground_truth": ["mass_in_mask", "auroc"]},
  "jobs": {"threads": 1},
  "report": {"view": "axial", "zoom": 2}
}
EOF
}
SAL='{"name": "saliency"}'
IG2='{"name": "ig", "method": "integrated_gradients", "params": {"n_steps": 2}}'
IG3='{"name": "ig", "method": "integrated_gradients", "params": {"n_steps": 3}}'

# ---- esg-config's checks ---------------------------------------------------
bad() { # bad DESC PATTERN JSON
	echo "$3" >bad.json
	expect_fail "esg-config refuses $1" 1 "^esg-config: error: bad.json: $2" esg-config bad.json
	[ "$(wc -l <"$T/.err")" = 1 ] || not_ok "$1: one line ($(cat "$T/.err"))"
}
B='"output": "o", "inputs": [{"image": "data/vol1_image.nii.gz"}], "models": [{"name": "u", "file": "data/unet.pt"}]'
bad "a parameter out of range" 'methods\[0\]\.params: parameter n_steps: 0 is out of range' \
	"{$B, \"methods\": [{\"name\": \"ig\", \"method\": \"integrated_gradients\", \"params\": {\"n_steps\": 0}}]}"
bad "an unknown parameter" "methods\[0\]\.params: unknown parameter 'nsteps'" \
	"{$B, \"methods\": [{\"name\": \"ig\", \"method\": \"integrated_gradients\", \"params\": {\"nsteps\": 3}}]}"
bad "an unknown method" "methods\[0\]\.name: unknown method 'nope'" "{$B, \"methods\": [{\"name\": \"nope\"}]}"
bad "a layer method without a layer" 'methods\[0\]: .*needs a "layer"' "{$B, \"methods\": [{\"name\": \"layer_gradcam\"}]}"
bad "an unknown field" 'extra: unknown field' "{$B, \"methods\": [{\"name\": \"saliency\"}], \"extra\": 1}"
bad "a misspelt nested field" 'methods\[0\]\.param: unknown field' "{$B, \"methods\": [{\"name\": \"saliency\", \"param\": {}}]}"
bad "a wrong type" 'jobs\.threads: must be a number' "{$B, \"methods\": [{\"name\": \"saliency\"}], \"jobs\": {\"threads\": \"2\"}}"
bad "a bad baseline" 'methods\[0\]\.baselines\[0\]: .*unknown baseline' \
	"{$B, \"methods\": [{\"name\": \"gradient_shap\", \"baselines\": [\"blurry:2\"]}]}"
bad "a name used twice" "methods\[1\]\.name: method name 'saliency' is used twice" \
	"{$B, \"methods\": [{\"name\": \"saliency\"}, {\"name\": \"saliency\"}]}"
bad "a glob matching nothing" "inputs\[0\]\.image: no file matches" \
	'{"output": "o", "inputs": [{"image": "data/x*.nii"}], "models": [{"name": "u", "file": "data/unet.pt"}], "methods": [{"name": "saliency"}]}'
bad "a missing model file" "models\[0\]\.file: 'data/none.pt': No such file" \
	'{"output": "o", "inputs": [{"image": "data/vol1_image.nii.gz"}], "models": [{"name": "u", "file": "data/none.pt"}], "methods": [{"name": "saliency"}]}'
bad "an unknown device" "jobs\.devices\[0\]: 'gpu' is not a device" "{$B, \"methods\": [{\"name\": \"saliency\"}], \"jobs\": {\"devices\": [\"gpu\"]}}"
bad "a memory budget that is not a size" "jobs\.memory: '6 G' is not a size \(6G, 500M, 50%: units K M G T, 1024-based\)$" \
	"{$B, \"methods\": [{\"name\": \"saliency\"}], \"jobs\": {\"memory\": \"6 G\"}}"
bad "a memory budget below 64M" "jobs\.memory: 10M is less than 64M$" \
	"{$B, \"methods\": [{\"name\": \"saliency\"}], \"jobs\": {\"memory\": \"10M\"}}"
bad "ground truth without masks" 'metrics\.ground_truth: input .* has no "mask"' \
	"{$B, \"methods\": [{\"name\": \"saliency\"}], \"metrics\": {\"ground_truth\": [\"auroc\"]}}"
bad "randomisation without layers" 'randomisation\.layers: missing' "{$B, \"methods\": [{\"name\": \"saliency\"}], \"randomisation\": {}}"
bad "a shell metacharacter" "methods\[0\]\.layer: .*can't be passed" \
	"{$B, \"methods\": [{\"name\": \"layer_gradcam\", \"layer\": \"enc1;rm\"}]}"
bad "randomisation naming an unknown method" "randomisation\.methods\[0\]: no method is named 'nope'" \
	"{$B, \"methods\": [{\"name\": \"saliency\"}], \"randomisation\": {\"layers\": [\"head\"], \"methods\": [\"nope\"]}}"
bad "metrics naming an unknown model" "metrics\.models\[0\]: no model is named 'zz'" \
	"{$B, \"methods\": [{\"name\": \"saliency\"}], \"metrics\": {\"models\": [\"zz\"]}}"
bad "invalid JSON" 'not valid JSON \(error at line' "{$B,"
bad "a missing required field" 'methods: must be a non-empty list' "{$B}"
check "esg-config accepts a valid config" bash -c "$(printf '%q' "$(config "$SAL")") >/dev/null; true"
config "$SAL" "$IG2" >run.json
check "esg-config --check counts the jobs" bash -c "esg-config run.json | grep -q 'run.json: ok ([0-9]* jobs, output in out)'"
check "nothing ran while checking" test ! -e out

# ---- a run, then nothing to do -------------------------------------------------
"$RUN" run.json BIN="$BIN" >run1.out 2>run1.err
rc=$?
[ $rc = 0 ] && ok "pipelines/run: exit 0" || not_ok "pipelines/run: exit $rc ($(tail -5 run1.err run1.out))"
for f in inputs/vol1.st.zst inputs/vol2.st.zst models/vol1/unet.pt models/vol2/unet.pt \
	attr/vol1/unet/saliency.st.zst attr/vol2/unet/ig.st.zst maps/vol1/unet/ig.nii.gz maps/vol1/image.nii.gz \
	random/vol1/unet/manifest.json random/vol1/unet/saliency/step-01.st.zst tables/ground_truth.tsv \
	tables/randomisation.tsv summary.tsv logs/attr/vol1/unet/ig.st.zst.log report.html; do
	[ -s "out/$f" ] || { not_ok "the run made out/$f"; continue; }
done
ok "the run made the inputs, wrapped models, maps, NIfTI files, randomisation, tables, logs"
check "the map records its config name (esg.label)" bash -c "esg-render --info out/attr/vol1/unet/ig.st.zst | grep -q 'esg.label: ig'"
check "the job log has command, status, time, memory and passes" \
	bash -c "grep -q '^command: .*esg-attr' out/logs/attr/vol1/unet/ig.st.zst.log && grep -q '^status: ok' out/logs/attr/vol1/unet/ig.st.zst.log &&
		grep -q '^wall_s: [0-9.]*$' out/logs/attr/vol1/unet/ig.st.zst.log && grep -q '^peak_rss_mb: [1-9]' out/logs/attr/vol1/unet/ig.st.zst.log &&
		grep -q '^passes: [1-9]' out/logs/attr/vol1/unet/ig.st.zst.log"
jobs=$(tail -n +2 out/summary.tsv | wc -l)
nok=$(awk -F'\t' 'NR > 1 && $2 == "ok"' out/summary.tsv | wc -l)
[ "$jobs" -gt 10 ] && [ "$jobs" = "$nok" ] && ok "summary.tsv: $jobs jobs, all ok" || not_ok "summary.tsv: $jobs jobs, $nok ok"
check "the summary is printed with the job kinds" grep -q '^summary: [0-9]* jobs, [0-9]* ok' run1.out
# ground truth: 2 inputs x 2 metrics x 2 methods; randomisation: 3 similarity metrics x 1 step
check "the ground-truth table joins every input's rows" test "$(tail -n +2 out/tables/ground_truth.tsv | wc -l)" = 8
check "the randomisation table has a row per metric and step" test "$(tail -n +2 out/tables/randomisation.tsv | wc -l)" = 3
# the report, as headless Chromium shows it (tests/cli/report.sh checks the page itself)
if $PYTHON -c "import sys; sys.path.insert(0, '$ESG_ROOT/tests/py'); import webdriver; sys.exit(not webdriver.available())"; then
	$PYTHON - >browser.out 2>browser.err <<'PY'
import json, os, sys
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import webdriver
b = webdriver.Browser()
try:
    b.open_report("out/report.html")
    print(json.dumps(b.js("""return Array.from(document.querySelectorAll('section.input')).map(function(s){
        var g=s.querySelector('table.grid');
        return {input:s.dataset.input,
          cols:Array.from(g.tHead.rows[0].cells).slice(1).map(function(c){return c.textContent;}),
          rows:Array.from(g.tBodies[0].rows).map(function(r){return r.cells[0].textContent;}),
          strips:s.querySelectorAll('.strip canvas.view').length,
          links:Array.from(g.querySelectorAll('a[href]')).map(function(a){return a.getAttribute('href');})};});""")))
    print(json.dumps(b.js("return Array.from(document.querySelectorAll('table.data caption, table.sortable caption')).map(function(c){return c.textContent;})")))
finally:
    b.quit()
PY
	sections=$(sed -n 1p browser.out)
	echo "# report: $(head -c 600 browser.out)"
	check "the report: a section per input, columns input + unet, rows saliency and ig" $PYTHON -c "
import json, sys; s = json.loads(sys.argv[1])
ok = [x['input'] for x in s] == ['vol1', 'vol2'] and all(x['cols'] == ['input', 'unet'] and x['rows'] == ['saliency', 'ig'] for x in s)
sys.exit(not ok)" "$sections"
	check "the report: vol1 has the randomisation strip (original + 1 step)" $PYTHON -c "
import json, sys; s = json.loads(sys.argv[1]); sys.exit(not (s[0]['strips'] == 2 and s[1]['strips'] == 0))" "$sections"
	check "the report links every map to its NIfTI file, and the files exist" $PYTHON -c "
import json, os, sys, urllib.parse; s = json.loads(sys.argv[1])
links = [l for x in s for l in x['links']]
sys.exit(not (len(links) == 4 and all(os.path.isfile(os.path.join('out', urllib.parse.unquote(l))) for l in links)))" "$sections"
	check "the report has the two tables" bash -c "sed -n 2p browser.out | grep -q ground_truth.tsv && sed -n 2p browser.out | grep -q randomisation.tsv"
else
	skip "the report in a browser: chromium and chromedriver not installed"
fi
"${MK[@]}" CONFIG=run.json -q all
rc=$?
[ $rc = 0 ] && ok "make -q: everything is up to date after the run" || not_ok "make -q after the run: exit $rc"
find out -type f ! -path 'out/logs/*' ! -name summary.tsv -newer out/summary.tsv >before.txt
"$RUN" run.json BIN="$BIN" >run2.out 2>&1
check "a second run runs no job" bash -c "! grep -qE '^(ok|failed|timed) ' run2.out"
check "a second run changes no file" test ! -s before.txt

# ---- one method's parameters change: only its jobs rerun ------------------------
sleep 1 # file times
touch ref.time
config "$SAL" "$IG3" >run.json
"${MK[@]}" CONFIG=run.json -n jobs >dry.txt 2>&1
check "dry run after n_steps 2 -> 3: ig's maps are redone" grep -q 'attr/vol1/unet/ig.st.zst' dry.txt
check "dry run: saliency is not" bash -c "! grep -q 'run-job out out/attr/vol[12]/unet/saliency' dry.txt"
"$RUN" run.json BIN="$BIN" >run3.out 2>&1
rc=$?
[ $rc = 0 ] && ok "rerun after the change: exit 0" || not_ok "rerun after the change: exit $rc"
redone=$(grep -E '^ok ' run3.out | awk '{print $NF}' | sort | tr '\n' ' ')
want="attr/vol1/unet/ig.st.zst attr/vol2/unet/ig.st.zst maps/vol1/unet/ig.nii.gz maps/vol2/unet/ig.nii.gz metrics/vol1/unet/ground_truth.tsv metrics/vol2/unet/ground_truth.tsv report.html tables/ground_truth.tsv "
[ "$redone" = "$want" ] && ok "only ig's jobs and the tables that include it reran" ||
	not_ok "reran: '$redone', want '$want'"
check "saliency's map kept its time" test ! out/attr/vol1/unet/saliency.st.zst -nt ref.time
check "esg.params of the new ig map: n_steps 3" bash -c "esg-render --info out/attr/vol1/unet/ig.st.zst | grep -q '\"n_steps\":3'"

# ---- failures don't stop the others; the summary says why ----------------------------
NOPE='{"name": "cam", "method": "layer_gradcam", "layer": "no.such.layer"}'
config "$SAL" "$IG3" "$NOPE" >run.json
"$RUN" run.json BIN="$BIN" >run4.out 2>run4.err
rc=$?
[ $rc = 1 ] && ok "a failing job: pipelines/run exits 1" || not_ok "a failing job: exit $rc"
no_file "the failed job left no map" out/attr/vol1/unet/cam.st.zst out/attr/vol2/unet/cam.st.zst
check "the failure is reported with the tool's message" grep -q "attr/vol1/unet/cam.st.zst: esg-attr: error: .*no.such.layer" run4.err
check "the summary lists the failure and why" bash -c "grep -A5 '^failed:' run4.out | grep -q 'attr/vol1/unet/cam.st.zst: failed (exit 1) -- esg-attr: error'"
check "the log says failed" grep -q '^status: failed (exit 1)' out/logs/attr/vol1/unet/cam.st.zst.log
"${MK[@]}" CONFIG=run.json -q jobs
[ $? != 0 ] && ok "make -q: the failed job is not taken as done" || not_ok "make -q took a failed job as done"

# ---- a timeout --------------------------------------------------------------------------
SLOW='{"name": "slow", "method": "occlusion", "params": {"sliding_window_shapes": [1, 1, 1, 1], "strides": [1, 1, 1, 1]}, "internal_batch": 1'
if esg-attr --help | grep -q -- --timeout; then
	config "$SAL" "$IG3" "$SLOW, \"timeout\": 0.5}" >run.json
	"$RUN" run.json BIN="$BIN" >run5.out 2>run5.err
	rc=$?
	[ $rc = 1 ] && ok "a timed-out job: pipelines/run exits 1" || not_ok "a timed-out job: exit $rc"
	no_file "the timed-out job left no map" out/attr/vol1/unet/slow.st.zst
	check "the log says timed out (exit 124)" bash -c "grep -q '^status: timed out' out/logs/attr/vol1/unet/slow.st.zst.log &&
		grep -q '^exit: 124' out/logs/attr/vol1/unet/slow.st.zst.log"
	check "the summary lists the timeout" grep -q 'attr/vol1/unet/slow.st.zst: timed out' run5.out
	check "the other jobs were done" test -s out/tables/ground_truth.tsv
else
	skip "esg-attr has no --timeout"
fi

# ---- a job killed mid-run leaves nothing Make takes as done ------------------------------
config "$SAL" "$IG3" "$SLOW}" >run.json
"${MK[@]}" CONFIG=run.json out/attr/vol1/unet/slow.st.zst >kill.out 2>&1 &
mk=$!
pid=
for _ in $(seq 100); do
	pid=$(pgrep -f '^[^ ]*/esg-attr .*--label slow' | head -n 1)
	[ -n "$pid" ] && break
	sleep 0.1
done
if [ -n "$pid" ]; then
	sleep 0.5
	kill -KILL "$pid"
	wait $mk
	rc=$?
	[ $rc != 0 ] && ok "make fails when its job is killed" || not_ok "make exit 0 after a killed job"
	no_file "the killed job left no output" out/attr/vol1/unet/slow.st.zst
	check "no stray file beside it" bash -c "! ls out/attr/vol1/unet/ | grep -q slow"
	"${MK[@]}" CONFIG=run.json -q out/attr/vol1/unet/slow.st.zst
	[ $? != 0 ] && ok "make -q: the killed job is still to do" || not_ok "make -q took the killed job as done"
	check "the log says killed" grep -q '^status: killed (signal 9)' out/logs/attr/vol1/unet/slow.st.zst.log
else
	kill $mk 2>/dev/null
	not_ok "the slow job did not start ($(tail -3 kill.out))"
fi

# ---- make -j2 gives the same maps as the serial run ----------------------------------------
config "$SAL" "$IG3" >run.json
"$RUN" run.json BIN="$BIN" OUT=par -j2 THREADS=1 >run6.out 2>&1
rc=$?
[ $rc = 0 ] && ok "pipelines/run -j2 THREADS=1: exit 0" || not_ok "pipelines/run -j2: exit $rc ($(tail -3 run6.out))"
check "-j2 maps equal the serial maps" esg-compare -q out/attr/vol2/unet/ig.st.zst par/attr/vol2/unet/ig.st.zst
check "threads reach the jobs" grep -q -- '--threads 1' par/logs/attr/vol1/unet/saliency.st.zst.log

# ---- jobs.memory: each libtorch job's budget; how jobs run, not what they make ----
config "$SAL" "$IG3" | sed 's/"jobs": {"threads": 1}/"jobs": {"threads": 1, "memory": "1G"}/' >run.json
check "the fragment exports it, the user's ESG_MEMORY first" bash -c \
	"esg-config --make frag.mk --output par run.json >/dev/null && grep -qx 'export ESG_MEMORY ?= 1G' frag.mk"
"$RUN" run.json BIN="$BIN" OUT=par -j2 THREADS=1 >run7.out 2>&1
check "jobs.memory added: no job reruns" bash -c "! grep -qE '^(ok|failed|timed) ' run7.out"
rm par/attr/vol1/unet/saliency.st.zst
"$RUN" run.json BIN="$BIN" OUT=par -j2 THREADS=1 >run8.out 2>&1
check "a job under -j2 gets jobs.memory, not the 40% share" \
	grep -qx 'memory: ESG_MEMORY=1G' par/logs/attr/vol1/unet/saliency.st.zst.log
rm par/attr/vol1/unet/saliency.st.zst
ESG_MEMORY=2G "$RUN" run.json BIN="$BIN" OUT=par -j2 THREADS=1 >run9.out 2>&1
check "ESG_MEMORY in the environment wins over jobs.memory" \
	grep -qx 'memory: ESG_MEMORY=2G' par/logs/attr/vol1/unet/saliency.st.zst.log
check "and the map is the same" esg-compare -q out/attr/vol1/unet/saliency.st.zst par/attr/vol1/unet/saliency.st.zst
done_testing
