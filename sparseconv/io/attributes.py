"""Named columns to canonical scan attributes, and the column layouts of files without names.

:func:`canonical_columns` maps whatever a file calls its columns (``x``/``y``/``z``,
``red``/``r``, ``remission``, ``classification`` ...) onto ``points`` plus the canonical
attributes of :class:`~sparseconv.io.scan.Scan`. :func:`unnamed_layout` names the columns
of a table that has none (text, a plain ``.npy``): by a fixed rule per column count, never
by looking at the values, and an error listing the candidates where a count has several.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError, ScanFormatError

__all__ = ["canonical_columns", "to_uint8_colors", "unnamed_layout", "parse_columns", "table_columns", "fits_float32",
           "LAYOUT_RULES"]

_INTENSITY_NAMES = ("intensity", "intensities", "scalar_intensity", "reflectance", "remission", "i", "scalar_reflectance")
_LABEL_NAMES = ("labels", "label", "class", "classification", "semantic", "semantic_label", "scalar_label",
                "scalar_classification", "sem_label", "category")
_INSTANCE_NAMES = ("instance", "instance_id", "instance_label", "scalar_instance", "objectid")
_COLOR_TRIPLES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_NORMAL_TRIPLES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
_XYZ_TRIPLES = (("x", "y", "z"),)


def to_uint8_colors(rgb: np.ndarray) -> np.ndarray:
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


def _as_labels(values: np.ndarray) -> Optional[np.ndarray]:
    if np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_:
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if finite.all() and np.array_equal(values, np.rint(values)):
            return values.astype(np.int64)
    return None  # not integral: kept under its own name


def canonical_columns(path: str, columns: Mapping[str, np.ndarray], rows: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Named 1-D columns (and [P, k] blocks) -> (points [P, 3], canonical attributes)."""
    for key, value in columns.items():
        if np.asarray(value).dtype.kind == "c":
            raise ScanFormatError(path, f"{key!r} holds complex numbers ({np.asarray(value).dtype}); expected real values")
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
        attrs["colors"] = to_uint8_colors(rgb)
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
                    as_int = _as_labels(values)
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


def fits_float32(points: np.ndarray) -> bool:
    """Text coordinates become float32 unless that would lose more than a millimetre."""
    finite = points[np.isfinite(points)]
    return finite.size == 0 or float(np.abs(finite).max()) < 1.6e4


# --------------------------------------------------------------------------------------
# Layouts of unnamed columns
# --------------------------------------------------------------------------------------

_RGB = ["x", "y", "z", "red", "green", "blue"]
_NORMALS = ["x", "y", "z", "nx", "ny", "nz"]

#: Column names of an unnamed table by column count (text files, plain ``.npy``). Six
#: columns have two common layouts and no fixed rule: they need ``columns=`` (or an
#: ``.xyzrgb`` / ``.xyzn`` extension). Other counts keep the extra columns as ``c3, c4, ...``.
LAYOUT_RULES: Dict[int, List[str]] = {
    3: ["x", "y", "z"],
    4: ["x", "y", "z", "intensity"],
    7: ["x", "y", "z", "intensity", "red", "green", "blue"],  # the Leica PTS layout
}


def parse_columns(text_or_names, path: Optional[str] = None) -> Optional[List[str]]:
    """``"x,y,z,intensity"`` or a sequence of names -> a list (``None`` stays ``None``).

    ``_`` (or an empty name) skips a column; ``x``, ``y`` and ``z`` must be among them.
    Raises :class:`InputError` (:class:`ScanFormatError` naming ``path`` when the names
    come from that file's header line).
    """
    if text_or_names is None:
        return None
    names = text_or_names.split(",") if isinstance(text_or_names, str) else list(text_or_names)
    names = [str(n).strip() for n in names]
    named = [n for n in names if n not in ("", "_")]
    dup = sorted(n for n, k in Counter(named).items() if k > 1)
    problem = ("must name x, y and z" if not {"x", "y", "z"} <= set(named)
               else f"name {', '.join(dup)} more than once" if dup else None)
    if problem is not None:
        what = f"columns {','.join(names)!r} {problem}"
        raise InputError(what) if path is None else ScanFormatError(path, f"header line: {what}")
    return [n if n not in ("", "_") else f"_{i}" for i, n in enumerate(names)]


def unnamed_layout(path: str, fmt: str, ncol: int, columns: Optional[Sequence[str]] = None) -> List[str]:
    """Names for the ``ncol`` columns of an unnamed table in a ``fmt`` file.

    ``columns`` (from :func:`parse_columns`) wins and must match ``ncol``. Without it the
    extension decides for ``.xyzn`` / ``.xyzrgb`` / ``.pts`` (whose format has no normals),
    then :data:`LAYOUT_RULES`; six columns otherwise raise :class:`ScanFormatError` listing
    the candidate layouts.
    """
    if columns is not None:
        if len(columns) != ncol:
            raise ScanFormatError(path, f"columns= names {len(columns)} columns but the file has {ncol}")
        return list(columns)
    if ncol < 3:
        raise ScanFormatError(path, f"needs at least 3 columns (x y z), found {ncol}")
    if fmt == "xyzn" and ncol >= 6:
        base = _NORMALS
    elif fmt in ("xyzrgb", "pts") and ncol == 6:
        base = _RGB
    elif ncol == 6:
        raise ScanFormatError(
            path, f"6 unnamed columns are ambiguous: {','.join(_RGB)} or {','.join(_NORMALS)}; "
                  f"name them with columns= (command line: --columns), e.g. --columns {','.join(_RGB)}")
    else:
        base = LAYOUT_RULES.get(ncol, ["x", "y", "z"])
    return base[:ncol] + [f"c{i}" for i in range(len(base), ncol)]


def table_columns(path: str, fmt: str, table: np.ndarray, columns: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """A 2-D table -> named columns (see :func:`unnamed_layout`); whole-number 0..255 colours become uint8."""
    if table.ndim != 2:
        raise ScanFormatError(path, f"needs at least 3 columns (x y z), found {table.shape[1] if table.ndim == 2 else 1}")
    names = unnamed_layout(path, fmt, table.shape[1], columns)
    cols = {n: table[:, i] for i, n in enumerate(names)}
    if all(c in cols for c in ("red", "green", "blue")):
        rgb = np.stack([cols.pop("red"), cols.pop("green"), cols.pop("blue")], 1)
        if rgb.size and rgb.min() >= 0 and np.array_equal(rgb, np.rint(rgb)) and rgb.max() <= 255 and rgb.max() > 1:
            rgb = rgb.astype(np.uint8)
        cols["colors"] = rgb
    return cols
