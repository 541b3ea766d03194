#!/usr/bin/python3
# needs: torch
"""Reference implementation of esg-explain's optimisation loop in plain
PyTorch (eager modules, a forward hook for the layer, autograd,
torch.optim.Adam / SGD), and a TAP driver that runs esg-explain on the
fixture models of tests/fixtures/make_explain_models.py and compares.

  ref_explain.py --bin BUILD/bin --fixtures DIR

Written from the method definitions (doc/explain.md, "Methods"), not from
the shim's C++: the layer is reached by a forward hook on the eager module
(the full model runs; esg cuts the graph after the layer), the optimiser is
torch.optim's own, the random draws replay the order written down in
lib/shim/explain.cpp (one torch.Generator seeded with --seed: the starting
noise, then per step the roll of each spatial axis and the flips).

Tolerance: |esg - ref| <= 1e-4 * (max(ref) - min(ref)) elementwise on the
final image, and the same relative to max|trace| on the objective's trace.

Also the fixture truths: feature_vis (pixels) of the oriented filter's
channel (2D) correlates with the filter's tiling (|r| >= 0.9, best phase),
feature_vis (fft, L2 decay) of the blob detector's centre unit (3D) with
the filter itself (|r| >= 0.9), invert of relu1 (which holds relu(x) in
channel 1) recovers IN with r >= 0.95.  (class_model's rising trace is
checked on the shipped classifier by tests/cli/explain.sh.)
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
sys.path.insert(0, HERE)
import make_explain_models as EM  # noqa: E402
from ref_layer import read_stream, write_stream  # noqa: E402

TOL = 1e-4
DEFAULTS = {
    "deepdream": dict(optimizer="sgd", lr=0.05, normalize_grad=True, octaves=1, octave_scale=1.4,
                      octave_blur=0.5, jitter=4, steps=20),
    "feature_vis": dict(optimizer="adam", lr=0.05, param="fft", decorrelate="auto", init_std=0.01,
                        pad=2, jitter=4, scale_min=0.95, scale_max=1.05, rotate="auto", flip="auto",
                        l2_decay=0.0, tv_weight=0.0, tv_beta=2.0, bound="auto", diversity=0.0, steps=256),
    "class_model": dict(optimizer="adam", lr=0.05, init="noise", init_std=0.01, l2_decay=0.001,
                        blur_every=4, blur_sigma=0.5, jitter=0, steps=200),
    "invert": dict(optimizer="adam", lr=0.05, init_std=0.01, alpha=6.0, alpha_weight=0.001,
                   tv_weight=0.01, tv_beta=2.0, bound="auto", steps=200),
}
COMMON = dict(schedule="constant", momentum=0.0, beta1=0.9, beta2=0.999, eps=1e-8,
              normalize_grad=False)


# ---- the pieces -----------------------------------------------------------------


def gauss_blur(x, sigma):
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-k * k / (2 * sigma * sigma))
    k = (k / k.sum()).float()
    C, nsp = x.shape[1], x.dim() - 2
    conv = F.conv2d if nsp == 2 else F.conv3d
    for a in range(nsp):
        shape = [C, 1] + [1] * nsp
        shape[2 + a] = 2 * r + 1
        pad = [0] * (2 * nsp)
        pad[2 * (nsp - 1 - a)] = r
        pad[2 * (nsp - 1 - a) + 1] = r
        x = conv(F.pad(x, pad, mode="replicate"), k.reshape(shape), groups=C)
    return x


def resize(x, size):
    if list(x.shape[2:]) == list(size):
        return x
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(x, size=list(size), mode=mode, align_corners=False)


COLOR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def decorrelate(x):
    M = COLOR / COLOR.norm(dim=0).max()
    return (x.permute(0, 2, 3, 1) @ M.t()).permute(0, 3, 1, 2)


def fft_scale(sizes):
    fs = [torch.fft.fftfreq(n, dtype=torch.float64) for n in sizes[:-1]]
    fs.append(torch.arange(sizes[-1] // 2 + 1, dtype=torch.float64) / sizes[-1])
    f2 = 0
    for d, f in enumerate(fs):
        shape = [1] * len(fs)
        shape[d] = len(f)
        f2 = f2 + (f * f).reshape(shape)
    sc = 1.0 / torch.clamp(torch.sqrt(f2), min=1.0 / max(sizes))
    return sc.float()[None, None, ..., None]


def regularisers(s, x):
    nsp = x.dim() - 2
    V = float(np.prod(x.shape[2:]))
    r = torch.zeros(())
    if s["l2_decay"] > 0:
        r = r + s["l2_decay"] * x.pow(2).sum()
    if s["alpha_weight"] > 0:
        r = r + s["alpha_weight"] * x.abs().pow(s["alpha"]).sum() / (V * s["bound"] ** s["alpha"])
    if s["tv_weight"] > 0:
        sq = 0
        for d in range(nsp):
            dd = x.narrow(2 + d, 1, x.shape[2 + d] - 1) - x.narrow(2 + d, 0, x.shape[2 + d] - 1)
            for e in range(nsp):
                if e != d:
                    dd = dd.narrow(2 + e, 0, x.shape[2 + e] - 1)
            sq = sq + dd * dd
        r = r + s["tv_weight"] * (sq + 1e-12).pow(s["tv_beta"] / 2).sum() / (V * (s["bound"] / 6.5) ** s["tv_beta"])
    return r


def settings(method, params, x, shape, channel, unit, target, seed, steps):
    s = dict(COMMON)
    s.update(DEFAULTS[method])
    for k, v in params.items():
        d = s.get(k)
        s[k] = type(d)(v) if isinstance(d, (int, float)) and not isinstance(d, bool) else v
        if isinstance(d, bool):
            s[k] = v in ("true", "1", "yes", True)
    if steps is not None:
        s["steps"] = steps
    nsp = len(shape) - 2
    s["method"] = method
    s["channel"], s["unit"], s["target"], s["seed"] = channel, unit, target, seed
    if s.get("rotate") == "auto":
        s["rotate"] = 10.0 if nsp == 2 else 0.0
    s["rotate"] = float(s.get("rotate", 0))
    flip = s.get("flip", "false")
    s["flip"] = (nsp == 3) if flip == "auto" else flip == "true"
    dec = s.get("decorrelate", "false")
    s["decorrelate"] = (nsp == 2 and shape[1] == 3) if dec == "auto" else dec == "true"
    if s.get("bound", "auto") == "auto":
        b = float(np.abs(x).max()) if x is not None else 0.0
        s["bound"] = b if b > 0 else 1.0
    else:
        s["bound"] = float(s["bound"])
    for k in ("alpha_weight", "tv_weight", "l2_decay", "blur_every", "pad", "jitter"):
        s.setdefault(k, 0)
    s.setdefault("scale_min", 1.0)
    s.setdefault("octaves", 1)
    s.setdefault("octave_scale", 1.4)
    s.setdefault("scale_max", 1.0)
    s.setdefault("alpha", 6.0)
    s.setdefault("tv_beta", 2.0)
    return s


def diversity(a):
    """Lucid's objectives.diversity, pair by pair as Lucid writes it."""
    B, C = a.shape[:2]
    f = a.reshape(B, C, -1)
    g = f @ f.transpose(1, 2)
    g = g / torch.sqrt(torch.clamp(g.pow(2).sum((1, 2), keepdim=True), min=1e-10))
    return sum((g[i] * g[j]).sum() for i in range(B) for j in range(B) if i != j) / B


class Layer:
    """The layer's output by a forward hook (the whole model runs)."""

    def __init__(self, net, name):
        self.out = None
        if name:
            mod = dict(net.named_modules())[name]
            mod.register_forward_hook(lambda m, i, o: setattr(self, "out", o))


def transform(s, x, g):
    x0 = x
    nsp = x.dim() - 2
    if s["pad"] > 0:
        x = F.pad(x, [s["pad"]] * (2 * nsp))
    if s["jitter"] > 0:
        sh = torch.randint(-s["jitter"], s["jitter"] + 1, (nsp,), generator=g)
        x = torch.roll(x, [int(v) for v in sh], list(range(2, 2 + nsp)))
    if s["scale_max"] > s["scale_min"] or s["scale_min"] != 1.0:
        u = torch.rand(1, generator=g, dtype=torch.float64).item()
        f = s["scale_min"] + (s["scale_max"] - s["scale_min"]) * u
        x = resize(x, [max(1, int(math.floor(n * f + 0.5))) for n in x.shape[2:]])
    if s["rotate"] > 0 and nsp == 2:
        u = torch.rand(1, generator=g, dtype=torch.float64).item()
        a = (-s["rotate"] + 2 * s["rotate"] * u) * math.pi / 180.0
        th = torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]])
        grid = F.affine_grid(th, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if s["flip"]:
        u = torch.rand(nsp, generator=g, dtype=torch.float64)
        dims = [2 + d for d in range(nsp) if u[d] < 0.5]
        if dims:
            x = torch.flip(x, dims)
    # back to the image's size, centred (esg-explain's fit_size)
    for d in range(2, x.dim()):
        n, t = x.size(d), x0.size(d)
        if n > t:
            x = x.narrow(d, (n - t) // 2, t)
        elif n < t:
            pad = [0] * (2 * nsp)
            a = x.dim() - 1 - d
            pad[2 * a], pad[2 * a + 1] = (t - n) // 2, t - n - (t - n) // 2
            x = F.pad(x, pad)
    return x


def explain(net, layer, s, x0, shape):
    """esg-explain's loop for one item; returns (image, trace, initial, final)."""
    hook = Layer(net, layer)
    g = torch.Generator().manual_seed(s["seed"])
    nsp = len(shape) - 2
    m = s["method"]
    ref = None

    def objective(x):
        out = net(x)
        if m == "class_model":
            return out[:, s["target"]].sum()
        a = hook.out
        if m == "deepdream":
            return (a[:, s["channel"]] if s["channel"] is not None else a).pow(2).sum().sqrt()
        if m == "invert":
            return (a - ref).pow(2).sum() / ref.pow(2).sum()
        if s["unit"] is not None:
            u = a[:, s["channel"]]
            for k in s["unit"]:
                u = u[:, k]
            return u.mean()
        if s["channel"] is not None:
            return a[:, s["channel"]].mean()
        return a.pow(2).mean()

    x0t = torch.from_numpy(np.ascontiguousarray(x0)).float() if x0 is not None else None
    with torch.no_grad():
        if m == "invert":
            net(x0t)
            ref = hook.out.detach().clone()
    fft = s.get("param") == "fft"
    if fft:
        spec = list(shape[:2]) + list(shape[2:-1]) + [shape[-1] // 2 + 1, 2]
        p = torch.randn(spec, generator=g) * s["init_std"]
        scale = fft_scale(list(shape[2:]))
    elif m == "deepdream" or s.get("init") == "input":
        p = x0t.clone()
    else:
        p = torch.randn(shape, generator=g) * s["init_std"]

    def image(p):
        if fft:
            x = torch.fft.irfftn(torch.view_as_complex((p * scale).contiguous()), s=list(shape[2:]),
                                 dim=list(range(2, 2 + nsp)), norm="ortho") / 4.0
        else:
            x = p
        return decorrelate(x) if s["decorrelate"] else x

    with torch.no_grad():
        initial = float(objective(image(p)))
    O = int(s.get("octaves", 1))
    # rounded half away from zero (C's llround), not Python's half to even
    sizes = [[max(1, math.floor(n / s["octave_scale"] ** (O - 1 - k) + 0.5)) for n in shape[2:]]
             for k in range(O)]
    trace, detail = [], None
    for k in range(O):
        if O > 1:
            with torch.no_grad():
                base = resize(x0t, sizes[k])
                detail = torch.zeros_like(base) if detail is None else gauss_blur(resize(detail, sizes[k]), s["octave_blur"])
                p = base + detail
        p = p.detach().clone().requires_grad_(True)
        if s["optimizer"] == "adam":
            opt = torch.optim.Adam([p], lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"])
        else:
            opt = torch.optim.SGD([p], lr=s["lr"], momentum=s["momentum"])
        for t in range(s["steps"]):
            img = image(p)
            v = objective(transform(s, img, g))
            loss = (v if m == "invert" else -v) + regularisers(s, img)
            if s.get("diversity", 0) > 0:
                loss = loss + s["diversity"] * diversity(hook.out)
            grad, = torch.autograd.grad(loss, [p])
            if s["normalize_grad"]:
                grad = grad / (grad.abs().mean() + 1e-8)
            trace.append(float(v))
            if s["schedule"] == "cosine" and s["steps"] > 1:
                opt.param_groups[0]["lr"] = s["lr"] * 0.5 * (1 + math.cos(math.pi * t / s["steps"]))
            p.grad = grad
            opt.step()
            if s.get("blur_every", 0) > 0 and (t + 1) % s["blur_every"] == 0:
                with torch.no_grad():
                    p.copy_(gauss_blur(p, s["blur_sigma"]))
        if O > 1:
            with torch.no_grad():
                detail = p - base
    with torch.no_grad():
        final_img = image(p.detach())
        final = float(objective(final_img))
    return final_img.numpy(), np.array(trace, np.float32), initial, final


# ---- the driver -------------------------------------------------------------------

n_tests = 0
failed = False


def ok(cond, desc):
    global n_tests, failed
    n_tests += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n_tests, desc), flush=True)
    failed |= not cond
    return cond


def load_net(fixtures, name):
    net, _ = EM.build(name)
    net.load_state_dict(torch.jit.load(os.path.join(fixtures, name + ".pt")).state_dict())
    return net.eval()


def run_esg(args, model, method, inp, shape, layer, channel, unit, target, params, steps, seed, out):
    cmd = [os.path.join(args.bin, "esg-explain"), "-m", model, "--method", method, "--threads", "2",
           "--seed", str(seed), "-o", out]
    if layer:
        cmd += ["--layer", layer]
    if channel is not None:
        cmd += ["--channel", str(channel)]
    if unit is not None:
        cmd += ["--unit", ",".join(map(str, unit))]
    if target is not None:
        cmd += ["--target", str(target)]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    for k, v in params.items():
        cmd += ["--param", "%s=%s" % (k, v)]
    cmd += [inp] if inp else ["--shape", ",".join(map(str, shape))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print("# " + " ".join(cmd) + "\n# " + r.stderr.strip().replace("\n", "\n# "))
        return None
    return read_stream(out)[0]


def esg(args, name, method, x, layer=None, channel=None, unit=None, target=None, params=None,
        steps=None, seed=0, shape=None):
    """Run esg-explain on a fixture model; ((tensors, meta) or None, shape)."""
    params = params or {}
    model = os.path.join(args.fixtures, name + ".pt")
    shape = list(x.shape) if x is not None else list(shape or EM.build(name)[1])
    inp = None
    if x is not None:
        inp = os.path.join(args.work, "in_%s.st.zst" % name)
        write_stream(inp, [({"image": x}, {})])
    out = os.path.join(args.work, "out.st.zst")
    return run_esg(args, model, method, inp, shape, layer, channel, unit, target, params, steps, seed, out), shape


def compare(args, name, method, x, layer=None, channel=None, unit=None, target=None, params=None,
            steps=None, seed=0, desc="", shape=None):
    params = params or {}
    got, shape = esg(args, name, method, x, layer, channel, unit, target, params, steps, seed, shape)
    what = "%s %s %s%s" % (method, name, " ".join("%s=%s" % kv for kv in params.items()), desc)
    if got is None:
        ok(False, what + ": esg-explain failed")
        return None
    ts, meta = got
    net = load_net(args.fixtures, name)
    s = settings(method, params, x, shape, channel, unit, target, seed, steps)
    img, trace, initial, final = explain(net, layer, s, x, shape)
    span = float(img.max() - img.min()) or 1.0
    err = float(np.abs(ts["image"] - img).max())
    terr = float(np.abs(ts["objective"][0] - trace).max()) if len(trace) else 0.0
    tspan = float(np.abs(trace).max()) if len(trace) else 1.0
    fin = float(meta["esg.objective_final"])
    good = (ts["image"].shape == img.shape and err <= TOL * span and terr <= TOL * max(tspan, 1e-6) and
            abs(fin - final) <= TOL * max(abs(final), 1e-3) and
            abs(float(meta["esg.objective_initial"]) - initial) <= TOL * max(abs(initial), 1e-3))
    ok(good, "%s: image max err %.2e (tol %.2e), trace err %.2e, final %.6g vs %.6g" %
       (what, err, TOL * span, terr, fin, final))
    return ts, meta


def tiled_r(img, w, period):
    """Multiple correlation of img with the filter w tiled at the given
    period, over the linear span of the tile's shifts by 0 .. period - 1 on
    each axis (the pattern's phase is free: for a grating the span is its
    cosine and sine)."""
    nsp = img.ndim
    reps = [int(math.ceil(n / period)) + 1 for n in img.shape]
    tile = np.tile(w[tuple(slice(0, period) for _ in range(nsp))], reps)
    B = np.stack([tile[tuple(slice(s, s + n) for s, n in zip(sh, img.shape))].ravel()
                  for sh in np.ndindex(*([period] * nsp))], 1)
    y = img.ravel() - img.mean()
    B = B - B.mean(0)
    c = np.linalg.lstsq(B, y, rcond=None)[0]
    return float(np.corrcoef(B @ c, y)[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--work", default=".")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(1)
    x2 = rng.standard_normal((1, 1, 16, 16)).astype(np.float32)
    xr = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    x3 = rng.standard_normal((1, 1, 12, 12, 12)).astype(np.float32)

    # the reference: each method, 2D and 3D, transforms off or replayed (pad, roll, zoom, rotation, flips)
    compare(args, "net2d", "deepdream", x2, layer="relu2", steps=10)
    compare(args, "net3d", "deepdream", x3, layer="relu2", channel=3, steps=8, params={"jitter": 2})
    compare(args, "net2d", "deepdream", x2, layer="conv3", steps=4,
            params={"octaves": 2, "octave_scale": 1.5, "jitter": 0}, desc=" (octaves)")
    compare(args, "net3d", "deepdream", x3, layer="conv2", steps=3,
            params={"octaves": 2, "octave_scale": 1.2, "octave_blur": 0.8, "jitter": 1}, desc=" (octaves, 3D)")
    compare(args, "net2d", "deepdream", x2, layer="relu2", steps=10,
            params={"optimizer": "adam", "lr": 0.02, "normalize_grad": "false", "schedule": "cosine"})
    fv_off = {"pad": 0, "jitter": 0, "scale_min": 1, "scale_max": 1, "rotate": 0, "flip": "false",
              "init_std": 0.5}
    compare(args, "net2d", "feature_vis", None, layer="relu2", channel=5, steps=20, params=fv_off)
    compare(args, "net2d", "feature_vis", None, layer="relu2", channel=5, steps=20,
            params=dict(fv_off, param="pixel", pad=1, jitter=2))
    compare(args, "net2d", "feature_vis", None, layer="relu2", channel=2, unit=(3, 5), steps=20,
            params=fv_off, desc=" (unit)")
    compare(args, "rgb2d", "feature_vis", None, layer="conv2", steps=20, params=fv_off,
            desc=" (layer, decorrelated colour)")
    compare(args, "net3d", "feature_vis", None, layer="relu1", channel=0, steps=15,
            params={"pad": 1, "jitter": 1, "scale_min": 1, "scale_max": 1, "tv_weight": 0.1})
    compare(args, "net3d", "feature_vis", None, layer="relu2", channel=1, steps=15,
            params=dict(fv_off, param="pixel", optimizer="sgd", momentum=0.9, lr=0.2))
    compare(args, "net2d", "feature_vis", None, layer="relu2", channel=5, steps=12, params={"init_std": 0.5},
            desc=" (default transforms: pad, roll, zoom, rotation)")
    compare(args, "net3d", "feature_vis", None, layer="relu2", channel=1, steps=8,
            params={"init_std": 0.5, "scale_min": 0.8, "scale_max": 1.2},
            desc=" (3D: pad, roll, zoom, flips)")
    compare(args, "net2d", "feature_vis", None, layer="relu2", channel=5, steps=12, shape=[3, 1, 16, 16],
            params=dict(fv_off, diversity=0.5), desc=" (diversity, 3 images)")
    compare(args, "net3d", "feature_vis", None, layer="conv2", channel=1, unit=(2, 3, 2), steps=8,
            shape=[2, 1, 12, 12, 12], params=dict(fv_off, diversity=1, param="pixel"),
            desc=" (diversity, unit, 3D)")
    compare(args, "net2d", "class_model", None, target=1, steps=20)
    compare(args, "net3d", "class_model", x3, target=2, steps=12, params={"init": "input", "jitter": 1})
    compare(args, "net2d", "invert", x2, layer="relu2", steps=20)
    compare(args, "net3d", "invert", x3, layer="relu1", steps=12, params={"optimizer": "sgd", "lr": 0.1,
                                                                        "momentum": 0.5})

    # diversity pushes the images apart: their layer Gram matrices are less
    # alike than those of the same images optimised one by one
    div_case = dict(fv_off, init_std=0.01)
    net = load_net(args.fixtures, "net2d")
    sims = []
    for w in (0, 5):
        r, _ = esg(args, "net2d", "feature_vis", None, layer="relu1", channel=0, steps=30,
                   shape=[3, 1, 24, 24], params=dict(div_case, diversity=w))
        if r is None:
            break
        hook = Layer(net, "relu1")
        with torch.no_grad():
            net(torch.from_numpy(np.ascontiguousarray(r[0]["image"])))
            sims.append(float(diversity(hook.out)))
    if ok(len(sims) == 2, "feature_vis with and without diversity runs"):
        ok(sims[1] < sims[0], "diversity=5 lowers the items' Gram similarity: %.4f < %.4f (diversity=0)" %
           (sims[1], sims[0]))

    # fixture truths (the tool alone, default transforms)
    # the oriented filter: pixels, roll jitter only (a rotation or zoom of a
    # period-4 grating blurs it), a 32x32 image, the 7-pixel border (where
    # outputs see part of the kernel) left out
    truth = {"param": "pixel", "pad": 0, "jitter": 2, "scale_min": 1, "scale_max": 1, "rotate": 0}
    model = os.path.join(args.fixtures, "net2d.pt")
    r = run_esg(args, model, "feature_vis", None, [1, 1, 32, 32], "relu1", 0, None, None, truth, 128, 0,
                os.path.join(args.work, "fv.st.zst"))
    if ok(r is not None, "feature_vis of the oriented filter runs"):
        img = r[0]["image"][0, 0][7:-7, 7:-7]
        rr = tiled_r(img, EM.grating2d(8).numpy(), 4)
        ok(rr >= 0.9, "feature_vis of the oriented filter correlates with its tiling: |r| = %.3f >= 0.9" % rr)
    # the blob detector: the unit at the centre of a 9^3 image, whose
    # receptive field is the whole 5^3 kernel; with L2 decay the optimum of
    # w.x - l2 ||x||^2 is x = w / (2 l2) on the field, 0 elsewhere
    truth = {"l2_decay": 0.01, "jitter": 0, "scale_min": 1, "scale_max": 1, "flip": "false"}
    model = os.path.join(args.fixtures, "net3d.pt")
    r = run_esg(args, model, "feature_vis", None, [1, 1, 9, 9, 9], "relu1", 0, (2, 2, 2), None, truth, 100, 0,
                os.path.join(args.work, "fv.st.zst"))
    if ok(r is not None, "feature_vis of the blob detector's centre unit runs"):
        img = r[0]["image"][0, 0]
        rr = np.corrcoef(img[2:7, 2:7, 2:7].ravel(), EM.blob3d(5).numpy().ravel())[0, 1]
        ok(abs(rr) >= 0.9, "feature_vis (fft) of the blob detector's unit correlates with the filter: "
           "|r| = %.3f >= 0.9" % rr)
    xs = np.abs(rng.standard_normal((1, 1, 16, 16))).astype(np.float32)
    xs = F.avg_pool2d(torch.from_numpy(xs), 3, 1, 1).numpy()
    r, _ = esg(args, "inv2d", "invert", xs, layer="relu1", steps=200)
    if ok(r is not None, "invert of relu1 runs"):
        rr = np.corrcoef(r[0]["image"].ravel(), xs.ravel())[0, 1]
        ok(rr >= 0.95, "invert of relu1 recovers IN: r = %.4f >= 0.95" % rr)
    print("1..%d" % n_tests)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
