"""The procedural room (:func:`make_indoor_scene`) and a hand-held RGB-D sweep through it
(:func:`generate_indoor_scene`): a ring of pinhole depth cameras ray cast in one call and
fused into one dense cloud in the room frame.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np

from .._optional import require
from ._checks import check_float, check_int, check_seed
from .meshes import box, box_minmax, merge, place, quad, rect_z, rot_z
from .scene import PointCloudScan, Scene, SceneBuilder, intensity_model

__all__ = ["INDOOR_CLASSES", "INDOOR_CLASS_COLORS", "make_indoor_scene", "generate_indoor_scene"]

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

_FLOOR, _WALL, _CEILING, _TABLE, _CHAIR, _CABINET, _BOX = range(7)

#: Random streams of the room layout and of the camera noise, derived from the user seed.
STREAM_INDOOR, STREAM_RGBD = 303, 404


def _add_table(b: SceneBuilder, rng: np.random.Generator, cx: float, cy: float, yaw: float,
               length: float, width: float) -> float:
    height = rng.uniform(0.72, 0.77)
    top_t = 0.04
    leg = 0.05
    parts = [box([0.0, 0.0, height - top_t / 2], [length, width, top_t])]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(box([sx * (length / 2 - 0.06), sy * (width / 2 - 0.06), (height - top_t) / 2],
                             [leg, leg, height - top_t]))
    b.add(place(merge(parts), yaw, [cx, cy, 0.0]), _TABLE, rng.uniform(0.35, 0.7), "table")
    return height


def _add_chair(b: SceneBuilder, rng: np.random.Generator, cx: float, cy: float, yaw: float) -> None:
    """Chair whose backrest is on the local -x side (it faces +x rotated by ``yaw``)."""
    s = rng.uniform(0.42, 0.5)
    seat_h = rng.uniform(0.43, 0.48)
    back_h = rng.uniform(0.35, 0.5)
    leg = 0.035
    parts = [box([0.0, 0.0, seat_h - 0.025], [s, s, 0.05])]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(box([sx * (s / 2 - 0.03), sy * (s / 2 - 0.03), (seat_h - 0.05) / 2],
                             [leg, leg, seat_h - 0.05]))
    parts.append(box([-s / 2 + 0.02, 0.0, seat_h + back_h / 2], [0.04, s, back_h]))
    b.add(place(merge(parts), yaw, [cx, cy, 0.0]), _CHAIR, rng.uniform(0.2, 0.6), "chair")


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
    seed = check_seed(seed)
    if not isinstance(room_size, (tuple, list, np.ndarray)) or len(room_size) != 3:
        raise ValueError(f"room_size must be 3 numbers (X, Y, Z) in metres, got {room_size!r}")
    X = check_float("room_size[0]", room_size[0], minimum=3.0)
    Y = check_float("room_size[1]", room_size[1], minimum=3.0)
    Z = check_float("room_size[2]", room_size[2], minimum=2.2)
    rng = np.random.default_rng([STREAM_INDOOR, seed])
    b = SceneBuilder()
    b.add(rect_z(0, X, 0, Y, 0.0), _FLOOR, rng.uniform(0.25, 0.5), "floor")
    b.add(rect_z(0, X, 0, Y, Z), _CEILING, rng.uniform(0.7, 0.85), "ceiling")
    wall_refl = rng.uniform(0.6, 0.85)
    b.add(merge([
        quad([[0, 0, 0], [X, 0, 0], [X, 0, Z], [0, 0, Z]]),
        quad([[X, 0, 0], [X, Y, 0], [X, Y, Z], [X, 0, Z]]),
        quad([[X, Y, 0], [0, Y, 0], [0, Y, Z], [X, Y, Z]]),
        quad([[0, Y, 0], [0, 0, 0], [0, 0, Z], [0, Y, Z]]),
    ]), _WALL, wall_refl, "walls")
    # A door (slightly recessed frame) on one wall: still labelled wall, darker.
    dx = rng.uniform(0.5, X - 1.5)
    b.add(box_minmax([dx, 0.0, 0.0], [dx + 0.9, 0.03, 2.05]), _WALL, rng.uniform(0.2, 0.4), "door")

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
                b.add(box([cx, cy, h / 2], [fx, fy, h]), _CABINET, rng.uniform(0.3, 0.7), "cabinet")
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
                            px, py = rot_z(yaw)[:2, :2] @ np.array([lx, ly])
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
                b.add(box([cx, cy, s[2] / 2], s, rng.uniform(0, math.pi)), _BOX, rng.uniform(0.3, 0.8), "box")
                break
    for cx, cy, yaw, hl, hw, h in table_tops:  # a box or two on each table
        for _ in range(int(rng.integers(0, 3))):
            s = rng.uniform(0.15, 0.35, size=3)
            px, py = rot_z(yaw)[:2, :2] @ np.array([rng.uniform(-hl + 0.25, hl - 0.25), rng.uniform(-hw + 0.2, hw - 0.2)])
            b.add(box([cx + px, cy + py, h + s[2] / 2], s, yaw + rng.uniform(-0.5, 0.5)), _BOX,
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
    seed = check_seed(seed)
    num_views = check_int("num_views", num_views, 1)
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size must be (width, height), got {image_size!r}")
    width = check_int("image_size[0]", image_size[0], 1)
    height = check_int("image_size[1]", image_size[1], 1)
    if not isinstance(fov_deg, (tuple, list)) or len(fov_deg) != 2:
        raise ValueError(f"fov_deg must be (horizontal, vertical) degrees, got {fov_deg!r}")
    fov_h = check_float("fov_deg[0]", fov_deg[0], minimum=0.0, maximum=170.0, strict=True)
    fov_v = check_float("fov_deg[1]", fov_deg[1], minimum=0.0, maximum=170.0, strict=True)
    max_depth = check_float("max_depth", max_depth, minimum=0.0, strict=True)
    min_depth = check_float("min_depth", min_depth, minimum=0.0, maximum=max_depth, strict_max=True)
    depth_noise_std = check_float("depth_noise_std", depth_noise_std, minimum=0.0)
    depth_noise_rel = check_float("depth_noise_rel", depth_noise_rel, minimum=0.0)
    intensity_noise_std = check_float("intensity_noise_std", intensity_noise_std, minimum=0.0)

    scene = make_indoor_scene(seed, room_size=room_size)
    X, Y, _ = scene.bounds[1]
    rng = np.random.default_rng([STREAM_RGBD, seed])

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

    o3d = require("open3d", "open3d", "generate_indoor_scene (the RGB-D sweep is ray cast with Open3D)")

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
    intensity = intensity_model(rng, geom_refl[g].astype(np.float64), cos_inc, t, 0.01, intensity_noise_std)
    points = (origins_a[idx] + d * t_meas[:, None]).astype(np.float32)
    return PointCloudScan(points=points, intensity=intensity, labels=geom_label[g],
                          class_names=scene.class_names, class_colors=scene.class_colors)
