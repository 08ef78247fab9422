"""What every reader shares: the options it is given, the file checks it starts with, and
the size rule it keeps.

The size rule: a count or size declared in a header is checked against the file's size
(or, for compressed data, against ``max_bytes``) *before* anything is allocated or
looped over, so a file of a few kilobytes that declares billions of points fails at once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from .errors import ScanFormatError, not_found

__all__ = ["ReadOptions", "DEFAULT_MAX_BYTES", "check_file", "read_bytes", "check_decompressed", "human_bytes", "same_file"]

#: The most bytes a reader decompresses from one file (``.npz`` members, LAZ points,
#: ``binary_compressed`` PCD) unless ``max_bytes=`` says otherwise: 512 MiB, about 40
#: million xyz+intensity points in float32. Uncompressed formats need no cap: what they
#: hold is bounded by the file's size.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ReadOptions:
    """What :func:`~sparseconv.io.read_scan` passes to a format's reader.

    Attributes:
        columns: names of the columns of an unnamed table (``.bin``, plain ``.npy``, text),
            from :func:`~sparseconv.io.attributes.parse_columns`; ``None``: the format's rule.
        labels: ``"auto"`` (a KITTI scan's SemanticKITTI ``.label`` beside it), a path, or ``None``.
        max_bytes: cap on decompressed bytes (``None``: no cap).
        explicit_format: the format was named by the caller, not taken from the extension.
    """

    columns: Optional[Sequence[str]] = None
    labels: Union[str, None] = "auto"
    max_bytes: Optional[int] = DEFAULT_MAX_BYTES
    explicit_format: bool = False


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def check_file(path: str, what: str = "scan") -> int:
    """Raise for a missing, directory or empty ``path``; return its size in bytes."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise not_found(path) from None
    except PermissionError:
        raise ScanFormatError(path, "permission denied") from None
    if os.path.isdir(path):
        raise ScanFormatError(path, f"is a directory, not a {what} file")
    if size == 0:
        raise ScanFormatError(path, "is empty (0 bytes)")
    return size


def read_bytes(path: str) -> bytes:
    """The whole file (memory bounded by its size)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise ScanFormatError(path, "is a directory, not a scan file") from None
    except PermissionError:
        raise ScanFormatError(path, "permission denied") from None


def check_decompressed(path: str, declared: int, max_bytes: Optional[int], what: str) -> None:
    """Raise when ``declared`` decompressed bytes exceed ``max_bytes``."""
    if max_bytes is not None and declared > max_bytes:
        raise ScanFormatError(
            path, f"{what} would decompress to {human_bytes(declared)}, over the {human_bytes(max_bytes)} limit "
                  f"(a compression bomb, or a bigger file than expected: pass max_bytes= / --max-bytes to allow it)")


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (equal absolute paths, or :func:`os.path.samefile`)."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False
