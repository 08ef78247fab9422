"""Headless pictures of point clouds: numpy projection and z-buffer, PNG through Pillow.

No OpenGL, EGL or Vulkan is needed, so this works on servers and in CI. Two views:

* :func:`render_birdseye` -- orthographic, looking down the ``-z`` axis; ``x`` to the
  right, ``y`` up the image; where several points fall on one pixel the highest wins.
  :class:`BirdsEyeView` maps world ``(x, y)`` to pixel ``(column, row)``.
* :func:`render_perspective` -- a pinhole camera (:class:`PerspectiveCamera`, by default
  above and behind the scene looking at its centre); the nearest point wins, and far
  points fade towards the background (depth fog) so the shape reads.

Points are splatted as small discs (``point_radius`` pixels) into a z-buffer: candidate
pixels of every point are sorted by (pixel, depth) and the first of each pixel is kept,
so the result does not depend on the input order.

:func:`render_views` puts both views side by side with a legend (class swatches for
labels, a colour bar for scalars) and a scale bar; :func:`save_png` writes it atomically.
:func:`scan_colors` colours a :class:`sparseconv.io.Scan` by height, intensity, label or
its own RGB.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "BACKGROUND",
    "COLOR_MODES",
    "Legend",
    "BirdsEyeView",
    "PerspectiveCamera",
    "colormap",
    "label_palette",
    "scan_colors",
    "render_birdseye",
    "render_perspective",
    "render_views",
    "render_confusion_matrix",
    "save_png",
]

#: Background colour of every view (RGB).
BACKGROUND: Tuple[int, int, int] = (16, 18, 24)

#: Colour modes of :func:`scan_colors`.
COLOR_MODES = ("height", "intensity", "label", "rgb")

# Control points of a perceptually ordered dark-blue -> green -> yellow map (viridis-like).
_CMAP = np.array(
    [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
     [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]],
    dtype=np.float64,
)


def colormap(values: np.ndarray, lo: Optional[float] = None, hi: Optional[float] = None) -> np.ndarray:
    """Map scalars to RGB ``uint8 [P, 3]`` (dark blue at ``lo``, yellow at ``hi``).

    ``lo`` / ``hi`` default to the 2nd and 98th percentiles, so a few outliers do not wash
    the picture out. Non-finite values map to grey.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(v)
    if lo is None or hi is None:
        if finite.any():
            plo, phi = np.percentile(v[finite], [2, 98])
        else:
            plo, phi = 0.0, 1.0
        lo = plo if lo is None else lo
        hi = phi if hi is None else hi
    span = hi - lo if hi > lo else 1.0
    t = np.clip((np.where(finite, v, lo) - lo) / span, 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(t.astype(np.int64), len(_CMAP) - 2)
    f = (t - i)[:, None]
    rgb = _CMAP[i] * (1 - f) + _CMAP[i + 1] * f
    rgb[~finite] = 128
    return np.rint(rgb).astype(np.uint8)


def label_palette(ids: Sequence[int]) -> Dict[int, Tuple[int, int, int]]:
    """Distinct, deterministic colours for label ids with no colour of their own."""
    out = {}
    for i in ids:
        h = (int(i) * 0.618033988749895 + 0.11) % 1.0
        s, v = 0.65, 0.95
        k = np.array([5.0, 3.0, 1.0])
        rgb = v - v * s * np.clip(np.minimum((k + h * 6) % 6, 4 - (k + h * 6) % 6), 0, 1)
        out[int(i)] = tuple(int(round(c * 255)) for c in rgb)
    return out


@dataclass
class Legend:
    """What the legend column shows.

    ``entries``: ``(text, rgb)`` swatches (labels); or a colour bar from ``lo`` to ``hi``
    titled ``title`` when ``entries`` is empty and ``lo``/``hi`` are set.
    """

    title: str = ""
    entries: Tuple[Tuple[str, Tuple[int, int, int]], ...] = ()
    lo: Optional[float] = None
    hi: Optional[float] = None
    unit: str = ""


def scan_colors(
    points: np.ndarray,
    mode: str,
    *,
    intensity: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    colors: Optional[np.ndarray] = None,
    label_names: Optional[Mapping[int, str]] = None,
    label_colors: Optional[Mapping[int, Sequence[int]]] = None,
) -> Tuple[np.ndarray, Legend]:
    """Per-point RGB for a colour mode (one of :data:`COLOR_MODES`) and its legend.

    Raises ``ValueError`` when the mode needs an attribute that is not given.
    """
    P = np.asarray(points).shape[0]
    if mode == "height":
        z = np.asarray(points)[:, 2].astype(np.float64)
        lo, hi = (np.percentile(z[np.isfinite(z)], [2, 98]) if np.isfinite(z).any() else (0.0, 1.0))
        return colormap(z, lo, hi), Legend("height", (), float(lo), float(hi), "m")
    if mode == "intensity":
        if intensity is None:
            raise ValueError("no intensity to colour by")
        v = np.asarray(intensity, dtype=np.float64).reshape(P)
        lo, hi = (np.percentile(v[np.isfinite(v)], [2, 98]) if np.isfinite(v).any() else (0.0, 1.0))
        return colormap(v, lo, hi), Legend("intensity", (), float(lo), float(hi), "")
    if mode == "rgb":
        if colors is None:
            raise ValueError("no RGB colours to show")
        return np.asarray(colors, dtype=np.uint8).reshape(P, 3), Legend()
    if mode == "label":
        if labels is None:
            raise ValueError("no labels to colour by")
        lab = np.asarray(labels).astype(np.int64).reshape(P)
        ids, counts = np.unique(lab, return_counts=True)
        table: Dict[int, Tuple[int, int, int]] = {}
        given = dict(label_colors or {})
        missing = [int(i) for i in ids if int(i) not in given]
        table.update({int(k): tuple(int(c) for c in v) for k, v in given.items()})
        table.update(label_palette(missing))
        lut_ids = np.array(sorted(table), dtype=np.int64)
        lut = np.array([table[i] for i in lut_ids], dtype=np.uint8)
        out = lut[np.searchsorted(lut_ids, lab)]
        names = dict(label_names or {})
        entries = tuple(
            (f"{names.get(int(i), str(int(i)))}  {100.0 * c / max(P, 1):.1f}%", table[int(i)])
            for i, c in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: -t[1])
        )
        return out, Legend("labels", entries)
    raise ValueError(f"unknown colour mode {mode!r}; choose from {', '.join(COLOR_MODES)}")


# --------------------------------------------------------------------------------------
# Projection and z-buffer
# --------------------------------------------------------------------------------------

def _splat_offsets(radius: int, square: bool = False) -> np.ndarray:
    r = int(radius)
    ys, xs = np.mgrid[-r: r + 1, -r: r + 1]
    keep = np.ones_like(xs, bool) if square else xs * xs + ys * ys <= r * r + r  # rounder than <= r^2
    return np.stack([xs[keep], ys[keep]], 1)


def _zbuffer(width: int, height: int, cols: np.ndarray, rows: np.ndarray, depth: np.ndarray,
             colors: np.ndarray, radius: int, background: Sequence[int],
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
    if not pix_parts or sum(p.size for p in pix_parts) == 0:
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


def _finite(points: np.ndarray, colors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape [P, 3], got {pts.shape}")
    cols = np.asarray(colors, dtype=np.uint8)
    if cols.shape != (pts.shape[0], 3):
        raise ValueError(f"colors must have shape [P, 3] = [{pts.shape[0]}, 3], got {cols.shape}")
    keep = np.isfinite(pts).all(1)
    return pts[keep], cols[keep]


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


def _auto_radius(cols: np.ndarray, rows: np.ndarray, width: int, height: int) -> int:
    """1-pixel points where they already cover their area densely, 2x2-ish discs otherwise."""
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    if not inside.any():
        return 1
    pix = np.unique(np.floor(rows[inside]).astype(np.int64) * width + np.floor(cols[inside]).astype(np.int64))
    return 0 if pix.size > 0.35 * width * height else 1


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
    in pixels (default: 0 for dense clouds, 1 for sparse ones); ``square`` splats squares
    (voxel footprints) instead of discs. Returns ``(image, view)``.
    """
    pts, cols = _finite(points, colors)
    if view is None:
        view = BirdsEyeView.fit(pts, width, height) if pts.shape[0] else BirdsEyeView((0, 0, 1, 1), width, height)
    if pts.shape[0] == 0:
        img, _ = _zbuffer(view.width, view.height, np.zeros(0), np.zeros(0), np.zeros(0), cols, 0, background)
        return img, view
    u, v = view.project(pts)
    radius = _auto_radius(u, v, view.width, view.height) if point_radius is None else int(point_radius)
    img, _ = _zbuffer(view.width, view.height, u, v, -pts[:, 2], cols, radius, background, square)
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

    def project(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(columns, rows, depth)``; depth is the distance along the viewing axis."""
        right, up, forward = self.basis()
        d = np.asarray(points, dtype=np.float64) - np.asarray(self.eye, np.float64)
        x, y, z = d @ right, d @ up, d @ forward
        f = (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols = self.width / 2 + f * x / z
            rows = self.height / 2 - f * y / z
        return cols, rows, z

    @classmethod
    def looking_at(cls, points: np.ndarray, width: int, height: int, *, azimuth_deg: float = -60.0,
                   elevation_deg: float = 32.0, fov_deg: float = 60.0, percentile: float = 5.0) -> "PerspectiveCamera":
        """A camera above and beside the cloud, aimed at the centre of its central
        ``[percentile, 100 - percentile]`` box, far enough back for that box to fill the view."""
        p = np.asarray(points, dtype=np.float64)
        lo = np.percentile(p, percentile, axis=0)
        hi = np.percentile(p, 100 - percentile, axis=0)
        centre = (lo + hi) / 2
        centre[2] = lo[2] + 0.3 * (hi[2] - lo[2])
        radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)
        distance = radius / math.tan(math.radians(fov_deg) / 2) * 0.95
        az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
        direction = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        eye = centre + distance * direction
        return cls(tuple(eye.tolist()), tuple(centre.tolist()), int(width), int(height), fov_deg)


def render_perspective(
    points: np.ndarray,
    colors: np.ndarray,
    width: int = 640,
    height: int = 640,
    *,
    camera: Optional[PerspectiveCamera] = None,
    point_radius: int = 1,
    fog: float = 0.55,
    background: Sequence[int] = BACKGROUND,
) -> Tuple[np.ndarray, PerspectiveCamera]:
    """Perspective picture ``uint8 [H, W, 3]``; the nearest point wins a pixel, and colours
    fade towards the background with depth by up to ``fog``. Returns ``(image, camera)``."""
    pts, cols = _finite(points, colors)
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
    img, _ = _zbuffer(camera.width, camera.height, u, v, z, cols, point_radius, background)
    return img, camera


# --------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _nice_step(span: float) -> float:
    """A 1/2/5 x 10^k length near a fifth of ``span``."""
    raw = span / 5
    k = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if m * k >= raw:
            return m * k
    return 10 * k


def _fmt_len(metres: float) -> str:
    return f"{metres:g} m" if metres >= 1 else f"{metres * 100:g} cm"


def render_views(
    points: np.ndarray,
    colors: np.ndarray,
    *,
    legend: Optional[Legend] = None,
    title: str = "",
    subtitle: Optional[str] = None,
    panel_size: int = 640,
    legend_width: int = 230,
    point_size: Optional[float] = None,
    background: Sequence[int] = BACKGROUND,
) -> np.ndarray:
    """Bird's-eye and perspective views side by side, with a legend column.

    ``subtitle`` (default ``"N points"``) goes under the title. ``point_size``: the world
    size of each point in metres (e.g. the voxel size when the points are voxel centres),
    so the splats cover it; default: the automatic pixel radius. Returns
    ``uint8 [panel_size, 2 * panel_size + legend_width, 3]``.
    """
    from PIL import Image, ImageDraw

    S = int(panel_size)
    bev_radius = per_radius = None
    pts = np.asarray(points, dtype=np.float64)
    if point_size is not None and pts.shape[0]:
        view0 = BirdsEyeView.fit(pts[np.isfinite(pts).all(1)], S, S)
        bev_radius = int(min(12, max(0, math.ceil(point_size * view0.scale / 2 - 0.5))))
        cam0 = PerspectiveCamera.looking_at(pts[np.isfinite(pts).all(1)], S, S)
        depth = cam0.project(pts)[2]
        depth = depth[np.isfinite(depth) & (depth > 0)]
        if depth.size:
            f = (S / 2) / math.tan(math.radians(cam0.fov_deg) / 2)
            per_radius = int(min(6, max(1, round(f * point_size / (2 * float(np.median(depth)))))))
    bev, view = render_birdseye(points, colors, S, S, point_radius=bev_radius, square=point_size is not None,
                                background=background)
    per, _ = render_perspective(points, colors, S, S, point_radius=1 if per_radius is None else per_radius,
                                background=background)
    W = 2 * S + legend_width
    canvas = Image.new("RGB", (W, S), tuple(int(c) for c in background))
    canvas.paste(Image.fromarray(bev), (0, 0))
    canvas.paste(Image.fromarray(per), (S, 0))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(16), _font(13)
    fg, dim = (235, 235, 235), (150, 150, 160)
    draw.line([(S, 0), (S, S)], fill=(60, 62, 72), width=1)
    draw.line([(2 * S, 0), (2 * S, S)], fill=(60, 62, 72), width=1)
    draw.text((10, 8), "bird's-eye view (x right, y up)", fill=fg, font=font)
    draw.text((S + 10, 8), "perspective view", fill=fg, font=font)
    # scale bar on the bird's-eye view
    metres = _nice_step((view.bounds[2] - view.bounds[0]))
    bar = metres * view.scale
    x0, y0 = 14, S - 18
    draw.rectangle([x0, y0, x0 + bar, y0 + 4], fill=fg)
    draw.text((x0, y0 - 18), _fmt_len(metres), fill=fg, font=small)
    # legend column
    lx = 2 * S + 14
    y = 8
    if title:
        for line in _wrap(title, 26):
            draw.text((lx, y), line, fill=fg, font=font)
            y += 20
        y += 6
    for line in _wrap(f"{len(points):,} points" if subtitle is None else subtitle, 34):
        draw.text((lx, y), line, fill=dim, font=small)
        y += 17
    y += 7
    if legend is not None and legend.entries:
        draw.text((lx, y), legend.title, fill=fg, font=font)
        y += 24
        for text, rgb in legend.entries:
            if y > S - 24:
                draw.text((lx, y), "...", fill=dim, font=small)
                break
            draw.rectangle([lx, y + 2, lx + 14, y + 16], fill=tuple(int(c) for c in rgb), outline=(200, 200, 200))
            draw.text((lx + 22, y + 1), text, fill=fg, font=small)
            y += 22
    elif legend is not None and legend.lo is not None and legend.hi is not None:
        draw.text((lx, y), legend.title + (f" ({legend.unit})" if legend.unit else ""), fill=fg, font=font)
        y += 26
        bar_h = min(260, S - y - 30)
        ramp = colormap(np.linspace(1, 0, bar_h), 0, 1)
        strip = np.repeat(ramp[:, None, :], 22, axis=1)
        canvas.paste(Image.fromarray(strip), (lx, y))
        draw.rectangle([lx, y, lx + 21, y + bar_h - 1], outline=(200, 200, 200))
        draw.text((lx + 30, y - 2), f"{legend.hi:.3g}", fill=fg, font=small)
        draw.text((lx + 30, y + bar_h - 14), f"{legend.lo:.3g}", fill=fg, font=small)
    return np.asarray(canvas)


def render_confusion_matrix(
    confusion,
    class_names: Sequence[str],
    *,
    title: str = "",
    cell_size: int = 56,
) -> np.ndarray:
    """A confusion matrix as a picture: rows are true classes, columns predictions.

    Each cell is shaded by the row-normalised rate (recall for the diagonal) and prints it in
    percent; the right column gives each class's IoU and item count. ``confusion``: integer
    ``[C, C]`` counts (``confusion[t, p]``, as :func:`sparseconv.metrics.confusion_matrix`).
    Returns ``uint8 [H, W, 3]`` (write it with :func:`save_png`).
    """
    import torch
    from PIL import Image, ImageDraw

    from .metrics import iou_per_class, mean_iou

    counts = np.asarray(confusion, dtype=np.float64)
    C = len(class_names)
    if counts.shape != (C, C):
        raise ValueError(f"confusion must be [{C}, {C}] for {C} class names, got {counts.shape}")
    rows = counts.sum(1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    iou = iou_per_class(torch.from_numpy(counts)).numpy()
    cell = int(cell_size)
    label_w, top, right, bottom = 130, 120, 150, 40
    width, height = label_w + C * cell + right, top + C * cell + bottom
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, text = _font(12), _font(14)
    heading = title or "confusion matrix"
    draw.text((10, 8), f"{heading}   mIoU {100 * mean_iou(torch.from_numpy(counts)):.1f}%",
              fill=(235, 235, 235), font=_font(16))
    draw.text((label_w, 34), "predicted class ->", fill=(170, 170, 170), font=small)
    draw.text((10, top - 18), "true class", fill=(170, 170, 170), font=small)
    for j, name in enumerate(class_names):  # column headers, written diagonally downwards
        x = label_w + j * cell + 4
        draw.text((x, 56 + (j % 2) * 22), name[:10], fill=(220, 220, 220), font=small)
    shade = colormap(rates.reshape(-1), 0.0, 1.0).reshape(C, C, 3)
    for i, name in enumerate(class_names):
        y = top + i * cell
        draw.text((10, y + cell // 2 - 8), name[:16], fill=(220, 220, 220), font=text)
        for j in range(C):
            x = label_w + j * cell
            colour = tuple(int(v) for v in shade[i, j])
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=colour)
            ink = (0, 0, 0) if rates[i, j] > 0.55 else (240, 240, 240)
            draw.text((x + 6, y + cell // 2 - 8), f"{100 * rates[i, j]:.0f}", fill=ink, font=text)
        iou_text = "  -" if np.isnan(iou[i]) else f"{100 * iou[i]:.1f}"
        draw.text((label_w + C * cell + 10, y + cell // 2 - 16), f"IoU {iou_text}", fill=(235, 235, 235), font=text)
        draw.text((label_w + C * cell + 10, y + cell // 2 + 2), f"n={int(rows[i, 0]):,}", fill=(150, 150, 150),
                  font=small)
    draw.text((label_w, top + C * cell + 12), "cells: % of the true class's items", fill=(150, 150, 150), font=small)
    return np.asarray(image, dtype=np.uint8)


def _wrap(text: str, width: int) -> List[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return lines


def save_png(path: Union[str, "os.PathLike[str]"], image: np.ndarray) -> str:
    """Write ``uint8 [H, W, 3]`` as a PNG, atomically (temporary file, then rename)."""
    from PIL import Image

    from .io import atomic_write

    p = os.fspath(path)
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{p}: image must be uint8 [H, W, 3|4], got {arr.dtype} {arr.shape}")
    with atomic_write(p) as f:
        Image.fromarray(arr).save(f, format="PNG")
    return p
