"""Primitive triangle meshes for the procedural scenes, as numpy arrays.

A :data:`Mesh` is ``(vertices float64 [V, 3], triangles int64 [T, 3])`` in metres; the
builders return meshes in a local frame that :func:`place` rotates about ``z`` and moves.
:func:`to_o3d` turns one into an Open3D tensor mesh for ray casting.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np

from .._optional import require

if TYPE_CHECKING:
    import open3d as o3d

__all__ = ["Mesh", "rot_z", "place", "box", "box_minmax", "quad", "rect_z", "cylinder", "ellipsoid", "merge",
           "to_o3d"]

Mesh = Tuple[np.ndarray, np.ndarray]

_BOX_CORNERS = np.array(
    [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
     [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=np.float64)
_BOX_TRIANGLES = np.array(
    [[0, 2, 1], [0, 3, 2],   # bottom (z-)
     [4, 5, 6], [4, 6, 7],   # top (z+)
     [0, 1, 5], [0, 5, 4],   # y-
     [1, 2, 6], [1, 6, 5],   # x+
     [2, 3, 7], [2, 7, 6],   # y+
     [3, 0, 4], [3, 4, 7]],  # x-
    dtype=np.int64)


def rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def place(mesh: Mesh, yaw: float, translation: Sequence[float]) -> Mesh:
    """Rotate a local mesh about z by ``yaw`` then translate it."""
    v, t = mesh
    return v @ rot_z(yaw).T + np.asarray(translation, dtype=np.float64), t


def box(center: Sequence[float], size: Sequence[float], yaw: float = 0.0) -> Mesh:
    """Box of edge lengths ``size`` centred at ``center``, rotated by ``yaw`` about z."""
    v = _BOX_CORNERS * (0.5 * np.asarray(size, dtype=np.float64))
    return place((v, _BOX_TRIANGLES.copy()), yaw, center)


def box_minmax(lo: Sequence[float], hi: Sequence[float]) -> Mesh:
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    return box(0.5 * (lo_a + hi_a), hi_a - lo_a)


def quad(corners: Sequence[Sequence[float]]) -> Mesh:
    """Planar quadrilateral from 4 corners in order (two triangles)."""
    return np.asarray(corners, dtype=np.float64), np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)


def rect_z(x0: float, x1: float, y0: float, y1: float, z: float) -> Mesh:
    """Horizontal rectangle ``[x0, x1] x [y0, y1]`` at height ``z``."""
    return quad([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])


def cylinder(base: Sequence[float], axis: Sequence[float], radius: float, segments: int = 12) -> Mesh:
    """Closed cylinder from ``base`` to ``base + axis`` (axis length = height)."""
    base_a = np.asarray(base, dtype=np.float64)
    axis_a = np.asarray(axis, dtype=np.float64)
    a = axis_a / np.linalg.norm(axis_a)
    helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(a, helper)
    u /= np.linalg.norm(u)
    w = np.cross(a, u)
    phi = np.linspace(0.0, 2.0 * math.pi, segments, endpoint=False)
    ring = radius * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * w)
    verts = np.concatenate([base_a + ring, base_a + axis_a + ring, [base_a, base_a + axis_a]])
    i = np.arange(segments)
    j = (i + 1) % segments
    n = segments
    side = np.concatenate([np.stack([i, j, n + j], 1), np.stack([i, n + j, n + i], 1)])
    bottom = np.stack([np.full(n, 2 * n), j, i], 1)
    top = np.stack([np.full(n, 2 * n + 1), n + i, n + j], 1)
    return verts, np.concatenate([side, bottom, top]).astype(np.int64)


def ellipsoid(center: Sequence[float], radii: Sequence[float], rng: Optional[np.random.Generator] = None,
              bumpiness: float = 0.0, n_lat: int = 9, n_lon: int = 14) -> Mesh:
    """Latitude-longitude ellipsoid; with ``bumpiness`` each vertex radius is scaled by
    ``1 + U(-bumpiness, bumpiness)`` (an irregular tree crown or bush)."""
    theta = np.linspace(0.0, math.pi, n_lat + 1)[1:-1]  # interior latitude rings
    phi = np.linspace(0.0, 2.0 * math.pi, n_lon, endpoint=False)
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    ring = np.stack([st * np.cos(phi), st * np.sin(phi), np.broadcast_to(ct, (theta.size, n_lon))], -1)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], ring.reshape(-1, 3), [[0.0, 0.0, -1.0]]])
    if bumpiness > 0.0 and rng is not None:
        unit = unit * (1.0 + rng.uniform(-bumpiness, bumpiness, size=(unit.shape[0], 1)))
    verts = unit * np.asarray(radii, dtype=np.float64) + np.asarray(center, dtype=np.float64)
    rings = n_lat - 1
    top, bottom = 0, 1 + rings * n_lon
    tris = []
    k = np.arange(n_lon)
    k1 = (k + 1) % n_lon
    tris.append(np.stack([np.full(n_lon, top), 1 + k, 1 + k1], 1))
    for r in range(rings - 1):
        a, b = 1 + r * n_lon, 1 + (r + 1) * n_lon
        tris.append(np.stack([a + k, b + k, b + k1], 1))
        tris.append(np.stack([a + k, b + k1, a + k1], 1))
    last = 1 + (rings - 1) * n_lon
    tris.append(np.stack([np.full(n_lon, bottom), last + k1, last + k], 1))
    return verts, np.concatenate(tris).astype(np.int64)


def merge(parts: Sequence[Mesh]) -> Mesh:
    verts, tris, offset = [], [], 0
    for v, t in parts:
        verts.append(v)
        tris.append(t + offset)
        offset += v.shape[0]
    return np.concatenate(verts), np.concatenate(tris)


def to_o3d(mesh: Mesh) -> "o3d.t.geometry.TriangleMesh":
    o3d = require("open3d", "open3d", "Open3D meshes of the synthetic scenes")

    v, t = mesh
    out = o3d.t.geometry.TriangleMesh()
    out.vertex.positions = o3d.core.Tensor(np.ascontiguousarray(v, dtype=np.float32))
    out.triangle.indices = o3d.core.Tensor(np.ascontiguousarray(t, dtype=np.int32))
    return out
