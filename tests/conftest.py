import os
import sys

# Let the suite run from a plain checkout as well as from an installed package.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
