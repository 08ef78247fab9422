"""Sparse involution: a kernel per site (and channel group), applied over the kernel map's neighbours.

    y[o, c] = sum_t H[o, g(c), t] * x[o - l + t d, c]        g(c) = c // (C / G)

summed over the active neighbours (empty ones read as zero, as on the zero-filled grid). ``H`` is
``[N, G, K]``: one weight per output site, group and kernel tap, shared by the ``C / G`` channels of
a group. It runs on the core op with its two hooks and nothing else: the submanifold kernel map
supplies the neighbours, and a pair ``(i, o)`` of tap ``t`` gets the pair weight ``H[o, g, t]``.
Pair weights are one number per pair (shared by every channel of a call), so the op makes one core
call per group, on that group's channel slice, with the all-ones depthwise weight ``[K, C/G, 1, 1]``
(the core's depthwise path: one multiply-add per pair and channel, no GEMM). Gradients reach ``x``
and ``H`` through the core's feature and pair-weight gradients.
"""
from __future__ import annotations

import torch

from ..._validation import IntOrTriple, triple
from ...engine.core import gather_gemm_scatter
from ...engine.kmap import KernelMap, KernelMapKey
from ...engine.tensor import SparseTensor
from ._checks import autocast_conv_inputs


def pair_taps(kmap: KernelMap) -> torch.Tensor:
    """The kernel tap of every pair of ``kmap`` (``[P]``, int64), built once per map."""
    return kmap.derived("pair_taps", lambda m: torch.repeat_interleave(
        torch.arange(m.kernel_volume, device=m.in_rows.device),
        torch.tensor(m.pair_counts(), device=m.in_rows.device),
        output_size=m.num_pairs,
    ))


def sparse_involution3d(
    input: SparseTensor, kernels: torch.Tensor, kernel_size: IntOrTriple, dilation: IntOrTriple = 1
) -> SparseTensor:
    """Involution at the input sites (submanifold, stride 1).

    Args:
        input: ``[N, C]`` features.
        kernels: ``[N, G, K]`` per-site kernels (``K`` = kernel volume, taps row-major); ``G`` divides ``C``.
        kernel_size, dilation: the neighbourhood (a submanifold kernel map).

    Returns:
        SparseTensor ``[N, C]`` on the input's coordinates.
    """
    input, kernels = autocast_conv_inputs(input, kernels)
    kernel3 = triple(kernel_size, "kernel_size", 1)
    volume = kernel3[0] * kernel3[1] * kernel3[2]
    if not isinstance(kernels, torch.Tensor) or kernels.dim() != 3 or kernels.shape[0] != len(input) \
            or kernels.shape[2] != volume:
        raise ValueError(
            f"kernels must have shape [N={len(input)}, G, K={volume}], got {tuple(getattr(kernels, 'shape', ()))}"
        )
    groups = kernels.shape[1]
    if groups < 1 or input.num_channels % groups:
        raise ValueError(f"kernels' group count G={groups} must divide the input's {input.num_channels} channels")
    if kernels.dtype != input.dtype or kernels.device != input.device:
        raise TypeError(f"kernels are {kernels.dtype} on {kernels.device}, input is {input.dtype} on {input.device}")
    kmap = input.coordinate_set.kernel_map(
        KernelMapKey("submanifold", kernel3, dilation=triple(dilation, "dilation", 1))
    )
    width = input.num_channels // groups
    ones = input.feats.new_ones(volume, width, 1, 1)
    per_pair = kernels[kmap.out_rows, :, pair_taps(kmap)]  # [P, G]
    parts = [
        gather_gemm_scatter(input.feats[:, g * width : (g + 1) * width], ones, kmap, per_pair[:, g].contiguous())
        for g in range(groups)
    ]
    return SparseTensor.from_coordinate_set(torch.cat(parts, 1), kmap.output)
