#!/usr/bin/env bash
# esg-render --html: a report of several inputs x models x methods, with
# randomisation strips, tables and links, loaded in headless Chromium
# (driven through chromedriver's W3C WebDriver HTTP API with urllib) to
# check what the page shows; then errors and atomic output without a browser.
. "$(dirname "$0")/lib.sh"
export ESG_ROOT

# ---- inputs: esg-load on generated NIfTI / NPY, then maps added in Python
$PYTHON - <<'PY' || not_ok "input files"
import numpy as np, nibabel as nib
v = np.fromfunction(lambda i, j, k: np.sin(i / 3.0) + np.cos(j / 2.0) + k / 5.0, (16, 12, 10)).astype(np.float32)
nib.save(nib.Nifti1Image(v, np.diag([2.0, 2.0, 3.0, 1.0])), "brain.nii.gz")
np.save("slice2d.npy", np.fromfunction(lambda i, j: i + j / 2.0, (20, 24)).astype(np.float32))
PY
check "esg-load the inputs" sh -c "esg-load brain.nii.gz -o brain.st.zst && esg-load slice2d.npy -o slice2d.st.zst"

cat >mk.py <<'PY'
import json, os, sys
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import numpy as np, safetensors_ref as st

def load(path):
    meta, ts = st.read_stream(path)[0]
    return meta, {name: arr for name, _, _, arr in ts}

SHA = {"modelA": "a" * 64, "modelB": "b" * 64}
records = []   # (tensors, meta) in stream order

def rec(base, image, attr, model, method, label=None, alias=None, sha=None, passes=None, secs=None):
    m = dict(base)
    m.update({"esg.model": model, "esg.method": method, "esg.params": json.dumps({"n_steps": 8, "x": "<&>"}),
              "esg.target": "1"})
    if sha: m["esg.model_sha256"] = sha
    if label: m["esg.label"] = label
    if alias: m["esg.method_alias"] = alias
    if passes is not None: m["esg.passes"] = str(passes)
    if secs is not None: m["esg.seconds"] = str(secs)
    records.append(([("image", image), ("attribution", attr.astype(np.float32))], m))

bm, b = load("brain.st.zst")
img = b["image"]                                   # [1, 1, 16, 12, 10]
def hot(shift, scale):                             # one hot voxel per axial slice k, moving with k
    a = np.zeros_like(img)
    for k in range(10):
        a[0, 0, (k + shift) % 16, (2 + k) % 12, k] = scale * (1 + k / 10.0)
        a[0, 0, (k + shift + 5) % 16, 6, k] = -0.5 * scale
    return a
methods = [("saliency", None, None), ("integrated_gradients", "ig-8", None), ("noise_tunnel", None, "smoothgrad")]
for mi, (meth, label, alias) in enumerate(methods):
    for model, shift in (("models/modelA.pt", 0), ("models/modelB.pt", 7)):
        name = os.path.basename(model)[:-3]
        rec(bm, img, hot(shift + mi, 1 + mi), model, meth, label, alias, SHA[name], 10 * (mi + 1), 0.25 * (mi + 1))
rng = np.random.default_rng(1)
# randomisation steps, out of order; "random" has a manifest, "indep" none
for step in ("random/step-02-conv2.pt", "random/step-01-fc.pt", "indep/step-01-fc.pt", "random/step-03-conv1.pt"):
    rec(bm, img, rng.standard_normal(img.shape), step, "saliency", sha="c" * 64, passes=1, secs=0.1)
sm, s = load("slice2d.st.zst")
s2 = s["image"]                                    # [1, 1, 20, 24]
a2 = np.zeros_like(s2); a2[0, 0, 5, 7] = 1
rec(sm, s2, a2, "models/modelA.pt", "saliency", sha=SHA["modelA"])
rec(sm, s2, -a2, "models/modelA.pt", "occlusion", label="occ <b>&\"'", sha=SHA["modelA"])

st.write_stream("maps1.st.zst", records[:6])      # the grid maps of two files
st.write_stream("maps2.st.zst", records[6:])
for i, r in enumerate(records):                    # each alone, for esg-render --png / --nifti
    st.write_stream("one%02d.st.zst" % i, [r])
os.makedirs("random", exist_ok=True)
json.dump({"format": "esg-randomise manifest 1", "model_sha256": SHA["modelA"], "mode": "cascading",
           "steps": []}, open("random/manifest.json", "w"))
with open("cells.tsv", "w") as f:                 # grid cells: stream, input, model, label
    for i in list(range(6)) + [10, 11]:
        m = records[i][1]
        f.write("one%02d.st.zst\t%s\t%s\t%s\n" % (i, os.path.basename(m["esg.source"]).split(".")[0],
                os.path.basename(m["esg.model"])[:-3],
                m.get("esg.label") or m.get("esg.method_alias") or m["esg.method"]))
with open("metrics.tsv", "w") as f:
    f.write("source\trecord\titem\tmethod\tparams\ttarget\tmetric\tvalue\tmetric_params\n")
    for i, v in enumerate(["10", "9", "100", "0.5", "2e-3", "-1", "nan"]):
        f.write("brain.nii.gz\t%d\t0\tsaliency\t{}\t1\tinfidelity\t%s\t{}\n" % (i, v))
PY
check "map streams" $PYTHON mk.py

# ---- the page -----------------------------------------------------------
mkdir -p out
check "esg-render --html (two streams, one of them on stdin)" sh -c \
	"esg-render --html out/report.html --title 'Maps <&> \"all\"' --table metrics.tsv \
	 --link 'maps/{input}/{model}/{method}.nii.gz' maps1.st.zst - < maps2.st.zst"
check "no URL of any scheme in the page" sh -c "test -s out/report.html && ! grep -qiE '(https?|ftp|file)://' out/report.html"
check "every src and href is a data: URI, an anchor or a relative path" $PYTHON - <<'PY'
import re
page = open("out/report.html", encoding="utf-8").read()
for attr, val in re.findall(r'\b(src|href)="([^"]*)"', page):
    assert val.startswith(("data:image/png;base64,", "data:text/tab-separated-values;", "#", "maps/")), (attr, val[:60])
PY
check "a Content-Security-Policy that forbids network loads" grep -q \
	"http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\"" out/report.html
echo "# page: $(wc -c < out/report.html) bytes"
# the NIfTI maps the links point at, and the pictures the cells must show
while IFS=$'\t' read -r st in model label; do
	mkdir -p "out/maps/$in/$model" && esg-render --nifti "out/maps/$in/$model/$label.nii.gz" "$st" || not_ok "NIfTI map of $st"
done < cells.tsv
check "reference pictures (esg-render --png --overlay)" sh -c "
	esg-render --png ref5.png --overlay --slice 5 --zoom 8 one00.st.zst &&
	esg-render --png ref2.png --overlay --slice 2 --zoom 8 one00.st.zst &&
	esg-render --png refmip.png --overlay --mip --zoom 8 one00.st.zst &&
	esg-render --png ref2d.png --overlay --zoom 6 one11.st.zst"

# ---- in headless Chromium ----------------------------------------------
if ! $PYTHON -c "import sys; sys.path.insert(0, '$ESG_ROOT/tests/py'); import webdriver; sys.exit(not webdriver.available())"; then
	skip "the page in a browser: chromium and chromedriver not installed (Debian: chromium chromium-driver)"
else
$PYTHON - >browser.out 2>browser.err <<'PY'
import os, struct, sys, time, urllib.parse, zlib
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import webdriver

def out(cond, desc, detail=""):
    print("%d\t%s\t%s" % (bool(cond), desc, str(detail).replace("\n", " ")[:300]), flush=True)

def read_png(path):   # 8-bit RGB: [(r, g, b)...] row-major
    b = open(path, "rb").read()
    p, idat = 8, b""
    while p < len(b):
        n, t = struct.unpack(">I4s", b[p:p + 8]); d = b[p + 8:p + 8 + n]; p += 12 + n
        if t == b"IHDR": w, h = struct.unpack(">II", d[:8])
        elif t == b"IDAT": idat += d
    raw, stride, px, prev = zlib.decompress(idat), 3 * w, [], bytearray(3 * w)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0; up = prev[x]; c = prev[x - 3] if x >= 3 else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + up) & 255
            elif f == 3: line[x] = (line[x] + (a + up) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
        px += [tuple(line[3 * x:3 * x + 3]) for x in range(w)]; prev = line
    return w, h, px

def diff(canvas, path):  # largest channel difference between a canvas and a PNG
    w, h, px = read_png(path)
    if [w, h] != canvas["size"]:
        return "size %r vs %r" % (canvas["size"], [w, h])
    d = canvas["rgba"]
    return max(abs(d[4 * i + k] - px[i][k]) for i in range(w * h) for k in range(3))

PIX = """var c=document.querySelector(arguments[0]);
return {size:[c.width,c.height],tile:c.dataset.tile,
        rgba:Array.from(c.getContext('2d').getImageData(0,0,c.width,c.height).data)};"""
BRAIN = "section[data-input=brain] "
CELL = BRAIN + "td.map[data-model=modelA][data-method=saliency] canvas"

b = webdriver.Browser()
try:
    out(b.open_report("out/report.html"), "the page loads offline and its script runs")
    log = b.log()
    out(log == [], "nothing on the console while loading", log)
    out(b.js("return document.querySelector('h1').textContent") == 'Maps <&> "all"',
        "the title, escaped, reads as given")
    sec = b.js("""return Array.from(document.querySelectorAll('section.input')).map(function(s){
        var g=s.querySelector('table.grid');
        return {input:s.dataset.input,depth:+s.dataset.depth,slider:!!s.querySelector('input.slice'),
          cols:Array.from(g.tHead.rows[0].cells).slice(1).map(function(c){return c.textContent;}),
          rows:Array.from(g.tBodies[0].rows).map(function(r){return r.cells[0].textContent;}),
          maps:g.querySelectorAll('td.map canvas.view').length,
          inputs:g.querySelectorAll('td.input canvas.view').length};});""")
    out([s["input"] for s in sec] == ["brain", "slice2d"], "one section per input, in order", sec)
    br, s2 = sec[0], sec[1]
    out(br["cols"] == ["input", "modelA", "modelB"] and br["rows"] == ["saliency", "ig-8", "smoothgrad"],
        "3D grid: columns input + models, rows = labels (esg.label, method_alias, method)", br)
    out(br["maps"] == 6 and br["inputs"] == 3, "3D grid: 3 x 2 map cells and an input cell per row", br)
    out(s2["cols"] == ["input", "modelA"] and s2["rows"] == ["saliency", "occ <b>&\"'"] and s2["maps"] == 2,
        "2D grid: labels with markup characters shown as text", s2)
    out(br["slider"] and br["depth"] == 10 and not s2["slider"], "a slider for the 3D input, none for 2D", sec)
    imgs = b.js("""return Array.from(document.images).map(function(i){return [i.id,i.complete,i.naturalWidth];})""")
    refs = b.js("""var s={};document.querySelectorAll('canvas.view').forEach(function(c){
        s[c.dataset.bg]=1;if(c.dataset.map)s[c.dataset.map]=1;});return Object.keys(s);""")
    ids = set(i[0] for i in imgs)
    out(imgs and all(i[1] and i[2] > 0 for i in imgs) and set(refs) <= ids,
        "every picture decoded (%d images)" % len(imgs), [i for i in imgs if not i[2]] or sorted(set(refs) - ids))

    c5 = b.js(PIX, CELL)
    out(c5["tile"] == "5" and diff(c5, "ref5.png") <= 3, "the cell shows slice 5 as esg-render --png --overlay --slice 5",
        (c5["tile"], diff(c5, "ref5.png")))
    slider = b.find(BRAIN + "input.slice")
    b.keys(slider, "\ue012\ue012\ue012")   # ArrowLeft x3
    st = b.js("""var s=document.querySelector(arguments[0]);
        return {v:s.value,pos:s.parentNode.parentNode.querySelector('output.pos').textContent,
        tiles:Array.from(document.querySelectorAll(arguments[1])).map(function(c){return c.dataset.tile;})};""",
        BRAIN + "input.slice", BRAIN + "canvas.view")
    out(st["v"] == "2" and st["pos"] == "2 / 9", "arrow keys move the slider to slice 2", st)
    out(len(st["tiles"]) == 14 and set(st["tiles"]) == {"2"}, "every cell and strip frame of the input follows", st["tiles"])
    c2 = b.js(PIX, CELL)
    out(c2["rgba"] != c5["rgba"] and diff(c2, "ref2.png") <= 3, "the cell now shows slice 2 as --png --slice 2",
        diff(c2, "ref2.png"))
    other = b.js("return document.querySelector('section[data-input=slice2d] canvas.view').dataset.tile")
    out(other == "0", "the 2D section is not moved", other)
    b.click(b.find(BRAIN + "input.mip"))
    cm = b.js(PIX, CELL)
    tiles = b.js("return Array.from(document.querySelectorAll(arguments[0])).map(function(c){return c.dataset.tile;})",
                 BRAIN + "canvas.view")
    out(set(tiles) == {"10"} and diff(cm, "refmip.png") <= 3, "the projection toggle shows --png --mip in every cell",
        (set(tiles), diff(cm, "refmip.png")))
    b.click(b.find(BRAIN + "input.mip"))
    c2d = b.js(PIX, "section[data-input=slice2d] td.map[data-method^=occ] canvas")
    out(diff(c2d, "ref2d.png") <= 3, "the 2D cell matches --png --overlay", diff(c2d, "ref2d.png"))

    strips = b.js("""return Array.from(document.querySelectorAll(arguments[0])).map(function(s){
        return {dir:s.dataset.dir,method:s.dataset.method,
          steps:Array.from(s.querySelectorAll('figure')).map(function(f){return f.dataset.step;}),
          labels:Array.from(s.querySelectorAll('figcaption')).map(function(f){return f.textContent;})};});""",
        BRAIN + "div.strip")
    out(len(strips) == 2 and strips[0]["dir"] == "random" and strips[0]["method"] == "saliency"
        and strips[0]["labels"] == ["original", "01 fc", "02 conv2", "03 conv1"] and strips[0]["steps"] == ["0", "1", "2", "3"],
        "strip: the original (manifest's model_sha256) first, then the steps in order", strips)
    out(len(strips) == 2 and strips[1]["dir"] == "indep" and strips[1]["labels"] == ["01 fc"],
        "a strip without manifest.json has no original frame", strips)
    orig = b.js(PIX, BRAIN + "div.strip[data-dir=random] figure.original canvas")
    out(orig["rgba"] == c2["rgba"], "the original frame is modelA's saliency map at the same slice")

    b.click(b.find("details.tidy summary"))   # the tidy tables are collapsed
    th = b.js("return Array.from(document.querySelectorAll('table.sortable th')).map(function(t){return t.textContent;})")
    col = th.index("value")
    VALS = "return Array.from(document.querySelector('table.sortable').tBodies[0].rows).map(function(r){return r.cells[arguments[0]].textContent;})"
    head = b.js("return Array.from(document.querySelectorAll('table.sortable th'))[arguments[0]]", col)
    b.click(head)
    up = b.js(VALS.replace("arguments[0]", str(col)))
    out(up == ["-1", "2e-3", "0.5", "9", "10", "100", "nan"], "a header click sorts numerically, ascending", up)
    b.click(head)
    down = b.js(VALS.replace("arguments[0]", str(col)))
    out(down == ["100", "10", "9", "0.5", "2e-3", "-1", "nan"], "a second click sorts descending", down)
    rec = b.js("return Array.from(document.querySelector('table.sortable').tBodies[0].rows).map(function(r){return r.cells[1].textContent;})")
    out(rec == ["2", "0", "1", "3", "4", "5", "6"], "whole rows move together", rec)

    links = b.js("return Array.from(document.querySelectorAll('td.map a')).map(function(a){return a.getAttribute('href');})")
    want = ["maps/brain/model%s/%s.nii.gz" % (m, l) for l in ("saliency", "ig-8", "smoothgrad") for m in "AB"] + \
           ["maps/slice2d/modelA/saliency.nii.gz", "maps/slice2d/modelA/occ%20%3Cb%3E%26%22%27.nii.gz"]
    out(links == want, "each map cell links to its NIfTI map by the template", links)
    missing = [h for h in links if not os.path.isfile(os.path.join("out", urllib.parse.unquote(h)))]
    out(links and not missing, "the linked files exist beside the page", missing)

    res = b.js("return performance.getEntriesByType('resource').map(function(e){return e.name;})"
               ".filter(function(n){return n.indexOf('data:')!=0;})")
    out(res == [], "nothing was fetched but data: URIs", res)
    errs = b.js("return window.esgErrors")
    # (the test's own getImageData readbacks may draw a performance warning)
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
fi

# ---- errors: one line, exit 1 or 2, no page ------------------------------
echo old > keep.html
expect_fail "no streams" 2 "^esg-render: error: --html: give the streams" esg-render --html x.html
expect_fail "--html with --png" 2 "makes its own page" esg-render --html x.html --png y.png maps1.st.zst
expect_fail "--mosaic with --html" 2 "do not apply to --html" esg-render --html x.html --mosaic 4 maps1.st.zst
expect_fail "--table without --html" 2 "belong to --html" esg-render --png x.png --table metrics.tsv maps1.st.zst
expect_fail "--link with a scheme" 2 "link: .*names a scheme" esg-render --html x.html --link 'https://x/{input}.nii' maps1.st.zst
expect_fail "--link absolute" 2 "link: .*is absolute" esg-render --html x.html --link '/maps/{input}.nii' maps1.st.zst
expect_fail "--link with an unknown placeholder" 2 "unknown placeholder" esg-render --html x.html --link 'maps/{subject}.nii' maps1.st.zst
expect_fail "a record without attribution" 1 "^esg-render: error: brain.st.zst: record 0: no tensor 'attribution'" \
	esg-render --html keep.html maps1.st.zst brain.st.zst
check "the old page is left as it was" grep -qx old keep.html
: > empty.st.zst
expect_fail "an empty stream" 1 "empty.st.zst: no records" esg-render --html x.html maps1.st.zst empty.st.zst
printf 'one column\n1\n' > bad1.tsv
expect_fail "a table without a tab in its header" 1 "bad1.tsv: the first line has no tab" esg-render --html x.html --table bad1.tsv maps1.st.zst
printf 'a\tb\n1\t2\t3\n' > bad2.tsv
expect_fail "a ragged table" 1 "bad2.tsv: line 2 has 3 fields, the header 2" esg-render --html x.html --table bad2.tsv maps1.st.zst
expect_fail "a missing table" 1 "nosuch.tsv" esg-render --html x.html --table nosuch.tsv maps1.st.zst
$PYTHON - <<'PY'
import os, sys
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import safetensors_ref as st
(meta, ts), = st.read_stream("one06.st.zst")
meta["esg.model"] = "broken/step-01-fc.pt"
st.write_stream("broken.st.zst", [([(n, a) for n, _, _, a in ts], meta)])
os.makedirs("broken", exist_ok=True)
open("broken/manifest.json", "w").write("{not json")
(meta, ts), = st.read_stream("one00.st.zst")
meta["esg.source"] = "other/brain.nii.gz"
st.write_stream("twin.st.zst", [([(n, a) for n, _, _, a in ts], meta)])
(meta, ts), = st.read_stream("one00.st.zst")
img = [a for n, _, _, a in ts if n == "image"][0]
st.write_stream("layer.st.zst", [([("image", img), ("attribution", img[:, :, ::2, ::2, ::2].copy())], meta)])
st.write_stream("flat.st.zst", [([("image", img), ("attribution", img[:, :, :, :, 0].copy())], meta)])
PY
check "a layer-sized map: resampled to the image, with a warning" sh -c "esg-render --html l.html layer.st.zst 2>l.err &&
	grep -q 'layer.st.zst: record 0: the map differs in size from the image' l.err && grep -q 'data-n=\"10\"' l.html"
expect_fail "a 2D map over a 3D image" 1 "flat.st.zst: record 0: tensors 'attribution' and 'image' differ in spatial shape" \
	esg-render --html x.html flat.st.zst
check "warnings: two inputs of one name, a cell given twice" sh -c "esg-render --html w.html maps1.st.zst twin.st.zst 2>w.err &&
	grep -q \"warning: twin.st.zst: record 0: inputs 'brain.nii.gz' and 'other/brain.nii.gz' share the name 'brain'\" w.err &&
	grep -q \"model 'modelA', method 'saliency' given again\" w.err && test -s w.html"
expect_fail "an unreadable manifest" 1 "broken.st.zst: record 0: broken/manifest.json: not JSON" esg-render --html x.html broken.st.zst
no_file "no page after any failure" x.html
check "output is one line per failure" sh -c "esg-render --html x.html maps1.st.zst brain.st.zst 2>&1 >/dev/null | wc -l | grep -qx 1"
done_testing
