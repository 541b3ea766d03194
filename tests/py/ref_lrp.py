#!/usr/bin/python3
# needs: torch nibabel
"""Reference LRP in plain PyTorch (the rules as modified gradients of eager
modules), and a TAP driver that runs esg-attr --method lrp / layer_lrp on
3D nets and the shipped U-Net and compares.

  ref_lrp.py --bin BUILD/bin [--root REPO] [--work DIR] [--shipped]

Written from the rules' definitions (Bach 2015, Montavon 2017 / 2019,
Zennit's rule and composite definitions), not from esg's C++: every
nn.Conv*d / nn.ConvTranspose*d / nn.Linear / eval nn.BatchNorm*d / pool /
nn.ReLU module, and the nets' own Add module, is swapped for an autograd
Function whose backward maps the relevance R at its output to its input:

  epsilon(e):  z = f(x);  R_x = x * J^T (R / stab(z, e))
  zplus:       z = f+(x+) + f-(x-)  (W+ b+, W- no bias);  R_x = x+ J+^T s + x- J-^T s,  s = R / stab(z)
  alpha_beta:  s+ = R / stab(f_{W+,b+}(x+) + f_{W-}(x-)),  s- = R / stab(f_{W-,b-}(x+) + f_{W+}(x-))
               R_x = a (x+ J_{W+}^T s+ + x- J_{W-}^T s+) - b (x+ J_{W-}^T s- + x- J_{W+}^T s-)
  gamma(g):    as alpha_beta's groups with W + g W+ / W + g W- (bias b + g b+- on x+), the first
               group where z = f(x) > 0, the second where z < 0, both with coefficient 1
  flat:        R_x = J_1^T (R / stab(f_{1, no bias}(1)))
  wsquare:     R_x = J_{W^2}^T (R / stab(f_{W^2, b^2}(1)))
  zbox(l, h):  z = f(x) - f_{W+,b+}(l) - f_{W-,b-}(h);  R_x = x J^T s - l J_{W+}^T s - h J_{W-}^T s
  ReLU: R passes unchanged; max pool: epsilon (Captum) or its gradient (winner takes all);
  Add (a + b): R_a = a R / stab(a + b), R_b = b R / stab(a + b); cat: routed.
  stab(z, e) = z + e sign(z), sign(0) = +1; e = 1e-6 for every rule but epsilon.

The batch-norm canonizer is done here by folding each eval BN into the conv
before it (new weights W s, bias b s + t, the BN removed).  The map is
score * (relevance for a start signal of 1 at the target).  For the
fixed-mask U-Net the wrapper's y * mask (epsilon over the product) and its
sum over voxels (epsilon over the sum) start the relevance at the U-Net's
output: R_y = (y m)^2 / (stab(S) stab(y m)).

Tolerance: |esg - ref| <= 1e-4 max|ref| + 1e-6 elementwise (float32, the
rules' denominators sum in different orders); conservation: |sum - score|
<= 1e-4 |score| on nets without biases.
"""
import argparse
import copy
import json
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
from ref_layer import close, ok  # noqa: E402

STAB = 1e-6


def stab(z, e):
    return z + e * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


class Add(nn.Module):
    """A residual sum, written in place (traced as aten::add_)."""

    def forward(self, a, b):
        return a.add_(b)


class Net3dL(nn.Module):
    """[B, 1, 8, 8, 8] -> [B, 3]: conv, BN, in-place ReLU, max pool,
    conv-transpose, cat skip, residual add, avg and adaptive avg pools, linear."""

    def __init__(self, bias=True, bn=True):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm3d(4) if bn else nn.Identity()
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ConvTranspose3d(4, 4, 2, stride=2, bias=bias)
        self.conv2 = nn.Conv3d(8, 4, 3, padding=1, bias=bias)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv3d(4, 4, 1, bias=bias)
        self.relu3 = nn.ReLU()
        self.add = Add()
        self.avg = nn.AvgPool3d(2)
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 3, bias=bias)

    def forward(self, x):
        e = self.relu1(self.bn1(self.conv1(x)))
        d = self.relu2(self.conv2(torch.cat([self.up(self.pool(e)), e], 1)))
        r = self.add(self.relu3(self.conv3(d)), d)
        return self.fc(self.gap(self.avg(r)).flatten(1))


def net3d(bias=True):
    torch.manual_seed(7)
    m = Net3dL(bias=bias, bn=bias)
    if bias:
        with torch.no_grad():
            m.bn1.running_mean.copy_(0.1 * torch.randn(4))
            m.bn1.running_var.copy_(0.5 + torch.rand(4))
            m.bn1.weight.copy_(0.8 + 0.4 * torch.rand(4))
            m.bn1.bias.copy_(0.1 * torch.randn(4))
    return m.eval()


class Net2dL(nn.Module):
    """[B, 2, 12, 12] -> [B, 3], no biases: conv, ReLU, max pool, conv, ReLU, avg pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 3, bias=False)

    def forward(self, x):
        x = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc(self.gap(x).flatten(1))


class Net2dU(nn.Module):
    """[B, 2, 12, 12] -> [B, 3]: conv, instance norm (affine), ReLU, avg pool,
    bilinear upsampling, conv, adaptive avg pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv2 = nn.Conv2d(4, 3, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        x = self.up(self.pool(self.relu(self.norm(self.conv1(x)))))
        return self.fc(self.gap(self.conv2(x)).flatten(1))


def net2du():
    torch.manual_seed(12)
    m = Net2dU()
    with torch.no_grad():
        m.norm.weight.copy_(0.8 + 0.4 * torch.rand(4))
        m.norm.bias.copy_(0.1 * torch.randn(4))
    return m.eval()


def net2d_nobias():
    torch.manual_seed(9)
    return Net2dL().eval()


# ---- the rules ---------------------------------------------------------------------

def lin(mod, x, w, b):
    if isinstance(mod, nn.Linear):
        return F.linear(x, w, b)
    if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        f = {3: F.conv_transpose1d, 4: F.conv_transpose2d, 5: F.conv_transpose3d}[x.dim()]
        return f(x, w, b, mod.stride, mod.padding, mod.output_padding, mod.groups, mod.dilation)
    f = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    return f(x, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)


def vjp(fn, inp, g):
    """J^T g of fn at inp."""
    with torch.enable_grad():
        i = inp.detach().requires_grad_(True)
        return torch.autograd.grad(fn(i), i, g)[0]


def weighted_rule(mod, x, R, rule):
    name, p = rule[0], rule[1:]
    W = mod.weight.detach()
    b = mod.bias.detach() if mod.bias is not None else None
    pos = lambda t: None if t is None else t.clamp(min=0)  # noqa: E731
    neg = lambda t: None if t is None else t.clamp(max=0)  # noqa: E731
    L = lambda w, bb: (lambda i: lin(mod, i, w, bb))  # noqa: E731
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    if name == "epsilon":
        z = lin(mod, x, W, b)
        return x * vjp(L(W, b), x, R / stab(z, p[0]))
    if name in ("zplus", "alpha_beta"):
        a, bt = (1.0, 0.0) if name == "zplus" else p
        zp = lin(mod, xp, pos(W), pos(b)) + lin(mod, xn, neg(W), None)
        sp = R / stab(zp, STAB)
        out = a * (xp * vjp(L(pos(W), pos(b)), xp, sp) + xn * vjp(L(neg(W), None), xn, sp))
        if bt:
            zn = lin(mod, xp, neg(W), neg(b)) + lin(mod, xn, pos(W), None)
            sn = R / stab(zn, STAB)
            out = out - bt * (xp * vjp(L(neg(W), neg(b)), xp, sn) + xn * vjp(L(pos(W), None), xn, sn))
        return out
    if name == "gamma":
        g = p[0]
        Wp, Wn = W + g * W.clamp(min=0), W + g * W.clamp(max=0)
        bp = None if b is None else b + g * b.clamp(min=0)
        bn = None if b is None else b + g * b.clamp(max=0)
        z = lin(mod, x, W, b)
        z1 = lin(mod, xp, Wp, bp) + lin(mod, xn, Wn, None)
        z2 = lin(mod, xp, Wn, bn) + lin(mod, xn, Wp, None)
        s1 = (z > 0) * R / stab(z1, STAB)
        s2 = (z < 0) * R / stab(z2, STAB)
        return (xp * vjp(L(Wp, bp), xp, s1) + xn * vjp(L(Wn, None), xn, s1)
                + xp * vjp(L(Wn, bn), xp, s2) + xn * vjp(L(Wp, None), xn, s2))
    if name in ("flat", "wsquare"):
        w2 = torch.ones_like(W) if name == "flat" else W * W
        b2 = None if (name == "flat" or b is None) else b * b
        one = torch.ones_like(x)
        z = lin(mod, one, w2, b2)
        return vjp(L(w2, b2), one, R / stab(z, STAB))
    if name == "zbox":
        lo, hi = p
        lo = x.flatten(1).min(1)[0].view(-1, *[1] * (x.dim() - 1)).expand_as(x) if lo is None else torch.full_like(x, lo)
        hi = x.flatten(1).max(1)[0].view(-1, *[1] * (x.dim() - 1)).expand_as(x) if hi is None else torch.full_like(x, hi)
        z = lin(mod, x, W, b) - lin(mod, lo, pos(W), pos(b)) - lin(mod, hi, neg(W), neg(b))
        s = R / stab(z, STAB)
        return x * vjp(L(W, b), x, s) - lo * vjp(L(pos(W), pos(b)), lo, s) - hi * vjp(L(neg(W), neg(b)), hi, s)
    raise ValueError(name)


class RuleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, wrap):
        ctx.save_for_backward(x)
        ctx.wrap = wrap
        with torch.no_grad():
            return wrap.mod(x)

    @staticmethod
    def backward(ctx, R):
        (x,) = ctx.saved_tensors
        mod, rule = ctx.wrap.mod, ctx.wrap.rule
        if rule[0] == "pass":
            return R, None
        if rule[0] == "gradient":
            return vjp(mod, x, R), None
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                            nn.ConvTranspose3d)):
            return weighted_rule(mod, x, R, rule), None
        # epsilon over the op itself (BN, pools)
        z = mod(x)
        return x * vjp(mod, x, R / stab(z, rule[1])), None


class AddFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, e):
        ctx.save_for_backward(a, b)
        ctx.e = e
        return a + b

    @staticmethod
    def backward(ctx, R):
        a, b = ctx.saved_tensors
        s = R / stab(a + b, ctx.e)
        return a * s, b * s, None


class Wrap(nn.Module):
    def __init__(self, mod, rule):
        super().__init__()
        self.mod, self.rule = mod, rule

    def forward(self, *x):
        if isinstance(self.mod, Add):
            return AddFn.apply(x[0], x[1], self.rule[1])
        return RuleFn.apply(x[0], self)


WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fold_bn(net, pairs):
    """The canonizer: BN folded into the conv before it (named pairs)."""
    net = copy.deepcopy(net)
    for conv_name, bn_name in pairs:
        *path, c = conv_name.split(".")
        parent = net
        for q in path:
            parent = getattr(parent, q)
        conv, bn = getattr(parent, c), getattr(parent, bn_name.split(".")[-1])
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        t = bn.bias - bn.running_mean * s
        with torch.no_grad():
            shape = [-1] + [1] * (conv.weight.dim() - 1)
            if isinstance(conv, WEIGHTED[3:]):
                shape = [1, -1] + [1] * (conv.weight.dim() - 2)
            conv.weight.copy_(conv.weight * s.view(shape))
            b = conv.bias if conv.bias is not None else torch.zeros_like(t)
            conv.bias = nn.Parameter(b * s + t)
        setattr(parent, bn_name.split(".")[-1], nn.Identity())
    return net


def composite_rules(comp, eps=1e-9, gamma=0.25, low=None, high=None):
    """module -> rule, as the composite defines it (first: the first weighted module)."""
    captum = comp == "captum"
    conv = {"captum": ("epsilon", eps), "epsilon_plus": ("zplus",), "epsilon_plus_flat": ("zplus",),
            "epsilon_alpha2_beta1": ("alpha_beta", 2.0, 1.0), "epsilon_gamma_box": ("gamma", gamma)}[comp]
    first = {"epsilon_plus_flat": ("flat",), "epsilon_gamma_box": ("zbox", low, high)}.get(comp)
    norm = ("epsilon", eps if captum else 1e-6)

    def rule_of(m, is_first):
        if isinstance(m, WEIGHTED):
            return first if (is_first and first) else conv
        if isinstance(m, nn.Linear):
            return first if (is_first and first) else ("epsilon", eps)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            return ("epsilon", eps)
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            return ("epsilon", eps) if captum else ("gradient",)
        if isinstance(m, (nn.AvgPool3d, nn.AvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveAvgPool2d, Add)):
            return norm
        if isinstance(m, (nn.ReLU, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            return ("pass",)
        if isinstance(m, nn.Upsample) and m.mode in ("linear", "bilinear", "trilinear"):
            return norm
        return None
    return rule_of


def wrap_net(net, rule_of):
    net = copy.deepcopy(net)
    seen_first = [False]

    def walk(parent):
        for name, m in list(parent.named_children()):
            is_first = isinstance(m, WEIGHTED + (nn.Linear,)) and not seen_first[0]
            if is_first:
                seen_first[0] = True
            r = rule_of(m, is_first)
            if r is not None:
                setattr(parent, name, Wrap(m, r))
            else:
                walk(m)
    walk(net)
    return net


def ref_lrp(net, x, target, rule_of, start=None, layer=None):
    """(map at the input or relevance at a layer's output, score)."""
    w = wrap_net(net, rule_of)
    xi = x.clone().requires_grad_(True)
    cap = {}
    if layer:
        mod = w
        for q in layer.split("."):
            mod = getattr(mod, q)

        def hook(m, i, o):
            o.retain_grad()
            cap["a"] = o
        h = mod.register_forward_hook(hook)
    y = w(xi)
    if start is None:
        score = float(y[0, target])
        g = torch.zeros_like(y)
        g[0, target] = 1.0
    else:
        g, score = start(y)
    y.backward(g)
    if layer:
        h.remove()
        return cap["a"].grad * score, score
    return xi.grad * score, score


# ---- the driver -------------------------------------------------------------------


def run(R, pt, x, args):
    got, meta = R.attr(pt, x, ["--method", "lrp"] + args if "--layer" not in args else
                       ["--method", "layer_lrp"] + args)
    return got, meta


def check(R, name, pt, x, target, net, comp, params=(), layer=None, start=None, rule_of=None):
    args = ["--target", str(target), "--param", "composite=" + comp]
    for p in params:
        args += ["--param", p]
    if layer:
        args += ["--layer", layer, "--no-upsample"]
    got, meta = run(R, pt, x, args)
    if got is None:
        return ok(False, "%s: esg-attr failed: %s" % (name, meta["error"]))
    ref, score = ref_lrp(net, x, target, rule_of or composite_rules(comp), start=start, layer=layer)
    good, why = close(got, ref.detach().numpy(), 1e-4)
    d = json.loads(meta.get("esg.delta", "null"))
    want = float(np.asarray(got, np.float64).sum()) - score
    dgood = d is not None and abs(d[0] - want) <= 1e-4 * max(1.0, abs(score))
    return ok(good and dgood, "%s: %s%s matches the reference (%s; delta %s = sum - score %.6g)"
              % (name, comp, " " + " ".join(params) if params else "", why, d, want))


def fixture_cases(R, work):
    x = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    net = net3d()
    pt = os.path.join(work, "net3dl.pt")
    torch.jit.trace(net, x).save(pt)
    folded = fold_bn(net, [("conv1", "bn1")])
    for comp in ("captum", "epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box"):
        ref_net = net if comp == "captum" else folded
        check(R, "net3d", pt, x, 1, ref_net, comp)
    check(R, "net3d", pt, x, 0, folded, "epsilon_gamma_box", ("low=-3", "high=3"),
          rule_of=composite_rules("epsilon_gamma_box", low=-3.0, high=3.0))
    check(R, "net3d", pt, x, 2, net, "captum", ("epsilon=0.01",), rule_of=composite_rules("captum", eps=0.01))
    check(R, "net3d", pt, x, 1, folded, "captum", ("canonize=merge_bn",))
    # per-type overrides: wsquare first conv, gamma 0.5 elsewhere, winner-take-all pools
    base = composite_rules("captum")

    def over(m, is_first):
        if isinstance(m, nn.Conv3d) and is_first:
            return ("wsquare",)
        if isinstance(m, WEIGHTED):
            return ("gamma", 0.5)
        if isinstance(m, nn.MaxPool3d):
            return ("gradient",)
        return base(m, is_first)
    check(R, "net3d", pt, x, 1, net, "captum", ("rule.Convolution=gamma:0.5", "rule.First=wsquare",
                                                 "rule.MaxPool=wta"), rule_of=over)
    rf = os.path.join(work, "rules.txt")
    with open(rf, "w") as f:
        f.write("# a rule file\nConvolution = alpha1_beta0\nLinear = epsilon:0.001   # the head\n")

    def over2(m, is_first):
        if isinstance(m, WEIGHTED):
            return ("alpha_beta", 1.0, 0.0)
        if isinstance(m, nn.Linear):
            return ("epsilon", 1e-3)
        return base(m, is_first)
    check(R, "net3d", pt, x, 1, net, "captum", ("rule_file=" + rf,), rule_of=over2)
    x2 = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(6))
    nu = net2du()
    ptu = os.path.join(work, "net2du.pt")
    torch.jit.trace(nu, x2).save(ptu)
    for comp in ("captum", "epsilon_plus_flat"):
        check(R, "net2d with instance norm (pass) and bilinear upsampling (epsilon)", ptu, x2, 0, nu, comp)
    check(R, "net3d", pt, x, 1, net, "captum", layer="conv2")
    check(R, "net3d", pt, x, 1, folded, "epsilon_plus", layer="up")
    # conservation without biases: the map sums to the score (the input
    # scaled up: the net is then positively homogeneous, and the 1e-6
    # stabilisers of Zennit's rules absorb nothing measurable)
    x = 1000 * x
    nb = net3d(bias=False)
    ptb = os.path.join(work, "net3d_nobias.pt")
    torch.jit.trace(nb, x).save(ptb)
    x2 = 1000 * torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(4))
    nb2 = net2d_nobias()
    ptb2 = os.path.join(work, "net2d_nobias.pt")
    torch.jit.trace(nb2, x2).save(ptb2)
    # z-plus and alpha-beta are left out: they lose (or add) relevance where one
    # sign's contributions are all zero -- a property of those rules, not of
    # the biases (their maps are checked against the reference above)
    for net_, pt_, xx, dim in ((nb, ptb, x, "3D"), (nb2, ptb2, x2, "2D")):
        for comp, params in (("captum", ()), ("captum", ("rule.MaxPool=wta",)), ("epsilon_gamma_box", ()),
                             ("captum", ("rule.First=wsquare", "rule.Convolution=gamma:0.5")),
                             ("captum", ("rule.First=flat",))):
            args = ["--method", "lrp", "--target", "1", "--param", "composite=" + comp]
            for p in params:
                args += ["--param", p]
            got, meta = R.attr(pt_, xx, args)
            if got is None:
                ok(False, "conservation %s: esg-attr failed: %s" % (comp, meta["error"]))
                continue
            with torch.no_grad():
                score = float(net_(xx)[0, 1])
            s = float(np.asarray(got, np.float64).sum())
            ok(abs(s - score) <= 1e-4 * abs(score) and abs(score) > 1e-3,
               "conservation, %s net without biases, %s%s: sum %.6g = score %.6g"
               % (dim, comp, " " + " ".join(params) if params else "", s, score))


def shipped_cases(R, root, work):
    unet_pt = os.path.join(root, "share", "models", "unet3d.pt")
    sys.path.insert(0, os.path.join(root, "share", "demo"))
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
    target = 1
    pairs = [(b + ".conv" + k, b + ".bn" + k) for b in ("enc1", "enc2", "bottleneck", "dec2", "dec1")
             for k in ("1", "2")]
    folded = fold_bn(net, pairs)
    for comp in ("captum", "epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus_flat"):
        e = 1e-9 if comp == "captum" else 1e-6

        def start(y, e=e):
            ym = y * mask
            S = ym[:, target].sum()
            g = torch.zeros_like(y)
            g[:, target] = (ym * ym / (stab(S, e) * stab(ym, e)))[:, target]
            return g, float(S)
        check(R, "unet3d fixed-mask (shipped)", wrapped, x, target, net if comp == "captum" else folded, comp,
              start=start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", default=".")
    ap.add_argument("--root", default=os.path.join(HERE, "..", ".."))
    ap.add_argument("--shipped", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    R = RL.Runner(a.bin, a.work)
    fixture_cases(R, a.work)
    if a.shipped:
        shipped_cases(R, a.root, a.work)
    print("1..%d" % RL.n_tests)
    return 1 if RL.n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
