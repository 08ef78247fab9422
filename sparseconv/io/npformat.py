"""Bounded loading of NumPy ``.npy`` files and ``.npz`` archives.

``np.load`` allocates whatever an array header declares before reading a byte of data,
and decompresses archive members without limit. Here every header is read first
(:mod:`numpy.lib.format`), its ``shape x itemsize`` compared with the bytes actually
present (the file's size, or the zip member's declared uncompressed size, which Python's
``zipfile`` enforces while inflating), the archive's total uncompressed size compared
with ``max_bytes``, and only then is one buffer of exactly that size filled. Pickled
objects are never loaded.
"""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import BinaryIO, Dict, Optional

import numpy as np

from .errors import ScanFormatError
from .files import check_decompressed, human_bytes

__all__ = ["load_npy", "load_npz", "is_npz"]

_HEADER_LIMIT = 1 << 16


def _read_header(path: str, f: BinaryIO, where: str):
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=_HEADER_LIMIT)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=_HEADER_LIMIT)
        else:  # pragma: no cover - read_magic refuses other versions
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, SyntaxError, TypeError, EOFError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ScanFormatError(path, f"is not a readable NumPy file{where}, corrupt or truncated ({msg})") from None
    if dtype.hasobject:
        raise ScanFormatError(path, f"holds Python objects{where} ({dtype}); pickled data is never loaded")
    if dtype.itemsize == 0:
        raise ScanFormatError(path, f"holds an array of zero-size items{where} ({dtype})")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ScanFormatError(path, f"is not a readable NumPy file{where}: its header declares the shape {shape}")
    return shape, fortran, dtype


def _read_array(path: str, f: BinaryIO, available: int, where: str) -> np.ndarray:
    """Header, size check against ``available`` bytes after it, then exactly the data."""
    shape, fortran, dtype = _read_header(path, f, where)
    available -= f.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > available:
        raise ScanFormatError(path, f"is not a readable NumPy file{where}: truncated, or its header lies: it declares "
                                    f"shape {shape} ({dtype}, {human_bytes(nbytes)}) but only {max(available, 0)} "
                                    f"bytes follow")
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        n = f.readinto(view[got:])
        if not n:
            raise ScanFormatError(path, f"is not a readable NumPy file{where}: truncated, {got} of {nbytes} data bytes present")
        got += n
    arr = np.frombuffer(buf, dtype=dtype)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


def load_npy(path: str) -> np.ndarray:
    """One ``.npy`` file, checked as in the module docstring."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise ScanFormatError(path, "is an .npz archive saved with an .npy extension; rename it to .npz")
        f.seek(0)
        return _read_array(path, f, size, "")


def is_npz(path: str) -> bool:
    """Whether ``path`` starts like a zip archive."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_npz(path: str, max_bytes: Optional[int]) -> Dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive by name (``.npy`` dropped), checked as in the module docstring."""
    if not is_npz(path):
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise ScanFormatError(path, "is a single .npy array saved with an .npz extension; rename it to .npy")
        raise ScanFormatError(path, "is not a readable NumPy .npz archive (not a zip file)")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            check_decompressed(path, sum(i.file_size for i in infos), max_bytes, "the archive")
            out: Dict[str, np.ndarray] = {}
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with z.open(info) as f:
                    out[name] = _read_array(path, f, info.file_size, f" (entry {name!r})")
            return out
    except ScanFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise ScanFormatError(path, f"is a corrupt or truncated .npz archive ({exc.__class__.__name__}: "
                                    f"{' '.join(str(exc).split())})") from None
