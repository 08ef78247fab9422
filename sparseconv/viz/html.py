"""A scan as one self-contained HTML page with a WebGL viewer (:func:`to_html`, :func:`write_html`).

The page needs no network: the viewer (``viewer.js`` and ``viewer.css`` in this package,
written for this project, no third-party library) is inlined, and the data travel in the
page as one base64 blob of little-endian arrays described by a JSON header:

* positions ``float32 [P, 3]``, minus ``offset`` (whole metres, non-zero only when the
  cloud sits far from the origin, so float32 keeps millimetres);
* every per-point attribute of the scan in its smallest faithful type (integers in the
  narrowest integer type that holds their range, floats as float32), and the prediction;
* the voxel layer (cells of a ``voxel_size`` grid anchored at the world origin, one per
  occupied cell: centre, cell index, point count, and a representative point whose colour
  the voxel takes);
* object boxes (8 corners each) from :mod:`sparseconv.viz.boxes`.

A 130k-point LiDAR scan with intensity and labels makes a page of about 3 MB. Above
``max_points`` (default :data:`MAX_DISPLAY_POINTS`) the page shows a uniform random sample
of that many points (seeded) and says so at the top of its panel; the readout then gives
each point's index in the full scan.

The first view (and "reset") looks at the sphere around the box of the 1st-99th
percentiles of the points, from the same side as the PNG's perspective view.

Colour modes: height, intensity, label (the ground truth when a prediction is given), rgb,
prediction, and error (wrong points red, as :func:`sparseconv.viz.colors.error_colors`);
label colours and legends come from :mod:`sparseconv.viz.colors`, so page and PNG agree.
"""
from __future__ import annotations

import base64
import html as _html
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .boxes import Box3D
from .colors import _CMAP, BACKGROUND, CLASS_PALETTE, IGNORED, RIGHT, WRONG, label_table, robust_range

__all__ = ["MAX_DISPLAY_POINTS", "to_html", "write_html"]

#: Most points a page shows; larger clouds are down-sampled for display (and the page says so).
MAX_DISPLAY_POINTS = 1_000_000

_HERE = os.path.dirname(os.path.abspath(__file__))
_MODE_LABELS = {"height": "height", "intensity": "intensity", "label": "label", "rgb": "RGB",
                "prediction": "prediction", "error": "error (wrong points red)"}
#: KITTI object type -> palette class, for box colours.
_BOX_CLASS = {"Car": "car", "Van": "other-vehicle", "Truck": "truck", "Pedestrian": "person",
              "Person_sitting": "person", "Cyclist": "bicyclist", "Tram": "other-vehicle", "Misc": "traffic-sign"}


class _Blob:
    """Arrays packed one after another, each 8-byte aligned, with their header entries."""

    def __init__(self) -> None:
        self.parts: List[bytes] = []
        self.size = 0

    def add(self, array: np.ndarray, **info) -> Dict:
        a = np.ascontiguousarray(array)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        entry = {"dtype": a.dtype.name, "offset": self.size, "length": int(a.size), **info}
        data = a.tobytes()
        self.parts.append(data + b"\0" * (-len(data) % 8))
        self.size += len(self.parts[-1])
        return entry

    def base64(self) -> str:
        return base64.b64encode(b"".join(self.parts)).decode("ascii")


def _compact(values: np.ndarray) -> np.ndarray:
    """Integers in the narrowest integer type holding their range; floats as float32
    (float64 kept where float32 would lose more than one part in 10^7 of the range)."""
    v = np.asarray(values)
    if v.dtype == bool:
        return v.astype(np.uint8)
    if np.issubdtype(v.dtype, np.integer):
        lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
        for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                return v.astype(t)
        return v.astype(np.float64)
    f = v.astype(np.float64)
    finite = f[np.isfinite(f)]
    if finite.size and np.abs(finite).max() > 1e6:
        return f
    return v.astype(np.float32)


def _as_points_and_attributes(scan, attributes):
    if hasattr(scan, "points") and hasattr(scan, "attributes"):
        return (np.asarray(scan.points), dict(scan.attributes), getattr(scan, "label_names", None),
                getattr(scan, "label_colors", None), getattr(scan, "path", "") or "")
    return np.asarray(scan), dict(attributes or {}), None, None, ""


def _label_mode(name: str, attr: str, values: np.ndarray, table: Mapping[int, Sequence[int]],
                names: Mapping[int, str], title: str) -> Dict:
    ids, counts = np.unique(values, return_counts=True)
    entries = [[f"{names.get(int(i), str(int(i)))}  {100.0 * c / max(values.size, 1):.1f}%", list(table[int(i)])]
               for i, c in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: -t[1])]
    return {"name": name, "label": _MODE_LABELS[name], "kind": "label", "attr": attr, "title": title,
            "table": {str(int(i)): list(table[int(i)]) for i in ids}, "entries": entries}


def _voxel_layer(local: np.ndarray, offset: np.ndarray, voxel_size, blob: _Blob) -> Dict:
    size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    if not (np.isfinite(size).all() and (size > 0).all()):
        raise ValueError(f"voxel_size must be positive and finite, got {voxel_size!r}")
    cells = np.floor((local.astype(np.float64) + offset) / size).astype(np.int64)
    cells, first, counts = np.unique(cells, axis=0, return_index=True, return_counts=True)
    centres = (cells + 0.5) * size - offset
    return {"size": float(size.max()), "size_xyz": size.tolist(), "count": int(cells.shape[0]),
            "centres": blob.add(centres.astype(np.float32)), "cells": blob.add(_compact(cells)),
            "counts": blob.add(counts.astype(np.uint32)), "representative": blob.add(first.astype(np.uint32))}


def to_html(
    scan,
    *,
    attributes: Optional[Mapping[str, np.ndarray]] = None,
    prediction: Optional[np.ndarray] = None,
    label_names: Optional[Mapping[int, str]] = None,
    label_colors: Optional[Mapping[int, Sequence[int]]] = None,
    voxel_size: Union[None, float, Sequence[float]] = None,
    boxes: Sequence[Box3D] = (),
    boxes_note: str = "",
    color: str = "auto",
    title: Optional[str] = None,
    max_points: int = MAX_DISPLAY_POINTS,
    seed: int = 0,
) -> str:
    """The page for a scan: a :class:`sparseconv.io.Scan`, or points ``[P, 3]`` with
    ``attributes`` (name -> ``[P]`` or ``[P, C]`` arrays; ``intensity``, ``labels`` and
    ``colors`` (uint8 ``[P, 3]``) get colour modes).

    ``prediction`` (integer ``[P]``, the label id space) adds the prediction and, with
    labels, the error mode; ``voxel_size`` (metres, one or three) adds the voxel layer;
    ``boxes`` (from :func:`sparseconv.viz.read_kitti_labels`) the box layer, with
    ``boxes_note`` shown beside it (say which frame they are in). ``color``: the first
    colour mode (``auto``: prediction, else label, rgb, intensity, height).
    """
    points, attrs, names0, colors0, source = _as_points_and_attributes(scan, attributes)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape [P, 3], got {points.shape}")
    total = points.shape[0]
    if total == 0:
        raise ValueError("the scan has no points to show")
    for name, a in attrs.items():
        if np.asarray(a).shape[:1] != (total,):
            raise ValueError(f"attribute {name!r} must have one row per point ({total}), got shape {np.shape(a)}")
    if prediction is not None:
        prediction = np.asarray(prediction).reshape(-1)
        if prediction.shape != (total,) or not np.issubdtype(prediction.dtype, np.integer):
            raise ValueError(f"prediction must be integer labels, one per point ({total}), got "
                             f"{prediction.dtype} {prediction.shape}")
        attrs["prediction"] = prediction
    if not isinstance(max_points, int) or max_points < 1:
        raise ValueError(f"max_points must be an int >= 1, got {max_points!r}")
    label_names = dict(names0 or {}) if label_names is None else dict(label_names)
    label_colors = colors0 if label_colors is None else label_colors

    finite = np.isfinite(points).all(1)
    keep = np.flatnonzero(finite)
    note = []
    if keep.size < total:
        note.append(f"{total - keep.size:,} points with non-finite coordinates are left out.")
    if keep.size > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_points, replace=False))
        note.append(f"Showing {max_points:,} of {total:,} points: a uniform random sample (seed {seed}), "
                    f"as the page shows at most {max_points:,}.")
    pts = points[keep]
    lo, hi = pts.min(0), pts.max(0)
    offset = np.round((lo + hi) / 2) if np.abs(np.concatenate([lo, hi])).max() > 1e4 else np.zeros(3)
    local = (pts - offset).astype(np.float32)
    # first view: the sphere around the box of the 1st-99th percentiles (a few far returns of a LiDAR
    # scan do not shrink everything else), never larger than the bounding sphere
    plo, phi = np.percentile(local, [1, 99], axis=0)
    centre = (plo + phi) / 2
    bound = float(np.sqrt(((local - centre) ** 2).sum(1).max()))  # every point is within this of the centre
    radius = float(min(np.linalg.norm(phi - plo) / 2, bound))

    blob = _Blob()
    meta: Dict = {"title": title or (os.path.basename(source) if source else "point cloud"), "source": source,
                  "total_points": total, "shown_points": int(keep.size), "notes": note, "offset": offset.tolist(),
                  "sphere": {"centre": centre.tolist(), "radius": radius, "bound": bound}, "background": list(BACKGROUND),
                  "colormap": _CMAP.astype(int).tolist(), "positions": blob.add(local)}
    if keep.size < total:
        meta["indices"] = blob.add(keep.astype(np.uint32))
    labels = attrs.get("labels")
    ids = np.unique(np.concatenate([np.asarray(a).astype(np.int64).reshape(-1)
                                    for a in (labels, prediction) if a is not None] or [np.zeros(0, np.int64)]))
    table = label_table(ids.tolist(), label_names, label_colors)
    meta["attributes"] = []
    for name, a in attrs.items():
        a = np.asarray(a)[keep]
        entry = blob.add(_compact(a), name=name, components=int(np.prod(a.shape[1:], dtype=np.int64)))
        if name in ("labels", "prediction") and label_names:
            entry["names"] = {str(int(i)): label_names[int(i)] for i in ids if int(i) in label_names}
        meta["attributes"].append(entry)

    zlo, zhi = robust_range(pts[:, 2])
    modes = [{"name": "height", "label": "height", "kind": "scalar", "attr": "z", "lo": zlo, "hi": zhi, "unit": "m",
              "title": "height z (m)"}]
    if "intensity" in attrs and np.asarray(attrs["intensity"]).ndim == 1:
        ilo, ihi = robust_range(np.asarray(attrs["intensity"])[keep])
        modes.append({"name": "intensity", "label": "intensity", "kind": "scalar", "attr": "intensity", "lo": ilo,
                      "hi": ihi, "unit": "", "title": "intensity"})
    if labels is not None:
        modes.append(_label_mode("label", "labels", np.asarray(labels)[keep].astype(np.int64), table, label_names,
                                 "ground truth" if prediction is not None else "labels"))
    colors = attrs.get("colors")
    if colors is not None and (np.asarray(colors).dtype != np.uint8 or np.asarray(colors).shape[1:] != (3,)):
        raise ValueError(f"attribute 'colors' must be uint8 RGB [P, 3], got {np.asarray(colors).dtype} "
                         f"{np.shape(colors)}")
    if colors is not None:
        modes.append({"name": "rgb", "label": "RGB", "kind": "rgb", "attr": "colors", "title": "the scan's own RGB"})
    if prediction is not None:
        modes.append(_label_mode("prediction", "prediction", prediction[keep], table, label_names, "predicted class"))
        if labels is not None:
            t, p = np.asarray(labels)[keep].astype(np.int64), prediction[keep]
            known = t >= 0
            wrong = known & (t != p)
            n = max(int(known.sum()), 1)
            modes.append({"name": "error", "label": _MODE_LABELS["error"], "kind": "error", "truth": "labels",
                          "prediction": "prediction", "ignore_below": 0, "wrong": list(WRONG), "right": list(RIGHT),
                          "ignored": list(IGNORED), "title": "prediction vs ground truth",
                          "entries": [[f"wrong  {100.0 * wrong.sum() / n:.1f}%", list(WRONG)],
                                      [f"right  {100.0 * (known & ~wrong).sum() / n:.1f}%", list(RIGHT)]]
                          + ([[f"no ground truth  {100.0 * (~known).mean():.1f}%", list(IGNORED)]]
                             if not known.all() else [])})
    available = [m["name"] for m in modes]
    if color == "auto":
        color = next(m for m in ("prediction", "label", "rgb", "intensity", "height") if m in available)
    if color not in available:
        raise ValueError(f"color {color!r} is not available for this scan; choose from {', '.join(available)}")
    meta["modes"], meta["default_mode"] = modes, color

    meta["voxels"] = _voxel_layer(local, offset, voxel_size, blob) if voxel_size is not None else None
    meta["boxes"] = [{"type": b.type, "color": list(CLASS_PALETTE.get(_BOX_CLASS.get(b.type, ""), (255, 255, 255))),
                      "corners": (np.asarray(b.corners, dtype=np.float64) - offset).round(4).tolist()} for b in boxes]
    meta["boxes_note"] = boxes_note
    meta["point_size"] = int(min(8, max(2, round(2 + 2 * math.log10(max(1e5 / keep.size, 1))))))
    return _page(meta, blob.base64())


def _read(name: str) -> str:
    with open(os.path.join(_HERE, name), encoding="utf-8") as f:
        return f.read()


def _page(meta: Dict, data: str) -> str:
    esc = _html.escape
    title = esc(meta["title"])
    notes = "".join(f'<p class="note warn">{esc(n)}</p>' for n in meta["notes"])
    layers = ['<label><input type="checkbox" id="sc-layer-points"> raw points '
              f'({meta["shown_points"]:,})</label>']
    if meta["voxels"]:
        size = ", ".join(f"{s:g}" for s in meta["voxels"]["size_xyz"])
        layers.append(f'<label><input type="checkbox" id="sc-layer-voxels"> voxels at {esc(size)} m '
                      f'({meta["voxels"]["count"]:,})</label>')
    else:
        layers.append('<p class="note">voxels: none requested (voxel_size / --voxel-size)</p>')
    if meta["boxes"]:
        layers.append(f'<label><input type="checkbox" id="sc-layer-boxes"> boxes ({len(meta["boxes"])})</label>')
        if meta["boxes_note"]:
            layers.append(f'<p class="note">{esc(meta["boxes_note"])}</p>')
    header = json.dumps(meta, separators=(",", ":")).replace("</", "<\\/")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_read('viewer.css')}</style>",
        "</head><body>",
        '<div id="sc-main"><canvas id="sc-canvas"></canvas><div id="sc-panel">',
        f'<h1>{title}</h1><p class="note">{meta["total_points"]:,} points'
        + (f' from {esc(meta["source"])}' if meta["source"] else "") + "</p>",
        notes,
        '<h2>colour by</h2><select id="sc-mode"></select>',
        '<div id="sc-legend"></div>',
        '<h2>point size</h2><input type="range" id="sc-size" min="1" max="12" step="1">',
        "<h2>layers</h2>", *layers,
        '<h2>view</h2><button id="sc-reset">reset</button><button id="sc-top">top</button>',
        '<p class="note">drag: orbit &middot; right/shift drag: pan &middot; wheel: zoom &middot; click: inspect</p>',
        '<h2>picked point</h2><div id="sc-readout">click a point</div>',
        "</div></div>",
        '<pre id="selftest"></pre>',
        f'<script id="sc-meta" type="application/json">{header}</script>',
        f'<script id="sc-data" type="application/octet-stream">{data}</script>',
        f"<script>{_read('viewer.js')}</script>",
        "</body></html>",
        "",
    ])


def write_html(path: Union[str, "os.PathLike[str]"], scan, **options) -> str:
    """Write :func:`to_html`'s page to ``path`` atomically (a ``.html``/``.htm`` name); returns the path."""
    from ..io import atomic_write

    p = os.fspath(path)
    if not p.lower().endswith((".html", ".htm")):
        raise ValueError(f"{p}: the viewer is written as HTML; name it *.html")
    page = to_html(scan, **options)
    with atomic_write(p) as f:
        f.write(page.encode("utf-8"))
    return p
