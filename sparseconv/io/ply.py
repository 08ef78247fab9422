"""PLY: ascii, binary little- and big-endian, every scalar property type.

The ``vertex`` element becomes the scan (faces and other elements are skipped). Parsed
here rather than by Open3D, which accepts truncated files and drops some property types
silently. Before any data is touched the header is checked: known types, no list
property in or before ``vertex``, scalar ``x``, ``y``, ``z``, no repeated property name,
and element counts whose bytes fit in the file.
"""
from __future__ import annotations

import io as _io
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .attributes import canonical_columns, to_uint8_colors
from .errors import ScanFormatError
from .atomic import atomic_write
from .files import ReadOptions, read_bytes
from .scan import Scan

__all__ = ["read_ply", "write_ply", "ply_bytes", "label_comments"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_NAMES = {np.dtype(v).str[1:]: k for k, v in
              (("char", "i1"), ("uchar", "u1"), ("short", "i2"), ("ushort", "u2"), ("int", "i4"),
               ("uint", "u4"), ("float", "f4"), ("double", "f8"))}
_LABEL_COMMENT = re.compile(r"^label\s+(-?\d+)\s+(\S+)(?:\s+(\d+)\s+(\d+)\s+(\d+))?\s*$")


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: List[Tuple[str, str, Optional[str]]]  # (name, type, list count type or None)


def _parse_ply_header(path: str, data: bytes):
    if not (data.startswith(b"ply\n") or data.startswith(b"ply\r\n")):
        raise ScanFormatError(path, "not a PLY file (does not start with 'ply')")
    end = re.search(rb"end_header[ \t]*\r?\n", data[:1 << 20])
    if end is None:
        raise ScanFormatError(path, "PLY header has no 'end_header' line (truncated or corrupt)")
    try:
        header = data[: end.start()].decode("ascii")
    except UnicodeDecodeError:
        raise ScanFormatError(path, "PLY header is not ASCII text (corrupt)") from None
    fmt = None
    elements: List[_PlyElement] = []
    comments: List[str] = []
    for lineno, line in enumerate(header.splitlines()[1:], 2):
        words = line.split()
        if not words:
            continue
        key = words[0]
        try:
            if key == "format":
                fmt = words[1]
                if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
                    raise ScanFormatError(path, f"unknown PLY format {fmt!r}")
            elif key == "element":
                count = int(words[2])
                if count < 0:
                    raise ValueError
                elements.append(_PlyElement(words[1], count, []))
            elif key == "property":
                if not elements:
                    raise ScanFormatError(path, f"PLY header line {lineno}: property before any element")
                if words[1] == "list":
                    elements[-1].properties.append((words[4], words[3], words[2]))
                    for t in (words[2], words[3]):
                        if t not in _PLY_TYPES:
                            raise ScanFormatError(path, f"PLY header line {lineno}: unknown type {t!r}")
                else:
                    if words[1] not in _PLY_TYPES:
                        raise ScanFormatError(path, f"PLY header line {lineno}: unknown type {words[1]!r}")
                    elements[-1].properties.append((words[2], words[1], None))
            elif key in ("comment", "obj_info"):
                comments.append(line.split(None, 1)[1] if len(words) > 1 else "")
            else:
                raise ScanFormatError(path, f"PLY header line {lineno}: unexpected keyword {key!r}")
        except (IndexError, ValueError) as exc:
            if isinstance(exc, ScanFormatError):
                raise
            raise ScanFormatError(path, f"PLY header line {lineno} does not parse: {line.strip()!r}") from None
    if fmt is None:
        raise ScanFormatError(path, "PLY header has no 'format' line")
    return fmt, elements, comments, end.end()


def _ply_label_table(comments: Sequence[str]):
    names, colors = {}, {}
    for c in comments:
        m = _LABEL_COMMENT.match(c.strip())
        if m:
            i = int(m.group(1))
            names[i] = m.group(2)
            if m.group(3) is not None:
                colors[i] = tuple(min(int(m.group(k)), 255) for k in (3, 4, 5))
    return names or None, colors or None


def read_ply(path: str, options: ReadOptions) -> Scan:
    """Read a PLY file's ``vertex`` element (see the module docstring)."""
    data = read_bytes(path)
    fmt, elements, comments, offset = _parse_ply_header(path, data)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        raise ScanFormatError(path, "PLY file has no 'vertex' element")
    _check_vertex_properties(path, vertex)
    if vertex.count == 0:
        raise ScanFormatError(path, "contains no points (PLY 'vertex' element has 0 entries)")
    before = elements[: elements.index(vertex)]
    if fmt == "ascii":
        columns = _read_ply_ascii(path, data[offset:], sum(e.count for e in before), vertex)
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        for e in before:
            if any(lt is not None for _, _, lt in e.properties):
                raise ScanFormatError(path, f"binary PLY element {e.name!r} with list properties precedes 'vertex'; not supported")
            offset += e.count * _record_dtype(path, e, endian).itemsize
        dtype = _record_dtype(path, vertex, endian)
        need = vertex.count * dtype.itemsize
        have = len(data) - offset
        if have < need:
            raise ScanFormatError(
                path, f"truncated: the PLY header declares {vertex.count} vertices ({need} bytes) but only {max(have, 0)} bytes follow")
        arr = np.frombuffer(data, dtype=dtype, count=vertex.count, offset=offset)
        columns = {n: arr[n].astype(arr[n].dtype.newbyteorder("=")) for n in arr.dtype.names}
    points, attrs = canonical_columns(path, columns, vertex.count)
    names, colors = _ply_label_table(comments)
    return Scan(points, attrs, path, "ply", names, colors)


def _check_vertex_properties(path: str, vertex: _PlyElement) -> None:
    if any(lt is not None for _, _, lt in vertex.properties):
        raise ScanFormatError(path, "PLY 'vertex' element has list properties; only scalar vertex properties are supported")
    names = [n for n, _, _ in vertex.properties]
    missing = [a for a in "xyz" if a not in names]
    if missing:
        raise ScanFormatError(path, f"PLY 'vertex' element has no {', '.join(missing)} property "
                                    f"(properties: {', '.join(names) or 'none'})")


def _record_dtype(path: str, element: _PlyElement, endian: str) -> np.dtype:
    dup = sorted(n for n, k in Counter(n for n, _, _ in element.properties).items() if k > 1)
    if dup:
        raise ScanFormatError(path, f"PLY element {element.name!r} repeats the property {', '.join(dup)}")
    try:
        return np.dtype([(n, endian + _PLY_TYPES[t]) for n, t, _ in element.properties])
    except (ValueError, TypeError) as exc:  # e.g. a record too large for NumPy
        raise ScanFormatError(path, f"PLY element {element.name!r} has an unusable property table ({exc})") from None


def _read_ply_ascii(path: str, body: bytes, start: int, vertex: _PlyElement) -> Dict[str, np.ndarray]:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ScanFormatError(path, "ascii PLY body contains non-ASCII bytes (corrupt)") from None
    lines = text.splitlines()
    rows = lines[start: start + vertex.count]
    if len(rows) < vertex.count:
        raise ScanFormatError(path, f"truncated: the PLY header declares {vertex.count} vertices but only {max(len(rows), 0)} lines follow")
    ncol = len(vertex.properties)
    try:
        table = np.loadtxt(_io.StringIO("\n".join(rows)), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ScanFormatError(path, f"ascii PLY vertex data does not parse: {str(exc).splitlines()[0]}") from None
    if table.shape != (vertex.count, ncol):
        raise ScanFormatError(path, f"ascii PLY vertex rows have {table.shape[1]} values, the header declares {ncol} properties")
    return {n: table[:, i].astype(_PLY_TYPES[t]) for i, (n, t, _) in enumerate(vertex.properties)}


def ply_bytes(points: np.ndarray, attributes: Mapping[str, np.ndarray], comments: Sequence[str] = (),
                     ascii: bool = False) -> bytes:
    points = np.asarray(points)
    P = points.shape[0]
    pdtype = "f8" if points.dtype == np.float64 else "f4"
    fields: List[Tuple[str, np.ndarray]] = [(a, points[:, i].astype(pdtype)) for i, a in enumerate("xyz")]
    for name, value in attributes.items():
        value = np.asarray(value)
        if value.shape[:1] != (P,):
            raise ValueError(f"attribute {name!r} has {value.shape[0]} rows for {P} points")
        if name == "colors":
            value = to_uint8_colors(value.reshape(P, 3))
            fields += [(c, value[:, i]) for i, c in enumerate(("red", "green", "blue"))]
        elif name == "normals":
            fields += [(c, value[:, i].astype("f4")) for i, c in enumerate(("nx", "ny", "nz"))]
        elif name in ("labels", "instance"):
            fields.append(("label" if name == "labels" else "instance", value.astype("i4")))
        else:
            if value.dtype == np.bool_:
                value = value.astype("u1")
            if value.dtype == np.int64:
                value = value.astype("i4")
            elif value.dtype == np.uint64:
                value = value.astype("u4")
            if value.dtype.kind not in "iuf" or value.dtype.str[1:] not in _PLY_NAMES:
                value = value.astype("f4")
            if value.ndim == 1:
                fields.append((name, value))
            else:
                flat = value.reshape(P, -1)
                fields += [(f"{name}{i}", flat[:, i]) for i in range(flat.shape[1])]
    header = ["ply", f"format {'ascii' if ascii else 'binary_little_endian'} 1.0"]
    header += [f"comment {c}" for c in comments]
    header.append(f"element vertex {P}")
    header += [f"property {_PLY_NAMES[v.dtype.str[1:]]} {n}" for n, v in fields]
    header.append("end_header")
    head = ("\n".join(header) + "\n").encode("ascii")
    if ascii:
        table = np.stack([v.astype(np.float64) for _, v in fields], 1)
        fmts = ["%d" if v.dtype.kind in "iu" else "%.9g" for _, v in fields]
        buf = _io.StringIO()
        np.savetxt(buf, table, fmt=" ".join(fmts))
        return head + buf.getvalue().encode("ascii")
    rec = np.empty(P, dtype=[(n, "<" + v.dtype.str[1:]) for n, v in fields])
    for n, v in fields:
        rec[n] = v
    return head + rec.tobytes()


def label_comments(label_names: Optional[Mapping[int, str]], label_colors: Optional[Mapping[int, Sequence[int]]]) -> List[str]:
    out = []
    for i, name in sorted((label_names or {}).items()):
        rgb = (label_colors or {}).get(i)
        safe = re.sub(r"\s+", "_", str(name))
        out.append(f"label {i} {safe}" + (f" {rgb[0]} {rgb[1]} {rgb[2]}" if rgb is not None else ""))
    return out


def write_ply(path: str, points: np.ndarray, attributes: Mapping[str, np.ndarray], *,
              label_names: Optional[Mapping[int, str]] = None,
              label_colors: Optional[Mapping[int, Sequence[int]]] = None, ascii: bool = False) -> None:
    """Binary little-endian (or ascii) PLY: every attribute as properties, the label table
    as ``comment label ID NAME R G B`` lines."""
    blob = ply_bytes(points, attributes, label_comments(label_names, label_colors), ascii=ascii)
    with atomic_write(path) as f:
        f.write(blob)
