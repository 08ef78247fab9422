"""Deprecated: the demo moved to :mod:`sparseconv.app.demo` (this alias goes in sparseconv 0.3)."""
import sys
import warnings

from .app import demo as _demo

warnings.warn("sparseconv.demo moved to sparseconv.app.demo; the old path will be removed in sparseconv 0.3",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _demo
