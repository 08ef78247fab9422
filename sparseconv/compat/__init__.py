"""Compatibility layers that let code written for other sparse-convolution libraries run on sparseconv.

* :mod:`sparseconv.compat.spconv`: spconv 2.x's PyTorch API (``SparseConvTensor``, ``SubMConv3d``,
  ``SparseConv3d``, ``SparseInverseConv3d``, ``SparseSequential``, ... with spconv's weight layout
  and ``indice_key`` semantics), plus conversion to and from sparseconv's native modules.
* :func:`install_spconv_shim`: make ``import spconv.pytorch as spconv`` resolve to it when spconv
  is not installed, so unmodified model files import.
"""
from . import spconv
from ._shim import install_spconv_shim, is_spconv_shim, uninstall_spconv_shim

__all__ = ["spconv", "install_spconv_shim", "uninstall_spconv_shim", "is_spconv_shim"]
