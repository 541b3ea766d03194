#!/usr/bin/env python3
"""make bench-large: esg-attr at the use case's size, with default flags.

A full-size TOF-MRA-like phantom (share/demo/phantom.py --shape 480,640,163,
seed 1000: vessels down to one voxel across) and the Colin27 brain
(/usr/share/mricron/templates/ch2.nii.gz, Debian's mricron-data), each
loaded with `esg-load --normalise zscore --multiple 4` and the shipped 3D
U-Net wrapped with `esg-wrap --reduce fixed-mask --input IMAGE`.  On each,
with --threads 2 and the default memory / batch flags (--memory: 80% of
MemAvailable, --internal-batch auto):

  saliency               esg-attr --method saliency
  integrated_gradients   --param n_steps=8 (the default 50 takes hours here)
  deeplift               esg-attr --method deeplift
  layer_gradcam          --layer model.dec1 (the last decoder block)
  occlusion              --param local=auto (the default), 64^3 windows,
                         stride 64 (--window / --stride; --quick: 32),
                         about 13 min at full size (see WINDOW below)
  nifti                  the saliency map as NIfTI the way the pipeline
                         writes its maps/: esg-render --nifti OUT --tensor
                         attribution (needs saliency's stream: --only nifti
                         runs saliency too)

Every run goes under `/usr/bin/time -v` (wall time, peak RSS = "Maximum
resident set size"); from the output stream's metadata: esg.internal_batch,
esg.model_calls (the chosen batches), esg.tiles, esg.patch, esg.local,
esg.passes, esg.seconds.  A run that fails is a row with its exit status and
the last line of its stderr (budget refusals, OOM kills); the bench goes on.
The phantom, the image streams and the wrapped models are kept in the work
directory and reused when present (named by shape).

--every-method runs every gradient and layer method that `esg-attr
--list-methods` lists instead (all but the perturbation family), with the
default flags and parameters but n_steps=8 for the integral methods (the
default 50 takes ~6x as long, in batches of the same size); layer methods at
--layer model.dec1 (the excitation backprops: at the input, their default).
With --skip-phantom it is the issue's Colin27 check: every one completes
within the default budget.

Writes bench/large.md (--quick: WORKDIR/large-quick.md) and prints it.
Exit status: 0 unless the bench itself breaks (a method's failure is a row);
1 when a volume could not be prepared (phantom, esg-load, esg-wrap), after
writing the report.

Usage: bench/large.py [--shape X,Y,Z] [--only METHOD[,METHOD...]] [--skip-colin] [--skip-phantom]
                      [--every-method]
                      [--workdir DIR] [--quick] [--window N] [--stride N]
                      [--phantom FILE] [--out FILE]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
import safetensors_ref  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(ROOT, BUILD, "bin")
PY = os.environ.get("PYTHON", "/usr/bin/python3")
THREADS = 2
SEED = 1000
FULL_SHAPE = "480,640,163"
QUICK_SHAPE = "96,128,40"
COLIN = "/usr/share/mricron/templates/ch2.nii.gz"
LAYER = "model.dec1"
# occlusion: a window whose full-size run (local=auto) stays under ~15 min on
# 2 cores.  Measured at 192x256x100 (--memory 4G, a loaded machine): 9
# whole-volume evaluations (probes, unperturbed) 17 s, then 1.85 s per 64^3
# window (mean crop 97x101x89 voxels), 2.3 s per 96^3 window (121x129x100).
# At 480x640x164: 8x10x3 = 240 windows, mean crop 108x109x97, about 2.4 s
# each, plus ~175 s of whole-volume evaluations: ~13 min (96^3: 70 windows,
# ~7.5 min).
WINDOW = 64
QUICK_WINDOW = 32      # --quick: the phantom is only 40 deep
METHODS = ["saliency", "integrated_gradients", "deeplift", "layer_gradcam", "occlusion", "nifti"]
META = ["esg.internal_batch", "esg.model_calls", "esg.tiles", "esg.patch", "esg.local", "esg.passes",
        "esg.seconds"]


PERTURBATION = ["occlusion", "feature_ablation", "feature_permutation", "shapley_value_sampling", "rise",
                "extremal_perturbation", "lime", "kernel_shap"]
LISTED = {}   # --every-method: name -> (takes --layer, has n_steps), from esg-attr --list-methods


def list_methods():
    """The gradient and layer methods esg-attr lists, with what they take."""
    text = subprocess.run([os.path.join(BIN, "esg-attr"), "--list-methods"], capture_output=True, text=True,
                          check=True).stdout
    name = None
    for line in text.split("\n"):
        if line.startswith("aliases:"):
            break
        if line and not line.startswith(" "):
            name = line.split()[0]
            if name not in PERTURBATION:
                LISTED[name] = ["(--layer)" in line, False]
        elif name in LISTED and line.strip().startswith("n_steps="):
            LISTED[name][1] = True
    return list(LISTED)


def method_args(name, window, stride):
    """esg-attr arguments past the common ones, and the table's note."""
    if name in LISTED:
        layer, steps = LISTED[name]
        args = (["--layer", LAYER] if layer else []) + (["--param", "n_steps=8"] if steps else [])
        return args, " ".join(args).replace("--param ", "")
    if name == "integrated_gradients":
        return ["--param", "n_steps=8"], "n_steps=8"
    if name == "layer_gradcam":
        return ["--layer", LAYER], "--layer " + LAYER
    if name == "occlusion":
        return (["--param", "sliding_window_shapes=%d" % window, "--param", "strides=%d" % stride],
                "window %d^3, stride %d, local=auto" % (window, stride))
    return [], ""


def timed(cmd, log):
    """Run cmd under /usr/bin/time -v; its exit status, wall s, peak RSS MiB, last stderr line."""
    tfile = log + ".time"
    with open(log, "w") as err:
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tfile] + cmd, stdout=subprocess.DEVNULL, stderr=err)
    wall, rss, status = None, None, p.returncode
    with open(tfile) as f:
        for line in f:
            line = line.strip()
            if line.startswith("Elapsed (wall clock)"):
                t = line.rsplit(" ", 1)[1].split(":")
                wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(t)))
            elif line.startswith("Maximum resident set size"):
                rss = int(line.rsplit(" ", 1)[1]) / 1024
            elif line.startswith("Command terminated by signal"):
                status = "signal " + line.rsplit(" ", 1)[1]
    lines = [l.strip() for l in open(log, errors="replace") if l.strip()]
    return {"status": status, "wall": wall, "rss": rss, "last": lines[-1] if lines else ""}


def prep(label, cmd, out, log, steps):
    """Make out with cmd unless it exists; record the step (reused or timed)."""
    if os.path.exists(out):
        steps.append((label, {"status": "reused"}))
        return True
    r = timed(cmd, log)
    steps.append((label, r))
    if r["status"] != 0:
        print("%s failed (%s): %s" % (label, r["status"], r["last"]), file=sys.stderr)
        return False
    return True


def prepare(name, source, work, steps):
    """Image stream and wrapped model of one volume: (stream, model) or None."""
    st = os.path.join(work, name + ".st.zst")
    model = os.path.join(work, name + "-unet3d-fixed.pt")
    if not prep("esg-load", [os.path.join(BIN, "esg-load"), "--normalise", "zscore", "--multiple", "4", source,
                             "-o", st], st, os.path.join(work, name + ".load.log"), steps):
        return None
    if not prep("esg-wrap", [os.path.join(BIN, "esg-wrap"), "-m", os.path.join(ROOT, "share/models/unet3d.pt"),
                             "--reduce", "fixed-mask", "--input", st, "--threads", str(THREADS), "-o", model],
                model, os.path.join(work, name + ".wrap.log"), steps):
        return None
    return st, model


def make_phantom(generator, shape, nii, steps):
    """The phantom's NIfTI file, reused when there; whether it is there."""
    if os.path.exists(nii):
        steps.append(("phantom.py", {"status": "reused"}))
        return True
    tmp = nii.replace(".nii.gz", ".tmp.nii.gz")
    r = timed([PY, generator, "--seed", str(SEED), "--shape", shape, "--out-image", tmp],
              nii.replace(".nii.gz", ".phantom.log"))
    steps.append(("phantom.py", r))
    if r["status"] != 0:
        print("phantom.py failed (%s): %s" % (r["status"], r["last"]), file=sys.stderr)
        return False
    os.replace(tmp, nii)
    return True


def read_meta(path):
    meta, tensors = safetensors_ref.read_stream(path)[0]
    image = [t for t in tensors if t[0] == "image"]
    shape = list(image[0][3].shape) if image else []
    return meta, shape


def calls(s):
    """esg.model_calls as 'count x batch' (g: with autograd)."""
    try:
        return ", ".join("%d\u00d7%d%s" % (c["count"], c["batch"], "g" if c["grad"] else "")
                         for c in json.loads(s))
    except (ValueError, KeyError, TypeError):
        return s


def run_volume(name, st, model, methods, work, window, stride):
    rows = []
    sal = os.path.join(work, name + "-saliency.st.zst")
    for m in methods:
        log = os.path.join(work, "%s-%s.log" % (name, m))
        if m == "nifti":
            out = os.path.join(work, name + "-saliency.nii.gz")
            if os.path.exists(out):
                os.remove(out)
            cmd = [os.path.join(BIN, "esg-render"), "--nifti", out, "--tensor", "attribution", sal]
            note = "esg-render --nifti of saliency (as pipelines' maps/)"
        else:
            out = sal if m == "saliency" else os.path.join(work, "%s-%s.st.zst" % (name, m))
            extra, note = method_args(m, window, stride)
            cmd = [os.path.join(BIN, "esg-attr"), "-m", model, "--method", m, "--threads", str(THREADS)] + \
                extra + ["-o", out, st]
        if os.path.exists(out):
            os.remove(out)
        print("[%s] %s %s ..." % (time.strftime("%H:%M:%S"), name, m), file=sys.stderr, flush=True)
        budget = None if os.environ.get("ESG_MEMORY") else 0.8 * meminfo()["MemAvailable"] * 1024
        r = timed(cmd, log)
        r["budget"] = budget
        r.update(method=m, note=note, meta={})
        if r["status"] == 0 and m != "nifti":
            r["meta"], _ = read_meta(out)
        elif r["status"] == 0:
            r["meta"] = {"size": "%.0f MB" % (os.path.getsize(out) / 1e6)}
        rows.append(r)
    return rows


def fmt(x, f):
    return "-" if x is None else f % x


def table(rows):
    s = ("| method | flags | exit | wall s | peak RSS MiB | budget MiB | esg.seconds | internal_batch | model calls "
         "(count\u00d7batch, g: autograd) | passes | tiles | patch | local |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        mt = r["meta"]
        note = r["note"]
        if r["status"] != 0:
            note = (note + "; " if note else "") + "**failed**: " + r["last"].replace("|", "\\|")
        elif r["method"] == "nifti":
            note += "; " + mt["size"]
        esg_s = mt.get("esg.seconds")
        s += "| %s |\n" % " | ".join([
            r["method"], note or "default", str(r["status"]), fmt(r["wall"], "%.1f"), fmt(r["rss"], "%.0f"),
            fmt(r.get("budget"), "%.0f"), fmt(float(esg_s) if esg_s else None, "%.1f"), mt.get("esg.internal_batch", "-"),
            calls(mt["esg.model_calls"]) if "esg.model_calls" in mt else "-", mt.get("esg.passes", "-"),
            mt.get("esg.tiles", "-"), mt.get("esg.patch", "-"), mt.get("esg.local", "-").replace("|", "\\|")])
    return s


def prep_line(steps):
    out = []
    for label, r in steps:
        if r["status"] == "reused":
            out.append("%s reused" % label)
        else:
            out.append("%s %s s, %s MiB%s" % (label, fmt(r["wall"], "%.1f"), fmt(r["rss"], "%.0f"),
                                           "" if r["status"] == 0 else " (exit %s: %s)" % (r["status"], r["last"])))
    return "; ".join(out)


def voxels(shape):
    n = 1
    for d in shape[2:]:
        n *= d
    return n


def meminfo():
    m = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            m[k] = int(v.split()[0]) / 1024 ** 2
    return m


def main():
    ap = argparse.ArgumentParser(description="esg-attr at the use case's size (make bench-large)")
    ap.add_argument("--shape", default=None, help="phantom X,Y,Z (default %s; --quick: %s)" % (FULL_SHAPE, QUICK_SHAPE))
    ap.add_argument("--only", default="", help="methods, comma-separated (of %s)" % ",".join(METHODS))
    ap.add_argument("--skip-colin", action="store_true", help="no Colin27 rows")
    ap.add_argument("--skip-phantom", action="store_true", help="no phantom rows (Colin27 alone)")
    ap.add_argument("--every-method", action="store_true",
                    help="every gradient and layer method (n_steps=8) instead of the six")
    ap.add_argument("--workdir", default=os.path.join(ROOT, BUILD, "bench-large"))
    ap.add_argument("--quick", action="store_true",
                    help="phantom %s, no Colin27, results in WORKDIR/large-quick.md" % QUICK_SHAPE)
    ap.add_argument("--window", type=int, default=None,
                    help="occlusion window edge (default %d; --quick: %d)" % (WINDOW, QUICK_WINDOW))
    ap.add_argument("--stride", type=int, default=None, help="occlusion stride (default: the window's edge)")
    ap.add_argument("--phantom", default=os.path.join(ROOT, "share/demo/phantom.py"), help="phantom generator")
    ap.add_argument("--out", default=None, help="results file (default bench/large.md)")
    args = ap.parse_args()
    shape = args.shape or (QUICK_SHAPE if args.quick else FULL_SHAPE)
    window = args.window or (QUICK_WINDOW if args.quick else WINDOW)
    stride = args.stride or window
    if not re.fullmatch(r"\d+,\d+,\d+", shape):
        ap.error("--shape: X,Y,Z expected, not %r" % shape)
    known = list_methods() if args.every_method else METHODS
    methods = known
    if args.only:
        methods = [m.strip() for m in args.only.split(",") if m.strip()]
        bad = [m for m in methods if m not in known]
        if bad:
            ap.error("--only: unknown %s (methods: %s)" % (", ".join(bad), ",".join(known)))
        if "nifti" in methods and "saliency" not in methods:
            methods.insert(methods.index("nifti"), "saliency")
    out_md = args.out or (os.path.join(args.workdir, "large-quick.md") if args.quick
                          else os.path.join(ROOT, "bench", "large.md"))
    work = args.workdir
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    mem = meminfo()
    dims = "x".join(shape.split(","))
    volumes = []
    pname = "phantom-" + dims
    nii = os.path.join(work, pname + ".nii.gz")
    notes = []
    if args.skip_phantom:
        notes.append("Phantom: skipped (--skip-phantom).")
    else:
        steps = []
        prepared = prepare(pname, nii, work, steps) if make_phantom(args.phantom, shape, nii, steps) else None
        volumes.append(("Phantom %s (seed %d)" % (dims, SEED), pname, prepared, steps))
    if args.quick or args.skip_colin:
        notes.append("Colin27: skipped (%s)." % ("--quick" if args.quick else "--skip-colin"))
    elif not os.path.exists(COLIN):
        notes.append("Colin27: skipped, %s is absent (apt-get install mricron-data)." % COLIN)
    else:
        steps = []
        volumes.append(("Colin27 (ch2.nii.gz)", "colin27", prepare("colin27", COLIN, work, steps), steps))
    text = ("# esg-attr on large volumes\n\n`make bench-large` (bench/large.py%s) on %s, %s: %d CPUs, MemTotal %.1f GiB "
            "(MemAvailable %.1f GiB at start), `--threads %d`, default memory / batch flags (--memory default: 80%% "
            "of MemAvailable; --internal-batch auto).  Shipped 3D U-Net (share/models/unet3d.pt) wrapped "
            "`esg-wrap --reduce fixed-mask --input IMAGE`; images `esg-load --normalise zscore --multiple 4`.  "
            "wall s and peak RSS: `/usr/bin/time -v` of the whole process; budget: the default, 80%% of MemAvailable just before the run; esg.seconds: the method alone "
            "(after the model is loaded).\n"
            % (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "", os.uname().nodename,
               time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), mem["MemTotal"], mem["MemAvailable"], THREADS))
    if os.environ.get("ESG_MEMORY"):
        text += ("\n**ESG_MEMORY=%s was set in the environment: it replaces the default budget of every run.**\n"
                 % os.environ["ESG_MEMORY"])
    for title, name, prepared, steps in volumes:
        text += "\n## %s\n\n" % title
        if prepared is None:
            text += "Not prepared: %s\n" % prep_line(steps)
            continue
        st, model = prepared
        _, shp = read_meta(st)
        text += "Input %s (%.1f M voxels).  Preparation: %s.\n\n" % (
            "\u00d7".join(str(d) for d in shp), voxels(shp) / 1e6, prep_line(steps))
        rows = run_volume(name, st, model, methods, work, window, stride)
        text += table(rows)
    for n in notes:
        text += "\n" + n + "\n"
    text += "\nBench wall time: %.0f s\n" % (time.time() - t0)
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
    with open(out_md, "w") as f:
        f.write(text)
    print(text)
    if any(prepared is None for _, _, prepared, _ in volumes):
        sys.exit("bench/large.py: a volume could not be prepared (see above); its methods did not run")


if __name__ == "__main__":
    main()
