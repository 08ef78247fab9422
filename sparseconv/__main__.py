"""``python -m sparseconv``: the ``sparseconv`` command line (see :mod:`sparseconv.app.cli`)."""
import sys

from .app.cli import main

sys.exit(main())
