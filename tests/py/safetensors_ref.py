"""safetensors_ref - an independent reader and writer of safetensors documents
and tensor streams, written from the safetensors specification with json and
numpy only (no safetensors library, no libesg), for the cross-checks in
tests/cli/stream_python.sh and tests/cli/compare.sh.

Streams go through the `zstd` command, so zstd's own decoder checks the
frames too.
"""
import json
import struct
import subprocess

import numpy as np

DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
NAMES = {np.dtype(v).str: k for k, v in DTYPES.items()}


def bf16_to_f32(raw):
    """BF16 is the top half of a float32."""
    u = np.frombuffer(raw, dtype="<u2").astype("<u4") << 16
    return u.view("<f4")


def decode(doc):
    """Parse one safetensors document, checking what the spec requires.
    Returns (metadata dict, list of (name, dtype, shape, numpy array))."""
    if len(doc) < 8:
        raise ValueError("document shorter than 8 bytes")
    (n,) = struct.unpack("<Q", doc[:8])
    if n > len(doc) - 8:
        raise ValueError("header size %d past the document" % n)
    header = doc[8:8 + n].decode("utf-8")
    if not header.startswith("{"):
        raise ValueError("header does not start with '{'")
    obj = json.loads(header)   # trailing spaces are allowed by json
    data = doc[8 + n:]
    meta = obj.pop("__metadata__", None) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("metadata is not str -> str")
    entries = []
    for name, info in obj.items():
        dt, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError("bad shape %r" % shape)
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = 2 if dt == "BF16" else np.dtype(DTYPES[dt]).itemsize
        if end - begin != numel * size or not 0 <= begin <= end <= len(data):
            raise ValueError("tensor %s: offsets %r do not fit shape %r" % (name, (begin, end), shape))
        raw = data[begin:end]
        arr = bf16_to_f32(raw) if dt == "BF16" else np.frombuffer(raw, dtype=DTYPES[dt])
        entries.append((begin, end, name, dt, shape, arr.reshape(shape)))
    entries.sort(key=lambda e: (e[0], e[1]))
    at = 0
    for begin, end, name, *_ in entries:
        if begin != at:
            raise ValueError("offsets not contiguous at tensor %s" % name)
        at = end
    if at != len(data):
        raise ValueError("%d trailing bytes" % (len(data) - at))
    return meta, [(e[2], e[3], e[4], e[5]) for e in entries]


def encode(tensors, metadata=None):
    """tensors: list of (name, numpy array); dtype from the array.  Header
    padded with spaces to a multiple of 8, as the safetensors library does."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, arr in tensors:
        arr = np.array(arr, order="C")   # (ascontiguousarray makes 0-d arrays 1-d)
        arr = arr.astype(arr.dtype.newbyteorder("<"))
        raw = arr.tobytes()
        header[name] = {"dtype": NAMES[arr.dtype.str], "shape": list(arr.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * ((8 - len(js) % 8) % 8)
    return struct.pack("<Q", len(js)) + js + data


def zstd_compress(doc, args=("--check",)):
    return subprocess.run(["zstd", "-q", "-c", *args], input=doc, stdout=subprocess.PIPE,
                          check=True).stdout


def zstd_decompress(path):
    return subprocess.run(["zstd", "-q", "-d", "-c", path], stdout=subprocess.PIPE,
                          check=True).stdout


def write_stream(path, records, level_args=("--check",)):
    """records: list of (tensors, metadata); one zstd frame per record."""
    with open(path, "wb") as f:
        for tensors, meta in records:
            f.write(zstd_compress(encode(tensors, meta), level_args))


def decode_all(buf):
    """Split concatenated documents (what `zstd -d` makes of a stream): each
    document ends where its last tensor's data ends, since the tensors must
    cover the data exactly."""
    docs = []
    while buf:
        (n,) = struct.unpack("<Q", buf[:8])
        obj = json.loads(buf[8:8 + n].decode("utf-8"))
        obj.pop("__metadata__", None)
        end = max([v["data_offsets"][1] for v in obj.values()] or [0])
        docs.append(decode(buf[:8 + n + end]))
        buf = buf[8 + n + end:]
    return docs


def read_stream(path):
    return decode_all(zstd_decompress(path))
