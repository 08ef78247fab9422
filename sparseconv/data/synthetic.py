"""Synthetic point clouds from a simulated sensor: ray casting over procedural scenes.

Two generators, both deterministic for a seed:

* **Outdoor LiDAR** -- :func:`make_street_scene` builds a procedural street (road with
  lane markings, raised sidewalks, buildings, parked and moving cars, street lights and
  sign poles, trees and bushes, a terrain plane) as triangle meshes, and
  :func:`simulate_scan` casts one ray per laser firing of a spinning multi-beam scanner
  (:class:`LidarSensor`, HDL-64-like by default) into it with Open3D's
  :class:`open3d.t.geometry.RaycastingScene`, in a single vectorised ``cast_rays`` call.
  :func:`generate_lidar_scan` does both.
* **Indoor RGB-D sweep** -- :func:`make_indoor_scene` builds a closed room (floor, walls,
  ceiling, tables, chairs, cabinets, boxes) and :func:`generate_indoor_scene` ray-casts it
  from a ring of pinhole depth cameras, fusing the views into one dense cloud.

Units are metres and radians (angles named ``*_deg`` are degrees). World frames are
right-handed with ``z`` up; the ground / floor is the plane ``z = 0``.

What the LiDAR model includes: per-beam elevation angles (a uniform table between
``fov_up_deg`` and ``fov_down_deg`` unless an explicit table is given), equally spaced
azimuths per revolution, first-return ranging with occlusion, a min/max range gate,
Gaussian range noise along the ray, random per-return dropout, and an intensity model
(below). What it leaves out: motion distortion during the sweep, multiple returns,
beam divergence / mixed pixels, per-laser calibration offsets, the ego vehicle body.

Intensity model (both sensors)::

    I = quantise_8bit( clip( rho * |cos(theta)| * exp(-2 * alpha * r) + N(0, sigma_I^2), 0, 1 ) )

with ``rho`` the reflectivity of the hit object (per class, varied per object; e.g.
asphalt ~0.1, lane paint ~0.8, foliage ~0.4), ``theta`` the angle between the ray and the
hit triangle's normal, ``r`` the true range and ``alpha`` an atmospheric extinction
coefficient (1/m; two-way path, hence the factor 2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import open3d as o3d

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

# --------------------------------------------------------------------------------------
# Class tables
# --------------------------------------------------------------------------------------

#: Outdoor semantic classes; the label of a point is the index into this tuple.
SEMANTIC_CLASSES: Tuple[str, ...] = (
    "road",        # 0 asphalt road surface incl. lane markings
    "sidewalk",    # 1 raised kerb-side walkways
    "building",    # 2
    "car",         # 3 body, cabin, wheels
    "pole",        # 4 street lights and sign posts (incl. the sign plate / lamp head)
    "vegetation",  # 5 trees (trunk + crown) and bushes
    "terrain",     # 6 the ground plane outside road and sidewalks (grass, soil)
)

#: RGB colour per outdoor class, ``uint8 [len(SEMANTIC_CLASSES), 3]`` (read-only).
CLASS_COLORS: np.ndarray = np.array(
    [
        [128, 64, 128],   # road
        [244, 35, 232],   # sidewalk
        [70, 70, 70],     # building
        [0, 0, 142],      # car
        [153, 153, 153],  # pole
        [107, 142, 35],   # vegetation
        [152, 251, 152],  # terrain
    ],
    dtype=np.uint8,
)
CLASS_COLORS.flags.writeable = False

#: Indoor semantic classes for :func:`generate_indoor_scene`.
INDOOR_CLASSES: Tuple[str, ...] = ("floor", "wall", "ceiling", "table", "chair", "cabinet", "box")

#: RGB colour per indoor class, ``uint8 [len(INDOOR_CLASSES), 3]`` (read-only).
INDOOR_CLASS_COLORS: np.ndarray = np.array(
    [
        [152, 223, 138],  # floor
        [174, 199, 232],  # wall
        [200, 200, 200],  # ceiling
        [255, 152, 150],  # table
        [188, 189, 34],   # chair
        [31, 119, 180],   # cabinet
        [255, 127, 14],   # box
    ],
    dtype=np.uint8,
)
INDOOR_CLASS_COLORS.flags.writeable = False

_ROAD, _SIDEWALK, _BUILDING, _CAR, _POLE, _VEGETATION, _TERRAIN = range(7)
_FLOOR, _WALL, _CEILING, _TABLE, _CHAIR, _CABINET, _BOX = range(7)

# Random streams derived from the user seed, so scene layout and sensor noise are
# independent even when both are driven by the same integer.
_STREAM_STREET, _STREAM_LIDAR, _STREAM_INDOOR, _STREAM_RGBD = 101, 202, 303, 404


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------

def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value, *, minimum: float = -math.inf, strict: bool = False,
                 maximum: float = math.inf, strict_max: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    low_bad = v <= minimum if strict else v < minimum
    high_bad = v >= maximum if strict_max else v > maximum
    if low_bad or high_bad:
        lo = "(" if strict else "["
        hi = ")" if strict_max else "]"
        raise ValueError(f"{name} must be in {lo}{minimum}, {maximum}{hi}, got {value!r}")
    return v


def _check_seed(seed) -> int:
    return _check_int("seed", seed, 0)


# --------------------------------------------------------------------------------------
# Mesh primitives (numpy vertices [V, 3] float64, triangles [T, 3] int64)
# --------------------------------------------------------------------------------------

_Mesh = Tuple[np.ndarray, np.ndarray]

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


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _place(mesh: _Mesh, yaw: float, translation: Sequence[float]) -> _Mesh:
    """Rotate a local mesh about z by ``yaw`` then translate it."""
    v, t = mesh
    return v @ _rot_z(yaw).T + np.asarray(translation, dtype=np.float64), t


def _box(center: Sequence[float], size: Sequence[float], yaw: float = 0.0) -> _Mesh:
    """Box of edge lengths ``size`` centred at ``center``, rotated by ``yaw`` about z."""
    v = _BOX_CORNERS * (0.5 * np.asarray(size, dtype=np.float64))
    return _place((v, _BOX_TRIANGLES.copy()), yaw, center)


def _box_minmax(lo: Sequence[float], hi: Sequence[float]) -> _Mesh:
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    return _box(0.5 * (lo_a + hi_a), hi_a - lo_a)


def _quad(corners: Sequence[Sequence[float]]) -> _Mesh:
    """Planar quadrilateral from 4 corners in order (two triangles)."""
    return np.asarray(corners, dtype=np.float64), np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)


def _rect_z(x0: float, x1: float, y0: float, y1: float, z: float) -> _Mesh:
    """Horizontal rectangle ``[x0, x1] x [y0, y1]`` at height ``z``."""
    return _quad([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])


def _cylinder(base: Sequence[float], axis: Sequence[float], radius: float, segments: int = 12) -> _Mesh:
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


def _ellipsoid(center: Sequence[float], radii: Sequence[float], rng: Optional[np.random.Generator] = None,
               bumpiness: float = 0.0, n_lat: int = 9, n_lon: int = 14) -> _Mesh:
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


def _merge(parts: Sequence[_Mesh]) -> _Mesh:
    verts, tris, offset = [], [], 0
    for v, t in parts:
        verts.append(v)
        tris.append(t + offset)
        offset += v.shape[0]
    return np.concatenate(verts), np.concatenate(tris)


def _to_o3d(mesh: _Mesh) -> "o3d.t.geometry.TriangleMesh":
    v, t = mesh
    out = o3d.t.geometry.TriangleMesh()
    out.vertex.positions = o3d.core.Tensor(np.ascontiguousarray(v, dtype=np.float32))
    out.triangle.indices = o3d.core.Tensor(np.ascontiguousarray(t, dtype=np.int32))
    return out


# --------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------

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
        rc = o3d.t.geometry.RaycastingScene()
        ids = [rc.add_triangles(obj.mesh) for obj in self.objects]
        n = (max(ids) + 1) if ids else 0
        labels = np.full(n, -1, dtype=np.int64)
        refl = np.zeros(n, dtype=np.float32)
        for gid, obj in zip(ids, self.objects):
            labels[gid] = obj.label
            refl[gid] = obj.reflectivity
        return rc, labels, refl


class _Builder:
    """Collects parts as (mesh, label, reflectivity, name)."""

    def __init__(self) -> None:
        self.parts: List[Tuple[_Mesh, int, float, str]] = []

    def add(self, mesh: _Mesh, label: int, reflectivity: float, name: str) -> None:
        self.parts.append((mesh, int(label), float(np.clip(reflectivity, 0.0, 1.0)), name))

    def build(self, class_names, class_colors, sensor_origin, bounds) -> Scene:
        objects = tuple(SceneObject(_to_o3d(m), lab, refl, name) for m, lab, refl, name in self.parts)
        return Scene(objects, tuple(class_names), class_colors,
                     np.asarray(sensor_origin, dtype=np.float64), bounds)


def _add_car(b: _Builder, rng: np.random.Generator, x: float, y: float, yaw: float) -> None:
    length = rng.uniform(3.8, 4.9)
    width = rng.uniform(1.65, 1.95)
    clearance = rng.uniform(0.22, 0.32)
    body_h = rng.uniform(0.6, 0.85)
    cabin_l = length * rng.uniform(0.45, 0.6)
    cabin_h = rng.uniform(0.45, 0.65)
    cabin_x = -length * rng.uniform(0.02, 0.12)
    paint = rng.uniform(0.1, 0.8)  # dark to white paint
    body = _box([0.0, 0.0, clearance + body_h / 2], [length, width, body_h])
    cabin = _box([cabin_x, 0.0, clearance + body_h + cabin_h / 2], [cabin_l, width * 0.88, cabin_h])
    b.add(_place(body, yaw, [x, y, 0.0]), _CAR, paint, "car body")
    b.add(_place(cabin, yaw, [x, y, 0.0]), _CAR, rng.uniform(0.05, 0.12), "car cabin (glass)")
    r = rng.uniform(0.29, 0.34)
    wheel_w = 0.2
    wheels = []
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            cx = sx * (length / 2 - 0.8)
            cy = sy * (width / 2 - wheel_w / 2 + 0.02)
            wheels.append(_cylinder([cx, cy - wheel_w / 2, r], [0.0, wheel_w, 0.0], r, segments=12))
    b.add(_place(_merge(wheels), yaw, [x, y, 0.0]), _CAR, 0.04, "car wheels")


def _add_tree(b: _Builder, rng: np.random.Generator, x: float, y: float, z0: float) -> None:
    trunk_h = rng.uniform(1.8, 3.5)
    trunk_r = rng.uniform(0.12, 0.25)
    b.add(_cylinder([x, y, z0], [0.0, 0.0, trunk_h], trunk_r, segments=10), _VEGETATION,
          rng.uniform(0.15, 0.3), "tree trunk")
    rxy = rng.uniform(1.4, 3.0)
    rz = rng.uniform(1.3, 2.8)
    crown = _ellipsoid([x, y, z0 + trunk_h + 0.7 * rz], [rxy * rng.uniform(0.85, 1.15), rxy, rz],
                       rng, bumpiness=0.18)
    b.add(crown, _VEGETATION, rng.uniform(0.3, 0.5), "tree crown")


def _add_bush(b: _Builder, rng: np.random.Generator, x: float, y: float, z0: float) -> None:
    r = rng.uniform(0.4, 1.2)
    h = rng.uniform(0.4, 1.0)
    b.add(_ellipsoid([x, y, z0 + 0.6 * h], [r, r * rng.uniform(0.7, 1.3), h], rng, bumpiness=0.2, n_lat=6, n_lon=10),
          _VEGETATION, rng.uniform(0.3, 0.5), "bush")


def _add_street_light(b: _Builder, rng: np.random.Generator, x: float, y: float, z0: float, towards_road: float) -> None:
    h = rng.uniform(6.0, 9.0)
    r = rng.uniform(0.08, 0.14)
    refl = rng.uniform(0.3, 0.55)
    arm = rng.uniform(1.0, 2.5)
    parts = [
        _cylinder([x, y, z0], [0.0, 0.0, h], r, segments=10),
        _cylinder([x, y, z0 + h - 0.1], [0.0, towards_road * arm, 0.0], 0.05, segments=6),
        _box([x, y + towards_road * arm, z0 + h - 0.2], [0.5, 0.3, 0.15]),
    ]
    b.add(_merge(parts), _POLE, refl, "street light")


def _add_sign(b: _Builder, rng: np.random.Generator, x: float, y: float, z0: float) -> None:
    h = rng.uniform(2.2, 3.2)
    post = _cylinder([x, y, z0], [0.0, 0.0, h], rng.uniform(0.035, 0.05), segments=8)
    b.add(post, _POLE, rng.uniform(0.3, 0.5), "sign post")
    size = rng.uniform(0.5, 0.8)
    plate = _box([x + 0.06, y, z0 + h - size / 2], [0.03, size, size])
    b.add(plate, _POLE, rng.uniform(0.85, 1.0), "sign plate (retro-reflective)")


def make_street_scene(seed: int = 0, *, length: float = 240.0) -> Scene:
    """Procedural street scene (world frame: road along +x, ground at z = 0, metres).

    Layout, all drawn from ``numpy.random.default_rng`` on ``seed``:

    * ``road`` (label 0): a flat two-lane asphalt strip along x with a parking lane on each
      side, the ego lane centred on y = 0; dashed centre line (reflectivity ~0.8).
    * ``sidewalk`` (1): 0.15 m high kerbed boxes, 2.5-4 m wide, both sides.
    * ``building`` (2): a row of boxes per side (8-25 m frontage, 8-16 m deep, 5-25 m
      tall) behind a random 0-4 m setback, with occasional gaps.
    * ``car`` (3): parked cars in both parking lanes and a few moving cars (same lane
      more than 10 m from the ego vehicle, opposite lane); box body + glass cabin + wheels.
    * ``pole`` (4): street lights (pole, arm, lamp head) and sign posts with plates.
    * ``vegetation`` (5): trees (cylinder trunk + bumpy ellipsoid crown) on sidewalks
      and in gaps, bushes in front yards.
    * ``terrain`` (6): a 300 m x 300 m ground plane 2 cm below the road.

    The area within ~8 m of the origin in the ego lane is kept free (the ego vehicle
    stands at the origin). Args: ``seed`` (int >= 0), ``length`` (street length in
    metres, centred on the origin; > 20).
    """
    seed = _check_seed(seed)
    length = _check_float("length", length, minimum=20.0, strict=True)
    rng = np.random.default_rng([_STREAM_STREET, seed])
    b = _Builder()
    x0, x1 = -length / 2, length / 2

    lane = rng.uniform(3.1, 3.6)
    parking = rng.uniform(2.1, 2.5)
    y_center_line = lane / 2
    y_right = -lane / 2 - parking              # right kerb
    y_left = lane / 2 + lane + parking         # left kerb
    b.add(_rect_z(x0, x1, y_right, y_left, 0.0), _ROAD, rng.uniform(0.08, 0.14), "asphalt")
    dash, gap = 3.0, 6.0
    xs = np.arange(x0 + rng.uniform(0, dash + gap), x1 - dash, dash + gap)
    marks = [_rect_z(x, x + dash, y_center_line - 0.075, y_center_line + 0.075, 0.004) for x in xs]
    marks.append(_rect_z(x0, x1, -lane / 2 - 0.15, -lane / 2, 0.004))          # solid edge lines
    marks.append(_rect_z(x0, x1, lane * 1.5, lane * 1.5 + 0.15, 0.004))
    b.add(_merge(marks), _ROAD, rng.uniform(0.7, 0.85), "lane markings")

    half = 150.0
    b.add(_rect_z(-half, half, -half, half, -0.02), _TERRAIN, rng.uniform(0.2, 0.35), "terrain")

    # Each side: (kerb y, outward direction)
    for kerb, out in ((y_right, -1.0), (y_left, 1.0)):
        sw = rng.uniform(2.5, 4.0)
        sw_outer = kerb + out * sw
        b.add(_box_minmax([x0, min(kerb, sw_outer), 0.0], [x1, max(kerb, sw_outer), 0.15]), _SIDEWALK,
              rng.uniform(0.2, 0.3), "sidewalk")

        # Street furniture along the kerb (trees, lights, signs), one slot every 6-14 m.
        x = x0 + rng.uniform(0.0, 8.0)
        while x < x1 - 2.0:
            y_furn = kerb + out * rng.uniform(0.5, 1.0)
            u = rng.uniform()
            if u < 0.35:
                _add_tree(b, rng, x, kerb + out * rng.uniform(0.9, min(1.6, sw - 0.4)), 0.15)
            elif u < 0.5:
                _add_street_light(b, rng, x, y_furn, 0.15, -out)
            elif u < 0.6:
                _add_sign(b, rng, x, y_furn, 0.15)
            x += rng.uniform(6.0, 14.0)

        # Buildings with setbacks and gaps; front yards get bushes, gaps get trees.
        x = x0 - rng.uniform(0.0, 10.0)
        while x < x1:
            width = rng.uniform(8.0, 25.0)
            setback = rng.uniform(0.0, 4.0)
            depth = rng.uniform(8.0, 16.0)
            height = rng.uniform(5.0, 25.0)
            front = sw_outer + out * setback
            back = front + out * depth
            xa, xb = max(x, x0), min(x + width, x1)
            if xb - xa > 1.0:
                b.add(_box_minmax([xa, min(front, back), 0.0], [xb, max(front, back), height]), _BUILDING,
                      rng.uniform(0.25, 0.5), "building")
                if setback > 1.5 and rng.uniform() < 0.5:
                    for _ in range(int(rng.integers(1, 4))):
                        _add_bush(b, rng, rng.uniform(xa, xb), sw_outer + out * rng.uniform(0.6, setback - 0.6), 0.0)
            x += width
            g = rng.uniform(0.0, 8.0) if rng.uniform() < 0.6 else 0.0
            if g > 4.0 and rng.uniform() < 0.7:
                _add_tree(b, rng, x + g / 2, sw_outer + out * rng.uniform(2.0, 6.0), 0.0)
            x += g

        # Parked cars in the parking lane on this side.
        y_park = kerb - out * parking / 2
        x = x0 + rng.uniform(0.0, 6.0)
        while x < x1 - 5.0:
            if rng.uniform() < 0.55:
                _add_car(b, rng, x + 2.5, y_park + rng.uniform(-0.15, 0.15),
                         (0.0 if rng.uniform() < 0.5 else math.pi) + rng.uniform(-0.04, 0.04))
            x += rng.uniform(5.5, 9.0)

    # Moving traffic: same lane (never within 10 m of the ego vehicle) and opposite lane.
    for _ in range(int(rng.integers(1, 4))):
        xc = rng.uniform(10.0, 60.0) * (1.0 if rng.uniform() < 0.5 else -1.0)
        _add_car(b, rng, xc, rng.uniform(-0.3, 0.3), rng.uniform(-0.03, 0.03))
    for _ in range(int(rng.integers(1, 5))):
        _add_car(b, rng, rng.uniform(-80.0, 80.0), lane + rng.uniform(-0.3, 0.3), math.pi + rng.uniform(-0.03, 0.03))

    return b.build(SEMANTIC_CLASSES, CLASS_COLORS, [0.0, 0.0, 0.0],
                   ((-half, -half, -0.02), (half, half, 40.0)))


# --------------------------------------------------------------------------------------
# LiDAR sensor and scans
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LidarSensor:
    """A spinning multi-beam LiDAR (defaults: Velodyne HDL-64E-like).

    The sensor sits ``mount_height`` metres above the scene's ``sensor_origin`` with axes
    parallel to the world (x forward along the road, z up). One revolution fires every
    beam at ``horizontal_resolution`` equally spaced azimuths ``2*pi*k/H``, k = 0..H-1.

    Attributes:
        num_beams: lasers stacked vertically (>= 1). Ring 0 is the top beam.
        horizontal_resolution: firings per beam per revolution (>= 1).
        fov_up_deg, fov_down_deg: elevation of the top and bottom beam in degrees;
            beams are spaced uniformly between them (HDL-64E: +2.0 to -24.8).
        beam_elevations_deg: optional explicit beam table (degrees, ``num_beams``
            entries, ring order); overrides the uniform spacing.
        max_range, min_range: returns outside ``[min_range, max_range]`` metres
            (measured, i.e. after noise) are discarded.
        mount_height: metres above the ground point ``sensor_origin`` (KITTI: 1.73).
        range_noise_std: standard deviation (m) of Gaussian noise added to each range,
            along the ray (the elevation/azimuth of a return stay exact).
        intensity_noise_std: standard deviation of additive Gaussian intensity noise.
        dropout_prob: probability that a return is lost at random, in ``[0, 1)``.
        attenuation: atmospheric extinction coefficient alpha (1/m) of the intensity model.
    """

    num_beams: int = 64
    horizontal_resolution: int = 2048
    fov_up_deg: float = 2.0
    fov_down_deg: float = -24.8
    max_range: float = 120.0
    min_range: float = 1.0
    mount_height: float = 1.73
    range_noise_std: float = 0.01
    intensity_noise_std: float = 0.02
    dropout_prob: float = 0.0
    attenuation: float = 0.002
    beam_elevations_deg: Optional[Tuple[float, ...]] = None

    def __post_init__(self) -> None:
        _check_int("num_beams", self.num_beams, 1)
        _check_int("horizontal_resolution", self.horizontal_resolution, 1)
        up = _check_float("fov_up_deg", self.fov_up_deg, minimum=-90.0, maximum=90.0)
        down = _check_float("fov_down_deg", self.fov_down_deg, minimum=-90.0, maximum=90.0)
        if self.num_beams > 1 and not up > down:
            raise ValueError(f"fov_up_deg ({up}) must be greater than fov_down_deg ({down}) when num_beams > 1")
        max_range = _check_float("max_range", self.max_range, minimum=0.0, strict=True)
        _check_float("min_range", self.min_range, minimum=0.0, maximum=max_range, strict_max=True)
        _check_float("mount_height", self.mount_height, minimum=0.0)
        _check_float("range_noise_std", self.range_noise_std, minimum=0.0)
        _check_float("intensity_noise_std", self.intensity_noise_std, minimum=0.0)
        _check_float("dropout_prob", self.dropout_prob, minimum=0.0, maximum=1.0, strict_max=True)
        _check_float("attenuation", self.attenuation, minimum=0.0)
        if self.beam_elevations_deg is not None:
            table = tuple(float(v) for v in self.beam_elevations_deg)
            if len(table) != self.num_beams:
                raise ValueError(f"beam_elevations_deg must have num_beams={self.num_beams} entries, got {len(table)}")
            if any(not (-90.0 <= v <= 90.0) for v in table):
                raise ValueError(f"beam_elevations_deg must lie in [-90, 90] degrees, got {table}")
            object.__setattr__(self, "beam_elevations_deg", table)

    @property
    def elevation_angles(self) -> np.ndarray:
        """Beam elevations in radians, ``float64 [num_beams]``, ring order (top first)."""
        if self.beam_elevations_deg is not None:
            return np.radians(np.asarray(self.beam_elevations_deg, dtype=np.float64))
        if self.num_beams == 1:
            return np.radians(np.array([self.fov_up_deg], dtype=np.float64))
        return np.radians(np.linspace(self.fov_up_deg, self.fov_down_deg, self.num_beams))

    @property
    def azimuth_angles(self) -> np.ndarray:
        """Firing azimuths in radians, ``float64 [horizontal_resolution]``, in ``[0, 2*pi)``."""
        return np.arange(self.horizontal_resolution, dtype=np.float64) * (2.0 * math.pi / self.horizontal_resolution)

    def ray_directions(self) -> np.ndarray:
        """Unit ray directions ``float64 [H, num_beams, 3]`` in firing order (azimuth-major)."""
        el = self.elevation_angles[None, :]
        az = self.azimuth_angles[:, None]
        ce = np.cos(el)
        return np.stack(np.broadcast_arrays(ce * np.cos(az), ce * np.sin(az), np.sin(el)), -1)


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
        voxel_size = _check_float("voxel_size", voxel_size, minimum=0.0, strict=True)
        if self.num_points == 0:
            return 0
        cells = np.floor(self.points.astype(np.float64) / voxel_size).astype(np.int64)
        return int(np.unique(cells, axis=0).shape[0])


@dataclass(frozen=True, eq=False)
class LidarScan(PointCloudScan):
    """One LiDAR revolution.

    ``points`` are in the sensor frame: the sensor at the origin, axes parallel to the
    scene's world axes, so flat ground lies at ``z = -sensor.mount_height``. Points come
    in firing order (azimuth-major, then ring).

    Additional attributes:
        ring: ``int64 [P]`` beam index in ``[0, num_beams)``, 0 = top beam.
        column: ``int64 [P]`` azimuth index in ``[0, horizontal_resolution)``;
            ``(ring, column)`` addresses the range image.
        sensor: the :class:`LidarSensor` that produced the scan.
    """

    ring: np.ndarray
    column: np.ndarray
    sensor: Optional[LidarSensor] = None

    def ranges(self) -> np.ndarray:
        """Measured range per point, ``float32 [P]`` metres."""
        return np.linalg.norm(self.points, axis=1)


def _intensity(rng: np.random.Generator, reflectivity: np.ndarray, cos_incidence: np.ndarray,
               rng_m: np.ndarray, attenuation: float, noise_std: float) -> np.ndarray:
    value = reflectivity * np.abs(cos_incidence) * np.exp(-2.0 * attenuation * rng_m)
    if noise_std > 0:
        value = value + rng.normal(0.0, noise_std, size=value.shape)
    return (np.round(np.clip(value, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def simulate_scan(scene: Scene, sensor: Optional[LidarSensor] = None, seed: int = 0) -> LidarScan:
    """Cast one LiDAR revolution of ``sensor`` into ``scene``.

    All ``num_beams * horizontal_resolution`` rays go through one
    ``RaycastingScene.cast_rays`` call from ``scene.sensor_origin + (0, 0, mount_height)``.
    Per hit: measured range = true range + N(0, range_noise_std^2); returns outside
    ``[min_range, max_range]`` are dropped, then each is lost with ``dropout_prob``.
    Labels come from the hit geometry id; intensity follows the module's model with
    the hit triangle's normal. Deterministic for ``seed`` (the noise stream).
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene (see make_street_scene), got {type(scene).__name__}")
    sensor = LidarSensor() if sensor is None else sensor
    if not isinstance(sensor, LidarSensor):
        raise TypeError(f"sensor must be a LidarSensor, got {type(sensor).__name__}")
    seed = _check_seed(seed)
    rng = np.random.default_rng([_STREAM_LIDAR, seed])

    rc, geom_label, geom_refl = scene.raycasting_scene()
    dirs = sensor.ray_directions().reshape(-1, 3)  # [H*B, 3], azimuth-major
    origin = np.asarray(scene.sensor_origin, dtype=np.float64) + np.array([0.0, 0.0, sensor.mount_height])
    rays = np.empty((dirs.shape[0], 6), dtype=np.float32)
    rays[:, :3] = origin
    rays[:, 3:] = dirs
    hit = rc.cast_rays(o3d.core.Tensor(rays))
    t_hit = hit["t_hit"].numpy()
    gid = hit["geometry_ids"].numpy()

    idx = np.flatnonzero(np.isfinite(t_hit) & (gid != rc.INVALID_ID))
    t_true = t_hit[idx].astype(np.float64)
    t_meas = t_true
    if sensor.range_noise_std > 0:
        t_meas = t_true + rng.normal(0.0, sensor.range_noise_std, size=t_true.shape)
    keep = (t_meas >= sensor.min_range) & (t_meas <= sensor.max_range)
    if sensor.dropout_prob > 0:
        keep &= rng.uniform(size=keep.shape) >= sensor.dropout_prob
    idx, t_true, t_meas = idx[keep], t_true[keep], t_meas[keep]
    g = gid[idx].astype(np.int64)

    d = dirs[idx]
    normals = hit["primitive_normals"].numpy()[idx].astype(np.float64)
    norm = np.linalg.norm(normals, axis=1)
    cos_inc = np.einsum("ij,ij->i", d, normals) / np.maximum(norm, 1e-12)
    intensity = _intensity(rng, geom_refl[g].astype(np.float64), cos_inc, t_true,
                           sensor.attenuation, sensor.intensity_noise_std)
    points = (d * t_meas[:, None]).astype(np.float32)
    nb = sensor.num_beams
    return LidarScan(
        points=points,
        intensity=intensity,
        labels=geom_label[g],
        class_names=scene.class_names,
        class_colors=scene.class_colors,
        ring=(idx % nb).astype(np.int64),
        column=(idx // nb).astype(np.int64),
        sensor=sensor,
    )


def generate_lidar_scan(
    seed: int = 0,
    num_beams: int = 64,
    horizontal_resolution: int = 2048,
    *,
    max_range: float = 120.0,
    min_range: float = 1.0,
    fov_up_deg: float = 2.0,
    fov_down_deg: float = -24.8,
    mount_height: float = 1.73,
    range_noise_std: float = 0.01,
    intensity_noise_std: float = 0.02,
    dropout_prob: float = 0.0,
    street_length: float = 240.0,
) -> LidarScan:
    """``simulate_scan(make_street_scene(seed, length=street_length), LidarSensor(...), seed)``.

    The default (64 x 2048) scan has ~130k points and ~70k-85k occupied 5 cm voxels;
    it takes ~0.05 s (scene + ray casting) on 2 CPU cores.
    Raises ``ValueError`` naming the offending argument for invalid sensor settings.
    """
    sensor = LidarSensor(
        num_beams=num_beams,
        horizontal_resolution=horizontal_resolution,
        fov_up_deg=fov_up_deg,
        fov_down_deg=fov_down_deg,
        max_range=max_range,
        min_range=min_range,
        mount_height=mount_height,
        range_noise_std=range_noise_std,
        intensity_noise_std=intensity_noise_std,
        dropout_prob=dropout_prob,
    )
    return simulate_scan(make_street_scene(seed, length=street_length), sensor, seed)


# --------------------------------------------------------------------------------------
# Indoor scene (RGB-D sweep)
# --------------------------------------------------------------------------------------

def _add_table(b: _Builder, rng: np.random.Generator, cx: float, cy: float, yaw: float,
               length: float, width: float) -> float:
    height = rng.uniform(0.72, 0.77)
    top_t = 0.04
    leg = 0.05
    parts = [_box([0.0, 0.0, height - top_t / 2], [length, width, top_t])]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box([sx * (length / 2 - 0.06), sy * (width / 2 - 0.06), (height - top_t) / 2],
                              [leg, leg, height - top_t]))
    b.add(_place(_merge(parts), yaw, [cx, cy, 0.0]), _TABLE, rng.uniform(0.35, 0.7), "table")
    return height


def _add_chair(b: _Builder, rng: np.random.Generator, cx: float, cy: float, yaw: float) -> None:
    """Chair whose backrest is on the local -x side (it faces +x rotated by ``yaw``)."""
    s = rng.uniform(0.42, 0.5)
    seat_h = rng.uniform(0.43, 0.48)
    back_h = rng.uniform(0.35, 0.5)
    leg = 0.035
    parts = [_box([0.0, 0.0, seat_h - 0.025], [s, s, 0.05])]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box([sx * (s / 2 - 0.03), sy * (s / 2 - 0.03), (seat_h - 0.05) / 2],
                              [leg, leg, seat_h - 0.05]))
    parts.append(_box([-s / 2 + 0.02, 0.0, seat_h + back_h / 2], [0.04, s, back_h]))
    b.add(_place(_merge(parts), yaw, [cx, cy, 0.0]), _CHAIR, rng.uniform(0.2, 0.6), "chair")


def _free(occupied: List[Tuple[float, float, float, float]], box: Tuple[float, float, float, float]) -> bool:
    x0, y0, x1, y1 = box
    return all(x1 <= a0 or x0 >= a1 or y1 <= b0 or y0 >= b1 for a0, b0, a1, b1 in occupied)


def make_indoor_scene(seed: int = 0, *, room_size: Sequence[float] = (8.0, 6.0, 3.0)) -> Scene:
    """Procedural room ``[0, X] x [0, Y] x [0, Z]`` metres (floor corner at the origin).

    Floor, four walls and ceiling are the room's inner faces (``floor``, ``wall``,
    ``ceiling``); inside: 1-2 tables with 2-6 chairs each, a few loose chairs,
    2-4 cabinets / shelves (0.8-2.0 m tall) against the walls, 5-12 boxes on the floor
    and tables. Only cabinets (within 0.61 m of a wall) rise above 1.15 m, so the cameras
    of :func:`generate_indoor_scene` (1.3-1.7 m high, 1.2 m inside the walls) always
    stand in free space.
    """
    seed = _check_seed(seed)
    if not isinstance(room_size, (tuple, list, np.ndarray)) or len(room_size) != 3:
        raise ValueError(f"room_size must be 3 numbers (X, Y, Z) in metres, got {room_size!r}")
    X = _check_float("room_size[0]", room_size[0], minimum=3.0)
    Y = _check_float("room_size[1]", room_size[1], minimum=3.0)
    Z = _check_float("room_size[2]", room_size[2], minimum=2.2)
    rng = np.random.default_rng([_STREAM_INDOOR, seed])
    b = _Builder()
    b.add(_rect_z(0, X, 0, Y, 0.0), _FLOOR, rng.uniform(0.25, 0.5), "floor")
    b.add(_rect_z(0, X, 0, Y, Z), _CEILING, rng.uniform(0.7, 0.85), "ceiling")
    wall_refl = rng.uniform(0.6, 0.85)
    b.add(_merge([
        _quad([[0, 0, 0], [X, 0, 0], [X, 0, Z], [0, 0, Z]]),
        _quad([[X, 0, 0], [X, Y, 0], [X, Y, Z], [X, 0, Z]]),
        _quad([[X, Y, 0], [0, Y, 0], [0, Y, Z], [X, Y, Z]]),
        _quad([[0, Y, 0], [0, 0, 0], [0, 0, Z], [0, Y, Z]]),
    ]), _WALL, wall_refl, "walls")
    # A door (slightly recessed frame) on one wall: still labelled wall, darker.
    dx = rng.uniform(0.5, X - 1.5)
    b.add(_box_minmax([dx, 0.0, 0.0], [dx + 0.9, 0.03, 2.05]), _WALL, rng.uniform(0.2, 0.4), "door")

    occupied: List[Tuple[float, float, float, float]] = []

    # Cabinets / shelves against the walls.
    for _ in range(int(rng.integers(2, 5))):
        for _try in range(20):
            w, d, h = rng.uniform(0.8, 2.0), rng.uniform(0.35, 0.6), rng.uniform(0.8, 2.0)
            side = int(rng.integers(4))
            if side in (0, 2):
                cx = rng.uniform(w / 2 + 0.05, X - w / 2 - 0.05)
                cy = d / 2 + 0.01 if side == 0 else Y - d / 2 - 0.01
                fx, fy = w, d
            else:
                cy = rng.uniform(w / 2 + 0.05, Y - w / 2 - 0.05)
                cx = d / 2 + 0.01 if side == 3 else X - d / 2 - 0.01
                fx, fy = d, w
            fp = (cx - fx / 2, cy - fy / 2, cx + fx / 2, cy + fy / 2)
            door_fp = (dx - 0.2, 0.0, dx + 1.1, 1.0)
            if _free(occupied + [door_fp], fp):
                occupied.append(fp)
                b.add(_box([cx, cy, h / 2], [fx, fy, h]), _CABINET, rng.uniform(0.3, 0.7), "cabinet")
                break

    # Tables with chairs around them.
    table_tops: List[Tuple[float, float, float, float, float, float]] = []  # cx, cy, yaw, half_l, half_w, height
    for _ in range(int(rng.integers(1, 3))):
        for _try in range(30):
            length, width = rng.uniform(1.2, 2.0), rng.uniform(0.7, 1.0)
            yaw = float(rng.choice([0.0, math.pi / 2])) + rng.uniform(-0.1, 0.1)
            cx, cy = rng.uniform(1.8, X - 1.8), rng.uniform(1.6, Y - 1.6)
            ext = 0.5 * max(length, width) + 0.6  # room for the chairs
            fp = (cx - ext, cy - ext, cx + ext, cy + ext)
            if _free(occupied, fp):
                occupied.append(fp)
                h = _add_table(b, rng, cx, cy, yaw, length, width)
                table_tops.append((cx, cy, yaw, length / 2, width / 2, h))
                # chairs on the long sides, facing the table
                n_side = max(1, int(length // 0.65))
                for side in (-1.0, 1.0):
                    for k in range(n_side):
                        if rng.uniform() < 0.75:
                            lx = (k + 0.5) / n_side * length - length / 2 + rng.uniform(-0.08, 0.08)
                            ly = side * (width / 2 + rng.uniform(0.15, 0.35))
                            px, py = _rot_z(yaw)[:2, :2] @ np.array([lx, ly])
                            chair_yaw = yaw + (-math.pi / 2 if side > 0 else math.pi / 2) + rng.uniform(-0.3, 0.3)
                            _add_chair(b, rng, cx + px, cy + py, chair_yaw)
                break

    # Loose chairs and boxes on the floor.
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            cx, cy = rng.uniform(0.4, X - 0.4), rng.uniform(0.4, Y - 0.4)
            fp = (cx - 0.35, cy - 0.35, cx + 0.35, cy + 0.35)
            if _free(occupied, fp):
                occupied.append(fp)
                _add_chair(b, rng, cx, cy, rng.uniform(0, 2 * math.pi))
                break
    for _ in range(int(rng.integers(5, 13))):
        for _try in range(20):
            s = rng.uniform(0.2, 0.6, size=3)
            cx, cy = rng.uniform(0.3, X - 0.3), rng.uniform(0.3, Y - 0.3)
            r = 0.5 * math.hypot(s[0], s[1])
            fp = (cx - r, cy - r, cx + r, cy + r)
            if _free(occupied, fp):
                occupied.append(fp)
                b.add(_box([cx, cy, s[2] / 2], s, rng.uniform(0, math.pi)), _BOX, rng.uniform(0.3, 0.8), "box")
                break
    for cx, cy, yaw, hl, hw, h in table_tops:  # a box or two on each table
        for _ in range(int(rng.integers(0, 3))):
            s = rng.uniform(0.15, 0.35, size=3)
            px, py = _rot_z(yaw)[:2, :2] @ np.array([rng.uniform(-hl + 0.25, hl - 0.25), rng.uniform(-hw + 0.2, hw - 0.2)])
            b.add(_box([cx + px, cy + py, h + s[2] / 2], s, yaw + rng.uniform(-0.5, 0.5)), _BOX,
                  rng.uniform(0.3, 0.8), "box on table")

    return b.build(INDOOR_CLASSES, INDOOR_CLASS_COLORS, [X / 2, Y / 2, 0.0], ((0.0, 0.0, 0.0), (X, Y, Z)))


def generate_indoor_scene(
    seed: int = 0,
    *,
    room_size: Sequence[float] = (8.0, 6.0, 3.0),
    num_views: int = 10,
    image_size: Tuple[int, int] = (160, 120),
    fov_deg: Tuple[float, float] = (70.0, 55.0),
    min_depth: float = 0.3,
    max_depth: float = 10.0,
    depth_noise_std: float = 0.001,
    depth_noise_rel: float = 0.0015,
    intensity_noise_std: float = 0.02,
) -> PointCloudScan:
    """Dense indoor cloud: a hand-held RGB-D sweep through :func:`make_indoor_scene`.

    ``num_views`` pinhole depth cameras (``image_size = (width, height)`` pixels,
    ``fov_deg = (horizontal, vertical)``) stand on an ellipse 1.2 m inside the walls at
    1.3-1.7 m height, each looking roughly across the room (yaw jitter +-35 deg, pitch
    -30..+10 deg). All views are ray cast in one call and fused in the room frame
    (``[0, X] x [0, Y] x [0, Z]``, floor corner at the origin). Depth ``z`` (along the
    optical axis) gets Gaussian noise with std ``depth_noise_std + depth_noise_rel * z``
    (a time-of-flight-like model), applied along the ray; pixels with depth outside
    ``[min_depth, max_depth]`` are invalid. Intensity is the module's model (an IR
    amplitude image) with ``alpha = 0.01``. Defaults give ~190k points.
    """
    seed = _check_seed(seed)
    num_views = _check_int("num_views", num_views, 1)
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size must be (width, height), got {image_size!r}")
    width = _check_int("image_size[0]", image_size[0], 1)
    height = _check_int("image_size[1]", image_size[1], 1)
    if not isinstance(fov_deg, (tuple, list)) or len(fov_deg) != 2:
        raise ValueError(f"fov_deg must be (horizontal, vertical) degrees, got {fov_deg!r}")
    fov_h = _check_float("fov_deg[0]", fov_deg[0], minimum=0.0, maximum=170.0, strict=True)
    fov_v = _check_float("fov_deg[1]", fov_deg[1], minimum=0.0, maximum=170.0, strict=True)
    max_depth = _check_float("max_depth", max_depth, minimum=0.0, strict=True)
    min_depth = _check_float("min_depth", min_depth, minimum=0.0, maximum=max_depth, strict_max=True)
    depth_noise_std = _check_float("depth_noise_std", depth_noise_std, minimum=0.0)
    depth_noise_rel = _check_float("depth_noise_rel", depth_noise_rel, minimum=0.0)
    intensity_noise_std = _check_float("intensity_noise_std", intensity_noise_std, minimum=0.0)

    scene = make_indoor_scene(seed, room_size=room_size)
    X, Y, _ = scene.bounds[1]
    rng = np.random.default_rng([_STREAM_RGBD, seed])

    # Camera-frame pixel directions (x right, y down, z forward), unnormalised with z = 1.
    fx = (width / 2) / math.tan(math.radians(fov_h) / 2)
    fy = (height / 2) / math.tan(math.radians(fov_v) / 2)
    u = (np.arange(width) + 0.5 - width / 2) / fx
    v = (np.arange(height) + 0.5 - height / 2) / fy
    uu, vv = np.meshgrid(u, v)
    cam_dirs = np.stack([uu, vv, np.ones_like(uu)], -1).reshape(-1, 3)

    ax, ay = max(X / 2 - 1.2, 0.1), max(Y / 2 - 1.2, 0.1)
    phase = rng.uniform(0, 2 * math.pi)
    origins, world_dirs, depth_scale = [], [], []
    for k in range(num_views):
        phi = phase + 2 * math.pi * k / num_views
        pos = np.array([X / 2 + ax * math.cos(phi), Y / 2 + ay * math.sin(phi), rng.uniform(1.3, 1.7)])
        yaw = phi + math.pi + rng.uniform(-0.6, 0.6)
        pitch = rng.uniform(math.radians(-30), math.radians(10))
        forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.cross(forward, right)
        R = np.stack([right, down, forward], 1)  # camera -> world
        d = cam_dirs @ R.T
        n = np.linalg.norm(d, axis=1)
        origins.append(np.broadcast_to(pos, d.shape))
        world_dirs.append(d / n[:, None])
        depth_scale.append(1.0 / n)  # depth z = t * (1 / |d|) for a unit ray
    origins_a = np.concatenate(origins)
    dirs_a = np.concatenate(world_dirs)
    zscale = np.concatenate(depth_scale)

    rc, geom_label, geom_refl = scene.raycasting_scene()
    rays = np.concatenate([origins_a, dirs_a], 1).astype(np.float32)
    hit = rc.cast_rays(o3d.core.Tensor(rays))
    t_hit = hit["t_hit"].numpy().astype(np.float64)
    gid = hit["geometry_ids"].numpy()
    idx = np.flatnonzero(np.isfinite(t_hit) & (gid != rc.INVALID_ID))
    t = t_hit[idx]
    z = t * zscale[idx]
    keep = (z >= min_depth) & (z <= max_depth)
    idx, t, z = idx[keep], t[keep], z[keep]
    sigma = depth_noise_std + depth_noise_rel * z
    z_meas = z + rng.normal(0.0, 1.0, size=z.shape) * sigma if np.any(sigma > 0) else z
    t_meas = t * (z_meas / z)
    g = gid[idx].astype(np.int64)
    d = dirs_a[idx]
    normals = hit["primitive_normals"].numpy()[idx].astype(np.float64)
    cos_inc = np.einsum("ij,ij->i", d, normals) / np.maximum(np.linalg.norm(normals, axis=1), 1e-12)
    intensity = _intensity(rng, geom_refl[g].astype(np.float64), cos_inc, t, 0.01, intensity_noise_std)
    points = (origins_a[idx] + d * t_meas[:, None]).astype(np.float32)
    return PointCloudScan(points=points, intensity=intensity, labels=geom_label[g],
                          class_names=scene.class_names, class_colors=scene.class_colors)
