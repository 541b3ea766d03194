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
}


def build(name):
    cls, shape = FIXTURES[name]
    torch.manual_seed(sum(map(ord, name)))
    m = cls()
    for mod in m.modules():  # batch norm with non-trivial statistics
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


ALL = list(FIXTURES)
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
            path = os.path.join(self.d, name + ".pt")
            with torch.no_grad():
                torch.jit.trace(m, x).save(path)
            write(os.path.join(self.d, name + ".st.zst"), x.numpy())
            self.models[name] = (m, x, path)
        return self.models[name]


def run_case(w, c, n):
    m, x, path = w.fixture(c["fixture"])
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
    _, got = read_attr(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = c["captum"](m, x.clone(), c["target"], bl)
    ref = ref.detach().float()
    if tuple(got.shape) != tuple(ref.shape):
        return "FAIL %s shape %s, Captum %s" % (c["name"], tuple(got.shape), tuple(ref.shape)), None
    scale = float(ref.abs().max())
    rel = float((got - ref).abs().max()) / (scale if scale > 0 else 1.0)
    word = "PASS" if rel <= c["tol"] else "FAIL"
    return "%s %s rel=%.3g tol=%g" % (word, c["name"], rel, c["tol"]), rel


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
    fail = 0
    for n, c in enumerate(cases):
        t0 = time.time()
        try:
            line, _ = run_case(w, c, n)
        except Exception as e:  # report, keep going
            line = "FAIL %s %s: %s" % (c["name"], type(e).__name__, str(e)[-400:])
        print("%s (%.1fs)" % (line, time.time() - t0), flush=True)
        fail |= line.startswith("FAIL")
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
