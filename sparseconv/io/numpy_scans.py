"""Scans in NumPy files.

* ``.npy``: a ``[P, C>=3]`` array of numbers (columns named by ``columns=`` or the rule
  of :func:`~sparseconv.io.attributes.unnamed_layout`), or a structured array with named
  fields.
* ``.npz``: a ``points`` (or ``xyz`` / ``positions``) ``[P, 3]`` array with per-point
  arrays beside it (``class_names`` / ``class_colors`` give the label table); or a voxel
  file written by :func:`~sparseconv.io.voxels.write_voxels`, read as its voxel centres.

Loading is bounded (:mod:`sparseconv.io.npformat`); complex numbers are an error.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from .atomic import atomic_write
from .attributes import canonical_columns, table_columns
from .errors import ScanFormatError
from .files import ReadOptions
from .npformat import load_npy, load_npz
from .scan import Scan
from .voxels import VOXEL_KEYS, voxel_file_from_arrays

__all__ = ["read_npy", "read_npz", "write_npy", "write_npz"]

_POINT_KEYS = ("points", "xyz", "positions", "pos", "coord")


def read_npy(path: str, options: ReadOptions) -> Scan:
    """A plain or structured ``.npy`` array as a scan."""
    arr = load_npy(path)
    if arr.dtype.names:
        if arr.ndim != 1:
            raise ScanFormatError(path, f"holds a structured array of shape {arr.shape}; expected one record per point")
        columns = {n: arr[n] for n in arr.dtype.names}
        points, attrs = canonical_columns(path, columns, arr.shape[0])
        return Scan(points, attrs, path, "npy")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ScanFormatError(path, f"holds an array of shape {arr.shape}; expected [P, C] with C >= 3 (x, y, z first)")
    if arr.dtype.kind not in "iuf":
        raise ScanFormatError(path, f"holds a {arr.dtype} array; expected real numbers")
    table = arr if arr.dtype.kind == "f" else arr.astype(np.float64)
    cols = table_columns(path, "npy", table, options.columns)
    points, attrs = canonical_columns(path, cols, arr.shape[0])
    return Scan(points, attrs, path, "npy")


def read_npz(path: str, options: ReadOptions) -> Scan:
    """An ``.npz`` of named per-point arrays, or a voxel file's centres."""
    contents = load_npz(path, options.max_bytes)
    if options.columns is not None:
        raise ScanFormatError(path, "an .npz archive names its arrays; columns= applies to .bin, .npy and text files")
    if VOXEL_KEYS <= set(contents):
        return _voxel_centres(path, contents)
    rows = None
    for key in _POINT_KEYS:
        if key in contents:
            block = contents[key]
            if block.ndim != 2 or block.shape[1] < 3:
                raise ScanFormatError(path, f"entry {key!r} has shape {block.shape}; expected [P, 3]")
            rows = block.shape[0]
            break
    if rows is None:
        if {"x", "y", "z"} <= set(contents) and contents["x"].ndim == 1:
            rows = contents["x"].shape[0]
        else:
            raise ScanFormatError(path, f"has no 'points' (or 'xyz') entry; entries: {', '.join(contents) or 'none'}")
    columns = {k: v for k, v in contents.items() if v.ndim >= 1 and v.shape[0] == rows and k not in ("class_names", "class_colors")}
    points, attrs = canonical_columns(path, columns, rows)
    names = contents.get("class_names")
    label_names = label_colors = None
    if names is not None and names.ndim == 1:
        label_names = {i: str(n) for i, n in enumerate(names.tolist())}
        colors = contents.get("class_colors")
        if colors is not None and colors.shape == (len(label_names), 3):
            label_colors = {i: tuple(int(c) for c in colors[i]) for i in range(len(label_names))}
    return Scan(points, attrs, path, "npz", label_names, label_colors)


def _voxel_centres(path: str, contents: Mapping[str, np.ndarray]) -> Scan:
    vf = voxel_file_from_arrays(path, contents)
    centres = vf.tensor.voxel_centers().numpy()
    feats = vf.tensor.feats.detach().numpy()
    cols = {n: feats[:, i] for i, n in enumerate(vf.feature_names) if n not in ("x", "y", "z")}
    cols["points"] = centres
    points, attrs = canonical_columns(path, cols, centres.shape[0])
    attrs["num_points"] = vf.num_points.numpy()
    if vf.tensor.batch_size > 1:
        attrs["batch"] = vf.tensor.coords[:, 0].numpy()
    return Scan(points, attrs, path, "voxels", vf.label_names)


def write_npz(path: str, points: np.ndarray, attributes: Dict[str, np.ndarray], *, label_names=None,
              label_colors=None, **_unused) -> None:
    """``points`` and every attribute, plus ``class_names`` / ``class_colors`` for ids 0..K-1."""
    arrays = {"points": points, **attributes}
    if label_names:
        ids = sorted(label_names)
        if ids == list(range(len(ids))):
            arrays["class_names"] = np.array([label_names[i] for i in ids])
            if label_colors and all(i in label_colors for i in ids):
                arrays["class_colors"] = np.array([label_colors[i] for i in ids], dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)


def write_npy(path: str, points: np.ndarray, attributes: Dict[str, np.ndarray], **_unused) -> None:
    """float32 ``[P, 3 + C]``: x, y, z and the numeric attributes in order."""
    cols = [points.astype(np.float32)]
    for name, value in attributes.items():
        cols.append(value.reshape(points.shape[0], -1).astype(np.float32))
    with atomic_write(path) as f:
        np.save(f, np.concatenate(cols, 1))
