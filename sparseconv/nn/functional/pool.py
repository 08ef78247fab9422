"""Stateless sparse pooling, each equal to its dense twin at the active output sites:

=============================  =====================================================
``sparse_max_pool3d``          ``F.max_pool3d`` of the grid with empty sites at ``-inf``
``sparse_avg_pool3d``          ``F.avg_pool3d(x.dense(), ..., count_include_pad)``
``global_*_pool``              sum / mean / max over each batch entry's active sites
=============================  =====================================================
"""
from __future__ import annotations

from typing import Optional

import torch

from ..._validation import IntOrTriple, triple
from ...engine.kmap import KernelMap, KernelMapKey
from ...engine.tensor import SparseTensor
from ._checks import check_input


def _pool_key(kernel_size, stride, padding, dilation) -> KernelMapKey:
    kernel3 = triple(kernel_size, "kernel_size", 1)
    stride3 = kernel3 if stride is None else triple(stride, "stride", 1)
    padding3 = triple(padding, "padding", 0)
    for p, k in zip(padding3, kernel3):
        if p > k // 2:
            raise ValueError(f"padding {padding3} must be at most half of kernel_size {kernel3} (as in PyTorch)")
    return KernelMapKey("conv", kernel3, stride3, padding3, triple(dilation, "dilation", 1))


def sparse_max_pool3d(
    input: SparseTensor,
    kernel_size: IntOrTriple,
    stride: Optional[IntOrTriple] = None,
    padding: IntOrTriple = 0,
    dilation: IntOrTriple = 1,
) -> SparseTensor:
    """Max over the active sites in each window; output sites as :func:`sparse_conv3d`.

    Equals ``F.max_pool3d`` of the dense grid with empty sites set to ``-inf`` (for
    non-negative features, e.g. after ReLU, the zero-filled ``x.dense()`` gives the same).
    Ties go to the first tap in window order, like PyTorch; the gradient flows to the winner.
    """
    check_input(input)
    kmap = input.coordinate_set.kernel_map(_pool_key(kernel_size, stride, padding, dilation))
    feats = input.feats
    channels = feats.shape[1]
    out_index = kmap.out_rows[:, None].expand(-1, channels)
    with torch.no_grad():
        values = feats.index_select(0, kmap.in_rows)
        maxima = feats.new_zeros(kmap.num_outputs, channels).scatter_reduce_(
            0, out_index, values, "amax", include_self=False
        )
        pair_ids = torch.arange(kmap.num_pairs, device=feats.device)[:, None].expand(-1, channels)
        candidates = torch.where(values == maxima.index_select(0, kmap.out_rows), pair_ids, kmap.num_pairs)
        winner_pair = torch.full_like(maxima, kmap.num_pairs, dtype=torch.int64).scatter_reduce_(
            0, out_index, candidates, "amin"
        )
        winner_row = kmap.in_rows[winner_pair]
    return SparseTensor.from_coordinate_set(feats.gather(0, winner_row), kmap.output)


def _in_grid_window_sizes(kmap: KernelMap) -> torch.Tensor:
    """Per output site: how many window taps fall inside the unpadded input grid."""
    key = kmap.key
    out_xyz = kmap.output.coords[:, 1:]
    total = torch.ones(out_xyz.shape[0], dtype=torch.int64, device=out_xyz.device)
    for axis, (n, k, s, p) in enumerate(zip(kmap.input.spatial_shape, key.kernel_size, key.stride, key.padding)):
        start = out_xyz[:, axis] * s - p
        total *= (torch.clamp(start + k, max=n) - torch.clamp(start, min=0))
    return total


def sparse_avg_pool3d(
    input: SparseTensor,
    kernel_size: IntOrTriple,
    stride: Optional[IntOrTriple] = None,
    padding: IntOrTriple = 0,
    count_include_pad: bool = True,
) -> SparseTensor:
    """Average pooling that equals ``F.avg_pool3d(x.dense(), ...)`` at the output sites.

    Empty sites count as zeros, as in the dense grid: the sum over active inputs is divided
    by the kernel volume (``count_include_pad=True``) or by the number of taps inside the
    unpadded grid (``count_include_pad=False``), exactly as PyTorch does.
    """
    check_input(input)
    kmap = input.coordinate_set.kernel_map(_pool_key(kernel_size, stride, padding, 1))
    feats = input.feats
    sums = feats.new_zeros(kmap.num_outputs, feats.shape[1]).index_add(
        0, kmap.out_rows, feats.index_select(0, kmap.in_rows)
    )
    if count_include_pad:
        divisor = torch.tensor(float(kmap.key.kernel_volume), dtype=feats.dtype, device=feats.device)
    else:
        divisor = _in_grid_window_sizes(kmap).to(feats.dtype)[:, None]
    return SparseTensor.from_coordinate_set(sums / divisor, kmap.output)


def _global_pool(input: SparseTensor, reduce: str) -> torch.Tensor:
    check_input(input)
    feats = input.feats
    batch = input.coords[:, 0]
    out = feats.new_zeros(input.batch_size, feats.shape[1])
    if reduce == "amax":
        index = batch[:, None].expand(-1, feats.shape[1])
        return out.scatter_reduce(0, index, feats, "amax", include_self=False)
    out = out.index_add(0, batch, feats)
    if reduce == "mean":
        out = out / input.batch_counts().clamp(min=1).to(feats.dtype)[:, None]
    return out


def global_sum_pool(input: SparseTensor) -> torch.Tensor:
    """``[B, C]``: sum of each batch entry's active features (0 for an empty entry)."""
    return _global_pool(input, "sum")


def global_avg_pool(input: SparseTensor) -> torch.Tensor:
    """``[B, C]``: mean over each batch entry's active sites (not over the empty grid); 0 if empty."""
    return _global_pool(input, "mean")


def global_max_pool(input: SparseTensor) -> torch.Tensor:
    """``[B, C]``: max over each batch entry's active sites; 0 for an empty entry."""
    return _global_pool(input, "amax")
