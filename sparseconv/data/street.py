"""The procedural street (:func:`make_street_scene`) and its class table.

Road with lane markings, raised sidewalks, buildings, parked and moving cars, street
lights and sign posts, trees and bushes, a terrain plane, all triangle meshes
(:mod:`sparseconv.data.meshes`) labelled with :data:`SEMANTIC_CLASSES`. The class colours
are the SemanticKITTI palette of :mod:`sparseconv.viz.colors` (every street class is a
SemanticKITTI class).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from ..viz.colors import class_colors
from ._checks import check_float, check_seed
from .meshes import box, box_minmax, cylinder, ellipsoid, merge, place, rect_z
from .scene import Scene, SceneBuilder

__all__ = ["SEMANTIC_CLASSES", "CLASS_COLORS", "make_street_scene"]

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

#: RGB colour per outdoor class, ``uint8 [len(SEMANTIC_CLASSES), 3]`` (read-only).
CLASS_COLORS: np.ndarray = class_colors(SEMANTIC_CLASSES)
CLASS_COLORS.flags.writeable = False

_ROAD, _SIDEWALK, _BUILDING, _CAR, _POLE, _VEGETATION, _TERRAIN = range(7)

#: Random stream of the layout, derived from the user seed (see :mod:`sparseconv.data.synthetic`).
STREAM_STREET = 101


def _add_car(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float) -> None:
    length = rng.uniform(3.8, 4.9)
    width = rng.uniform(1.65, 1.95)
    clearance = rng.uniform(0.22, 0.32)
    body_h = rng.uniform(0.6, 0.85)
    cabin_l = length * rng.uniform(0.45, 0.6)
    cabin_h = rng.uniform(0.45, 0.65)
    cabin_x = -length * rng.uniform(0.02, 0.12)
    paint = rng.uniform(0.1, 0.8)  # dark to white paint
    body = box([0.0, 0.0, clearance + body_h / 2], [length, width, body_h])
    cabin = box([cabin_x, 0.0, clearance + body_h + cabin_h / 2], [cabin_l, width * 0.88, cabin_h])
    b.add(place(body, yaw, [x, y, 0.0]), _CAR, paint, "car body")
    b.add(place(cabin, yaw, [x, y, 0.0]), _CAR, rng.uniform(0.05, 0.12), "car cabin (glass)")
    r = rng.uniform(0.29, 0.34)
    wheel_w = 0.2
    wheels = []
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            cx = sx * (length / 2 - 0.8)
            cy = sy * (width / 2 - wheel_w / 2 + 0.02)
            wheels.append(cylinder([cx, cy - wheel_w / 2, r], [0.0, wheel_w, 0.0], r, segments=12))
    b.add(place(merge(wheels), yaw, [x, y, 0.0]), _CAR, 0.04, "car wheels")


def _add_tree(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, z0: float) -> None:
    trunk_h = rng.uniform(1.8, 3.5)
    trunk_r = rng.uniform(0.12, 0.25)
    b.add(cylinder([x, y, z0], [0.0, 0.0, trunk_h], trunk_r, segments=10), _VEGETATION,
          rng.uniform(0.15, 0.3), "tree trunk")
    rxy = rng.uniform(1.4, 3.0)
    rz = rng.uniform(1.3, 2.8)
    crown = ellipsoid([x, y, z0 + trunk_h + 0.7 * rz], [rxy * rng.uniform(0.85, 1.15), rxy, rz],
                      rng, bumpiness=0.18)
    b.add(crown, _VEGETATION, rng.uniform(0.3, 0.5), "tree crown")


def _add_bush(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, z0: float) -> None:
    r = rng.uniform(0.4, 1.2)
    h = rng.uniform(0.4, 1.0)
    b.add(ellipsoid([x, y, z0 + 0.6 * h], [r, r * rng.uniform(0.7, 1.3), h], rng, bumpiness=0.2, n_lat=6, n_lon=10),
          _VEGETATION, rng.uniform(0.3, 0.5), "bush")


def _add_street_light(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, z0: float, towards_road: float) -> None:
    h = rng.uniform(6.0, 9.0)
    r = rng.uniform(0.08, 0.14)
    refl = rng.uniform(0.3, 0.55)
    arm = rng.uniform(1.0, 2.5)
    parts = [
        cylinder([x, y, z0], [0.0, 0.0, h], r, segments=10),
        cylinder([x, y, z0 + h - 0.1], [0.0, towards_road * arm, 0.0], 0.05, segments=6),
        box([x, y + towards_road * arm, z0 + h - 0.2], [0.5, 0.3, 0.15]),
    ]
    b.add(merge(parts), _POLE, refl, "street light")


def _add_sign(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, z0: float) -> None:
    h = rng.uniform(2.2, 3.2)
    post = cylinder([x, y, z0], [0.0, 0.0, h], rng.uniform(0.035, 0.05), segments=8)
    b.add(post, _POLE, rng.uniform(0.3, 0.5), "sign post")
    size = rng.uniform(0.5, 0.8)
    plate = box([x + 0.06, y, z0 + h - size / 2], [0.03, size, size])
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
    seed = check_seed(seed)
    length = check_float("length", length, minimum=20.0, strict=True)
    rng = np.random.default_rng([STREAM_STREET, seed])
    b = SceneBuilder()
    x0, x1 = -length / 2, length / 2

    lane = rng.uniform(3.1, 3.6)
    parking = rng.uniform(2.1, 2.5)
    y_center_line = lane / 2
    y_right = -lane / 2 - parking              # right kerb
    y_left = lane / 2 + lane + parking         # left kerb
    b.add(rect_z(x0, x1, y_right, y_left, 0.0), _ROAD, rng.uniform(0.08, 0.14), "asphalt")
    dash, gap = 3.0, 6.0
    xs = np.arange(x0 + rng.uniform(0, dash + gap), x1 - dash, dash + gap)
    marks = [rect_z(x, x + dash, y_center_line - 0.075, y_center_line + 0.075, 0.004) for x in xs]
    marks.append(rect_z(x0, x1, -lane / 2 - 0.15, -lane / 2, 0.004))          # solid edge lines
    marks.append(rect_z(x0, x1, lane * 1.5, lane * 1.5 + 0.15, 0.004))
    b.add(merge(marks), _ROAD, rng.uniform(0.7, 0.85), "lane markings")

    half = 150.0
    b.add(rect_z(-half, half, -half, half, -0.02), _TERRAIN, rng.uniform(0.2, 0.35), "terrain")

    # Each side: (kerb y, outward direction)
    for kerb, out in ((y_right, -1.0), (y_left, 1.0)):
        sw = rng.uniform(2.5, 4.0)
        sw_outer = kerb + out * sw
        b.add(box_minmax([x0, min(kerb, sw_outer), 0.0], [x1, max(kerb, sw_outer), 0.15]), _SIDEWALK,
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
                b.add(box_minmax([xa, min(front, back), 0.0], [xb, max(front, back), height]), _BUILDING,
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
