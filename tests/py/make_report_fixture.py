#!/usr/bin/env python3
"""make_report_fixture OUT: a pipeline's output folder as esg-render --html
sees it, made without any model -- one 2D input, two models side by side,
three methods, a three-step cascading randomisation of the first model --
with the tables pipelines/run writes (ground truth, fidelity, randomisation,
deletion / insertion curves, the run summary) and expect.json, what the
report must show, computed here independently of the page.

The method "flat" is the sanity check's failing case: its maps are the same
at every randomisation step (similarity 1), so the report must flag it as
not depending on the weights beyond step 0; "plateau" stops changing after
step 1 (similarity 0.7 from then on): flagged beyond step 1; "saliency"
decays: not flagged."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_ref as st  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "out"
INPUT, MODELS, METHODS = "vessel", ["unetA", "unetB"], ["saliency", "plateau", "flat"]
STEPS = ["head", "dec1", "enc1"]
rng = np.random.default_rng(17)
img = rng.standard_normal((1, 1, 12, 14)).astype(np.float32)


def write(path, attr, model, method, extra=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    meta = {"esg.source": "data/%s.png" % INPUT, "esg.name": INPUT, "esg.model": model, "esg.method": method,
            "esg.label": method, "esg.params": "{}", "esg.target": "1",
            "esg.model_sha256": ("a" if "unetA" in model else "b") * 64}
    meta.update(extra or {})
    st.write_stream(path, [([("image", img), ("attribution", attr.astype(np.float32))], meta)])


def rel(p):
    return os.path.join(out, p)


streams = []
for m in MODELS:
    for k, meth in enumerate(METHODS):
        p = rel("attr/%s/%s/%s.st.zst" % (INPUT, m, meth))
        write(p, rng.random(img.shape), "share/models/%s.pt" % m, meth)
        streams.append(p)
rdir = rel("random/%s/unetA" % INPUT)
os.makedirs(rdir, exist_ok=True)
json.dump({"format": "esg-randomise manifest 1", "model_sha256": "a" * 64, "mode": "cascading", "steps": []},
          open(os.path.join(rdir, "manifest.json"), "w"))
for meth in METHODS:
    for s, layer in enumerate(STEPS, 1):
        p = rel("random/%s/unetA/%s/step-%02d.st.zst" % (INPUT, meth, s))
        write(p, rng.random(img.shape), "%s/step-%02d-%s.pt" % (rdir, s, layer), meth)
        streams.append(p)

HEAD = "source\trecord\titem\tmethod\tparams\ttarget\tmetric\tvalue\tmetric_params\n"
os.makedirs(rel("tables"), exist_ok=True)
expect = {"matrix": {}, "similarity": {}, "curves": {}, "flags": {"flat": 0, "plateau": 1}, "steps": len(STEPS)}


def row(src, meth, metric, value, mp="{}"):
    return "%s\t0\t0\t%s\t{\"n\":1}\t1\t%s\t%s\t%s\n" % (src, meth, metric, value, mp)


gt, fid, cur = [HEAD], [HEAD], ["source\trecord\titem\tmethod\ttarget\tcurve\tfraction\tscore\tnormalised\n"]
for m in MODELS:
    for k, meth in enumerate(METHODS):
        src = rel("attr/%s/%s/%s.st.zst" % (INPUT, m, meth))
        vals = {"mass_in_mask": rng.random(), "pointing_game": float(rng.integers(0, 2)), "auroc": 0.5 + rng.random() / 2,
                "infidelity": 10 ** rng.uniform(-5, 1), "max_sensitivity": rng.random()}
        if m == "unetB" and meth == "flat":
            vals["auroc"] = float("nan")      # a nan: shown, sorted last, not ranked
        fr = np.linspace(0, 1, 11)
        for curve, sign in (("deletion", -1), ("insertion", 1)):
            y = np.clip(0.5 + sign * (fr - 0.5) * (1 + k) + rng.normal(0, 0.05, fr.size), -0.2, 1.2)
            y[0], y[-1] = (1, 0) if curve == "deletion" else (0, 1)
            vals[curve] = float(np.trapz(y, fr))
            for x, v in zip(fr, y):
                cur.append("%s\t0\t0\t%s\t1\t%s\t%.17g\t%.9g\t%.17g\n" % (src, meth, curve, x, v * 3, v))
            expect["curves"].setdefault("%s|%s|%s" % (m, curve, meth), {"x": list(fr), "y": list(y),
                                                                        "auc": vals[curve]})
        for metric, v in vals.items():
            (gt if metric in ("mass_in_mask", "pointing_game", "auroc") else fid).append(
                row(src, meth, metric, "%.17g" % v, '{"mask":"file"}'))
        expect["matrix"]["%s|%s" % (m, meth)] = vals
ran = [HEAD]
for meth in METHODS:
    for metric in ("spearman_abs", "ssim_abs", "topk_iou"):
        if meth == "flat":
            ys = [1.0, 1.0, 1.0]
        elif meth == "plateau":
            ys = [0.7, 0.7, 0.72 + (0.01 if metric == "ssim_abs" else 0)]
        else:
            ys = [0.9, 0.5, 0.1 + 0.05 * len(metric) / 10]
        expect["similarity"]["%s|%s" % (meth, metric)] = ys
        for s, y in enumerate(ys, 1):
            ran.append(row(rel("random/%s/unetA/%s/step-%02d.st.zst" % (INPUT, meth, s)), meth, metric, "%.17g" % y,
                           '{"reference":"%s"}' % rel("attr/%s/unetA/%s.st.zst" % (INPUT, meth))))
summ = ["job\tstatus\twall_s\tpeak_rss_mb\tpasses\treason\tstarted\n"]
for i, p in enumerate(streams):
    status = "ok" if i != 2 else "failed (exit 1)"
    summ.append("%s\t%s\t%.2f\t100\t1\t%s\t2026-01-01T00:00:%02d+00:00\n" % (
        os.path.relpath(p, out), status, 1.5, "" if status == "ok" else "esg-attr: error: boom", i))
summ.append("attr/x/unetB/slow.st.zst\ttimed out\t30\t100\t\tran past 30 s\t2026-01-01T00:00:10+00:00\n")
expect["jobs"] = {"ok": len(streams) - 1, "failed": 1, "timed": 1, "wall": 40.0}
for name, lines in (("ground_truth", gt), ("fidelity", fid), ("randomisation", ran), ("curves", cur)):
    open(rel("tables/%s.tsv" % name), "w").write("".join(lines))
open(rel("summary.tsv"), "w").write("".join(summ))


# the summary's best three: mean rank per family, ranks per (model, metric), ties averaged
def best(family):
    tot = {}
    for m in MODELS:
        for metric, better in family.items():
            vals = {meth: expect["matrix"]["%s|%s" % (m, meth)][metric] for meth in METHODS}
            vals = {k: v for k, v in vals.items() if v == v}
            for k, v in vals.items():
                below = sum(1 for w in vals.values() if better * (w - v) > 0)
                same = sum(1 for w in vals.values() if w == v)
                tot.setdefault(k, []).append(below + (same + 1) / 2)
    return sorted(((sum(r) / len(r), k) for k, r in tot.items()))


expect["best_gt"] = [k for _, k in best({"mass_in_mask": 1, "pointing_game": 1, "auroc": 1})][:3]
expect["best_faith"] = [k for _, k in best({"infidelity": -1, "max_sensitivity": -1, "deletion": -1,
                                            "insertion": 1})][:3]
expect["streams"] = streams
json.dump(expect, open(rel("expect.json"), "w"))
print(" ".join(streams))
