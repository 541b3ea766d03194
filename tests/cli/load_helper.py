"""Fixtures and reference checks for tests/cli/load.sh (esg-load).

  load_helper.py gen              write the test images into the current folder
  load_helper.py check CASE FILE  compare the stream FILE with nibabel / numpy

References are independent of esg: nibabel's get_fdata() and img.affine,
numpy for NPY and normalisation, a hand-written PNG encoder (zlib + struct).
The stream is read with the zstd command and json + numpy (safetensors).
"""
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import nibabel as nib

ATOL = 1e-5  # float32 values against float64 references (relative part too)
RTOL = 1e-6


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
            ts[k] = np.frombuffer(raw[base + a:base + b], '<f4').reshape(v['shape'])
            end = max(end, base + b)
        recs.append((ts, meta))
        off = end
    return recs


def oblique_affine():
    # rotation about an oblique axis, anisotropic voxels, non-trivial origin
    th = 0.3
    u = np.array([1.0, 2.0, 0.5])
    u /= np.linalg.norm(u)
    K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    R = np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K
    A = np.eye(4)
    A[:3, :3] = R @ np.diag([1.2, 0.9, 2.5])
    A[:3, 3] = [-40.5, 22.25, 7.0]
    return A


def png_bytes(a, bitdepth, color_type, plte=b''):
    """a: uint array [H, W] or [H, W, C]; big-endian samples, filter 0."""
    H, W = a.shape[:2]
    dt = '>u2' if bitdepth == 16 else 'u1'
    if bitdepth == 1:
        rows = b''.join(b'\x00' + np.packbits(a[y].astype(np.uint8)).tobytes() for y in range(H))
    else:
        rows = b''.join(b'\x00' + a[y].astype(dt).tobytes() for y in range(H))

    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', W, H, bitdepth, color_type, 0, 0, 0)
    pl = chunk(b'PLTE', plte) if plte else b''
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + pl + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')


def gen():
    rng = np.random.default_rng(7)
    A = oblique_affine()
    # NIfTI-1 float32, oblique sform (and the same as qform)
    vol = rng.normal(100, 20, (7, 5, 4)).astype(np.float32)
    img = nib.Nifti1Image(vol, A)
    img.set_sform(A, 2)
    img.set_qform(A, 1)
    nib.save(img, 'obl1.nii')
    # same geometry, second channel for stacking
    nib.save(nib.Nifti1Image((vol * 2 + 1).astype(np.float32), A), 'obl1b.nii')
    # NIfTI-2 int16 with scl_slope / scl_inter, gzipped
    # (nibabel resets scl_* for integer arrays; from float data it picks them)
    img = nib.Nifti2Image(rng.normal(-20, 300, (6, 5, 3)), A)
    img.set_data_dtype(np.int16)
    nib.save(img, 'obl2.nii.gz')
    img = nib.Nifti1Image(rng.uniform(0.25, 1.75, (5, 4, 3)), A)
    img.set_data_dtype(np.uint8)
    nib.save(img, 'u8s.nii')
    for f in ('obl2.nii.gz', 'u8s.nii'):
        px = nib.load(f).dataobj  # nibabel moves scl_* from the header to the proxy
        assert px.slope != 1 and px.inter != 0, (f, px.slope, px.inter)
    # uint8, qform only (sform code 0)
    q = np.array([[0, 0, 1.5, -10], [-1, 0, 0, 20], [0, 2, 0, 5], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(rng.integers(0, 255, (4, 6, 5)).astype(np.uint8), None)
    img.set_qform(q, 1)
    img.set_sform(None, 0)
    img.header.set_data_dtype(np.uint8)
    nib.save(img, 'u8q.nii.gz')
    # big-endian int16 (libnifti swaps)
    hdr = nib.Nifti1Header(endianness='>')
    nib.save(nib.Nifti1Image(rng.integers(-999, 999, (3, 4, 2)).astype('>i2'), A, hdr), 'be.nii')
    # RGB24: three channels
    rgb = np.zeros((3, 2, 2), [('R', 'u1'), ('G', 'u1'), ('B', 'u1')])
    for c in 'RGB':
        rgb[c] = rng.integers(0, 255, rgb.shape)
    nib.save(nib.Nifti1Image(rgb, A), 'rgb.nii')
    # a .hdr/.img pair
    nib.save(nib.Nifti1Pair(vol, A), 'pair.img')
    # float64 NIfTI-2, uncompressed
    nib.save(nib.Nifti2Image(rng.normal(0, 1, (3, 4, 5)), A), 'f64.nii')
    # no sform, no qform: the pixdim diagonal
    img = nib.Nifti1Image(rng.normal(0, 1, (3, 3, 2)).astype(np.float32), None)
    img.header.set_zooms((2.0, 3.0, 4.0))
    img.set_sform(None, 0)
    img.set_qform(None, 0)
    nib.save(img, 'noaff.nii')
    # 4D: 3 volumes
    nib.save(nib.Nifti1Image(rng.normal(0, 1, (4, 3, 2, 3)).astype(np.float32), A), 'vol4d.nii.gz')
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 5), np.float32), A), 'vol5.nii')
    # complex64: unsupported
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.complex64), np.eye(4)), 'complex.nii')
    # a different shape, for the channel-mismatch error
    nib.save(nib.Nifti1Image(np.ones((7, 5, 3), np.float32), A), 'other.nii')
    # truncated .nii.gz
    blob = open('obl2.nii.gz', 'rb').read()
    nib.save(nib.Nifti1Image(rng.normal(0, 1, (20, 20, 20)).astype(np.float32), A), 'big.nii.gz')
    big = open('big.nii.gz', 'rb').read()
    open('trunc.nii.gz', 'wb').write(big[:len(big) // 2])
    del blob
    # PNGs (gray, RGB, RGBA; 8 and 16 bit) and their arrays
    pngs = {
        'g8': (rng.integers(0, 256, (5, 7)), 8, 0),
        'g16': (rng.integers(0, 65536, (4, 6)), 16, 0),
        'rgb8': (rng.integers(0, 256, (5, 4, 3)), 8, 2),
        'rgba8': (rng.integers(0, 256, (3, 5, 4)), 8, 6),
        'rgb16': (rng.integers(0, 65536, (4, 3, 3)), 16, 2),
        'ga8': (rng.integers(0, 256, (3, 4, 2)), 8, 4),
    }
    # 1-bit gray (values 0/1, unscaled) and an 8-bit palette (expanded to RGB)
    g1 = rng.integers(0, 2, (3, 11))
    open('g1.png', 'wb').write(png_bytes(g1, 1, 0))
    np.save('g1.ref.npy', g1)
    pal = rng.integers(0, 256, (4, 3))
    idx = rng.integers(0, 4, (5, 6))
    open('pal.png', 'wb').write(png_bytes(idx, 8, 3, pal.astype(np.uint8).tobytes()))
    np.save('pal.ref.npy', pal[idx])
    for name, (a, bd, ct) in pngs.items():
        open(name + '.png', 'wb').write(png_bytes(a, bd, ct))
        np.save(name + '.ref.npy', a)
    # NPY
    x = rng.normal(0, 1, (4, 5, 6)).astype(np.float32)
    np.save('f4.npy', x)
    np.save('f8f.npy', np.asfortranarray(rng.normal(0, 1, (3, 4, 5))))
    np.save('i2.npy', rng.integers(-1000, 1000, (6, 7)).astype(np.int16))
    np.save('u1.npy', rng.integers(0, 255, (5, 5)).astype(np.uint8))
    np.save('b1.npy', rng.integers(0, 2, (4, 4)).astype(bool))
    np.save('i8.npy', rng.integers(-2**40, 2**40, (3, 4)).astype(np.int64))
    np.save('u2.npy', rng.integers(0, 65535, (3, 4)).astype(np.uint16))
    np.save('i1.npy', rng.integers(-128, 127, (3, 4)).astype(np.int8))
    np.save('i4.npy', rng.integers(-2**31, 2**31 - 1, (3, 4)).astype(np.int32))
    np.save('be.npy', rng.normal(0, 1, (3, 4)).astype('>f4'))
    np.save('nchw.npy', rng.normal(0, 1, (2, 3, 4, 5)).astype(np.float32))
    np.save('obj.npy', np.array([1, 'a', None], dtype=object), allow_pickle=True)
    np.save('c8.npy', np.ones((2, 2), np.complex64))
    # a version 3.0 header written by hand
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
    hdr += ' ' * ((64 - (12 + len(hdr) + 1) % 64) % 64) + '\n'
    data = np.arange(6, dtype='<f4')
    open('v3.npy', 'wb').write(b'\x93NUMPY\x03\x00' + struct.pack('<I', len(hdr)) + hdr.encode() + data.tobytes())
    np.save('zyx.npy', np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    x = nib.load('obl1.nii').get_fdata()
    x[x < 100] = 0
    nib.save(nib.Nifti1Image(x.astype(np.float32), A), 'masked.nii')
    open('text.nii', 'w').write('this is not an image\n' * 30)


def close(a, b, what, atol=ATOL, rtol=RTOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        sys.exit('%s: shape %s, want %s' % (what, a.shape, b.shape))
    if not np.allclose(a, b, atol=atol, rtol=rtol):
        sys.exit('%s: max abs diff %g' % (what, np.abs(a - b).max()))


def one(path, n=1):
    recs = read_stream(path)
    if len(recs) != n:
        sys.exit('%d records, want %d' % (len(recs), n))
    return recs


def aff(meta):
    return np.array(json.loads(meta['esg.affine'])).reshape(4, 4)


def shifted(A, off):
    T = np.eye(4)
    T[:3, 3] = off
    return A @ T


def check_nifti(path, stream, order='ijk', norm=None):
    img = nib.load(path)
    want = img.get_fdata()
    (ts, m), = one(stream)
    got = ts['image']
    ref = want if order == 'ijk' else want.transpose(2, 1, 0)
    close(got[0, 0], ref, 'values')
    if path != 'noaff.nii':  # nibabel's fallback differs (documented)
        close(aff(m), img.affine, 'affine', atol=1e-5)
    zooms = list(img.header.get_zooms()[:3])
    close(json.loads(m['esg.spacing']), zooms if order == 'ijk' else zooms[::-1], 'spacing')
    assert m['esg.axes'] == order, m['esg.axes']
    assert m['esg.source'] == path
    assert m['esg.producer'].startswith('esg-load ')
    assert json.loads(m['esg.args'])[0].endswith('esg-load')


def world(A, ijk):
    return (A @ np.append(np.asarray(ijk, float), 1.0))[:3]


def check(case, stream):
    if case in ('obl1', 'obl2', 'u8q', 'f64', 'noaff', 'u8s'):
        src = {'obl1': 'obl1.nii', 'obl2': 'obl2.nii.gz', 'u8q': 'u8q.nii.gz', 'u8s': 'u8s.nii',
               'f64': 'f64.nii', 'noaff': 'noaff.nii'}[case]
        check_nifti(src, stream)
        if case == 'noaff':
            close(aff(read_stream(stream)[0][1]), np.diag([2.0, 3, 4, 1]), 'pixdim affine')
    elif case in ('pair.img', 'pair.hdr'):
        check_nifti(case, stream)
    elif case == 'be':
        assert nib.load('be.nii').header.endianness == '>'
        check_nifti('be.nii', stream)
    elif case == 'rgb':
        a = np.asarray(nib.load('rgb.nii').dataobj)
        (ts, m), = one(stream)
        close(ts['image'][0], np.stack([a[c] for c in 'RGB']), 'RGB24 as 3 channels', atol=0)
    elif case == 'mask-nonzero':
        x = nib.load('obl1.nii').get_fdata()
        x[x < 100] = 0
        (ts, m), = one(stream)
        nz = x[x != 0]
        want = np.where(x != 0, (x - nz.mean()) / nz.std(), 0)
        close(ts['mask'][0, 0], want, 'zscore of the non-zero voxels')
        assert list(ts) == ['mask']
    elif case == 'obl1-kji':
        check_nifti('obl1.nii', stream, 'kji')
    elif case == 'vol4d-channels':
        img = nib.load('vol4d.nii.gz')
        (ts, m), = one(stream)
        close(ts['image'][0], np.moveaxis(img.get_fdata(), 3, 0), '4D as channels')
        close(aff(m), img.affine, 'affine')
    elif case == 'vol4d-records':
        img = nib.load('vol4d.nii.gz')
        recs = one(stream, 3)
        for t, (ts, m) in enumerate(recs):
            close(ts['image'][0, 0], img.get_fdata()[..., t], 'volume %d' % t)
            assert m['esg.volume'] == str(t)
    elif case == 'stack':
        (ts, m), = one(stream)
        a, b = nib.load('obl1.nii').get_fdata(), nib.load('obl1b.nii').get_fdata()
        close(ts['image'][0], np.stack([a, b]), 'stacked channels')
        assert json.loads(m['esg.sources']) == ['obl1.nii', 'obl1b.nii']
    elif case == 'records':
        recs = one(stream, 2)
        for (ts, m), f in zip(recs, ['obl1.nii', 'obl1b.nii']):
            close(ts['image'][0, 0], nib.load(f).get_fdata(), f)
            assert m['esg.source'] == f
    elif case.startswith('norm-'):
        x = nib.load('obl1.nii').get_fdata()
        (ts, m), = one(stream)
        mode = case[5:]
        if mode == 'minmax':
            want = (x - x.min()) / (x.max() - x.min())
        elif mode == 'zscore':
            want = (x - x.mean()) / x.std()
        else:
            lo, hi = np.percentile(x, [2, 98])
            want = (np.clip(x, lo, hi) - lo) / (hi - lo)
        close(ts['image'][0, 0], want, mode, atol=1e-5)
        assert json.loads(m['esg.normalise'])['mode'] == mode
    elif case == 'fit-crop-odd':
        # 7x5x4 --multiple 4 --fit crop: 7->4 (3 removed: 1 before, 2 after), 5->4, 4->4
        img = nib.load('obl1.nii')
        x, A = img.get_fdata(), img.affine
        (ts, m), = one(stream)
        off = json.loads(m['esg.crop'])
        assert off == [1, 0, 0], off
        close(ts['image'][0, 0], x[1:5, 0:4, 0:4], 'cropped values')
        close(world(aff(m), [0, 0, 0]), world(A, [1, 0, 0]), 'world of new voxel 0')
    elif case.startswith('fit-'):
        # fit-pad-centre: 7x5x4 --multiple 4 ; fit-crop-centre / fit-crop-end: --multiple 2 (3 for k)
        img = nib.load('obl1.nii')
        x, A = img.get_fdata(), img.affine
        (ts, m), = one(stream)
        got = ts['image'][0, 0]
        off = np.array(json.loads(m['esg.crop']), int)
        close(json.loads(m['esg.shape_orig']), [7, 5, 4], 'shape_orig')
        want_off = {'fit-pad-centre': [0, -1, 0], 'fit-crop-centre': [0, 0, 0],
                    'fit-crop-end': [0, 0, 0], 'fit-pad-end': [0, 0, 0]}[case]
        want_shape = {'fit-pad-centre': (8, 8, 4), 'fit-crop-centre': (6, 4, 3),
                      'fit-crop-end': (6, 4, 3), 'fit-pad-end': (8, 8, 4)}[case]
        if case == 'fit-crop-centre':
            want_off = [0, 0, 0]  # 7->6, 5->4, 4->3: one voxel removed, after (centre)
        if list(off) != want_off or got.shape != want_shape:
            sys.exit('offset %s shape %s, want %s %s' % (off, got.shape, want_off, want_shape))
        B = aff(m)
        close(B, shifted(A, off), 'affine translation')
        # every kept voxel: same value, same world coordinates
        for v in np.ndindex(*got.shape):
            o = np.array(v) + off
            if np.all(o >= 0) and np.all(o < x.shape):
                if abs(got[v] - x[tuple(o)]) > 1e-4:
                    sys.exit('value at %s' % (v,))
            elif got[v] != -1.5:
                sys.exit('pad value at %s is %g' % (v, got[v]))
        close(world(B, [1, 2, 1]), world(A, np.array([1, 2, 1]) + off), 'world of a kept voxel')
    elif case.startswith('slice-'):
        img = nib.load('obl1.nii')
        x, A = img.get_fdata(), img.affine
        (ts, m), = one(stream)
        got = ts['image'][0, 0]
        if case == 'slice-k2':
            close(got, x[:, :, 2], 'slice k=2')
            assert m['esg.axes'] == 'ij'
            close(aff(m), shifted(A, [0, 0, 2]), 'slice affine')
            close(world(aff(m), [3, 1, 0]), world(A, [3, 1, 2]), 'world of slice voxel')
            close(json.loads(m['esg.spacing']), img.header.get_zooms()[:2], 'spacing')
        elif case == 'slice-jmid-kji':
            close(got, x[:, 2, :].T, 'slice j=mid, kji')
            assert m['esg.axes'] == 'ki', m['esg.axes']
            close(aff(m), shifted(A, [0, 2, 0]), 'slice affine')
        assert json.loads(m['esg.slice'])['axis'] in 'ijk'
    elif case.startswith('png-'):
        name, *mode = case[4:].split(':')
        ref = np.load(name + '.ref.npy').astype(np.float64)
        if ref.ndim == 2:
            ref = ref[..., None]
        if mode == ['gray']:
            rgb = ref[..., :3] if ref.shape[2] >= 3 else ref[..., :1]
            ref = (rgb @ [0.299, 0.587, 0.114])[..., None] if rgb.shape[2] == 3 else rgb
        elif mode == ['rgb']:
            ref = ref[..., :3] if ref.shape[2] >= 3 else np.repeat(ref[..., :1], 3, 2)
        elif mode == ['no-alpha']:
            ref = ref[..., :3] if ref.shape[2] >= 3 else ref[..., :1]
        (ts, m), = one(stream)
        close(ts['image'][0], np.moveaxis(ref, 2, 0), case, atol=0.02, rtol=1e-6)
        assert m['esg.axes'] == 'ij'
        close(aff(m), np.eye(4), 'identity affine')
    elif case.startswith('npy-'):
        name = case[4:]
        if name == 'nchw':
            a = np.load('nchw.npy')
            for n, (t, mm) in enumerate(one(stream, 2)):
                close(t['image'][0], a[n], 'record %d' % n, atol=0, rtol=0)
                assert mm['esg.volume'] == str(n)
            return
        (ts, m), = one(stream)
        got = ts['image'][0, 0]
        zyx = np.load('zyx.npy')
        if name == 'v3':
            a = np.arange(6).reshape(2, 3)
        elif name == 'zyx-kji':
            a = zyx.transpose(2, 1, 0)
            assert m['esg.axes'] == 'kji'
        elif name == 'zyx-chw':
            got, a = ts['image'][0], zyx
        elif name == 'zyx-hwc':
            got, a = ts['image'][0], np.moveaxis(zyx, 2, 0)
        else:
            a = np.load(name + '.npy')
        # exactly numpy's own conversion to float32
        close(got, np.asarray(a).astype(np.float32), name, atol=0, rtol=0)
    elif case == 'ch2':
        img = nib.load('/usr/share/mricron/templates/ch2.nii.gz')
        (ts, m), = one(stream)
        got = ts['image']
        assert got.shape == (1, 1, 181, 217, 181), got.shape
        close(aff(m), img.affine, 'affine')
        x = np.asarray(img.dataobj)
        for v in [(90, 108, 90), (0, 0, 0), (180, 216, 180), (45, 150, 120), (100, 30, 170)]:
            if got[(0, 0) + v] != x[v]:
                sys.exit('value at %s: %g, want %g' % (v, got[(0, 0) + v], x[v]))
        close(got[0, 0, 90], x[90], 'sagittal slice 90')
    else:
        sys.exit('unknown case ' + case)


if __name__ == '__main__':
    if sys.argv[1] == 'gen':
        gen()
    else:
        check(sys.argv[2], sys.argv[3])
