#!/usr/bin/python3
# needs: torch
"""ref_attr - independent reference implementations of esg-attr's gradient
methods in plain PyTorch autograd, written from the definitions (Captum's
conventions, /work/shared/method-conventions.md), for tests/cli/attr_*.sh.

  ref_attr.py inputs FIXTURES OUTDIR      write input streams for the fixtures
  ref_attr.py check [--atol A] [--rtol R] MODEL OUT [MODEL OUT ...]
        recompute every record of esg-attr's output OUT from its own metadata
        (esg.method, esg.params, esg.target, esg.seed, esg.baseline) and the
        record's image, and compare the attribution; prints one line per
        pair, "PASS name ..." / "FAIL name ..." / "SKIP name reason".

Nothing here uses libesg: streams are read with safetensors_ref (json, numpy
and the zstd command); random draws are replayed with a Python transcription
of the xoshiro256** recipe documented in lib/attr/attr.h; Gauss-Legendre nodes
come from numpy.  Rule-modified backward passes (guided backprop,
deconvolution, DeepLift rescale) run on the eager model (the fixture classes
of tests/fixtures/make_models.py, weights from the TorchScript file) with
every ReLU -- module, functional and in-place -- swapped for an
autograd.Function implementing the rule.  DeepLift's maxpool_rule=captum
(the default) is Captum's module-hook behaviour, reproduced here by tensor
identity: a ReLU or max pool whose input is the very tensor another such
op returned acts as its plain op (Captum's hook on the earlier op records
the gradient before the later op's hook replaces it); complete applies
every rule.

Tolerance: |esg - ref| <= atol * max(1, max|ref|) + rtol * |ref|, defaults
atol 1e-5, rtol 1e-4 (float32 forward/backward in both, different summation
orders).
"""
import contextlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import safetensors_ref as st  # noqa: E402

# ---- the PRNG of lib/attr/attr.h, transcribed ------------------------------------
from esg_rng import Rng  # noqa: E402


STREAM_NT, STREAM_SHAP, STREAM_BASELINE = 1, 2, 16

# ---- models -------------------------------------------------------------------


def eager_model(path):
    """The eager fixture model behind a TorchScript file, or None."""
    try:
        import make_models as mm
    except ImportError:
        return None
    name = os.path.basename(path)
    table = {"linear.pt": lambda: mm.Linear(), "oneconv.pt": lambda: mm.OneConv(),
             "net3d.pt": lambda: mm.Net3d(), "seg.pt": lambda: mm.Seg()}
    for kind in ("module", "functional", "inplace"):
        cls = getattr(mm, "Relu" + kind.capitalize(), None)
        for how in ("script", "trace"):
            table["relu_%s_%s.pt" % (kind, how)] = (lambda c=cls, k=kind: c() if c else mm.ReluNet(k))
    if hasattr(mm, "Branchy"):
        table["branchy.pt"] = lambda: mm.Branchy()
    if name not in table:
        return None
    m = table[name]()
    m.load_state_dict(torch.jit.load(path).state_dict())
    return m.eval()


class GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0).to(g.dtype)


class DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


class RescaleReLU(torch.autograd.Function):
    """DeepLift rescale on a batch [x; ref]: multiplier delta_out / delta_in,
    the ordinary gradient where |delta_in| < 1e-10 (Captum's eps)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        zi, zr = z.chunk(2)
        din = zi - zr
        dout = zi.clamp(min=0) - zr.clamp(min=0)
        plain = (zi > 0).to(g.dtype)
        safe = torch.where(din.abs() < 1e-10, torch.ones_like(din), din)
        m = torch.where(din.abs() < 1e-10, plain, dout / safe)
        return g * torch.cat([m, m])


_POOL = {2: (F.max_pool2d, F.max_unpool2d), 3: (F.max_pool3d, F.max_unpool3d)}


class RescaleMaxPool(torch.autograd.Function):
    """Captum's DeepLift maxpool rule on a batch [x; ref]: the cross maximum of
    the two halves' pooled outputs, gradients unpooled through both halves'
    argmax and summed, divided by delta_in (ordinary gradient where tiny)."""

    @staticmethod
    def forward(ctx, z, k, s, dims):
        pool, _ = _POOL[dims]
        out, idx = pool(z, k, s, return_indices=True)
        ctx.save_for_backward(z, out, idx)
        ctx.k, ctx.s, ctx.dims = k, s, dims
        return out

    @staticmethod
    def backward(ctx, g):
        z, out, idx = ctx.saved_tensors
        _, unpool = _POOL[ctx.dims]
        size = z.shape[2:]
        zi, zr = z.chunk(2)
        oi, orf = out.chunk(2)
        din = torch.cat([zi - zr, zi - zr])
        xmax = torch.max(oi, orf)
        dout = torch.cat([xmax - orf, oi - xmax])
        u = unpool(g * dout, idx, ctx.k, ctx.s, output_size=size)
        ui, ur = u.chunk(2)
        both = torch.cat([ui + ur, ui + ur])
        plain = unpool(g, idx, ctx.k, ctx.s, output_size=size)
        safe = torch.where(din.abs() < 1e-10, torch.ones_like(din), din)
        return torch.where(din.abs() < 1e-10, plain, both / safe), None, None, None


@contextlib.contextmanager
def relu_rule(fn, captum=False):
    """Route every ReLU (nn.ReLU goes through F.relu) through fn; for DeepLift
    max pooling too (captum: an op reading another's output is plain)."""
    saved = (F.relu, torch.relu, torch.relu_, F.max_pool2d, F.max_pool3d)
    plain_pool = {2: F.max_pool2d, 3: F.max_pool3d}
    made = []  # outputs of the rule ops (kept alive: their ids stay unique)

    def hooked(x, rule, plain):
        chained = captum and any(t is x for t in made)
        y = plain(x) if chained else rule(x)
        made.append(y)
        return y
    relu = lambda x: hooked(x, fn.apply, lambda z: z.clamp(min=0))  # noqa: E731
    F.relu = lambda x, inplace=False: relu(x)
    torch.relu = relu
    torch.relu_ = relu
    if fn is RescaleReLU:
        def pool(dims):
            def f(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
                assert padding in (0, (0,) * dims) and not ceil_mode and not return_indices
                s = stride or kernel_size
                return hooked(x, lambda z: RescaleMaxPool.apply(z, kernel_size, s, dims),
                              lambda z: plain_pool[dims](z, kernel_size, s))
            return f
        F.max_pool2d, F.max_pool3d = pool(2), pool(3)
    try:
        yield
    finally:
        F.relu, torch.relu, torch.relu_, F.max_pool2d, F.max_pool3d = saved


def grad_at(model, x, target, rule=None):
    """d score[b, target[b]] / d x for a batch x."""
    x = x.clone().requires_grad_(True)
    ctx = relu_rule(rule) if rule else contextlib.nullcontext()
    with ctx:
        out = model(x)
    s = out.gather(1, target.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(s, x)
    return g.detach()


def scores(model, x, target):
    with torch.no_grad():
        return model(x).gather(1, target.view(-1, 1)).view(-1).double()


# ---- methods, from their definitions ----------------------------------------------


def ig_steps(method, n):
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return list(0.5 * (1 + x)), list(0.5 * w)
    if method == "riemann_trapezoid":
        a = [i / (n - 1) for i in range(n)]
        w = [1 / n] * n
        w[0] /= 2
        w[-1] /= 2
        return a, w
    off = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return [(i + off) / n for i in range(n)], [1 / n] * n


def saliency(ctx, x, t, p, bl):
    g = grad_at(ctx.model, x, t)
    return (g.abs() if p["abs"] else g), None


def input_x_gradient(ctx, x, t, p, bl):
    return x * grad_at(ctx.model, x, t), None


def guided_backprop(ctx, x, t, p, bl):
    return grad_at(ctx.eager(), x, t, GuidedReLU), None


def deconvolution(ctx, x, t, p, bl):
    return grad_at(ctx.eager(), x, t, DeconvReLU), None


def integrated_gradients(ctx, x, t, p, bl):
    b = bl[0]
    alphas, weights = ig_steps(p["method"], p["n_steps"])
    total = torch.zeros_like(x)
    for a, w in zip(alphas, weights):
        total += w * grad_at(ctx.model, b + a * (x - b), t)
    attr = total * (x - b)
    delta = attr.flatten(1).double().sum(1) - (scores(ctx.model, x, t) - scores(ctx.model, b, t))
    return attr, delta


def deeplift_over(ctx, x, t, bls, p):
    model = ctx.eager()
    attr = torch.zeros_like(x)
    captum = p.get("maxpool_rule", "captum") == "captum"
    for b in bls:
        xx = torch.cat([x, b]).requires_grad_(True)
        with relu_rule(RescaleReLU, captum):
            out = model(xx)
        s = out.gather(1, torch.cat([t, t]).view(-1, 1)).sum()
        (g,) = torch.autograd.grad(s, xx)
        attr += (x - b) * g[: x.shape[0]] / len(bls)
    fb = sum(scores(ctx.model, b, t) for b in bls) / len(bls)
    delta = attr.flatten(1).double().sum(1) - (scores(ctx.model, x, t) - fb)
    return attr, delta


def deeplift(ctx, x, t, p, bl):
    return deeplift_over(ctx, x, t, bl[:1], p)


def deeplift_shap(ctx, x, t, p, bl):
    return deeplift_over(ctx, x, t, bl, p)


def gradient_shap(ctx, x, t, p, bl):
    """Per item m, per sample: k = floor(u K), noise (if stdevs > 0),
    alpha = u; gradient at b_k + alpha (x_s - b_k), times (x_s - b_k)."""
    S, sd, K = p["n_samples"], p["stdevs"], len(bl)
    rng = ctx.rng_shap
    attr = torch.zeros_like(x)
    delta = torch.zeros(x.shape[0], dtype=torch.float64)
    for m in range(x.shape[0]):
        xm, tm = x[m:m + 1], t[m:m + 1]
        fd = 0.0
        for _ in range(S):
            k = min(int(rng.uniform() * K), K - 1)
            xs = xm + rng.noise(xm.shape, sd) if sd > 0 else xm
            a = np.float32(rng.uniform()).item()
            b = bl[k][m:m + 1]
            d = xs - b
            attr[m:m + 1] += grad_at(ctx.model, b + a * d, tm) * d / S
            fd += (scores(ctx.model, xs, tm) - scores(ctx.model, b, tm)).item() / S
        delta[m] = attr[m].double().sum() - fd
    return attr, delta


def noise_tunnel(ctx, x, t, p, bl):
    base = METHODS[p["base"]]
    S, sd, kind = p["nt_samples"], p["stdevs"], p["nt_type"]
    s1 = torch.zeros_like(x)
    s2 = torch.zeros_like(x)
    dsum = torch.zeros(x.shape[0], dtype=torch.float64)
    has_delta = True
    for _ in range(S):
        xs = x + ctx.rng_nt.noise(x.shape, sd)
        a, d = base(ctx, xs, t, p, bl)
        s1 += a
        s2 += a * a
        if d is None:
            has_delta = False
        else:
            dsum += d
    mean, msq = s1 / S, s2 / S
    out = {"smoothgrad": mean, "smoothgrad_sq": msq, "vargrad": msq - mean * mean}[kind]
    return out, (dsum / S if has_delta and kind == "smoothgrad" else None)


METHODS = {f.__name__: f for f in (saliency, input_x_gradient, guided_backprop, deconvolution,
                                   integrated_gradients, deeplift, deeplift_shap, gradient_shap,
                                   noise_tunnel)}
RULE_METHODS = {"guided_backprop", "deconvolution", "deeplift", "deeplift_shap"}

# ---- baselines ------------------------------------------------------------------------


def blur(x, sigma):
    from scipy.ndimage import gaussian_filter
    a = x.numpy().astype(np.float64)
    sig = [0, 0] + [sigma] * (a.ndim - 2)
    return torch.tensor(gaussian_filter(a, sig, mode="reflect", truncate=4.0).astype(np.float32))


def baselines(specs, x, seed, record):
    out = []
    for i, spec in enumerate(specs):
        if spec == "zero":
            out.append(torch.zeros_like(x))
        elif spec.startswith("const:"):
            out.append(torch.full_like(x, float(spec[6:])))
        elif spec.startswith("blur:"):
            out.append(blur(x, float(spec[5:])))
        elif spec.startswith("uniform:"):
            parts = spec[8:].split(":")
            lo, hi = map(float, parts[0].split(","))
            k = int(parts[1]) if len(parts) > 1 else 1
            rng = Rng(seed, record, STREAM_BASELINE + i)
            n = x.numel()
            for _ in range(k):
                v = np.array([lo + (hi - lo) * rng.uniform() for _ in range(n)], dtype=np.float32)
                out.append(torch.tensor(v.reshape(x.shape)))
        elif spec.startswith("file:"):
            path, name = spec[5:], "image"
            if ":" in path and "/" not in path.rsplit(":", 1)[1]:
                path, name = path.rsplit(":", 1)
            meta, ts = st.read_stream(path)[0]
            arr = torch.tensor(np.array([t[3] for t in ts if t[0] == name][0], dtype=np.float32))
            if arr.shape == x.shape:
                out.append(arr)
            elif arr.shape[0] == 1:
                out.append(arr.expand_as(x).clone())
            else:
                out.extend(arr[k:k + 1] for k in range(arr.shape[0]))
        else:
            raise ValueError("unknown baseline " + spec)
    return out


# ---- checking --------------------------------------------------------------------------


class Ctx:
    def __init__(self, path):
        self.path = path
        self.model = torch.jit.load(path).eval()
        self._eager = None

    def eager(self):
        if self._eager is None:
            self._eager = eager_model(self.path)
            if self._eager is None:
                raise LookupError("no eager model for %s (rule methods need one)" % self.path)
        return self._eager


def tensors(rec):
    meta, ts = rec
    return meta, {t[0]: np.array(t[3], dtype=np.float32) for t in ts}


def check(model_path, out_path, atol, rtol):
    name = os.path.basename(out_path)
    ctx = Ctx(model_path)
    worst, worst_delta = 0.0, 0.0
    for r, rec in enumerate(st.read_stream(out_path)):
        meta, ts = tensors(rec)
        method = meta["esg.method"]
        p = json.loads(meta["esg.params"])
        if method in RULE_METHODS or p.get("base") in RULE_METHODS:
            try:
                ctx.eager()
            except LookupError as e:
                return "SKIP %s %s" % (name, e)
        x = torch.tensor(ts["image"])
        tg = json.loads(meta["esg.target"])
        t = torch.tensor(tg if isinstance(tg, list) else [tg] * x.shape[0], dtype=torch.long)
        seed = int(meta["esg.seed"])
        bl = baselines(json.loads(meta.get("esg.baseline", '["zero"]')), x, seed, r)
        ctx.rng_nt = Rng(seed, r, STREAM_NT)
        ctx.rng_shap = Rng(seed, r, STREAM_SHAP)
        ref, delta = METHODS[method](ctx, x, t, p, bl)
        ref = ref.numpy()
        got = ts["attribution"]
        if got.shape != ref.shape:
            return "FAIL %s shape %s, reference %s" % (name, got.shape, ref.shape)
        scale = max(1.0, float(np.abs(ref).max()))
        err = np.abs(got - ref)
        bad = err > atol * scale + rtol * np.abs(ref)
        worst = max(worst, float((err / scale).max()))
        if bad.any():
            i = np.unravel_index(np.argmax(err - rtol * np.abs(ref)), ref.shape)
            return "FAIL %s record %d: %d elements off, worst at %s: %g vs reference %g" % (
                name, r, int(bad.sum()), tuple(int(v) for v in i), got[i], ref[i])
        if delta is not None:
            if "esg.delta" not in meta:
                return "FAIL %s record %d: no esg.delta" % (name, r)
            dg = np.array(json.loads(meta["esg.delta"]))
            dd = np.abs(dg - delta.numpy())
            tol = 1e-4 * max(1.0, float(np.abs(delta.numpy()).max()), scale)
            worst_delta = max(worst_delta, float(dd.max()))
            if (dd > tol).any():
                return "FAIL %s record %d: esg.delta %s vs reference %s" % (name, r, dg.tolist(),
                                                                           delta.numpy().tolist())
    return "PASS %s max error %.3g (of max |ref|), delta error %.3g" % (name, worst, worst_delta)


def f32(path, shape):
    return np.fromfile(path, dtype="<f4").reshape(shape)


def write(path, arr):
    st.write_stream(path, [([("image", np.asarray(arr, dtype=np.float32))], {"esg.format": "1"})])


def make_inputs(fx, out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    write(os.path.join(out, "x2d.st.zst"), f32(os.path.join(fx, "x2d.f32"), (2, 1, 8, 8)))
    write(os.path.join(out, "x3d.st.zst"), f32(os.path.join(fx, "x3d.f32"), (2, 1, 6, 6, 6)))
    write(os.path.join(out, "lin.st.zst"), torch.randn(3, 4, generator=g).numpy())
    write(os.path.join(out, "lin1.st.zst"), torch.randn(1, 4, generator=g).numpy())
    write(os.path.join(out, "oneconv.st.zst"), (torch.arange(16.0).view(1, 1, 4, 4) * 2).numpy())
    write(os.path.join(out, "seg.st.zst"), torch.randn(1, 1, 8, 8, generator=g).numpy())
    # two records in one stream (record index feeds the random streams)
    st.write_stream(os.path.join(out, "two.st.zst"), [
        ([("image", f32(os.path.join(fx, "x2d.f32"), (2, 1, 8, 8))[:1])], {"esg.format": "1"}),
        ([("image", f32(os.path.join(fx, "x2d.f32"), (2, 1, 8, 8))[1:])], {"esg.format": "1"})])
    # a baseline distribution for the shap methods: [3, 1, 8, 8]
    write(os.path.join(out, "bl3.st.zst"), (0.3 * torch.randn(3, 1, 8, 8, generator=g)).numpy())


def main(argv):
    if len(argv) >= 3 and argv[0] == "inputs":
        make_inputs(argv[1], argv[2])
        return 0
    if argv and argv[0] == "check":
        args = argv[1:]
        atol, rtol = 1e-5, 1e-4
        while args and args[0].startswith("--"):
            if args[0] == "--atol":
                atol = float(args[1])
            elif args[0] == "--rtol":
                rtol = float(args[1])
            args = args[2:]
        torch.set_num_threads(1)
        fail = 0
        for i in range(0, len(args) - 1, 2):
            try:
                line = check(args[i], args[i + 1], atol, rtol)
            except Exception as e:  # report, keep going
                line = "FAIL %s %s: %s" % (os.path.basename(args[i + 1]), type(e).__name__, e)
            print(line, flush=True)
            fail |= line.startswith("FAIL")
        return fail
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
