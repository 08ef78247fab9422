"""Data sources for sparseconv: synthetic, sensor-modelled point clouds for tests and benchmarks."""
from .synthetic import (
    CLASS_COLORS,
    INDOOR_CLASS_COLORS,
    INDOOR_CLASSES,
    SEMANTIC_CLASSES,
    LidarScan,
    LidarSensor,
    PointCloudScan,
    Scene,
    SceneObject,
    generate_indoor_scene,
    generate_lidar_scan,
    make_indoor_scene,
    make_street_scene,
    simulate_scan,
)

__all__ = [
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
]
