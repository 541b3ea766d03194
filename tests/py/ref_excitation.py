#!/usr/bin/python3
# needs: torch
"""Reference excitation backprop (Zhang et al. 2016) in plain PyTorch, and a
TAP driver that runs esg-attr --method (contrastive_)excitation_backprop on
fixture and shipped models and compares.

  ref_excitation.py --bin BUILD/bin --fixtures DIR [--root REPO] [--shipped]

Written from the rule, not from esg's C++: the eager model's nn.Conv*d,
nn.ConvTranspose*d, nn.Linear and eval nn.BatchNorm*d modules are swapped
for autograd Functions whose backward is the marginal-winning-probability
rule, and Tensor.mean (the fixtures' global pooling) is patched the same
way while the reference runs:

  linear op y = W x + b:   P_in = x * W+^T (P_out / stab(W+ x))     W+ = max(W, 0)
  BatchNorm (eval):        P_in = x * s+ P_out / stab(s+ x)           s = w / sqrt(var + eps)
  mean over axes (n):      P_in = x * P_out / (n stab(mean x))        (broadcast)
  ReLU, max pools, flatten, cat: the ordinary gradient of P
  stab(z) = z + 1e-12 sign(z), sign(0) = +1

The start signal is d score / d output (one-hot for a classifier).  The map
at a layer is P at the layer's output summed over channels; contrastive:
the last Conv/Linear module also subtracts the rule with -W (its dual
unit), and the channel sum is clamped at 0.  Without --layer, the map is P
at the input summed over channels, repeated over them.

Tolerance: |esg - ref| <= 1e-4 max|ref| + 1e-6 elementwise.
"""
import argparse
import copy
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_layer as RL  # noqa: E402
from ref_layer import LM, Model, close, ok  # noqa: E402

EPS = 1e-12


def stab(z):
    return z + torch.where(z >= 0, torch.full_like(z, EPS), torch.full_like(z, -EPS))


def lin_apply(mod, x, w):
    """The module's linear map with weight w and no bias."""
    if isinstance(mod, nn.Linear):
        return F.linear(x, w)
    if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        f = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[x.dim() - 2]
        return f(x, w, None, mod.stride, mod.padding, mod.output_padding, mod.groups, mod.dilation)
    return mod._conv_forward(x, w, None)


class LinFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mod, dual):
        ctx.save_for_backward(x)
        ctx.mod, ctx.dual = mod, dual
        return mod(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        mod = ctx.mod

        def rule(w):
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                z = lin_apply(mod, xg, w)
                return x * torch.autograd.grad(z, xg, g / stab(z.detach()))[0]
        p = rule(mod.weight.clamp(min=0))
        if ctx.dual:
            p = p - rule((-mod.weight).clamp(min=0))
        return p, None, None


class BNFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mod):
        ctx.save_for_backward(x)
        ctx.mod = mod
        return mod(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        mod = ctx.mod
        s = torch.rsqrt(mod.running_var + mod.eps)
        if mod.weight is not None:
            s = s * mod.weight
        s = s.clamp(min=0).view(1, -1, *[1] * (x.dim() - 2))
        return x * s * g / stab(s * x), None


ORIG_MEAN = torch.Tensor.mean


class MeanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, keepdim):
        y = ORIG_MEAN(x, dim=dim, keepdim=keepdim)
        ctx.save_for_backward(x, y)
        ctx.dim, ctx.keepdim = dim, keepdim
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        dims = [d % x.dim() for d in (ctx.dim if isinstance(ctx.dim, (tuple, list)) else [ctx.dim])]
        n = 1
        for d in dims:
            n *= x.shape[d]
        q = g / stab(y)
        if not ctx.keepdim:
            for d in sorted(dims):
                q = q.unsqueeze(d)
        return x * q / n, None, None


class Wrap(nn.Module):
    def __init__(self, mod, kind, dual=False):
        super().__init__()
        self.mod, self.kind, self.dual = mod, kind, dual

    def forward(self, x):
        return LinFn.apply(x, self.mod, self.dual) if self.kind == "lin" else BNFn.apply(x, self.mod)


LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def eb_net(net, top, contrast):
    """A copy of net with the rule modules; `top` names the last linear module."""
    cp = copy.deepcopy(net)
    topm = RL.get_module(cp, top)

    def make(m):
        if isinstance(m, LINEAR):
            return Wrap(m, "lin", contrast and m is topm)
        if isinstance(m, BN):
            return Wrap(m, "bn")
        return None
    for name, mod in list(cp.named_modules()):
        new = make(mod)
        if new is not None and name:
            parent = cp
            parts = name.split(".")
            for p in parts[:-1]:
                parent = parent._modules[p]
            parent._modules[parts[-1]] = new
    return cp


def mean_patch(self, dim=None, keepdim=False, **kw):
    if dim is None or kw:
        return ORIG_MEAN(self, dim, keepdim, **kw) if dim is not None else ORIG_MEAN(self, **kw)
    return MeanFn.apply(self, dim, keepdim)


def ref_map(M, x, target, top, contrast, at_input=False):
    net = eb_net(M.net, top, contrast)
    torch.Tensor.mean = mean_patch
    try:
        if at_input:
            xg = x.detach().requires_grad_(True)
            s = M.scores(xg, target, net)
            p = torch.autograd.grad(s.sum(), xg)[0]
        else:
            _, p, _ = M.act_grad(x, target, net)
    finally:
        torch.Tensor.mean = ORIG_MEAN
    m = p.sum(1, keepdim=True)
    if contrast:
        m = m.clamp(min=0)
    if at_input:
        m = m.expand(-1, x.shape[1], *x.shape[2:])
    return m.detach()


def check(R, M, pt, name, method, x, target, top, layer=True, upsample=False, prefix=""):
    contrast = method.startswith("contrastive")
    args = ["--method", method, "--target", str(target[0])]
    if layer:
        args += ["--layer", "%s%s:%d" % (prefix, M.layer, M.call), "--upsample" if upsample else "--no-upsample"]
    got, meta = R.attr(pt, x, args)
    where = "%s%s" % (M.layer, ":%d" % M.call if M.call else "") if layer else "the input"
    if got is None:
        return ok(False, "%s: %s at %s: esg-attr failed: %s" % (name, method, where, meta["error"]))
    ref = ref_map(M, x, target, top, contrast, at_input=not layer)
    if upsample:
        ref = RL.interp(ref, x.shape[2:], "linear").expand(-1, x.shape[1], *x.shape[2:])
    good, why = close(got, ref.numpy())
    return ok(good, "%s: %s at %s%s matches the reference (%s)" % (name, method, where,
                                                                   " upsampled" if upsample else "", why))


def fixture_cases(R, fx):
    cases = [("net2d", "script", "b2.conv", 0), ("net2d", "trace", "b1.bn", 0), ("net2d", "script", "pool", 0),
             ("net3d", "trace", "conv2", 0), ("net3d", "script", "bn1", 0),
             ("twice2d", "script", "block", 0), ("twice2d", "trace", "block.0", 1)]
    for name, kind, lname, call in cases:
        t = [0] if name == "twice2d" else [1]  # twice2d: fc row 1 is all negative (P = 0)
        net = LM.build(name)
        x = LM.example_input(name)[:1]
        pt = os.path.join(fx, "%s_%s.pt" % (name, kind))
        M = Model(net, lname, call)
        for method in ("excitation_backprop", "contrastive_excitation_backprop"):
            check(R, M, pt, "%s (%s)" % (name, kind), method, x, t, "fc")
    for name, kind in (("net2d", "trace"), ("net3d", "script")):
        net = LM.build(name)
        x = LM.example_input(name)[1:2]
        M = Model(net, "fc")
        pt = os.path.join(fx, "%s_%s.pt" % (name, kind))
        for method in ("excitation_backprop", "contrastive_excitation_backprop"):
            check(R, M, pt, "%s (%s)" % (name, kind), method, x, [0], "fc", layer=False)
    # upsampled by default (a CAM-like map)
    net = LM.build("net2d")
    x = LM.example_input("net2d")[:1]
    check(R, Model(net, "b2.conv"), os.path.join(fx, "net2d_script.pt"), "net2d (script)",
          "excitation_backprop", x, [2], "fc", upsample=True)


def shipped_cases(R, root, work):
    sys.path.insert(0, os.path.join(root, "share", "demo"))
    cls_pt = os.path.join(root, "share", "models", "classifier2d.pt")
    if not os.path.exists(cls_pt):
        ok(True, "# SKIP share/models/classifier2d.pt not there yet")
        return
    import train_classifier2d as TC
    net = TC.Classifier2D().eval()
    net.load_state_dict(torch.jit.load(cls_pt).state_dict())
    x = torch.from_numpy(np.load(os.path.join(root, "share", "data", "angio2d_20001_aneurysm.npy")).astype(np.float32))
    x = ((x - x.mean()) / x.std()).reshape(1, 1, *x.shape[-2:])
    with torch.no_grad():
        target = [int(net(x).argmax(1)[0])]
    for layer in ("block2.conv", "relu4", "block1.pool"):
        for method in ("excitation_backprop", "contrastive_excitation_backprop"):
            check(R, Model(net, layer), cls_pt, "classifier2d", method, x, target, "fc")
    for method in ("excitation_backprop", "contrastive_excitation_backprop"):
        check(R, Model(net, "fc"), cls_pt, "classifier2d", method, x, target, "fc", layer=False)
    unet_pt = os.path.join(root, "share", "models", "unet3d.pt")
    if not os.path.exists(unet_pt):
        ok(True, "# SKIP share/models/unet3d.pt not there yet")
        return
    import train_unet3d as TU
    import nibabel as nib
    net = TU.UNet3D().eval()
    net.load_state_dict(torch.jit.load(unet_pt).state_dict())
    v = np.asarray(nib.load(os.path.join(root, "share", "data", "phantom1000_image.nii.gz")).get_fdata(), np.float32)
    v = v[16:32, 16:32, 16:32]
    x = torch.from_numpy(((v - v.mean()) / v.std()).astype(np.float32)).view(1, 1, *v.shape)
    wrapped = os.path.join(work, "unet_fixed.pt")
    inp = os.path.join(work, "unet_in.st.zst")
    RL.write_stream(inp, [({"image": x.numpy()}, {})])
    r = subprocess.run([os.path.join(R.bin, "esg-wrap"), "-m", unet_pt, "--reduce", "fixed-mask", "--input", inp,
                        "-o", wrapped], capture_output=True, text=True)
    if not ok(r.returncode == 0, "esg-wrap --reduce fixed-mask on the U-Net %s" % r.stderr.strip()):
        return
    mask = torch.jit.load(wrapped).mask
    red = lambda y: (y * mask).flatten(2).sum(2)  # noqa: E731
    target = [1 if float(mask[:, 1].sum()) > 0 else 0]
    # conv-transpose, cat of skips, BN + in-place ReLU; the 1x1x1 head is the top linear op
    for layer in ("dec1.conv1", "up2", "enc1.bn1"):
        for method in ("excitation_backprop", "contrastive_excitation_backprop"):
            check(R, Model(net, layer, reduce=red), wrapped, "unet3d", method, x, target, "head", prefix="model.")
    check(R, Model(net, "head", reduce=red), wrapped, "unet3d", "excitation_backprop", x, target, "head",
          layer=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--work", default=".")
    ap.add_argument("--root", default=os.path.join(HERE, "..", ".."))
    ap.add_argument("--shipped", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    R = RL.Runner(a.bin, a.work)
    fixture_cases(R, a.fixtures)
    if a.shipped:
        shipped_cases(R, a.root, a.work)
    print("1..%d" % RL.n_tests)
    return 1 if RL.n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
