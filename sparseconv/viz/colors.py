"""Colours for pictures and the browser viewer: the class palette, a scalar colour map,
fallback colours for unnamed labels, per-point colours of a scan and its legend.

The class palette (:data:`CLASS_PALETTE`) is this project's own, designed for the 19
SemanticKITTI classes (a superset of the synthetic street's 7): neighbouring surfaces that
share the ground differ in hue *and* lightness (road dark purple, sidewalk amber, parking
salmon, terrain light green, other-ground brick), vehicles are blues, people reds and
pinks, structures light greys and browns. Every pair of classes is at least 20 apart in
CIELAB (CIE76 delta E); road and sidewalk are about 130 apart. Pure red is kept for the
error layer (:data:`WRONG`), where right points are a dim grey (:data:`RIGHT`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "BACKGROUND",
    "COLOR_MODES",
    "CLASS_PALETTE",
    "RIGHT",
    "WRONG",
    "IGNORED",
    "Legend",
    "class_colors",
    "colormap",
    "label_palette",
    "label_table",
    "robust_range",
    "scan_colors",
    "error_colors",
]

RGB = Tuple[int, int, int]

#: Background colour of every view (RGB).
BACKGROUND: RGB = (16, 18, 24)

#: Colour modes of :func:`scan_colors`.
COLOR_MODES = ("height", "intensity", "label", "rgb")

#: Class name -> RGB, for the SemanticKITTI classes (and so the synthetic street's).
CLASS_PALETTE: Dict[str, RGB] = {
    "car": (55, 115, 245),
    "bicycle": (120, 225, 255),
    "motorcycle": (135, 75, 250),
    "truck": (25, 45, 150),
    "other-vehicle": (0, 175, 190),
    "person": (235, 25, 80),
    "bicyclist": (255, 140, 200),
    "motorcyclist": (175, 30, 175),
    "road": (120, 60, 150),
    "parking": (245, 150, 140),
    "sidewalk": (250, 200, 45),
    "other-ground": (135, 45, 35),
    "building": (180, 188, 205),
    "fence": (185, 130, 70),
    "vegetation": (35, 150, 45),
    "trunk": (95, 60, 25),
    "terrain": (165, 225, 95),
    "pole": (250, 250, 250),
    "traffic-sign": (255, 85, 0),
}

#: Error layer: a point whose prediction is wrong, one that is right, one without ground truth.
WRONG: RGB = (255, 0, 0)
RIGHT: RGB = (88, 92, 104)
IGNORED: RGB = (45, 47, 56)

# Control points of a perceptually ordered dark-blue -> green -> yellow map (viridis-like).
_CMAP = np.array(
    [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
     [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]],
    dtype=np.float64,
)


def class_colors(names: Sequence[str]) -> np.ndarray:
    """``uint8 [len(names), 3]``: the palette colour of each class name (names outside the
    palette get :func:`label_palette` colours of their index)."""
    fallback = label_palette(range(len(names)))
    return np.array([CLASS_PALETTE.get(str(n), fallback[i]) for i, n in enumerate(names)], dtype=np.uint8).reshape(-1, 3)


def colormap(values: np.ndarray, lo: Optional[float] = None, hi: Optional[float] = None) -> np.ndarray:
    """Map scalars to RGB ``uint8 [P, 3]`` (dark blue at ``lo``, yellow at ``hi``).

    ``lo`` / ``hi`` default to the 2nd and 98th percentiles, so a few outliers do not wash
    the picture out. Non-finite values map to grey.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(v)
    if lo is None or hi is None:
        plo, phi = robust_range(v)
        lo = plo if lo is None else lo
        hi = phi if hi is None else hi
    span = hi - lo if hi > lo else 1.0
    t = np.clip((np.where(finite, v, lo) - lo) / span, 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(t.astype(np.int64), len(_CMAP) - 2)
    f = (t - i)[:, None]
    rgb = _CMAP[i] * (1 - f) + _CMAP[i + 1] * f
    rgb[~finite] = 128
    return np.rint(rgb).astype(np.uint8)


def robust_range(values: np.ndarray) -> Tuple[float, float]:
    """The 2nd and 98th percentiles of the finite values (``(0, 1)`` when there are none)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [2, 98])
    return float(lo), float(hi)


def label_palette(ids: Sequence[int]) -> Dict[int, RGB]:
    """Distinct, deterministic colours for label ids with no colour of their own
    (golden-ratio steps around the hue circle)."""
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
    entries: Tuple[Tuple[str, RGB], ...] = ()
    lo: Optional[float] = None
    hi: Optional[float] = None
    unit: str = ""


def label_table(ids: Sequence[int], label_names: Optional[Mapping[int, str]] = None,
                label_colors: Optional[Mapping[int, Sequence[int]]] = None) -> Dict[int, RGB]:
    """Colour per label id: the given colour, else the palette colour of its name, else a
    :func:`label_palette` colour."""
    names = dict(label_names or {})
    table: Dict[int, RGB] = {int(k): tuple(int(c) for c in v) for k, v in (label_colors or {}).items()}
    for i in ids:
        name = names.get(int(i))
        if int(i) not in table and name in CLASS_PALETTE:
            table[int(i)] = CLASS_PALETTE[name]
    table.update(label_palette([int(i) for i in ids if int(i) not in table]))
    return table


def _lookup(table: Mapping[int, RGB], labels: np.ndarray) -> np.ndarray:
    lut_ids = np.array(sorted(table), dtype=np.int64)
    lut = np.array([table[i] for i in lut_ids], dtype=np.uint8).reshape(-1, 3)
    return lut[np.searchsorted(lut_ids, labels)]


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

    Labels take their colour from ``label_colors``, else from :data:`CLASS_PALETTE` by
    their name in ``label_names``, else from :func:`label_palette`. Raises ``ValueError``
    when the mode needs an attribute that is not given.
    """
    P = np.asarray(points).shape[0]
    if mode == "height":
        z = np.asarray(points)[:, 2].astype(np.float64)
        lo, hi = robust_range(z)
        return colormap(z, lo, hi), Legend("height", (), lo, hi, "m")
    if mode == "intensity":
        if intensity is None:
            raise ValueError("no intensity to colour by")
        v = np.asarray(intensity, dtype=np.float64).reshape(P)
        lo, hi = robust_range(v)
        return colormap(v, lo, hi), Legend("intensity", (), lo, hi, "")
    if mode == "rgb":
        if colors is None:
            raise ValueError("no RGB colours to show")
        return np.asarray(colors, dtype=np.uint8).reshape(P, 3), Legend()
    if mode == "label":
        if labels is None:
            raise ValueError("no labels to colour by")
        lab = np.asarray(labels).astype(np.int64).reshape(P)
        ids, counts = np.unique(lab, return_counts=True)
        table = label_table(ids.tolist(), label_names, label_colors)
        names = dict(label_names or {})
        entries = tuple(
            (f"{names.get(int(i), str(int(i)))}  {100.0 * c / max(P, 1):.1f}%", table[int(i)])
            for i, c in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: -t[1])
        )
        return _lookup(table, lab), Legend("labels", entries)
    raise ValueError(f"unknown colour mode {mode!r}; choose from {', '.join(COLOR_MODES)}")


def error_colors(truth: np.ndarray, prediction: np.ndarray, ignore_below: int = 0) -> Tuple[np.ndarray, Legend]:
    """The error layer: :data:`WRONG` where ``prediction != truth``, :data:`RIGHT` where
    equal, :data:`IGNORED` where ``truth < ignore_below`` (no ground truth).

    Shape: ``truth``, ``prediction`` ``[P]`` integers -> ``uint8 [P, 3]`` and a legend with
    the share of each.
    """
    t = np.asarray(truth).astype(np.int64).reshape(-1)
    p = np.asarray(prediction).astype(np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction must have the same number of points, got {t.size} and {p.size}")
    known = t >= ignore_below
    wrong = known & (t != p)
    out = np.empty((t.size, 3), dtype=np.uint8)
    out[:] = IGNORED
    out[known] = RIGHT
    out[wrong] = WRONG
    n = max(int(known.sum()), 1)
    entries = [(f"wrong  {100.0 * wrong.sum() / n:.1f}%", WRONG), (f"right  {100.0 * (known & ~wrong).sum() / n:.1f}%", RIGHT)]
    if not known.all():
        entries.append((f"no ground truth  {100.0 * (~known).sum() / max(t.size, 1):.1f}%", IGNORED))
    return out, Legend("prediction vs truth", tuple(entries))
