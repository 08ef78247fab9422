"""Dense twins of the plain convolutions and poolings of :mod:`sparseconv.nn`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as snn
from ..engine.tensor import SparseTensor
from .grids import DenseFn, _inverse_output_padding, _occupancy, _reach, _same_conv3d


def plain_dense_twin(
    module: nn.Module, input: SparseTensor, target: Optional[SparseTensor] = None
) -> Optional[Tuple[DenseFn, torch.Tensor]]:
    """The dense PyTorch twin of a plain :mod:`sparseconv.nn` convolution or pooling, and its active sites
    (None for any other module).

    Returns ``(dense_fn, sites)``: ``dense_fn`` maps a dense ``[B, C, X, Y, Z]`` input to the
    dense output; ``sites`` is a bool ``[B, X', Y', Z']`` mask of the output sites the
    contract says are active. ``target`` is the strided conv's input for an inverse conv.
    """
    m = module
    occ = _occupancy(input)
    if isinstance(m, snn.SubMConv3d):
        return (lambda d: _same_conv3d(d, m)), occ[:, 0] > 0.5
    if isinstance(m, snn.SparseConv3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation)
        return (lambda d: F.conv3d(d, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)), sites
    if isinstance(m, snn.SparseConvTranspose3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation, True, m.output_padding)
        fn = lambda d: F.conv_transpose3d(  # noqa: E731
            d, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation
        )
        return fn, sites
    if isinstance(m, snn.SparseInverseConv3d):
        if target is None:
            raise ValueError("the dense twin of SparseInverseConv3d needs target= (the strided conv's input)")
        out_pad = _inverse_output_padding(m, input.spatial_shape, target.spatial_shape)
        fn = lambda d: F.conv_transpose3d(  # noqa: E731
            d, m.weight, m.bias, m.stride, m.padding, out_pad, m.groups, m.dilation
        )
        return fn, _occupancy(target)[:, 0] > 0.5
    if isinstance(m, snn.SparseMaxPool3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation)
        empty = occ == 0

        def max_twin(d):
            return F.max_pool3d(d.masked_fill(empty.expand_as(d), float("-inf")), m.kernel_size, m.stride, m.padding, m.dilation)

        return max_twin, sites
    if isinstance(m, snn.SparseAvgPool3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, (1, 1, 1))
        return (lambda d: F.avg_pool3d(d, m.kernel_size, m.stride, m.padding, count_include_pad=m.count_include_pad)), sites
    return None


