"""Reading scans from disk and writing voxelized results, with errors that name the file.

Reading -- :func:`read_scan` turns a file into a :class:`Scan`: ``points [P, 3]`` plus a
dictionary of per-point attributes under canonical names:

=============  =========================  ==============================================
attribute      array                      taken from
=============  =========================  ==============================================
``intensity``  float32 ``[P]``            intensity, reflectance, remission, scalar_intensity, i
``colors``     uint8 ``[P, 3]``           red/green/blue, r/g/b, packed PCD ``rgb``
``normals``    float32 ``[P, 3]``         nx/ny/nz, normal_x/normal_y/normal_z
``labels``     int64 ``[P]``              label, class, classification, semantic, ``.label`` files
``instance``   int64 ``[P]``              instance, instance_id, upper 16 bits of ``.label``
anything else  as stored                  other named columns, by their own name
=============  =========================  ==============================================

Formats, chosen by extension (``format=`` overrides):

* ``.ply`` -- ascii, binary little- and big-endian, every scalar property type, the
  ``vertex`` element (faces and other elements are skipped). Parsed here rather than by
  Open3D, which accepts truncated files and drops some property types silently.
* ``.pcd`` -- ascii and binary parsed here; ``binary_compressed`` decoded by Open3D after
  the header and the compressed size have been checked here.
* ``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.pts`` -- whitespace- or comma-separated text, one
  point a line (``.pts`` may start with a point-count line). Columns by count: 3 ``x y z``;
  4 ``+ intensity``; 6 ``+ r g b`` (``+ nx ny nz`` for ``.xyzn``); 7 ``+ intensity r g b``;
  other counts keep the extra columns as ``c3, c4, ...``.
* ``.bin`` -- KITTI Velodyne: float32 ``x, y, z, intensity`` records. The SemanticKITTI
  labels (``../labels/NAME.label`` in the standard layout, or ``NAME.label`` beside the
  scan) are read too when present.
* ``.label`` -- SemanticKITTI labels (:func:`read_label`): uint32 per point, semantic id in
  the low 16 bits, instance id in the high 16.
* ``.npy`` -- a ``[P, C>=3]`` float array (columns as for text) or a structured array
  with named fields. ``.npz`` -- a ``points`` (or ``xyz`` / ``positions``) ``[P, 3]`` array
  and per-point arrays beside it; or a voxel file written by :func:`write_voxels`, read as
  its voxel centres.
* ``.las``, ``.laz`` -- through ``laspy`` (``pip install 'sparseconv[las]'``).

Every failure -- missing file, unknown extension, a header that does not parse, a file
whose size does not fit what its header (or format) says, a file with no points, an
optional dependency that is not installed -- raises with the file's path in the message:
:class:`FileNotFoundError`, :class:`ScanFormatError` (a ``ValueError``) or
:class:`MissingDependencyError` (an ``ImportError``).

Writing -- :func:`write_scan` (``.ply``, ``.bin``, ``.npz``, ``.npy``), :func:`write_label`,
:func:`write_voxels` (``.npz`` with coordinates, features, voxel size, origin and the
point-to-voxel map, or ``.ply`` of voxel centres) and :func:`read_voxels`. Every writer
goes through :func:`atomic_write`: a temporary file in the target directory, renamed over
the target only once complete, so a failed write never leaves a partial file.
"""
from __future__ import annotations

import contextlib
import io as _io
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .engine.tensor import SparseTensor
from .engine.voxelize import Voxelization

__all__ = [
    "Scan",
    "VoxelFile",
    "ScanFormatError",
    "UnsupportedFormatError",
    "MissingDependencyError",
    "READ_FORMATS",
    "read_scan",
    "read_label",
    "write_scan",
    "write_label",
    "write_voxels",
    "read_voxels",
    "atomic_write",
    "format_of",
    "SEMANTIC_KITTI_LABELS",
    "SEMANTIC_KITTI_CLASSES",
    "SEMANTIC_KITTI_LEARNING_MAP",
    "SEMANTIC_KITTI_CLASS_COLORS",
    "semantic_kitti_label_colors",
]

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------

class ScanFormatError(ValueError):
    """A file that cannot be read as a scan (corrupt, truncated, empty, wrong size or type).

    The message starts with the file's path; ``path`` holds it too.
    """

    def __init__(self, path: PathLike, message: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {message}")


class UnsupportedFormatError(ScanFormatError):
    """A file whose extension (or ``format=``) names no format this module reads or writes."""


class MissingDependencyError(ImportError):
    """An optional package needed for this file is not installed."""


def _not_found(path: PathLike) -> FileNotFoundError:
    p = os.fspath(path)
    return FileNotFoundError(f"{p}: no such file")


# --------------------------------------------------------------------------------------
# SemanticKITTI tables (facts of the format)
# --------------------------------------------------------------------------------------

#: Raw SemanticKITTI semantic ids (the low 16 bits of a ``.label`` entry) and their names.
SEMANTIC_KITTI_LABELS: Dict[int, str] = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle",
    16: "on-rails", 18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist",
    32: "motorcyclist", 40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground",
    50: "building", 51: "fence", 52: "other-structure", 60: "lane-marking", 70: "vegetation",
    71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: "other-object",
    252: "moving-car", 253: "moving-bicyclist", 254: "moving-person", 255: "moving-motorcyclist",
    256: "moving-on-rails", 257: "moving-bus", 258: "moving-truck", 259: "moving-other-vehicle",
}

#: The 19 classes SemanticKITTI models are trained and scored on.
SEMANTIC_KITTI_CLASSES: Tuple[str, ...] = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign",
)

#: Raw id -> index into :data:`SEMANTIC_KITTI_CLASSES` (-1: ignored). Moving objects map to
#: their static class, lane markings to road, rare vehicles to other-vehicle.
SEMANTIC_KITTI_LEARNING_MAP: Dict[int, int] = {
    0: -1, 1: -1, 10: 0, 11: 1, 13: 4, 15: 2, 16: 4, 18: 3, 20: 4, 30: 5, 31: 6, 32: 7,
    40: 8, 44: 9, 48: 10, 49: 11, 50: 12, 51: 13, 52: -1, 60: 8, 70: 14, 71: 15, 72: 16,
    80: 17, 81: 18, 99: -1, 252: 0, 253: 6, 254: 5, 255: 7, 256: 4, 257: 4, 258: 3, 259: 4,
}

#: RGB per entry of :data:`SEMANTIC_KITTI_CLASSES` (Cityscapes-like, matching the synthetic
#: generator's palette for the classes both have).
SEMANTIC_KITTI_CLASS_COLORS: np.ndarray = np.array(
    [
        [0, 0, 142], [119, 11, 32], [0, 0, 230], [0, 0, 70], [0, 60, 100], [220, 20, 60],
        [255, 0, 0], [180, 0, 90], [128, 64, 128], [250, 170, 160], [244, 35, 232],
        [81, 0, 81], [70, 70, 70], [190, 153, 153], [107, 142, 35], [135, 90, 40],
        [152, 251, 152], [153, 153, 153], [220, 220, 0],
    ],
    dtype=np.uint8,
)
SEMANTIC_KITTI_CLASS_COLORS.flags.writeable = False


def semantic_kitti_label_colors() -> Dict[int, Tuple[int, int, int]]:
    """RGB for every raw SemanticKITTI id (through the learning map; ignored ids grey)."""
    out = {}
    for raw, cls in SEMANTIC_KITTI_LEARNING_MAP.items():
        out[raw] = (110, 110, 110) if cls < 0 else tuple(int(v) for v in SEMANTIC_KITTI_CLASS_COLORS[cls])
    return out


# --------------------------------------------------------------------------------------
# Scan
# --------------------------------------------------------------------------------------

@dataclass(eq=False)
class Scan:
    """A point cloud read from a file.

    Attributes:
        points: ``[P, 3]`` float32 or float64 (as stored; LAS and double-precision files
            give float64).
        attributes: per-point arrays with ``P`` rows under canonical names (see the
            module docstring): ``intensity``, ``colors``, ``normals``, ``labels``,
            ``instance``, and any other named column.
        path: the file it came from ("" when built in memory).
        format: short format name (``"ply"``, ``"pcd"``, ``"kitti"``, ...).
        label_names: id -> class name, when the file (or its format) says.
        label_colors: id -> RGB, when known (used by the renderer's legend).
    """

    points: np.ndarray
    attributes: Dict[str, np.ndarray] = field(default_factory=dict)
    path: str = ""
    format: str = ""
    label_names: Optional[Dict[int, str]] = None
    label_colors: Optional[Dict[int, Tuple[int, int, int]]] = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def intensity(self) -> Optional[np.ndarray]:
        return self.attributes.get("intensity")

    @property
    def colors(self) -> Optional[np.ndarray]:
        return self.attributes.get("colors")

    @property
    def normals(self) -> Optional[np.ndarray]:
        return self.attributes.get("normals")

    @property
    def labels(self) -> Optional[np.ndarray]:
        return self.attributes.get("labels")

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(min, max)`` corners over the finite points, float64 ``[3]`` each."""
        pts = self.points[np.isfinite(self.points).all(1)]
        if pts.shape[0] == 0:
            nan = np.full(3, np.nan)
            return nan, nan
        return pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)

    def feature_columns(self, names: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
        """Stack the named features into float32 ``[P, C]`` and name each column.

        ``names`` entries: ``"xyz"`` (3 columns), ``"intensity"``, ``"rgb"`` (colours
        scaled to ``[0, 1]``), ``"normals"``, ``"ones"`` (a constant 1), or any attribute.
        Raises ``KeyError`` naming the file and the attributes it does have.
        """
        cols, col_names = [], []
        for name in names:
            if name == "xyz":
                cols.append(self.points.astype(np.float32))
                col_names += ["x", "y", "z"]
            elif name == "ones":
                cols.append(np.ones((self.num_points, 1), np.float32))
                col_names.append("one")
            elif name in ("rgb", "colors"):
                if self.colors is None:
                    raise KeyError(self._missing(name))
                cols.append(self.colors.astype(np.float32) / 255.0)
                col_names += ["red", "green", "blue"]
            else:
                value = self.attributes.get(name)
                if value is None:
                    raise KeyError(self._missing(name))
                value = value.reshape(self.num_points, -1).astype(np.float32)
                cols.append(value)
                col_names += [name] if value.shape[1] == 1 else [f"{name}{i}" for i in range(value.shape[1])]
        if not cols:
            return np.zeros((self.num_points, 0), np.float32), []
        return np.concatenate(cols, 1), col_names

    def features(self, names: Sequence[str] = ("xyz", "intensity")) -> np.ndarray:
        """:meth:`feature_columns` without the names."""
        return self.feature_columns(names)[0]

    def _missing(self, name: str) -> str:
        have = ", ".join(["xyz", *sorted(self.attributes)]) or "xyz"
        where = self.path or "scan"
        return f"{where}: has no {name!r} attribute (it has: {have})"

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}{list(v.shape[1:]) if v.ndim > 1 else ''}" for k, v in self.attributes.items())
        return f"Scan({self.path or '<memory>'}, format={self.format}, points={self.num_points}, attributes=[{attrs}])"


# --------------------------------------------------------------------------------------
# Attribute canonicalisation
# --------------------------------------------------------------------------------------

_INTENSITY_NAMES = ("intensity", "intensities", "scalar_intensity", "reflectance", "remission", "i", "scalar_reflectance")
_LABEL_NAMES = ("labels", "label", "class", "classification", "semantic", "semantic_label", "scalar_label",
                "scalar_classification", "sem_label", "category")
_INSTANCE_NAMES = ("instance", "instance_id", "instance_label", "scalar_instance", "objectid")
_COLOR_TRIPLES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_NORMAL_TRIPLES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
_XYZ_TRIPLES = (("x", "y", "z"),)


def _to_uint8_colors(rgb: np.ndarray) -> np.ndarray:
    """Colours to uint8: 8-bit kept, 16-bit shifted, floats in [0, 1] scaled (else clipped)."""
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if np.issubdtype(rgb.dtype, np.integer):
        top = int(rgb.max()) if rgb.size else 0
        return (rgb >> 8).astype(np.uint8) if top > 255 else np.clip(rgb, 0, 255).astype(np.uint8)
    rgb = rgb.astype(np.float64)
    finite = rgb[np.isfinite(rgb)]
    if finite.size and finite.max() <= 1.0:
        rgb = rgb * 255.0
    return np.clip(np.nan_to_num(np.rint(rgb)), 0, 255).astype(np.uint8)


def _as_labels(path: str, name: str, values: np.ndarray) -> Optional[np.ndarray]:
    if np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_:
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if finite.all() and np.array_equal(values, np.rint(values)):
            return values.astype(np.int64)
    return None  # not integral: kept under its own name


def _canonical(path: str, columns: Mapping[str, np.ndarray], rows: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Named 1-D columns (and [P, k] blocks) -> (points [P, 3], canonical attributes)."""
    lower = {k.lower(): k for k in columns}
    used = set()

    def take_triple(triples):
        for names in triples:
            if all(n in lower for n in names):
                used.update(lower[n] for n in names)
                return np.stack([np.asarray(columns[lower[n]]) for n in names], 1)
        return None

    xyz = take_triple(_XYZ_TRIPLES)
    if xyz is None:
        for key in ("points", "xyz", "positions", "coord", "coords_xyz", "pos"):
            if key in lower and np.asarray(columns[lower[key]]).ndim == 2 and np.asarray(columns[lower[key]]).shape[1] >= 3:
                block = np.asarray(columns[lower[key]])
                used.add(lower[key])
                xyz = block[:, :3]
                break
    if xyz is None:
        raise ScanFormatError(path, f"no x, y, z coordinates (found fields: {', '.join(columns) or 'none'})")
    if not np.issubdtype(xyz.dtype, np.floating):
        xyz = xyz.astype(np.float64)
    if xyz.dtype not in (np.float32, np.float64):
        xyz = xyz.astype(np.float32)
    attrs: Dict[str, np.ndarray] = {}
    rgb = take_triple(_COLOR_TRIPLES)
    if rgb is None:
        for key in ("colors", "colours", "rgb_colors"):
            if key in lower and np.asarray(columns[lower[key]]).ndim == 2:
                rgb = np.asarray(columns[lower[key]])[:, :3]
                used.add(lower[key])
                break
    if rgb is not None:
        attrs["colors"] = _to_uint8_colors(rgb)
    normals = take_triple(_NORMAL_TRIPLES)
    if normals is None and "normals" in lower:
        normals = np.asarray(columns[lower["normals"]])
        used.add(lower["normals"])
    if normals is not None:
        attrs["normals"] = normals.astype(np.float32)
    for canonical, aliases in (("intensity", _INTENSITY_NAMES), ("labels", _LABEL_NAMES), ("instance", _INSTANCE_NAMES)):
        for alias in aliases:
            if alias in lower and lower[alias] not in used:
                values = np.asarray(columns[lower[alias]])
                if values.ndim == 2 and values.shape[1] == 1:
                    values = values[:, 0]
                if values.ndim != 1:
                    continue
                if canonical == "intensity":
                    attrs["intensity"] = values.astype(np.float32)
                else:
                    as_int = _as_labels(path, alias, values)
                    if as_int is None:
                        continue
                    attrs[canonical] = as_int
                used.add(lower[alias])
                break
    for key, values in columns.items():
        if key in used or key.startswith("_"):
            continue
        values = np.asarray(values)
        if values.shape[:1] != (rows,):
            continue
        name = key
        if name in attrs:
            name = f"{name}_raw"
        attrs[name] = values
    return np.ascontiguousarray(xyz), attrs


def _check_points(path: str, points: np.ndarray) -> None:
    if points.shape[0] == 0:
        raise ScanFormatError(path, "contains no points")


# --------------------------------------------------------------------------------------
# Format table and dispatch
# --------------------------------------------------------------------------------------

_EXTENSIONS = {
    ".ply": "ply", ".pcd": "pcd", ".xyz": "xyz", ".xyzn": "xyzn", ".xyzrgb": "xyzrgb", ".pts": "pts",
    ".bin": "kitti", ".label": "label", ".npy": "npy", ".npz": "npz", ".las": "las", ".laz": "laz",
}

#: Format names :func:`read_scan` accepts, by extension.
READ_FORMATS: Dict[str, str] = dict(_EXTENSIONS)


def format_of(path: PathLike) -> str:
    """The format name for ``path``'s extension; raises :class:`UnsupportedFormatError`."""
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    fmt = _EXTENSIONS.get(ext)
    if fmt is None:
        known = " ".join(sorted(_EXTENSIONS))
        what = f"unknown extension {ext!r}" if ext else "no file extension"
        raise UnsupportedFormatError(p, f"{what}; readable formats: {known}")
    return fmt


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise ScanFormatError(path, "is a directory, not a scan file") from None
    except PermissionError:
        raise ScanFormatError(path, "permission denied") from None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise _not_found(path)
    if os.path.isdir(path):
        raise ScanFormatError(path, "is a directory, not a scan file")
    if os.path.getsize(path) == 0:
        raise ScanFormatError(path, "is empty (0 bytes)")


def read_scan(path: PathLike, *, format: Optional[str] = None, labels: Union[str, None, bool, PathLike] = "auto") -> Scan:
    """Read a point-cloud file into a :class:`Scan` (see the module docstring for formats).

    Args:
        path: the file.
        format: override the extension: one of the values of :data:`READ_FORMATS`.
        labels: for KITTI ``.bin`` scans: ``"auto"`` reads the SemanticKITTI ``.label``
            file when it exists (``../labels/NAME.label`` or ``NAME.label``), a path reads
            that file, ``None``/``False`` reads none.

    Raises:
        FileNotFoundError: no such file.
        UnsupportedFormatError: unknown extension or format name.
        ScanFormatError: empty, corrupt or truncated file, or a size that does not fit.
        MissingDependencyError: LAS/LAZ without laspy (or LAZ without a LAZ backend).
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        raise ScanFormatError(p, "is a directory, not a scan file")
    if format is None:
        fmt = format_of(p)
    else:
        fmt = format.lower().lstrip(".")
        fmt = _EXTENSIONS.get("." + fmt, fmt)
        if fmt not in set(_EXTENSIONS.values()):
            raise UnsupportedFormatError(p, f"unknown format {format!r}; known: {', '.join(sorted(set(_EXTENSIONS.values())))}")
    _check_file(p)
    if fmt == "ply":
        scan = _read_ply(p)
    elif fmt == "pcd":
        scan = _read_pcd(p)
    elif fmt in ("xyz", "xyzn", "xyzrgb", "pts"):
        scan = _read_text(p, fmt)
    elif fmt == "kitti":
        scan = _read_kitti(p, labels)
    elif fmt == "label":
        raise ScanFormatError(p, "a .label file holds labels, not points; read the matching .bin scan "
                                 "(its labels come along) or use sparseconv.io.read_label")
    elif fmt == "npy":
        scan = _read_npy(p)
    elif fmt == "npz":
        scan = _read_npz(p)
    else:  # las / laz
        scan = _read_las(p)
    _check_points(p, scan.points)
    for name, value in scan.attributes.items():
        if value.shape[:1] != scan.points.shape[:1]:  # pragma: no cover - parsers guarantee it
            raise ScanFormatError(p, f"attribute {name!r} has {value.shape[0]} rows for {len(scan)} points")
    return scan


# --------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------

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


def _read_ply(path: str) -> Scan:
    data = _read_bytes(path)
    fmt, elements, comments, offset = _parse_ply_header(path, data)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        raise ScanFormatError(path, "PLY file has no 'vertex' element")
    if vertex.count == 0:
        raise ScanFormatError(path, "contains no points (PLY 'vertex' element has 0 entries)")
    if any(lt is not None for _, _, lt in vertex.properties):
        raise ScanFormatError(path, "PLY 'vertex' element has list properties; only scalar vertex properties are supported")
    if fmt == "ascii":
        columns = _read_ply_ascii(path, data[offset:], elements, vertex)
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        before = elements[: elements.index(vertex)]
        for e in before:
            if any(lt is not None for _, _, lt in e.properties):
                raise ScanFormatError(path, f"binary PLY element {e.name!r} with list properties precedes 'vertex'; not supported")
            offset += e.count * int(np.dtype([(n, endian + _PLY_TYPES[t]) for n, t, _ in e.properties]).itemsize)
        dtype = np.dtype([(n, endian + _PLY_TYPES[t]) for n, t, _ in vertex.properties])
        need = vertex.count * dtype.itemsize
        have = len(data) - offset
        if have < need:
            raise ScanFormatError(
                path, f"truncated: the PLY header declares {vertex.count} vertices ({need} bytes) but only {max(have, 0)} bytes follow")
        arr = np.frombuffer(data, dtype=dtype, count=vertex.count, offset=offset)
        columns = {n: arr[n].astype(arr[n].dtype.newbyteorder("=")) for n in arr.dtype.names}
    points, attrs = _canonical(path, columns, vertex.count)
    names, colors = _ply_label_table(comments)
    return Scan(points, attrs, path, "ply", names, colors)


def _read_ply_ascii(path: str, body: bytes, elements: List[_PlyElement], vertex: _PlyElement) -> Dict[str, np.ndarray]:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ScanFormatError(path, "ascii PLY body contains non-ASCII bytes (corrupt)") from None
    lines = text.splitlines()
    start = sum(e.count for e in elements[: elements.index(vertex)])
    rows = lines[start: start + vertex.count]
    if len(rows) < vertex.count:
        raise ScanFormatError(path, f"truncated: the PLY header declares {vertex.count} vertices but only {max(len(rows), 0)} lines follow")
    ncol = len(vertex.properties)
    try:
        table = np.loadtxt(_io.StringIO("\n".join(rows)), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ScanFormatError(path, f"ascii PLY vertex data does not parse: {exc}") from None
    if table.shape != (vertex.count, ncol):
        raise ScanFormatError(path, f"ascii PLY vertex rows have {table.shape[1]} values, the header declares {ncol} properties")
    return {n: table[:, i].astype(_PLY_TYPES[t]) for i, (n, t, _) in enumerate(vertex.properties)}


def _write_ply_bytes(points: np.ndarray, attributes: Mapping[str, np.ndarray], comments: Sequence[str] = (),
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
            value = _to_uint8_colors(value.reshape(P, 3))
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


def _label_comments(label_names: Optional[Mapping[int, str]], label_colors: Optional[Mapping[int, Sequence[int]]]) -> List[str]:
    out = []
    for i, name in sorted((label_names or {}).items()):
        rgb = (label_colors or {}).get(i)
        safe = re.sub(r"\s+", "_", str(name))
        out.append(f"label {i} {safe}" + (f" {rgb[0]} {rgb[1]} {rgb[2]}" if rgb is not None else ""))
    return out


# --------------------------------------------------------------------------------------
# PCD
# --------------------------------------------------------------------------------------

def _read_pcd(path: str) -> Scan:
    data = _read_bytes(path)
    header: Dict[str, List[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
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
            break
        if len(header) > 32:
            raise ScanFormatError(path, "not a PCD file (no DATA line in the header)")
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        width = int(header["WIDTH"][0])
        height = int(header.get("HEIGHT", ["1"])[0])
        npoints = int(header.get("POINTS", [str(width * height)])[0])
        mode = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise ScanFormatError(path, f"PCD header is incomplete or malformed ({exc})") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise ScanFormatError(path, "PCD header FIELDS, SIZE, TYPE and COUNT have different lengths")
    kinds = {"F": "f", "I": "i", "U": "u"}
    try:
        fields = [(n, "<" + kinds[t.upper()] + str(s), c) for n, s, t, c in zip(names, sizes, types, counts)]
        dtype = np.dtype([(n, d) if c == 1 else (n, d, (c,)) for n, d, c in fields])
    except (KeyError, TypeError):
        raise ScanFormatError(path, f"PCD header has an unknown TYPE/SIZE combination: {types} {sizes}") from None
    if npoints == 0:
        raise ScanFormatError(path, "contains no points (PCD POINTS is 0)")
    body = data[pos:]
    if mode == "ascii":
        try:
            table = np.loadtxt(_io.StringIO(body.decode("ascii")), dtype=np.float64, ndmin=2)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ScanFormatError(path, f"ascii PCD data does not parse: {exc}") from None
        ncol = sum(counts)
        if table.shape[0] != npoints or table.shape[1] != ncol:
            raise ScanFormatError(path, f"ascii PCD data has {table.shape[0]} rows of {table.shape[1]} values; "
                                        f"the header declares {npoints} points of {ncol} values (truncated or corrupt)")
        arr = np.empty(npoints, dtype=dtype)
        col = 0
        for n, d, c in fields:
            arr[n] = table[:, col: col + c].astype(d).reshape(arr[n].shape)
            col += c
    elif mode == "binary":
        need = npoints * dtype.itemsize
        if len(body) < need:
            raise ScanFormatError(path, f"truncated: the PCD header declares {npoints} points ({need} bytes) "
                                        f"but only {len(body)} bytes follow")
        arr = np.frombuffer(body, dtype=dtype, count=npoints)
    elif mode == "binary_compressed":
        if len(body) < 8:
            raise ScanFormatError(path, "truncated: binary_compressed PCD has no size words after the header")
        compressed, uncompressed = np.frombuffer(body[:8], "<u4")
        if len(body) - 8 < int(compressed):
            raise ScanFormatError(path, f"truncated: binary_compressed PCD declares {int(compressed)} compressed bytes "
                                        f"but only {len(body) - 8} follow")
        if int(uncompressed) != npoints * dtype.itemsize:
            raise ScanFormatError(path, f"binary_compressed PCD declares {int(uncompressed)} uncompressed bytes, "
                                        f"the header's {npoints} points need {npoints * dtype.itemsize}")
        return _read_with_open3d(path, "pcd")
    else:
        raise ScanFormatError(path, f"unknown PCD DATA mode {mode!r} (ascii, binary, binary_compressed)")
    columns: Dict[str, np.ndarray] = {}
    for n in arr.dtype.names:
        if n == "_":
            continue
        v = arr[n]
        if n.lower() in ("rgb", "rgba") and v.dtype.itemsize == 4 and v.ndim == 1:
            packed = np.ascontiguousarray(v).view(np.uint32)
            columns["red"] = ((packed >> 16) & 255).astype(np.uint8)
            columns["green"] = ((packed >> 8) & 255).astype(np.uint8)
            columns["blue"] = (packed & 255).astype(np.uint8)
            continue
        columns[n] = np.ascontiguousarray(v)
    points, attrs = _canonical(path, columns, npoints)
    return Scan(points, attrs, path, "pcd")


def _read_with_open3d(path: str, fmt: str) -> Scan:
    try:
        import open3d as o3d
    except ImportError as exc:  # pragma: no cover - open3d is a test dependency
        raise MissingDependencyError(f"{path}: reading this file needs open3d: pip install 'sparseconv[io]' ({exc})") from None
    pc = o3d.t.io.read_point_cloud(path)
    if "positions" not in pc.point or pc.point.positions.shape[0] == 0:
        raise ScanFormatError(path, "could not be decoded (corrupt or truncated)")
    columns: Dict[str, np.ndarray] = {}
    for key in pc.point:
        v = pc.point[key].numpy()
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        columns[key] = v
    points, attrs = _canonical(path, columns, columns["positions"].shape[0])
    return Scan(points, attrs, path, fmt)


# --------------------------------------------------------------------------------------
# Text: XYZ / PTS
# --------------------------------------------------------------------------------------

def _text_columns(fmt: str, ncol: int) -> List[str]:
    if fmt == "xyzn" and ncol >= 6:
        base = ["x", "y", "z", "nx", "ny", "nz"]
    elif fmt == "xyzrgb" and ncol >= 6:
        base = ["x", "y", "z", "red", "green", "blue"]
    elif ncol == 4:
        base = ["x", "y", "z", "intensity"]
    elif ncol == 6:
        base = ["x", "y", "z", "red", "green", "blue"]
    elif ncol == 7:
        base = ["x", "y", "z", "intensity", "red", "green", "blue"]
    else:
        base = ["x", "y", "z"]
    return base[:ncol] + [f"c{i}" for i in range(len(base), ncol)]


def _columns_from_table(path: str, fmt: str, table: np.ndarray) -> Dict[str, np.ndarray]:
    if table.ndim != 2 or table.shape[1] < 3:
        raise ScanFormatError(path, f"needs at least 3 columns (x y z), found {table.shape[1] if table.ndim == 2 else 1}")
    names = _text_columns(fmt, table.shape[1])
    cols = {n: table[:, i] for i, n in enumerate(names)}
    if "red" in cols:
        rgb = np.stack([cols.pop("red"), cols.pop("green"), cols.pop("blue")], 1)
        if rgb.size and rgb.min() >= 0 and np.array_equal(rgb, np.rint(rgb)) and rgb.max() <= 255 and rgb.max() > 1:
            rgb = rgb.astype(np.uint8)
        cols["colors"] = rgb
    return cols


def _read_text(path: str, fmt: str) -> Scan:
    data = _read_bytes(path)
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
    delimiter = "," if "," in lines[0] else None
    try:
        table = np.loadtxt(_io.StringIO("\n".join(lines)), dtype=np.float64, ndmin=2, delimiter=delimiter)
    except ValueError as exc:
        msg = str(exc).splitlines()[0].split(";")[0]
        raise ScanFormatError(path, f"text point data does not parse ({msg})") from None
    if declared is not None and declared != table.shape[0]:
        raise ScanFormatError(path, f"the first line declares {declared} points but {table.shape[0]} rows follow (truncated?)")
    cols = _columns_from_table(path, fmt, table)
    points, attrs = _canonical(path, cols, table.shape[0])
    return Scan(points.astype(np.float32) if _fits_float32(points) else points, attrs, path, fmt)


def _fits_float32(points: np.ndarray) -> bool:
    """Text coordinates become float32 unless that would lose more than a millimetre."""
    finite = points[np.isfinite(points)]
    return finite.size == 0 or float(np.abs(finite).max()) < 1.6e4


# --------------------------------------------------------------------------------------
# KITTI .bin and SemanticKITTI .label
# --------------------------------------------------------------------------------------

def _read_kitti(path: str, labels) -> Scan:
    size = os.path.getsize(path)
    if size % 16:
        raise ScanFormatError(path, f"size {size} bytes is not a multiple of 16: not a KITTI scan "
                                    f"(float32 x, y, z, intensity records), or truncated")
    arr = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    attrs: Dict[str, np.ndarray] = {"intensity": arr[:, 3].copy()}
    scan = Scan(np.ascontiguousarray(arr[:, :3]), attrs, path, "kitti")
    label_path = None
    if labels is not None and labels is not False:
        if isinstance(labels, str) and labels == "auto":
            stem = os.path.splitext(os.path.basename(path))[0]
            folder = os.path.dirname(os.path.abspath(path))
            candidates = [os.path.join(folder, stem + ".label")]
            if os.path.basename(folder) == "velodyne":
                candidates.insert(0, os.path.join(os.path.dirname(folder), "labels", stem + ".label"))
            label_path = next((c for c in candidates if os.path.isfile(c)), None)
        else:
            label_path = os.fspath(labels)
    if label_path is not None:
        semantic, instance = read_label(label_path, num_points=len(scan))
        attrs["labels"] = semantic
        if instance.any():
            attrs["instance"] = instance
        scan.label_names = dict(SEMANTIC_KITTI_LABELS)
        scan.label_colors = semantic_kitti_label_colors()
    return scan


def read_label(path: PathLike, num_points: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Read a SemanticKITTI ``.label`` file: ``(semantic, instance)``, int64 ``[P]`` each.

    Raises :class:`ScanFormatError` when the size is not a multiple of 4 bytes, or when
    ``num_points`` is given and the file holds a different number of labels.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise _not_found(p)
    if os.path.isdir(p):
        raise ScanFormatError(p, "is a directory, not a label file")
    size = os.path.getsize(p)
    if size % 4:
        raise ScanFormatError(p, f"size {size} bytes is not a multiple of 4: not a SemanticKITTI .label file (uint32 per point), or truncated")
    raw = np.fromfile(p, dtype="<u4")
    if num_points is not None and raw.shape[0] != num_points:
        raise ScanFormatError(p, f"holds {raw.shape[0]} labels but the scan has {num_points} points")
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


# --------------------------------------------------------------------------------------
# NumPy
# --------------------------------------------------------------------------------------

def _load_numpy(path: str):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ScanFormatError(path, f"is not a readable NumPy file ({str(exc).splitlines()[0]})") from None
    except (OSError, EOFError) as exc:
        raise ScanFormatError(path, f"is not a readable NumPy file, corrupt or truncated ({exc.__class__.__name__}: {exc})") from None


def _read_npy(path: str) -> Scan:
    arr = _load_numpy(path)
    if not isinstance(arr, np.ndarray):
        raise ScanFormatError(path, "is an .npz archive saved with an .npy extension; rename it to .npz")
    if arr.dtype.names:
        columns = {n: arr[n] for n in arr.dtype.names}
        points, attrs = _canonical(path, columns, arr.shape[0])
        return Scan(points, attrs, path, "npy")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ScanFormatError(path, f"holds an array of shape {arr.shape}; expected [P, C] with C >= 3 (x, y, z first)")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ScanFormatError(path, f"holds a {arr.dtype} array; expected numbers")
    table = arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)
    cols = _columns_from_table(path, "npy", table)
    points, attrs = _canonical(path, cols, arr.shape[0])
    return Scan(points, attrs, path, "npy")


def _read_npz(path: str) -> Scan:
    try:
        archive = _load_numpy(path)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ScanFormatError(path, "is a single .npy array saved with an .npz extension; rename it to .npy")
        with archive:
            try:
                contents = {k: archive[k] for k in archive.files}
            except ValueError as exc:
                raise ScanFormatError(path, f"holds an entry that is not a plain array: {exc}") from None
        bad = [k for k, v in contents.items() if not isinstance(v, np.ndarray)]
        if bad:
            raise ScanFormatError(path, f"entries {', '.join(bad)} are not NumPy arrays (corrupt archive?)")
    except ScanFormatError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, EOFError ... from a damaged archive
        raise ScanFormatError(path, f"is a corrupt or truncated .npz archive ({exc.__class__.__name__}: {exc})") from None
    if "coords" in contents and "voxel_size" in contents and "feats" in contents:
        vf = _voxel_file_from_arrays(path, contents)
        centres = vf.tensor.voxel_centers().numpy()
        feats = vf.tensor.feats.detach().numpy()
        cols = {n: feats[:, i] for i, n in enumerate(vf.feature_names) if n not in ("x", "y", "z")}
        cols["points"] = centres
        points, attrs = _canonical(path, cols, centres.shape[0])
        attrs["num_points"] = vf.num_points.numpy()
        if vf.tensor.batch_size > 1:
            attrs["batch"] = vf.tensor.coords[:, 0].numpy()
        return Scan(points, attrs, path, "voxels", vf.label_names)
    rows = None
    for key in ("points", "xyz", "positions", "pos", "coord"):
        if key in contents:
            block = contents[key]
            if block.ndim != 2 or block.shape[1] < 3:
                raise ScanFormatError(path, f"entry {key!r} has shape {block.shape}; expected [P, 3]")
            rows = block.shape[0]
            break
    if rows is None:
        if {"x", "y", "z"} <= set(contents):
            rows = contents["x"].shape[0]
        else:
            raise ScanFormatError(path, f"has no 'points' (or 'xyz') entry; entries: {', '.join(contents) or 'none'}")
    columns = {k: v for k, v in contents.items() if v.ndim >= 1 and v.shape[0] == rows}
    points, attrs = _canonical(path, columns, rows)
    names = contents.get("class_names")
    label_names = label_colors = None
    if names is not None and names.ndim == 1:
        label_names = {i: str(n) for i, n in enumerate(names.tolist())}
        colors = contents.get("class_colors")
        if colors is not None and colors.shape == (len(label_names), 3):
            label_colors = {i: tuple(int(c) for c in colors[i]) for i in range(len(label_names))}
    for k in ("class_names", "class_colors"):
        attrs.pop(k, None)
    return Scan(points, attrs, path, "npz", label_names, label_colors)


# --------------------------------------------------------------------------------------
# LAS / LAZ
# --------------------------------------------------------------------------------------

def _read_las(path: str) -> Scan:
    try:
        import laspy
    except ImportError:
        raise MissingDependencyError(f"{path}: reading LAS/LAZ needs laspy: pip install 'sparseconv[las]'") from None
    try:
        las = laspy.read(path)
    except Exception as exc:
        text = str(exc)
        if "LazBackend" in text or "laz" in text.lower() and "backend" in text.lower():
            raise MissingDependencyError(f"{path}: reading LAZ needs a LAZ backend: pip install 'sparseconv[las]' ({text})") from None
        raise ScanFormatError(path, f"is not a readable LAS/LAZ file ({exc.__class__.__name__}: {text})") from None
    n = len(las.points)
    if n == 0:
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
        attrs["colors"] = _to_uint8_colors(np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], 1))
    for extra in ("return_number", "number_of_returns", "gps_time"):
        if extra in dims:
            attrs[extra] = np.asarray(las[extra]).copy()
    fmt = "laz" if path.lower().endswith(".laz") else "las"
    return Scan(points, attrs, path, fmt)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` for writing; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched (absent
    or as it was). The final file gets the usual permissions (``0o666`` less the umask).
    """
    p = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{p}: output directory {folder} does not exist")
    if os.path.isdir(p):
        raise IsADirectoryError(f"{p}: is a directory")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(p)}.", suffix=".part")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    fmt = {".ply": "ply", ".bin": "kitti", ".npz": "npz", ".npy": "npy"}.get(ext)
    if fmt is None:
        raise UnsupportedFormatError(path, f"cannot write {ext or 'files without an extension'!r}; writable: .ply .bin .npz .npy")
    return fmt


def write_scan(
    path: PathLike,
    scan: Union[Scan, np.ndarray, torch.Tensor],
    attributes: Optional[Mapping[str, np.ndarray]] = None,
    *,
    label_names: Optional[Mapping[int, str]] = None,
    label_colors: Optional[Mapping[int, Sequence[int]]] = None,
    ascii: bool = False,
) -> str:
    """Write a scan (a :class:`Scan`, or points plus ``attributes``) atomically.

    By extension: ``.ply`` (binary little-endian, or ascii with ``ascii=True``; every
    attribute as properties, the label table as ``comment label ID NAME R G B`` lines);
    ``.bin`` (KITTI: float32 x, y, z, intensity; intensity 0 when absent -- write the
    labels with :func:`write_label`); ``.npz`` (``points`` and every attribute, plus
    ``class_names`` / ``class_colors``); ``.npy`` (float32 ``[P, 3 + C]``: x, y, z and the
    numeric attributes in order, so only unambiguous for 4 columns: x, y, z, intensity).
    Returns the path.
    """
    p = os.fspath(path)
    fmt = _write_format(p)
    if isinstance(scan, Scan):
        points = scan.points
        attrs = dict(scan.attributes)
        label_names = scan.label_names if label_names is None else label_names
        label_colors = scan.label_colors if label_colors is None else label_colors
    else:
        points = scan.detach().cpu().numpy() if isinstance(scan, torch.Tensor) else np.asarray(scan)
        attrs = {}
    if attributes:
        attrs.update({k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in attributes.items()})
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{p}: points must have shape [P, 3], got {points.shape}")
    for name, value in attrs.items():
        if value.shape[:1] != points.shape[:1]:
            raise ValueError(f"{p}: attribute {name!r} has {value.shape[0] if value.ndim else 0} rows for {points.shape[0]} points")
    if fmt == "ply":
        blob = _write_ply_bytes(points, attrs, _label_comments(label_names, label_colors), ascii=ascii)
        with atomic_write(p) as f:
            f.write(blob)
    elif fmt == "kitti":
        rec = np.zeros((points.shape[0], 4), dtype="<f4")
        rec[:, :3] = points
        if "intensity" in attrs:
            rec[:, 3] = attrs["intensity"].reshape(-1)
        with atomic_write(p) as f:
            f.write(rec.tobytes())
    elif fmt == "npz":
        arrays = {"points": points, **attrs}
        if label_names:
            ids = sorted(label_names)
            if ids == list(range(len(ids))):
                arrays["class_names"] = np.array([label_names[i] for i in ids])
                if label_colors and all(i in label_colors for i in ids):
                    arrays["class_colors"] = np.array([label_colors[i] for i in ids], dtype=np.uint8)
        with atomic_write(p) as f:
            np.savez_compressed(f, **arrays)
    else:  # npy
        cols = [points.astype(np.float32)]
        for name, value in attrs.items():
            if name == "colors":
                value = value.astype(np.float32)
            cols.append(value.reshape(points.shape[0], -1).astype(np.float32))
        with atomic_write(p) as f:
            np.save(f, np.concatenate(cols, 1))
    return p


def write_label(path: PathLike, semantic: np.ndarray, instance: Optional[np.ndarray] = None) -> str:
    """Write a SemanticKITTI ``.label`` file (uint32: ``instance << 16 | semantic``) atomically."""
    p = os.fspath(path)
    semantic = np.asarray(semantic).astype(np.int64)
    if semantic.ndim != 1:
        raise ValueError(f"{p}: semantic labels must have shape [P], got {semantic.shape}")
    instance = np.zeros_like(semantic) if instance is None else np.asarray(instance).astype(np.int64)
    if instance.shape != semantic.shape:
        raise ValueError(f"{p}: instance has shape {instance.shape}, semantic {semantic.shape}")
    if semantic.size and (semantic.min() < 0 or semantic.max() > 0xFFFF or instance.min() < 0 or instance.max() > 0xFFFF):
        raise ValueError(f"{p}: semantic and instance ids must lie in [0, 65535]")
    raw = ((instance << 16) | semantic).astype("<u4")
    with atomic_write(p) as f:
        f.write(raw.tobytes())
    return p


# --------------------------------------------------------------------------------------
# Voxel files
# --------------------------------------------------------------------------------------

_VOXEL_FORMAT_VERSION = 1


@dataclass(eq=False)
class VoxelFile:
    """A voxelized scan read back by :func:`read_voxels`.

    Attributes:
        tensor: the voxels (``voxel_size`` and ``origin`` set, so ``voxel_centers()`` works).
        point_to_voxel: int64 ``[P]`` row of ``tensor`` per input point (``-1``: dropped),
            empty when it was not saved.
        num_points: int64 ``[N]`` points per voxel.
        feature_names: one name per feature column.
        source: the file that was voxelized ("" when unknown).
        reduce: the reduction used ("" when unknown).
        label_names: id -> class name for a ``labels`` feature column, when saved.
    """

    tensor: SparseTensor
    point_to_voxel: torch.Tensor
    num_points: torch.Tensor
    feature_names: Tuple[str, ...]
    source: str = ""
    reduce: str = ""
    label_names: Optional[Dict[int, str]] = None

    def voxelization(self) -> Voxelization:
        return Voxelization(self.tensor, self.point_to_voxel, self.num_points)


def write_voxels(
    path: PathLike,
    voxels: Union[Voxelization, SparseTensor],
    point_to_voxel: Optional[torch.Tensor] = None,
    *,
    num_points: Optional[torch.Tensor] = None,
    feature_names: Optional[Sequence[str]] = None,
    source: str = "",
    reduce: str = "",
    label_names: Optional[Mapping[int, str]] = None,
) -> str:
    """Write voxels atomically, as ``.npz`` or as a ``.ply`` of voxel centres.

    ``.npz`` entries: ``coords`` int32 ``[N, 4]`` (batch, x, y, z), ``feats`` float32
    ``[N, C]``, ``voxel_size`` and ``origin`` float64 ``[3]``, ``spatial_shape`` int64
    ``[3]``, ``batch_size``, ``point_to_voxel`` int64 ``[P]``, ``num_points`` int64 ``[N]``,
    ``feature_names`` ``[C]`` strings, ``source``, ``reduce``, ``format_version``.
    ``.ply``: x, y, z of every voxel centre, then each feature column as a float property
    (a ``red/green/blue`` triple becomes uchar colours, ``labels`` an int), ``num_points``,
    and ``batch`` when there are several batch entries.
    """
    p = os.fspath(path)
    if isinstance(voxels, Voxelization):
        tensor = voxels.tensor
        point_to_voxel = voxels.point_to_voxel if point_to_voxel is None else point_to_voxel
        num_points = voxels.num_points if num_points is None else num_points
    elif isinstance(voxels, SparseTensor):
        tensor = voxels
    else:
        raise TypeError(f"voxels must be a Voxelization or SparseTensor, got {type(voxels).__name__}")
    if tensor.voxel_size is None or tensor.origin is None:
        raise ValueError(f"{p}: the tensor needs voxel_size and origin (use sparseconv.voxelize)")
    N, C = len(tensor), tensor.num_channels
    names = tuple(feature_names) if feature_names is not None else tuple(f"f{i}" for i in range(C))
    if len(names) != C:
        raise ValueError(f"{p}: {len(names)} feature names for {C} feature columns")
    feats = tensor.feats.detach().cpu().to(torch.float32).numpy()
    coords = tensor.coords.cpu().numpy()
    counts = (num_points.cpu().numpy().astype(np.int64) if num_points is not None else np.ones(N, np.int64))
    p2v = (point_to_voxel.cpu().numpy().astype(np.int64) if point_to_voxel is not None else np.zeros(0, np.int64))
    ext = os.path.splitext(p)[1].lower()
    if ext == ".npz":
        arrays = dict(
            coords=coords.astype(np.int32), feats=feats,
            voxel_size=np.asarray(tensor.voxel_size, np.float64), origin=np.asarray(tensor.origin, np.float64),
            spatial_shape=np.asarray(tensor.spatial_shape, np.int64), batch_size=np.int64(tensor.batch_size),
            point_to_voxel=p2v, num_points=counts, feature_names=np.array(names, dtype=str),
            source=np.array(source), reduce=np.array(reduce), format_version=np.int64(_VOXEL_FORMAT_VERSION),
        )
        if label_names:
            ids = sorted(label_names)
            arrays["label_ids"] = np.array(ids, np.int64)
            arrays["label_names"] = np.array([label_names[i] for i in ids], dtype=str)
        with atomic_write(p) as f:
            np.savez_compressed(f, **arrays)
    elif ext == ".ply":
        centres = tensor.voxel_centers().cpu().numpy()
        if _fits_float32(centres):
            centres = centres.astype(np.float32)
        attrs: Dict[str, np.ndarray] = {}
        cols = list(names)
        if all(c in cols for c in ("red", "green", "blue")):
            idx = [cols.index(c) for c in ("red", "green", "blue")]
            rgb = feats[:, idx]
            attrs["colors"] = _to_uint8_colors(rgb if rgb.max(initial=0) > 1 else rgb)
        for i, n in enumerate(cols):
            if n in ("red", "green", "blue") and "colors" in attrs:
                continue
            if n == "labels":
                attrs["labels"] = np.rint(feats[:, i]).astype(np.int64)
            else:
                attrs[n] = feats[:, i]
        attrs["num_points"] = counts.astype(np.int32)
        if tensor.batch_size > 1:
            attrs["batch"] = coords[:, 0].astype(np.int32)
        comments = [f"sparseconv voxel_size {' '.join(repr(v) for v in tensor.voxel_size)}",
                    f"sparseconv origin {' '.join(repr(v) for v in tensor.origin)}"]
        comments += _label_comments(label_names, None)
        with atomic_write(p) as f:
            f.write(_write_ply_bytes(centres, attrs, comments))
    else:
        raise UnsupportedFormatError(p, f"cannot write voxels as {ext or 'a file without an extension'!r}; use .npz or .ply")
    return p


def _voxel_file_from_arrays(path: str, z: Mapping[str, np.ndarray]) -> VoxelFile:
    try:
        coords = torch.from_numpy(np.asarray(z["coords"]).astype(np.int64))
        feats = torch.from_numpy(np.asarray(z["feats"]).astype(np.float32))
        if coords.ndim == 2 and coords.shape[1] == 3:
            coords = torch.cat([torch.zeros(coords.shape[0], 1, dtype=torch.int64), coords], 1)
        spatial = tuple(int(v) for v in z["spatial_shape"]) if "spatial_shape" in z else None
        batch_size = int(z["batch_size"]) if "batch_size" in z else None
        tensor = SparseTensor(feats, coords, spatial, batch_size,
                              voxel_size=np.asarray(z["voxel_size"]).tolist(),
                              origin=np.asarray(z["origin"]).tolist() if "origin" in z else (0.0, 0.0, 0.0))
    except (KeyError, ValueError, TypeError) as exc:
        raise ScanFormatError(path, f"is not a valid voxel file ({exc})") from None
    N = len(tensor)
    p2v = torch.from_numpy(np.asarray(z.get("point_to_voxel", np.zeros(0, np.int64))).astype(np.int64))
    counts = torch.from_numpy(np.asarray(z.get("num_points", np.ones(N, np.int64))).astype(np.int64))
    if counts.shape != (N,):
        raise ScanFormatError(path, f"num_points has {counts.shape[0]} entries for {N} voxels")
    if p2v.numel() and (int(p2v.max()) >= N or int(p2v.min()) < -1):
        raise ScanFormatError(path, f"point_to_voxel refers to rows outside [0, {N})")
    names = tuple(str(n) for n in np.asarray(z.get("feature_names", np.array([f"f{i}" for i in range(feats.shape[1])]))).tolist())
    if len(names) != feats.shape[1]:
        raise ScanFormatError(path, f"{len(names)} feature names for {feats.shape[1]} feature columns")
    label_names = None
    if "label_ids" in z and "label_names" in z:
        label_names = {int(i): str(n) for i, n in zip(np.asarray(z["label_ids"]).tolist(), np.asarray(z["label_names"]).tolist())}
    return VoxelFile(tensor, p2v, counts, names, str(z.get("source", "")), str(z.get("reduce", "")), label_names)


def read_voxels(path: PathLike) -> VoxelFile:
    """Read an ``.npz`` written by :func:`write_voxels` back into a :class:`VoxelFile`."""
    p = os.fspath(path)
    _check_file(p)
    if not p.lower().endswith(".npz"):
        raise UnsupportedFormatError(p, "voxel files are read from .npz (a .ply of voxel centres reads with read_scan)")
    archive = _load_numpy(p)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ScanFormatError(p, "is not an .npz archive")
    try:
        with archive:
            contents = {k: archive[k] for k in archive.files}
    except Exception as exc:
        raise ScanFormatError(p, f"is a corrupt or truncated .npz archive ({exc.__class__.__name__}: {exc})") from None
    missing = [k for k in ("coords", "feats", "voxel_size") if k not in contents]
    if missing:
        raise ScanFormatError(p, f"is not a voxel file: missing {', '.join(missing)}")
    return _voxel_file_from_arrays(p, contents)
