"""Deprecated: the pictures moved to :mod:`sparseconv.viz`; this name keeps working for one release."""
import warnings

from .viz import (  # noqa: F401
    BACKGROUND,
    COLOR_MODES,
    BirdsEyeView,
    Legend,
    PerspectiveCamera,
    colormap,
    label_palette,
    render_birdseye,
    render_confusion_matrix,
    render_perspective,
    render_views,
    save_png,
    scan_colors,
)

warnings.warn("sparseconv.render is deprecated; import from sparseconv.viz instead", DeprecationWarning, stacklevel=2)

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
