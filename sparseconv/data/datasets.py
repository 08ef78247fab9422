"""Datasets over the standard on-disk layouts, and a collate function that batches clouds.

* :class:`SemanticKITTI` -- ``ROOT/sequences/XX/velodyne/NNNNNN.bin`` with optional
  ``ROOT/sequences/XX/labels/NNNNNN.label``; raw label ids are mapped to the 19 training
  classes (:data:`~sparseconv.io.SEMANTIC_KITTI_CLASSES`, ignored ids -> ``ignore_index``).
* :class:`PLYFolder` -- a folder (searched recursively) of ``.ply`` scans, ScanNet-like:
  labels from a ``label`` vertex property in the scan itself, or from a sibling
  ``NAME.labels.ply`` file holding a ``label`` property per vertex.
* :class:`SyntheticScans` -- scans made on the fly by :mod:`sparseconv.data.synthetic`
  (street LiDAR or indoor RGB-D), scan ``i`` from seed ``seed + i``.

Each item is a :class:`CloudSample` (points, features, labels, name). :func:`collate_clouds`
(or a :class:`SparseCollate` instance as a ``DataLoader``'s ``collate_fn``) voxelizes a
list of samples into one batched :class:`~sparseconv.SparseTensor` and keeps, for every
point, the row of its voxel in that tensor:

>>> loader = DataLoader(SemanticKITTI(root, "train"), batch_size=4, collate_fn=SparseCollate(0.05))
>>> batch = next(iter(loader))
>>> logits = net(batch.tensor)                      # [N, classes] over all 4 scans
>>> per_point = logits.feats[batch.point_to_voxel]  # [sum P, classes]
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import io as sio
from ..engine.tensor import SparseTensor
from ..engine.voxelize import voxelize

__all__ = [
    "CloudSample",
    "CloudBatch",
    "PointCloudDataset",
    "SemanticKITTI",
    "PLYFolder",
    "SyntheticScans",
    "collate_clouds",
    "majority_labels",
    "SparseCollate",
    "SEMANTIC_KITTI_SPLITS",
]

#: The standard SemanticKITTI sequence splits.
SEMANTIC_KITTI_SPLITS = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "val": ("08",),
    "test": tuple(f"{i:02d}" for i in range(11, 22)),
}


@dataclass(eq=False)
class CloudSample:
    """One point cloud from a dataset.

    Attributes:
        points: float32 ``[P, 3]`` metres.
        feats: float32 ``[P, C]`` input features (named by the dataset's ``feature_names``).
        labels: int64 ``[P]`` class per point (``ignore_index`` where unknown), or ``None``.
        name: where the sample came from (a path, or ``synthetic-lidar-7``).
    """

    points: np.ndarray
    feats: np.ndarray
    labels: Optional[np.ndarray]
    name: str

    def __len__(self) -> int:
        return int(self.points.shape[0])


Transform = Callable[[CloudSample], CloudSample]


class PointCloudDataset(Dataset):
    """Base class: a list of items, each turned into a :class:`CloudSample` by :meth:`load`.

    Args:
        features: names passed to :meth:`sparseconv.io.Scan.feature_columns`
            (``"xyz"``, ``"intensity"``, ``"rgb"``, ``"normals"``, ``"ones"``, or any attribute).
        transform: optional callable applied to every sample (augmentation, cropping ...).
        ignore_index: label of points without a class.
    """

    class_names: Tuple[str, ...] = ()

    def __init__(self, features: Sequence[str], transform: Optional[Transform] = None, ignore_index: int = -1):
        if isinstance(features, str):
            features = (features,)
        self.features = tuple(features)
        self.transform = transform
        self.ignore_index = int(ignore_index)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_names(self) -> Tuple[str, ...]:
        """Column names of ``feats`` (``xyz`` expands to ``x, y, z`` and so on)."""
        expand = {"xyz": ("x", "y", "z"), "rgb": ("red", "green", "blue"), "colors": ("red", "green", "blue"),
                  "normals": ("normals0", "normals1", "normals2"), "ones": ("one",)}
        return tuple(n for f in self.features for n in expand.get(f, (f,)))

    def load(self, index: int) -> CloudSample:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> CloudSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {len(self)} scans")
        sample = self.load(index % len(self))
        return self.transform(sample) if self.transform is not None else sample

    def _sample(self, scan: sio.Scan, labels: Optional[np.ndarray], name: str) -> CloudSample:
        feats = scan.features(self.features)
        return CloudSample(scan.points.astype(np.float32, copy=False), feats, labels, name)


# --------------------------------------------------------------------------------------
# SemanticKITTI
# --------------------------------------------------------------------------------------

def _sequence_names(sequences) -> Optional[Tuple[str, ...]]:
    if sequences is None:
        return None
    if isinstance(sequences, str):
        if sequences in SEMANTIC_KITTI_SPLITS:
            return SEMANTIC_KITTI_SPLITS[sequences]
        sequences = [sequences]
    if isinstance(sequences, int):
        sequences = [sequences]
    out = []
    for s in sequences:
        if isinstance(s, (int, np.integer)) or (isinstance(s, str) and s.isdigit()):
            out.append(f"{int(s):02d}")
        else:
            raise ValueError(f"sequences must be 'train', 'val', 'test', a sequence number or a list of them, got {s!r}")
    return tuple(out)


class SemanticKITTI(PointCloudDataset):
    """SemanticKITTI scans: ``ROOT/sequences/XX/velodyne/*.bin`` (+ ``labels/*.label``).

    Args:
        root: the folder holding ``sequences/`` (or ``sequences/`` itself).
        sequences: ``"train"``, ``"val"``, ``"test"``, a number, a list of numbers, or
            ``None`` for every sequence present.
        features: default ``("xyz", "intensity")``.
        remap: map raw ids to the 19 training classes (default); ``False`` keeps raw ids.
        ignore_index: class of unlabeled / outlier / ignored ids (default -1).

    Raises ``FileNotFoundError`` when ``root`` has no scans for the requested sequences.
    """

    class_names = sio.SEMANTIC_KITTI_CLASSES

    def __init__(self, root: Union[str, "os.PathLike[str]"], sequences=None, *,
                 features: Sequence[str] = ("xyz", "intensity"), remap: bool = True,
                 ignore_index: int = -1, transform: Optional[Transform] = None):
        super().__init__(features, transform, ignore_index)
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: no such directory")
        seq_root = root if os.path.basename(os.path.normpath(root)) == "sequences" else os.path.join(root, "sequences")
        if not os.path.isdir(seq_root):
            raise FileNotFoundError(f"{root}: no 'sequences' folder (expected ROOT/sequences/XX/velodyne/*.bin)")
        wanted = _sequence_names(sequences)
        present = sorted(d for d in os.listdir(seq_root) if os.path.isdir(os.path.join(seq_root, d, "velodyne")))
        chosen = present if wanted is None else [s for s in wanted if s in present]
        self.root = root
        self.sequences = tuple(chosen)
        self.remap = bool(remap)
        if not self.remap:
            self.class_names = ()
        self.scans: List[str] = []
        self.label_files: List[Optional[str]] = []
        for seq in chosen:
            for scan in sorted(glob.glob(os.path.join(seq_root, seq, "velodyne", "*.bin"))):
                stem = os.path.splitext(os.path.basename(scan))[0]
                label = os.path.join(seq_root, seq, "labels", stem + ".label")
                self.scans.append(scan)
                self.label_files.append(label if os.path.isfile(label) else None)
        if not self.scans:
            what = "any sequence" if wanted is None else f"sequences {', '.join(wanted)}"
            raise FileNotFoundError(f"{root}: no scans found for {what} (expected sequences/XX/velodyne/*.bin; present: "
                                    f"{', '.join(present) or 'none'})")
        lut = np.full(1 << 16, self.ignore_index, dtype=np.int64)
        for raw, cls in sio.SEMANTIC_KITTI_LEARNING_MAP.items():
            lut[raw] = self.ignore_index if cls < 0 else cls
        self._lut = lut

    def __len__(self) -> int:
        return len(self.scans)

    def load(self, index: int) -> CloudSample:
        path = self.scans[index]
        scan = sio.read_scan(path, labels=None)
        labels = None
        if self.label_files[index] is not None:
            semantic, _ = sio.read_label(self.label_files[index], num_points=len(scan))
            labels = self._lut[semantic] if self.remap else semantic
        return self._sample(scan, labels, path)


# --------------------------------------------------------------------------------------
# Folder of PLY scans
# --------------------------------------------------------------------------------------

class PLYFolder(PointCloudDataset):
    """Every ``.ply`` under ``root`` (recursively, sorted), ScanNet-like.

    Labels come from the scan's own ``label`` property, else from a sibling
    ``NAME.labels.ply`` (a PLY with one ``label`` per vertex, as ScanNet ships), else
    the sample has none. ``*.labels.ply`` files are not scans themselves.

    Args:
        root: the folder.
        features: default ``("rgb",)``; ``("xyz", "rgb")``, ``("rgb", "normals")`` ...
        class_names: the class table, when labels index one (default: taken from the
            first scan's ``comment label ID NAME`` lines, if any).
        label_map: optional mapping raw id -> class index; unmapped ids -> ``ignore_index``.
    """

    def __init__(self, root: Union[str, "os.PathLike[str]"], *, features: Sequence[str] = ("rgb",),
                 class_names: Optional[Sequence[str]] = None, label_map: Optional[dict] = None,
                 ignore_index: int = -1, transform: Optional[Transform] = None):
        super().__init__(features, transform, ignore_index)
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: no such directory")
        self.root = root
        files = sorted(glob.glob(os.path.join(root, "**", "*.ply"), recursive=True))
        self.scans = [f for f in files if not f.endswith(".labels.ply")]
        if not self.scans:
            raise FileNotFoundError(f"{root}: no .ply scans found")
        self.label_map = dict(label_map) if label_map is not None else None
        if class_names is None:
            names = sio.read_scan(self.scans[0]).label_names if self.scans else None
            if names and sorted(names) == list(range(len(names))):
                class_names = [names[i] for i in range(len(names))]
        self.class_names = tuple(class_names or ())

    def __len__(self) -> int:
        return len(self.scans)

    def load(self, index: int) -> CloudSample:
        path = self.scans[index]
        scan = sio.read_scan(path)
        labels = scan.labels
        sibling = path[: -len(".ply")] + ".labels.ply"
        if labels is None and os.path.isfile(sibling):
            lab_scan = sio.read_scan(sibling)
            if lab_scan.labels is None:
                raise sio.ScanFormatError(sibling, "has no 'label' vertex property")
            if len(lab_scan) != len(scan):
                raise sio.ScanFormatError(sibling, f"holds {len(lab_scan)} labels but {path} has {len(scan)} points")
            labels = lab_scan.labels
        if labels is not None and self.label_map is not None:
            lut = {int(k): int(v) for k, v in self.label_map.items()}
            ids = np.unique(labels)
            mapped = np.array([lut.get(int(i), self.ignore_index) for i in ids], dtype=np.int64)
            labels = mapped[np.searchsorted(ids, labels)]
        return self._sample(scan, labels, path)


# --------------------------------------------------------------------------------------
# Synthetic scans
# --------------------------------------------------------------------------------------

class SyntheticScans(PointCloudDataset):
    """``length`` scans simulated on demand: ``kind="lidar"`` (a 64-beam street scan,
    :func:`~sparseconv.data.generate_lidar_scan`) or ``"indoor"`` (an RGB-D room sweep,
    :func:`~sparseconv.data.generate_indoor_scene`). Scan ``i`` uses seed ``seed + i``, so
    the dataset is deterministic. Extra keyword arguments go to the generator.

    Features: ``"xyz"``, ``"intensity"``, ``"ones"`` (synthetic scans have no colour).
    """

    def __init__(self, length: int = 8, kind: str = "lidar", *, seed: int = 0,
                 features: Sequence[str] = ("xyz", "intensity"), transform: Optional[Transform] = None,
                 **generator_kwargs):
        super().__init__(features, transform, -1)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        if kind not in ("lidar", "indoor"):
            raise ValueError(f"kind must be 'lidar' or 'indoor', got {kind!r}")
        from . import synthetic

        self.length = length
        self.kind = kind
        self.seed = int(seed)
        self.generator_kwargs = generator_kwargs
        self._generate = synthetic.generate_lidar_scan if kind == "lidar" else synthetic.generate_indoor_scene
        self.class_names = synthetic.SEMANTIC_CLASSES if kind == "lidar" else synthetic.INDOOR_CLASSES

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> CloudSample:
        raw = self._generate(self.seed + index, **self.generator_kwargs)
        scan = sio.Scan(raw.points, {"intensity": raw.intensity, "labels": raw.labels}, format="synthetic")
        return self._sample(scan, raw.labels.astype(np.int64), f"synthetic-{self.kind}-{self.seed + index}")


# --------------------------------------------------------------------------------------
# Collate
# --------------------------------------------------------------------------------------

@dataclass(eq=False)
class CloudBatch:
    """A batch of clouds voxelized into one sparse tensor.

    Attributes:
        tensor: ``SparseTensor`` with ``batch_size = len(samples)``; rows sorted by
            (batch, x, y, z), features reduced per voxel.
        point_to_voxel: int64 ``[sum P]``, the row of ``tensor`` holding each point (points
            in sample order, each sample's points in their own order).
        point_batch: int64 ``[sum P]`` sample index of each point.
        point_offsets: int64 ``[B + 1]``; sample ``b``'s points are
            ``point_offsets[b]:point_offsets[b + 1]``.
        points: float32 ``[sum P, 3]``.
        labels: int64 ``[sum P]`` or ``None`` (when no sample has labels; samples without
            labels get ``ignore_index``).
        voxel_labels: int64 ``[N]`` majority label of each voxel's labelled points
            (``ignore_index`` when none), or ``None``.
        num_points: int64 ``[N]`` points per voxel.
        names: each sample's name.
    """

    tensor: SparseTensor
    point_to_voxel: torch.Tensor
    point_batch: torch.Tensor
    point_offsets: torch.Tensor
    points: torch.Tensor
    labels: Optional[torch.Tensor]
    voxel_labels: Optional[torch.Tensor]
    num_points: torch.Tensor
    names: List[str]

    @property
    def batch_size(self) -> int:
        return self.tensor.batch_size

    def to(self, device) -> "CloudBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return CloudBatch(self.tensor.to(device), move(self.point_to_voxel), move(self.point_batch),
                          move(self.point_offsets), move(self.points), move(self.labels), move(self.voxel_labels),
                          move(self.num_points), list(self.names))


def majority_labels(point_to_voxel: torch.Tensor, labels: torch.Tensor, num_voxels: int,
                    ignore_index: int = -1) -> torch.Tensor:
    """The most frequent label among each voxel's points (ties: the smallest id); points
    labelled ``ignore_index`` do not vote, voxels with no vote get ``ignore_index``."""
    out = torch.full((num_voxels,), ignore_index, dtype=torch.int64)
    valid = (labels != ignore_index) & (point_to_voxel >= 0)
    if not bool(valid.any()):
        return out
    v, lab = point_to_voxel[valid], labels[valid]
    ids, lab_idx = torch.unique(lab, return_inverse=True)
    K = ids.numel()
    counts = torch.zeros(num_voxels * K, dtype=torch.int64).index_add_(0, v * K + lab_idx, torch.ones_like(v))
    counts = counts.view(num_voxels, K)
    best = counts.argmax(1)  # first maximum: the smallest id among ties
    has = counts.sum(1) > 0
    out[has] = ids[best[has]]
    return out


def collate_clouds(samples: Sequence[CloudSample], voxel_size: Union[float, Sequence[float]] = 0.05, *,
                   reduce: str = "mean", ignore_index: int = -1, align: int = 1) -> CloudBatch:
    """Voxelize a list of :class:`CloudSample` into one batched :class:`CloudBatch`
    (``reduce`` and ``align`` as in :func:`~sparseconv.engine.voxelize.voxelize`)."""
    if not samples:
        raise ValueError("collate_clouds needs at least one sample")
    channels = {s.feats.shape[1] for s in samples}
    if len(channels) > 1:
        raise ValueError(f"samples have different feature widths {sorted(channels)}; use the same features for all")
    points = [torch.from_numpy(np.ascontiguousarray(s.points, dtype=np.float32)) for s in samples]
    feats = [torch.from_numpy(np.ascontiguousarray(s.feats, dtype=np.float32)) for s in samples]
    vox = voxelize(points, voxel_size, feats=feats, reduce=reduce, align=align)
    counts = torch.tensor([p.shape[0] for p in points], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    point_batch = torch.repeat_interleave(torch.arange(len(samples)), counts)
    labels = voxel_labels = None
    if any(s.labels is not None for s in samples):
        labels = torch.cat([
            torch.from_numpy(np.asarray(s.labels, dtype=np.int64)) if s.labels is not None
            else torch.full((len(s),), ignore_index, dtype=torch.int64)
            for s in samples
        ])
        voxel_labels = majority_labels(vox.point_to_voxel, labels, len(vox.tensor), ignore_index)
    return CloudBatch(vox.tensor, vox.point_to_voxel, point_batch, offsets, torch.cat(points), labels,
                      voxel_labels, vox.num_points, [s.name for s in samples])


class SparseCollate:
    """``collate_fn`` for a ``DataLoader``: ``SparseCollate(voxel_size, reduce="mean")``; see
    :func:`collate_clouds` (``align=16`` for MinkUNet makes a scan's result independent of its
    batch-mates)."""

    def __init__(self, voxel_size: Union[float, Sequence[float]] = 0.05, reduce: str = "mean", ignore_index: int = -1,
                 align: int = 1):
        self.voxel_size = voxel_size
        self.reduce = reduce
        self.align = align
        self.ignore_index = ignore_index

    def __call__(self, samples: Sequence[CloudSample]) -> CloudBatch:
        return collate_clouds(samples, self.voxel_size, reduce=self.reduce, ignore_index=self.ignore_index,
                              align=self.align)

    def __repr__(self) -> str:
        return f"SparseCollate(voxel_size={self.voxel_size}, reduce={self.reduce!r}, align={self.align})"
