#!/usr/bin/env bash
# esg-render --html: the "Explanations" gallery of esg-explain records --
# per input and layer, what was optimised (rows) by model (columns, the
# randomised model beside the trained one), each picture the optimised image
# drawn by the section's own canvases (the slice slider and the projection
# switch move them with the grid), the objective's trace under it.  The
# records are written here in Python as esg-explain writes them (tensor
# `image` in the input's geometry, tensor `objective`, esg.objective_*), so
# this test needs no model; tests/cli/pipeline_explain.sh runs the real tool.
. "$(dirname "$0")/lib.sh"
export ESG_ROOT

$PYTHON - <<'PY' || not_ok "input files"
import numpy as np, nibabel as nib
v = np.fromfunction(lambda i, j, k: np.sin(i / 3.0) + np.cos(j / 2.0) + k / 5.0, (16, 12, 10)).astype(np.float32)
nib.save(nib.Nifti1Image(v, np.diag([2.0, 2.0, 3.0, 1.0])), "brain.nii.gz")
np.save("slice2d.npy", np.fromfunction(lambda i, j: i + j / 2.0, (20, 24)).astype(np.float32))
PY
check "esg-load the inputs" sh -c "esg-load brain.nii.gz --name brain -o brain.st.zst && esg-load slice2d.npy -o slice2d.st.zst"

cat >mk.py <<'PY'
import json, os, sys
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import numpy as np, safetensors_ref as st

def load(path):
    meta, ts = st.read_stream(path)[0]
    return meta, {name: arr for name, _, _, arr in ts}

rng = np.random.default_rng(3)
def rec(base, image, model, method, label, layer=None, call=None, channel=None, target=None, steps=12, up=True):
    m = dict(base)
    m.update({"esg.model": model, "esg.method": method, "esg.label": label, "esg.steps": str(steps),
              "esg.params": json.dumps({"lr": 0.05})})
    if layer: m["esg.layer"] = layer
    if call is not None: m["esg.layer_call"] = str(call)
    if channel is not None: m["esg.channel"] = str(channel)
    if target is not None: m["esg.target"] = str(target)
    obj = np.linspace(0.5, 4.0, steps).astype(np.float32)
    if not up: obj = obj[::-1].copy()
    m["esg.objective_initial"] = repr(float(obj[0]))
    m["esg.objective_final"] = repr(float(obj[-1]))
    # [N, steps] as esg-explain writes it; a bare [steps] is read too
    return ([("image", image.astype(np.float32)), ("objective", obj if layer == "conv4" else obj[None])], m)

bm, b = load("brain.st.zst")
img = b["image"]                                # [1, 1, 16, 12, 10]
def blob(k0):                                   # a bright voxel on slice k moving with k
    a = rng.standard_normal(img.shape).astype(np.float32) * 0.05
    for k in range(10):
        a[0, 0, (k + k0) % 16, (2 * k) % 12, k] = 3 + k / 10.0
    return a
R = []
for model in ("explain/unet.pt", "explain/unet-randomised.pt"):
    for ch in (0, 3):
        R.append(rec(bm, blob(ch), model, "deepdream", "deepdream", "model.enc1", channel=ch))
    R.append(rec(bm, blob(5), model, "invert", "invert", "model.enc1", up=False))
    R.append(rec(bm, blob(7), model, "feature_vis", "fv", "model.dec2", call=1, channel=2, steps=200))
    R.append(rec(bm, blob(9), model, "class_model", "class_model", target=1, steps=1))
sm, s = load("slice2d.st.zst")
R.append(rec(sm, rng.standard_normal(s["image"].shape), "classifier2d.pt", "feature_vis", "fv", "conv4", channel=1))
# an attribution record too: grid and gallery side by side in one section
a = np.zeros_like(s["image"]); a[0, 0, 5, 7] = 1
m = dict(sm); m.update({"esg.model": "classifier2d.pt", "esg.method": "saliency"})
R.append(([("image", s["image"]), ("attribution", a)], m))
st.write_stream("explain.st.zst", R)
st.write_stream("again.st.zst", [R[0]])                 # the same gallery cell again
st.write_stream("deepdream0.st.zst", [R[0]])
PY
check "explanation records (Python)" $PYTHON mk.py

mkdir -p out
check "esg-render --html with explanations and a map" esg-render --html out/report.html explain.st.zst
echo "# page: $(wc -c < out/report.html) bytes"
check "the page has the Explanations gallery" grep -q '<h3>Explanations</h3>' out/report.html
check "a trace per explanation with more than one step (9 of 11)" \
	test "$(grep -o '<svg class="trace"' out/report.html | wc -l)" = 9
check "captions give the objective from start to end" grep -q 'objective 0.5 → 4' out/report.html
esg-render --html out/again.html explain.st.zst again.st.zst 2>again.err
check "an explanation given twice: a warning naming it" grep -q "explanation 'deepdream · channel 0' of model.enc1 given again" again.err
check "reference pictures of the optimised image (esg-render --png --tensor image)" sh -c "
	esg-render --png ref5.png --tensor image --slice 5 --zoom 8 deepdream0.st.zst &&
	esg-render --png ref2.png --tensor image --slice 2 --zoom 8 deepdream0.st.zst &&
	esg-render --png refmip.png --tensor image --mip --zoom 8 deepdream0.st.zst"

if ! $PYTHON -c "import sys; sys.path.insert(0, '$ESG_ROOT/tests/py'); import webdriver; sys.exit(not webdriver.available())"; then
	skip "the gallery in a browser: chromium and chromedriver not installed (Debian: chromium chromium-driver)"
	done_testing
fi
$PYTHON - >browser.out 2>browser.err <<'PY'
import os, struct, sys, zlib
sys.path.insert(0, os.environ["ESG_ROOT"] + "/tests/py")
import webdriver

def out(cond, desc, detail=""):
    print("%d\t%s\t%s" % (bool(cond), desc, str(detail).replace("\n", " ")[:300]), flush=True)

def read_png(path):   # 8-bit RGB or gray: [(r, g, b)...] row-major
    b = open(path, "rb").read()
    p, idat = 8, b""
    while p < len(b):
        n, t = struct.unpack(">I4s", b[p:p + 8]); d = b[p + 8:p + 8 + n]; p += 12 + n
        if t == b"IHDR": w, h = struct.unpack(">II", d[:8]); ch = {0: 1, 2: 3}[d[9]]
        elif t == b"IDAT": idat += d
    raw, stride, px, prev = zlib.decompress(idat), ch * w, [], bytearray(ch * w)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - ch] if x >= ch else 0; up = prev[x]; c = prev[x - ch] if x >= ch else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + up) & 255
            elif f == 3: line[x] = (line[x] + (a + up) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
        px += [tuple(line[ch * x:ch * x + ch] * (3 // ch)) for x in range(w)]; prev = line
    return w, h, px

def diff(canvas, path):
    w, h, px = read_png(path)
    if [w, h] != canvas["size"]:
        return "size %r vs %r" % (canvas["size"], [w, h])
    d = canvas["rgba"]
    return max(abs(d[4 * i + k] - px[i][k]) for i in range(w * h) for k in range(3))

PIX = """var c=document.querySelector(arguments[0]);
return {size:[c.width,c.height],tile:c.dataset.tile,
        rgba:Array.from(c.getContext('2d').getImageData(0,0,c.width,c.height).data)};"""
BRAIN = "section[data-input=brain] "
CELL = BRAIN + "div.layer[data-layer='model.enc1'] tr[data-explanation='deepdream \u00b7 channel 0'] td[data-model=unet] canvas"
b = webdriver.Browser()
try:
    out(b.open_report("out/report.html"), "the page loads offline and its script runs")
    log = b.log()
    out(log == [], "nothing on the console", log)
    g = b.js("""return Array.from(document.querySelectorAll('section.input')).map(function(s){
        return {input:s.dataset.input,grid:!!s.querySelector('table.grid:not(.gallery)'),
          layers:Array.from(s.querySelectorAll('div.explain div.layer')).map(function(l){
            var t=l.querySelector('table');
            return {layer:l.dataset.layer,
              cols:Array.from(t.tHead.rows[0].cells).slice(1).map(function(c){return c.textContent;}),
              rows:Array.from(t.tBodies[0].rows).map(function(r){return r.cells[0].textContent;}),
              pics:t.querySelectorAll('td.explanation canvas.view').length,
              maps:t.querySelectorAll('canvas.view[data-map]').length};})};});""")
    out([s["input"] for s in g] == ["brain", "slice2d"], "a section per input", g)
    br = g[0]
    out([l["layer"] for l in br["layers"]] == ["model.enc1", "model.dec2:1", "class score"],
        "3D: a gallery table per layer in record order (call index shown, the class model apart)", br["layers"])
    out(all(l["cols"] == ["unet", "unet-randomised"] for l in br["layers"]),
        "columns: the trained model beside the randomised one", [l["cols"] for l in br["layers"]])
    out(br["layers"][0]["rows"] == ["deepdream \u00b7 channel 0", "deepdream \u00b7 channel 3", "invert"] and
        br["layers"][1]["rows"] == ["fv \u00b7 channel 2"] and br["layers"][2]["rows"] == ["class_model \u00b7 class 1"],
        "rows: label and channel (or class)", [l["rows"] for l in br["layers"]])
    out(sum(l["pics"] for l in br["layers"]) == 10 and all(l["maps"] == 0 for l in br["layers"]),
        "10 pictures, drawn without a map", br["layers"])
    out(not br["grid"] and g[1]["grid"] and g[1]["layers"][0]["layer"] == "conv4",
        "the 2D section has the grid (saliency) and its gallery", g[1])
    c5 = b.js(PIX, CELL)
    out(c5["tile"] == "5" and diff(c5, "ref5.png") <= 3,
        "a gallery picture shows slice 5 as esg-render --png --tensor image --slice 5", (c5["tile"], diff(c5, "ref5.png")))
    b.keys(b.find(BRAIN + "input.slice"), "\ue012\ue012\ue012")   # ArrowLeft x3
    tiles = b.js("return Array.from(document.querySelectorAll(arguments[0])).map(function(c){return c.dataset.tile;})",
                 BRAIN + "div.explain canvas.view")
    out(len(tiles) == 10 and set(tiles) == {"2"}, "the section's slider moves every gallery picture", tiles)
    c2 = b.js(PIX, CELL)
    out(c2["rgba"] != c5["rgba"] and diff(c2, "ref2.png") <= 3, "... which now shows slice 2", diff(c2, "ref2.png"))
    b.click(b.find(BRAIN + "input.mip"))
    cm = b.js(PIX, CELL)
    out(cm["tile"] == "10" and diff(cm, "refmip.png") <= 3, "the projection switch shows --png --mip",
        (cm["tile"], diff(cm, "refmip.png")))
    tr = b.js("""return Array.from(document.querySelectorAll(arguments[0])).map(function(p){
        return p.getAttribute('points').split(' ');});""", BRAIN + "div.explain svg.trace polyline")
    out([len(t) for t in tr] == [12] * 6 + [64] * 2,
        "traces: a point per step, at most 64", [len(t) for t in tr])
    out(tr[0][0] == "1.0,15.0" and tr[0][-1] == "63.0,1.0" and tr[4][0] == "1.0,1.0" and tr[4][-1] == "63.0,15.0",
        "a rising objective rises, a falling one (invert's loss) falls", (tr[0][:1], tr[0][-1:], tr[4][:1], tr[4][-1:]))
    data = b.js("return JSON.parse(document.getElementById('esg-data').textContent).records.filter(function(r){return r.explanation;}).length")
    out(data == 11, "esg-data marks the explanation records", data)
finally:
    b.quit()
PY
while IFS=$'\t' read -r good desc detail; do
	[ "$good" = 1 ] && ok "$desc" || not_ok "$desc ($detail)"
done <browser.out
[ -s browser.out ] || not_ok "the browser run ($(tail -5 browser.err))"
[ ! -s browser.err ] || sed 's/^/# /' browser.err | tail -5
done_testing
