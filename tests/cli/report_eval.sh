#!/usr/bin/env bash
# esg-render --html: the evaluation as pictures -- the summary, the methods x
# metrics matrices, the randomisation sanity-check curves with their flags,
# deletion / insertion curves, the collapsed tidy tables -- on a fixture run
# with two models side by side (tests/py/make_report_fixture.py, which also
# computes what the page must show), in headless Chromium: values parsed from
# the page against the TSVs, sorting by mouse and keyboard, the print
# stylesheet, nothing fetched, no console errors.
. "$(dirname "$0")/lib.sh"
export ESG_ROOT

check "js2c: lib/render/report_js.c is up to date with report.js and report.css" bash -c "
	cd '$ESG_ROOT' && lib/render/js2c.sh '$T/gen.c' esg_report_eval_js=lib/render/report.js \
		esg_report_eval_css=lib/render/report.css && cmp <(tail -n +4 '$T/gen.c') <(tail -n +4 lib/render/report_js.c)"

streams=$($PYTHON "$ESG_ROOT/tests/py/make_report_fixture.py" out) || not_ok "the fixture run"
tables=()
for t in out/tables/ground_truth.tsv out/tables/fidelity.tsv out/tables/randomisation.tsv out/tables/curves.tsv out/summary.tsv; do
	tables+=(--table "$t")
done
# shellcheck disable=SC2086
check "esg-render --html on the fixture run" esg-render --html out/report.html --title 'Fixture run' "${tables[@]}" $streams
echo "# page: $(wc -c < out/report.html) bytes"
check "no URL of any scheme in the page" sh -c "! grep -qiE '(https?|ftp|file)://' out/report.html"
check "every src and href is a data: URI, an anchor or a relative path" $PYTHON - <<'PY'
import re
page = open("out/report.html", encoding="utf-8").read()
for attr, val in re.findall(r'\b(src|href)="([^"]*)"', page):
    assert val.startswith(("data:image/png;base64,", "data:text/tab-separated-values;", "#")), (attr, val[:60])
PY

if ! $PYTHON -c "import sys; sys.path.insert(0, '$ESG_ROOT/tests/py'); import webdriver; sys.exit(not webdriver.available())"; then
	skip "the evaluation in a browser: chromium and chromedriver not installed (Debian: chromium chromium-driver)"
	done_testing
fi
$PYTHON - >browser.out 2>browser.err <<'PY'
import base64, json, math, os, sys, urllib.parse
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import webdriver

def out(cond, desc, detail=""):
    print("%d\t%s\t%s" % (bool(cond), desc, str(detail).replace("\n", " ")[:400]), flush=True)

E = json.load(open("out/expect.json"))
def tsv(path):
    lines = open(path).read().splitlines()
    h = lines[0].split("\t")
    return [dict(zip(h, l.split("\t"))) for l in lines[1:]]
def same(a, b, tol=0.0):     # equal numbers (nan == nan), within a relative tol
    if isinstance(a, float) and math.isnan(a) or isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))

b = webdriver.Browser(window="1280,1000")
try:
    out(b.open_report("out/report.html"), "the page loads offline and its script runs")
    out(b.log() == [], "nothing on the console while loading")

    # ---- the matrix: one table per input x model, one row per method, the TSVs' values
    mats = b.js("""return Array.from(document.querySelectorAll('table.matrix')).map(function(t){
        return {input:t.dataset.input,model:t.dataset.model,
          cols:Array.from(t.tHead.rows[0].cells).slice(1).map(function(c){return [c.dataset.metric,c.dataset.better];}),
          rows:Array.from(t.tBodies[0].rows).map(function(r){return {m:r.dataset.method,
            v:Array.from(r.cells).slice(1).map(function(c){return c.dataset.value;}),
            txt:Array.from(r.cells).slice(1).map(function(c){return c.textContent;}),
            bg:Array.from(r.cells).slice(1).map(function(c){return c.style.backgroundColor;}),
            tip:Array.from(r.cells).slice(1).map(function(c){return c.title;})};})};});""")
    out([(m["input"], m["model"]) for m in mats] == [("vessel", "unetA"), ("vessel", "unetB")],
        "one matrix per input x model, the two models side by side", [(m["input"], m["model"]) for m in mats])
    order = ["mass_in_mask", "pointing_game", "auroc", "deletion", "insertion", "infidelity", "max_sensitivity"]
    better = {"mass_in_mask": "higher", "pointing_game": "higher", "auroc": "higher", "deletion": "lower",
              "insertion": "higher", "infidelity": "lower", "max_sensitivity": "lower"}
    out(all(m["cols"] == [[x, better[x]] for x in order] for m in mats),
        "columns: the seven metrics, each with its better direction", mats[0]["cols"])
    out(all([r["m"] for r in m["rows"]] == ["saliency", "plateau", "flat"] for m in mats),
        "one row per method (not one per file)", [[r["m"] for r in m["rows"]] for m in mats])
    # the values: parsed from the TSVs here, compared with the cells' exact values
    rows = tsv("out/tables/ground_truth.tsv") + tsv("out/tables/fidelity.tsv")
    want = {}
    for r in rows:
        src = r["source"].split("/")
        want[(src[-2], src[-1][:-7], r["metric"])] = float(r["value"])
    bad = []
    for m in mats:
        for r in m["rows"]:
            for (x, _), v in zip(m["cols"], r["v"]):
                w = want[(m["model"], r["m"], x)]
                if not same(float(v) if v not in ("", "NaN") else float("nan"), w):
                    bad.append((m["model"], r["m"], x, v, w))
    out(not bad and len(want) == 2 * 3 * 7, "every cell holds its TSV value (%d values, exact)" % len(want), bad)
    out(mats[1]["rows"][2]["txt"][2] == "nan", "a nan is shown as nan", mats[1]["rows"][2]["txt"])
    tip = mats[0]["rows"][0]["tip"][2]
    out("auroc = " in tip and '{"n":1}' in tip and '{"mask":"file"}' in tip and "from attr/vessel/unetA/saliency.st.zst" in tip,
        "hover: the exact value, the method's and the metric's parameters, the relative source", tip)
    # colour: each column from worst (viridis 0: dark purple) to best (viridis 1: yellow)
    col = order.index("infidelity")
    vals = [float(r["v"][col]) for r in mats[0]["rows"]]
    bgs = [r["bg"][col] for r in mats[0]["rows"]]
    out(bgs[vals.index(min(vals))] == "rgb(253, 231, 37)" and bgs[vals.index(max(vals))] == "rgb(68, 1, 84)",
        "colour: lower-is-better column, its lowest value yellow, its highest dark (viridis)", (vals, bgs))
    col = order.index("mass_in_mask")
    vals = [float(r["v"][col]) for r in mats[0]["rows"]]
    bgs = [r["bg"][col] for r in mats[0]["rows"]]
    out(bgs[vals.index(max(vals))] == "rgb(253, 231, 37)" and bgs[vals.index(min(vals))] == "rgb(68, 1, 84)",
        "colour: higher-is-better column, its highest value yellow", (vals, bgs))

    # ---- sorting, by mouse and by keyboard
    ROWS = "var k=arguments[0]+1;return Array.from(document.querySelectorAll('#matrix-1 tbody tr')).map(function(r){return [r.dataset.method,r.cells[k].dataset.value];})"
    ai = order.index("auroc")
    b.click(b.find("#matrix-1 th[data-metric=auroc] button"))
    r1 = b.js(ROWS, ai)
    v = [float(x[1]) for x in r1]
    out(v[0] >= v[1] and math.isnan(v[2]) and r1[2][0] == "flat", "a click sorts best first (auroc: highest), nan last", r1)
    b.click(b.find("#matrix-1 th[data-metric=auroc] button"))
    r2 = b.js(ROWS, ai)
    v = [float(x[1]) for x in r2]
    out(v[0] <= v[1] and math.isnan(v[2]), "a second click reverses, nan still last", r2)
    ii = order.index("infidelity")
    btn = b.find("#matrix-1 th[data-metric=infidelity] button")
    b.keys(btn, "\ue007")                      # Enter on the focused button
    r3 = b.js(ROWS, ii)
    v = [float(x[1]) for x in r3]
    srt = b.js("return document.querySelector('#matrix-1 th[data-metric=infidelity]').getAttribute('aria-sort')")
    out(v == sorted(v) and srt == "ascending", "the keyboard (Enter on the header's button) sorts too: lowest infidelity first",
        (r3, srt))
    cells = b.js("return Array.from(document.querySelectorAll('#matrix-1 tbody tr')).map(function(r){return r.cells[1].dataset.value;})")
    mm = dict((r["m"], r["v"][0]) for r in mats[1]["rows"])
    out(cells == [mm[x[0]] for x in r3], "whole rows move together", cells)

    # ---- the sanity-check curves
    SAN = """return Array.from(document.querySelectorAll('div.sanity polyline[data-method]')).map(function(p){
        var s=p.ownerSVGElement;return {m:p.dataset.method,pts:p.getAttribute('points'),vals:p.dataset.values,
        y0:+s.dataset.y0,y1:+s.dataset.y1,vmin:+s.dataset.vmin,vmax:+s.dataset.vmax};});"""
    def check_sim(metric):
        lines = b.js(SAN)
        bad = []
        for ln in lines:
            ys = E["similarity"]["%s|%s" % (ln["m"], metric)]
            pts = [tuple(map(float, p.split(","))) for p in ln["pts"].split()]
            vals = [float(x) for x in ln["vals"].split()]
            # the drawn y, mapped back through the axis, is the table's value (points to 0.01 px)
            back = [ln["vmin"] + (ln["y0"] - py) / (ln["y0"] - ln["y1"]) * (ln["vmax"] - ln["vmin"]) for _, py in pts]
            px_tol = 0.006 / (ln["y0"] - ln["y1"]) * (ln["vmax"] - ln["vmin"])
            if len(pts) != E["steps"] or vals != ys or any(abs(a - y) > px_tol for a, y in zip(back, ys)):
                bad.append((ln["m"], pts, vals, ys))
        return lines, bad
    lines, bad = check_sim("spearman_abs")
    out(sorted(l["m"] for l in lines) == ["flat", "plateau", "saliency"], "one polyline per method", [l["m"] for l in lines])
    out(not bad, "as many points as steps (%d), y = the similarity table's Spearman |.| (exact values; drawn to 0.01 px)"
        % E["steps"], bad)
    flags = b.js("return Array.from(document.querySelectorAll('div.sanity li.flag')).map(function(l){return [l.dataset.method,+l.dataset.step,l.textContent];})")
    fd = dict((f[0], f) for f in flags)
    out(set(fd) == set(E["flags"]) and all(fd[m][1] == k for m, k in E["flags"].items()),
        "flagged: the method whose maps do not decay (step 0) and the plateau (step 1); saliency not", flags)
    out("flat does not depend on the weights beyond step 0" in fd.get("flat", [0, 0, ""])[2] and
        "plateau does not depend on the weights beyond step 1 (01 head)" in fd.get("plateau", [0, 0, ""])[2],
        "the flags in words", flags)
    summ = b.js("return document.querySelector('#summary').textContent")
    out("Randomisation check: " in summ and "flat does not depend on the weights beyond step 0" in summ,
        "the summary repeats the flags", summ[-300:])
    b.js("var s=document.querySelector('div.sanity select');s.value='ssim_abs';s.dispatchEvent(new Event('change'));")
    lines, bad = check_sim("ssim_abs")
    out(len(lines) == 3 and not bad, "the metric selector redraws with SSIM |.|", bad)
    b.js("var s=document.querySelector('div.sanity select');s.value='topk_iou';s.dispatchEvent(new Event('change'));")
    lines, bad = check_sim("topk_iou")
    out(len(lines) == 3 and not bad, "... and with top-k IoU", bad)

    # ---- deletion / insertion
    cur = b.js("""return Array.from(document.querySelectorAll('div.curves')).map(function(d){
        return {model:d.dataset.model,curve:d.dataset.curve,
          lines:Array.from(d.querySelectorAll('polyline[data-method]')).map(function(p){
            return {m:p.dataset.method,xs:p.dataset.xs,ys:p.dataset.values};}),
          auc:Array.from(d.querySelectorAll('li[data-auc]')).map(function(l){return [l.dataset.method,+l.dataset.auc];})};});""")
    out(sorted((c["model"], c["curve"]) for c in cur) == [(m, c) for m in ("unetA", "unetB") for c in ("deletion", "insertion")],
        "a deletion and an insertion chart per model", [(c["model"], c["curve"]) for c in cur])
    bad = []
    for c in cur:
        for ln in c["lines"]:
            e = E["curves"]["%s|%s|%s" % (c["model"], c["curve"], ln["m"])]
            if [float(x) for x in ln["xs"].split()] != e["x"] or not all(
                    same(float(y), w, 1e-15) for y, w in zip(ln["ys"].split(), e["y"])):
                bad.append((c["model"], c["curve"], ln["m"]))
        for m, a in c["auc"]:
            if not same(a, E["curves"]["%s|%s|%s" % (c["model"], c["curve"], m)]["auc"], 1e-12):
                bad.append((c["model"], c["curve"], m, a))
    out(not bad and all(len(c["lines"]) == 3 for c in cur),
        "one line per method with the curve's points; the area shown = the table's value (1e-12)", bad)

    # ---- the summary
    cards = b.js("return Array.from(document.querySelectorAll('#summary .card')).map(function(c){return c.textContent;})")
    J = E["jobs"]
    want = ["1input", "2models", "3methods", "%djobs ok" % J["ok"], "%djobs failed" % J["failed"], "%djobs timed out" % J["timed"]]
    out(cards[:6] == want and cards[6].startswith("40 swall time"), "summary: inputs, models, methods, jobs ok / failed / timed out, wall time", cards)
    bl = b.js("""return Array.from(document.querySelectorAll('#summary .bestlist')).map(function(d){
        return [d.dataset.family,Array.from(d.querySelectorAll('li')).map(function(l){return l.dataset.method;})];});""")
    out(bl == [["ground_truth", E["best_gt"]], ["faithfulness", E["best_faith"]]],
        "summary: the three best methods by mean rank (computed independently)", (bl, E["best_gt"], E["best_faith"]))
    pos = b.js("""var r=function(s){return document.querySelector(s).getBoundingClientRect().top+window.scrollY;};
        return [r('#summary'),r('table.matrix'),r('div.sanity svg'),r('div.curves svg'),r('section.input')];""")
    out(pos == sorted(pos), "the page opens on the summary, then the matrix, the curves, then the maps", pos)

    # ---- the tidy tables: collapsed, relative paths, downloads
    det = b.js("""return Array.from(document.querySelectorAll('details.tidy')).map(function(d){
        var a=d.querySelector('a.download');return {open:d.open,name:a.getAttribute('download'),href:a.getAttribute('href'),
        first:d.querySelector('tbody tr td').textContent};});""")
    out(len(det) == 5 and not any(d["open"] for d in det), "every table is there, collapsed", [d["name"] for d in det])
    dl = {d["name"]: base64.b64decode(d["href"].split(",", 1)[1]).decode() for d in det}
    out(all(dl[os.path.basename(p)] == open(p).read() for p in ("out/tables/ground_truth.tsv", "out/summary.tsv",
        "out/tables/curves.tsv")), "each download link holds the TSV as written", list(dl))
    out(det[0]["first"] == "attr/vessel/unetA/saliency.st.zst", "paths in the tables are relative to the page", det[0]["first"])

    # ---- print: the summary, the matrices and the curves; no controls, no tidy tables
    b.cmd("POST", "/goog/cdp/execute", {"cmd": "Emulation.setEmulatedMedia", "params": {"media": "print"}})
    vis = b.js("""var d=function(s){var e=document.querySelector(s);return e?getComputedStyle(e).display:'absent';};
        return {nav:d('nav'),select:d('div.sanity select'),tidy:d('details.tidy'),summary:d('#summary'),
          matrix:d('table.matrix'),svg:d('div.sanity svg'),curves:d('div.curves svg'),chosen:d('div.sanity .evsel-print'),
          cell:getComputedStyle(document.querySelector('table.matrix td')).printColorAdjust};""")
    out(vis["nav"] == "none" and vis["select"] == "none" and vis["tidy"] == "none" and vis["chosen"] == "inline" and
        "none" not in (vis["summary"], vis["matrix"], vis["svg"], vis["curves"]) and vis["cell"] == "exact",
        "print stylesheet: summary, matrices, curves (in colour) on paper; controls and tidy tables off", vis)
    pdf = b.cmd("POST", "/print", {"background": True})
    out(base64.b64decode(pdf)[:5] == b"%PDF-", "the page prints (PDF)", len(pdf))
    b.cmd("POST", "/goog/cdp/execute", {"cmd": "Emulation.setEmulatedMedia", "params": {"media": ""}})

    res = b.js("return performance.getEntriesByType('resource').map(function(e){return e.name;})"
               ".filter(function(n){return n.indexOf('data:')!=0;})")
    out(res == [], "nothing was fetched but data: URIs", res)
    errs = b.js("return window.esgErrors")
    log = [e for e in b.log() if e.get("level") == "SEVERE"]
    out(errs == [] and log == [], "no script errors, no console errors after the interactions", (errs, log))
finally:
    b.quit()
PY
rc=$?
while IFS=$'\t' read -r res desc detail; do
	if [ "$res" = 1 ]; then ok "browser: $desc"; else not_ok "browser: $desc"; echo "#   $detail"; fi
done < browser.out
[ "$rc" = 0 ] || { not_ok "the browser checks ran to the end"; sed 's/^/#   /' browser.err | tail -5; }
done_testing
