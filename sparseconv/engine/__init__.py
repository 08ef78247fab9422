"""The engine: points -> voxels -> SparseTensor -> kernel map -> gather-GEMM-scatter.

Modules in pipeline order (each imports only those before it):

* :mod:`.hashing`: ``(b, x, y, z)`` packed into one int64 key; :class:`CoordinateHash` for lookups.
* :mod:`.kmap`: kernel maps, **where they are built** (:mod:`.kmap.build`) and their typed,
  immutable objects (:mod:`.kmap.types`).
* :mod:`.coordinates`: :class:`CoordinateSet`, the active sites and the owner of their map cache.
* :mod:`.tensor`: :class:`SparseTensor` (features on a coordinate set).
* :mod:`.voxelize`: points -> voxels and back (nearest, trilinear).
* :mod:`.backends`: the torch reference path and the numba CPU kernels of the core op.
* :mod:`.core`: :func:`gather_gemm_scatter`, the one op every convolution lowers to, run as the
  registered operator ``torch.ops.sparseconv.gather_gemm_scatter`` (:mod:`.op`).
* :mod:`.plan`: :func:`plan`, which builds a network's maps before ``torch.compile`` / ``torch.export``,
  and :class:`FixedCoordinates`, a network on fixed coordinates as a module of plain tensors.

The stateless convolutions and pools built on it live in :mod:`sparseconv.nn.functional`, the
modules in :mod:`sparseconv.nn`.
"""
from .coordinates import CoordinateSet
from .core import autocast_inputs, gather_gemm_scatter
from .hashing import CoordinateHash
from .kmap import KernelMap, KernelMapKey, build_kernel_map
from .plan import FixedCoordinates, plan
from .tensor import SparseTensor
from .voxelize import Voxelization, devoxelize, trilinear_devoxelize, voxelize

__all__ = [
    "CoordinateHash", "CoordinateSet", "KernelMap", "KernelMapKey", "build_kernel_map", "SparseTensor",
    "Voxelization", "voxelize", "devoxelize", "trilinear_devoxelize", "gather_gemm_scatter", "autocast_inputs",
    "plan", "FixedCoordinates",
]
