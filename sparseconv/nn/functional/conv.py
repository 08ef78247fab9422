"""Stateless sparse convolutions: the math behind :mod:`sparseconv.nn`'s convolution modules.

Each function takes a :class:`~sparseconv.SparseTensor` and PyTorch-layout weights and
equals its dense twin at the active output sites:

=============================  =====================================================
``sparse_conv3d``              ``F.conv3d(x.dense(), w, b, stride, padding, dilation, groups)``
``subm_conv3d``                ``F.conv3d(x.dense(), w, b, padding='same', dilation, groups)``, read at the input sites
``sparse_conv_transpose3d``    ``F.conv_transpose3d(x.dense(), w, b, stride, padding, output_padding, groups, dilation)``
``sparse_inverse_conv3d``      ``F.conv_transpose3d`` that undoes a strided conv, read at that conv's input sites
=============================  =====================================================
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ..._validation import IntOrTriple, triple
from ...engine.core import gather_gemm_scatter
from ...engine.kmap import KernelMap, KernelMapKey
from ...engine.tensor import SparseTensor
from ._checks import autocast_conv_inputs, check_conv_args, check_input


def conv_weight_to_core(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``nn.Conv3d`` layout ``[C_out, C_in/G, kD, kH, kW]`` -> core layout ``[K, G, C_in/G, C_out/G]``."""
    c_out, c_in_g = weight.shape[:2]
    return weight.reshape(groups, c_out // groups, c_in_g, -1).permute(3, 0, 2, 1)


def transposed_weight_to_core(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``nn.ConvTranspose3d`` layout ``[C_in, C_out/G, kD, kH, kW]`` -> ``[K, G, C_in/G, C_out/G]``."""
    c_in, c_out_g = weight.shape[:2]
    return weight.reshape(groups, c_in // groups, c_out_g, -1).permute(3, 0, 1, 2)


def _finish(feats: torch.Tensor, bias: Optional[torch.Tensor], kmap: KernelMap) -> SparseTensor:
    if bias is not None:
        feats = feats + bias
    return SparseTensor.from_coordinate_set(feats, kmap.output)


def _convolve(input, weight, bias, groups, key, transposed):
    input, weight, bias = autocast_conv_inputs(input, weight, bias)
    groups = check_conv_args(input, weight, bias, groups, transposed)
    if tuple(weight.shape[2:]) != key.kernel_size:
        raise ValueError(f"weight kernel {tuple(weight.shape[2:])} does not match kernel_size {key.kernel_size}")
    kmap = input.coordinate_set.kernel_map(key)
    core_weight = transposed_weight_to_core(weight, groups) if transposed else conv_weight_to_core(weight, groups)
    return _finish(gather_gemm_scatter(input.feats, core_weight, kmap), bias, kmap)


def same_padding(kernel_size: IntOrTriple, stride: IntOrTriple = 1, dilation: IntOrTriple = 1) -> Tuple[int, int, int]:
    """The symmetric padding ``d (k - 1) / 2`` per axis that ``padding='same'`` means for a strided-form
    conv (``F.conv3d`` accepts it at stride 1). A ValueError when the stride is not 1 or ``d (k - 1)``
    is odd on an axis (PyTorch would pad one voxel more on the high side; the kernel map pads
    symmetrically: use :func:`subm_conv3d`, whose map has no such limit)."""
    kernel3, stride3 = triple(kernel_size, "kernel_size", 1), triple(stride, "stride", 1)
    dilation3 = triple(dilation, "dilation", 1)
    if stride3 != (1, 1, 1):
        raise ValueError(f"padding='same' needs stride 1 (as F.conv3d), got stride={stride3}")
    if any(d * (k - 1) % 2 for k, d in zip(kernel3, dilation3)):
        raise ValueError(
            f"padding='same' needs dilation * (kernel_size - 1) even on every axis (symmetric padding), got "
            f"kernel_size={kernel3}, dilation={dilation3}; the submanifold conv pads even kernels as PyTorch does"
        )
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel3, dilation3))  # type: ignore[return-value]


def sparse_conv3d(
    input: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrTriple = 1,
    padding: Union[IntOrTriple, str] = 0,
    dilation: IntOrTriple = 1,
    groups: int = 1,
) -> SparseTensor:
    """Spatially sparse convolution: ``F.conv3d`` at every output site its kernel reaches.

    ``out[o] = b + sum_t W[:, :, t] x[o*s - p + t*d]`` over active inputs; output sites are
    all ``o`` of the output grid with at least one active input in their window.
    Output grid: ``(n + 2p - d(k-1) - 1) // s + 1`` per axis. ``padding='same'`` (stride 1) keeps the
    grid (:func:`same_padding`); unlike :func:`subm_conv3d` the outputs are every site the kernel reaches.
    """
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"padding must be an int, a triple of ints or 'same', got {padding!r}")
        padding = same_padding(weight.shape[2:], stride, dilation)
    key = conv_map_key(tuple(weight.shape[2:]), stride, padding, dilation, submanifold=False)
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
        check_input(target, "target")
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
    groups = check_conv_args(input, weight, bias, groups, transposed=True)
    key = conv_map_key(tuple(weight.shape[2:]), stride, padding, dilation, submanifold=False)
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
