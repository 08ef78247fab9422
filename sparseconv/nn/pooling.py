"""Sparse pooling modules over :mod:`sparseconv.nn.functional`."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import functional as SF
from .._validation import IntOrTriple, triple
from ..engine.tensor import SparseTensor


class _SparsePoolNd(nn.Module):
    def __init__(self, kernel_size: IntOrTriple, stride: Optional[IntOrTriple], padding: IntOrTriple):
        super().__init__()
        self.kernel_size = triple(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else triple(stride, "stride", 1)
        self.padding = triple(padding, "padding", 0)
        for p, k in zip(self.padding, self.kernel_size):
            if p > k // 2:
                raise ValueError(f"padding {self.padding} must be at most half of kernel_size {self.kernel_size}")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class SparseMaxPool3d(_SparsePoolNd):
    """Max over the active sites of each window (``nn.MaxPool3d`` with empty sites at ``-inf``).

    Output sites are those of :class:`~sparseconv.nn.SparseConv3d` with the same kernel, so the
    pooled tensor can be un-pooled with an inverse conv of the same parameters.

    Shape:
        - Output grid: ``X_out = (X + 2p - d (k - 1) - 1) // s + 1`` per axis; ``stride`` defaults
          to ``kernel_size``.
    """

    def __init__(
        self,
        kernel_size: IntOrTriple,
        stride: Optional[IntOrTriple] = None,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
    ):
        super().__init__(kernel_size, stride, padding)
        self.dilation = triple(dilation, "dilation", 1)

    def forward(self, input: SparseTensor) -> SparseTensor:
        return SF.sparse_max_pool3d(input, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dilation={self.dilation}"


class SparseAvgPool3d(_SparsePoolNd):
    """``nn.AvgPool3d`` on the zero-filled grid, at the output sites the window reaches.

    Shape:
        - Output grid: ``X_out = (X + 2p - k) // s + 1`` per axis; ``stride`` defaults to ``kernel_size``.
    """

    def __init__(
        self,
        kernel_size: IntOrTriple,
        stride: Optional[IntOrTriple] = None,
        padding: IntOrTriple = 0,
        count_include_pad: bool = True,
    ):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, input: SparseTensor) -> SparseTensor:
        return SF.sparse_avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.count_include_pad)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", count_include_pad={self.count_include_pad}"


class GlobalAvgPool(nn.Module):
    """``SparseTensor -> Tensor [B, C]``: mean over each batch entry's active sites."""

    def forward(self, input: SparseTensor) -> torch.Tensor:
        return SF.global_avg_pool(input)


class GlobalMaxPool(nn.Module):
    """``SparseTensor -> Tensor [B, C]``: max over each batch entry's active sites."""

    def forward(self, input: SparseTensor) -> torch.Tensor:
        return SF.global_max_pool(input)


class GlobalSumPool(nn.Module):
    """``SparseTensor -> Tensor [B, C]``: sum over each batch entry's active sites."""

    def forward(self, input: SparseTensor) -> torch.Tensor:
        return SF.global_sum_pool(input)


class ToDense(nn.Module):
    """``SparseTensor -> Tensor [B, C, X, Y, Z]`` (see :meth:`SparseTensor.dense`)."""

    def forward(self, input: SparseTensor) -> torch.Tensor:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"ToDense expects a SparseTensor, got {type(input).__name__}")
        return input.dense()
