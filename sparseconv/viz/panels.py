"""Pictures composed of views: the two-view scan picture with its legend, the ground-truth /
prediction / error comparison, the confusion matrix, and writing PNGs.

Every legend text is wrapped to the pixel width of its column (at spaces, and inside a
word too long for one line after a ``/ _ - .``), so long file names are wrapped, never cut.
"""
from __future__ import annotations

import math
import os
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .colors import BACKGROUND, IGNORED, Legend, colormap, error_colors, scan_colors
from .render import BirdsEyeView, PerspectiveCamera, render_birdseye, render_perspective

__all__ = ["render_views", "render_comparison", "render_confusion_matrix", "save_png", "wrap_text"]

_FG, _DIM, _RULE = (235, 235, 235), (150, 150, 160), (60, 62, 72)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _text_width(font, text: str) -> float:
    return float(font.getlength(text))


def _break_word(word: str, font, max_width: float) -> List[str]:
    """Cut a word wider than ``max_width`` into pieces that fit, preferring cuts after ``/_-.``."""
    pieces, rest = [], word
    while rest and _text_width(font, rest) > max_width:
        n = 1
        while n < len(rest) and _text_width(font, rest[: n + 1]) <= max_width:
            n += 1
        soft = max((rest.rfind(c, 0, n) for c in "/_-."), default=-1)
        cut = soft + 1 if soft >= n // 2 else n
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def wrap_text(text: str, font, max_width: float) -> List[str]:
    """Lines of ``text`` each at most ``max_width`` pixels wide in ``font``; nothing is dropped."""
    lines: List[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if _text_width(font, candidate) <= max_width:
            line = candidate
            continue
        if line:
            lines.append(line)
        pieces = _break_word(word, font, max_width)
        lines.extend(pieces[:-1])
        line = pieces[-1]
    if line:
        lines.append(line)
    return lines


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


def _scale_bar(draw, view: BirdsEyeView, x0: int, S: int) -> None:
    metres = _nice_step(view.bounds[2] - view.bounds[0])
    y0 = S - 18
    draw.rectangle([x0 + 14, y0, x0 + 14 + metres * view.scale, y0 + 4], fill=_FG)
    draw.text((x0 + 14, y0 - 18), _fmt_len(metres), fill=_FG, font=_font(13))


def _draw_legend(canvas, x: int, width: int, bottom: int, title: str, subtitle: str,
                 legends: Sequence[Legend]) -> None:
    """The legend column: wrapped title and subtitle, then swatches or a colour bar per legend."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(canvas)
    font, small = _font(16), _font(13)
    inner = width - 24
    y = 8
    for line in wrap_text(title, font, inner):
        draw.text((x, y), line, fill=_FG, font=font)
        y += 20
    y += 6 if title else 0
    for line in wrap_text(subtitle, small, inner):
        draw.text((x, y), line, fill=_DIM, font=small)
        y += 17
    y += 7
    for legend in legends:
        if legend.entries:
            draw.text((x, y), legend.title, fill=_FG, font=font)
            y += 24
            for text, rgb in legend.entries:
                lines = wrap_text(text, small, inner - 22)
                if y + 17 * len(lines) > bottom - 6:
                    draw.text((x, y), "...", fill=_DIM, font=small)
                    return
                draw.rectangle([x, y + 2, x + 14, y + 16], fill=tuple(int(c) for c in rgb), outline=(200, 200, 200))
                for k, line in enumerate(lines):
                    draw.text((x + 22, y + 1 + 17 * k), line, fill=_FG, font=small)
                y += 17 * len(lines) + 5
            y += 10
        elif legend.lo is not None and legend.hi is not None:
            draw.text((x, y), legend.title + (f" ({legend.unit})" if legend.unit else ""), fill=_FG, font=font)
            y += 26
            bar_h = min(260, bottom - y - 30)
            if bar_h < 20:
                return
            strip = np.repeat(colormap(np.linspace(1, 0, bar_h), 0, 1)[:, None, :], 22, axis=1)
            canvas.paste(Image.fromarray(strip), (x, y))
            draw.rectangle([x, y, x + 21, y + bar_h - 1], outline=(200, 200, 200))
            draw.text((x + 30, y - 2), f"{legend.hi:.3g}", fill=_FG, font=small)
            draw.text((x + 30, y + bar_h - 14), f"{legend.lo:.3g}", fill=_FG, font=small)
            y += bar_h + 16


def _world_radius(points: np.ndarray, point_size: Optional[float], S: int) -> Tuple[Optional[int], Optional[int]]:
    """Splat radii (bird's-eye, perspective) that cover ``point_size`` metres; None: automatic."""
    pts = points[np.isfinite(points).all(1)]
    if point_size is None or not pts.shape[0]:
        return None, None
    view = BirdsEyeView.fit(pts, S, S)
    bev = int(min(12, max(0, math.ceil(point_size * view.scale / 2 - 0.5))))
    cam = PerspectiveCamera.looking_at(pts, S, S)
    depth = cam.project(pts)[2]
    depth = depth[np.isfinite(depth) & (depth > 0)]
    per = int(min(6, max(1, round(cam.focal * point_size / (2 * float(np.median(depth))))))) if depth.size else None
    return bev, per


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
    pts = np.asarray(points, dtype=np.float64)
    bev_radius, per_radius = _world_radius(pts, point_size, S)
    bev, view = render_birdseye(points, colors, S, S, point_radius=bev_radius, square=point_size is not None,
                                background=background)
    per, _ = render_perspective(points, colors, S, S, point_radius=per_radius, background=background)
    canvas = Image.new("RGB", (2 * S + legend_width, S), tuple(int(c) for c in background))
    canvas.paste(Image.fromarray(bev), (0, 0))
    canvas.paste(Image.fromarray(per), (S, 0))
    draw = ImageDraw.Draw(canvas)
    for x in (S, 2 * S):
        draw.line([(x, 0), (x, S)], fill=_RULE, width=1)
    draw.text((10, 8), "bird's-eye view (x right, y up)", fill=_FG, font=_font(16))
    draw.text((S + 10, 8), "perspective view", fill=_FG, font=_font(16))
    _scale_bar(draw, view, 0, S)
    _draw_legend(canvas, 2 * S + 14, legend_width, S, title,
                 f"{len(points):,} points" if subtitle is None else subtitle, [legend] if legend is not None else [])
    return np.asarray(canvas)


def render_comparison(
    points: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    *,
    label_names: Optional[Mapping[int, str]] = None,
    label_colors: Optional[Mapping[int, Sequence[int]]] = None,
    title: str = "",
    subtitle: Optional[str] = None,
    panel_size: int = 640,
    legend_width: int = 230,
    ignore_below: int = 0,
) -> np.ndarray:
    """Ground truth, prediction and error (wrong points red) as three bird's-eye panels over
    one shared view, with the class legend and the error shares.

    Shape: ``points [P, 3]``, ``truth``/``prediction`` integer ``[P]``; labels below
    ``ignore_below`` have no ground truth. Returns ``uint8 [S, 3 * S + legend_width, 3]``.
    """
    from PIL import Image, ImageDraw

    pts = np.asarray(points, dtype=np.float64)
    t = np.asarray(truth).astype(np.int64).reshape(-1)
    p = np.asarray(prediction).astype(np.int64).reshape(-1)
    if not (t.size == p.size == pts.shape[0]):
        raise ValueError(f"points, truth and prediction must have one row per point, got {pts.shape[0]}, "
                         f"{t.size} and {p.size}")
    S = int(panel_size)
    known = t >= ignore_below
    both = np.concatenate([t[known], p])
    both_colors, class_legend = scan_colors(np.zeros((both.size, 3)), "label", labels=both, label_names=label_names,
                                            label_colors=label_colors)
    class_legend.title = "classes (truth + prediction)"
    truth_colors = np.empty((t.size, 3), dtype=np.uint8)
    truth_colors[:] = IGNORED
    truth_colors[known] = both_colors[: int(known.sum())]
    err, err_legend = error_colors(t, p, ignore_below)
    finite = np.isfinite(pts).all(1)
    view = BirdsEyeView.fit(pts[finite], S, S) if finite.any() else BirdsEyeView((0, 0, 1, 1), S, S)
    canvas = Image.new("RGB", (3 * S + legend_width, S), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    heads = ("ground truth", "prediction", "error (wrong points red)")
    for k, (colors, head) in enumerate(zip((truth_colors, both_colors[int(known.sum()):], err), heads)):
        img, _ = render_birdseye(pts, colors, view=view)
        canvas.paste(Image.fromarray(img), (k * S, 0))
        draw.line([(k * S + S, 0), (k * S + S, S)], fill=_RULE, width=1)
        draw.text((k * S + 10, 8), head, fill=_FG, font=_font(16))
    _scale_bar(draw, view, 0, S)
    _draw_legend(canvas, 3 * S + 14, legend_width, S, title,
                 f"{pts.shape[0]:,} points" if subtitle is None else subtitle, [err_legend, class_legend])
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

    from ..metrics import iou_per_class, mean_iou

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
              fill=_FG, font=_font(16))
    draw.text((label_w, 34), "predicted class ->", fill=(170, 170, 170), font=small)
    draw.text((10, top - 18), "true class", fill=(170, 170, 170), font=small)
    for j, name in enumerate(class_names):  # column headers, staggered over two rows
        x = label_w + j * cell + 4
        draw.text((x, 56 + (j % 2) * 22), name[:10], fill=(220, 220, 220), font=small)
    shade = colormap(rates.reshape(-1), 0.0, 1.0).reshape(C, C, 3)
    for i, name in enumerate(class_names):
        y = top + i * cell
        draw.text((10, y + cell // 2 - 8), name[:16], fill=(220, 220, 220), font=text)
        for j in range(C):
            x = label_w + j * cell
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=tuple(int(v) for v in shade[i, j]))
            ink = (0, 0, 0) if rates[i, j] > 0.55 else (240, 240, 240)
            draw.text((x + 6, y + cell // 2 - 8), f"{100 * rates[i, j]:.0f}", fill=ink, font=text)
        iou_text = "  -" if np.isnan(iou[i]) else f"{100 * iou[i]:.1f}"
        draw.text((label_w + C * cell + 10, y + cell // 2 - 16), f"IoU {iou_text}", fill=_FG, font=text)
        draw.text((label_w + C * cell + 10, y + cell // 2 + 2), f"n={int(rows[i, 0]):,}", fill=_DIM, font=small)
    draw.text((label_w, top + C * cell + 12), "cells: % of the true class's items", fill=_DIM, font=small)
    return np.asarray(image, dtype=np.uint8)


def save_png(path: Union[str, "os.PathLike[str]"], image: np.ndarray) -> str:
    """Write ``uint8 [H, W, 3]`` as a PNG, atomically (temporary file, then rename)."""
    from PIL import Image

    from ..io import atomic_write

    p = os.fspath(path)
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{p}: image must be uint8 [H, W, 3|4], got {arr.dtype} {arr.shape}")
    with atomic_write(p) as f:
        Image.fromarray(arr).save(f, format="PNG")
    return p
