"""The description of a scan file that ``sparseconv info`` prints: format, size, points,
extent, attributes, and the voxel count at a few voxel sizes."""
from __future__ import annotations

import os
import time
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ..engine.voxelize import voxelize
from .files import DEFAULT_MAX_BYTES, human_bytes
from .registry import FORMATS, read_scan
from .scan import Scan
from .voxels import read_voxels

__all__ = ["describe_scan", "DEFAULT_VOXEL_SIZES"]

#: Voxel sizes (metres) :func:`describe_scan` counts voxels at by default.
DEFAULT_VOXEL_SIZES = (0.05, 0.1, 0.2, 0.5)

_VOXEL_FILE = "sparseconv voxel file (.npz; points are voxel centres)"


def describe_scan(
    path,
    voxel_sizes: Sequence[float] = DEFAULT_VOXEL_SIZES,
    *,
    format: Optional[str] = None,
    columns: Union[str, Sequence[str], None] = None,
    labels="auto",
    max_bytes: Optional[int] = DEFAULT_MAX_BYTES,
) -> str:
    """Read ``path`` (arguments as for :func:`~sparseconv.io.read_scan`) and describe it, one fact a line."""
    p = os.fspath(path)
    scan = read_scan(p, format=format, columns=columns, labels=labels, max_bytes=max_bytes)
    pts = scan.points
    finite = np.isfinite(pts).all(1)
    lo, hi = scan.bounds()
    fmt = _VOXEL_FILE if scan.format == "voxels" else (FORMATS[scan.format].description if scan.format in FORMATS else scan.format)
    if scan.format == "kitti" and scan.labels is not None:
        fmt += " + SemanticKITTI .label"
    lines = [f"file        {p}", f"format      {fmt}, {human_bytes(os.path.getsize(p))}",
             f"points      {len(scan):,}" + ("" if finite.all() else f"  ({int((~finite).sum()):,} with NaN/inf coordinates)")
             + f"  ({pts.dtype})"]
    if not finite.any():
        lines.append("extent      none (no point has finite coordinates)")
    for axis, name in enumerate("xyz" if finite.any() else ""):
        prefix = "extent     " if axis == 0 else "           "
        lines.append(f"{prefix} {name}  {lo[axis]:10.3f} .. {hi[axis]:10.3f} m   ({hi[axis] - lo[axis]:.3f} m)")
    if scan.attributes:
        for i, (name, value) in enumerate(scan.attributes.items()):
            lines.append(("attributes  " if i == 0 else "            ") + _describe_attribute(name, value, scan))
    else:
        lines.append("attributes  none (x, y, z only)")
    if scan.format == "voxels":
        vf = read_voxels(p, max_bytes=max_bytes)
        t = vf.tensor
        lines.append(f"voxel file  voxel size {','.join(f'{v:g}' for v in t.voxel_size)} m, "
                     f"origin {tuple(round(o, 4) for o in t.origin)}, grid {t.spatial_shape}, "
                     f"features {', '.join(vf.feature_names) or 'none'}, {vf.point_to_voxel.numel():,} points mapped"
                     + (f", from {vf.source}" if vf.source else ""))
    lines += _voxel_table(pts, int(finite.sum()), voxel_sizes)
    return "\n".join(lines)


def _voxel_table(pts: np.ndarray, num_finite: int, voxel_sizes: Sequence[float]) -> List[str]:
    rows = []
    cloud = torch.from_numpy(np.ascontiguousarray(pts))
    for s in voxel_sizes:
        t0 = time.perf_counter()
        try:
            vox = voxelize(cloud, s, drop_invalid=True)
        except ValueError as exc:  # the grid at this size does not fit: a row saying why
            rows.append((f"{s:g} m", "-", "-", str(exc).split(";")[0][:60], ""))
            continue
        n = len(vox.tensor)
        rows.append((f"{s:g} m", f"{n:,}", f"{num_finite / max(n, 1):.2f}",
                     " x ".join(str(v) for v in vox.tensor.spatial_shape), f"{1000 * (time.perf_counter() - t0):.0f} ms"))
    head = ("voxel size", "voxels", "points/voxel", "grid", "time")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    out = []
    for i, r in enumerate([head] + rows):
        cells = "  ".join(f"{c:>{w}}" if j in (1, 2, 4) else f"{c:<{w}}" for j, (c, w) in enumerate(zip(r, widths)))
        out.append(("voxels      " if i == 0 else "            ") + cells.rstrip())
    return out


def _describe_attribute(name: str, value: np.ndarray, scan: Scan) -> str:
    dtype = str(value.dtype)
    shape = f"[{value.shape[1]}]" if value.ndim > 1 else ""
    if name in ("labels", "instance") or (value.ndim == 1 and np.issubdtype(value.dtype, np.integer) and name == "batch"):
        ids, counts = np.unique(value, return_counts=True)
        order = np.argsort(-counts)
        names = scan.label_names if name == "labels" and scan.label_names else {}
        top = ", ".join(f"{names.get(int(ids[i]), int(ids[i]))} {100 * counts[i] / value.shape[0]:.1f}%" for i in order[:8])
        more = f", ... (+{len(ids) - 8})" if len(ids) > 8 else ""
        kind = "classes" if name == "labels" else "ids"
        return f"{name:<10} {dtype:<8} {len(ids)} {kind}: {top}{more}"
    if value.size == 0:
        return f"{name:<10} {dtype}{shape}"
    v = value.astype(np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return f"{name:<10} {dtype}{shape} (no finite values)"
    return f"{name:<10} {dtype + shape:<8} [{finite.min():.4g}, {finite.max():.4g}]  mean {finite.mean():.4g}"
