"""Optional dependencies: import them where a feature needs them, and say which extra installs them.

Required (always installed): torch, numpy, numba (the fast CPU path), pillow (PNG pictures), tqdm
(progress bars). Optional, by extra: ``open3d`` (synthetic LiDAR/indoor scans, Open3D-read formats,
the desktop viewer window), ``las`` (LAS/LAZ files), ``gpu`` (triton), ``test`` (the test suite).
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """A feature's optional dependency is missing; the message names the extra that installs it."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``import module``, or a :class:`MissingDependencyError` saying ``feature`` needs
    ``pip install 'sparseconv[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs {module}, which is not installed: pip install 'sparseconv[{extra}]' ({exc})"
        ) from None
