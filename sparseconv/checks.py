"""Deprecated: the self-check moved to :mod:`sparseconv.app.checks` (this alias goes in sparseconv 0.3)."""
import sys
import warnings

from .app import checks as _checks

warnings.warn("sparseconv.checks moved to sparseconv.app.checks; the old path will be removed in sparseconv 0.3",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _checks
