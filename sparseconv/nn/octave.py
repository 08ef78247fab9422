"""Octave convolution on the sparse grid: high- and low-frequency features at strides 1 and 2.

A feature map is a pair ``(x_h, x_l)``: ``x_h`` on the fine sites, ``x_l`` on the coarse sites, the
output of the ``2 x 2 x 2``, stride-2 downsampling of ``x_h``'s coordinates (so every fine site has
exactly one coarse parent). Channels split ``C_l = int(alpha C)``, ``C_h = C - C_l``. Four paths:

    y_h = conv_hh(x_h) + up(conv_lh(x_l)) + b_h
    y_l = conv_hl(down(x_h)) + conv_ll(x_l) + b_l

``conv_*`` are submanifold ``k x k x k`` convs; ``down`` is the ``2 x 2 x 2`` average pool (stride 2,
``F.avg_pool3d`` of the zero-filled grid: the sum over the 8 children / 8); ``up`` is nearest
upsampling, each fine site reading its parent (``F.interpolate(scale_factor=2, mode='nearest')``).
Both run on the core op as depthwise convs (``down``: weight 1/8 on the strided map; ``up``: weight 1
on the same map transposed, the inverse conv), so ``up`` lands exactly on ``x_h``'s sites.

``alpha_in = 0``: the input is one SparseTensor (the first layer of an octave network);
``alpha_out = 0``: the output is one SparseTensor ``y_h`` (the last). Paths with no channels are absent.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from . import functional as SF
from .._validation import IntOrTriple
from ..engine.kmap import KernelMapKey
from ..engine.tensor import SparseTensor
from .conv import SubMConv3d, _ConvGeometry

_DOWN = KernelMapKey("conv", (2, 2, 2), (2, 2, 2))  # the fine -> coarse map of an octave pair
Octave = Union[SparseTensor, Tuple[SparseTensor, SparseTensor]]


def _split(channels: int, alpha: float, name: str) -> Tuple[int, int]:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {alpha!r}")
    low = int(alpha * channels)  # < channels, as alpha < 1
    return channels - low, low


def octave_down(x_h: SparseTensor) -> SparseTensor:
    """``x_h`` averaged over ``2 x 2 x 2`` blocks (stride 2): the coarse sites of an octave pair."""
    c = x_h.num_channels
    weight = x_h.feats.new_full((c, 1, 2, 2, 2), 1 / 8)
    return SF.sparse_conv3d(x_h, weight, None, 2, 0, 1, c)


def octave_up(x_l: SparseTensor, fine: SparseTensor) -> SparseTensor:
    """Nearest upsampling of coarse ``x_l`` onto the sites of ``fine`` (each reads its parent)."""
    c = x_l.num_channels
    weight = x_l.feats.new_ones((c, 1, 2, 2, 2))
    return SF.sparse_inverse_conv3d(x_l, weight, None, 2, 0, 1, c, target=fine)


class OctaveConv3d(_ConvGeometry):
    """Octave convolution (module docstring) with ``alpha_in`` / ``alpha_out`` low-frequency shares.

    Children (submanifold convs, no bias): ``conv_hh``, and where both ends have channels
    ``conv_hl``, ``conv_lh``, ``conv_ll``. Parameters ``bias_h [C_h out]``, ``bias_l [C_l out]``.

    Shape:
        - Input: ``x_h [N_h, C_h in]`` (alone when ``alpha_in = 0``) or ``(x_h, x_l [N_l, C_l in])``.
        - Output: ``(y_h, y_l)`` on the same sites, or ``y_h`` alone when ``alpha_out = 0``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple = 3,
        alpha_in: float = 0.5,
        alpha_out: float = 0.5,
        dilation: IntOrTriple = 1,
        bias: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, dilation, 1)
        self.high_in, self.low_in = _split(in_channels, alpha_in, "alpha_in")
        self.high_out, self.low_out = _split(out_channels, alpha_out, "alpha_out")
        self.alpha_in, self.alpha_out = alpha_in, alpha_out

        def conv(cin: int, cout: int) -> Optional[SubMConv3d]:
            return SubMConv3d(cin, cout, kernel_size, dilation, bias=False) if cin and cout else None

        self.conv_hh = conv(self.high_in, self.high_out)
        self.conv_hl = conv(self.high_in, self.low_out)
        self.conv_lh = conv(self.low_in, self.high_out)
        self.conv_ll = conv(self.low_in, self.low_out)
        self.bias_h = nn.Parameter(torch.zeros(self.high_out)) if bias else None
        self.bias_l = nn.Parameter(torch.zeros(self.low_out)) if bias and self.low_out else None

    def _inputs(self, input: Octave) -> Tuple[SparseTensor, Optional[SparseTensor]]:
        if self.low_in:
            if not (isinstance(input, tuple) and len(input) == 2 and all(isinstance(t, SparseTensor) for t in input)):
                raise TypeError(f"{type(self).__name__} with alpha_in={self.alpha_in} expects (x_h, x_l) SparseTensors")
            x_h, x_l = input
        else:
            if not isinstance(input, SparseTensor):
                raise TypeError(f"{type(self).__name__} with alpha_in=0 expects one SparseTensor, got {type(input).__name__}")
            x_h, x_l = input, None
        for name, x, channels in (("x_h", x_h, self.high_in), ("x_l", x_l, self.low_in)):
            if x is not None and x.num_channels != channels:
                raise ValueError(f"{name} must have {channels} channels, got {x.num_channels}")
        if x_l is not None:
            coarse = x_h.coordinate_set.kernel_map(_DOWN).output
            if not (coarse is x_l.coordinate_set or (
                    coarse.spatial_shape == x_l.spatial_shape and torch.equal(coarse.coords, x_l.coords))):
                raise ValueError("x_l must lie on the 2x2x2 stride-2 downsampling of x_h's sites (as OctaveConv3d makes it)")
        return x_h, x_l

    def forward(self, input: Octave) -> Octave:
        x_h, x_l = self._inputs(input)
        y_h = self.conv_hh(x_h).feats
        if self.conv_lh is not None:
            y_h = y_h + octave_up(self.conv_lh(x_l), x_h).feats
        if self.bias_h is not None:
            y_h = y_h + self.bias_h
        y_h = x_h.replace(y_h)
        if not self.low_out:
            return y_h
        coarse = octave_down(x_h)
        if x_l is not None:
            coarse = x_l.replace(coarse.feats)  # the same sites (checked above), x_l's coordinate set
        y_l = self.conv_hl(coarse).feats
        if self.conv_ll is not None:
            y_l = y_l + self.conv_ll(x_l).feats
        if self.bias_l is not None:
            y_l = y_l + self.bias_l
        return y_h, coarse.replace(y_l)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"alpha_in={self.alpha_in}, alpha_out={self.alpha_out}")
