#!/usr/bin/python3
# needs: torch captum
"""esg-attr --method lrp / layer_lrp against Captum 0.8's LRP and LayerLRP
themselves (the reference library, run as an oracle), as TAP.

  captum_lrp.py --bin BUILD/bin [--root REPO] [--work DIR]

Captum is found through $ESG_CAPTUM (a folder holding the captum package),
default ../shared/captum beside the checkout; without it every case is
skipped with one line.  Models Captum supports (Conv2d, Linear, ReLU,
MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d): a small net of all of
them, traced; the shipped share/models/classifier2d.pt rebuilt as its eager
class with the traced weights (its AdaptiveMaxPool2d has no Captum default:
it is given Captum's EpsilonRule, the rule Captum gives max pools).  Both
sides run the default (epsilon 1e-9 everywhere).

Tolerance: max |esg - captum| <= 1e-5 max |captum| (float32 both sides);
Captum's delta is score - sum(map), esg.delta is sum(map) - score:
|esg.delta + captum delta| <= 1e-5 |score| + 1e-6.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_layer as RL  # noqa: E402
from ref_layer import ok  # noqa: E402

REL = 1e-5


class Small2d(nn.Module):
    """[B, 2, 12, 12] -> [B, 4]: every layer type Captum's LRP knows."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(6, 5)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(5, 4)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.gap(self.pool2(self.relu2(self.bn2(self.conv2(x)))))
        return self.fc2(self.relu3(self.fc1(x.view(x.size(0), -1))))


def small2d():
    torch.manual_seed(3)
    m = Small2d()
    with torch.no_grad():
        m.bn2.running_mean.copy_(0.1 * torch.randn(6))
        m.bn2.running_var.copy_(0.5 + torch.rand(6))
        m.bn2.weight.copy_(0.8 + 0.4 * torch.rand(6))
        m.bn2.bias.copy_(0.1 * torch.randn(6))
    return m.eval()


def compare(R, name, pt, x, target, ref, ref_delta, score, extra=()):
    args = ["--method", "layer_lrp" if extra else "lrp", "--target", str(target)] + list(extra)
    got, meta = R.attr(pt, x, args)
    if got is None:
        return ok(False, "%s: esg-attr failed: %s" % (name, meta["error"]))
    ref = ref.detach().numpy().astype(np.float64)
    err = float(np.abs(got - ref).max())
    tol = REL * float(np.abs(ref).max())
    d = json.loads(meta.get("esg.delta", "null"))
    dd = abs(d[0] + float(ref_delta)) if d else float("inf")
    dtol = REL * abs(score) + 1e-6
    return ok(err <= tol and np.abs(ref).max() > 0 and dd <= dtol,
              "%s matches Captum (max |diff| %.3g, tolerance %.3g; delta %.6g vs Captum's %.6g)"
              % (name, err, tol, d[0] if d else float("nan"), -float(ref_delta)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", default=os.path.join(HERE, "..", ".."))
    ap.add_argument("--work", default=".")
    a = ap.parse_args()
    cap = os.environ.get("ESG_CAPTUM") or os.path.join(a.root, "..", "shared", "captum")
    sys.path.insert(0, cap)
    try:
        from captum.attr import LRP, LayerLRP
        from captum.attr._utils.lrp_rules import EpsilonRule
    except Exception as e:  # noqa: BLE001
        print("ok 1 # SKIP Captum not found in %s (set ESG_CAPTUM): %s" % (cap, str(e).splitlines()[0]))
        print("1..1")
        return 0
    torch.set_num_threads(1)
    R = RL.Runner(a.bin, a.work)

    def captum_case(name, net, pt, x, target, layer=None, setup=None):
        if setup:
            setup(net)
        if layer:
            mod = net
            for p in layer.split("."):
                mod = getattr(mod, p)
            attr, delta = LayerLRP(net, mod).attribute(x, target=target, return_convergence_delta=True)
        else:
            attr, delta = LRP(net).attribute(x, target=target, return_convergence_delta=True)
        with torch.no_grad():
            score = float(net(x)[0, target])
        extra = ["--layer", layer, "--no-upsample"] if layer else ()
        compare(R, name, pt, x, target, attr, delta[0], score, extra)

    net = small2d()
    x = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(5))
    pt = os.path.join(a.work, "small2d.pt")
    torch.jit.trace(net, x).save(pt)
    for t in (0, 2):
        captum_case("small2d (conv, BN, max / avg / adaptive pools, linear), target %d" % t, small2d(), pt, x, t)
    captum_case("small2d: layer_lrp at conv2 (LayerLRP)", small2d(), pt, x, 1, layer="conv2")
    captum_case("small2d: layer_lrp at fc1 (LayerLRP)", small2d(), pt, x, 1, layer="fc1")

    cls_pt = os.path.join(a.root, "share", "models", "classifier2d.pt")
    sys.path.insert(0, os.path.join(a.root, "share", "demo"))
    import train_classifier2d as TC

    def eager():
        n = TC.Classifier2D().eval()
        n.load_state_dict(torch.jit.load(cls_pt).state_dict())
        return n

    def gp_rule(n):
        n.global_pool.rule = EpsilonRule()

    xs = np.load(os.path.join(a.root, "share", "data", "angio2d_20001_aneurysm.npy")).astype(np.float32)
    xc = torch.from_numpy((xs - xs.mean()) / xs.std()).reshape(1, 1, *xs.shape[-2:])
    with torch.no_grad():
        t = int(eager()(xc).argmax(1)[0])
    captum_case("classifier2d (shipped), target %d" % t, eager(), cls_pt, xc, t, setup=gp_rule)
    captum_case("classifier2d (shipped), target %d" % (1 - t), eager(), cls_pt, xc, 1 - t, setup=gp_rule)
    captum_case("classifier2d: layer_lrp at block2.conv", eager(), cls_pt, xc, t, layer="block2.conv",
                setup=gp_rule)
    print("1..%d" % RL.n_tests)
    return 1 if RL.n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
