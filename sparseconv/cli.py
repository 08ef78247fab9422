"""Deprecated: the command line moved to :mod:`sparseconv.app.cli` (this alias goes in the next release)."""
import sys
import warnings

from .app import cli as _cli

warnings.warn("sparseconv.cli moved to sparseconv.app.cli; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _cli
