#!/usr/bin/env bash
# esg-compare: same / different within tolerance, the worst element, shape,
# name and record-count differences, bad input, usage errors.  The streams
# are written by the independent Python writer (tests/py/safetensors_ref.py).
. "$(dirname "$0")/lib.sh"
export PYTHONPATH=$ESG_ROOT/tests/py
if ! command -v esg-compare >/dev/null || ! command -v zstd >/dev/null; then
	skip "needs esg-compare and the zstd command"
	done_testing
fi
# differs DESC CMD...: exit 1 with nothing on stderr (a difference is not an error)
differs() {
	local d=$1; shift
	"$@" >"$T/.out" 2>"$T/.err"
	local rc=$?
	if [ $rc = 1 ] && [ ! -s "$T/.err" ]; then ok "$d"; else not_ok "$d (exit $rc, want 1; stderr: $(head -c 300 "$T/.err"))"; fi
}
$PYTHON - <<'EOF'
import numpy as np, safetensors_ref as st
a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) / 8
m = {"esg.format": "1"}
def write(path, *recs):
    st.write_stream(path, [(list(r), m) for r in recs])
write("a.st.zst", [("image", a), ("mask", (a > 1).astype(np.uint8))],
      [("image", a * 2), ("mask", (a > 2).astype(np.uint8))])
b = a.copy(); b[0, 1, 2, 3] += 1e-3                      # 2.875 -> 2.876
write("near.st.zst", [("image", b), ("mask", (a > 1).astype(np.uint8))],
      [("image", a * 2), ("mask", (a > 2).astype(np.uint8))])
write("f64.st.zst", [("image", a.astype(np.float64)), ("mask", (a > 1).astype(np.float32))],
      [("image", a * 2), ("mask", (a > 2).astype(np.int64))])
write("shape.st.zst", [("image", a.reshape(1, 2, 4, 3)), ("mask", (a > 1).astype(np.uint8))],
      [("image", a * 2), ("mask", (a > 2).astype(np.uint8))])
write("extra.st.zst", [("image", a), ("mask", (a > 1).astype(np.uint8)), ("attribution", a)],
      [("image", a * 2), ("mask", (a > 2).astype(np.uint8)), ("attribution", a)])
write("one.st.zst", [("image", a), ("mask", (a > 1).astype(np.uint8))])
n = a.copy(); n[0, 0, 0, 1] = np.nan
write("nan.st.zst", [("image", n)])
write("nan2.st.zst", [("image", n.copy())])
write("num.st.zst", [("image", a)])
EOF
[ -s a.st.zst ] && ok "Python wrote the test streams" || not_ok "Python wrote the test streams"

check "a stream equals itself" esg-compare a.st.zst a.st.zst
grep -q "^same within tolerance (atol 0, rtol 0): 2 records, 4 tensors, 96 elements" .out &&
	ok "summary line counts records, tensors, elements" || not_ok "summary line: $(cat .out)"
check "F64 vs F32, U8 vs F32 / I64: values compared as numbers" esg-compare a.st.zst f64.st.zst

differs "a 1e-3 difference with no tolerance: exit 1" esg-compare a.st.zst near.st.zst
esg-compare a.st.zst near.st.zst >diff.out
grep -q "record 1, tensor 'image': 1 of 24 elements differ; worst at \[0, 1, 2, 3\]: A 2.875, B 2.87599993" diff.out &&
	ok "the differing tensor and multi-index are named" || not_ok "differing element: $(cat diff.out)"
grep -q "^different: 1 of 4 tensors and 1 of 96 elements differ, in 2 records; worst element: record 1, tensor 'image', index \[0, 1, 2, 3\]" diff.out &&
	ok "summary names the worst element" || not_ok "summary: $(tail -1 diff.out)"
check "--atol 2e-3 accepts it" esg-compare --atol 2e-3 a.st.zst near.st.zst
differs "--atol 5e-4 does not" esg-compare --atol 5e-4 a.st.zst near.st.zst
# |a-b| = 1e-3 (float32: 9.99e-4); |b| = 2.876: rtol 4e-4 gives 1.15e-3, 3e-4 gives 8.6e-4
check "--rtol 4e-4 (times |b|) accepts it" esg-compare --rtol 4e-4 a.st.zst near.st.zst
differs "--rtol 3e-4 does not" esg-compare --rtol 3e-4 a.st.zst near.st.zst
check "-a and -r together" esg-compare -a 2e-4 -r 3e-4 a.st.zst near.st.zst
check "--tensor mask ignores the image difference" esg-compare --tensor mask a.st.zst near.st.zst

differs "shape difference" esg-compare a.st.zst shape.st.zst
grep -q "record 1, tensor 'image': shape \[1, 2, 3, 4\] in A, \[1, 2, 4, 3\] in B" .out &&
	ok "shape difference is named" || not_ok "shape difference: $(cat .out)"
differs "a tensor only in B" esg-compare a.st.zst extra.st.zst
grep -q "record 1: tensor 'attribution' is only in B" .out && ok "missing tensor is named" ||
	not_ok "missing tensor: $(cat .out)"
check "--tensor image --tensor mask skips it" esg-compare -t image -t mask a.st.zst extra.st.zst
differs "--tensor absent from both" esg-compare --tensor nope a.st.zst a.st.zst
grep -q "tensor 'nope' is in neither stream" .out && ok "absent tensor is named" || not_ok "absent: $(cat .out)"
differs "record counts differ" esg-compare a.st.zst one.st.zst
grep -q "^record count: 2 in A, 1 in B" .out && ok "record counts are given" || not_ok "counts: $(cat .out)"
check "NaN equals NaN at the same place" esg-compare nan.st.zst nan2.st.zst
differs "NaN against a number differs" esg-compare nan.st.zst num.st.zst

check "stdin as A" bash -c "esg-compare - a.st.zst < a.st.zst"
check "stdin as B" bash -c "esg-compare a.st.zst - < a.st.zst"
esg-compare -q a.st.zst near.st.zst >q.out 2>&1
rc=$?
[ $rc = 1 ] && [ ! -s q.out ] && ok "-q: silent, exit 1" || not_ok "-q (exit $rc: $(cat q.out))"
esg-compare -v a.st.zst a.st.zst >v.out
[ "$(grep -c "same (max |a-b| 0" v.out)" = 4 ] && ok "-v: a line per tensor" || not_ok "-v: $(cat v.out)"

# bad input: one line on stderr, exit 1
head -c 100 a.st.zst >cut.st.zst
expect_fail "truncated B" 1 "^esg-compare: error: cut.st.zst: record 1: truncated frame" esg-compare a.st.zst cut.st.zst
: >empty.st.zst
expect_fail "empty A" 1 "^esg-compare: error: 'empty.st.zst' holds no records" esg-compare empty.st.zst a.st.zst
expect_fail "missing file" 1 "^esg-compare: error: cannot open 'nope.st.zst'" esg-compare nope.st.zst a.st.zst
echo "not a stream" >junk.st.zst
expect_fail "not a stream" 1 "junk.st.zst: record 1: not a zstd frame" esg-compare junk.st.zst a.st.zst
expect_fail "output to /dev/full" 1 "esg-compare: error: cannot write" bash -c "esg-compare a.st.zst a.st.zst >/dev/full"

# usage errors: exit 2
expect_fail "one stream" 2 "expected two streams" esg-compare a.st.zst
expect_fail "three streams" 2 "expected two streams" esg-compare a.st.zst a.st.zst a.st.zst
expect_fail "negative --atol" 2 "atol: -1 is negative" esg-compare --atol -1 a.st.zst a.st.zst
expect_fail "--rtol not a number" 2 "rtol: 'x' is not a finite number" esg-compare --rtol x a.st.zst a.st.zst
expect_fail "unknown option is named" 2 "unknown option '--nope'" esg-compare --nope a.st.zst a.st.zst
expect_fail "missing value is named" 2 "option '--atol' needs a value" esg-compare a.st.zst a.st.zst --atol
expect_fail "both stdin" 2 "cannot both be standard input" esg-compare - -

# the man page's examples run, as written, on files made for them
mkdir ex && cp a.st.zst ex/out.st.zst && cp a.st.zst ex/golden.st.zst &&
	cp extra.st.zst ex/a.st.zst && cp extra.st.zst ex/b.st.zst
if command -v esg-load >/dev/null && $PYTHON -c 'import nibabel' 2>/dev/null; then
	(cd ex && $PYTHON -c "import nibabel as nb, numpy as np; nb.save(nb.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.eye(4)), 'img.nii.gz')" &&
		esg-load img.nii.gz -o img.st.zst)
fi
sed -n '/^\.EX$/,/^\.EE$/p' "$ESG_ROOT/man/esg-compare.1" | grep '^esg' | sed 's/\\-/-/g' >examples
[ "$(wc -l <examples)" -ge 3 ] && ok "man page has examples" || not_ok "man page has examples"
while IFS= read -r cmd; do
	case "$cmd" in
	*esg-load*) [ -f ex/img.st.zst ] || { skip "man example needs esg-load and nibabel: $cmd"; continue; } ;;
	esac
	check "man example: $cmd" bash -c "cd ex && $cmd"
done <examples
done_testing
