"""``python -m sparseconv``: the ``sparseconv`` command line (see :mod:`sparseconv.cli`)."""
import sys

from .cli import main

sys.exit(main())
