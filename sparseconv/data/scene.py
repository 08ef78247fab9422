"""Labelled triangle scenes and the point clouds cast from them.

A :class:`Scene` is a tuple of :class:`SceneObject` (an Open3D triangle mesh, a class
label and a reflectivity); :class:`SceneBuilder` collects numpy meshes
(:mod:`sparseconv.data.meshes`) into one. :class:`PointCloudScan` is what a simulated
sensor returns. Units are metres; world frames are right-handed with ``z`` up.

Intensity model (every simulated sensor, :func:`intensity_model`)::

    I = quantise_8bit( clip( rho * |cos(theta)| * exp(-2 * alpha * r) + N(0, sigma_I^2), 0, 1 ) )

with ``rho`` the reflectivity of the hit object (per class, varied per object; e.g.
asphalt ~0.1, lane paint ~0.8, foliage ~0.4), ``theta`` the angle between the ray and the
hit triangle's normal, ``r`` the true range and ``alpha`` an atmospheric extinction
coefficient (1/m; two-way path, hence the factor 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, List, Tuple

import numpy as np

from .._optional import require
from ._checks import check_float
from .meshes import Mesh, to_o3d

if TYPE_CHECKING:
    import open3d as o3d

__all__ = ["SceneObject", "Scene", "SceneBuilder", "PointCloudScan", "intensity_model"]


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One ray-castable part of a scene.

    Attributes:
        mesh: the triangles, an ``open3d.t.geometry.TriangleMesh`` (float32 positions in
            the scene's world frame, metres).
        label: semantic class index into the scene's ``class_names``.
        reflectivity: diffuse reflectivity in ``[0, 1]`` at the sensor wavelength.
        name: a short description (``"car body"``, ``"tree crown"`` ...).
    """

    mesh: "o3d.t.geometry.TriangleMesh"
    label: int
    reflectivity: float
    name: str = ""


@dataclass(frozen=True, eq=False)
class Scene:
    """A labelled triangle scene: a tuple of :class:`SceneObject` plus metadata.

    Iterating yields the objects. ``sensor_origin`` is the world point the scene was laid
    out around: for the street, the ground point below the LiDAR (kept free of
    obstacles); for the room, its floor centre.
    """

    objects: Tuple[SceneObject, ...]
    class_names: Tuple[str, ...]
    class_colors: np.ndarray
    sensor_origin: np.ndarray
    bounds: Tuple[Tuple[float, float, float], Tuple[float, float, float]]

    def __iter__(self) -> Iterator[SceneObject]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def num_triangles(self) -> int:
        return int(sum(o.mesh.triangle.indices.shape[0] for o in self.objects))

    def raycasting_scene(self) -> Tuple["o3d.t.geometry.RaycastingScene", np.ndarray, np.ndarray]:
        """Build the Open3D ray-casting scene.

        Returns ``(rc_scene, label_of_geometry, reflectivity_of_geometry)`` where the two
        arrays are indexed by the geometry id that ``cast_rays`` reports.
        """
        o3d = require("open3d", "open3d", "ray casting a synthetic scene")

        rc = o3d.t.geometry.RaycastingScene()
        ids = [rc.add_triangles(obj.mesh) for obj in self.objects]
        n = (max(ids) + 1) if ids else 0
        labels = np.full(n, -1, dtype=np.int64)
        refl = np.zeros(n, dtype=np.float32)
        for gid, obj in zip(ids, self.objects):
            labels[gid] = obj.label
            refl[gid] = obj.reflectivity
        return rc, labels, refl


class SceneBuilder:
    """Collects parts as (mesh, label, reflectivity, name)."""

    def __init__(self) -> None:
        self.parts: List[Tuple[Mesh, int, float, str]] = []

    def add(self, mesh: Mesh, label: int, reflectivity: float, name: str) -> None:
        self.parts.append((mesh, int(label), float(np.clip(reflectivity, 0.0, 1.0)), name))

    def build(self, class_names, class_colors, sensor_origin, bounds) -> Scene:
        objects = tuple(SceneObject(to_o3d(m), lab, refl, name) for m, lab, refl, name in self.parts)
        return Scene(objects, tuple(class_names), class_colors,
                     np.asarray(sensor_origin, dtype=np.float64), bounds)


@dataclass(frozen=True, eq=False)
class PointCloudScan:
    """A labelled point cloud.

    Attributes:
        points: ``float32 [P, 3]`` metres (frame documented by the producer).
        intensity: ``float32 [P]`` in ``[0, 1]`` (see the module's intensity model).
        labels: ``int64 [P]`` semantic class, index into ``class_names``.
        class_names: the class table.
        class_colors: ``uint8 [len(class_names), 3]`` RGB per class.
    """

    points: np.ndarray
    intensity: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...]
    class_colors: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def features(self) -> np.ndarray:
        """Per-point input features ``float32 [P, 4]``: ``(x, y, z, intensity)``."""
        return np.concatenate([self.points, self.intensity[:, None]], axis=1).astype(np.float32, copy=False)

    def colors(self) -> np.ndarray:
        """Per-point RGB ``uint8 [P, 3]`` from the class palette (for pictures)."""
        return self.class_colors[self.labels]

    def voxel_count(self, voxel_size: float) -> int:
        """Number of distinct occupied cells of a ``voxel_size`` grid (metres)."""
        voxel_size = check_float("voxel_size", voxel_size, minimum=0.0, strict=True)
        if self.num_points == 0:
            return 0
        cells = np.floor(self.points.astype(np.float64) / voxel_size).astype(np.int64)
        return int(np.unique(cells, axis=0).shape[0])


def intensity_model(rng: np.random.Generator, reflectivity: np.ndarray, cos_incidence: np.ndarray,
                    rng_m: np.ndarray, attenuation: float, noise_std: float) -> np.ndarray:
    value = reflectivity * np.abs(cos_incidence) * np.exp(-2.0 * attenuation * rng_m)
    if noise_std > 0:
        value = value + rng.normal(0.0, noise_std, size=value.shape)
    return (np.round(np.clip(value, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)
