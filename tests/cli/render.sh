#!/usr/bin/env bash
# esg-render: --info, --nifti (read back with nibabel), --png (decoded in
# Python), errors and atomic outputs.  Input streams are written in Python
# (safetensors by hand, compressed with the zstd command).
. "$(dirname "$0")/lib.sh"

cat >mk.py <<'EOF'
import json, struct, subprocess, numpy as np
DT = {'float32': 'F32', 'float64': 'F64', 'uint8': 'U8', 'int16': 'I16'}
def doc(tensors, meta):
    hdr, off, blobs = {}, 0, []
    for k, a in tensors.items():
        b = np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<')).tobytes()
        hdr[k] = {"dtype": DT[a.dtype.name], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    m = {"esg.format": "1"}; m.update(meta); hdr["__metadata__"] = m
    h = json.dumps(hdr).encode()
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)
def write(path, records):
    with open(path, 'wb') as f:
        for tensors, meta in records:
            f.write(subprocess.run(['zstd', '-q', '-c'], input=doc(tensors, meta),
                                   capture_output=True, check=True).stdout)
def aff(a):
    return json.dumps([float(x) for x in np.asarray(a).ravel()])
def vol():  # value i + 10 j + 100 k at voxel (i, j, k), shape 4 x 5 x 6
    i, j, k = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing='ij')
    return (i + 10 * j + 100 * k).astype(np.float32)
def oblique():
    c, s = np.cos(0.4), np.sin(0.4)
    A = np.array([[2 * c, 0, -4 * s, 12.5], [0, -3, 0, 40], [2 * s, 0, 4 * c, -7], [0, 0, 0, 1]])
    return A
EOF

cat >png.py <<'EOF'
import struct, zlib, sys
def read(path):
    b = open(path, 'rb').read()
    assert b[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    p, idat = 8, b''
    while p < len(b):
        n, t = struct.unpack('>I4s', b[p:p + 8]); d = b[p + 8:p + 8 + n]; p += 12 + n
        if t == b'IHDR': w, h, depth, ctype = struct.unpack('>IIBB', d[:10])
        elif t == b'IDAT': idat += d
    assert depth == 8 and ctype == 2, 'not 8-bit RGB'
    raw, bpp, stride = zlib.decompress(idat), 3, w * 3
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]; line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0; up = prev[x]; c = prev[x - bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + up) & 255
            elif f == 3: line[x] = (line[x] + (a + up) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
        rows.append(bytes(line)); prev = line
    return w, h, [[tuple(r[3 * x:3 * x + 3]) for x in range(w)] for r in rows]
def close(a, b, tol=1):
    return all(abs(x - y) <= tol for x, y in zip(a, b))
EOF

py() { "$PYTHON" -c "import sys; sys.path.insert(0, '.'); $1"; }

# vol.st.zst: record 0 image + signed attribution (one NaN) with an oblique
# affine; record 1 a 3-channel image; kji.st.zst: the same volume stored kji.
py "
import numpy as np, mk
v = mk.vol(); a = v - 300; a[0, 0, 0] = np.nan
rgb = np.stack([v, 2 * v, 3 * v])[None]
mk.write('vol.st.zst', [({'image': v[None, None], 'attribution': a[None, None]},
                         {'esg.affine': mk.aff(mk.oblique()), 'esg.axes': 'ijk'}),
                        ({'image': rgb}, {'esg.affine': mk.aff(np.diag([1., 1, 1, 1]))})])
mk.write('kji.st.zst', [({'image': np.ascontiguousarray(v.transpose(2, 1, 0))[None, None]},
                         {'esg.affine': mk.aff(mk.oblique()), 'esg.axes': 'kji'})])
mk.write('flat.st.zst', [({'image': v[None, None]}, {'esg.affine': mk.aff(np.diag([2., 3, 4, 1]))})])
" || not_ok "write the input streams"

# ---- --info ------------------------------------------------------------
check "--info runs" esg-render --info vol.st.zst
cp .out info.txt
grep -q '^record 0:' info.txt && grep -q '^record 1:' info.txt && grep -q '^records: 2$' info.txt &&
	ok "--info lists both records" || not_ok "--info lists both records"
sed -n '/tensor attribution:/,/inf:/p' info.txt >att.txt
grep -q 'dtype: *F32' att.txt && grep -q 'shape: *\[1, 1, 4, 5, 6\]' att.txt &&
	grep -q 'min: *-299$' att.txt && grep -q 'max: *243$' att.txt && grep -q 'nan: *1$' att.txt &&
	grep -q 'nonzero: *118$' att.txt && ok "--info attribution: dtype, shape, min, max, NaN, nonzero" ||
	{ not_ok "--info attribution statistics"; sed 's/^/#   /' att.txt; }
py "
import numpy as np, mk, re
a = mk.vol() - 300; a[0, 0, 0] = np.nan; f = a[~np.isnan(a)]
t = open('att.txt').read()
mean = float(re.search(r'mean: *(\S+)', t).group(1)); std = float(re.search(r'std: *(\S+)', t).group(1))
assert abs(mean - f.mean()) < 1e-4 * abs(f.mean()) and abs(std - f.std()) < 1e-5 * f.std(), (mean, std)
" && ok "--info mean and (population) std match numpy (rel 1e-5)" || not_ok "--info mean/std"
grep -q 'esg.axes: ijk' info.txt && grep -q '^  transform:' info.txt && grep -q 'shape: *\[1, 3, 4, 5, 6\]' info.txt &&
	ok "--info prints metadata, transform, channels" || not_ok "--info metadata"
check "--info --record 1" esg-render --info --record 1 vol.st.zst
grep -q '^record 1:' .out && ! grep -q '^record 0:' .out && ok "--record 1 shows record 1 only" ||
	not_ok "--record 1 shows record 1 only"
check "no output option means --info; stdin" bash -c 'esg-render < vol.st.zst | grep -q "^records: 2"'

# ---- --nifti -----------------------------------------------------------
check "--nifti attribution (default tensor)" esg-render --nifti att.nii.gz vol.st.zst
check "--nifti image from a kji stream" esg-render --nifti kji.nii --tensor image kji.st.zst
check "--nifti 3-channel record -> 4D" esg-render --nifti rgb.nii.gz -r 1 vol.st.zst
check "-o by extension" esg-render -t image -o img.nii.gz vol.st.zst
py "
import nibabel as nib, numpy as np, mk
A = mk.oblique(); v = mk.vol()
a = nib.load('att.nii.gz'); ref = v - 300; ref[0, 0, 0] = np.nan
assert a.shape == (4, 5, 6) and a.get_data_dtype() == np.float32, a.shape
assert np.array_equal(a.get_fdata(), ref, equal_nan=True), 'data'
assert int(a.header['sform_code']) == 2 and int(a.header['qform_code']) == 1
assert np.allclose(a.get_sform(), A, atol=1e-5) and np.allclose(a.get_qform(), A, atol=1e-5), a.affine
k = nib.load('kji.nii')
assert np.array_equal(k.get_fdata(), v) and np.allclose(k.affine, A, atol=1e-5), 'kji'
r = nib.load('rgb.nii.gz')
assert r.shape == (4, 5, 6, 3) and all(np.array_equal(r.get_fdata()[..., c], (c + 1) * v) for c in range(3)), r.shape
assert np.array_equal(nib.load('img.nii.gz').get_fdata(), v)
" && ok "nibabel: same data, sform = qform = the oblique flipped affine (1e-5), kji reversed, C=3 -> 4D" ||
	not_ok "nibabel read-back"
if command -v mrinfo >/dev/null; then
	mrinfo -quiet -transform att.nii.gz >mr.txt 2>/dev/null && ok "mrinfo reads it" || not_ok "mrinfo reads it"
else
	skip "mrinfo not installed"
fi

# ---- --png -------------------------------------------------------------
# flat: identity-like affine diag(2,3,4): axial slice 3 of the image, gray
# window 0..max (--clip-percentile 100), one pixel per voxel.
check "--png image slice" esg-render --png s.png -t image --no-aspect --clip-percentile 100 --slice 3 flat.st.zst
py "
import png
w, h, px = png.read('s.png'); assert (w, h) == (4, 5), (w, h)
for r in range(5):
    for c in range(4):
        g = round(255 * (c + 10 * (4 - r) + 300) / 543)
        assert png.close(px[r][c], (g, g, g)), (r, c, px[r][c], g)
" && ok "axial slice: column = i, row = j flipped (anterior up), gray = value/max (±1)" || not_ok "axial slice gray levels"
check "--png default aspect" esg-render --png a.png -t image flat.st.zst
py "
import png; w, h, px = png.read('a.png'); assert (w, h) == (4, 8), (w, h)
" && ok "voxels 2 x 3 mm: 4 x 5 voxels -> 4 x 8 pixels (square mm)" || not_ok "aspect"
check "--png sagittal mosaic" esg-render --png m.png -t image --view sagittal --mosaic 3 --no-aspect flat.st.zst
py "
import png; w, h, px = png.read('m.png'); assert (w, h) == (10, 12), (w, h)
assert px[-1][-1] == (0, 0, 0) and px[0][0] != (0, 0, 0)
" && ok "mosaic of 3 sagittal 5x6 slices: 2x2 grid, empty cell black" || not_ok "mosaic layout"
py "
import numpy as np, mk
v = mk.vol(); v[:, :, [0, 5]] = 0
mk.write('ext.st.zst', [({'image': v[None, None]}, {})])
"
check "--png mosaic over the non-empty slices" esg-render --png me.png --mosaic 2 --clip-percentile 100 ext.st.zst
py "
import png
w, h, px = png.read('me.png'); assert (w, h) == (8, 5), (w, h)
# slices 1..4 hold data: 2 tiles at 1 + floor((2m+1) 4 / 4) = 2, 4; top-left voxel (0, 4, k)
g = lambda k: round(255 * (40 + 100 * k) / 443)
assert png.close(px[0][0], (g(2),) * 3) and png.close(px[0][4], (g(4),) * 3), (px[0][0], px[0][4])
" && ok "mosaic skips empty slices: slices 2 and 4 of 1..4" || not_ok "mosaic extent"
check "--png MIP of the attribution" esg-render --png mip.png --mip --sign all --no-aspect --clip-percentile 100 -t attribution vol.st.zst
py "
import png, numpy as np, mk
w, h, px = png.read('mip.png'); assert (w, h) == (4, 5), (w, h)
a = mk.vol() - 300; a[0, 0, 0] = np.nan; vmax = np.nanmax(np.abs(a))
# oblique affine: i ~ R, j ~ -A (so row 0 = j 0 is the most anterior), k ~ S
for r in range(5):
    for c in range(4):
        ray = a[c, r, :]; x = ray[np.nanargmax(np.abs(ray))]
        t = (np.clip(x / vmax, -1, 1) + 1) / 2
        exp = (2 * t, 2 * t, 1) if t < 0.5 else (1, 2 * (1 - t), 2 * (1 - t))
        exp = tuple(round(255 * e) for e in exp)
        assert png.close(px[r][c], exp), (r, c, px[r][c], exp)
" && ok "MIP with sign all: signed extreme per ray, bwr over -max..max, rows follow the affine's flipped j (±1)" || not_ok "MIP colours"

# overlay: the flat image in gray, a map with one hot voxel, alpha 0.5
py "
import numpy as np, mk
v = mk.vol(); a = np.zeros_like(v); a[1, 2, 3] = 5; a[2, 2, 3] = -5
mk.write('ov.st.zst', [({'image': v[None, None], 'attribution': a[None, None]}, {})])
"
check "--png overlay" esg-render --png ov.png --overlay --slice 3 --clip-percentile 100 --alpha 0.5 ov.st.zst
py "
import png
w, h, px = png.read('ov.png'); assert (w, h) == (4, 5), (w, h)
g = lambda v: round(255 * v / 543)
# voxel (1, 2, 3): column 1, row 2; hot(1) = white over gray at alpha .5
exp = round(0.5 * g(321) + 0.5 * 255)
assert png.close(px[2][1], (exp, exp, exp)), (px[2][1], exp)
# voxel (2, 2, 3) is negative: absolute_value (default) colours it too
assert png.close(px[2][2], (exp, exp, exp)), px[2][2]
# elsewhere zero: gray background untouched
assert png.close(px[0][0], (g(340),) * 3), px[0][0]
" && ok "overlay: white at alpha 0.5 over gray at the hot voxels, gray elsewhere" || not_ok "overlay colours"
check "--png overlay sign positive" esg-render --png ovp.png --overlay --sign positive --cmap bwr --slice 3 --alpha 1 ov.st.zst
py "
import png
w, h, px = png.read('ovp.png')
assert png.close(px[2][1], (255, 0, 0)), px[2][1]            # bwr(1) red, opaque
assert px[2][2][0] == px[2][2][1] == px[2][2][2], px[2][2]   # negative not drawn
" && ok "sign positive: negative voxel left gray; alpha 1 gives the pure colour" || not_ok "sign positive"
check "--png with a colour bar to stdout" bash -c 'esg-render --png - --colorbar -t attribution --slice 3 ov.st.zst > cb.png'
py "
import png; w, h, px = png.read('cb.png'); assert w > 4 + 16 and h == 5, (w, h)
" && ok "colour bar widens the picture; PNG on stdout" || not_ok "colour bar"
check "2D tensor: rows = H, columns = W" bash -c "$PYTHON -c \"
import sys; sys.path.insert(0, '.'); import numpy as np, mk
mk.write('2d.st.zst', [({'image': np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)}, {'esg.axes': 'ij'})])\" &&
	esg-render --png 2d.png --clip-percentile 100 2d.st.zst &&
	$PYTHON -c \"
import sys; sys.path.insert(0, '.'); import png
w, h, px = png.read('2d.png'); assert (w, h) == (3, 2) and px[0][1] == (51, 51, 51) and px[1][2] == (255,) * 3, px\""

# ---- errors ------------------------------------------------------------
expect_fail "missing tensor names the available ones" 1 "no tensor 'saliency'.*image.*attribution" \
	esg-render --png x.png -t saliency vol.st.zst
no_file "no PNG after a missing tensor" x.png
expect_fail "record out of range" 1 "record 5 is out of range \(the stream has 2\)" esg-render --nifti x.nii -r 5 vol.st.zst
no_file "no NIfTI after a bad record" x.nii
head -c 100 vol.st.zst >trunc.st.zst
expect_fail "truncated stream" 1 "trunc.st.zst" esg-render --png x.png trunc.st.zst
printf 'this is not a stream' >junk.st.zst
expect_fail "corrupt input" 1 "junk.st.zst" esg-render --info junk.st.zst
expect_fail "unknown view" 2 "unknown view 'top'" esg-render --png x.png --view top vol.st.zst
expect_fail "unknown sign" 2 "unknown sign 'abs'" esg-render --png x.png --sign abs vol.st.zst
expect_fail "slice out of range" 1 "slice 9 is out of range 0..5" esg-render --png x.png --slice 9 vol.st.zst
expect_fail "--slice with --mip" 2 "exclude each other" esg-render --png x.png --slice 1 --mip vol.st.zst
expect_fail "--overlay without an attribution" 1 "no tensor 'attribution'" esg-render --png x.png --overlay flat.st.zst
expect_fail "missing input file" 1 "cannot open 'nope.st.zst'" esg-render --info nope.st.zst
expect_fail "empty stream" 1 "no records" esg-render --png x.png /dev/null
expect_fail "empty stream on stdin, --info" 1 "stdin: no records" bash -c 'true | esg-render --info' 
expect_fail "PNG to an unwritable dir" 1 "no/such/dir/x.png" esg-render --png no/such/dir/x.png vol.st.zst
expect_fail "NIfTI to an unwritable dir" 1 "no/such/dir/x.nii.gz" esg-render --nifti no/such/dir/x.nii.gz vol.st.zst
expect_fail "--info to a full disk" 1 "cannot write standard output" bash -c 'esg-render --info vol.st.zst >/dev/full'
no_file "no file left behind" x.png x.nii x.nii.gz
[ -z "$(ls | grep '\.tmp')" ] && ok "no temporary left behind" || not_ok "temporaries left: $(ls | grep '\.tmp')"
if command -v script >/dev/null; then
	script -qec "esg-render --png - vol.st.zst" /dev/null >tty.out 2>&1
	grep -q "refusing to write a binary stream to a terminal" tty.out && ok "--png - refuses a terminal" ||
		not_ok "--png - refuses a terminal: $(head -c 200 tty.out)"
else
	skip "script(1) missing"
fi
check "--help to stdout" bash -c 'esg-render --help | grep -q -- "--clip-percentile"'
check "--version" bash -c 'esg-render --version | grep -q "^esg-render "'
expect_fail "unknown option is a usage error" 2 "Try 'esg-render --help'" esg-render --bogus

# ---- a real brain (Colin27), when esg-load and mricron-data are there ----
ch2=/usr/share/mricron/templates/ch2.nii.gz
if command -v esg-load >/dev/null && [ -r "$ch2" ]; then
	check "ch2 -> stream" esg-load "$ch2" -o ch2.st.zst
	check "ch2 coronal PNG" esg-render --png ch2.png --view coronal ch2.st.zst
	py "
import png; w, h, px = png.read('ch2.png'); assert (w, h) == (181, 181), (w, h)
assert px[0][90] == (0, 0, 0) and sum(px[90][90]) > 100, (px[0][90], px[90][90])
" && ok "ch2 coronal: 181x181, dark above the head, tissue in the middle" || not_ok "ch2 coronal"
	check "ch2 NIfTI round trip" esg-render --nifti ch2.nii.gz ch2.st.zst
	py "
import nibabel as nib, numpy as np
a, b = nib.load('$ch2'), nib.load('ch2.nii.gz')
assert np.array_equal(a.get_fdata(), b.get_fdata()) and np.allclose(a.affine, b.affine)
" && ok "ch2 NIfTI: same voxels and affine as the original" || not_ok "ch2 NIfTI round trip"
	check "RGB PNG -> esg-load -> esg-render" bash -c 'esg-load mip.png -o rgb2d.st.zst && esg-render --png rgb2d.png --clip-percentile 100 rgb2d.st.zst'
	py "
import png; assert png.read('mip.png') == png.read('rgb2d.png')
" && ok "a 3-channel 2D image is drawn in its colours: PNG round trip is exact" || not_ok "RGB round trip"
else
	skip "esg-load or mricron-data missing"
fi
done_testing
