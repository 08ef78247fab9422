"""KITTI object labels (``label_2``) and calibration files, as 3D boxes in the LiDAR frame.

A ``label_2`` line has 15 fields (16 with a detection score)::

    type truncated occluded alpha  left top right bottom  h w l  x y z  rotation_y [score]

``h w l`` are the box height, width and length (metres); ``x y z`` is the centre of the
box's *bottom face* in the rectified camera frame (x right, y down, z forward);
``rotation_y`` turns the box about the camera's y axis (0: length along camera x).

Frames. With a calibration file (:func:`read_kitti_calib`: ``R0_rect`` and
``Tr_velo_to_cam``) the corners are taken exactly into the LiDAR frame,
``X_lidar = Tr_velo_to_cam^-1 R0_rect^-1 X_rect``. Without one, :func:`read_kitti_labels`
uses only KITTI's nominal axis change (LiDAR x = camera z, y = -camera x, z = -camera y)
and no translation: boxes then sit about 0.3 m off (the camera-LiDAR offset), and the
viewer says so on the page. ``DontCare`` lines are skipped.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["Box3D", "KittiCalib", "read_kitti_labels", "read_kitti_calib", "NOMINAL_CAMERA_TO_LIDAR"]

PathLike = Union[str, "os.PathLike[str]"]

#: Rotation taking rectified-camera axes to LiDAR axes, KITTI's nominal mounting (no offset).
NOMINAL_CAMERA_TO_LIDAR = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class KittiCalib:
    """The two matrices of a KITTI ``calib`` file that relate the LiDAR and the rectified camera."""

    R0_rect: np.ndarray        # [3, 3]
    Tr_velo_to_cam: np.ndarray  # [3, 4]

    def camera_to_lidar(self, points: np.ndarray) -> np.ndarray:
        """Rectified-camera points ``[N, 3]`` -> LiDAR frame ``[N, 3]``."""
        T = np.eye(4)
        T[:3, :4] = self.Tr_velo_to_cam
        R = np.eye(4)
        R[:3, :3] = self.R0_rect
        homogeneous = np.concatenate([points, np.ones((points.shape[0], 1))], 1)
        return (np.linalg.inv(R @ T) @ homogeneous.T).T[:, :3]


@dataclass(frozen=True)
class Box3D:
    """One labelled object: its ``label_2`` fields and its 8 corners in the LiDAR frame.

    ``corners`` ``float64 [8, 3]``: bottom face first (4 corners, in order around the
    face), then the top face in the same order.
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: Tuple[float, float, float, float]
    size_hwl: Tuple[float, float, float]
    location: Tuple[float, float, float]
    rotation_y: float
    score: Optional[float]
    corners: np.ndarray


def _camera_corners(h: float, w: float, length: float, location, ry: float) -> np.ndarray:
    x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * (length / 2)
    y = np.array([0, 0, 0, 0, -h, -h, -h, -h], dtype=np.float64)
    z = np.array([w, -w, -w, w, w, -w, -w, w]) / 2
    c, s = math.cos(ry), math.sin(ry)
    rotation = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return (rotation @ np.stack([x, y, z])).T + np.asarray(location, dtype=np.float64)


def read_kitti_calib(path: PathLike) -> KittiCalib:
    """Read ``R0_rect`` and ``Tr_velo_to_cam`` from a KITTI object ``calib/*.txt`` file."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: no such calibration file")
    values: Dict[str, np.ndarray] = {}
    with open(p, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if ":" not in line:
                continue
            key, _, rest = line.partition(":")
            try:
                values[key.strip()] = np.array([float(v) for v in rest.split()])
            except ValueError:
                raise ValueError(f"{p}:{number}: {key.strip()} must be numbers, got {rest.strip()!r}") from None
    need = {"R0_rect": 9, "Tr_velo_to_cam": 12}
    for key, count in need.items():
        if key not in values:
            raise ValueError(f"{p}: no {key} line (a KITTI object calib file has R0_rect and Tr_velo_to_cam)")
        if values[key].size != count:
            raise ValueError(f"{p}: {key} must have {count} numbers, got {values[key].size}")
    return KittiCalib(values["R0_rect"].reshape(3, 3), values["Tr_velo_to_cam"].reshape(3, 4))


def read_kitti_labels(path: PathLike, calib: Optional[KittiCalib] = None) -> List[Box3D]:
    """The objects of a KITTI ``label_2`` file, with corners in the LiDAR frame (see the
    module docstring for the frame with and without ``calib``). Raises ``ValueError``
    naming the file and line for a line that is not 15 or 16 fields of the right types."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: no such label file")
    boxes = []
    with open(p, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "DontCare":
                continue
            if len(fields) not in (15, 16):
                raise ValueError(f"{p}:{number}: a KITTI label_2 line has 15 fields (16 with a score), "
                                 f"got {len(fields)}")
            try:
                v = [float(x) for x in fields[1:]]
            except ValueError:
                raise ValueError(f"{p}:{number}: fields 2-{len(fields)} must be numbers") from None
            h, w, length = v[7:10]
            location, ry = tuple(v[10:13]), v[13]
            corners = _camera_corners(h, w, length, location, ry)
            corners = calib.camera_to_lidar(corners) if calib is not None else corners @ NOMINAL_CAMERA_TO_LIDAR.T
            boxes.append(Box3D(fields[0], v[0], int(v[1]), v[2], tuple(v[3:7]), (h, w, length), location, ry,
                               v[14] if len(v) == 15 else None, corners))
    return boxes
