"""Deprecated: the demo moved to :mod:`sparseconv.app.demo` (this alias goes in the next release)."""
import sys
import warnings

from .app import demo as _demo

warnings.warn("sparseconv.demo moved to sparseconv.app.demo; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _demo
