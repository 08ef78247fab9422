"""SemanticKITTI's label tables: raw ids and names, the 19 training classes, the learning map
and a colour per class (facts of the dataset's format)."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..viz.colors import class_colors

__all__ = [
    "SEMANTIC_KITTI_LABELS",
    "SEMANTIC_KITTI_CLASSES",
    "SEMANTIC_KITTI_LEARNING_MAP",
    "SEMANTIC_KITTI_CLASS_COLORS",
    "semantic_kitti_label_colors",
]

#: Raw SemanticKITTI semantic ids (the low 16 bits of a ``.label`` entry) and their names.
SEMANTIC_KITTI_LABELS: Dict[int, str] = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle",
    16: "on-rails", 18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist",
    32: "motorcyclist", 40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground",
    50: "building", 51: "fence", 52: "other-structure", 60: "lane-marking", 70: "vegetation",
    71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: "other-object",
    252: "moving-car", 253: "moving-bicyclist", 254: "moving-person", 255: "moving-motorcyclist",
    256: "moving-on-rails", 257: "moving-bus", 258: "moving-truck", 259: "moving-other-vehicle",
}

#: The 19 classes SemanticKITTI models are trained and scored on.
SEMANTIC_KITTI_CLASSES: Tuple[str, ...] = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign",
)

#: Raw id -> index into :data:`SEMANTIC_KITTI_CLASSES` (-1: ignored). Moving objects map to
#: their static class, lane markings to road, rare vehicles to other-vehicle.
SEMANTIC_KITTI_LEARNING_MAP: Dict[int, int] = {
    0: -1, 1: -1, 10: 0, 11: 1, 13: 4, 15: 2, 16: 4, 18: 3, 20: 4, 30: 5, 31: 6, 32: 7,
    40: 8, 44: 9, 48: 10, 49: 11, 50: 12, 51: 13, 52: -1, 60: 8, 70: 14, 71: 15, 72: 16,
    80: 17, 81: 18, 99: -1, 252: 0, 253: 6, 254: 5, 255: 7, 256: 4, 257: 4, 258: 3, 259: 4,
}

#: RGB per entry of :data:`SEMANTIC_KITTI_CLASSES`: the palette of :mod:`sparseconv.viz.colors`
#: (designed for these classes; the synthetic street uses it too).
SEMANTIC_KITTI_CLASS_COLORS: np.ndarray = class_colors(SEMANTIC_KITTI_CLASSES)
SEMANTIC_KITTI_CLASS_COLORS.flags.writeable = False


def semantic_kitti_label_colors() -> Dict[int, Tuple[int, int, int]]:
    """RGB for every raw SemanticKITTI id (through the learning map; ignored ids grey)."""
    out = {}
    for raw, cls in SEMANTIC_KITTI_LEARNING_MAP.items():
        out[raw] = (110, 110, 110) if cls < 0 else tuple(int(v) for v in SEMANTIC_KITTI_CLASS_COLORS[cls])
    return out
