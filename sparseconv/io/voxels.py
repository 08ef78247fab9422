"""Voxel files: a voxelized scan written by :func:`write_voxels` and read back by
:func:`read_voxels` (an ``.npz``), or written as a ``.ply`` of voxel centres."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..engine.tensor import SparseTensor
from ..engine.voxelize import Voxelization
from .atomic import atomic_write
from .attributes import fits_float32, to_uint8_colors
from .errors import InputError, ScanFormatError, UnsupportedFormatError
from .files import DEFAULT_MAX_BYTES, check_file
from .npformat import load_npz
from .ply import label_comments, ply_bytes

__all__ = ["VoxelFile", "write_voxels", "read_voxels", "voxel_file_from_arrays", "VOXEL_KEYS"]

PathLike = Union[str, "os.PathLike[str]"]

#: The entries that make an ``.npz`` a voxel file.
VOXEL_KEYS = frozenset({"coords", "feats", "voxel_size"})
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
        raise InputError(f"{p}: the tensor needs voxel_size and origin (use sparseconv.voxelize)")
    N, C = len(tensor), tensor.num_channels
    names = tuple(feature_names) if feature_names is not None else tuple(f"f{i}" for i in range(C))
    if len(names) != C:
        raise InputError(f"{p}: {len(names)} feature names for {C} feature columns")
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
        if fits_float32(centres):
            centres = centres.astype(np.float32)
        attrs: Dict[str, np.ndarray] = {}
        cols = list(names)
        if all(c in cols for c in ("red", "green", "blue")):
            idx = [cols.index(c) for c in ("red", "green", "blue")]
            rgb = feats[:, idx]
            attrs["colors"] = to_uint8_colors(rgb if rgb.max(initial=0) > 1 else rgb)
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
        comments += label_comments(label_names, None)
        with atomic_write(p) as f:
            f.write(ply_bytes(centres, attrs, comments))
    else:
        raise UnsupportedFormatError(p, f"cannot write voxels as {ext or 'a file without an extension'!r}; use .npz or .ply")
    return p


def voxel_file_from_arrays(path: str, z: Mapping[str, np.ndarray]) -> VoxelFile:
    for key in ("coords", "feats", "voxel_size", "origin", "point_to_voxel", "num_points"):
        if key in z and np.asarray(z[key]).dtype.kind not in "biuf":
            raise ScanFormatError(path, f"is not a valid voxel file ({key!r} holds {np.asarray(z[key]).dtype}, not real numbers)")
    if np.asarray(z["coords"]).dtype.kind == "f" or np.asarray(z["coords"]).ndim != 2:
        raise ScanFormatError(path, f"is not a valid voxel file ('coords' must be integers [N, 4], got "
                                    f"{np.asarray(z['coords']).dtype} {np.asarray(z['coords']).shape})")
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
        raise ScanFormatError(path, f"num_points has shape {tuple(counts.shape)} for {N} voxels")
    if p2v.numel() and (int(p2v.max()) >= N or int(p2v.min()) < -1):
        raise ScanFormatError(path, f"point_to_voxel refers to rows outside [0, {N})")
    names = tuple(str(n) for n in np.asarray(z.get("feature_names", np.array([f"f{i}" for i in range(feats.shape[1])]))).tolist())
    if len(names) != feats.shape[1]:
        raise ScanFormatError(path, f"{len(names)} feature names for {feats.shape[1]} feature columns")
    label_names = None
    if "label_ids" in z and "label_names" in z:
        label_names = {int(i): str(n) for i, n in zip(np.asarray(z["label_ids"]).tolist(), np.asarray(z["label_names"]).tolist())}
    return VoxelFile(tensor, p2v, counts, names, str(z.get("source", "")), str(z.get("reduce", "")), label_names)


def read_voxels(path: PathLike, *, max_bytes: Optional[int] = DEFAULT_MAX_BYTES) -> VoxelFile:
    """Read an ``.npz`` written by :func:`write_voxels` back into a :class:`VoxelFile`
    (loading bounded as for scans: ``max_bytes`` caps the decompressed size)."""
    p = os.fspath(path)
    check_file(p, "voxel")
    if not p.lower().endswith(".npz"):
        raise UnsupportedFormatError(p, "voxel files are read from .npz (a .ply of voxel centres reads with read_scan)")
    contents = load_npz(p, max_bytes)
    missing = sorted(VOXEL_KEYS - set(contents))
    if missing:
        raise ScanFormatError(p, f"is not a voxel file: missing {', '.join(missing)}")
    return voxel_file_from_arrays(p, contents)
