"""LAS and LAZ through ``laspy`` (``pip install 'sparseconv[las]'``), after checking the header here.

laspy trusts the header: a 4 KB file that declares four billion variable-length records
or points makes it loop and allocate for minutes. So before laspy sees the file, the
public header block (LAS 1.0-1.4) is checked against the file's size: header and point
offsets inside the file; every variable-length record (its header and declared length)
ending before the points, every extended one inside the file; a known point format with
a long enough record; the declared points' bytes present (LAS) or under ``max_bytes``
once decompressed (LAZ); finite, non-zero scale factors and finite offsets (a zero
scale would put every point on the origin).
"""
from __future__ import annotations

import math
import struct
from typing import BinaryIO, Dict, Optional

import numpy as np

from .attributes import to_uint8_colors
from .errors import MissingDependencyError, ScanFormatError
from .files import ReadOptions, check_decompressed, human_bytes
from .scan import Scan

__all__ = ["read_las", "check_las_header"]

_MIN_HEADER = 227
_VLR_HEADER = 54
_EVLR_HEADER = 60
#: Shortest point record of each point data format (LAS 1.4, R15).
_MIN_RECORD = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}


def check_las_header(path: str, f: BinaryIO, max_bytes: Optional[int]) -> int:
    """Check the LAS/LAZ file ``f``'s public header block and its (extended) variable-length
    record headers against the file's size; return the declared point count."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    head = f.read(375)
    if not head.startswith(b"LASF"):
        raise ScanFormatError(path, "is not a LAS/LAZ file (does not start with 'LASF')")
    if size < _MIN_HEADER:
        raise ScanFormatError(path, f"is not a readable LAS/LAZ file (truncated: {size} bytes, shorter than a LAS "
                                    f"header of {_MIN_HEADER} bytes)")
    major, minor = head[24], head[25]
    header_size, point_offset, n_vlrs = struct.unpack_from("<HII", head, 94)
    fmt_id, record_len, legacy_count = struct.unpack_from("<BHI", head, 104)
    scales = struct.unpack_from("<3d", head, 131)
    offsets = struct.unpack_from("<3d", head, 155)
    if major != 1 or minor > 4:
        raise ScanFormatError(path, f"is not a readable LAS/LAZ file (unknown LAS version {major}.{minor})")
    if not _MIN_HEADER <= header_size <= point_offset <= size:
        raise ScanFormatError(path, f"LAS header is corrupt: header size {header_size}, point data offset {point_offset}, "
                                    f"file size {size}")
    if n_vlrs * _VLR_HEADER > point_offset - header_size:
        raise ScanFormatError(path, f"LAS header declares {n_vlrs} variable-length records, but only "
                                    f"{point_offset - header_size} bytes lie between the header and the points")
    compressed = bool(fmt_id & 0x80) or bool(fmt_id & 0x40)
    base_fmt = fmt_id & 0x3F
    if base_fmt not in _MIN_RECORD:
        raise ScanFormatError(path, f"LAS header has an unknown point data format {fmt_id}")
    if record_len < _MIN_RECORD[base_fmt]:
        raise ScanFormatError(path, f"LAS point record length {record_len} is shorter than format {base_fmt} needs "
                                    f"({_MIN_RECORD[base_fmt]} bytes)")
    _walk_records(path, f, header_size, n_vlrs, point_offset, "<H", "variable-length record")
    count = legacy_count
    if minor >= 4 and header_size >= 375 and len(head) >= 375:
        evlr_start, n_evlrs, count64 = struct.unpack_from("<QIQ", head, 235)
        count = count64 or legacy_count
        if n_evlrs and (evlr_start > size or n_evlrs * _EVLR_HEADER > size - evlr_start):
            raise ScanFormatError(path, f"LAS header declares {n_evlrs} extended records at byte {evlr_start}, "
                                        f"beyond the file's {size} bytes")
        if n_evlrs:
            _walk_records(path, f, evlr_start, n_evlrs, size, "<Q", "extended variable-length record")
    if not all(math.isfinite(s) and s != 0 for s in scales):
        raise ScanFormatError(path, f"LAS scale factors must be finite and non-zero, got {scales}")
    if not all(math.isfinite(o) for o in offsets):
        raise ScanFormatError(path, f"LAS offsets must be finite, got {offsets}")
    need = count * record_len
    if compressed:
        check_decompressed(path, need, max_bytes, f"the LAZ header's {count} points")
    elif need > size - point_offset:
        raise ScanFormatError(path, f"truncated or lying header: it declares {count} points ({human_bytes(need)}) but "
                                    f"only {size - point_offset} bytes of point data follow")
    if count == 0:
        raise ScanFormatError(path, "contains no points")
    return count


def _walk_records(path: str, f: BinaryIO, start: int, count: int, end: int, length_fmt: str, what: str) -> None:
    """Every record header from ``start`` on: its declared length must end by ``end``."""
    header = _VLR_HEADER if length_fmt == "<H" else _EVLR_HEADER
    pos = start
    for i in range(count):
        f.seek(pos)
        raw = f.read(header)
        if len(raw) < header:
            raise ScanFormatError(path, f"truncated: LAS {what} {i + 1} of {count} has no complete header")
        (length,) = struct.unpack_from(length_fmt, raw, 20)
        pos += header + length
        if pos > end:
            raise ScanFormatError(path, f"LAS {what} {i + 1} of {count} declares {length} bytes, past "
                                        f"byte {end} where it must end")


def read_las(path: str, options: ReadOptions) -> Scan:
    """Read a LAS/LAZ file (see the module docstring): float64 points, intensity,
    classification as labels, colours, return numbers and GPS time."""
    try:
        import laspy
    except ImportError:
        raise MissingDependencyError(f"{path}: reading LAS/LAZ needs laspy: pip install 'sparseconv[las]'") from None
    with open(path, "rb") as f:
        check_las_header(path, f, options.max_bytes)
    try:
        las = laspy.read(path)
    except Exception as exc:  # laspy raises many types for a bad file; the header was checked above
        text = " ".join(str(exc).split())
        if "LazBackend" in text or "laz" in text.lower() and "backend" in text.lower():
            raise MissingDependencyError(f"{path}: reading LAZ needs a LAZ backend: pip install 'sparseconv[las]' ({text})") from None
        raise ScanFormatError(path, f"is not a readable LAS/LAZ file ({exc.__class__.__name__}: {text})") from None
    if len(las.points) == 0:
        raise ScanFormatError(path, "contains no points")
    points = np.stack([np.asarray(las.x, dtype=np.float64), np.asarray(las.y, dtype=np.float64),
                       np.asarray(las.z, dtype=np.float64)], 1)
    dims = set(las.point_format.dimension_names)
    attrs: Dict[str, np.ndarray] = {}
    if "intensity" in dims:
        attrs["intensity"] = np.asarray(las.intensity).astype(np.float32)
    if "classification" in dims:
        attrs["labels"] = np.asarray(las.classification).astype(np.int64)
    if {"red", "green", "blue"} <= dims:
        attrs["colors"] = to_uint8_colors(np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], 1))
    for extra in ("return_number", "number_of_returns", "gps_time"):
        if extra in dims:
            attrs[extra] = np.asarray(las[extra]).copy()
    fmt = "laz" if path.lower().endswith(".laz") else "las"
    return Scan(points, attrs, path, fmt)
