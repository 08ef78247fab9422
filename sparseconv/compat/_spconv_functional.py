"""spconv compat ``functional``: operations on SparseConvTensors outside modules."""
from ._spconv_modules import sparse_add

sparse_add_hash_based = sparse_add
"""spconv's hash-based variant of :func:`sparse_add`; the same operation here."""

__all__ = ["sparse_add", "sparse_add_hash_based"]
