"""Raw LiDAR sweeps: KITTI Velodyne and nuScenes ``.bin`` records, SemanticKITTI ``.label`` files.

* KITTI ``.bin``: float32 ``x, y, z, intensity`` records (16 bytes a point).
* nuScenes ``.pcd.bin``: float32 ``x, y, z, intensity, ring`` records (20 bytes a point).
* ``columns=``: float32 records of those named columns.

A ``.bin`` file says nothing about its layout, so the layout is never guessed: it comes
from ``format=`` (``"kitti"`` / ``"nuscenes"``), ``columns=``, the name (``*.pcd.bin`` is
nuScenes) or the SemanticKITTI layout (a ``velodyne/`` folder, or a ``.label`` file
beside the scan: KITTI). A plain ``.bin`` whose size fits both the 4- and the 5-float
records (a multiple of 80 bytes) with none of these is an error listing both.

SemanticKITTI ``.label``: uint32 per point, semantic id in the low 16 bits, instance id in
the high 16; read with the scan (``../labels/NAME.label`` or ``NAME.label``) or by
:func:`read_label`.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_write
from .attributes import canonical_columns
from .errors import InputError, ScanFormatError, not_found
from .files import ReadOptions, check_file
from .scan import Scan
from .semantic_kitti import SEMANTIC_KITTI_LABELS, semantic_kitti_label_colors

__all__ = ["read_kitti", "read_nuscenes", "read_label", "write_kitti", "write_label", "KITTI_COLUMNS", "NUSCENES_COLUMNS"]

KITTI_COLUMNS = ("x", "y", "z", "intensity")
NUSCENES_COLUMNS = ("x", "y", "z", "intensity", "ring")
_LAYOUT_NAMES = {KITTI_COLUMNS: "a KITTI scan (float32 x, y, z, intensity records)",
                 NUSCENES_COLUMNS: "a nuScenes sweep (float32 x, y, z, intensity, ring records)"}


def read_kitti(path: str, options: ReadOptions) -> Scan:
    """A ``.bin`` of KITTI records (or of ``options.columns``), with its SemanticKITTI labels."""
    label_path = _sidecar_labels(path) if options.labels == "auto" else None
    if options.columns is None and not options.explicit_format:
        _check_kitti_layout(path, os.path.getsize(path), hinted=label_path is not None or _in_velodyne_folder(path))
    scan = _read_records(path, options.columns or KITTI_COLUMNS, "kitti" if options.columns is None else "bin")
    if label_path is not None:
        semantic, instance = read_label(label_path, num_points=len(scan))
        scan.attributes["labels"] = semantic
        if instance.any():
            scan.attributes["instance"] = instance
        scan.label_names = dict(SEMANTIC_KITTI_LABELS)
        scan.label_colors = semantic_kitti_label_colors()
    return scan


def read_nuscenes(path: str, options: ReadOptions) -> Scan:
    """A nuScenes LIDAR_TOP sweep: float32 ``x, y, z, intensity, ring`` records."""
    return _read_records(path, options.columns or NUSCENES_COLUMNS, "nuscenes" if options.columns is None else "bin")


def _read_records(path: str, names: Sequence[str], fmt: str) -> Scan:
    size = os.path.getsize(path)
    width = 4 * len(names)
    if size % width:
        what = _LAYOUT_NAMES.get(tuple(names), f"float32 records of {','.join(names)}")
        raise ScanFormatError(path, f"size {size} bytes is not a multiple of {width}: not {what}, or truncated")
    table = np.fromfile(path, dtype="<f4").reshape(-1, len(names))
    columns = {n: table[:, i] for i, n in enumerate(names)}
    points, attrs = canonical_columns(path, columns, table.shape[0])
    return Scan(points, attrs, path, fmt)


def _in_velodyne_folder(path: str) -> bool:
    return os.path.basename(os.path.dirname(os.path.abspath(path))) == "velodyne"


def _sidecar_labels(path: str) -> Optional[str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(os.path.abspath(path))
    candidates = [os.path.join(folder, stem + ".label")]
    if os.path.basename(folder) == "velodyne":
        candidates.insert(0, os.path.join(os.path.dirname(folder), "labels", stem + ".label"))
    return next((c for c in candidates if os.path.isfile(c)), None)


def _check_kitti_layout(path: str, size: int, hinted: bool) -> None:
    """Refuse a plain ``.bin`` whose layout its size does not settle (see the module docstring)."""
    how = "pass format='kitti' or 'nuscenes' (command line: --input-format), or name the columns"
    if size % 16 and not size % 20:
        raise ScanFormatError(path, f"size {size} bytes is not a multiple of 16: not a KITTI scan (float32 x, y, z, "
                                    f"intensity records); it fits nuScenes records (x, y, z, intensity, ring: "
                                    f"{size // 20} points): name it *.pcd.bin or {how}")
    if not hinted and not size % 80:
        raise ScanFormatError(path, f"the layout of this .bin is ambiguous: {size} bytes fit KITTI records "
                                    f"(x,y,z,intensity: {size // 16} points) and nuScenes records "
                                    f"(x,y,z,intensity,ring: {size // 20} points); {how}")


def read_label(path, num_points: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Read a SemanticKITTI ``.label`` file: ``(semantic, instance)``, int64 ``[P]`` each.

    Raises :class:`ScanFormatError` when the size is not a multiple of 4 bytes, or when
    ``num_points`` is given and the file holds a different number of labels.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise not_found(p)
    size = check_file(p, "label")
    if size % 4:
        raise ScanFormatError(p, f"size {size} bytes is not a multiple of 4: not a SemanticKITTI .label file "
                                 f"(uint32 per point), or truncated")
    if num_points is not None and size // 4 != num_points:
        raise ScanFormatError(p, f"holds {size // 4} labels but the scan has {num_points} points")
    raw = np.fromfile(p, dtype="<u4")
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


def write_kitti(path: str, points: np.ndarray, attributes: Dict[str, np.ndarray], **_unused) -> None:
    """float32 x, y, z, intensity records (intensity 0 when absent; labels go to :func:`write_label`)."""
    rec = np.zeros((points.shape[0], 4), dtype="<f4")
    rec[:, :3] = points
    if "intensity" in attributes:
        rec[:, 3] = attributes["intensity"].reshape(-1)
    with atomic_write(path) as f:
        f.write(rec.tobytes())


def write_label(path, semantic: np.ndarray, instance: Optional[np.ndarray] = None) -> str:
    """Write a SemanticKITTI ``.label`` file (uint32: ``instance << 16 | semantic``) atomically."""
    p = os.fspath(path)
    semantic = np.asarray(semantic).astype(np.int64)
    if semantic.ndim != 1:
        raise InputError(f"{p}: semantic labels must have shape [P], got {semantic.shape}")
    instance = np.zeros_like(semantic) if instance is None else np.asarray(instance).astype(np.int64)
    if instance.shape != semantic.shape:
        raise InputError(f"{p}: instance has shape {instance.shape}, semantic {semantic.shape}")
    if semantic.size and (semantic.min() < 0 or semantic.max() > 0xFFFF or instance.min() < 0 or instance.max() > 0xFFFF):
        raise InputError(f"{p}: semantic and instance ids must lie in [0, 65535]")
    raw = ((instance << 16) | semantic).astype("<u4")
    with atomic_write(p) as f:
        f.write(raw.tobytes())
    return p
