"""Deformable sparse convolution modules (DCN v1 / v2 in 3D) over :mod:`sparseconv.nn.functional.deform`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .functional import deform as SD
from . import functional as SF
from .._validation import IntOrTriple
from ..engine.tensor import SparseTensor
from .conv import SparseConv3d, SubMConv3d, _SparseConvNd


class SparseDeformConv3d(_SparseConvNd):
    r"""Deformable sparse 3D convolution, v1 (``modulated=False``) or v2 (``modulated=True``).

    .. math::
        y(o) = b + \sum_{n} W[:, :, n]\; m_n(o)\; x\big(\text{base}(o, n) + \Delta p_n(o)\big)

    with ``base(o, n) = o s - p + t_n d`` (strided form, output sites of :class:`SparseConv3d`)
    or ``o - d (k-1) // 2 + t_n d`` (``submanifold=True``: outputs at the input sites, stride 1).
    ``x(.)`` is trilinear interpolation of the zero-filled voxel grid: empty voxels and voxels
    outside the grid read as zero, exactly as in a zero-padded dense grid. The offsets
    ``Delta p`` (3 per tap and offset group, in voxels) and, for v2, the mask logits are
    predicted from the input by ``offset_conv`` (a :class:`SubMConv3d` for the submanifold
    form, a :class:`SparseConv3d` with this layer's kernel, stride, padding and dilation
    otherwise, so it yields one row per output site), and ``m = sigmoid(logits)`` in [0, 1].

    ``offset_conv`` starts at zero (weight and bias), as in DCN practice: a fresh v1 layer is
    exactly the plain convolution and a fresh v2 layer the plain convolution with every mask at
    ``sigmoid(0) = 1/2`` (DCNv2's initialisation). The sampling runs on the shared core op: the
    8 interpolation corners of every tap become weighted pairs of a per-call kernel map (see
    :mod:`sparseconv.nn.functional.deform`), and gradients reach features, weight, bias, offsets and masks.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias:
            as :class:`SparseConv3d` (``weight``/``bias`` in ``nn.Conv3d`` layout).
        offset_groups: input channels split into this many consecutive slices, each sampled
            with its own offsets (and masks); must divide ``in_channels``.
        modulated: predict and apply masks (DCN v2).
        submanifold: outputs at the input sites, 'same' padding (needs stride 1, padding 0).

    Shape:
        - Input: SparseTensor ``[N, in_channels]`` on grid ``(X, Y, Z)``.
        - Output: SparseTensor ``[N_out, out_channels]``; the input sites and grid when
          ``submanifold``, else the sites and grid of ``SparseConv3d`` with the same geometry.
        - ``offset_conv`` output: ``[N_out, offset_groups * K * (3 + modulated)]``, offsets first
          (column ``(g K + n) 3 + axis``), then mask logits (column ``g K + n``).
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
        offset_groups: int = 1,
        modulated: bool = True,
        bias: bool = True,
        submanifold: bool = False,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, False)
        offset_groups = SD.check_offset_groups(self.in_channels, offset_groups)
        SF.conv_map_key(self.kernel_size, self.stride, self.padding, self.dilation, submanifold, SD.DEFORM_LAYER)
        self.offset_groups = offset_groups
        self.modulated = bool(modulated)
        self.submanifold = bool(submanifold)
        self.kernel_volume = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        predicted = offset_groups * self.kernel_volume * (4 if self.modulated else 3)
        if self.submanifold:
            self.offset_conv = SubMConv3d(self.in_channels, predicted, self.kernel_size, self.dilation)
        else:
            self.offset_conv = SparseConv3d(
                self.in_channels, predicted, self.kernel_size, self.stride, self.padding, self.dilation
            )
        self.reset_offset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if "offset_conv" in self._modules:
            self.reset_offset_parameters()

    def reset_offset_parameters(self) -> None:
        """Zero the offset/mask predictor: zero offsets, masks 1/2 (v2)."""
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def predict_offsets(self, input: SparseTensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(offsets [N_out, G*K*3], masks [N_out, G*K] or None)`` as the forward pass uses them."""
        pred = self.offset_conv(input).feats
        split = self.offset_groups * self.kernel_volume * 3
        masks = torch.sigmoid(pred[:, split:]) if self.modulated else None
        return pred[:, :split], masks

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        offsets, masks = self.predict_offsets(input)
        return SD.sparse_deform_conv3d(
            input, offsets, self.weight, self.bias, masks, self.stride, self.padding, self.dilation,
            self.groups, self.offset_groups, self.submanifold,
        )

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.offset_groups != 1:
            s += f", offset_groups={self.offset_groups}"
        s += ", modulated" if self.modulated else ", v1"
        if self.submanifold:
            s += ", submanifold"
        return s


class SubMDeformConv3d(SparseDeformConv3d):
    """:class:`SparseDeformConv3d` in submanifold form: outputs at the input sites, stride 1,
    'same' padding (offsets predicted by a :class:`SubMConv3d`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        offset_groups: int = 1,
        modulated: bool = True,
        bias: bool = True,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, 1, 0, dilation, groups, offset_groups, modulated, bias,
            submanifold=True,
        )
