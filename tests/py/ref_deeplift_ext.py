#!/usr/bin/python3
# needs: torch
"""ref_deeplift_ext - DeepLift's rescale rule at the nonlinearities beyond
Captum (PReLU, GELU, SiLU, Mish, Hardswish, LeakyReLU with any slope), as
modules and as functional calls, against a plain-PyTorch reference.

  ref_deeplift_ext.py models DIR     write the traced models + input streams
  ref_deeplift_ext.py check DIR      compare DIR/<name>.<rule>.st.zst (esg-attr
                                     deeplift output) with the reference;
                                     one line per file: PASS / FAIL
  ref_deeplift_ext.py captum DIR     what Captum 0.8 does at these modules
                                     (the plain gradient: it hooks none of
                                     them), one line per model; SKIP without it

Reference: each activation f of the eager model runs through an
autograd.Function on the batch [x; ref] whose backward is grad * (f(x) -
f(ref)) / (x - ref), the ordinary derivative f'(x) where |x - ref| < 1e-10
(Captum's nonlinear rule, extended); ReLUs the same; no max pools, so both
of esegeta's maxpool_rule values give this map.  Checks: |esg - ref| <=
1e-5 * max|ref|, and completeness |sum(attr) - (f(x) - f(ref))| <= 1e-5 *
max(1, |f(x) - f(ref)|).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_ref as st  # noqa: E402

EPS = 1e-10

ACTS = {
    # name: (module factory, functional form)
    "prelu": (lambda: nn.PReLU(4, init=0.2), None),
    "gelu": (lambda: nn.GELU(), lambda x: F.gelu(x)),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "silu": (lambda: nn.SiLU(), lambda x: F.silu(x)),
    "mish": (lambda: nn.Mish(), lambda x: F.mish(x)),
    "hardswish": (lambda: nn.Hardswish(), lambda x: F.hardswish(x)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.3), lambda x: F.leaky_relu(x, 1.7)),
    "silu_inplace": (lambda: nn.SiLU(inplace=True), None),
    "hardswish_inplace": (lambda: nn.Hardswish(inplace=True), None),
}


class Net(nn.Module):
    """conv - act - conv - act, plus a conv - ReLU branch - mean - linear; 2D or 3D."""

    def __init__(self, act, functional, dims):
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv1, self.conv2 = Conv(1, 4, 3, padding=1), Conv(4, 4, 3, padding=1)
        self.conv3 = Conv(4, 4, 1)
        mod, fn = ACTS[act]
        self.functional = functional
        self.fn = fn
        self.act1, self.act2 = mod(), mod()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def a(self, k, x):
        if self.functional:
            return self.fn(x)
        return (self.act1 if k == 1 else self.act2)(x)

    def forward(self, x):
        h = self.a(1, self.conv1(x))
        # no input of a ReLU / LeakyReLU read twice, and no max pool: both
        # maxpool_rule values give the rule everywhere
        h = self.a(2, self.conv2(h)) + self.relu(self.conv3(h))
        return self.fc(h.flatten(2).mean(2))


def models():
    out = []
    for act, (mod, fn) in ACTS.items():
        for dims in (2, 3):
            out.append(("%s_module_%dd" % (act, dims), act, False, dims))
            if fn is not None and dims == 2:
                out.append(("%s_functional_%dd" % (act, dims), act, True, dims))
    return out


def build(name, act, functional, dims):
    torch.manual_seed(sum(map(ord, name)))
    m = Net(act, functional, dims).eval()
    g = torch.Generator().manual_seed(5)
    shape = (2, 1, 8, 8) if dims == 2 else (1, 1, 6, 6, 6)
    x = torch.randn(shape, generator=g)
    ref = 0.3 * torch.randn(shape, generator=g)
    # equal to the input on a patch: delta_in = 0 there (the gradient fallback)
    ref.view(-1)[:5] = x.view(-1)[:5]
    return m, x, ref


class Rescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, f):
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            y = f(zz.clone())
            (d,) = torch.autograd.grad(y.sum(), zz)  # elementwise: f'(z)
        ctx.save_for_backward(z, y.detach(), d)
        return y.detach()

    @staticmethod
    def backward(ctx, g):
        z, y, d = ctx.saved_tensors
        zi, zr = z.chunk(2)
        yi, yr = y.chunk(2)
        din, dout = torch.cat([zi - zr] * 2), torch.cat([yi - yr] * 2)
        small = din.abs() < EPS
        safe = torch.where(small, torch.ones_like(din), din)
        return torch.where(small, g * d, g * dout / safe), None


def reference(m, x, ref, target):
    """DeepLift with every activation (and ReLU) under Rescale."""
    acts = [mod for mod in m.modules() if isinstance(mod, (nn.PReLU, nn.GELU, nn.SiLU, nn.Mish,
                                                            nn.Hardswish, nn.LeakyReLU, nn.ReLU))]
    saved = {}
    for mod in acts:
        saved[mod] = mod.forward
        mod.forward = (lambda z, f=mod.forward: Rescale.apply(z, f))
    saved_fn = m.fn
    if m.functional:
        m.fn = lambda z, f=saved_fn: Rescale.apply(z, f)
    try:
        xx = torch.cat([x, ref]).requires_grad_(True)
        out = m(xx)
        t = torch.tensor([target] * x.shape[0] * 2)
        (g,) = torch.autograd.grad(out.gather(1, t.view(-1, 1)).sum(), xx)
    finally:
        for mod, f in saved.items():
            mod.forward = f
        m.fn = saved_fn
    return ((x - ref) * g[: x.shape[0]]).detach()


def write(path, arr):
    st.write_stream(path, [([("image", np.ascontiguousarray(np.asarray(arr, dtype=np.float32)))],
                            {"esg.format": "1"})])


def read(path):
    meta, ts = st.read_stream(path)[0]
    return torch.tensor(np.array([t[3] for t in ts if t[0] == "attribution"][0], dtype=np.float32))


def main(argv):
    if len(argv) != 2 or argv[0] not in ("models", "check", "captum"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, d = argv
    torch.set_num_threads(1)
    fail = 0
    if cmd == "models":
        os.makedirs(d, exist_ok=True)
        for name, act, fun, dims in models():
            m, x, ref = build(name, act, fun, dims)
            with torch.no_grad():
                torch.jit.trace(m, x).save(os.path.join(d, name + ".pt"))
            write(os.path.join(d, name + ".x.st.zst"), x.numpy())
            write(os.path.join(d, name + ".ref.st.zst"), ref.numpy())
            print(name)
        return 0
    if cmd == "captum":
        sys.path.insert(0, os.environ.get("CAPTUM_PATH") or
                        os.path.join(HERE, "..", "..", "..", "shared", "captum"))
        try:
            import warnings
            warnings.simplefilter("ignore")
            from captum.attr import DeepLift, InputXGradient  # noqa: F401
        except Exception as e:
            print("SKIP captum not importable (%s)" % e)
            return 0
        for name, act, fun, dims in models():
            if fun or act == "leaky_relu":
                continue  # modules only (Captum hooks LeakyReLU: no claim)
            m, x, ref = build(name, act, fun, dims)
            m.relu = nn.Identity()  # only the activation under test
            a = DeepLift(m).attribute(x, ref, target=1).detach()
            # the gradient at every activation is f'(x), not the rescale: what
            # Captum gives is (x - ref) * d f(x) / d x with the [x; ref]
            # batch's other half irrelevant
            xx = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(m(xx)[:, 1].sum(), xx)
            plain = (x - ref) * g
            rel = float((a - plain).abs().max() / a.abs().max())
            word = "PASS" if rel < 1e-5 else "FAIL"
            print("%s captum %s: DeepLift = (x - ref) * plain gradient (rel %.2g)" % (word, name, rel))
            fail |= word == "FAIL"
        return fail
    for name, act, fun, dims in models():
        m, x, ref = build(name, act, fun, dims)
        want = reference(m, x, ref, 1)
        with torch.no_grad():
            t = torch.tensor([1] * x.shape[0]).view(-1, 1)
            fd = (m(x).gather(1, t) - m(ref).gather(1, t)).view(-1).double()
        for rule in ("captum", "complete"):
            path = os.path.join(d, "%s.%s.st.zst" % (name, rule))
            if not os.path.exists(path):
                print("FAIL %s.%s: no esg-attr output" % (name, rule))
                fail = 1
                continue
            got = read(path)
            rel = float((got - want).abs().max() / want.abs().max())
            gap = float((got.flatten(1).double().sum(1) - fd).abs().max())
            tol = 1e-5 * max(1.0, float(fd.abs().max()))
            ok = rel <= 1e-5 and gap <= tol
            print("%s %s.%s rel=%.3g completeness_gap=%.3g" % ("PASS" if ok else "FAIL", name, rule, rel, gap))
            fail |= not ok
    return fail


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
