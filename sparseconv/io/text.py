"""Text point files: ``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.pts``, ``.txt``, ``.csv``.

Whitespace- or comma-separated, one point a line; ``#`` and ``//`` lines are comments;
``.pts`` may start with a point-count line, which must match the rows; a first line with
no number is a header of column names (``x,y,z,intensity``). Columns are named by
``columns=``, else by the header line, else by :func:`~sparseconv.io.attributes.unnamed_layout` (3: x y z;
4: + intensity; 7: + intensity r g b; 6: an error listing the candidates, except for
``.xyzrgb``/``.pts`` (r g b) and ``.xyzn`` (normals)). Memory is bounded by the file's size.
"""
from __future__ import annotations

import io as _io
import re

import numpy as np

from .attributes import canonical_columns, fits_float32, parse_columns, table_columns
from .errors import ScanFormatError
from .files import ReadOptions, read_bytes
from .scan import Scan

__all__ = ["read_text", "TEXT_FORMATS"]

#: Text format names, as taken from the extension.
TEXT_FORMATS = ("xyz", "xyzn", "xyzrgb", "pts", "txt", "csv")


def read_text(path: str, options: ReadOptions, fmt: str = "xyz") -> Scan:
    """Read a text point file (see the module docstring); ``fmt`` is one of :data:`TEXT_FORMATS`."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScanFormatError(path, "is not a text point file (binary or non-UTF-8 content)") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "//"))]
    if not lines:
        raise ScanFormatError(path, "contains no points")
    declared = None
    first = lines[0].replace(",", " ").split()
    if len(first) == 1 and re.fullmatch(r"\d+", first[0]):
        declared = int(first[0])
        lines = lines[1:]
        if not lines:
            raise ScanFormatError(path, f"contains no points (the count line says {declared})")
    if declared is not None and declared != len(lines):
        raise ScanFormatError(path, f"the first line declares {declared} points but {len(lines)} rows follow (truncated?)")
    delimiter = "," if "," in lines[0] else None
    columns = options.columns
    first = [w.strip() for w in (lines[0].split(",") if delimiter else lines[0].split())]
    if declared is None and not any(_is_number(w) for w in first):  # a header line of column names
        lines = lines[1:]
        if not lines:
            raise ScanFormatError(path, "contains no points (only a header line)")
        if columns is None:
            columns = parse_columns([w.lower() for w in first], path)
    try:
        table = np.loadtxt(_io.StringIO("\n".join(lines)), dtype=np.float64, ndmin=2, delimiter=delimiter)
    except ValueError as exc:
        msg = str(exc).splitlines()[0].split(";")[0]
        raise ScanFormatError(path, f"text point data does not parse ({msg})") from None
    cols = table_columns(path, fmt, table, columns)
    points, attrs = canonical_columns(path, cols, table.shape[0])
    return Scan(points.astype(np.float32) if fits_float32(points) else points, attrs, path, fmt)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
