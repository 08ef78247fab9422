"""Sparse ResNet: a classifier for object-level scans (one object per batch entry)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import nn as snn
from ..engine.tensor import SparseTensor
from .blocks import NormLayer, check_channels, check_counts, down_unit, init_weights, make_blocks, pad_grid

__all__ = ["SparseResNet", "RESNET_LAYERS", "sparse_resnet14", "sparse_resnet18", "sparse_resnet34"]

#: Residual blocks per stage for each depth (as torchvision's / MinkowskiEngine's ResNets).
RESNET_LAYERS: Dict[int, Tuple[int, ...]] = {
    14: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}


class SparseResNet(nn.Module):
    r"""ResNet classifier on sparse voxels: residual stages, global average pool, linear head.

    Architecture (``b = base_channels``, widths ``(b, 2b, 4b, 8b)``, ``L`` = block counts; every
    conv is followed by a norm and ReLU)::

        stem      SubMConv3d(C_in -> b, k=stem_kernel_size)                        stride 1
        layer_i   SparseConv3d(k=d, s=2) -> width_i, then L[i] BasicBlocks   i=1..4  stride 2^i
        pool      mean over each batch entry's active sites (GlobalAvgPool)       [B, 8b]
        head      Dropout(dropout), Linear(8b -> num_classes)                      [B, num_classes]

    Every stage starts by halving the resolution with a strided sparse conv (kernel ``d =
    downsample_kernel_size``; ``2`` tiles the grid, each input feeding one output), so all
    residual blocks are submanifold and their shortcuts are identities. The average runs over
    the sample's own active sites, not over the empty grid, so the logits do not depend on how
    much empty space surrounds the object. The grid is grown to a multiple of 16 first
    (:func:`~sparseconv.models.blocks.pad_grid`) so no strided conv drops boundary voxels.

    Args:
        in_channels: input feature channels.
        num_classes: number of classes.
        depth: 14, 18 or 34 (:data:`RESNET_LAYERS`); ignored when ``layers`` is given.
        base_channels: width of the stem and first stage (``b``).
        layers: explicit 4 block counts.
        stem_kernel_size: kernel of the stem submanifold conv.
        downsample_kernel_size: kernel ``d`` of the strided convs (stride 2, padding ``(d - 1) // 2``).
        dropout: dropout before the linear head.
        norm_layer: normalisation factory.

    Shape:
        - Input: SparseTensor ``[N, in_channels]``, batch ``B`` (one object per entry; an
          empty entry yields the head's bias).
        - Output: logits ``Tensor [B, num_classes]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 18,
        base_channels: int = 32,
        *,
        layers: Optional[Sequence[int]] = None,
        stem_kernel_size: int = 3,
        downsample_kernel_size: int = 2,
        dropout: float = 0.0,
        norm_layer: NormLayer = snn.BatchNorm,
    ):
        super().__init__()
        in_channels = check_channels("in_channels", in_channels)
        num_classes = check_channels("num_classes", num_classes)
        base_channels = check_channels("base_channels", base_channels)
        if layers is None:
            if depth not in RESNET_LAYERS:
                raise ValueError(f"depth must be one of {sorted(RESNET_LAYERS)} (or pass layers=), got {depth!r}")
            layers = RESNET_LAYERS[depth]
        layers = check_counts("layers", layers, 4, minimum=0)
        downsample_kernel_size = check_channels("downsample_kernel_size", downsample_kernel_size)
        self.in_channels, self.num_classes, self.layers = in_channels, num_classes, layers
        widths = tuple(base_channels * m for m in (1, 2, 4, 8))
        self.widths = widths
        self.stem = nn.Sequential(
            snn.SubMConv3d(in_channels, widths[0], stem_kernel_size, bias=False),
            norm_layer(widths[0]),
            snn.ReLU(inplace=True),
        )
        pad = (downsample_kernel_size - 1) // 2
        stages, channels = [], widths[0]
        for width, num in zip(widths, layers):
            stages.append(
                nn.Sequential(
                    down_unit(channels, width, downsample_kernel_size, 2, pad, norm_layer),
                    *make_blocks(num, width, width, True, 3, norm_layer),
                )
            )
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = snn.GlobalAvgPool()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward_features(self, x: SparseTensor) -> torch.Tensor:
        """Pooled features ``[B, 8b]`` (before dropout and the head)."""
        if not isinstance(x, SparseTensor):
            raise TypeError(f"SparseResNet expects a SparseTensor, got {type(x).__name__}")
        x = pad_grid(x, 16)  # no strided conv drops a boundary slab (see MinkUNet)
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.pool(x)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def sparse_resnet14(in_channels: int, num_classes: int, base_channels: int = 32, **kwargs) -> SparseResNet:
    """:class:`SparseResNet` with one block per stage."""
    return SparseResNet(in_channels, num_classes, 14, base_channels, **kwargs)


def sparse_resnet18(in_channels: int, num_classes: int, base_channels: int = 32, **kwargs) -> SparseResNet:
    """:class:`SparseResNet` with (2, 2, 2, 2) blocks."""
    return SparseResNet(in_channels, num_classes, 18, base_channels, **kwargs)


def sparse_resnet34(in_channels: int, num_classes: int, base_channels: int = 32, **kwargs) -> SparseResNet:
    """:class:`SparseResNet` with (3, 4, 6, 3) blocks."""
    return SparseResNet(in_channels, num_classes, 34, base_channels, **kwargs)
