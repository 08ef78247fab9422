"""PCD (Point Cloud Library): ascii and binary parsed here; ``binary_compressed`` decoded by
Open3D once the header and the compressed sizes have been checked here.

The header is checked before any data is read: ``FIELDS``, ``SIZE``, ``TYPE`` and
``COUNT`` of equal length, every ``COUNT`` at least 1, a known ``TYPE``/``SIZE`` pair,
``POINTS`` equal to ``WIDTH * HEIGHT`` (neither negative), and the bytes that many points
need present in the file (for ``binary_compressed``: an uncompressed size that the
points need, that LZF can produce from the compressed bytes, and that is under
``max_bytes``). Packed ``rgb``/``rgba`` floats are unpacked to colours; PCL's ``_``
padding fields are dropped.
"""
from __future__ import annotations

import io as _io
from typing import Dict, List, Tuple

import numpy as np

from .attributes import canonical_columns
from .._optional import require
from .errors import ScanFormatError
from .files import ReadOptions, check_decompressed, read_bytes
from .scan import Scan

__all__ = ["read_pcd"]

_KINDS = {"F": ("f", (4, 8)), "I": ("i", (1, 2, 4, 8)), "U": ("u", (1, 2, 4, 8))}
_HEADER_LIMIT = 1 << 16
#: LZF's longest back-reference: 3 bytes of token for 264 bytes of output.
_LZF_MAX_RATIO = 88


def _parse_header(path: str, data: bytes) -> Tuple[Dict[str, List[str]], int]:
    header: Dict[str, List[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos, _HEADER_LIMIT)
        if nl < 0:
            raise ScanFormatError(path, "PCD header has no DATA line (truncated or not a PCD file)")
        try:
            line = data[pos:nl].decode("ascii").strip()
        except UnicodeDecodeError:
            raise ScanFormatError(path, "not a PCD file (header is not ASCII text)") from None
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        words = line.split()
        header[words[0].upper()] = words[1:]
        if words[0].upper() == "DATA":
            return header, pos
        if len(header) > 32:
            raise ScanFormatError(path, "not a PCD file (no DATA line in the header)")


def _record_layout(path: str, header: Dict[str, List[str]]):
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = [t.upper() for t in header["TYPE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        width = int(header["WIDTH"][0])
        height = int(header.get("HEIGHT", ["1"])[0])
        npoints = int(header.get("POINTS", [str(width * height)])[0])
        mode = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise ScanFormatError(path, f"PCD header is incomplete or malformed ({exc.__class__.__name__}: {exc})") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)) or not names:
        raise ScanFormatError(path, "PCD header FIELDS, SIZE, TYPE and COUNT have different lengths (or none)")
    if min(counts) < 1:
        raise ScanFormatError(path, f"PCD header COUNT must be at least 1 for every field, got {' '.join(map(str, counts))}")
    if width < 0 or height < 0 or npoints < 0:
        raise ScanFormatError(path, f"PCD header has a negative size (WIDTH {width}, HEIGHT {height}, POINTS {npoints})")
    if npoints != width * height:
        raise ScanFormatError(path, f"PCD header POINTS {npoints} is not WIDTH x HEIGHT = {width} x {height}")
    fields = []
    seen = set()
    for i, (n, s, t, c) in enumerate(zip(names, sizes, types, counts)):
        if t not in _KINDS or s not in _KINDS[t][1]:
            raise ScanFormatError(path, f"PCD field {n!r} has an unknown TYPE/SIZE pair {t}/{s}")
        if n == "_":
            n = f"_{i}"  # PCL's padding fields, dropped below
        elif n in seen:
            raise ScanFormatError(path, f"PCD header repeats the field {n!r}")
        seen.add(n)
        fields.append((n, "<" + _KINDS[t][0] + str(s), c))
    try:
        dtype = np.dtype([(n, d) if c == 1 else (n, d, (c,)) for n, d, c in fields])
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a COUNT too large for NumPy
        raise ScanFormatError(path, f"PCD header declares an unusable record layout ({exc})") from None
    return fields, dtype, npoints, mode


def read_pcd(path: str, options: ReadOptions) -> Scan:
    """Read a PCD file (see the module docstring)."""
    data = read_bytes(path)
    header, pos = _parse_header(path, data)
    fields, dtype, npoints, mode = _record_layout(path, header)
    if npoints == 0:
        raise ScanFormatError(path, "contains no points (PCD POINTS is 0)")
    body = memoryview(data)[pos:]
    if mode == "ascii":
        arr = _ascii_records(path, bytes(body), fields, dtype, npoints)
    elif mode == "binary":
        need = npoints * dtype.itemsize
        if len(body) < need:
            raise ScanFormatError(path, f"truncated: the PCD header declares {npoints} points ({need} bytes) "
                                        f"but only {len(body)} bytes follow")
        arr = np.frombuffer(body, dtype=dtype, count=npoints)
    elif mode == "binary_compressed":
        _check_compressed(path, body, npoints * dtype.itemsize, options.max_bytes)
        return _read_with_open3d(path, "pcd")
    else:
        raise ScanFormatError(path, f"unknown PCD DATA mode {mode!r} (ascii, binary, binary_compressed)")
    columns: Dict[str, np.ndarray] = {}
    for n in arr.dtype.names:
        if n.startswith("_"):
            continue
        v = arr[n]
        if n.lower() in ("rgb", "rgba") and v.dtype.itemsize == 4 and v.ndim == 1:
            packed = np.ascontiguousarray(v).view(np.uint32)
            columns["red"] = ((packed >> 16) & 255).astype(np.uint8)
            columns["green"] = ((packed >> 8) & 255).astype(np.uint8)
            columns["blue"] = (packed & 255).astype(np.uint8)
            continue
        columns[n] = np.ascontiguousarray(v)
    points, attrs = canonical_columns(path, columns, npoints)
    return Scan(points, attrs, path, "pcd")


def _ascii_records(path: str, body: bytes, fields, dtype: np.dtype, npoints: int) -> np.ndarray:
    ncol = sum(c for _, _, c in fields)
    try:
        table = np.loadtxt(_io.StringIO(body.decode("ascii")), dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScanFormatError(path, f"ascii PCD data does not parse: {str(exc).splitlines()[0]}") from None
    if table.shape[0] != npoints or table.shape[1] != ncol:
        raise ScanFormatError(path, f"ascii PCD data has {table.shape[0]} rows of {table.shape[1]} values; "
                                    f"the header declares {npoints} points of {ncol} values (truncated or corrupt)")
    arr = np.empty(npoints, dtype=dtype)
    col = 0
    for n, d, c in fields:
        arr[n] = table[:, col: col + c].astype(d).reshape(arr[n].shape)
        col += c
    return arr


def _check_compressed(path: str, body, need: int, max_bytes) -> None:
    if len(body) < 8:
        raise ScanFormatError(path, "truncated: binary_compressed PCD has no size words after the header")
    compressed, uncompressed = (int(v) for v in np.frombuffer(body[:8], "<u4"))
    if len(body) - 8 < compressed:
        raise ScanFormatError(path, f"truncated: binary_compressed PCD declares {compressed} compressed bytes "
                                    f"but only {len(body) - 8} follow")
    if uncompressed != need:
        raise ScanFormatError(path, f"binary_compressed PCD declares {uncompressed} uncompressed bytes, "
                                    f"the header's points need {need}")
    if uncompressed > _LZF_MAX_RATIO * compressed + 64:
        raise ScanFormatError(path, f"binary_compressed PCD declares {uncompressed} uncompressed bytes, more than LZF "
                                    f"can produce from {compressed} compressed bytes (corrupt)")
    check_decompressed(path, uncompressed, max_bytes, "binary_compressed PCD data")


def _read_with_open3d(path: str, fmt: str) -> Scan:
    o3d = require("open3d", "open3d", f"{path}: reading a binary_compressed PCD")
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):  # our error says it once
        pc = o3d.t.io.read_point_cloud(path)
    if "positions" not in pc.point or pc.point.positions.shape[0] == 0:
        raise ScanFormatError(path, "could not be decoded (corrupt or truncated)")
    columns: Dict[str, np.ndarray] = {}
    for key in pc.point:
        v = pc.point[key].numpy()
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        columns[key] = v
    points, attrs = canonical_columns(path, columns, columns["positions"].shape[0])
    return Scan(points, attrs, path, fmt)
