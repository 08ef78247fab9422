"""Separable sparse convolutions: depthwise-separable, spatially separable and flattened.

**Depthwise-separable** (:class:`DepthwiseSeparableConv3d`): a depthwise conv (``groups =
in_channels``, one ``k x k x k`` filter per channel, run by the core's depthwise path: a multiply-add
per pair and channel, no GEMM) then a pointwise ``1 x 1 x 1`` conv. Both are child modules.

**Spatially separable** (:class:`SpatiallySeparableConv3d`) and **flattened**
(:class:`FlattenedConv3d`): a ``k x k x k`` kernel factored into the axis kernels ``k x 1 x 1``,
``1 x k x 1``, ``1 x 1 x k`` (flattened: a pointwise channel mix first, then one depthwise filter per
axis). Both take ``factorised=``:

* ``factorised=False`` (the chain): three (four) submanifold convolutions in a row. Every step is
  submanifold, so its output exists only at the active sites: a value the next step would read at an
  empty voxel is zero, not what the previous axis conv would have put there. So the chain is NOT the
  product kernel: along ``x -> y -> z`` a path ``p -> p + u_x -> p + u_x + u_y -> o`` contributes only
  if both intermediate voxels are active. Dense twin: the same chain of dense 'same' convs, each
  output multiplied by the occupancy mask (zeroed at the empty sites) before the next step.
* ``factorised=True``: one submanifold conv with the exactly factorised kernel
  (:func:`~sparseconv.nn.functional.kernels.compose_axis_kernels`: the chain's kernel on an
  unbounded dense grid; for the flattened form the per-channel outer product
  ``P[o, i] u_x[o, a] u_y[o, b] u_z[o, c]``). Dense twin: one conv with that kernel, i.e. the
  unmasked dense chain on a grid large enough that no step is cut off. Costs a ``k^3`` map's pairs
  (``C_out C_in`` per pair) instead of three ``k``-tap maps; the parameters are the same.

The two forms share parameters, so a model trained with one can be run with the other; they agree
only where the neighbourhoods are full.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from . import functional as SF
from .._validation import IntOrTriple, positive_int
from ..engine.tensor import SparseTensor
from .conv import SparseConv3d, SubMConv3d, _ConvGeometry
from .functional.kernels import compose_axis_kernels, flattened_kernel


class DepthwiseSeparableConv3d(_ConvGeometry):
    """Depthwise ``k x k x k`` conv (``groups = in_channels``, no bias) then a pointwise ``1 x 1 x 1``
    conv to ``out_channels``: MobileNet's separable convolution on the sparse grid.

    Children: ``depthwise`` (a :class:`SubMConv3d`, or a :class:`SparseConv3d` with ``stride`` /
    ``padding`` when ``submanifold=False``) and ``pointwise`` (a ``1 x 1 x 1`` :class:`SubMConv3d`).
    Dense twin: ``F.conv3d(F.conv3d(x, W_dw, groups=C_in), W_pw, b)`` read at the output sites (the
    pointwise step reads only its own site, so no masking is needed between the steps).

    Shape:
        - Input: ``[N, in_channels]``; output ``[N_out, out_channels]`` on the depthwise conv's sites.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        bias: bool = True,
        submanifold: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 1)
        SF.conv_map_key(self.kernel_size, self.stride, self.padding, self.dilation, submanifold, type(self).__name__)
        self.submanifold = bool(submanifold)
        if submanifold:
            self.depthwise = SubMConv3d(in_channels, in_channels, kernel_size, dilation, in_channels, bias=False)
        else:
            self.depthwise = SparseConv3d(
                in_channels, in_channels, kernel_size, stride, padding, dilation, in_channels, bias=False
            )
        self.pointwise = SubMConv3d(in_channels, out_channels, 1, bias=bias)

    def forward(self, input: SparseTensor) -> SparseTensor:
        return self.pointwise(self.depthwise(input))


class _AxisFactorisedConv3d(_ConvGeometry):
    """Submanifold convolution whose kernel is built from per-axis kernels (see the module docstring).
    Subclasses list the chain's steps and the composed kernel."""

    def __init__(self, in_channels, out_channels, kernel_size, dilation, bias, factorised):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, dilation, 1)
        self.factorised = bool(factorised)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None

    def _axis_weight(self, out_channels: int, in_channels_per_group: int, axis: int) -> nn.Parameter:
        shape = [out_channels, in_channels_per_group, 1, 1, 1]
        shape[2 + axis] = self.kernel_size[axis]
        weight = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
        return weight

    def _reset_bias(self, fan_in: int) -> None:
        if self.bias is not None:
            bound = fan_in ** -0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def steps(self) -> List[Tuple[torch.Tensor, int]]:  # pragma: no cover - abstract
        """The chain: ``(weight, groups)`` per submanifold conv, in order."""
        raise NotImplementedError

    def kernel(self) -> torch.Tensor:  # pragma: no cover - abstract
        """The exactly factorised ``[C_out, C_in, kD, kH, kW]`` kernel."""
        raise NotImplementedError

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        if self.factorised:
            return SF.subm_conv3d(input, self.kernel(), self.bias, self.dilation)
        steps = self.steps()
        x = input
        for n, (weight, groups) in enumerate(steps):
            x = SF.subm_conv3d(x, weight, self.bias if n == len(steps) - 1 else None, self.dilation, groups)
        return x

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.dilation != (1, 1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        return s + (", factorised" if self.factorised else ", chain")


class SpatiallySeparableConv3d(_AxisFactorisedConv3d):
    """``k x 1 x 1`` (``in -> mid``), ``1 x k x 1`` (``mid -> mid``), ``1 x 1 x k`` (``mid -> out``) with
    a bias after the last step; ``mid_channels`` defaults to ``out_channels``.

    Parameters ``weight_x [mid, in, k, 1, 1]``, ``weight_y [mid, mid, 1, k, 1]``,
    ``weight_z [out, mid, 1, 1, k]``, ``bias [out]``. ``factorised`` picks the chain or the exactly
    factorised kernel (module docstring: they differ under submanifold semantics).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        mid_channels: Optional[int] = None,
        dilation: IntOrTriple = 1,
        bias: bool = True,
        factorised: bool = False,
    ):
        super().__init__(in_channels, out_channels, kernel_size, dilation, bias, factorised)
        mid = out_channels if mid_channels is None else positive_int(mid_channels, "mid_channels")
        self.mid_channels = mid
        self.weight_x = self._axis_weight(mid, in_channels, 0)
        self.weight_y = self._axis_weight(mid, mid, 1)
        self.weight_z = self._axis_weight(out_channels, mid, 2)
        self._reset_bias(mid * self.kernel_size[2])

    def steps(self) -> List[Tuple[torch.Tensor, int]]:
        return [(self.weight_x, 1), (self.weight_y, 1), (self.weight_z, 1)]

    def kernel(self) -> torch.Tensor:
        return compose_axis_kernels(self.weight_x, self.weight_y, self.weight_z)


class FlattenedConv3d(_AxisFactorisedConv3d):
    """Flattened convolution: a pointwise ``1 x 1 x 1`` channel mix (``in -> out``), then one depthwise
    filter per axis (``k x 1 x 1``, ``1 x k x 1``, ``1 x 1 x k``, ``groups = out``), bias last.

    Parameters ``pointwise [out, in, 1, 1, 1]``, ``weight_x [out, 1, k, 1, 1]``, ``weight_y``,
    ``weight_z``, ``bias [out]``. The exactly factorised kernel is the per-channel outer product
    ``P[o, i] u_x[o, a] u_y[o, b] u_z[o, c]`` (:func:`~sparseconv.nn.functional.kernels.flattened_kernel`).
    The chain's axis steps run on the core's depthwise path.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        dilation: IntOrTriple = 1,
        bias: bool = True,
        factorised: bool = False,
    ):
        super().__init__(in_channels, out_channels, kernel_size, dilation, bias, factorised)
        self.pointwise = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1, 1))
        nn.init.kaiming_uniform_(self.pointwise, a=5 ** 0.5)
        self.weight_x = self._axis_weight(out_channels, 1, 0)
        self.weight_y = self._axis_weight(out_channels, 1, 1)
        self.weight_z = self._axis_weight(out_channels, 1, 2)
        self._reset_bias(self.kernel_size[2])

    def steps(self) -> List[Tuple[torch.Tensor, int]]:
        c = self.out_channels
        return [(self.pointwise, 1), (self.weight_x, c), (self.weight_y, c), (self.weight_z, c)]

    def kernel(self) -> torch.Tensor:
        return flattened_kernel(self.pointwise, self.weight_x, self.weight_y, self.weight_z)
