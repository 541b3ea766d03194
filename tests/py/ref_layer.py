#!/usr/bin/python3
# needs: torch
"""Reference implementations of esegeta's layer methods in plain PyTorch
(eager modules, Python forward hooks, autograd), and a TAP driver that runs
esg-attr on fixture and shipped models and compares.

  ref_layer.py --bin BUILD/bin --fixtures DIR [--root REPO] [--shipped]

The references are written from the method definitions (Captum's code for
the Captum methods, the papers for Grad-CAM++ and Score-CAM, TorchRay for
the linear approximation), not from esg's C code: layers are reached with
forward hooks on the eager module (the output is recorded and a clone
passed on, so in-place ops downstream cannot touch it; a replacement is
returned from the hook), rule-modified backward passes replace the nn.ReLU
(and nn.Softplus / nn.Tanh for DeepLift) modules by autograd functions.
Random draws of layer_gradient_shap replay the generator written down in
lib/attr/attr.h (xoshiro256** seeded by splitmix64).

Tolerance: |esg - ref| <= ATOL_REL * max|ref| + 1e-6 elementwise, with
ATOL_REL = 1e-4 (both sides float32; path methods sum in different order).
"""
import argparse
import copy
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import make_layer_models as LM  # noqa: E402

ATOL_REL = 1e-4

# ---- streams (safetensors documents in zstd frames) --------------------------


def write_stream(path, recs):
    out = b""
    for ts, meta in recs:
        h, off, blobs = {}, 0, []
        for k, a in ts.items():
            b = np.ascontiguousarray(a, "<f4").tobytes()
            h[k] = {"dtype": "F32", "shape": list(np.shape(a)), "data_offsets": [off, off + len(b)]}
            off += len(b)
            blobs.append(b)
        m = {"esg.format": "1"}
        m.update(meta)
        h["__metadata__"] = m
        hj = json.dumps(h).encode()
        hj += b" " * (-len(hj) % 8)
        doc = struct.pack("<Q", len(hj)) + hj + b"".join(blobs)
        out += subprocess.run(["zstd", "-q", "-c"], input=doc, check=True, capture_output=True).stdout
    with open(path, "wb") as f:
        f.write(out)


def read_stream(path):
    raw = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    recs, off = [], 0
    while off < len(raw):
        n = struct.unpack("<Q", raw[off:off + 8])[0]
        h = json.loads(raw[off + 8:off + 8 + n])
        base = end = off + 8 + n
        meta = h.pop("__metadata__", {})
        ts = {}
        for k, v in h.items():
            a, b = v["data_offsets"]
            ts[k] = np.frombuffer(raw[base + a:base + b], "<f4").reshape(v["shape"])
            end = max(end, base + b)
        recs.append((ts, meta))
        off = end
    return recs


# ---- hooks --------------------------------------------------------------------


def get_module(model, name):
    for part in name.split("."):
        model = model._modules[part]
    return model


class LayerHook:
    """Forward hook on call `call` of a module: records the output (and
    passes a clone on), or substitutes `replace`."""

    def __init__(self, module, call=0, replace=None):
        self.module, self.call, self.replace = module, call, replace
        self.n, self.out = 0, None

    def __enter__(self):
        def hook(mod, inp, out):
            k = self.n
            self.n += 1
            if k != self.call:
                return None
            if self.replace is not None:
                self.out = self.replace
                return self.replace.clone()
            self.out = out
            return out.clone()
        self.h = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *a):
        self.h.remove()


class Model:
    """An eager model, an optional score reduction (the fixed-mask wrapper),
    and the layer of interest."""

    def __init__(self, net, layer, call=0, reduce=None):
        self.net, self.layer, self.call, self.reduce = net, layer, call, reduce

    def module(self, net=None):
        return get_module(net or self.net, self.layer)

    def out(self, x, net=None):
        y = (net or self.net)(x)
        return self.reduce(y) if self.reduce else y

    def scores(self, x, target, net=None):
        o = self.out(x, net)
        t = torch.as_tensor(target).repeat(o.shape[0] // len(target))
        return o.gather(1, t.view(-1, 1)).squeeze(1)

    def act(self, x):
        with torch.no_grad(), LayerHook(self.module(), self.call) as h:
            self.out(x)
        return h.out.detach()

    def act_grad(self, x, target, net=None):
        """Layer output and d score / d layer output (scores summed)."""
        net = net or self.net
        x = x.detach().requires_grad_(True)  # so that the layer's output needs grad
        with LayerHook(self.module(net), self.call) as h:
            s = self.scores(x, target, net)
        g = torch.autograd.grad(s.sum(), h.out)[0]
        return h.out.detach(), g.detach(), s.detach()

    def replace_grad(self, x, a, target):
        a = a.detach().requires_grad_(True)
        with LayerHook(self.module(), self.call, replace=a):
            s = self.scores(x, target)
        return torch.autograd.grad(s.sum(), a)[0].detach()


# ---- rule-modified backward passes ------------------------------------------------


class GuidedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0).to(g.dtype)


class GuidedReLU(nn.Module):
    def forward(self, x):
        return GuidedReLUFn.apply(x)


class RescaleFn(torch.autograd.Function):
    """DeepLift rescale on a batch [x; ref]: multiplier dOut/dIn per element,
    the plain gradient where |dIn| < 1e-10."""

    @staticmethod
    def forward(ctx, x, kind):
        f = {"relu": torch.relu, "softplus": F.softplus, "tanh": torch.tanh}[kind]
        y = f(x)
        B = x.shape[0] // 2
        dx = (x[:B] - x[B:]).repeat(2, *[1] * (x.dim() - 1))
        dy = (y[:B] - y[B:]).repeat(2, *[1] * (x.dim() - 1))
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            grad = torch.autograd.grad(f(xg).sum(), xg)[0]
        ctx.save_for_backward(torch.where(dx.abs() < 1e-10, grad, dy / torch.where(dx == 0, torch.ones_like(dx), dx)))
        return y

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return g * m, None


class Rescale(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        return RescaleFn.apply(x, self.kind)


def swap_modules(net, make):
    """A copy of net with nn.ReLU (and others `make` knows) replaced."""
    net = copy.deepcopy(net)
    for name, mod in list(net.named_modules()):
        new = make(mod)
        if new is not None and name:
            parent = net
            parts = name.split(".")
            for p in parts[:-1]:
                parent = parent._modules[p]
            parent._modules[parts[-1]] = new
    return net


def guided_net(net):
    return swap_modules(net, lambda m: GuidedReLU() if isinstance(m, nn.ReLU) else None)


class MaxPoolFn(torch.autograd.Function):
    """Captum's DeepLift max-pool rule on a batch [x; ref] (non-overlapping
    windows, as the fixtures' and shipped models' 2x2 pools)."""

    @staticmethod
    def forward(ctx, x, mod):
        d = x.dim() - 2
        pool = {2: F.max_pool2d, 3: F.max_pool3d}[d]
        y, idx = pool(x, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode, True)
        ctx.save_for_backward(x, y, idx)
        ctx.mod, ctx.d = mod, d
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, idx = ctx.saved_tensors
        mod, d = ctx.mod, ctx.d
        unpool = {2: F.max_unpool2d, 3: F.max_unpool3d}[d]
        B = x.shape[0] // 2
        din = torch.cat(2 * [x[:B] - x[B:]])
        xmax = torch.max(y[:B], y[B:])
        dout = torch.cat([xmax - y[B:], y[:B] - xmax])
        u = unpool(g * dout, idx, mod.kernel_size, mod.stride, mod.padding, list(x.shape[2:]))
        u = torch.cat(2 * [u[:B] + u[B:]])
        plain = unpool(g, idx, mod.kernel_size, mod.stride, mod.padding, list(x.shape[2:]))
        return torch.where(din.abs() < 1e-10, plain, u / torch.where(din == 0, torch.ones_like(din), din)), None


class DLMaxPool(nn.Module):
    def __init__(self, mod):
        super().__init__()
        self.mod = mod

    def forward(self, x):
        return MaxPoolFn.apply(x, self.mod)


class Chained(nn.Module):
    """maxpool_rule=captum: Captum's hooks, by tensor identity -- a rule
    module whose input is the very tensor another rule module returned acts
    as its plain op (the earlier module's hook records the gradient before
    this one's replaces it).  (The layer hook passes a clone on, as
    Captum's layer capture does: no chaining across the layer.)"""

    def __init__(self, rule, plain, made):
        super().__init__()
        self.rule, self.plain, self.made = rule, plain, made

    def forward(self, x):
        chained = self.made is not None and any(t is x for t in self.made)
        y = self.plain(x) if chained else self.rule(x)
        if self.made is not None:
            self.made.append(y)
        return y


def deeplift_net(net, captum=True):
    made = [] if captum else None
    plain = {"relu": torch.relu, "softplus": F.softplus, "tanh": torch.tanh}

    def make(m):
        if isinstance(m, (nn.MaxPool2d, nn.MaxPool3d)):
            return Chained(DLMaxPool(m), m, made)
        for cls, kind in ((nn.ReLU, "relu"), (nn.Softplus, "softplus"), (nn.Tanh, "tanh")):
            if isinstance(m, cls):
                return Chained(Rescale(kind), plain[kind], made)
        return None
    return swap_modules(net, make)


# ---- quadrature and the generator (lib/attr/attr.h) -------------------------------------


def ig_steps(method, n):
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return list(0.5 * (1 + x)), list(0.5 * w)
    if method == "riemann_trapezoid":
        a = list(np.linspace(0, 1, n))
        w = [1.0 / (n - 1)] * n
        w[0] /= 2
        w[-1] /= 2
        return a, w
    raise ValueError(method)


from esg_rng import Rng  # noqa: E402


# ---- the methods ----------------------------------------------------------------------


def gradcam(a, g, relu=False, summation=True):
    w = g.mean(dim=tuple(range(2, g.dim())), keepdim=True) if g.dim() > 2 else g
    m = (w * a).sum(1, keepdim=True) if summation else w * a
    return F.relu(m) if relu else m


def gradcam_pp(a, g, s, exp_score=True):
    """Chattopadhyay et al. 2018, eq. 19 with Y = exp(S); float64."""
    a, g = a.double(), g.double()
    sp = tuple(range(2, a.dim()))
    e = torch.exp(s.double()).view(-1, *[1] * (a.dim() - 1)) if exp_score else torch.ones(1, dtype=torch.float64)
    d1, d2, d3 = e * g, e * g ** 2, e * g ** 3
    den = 2 * d2 + a.sum(dim=sp, keepdim=True) * d3
    alpha = torch.where(den != 0, d2 / torch.where(den == 0, torch.ones_like(den), den), torch.zeros_like(den))
    w = (alpha * F.relu(d1)).sum(dim=sp, keepdim=True)
    return F.relu((w * a).sum(1, keepdim=True)).float()


def interp(m, size, mode):
    if mode == "linear":
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(m, size=tuple(size), mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def ref_method(M, method, x, target, params, baselines, seed=0):
    """The attribution (layer-shaped unless the method is input-shaped) and
    the convergence delta (or None)."""
    p = dict(params)
    tg = list(target)
    if method == "layer_activation":
        return M.act(x), None
    if method in ("layer_gradient_x_activation", "layer_gradcam", "gradcam_pp", "linear_approx"):
        a, g, s = M.act_grad(x, tg)
        if method == "layer_gradient_x_activation":
            return a * g, None
        if method == "layer_gradcam":
            return gradcam(a, g, p.get("relu_attributions") == "true", p.get("attr_dim_summation", "true") == "true"), None
        if method == "gradcam_pp":
            return gradcam_pp(a, g, s, p.get("exp_score", "false") == "true"), None
        return (a * g).sum(1, keepdim=True), None
    if method == "guided_gradcam":
        a, g, _ = M.act_grad(x, tg)
        cam = gradcam(a, g, relu=True)
        gn = guided_net(M.net)
        xi = x.detach().requires_grad_(True)
        gb = torch.autograd.grad(M.scores(xi, tg, gn).sum(), xi)[0]
        return gb * interp(cam, x.shape[2:], p.get("interpolate_mode", "nearest").replace("bilinear", "linear").replace("trilinear", "linear")), None
    if method == "layer_guided_backprop":
        gn = guided_net(M.net)
        xi = x.detach().requires_grad_(True)
        with LayerHook(M.module(gn), M.call) as h:
            M.out(xi, gn)
        ch = p.get("_channel")
        obj = (h.out[:, int(ch)] if ch is not None else h.out).abs().sum()
        return torch.autograd.grad(obj, xi)[0], None
    if method == "score_cam":
        A = M.act(x)
        out = []
        for m in range(x.shape[0]):
            up = interp(A[m:m + 1], x.shape[2:], "linear")[0]
            sc, use = [], []
            for k in range(A.shape[1]):
                mk = up[k]
                lo, hi = mk.min(), mk.max()
                if not hi > lo:
                    sc.append(0.0)
                    use.append(False)
                    continue
                mk = (mk - lo) / (hi - lo)
                with torch.no_grad():
                    sc.append(float(M.scores(x[m:m + 1] * mk, [tg[m]])[0]))
                use.append(True)
            s = torch.tensor(sc, dtype=torch.float64)
            s[~torch.tensor(use)] = -float("inf")
            w = torch.softmax(s, 0).float()
            out.append(F.relu((w.view(-1, *[1] * (A.dim() - 2)) * A[m]).sum(0, keepdim=True)))
        return torch.stack(out), None
    fx = lambda z: M.scores(z, tg).detach().double()
    if method in ("layer_conductance", "internal_influence"):
        n = int(p.get("n_steps", 50))
        meth = p.get("method", "gausslegendre")
        b = baselines[0]
        N = x.shape[0]
        if method == "layer_conductance":
            alphas, _ = ig_steps(meth, n + 1)
            pts = torch.cat([b + a * (x - b) for a in alphas])
            A, G, _ = M.act_grad(pts, tg)
            attr = ((A[N:] - A[:-N]) * G[:-N]).view(n, N, *A.shape[1:]).sum(0)
            delta = attr.double().flatten(1).sum(1) - (fx(x) - fx(b))
            return attr, delta
        alphas, w = ig_steps(meth, n)
        pts = torch.cat([b + a * (x - b) for a in alphas])
        _, G, _ = M.act_grad(pts, tg)
        return (G.view(n, N, *G.shape[1:]) * torch.tensor(w).float().view(n, 1, *[1] * (G.dim() - 1))).sum(0), None
    if method == "layer_integrated_gradients":
        n = int(p.get("n_steps", 50))
        alphas, w = ig_steps(p.get("method", "gausslegendre"), n)
        b = baselines[0]
        ax, ab = M.act(x), M.act(b)
        tot = torch.zeros_like(ax)
        for a, wi in zip(alphas, w):
            tot += wi * M.replace_grad(x, ab + float(np.float32(a)) * (ax - ab), tg)
        attr = tot * (ax - ab)
        return attr, attr.double().flatten(1).sum(1) - (fx(x) - fx(b))
    if method in ("layer_deeplift", "layer_deeplift_shap"):
        dn = deeplift_net(M.net, p.get("maxpool_rule", "captum") == "captum")
        N = x.shape[0]
        tot = 0
        for b in baselines:
            A, G, _ = M.act_grad(torch.cat([x, b]), tg, dn)
            tot = tot + (A[:N] - A[N:]) * G[:N]
        attr = tot / len(baselines)
        fb = sum(fx(b) for b in baselines) / len(baselines)
        return attr, attr.double().flatten(1).sum(1) - (fx(x) - fb)
    if method == "layer_gradient_shap":
        S = int(p.get("n_samples", 5))
        sd = float(p.get("stdevs", 0.0))
        rng = Rng(seed, 0, 2)
        K = len(baselines)
        out, deltas = [], []
        for m in range(x.shape[0]):
            acc, fd = 0, 0.0
            for s in range(S):
                k = min(int(rng.uniform() * K), K - 1)
                xm = x[m:m + 1]
                if sd > 0:
                    noise = torch.tensor([rng.normal() for _ in range(xm.numel())], dtype=torch.float64)
                    xs = (xm.double() + sd * noise.view_as(xm)).float()
                else:
                    xs = xm
                a = float(np.float32(rng.uniform()))
                bm = baselines[k][m:m + 1]
                _, G, _ = M.act_grad(bm + a * (xs - bm), [tg[m]])
                acc = acc + G * (M.act(xs) - M.act(bm)) / S
                fd += float(M.scores(xs, [tg[m]]) - M.scores(bm, [tg[m]])) / S
            out.append(acc[0])
            deltas.append(float(acc.double().sum()) - fd)
        return torch.stack(out), torch.tensor(deltas)
    raise ValueError(method)


# ---- the driver -----------------------------------------------------------------------

n_tests = 0
n_failed = 0


def ok(cond, desc):
    global n_tests, n_failed
    n_tests += 1
    print("%sok %d - %s" % ("" if cond else "not ", n_tests, desc))
    if not cond:
        n_failed += 1
    sys.stdout.flush()
    return cond


def close(got, ref, rel=ATOL_REL):
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if got.shape != ref.shape:
        return False, "shape %s, reference %s" % (got.shape, ref.shape)
    if not np.abs(ref).max() > 0:
        return False, "the reference is all zero: not a test"
    tol = rel * np.abs(ref).max() + 1e-6
    err = np.abs(got - ref).max() if ref.size else 0.0
    return err <= tol, "max |diff| %.3g, tolerance %.3g" % (err, tol)


class Runner:
    def __init__(self, bindir, work):
        self.bin, self.work, self.k = bindir, work, 0

    def attr(self, model_pt, x, args, baselines=None):
        """Run esg-attr on x (with file: baselines); returns (attribution, meta)."""
        self.k += 1
        inp = os.path.join(self.work, "in%d.st.zst" % self.k)
        out = os.path.join(self.work, "out%d.st.zst" % self.k)
        write_stream(inp, [({"image": x.numpy()}, {})])
        cmd = [os.path.join(self.bin, "esg-attr"), "-m", model_pt, "--threads", "1", "-o", out] + args
        for i, b in enumerate(baselines or []):
            bp = os.path.join(self.work, "bl%d_%d.st.zst" % (self.k, i))
            write_stream(bp, [({"image": b.numpy()}, {})])
            cmd += ["--baseline", "file:" + bp]
        r = subprocess.run(cmd + [inp], capture_output=True, text=True)
        if r.returncode != 0:
            return None, {"error": r.stderr.strip()}
        ts, meta = read_stream(out)[0]
        return ts["attribution"], meta


def check_case(R, M, pt, name, method, x, target, params=(), baselines=None, extra=(), upsample=False,
               rel=ATOL_REL, seed=0, prefix=""):
    """prefix: the layer's path in the TorchScript file (a wrapper's "model.")."""
    params = list(params)
    args = ["--method", method, "--layer", "%s%s:%d" % (prefix, M.layer, M.call), "--target", ",".join(map(str, target))
            if len(set(target)) > 1 else str(target[0])]
    if len(set(target)) > 1:
        args = args[:-2]  # per-item targets come from argmax (checked below)
    for k, v in params:
        args += ["--channel", v] if k == "_channel" else ["--param", "%s=%s" % (k, v)]
    args += ["--upsample" if upsample else "--no-upsample"] if method not in ("guided_gradcam", "layer_guided_backprop") else []
    args += list(extra)
    got, meta = R.attr(pt, x, args, baselines)
    if got is None:
        return ok(False, "%s: %s at %s: esg-attr failed: %s" % (name, method, M.layer, meta["error"]))
    bl = baselines or [torch.zeros_like(x)]
    ref, delta = ref_method(M, method, x, target, params, bl, seed)
    if upsample:
        ref = interp(ref, x.shape[2:], "linear").expand(-1, x.shape[1] if ref.shape[1] == 1 else -1, *x.shape[2:])
    good, why = close(got, ref.detach().numpy(), rel)
    desc = "%s: %s at %s%s%s%s matches the reference (%s)" % (
        name, method, M.layer, ":%d" % M.call if M.call else "", " upsampled" if upsample else "",
        " (%s)" % ", ".join("%s=%s" % kv for kv in params) if params else "", why)
    if delta is not None and good:
        d = json.loads(meta.get("esg.delta", "null"))
        dgood = d is not None and np.allclose(d, delta.numpy(), atol=1e-3 * max(1.0, float(np.abs(ref.numpy()).sum())), rtol=1e-3)
        good, desc = good and dgood, desc + "; delta %s vs %s" % (d, [round(float(v), 6) for v in delta])
    return ok(good, desc)


ALL = ["layer_activation", "layer_gradient_x_activation", "layer_gradcam", "gradcam_pp", "linear_approx",
       "guided_gradcam", "layer_guided_backprop", "score_cam", "layer_conductance", "internal_influence", "layer_integrated_gradients",
       "layer_deeplift", "layer_gradient_shap"]
PATH_PARAMS = [("n_steps", "8")]


def fixture_cases(R, fx, full=False):
    # Captum's one-conv net: hand values
    net = LM.build("oneconv")
    x = LM.example_input("oneconv")
    pt = os.path.join(fx, "oneconv_script.pt")
    got, meta = R.attr(pt, x, ["--method", "layer_gradcam", "--layer", "conv1", "--target", "0", "--no-upsample"])
    good, why = close(got, [[[[11.25, 13.5], [20.25, 22.5]]]], 1e-6) if got is not None else (False, meta)
    ok(good and meta.get("esg.layer") == "conv1" and meta.get("esg.upsample") == "none",
       "oneconv: Grad-CAM of conv1 at arange(16) is Captum's [[11.25, 13.5], [20.25, 22.5]] (%s)" % why)
    got, meta = R.attr(pt, x, ["--method", "layer_activation", "--layer", "conv1"])
    hand = [[[[-5, 4], [31, 40]], [[-30, -21], [6, 15]]]]  # 3x3 window sums minus the biases 50, 75
    good, why = close(got, hand, 1e-6) if got is not None else (False, meta)
    ok(good and json.loads(meta.get("esg.layer_shape", "[]")) == [1, 2, 2, 2],
       "oneconv: activation of conv1 = window sums - bias, by hand (%s)" % why)
    got, meta = R.attr(pt, x, ["--method", "layer_gradcam", "--layer", "conv1", "--target", "0"])
    # bilinear 2x2 -> 4x4 by hand: rows/cols weights (1, .75/.25, .25/.75, 1)
    c = np.array([[11.25, 13.5], [20.25, 22.5]])
    W = np.array([[1, 0], [.75, .25], [.25, .75], [0, 1]])
    good, why = close(got, (W @ c @ W.T)[None, None], 1e-6) if got is not None else (False, meta)
    ok(good and meta.get("esg.upsample") == "bilinear",
       "oneconv: Grad-CAM upsampled by default, bilinear by hand (%s)" % why)

    # (model, kind, layer, call, methods): every method on a layer followed by
    # BN + in-place ReLU + max pool (2D) and on a 3D conv; fewer elsewhere
    FULL = [(n, k, l, c, ALL) for n, ls in (("net2d", ["b1.bn", "b2.conv", "conv3"]), ("net3d", ["bn1", "conv2"]),
                                            ("twice2d", [("block", 0), ("block", 1), ("block.0", 1)]),
                                            ("smooth2d", ["conv1", "act1"]))
            for k in ("script", "trace") for l, c in [(x if isinstance(x, tuple) else (x, 0)) for x in ls]]
    QUICK = [("net2d", "script", "b1.bn", 0, ALL),
             ("net2d", "script", "conv3", 0, ["layer_gradcam", "layer_deeplift"]),
             ("net2d", "trace", "b1.bn", 0, ["layer_gradcam", "layer_conductance"]),
             ("net2d", "trace", "b2.conv", 0, ["layer_guided_backprop"]),
             ("net3d", "script", "conv2", 0, ALL),
             ("net3d", "script", "bn1", 0, ["layer_gradcam", "layer_deeplift"]),
             ("twice2d", "script", "block", 0, ["layer_gradcam", "layer_integrated_gradients"]),
             ("twice2d", "script", "block", 1, ["layer_gradcam", "layer_conductance", "layer_deeplift",
                                                "layer_guided_backprop"]),
             ("twice2d", "script", "block.0", 1, ["layer_activation"]),
             ("twice2d", "trace", "block", 1, ["layer_gradcam"]),
             ("smooth2d", "script", "act1", 0, ["layer_integrated_gradients", "layer_conductance"])]
    for name, kind, lname, call, methods in (FULL if full else QUICK):
        net = LM.build(name)
        x = LM.example_input(name)
        with torch.no_grad():
            target = [int(t) for t in net(x).argmax(1)]
        pt = os.path.join(fx, "%s_%s.pt" % (name, kind))
        tag = "%s (%s)" % (name, kind)
        M = Model(net, lname, call)
        for method in methods:
            if method == "score_cam" and name == "net3d" and lname == "bn1":
                continue
            params = PATH_PARAMS if method in ("layer_conductance", "internal_influence",
                                               "layer_integrated_gradients") else []
            if method == "layer_gradient_shap":
                params = [("n_samples", "3"), ("stdevs", "0.1")]
            if method == "layer_guided_backprop" and name == "net2d":
                params = [("_channel", "3")]
            bl = None
            if method in ("layer_conductance", "internal_influence", "layer_integrated_gradients",
                          "layer_deeplift", "layer_gradient_shap"):
                bl = [0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))]
            if method == "layer_gradient_shap":
                bl.append(torch.zeros_like(x))
            up = method in ("layer_gradcam", "score_cam") and lname != "block.0"
            check_case(R, M, pt, tag, method, x, target, params, bl, upsample=up)
    # layer DeepLiftShap over two baselines, 3D
    net = LM.build("net3d")
    x = LM.example_input("net3d")
    with torch.no_grad():
        target = [int(t) for t in net(x).argmax(1)]
    bl = [0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    check_case(R, Model(net, "conv2"), os.path.join(fx, "net3d_script.pt"), "net3d", "layer_deeplift_shap", x,
               target, [], bl)

    # completeness of conductance on the smooth net: the sum is f(x) - f(0)
    # up to the reported delta, and the delta shrinks as the steps grow
    net = LM.build("smooth2d")
    x = 4 * LM.example_input("smooth2d")
    with torch.no_grad():
        f = (net(x)[:, 1] - net(torch.zeros_like(x))[:, 1]).double().numpy()
    ds = []
    for n in (50, 200):
        got, meta = R.attr(os.path.join(fx, "smooth2d_script.pt"), x,
                           ["--method", "layer_conductance", "--layer", "act1", "--target", "1",
                            "--param", "n_steps=%d" % n, "--param", "method=riemann_trapezoid"])
        if got is None:
            ok(False, "smooth2d: conductance failed: %s" % meta["error"])
            return
        s = got.reshape(got.shape[0], -1).astype(np.float64).sum(1)
        d = np.array(json.loads(meta["esg.delta"]))
        ds.append(d)
        rel = {50: 0.05, 200: 0.01}[n]
        ok(np.allclose(s - f, d, atol=1e-6) and np.all(np.abs(d) <= rel * np.abs(f)),
           "smooth2d: conductance (%d steps) sums to f(x) - f(0) = %s up to the reported delta %s "
           "(|delta| <= %g |f(x) - f(0)|)" % (n, f, d, rel))
    ok(np.all(np.abs(ds[1]) < 0.5 * np.abs(ds[0])), "smooth2d: conductance delta shrinks with n_steps: %s -> %s"
       % (ds[0], ds[1]))


def shipped_cases(R, root, work):
    demo = os.path.join(root, "share", "demo")
    sys.path.insert(0, demo)
    cls_pt = os.path.join(root, "share", "models", "classifier2d.pt")
    unet_pt = os.path.join(root, "share", "models", "unet3d.pt")
    if os.path.exists(cls_pt):
        import train_classifier2d as TC
        net = TC.Classifier2D().eval()
        net.load_state_dict(torch.jit.load(cls_pt).state_dict())
        x = torch.from_numpy(np.load(os.path.join(root, "share", "data", "angio2d_20001_aneurysm.npy")).astype(np.float32))
        x = ((x - x.mean()) / x.std()).reshape(1, 1, *x.shape[-2:])
        with torch.no_grad():
            target = [int(net(x).argmax(1)[0])]
        for layer, methods in (("block2.conv", ["layer_gradcam", "gradcam_pp", "guided_gradcam", "layer_conductance"]),
                               ("bn4", ["layer_gradcam", "layer_deeplift", "layer_integrated_gradients", "score_cam"])):
            for method in methods:
                params = PATH_PARAMS if method in ("layer_conductance", "layer_integrated_gradients") else []
                check_case(R, Model(net, layer), cls_pt, "classifier2d", method, x, target, params,
                           upsample=method in ("layer_gradcam", "score_cam"))
                if method == "gradcam_pp":  # the paper's exp(score) factor: a logit is small enough
                    check_case(R, Model(net, layer), cls_pt, "classifier2d", method, x, target,
                               [("exp_score", "true")])
    else:
        ok(True, "# SKIP share/models/classifier2d.pt not there yet")
    if os.path.exists(unet_pt):
        import train_unet3d as TU
        import nibabel as nib
        net = TU.UNet3D().eval()
        net.load_state_dict(torch.jit.load(unet_pt).state_dict())
        v = np.asarray(nib.load(os.path.join(root, "share", "data", "phantom1000_image.nii.gz")).get_fdata(), np.float32)
        v = v[16:40, 16:40, 16:40]
        x = torch.from_numpy(((v - v.mean()) / v.std()).astype(np.float32)).view(1, 1, *v.shape)
        wrapped = os.path.join(work, "unet_fixed.pt")
        inp = os.path.join(work, "unet_in.st.zst")
        write_stream(inp, [({"image": x.numpy()}, {})])
        r = subprocess.run([os.path.join(R.bin, "esg-wrap"), "-m", unet_pt, "--reduce", "fixed-mask", "--input", inp,
                            "-o", wrapped], capture_output=True, text=True)
        if not ok(r.returncode == 0, "esg-wrap --reduce fixed-mask on the U-Net %s" % r.stderr.strip()):
            return
        mask = torch.jit.load(wrapped).mask
        red = lambda y: (y * mask).flatten(2).sum(2)
        # the vessel class if the fixed mask has any of it in this crop
        target = [1 if float(mask[:, 1].sum()) > 0 else 0]
        for layer, methods in (("enc2.conv1", ["layer_gradcam", "layer_gradient_x_activation"]),
                               ("enc1.bn1", ["layer_gradcam", "gradcam_pp"]),   # in-place ReLU right after
                               ("dec1.conv2", ["layer_gradcam", "layer_deeplift", "layer_conductance",
                                               "layer_integrated_gradients", "score_cam", "guided_gradcam",
                                               "layer_guided_backprop"]),
                               ("bottleneck.relu2", ["internal_influence", "linear_approx"])):
            for method in methods:
                params = [("n_steps", "4")] if method in ("layer_conductance", "internal_influence",
                                                          "layer_integrated_gradients") else []
                check_case(R, Model(net, layer, reduce=red), wrapped, "unet3d", method, x, target, params,
                           upsample=method in ("layer_gradcam", "score_cam"), prefix="model.")
    else:
        ok(True, "# SKIP share/models/unet3d.pt not there yet")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--work", default=".")
    ap.add_argument("--root", default=os.path.join(HERE, "..", ".."))
    ap.add_argument("--shipped", action="store_true")
    ap.add_argument("--full", action="store_true", help="every method on every fixture layer, scripted and traced")
    ap.add_argument("--no-fixtures", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    R = Runner(a.bin, a.work)
    if not a.no_fixtures:
        fixture_cases(R, a.fixtures, a.full)
    if a.shipped:
        shipped_cases(R, a.root, a.work)
    print("1..%d" % n_tests)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
