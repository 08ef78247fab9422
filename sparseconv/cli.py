"""Deprecated: the command line moved to :mod:`sparseconv.app.cli` (this alias goes in sparseconv 0.3)."""
import sys
import warnings

from .app import cli as _cli

warnings.warn("sparseconv.cli moved to sparseconv.app.cli; the old path will be removed in sparseconv 0.3",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _cli
