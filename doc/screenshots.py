#!/usr/bin/env python3
"""screenshots.py REPORT.html BUILDER.html OUTDIR: the pictures of doc/ --
OUTDIR/report.png, the first screen of a report (the summary, the methods x
metrics matrix, the start of the curves), and OUTDIR/builder.png, the
builder with a small 2D run chosen -- taken in headless Chromium
(tests/py/webdriver.py: offline, a fresh profile).  `make screenshots` runs
it on the demo's report.  With python3-pil the pictures are stored with a
256-colour palette (a third of the size); without, as Chromium writes them."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))
import webdriver  # noqa: E402


def save(b, path):
    b.screenshot(path)
    try:
        from PIL import Image
        Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    except ImportError:
        pass
    print("%s: %d bytes" % (path, os.path.getsize(path)))


def main():
    report, builder, out = sys.argv[1:4]
    b = webdriver.Browser(window="1280,1500")
    try:
        if not b.open_report(report):
            sys.exit("screenshots: %s did not finish drawing" % report)
        errs = b.js("return window.esgErrors")
        if errs:
            sys.exit("screenshots: %s: script errors: %s" % (report, errs))
        save(b, os.path.join(out, "report.png"))
        if not b.open_report(builder):
            sys.exit("screenshots: %s did not finish drawing" % builder)
        put = """var e=document.querySelector('[data-field="'+arguments[0]+'"]');
            if(e.type==='checkbox'){if(!e.checked)e.click();}
            else{e.value=arguments[1];e.dispatchEvent(new Event(e.tagName==='SELECT'?'change':'input',{bubbles:true}));}"""
        for field, value in (("title", "2D angiogram classifier"), ("output", "angio2d-out"), ("target", "1"),
                             ("inputs[0].image", "share/data/angio2d_20001_aneurysm.png"),
                             ("inputs[0].mask", "share/data/angio2d_20001_aneurysm_mask.png"),
                             ("models[0].name", "classifier2d"), ("models[0].file", "share/models/classifier2d.pt")):
            b.js(put, field, value)
        for m in ("saliency", "integrated_gradients"):
            b.js("document.getElementById('add-method').value=arguments[0];"
                 "document.getElementById('add-method-button').click();", m)
        b.js(put, "methods[1].params.n_steps", "0")      # an invalid value: the message shows
        b.js("document.getElementById('models').scrollIntoView()")
        save(b, os.path.join(out, "builder.png"))
    finally:
        b.quit()


if __name__ == "__main__":
    main()
