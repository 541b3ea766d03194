#!/usr/bin/python3
# needs: torch
"""Independent references for esg-metric and esg-randomise (plain numpy /
PyTorch, no scipy, no Captum).

  ref_metric.py small                       print the numbers of tests/unit/test_metric.c
  ref_metric.py perturb OUT IMAGES S SCALE SEED [uniform]
                                            write a stream with tensor 'perturbations'
                                            [S] + image shape: N(0, SCALE^2) (or U(-SCALE, SCALE))
  ref_metric.py infidelity MODEL MAPS PERT TABLE [normalize] [mbi]
                                            recompute infidelity (Captum's definition) from
                                            MAPS (esg-attr output) and PERT; compare with TABLE
  ref_metric.py sensitivity MODEL MAPS PERT TABLE
                                            recompute max-sensitivity, re-running the method
                                            with tests/py/ref_attr.py; compare with TABLE
  ref_metric.py similarity REF MAPS TABLE [TOPK]
                                            spearman(_abs), ssim(_abs), topk_iou: compare
  ref_metric.py truth MAPS MASKSTREAM TABLE mass_in_mask / pointing_game / auroc: compare
  ref_metric.py randomise ORIGINAL DIR      check esg-randomise's output: every step model
                                            loads, differs from ORIGINAL exactly in the
                                            parameters its manifest lists
TABLE is esg-metric's TSV.  Prints PASS/FAIL lines; exit 1 on any FAIL.
"""
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import safetensors_ref as st  # noqa: E402

# ---- numpy references of lib/eval/metric.c -----------------------------------


def ranks(v):
    """Average ranks, 1-based."""
    v = np.asarray(v, dtype=np.float64)
    o = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    sv = v[o]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        r[o[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def ssim(a, b, sigma=1.5):
    """Wang et al. 2004: Gaussian window, valid positions, K1 0.01, K2 0.03."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    L = max(a.max(), b.max()) - min(a.min(), b.min())
    L = L if L > 0 else 1.0
    r0 = int(3.5 * sigma + 0.5)

    def filt(x):
        for ax in range(x.ndim):
            r = min(r0, (x.shape[ax] - 1) // 2)
            t = np.arange(-r, r + 1)
            k = np.exp(-t * t / (2 * sigma * sigma))
            k /= k.sum()
            x = np.moveaxis(x, ax, -1)
            m = x.shape[-1] - 2 * r
            x = sum(k[j] * x[..., j:j + m] for j in range(2 * r + 1))
            x = np.moveaxis(x, -1, ax)
        return x
    C1, C2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mx, my = filt(a), filt(b)
    vx = filt(a * a) - mx * mx
    vy = filt(b * b) - my * my
    cxy = filt(a * b) - mx * my
    return float(np.mean((2 * mx * my + C1) * (2 * cxy + C2) / ((mx * mx + my * my + C1) * (vx + vy + C2))))


def auroc(a, m):
    a = np.asarray(a, dtype=np.float64).ravel()
    m = np.asarray(m).ravel() != 0
    r = ranks(a)
    P = m.sum()
    N = len(a) - P
    if P == 0 or N == 0:
        return float("nan")
    return float((r[m].sum() - P * (P + 1) / 2) / (P * N))


def topk_iou(a, b, frac):
    a, b = np.abs(np.ravel(a)), np.abs(np.ravel(b))
    n = len(a)
    k = max(1, int(math.ceil(frac * n - 1e-9)))
    ia = set(np.lexsort((np.arange(n), -a))[:k].tolist())
    ib = set(np.lexsort((np.arange(n), -b))[:k].tolist())
    return len(ia & ib) / len(ia | ib)


def mass_in_mask(a, m):
    a = np.ravel(a).astype(np.float64)
    m = np.ravel(m) != 0
    pos = a > 0
    return float(a[pos & m].sum() / a[pos].sum()) if pos.any() else float("nan")


def pointing(a, m):
    return int(np.ravel(m)[int(np.argmax(np.ravel(a)))] != 0)


def small():
    def arr(n, kind):
        i = np.arange(n, dtype=np.float64)
        v = {"a": np.sin(0.7 * i + 0.3) * (i % 5), "b": np.cos(0.37 * i) + 0.1 * (i % 3),
             "m": ((i % 7) < 3).astype(float)}[kind]
        return v.astype(np.float32).astype(np.float64)
    n = 60
    a, b, m = arr(n, "a"), arr(n, "b"), arr(n, "m")
    print("spearman %.12f" % spearman(a, b))
    print("spearman_abs %.12f" % spearman(np.abs(a), np.abs(b)))
    print("auroc %.12f" % auroc(a, m))
    print("mass %.12f" % mass_in_mask(a, m))
    print("pointing %d" % pointing(a, m))
    print("topk10 %.12f" % topk_iou(a, b, 0.1))
    print("topk25 %.12f" % topk_iou(a, b, 0.25))
    for shp in ((13, 14), (12, 13, 11), (6, 9)):
        k = int(np.prod(shp))
        print("ssim%s %.12f" % ("x".join(map(str, shp)), ssim(arr(k, "a").reshape(shp), arr(k, "b").reshape(shp))))
    return 0

# ---- tables -------------------------------------------------------------------


def table(path):
    rows = []
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(head, line.rstrip("\n").split("\t"))))
    return rows


def records(path):
    out = []
    for meta, ts in st.read_stream(path):
        out.append((meta, {t[0]: np.array(t[3], dtype=np.float32) for t in ts}))
    return out


def compare(rows, metric, ref, rtol, atol, label):
    """ref: {(record, item): value}.  One PASS/FAIL line."""
    got = {(int(r["record"]), int(r["item"])): float(r["value"]) for r in rows if r["metric"] == metric}
    if set(got) != set(ref):
        print("FAIL %s: rows %s, reference %s" % (label, sorted(got), sorted(ref)))
        return 1
    worst = 0.0
    for k, v in ref.items():
        g = got[k]
        if math.isnan(v) and math.isnan(g):
            continue
        err = abs(g - v)
        worst = max(worst, err / max(abs(v), 1e-30))
        if not err <= atol + rtol * abs(v):
            print("FAIL %s %s: esg-metric %.9g, reference %.9g" % (label, k, g, v))
            return 1
    print("PASS %s: %d values, worst relative error %.3g" % (label, len(ref), worst))
    return 0

# ---- model metrics -------------------------------------------------------------


def targets(meta, n):
    t = json.loads(meta["esg.target"])
    return t if isinstance(t, list) else [t] * n


def perturb(out, images, S, scale, seed, uniform=False):
    x = records(images)[0][1]["image"]
    g = np.random.default_rng(int(seed))
    shape = (int(S),) + x.shape
    p = g.uniform(-scale, scale, shape) if uniform else g.normal(0, scale, shape)
    st.write_stream(out, [([("perturbations", p.astype(np.float32))], {"esg.format": "1"})])
    return 0


def infidelity(model, maps, pert, tab, normalize=False, mbi=None):
    import torch
    torch.set_num_threads(1)
    m = torch.jit.load(model).eval()
    P = torch.tensor(records(pert)[0][1]["perturbations"], dtype=torch.float64)
    ref = {}
    for r, (meta, ts) in enumerate(records(maps)):
        x = torch.tensor(ts["image"])
        a = torch.tensor(ts["attribution"], dtype=torch.float64)
        t = targets(meta, x.shape[0])
        method = meta["esg.method"]
        use_mbi = mbi if mbi is not None else method in (
            "integrated_gradients", "input_x_gradient", "deeplift", "deeplift_shap", "gradient_shap",
            "occlusion", "feature_ablation", "shapley_value_sampling")
        bls = json.loads(meta.get("esg.baseline", '["zero"]'))
        assert bls in (["zero"], []), "reference handles zero baselines only"
        base = torch.zeros_like(x)
        with torch.no_grad():
            fx = m(x).double()
            for b in range(x.shape[0]):
                ia, df = [], []
                for s in range(P.shape[0]):
                    I = P[s]
                    xt = (x.double() - I).float()
                    ft = m(xt).double()
                    Iu = I.clone()  # the perturbation, as Captum's perturb_func returns it
                    if use_mbi:
                        d = x.double() - base.double()
                        Iu = Iu / torch.where(d != 0, d, torch.ones_like(d))
                    ia.append(float((a[b] * Iu[b]).sum()))
                    df.append(float(fx[b, t[b]] - ft[b, t[b]]))
                ia, df = np.array(ia), np.array(df)
                beta = (ia * df).mean() / (ia * ia).mean() if normalize else 1.0
                ref[(r, b)] = float(((beta * ia - df) ** 2).mean())
    return compare(table(tab), "infidelity", ref, 2e-3, 1e-9, "infidelity %s" % os.path.basename(maps))


def sensitivity(model, maps, pert, tab):
    import torch
    import ref_attr as ra
    torch.set_num_threads(1)
    P = torch.tensor(records(pert)[0][1]["perturbations"])
    ctx = ra.Ctx(model)
    ref = {}
    for r, (meta, ts) in enumerate(records(maps)):
        x = torch.tensor(ts["image"])
        a = torch.tensor(ts["attribution"], dtype=torch.float64)
        t = torch.tensor(targets(meta, x.shape[0]), dtype=torch.long)
        p = json.loads(meta["esg.params"])
        seed = int(meta["esg.seed"])
        best = np.zeros(x.shape[0])
        for s in range(P.shape[0]):
            xp = x + P[s]
            bl = ra.baselines(json.loads(meta.get("esg.baseline", '["zero"]')), xp, seed, r)
            ctx.rng_nt = ra.Rng(seed, r, ra.STREAM_NT)
            ctx.rng_shap = ra.Rng(seed, r, ra.STREAM_SHAP)
            phi, _ = ra.METHODS[meta["esg.method"]](ctx, xp, t, p, bl)
            phi = phi.double()
            for b in range(x.shape[0]):
                den = float(a[b].norm())
                v = float((a[b] - phi[b]).norm()) / (den if den > 0 else 1.0)
                best[b] = max(best[b], v)
        for b in range(x.shape[0]):
            ref[(r, b)] = float(best[b])
    return compare(table(tab), "max_sensitivity", ref, 2e-3, 1e-6, "max_sensitivity %s" % os.path.basename(maps))

# ---- map metrics -------------------------------------------------------------------


def mm(v):
    """esg-metric's ssim_normalise=minmax: each map to [0, 1] by its own range (float32)."""
    v = np.asarray(v, dtype=np.float32)
    lo, hi = float(v.min()), float(v.max())
    return ((v.astype(np.float64) - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(v)


def similarity(refmaps, maps, tab, topk=10.0):
    rows = table(tab)
    A, B = records(refmaps), records(maps)
    res = {k: {} for k in ("spearman", "spearman_abs", "ssim", "ssim_abs", "topk_iou")}
    for r, ((_, ta), (_, tb)) in enumerate(zip(A, B)):
        a, b = ta["attribution"], tb["attribution"]
        for i in range(a.shape[0]):
            res["spearman"][(r, i)] = spearman(a[i].ravel(), b[i].ravel())
            res["spearman_abs"][(r, i)] = spearman(np.abs(a[i]).ravel(), np.abs(b[i]).ravel())
            res["topk_iou"][(r, i)] = topk_iou(a[i], b[i], topk / 100)
            if a.ndim >= 4:
                res["ssim"][(r, i)] = float(np.mean([ssim(mm(a[i, c]), mm(b[i, c])) for c in range(a.shape[1])]))
                res["ssim_abs"][(r, i)] = float(np.mean([ssim(mm(np.abs(a[i, c])), mm(np.abs(b[i, c])))
                                                         for c in range(a.shape[1])]))
    fail = 0
    rows = [w for w in rows if w["source"] == maps or os.path.basename(w["source"]) == os.path.basename(maps)]
    for k, ref in res.items():
        if any(w["metric"] == k for w in rows):
            fail |= compare(rows, k, ref, 1e-6, 1e-9, k)
    return fail


def truth(maps, maskstream, tab):
    rows = table(tab)
    mask = records(maskstream)[0][1]
    mask = mask.get("mask", next(iter(mask.values())))
    res = {k: {} for k in ("mass_in_mask", "pointing_game", "auroc")}
    for r, (_, ts) in enumerate(records(maps)):
        a = ts["attribution"]
        for i in range(a.shape[0]):
            m = np.broadcast_to(mask.reshape((1,) * (a[i].ndim - mask.ndim) + mask.shape)
                                if mask.size != a[i].size else mask.reshape(a[i].shape), a[i].shape)
            res["mass_in_mask"][(r, i)] = mass_in_mask(a[i], m)
            res["pointing_game"][(r, i)] = float(pointing(a[i], m))
            res["auroc"][(r, i)] = auroc(a[i], m)
    fail = 0
    for k, ref in res.items():
        if any(w["metric"] == k for w in rows):
            fail |= compare(rows, k, ref, 1e-6, 1e-9, k)
    return fail

# ---- esg-randomise -------------------------------------------------------------------


def randomise(original, d):
    import torch
    orig = torch.jit.load(original)
    op = dict(orig.named_parameters())
    ob = {k: v.clone() for k, v in orig.named_buffers()}
    man = json.load(open(os.path.join(d, "manifest.json")))
    fail = 0
    prev = set()
    for step in man["steps"]:
        m = torch.jit.load(os.path.join(d, step["file"]))
        listed = {p["name"]: p for p in step["parameters"]}
        mp = dict(m.named_parameters())
        bad = []
        if set(mp) != set(op):
            bad.append("parameter names differ")
        for k, v in op.items():
            diff = not torch.equal(v, mp[k])
            if k in listed:
                info = listed[k]
                if diff != info["changed"]:
                    bad.append("%s: changed=%s in the manifest, %s in the file" % (k, info["changed"], diff))
                if list(mp[k].shape) != info["shape"]:
                    bad.append("%s: shape" % k)
                if "low" in info:
                    lo, hi = info["low"], info["high"]
                    if not (mp[k].min() >= lo - 1e-6 and mp[k].max() <= hi + 1e-6):
                        bad.append("%s: outside [%g, %g]" % (k, lo, hi))
                if info["init"].startswith("kaiming_uniform"):
                    fan_in = torch.nn.init._calculate_fan_in_and_fan_out(v)[0]
                    if abs(info["high"] - 1 / math.sqrt(fan_in)) > 1e-9:
                        bad.append("%s: bound %g, torch's %g" % (k, info["high"], 1 / math.sqrt(fan_in)))
            elif diff:
                bad.append("%s changed but is not listed" % k)
        for k, v in m.named_buffers():
            if not torch.equal(v, ob[k]):
                bad.append("buffer %s changed" % k)
        if man["mode"] == "cascading" and not prev <= set(listed):
            bad.append("cascading: step %d drops parameters of earlier steps" % step["step"])
        prev = set(listed)
        if bad:
            print("FAIL step %d %s: %s" % (step["step"], step["file"], "; ".join(bad[:4])))
            fail = 1
    if not fail:
        print("PASS %s %s: %d steps, every step differs exactly in the listed parameters"
              % (man["mode"], os.path.basename(original), len(man["steps"])))
    return fail


def main(argv):
    if argv[:1] == ["small"]:
        return small()
    if argv[:1] == ["perturb"] and len(argv) >= 6:
        return perturb(argv[1], argv[2], int(argv[3]), float(argv[4]), int(argv[5]),
                       len(argv) > 6 and argv[6] == "uniform")
    if argv[:1] == ["infidelity"] and len(argv) >= 5:
        mbi = None
        if len(argv) > 6:
            mbi = argv[6] == "true"
        return infidelity(argv[1], argv[2], argv[3], argv[4], len(argv) > 5 and argv[5] == "normalize", mbi)
    if argv[:1] == ["sensitivity"] and len(argv) == 5:
        return sensitivity(*argv[1:])
    if argv[:1] == ["similarity"] and len(argv) >= 4:
        return similarity(argv[1], argv[2], argv[3], float(argv[4]) if len(argv) > 4 else 10.0)
    if argv[:1] == ["truth"] and len(argv) == 4:
        return truth(*argv[1:])
    if argv[:1] == ["randomise"] and len(argv) == 3:
        return randomise(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
