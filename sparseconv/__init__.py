"""sparseconv: sparse 3D convolution for point clouds on plain PyTorch.

Every convolution is gather, GEMM, scatter over a kernel map:
points -> voxelize -> SparseTensor -> kernel map -> gather-GEMM-scatter -> modules.
"""
from . import analysis, functional, models, nn, testing
from .coordinates import CoordinateSet
from .kernel_map import KernelMap, KernelMapKey
from .tensor import SparseTensor
from .voxelize import Voxelization, devoxelize, trilinear_devoxelize, voxelize

__all__ = [
    "SparseTensor",
    "CoordinateSet",
    "KernelMap",
    "KernelMapKey",
    "Voxelization",
    "voxelize",
    "devoxelize",
    "trilinear_devoxelize",
    "functional",
    "nn",
    "testing",
    "analysis",
    "models",
]
__version__ = "0.1.0"
