#!/usr/bin/python3
"""Compare the attributions of two esg-attr streams (local vs whole-volume
evaluation, tests/cli/attr_local.sh) and check their esg.local metadata.

    local_compare.py GOT.st.zst WANT.st.zst TOL LOCAL_PREFIX

Passes when max |got - want| <= TOL * max |want| + 1e-7 over every record
and GOT's esg.local starts with LOCAL_PREFIX; prints one line.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from ref_perturb import read_stream  # noqa: E402


def main():
    got, want, tol, prefix = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    g, w = read_stream(got), read_stream(want)
    if len(g) != len(w):
        sys.exit('records: %d vs %d' % (len(g), len(w)))
    worst, scale = 0.0, 0.0
    for (gt, gm), (wt, _) in zip(g, w):
        a, b = gt['attribution'].astype(np.float64), wt['attribution'].astype(np.float64)
        if a.shape != b.shape:
            sys.exit('shape %s vs %s' % (a.shape, b.shape))
        worst = max(worst, float(np.abs(a - b).max()))
        scale = max(scale, float(np.abs(b).max()))
    local = g[0][1].get('esg.local', '')
    line = 'max|diff| %.3g of max|attr| %.3g (tol %g); esg.local "%s"' % (worst, scale, tol, local)
    print(line)
    if not local.startswith(prefix) or not worst <= tol * scale + 1e-7 or scale == 0:
        sys.exit(1)


if __name__ == '__main__':
    main()
