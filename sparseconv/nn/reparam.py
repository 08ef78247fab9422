"""Re-parameterisable sparse convolutions: train with parallel branches, deploy as one SubMConv3d.

ACNet (:class:`AsymmetricConv3d`): a ``k x k x k`` branch plus the three axis branches ``k x 1 x 1``,
``1 x k x 1``, ``1 x 1 x k``; RepVGG (:class:`RepVGGBlock3d`): a ``k x k x k`` branch, a ``1 x 1 x 1``
branch and, when ``in_channels == out_channels``, an identity branch. Every branch is a submanifold
conv (no bias) followed by its own BatchNorm, and the block outputs the sum (add the activation after
it). All branches live on the input sites, so the sum is exact on the sparse grid.

:meth:`ReparamConv3d.fuse` folds each BatchNorm into its conv with the running statistics
(:func:`~sparseconv.nn.functional.kernels.fold_batchnorm`), centres every kernel inside ``k x k x k``
(:func:`~sparseconv.nn.functional.kernels.embed_kernel`; the identity is a ``1 x 1 x 1`` identity
kernel) and adds them: a single :class:`SubMConv3d` with bias that equals the block in eval mode.
The centring is exact because a submanifold conv centres odd kernels on the site itself, so
``kernel_size`` must be odd.
"""
from __future__ import annotations

import torch
from torch import nn

from .._validation import IntOrTriple
from ..engine.tensor import SparseTensor
from .conv import SubMConv3d, _ConvGeometry
from .functional.kernels import embed_kernel, fold_batchnorm
from .pointwise import BatchNorm


class _ConvBN(nn.Module):
    """One branch: a bias-free :class:`SubMConv3d` then :class:`BatchNorm`."""

    def __init__(self, in_channels, out_channels, kernel_size, dilation, groups):
        super().__init__()
        self.conv = SubMConv3d(in_channels, out_channels, kernel_size, dilation, groups, bias=False)
        self.bn = BatchNorm(out_channels)

    def forward(self, input: SparseTensor) -> SparseTensor:
        return self.bn(self.conv(input))


class ReparamConv3d(_ConvGeometry):
    """Sum of parallel submanifold conv + BatchNorm branches that :meth:`fuse` folds into one conv.

    Args:
        in_channels, out_channels, kernel_size (odd), dilation, groups: as :class:`SubMConv3d`.
        axis_branches: add ``k x 1 x 1``, ``1 x k x 1``, ``1 x 1 x k`` branches (ACNet).
        pointwise_branch: add a ``1 x 1 x 1`` branch (RepVGG).
        identity_branch: add a BatchNorm of the input itself (RepVGG; needs ``in == out``).

    Children: ``cube`` (and ``axis_x``, ``axis_y``, ``axis_z``, ``pointwise``: :class:`_ConvBN`),
    ``identity`` (a :class:`BatchNorm`) when enabled.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple = 3,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        axis_branches: bool = False,
        pointwise_branch: bool = False,
        identity_branch: bool = False,
    ):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, dilation, groups)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"{type(self).__name__} needs an odd kernel_size to fuse its branches, got {self.kernel_size}")
        if identity_branch and in_channels != out_channels:
            raise ValueError(
                f"identity_branch needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        k = self.kernel_size
        self.cube = _ConvBN(in_channels, out_channels, k, dilation, groups)
        if axis_branches:
            self.axis_x = _ConvBN(in_channels, out_channels, (k[0], 1, 1), dilation, groups)
            self.axis_y = _ConvBN(in_channels, out_channels, (1, k[1], 1), dilation, groups)
            self.axis_z = _ConvBN(in_channels, out_channels, (1, 1, k[2]), dilation, groups)
        if pointwise_branch:
            self.pointwise = _ConvBN(in_channels, out_channels, 1, 1, groups)
        self.identity = BatchNorm(out_channels) if identity_branch else None

    def branches(self):
        """The conv + BatchNorm branches, in order."""
        return [m for m in self.children() if isinstance(m, _ConvBN)]

    def forward(self, input: SparseTensor) -> SparseTensor:
        branches = self.branches()
        out = branches[0](input).feats
        for branch in branches[1:]:
            out = out + branch(input).feats
        if self.identity is not None:
            out = out + self.identity(input).feats
        return input.replace(out)

    @torch.no_grad()
    def fuse(self) -> SubMConv3d:
        """One :class:`SubMConv3d` (with bias) equal to this block in eval mode (BatchNorms folded
        with their running statistics). The block itself is left unchanged."""
        weight = bias = None
        for branch in self.branches():
            bn = branch.bn
            w, b = fold_batchnorm(branch.conv.weight, None, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
            w = embed_kernel(w, self.kernel_size)
            weight, bias = (w, b) if weight is None else (weight + w, bias + b)
        if self.identity is not None:
            per_group = self.in_channels // self.groups
            eye = torch.zeros_like(weight[:, :, :1, :1, :1])
            channel = torch.arange(self.out_channels, device=weight.device)
            eye[channel, channel % per_group] = 1
            bn = self.identity
            w, b = fold_batchnorm(eye, None, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
            weight, bias = weight + embed_kernel(w, self.kernel_size), bias + b
        fused = SubMConv3d(self.in_channels, self.out_channels, self.kernel_size, self.dilation, self.groups, bias=True)
        fused = fused.to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        return fused


class AsymmetricConv3d(ReparamConv3d):
    """ACNet's asymmetric convolution block in 3D: ``k^3`` + ``k x 1 x 1`` + ``1 x k x 1`` + ``1 x 1 x k``
    branches, each with BatchNorm; :meth:`fuse` gives one :class:`SubMConv3d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTriple = 3,
                 dilation: IntOrTriple = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation, groups, axis_branches=True)


class RepVGGBlock3d(ReparamConv3d):
    """RepVGG's training-time block in 3D: ``k^3`` + ``1 x 1 x 1`` (+ identity when ``in == out``)
    branches, each with BatchNorm; :meth:`fuse` gives one :class:`SubMConv3d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTriple = 3,
                 dilation: IntOrTriple = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation, groups, pointwise_branch=True,
                         identity_branch=in_channels == out_channels)
