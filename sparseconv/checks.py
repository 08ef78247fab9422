"""Deprecated: the self-check moved to :mod:`sparseconv.app.checks` (this alias goes in the next release)."""
import sys
import warnings

from .app import checks as _checks

warnings.warn("sparseconv.checks moved to sparseconv.app.checks; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _checks
