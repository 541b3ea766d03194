#!/usr/bin/python3
# needs: torch
"""ref_patch - independent references for esg-attr --patch and esg-wrap
--patch (tests/cli/attr_patch.sh): the patch grid and blending weights
written here from their definition (doc/methods.md, "Patches"; MONAI's
sliding_window_inference), the methods from tests/py/ref_attr.py (plain
PyTorch autograd).

  ref_patch.py make OUTDIR
        a tiny 3D segmentation model (seg3d.pt, any size) and inputs
  ref_patch.py check MODEL OUT SEG [MODEL OUT SEG ...]
        recompute esg-attr --patch output OUT of MODEL from its metadata
        (esg.patch, esg.overlap, esg.blend, targets, method, params,
        baselines): crop, attribute, blend; one line per pair.  SEG "-":
        MODEL scores the patches itself; else MODEL is a fixed-mask
        wrapper of SEG.pt whose mask is the one-hot argmax of SEG on item 0
        of the whole input; the reference scores each patch over that mask
        cropped at the patch origin (and checks that the wrapper loaded in
        Python, with its origin set, scores the same).
  ref_patch.py window WRAPPED SEG INPUT PATCH OVERLAP BLEND
        the mask of an esg-wrap --patch model equals the argmax of SEG's
        outputs blended over the patches (one-hot), computed here

Prints "PASS ..." / "FAIL ..."; exit 0 / 1.  Tolerance (check):
|esg - ref| <= 1e-5 * max(1, max|ref|) + 1e-4 * |ref| (as ref_attr.py),
esg.delta (max |delta| over patches) within 1e-4 * max(1, |delta|, max|ref|).
"""
import itertools
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_ref as st  # noqa: E402
import ref_attr as ra  # noqa: E402
from esg_rng import Rng  # noqa: E402


class Seg3d(nn.Module):
    """[B, 1, D, H, W] -> [B, 2, D, H, W], any size."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(1, 3, 3, padding=1)
        self.c2 = nn.Conv3d(3, 2, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.c1(x)))


def write(path, arr):
    st.write_stream(path, [([("image", np.asarray(arr, dtype=np.float32))], {"esg.format": "1"})])


def make(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(21)
    torch.jit.script(Seg3d().eval()).save(os.path.join(out, "seg3d.pt"))
    g = torch.Generator().manual_seed(22)
    write(os.path.join(out, "v3d.st.zst"), torch.randn(2, 1, 9, 8, 10, generator=g).numpy())
    write(os.path.join(out, "s3d.st.zst"), torch.randn(1, 1, 9, 11, 10, generator=g).numpy())
    write(os.path.join(out, "v2d.st.zst"), torch.randn(2, 1, 11, 13, generator=g).numpy())
    # larger than s3d.st.zst: a fixed mask made on s3d does not cover it
    write(os.path.join(out, "big.st.zst"), torch.randn(1, 1, 12, 12, 12, generator=g).numpy())


# ---- the grid and the weights, from the definition --------------------------------


def grid(vol, patch, overlap):
    """Clamped sizes and the origins in C order."""
    size = [min(p, v) for p, v in zip(patch, vol)]
    axes = []
    for v, s in zip(vol, size):
        step = max(1, int(math.floor(s * (1 - overlap))))
        n = int(math.ceil((v - s) / step)) + 1
        axes.append([min(k * step, v - s) for k in range(n)])
    return size, list(itertools.product(*axes))


def weights(size, blend):
    if blend == "mean":
        return np.ones(size)
    w = np.ones([1] * len(size))
    for d, s in enumerate(size):
        i = np.arange(s, dtype=np.float64)
        a = np.exp(-((i - (s - 1) / 2) ** 2) / (2 * (0.125 * s) ** 2))
        shape = [1] * len(size)
        shape[d] = s
        w = w * a.reshape(shape)
    w = w / w.max()
    return np.maximum(w, 1e-3)


def window(t, origin, size):
    sl = (slice(None), slice(None)) + tuple(slice(o, o + s) for o, s in zip(origin, size))
    return t[sl]


class MaskScore(nn.Module):
    """The fixed-mask reduction of one patch: sum of SEG's output over the
    mask's window."""

    def __init__(self, seg, mask):
        super().__init__()
        self.seg, self.mask = seg, mask

    def forward(self, x):
        return (self.seg(x) * self.mask).flatten(2).sum(2)


def check(model_path, out_path, seg_path=None):
    name = os.path.basename(out_path)
    torch.set_num_threads(1)
    model = torch.jit.load(model_path).eval()
    seg = torch.jit.load(seg_path).eval() if seg_path else None
    worst, worst_delta = 0.0, 0.0
    for r, rec in enumerate(st.read_stream(out_path)):
        meta, ts = ra.tensors(rec)
        method = meta["esg.method"]
        p = json.loads(meta["esg.params"])
        x = torch.tensor(ts["image"])
        N = x.shape[0]
        vol = list(x.shape[2:])
        size, origins = grid(vol, json.loads(meta["esg.patch"]), float(meta["esg.overlap"]))
        if size != json.loads(meta["esg.patch"]) or len(origins) != int(meta["esg.patches"]):
            return "FAIL %s grid: esg %s x %s patches, reference %s x %d" % (
                name, meta["esg.patch"], meta["esg.patches"], size, len(origins))
        w = torch.tensor(weights(size, meta["esg.blend"]), dtype=torch.float64)
        seed = int(meta["esg.seed"])
        bl = ra.baselines(json.loads(meta.get("esg.baseline", '["zero"]')), x, seed, r)
        mask = None
        if seg is not None:
            with torch.no_grad():
                y = seg(x[:1])
            mask = torch.zeros_like(y).scatter_(1, y.argmax(1, keepdim=True), 1.0)
        per_patch = meta["esg.target"] == "per-patch"
        got_t = json.loads(meta["esg.patch_targets"]) if per_patch else None
        acc = torch.zeros(x.shape, dtype=torch.float64)
        wsum = torch.zeros(vol, dtype=torch.float64)
        delta = None
        for i, o in enumerate(origins):
            ctx = ra.Ctx.__new__(ra.Ctx)
            ctx.path, ctx._eager = model_path, None
            ctx.model = MaskScore(seg, window(mask, o, size)) if mask is not None else model
            if mask is not None and i == len(origins) // 2:
                # the wrapper itself, from Python, with the origin set
                model.origin = list(o)
                with torch.no_grad():
                    a, b = model(window(x, o, size)), ctx.model(window(x, o, size))
                if not torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max()))):
                    return "FAIL %s wrapper with origin %s scores %s, reference %s" % (
                        name, o, a.tolist(), b.tolist())
            ctx.rng_nt = Rng(seed, r, ra.STREAM_NT)
            ctx.rng_shap = Rng(seed, r, ra.STREAM_SHAP)
            xp = window(x, o, size).contiguous()
            if per_patch:
                with torch.no_grad():
                    t = ctx.model(xp).argmax(1)
                if t.tolist() != got_t[i * N:(i + 1) * N]:
                    return "FAIL %s patch %d targets %s, reference %s" % (
                        name, i, got_t[i * N:(i + 1) * N], t.tolist())
            else:
                t = torch.tensor([int(meta["esg.target"])] * N, dtype=torch.long)
            a, d = ra.METHODS[method](ctx, xp, t, p, [window(b, o, size).contiguous() for b in bl])
            sl = (slice(None), slice(None)) + tuple(slice(oo, oo + s) for oo, s in zip(o, size))
            acc[sl] += w * a.double()
            wsum[sl[2:]] += w
            if d is not None:
                delta = d.abs() if delta is None else torch.maximum(delta, d.abs())
        ref = (acc / wsum).numpy()
        got = ts["attribution"]
        if got.shape != ref.shape:
            return "FAIL %s shape %s, reference %s" % (name, got.shape, ref.shape)
        scale = max(1.0, float(np.abs(ref).max()))
        err = np.abs(got - ref)
        worst = max(worst, float((err / scale).max()))
        bad = err > 1e-5 * scale + 1e-4 * np.abs(ref)
        if bad.any():
            j = np.unravel_index(np.argmax(err), ref.shape)
            return "FAIL %s record %d: %d elements off, worst at %s: %g vs reference %g" % (
                name, r, int(bad.sum()), tuple(int(v) for v in j), got[j], ref[j])
        if delta is not None:
            if "esg.delta" not in meta:
                return "FAIL %s: no esg.delta" % name
            dg = np.array(json.loads(meta["esg.delta"]))
            dd = np.abs(dg - delta.numpy())
            worst_delta = max(worst_delta, float(dd.max()))
            if (dd > 1e-4 * max(1.0, float(delta.abs().max()), scale)).any():
                return "FAIL %s esg.delta %s, reference %s" % (name, dg.tolist(), delta.tolist())
    return "PASS %s max error %.3g (of max |ref|), delta error %.3g, %d patches" % (
        name, worst, worst_delta, len(origins))


def sliding_window(wrapped, seg_path, input_path, patch, overlap, blend):
    torch.set_num_threads(1)
    seg = torch.jit.load(seg_path).eval()
    _, ts = ra.tensors(st.read_stream(input_path)[0])
    x = torch.tensor(ts["image"])[:1]
    vol = list(x.shape[2:])
    size, origins = grid(vol, [int(v) for v in patch.split(",")], float(overlap))
    w = torch.tensor(weights(size, blend), dtype=torch.float64)
    acc, wsum = None, torch.zeros(vol, dtype=torch.float64)
    for o in origins:
        sl = (slice(None), slice(None)) + tuple(slice(oo, oo + s) for oo, s in zip(o, size))
        with torch.no_grad():
            y = seg(x[sl].contiguous()).double()
        if acc is None:
            acc = torch.zeros([1, y.shape[1]] + vol, dtype=torch.float64)
        acc[sl] += w * y
        wsum[sl[2:]] += w
    y = acc / wsum
    ref = torch.zeros_like(y).scatter_(1, y.argmax(1, keepdim=True), 1.0)
    got = torch.jit.load(wrapped).mask.double()
    if got.shape != ref.shape:
        return "FAIL mask %s, reference %s" % (list(got.shape), list(ref.shape))
    # the whole-volume forward differs: the check has teeth
    with torch.no_grad():
        y1 = seg(x)
    whole = torch.zeros_like(y1).scatter_(1, y1.argmax(1, keepdim=True), 1.0).double()
    n = int((got != ref).sum())
    if n:
        return "FAIL mask differs from the sliding-window reference at %d of %d values" % (n, got.numel())
    return "PASS mask equals the sliding-window reference (%d patches; %d voxels differ " \
        "from the whole-volume argmax)" % (len(origins), int((whole != ref).any(1).sum()))


def main(argv):
    if len(argv) == 2 and argv[0] == "make":
        make(argv[1])
        return 0
    if len(argv) >= 4 and argv[0] == "check" and len(argv) % 3 == 1:
        fail = 0
        for i in range(1, len(argv), 3):
            try:
                line = check(argv[i], argv[i + 1], None if argv[i + 2] == "-" else argv[i + 2])
            except Exception as e:  # report it as a failure line
                line = "FAIL %s %s: %s" % (os.path.basename(argv[i + 1]), type(e).__name__, e)
            print(line, flush=True)
            fail |= not line.startswith("PASS")
        return fail
    if len(argv) == 7 and argv[0] == "window":
        line = sliding_window(*argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(line, flush=True)
    return 0 if line.startswith("PASS") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
