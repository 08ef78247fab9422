"""Headless views of point clouds: numpy projection and a z-buffer, no OpenGL.

* :func:`render_birdseye` -- orthographic, looking down the ``-z`` axis; ``x`` to the
  right, ``y`` up the image; where several points fall on one pixel the highest wins.
  :class:`BirdsEyeView` maps world ``(x, y)`` to pixel ``(column, row)``.
* :func:`render_perspective` -- a pinhole camera (:class:`PerspectiveCamera`, by default
  above and beside the cloud, as close as it can be with every point in view); the nearest
  point wins, and far points fade towards the background (depth fog).

Points are splatted as discs (or squares) of ``point_radius`` pixels into a z-buffer:
candidate pixels of every point are sorted by (pixel, depth) and the first of each pixel
is kept, so the result does not depend on the input order. The automatic radius
(:func:`auto_radius`) is 0 where points already cover their area densely and grows up to
:data:`MAX_AUTO_RADIUS` for sparse clouds, so a 50-point cloud is still plainly visible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .colors import BACKGROUND

__all__ = [
    "MAX_AUTO_RADIUS",
    "BirdsEyeView",
    "PerspectiveCamera",
    "auto_radius",
    "render_birdseye",
    "render_perspective",
]

#: Largest splat radius (pixels) :func:`auto_radius` picks.
MAX_AUTO_RADIUS = 6


def _splat_offsets(radius: int, square: bool = False) -> np.ndarray:
    r = int(radius)
    ys, xs = np.mgrid[-r: r + 1, -r: r + 1]
    keep = np.ones_like(xs, bool) if square else xs * xs + ys * ys <= r * r + r  # rounder than <= r^2
    return np.stack([xs[keep], ys[keep]], 1)


def zbuffer(width: int, height: int, cols: np.ndarray, rows: np.ndarray, depth: np.ndarray,
            colors: np.ndarray, radius: int, background: Sequence[int] = BACKGROUND,
            square: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Splat points (pixel centres ``cols, rows``) as discs (or squares); the smallest depth wins.

    Returns the ``[H, W, 3]`` image and the ``[H, W]`` index of the winning point (-1: none).
    """
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = np.asarray(background, dtype=np.uint8)
    owner = np.full(height * width, -1, dtype=np.int64)
    c0 = np.floor(cols).astype(np.int64)
    r0 = np.floor(rows).astype(np.int64)
    idx = np.arange(cols.shape[0])
    pix_parts, depth_parts, idx_parts = [], [], []
    for dx, dy in _splat_offsets(radius, square):
        c, r = c0 + dx, r0 + dy
        ok = (c >= 0) & (c < width) & (r >= 0) & (r < height)
        pix_parts.append(r[ok] * width + c[ok])
        # the point's own pixel beats a neighbour's splat at equal depth
        depth_parts.append(depth[ok] + (1e-6 if (dx or dy) else 0.0))
        idx_parts.append(idx[ok])
    if sum(p.size for p in pix_parts) == 0:
        return img, owner.reshape(height, width)
    pix = np.concatenate(pix_parts)
    dep = np.concatenate(depth_parts)
    who = np.concatenate(idx_parts)
    order = np.lexsort((dep, pix))
    pix_sorted = pix[order]
    first = np.ones(pix_sorted.shape[0], dtype=bool)
    first[1:] = pix_sorted[1:] != pix_sorted[:-1]
    win = order[first]
    owner[pix[win]] = who[win]
    flat = img.reshape(-1, 3)
    flat[pix[win]] = colors[who[win]]
    return img, owner.reshape(height, width)


def finite_points(points: np.ndarray, colors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Check ``points [P, 3]`` and ``colors uint8 [P, 3]``; keep the rows with finite coordinates."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape [P, 3], got {pts.shape}")
    cols = np.asarray(colors, dtype=np.uint8)
    if cols.shape != (pts.shape[0], 3):
        raise ValueError(f"colors must have shape [P, 3] = [{pts.shape[0]}, 3], got {cols.shape}")
    keep = np.isfinite(pts).all(1)
    return pts[keep], cols[keep]


def auto_radius(cols: np.ndarray, rows: np.ndarray, width: int, height: int) -> int:
    """Splat radius for points at pixel positions ``(cols, rows)``.

    0 where the points' distinct pixels cover over 35% of the image (dense already);
    otherwise ``round(0.06 * sqrt(W * H / n))`` for ``n`` distinct pixels, clipped to
    ``[1, MAX_AUTO_RADIUS]``: 1 for a 130k-point scan, 5 for 50 points in 640 x 640.
    """
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    if not inside.any():
        return 1
    pix = np.unique(np.floor(rows[inside]).astype(np.int64) * width + np.floor(cols[inside]).astype(np.int64))
    if pix.size > 0.35 * width * height:
        return 0
    return int(min(MAX_AUTO_RADIUS, max(1, round(0.06 * math.sqrt(width * height / pix.size)))))


@dataclass(frozen=True)
class BirdsEyeView:
    """Orthographic top view: world ``(x, y)`` in ``bounds`` -> pixel ``(column, row)``.

    ``bounds = (xmin, ymin, xmax, ymax)`` is the world rectangle the image covers;
    ``scale`` pixels per metre, the same on both axes (the bounds are grown to the
    image's aspect ratio). Row 0 is the top of the image (``ymax``).
    """

    bounds: Tuple[float, float, float, float]
    width: int
    height: int

    @property
    def scale(self) -> float:
        return self.width / (self.bounds[2] - self.bounds[0])

    def project(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Continuous pixel coordinates ``(columns, rows)``; pixel ``(c, r)`` covers
        ``[c, c + 1) x [r, r + 1)``."""
        p = np.asarray(points, dtype=np.float64)
        s = self.scale
        return (p[:, 0] - self.bounds[0]) * s, (self.bounds[3] - p[:, 1]) * s

    @classmethod
    def fit(cls, points: np.ndarray, width: int, height: int, margin: float = 0.03,
            percentile: float = 0.5) -> "BirdsEyeView":
        """Bounds around the ``[percentile, 100 - percentile]`` range of x and y, grown by
        ``margin`` and to the image's aspect ratio."""
        p = np.asarray(points, dtype=np.float64)
        lo = np.percentile(p[:, :2], percentile, axis=0)
        hi = np.percentile(p[:, :2], 100 - percentile, axis=0)
        centre = (lo + hi) / 2
        span = np.maximum(hi - lo, 1e-6) * (1 + 2 * margin)
        aspect = width / height
        if span[0] / span[1] < aspect:
            span[0] = span[1] * aspect
        else:
            span[1] = span[0] / aspect
        lo, hi = centre - span / 2, centre + span / 2
        return cls((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), int(width), int(height))


def render_birdseye(
    points: np.ndarray,
    colors: np.ndarray,
    width: int = 640,
    height: int = 640,
    *,
    view: Optional[BirdsEyeView] = None,
    point_radius: Optional[int] = None,
    square: bool = False,
    background: Sequence[int] = BACKGROUND,
) -> Tuple[np.ndarray, BirdsEyeView]:
    """Top-down orthographic picture ``uint8 [H, W, 3]``; the highest point wins a pixel.

    ``view`` fixes the world rectangle (default :meth:`BirdsEyeView.fit`); ``point_radius``
    in pixels (default :func:`auto_radius`); ``square`` splats squares (voxel footprints)
    instead of discs. Returns ``(image, view)``.
    """
    pts, cols = finite_points(points, colors)
    if view is None:
        view = BirdsEyeView.fit(pts, width, height) if pts.shape[0] else BirdsEyeView((0, 0, 1, 1), width, height)
    if pts.shape[0] == 0:
        img, _ = zbuffer(view.width, view.height, np.zeros(0), np.zeros(0), np.zeros(0), cols, 0, background)
        return img, view
    u, v = view.project(pts)
    radius = auto_radius(u, v, view.width, view.height) if point_radius is None else int(point_radius)
    img, _ = zbuffer(view.width, view.height, u, v, -pts[:, 2], cols, radius, background, square)
    return img, view


@dataclass(frozen=True)
class PerspectiveCamera:
    """A pinhole camera at ``eye`` looking at ``target`` (``up`` is world +z by default),
    with horizontal field of view ``fov_deg``."""

    eye: Tuple[float, float, float]
    target: Tuple[float, float, float]
    width: int
    height: int
    fov_deg: float = 60.0
    up: Tuple[float, float, float] = (0.0, 0.0, 1.0)

    def basis(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        eye, target = np.asarray(self.eye, np.float64), np.asarray(self.target, np.float64)
        forward = target - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(self.up, np.float64))
        if np.linalg.norm(right) < 1e-9:  # looking straight along up: any right will do
            right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
        right /= np.linalg.norm(right)
        return right, np.cross(right, forward), forward

    @property
    def focal(self) -> float:
        """Focal length in pixels: ``(width / 2) / tan(fov / 2)``."""
        return (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)

    def project(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(columns, rows, depth)``; depth is the distance along the viewing axis."""
        right, up, forward = self.basis()
        d = np.asarray(points, dtype=np.float64) - np.asarray(self.eye, np.float64)
        x, y, z = d @ right, d @ up, d @ forward
        f = self.focal
        with np.errstate(divide="ignore", invalid="ignore"):
            cols = self.width / 2 + f * x / z
            rows = self.height / 2 - f * y / z
        return cols, rows, z

    @classmethod
    def looking_at(cls, points: np.ndarray, width: int, height: int, *, azimuth_deg: float = -60.0,
                   elevation_deg: float = 32.0, fov_deg: float = 60.0, margin: float = 1.04) -> "PerspectiveCamera":
        """A camera above and beside the cloud, aimed at the centre of its bounding box, as
        close as it can be with every point in view (so nothing is cropped).

        With the viewing direction fixed, a point at camera coordinates ``(x, y)`` across
        and ``z0 + d`` along the axis (``d``: the eye's distance from the target) is in the
        image when ``z0 + d >= max(|x| / tan(a_h), |y| / tan(a_v))`` (``a_h``, ``a_v``: the
        half fields of view); ``d`` is the smallest that holds for all points, times
        ``margin``. This is never farther than fitting the bounding sphere, and tighter for
        flat clouds such as LiDAR scans.
        """
        p = np.asarray(points, dtype=np.float64)
        p = p[np.isfinite(p).all(1)]
        lo, hi = (p.min(0), p.max(0)) if p.shape[0] else (np.zeros(3), np.ones(3))
        centre = (lo + hi) / 2
        az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
        direction = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        tan_h = math.tan(math.radians(fov_deg) / 2)
        tan_v = tan_h * height / width
        probe = cls(tuple((centre + direction).tolist()), tuple(centre.tolist()), int(width), int(height), fov_deg)
        right, up, forward = probe.basis()
        radius = max(float(np.sqrt(((p - centre) ** 2).sum(1).max())) if p.shape[0] else 1.0, 1e-3)

        def closest(target: np.ndarray) -> float:
            d = p - target
            need = np.maximum(np.abs(d @ right) / tan_h, np.abs(d @ up) / tan_v) - d @ forward
            return margin * max(float(need.max()) if p.shape[0] else 0.0, 1e-3 * radius)

        distance = closest(centre)
        if p.shape[0]:  # move the target across the view so the cloud's image is centred, then fit again
            d = p - centre
            depth = d @ forward + distance
            u, v = (d @ right) / depth, (d @ up) / depth
            mid = distance * np.array([(u.min() + u.max()) / 2, (v.min() + v.max()) / 2])
            centre = centre + mid[0] * right + mid[1] * up
            distance = closest(centre)
        eye = centre + distance * direction
        return cls(tuple(eye.tolist()), tuple(centre.tolist()), int(width), int(height), fov_deg)


def render_perspective(
    points: np.ndarray,
    colors: np.ndarray,
    width: int = 640,
    height: int = 640,
    *,
    camera: Optional[PerspectiveCamera] = None,
    point_radius: Optional[int] = None,
    fog: float = 0.55,
    background: Sequence[int] = BACKGROUND,
) -> Tuple[np.ndarray, PerspectiveCamera]:
    """Perspective picture ``uint8 [H, W, 3]``; the nearest point wins a pixel, and colours
    fade towards the background with depth by up to ``fog``. ``point_radius`` in pixels
    (default :func:`auto_radius`, at least 1). Returns ``(image, camera)``."""
    pts, cols = finite_points(points, colors)
    if camera is None:
        camera = (PerspectiveCamera.looking_at(pts, width, height) if pts.shape[0]
                  else PerspectiveCamera((1, 1, 1), (0, 0, 0), width, height))
    u, v, z = camera.project(pts)
    near = 1e-3
    keep = np.isfinite(u) & np.isfinite(v) & (z > near)
    u, v, z, cols = u[keep], v[keep], z[keep], cols[keep]
    if z.size and fog > 0:
        zlo, zhi = np.percentile(z, [1, 99])
        a = fog * np.clip((z - zlo) / max(zhi - zlo, 1e-9), 0, 1)[:, None]
        cols = np.rint(cols * (1 - a) + np.asarray(background, np.float64) * a).astype(np.uint8)
    if point_radius is None:
        point_radius = max(1, auto_radius(u, v, camera.width, camera.height))
    img, _ = zbuffer(camera.width, camera.height, u, v, z, cols, int(point_radius), background)
    return img, camera
