"""Synthetic point clouds from a simulated sensor: ray casting over procedural scenes.

This module gathers the generators' public names; each lives in a module of one concern:

* :mod:`sparseconv.data.meshes` -- primitive triangle meshes (boxes, cylinders, ellipsoids).
* :mod:`sparseconv.data.scene` -- labelled scenes (:class:`Scene`), the scans cast from
  them (:class:`PointCloudScan`) and the intensity model shared by both sensors.
* :mod:`sparseconv.data.street` -- the procedural street (:func:`make_street_scene`) and
  its classes (:data:`SEMANTIC_CLASSES`, coloured with the SemanticKITTI palette).
* :mod:`sparseconv.data.lidar` -- a spinning multi-beam LiDAR (:class:`LidarSensor`,
  HDL-64-like by default) ray cast into a scene (:func:`simulate_scan`,
  :func:`generate_lidar_scan`).
* :mod:`sparseconv.data.indoor` -- the procedural room and an RGB-D sweep through it
  (:func:`make_indoor_scene`, :func:`generate_indoor_scene`).

Both generators are deterministic for a seed: the layout and the sensor noise draw from
independent streams derived from it (``numpy.random.default_rng([stream, seed])``).
Units are metres and radians (angles named ``*_deg`` are degrees). World frames are
right-handed with ``z`` up; the ground / floor is the plane ``z = 0``. Ray casting needs
Open3D, imported when a scan is cast.
"""
from .indoor import INDOOR_CLASS_COLORS, INDOOR_CLASSES, generate_indoor_scene, make_indoor_scene
from .lidar import LidarScan, LidarSensor, generate_lidar_scan, simulate_scan
from .scene import PointCloudScan, Scene, SceneObject
from .street import CLASS_COLORS, SEMANTIC_CLASSES, make_street_scene

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
