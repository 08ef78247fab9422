"""The one table of formats, and the two entry points that dispatch through it.

:data:`FORMATS` maps a format name to a :class:`Format`: its extensions, a one-line
description, its reader ``(path, ReadOptions) -> Scan`` and its writer
``(path, points, attributes, **options) -> None`` (``None`` where the format is read-only
or write-only). :data:`READ_FORMATS` and :data:`WRITE_EXTENSIONS` are derived from it;
:func:`read_scan` and :func:`write_scan` are the only code that looks formats up.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .attributes import parse_columns
from .errors import InputError, ScanFormatError, UnsupportedFormatError
from .files import DEFAULT_MAX_BYTES, ReadOptions, check_file
from .las import read_las
from .lidar import read_kitti, read_label, read_nuscenes, write_kitti
from .npformat import load_npy
from .numpy_scans import read_npy, read_npz, write_npy, write_npz
from .pcd import read_pcd
from .ply import read_ply, write_ply
from .scan import Scan
from .semantic_kitti import SEMANTIC_KITTI_LABELS, semantic_kitti_label_colors
from .text import read_text

__all__ = ["Format", "FORMATS", "READ_FORMATS", "WRITE_EXTENSIONS", "format_of", "read_scan", "write_scan"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Format:
    """One file format: name, extensions (lower case, with the dot), description, reader, writer."""

    name: str
    extensions: Tuple[str, ...]
    description: str
    reader: Optional[Callable[[str, ReadOptions], Scan]] = None
    writer: Optional[Callable[..., None]] = None
    takes_columns: bool = False  # an unnamed table whose columns ``columns=`` may name
    holds_points: bool = True  # False: recognised only to say what to read instead


def _label_file(path: str, options: ReadOptions) -> Scan:
    raise ScanFormatError(path, "a .label file holds labels, not points; read the matching .bin scan "
                                "(its labels come along) or use sparseconv.io.read_label")


_TABLE = (
    Format("ply", (".ply",), "PLY", read_ply, write_ply),
    Format("pcd", (".pcd",), "PCD", read_pcd),
    Format("xyz", (".xyz",), "XYZ text", partial(read_text, fmt="xyz"), takes_columns=True),
    Format("xyzn", (".xyzn",), "XYZ + normals text", partial(read_text, fmt="xyzn"), takes_columns=True),
    Format("xyzrgb", (".xyzrgb",), "XYZ + RGB text", partial(read_text, fmt="xyzrgb"), takes_columns=True),
    Format("pts", (".pts",), "PTS text", partial(read_text, fmt="pts"), takes_columns=True),
    Format("txt", (".txt",), "text columns", partial(read_text, fmt="txt"), takes_columns=True),
    Format("csv", (".csv",), "comma-separated columns", partial(read_text, fmt="csv"), takes_columns=True),
    Format("kitti", (".bin",), "KITTI Velodyne .bin (float32 x y z intensity)", read_kitti, write_kitti, True),
    Format("nuscenes", (".pcd.bin",), "nuScenes .pcd.bin (float32 x y z intensity ring)", read_nuscenes, takes_columns=True),
    Format("label", (".label",), "SemanticKITTI labels", _label_file, holds_points=False),
    Format("npy", (".npy",), "NumPy .npy", read_npy, write_npy, True),
    Format("npz", (".npz",), "NumPy .npz", read_npz, write_npz),
    Format("las", (".las",), "LAS", read_las),
    Format("laz", (".laz",), "LAZ", read_las),
)

#: Format name -> :class:`Format`.
FORMATS: Dict[str, Format] = {f.name: f for f in _TABLE}

#: Extension -> format name, for every format :func:`read_scan` reads.
READ_FORMATS: Dict[str, str] = {ext: f.name for f in _TABLE if f.reader is not None for ext in f.extensions}

#: Extension -> format name, for every format :func:`write_scan` writes.
WRITE_EXTENSIONS: Dict[str, str] = {ext: f.name for f in _TABLE if f.writer is not None for ext in f.extensions}


def _extension(path: str, table: Mapping[str, str]) -> str:
    """The longest known extension ``path`` ends with ("" when none)."""
    name = os.path.basename(path).lower()
    found = [ext for ext in table if name.endswith(ext) and len(name) > len(ext)]
    return max(found, key=len) if found else ""


def format_of(path: PathLike) -> str:
    """The format name for ``path``'s extension; raises :class:`UnsupportedFormatError`."""
    p = os.fspath(path)
    ext = _extension(p, READ_FORMATS)
    if not ext:
        actual = os.path.splitext(p)[1].lower()
        what = f"unknown extension {actual!r}" if actual else "no file extension"
        raise UnsupportedFormatError(p, f"{what}; readable formats: {' '.join(sorted(READ_FORMATS))}")
    return READ_FORMATS[ext]


def _named_format(path: str, format: str) -> str:
    name = format.lower().lstrip(".")
    name = READ_FORMATS.get("." + name, name)
    if name not in FORMATS or FORMATS[name].reader is None:
        raise UnsupportedFormatError(path, f"unknown format {format!r}; known: {', '.join(sorted(FORMATS))}")
    return name


def read_scan(
    path: PathLike,
    *,
    format: Optional[str] = None,
    labels: Union[str, None, bool, PathLike] = "auto",
    columns: Union[str, Sequence[str], None] = None,
    max_bytes: Optional[int] = DEFAULT_MAX_BYTES,
) -> Scan:
    """Read a point-cloud file into a :class:`Scan` (formats: see :mod:`sparseconv.io`).

    Args:
        path: the file.
        format: a name from :data:`FORMATS` (or an extension) instead of the extension's;
            e.g. ``"nuscenes"`` for a 5-float sweep not named ``*.pcd.bin``.
        labels: ``"auto"`` reads a KITTI scan's SemanticKITTI ``.label`` file when it
            exists (``../labels/NAME.label`` or ``NAME.label``); a path attaches that
            file's labels to any scan (a ``.label`` file, or an ``.npy`` of one integer
            per point); ``None``/``False`` reads none (``True``: ``"auto"``).
        columns: names of the columns of a ``.bin``, plain ``.npy`` or text file
            (``"x,y,z,intensity,ring"`` or a list; ``_`` skips a column).
        max_bytes: the most bytes decompressed from the file (``.npz``, LAZ,
            ``binary_compressed`` PCD); ``None``: no cap.

    Raises:
        FileNotFoundError: no such file.
        UnsupportedFormatError: unknown extension or format name.
        ScanFormatError: empty, corrupt or truncated file, a header that declares more
            than the file holds, an ambiguous layout, a size that does not fit.
        InputError: a bad ``columns``, ``format`` or ``max_bytes`` value.
        MissingDependencyError: LAS/LAZ without laspy (or LAZ without a LAZ backend).
    """
    p = os.fspath(path)
    if format is not None and not isinstance(format, str):
        raise InputError(f"format must be a format name such as 'nuscenes', got {format!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral)
                                  or max_bytes <= 0):
        raise InputError(f"max_bytes must be a positive whole number of bytes or None, got {max_bytes!r}")
    if os.path.isdir(p):
        raise ScanFormatError(p, "is a directory, not a scan file")
    name = format_of(p) if format is None else _named_format(p, format)
    if columns is not None and not FORMATS[name].takes_columns:
        takes = ", ".join(sorted(f.name for f in _TABLE if f.takes_columns))
        raise ScanFormatError(p, f"columns= names the columns of unnamed tables ({takes}); {name} files name their own")
    label_arg = None if labels is None or labels is False else "auto" if labels is True else labels
    explicit = format is not None and format.lower().lstrip(".") in FORMATS
    options = ReadOptions(parse_columns(columns), label_arg if label_arg == "auto" else None,
                          None if max_bytes is None else int(max_bytes), explicit)
    check_file(p)
    scan = FORMATS[name].reader(p, options)
    if scan.points.shape[0] == 0:
        raise ScanFormatError(p, "contains no points")
    if label_arg is not None and label_arg != "auto":
        _attach_labels(scan, os.fspath(label_arg))
    for key, value in scan.attributes.items():
        if value.shape[:1] != scan.points.shape[:1]:  # pragma: no cover - readers guarantee it
            raise ScanFormatError(p, f"attribute {key!r} has {value.shape[0]} rows for {len(scan)} points")
    return scan


def _attach_labels(scan: Scan, path: str) -> None:
    """Labels from a separate ``.label`` or ``.npy`` file, one per point of ``scan``."""
    check_file(path, "label")
    if path.lower().endswith(".label"):
        semantic, instance = read_label(path, num_points=len(scan))
        scan.attributes["labels"] = semantic
        if instance.any():
            scan.attributes["instance"] = instance
        scan.label_names = dict(SEMANTIC_KITTI_LABELS)  # the ids of a .label file are SemanticKITTI's
        scan.label_colors = semantic_kitti_label_colors()
        return
    if not path.lower().endswith(".npy"):
        raise UnsupportedFormatError(path, "labels are read from a SemanticKITTI .label file or an .npy array")
    values = load_npy(path)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.dtype.kind not in "biuf":
        raise ScanFormatError(path, f"holds a {values.dtype} array of shape {values.shape}; labels must be one integer per point")
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and np.array_equal(values, np.rint(values))):
        raise ScanFormatError(path, "holds non-integer values; labels must be integers")
    if values.shape[0] != len(scan):
        raise ScanFormatError(path, f"holds {values.shape[0]} labels but {scan.path} has {len(scan)} points")
    scan.attributes["labels"] = values.astype(np.int64)


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

    By extension (:data:`WRITE_EXTENSIONS`): ``.ply`` (binary little-endian, or ascii
    with ``ascii=True``; every attribute as properties, the label table as
    ``comment label ID NAME R G B`` lines); ``.bin`` (KITTI: float32 x, y, z, intensity;
    intensity 0 when absent -- write the labels with :func:`write_label`); ``.npz``
    (``points`` and every attribute, plus ``class_names`` / ``class_colors``); ``.npy``
    (float32 ``[P, 3 + C]``: x, y, z and the numeric attributes in order, so only
    unambiguous for 4 columns: x, y, z, intensity). Returns the path.
    """
    p = os.fspath(path)
    ext = _extension(p, {**READ_FORMATS, **WRITE_EXTENSIONS})  # the longest: x.pcd.bin is not a .bin to write
    if ext not in WRITE_EXTENSIONS:
        actual = ext or os.path.splitext(p)[1].lower()
        raise UnsupportedFormatError(p, f"cannot write {actual or 'files without an extension'!r}; "
                                        f"writable: {' '.join(sorted(WRITE_EXTENSIONS))}")
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
        raise InputError(f"{p}: points must have shape [P, 3], got {points.shape}")
    for key, value in attrs.items():
        if value.shape[:1] != points.shape[:1]:
            raise InputError(f"{p}: attribute {key!r} has {value.shape[0] if value.ndim else 0} rows for {points.shape[0]} points")
    FORMATS[WRITE_EXTENSIONS[ext]].writer(p, points, attrs, label_names=label_names, label_colors=label_colors, ascii=ascii)
    return p
