#!/usr/bin/env python3
"""make bench-local: receptive-field-local occlusion (--param local=auto)
against the whole-volume evaluation (local=off) on the shipped U-Net wrapped
--reduce fixed-mask, at 256x256x128 (a phantom from share/demo/phantom.py
cut to that size), 16^3 windows, 2 threads, --memory 4G.

The full run has 16 x 16 x 8 = 2048 windows: hours with local=off on 2
cores.  So each mode runs on a subset of the windows and the table gives
the time per window (esg.seconds minus the fixed part, over the windows):

  off    sliding_window_shapes=16, strides=240,240,112: the 8 corner
         windows.  Every window costs one whole-volume pass whatever its
         place, so 8 windows give the per-window cost; fixed part: the
         unperturbed pass (one pass's time, measured from the run itself).
  auto   strides=48,48,56: 6 x 6 x 3 = 108 windows spread over the volume
         (border and interior crops in about the proportions of the full
         run: mean crop 96 x 96 x 90 voxels, full run 100 x 100 x 88);
         the probes (the receptive-field search: about 7 whole-volume
         passes) are counted in, spread over these 108 windows only, so
         the time per window is an upper bound.
  exact  the 8 corner windows with local=auto against local=off:
         max |diff| / max |attr|.

The speed-up is per window; the full run's estimate is 2049 passes for off
and 2048 times auto's (upper-bound) time per window.  Writes bench/local.md and prints it.

Usage: bench/local_speedup.py [--threads N] [--out FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
import safetensors_ref  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(ROOT, BUILD, "bin")
PY = os.environ.get("PYTHON", "/usr/bin/python3")
WORK = os.path.join(ROOT, BUILD, "bench")
SIZE = (256, 256, 128)
FULL_WINDOWS = 16 * 16 * 8


def prepare():
    os.makedirs(WORK, exist_ok=True)
    npy = os.path.join(WORK, "phantom256.npy")
    if not os.path.exists(npy):
        subprocess.run([PY, os.path.join(ROOT, "share/demo/phantom.py"), "--seed", "1000", "--size", "256",
                        "--out-image", npy], check=True)
    cut = os.path.join(WORK, "phantom256x256x128.npy")
    np.save(cut, np.load(npy)[:SIZE[0], :SIZE[1], :SIZE[2]].astype(np.float32))
    st = os.path.join(WORK, "phantom256x256x128.st.zst")
    subprocess.run([os.path.join(BIN, "esg-load"), "--layout", "DHW", "--normalise", "zscore", cut, "-o", st],
                   check=True)
    model = os.path.join(WORK, "unet3d-fixed-256x256x128.pt")
    subprocess.run([os.path.join(BIN, "esg-wrap"), "-m", os.path.join(ROOT, "share/models/unet3d.pt"),
                    "--reduce", "fixed-mask", "--input", st, "--memory", "4G", "-o", model], check=True)
    return model, st


def attr(model, st, out, local, strides, threads, window="16"):
    cmd = ["/usr/bin/time", "-f", "%e %M", os.path.join(BIN, "esg-attr"), "-m", model, "--method", "occlusion",
           "--threads", str(threads), "--memory", "4G", "--param", "sliding_window_shapes=" + window,
           "--param", "strides=" + strides, "--param", "local=" + local, "-o", out, st]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit("esg-attr failed: " + p.stderr[-500:])
    wall, rss = p.stderr.strip().splitlines()[-1].split()
    rec = safetensors_ref.read_stream(out)[0]
    meta = rec[0]
    return {"seconds": float(meta["esg.seconds"]), "wall": float(wall), "rss_mb": int(rss) / 1024,
            "local": meta.get("esg.local", ""), "calls": json.loads(meta.get("esg.model_calls", "[]")),
            "evaluations": int(meta.get("esg.evaluations", "0")),
            "attr": [t[3] for t in rec[1] if t[0] == "attribution"][0]}


def windows(strides, window=16):
    n = 1
    for d, s in zip(SIZE, strides):
        n *= -(-(d - window) // s) + 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "local.md"))
    args = ap.parse_args()
    t0 = time.time()
    model, st = prepare()
    out = os.path.join(WORK, "local.st.zst")
    corner = "240,240,112"
    spread = "48,48,56"
    off = attr(model, st, out, "off", corner, args.threads)
    on_corner = attr(model, st, out, "auto", corner, args.threads)
    on = attr(model, st, out, "auto", spread, args.threads)
    k_off, k_on = windows((240, 240, 112)), windows((48, 48, 56))
    t_pass = off["seconds"] / (k_off + 1)                 # whole-volume pass, batched as the run did
    per_off = t_pass
    per_on = on["seconds"] / k_on
    diff = float(np.abs(on_corner["attr"].astype(np.float64) - off["attr"]).max())
    scale = float(np.abs(off["attr"]).max())
    full_off = (FULL_WINDOWS + 1) * t_pass
    full_on = FULL_WINDOWS * per_on
    rows = [
        ("off", corner, k_off, "%.1f" % off["seconds"], "%.2f" % per_off, "%.0f" % off["rss_mb"], off["local"]),
        ("auto", corner, k_off, "%.1f" % on_corner["seconds"], "-", "%.0f" % on_corner["rss_mb"],
         on_corner["local"]),
        ("auto", spread, k_on, "%.1f" % on["seconds"], "%.2f" % per_on, "%.0f" % on["rss_mb"], on["local"]),
    ]
    with open(args.out, "w") as f:
        f.write("# Receptive-field-local occlusion\n\n`make bench-local` (bench/local_speedup.py) on %s, "
                "%d threads, %s.  Shipped U-Net wrapped --reduce fixed-mask, phantom cut to %dx%dx%d, "
                "16^3 windows, --memory 4G; the method's time is esg.seconds.\n\n"
                % (os.uname().nodename, args.threads, time.strftime("%Y-%m-%d %H:%M"), *SIZE))
        f.write("| local | strides | windows | total s | s per window | peak RSS MB | esg.local |\n"
                "|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write("| " + " | ".join(str(c) for c in r) + " |\n")
        f.write("\nPer window (auto: probes included): off %.2f s, auto %.2f s: **%.1fx**.  Full run (%d windows) estimated: off "
                "%.0f s, auto %.0f s: **%.1fx**.  Exactness on the 8 corner windows: max|diff| %.3g of "
                "max|attr| %.3g (%.1e).\n\nBench wall time: %.0f s\n"
                % (per_off, per_on, per_off / per_on, FULL_WINDOWS, full_off, full_on,
                   full_off / full_on, diff, scale, diff / scale, time.time() - t0))
    print(open(args.out).read())


if __name__ == "__main__":
    main()
