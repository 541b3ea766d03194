#!/usr/bin/env python3
"""make bench-patches: what a patched run costs against the whole volume.

The issue's goal: a patched run costs at most 1.2 x (covered voxels / volume
voxels) x the whole-volume run of the same method.  On a TOF-MRA-like
phantom (share/demo/phantom.py, default 128x128x96) through the shipped
U-Net wrapped --reduce fixed-mask, 2 threads, --target 1, default batch and
memory flags, each method runs on the whole volume, patch-wise with patches
sharing calls as by default (on the CPU: calls of two rows), with eight
patches a job (ESG_PATCH_BATCH=8) and one patch at a time (ESG_PATCH_BATCH=1).
Prints a markdown table (and writes it to --out): wall, peak RSS, model
calls, patches per job, and the cost ratio
    patched wall / (covered / volume x whole wall)
(<= 1.2 meets the goal; below 1, patches are cheaper per voxel).  Also
checks that the shared and one-by-one maps agree (max |difference| / max).

  bench/patches.py [--shape X,Y,Z] [--patch D,H,W] [--only m1,m2] [--out FILE]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import large  # noqa: E402  (timed, prep, prepare, read_meta, ...)

METHODS = {
    "saliency": [],
    "integrated_gradients": ["--param", "n_steps=8"],
    "deeplift": [],
    "layer_gradcam": ["--layer", large.LAYER],
}


def covered(shape, patch, overlap=0.25):
    """Voxels covered by the patch grid, counted with multiplicity, and the count of patches."""
    total, n = 1, 1
    for v, p in zip(shape, patch):
        p = min(p, v)
        step = max(1, int(p * (1 - overlap)))
        c = -(-(v - p) // step) + 1
        total *= c * p
        n *= c
    return total, n


def attribution(path):
    _, tensors = large.safetensors_ref.read_stream(path)[0]
    return next(t[3] for t in tensors if t[0] == "attribution")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="128,128,96")
    ap.add_argument("--patch", default="64,64,48")
    ap.add_argument("--only", default=",".join(METHODS))
    ap.add_argument("--out", default=os.path.join(large.ROOT, "bench", "patches.md"))
    ap.add_argument("--work", default=os.path.join(large.ROOT, large.BUILD, "bench-patches"))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    steps = []
    img = os.path.join(a.work, "phantom.nii.gz")
    if not large.prep("phantom", [large.PY, os.path.join(large.ROOT, "share/demo/phantom.py"), "--seed",
                                  str(large.SEED), "--shape", a.shape, "--out-image", img],
                      img, os.path.join(a.work, "phantom.log"), steps):
        sys.exit(1)
    got = large.prepare("phantom", img, a.work, steps)
    if not got:
        sys.exit(1)
    st, model = got
    shape = large.read_meta(st)[1][2:]
    patch = [int(v) for v in a.patch.split(",")]
    cov, npatch = covered(shape, patch)
    share = cov / float(np.prod(shape))
    esg = os.path.join(large.BIN, "esg-attr")
    rows = []
    for m in a.only.split(","):
        base = [esg, "-m", model, "--method", m, "--threads", str(large.THREADS), "--target", "1"] + METHODS[m]
        runs = {}
        for kind, extra, env in (("whole", [], None), ("shared", ["--patch", a.patch], None),
                                 ("eight a job", ["--patch", a.patch], "8"),
                                 ("one by one", ["--patch", a.patch], "1")):
            out = os.path.join(a.work, "%s-%s.st.zst" % (m, kind.replace(" ", "")))
            if env:
                os.environ["ESG_PATCH_BATCH"] = env
            r = large.timed(base + extra + ["-o", out, st], out + ".log")
            os.environ.pop("ESG_PATCH_BATCH", None)
            meta = large.read_meta(out)[0] if r["status"] == 0 else {}
            r["calls"] = meta.get("esg.passes", "")
            r["batch"] = meta.get("esg.patch_batch", "")
            r["out"] = out
            runs[kind] = r
            print(m, kind, r["status"], r["wall"], "s", file=sys.stderr)
        whole = runs["whole"]["wall"]
        diff = ""
        if runs["shared"]["status"] == 0 and runs["one by one"]["status"] == 0:
            s, o = attribution(runs["shared"]["out"]), attribution(runs["one by one"]["out"])
            diff = "%.1e" % (float(np.abs(s - o).max()) / max(float(np.abs(o).max()), 1e-30))
        for kind in ("whole", "shared", "eight a job", "one by one"):
            r = runs[kind]
            ratio = "" if kind == "whole" or not whole or not r["wall"] else \
                "%.2f" % (r["wall"] / (share * whole))
            rows.append("| %s | %s | %s | %.0f | %s | %s | %s | %s |" % (
                m, kind, large.fmt(r["wall"], "%.1f") if r["status"] == 0 else "exit %s" % r["status"],
                r["rss"] or 0, r["calls"], r["batch"] or "\u2014", ratio,
                diff if kind == "shared" else ""))
    head = ["# bench-patches: patched runs against the whole volume", "",
            "`make bench-patches` (bench/patches.py): phantom %s (after `--multiple 4`: %s), the shipped U-Net "
            "wrapped `--reduce fixed-mask`, %d threads, `--target 1`, default batch and memory flags.  "
            "Patches %s, overlap 0.25: %d patches covering %.2f\u00d7 the volume's voxels.  "
            "ratio = patched wall / (%.2f \u00d7 whole wall): the issue's goal is \u2264 1.2.  "
            "shared: the default (on the CPU, patches share calls of up to two rows); eight a job: "
            "ESG_PATCH_BATCH=8; one by one: ESG_PATCH_BATCH=1.  "
            "difference: max |shared \u2212 one by one| / max |one by one|." % (
                a.shape, "\u00d7".join(map(str, shape)), large.THREADS, a.patch, npatch, share, share),
            "",
            "| method | run | wall s | peak RSS MiB | model calls | patches per job | ratio | difference |",
            "|---|---|---|---|---|---|---|---|"]
    text = "\n".join(head + rows) + "\n"
    print(text)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
