#!/usr/bin/env python3
"""make bench: cost of every esg-attr method on the shipped models.

Per (model, input, method): model evaluations the method used, the model
calls esg-attr made (esg.model_calls: autograd or not, batch size, count),
the time of those same calls in plain PyTorch with the same thread count
(bench/pass_time.py), the method's own time (esg.seconds: after the model is
loaded, excluding process start-up), the overhead ratio total / PyTorch, the
process wall time and its peak RSS (GNU time).
Writes bench/results.md and prints it.

Usage: bench/run_bench.py [--quick] [--only SUBSTRING] [--methods gradient|M,M...] [--no-2d]
                          [--threads N] [--out FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
import safetensors_ref  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(ROOT, BUILD, "bin")
PY = os.environ.get("PYTHON", "/usr/bin/python3")
WORK = os.path.join(ROOT, BUILD, "bench")

# (method, extra arguments, kind): kind is the passes that dominate (grad:
# forward+backward, fwd: forward only), for reading the table; the ratio uses
# the calls esg-attr recorded.  LAYER is replaced by the case's layer.
# A method whose run takes less than this is run three times: the median.
REPEAT_BELOW = 10.0

GRADIENT = [
    ("saliency", [], "grad"),
    ("input_x_gradient", [], "grad"),
    ("integrated_gradients", ["--param", "n_steps=50"], "grad"),
    ("noise_tunnel", ["--param", "base=saliency", "--param", "nt_samples=8", "--param", "stdevs=0.2"], "grad"),
    ("gradient_shap", ["--param", "n_samples=8", "--baseline", "zero", "--baseline", "blur:2"], "grad"),
    ("guided_backprop", [], "grad"),
    ("deconvolution", [], "grad"),
    ("deeplift", [], "grad"),
    ("deeplift_shap", ["--baseline", "zero", "--baseline", "blur:2"], "grad"),
    ("lrp", [], "grad"),
]
LAYER = [
    ("layer_activation", ["--layer", "LAYER"], "fwd"),
    ("layer_gradient_x_activation", ["--layer", "LAYER"], "grad"),
    ("layer_gradcam", ["--layer", "LAYER"], "grad"),
    ("gradcam_pp", ["--layer", "LAYER"], "grad"),
    ("guided_gradcam", ["--layer", "LAYER"], "grad"),
    ("score_cam", ["--layer", "LAYER"], "fwd"),
    ("layer_conductance", ["--layer", "LAYER", "--param", "n_steps=16"], "grad"),
    ("internal_influence", ["--layer", "LAYER", "--param", "n_steps=16"], "grad"),
    ("layer_integrated_gradients", ["--layer", "LAYER", "--param", "n_steps=16"], "grad"),
    ("layer_deeplift", ["--layer", "LAYER"], "grad"),
    ("layer_deeplift_shap", ["--layer", "LAYER", "--baseline", "zero", "--baseline", "blur:2"], "grad"),
    ("layer_gradient_shap", ["--layer", "LAYER", "--param", "n_samples=8", "--baseline", "zero",
                             "--baseline", "blur:2"], "grad"),
    ("linear_approx", ["--layer", "LAYER"], "grad"),
    ("layer_guided_backprop", ["--layer", "LAYER"], "grad"),
    ("excitation_backprop", ["--layer", "LAYER"], "grad"),
    ("contrastive_excitation_backprop", ["--layer", "LAYER"], "grad"),
    ("layer_lrp", ["--layer", "LAYER"], "grad"),
]
PERTURB_3D = [
    ("occlusion", ["--param", "sliding_window_shapes=1,8,8,8", "--param", "strides=1,8,8,8"], "fwd"),
    ("feature_ablation", ["--param", "feature_mask=grid:16"], "fwd"),
    ("shapley_value_sampling", ["--param", "feature_mask=grid:16", "--param", "n_samples=2"], "fwd"),
    ("rise", ["--param", "n_masks=128"], "fwd"),
    ("lime", ["--param", "feature_mask=grid:16", "--param", "n_samples=128"], "fwd"),
    ("kernel_shap", ["--param", "feature_mask=grid:16", "--param", "n_samples=128"], "fwd"),
]
PERTURB_2D = [
    ("occlusion", ["--param", "sliding_window_shapes=1,8,8", "--param", "strides=1,4,4"], "fwd"),
    ("feature_ablation", ["--param", "feature_mask=grid:4"], "fwd"),
    ("feature_permutation", ["--param", "feature_mask=grid:4"], "fwd"),
    ("shapley_value_sampling", ["--param", "feature_mask=grid:8", "--param", "n_samples=8"], "fwd"),
    ("rise", ["--param", "n_masks=1000"], "fwd"),
    ("extremal_perturbation", ["--param", "max_iter=100"], "grad"),
    ("lime", ["--param", "feature_mask=slic:64", "--param", "n_samples=200"], "fwd"),
    ("kernel_shap", ["--param", "feature_mask=slic:64", "--param", "n_samples=200"], "fwd"),
]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def methods_available():
    out = subprocess.run([os.path.join(BIN, "esg-attr"), "--list-methods"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()}


def prepare(quick):
    """Inputs and wrapped models: the U-Net at 64^3 (and 96^3), the 2D classifier."""
    os.makedirs(WORK, exist_ok=True)
    cases = []
    sizes = [64] if quick else [64, 96]
    for size in sizes:
        img = os.path.join(WORK, "phantom%d.nii.gz" % size)
        if not os.path.exists(img):
            run([PY, os.path.join(ROOT, "share/demo/phantom.py"), "--seed", "1000", "--size", str(size),
                 "--out-image", img, "--out-mask", os.path.join(WORK, "vessels%d.nii.gz" % size)])
        st = os.path.join(WORK, "phantom%d.st.zst" % size)
        run([os.path.join(BIN, "esg-load"), "--normalise", "zscore", img, "-o", st])
        model = os.path.join(WORK, "unet3d-fixed-%d.pt" % size)
        run([os.path.join(BIN, "esg-wrap"), "-m", os.path.join(ROOT, "share/models/unet3d.pt"),
             "--reduce", "fixed-mask", "--input", st, "-o", model])
        methods = GRADIENT + LAYER + (PERTURB_3D if size == 64 else [])
        cases.append(("unet3d fixed-mask", "1x1x%d^3" % size, model, st, "1,1,%d,%d,%d" % ((size,) * 3), 1,
                      "model.dec2", methods))
    png = os.path.join(ROOT, "share/data/angio2d_20001_aneurysm.png")
    st = os.path.join(WORK, "angio2d.st.zst")
    run([os.path.join(BIN, "esg-load"), "--channels", "gray", "--normalise", "zscore", png, "-o", st])
    cases.append(("classifier2d", "1x1x64^2", os.path.join(ROOT, "share/models/classifier2d.pt"), st,
                  "1,1,64,64", 1, "conv4", GRADIENT + LAYER + PERTURB_2D))
    return cases


class PassTimes:
    """Plain-PyTorch time of each (autograd?, batch) call, measured once per model."""

    def __init__(self, model, shape, threads):
        self.model, self.shape, self.threads, self.t = model, shape, threads, {}

    def get(self, calls):
        want = sorted({("g" if c["grad"] else "f") + str(c["batch"]) for c in calls} - set(self.t))
        if want:
            out = subprocess.run([PY, os.path.join(ROOT, "bench/pass_time.py"), self.model, self.shape,
                                  str(self.threads)] + want, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                k, v = line.split()
                self.t[k] = float(v)
        return sum(c["count"] * self.t[("g" if c["grad"] else "f") + str(c["batch"])] for c in calls)


def call_str(c):
    """A model call of esg.model_calls as BATCHxCOUNT with g (forward+backward) or f (forward)."""
    return "%s%dx%d" % ("g" if c["grad"] else "f", c["batch"], c["count"])


def replay_time(model, shape, threads, calls, seconds):
    """The calls made once each in a fresh PyTorch process; the median of three
    processes when esg-attr took under REPEAT_BELOW seconds."""
    args = [PY, os.path.join(ROOT, "bench/pass_time.py"), "--replay", model, shape, str(threads)] + [
        call_str(c) for c in calls]
    times = sorted(float(subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()[1])
                   for _ in range(3 if seconds < REPEAT_BELOW else 1))
    return times[len(times) // 2]


def measure_median(model, st, method, extra, target, threads, env=None):
    """measure(), repeated twice more when a run takes under REPEAT_BELOW seconds: the
    median total (as the PyTorch reference is a median), the largest peak RSS."""
    res, err = measure(model, st, method, extra, target, threads, env)
    if res is None or res["seconds"] >= REPEAT_BELOW:
        return res, err
    runs = [res]
    for _ in range(2):
        r, err = measure(model, st, method, extra, target, threads, env)
        if r is None:
            return r, err
        runs.append(r)
    runs.sort(key=lambda r: r["seconds"])
    med = dict(runs[1])
    med["rss_mb"] = max(r["rss_mb"] for r in runs)
    return med, None


def measure(model, st, method, extra, target, threads, env=None):
    out = os.path.join(WORK, "out.st.zst")
    cmd = ["/usr/bin/time", "-f", "%e %M", os.path.join(BIN, "esg-attr"), "-m", model, "--method", method,
           "--threads", str(threads), "--seed", "1", "-o", out, st] + extra
    if target is not None:
        cmd += ["--target", str(target)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if p.returncode != 0:
        # the tool's one-line error (GNU time's own line comes after it)
        errs = [l for l in p.stderr.splitlines() if ": error: " in l]
        return None, errs[0].split(": error: ", 1)[1] if errs else "exit %d" % p.returncode
    wall, rss_kb = p.stderr.strip().splitlines()[-1].split()
    meta = safetensors_ref.read_stream(out)[0][0]
    return {"evaluations": int(meta.get("esg.evaluations", meta.get("esg.passes", "0"))),
            "model_calls": json.loads(meta.get("esg.model_calls", "[]")),
            "calls": int(meta.get("esg.passes", "0")),
            "seconds": float(meta["esg.seconds"]), "wall": float(wall), "rss_mb": int(rss_kb) / 1024}, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="64^3 only")
    ap.add_argument("--only", default="", help="methods containing this")
    ap.add_argument("--methods", default="", help="comma-separated method names (\"gradient\": the gradient family)")
    ap.add_argument("--no-2d", action="store_true", help="skip the 2D classifier")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"), help="the results table")
    args = ap.parse_args()
    have = methods_available()
    wanted = {m for m, _, _ in GRADIENT} if args.methods == "gradient" else set(filter(None, args.methods.split(",")))
    cases = prepare(args.quick)
    if args.no_2d:
        cases = [c for c in cases if c[0] != "classifier2d"]
    rows = []
    passes = []
    detail = []
    t_start = time.time()
    for name, size, model, st, shape, target, layer, methods in cases:
        times = PassTimes(model, shape, args.threads)
        times.get([{"grad": g, "batch": b, "count": 1} for g in (True, False) for b in (1, 8)])
        passes.append((name, size, times.t["g1"], times.t["g8"] / 8, times.t["f1"], times.t["f8"] / 8))
        print("# %s %s: PyTorch fwd+bwd %.3f s (batch 1) %.3f s/item (batch 8), fwd %.3f s / %.3f s/item"
              % passes[-1], flush=True)
        for method, extra, kind in methods:
            if method not in have or args.only not in method or (wanted and method not in wanted):
                continue
            extra = [layer if a == "LAYER" else a for a in extra]
            res, err = measure_median(model, st, method, extra, target, args.threads)
            if res is None:
                rows.append((name, size, method, " ".join(extra), "-", "-", "-", "-", "-", "-", "error: " + err))
                continue
            ref = times.get(res["model_calls"])
            ratio = res["seconds"] / ref if ref else float("nan")
            batches = " ".join(call_str(c) for c in res["model_calls"])
            rows.append((name, size, method, " ".join(extra), res["evaluations"], batches,
                         "%.2f" % ref, "%.2f" % res["seconds"], "%.2f" % ratio, "%.2f" % res["wall"],
                         "%.0f" % res["rss_mb"]))
            print("  %-22s evals %4d  calls %-14s pytorch %7.2f s  total %7.2f s  ratio %.2f  rss %5.0f MB" % (
                method, res["evaluations"], batches, ref, res["seconds"], ratio, res["rss_mb"]), flush=True)
            if (method, extra) in [(m, e) for m, e, _ in GRADIENT] and size == "1x1x64^3":
                # the same calls replayed in a fresh PyTorch process (cold, as esg-attr's are),
                # and esg-attr without the shim's block reuse (ESG_CPU_CACHE=0)
                fresh = replay_time(model, shape, args.threads, res["model_calls"], res["seconds"])
                off, err = measure_median(model, st, method, extra, target, args.threads, {"ESG_CPU_CACHE": "0"})
                if off:
                    detail.append((method, batches, "%.2f" % ref, "%.2f" % fresh, "%.2f" % res["seconds"],
                                   "%.2f" % ratio, "%.2f" % (res["seconds"] / fresh), "%.0f" % res["rss_mb"],
                                   "%.2f" % off["seconds"], "%.2f" % (off["seconds"] / ref),
                                   "%.0f" % off["rss_mb"]))
    # Memory is bounded by --internal-batch, not by n_steps.
    mem = []
    name, size, model, st, shape, target = cases[0][:6]
    for steps in (10, 50, 200):
        res, err = measure(model, st, "integrated_gradients", ["--param", "n_steps=%d" % steps,
                                                               "--internal-batch", "8"], target, args.threads)
        mem.append((steps, res["rss_mb"] if res else err))
    with open(args.out, "w") as f:
        f.write("# esg-attr benchmark\n\n`make bench` on %s, %d threads, %s.\n\n" % (
            os.uname().nodename, args.threads, time.strftime("%Y-%m-%d")))
        f.write("At the use case's size (a 480x640x163 phantom, Colin27; default flags): `make bench-large`, "
                "[bench/large.md](large.md).\n\n")
        f.write("One call in plain PyTorch (bench/pass_time.py, warm), seconds:\n\n"
                "| model | input | fwd+bwd, batch 1 | fwd+bwd per item, batch 8 | fwd, batch 1 | fwd per item, batch 8 |\n"
                "|---|---|---|---|---|---|\n")
        for p in passes:
            f.write("| %s | %s | %.3f | %.3f | %.3f | %.3f |\n" % p)
        f.write("\nevaluations = items the model evaluated; calls = the model calls esg-attr made "
                "(esg.model_calls: g = forward+backward, f = forward only, BATCHxCOUNT); "
                "pytorch = the same calls timed in plain PyTorch (warm, same threads); "
                "total = the method's time inside esg-attr (esg.seconds: model loaded, everything else "
                "included: building inputs, rule-rewritten graphs, accumulation, the first calls' "
                "executor warm-up; the median of three runs when under %.0f s); ratio = total / pytorch; "
                "wall = whole process incl. start-up and model load; RSS = peak resident memory.\n\n"
                % REPEAT_BELOW)
        f.write("| model | input | method | params | evaluations | calls | pytorch s | total s | ratio | wall s | peak RSS MB |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write("| " + " | ".join(str(c) for c in r) + " |\n")
        if detail:
            f.write("\nThe gradient methods on the U-Net at 64^3 in detail.  pytorch warm: as above (each call "
                    "timed warm); pytorch fresh: the same calls made once each in a fresh PyTorch process "
                    "(bench/pass_time.py --replay: its first calls pay the executor's profiling run, oneDNN's "
                    "primitive creation and first-touch page faults, as esg-attr's do); no reuse: esg-attr with "
                    "ESG_CPU_CACHE=0 (without the shim's reuse of large CPU blocks between passes, which the "
                    "PyTorch reference does not have either):\n\n"
                    "| method | calls | pytorch warm s | pytorch fresh s | total s | ratio warm | ratio fresh | "
                    "peak RSS MB | total s, no reuse | ratio warm, no reuse | peak RSS MB, no reuse |\n"
                    "|---|---|---|---|---|---|---|---|---|---|---|\n")
            for r in detail:
                f.write("| " + " | ".join(r) + " |\n")
        f.write("\nPeak RSS of integrated_gradients on %s %s at --internal-batch 8: %s\n" % (
            name, size, ", ".join("n_steps=%d: %s MB" % (s, "%.0f" % m if isinstance(m, float) else m)
                                  for s, m in mem)))
        f.write("\nBench wall time: %.0f s\n" % (time.time() - t_start))
    print(open(args.out).read())


if __name__ == "__main__":
    main()
