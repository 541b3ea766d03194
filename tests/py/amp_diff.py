#!/usr/bin/env python3
"""How far a mixed-precision map A is from the float32 map B (esg-attr --amp
against esg-attr), per the definitions of doc/methods.md "Mixed precision":

  max_rel     max |a - b| / max |b|             (over every element)
  median_rel  median |a - b| / max |b|
  sig_max     max |a - b| / |b|                 over S = {|b| > 1% of max |b|}
  sig_median  median |a - b| / |b|              over S
  sig_frac    |S| / number of elements

Usage: amp_diff.py A.st.zst B.st.zst [TENSOR]   (default tensor: attribution)
Prints one line "key=value ..." for all records' elements together."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_ref import read_stream  # noqa: E402


def tensor(path, name):
    out = []
    for meta, entries in read_stream(path):
        arr = [e[-1] for e in entries if e[0] == name]
        if not arr:
            sys.exit("%s: no tensor %s" % (path, name))
        out.append(np.asarray(arr[0], dtype=np.float64).ravel())
    return np.concatenate(out)


def main():
    name = sys.argv[3] if len(sys.argv) > 3 else "attribution"
    a, b = tensor(sys.argv[1], name), tensor(sys.argv[2], name)
    if a.shape != b.shape:
        sys.exit("shapes differ: %s and %s" % (a.shape, b.shape))
    d = np.abs(a - b)
    m = np.abs(b).max()
    if m == 0:
        sys.exit("the reference map is all zero")
    s = np.abs(b) > 0.01 * m
    r = d[s] / np.abs(b[s])
    print("max_rel=%.6g median_rel=%.6g sig_max=%.6g sig_median=%.6g sig_frac=%.4f"
          % (d.max() / m, np.median(d) / m, r.max(), np.median(r), s.mean()))


if __name__ == "__main__":
    main()
