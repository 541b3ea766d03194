#!/usr/bin/env bash
# esg-load: NIfTI-1/2, PNG and NPY to a tensor stream, checked value by value
# against nibabel / numpy (tests/cli/load_helper.py); options; error cases.
. "$(dirname "$0")/lib.sh"
H="$ESG_ROOT/tests/cli/load_helper.py"
if ! $PYTHON -c 'import nibabel, numpy' 2>/dev/null; then
	skip "python3 with nibabel and numpy is needed"
	
# every example of the man page runs
sed -n '/^\.EX/,/^\.EE/p' "$ESG_ROOT/man/esg-load.1" | grep -v '^\.E[XE]' | sed 's/\\e$/\\/; s/\\e/\\/g' >examples.sh
n=$(grep -vc '^ ' examples.sh)
[ "$n" -ge 5 ] && ok "man page has $n examples" || not_ok "man page examples ($n)"
check "man page examples run" bash -c "bash -eu examples.sh >examples.out"
check "man page example output" grep -qF "'shape': [1, 1, 192, 224, 192]" examples.out
done_testing
fi
$PYTHON "$H" gen || { not_ok "generate fixtures"; done_testing; }

# load ARGS... then check CASE: two tests, one name
lc() {
	local case=$1; shift
	check "esg-load $* ($case)" esg-load "$@" -o "$case.st.zst"
	check "$case matches the reference" $PYTHON "$H" check "$case" "$case.st.zst"
}

# NIfTI: values = nibabel get_fdata(), affine = img.affine
lc obl1 obl1.nii
lc obl1-kji --axes kji obl1.nii
lc obl2 obl2.nii.gz
lc u8q u8q.nii.gz
lc u8s u8s.nii
lc be be.nii
lc pair.img pair.img
lc pair.hdr pair.hdr
lc rgb rgb.nii
lc mask-nonzero --tensor mask --normalise zscore --nonzero --level 19 masked.nii
lc f64 f64.nii
lc noaff noaff.nii
lc vol4d-channels vol4d.nii.gz
lc vol4d-records --volumes records vol4d.nii.gz
lc stack -g 2 obl1.nii obl1b.nii
lc records obl1.nii obl1b.nii
# normalisation against numpy
lc norm-minmax --normalise minmax obl1.nii
lc norm-zscore --normalise zscore obl1.nii
lc norm-percentile --normalise percentile --percentiles 2,98 obl1.nii
# crop / pad to a multiple, affine kept
lc fit-pad-centre --multiple 4 --pad-value -1.5 obl1.nii
lc fit-pad-end --multiple 4 --align end --pad-value -1.5 obl1.nii
lc fit-crop-centre --multiple 2,2,3 --fit crop obl1.nii
lc fit-crop-end --multiple 2,2,3 --fit crop --align end obl1.nii
lc fit-crop-odd --multiple 4 --fit crop obl1.nii
# 2D slices
lc slice-k2 --slice k:2 obl1.nii
lc slice-jmid-kji --slice j:mid --axes kji obl1.nii
# PNG
for p in g8 g16 rgb8 rgba8 rgb16 ga8 g1 pal; do lc "png-$p" "$p.png"; done
lc png-rgba8:gray --channels gray rgba8.png
lc png-rgb16:gray --channels gray rgb16.png
lc png-rgba8:no-alpha --channels no-alpha rgba8.png
lc png-ga8:no-alpha --channels no-alpha ga8.png
lc png-g8:rgb --channels rgb g8.png
# NPY
for n in f4 f8f i2 u1 b1 i8 u2 i1 i4 be v3; do lc "npy-$n" "$n.npy"; done
lc npy-nchw --layout NCHW nchw.npy
lc npy-zyx-kji --axes kji zyx.npy
lc npy-zyx-chw --layout CHW zyx.npy
lc npy-zyx-hwc --layout HWC zyx.npy
# the real brain (Colin27, 181x217x181)
CH2=/usr/share/mricron/templates/ch2.nii.gz
if [ -f "$CH2" ]; then lc ch2 "$CH2"; else skip "mricron-data not installed"; skip "ch2"; fi
# U-Net sizes on the brain: 181x217x181 padded to multiples of 16
check "ch2 --multiple 16" esg-load --multiple 16 --normalise zscore "$CH2" -o ch2p.st.zst
check "ch2 padded shape and origin" $PYTHON -c "
import sys; sys.path.insert(0, '$ESG_ROOT/tests/cli'); import load_helper as h, json, numpy as np
(ts, m), = h.read_stream('ch2p.st.zst')
assert ts['image'].shape == (1, 1, 192, 224, 192), ts['image'].shape
assert json.loads(m['esg.crop']) == [-5, -3, -5], m['esg.crop']
assert json.loads(m['esg.affine'])[3::4][:3] == [-95, -128, -76], m['esg.affine']"

# -o onto a FIFO (or a device) writes in place: no temporary file renamed over it
mkfifo fifo
cat fifo >fifo.out &
check "-o FIFO" esg-load -o fifo obl1.nii
wait
check "-o FIFO keeps the FIFO" test -p fifo
check "-o FIFO output is the stream" $PYTHON "$H" check obl1 fifo.out
# stdout and a pipe
check "stream on stdout" bash -c "esg-load obl1.nii | zstd -dc | head -c 8 | wc -c | grep -qx 8"

# error cases: one line on stderr, exit 1 (data) or 2 (usage), no output left
err() { # DESC CODE PATTERN ARGS...
	local d=$1 c=$2 p=$3; shift 3
	rm -f bad.st.zst
	expect_fail "$d" "$c" "^esg-load: error: .*$p" esg-load "$@" -o bad.st.zst
	# one error line (a usage error adds the "Try --help" hint)
	[ "$(grep -c . "$T/.err")" = $((c == 2 ? 2 : 1)) ] && [ "$(grep -c 'error:' "$T/.err")" = 1 ] &&
		ok "$d: one error line" || not_ok "$d: one error line ($(cat "$T/.err"))"
	no_file "$d: no output" bad.st.zst
}
err "missing file" 1 "cannot open 'nope.nii'" nope.nii
err "not an image" 1 "'text.nii'" text.nii
err "not an image (.txt)" 1 "not a NIfTI" "$H"
err "truncated .nii.gz" 1 "'trunc.nii.gz'.*(truncated|corrupt)" trunc.nii.gz
head -c 60 rgb8.png >trunc.png
err "truncated PNG" 1 "'trunc.png': truncated PNG" trunc.png
$PYTHON -c "b = bytearray(open('rgb8.png', 'rb').read()); b[29] ^= 0xff; open('bad.png', 'wb').write(b)"
err "corrupt PNG" 1 "'bad.png': bad PNG" bad.png
head -c 100 obl1.nii >hdr.nii
err "truncated NIfTI header" 1 "'hdr.nii'" hdr.nii
head -c 400 f4.npy >trunc.npy
err "truncated NPY" 1 "'trunc.npy': truncated NPY data" trunc.npy
err "complex NIfTI" 1 "unsupported NIfTI datatype" complex.nii
err "mismatched channel shapes" 1 "cannot stack 'other.nii'.*shapes differ" -g 2 obl1.nii other.nii
err "object NPY" 1 "object arrays" obj.npy
err "complex NPY" 1 "unsupported NPY dtype" c8.npy
err "4D NPY without layout" 1 "--layout" nchw.npy
err "bad layout" 1 "layout" --layout NNHW nchw.npy
err "slice out of range" 1 "slice k=9 is outside" --slice k:9 obl1.nii
err "slice of a 2D PNG axis k" 1 "no voxel axis 'k'" --slice k:0 g8.png
err "gray of 3 channels" 1 "channel conversion" --channels gray vol5.nii
err "crop below the multiple" 1 "cannot crop" --multiple 8 --fit crop obl1.nii
err "--multiple count" 1 "3 values given for 2" --multiple 2,2,2 g8.png
err "bad --normalise" 2 "--normalise: unknown value 'foo'" --normalise foo obl1.nii
err "bad --multiple" 2 "--multiple" --multiple 0 obl1.nii
err "bad --slice" 2 "--slice" --slice x:1 obl1.nii
err "bad --slice index" 2 "--slice" --slice k:abc obl1.nii
err "bad --percentiles" 2 "--percentiles" --percentiles 90,10 obl1.nii
err "bad --group" 2 "--group" -g 2 obl1.nii
err "bad --axes" 2 "--axes" --axes xyz obl1.nii
err "no input" 2 "no input"
err "stdin input" 2 "standard input" -
expect_fail "missing option value" 2 "^esg-load: error: option '--fit' needs a value" esg-load obl1.nii --fit
# a failure in the second record removes the whole output
err "second file bad" 1 "cannot open 'nope.nii'" obl1.nii nope.nii

# every example of the man page runs
sed -n '/^\.EX/,/^\.EE/p' "$ESG_ROOT/man/esg-load.1" | grep -v '^\.E[XE]' | sed 's/\\e$/\\/; s/\\e/\\/g' >examples.sh
n=$(grep -vc '^ ' examples.sh)
[ "$n" -ge 5 ] && ok "man page has $n examples" || not_ok "man page examples ($n)"
check "man page examples run" bash -c "bash -eu examples.sh >examples.out"
check "man page example output" grep -qF "'shape': [1, 1, 192, 224, 192]" examples.out
done_testing
