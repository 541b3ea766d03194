#!/usr/bin/python3
# needs: torch, captum
"""captum_oracle - esegeta against Captum itself (not a transcription of it).

  captum_oracle.py [--list] [--only SUBSTR] WORKDIR

For every case: build the fixture model (eager PyTorch, seeded), trace it
into WORKDIR, write the input as a tensor stream, run esg-attr / esg-metric
from $ESG_BIN (default build/bin) on the traced model, run Captum 0.8 on the
eager model with the same input, target, baselines and parameters, and
compare.  One line per case:

  PASS name rel=R tol=T        R = max|esg - captum| / max|captum|
  FAIL name rel=R tol=T ...    (or the error)
  SKIP name reason

Captum is found through $CAPTUM_PATH (the folder holding the `captum`
package; default ../shared/captum beside the checkout); without it the
script prints one line "SKIP captum not importable (...)" and exits 0.

Adding a case: one `case(...)` call below (fixture name, esg-attr
arguments, a function running Captum and returning the attribution).  A
new fixture is an nn.Module class and one line in FIXTURES.  Random
methods get esegeta's draws replayed (tests/py/esg_rng.py) into Captum
through its own arguments (perturb_func) or by standing in for the draw
Captum makes (torch.normal / np.random) during the call.

Tolerance: rel <= tol, 1e-5 by default (float32 on both sides, different
summation orders); a case states a larger one with its reason.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import safetensors_ref as st  # noqa: E402
from esg_rng import Rng  # noqa: E402

CAPTUM_PATH = os.environ.get("CAPTUM_PATH") or os.path.join(ROOT, "..", "shared", "captum")
ESG_BIN = os.environ.get("ESG_BIN") or os.path.join(ROOT, "build", "bin")

# ---- fixture models -----------------------------------------------------------------
# Every nonlinearity is a module used once (Captum's hooks need modules, and
# refuse a module called twice); esegeta sees the traced graph.


class Cnn2d(nn.Module):
    """conv-ReLU blocks, two 2x2 max pools (ReLU -> MaxPool), global average
    pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class Cnn2dAvg(Cnn2d):
    """Cnn2d with average pools: no max pool, both rules agree."""

    def __init__(self):
        super().__init__()
        self.pool1, self.pool2 = nn.AvgPool2d(2), nn.AvgPool2d(2)


class PoolFirst2d(nn.Module):
    """conv -> overlapping 3x3/2 max pool -> ReLU (the pool reads a conv, so
    Captum applies its maxpool rule there, scattered with max_unpool), then a
    2x2 pool after a ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool1, self.relu1 = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.ReLU()
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = self.relu1(self.pool1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class Block(nn.Module):
    """torchvision's BasicBlock, one ReLU module per use."""

    def __init__(self, cin, cout, stride, dims=2):
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        BN = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv1, self.bn1, self.relu1 = Conv(cin, cout, 3, stride, 1, bias=False), BN(cout), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = Conv(cout, cout, 3, 1, 1, bias=False), BN(cout), nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(Conv(cin, cout, 1, stride, bias=False), BN(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + idt)


class ResNet2d(nn.Module):
    """ResNet stem (conv, batch norm, ReLU, overlapping 3x3/2 max pool), two
    residual blocks (one strided with a projection), global pool, linear."""

    def __init__(self, dims=2):
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        BN = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        Pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.dims = dims
        self.conv1, self.bn1, self.relu = Conv(1, 4, 3, 1, 1, bias=False), BN(4), nn.ReLU(inplace=True)
        self.maxpool = Pool(3, 2, 1)
        self.layer1, self.layer2 = Block(4, 4, 1, dims), Block(4, 8, 2, dims)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(x.flatten(2).mean(2))


class ResNet3d(ResNet2d):
    def __init__(self):
        super().__init__(3)


class UNet3d(nn.Module):
    """3D U-Net: conv-BN-ReLU encoder, 2x2x2 max pool, bottleneck,
    transposed-conv decoder, concatenation skip; scores = per-class mean of
    the segmentation logits."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.pool = nn.MaxPool3d(2)
        self.enc2 = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose3d(8, 4, 2, 2)
        self.dec = nn.Sequential(nn.Conv3d(8, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        d = self.dec(torch.cat([self.up(e2), e1], 1))
        return self.head(d).flatten(2).mean(2)


class Overlap3d(nn.Module):
    """conv -> overlapping 3x3x3/2 max pool -> sigmoid; conv -> tanh -> 2x2x2 pool."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool1, self.act1 = nn.Conv3d(1, 3, 3, padding=1), nn.MaxPool3d(3, 2, 1), nn.Sigmoid()
        self.conv2, self.act2, self.pool2 = nn.Conv3d(3, 4, 3, padding=1), nn.Tanh(), nn.MaxPool3d(2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.act1(self.pool1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        return self.fc(x.flatten(2).mean(2))


class Readers2d(nn.Module):
    """A max pool and a ReLU whose inputs have other readers (a skip):
    Captum's hooks replace the input's gradient, the others' survive only
    where the rule falls back to the gradient."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool1 = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        t = self.conv1(x)
        p = self.pool1(t) + F.avg_pool2d(t, 2)          # t: pool and avg pool read it
        u = self.conv2(p)
        y = self.relu2(u) + 0.5 * u                      # u: ReLU and a skip read it
        return self.fc(y.mean((2, 3)))


SHIPPED = {"classifier2d": os.path.join(ROOT, "share", "models", "classifier2d.pt")}


def shipped_classifier2d():
    """The shipped 2D classifier: its eager class (share/demo), the shipped weights."""
    sys.path.insert(0, os.path.join(ROOT, "share", "demo"))
    from train_classifier2d import Classifier2D
    m = Classifier2D()
    m.load_state_dict(torch.jit.load(SHIPPED["classifier2d"]).state_dict())
    return m


FIXTURES = {
    # name: (class, input shape)
    "cnn2d": (Cnn2d, (1, 1, 16, 16)),
    "cnn2d_avg": (Cnn2dAvg, (1, 1, 16, 16)),
    "poolfirst2d": (PoolFirst2d, (1, 1, 16, 16)),
    "resnet2d": (ResNet2d, (1, 1, 16, 16)),
    "resnet3d": (ResNet3d, (1, 1, 8, 8, 8)),
    "unet3d": (UNet3d, (1, 1, 8, 8, 8)),
    "overlap3d": (Overlap3d, (1, 1, 8, 8, 8)),
    "readers2d": (Readers2d, (1, 1, 12, 12)),
    # shipped models (share/models): conv-BN-ReLU-MaxPool blocks, global max pool
    "classifier2d": (shipped_classifier2d, (1, 1, 64, 64)),
}


def build(name):
    cls, shape = FIXTURES[name]
    torch.manual_seed(sum(map(ord, name)))
    m = cls()
    for mod in [] if name in SHIPPED else m.modules():  # batch norm with non-trivial statistics
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm3d)):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    m.eval()
    g = torch.Generator().manual_seed(7 + len(name))
    x = torch.randn(shape, generator=g)
    return m, x


# ---- the cases --------------------------------------------------------------------------

CASES = []


def case(name, fixture, esg, captum, tol=1e-5, target=1, baselines=None, tool="attr", note=""):
    """esg: esg-attr arguments (list); captum(model, x, target, baselines)
    returns Captum's attribution; baselines: None (zero) or a list of
    tensors (written to a stream and given as --baseline file:...)."""
    CASES.append(dict(name=name, fixture=fixture, esg=esg, captum=captum, tol=tol,
                      target=target, baselines=baselines, tool=tool, note=note))


def C():
    import captum.attr as ca
    return ca


def zero_like(x):
    return torch.zeros_like(x)


def bl_k(x, k, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [0.3 * torch.randn(x.shape, generator=g) for _ in range(k)]


ALL = [f for f in FIXTURES if f not in SHIPPED]
MAXPOOL = ["cnn2d", "poolfirst2d", "resnet2d", "resnet3d", "unet3d", "overlap3d", "readers2d"]

# DeepLift family (issue 13): Captum's map by default.
for f in ALL:
    case("deeplift/" + f, f, ["--method", "deeplift"],
         lambda m, x, t, b: C().DeepLift(m).attribute(x, zero_like(x), target=t))
for f in ["cnn2d", "poolfirst2d", "resnet3d", "unet3d"]:
    case("deeplift_shap/" + f, f, ["--method", "deeplift_shap"],
         lambda m, x, t, b: C().DeepLiftShap(m).attribute(x, torch.cat(b), target=t),
         baselines="k3")
    case("deeplift_const/" + f, f, ["--method", "deeplift", "--baseline", "const:0.25"],
         lambda m, x, t, b: C().DeepLift(m).attribute(x, torch.full_like(x, 0.25), target=t))
LAYERS = {"cnn2d": "conv2", "poolfirst2d": "conv2", "resnet2d": "layer1", "resnet3d": "layer1.conv2",
          "unet3d": "enc2", "overlap3d": "conv2", "readers2d": "conv2", "cnn2d_avg": "conv2"}
for f in ["cnn2d", "poolfirst2d", "resnet2d", "unet3d", "overlap3d"]:
    L = LAYERS[f]
    case("layer_deeplift/" + f, f, ["--method", "layer_deeplift", "--layer", L],
         lambda m, x, t, b, L=L: C().LayerDeepLift(m, dict(m.named_modules())[L]).attribute(
             x, zero_like(x), target=t))
for f in ["cnn2d", "unet3d"]:
    L = LAYERS[f]
    case("layer_deeplift_shap/" + f, f, ["--method", "layer_deeplift_shap", "--layer", L],
         lambda m, x, t, b, L=L: C().LayerDeepLiftShap(m, dict(m.named_modules())[L]).attribute(
             x, torch.cat(b), target=t), baselines="k3")

# The shipped classifier.
SH = "classifier2d"
case("deeplift/" + SH, SH, ["--method", "deeplift"],
     lambda m, x, t, b: C().DeepLift(m).attribute(x, zero_like(x), target=t))
case("deeplift_shap/" + SH, SH, ["--method", "deeplift_shap"],
     lambda m, x, t, b: C().DeepLiftShap(m).attribute(x, torch.cat(b), target=t), baselines="k3")
case("layer_deeplift/" + SH, SH, ["--method", "layer_deeplift", "--layer", "block2"],
     lambda m, x, t, b: C().LayerDeepLift(m, m.block2).attribute(x, zero_like(x), target=t))
case("integrated_gradients/" + SH, SH, ["--method", "integrated_gradients", "--param", "n_steps=16"],
     lambda m, x, t, b: C().IntegratedGradients(m).attribute(x, zero_like(x), target=t, n_steps=16))
case("guided_backprop/" + SH, SH, ["--method", "guided_backprop"],
     lambda m, x, t, b: C().GuidedBackprop(m).attribute(x, target=t))
case("layer_gradcam/" + SH, SH, ["--method", "layer_gradcam", "--layer", "relu4", "--no-upsample"],
     lambda m, x, t, b: C().LayerGradCam(m, m.relu4).attribute(x, target=t))

# Gradient family.
for f in ["cnn2d", "resnet2d", "unet3d"]:
    case("saliency/" + f, f, ["--method", "saliency"],
         lambda m, x, t, b: C().Saliency(m).attribute(x, target=t))
    case("input_x_gradient/" + f, f, ["--method", "input_x_gradient"],
         lambda m, x, t, b: C().InputXGradient(m).attribute(x, target=t))
    case("integrated_gradients/" + f, f, ["--method", "integrated_gradients", "--param", "n_steps=16"],
         lambda m, x, t, b: C().IntegratedGradients(m).attribute(x, zero_like(x), target=t, n_steps=16))
    case("guided_backprop/" + f, f, ["--method", "guided_backprop"],
         lambda m, x, t, b: C().GuidedBackprop(m).attribute(x, target=t))
    case("deconvolution/" + f, f, ["--method", "deconvolution"],
         lambda m, x, t, b: C().Deconvolution(m).attribute(x, target=t))
case("integrated_gradients_riemann/poolfirst2d", "poolfirst2d",
     ["--method", "integrated_gradients", "--param", "n_steps=10", "--param", "method=riemann_trapezoid"],
     lambda m, x, t, b: C().IntegratedGradients(m).attribute(x, zero_like(x), target=t, n_steps=10,
                                                             method="riemann_trapezoid"))

# Layer family and CAM.
for f in ["cnn2d", "resnet2d", "unet3d"]:
    L = LAYERS[f]

    def lay(m, L=L):
        return dict(m.named_modules())[L]
    case("layer_gradcam/" + f, f, ["--method", "layer_gradcam", "--layer", L, "--no-upsample"],
         lambda m, x, t, b, lay=lay: C().LayerGradCam(m, lay(m)).attribute(x, target=t))
    case("layer_activation/" + f, f, ["--method", "layer_activation", "--layer", L],
         lambda m, x, t, b, lay=lay: C().LayerActivation(m, lay(m)).attribute(x))
    case("layer_gradient_x_activation/" + f, f, ["--method", "layer_gradient_x_activation", "--layer", L],
         lambda m, x, t, b, lay=lay: C().LayerGradientXActivation(m, lay(m)).attribute(x, target=t))
    case("layer_conductance/" + f, f, ["--method", "layer_conductance", "--layer", L, "--param", "n_steps=12"],
         lambda m, x, t, b, lay=lay: C().LayerConductance(m, lay(m)).attribute(
             x, zero_like(x), target=t, n_steps=12))
    case("layer_integrated_gradients/" + f, f,
         ["--method", "layer_integrated_gradients", "--layer", L, "--param", "n_steps=12"],
         lambda m, x, t, b, lay=lay: C().LayerIntegratedGradients(m, lay(m)).attribute(
             x, zero_like(x), target=t, n_steps=12))
    case("internal_influence/" + f, f, ["--method", "internal_influence", "--layer", L, "--param", "n_steps=12"],
         lambda m, x, t, b, lay=lay: C().InternalInfluence(m, lay(m)).attribute(
             x, zero_like(x), target=t, n_steps=12))
    case("guided_gradcam/" + f, f, ["--method", "guided_gradcam", "--layer", L],
         lambda m, x, t, b, lay=lay: C().GuidedGradCam(m, lay(m)).attribute(x, target=t))

# Perturbation family.
for f in ["cnn2d", "unet3d"]:
    nd = len(FIXTURES[f][1]) - 2
    w, s = ",".join(["1"] + ["4"] * nd), ",".join(["1"] + ["2"] * nd)
    case("occlusion/" + f, f, ["--method", "occlusion", "--param", "sliding_window_shapes=" + w,
                               "--param", "strides=" + s],
         lambda m, x, t, b, nd=nd: C().Occlusion(m).attribute(
             x, sliding_window_shapes=(1,) + (4,) * nd, strides=(1,) + (2,) * nd, target=t, baselines=0.0))


def grid_mask(shape, k):
    """esegeta's feature_mask=grid:K: blocks of K per spatial axis, one id per
    block in C order, shared by all channels."""
    sp = shape[2:]
    nb = [(n + k - 1) // k for n in sp]
    idx = torch.zeros(sp, dtype=torch.long)
    grids = torch.meshgrid(*[torch.arange(n) // k for n in sp], indexing="ij")
    for a, gr in enumerate(grids):
        idx = idx * nb[a] + gr
    return idx.view((1, 1) + tuple(sp)).expand(shape[0], shape[1], *sp)


for f in ["cnn2d", "unet3d"]:
    case("feature_ablation/" + f, f, ["--method", "feature_ablation", "--param", "feature_mask=grid:4"],
         lambda m, x, t, b: C().FeatureAblation(m).attribute(x, target=t, baselines=0.0,
                                                           feature_mask=grid_mask(x.shape, 4)))


# Random methods: esegeta's draws (seed 0, record 0: Rng(0, 0, stream)) stand
# in for the draws Captum makes during the call.
STREAM_NT, STREAM_SHAP = 1, 2


@contextlib.contextmanager
def replay(normal=None, choice=None, uniform=None):
    """torch.normal / np.random.choice / np.random.uniform return the given
    tensors / lists once each, in call order (what NoiseTunnel and
    GradientShap draw with)."""
    saved = (torch.normal, np.random.choice, np.random.uniform)
    normal, choice, uniform = list(normal or []), list(choice or []), list(uniform or [])
    torch.normal = lambda *a, **k: normal.pop(0)
    np.random.choice = lambda *a, **k: choice.pop(0)
    np.random.uniform = lambda *a, **k: uniform.pop(0)
    try:
        yield
    finally:
        torch.normal, np.random.choice, np.random.uniform = saved
    assert not normal and not choice and not uniform, "draws left over"


def nt_noise(x, S, sd, seed=0):
    rng = Rng(seed, 0, STREAM_NT)
    return torch.cat([rng.noise(x.shape, sd) for _ in range(S)])  # one item: sample-major


def captum_smoothgrad(m, x, t, b, S=5, sd=1.0, base="Saliency", nt_type="smoothgrad"):
    with replay(normal=[nt_noise(x, S, sd)]):
        return C().NoiseTunnel(getattr(C(), base)(m)).attribute(
            x, nt_type=nt_type, nt_samples=S, stdevs=sd, target=t)


def captum_gradient_shap(m, x, t, b, S=5, sd=0.0):
    rng = Rng(0, 0, STREAM_SHAP)
    K = len(b)
    idx, noise, alpha = [], [], []
    for _ in range(S):  # esegeta's order per sample: baseline, noise, alpha
        idx.append(min(int(rng.uniform() * K), K - 1))
        noise.append(rng.noise(x.shape, sd) if sd > 0 else torch.zeros_like(x))
        alpha.append(np.float32(rng.uniform()).item())
    with replay(normal=[torch.cat(noise)], choice=[np.array(idx)], uniform=[np.array(alpha)]):
        return C().GradientShap(m).attribute(x, torch.cat(b), n_samples=S, stdevs=sd, target=t)


for f in ["cnn2d", "unet3d"]:
    case("noise_tunnel_smoothgrad/" + f, f, ["--method", "noise_tunnel"], captum_smoothgrad)
    case("noise_tunnel_vargrad_ig/" + f, f,
         ["--method", "noise_tunnel", "--param", "base=integrated_gradients", "--param", "n_steps=8",
          "--param", "nt_type=vargrad", "--param", "nt_samples=3", "--param", "stdevs=0.2"],
         lambda m, x, t, b: captum_smoothgrad_ig(m, x, t))
    case("gradient_shap/" + f, f, ["--method", "gradient_shap"], captum_gradient_shap, baselines="k3")
    case("gradient_shap_noise/" + f, f,
         ["--method", "gradient_shap", "--param", "n_samples=4", "--param", "stdevs=0.1"],
         lambda m, x, t, b: captum_gradient_shap(m, x, t, b, 4, 0.1), baselines="k3")


def captum_smoothgrad_ig(m, x, t):
    with replay(normal=[nt_noise(x, 3, 0.2)]):
        return C().NoiseTunnel(C().IntegratedGradients(m)).attribute(
            x, nt_type="vargrad", nt_samples=3, stdevs=0.2, target=t, n_steps=8)


# Metrics (esg-metric), perturbations shared through a stream.
def perturbations(x, S, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn((S,) + tuple(x.shape), generator=g)


def esg_infidelity(w, c, n, x, path, method, extra=()):
    P = perturbations(x, 6, 0.05, n)
    pp = os.path.join(w.d, "pert%d.st.zst" % n)
    st.write_stream(pp, [([("perturbations", P.numpy())], {"esg.format": "1"})])
    maps = os.path.join(w.d, "maps%d.st.zst" % n)
    esg("attr", "-m", path, "--threads", "1", "--target", c["target"], "--method", method, *extra,
        "-o", maps, os.path.join(w.d, c["fixture"] + ".st.zst"))
    tsv = esg("metric", "-m", path, "--threads", "1", "--metric", c["metric"],
              "--param", "perturbations=" + pp, *c["metric_args"], maps)
    rows = [r.split("\t") for r in tsv.strip().split("\n")[1:]]
    return torch.tensor([float(r[7]) for r in rows if r[6] == c["metric"]]), P


def metric_case(name, fixture, metric, method, captum, metric_args=(), attr_args=(), tol=1e-3):
    """tol 1e-3: Captum takes f(x) - f(x - I) and squares it in float32 (an
    infidelity of 1e-9 keeps ~4 digits), esegeta in double."""
    def run(w, c, n, x, path):
        return esg_infidelity(w, c, n, x, path, method, attr_args)
    CASES.append(dict(name=name, fixture=fixture, esg=None, captum=captum, tol=tol, target=1,
                      baselines=None, tool="metric", metric=metric, metric_args=list(metric_args),
                      run=run, note=""))


def captum_infidelity(method, mbi):
    def f(m, x, t, P):
        a = {"saliency": lambda: C().Saliency(m).attribute(x, target=t),
             "integrated_gradients": lambda: C().IntegratedGradients(m).attribute(x, target=t, n_steps=8)}[method]()

        def pf(inp, base=None):
            return P.view_as(inp), inp - P.view_as(inp)
        from captum.metrics import infidelity, infidelity_perturb_func_decorator
        if mbi:
            def pf2(inp, base=None):
                return inp - P.view_as(inp)
            fn = infidelity_perturb_func_decorator(True)(pf2)
            return infidelity(m, fn, x, a, baselines=torch.zeros_like(x), target=t, n_perturb_samples=P.shape[0])
        return infidelity(m, pf, x, a, target=t, n_perturb_samples=P.shape[0])
    return f


def captum_sensitivity(method):
    def f(m, x, t, P):
        from captum.metrics import sensitivity_max
        ex = {"saliency": lambda inp, target: C().Saliency(m).attribute(inp, target=target),
              "integrated_gradients": lambda inp, target: C().IntegratedGradients(m).attribute(
                  inp, target=target, n_steps=8)}[method]

        def pf(inp, radius):
            return inp + P.view_as(inp)
        return sensitivity_max(ex, x, perturb_func=pf, n_perturb_samples=P.shape[0], target=t)
    return f


for f in ["cnn2d", "unet3d"]:
    metric_case("infidelity_saliency/" + f, f, "infidelity", "saliency", captum_infidelity("saliency", False))
    metric_case("infidelity_ig_mbi/" + f, f, "infidelity", "integrated_gradients",
                captum_infidelity("integrated_gradients", True), attr_args=["--param", "n_steps=8"])
    metric_case("max_sensitivity_saliency/" + f, f, "max_sensitivity", "saliency", captum_sensitivity("saliency"))
    metric_case("max_sensitivity_ig/" + f, f, "max_sensitivity", "integrated_gradients",
                captum_sensitivity("integrated_gradients"), attr_args=["--param", "n_steps=8"])


# maxpool_rule=complete: not Captum's map but completeness, sum(attr) =
# f(x) - f(0) within 1e-5 * max(1, |f(x) - f(0)|); the relative difference
# from Captum's map is reported (--measure prints both for doc/methods.md).
def completeness_case(f):
    def run(w, c, n, x, path):
        out = os.path.join(w.d, "out%d.st.zst" % n)
        esg("attr", "-m", path, "--threads", "1", "--target", c["target"], "--method", "deeplift",
            "--param", "maxpool_rule=complete", "-o", out, os.path.join(w.d, f + ".st.zst"))
        return read_attr(out)[1], None

    def captum(m, x, t, P):
        return None
    CASES.append(dict(name="deeplift_complete_sum/" + f, fixture=f, esg=None, captum=captum, tol=1e-5,
                      target=1, baselines=None, tool="completeness", run=run, note=""))


for f in MAXPOOL:
    completeness_case(f)


# ---- running ------------------------------------------------------------------------


def esg(tool, *args):
    p = subprocess.run([os.path.join(ESG_BIN, "esg-" + tool)] + [str(a) for a in args],
                       capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError("esg-%s %s: %s" % (tool, " ".join(map(str, args)), p.stderr.strip()[-300:]))
    return p.stdout


def write(path, arr):
    st.write_stream(path, [([("image", np.ascontiguousarray(np.asarray(arr, dtype=np.float32)))],
                            {"esg.format": "1"})])


def read_attr(path, name="attribution"):
    meta, ts = st.read_stream(path)[0]
    return meta, torch.tensor(np.array([t[3] for t in ts if t[0] == name][0], dtype=np.float32))


class Work:
    def __init__(self, d):
        self.d = d
        self.models = {}

    def fixture(self, name):
        if name not in self.models:
            m, x = build(name)
            path = SHIPPED.get(name) or os.path.join(self.d, name + ".pt")
            if name not in SHIPPED:
                with torch.no_grad():
                    torch.jit.trace(m, x).save(path)
            write(os.path.join(self.d, name + ".st.zst"), x.numpy())
            self.models[name] = (m, x, path)
        return self.models[name]


def fdiff(m, x, t):
    with torch.no_grad():
        return float(m(x)[0, t] - m(torch.zeros_like(x))[0, t])


def esg_part(w, c, n):
    """esegeta's side of a case: (result, extra); runs in a worker thread."""
    m, x, path = w.fixture(c["fixture"])
    if "run" in c:
        return c["run"](w, c, n, x, path)
    args = list(c["esg"])
    bl = None
    if c["baselines"] == "k3":
        bl = bl_k(x, 3)
        bp = os.path.join(w.d, "bl%d.st.zst" % n)
        write(bp, torch.cat(bl).numpy())
        args += ["--baseline", "file:" + bp]
    out = os.path.join(w.d, "out%d.st.zst" % n)
    esg("attr", "-m", path, "--threads", "1", "--target", c["target"], "-o", out, *args,
        os.path.join(w.d, c["fixture"] + ".st.zst"))
    return read_attr(out)[1], bl


def check_part(w, c, got, extra):
    """Captum's side and the comparison: one line."""
    m, x, path = w.fixture(c["fixture"])
    t = c["target"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if c["tool"] == "completeness":
            fd = fdiff(m, x, t)
            gap = abs(float(got.double().sum()) - fd) / max(1.0, abs(fd))
            cap = C().DeepLift(m).attribute(x, zero_like(x), target=t).detach()
            cgap = abs(float(cap.double().sum()) - fd) / max(1.0, abs(fd))
            diff = float((got - cap).abs().max() / cap.abs().max())
            word = "PASS" if gap <= c["tol"] else "FAIL"
            return ("%s %s rel=%.3g tol=%g (Captum's map: completeness gap %.3g, differs from this by %.3g)"
                    % (word, c["name"], gap, c["tol"], cgap, diff))
        if c["tool"] == "metric":
            ref = c["captum"](m, x.clone(), t, extra).detach().double().view(-1)
            rel = float((got.double() - ref).abs().max() / max(float(ref.abs().max()), 1e-30))
            word = "PASS" if rel <= c["tol"] else "FAIL"
            return "%s %s rel=%.3g tol=%g (esg %.6g, Captum %.6g)" % (word, c["name"], rel, c["tol"],
                                                                     float(got[0]), float(ref[0]))
        ref = c["captum"](m, x.clone(), t, extra).detach().float()
    if tuple(got.shape) != tuple(ref.shape):
        return "FAIL %s shape %s, Captum %s" % (c["name"], tuple(got.shape), tuple(ref.shape))
    scale = float(ref.abs().max())
    rel = float((got - ref).abs().max()) / (scale if scale > 0 else 1.0)
    word = "PASS" if rel <= c["tol"] else "FAIL"
    return "%s %s rel=%.3g tol=%g" % (word, c["name"], rel, c["tol"])


def main(argv):
    only = None
    listing = False
    while argv and argv[0].startswith("--"):
        if argv[0] == "--only":
            only, argv = argv[1], argv[2:]
        elif argv[0] == "--list":
            listing, argv = True, argv[1:]
        else:
            print(__doc__, file=sys.stderr)
            return 2
    cases = [c for c in CASES if only is None or only in c["name"]]
    if listing:
        for c in cases:
            print(c["name"])
        return 0
    sys.path.insert(0, CAPTUM_PATH)
    try:
        import captum  # noqa: F401
        import captum.attr  # noqa: F401
    except Exception as e:  # any import failure: skip, saying why
        print("SKIP captum not importable from %s (%s: %s)" % (CAPTUM_PATH, type(e).__name__, e))
        return 0
    torch.set_num_threads(1)
    d = argv[0] if argv else tempfile.mkdtemp(prefix="captum-oracle.")
    os.makedirs(d, exist_ok=True)
    w = Work(d)
    for c in cases:  # fixtures first (tracing is not thread-safe)
        w.fixture(c["fixture"])
    # esegeta's runs (processes) two at a time; Captum's in this thread, in order
    from concurrent.futures import ThreadPoolExecutor
    t0 = time.time()
    fail = 0
    with ThreadPoolExecutor(max_workers=int(os.environ.get("ORACLE_JOBS", "2"))) as pool:
        futs = [pool.submit(esg_part, w, c, n) for n, c in enumerate(cases)]
        for c, fu in zip(cases, futs):
            try:
                got, extra = fu.result()
                line = check_part(w, c, got, extra)
            except Exception as e:  # report, keep going
                line = "FAIL %s %s: %s" % (c["name"], type(e).__name__, str(e)[-400:])
            print(line, flush=True)
            fail |= line.startswith("FAIL")
    print("# %d cases in %.0f s" % (len(cases), time.time() - t0), flush=True)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
