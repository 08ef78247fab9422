"""Pictures and viewers of point clouds: headless PNGs and a self-contained browser viewer.

Design, one concern per module, dependencies pointing one way (colors <- render <- panels;
colors, boxes <- html; nothing here imports the rest of sparseconv at import time, and
:mod:`~sparseconv.viz.colors` imports nothing, so ``io`` and ``data`` may take the palette
from it):

* :mod:`~sparseconv.viz.colors` -- the class palette (designed for the SemanticKITTI
  classes), the scalar colour map, per-point colours of a scan and their legend, the
  error layer's colours. numpy only.
* :mod:`~sparseconv.viz.render` -- projection and a numpy z-buffer: bird's-eye
  (orthographic) and perspective views, point splats sized to the cloud's density, a
  camera fitted to the cloud's bounding sphere. No OpenGL, so it runs on servers and in CI.
* :mod:`~sparseconv.viz.panels` -- composed pictures (two views + legend, ground truth /
  prediction / error, confusion matrix) drawn with Pillow, and atomic PNG writing.
* :mod:`~sparseconv.viz.html` -- :func:`to_html`, one self-contained HTML page with a
  WebGL viewer (``viewer.js``/``viewer.css`` beside it, written for this project and
  inlined; no network): orbit/pan/zoom, colour modes with legends, click-to-inspect,
  toggleable layers (points, voxels, truth / prediction / error, boxes).
* :mod:`~sparseconv.viz.boxes` -- KITTI ``label_2`` object boxes and ``calib`` files, turned
  into 3D box corners in the LiDAR frame for the viewer.
"""
from .boxes import Box3D, read_kitti_calib, read_kitti_labels
from .colors import (
    BACKGROUND,
    CLASS_PALETTE,
    COLOR_MODES,
    Legend,
    class_colors,
    colormap,
    error_colors,
    label_palette,
    scan_colors,
)
from .html import MAX_DISPLAY_POINTS, to_html, write_html
from .panels import render_comparison, render_confusion_matrix, render_views, save_png
from .render import BirdsEyeView, PerspectiveCamera, render_birdseye, render_perspective

__all__ = [
    "BACKGROUND",
    "CLASS_PALETTE",
    "COLOR_MODES",
    "MAX_DISPLAY_POINTS",
    "Box3D",
    "BirdsEyeView",
    "Legend",
    "PerspectiveCamera",
    "class_colors",
    "colormap",
    "error_colors",
    "label_palette",
    "read_kitti_calib",
    "read_kitti_labels",
    "render_birdseye",
    "render_comparison",
    "render_confusion_matrix",
    "render_perspective",
    "render_views",
    "save_png",
    "scan_colors",
    "to_html",
    "write_html",
]
