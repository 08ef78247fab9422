"""Data sources for sparseconv: synthetic, sensor-modelled point clouds for tests and benchmarks, and
datasets over the standard on-disk layouts (SemanticKITTI, folders of PLY scans) with a batching collate.

The synthetic generators need Open3D; they are imported on first use (``from sparseconv.data
import generate_lidar_scan`` works as usual), so reading datasets from disk does not pay
for importing Open3D.
"""
from .datasets import (
    CloudBatch,
    CloudSample,
    PLYFolder,
    PointCloudDataset,
    SemanticKITTI,
    SparseCollate,
    SyntheticScans,
    collate_clouds,
    majority_labels,
)

_SYNTHETIC = (
    "SEMANTIC_CLASSES",
    "CLASS_COLORS",
    "INDOOR_CLASSES",
    "INDOOR_CLASS_COLORS",
    "SceneObject",
    "Scene",
    "LidarSensor",
    "PointCloudScan",
    "LidarScan",
    "make_street_scene",
    "simulate_scan",
    "generate_lidar_scan",
    "make_indoor_scene",
    "generate_indoor_scene",
)

__all__ = [
    *_SYNTHETIC,
    "CloudSample",
    "CloudBatch",
    "PointCloudDataset",
    "SemanticKITTI",
    "PLYFolder",
    "SyntheticScans",
    "collate_clouds",
    "majority_labels",
    "SparseCollate",
]


def __getattr__(name: str):
    if name in _SYNTHETIC:
        from .._optional import require

        require("open3d", "open3d", f"sparseconv.data.{name} (synthetic scans are ray cast with Open3D)")
        from . import synthetic

        value = getattr(synthetic, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
