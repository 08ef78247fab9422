"""sparseconv: sparse 3D convolution for point clouds on plain PyTorch.

Every convolution is gather, GEMM, scatter over a kernel map:
points -> voxelize -> SparseTensor -> kernel map -> gather-GEMM-scatter -> modules.
"""
from .tensor import SparseTensor

__all__ = ["SparseTensor"]
__version__ = "0.1.0"
