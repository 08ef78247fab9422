"""Building blocks shared by the model zoo: conv-norm-activation units and residual blocks.

Every block is made only of :mod:`sparseconv.nn` modules, keeps the coordinates of its
input (submanifold convolutions), and so shares the input's kernel-map cache: a stack of
blocks at one resolution builds its ``3x3x3`` submanifold map once.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .. import nn as snn
from .._validation import IntOrTriple, as_int, positive_int
from ..engine.tensor import SparseTensor

#: ``norm_layer(num_channels) -> module``: the normalisation used by every model
#: (:class:`sparseconv.nn.BatchNorm` by default; pass :class:`sparseconv.nn.SyncBatchNorm`
#: for multi-process training, or :class:`sparseconv.nn.LayerNorm`).
NormLayer = Callable[[int], nn.Module]

_SPARSE_CONVS = (snn.SubMConv3d, snn.SparseConv3d, snn.SparseConvTranspose3d, snn.SparseInverseConv3d)


def check_channels(name: str, value) -> int:
    """A channel count as a positive int (NumPy integers and integer-valued floats accepted)."""
    return positive_int(value, name)


def check_counts(name: str, values: Sequence[int], length: int, minimum: int = 0) -> tuple:
    """``length`` ints ``>= minimum`` (each as :func:`~sparseconv._validation.as_int` reads it)."""
    values = tuple(values)
    if len(values) != length:
        raise ValueError(f"{name} must be {length} ints >= {minimum}, got {values!r}")
    values = tuple(as_int(v, name) for v in values)
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be {length} ints >= {minimum}, got {values!r}")
    return values


def init_weights(module: nn.Module) -> None:
    """He (fan-out, ReLU) initialisation of every sparse conv, unit/zero norms, as ResNets do."""
    for m in module.modules():
        if isinstance(m, _SPARSE_CONVS):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.SyncBatchNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvNormAct(nn.Sequential):
    """``conv -> norm -> ReLU`` with any sparse convolution ``conv`` (built without bias).

    Shape:
        - Input/Output: as ``conv``.
    """

    def __init__(self, conv: nn.Module, channels: int, norm_layer: NormLayer = snn.BatchNorm):
        super().__init__(conv, norm_layer(channels), snn.ReLU(inplace=True))


def subm_unit(in_channels: int, out_channels: int, kernel_size: IntOrTriple = 3,
              norm_layer: NormLayer = snn.BatchNorm) -> ConvNormAct:
    """``SubMConv3d(k) -> norm -> ReLU``: the plain (non-residual) submanifold block."""
    return ConvNormAct(snn.SubMConv3d(in_channels, out_channels, kernel_size, bias=False), out_channels, norm_layer)


def down_unit(in_channels: int, out_channels: int, kernel_size: IntOrTriple = 2, stride: IntOrTriple = 2,
              padding: IntOrTriple = 0, norm_layer: NormLayer = snn.BatchNorm) -> ConvNormAct:
    """``SparseConv3d(k, stride, padding) -> norm -> ReLU``: a strided (downsampling) unit."""
    conv = snn.SparseConv3d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
    return ConvNormAct(conv, out_channels, norm_layer)


class SparseBasicBlock(nn.Module):
    r"""Residual block of two submanifold convolutions (the ResNet "basic" block).

    .. math::
        y = \mathrm{ReLU}\big(\mathrm{N}_2(W_2 * \mathrm{ReLU}(\mathrm{N}_1(W_1 * x))) + P x\big)

    with ``W_1, W_2`` submanifold ``k x k x k`` convolutions, ``N`` the normalisation and
    ``P`` the identity, or a per-site linear projection followed by a norm when the channel
    count changes (a ``1x1x1`` convolution without a kernel map). Both branches live on
    the input's sites, so the sum is a plain feature addition.

    Args:
        in_channels, out_channels: feature channels.
        kernel_size: submanifold kernel (default 3).
        dilation: dilation of both convolutions.
        norm_layer: normalisation factory (see :data:`NormLayer`).

    Shape:
        - Input: SparseTensor ``[N, in_channels]``.
        - Output: SparseTensor ``[N, out_channels]`` on the same coordinate set.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTriple = 3,
                 dilation: IntOrTriple = 1, norm_layer: NormLayer = snn.BatchNorm):
        super().__init__()
        self.conv1 = snn.SubMConv3d(in_channels, out_channels, kernel_size, dilation=dilation, bias=False)
        self.norm1 = norm_layer(out_channels)
        self.act1 = snn.ReLU(inplace=True)
        self.conv2 = snn.SubMConv3d(out_channels, out_channels, kernel_size, dilation=dilation, bias=False)
        self.norm2 = norm_layer(out_channels)
        self.shortcut: Optional[nn.Module] = None
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(snn.Linear(in_channels, out_channels, bias=False), norm_layer(out_channels))
        self.act2 = snn.ReLU(inplace=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(out.replace(out.feats + identity.feats))


def make_blocks(num_blocks: int, in_channels: int, out_channels: int, residual: bool = True,
                kernel_size: IntOrTriple = 3, norm_layer: NormLayer = snn.BatchNorm) -> nn.Sequential:
    """``num_blocks`` submanifold blocks; the first maps ``in_channels -> out_channels``."""
    blocks = []
    for i in range(num_blocks):
        c_in = in_channels if i == 0 else out_channels
        if residual:
            blocks.append(SparseBasicBlock(c_in, out_channels, kernel_size, norm_layer=norm_layer))
        else:
            blocks.append(subm_unit(c_in, out_channels, kernel_size, norm_layer))
    return nn.Sequential(*blocks)


def concat(x: SparseTensor, skip: SparseTensor) -> SparseTensor:
    """Channel concatenation ``[x | skip]`` of two tensors on the same coordinate set."""
    if x.coordinate_set is not skip.coordinate_set:
        raise ValueError("skip concatenation needs both tensors on the same coordinate set")
    return x.replace(torch.cat([x.feats, skip.feats], 1))


def pad_grid(x: SparseTensor, multiple: int) -> SparseTensor:
    """``x`` on a grid grown (on the high side) to a multiple of ``multiple`` per axis.

    A ``k=2, s=2`` convolution has the output grid ``floor(n / 2)`` (as ``F.conv3d``), so on an
    odd extent it drops the last slab of voxels, and a grid smaller than the total stride
    vanishes. Growing the grid to a multiple of the total stride keeps every site on every
    level; coordinates, world geometry and row order are unchanged. Returns ``x`` itself
    when its grid already fits (then its kernel-map cache is used); otherwise the features
    on the grown-grid copy of its coordinate set (:meth:`CoordinateSet.on_grid`, cached on
    ``x``'s set, so repeated calls on the same coordinates reuse its maps).
    """
    shape = x.spatial_shape
    padded = tuple(-(-n // multiple) * multiple for n in shape)
    if padded == shape:
        return x
    return SparseTensor.from_coordinate_set(x.feats, x.coordinate_set.on_grid(padded))
