"""Sparse convolution modules: state (weights, hyper-parameters) over :mod:`sparseconv.nn.functional`."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from . import functional as SF
from .._validation import IntOrTriple, check_groups, triple
from ..engine.tensor import SparseTensor


class _ConvGeometry(nn.Module):
    """The one validating base of every sparse convolution module (plain, transposed, inverse,
    deformable, dynamic): channels, kernel geometry and groups validated and stored once, the input
    check and the common part of ``extra_repr``. Subclasses add their parameters."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple,
        padding: IntOrTriple,
        dilation: IntOrTriple,
        groups: int,
    ):
        super().__init__()
        in_channels, out_channels, groups = check_groups(in_channels, out_channels, groups)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = triple(kernel_size, "kernel_size", 1)
        self.stride = triple(stride, "stride", 1)
        self.padding = triple(padding, "padding", 0)
        self.dilation = triple(dilation, "dilation", 1)
        self.groups = groups
        self.output_padding = (0, 0, 0)

    def _check_input(self, input: SparseTensor) -> None:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseTensor, got {type(input).__name__}")
        if input.num_channels != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects in_channels={self.in_channels}, input has {input.num_channels} channels"
            )

    def _geometry_repr(self, *extra: str) -> str:
        """``in, out, kernel_size=..., <extra>``, then the non-default geometry, groups and bias."""
        s = ", ".join((f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}", *extra))
        defaults = {"stride": (1, 1, 1), "padding": (0, 0, 0), "dilation": (1, 1, 1), "output_padding": (0, 0, 0)}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _SparseConvNd(_ConvGeometry):
    """Validation, parameters and initialisation shared by every sparse convolution.

    Parameters follow PyTorch exactly (names, layout, initialisation), so a
    ``state_dict`` of ``nn.Conv3d`` (``transposed=False``) or ``nn.ConvTranspose3d``
    (``transposed=True``) loads unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple,
        padding: IntOrTriple,
        dilation: IntOrTriple,
        groups: int,
        bias: bool,
        transposed: bool,
        output_padding: IntOrTriple = 0,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.output_padding = triple(output_padding, "output_padding", 0)
        self.transposed = transposed
        c_in, c_out, g = self.in_channels, self.out_channels, self.groups
        shape = (c_in, c_out // g, *self.kernel_size) if transposed else (c_out, c_in // g, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(c_out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same scheme as torch.nn.Conv3d: kaiming-uniform weight, bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return self._geometry_repr()


class SparseConv3d(_SparseConvNd):
    r"""Spatially sparse 3D convolution: ``nn.Conv3d`` on the densified grid, read at the
    output sites its kernel reaches from an active input.

    .. math::
        \text{out}[o] = b + \sum_{t} W[:, :, t]\, x[o \cdot s - p + t \cdot d]

    summed over active inputs; with ``groups`` the channels split as in ``nn.Conv3d``.

    Shape:
        - Input: SparseTensor with ``in_channels`` features on a grid ``(X, Y, Z)``.
        - Output: SparseTensor with ``out_channels`` features on the grid
          ``X_out = (X + 2p - d (k - 1) - 1) // s + 1`` (per axis), at every output site whose
          window holds at least one active input. ``padding='same'`` (stride 1, ``d (k - 1)`` even)
          keeps the grid, as ``F.conv3d(padding='same')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        if isinstance(padding, str):  # 'same': resolved to its symmetric padding (SF.same_padding)
            if padding != "same":
                raise ValueError(f"padding must be an int, a triple of ints or 'same', got {padding!r}")
            padding = SF.same_padding(kernel_size, stride, dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, False)

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        return SF.sparse_conv3d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SubMConv3d(_SparseConvNd):
    r"""Submanifold sparse 3D convolution: outputs exactly at the input sites.

    Equals ``nn.Conv3d(..., stride=1, padding='same', dilation=d)`` on the densified grid,
    read at the input sites: ``out[o] = b + sum_t W[:, :, t] x[o - l + t d]`` with
    ``l = d (k - 1) // 2`` per axis (even kernels pad the extra voxel on the high side, as
    PyTorch's ``'same'``). The active set never grows, so deep stacks stay sparse.

    Shape:
        - Input: SparseTensor ``[N, in_channels]`` on grid ``(X, Y, Z)``.
        - Output: SparseTensor ``[N, out_channels]`` on the same sites and grid.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, dilation, groups, bias, False)

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        return SF.subm_conv3d(input, self.weight, self.bias, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", submanifold"


class SparseConvTranspose3d(_SparseConvNd):
    r"""Transposed (generative) sparse 3D convolution: ``nn.ConvTranspose3d`` on the densified
    grid, read at every site an active input writes to.

    ``x[i]`` contributes ``W[i, :, t]`` to ``out[i s - p + t d]``. Weight layout
    ``[in_channels, out_channels / groups, kD, kH, kW]`` as ``nn.ConvTranspose3d``.

    Shape:
        - Output grid: ``X_out = (X - 1) s - 2p + d (k - 1) + output_padding + 1`` per axis.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        output_padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, True, output_padding
        )
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ValueError(
                    f"output_padding {self.output_padding} must be smaller than stride {self.stride} "
                    f"or dilation {self.dilation}"
                )

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        return SF.sparse_conv_transpose3d(
            input, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )


class SparseInverseConv3d(_SparseConvNd):
    r"""Inverse of a strided :class:`SparseConv3d`: returns to exactly the sites it read.

    Give it the ``kernel_size``, ``stride``, ``padding`` and ``dilation`` of the strided conv
    it undoes; it reuses that conv's kernel map with inputs and outputs swapped, so the
    output has the coordinates (and the kernel-map cache) of the strided conv's input, as
    a U-Net decoder needs. ``forward(x)`` finds the strided conv that produced ``x``;
    ``forward(x, target)`` names its input explicitly (needed only when several coordinate
    sets were downsampled to the same one).

    Dense twin: ``nn.ConvTranspose3d`` with the same parameters (and ``output_padding``
    that restores the original grid) read at the original sites. Weight layout
    ``[in_channels, out_channels / groups, kD, kH, kW]``.

    Shape:
        - Output: SparseTensor on the coordinates and grid of the strided conv's input.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, True)

    def forward(self, input: SparseTensor, target: Optional[SparseTensor] = None) -> SparseTensor:
        self._check_input(input)
        return SF.sparse_inverse_conv3d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, target
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + ", inverse"
