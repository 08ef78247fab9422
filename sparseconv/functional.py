"""Stateless sparse convolution and pooling: the math behind :mod:`sparseconv.nn`.

Each function takes a :class:`~sparseconv.SparseTensor` and PyTorch-layout weights and
equals its dense twin at the active output sites:

=============================  =====================================================
``sparse_conv3d``              ``F.conv3d(x.dense(), w, b, stride, padding, dilation, groups)``
``subm_conv3d``                ``F.conv3d(x.dense(), w, b, padding='same', dilation, groups)``, read at the input sites
``sparse_conv_transpose3d``    ``F.conv_transpose3d(x.dense(), w, b, stride, padding, output_padding, groups, dilation)``
``sparse_inverse_conv3d``      ``F.conv_transpose3d`` that undoes a strided conv, read at that conv's input sites
``sparse_max_pool3d``          ``F.max_pool3d`` of the grid with empty sites at ``-inf``
``sparse_avg_pool3d``          ``F.avg_pool3d(x.dense(), ..., count_include_pad)``
``global_*_pool``              sum / mean / max over each batch entry's active sites
=============================  =====================================================
"""
from __future__ import annotations

from typing import Optional

import torch

from ._validation import IntOrTriple, triple
from .core import autocast_inputs, gather_gemm_scatter
from .kernel_map import KernelMap, KernelMapKey
from .tensor import SparseTensor


def _check_input(input: SparseTensor, name: str = "input") -> None:
    if not isinstance(input, SparseTensor):
        raise TypeError(f"{name} must be a sparseconv.SparseTensor, got {type(input).__name__}")


def conv_weight_to_core(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``nn.Conv3d`` layout ``[C_out, C_in/G, kD, kH, kW]`` -> core layout ``[K, G, C_in/G, C_out/G]``."""
    c_out, c_in_g = weight.shape[:2]
    return weight.reshape(groups, c_out // groups, c_in_g, -1).permute(3, 0, 2, 1)


def transposed_weight_to_core(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``nn.ConvTranspose3d`` layout ``[C_in, C_out/G, kD, kH, kW]`` -> ``[K, G, C_in/G, C_out/G]``."""
    c_in, c_out_g = weight.shape[:2]
    return weight.reshape(groups, c_in // groups, c_out_g, -1).permute(3, 0, 1, 2)


def _check_weight(input: SparseTensor, weight: torch.Tensor, groups: int, transposed: bool) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 5:
        raise ValueError(f"weight must be a 5-D tensor [*, *, kD, kH, kW], got {getattr(weight, 'shape', weight)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    in_channels = weight.shape[0] if transposed else weight.shape[1] * groups
    if transposed and weight.shape[0] % groups:
        raise ValueError(f"weight.shape[0] (in_channels={weight.shape[0]}) must be divisible by groups ({groups})")
    if not transposed and weight.shape[0] % groups:
        raise ValueError(f"weight.shape[0] (out_channels={weight.shape[0]}) must be divisible by groups ({groups})")
    if input.num_channels != in_channels:
        raise ValueError(f"input has {input.num_channels} channels but the weight expects in_channels={in_channels}")
    if weight.dtype != input.dtype:
        raise TypeError(f"input features are {input.dtype} but weight is {weight.dtype}")


def _finish(feats: torch.Tensor, bias: Optional[torch.Tensor], kmap: KernelMap) -> SparseTensor:
    if bias is not None:
        feats = feats + bias
    return SparseTensor.from_coordinate_set(feats, kmap.output)


def autocast_conv_inputs(input: SparseTensor, weight: torch.Tensor, *others):
    """Inside ``torch.autocast``: the input's features, the weight and ``others`` (bias, offsets, ...)
    in the autocast dtype, as autocast treats ``F.conv3d``; everything unchanged outside it."""
    _check_input(input)
    feats, weight, *others = autocast_inputs(input.feats, weight, *others)
    if feats is not input.feats:
        input = input.replace(feats)
    return (input, weight, *others)


def _convolve(input, weight, bias, groups, key, transposed):
    input, weight, bias = autocast_conv_inputs(input, weight, bias)
    _check_weight(input, weight, groups, transposed)
    if tuple(weight.shape[2:]) != key.kernel_size:
        raise ValueError(f"weight kernel {tuple(weight.shape[2:])} does not match kernel_size {key.kernel_size}")
    kmap = input.coordinate_set.kernel_map(key)
    core_weight = transposed_weight_to_core(weight, groups) if transposed else conv_weight_to_core(weight, groups)
    return _finish(gather_gemm_scatter(input.feats, core_weight, kmap), bias, kmap)


def sparse_conv3d(
    input: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrTriple = 1,
    padding: IntOrTriple = 0,
    dilation: IntOrTriple = 1,
    groups: int = 1,
) -> SparseTensor:
    """Spatially sparse convolution: ``F.conv3d`` at every output site its kernel reaches.

    ``out[o] = b + sum_t W[:, :, t] x[o*s - p + t*d]`` over active inputs; output sites are
    all ``o`` of the output grid with at least one active input in their window.
    Output grid: ``(n + 2p - d(k-1) - 1) // s + 1`` per axis.
    """
    key = KernelMapKey(
        "conv",
        tuple(weight.shape[2:]),
        triple(stride, "stride", 1),
        triple(padding, "padding", 0),
        triple(dilation, "dilation", 1),
    )
    return _convolve(input, weight, bias, groups, key, transposed=False)


def subm_conv3d(
    input: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    dilation: IntOrTriple = 1,
    groups: int = 1,
) -> SparseTensor:
    """Submanifold convolution: outputs exactly at the input sites, stride 1, 'same' padding.

    ``out[o] = b + sum_t W[:, :, t] x[o - l + t*d]`` with ``l = d(k-1)//2`` per axis, which is
    ``F.conv3d(x, W, padding='same', dilation=d)`` (for even kernels PyTorch pads the extra
    voxel on the high side, and so do we).
    """
    key = KernelMapKey("submanifold", tuple(weight.shape[2:]), dilation=triple(dilation, "dilation", 1))
    return _convolve(input, weight, bias, groups, key, transposed=False)


def sparse_conv_transpose3d(
    input: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrTriple = 1,
    padding: IntOrTriple = 0,
    output_padding: IntOrTriple = 0,
    groups: int = 1,
    dilation: IntOrTriple = 1,
) -> SparseTensor:
    """Transposed (generative) convolution: ``F.conv_transpose3d`` at every site it writes.

    ``x[i]`` adds ``W[i, :, t]`` to ``out[i*s - p + t*d]``; output grid
    ``(n-1)s - 2p + d(k-1) + output_padding + 1``. ``output_padding`` must be smaller than
    stride or dilation (as in PyTorch).
    """
    stride3 = triple(stride, "stride", 1)
    dilation3 = triple(dilation, "dilation", 1)
    output_padding3 = triple(output_padding, "output_padding", 0)
    for op, s, d in zip(output_padding3, stride3, dilation3):
        if op >= max(s, d):
            raise ValueError(
                f"output_padding {output_padding3} must be smaller than stride {stride3} or dilation {dilation3}"
            )
    key = KernelMapKey(
        "transposed", tuple(weight.shape[2:]), stride3, triple(padding, "padding", 0), dilation3, output_padding3
    )
    return _convolve(input, weight, bias, groups, key, transposed=True)


def find_inverse_map(
    input: SparseTensor, key: KernelMapKey, target: Optional[SparseTensor] = None
) -> KernelMap:
    """The map that undoes the strided conv ``key`` that produced ``input``'s coordinates.

    With ``target``, the conv is the one applied to ``target`` (its map is built or reused);
    without, it is looked up among the strided convs recorded as producing ``input``.
    """
    coord_set = input.coordinate_set
    if target is not None:
        _check_input(target, "target")
        forward = target.coordinate_set.kernel_map(key)
        out = forward.output
        if out is not coord_set and not (
            out.spatial_shape == coord_set.spatial_shape and torch.equal(out.coords, coord_set.coords)
        ):
            raise ValueError(
                f"input's coordinates are not the output of a conv with kernel_size={key.kernel_size}, "
                f"stride={key.stride}, padding={key.padding}, dilation={key.dilation} applied to target"
            )
        return forward.transpose()
    sources = [fine for produced_key, fine in coord_set.produced_by if produced_key == key]
    if not sources:
        raise ValueError(
            f"no strided conv with kernel_size={key.kernel_size}, stride={key.stride}, padding={key.padding}, "
            f"dilation={key.dilation} produced input's coordinates; pass target= (the conv's input)"
        )
    if len({id(s) for s in sources}) > 1:
        raise ValueError("several coordinate sets map to input's coordinates with this conv; pass target= to choose")
    return sources[0].kernel_map(key).transpose()


def sparse_inverse_conv3d(
    input: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrTriple = 1,
    padding: IntOrTriple = 0,
    dilation: IntOrTriple = 1,
    groups: int = 1,
    target: Optional[SparseTensor] = None,
) -> SparseTensor:
    """Inverse of a strided sparse conv: back to exactly the sites that conv read from.

    Reuses the strided conv's kernel map with inputs and outputs swapped. ``weight`` has
    ``nn.ConvTranspose3d`` layout ``[C_in, C_out/G, kD, kH, kW]``; the dense twin is
    ``F.conv_transpose3d(x.dense(), w, b, stride, padding, output_padding, groups, dilation)``
    with ``output_padding`` chosen so the grid is the original one, read at the original sites.
    """
    input, weight, bias = autocast_conv_inputs(input, weight, bias)
    _check_weight(input, weight, groups, transposed=True)
    key = KernelMapKey(
        "conv",
        tuple(weight.shape[2:]),
        triple(stride, "stride", 1),
        triple(padding, "padding", 0),
        triple(dilation, "dilation", 1),
    )
    kmap = find_inverse_map(input, key, target)
    feats = gather_gemm_scatter(input.feats, transposed_weight_to_core(weight, groups), kmap)
    return _finish(feats, bias, kmap)


def conv_map_key(
    kernel_size: IntOrTriple,
    stride: IntOrTriple,
    padding: IntOrTriple,
    dilation: IntOrTriple,
    submanifold: bool,
    layer: str = "the submanifold form",
) -> KernelMapKey:
    """The map key of a convolution in submanifold (stride 1, 'same') or strided form.

    ``layer`` names the caller in the error raised when a submanifold form is given a stride or
    padding it cannot honour.
    """
    kernel3 = triple(kernel_size, "kernel_size", 1)
    stride3 = triple(stride, "stride", 1)
    padding3 = triple(padding, "padding", 0)
    dilation3 = triple(dilation, "dilation", 1)
    if submanifold:
        if stride3 != (1, 1, 1) or padding3 != (0, 0, 0):
            raise ValueError(
                f"{layer} has stride 1 and 'same' padding; got stride={stride3}, padding={padding3} "
                "(use submanifold=False for the strided form)"
            )
        return KernelMapKey("submanifold", kernel3, dilation=dilation3)
    return KernelMapKey("conv", kernel3, stride3, padding3, dilation3)


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
    _check_input(input)
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
    _check_input(input)
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
    _check_input(input)
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
