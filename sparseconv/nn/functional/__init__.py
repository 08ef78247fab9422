"""Stateless sparse ops (the functional twin of :mod:`sparseconv.nn`'s modules), one file per family:

* :mod:`.conv`: submanifold, strided, transposed and inverse convolutions;
* :mod:`.pool`: max / average / global pooling;
* :mod:`.deform`: deformable convolution (per-call corner maps with pair weights);
* :mod:`.dynamic`: per-sample kernels (the kernel map split by sample);
* :mod:`._checks`: the one set of input checks they all use.

Every op lowers to :func:`sparseconv.engine.core.gather_gemm_scatter` over a kernel map and equals
its dense PyTorch twin at the active output sites.
"""
from ._checks import autocast_conv_inputs
from .conv import (
    conv_map_key,
    conv_weight_to_core,
    find_inverse_map,
    same_padding,
    sparse_conv3d,
    sparse_conv_transpose3d,
    sparse_inverse_conv3d,
    subm_conv3d,
    transposed_weight_to_core,
)
from .deform import deform_kernel_map, sparse_deform_conv3d
from .dynamic import sparse_conv3d_per_sample, split_by_sample
from .pool import (
    global_avg_pool,
    global_max_pool,
    global_sum_pool,
    sparse_avg_pool3d,
    sparse_max_pool3d,
)

__all__ = [
    "sparse_conv3d", "subm_conv3d", "sparse_conv_transpose3d", "sparse_inverse_conv3d", "find_inverse_map",
    "conv_map_key", "same_padding", "conv_weight_to_core", "transposed_weight_to_core", "autocast_conv_inputs",
    "sparse_max_pool3d", "sparse_avg_pool3d", "global_sum_pool", "global_avg_pool", "global_max_pool",
    "sparse_deform_conv3d", "deform_kernel_map", "sparse_conv3d_per_sample", "split_by_sample",
]
