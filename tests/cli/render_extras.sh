#!/usr/bin/env bash
# esg-render --strip (maps of several streams side by side) and --curve-plot
# (esg-metric --curves output): sizes, panel contents, errors.
. "$(dirname "$0")/lib.sh"
export ESG_ROOT

$PYTHON - <<'PY' || { not_ok "input streams"; done_testing; }
import sys, os
sys.path.insert(0, os.environ.get("ESG_ROOT", ".") + "/tests/py")
import numpy as np, safetensors_ref as st
for k in range(3):
    a = np.zeros((1, 1, 8, 10), np.float32)
    a[0, 0, k, k] = 1.0
    st.write_stream("m%d.st.zst" % k, [([("image", np.ones_like(a)), ("attribution", a)], {"esg.format": "1"})])
with open("curves.tsv", "w") as f:
    f.write("source\trecord\titem\tmethod\ttarget\tcurve\tfraction\tscore\tnormalised\n")
    for c in ("deletion", "insertion"):
        for i in range(5):
            y = 1 - i / 4 if c == "deletion" else i / 4
            f.write("a.st.zst\t0\t0\tsaliency\t1\t%s\t%g\t%g\t%g\n" % (c, i / 4, y, y))
PY
check "strip of three maps" esg-render --strip s.png --no-aspect m0.st.zst m1.st.zst m2.st.zst
check "strip size: 3 panels of 10 + 2 gaps of 4, 8 + an 11-pixel label band" $PYTHON - <<'PY'
import struct, zlib
d = open("s.png", "rb").read()
w, h = struct.unpack(">II", d[16:24])
assert (w, h) == (3 * 10 + 2 * 4, 8 + 11), (w, h)
# decode (8-bit RGB, filter bytes per row) and find each panel's hot pixel
raw = zlib.decompress(b"".join(d[i + 8:i + 8 + struct.unpack(">I", d[i:i + 4])[0]]
                               for i in range(8, len(d)) if d[i + 4:i + 8] == b"IDAT"))
stride = 3 * w + 1
rows, prev = [], bytearray(3 * w)
for y in range(h):
    f, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
    for i in range(len(line)):
        a = line[i - 3] if i >= 3 else 0
        b = prev[i]
        c = prev[i - 3] if i >= 3 else 0
        p = a + b - c
        pr = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c
        line[i] = (line[i] + [0, a, b, (a + b) // 2, pr][f]) & 255
    rows.append(line)
    prev = line
hot = []
for k in range(3):   # each panel holds one bright pixel, at a different place
    x0 = k * 14
    best = max(((sum(rows[11 + y][3 * (x0 + x):3 * (x0 + x) + 3]), y, x) for y in range(8) for x in range(10)))
    assert best[0] > 600, best
    hot.append(best[1:])
assert len(set(hot)) == 3, hot
# the gaps stay black
assert all(sum(rows[y][3 * 10:3 * 14]) == 0 for y in range(11, h)), "gap not black"
PY
check "curve plot" esg-render --curve-plot c.png curves.tsv
check "curve plot is 480x360" sh -c "file c.png | grep -q '480 x 360'"
check "curve plot from stdin" sh -c "esg-render --curve-plot c2.png < curves.tsv && cmp c.png c2.png"
expect_fail "--strip with --png" 2 "makes its own picture" esg-render --strip s.png --png x.png m0.st.zst
expect_fail "--strip without inputs" 2 "give the streams" esg-render --strip s.png
printf 'a\tb\n1\t2\n' > bad.tsv
expect_fail "curve plot of a table without curves" 1 "no 'fraction' and 'normalised' columns" esg-render --curve-plot c3.png bad.tsv
no_file "no picture after a failure" c3.png
done_testing
