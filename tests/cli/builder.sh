#!/usr/bin/env bash
# needs: torch
# esg-config --builder: the config builder page in headless Chromium -- a
# scripted sequence of choices gives a config esg-config accepts and
# pipelines/run runs (a tiny 2D run); invalid values typed into the page give
# the page the same message esg-config gives for the config the page wrote;
# nothing fetched, no console errors.  Then --schema and the usage errors.
. "$(dirname "$0")/lib.sh"
export ESG_ROOT

check "js2c: lib/config/builder_js.c is up to date with builder.js and builder.css" bash -c "
	cd '$ESG_ROOT' && lib/render/js2c.sh '$T/gen.c' esg_builder_js=lib/config/builder.js \
		esg_builder_css=lib/config/builder.css && cmp <(tail -n +4 '$T/gen.c') <(tail -n +4 lib/config/builder_js.c)"
check "esg-config --builder writes the page" esg-config --builder builder.html
echo "# page: $(wc -c < builder.html) bytes"
check "no URL of any scheme in the page" sh -c "! grep -qiE '(https?|ftp|file)://' builder.html"
check "a Content-Security-Policy that forbids network loads" grep -q "content=\"default-src 'none'; img-src data:;" builder.html
check "--schema: every method of esg-attr --list-methods, with its parameters" $PYTHON - <<'PY'
import json, subprocess
s = json.loads(subprocess.run(["esg-config", "--schema"], capture_output=True, check=True, text=True).stdout)
listed = subprocess.run(["esg-attr", "--list-methods"], capture_output=True, text=True).stdout
names = [m["name"] for m in s["methods"]]
assert len(names) > 30 and all(n in listed for n in names), names
ig = [m for m in s["methods"] if m["name"] == "integrated_gradients"][0]
p = {q["key"]: q for q in ig["params"]}
assert p["n_steps"]["kind"] == "int" and p["n_steps"]["default"] == "50" and p["n_steps"]["lo"] == 1, p["n_steps"]
assert s["objects"]["jobs"][:2] == ["threads", "devices"] and "reduce" in s["objects"]["models[].wrap"]
PY
expect_fail "--builder with a config" 2 "takes no config" esg-config --builder x.html "$ESG_ROOT/configs/angio2d.json"
expect_fail "--builder with --make" 2 "takes no --make" esg-config --builder x.html --make y.mk
no_file "no page after a usage error" x.html

if ! $PYTHON -c "import sys; sys.path.insert(0, '$ESG_ROOT/tests/py'); import webdriver; sys.exit(not webdriver.available())"; then
	skip "the builder in a browser: chromium and chromedriver not installed (Debian: chromium chromium-driver)"
	done_testing
fi
$PYTHON - >browser.out 2>browser.err <<'PY'
import json, os, subprocess, sys
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import webdriver
R = os.environ["ESG_ROOT"]

def out(cond, desc, detail=""):
    print("%d\t%s\t%s" % (bool(cond), desc, str(detail).replace("\n", " ")[:500]), flush=True)

SET = """var e=document.querySelector(arguments[0]);if(!e)return 'no '+arguments[0];
 if(e.type==='checkbox'){if(e.checked!==arguments[1])e.click();}
 else{e.value=arguments[1];e.dispatchEvent(new Event(e.tagName==='SELECT'?'change':'input',{bubbles:true}));}return '';"""
b = webdriver.Browser(window="1280,1000")
def put(field, value):
    r = b.js(SET, '[data-field="%s"]' % field if not field.startswith(("#", "[")) else field, value)
    if r:
        raise RuntimeError(r)
def msg():
    return b.js("return document.getElementById('builder').dataset.message")
def config():
    return json.loads(b.js("return document.getElementById('json').textContent"))
def esg_config(cfg):
    with open("config.json", "w") as f:
        json.dump(cfg, f)
    p = subprocess.run(["esg-config", "config.json"], capture_output=True, text=True)
    return p.returncode, p.stdout.strip(), p.stderr.strip()
def add_method(name):
    b.js("var s=document.getElementById('add-method');s.value=arguments[0];", name)
    b.click(b.find("#add-method-button"))

try:
    out(b.open_report("builder.html"), "the page loads offline and its script runs")
    out(b.log() == [], "nothing on the console while loading")
    # ---- a scripted sequence of choices: a tiny 2D run
    put("title", "Builder test")
    put("output", "bout")
    put("target", "1")
    put("inputs[0].image", R + "/share/data/angio2d_20001_aneurysm.png")
    put("inputs[0].mask", R + "/share/data/angio2d_20001_aneurysm_mask.png")
    put("inputs[0].name", "aneurysm")
    put("load.normalise", "zscore")
    put("load.channels", "gray")
    put("models[0].name", "classifier2d")
    put("models[0].file", R + "/share/models/classifier2d.pt")
    add_method("saliency")
    add_method("integrated_gradients")
    put("methods[1].params.n_steps", "8")
    add_method("layer_gradcam")
    m0 = msg()
    out("methods[2]: method 'layer_gradcam' needs a \"layer\"" in m0, "a layer method asks for its layer", m0)
    put("methods[2].layer", "conv4")
    put("metrics.ground_truth.mass_in_mask", True)
    put("metrics.ground_truth.auroc", True)
    put("metrics.fidelity.deletion", True)
    put("jobs.threads", "1")
    put("report.zoom", "2")
    cfg = config()
    rc, so, se = esg_config(cfg)
    out(msg() == "" and rc == 0 and "ok (" in so, "the page says ok and esg-config accepts its config", (msg(), rc, so, se))
    out(cfg["methods"] == [{"name": "saliency"}, {"name": "integrated_gradients", "params": {"n_steps": 8}},
                           {"name": "layer_gradcam", "layer": "conv4"}] and cfg["metrics"] ==
        {"ground_truth": ["mass_in_mask", "auroc"], "fidelity": ["deletion"]} and cfg["report"] == {"zoom": 2},
        "the config holds the choices", cfg)
    json.dump(cfg, open("valid.json", "w"), indent=2)
    st = b.js("return document.getElementById('status').textContent")
    out(st.startswith("ok:"), "the status line says so", st)
    href = b.js("return document.getElementById('download').getAttribute('href')")
    import urllib.parse
    out(href.startswith("data:application/json") and json.loads(urllib.parse.unquote(href.split(",", 1)[1])) == cfg,
        "the download link holds the same JSON", href[:80])

    # ---- invalid values: the page's message is esg-config's, word for word
    cases = [
        ("output", "b out", "bout"), ("output", "b:out", "bout"), ("output", "", "bout"),
        ("title", "cost $5", "Builder test"), ("target", "-1", "1"), ("target", "1.5", "1"), ("target", "x", "1"),
        ("inputs[0].name", "an eurysm", "aneurysm"), ("inputs[0].name", ".hidden", "aneurysm"),
        ("models[0].name", "", "classifier2d"), ("models[0].name", "a/b", "classifier2d"),
        ("methods[0].name", "integrated_gradients", "saliency"), ("methods[1].name", "", "integrated_gradients"),
        ("methods[1].params.n_steps", "0", "8"), ("methods[1].params.n_steps", "2.5", "8"),
        ("methods[1].params.n_steps", "200000", "8"), ("methods[1].params.n_steps", "many", "8"),
        ("methods[1].internal_batch", "0", ""),
        ("methods[2].layer", "", "conv4"), ("methods[2].layer", "conv 4", "conv4"),
        ("methods[0].seed", "-3", ""), ("methods[0].timeout", "x", ""), ("methods[0].overlap", "1", ""),
        ("jobs.threads", "5000", "1"), ("jobs.timeout", "-1", ""), ("jobs.devices", "gpu0", ""),
        ("jobs.devices", "cuda:x", ""), ("jobs.internal_batch", "0", ""),
        ("jobs.memory", "6 G", ""), ("jobs.memory", "lots", ""), ("jobs.memory", "200%", ""),
        ("jobs.memory", "10M", ""), ("jobs.memory", "toString", ""),
        ("report.zoom", "20", "2"), ("report.zoom", "0.5", "2"),
        ("load.multiple", "abc", ""),
        ("metrics.params", "n_perturb_samples=a;b", "")
    ]
    same, diff = 0, []
    for field, bad, good in cases:
        put(field, bad)
        page = msg()
        rc, so, se = esg_config(config())
        want = se.split("error: config.json: ", 1)[-1] if rc else ""
        got = page.split("config.json: ", 1)[-1] if page else ""
        if rc != 0 and got == want and se.count("\n") == 0:
            same += 1
        else:
            diff.append((field, bad, got, want, rc))
        put(field, good)
    out(not diff, "%d invalid values: the page shows esg-config's message, word for word" % len(cases), diff)
    out(msg() == "" and esg_config(config())[0] == 0, "back to valid after the invalid values", msg())
    # the offending control is marked
    put("methods[1].params.n_steps", "0")
    inv = b.js("return Array.from(document.querySelectorAll('[aria-invalid=true]')).map(function(e){return e.dataset.field;})")
    out(inv == ["methods[1].params.n_steps"] or inv == ["methods[1].params"] or (inv and inv[0].startswith("methods[1].params")),
        "the field at fault is marked (aria-invalid)", inv)
    put("methods[1].params.n_steps", "8")
    # keyboard: the add-method button is a button; Enter adds a method
    n0 = len(config()["methods"])
    b.js("var s=document.getElementById('add-method');s.value='smoothgrad';")
    b.keys(b.find("#add-method-button"), "\ue007")
    c2 = config()
    out(len(c2["methods"]) == n0 + 1 and c2["methods"][-1] == {"name": "smoothgrad"},
        "keyboard: Enter on 'add this method' adds it (an alias by its name)", c2["methods"][-1:])
    b.click(b.find(".method[data-index='3'] button.remove"))
    out(config() == cfg, "removing it gives the same config again")

    res = b.js("return performance.getEntriesByType('resource').map(function(e){return e.name;})"
               ".filter(function(n){return n.indexOf('data:')!=0;})")
    out(res == [], "nothing was fetched", res)
    errs = b.js("return window.esgErrors")
    log = [e for e in b.log() if e.get("level") == "SEVERE"]
    out(errs == [] and log == [], "no script errors, no console errors", (errs, log))
finally:
    b.quit()
PY
rc=$?
while IFS=$'\t' read -r res desc detail; do
	if [ "$res" = 1 ]; then ok "browser: $desc"; else not_ok "browser: $desc"; echo "#   $detail"; fi
done < browser.out
[ "$rc" = 0 ] || { not_ok "the browser checks ran to the end"; sed 's/^/#   /' browser.err | tail -5; }

# ---- the config the page wrote runs
if [ -f valid.json ]; then
	check "pipelines/run runs the page's config (2D: 3 methods, ground truth, deletion, report)" \
		bash -c "cd '$ESG_ROOT' && pipelines/run '$T/valid.json' BIN=\"\$(dirname \"\$(command -v esg-config)\")\" OUT='$T/bout' -j2 THREADS=1 >'$T/run.out' 2>&1"
	check "... and its report shows the deletion curves" grep -q 'curves.tsv' bout/report.html
fi
done_testing
