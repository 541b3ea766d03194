#!/usr/bin/python3
# needs: torch
"""Independent references for the perturbation methods of esg-attr
(tests/cli/attr_perturb.sh).  Plain PyTorch and numpy, no Captum.

  ref_perturb.py setup DIR
      fixture models with known closed forms and input streams
  ref_perturb.py linear OUT.st.zst W.npy BASELINE KIND [BLOCK]
      closed form for a linear model f = sum w x + b: per element
      w (x - baseline) (KIND elem), or the sum over the element's block of
      BLOCK voxels per spatial axis (KIND block); compared with the stream.
      BASELINE 'swap': the other item of a two-item record (what feature
      permutation must give: the only non-identity permutation of 2 items)
  ref_perturb.py occlusion MODEL IN OUT WINDOW STRIDES [BASELINE]
      Captum's occlusion re-derived: windows at k * stride, clipped,
      attribution = mean over covering windows of f(x) - f(occluded)
  ref_perturb.py ablation MODEL IN OUT BLOCK [BASELINE]
      feature ablation over grid blocks (BLOCK voxels per spatial axis,
      all channels together)
  ref_perturb.py shapley MODEL IN OUT BLOCK [TOL]
      exact Shapley values of the grid-block features by enumerating all
      coalitions (baseline 0); passes when max |out - exact| <= TOL *
      max |exact| (TOL default 1e-5)
  ref_perturb.py replay METHOD MODEL IN OUT BLOCK N [SEED [linear|ridge:A]]
      kernel_shap / lime / shapley over grid blocks (baseline 0) with the
      same random draws as esg-attr (lib/attr/attr.h's recipe), the rest
      re-derived with numpy (lstsq, solve)
  ref_perturb.py rise MODEL IN OUT N_MASKS S P1 [SEED]
      RISE with the same draws, masks re-derived (baseline 0)
  ref_perturb.py inside OUT.st.zst REGION.npy
      extremal / RISE check: mean attribution in the model's region > outside
  ref_perturb.py mean OUT.st.zst WANT TOL
      the mean attribution is WANT within TOL

Targets: the argmax of the model's output per item, as esg-attr's default.
Each check prints one line and exits 0 on success, 1 on failure.
"""
import itertools
import json
import os
import struct
import subprocess
import sys

import numpy as np
import torch

torch.set_num_threads(1)
ATOL, RTOL = 1e-5, 1e-4


# ---- streams -------------------------------------------------------------------
def read_stream(path):
    raw = subprocess.run(['zstd', '-dc', path], check=True, capture_output=True).stdout
    recs, off = [], 0
    while off < len(raw):
        n = struct.unpack('<Q', raw[off:off + 8])[0]
        h = json.loads(raw[off + 8:off + 8 + n])
        base = end = off + 8 + n
        meta = h.pop('__metadata__', {})
        ts = {}
        for k, v in h.items():
            a, b = v['data_offsets']
            assert v['dtype'] == 'F32', v['dtype']
            ts[k] = np.frombuffer(raw[base + a:base + b], '<f4').reshape(v['shape']).copy()
            end = max(end, base + b)
        recs.append((ts, meta))
        off = end
    return recs


def write_stream(path, records, meta=None):
    """records: list of dicts name -> float32 array; meta: extra metadata."""
    out = b''
    for rec in records:
        hdr, data = {'__metadata__': dict({'esg.format': '1'}, **(meta or {}))}, b''
        for k, a in rec.items():
            a = np.ascontiguousarray(a, '<f4')
            hdr[k] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [len(data), len(data) + a.nbytes]}
            data += a.tobytes()
        h = json.dumps(hdr).encode()
        h += b' ' * (-len(h) % 8)
        doc = struct.pack('<Q', len(h)) + h + data
        out += subprocess.run(['zstd', '-q', '-c'], input=doc, check=True, capture_output=True).stdout
    with open(path, 'wb') as f:
        f.write(out)


def attr_of(path):
    return [r[0]['attribution'].astype(np.float64) for r in read_stream(path)]


def image_of(path):
    return [r[0]['image'] for r in read_stream(path)]


def report(name, got, want, atol=ATOL, rtol=RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        print('%s: shape %s, want %s' % (name, got.shape, want.shape))
        return 1
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    print('%s: max |diff| %.3g (max |ref| %.3g), %d of %d outside atol %g + rtol %g' %
          (name, err.max(), np.abs(want).max(), bad.sum(), bad.size, atol, rtol))
    return int(bad.any())


# ---- fixture models -------------------------------------------------------------
class Linear(torch.nn.Module):
    """f_c(x) = sum(W[c] * x) + b[c] on items shaped like W[c]."""

    def __init__(self, w, b):
        super().__init__()
        self.register_buffer('w', torch.tensor(w, dtype=torch.float32))
        self.register_buffer('b', torch.tensor(b, dtype=torch.float32))

    def forward(self, x):
        return (x.unsqueeze(1) * self.w.unsqueeze(0)).flatten(2).sum(2) + self.b


class Additive(torch.nn.Module):
    """f_0 = sum a tanh(k x) + 0.1 x^2, f_1 = -f_0: a sum of per-element terms."""

    def __init__(self, a, k):
        super().__init__()
        self.register_buffer('a', torch.tensor(a, dtype=torch.float32))
        self.register_buffer('k', torch.tensor(k, dtype=torch.float32))

    def forward(self, x):
        s = (self.a * torch.tanh(self.k * x) + 0.1 * x * x).flatten(1).sum(1, keepdim=True)
        return torch.cat([s, -s], 1)


class Interact(torch.nn.Module):
    """On [B, 1, 4, 4] with 2x2 blocks q0..q3 (block sums): an additive part
    plus q0 q1 + 0.5 q1 q2 q3 - 0.3 q0 q3.  f_1 = 0."""

    def forward(self, x):
        q = torch.nn.functional.avg_pool2d(x, 2).flatten(1) * 4  # [B, 4] block sums
        s = (0.7 * q[:, 0] - 0.4 * q[:, 1] + 0.2 * q[:, 3] + q[:, 0] * q[:, 1] +
             0.5 * q[:, 1] * q[:, 2] * q[:, 3] - 0.3 * q[:, 0] * q[:, 3])
        return torch.stack([s + 10, torch.zeros_like(s)], 1)


class Region(torch.nn.Module):
    """Scores 20 x the sum of a fixed region (rows 4..7, cols 6..9 of 16x16,
    symmetric under the jitter flip of the last axis) and
    adds nothing for the rest: the extremal / RISE map must sit there."""

    def forward(self, x):
        r = 20 * x[:, :, 4:8, 6:10].flatten(1).sum(1)
        return torch.stack([r, torch.zeros_like(r)], 1)


class Const(torch.nn.Module):
    """f = (1, 0) whatever the input: RISE must give E[M] / p1 = 1."""

    def forward(self, x):
        one = torch.ones(x.shape[0], 1, dtype=x.dtype)
        return torch.cat([one, 0 * one], 1)


class Region3d(torch.nn.Module):
    """20 x the sum of x[:, :, 3:6, 3:6, 4:8] on 12^3 (flip-symmetric in the last axis)."""

    def forward(self, x):
        r = 20 * x[:, :, 3:6, 3:6, 4:8].flatten(1).sum(1)
        return torch.stack([r, torch.zeros_like(r)], 1)


def setup(d):
    os.makedirs(d, exist_ok=True)
    g = np.random.default_rng(11)
    p = lambda n: os.path.join(d, n)
    # linear 2D [1, 6, 6] items, 2 classes; class 1 always wins on x2d
    w2 = g.normal(size=(2, 1, 6, 6)).astype(np.float32)
    torch.jit.script(Linear(w2, [0.5, 20.0])).save(p('lin2d.pt'))
    np.save(p('lin2d_w.npy'), w2)
    # linear 3D [2, 4, 4, 4], 2 channels
    w3 = g.normal(size=(2, 2, 4, 4, 4)).astype(np.float32)
    torch.jit.script(Linear(w3, [40.0, -3.0])).save(p('lin3d.pt'))
    np.save(p('lin3d_w.npy'), w3)
    # linear over a vector [N, 4] (no spatial axis)
    wv = g.normal(size=(3, 4)).astype(np.float32)
    torch.jit.script(Linear(wv, [0.0, 10.0, 0.0])).save(p('linvec.pt'))
    np.save(p('linvec_w.npy'), wv)
    a = g.normal(size=(1, 4, 4)).astype(np.float32)
    k = g.uniform(0.5, 2, size=(1, 4, 4)).astype(np.float32)
    torch.jit.script(Additive(a, k)).save(p('additive.pt'))
    torch.jit.script(Interact()).save(p('interact.pt'))
    torch.jit.script(Region()).save(p('region.pt'))
    torch.jit.script(Const()).save(p('const.pt'))
    torch.jit.script(Region3d()).save(p('region3d.pt'))
    reg = np.zeros((16, 16), bool)
    reg[4:8, 6:10] = True
    np.save(p('region2d.npy'), reg)
    reg3 = np.zeros((12, 12, 12), bool)
    reg3[3:6, 3:6, 4:8] = True
    np.save(p('region3d.npy'), reg3)
    x12 = np.full((1, 1, 12, 12, 12), 0.2, np.float32) + 0.05 * g.normal(size=(1, 1, 12, 12, 12))
    x12[0, 0][reg3] = 1.0
    write_stream(p('x12.st.zst'), [{'image': x12}])
    write_stream(p('x2d.st.zst'), [{'image': g.normal(size=(2, 1, 6, 6))}])
    write_stream(p('x3d.st.zst'), [{'image': g.normal(size=(1, 2, 4, 4, 4))}])
    write_stream(p('xv.st.zst'), [{'image': g.normal(size=(2, 4))}])
    write_stream(p('x44.st.zst'), [{'image': g.uniform(0.2, 1.5, size=(1, 1, 4, 4))},
                                   {'image': g.normal(size=(1, 1, 4, 4))}])
    write_stream(p('x44pair.st.zst'), [{'image': g.normal(size=(3, 1, 4, 4))}])
    x16 = np.full((1, 1, 16, 16), 0.2, np.float32) + 0.05 * g.normal(size=(1, 1, 16, 16))
    x16[:, :, 4:8, 6:10] = 1.0
    write_stream(p('x16.st.zst'), [{'image': x16}])
    # inputs for the fixture models of tests/fixtures/make_models.py
    write_stream(p('xr.st.zst'), [{'image': g.normal(size=(2, 1, 8, 8))}])
    write_stream(p('xn3.st.zst'), [{'image': g.normal(size=(1, 1, 6, 6, 6))}])
    # a label volume (2x2x2 blocks of a 4^3 grid, arbitrary label values) as
    # a stream tensor and as NIfTI (nibabel array order = esg-load's ijk)
    lab = np.zeros((4, 4, 4), np.float32)
    for i, j, kk in itertools.product(range(4), repeat=3):
        lab[i, j, kk] = 10 * (i // 2) + 3 * (j // 2) + (kk // 2) + 7
    write_stream(p('labels.st.zst'), [{'mask': lab[None, None]}])
    # the same image said to be in reversed (kji) order, and the labels as
    # such an image sees them
    write_stream(p('x3d_kji.st.zst'), [{'image': image_of(p('x3d.st.zst'))[0]}], {'esg.axes': 'kji'})
    asym = np.fromfunction(lambda i, j, k: 2 * (i // 2) + (j // 3), (4, 4, 4)).astype(np.float32)
    write_stream(p('labels_kji.st.zst'), [{'mask': asym.transpose(2, 1, 0)[None, None]}])
    try:
        import nibabel as nib
        nib.save(nib.Nifti1Image(lab.astype(np.int16), np.eye(4)), p('labels.nii.gz'))
        nib.save(nib.Nifti1Image(asym.astype(np.int16), np.eye(4)), p('labels_asym.nii.gz'))
    except ImportError:
        pass


# ---- references ------------------------------------------------------------------------
def load(model):
    m = torch.jit.load(model)
    m.eval()
    return m


def scores(m, x, t):
    with torch.no_grad():
        y = m(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return y[torch.arange(len(t)), torch.as_tensor(t)].double().numpy()


def targets(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(np.ascontiguousarray(x, np.float32))).argmax(1).numpy()


def score_atol(f0):
    """A difference of two float32 scores is exact only to a few ulps of the
    scores themselves (large on sums over a volume, as esg-wrap's)."""
    return max(ATOL, 16 * np.finfo(np.float32).eps * float(np.abs(f0).max()))


def parse_win(s, item, fill=None):
    v = [int(t) for t in s.split(',')]
    if len(v) == len(item):
        return v
    if len(v) == 1:
        v = v * (len(item) - 1)
    return [fill[0] if fill else item[0]] + v


def occlusion(model, inp, out, window, strides, baseline='0'):
    m = load(model)
    fails = 0
    for x, a in zip(image_of(inp), attr_of(out)):
        item = x.shape[1:]
        w = parse_win(window, item)
        s = parse_win(strides, item, w) if strides else w
        b = np.full_like(x, float(baseline))
        t = targets(m, x)
        f0 = scores(m, x, t)
        acc = np.zeros(x.shape)
        cnt = np.zeros(x.shape)
        starts = [list(range(0, int(np.ceil((n - wi) / si)) * si + 1, si)) for n, wi, si in zip(item, w, s)]
        for st in itertools.product(*starts):
            sl = (slice(None),) + tuple(slice(k, k + wi) for k, wi in zip(st, w))
            xo = x.copy()
            xo[sl] = b[sl]
            d = f0 - scores(m, xo, t)
            acc[sl] += d.reshape((-1,) + (1,) * len(item))
            cnt[sl] += 1
        ref = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0)
        fails += report('occlusion %s window %s strides %s' % (os.path.basename(model), w, s), a, ref,
                        atol=score_atol(f0))
    return fails


def block_ids(shape, block):
    """Grid-block ids over the spatial axes of an item shape [C, spatial...]."""
    sp = shape[1:]
    nb = [-(-n // block) for n in sp]
    idx = np.indices(sp)
    ids = np.zeros(sp, np.int64)
    for ax in range(len(sp)):
        ids = ids * nb[ax] + idx[ax] // block
    return np.broadcast_to(ids, shape), int(np.prod(nb))


def ablation(model, inp, out, block, baseline='0'):
    m = load(model)
    fails = 0
    for x, a in zip(image_of(inp), attr_of(out)):
        ids, n = block_ids(x.shape[1:], int(block))
        t = targets(m, x)
        f0 = scores(m, x, t)
        ref = np.zeros(x.shape)
        for f in range(n):
            sel = np.broadcast_to(ids == f, x.shape)
            xo = np.where(sel, np.float32(float(baseline)), x)
            d = f0 - scores(m, xo, t)
            ref += sel * d.reshape((-1,) + (1,) * (x.ndim - 1))
        fails += report('feature ablation %s grid %s' % (os.path.basename(model), block), a, ref,
                        atol=score_atol(f0))
    return fails


def shapley(model, inp, out, block, tol='1e-5'):
    m = load(model)
    fails = 0
    for x, a in zip(image_of(inp), attr_of(out)):
        ids, n = block_ids(x.shape[1:], int(block))
        t = targets(m, x)
        val = {}
        for z in itertools.product([0, 1], repeat=n):
            keep = np.broadcast_to(np.isin(ids, [f for f in range(n) if z[f]]), x.shape)
            val[z] = scores(m, np.where(keep, x, 0), t)
        phi = np.zeros((x.shape[0], n))
        for i in range(n):
            for z in val:
                if z[i]:
                    continue
                k = sum(z)
                wgt = np.math.factorial(k) * np.math.factorial(n - k - 1) / np.math.factorial(n)
                zi = tuple(1 if j == i else z[j] for j in range(n))
                phi[:, i] += wgt * (val[zi] - val[z])
        ref = np.stack([phi[b][np.broadcast_to(ids, x.shape[1:])] for b in range(x.shape[0])])
        scale = np.abs(ref).max()
        fails += report('shapley %s grid %s (exact by enumeration)' % (os.path.basename(model), block),
                        a, ref, atol=float(tol) * scale, rtol=0)
    return fails


# ---- replays: the same random draws as esg-attr (the recipe of lib/attr/attr.h),
# everything else re-derived here with numpy -------------------------------
from esg_rng import Rng as _Rng  # noqa: E402


def Rng(seed, record, stream=3):
    """The perturbation methods' stream (ESG_STREAM_PERTURB = 3)."""
    return _Rng(seed, record, stream)


def wls(Z, y, w, ridge=0.0):
    """Weighted least squares with intercept; minimum norm (lstsq) when ridge = 0."""
    sw = w.sum()
    zm, ym = (w[:, None] * Z).sum(0) / sw, (w * y).sum() / sw
    A, b = np.sqrt(w)[:, None] * (Z - zm), np.sqrt(w) * (y - ym)
    if ridge > 0:
        return np.linalg.solve(A.T @ A + ridge * np.eye(Z.shape[1]), A.T @ b)
    return np.linalg.lstsq(A, b, rcond=None)[0]


def replay(method, model, inp, out, block, n, seed='0', extra=''):
    """kernel_shap, lime (extra = linear | ridge:ALPHA) or shapley over grid
    blocks, baseline 0, target argmax: the same draws, numpy fits."""
    m, seed, n, fails = load(model), int(seed), int(n), 0
    for rec, (x, a) in enumerate(zip(image_of(inp), attr_of(out))):
        rng = Rng(seed, rec)
        ids, M = block_ids(x.shape[1:], int(block))
        t = targets(m, x)
        ref = np.zeros(x.shape)
        for i in range(x.shape[0]):
            xi = x[i:i + 1]
            ev = lambda zs: scores(m, np.stack([np.where(np.isin(ids, np.flatnonzero(z)), xi[0], 0) for z in zs]),
                                   np.full(len(zs), t[i]))
            if method == 'shapley':
                acc = np.zeros(M)
                fbase = ev([np.zeros(M)])[0]
                for _ in range(n):
                    order, z, zs = rng.perm(M), np.zeros(M), []
                    for f in order:
                        z = z.copy()
                        z[f] = 1
                        zs.append(z)
                    y = np.concatenate([[fbase], ev(zs)])
                    acc[order] += np.diff(y)
                phi = acc / n
            else:
                Z = np.zeros((n, M))
                if method == 'kernel_shap':
                    k_ = np.arange(M)
                    pr = np.zeros(M)
                    pr[1:] = (M - 1) / (k_[1:] * (M - k_[1:]))
                    cdf = np.cumsum(pr / pr.sum())
                    for s_ in range(n):
                        if s_ == 0:
                            Z[s_] = 1
                        elif s_ > 1:
                            u, k = rng.uniform(), 1
                            while k < M - 1 and cdf[k] <= u:
                                k += 1
                            idx = list(range(M))
                            for j in range(k):
                                r = j + rng.below(M - j)
                                idx[j], idx[r] = idx[r], idx[j]
                                Z[s_, idx[j]] = 1
                    kept = Z.sum(1)
                    w = np.where((kept == 0) | (kept == M), 1e6, 1.0)
                    ridge = 0.0
                else:
                    for s_ in range(n):
                        for f in range(M):
                            Z[s_, f] = rng.uniform() < 0.5
                    xf = xi.ravel().astype(np.float64)
                    pf = np.stack([np.where(np.isin(ids, np.flatnonzero(z)), xi[0], 0).ravel() for z in Z])
                    cos = pf @ xf / np.maximum(np.sqrt((xf @ xf) * (pf * pf).sum(1)), 1e-8)
                    w = np.exp(-(1 - cos) ** 2 / 2.0)
                    ridge = float(extra.split(':')[1]) if extra.startswith('ridge') else 0.0
                phi = wls(Z, ev(list(Z)), w, ridge)
            ref[i] = phi[ids]
        fails += report('%s %s (replayed draws, numpy fit)' % (method, os.path.basename(model)), a, ref,
                        atol=1e-4 * max(np.abs(ref).max(), 1e-6), rtol=1e-4)
    return fails


def mirror(i, n):
    if n == 1:
        return 0
    p = 2 * (n - 1)
    i %= p
    return i if i < n else p - i


def rise(model, inp, out, n_masks, cells, p1, seed='0'):
    """RISE with the same draws: masks re-derived as separable linear
    interpolation of the random grid (numpy 'reflect' border), baseline 0."""
    m, n_masks, cells, p1, fails = load(model), int(n_masks), int(cells), float(p1), 0
    for rec, (x, a) in enumerate(zip(image_of(inp), attr_of(out))):
        rng = Rng(int(seed), rec)
        t = targets(m, x)
        sp = x.shape[2:]
        ref = np.zeros(x.shape)
        for i in range(x.shape[0]):
            masks = []
            for _ in range(n_masks):
                g = np.array([rng.uniform() < p1 for _ in range(cells ** len(sp))], np.float64)
                mk = g.reshape((cells,) * len(sp))
                for ax, n in enumerate(sp):
                    cell = -(-n // cells)
                    sh = rng.below(cell)
                    W = np.zeros((n, cells))
                    for v in range(n):
                        u = (v + sh + 0.5) * cells / ((cells + 1) * cell) - 0.5
                        f = np.floor(u)
                        wt = np.float32(u - f)
                        W[v, mirror(int(f), cells)] += np.float32(1) - wt
                        W[v, mirror(int(f) + 1, cells)] += wt
                    mk = np.moveaxis(np.tensordot(W, mk, axes=([1], [ax])), 0, ax)
                masks.append(mk.astype(np.float32))
            masks = np.stack(masks)
            xs = (masks[:, None] * x[i][None]).astype(np.float32)
            y = scores(m, xs, np.full(n_masks, t[i]))
            ref[i] = (y[:, None] * masks.reshape(n_masks, -1)).sum(0).reshape(sp) / (n_masks * p1)
        fails += report('rise %s (replayed draws)' % os.path.basename(model), a, ref)
    return fails


def linear(out, wfile, baseline, kind, block=None):
    w = np.load(wfile).astype(np.float64)
    fails = 0
    for rec in read_stream(out):
        x, a = rec[0]['image'].astype(np.float64), rec[0]['attribution'].astype(np.float64)
        t = json.loads(rec[1]['esg.target'])
        t = [t] * len(x) if isinstance(t, (int, float)) else t
        # baseline 'swap': the other item of a 2-item record (feature permutation)
        b = x[::-1] if baseline == 'swap' else float(baseline)
        contrib = np.stack([w[int(c)] for c in t]) * (x - b)
        if kind == 'elem':
            ref = contrib
        else:
            ids, n = block_ids(x.shape[1:], int(block))
            ref = np.zeros_like(x)
            for f in range(n):
                sel = ids == f
                s = (contrib * sel).reshape(len(x), -1).sum(1)
                ref += sel * s.reshape((-1,) + (1,) * (x.ndim - 1))
        fails += report('linear closed form (%s)' % kind, a, ref)
    return fails


def inside(out, region):
    a = attr_of(out)[0][0, 0]
    reg = np.load(region)
    i, o = a[reg].mean(), a[~reg].mean()
    print('mean attribution inside the region %.4g, outside %.4g' % (i, o))
    return int(not i > o + 0.1 * abs(o) + 1e-6)


def mean_near(out, want, tol):
    a = attr_of(out)[0]
    print('mean %.4g (want %s), min %.4g, max %.4g' % (a.mean(), want, a.min(), a.max()))
    return int(not abs(a.mean() - float(want)) <= float(tol))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'setup':
        setup(args[0])
        return 0
    return {'occlusion': occlusion, 'ablation': ablation, 'shapley': shapley, 'linear': linear,
            'inside': inside, 'mean': mean_near, 'replay': replay, 'rise': rise}[cmd](*args)


if __name__ == '__main__':
    sys.exit(main())
