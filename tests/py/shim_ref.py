#!/usr/bin/python3
# needs: torch
"""Plain-PyTorch references for the shim's rule-modified backward passes.

    shim_ref.py DIR    (DIR: make_models.py fixtures + the maps
                        test_torch_shim wrote with ESG_SHIM_DUMP=DIR)

Prints TAP lines (no plan).  References are eager PyTorch models with the
fixtures' weights, where:
 - guided backprop: every ReLU (F.relu, nn.ReLU, in-place torch.relu_) is a
   custom autograd Function with backward relu(grad) * [x > 0];
 - DeepLift: Captum's rules written out as autograd Functions (rescale at
   ReLUs, Captum's maxpool rule with max_unpool3d at MaxPool3d), input and
   baseline as one batch, target scored on both halves.
Tolerance: max |shim - ref| <= 1e-5 * max |ref|.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import make_models as mm  # noqa: E402

D = sys.argv[1]
_max_pool3d = F.max_pool3d  # the reference's own pooling, before patching
n = 0


def ok(cond, msg):
    global n
    n += 1
    print("%sok %d - %s" % ("" if cond else "not ", n, msg))
    sys.stdout.flush()


def load_f32(name, shape):
    return torch.from_numpy(np.fromfile(os.path.join(D, name), dtype="<f4").reshape(shape).copy())


def close(a, b, tol=1e-5):
    d = (a - b).abs().max().item()
    m = b.abs().max().item()
    return d <= tol * max(m, 1e-12), d, m


class Guided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.clamp(min=0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g.clamp(min=0) * (y > 0)


def eager(cls, name):
    m = cls().eval()
    m.load_state_dict(torch.jit.load(os.path.join(D, name)).state_dict())
    return m


x2d = load_f32("x2d.f32", (2, 1, 8, 8))
tg = torch.tensor([[1], [2]])
real_relu, real_relu_ = F.relu, torch.relu_
F.relu = lambda x, inplace=False: Guided.apply(x)
torch.relu_ = lambda x: Guided.apply(x)
try:
    for cls, files in ((mm.ReluFunctional, ["relu_functional_script.pt"]),
                       (mm.ReluInplace, ["relu_inplace_script.pt", "relu_inplace_trace.pt"])):
        m = eager(cls, files[0])
        x = x2d.clone().requires_grad_(True)
        m(x).gather(1, tg).sum().backward()
        for f in files:
            got = load_f32("guided_%s.f32" % f, (2, 1, 8, 8))
            c, d, mx = close(got, x.grad)
            ok(c, "guided backprop of %s = PyTorch reference (max diff %.2g, max %.2g)" % (f, d, mx))
finally:
    F.relu, torch.relu_ = real_relu, real_relu_


def chunk_delta(t):
    a, b = t.chunk(2)
    return torch.cat([a - b, a - b])


class DlRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = real_relu(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        din, dout = chunk_delta(x), chunk_delta(y)
        return torch.where(din.abs() < 1e-10, g * (x > 0), g * dout / din)


class DlMaxPool3d(torch.autograd.Function):
    """Captum's maxpool rule (deep_lift.py, maxpool()), kernel = stride = k."""

    @staticmethod
    def forward(ctx, x, k):
        y, idx = _max_pool3d(x, k, k, 0, 1, False, True)
        ctx.save_for_backward(x, y, idx)
        ctx.k = k
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, idx = ctx.saved_tensors
        k = ctx.k
        o, o_ref = y.chunk(2)
        xmax = torch.max(o, o_ref)
        dout = torch.cat([xmax - o_ref, o - xmax])
        u, u_ref = F.max_unpool3d(g * dout, idx, k, k, 0, list(x.shape)).chunk(2)
        u = torch.cat(2 * [u + u_ref])
        orig = F.max_unpool3d(g, idx, k, k, 0, list(x.shape))
        din = chunk_delta(x)
        return torch.where(din.abs() < 1e-10, orig, u / din), None


def net3d_deeplift(m, x, ref, target):
    xb = torch.cat([x, ref]).requires_grad_(True)
    h = DlMaxPool3d.apply(DlRelu.apply(m.conv1(xb)), 2)
    h = DlRelu.apply(m.conv2(h))
    out = m.fc(h.mean(dim=(2, 3, 4)))
    t = torch.cat([target, target]).view(-1, 1)
    out.gather(1, t).sum().backward()
    return xb.grad[: x.shape[0]]


m3 = eager(mm.Net3d, "net3d.pt")
x3 = load_f32("x3d.f32", (2, 1, 6, 6, 6))
flat = x3.flatten()
ref_rand = (0.5 * flat[(torch.arange(432) * 5 + 3) % 432]).view(2, 1, 6, 6, 6)
# equal to the input in the first three slices of each item (delta_in = 0 there)
ref_half = torch.where((torch.arange(432) % 216 < 108).view(2, 1, 6, 6, 6), x3, ref_rand)
for name, ref in (("zero", torch.zeros_like(x3)), ("rand", ref_rand), ("half", ref_half)):
    want = net3d_deeplift(m3, x3, ref, torch.tensor([0, 1]))
    got = load_f32("deeplift_net3d_%s.f32" % name, (2, 1, 6, 6, 6))
    c, d, mx = close(got, want)
    ok(c, "DeepLift multipliers of the 3D max-pool net, %s baseline = the complete rule "
       "(max diff %.2g, max %.2g)" % (name, d, mx))

# The demo U-Net behind a fixed-mask score: guided backprop and DeepLift
# with every ReLU / max pool of the eager model swapped for the rule.
mu = eager(mm.MaskScore, "unet_trace.pt")
xu = load_f32("xu.f32", (2, 1, 8, 8, 8))
tu = torch.tensor([1, 0])
real_pool = F.max_pool3d
try:
    F.relu = lambda x, inplace=False: Guided.apply(x)
    x = xu.clone().requires_grad_(True)
    mu(x).gather(1, tu.view(-1, 1)).sum().backward()
    c, d, mx = close(load_f32("guided_unet.f32", (2, 1, 8, 8, 8)), x.grad)
    ok(c, "guided backprop of the U-Net = PyTorch reference (max diff %.2g, max %.2g)" % (d, mx))

    F.relu = lambda x, inplace=False: DlRelu.apply(x)
    F.max_pool3d = lambda x, k, s=None, p=0, d=1, ceil_mode=False, return_indices=False: \
        DlMaxPool3d.apply(x, k)
    fu = xu.flatten()
    ref = (0.3 * fu[(torch.arange(1024) * 11 + 5) % 1024]).view(2, 1, 8, 8, 8)
    xb = torch.cat([xu, ref]).requires_grad_(True)
    mu(xb).gather(1, torch.cat([tu, tu]).view(-1, 1)).sum().backward()
    c, d, mx = close(load_f32("deeplift_unet.f32", (2, 1, 8, 8, 8)), xb.grad[:2])
    ok(c, "DeepLift multipliers of the U-Net, complete rule (max diff %.2g, max %.2g)" % (d, mx))
finally:
    F.relu, F.max_pool3d = real_relu, real_pool

w = torch.jit.load(os.path.join(D, "wrapped.pt"))
lin = torch.jit.load(os.path.join(D, "linear.pt"))
xl = torch.tensor([[1.0, 2, 3, 4], [0, -1, 0.5, 2]])
ok(torch.allclose(w(xl), 2 * lin(xl), atol=1e-6), "Python loads the wrapped model; output = 2 * model")
ok(all(p.requires_grad for p in w.parameters()), "saved parameters keep requires_grad=True")
print("1..%d" % n)
