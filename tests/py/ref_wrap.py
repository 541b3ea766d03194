#!/usr/bin/python3
# needs: torch
"""ref_wrap - check an esg-wrap model from Python: it loads with
torch.jit.load, and its scores equal the reduction computed here directly
(numpy/torch, written from the definitions in man/esg-wrap.1).

  ref_wrap.py WRAPPED.pt ORIGINAL.pt REDUCE ACTIVATION INPUT.st.zst [MASK.st.zst|argmax]

Prints "PASS ..." or "FAIL ..."; exit status 0 / 1.  Tolerance: atol 1e-5 *
max(1, max|score|) + rtol 1e-5 (float32 sums in a different order).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_ref as st  # noqa: E402


def first_tensor(path, names=("image",)):
    meta, ts = st.read_stream(path)[0]
    d = {t[0]: np.array(t[3], dtype=np.float32) for t in ts}
    for n in names:
        if n in d:
            return d[n]
    raise KeyError(names)


def otsu_threshold(z):
    """skimage.filters.threshold_otsu on a [0, 1] map, 256 bins over [0, 1]."""
    hist, edges = np.histogram(z.astype(np.float64), bins=256, range=(0.0, 1.0))
    centers = (edges[:-1] + edges[1:]) / 2
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = np.cumsum(hist * centers) / w1
        m2 = (np.cumsum((hist * centers)[::-1]) / w2[::-1])[::-1]
    var = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return centers[np.nanargmax(var)]


def reference(y, reduce, mask):
    if y.ndim == 2:
        return y
    N, C = y.shape[:2]
    yf = y.reshape(N, C, -1).astype(np.float64)
    if reduce == "argmax":
        am = yf.argmax(1)
        return np.stack([[yf[n, c][am[n] == c].sum() for c in range(C)] for n in range(N)])
    if reduce == "otsu":
        out = []
        for n in range(N):
            row = []
            for c in range(C):
                v = yf[n, c]
                lo, hi = v.min(), v.max()
                z = ((y.reshape(N, C, -1)[n, c] - np.float32(lo)) / np.float32(max(hi - lo, 1e-12)))
                m = z > otsu_threshold(z)
                row.append((v[~m].sum(), v[m].sum()) if C == 1 else (v[m].sum(),))
            out.append([s for r in row for s in r])
        return np.array(out)
    m = np.broadcast_to(mask.reshape(mask.shape[0], mask.shape[1], -1), yf.shape)
    return (yf * m).sum(2)


def main(argv):
    wrapped, original, reduce, act, inp = argv[:5]
    x = torch.tensor(first_tensor(inp))
    w = torch.jit.load(wrapped)
    m = torch.jit.load(original)
    with torch.no_grad():
        got = w(x).numpy()
        y = m(x)
        y = {"none": y, "softmax": torch.softmax(y, 1), "sigmoid": torch.sigmoid(y)}[act].numpy()
    mask = None
    if reduce == "fixed-mask":
        if argv[5] == "argmax":
            am = y[:1].argmax(1)  # the first item's prediction, shared by the batch
            mask = np.stack([(am == c) for c in range(y.shape[1])], 1).astype(np.float64)
        else:
            mask = (first_tensor(argv[5], ("mask", "image")) != 0).astype(np.float64)
    ref = reference(y, reduce, mask)
    tol = 1e-5 * max(1.0, float(np.abs(ref).max())) + 1e-5 * np.abs(ref)
    if got.shape != ref.shape or (np.abs(got - ref) > tol).any():
        print("FAIL %s: scores %s, reference %s" % (os.path.basename(wrapped), got.tolist(), ref.tolist()))
        return 1
    print("PASS %s: scores %s" % (os.path.basename(wrapped), np.round(got, 4).tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
