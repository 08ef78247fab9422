"""One scan file to one voxel file: what ``sparseconv voxelize`` does per input, as a library function.

:func:`voxelize_file` reads a scan (:func:`sparseconv.io.read_scan`), stacks the chosen
per-point features, voxelizes (:func:`sparseconv.voxelize`), adds a per-voxel majority
``labels`` column when the scan has labels, and writes the result atomically
(:func:`sparseconv.io.write_voxels`). It never writes onto its input, and never over an
existing file unless ``overwrite=True``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from .. import io as sio
from ..io.files import same_file
from ..engine.voxelize import voxelize
from .datasets import majority_labels

__all__ = ["voxelize_file", "VoxelizeFileResult", "default_features"]


@dataclass(frozen=True)
class VoxelizeFileResult:
    """What :func:`voxelize_file` did (times in seconds)."""

    source: str
    output: str
    num_points: int
    num_voxels: int
    feature_names: tuple
    read_seconds: float
    voxelize_seconds: float


def default_features(scan: sio.Scan) -> List[str]:
    """The features a scan has among intensity, RGB and normals, in that order."""
    names = []
    if scan.intensity is not None:
        names.append("intensity")
    if scan.colors is not None:
        names.append("rgb")
    if scan.normals is not None:
        names.append("normals")
    return names


def voxelize_file(
    path,
    output,
    voxel_size,
    *,
    reduce: str = "mean",
    features: Optional[Sequence[str]] = None,
    format: Optional[str] = None,
    columns: Union[str, Sequence[str], None] = None,
    labels="auto",
    max_bytes: Optional[int] = sio.DEFAULT_MAX_BYTES,
    overwrite: bool = False,
) -> VoxelizeFileResult:
    """Voxelize the scan at ``path`` into the voxel file ``output`` (``.npz`` or ``.ply``).

    Args:
        voxel_size: voxel edge in metres, one number or three.
        reduce: how a voxel's points combine (``mean``, ``max``, ``sum``, ``first``, ``count``).
        features: names for :meth:`~sparseconv.io.Scan.feature_columns` (default:
            :func:`default_features`; a constant ``ones`` column when the scan has none).
        format, columns, labels, max_bytes: as for :func:`~sparseconv.io.read_scan`.
        overwrite: replace an existing ``output`` (never allowed when it is the input).

    Raises:
        sparseconv.io.InputError: ``output`` is the input, or exists without
            ``overwrite``; a feature the scan lacks; a voxel size the points do not fit;
            and every error of :func:`~sparseconv.io.read_scan`.
    """
    src, out = os.fspath(path), os.fspath(output)
    if same_file(src, out):
        raise sio.InputError(f"{out}: is the input file; the output must not overwrite an input")
    if os.path.exists(out) and not overwrite:
        raise sio.InputError(f"{out}: exists; pass overwrite=True (command line: --force) to replace it")
    t0 = time.perf_counter()
    scan = sio.read_scan(src, format=format, columns=columns, labels=labels, max_bytes=max_bytes)
    t_read = time.perf_counter() - t0
    names = [n.strip() for n in (features if features is not None else default_features(scan)) if n.strip()]
    try:
        feats, cols = scan.feature_columns(names)
    except KeyError as exc:
        raise sio.InputError(exc.args[0]) from None
    if not cols:
        feats, cols = np.ones((len(scan), 1), np.float32), ["one"]
    t1 = time.perf_counter()
    try:
        vox = voxelize(torch.from_numpy(np.ascontiguousarray(scan.points)), voxel_size,
                       feats=torch.from_numpy(feats), reduce=reduce, drop_invalid=True)
    except ValueError as exc:  # voxelize's checks of the points against the voxel size and grid limits
        raise sio.InputError(f"{src}: {exc}") from None
    tensor = vox.tensor
    if reduce == "count":
        cols = ["count"]
    label_names = None
    if scan.labels is not None:
        lab = majority_labels(vox.point_to_voxel, torch.from_numpy(scan.labels), len(tensor), ignore_index=-1)
        tensor = tensor.replace(torch.cat([tensor.feats, lab.to(tensor.dtype)[:, None]], 1))
        cols = cols + ["labels"]
        label_names = scan.label_names
    t_vox = time.perf_counter() - t1
    sio.write_voxels(out, tensor, vox.point_to_voxel, num_points=vox.num_points, feature_names=cols,
                     source=os.path.abspath(src), reduce=reduce, label_names=label_names)
    return VoxelizeFileResult(src, out, len(scan), len(tensor), tuple(cols), t_read, t_vox)
