"""The :class:`Scan` every reader returns: points plus per-point attributes under canonical names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Scan"]


@dataclass(eq=False)
class Scan:
    """A point cloud read from a file.

    Attributes:
        points: ``[P, 3]`` float32 or float64 (as stored; LAS and double-precision files
            give float64).
        attributes: per-point arrays with ``P`` rows under canonical names (see
            :mod:`sparseconv.io`): ``intensity``, ``colors``, ``normals``, ``labels``,
            ``instance``, and any other named column.
        path: the file it came from ("" when built in memory).
        format: short format name (``"ply"``, ``"pcd"``, ``"kitti"``, ...).
        label_names: id -> class name, when the file (or its format) says.
        label_colors: id -> RGB, when known (used by the renderer's legend).
    """

    points: np.ndarray
    attributes: Dict[str, np.ndarray] = field(default_factory=dict)
    path: str = ""
    format: str = ""
    label_names: Optional[Dict[int, str]] = None
    label_colors: Optional[Dict[int, Tuple[int, int, int]]] = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def intensity(self) -> Optional[np.ndarray]:
        return self.attributes.get("intensity")

    @property
    def colors(self) -> Optional[np.ndarray]:
        return self.attributes.get("colors")

    @property
    def normals(self) -> Optional[np.ndarray]:
        return self.attributes.get("normals")

    @property
    def labels(self) -> Optional[np.ndarray]:
        return self.attributes.get("labels")

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(min, max)`` corners over the finite points, float64 ``[3]`` each."""
        pts = self.points[np.isfinite(self.points).all(1)]
        if pts.shape[0] == 0:
            nan = np.full(3, np.nan)
            return nan, nan
        return pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)

    def feature_columns(self, names: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
        """Stack the named features into float32 ``[P, C]`` and name each column.

        ``names`` entries: ``"xyz"`` (3 columns), ``"intensity"``, ``"rgb"`` (colours
        scaled to ``[0, 1]``), ``"normals"``, ``"ones"`` (a constant 1), or any attribute.
        Raises ``KeyError`` naming the file and the attributes it does have.
        """
        cols, col_names = [], []
        for name in names:
            if name == "xyz":
                cols.append(self.points.astype(np.float32))
                col_names += ["x", "y", "z"]
            elif name == "ones":
                cols.append(np.ones((self.num_points, 1), np.float32))
                col_names.append("one")
            elif name in ("rgb", "colors"):
                if self.colors is None:
                    raise KeyError(self._missing(name))
                cols.append(self.colors.astype(np.float32) / 255.0)
                col_names += ["red", "green", "blue"]
            else:
                value = self.attributes.get(name)
                if value is None:
                    raise KeyError(self._missing(name))
                value = value.reshape(self.num_points, -1).astype(np.float32)
                cols.append(value)
                col_names += [name] if value.shape[1] == 1 else [f"{name}{i}" for i in range(value.shape[1])]
        if not cols:
            return np.zeros((self.num_points, 0), np.float32), []
        return np.concatenate(cols, 1), col_names

    def features(self, names: Sequence[str] = ("xyz", "intensity")) -> np.ndarray:
        """:meth:`feature_columns` without the names."""
        return self.feature_columns(names)[0]

    def _missing(self, name: str) -> str:
        have = ", ".join(["xyz", *sorted(self.attributes)]) or "xyz"
        where = self.path or "scan"
        return f"{where}: has no {name!r} attribute (it has: {have})"

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}{list(v.shape[1:]) if v.ndim > 1 else ''}" for k, v in self.attributes.items())
        return f"Scan({self.path or '<memory>'}, format={self.format}, points={self.num_points}, attributes=[{attrs}])"
