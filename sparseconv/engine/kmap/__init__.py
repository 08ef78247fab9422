"""Kernel maps: for every kernel offset, the ``(input row, output row)`` pairs of a convolution.

* :mod:`.types`: :class:`KernelMapKey` (everything that determines a map) and the immutable
  :class:`KernelMap`; output-grid formulas.
* :mod:`.build`: **where kernel maps are built**: the submanifold neighbour search on sorted
  coordinate keys and the strided / transposed builders.

Maps are cached on the input's :class:`~sparseconv.engine.coordinates.CoordinateSet`
(``coord_set.kernel_map(key)``), which imports this package; nothing here imports the coordinate set.
"""
from .build import build_kernel_map
from .types import KINDS, KernelMap, KernelMapKey, kernel_offsets, output_spatial_shape

__all__ = ["KernelMap", "KernelMapKey", "KINDS", "build_kernel_map", "kernel_offsets", "output_spatial_shape"]
