#!/usr/bin/env bash
# The stream format against an independent implementation: libesg writes,
# the zstd command decompresses and a json+numpy reader written from the
# safetensors spec (tests/py/safetensors_ref.py) checks every byte; then the
# reverse, Python and the zstd command write and libesg reads.
. "$(dirname "$0")/lib.sh"
TS=${ESG_BIN:-$ESG_ROOT/build/bin}/../tests/test_stream
export PYTHONPATH=$ESG_ROOT/tests/py
if [ ! -x "$TS" ] || ! command -v zstd >/dev/null || ! $PYTHON -c 'import numpy' 2>/dev/null; then
	skip "needs test_stream (built), the zstd command and numpy"
	done_testing
fi

# ---- libesg -> zstd -> Python ----
check "libesg writes a one-record fixture" "$TS" --write-fixture one.st.zst
check "zstd -t accepts the stream" zstd -q -t one.st.zst
zstd -lv one.st.zst >list.txt 2>&1
grep -q "Check: XXH64" list.txt && ok "frame has a content checksum" || not_ok "frame has a content checksum ($(cat list.txt))"
grep -Eq "Decompressed Size: .*\([0-9]+ B\)" list.txt && ok "frame header gives the content size" ||
	not_ok "frame header gives the content size"
check "zstd -d gives a plain safetensors file" zstd -q -d one.st.zst -o one.safetensors
# Expected bytes: tests/unit/test_stream.c every_dtype_record(3), recomputed here.
check "Python's reader validates every tensor, offset and byte" $PYTHON - <<'EOF'
import struct, safetensors_ref as st
doc = open("one.safetensors", "rb").read()
(n,) = struct.unpack("<Q", doc[:8])
assert n % 8 == 0, "header size %d not a multiple of 8" % n
assert doc[8:24] == b'{"__metadata__":', doc[8:40]
assert doc[8 + n - 1:8 + n] in (b" ", b"}"), "padding is spaces"
meta, tensors = st.decode(doc)
want_meta = {"esg.format": "1", "esg.seed": "3", "esg.args": '["esg-load","-o","x.st.zst"]',
             "esg.source": 'sub-01 "quoted" \\ ünïcødé\ttab'}
assert meta == want_meta, meta
order = ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"]
size = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
def pattern(dt, nbytes, k):
    if dt == "BOOL":
        return bytes((i + k) % 2 for i in range(nbytes))
    return bytes((i * 7 + k * 13) % 61 for i in range(nbytes))
want = [("t_" + dt, dt, [2, 3, d + 1], 3 + d) for d, dt in enumerate(order)]
want += [("scalar", "F64", [], 3), ("empty", "F32", [4, 0], 0)]
assert [t[0] for t in tensors] == [w[0] for w in want], [t[0] for t in tensors]
data = doc[8 + n:]
at = 0
for (name, dt, shape, arr), (wname, wdt, wshape, k) in zip(tensors, want):
    assert (dt, shape) == (wdt, wshape), (name, dt, shape)
    nb = size[dt] * (2 * 3 * shape[2] if len(shape) == 3 else (1 if not shape else 0))
    assert data[at:at + nb] == pattern(dt, nb, k), name
    at += nb
assert at == len(data)
print("ok")
EOF

# libesg's view of the values equals numpy's (F16, BF16 conversions included)
"$TS" --dump one.st.zst >c.dump 2>c.err
$PYTHON - >py.dump <<'EOF'
import safetensors_ref as st
for r, (meta, tensors) in enumerate(st.read_stream("one.st.zst"), 1):
    print("record %d" % r)
    for k, v in meta.items():
        print("meta %s=%s" % (k, v))
    for name, dt, shape, arr in tensors:
        vals = "".join(" %.9g" % float(x) for x in arr.ravel())
        print("tensor %s %s [%s]%s" % (name, dt, ", ".join(map(str, shape)), vals))
EOF
check "libesg and numpy read the same values" cmp c.dump py.dump

# ---- Python -> zstd -> libesg ----
$PYTHON - <<'EOF'
import numpy as np, safetensors_ref as st
rng = np.random.default_rng(7)
img = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
recs = [
    ([("image", img), ("mask", (img > 0).astype(np.uint8)), ("pred", img.astype(np.float64) * 2)],
     {"esg.format": "1", "esg.affine": "[2,0,0,-90,0,2,0,-126,0,0,2,-72,0,0,0,1]", "x.unknown": "kept"}),
    ([("flags", np.array([True, False, True])), ("h", img[0, 0].astype(np.float16)),
      ("i", np.arange(-5, 5, dtype=np.int16)), ("j", np.array([2**40, -3], dtype=np.int64)),
      ("k", np.array([-128, 127], dtype=np.int8)), ("l", np.array([1 << 30], dtype=np.int32)),
      ("s", np.array(3.25))], None),
]
st.write_stream("py.st.zst", recs)
# The same records: one frame piped through zstd (no content size, no checksum).
with open("pipe.st.zst", "wb") as f:
    for t, m in recs:
        f.write(st.zstd_compress(st.encode(t, m), ("--no-check",)))
with open("expect.dump", "w") as f:
    for r, (tensors, meta) in enumerate(recs, 1):
        print("record %d" % r, file=f)
        for k, v in (meta or {}).items():
            print("meta %s=%s" % (k, v), file=f)
        for name, arr in tensors:
            name_dt = st.NAMES[arr.dtype.newbyteorder("<").str]
            vals = "".join(" %.9g" % float(x) for x in np.ravel(arr))
            print("tensor %s %s [%s]%s" % (name, name_dt, ", ".join(map(str, arr.shape)), vals), file=f)
EOF
check "libesg reads Python's two-record stream" "$TS" --dump py.st.zst
"$TS" --dump py.st.zst >got.dump 2>got.err
check "... every name, dtype, shape, value and metadata key" cmp got.dump expect.dump
"$TS" --dump pipe.st.zst >pipe.dump 2>pipe.err
check "frames without content size or checksum read the same" cmp pipe.dump expect.dump

cat one.st.zst py.st.zst >cat.st.zst
"$TS" --dump cat.st.zst >cat.dump 2>cat.err
[ "$(grep -c '^record' cat.dump)" = 3 ] && ok "cat of two streams is a stream of 3 records" ||
	not_ok "cat of two streams ($(cat cat.err))"

# ---- mistakes a person makes with zstd, and their messages ----
zstd -q -d py.st.zst -o two.safetensors
zstd -q -c two.safetensors >joined.st.zst
expect_fail "two documents in one frame" 1 "record 1: [0-9]+ trailing bytes" "$TS" --dump joined.st.zst
expect_fail "an uncompressed safetensors file" 1 "record 1: not a zstd frame.*uncompressed safetensors" \
	"$TS" --dump one.safetensors
head -c 300 py.st.zst >cut.st.zst
expect_fail "a truncated stream" 1 "cut.st.zst: record 1: truncated frame" "$TS" --dump cut.st.zst
done_testing
