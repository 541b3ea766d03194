#!/usr/bin/env python3
"""make bench-explain: esg-explain's cost against the same loop in plain PyTorch.

Per case: the steps, the model calls esg-explain made (esg.model_calls) per
step, its own time (esg.seconds: after the model is loaded, excluding process
start-up), the time of tests/py/ref_explain.py's loop (plain PyTorch: the
TorchScript model called from Python, autograd, torch.optim; the same
settings, the same threads) and the ratio esg / PyTorch.  The cases are
class_model runs, whose passes are the whole model on both sides (for layer
objectives esg cuts the graph after the layer and so does less than a
hook-based loop: that ratio would flatter it).
Writes bench/explain_results.md and prints it.

Usage: bench/explain_bench.py [--threads N] [--steps N] [--out FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
import ref_explain as R  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(ROOT, BUILD, "bin")
WORK = os.path.join(ROOT, BUILD, "bench")


def esg(args, model, shape, target, steps, out):
    cmd = [os.path.join(BIN, "esg-explain"), "-m", model, "--method", "class_model", "--target", str(target),
           "--steps", str(steps), "--shape", ",".join(map(str, shape)), "--threads", str(args.threads),
           "-o", out]
    subprocess.run(cmd, check=True)
    ts, meta = R.read_stream(out)[0]
    return ts, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "explain_results.md"))
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    torch.set_num_threads(args.threads)
    unet = os.path.join(ROOT, "share", "models", "unet3d.pt")
    wrapped = os.path.join(WORK, "unet3d-argmax.pt")
    subprocess.run([os.path.join(BIN, "esg-wrap"), "-m", unet, "--reduce", "argmax", "-o", wrapped], check=True)
    cases = [("classifier2d.pt", os.path.join(ROOT, "share", "models", "classifier2d.pt"), [1, 1, 64, 64], 1),
             ("unet3d.pt + esg-wrap argmax", wrapped, [1, 1, 32, 32, 32], 1)]
    rows = []
    for name, model, shape, target in cases:
        out = os.path.join(WORK, "explain.st.zst")
        ts, meta = esg(args, model, shape, target, args.steps, out)
        calls = json.loads(meta["esg.model_calls"])
        n_calls = sum(c["count"] for c in calls)
        t_esg = float(meta["esg.seconds"])
        net = torch.jit.load(model)
        s = R.settings("class_model", {}, None, shape, None, None, target, 0, args.steps)
        t0 = time.perf_counter()
        img, trace, _, _ = R.explain(net, None, s, None, shape)
        t_py = time.perf_counter() - t0
        same = float(np.abs(img - ts["image"]).max()) <= 1e-4 * float(img.max() - img.min())
        rows.append((name, "x".join(map(str, shape[2:])), args.steps, n_calls / args.steps, t_esg, t_py,
                     t_esg / t_py, same))
    lines = ["# esg-explain against plain PyTorch",
             "",
             "`make bench-explain` (bench/explain_bench.py): class_model, %d steps, %d threads, "
             "the same image on both sides (checked)." % (args.steps, args.threads),
             "",
             "| model | input | steps | model calls per step | esg-explain s | PyTorch s | ratio | same image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %d | %.3f | %.3f | %.3f | %.3f | %s |" % r)
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
