"""Feature-wise modules: torch modules applied to the features of a SparseTensor.

Each class here *is* its torch counterpart (same arguments, parameters and
``state_dict``) whose ``forward`` maps ``SparseTensor -> SparseTensor`` on the same
coordinates (sharing the kernel-map cache). Plain tensors pass through to the torch
behaviour, so these modules also work on dense features.

Normalisation statistics are taken over the active sites of the whole batch, never
over the empty grid: ``BatchNorm(C)(x)`` equals ``nn.BatchNorm1d(C)(x.feats)``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..tensor import SparseTensor


class _FeatureWise:
    """Mixin: run the torch module's ``forward`` on ``input.feats``."""

    def forward(self, input):
        if isinstance(input, SparseTensor):
            return input.replace(super().forward(input.feats))  # type: ignore[misc]
        if isinstance(input, torch.Tensor):
            return super().forward(input)  # type: ignore[misc]
        raise TypeError(f"{type(self).__name__} expects a SparseTensor or a Tensor, got {type(input).__name__}")


class BatchNorm(_FeatureWise, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the features of the active sites (statistics over all sites of the batch)."""


class SyncBatchNorm(_FeatureWise, nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` over active-site features, for DDP; statistics are shared across processes."""


class LayerNorm(_FeatureWise, nn.LayerNorm):
    """``nn.LayerNorm`` over the channels of each active site."""


class Linear(_FeatureWise, nn.Linear):
    """``nn.Linear`` per site (a 1x1x1 convolution without a kernel map)."""


class Dropout(_FeatureWise, nn.Dropout):
    """``nn.Dropout`` on the features."""


class Identity(_FeatureWise, nn.Identity):
    """Returns its input."""


class ReLU(_FeatureWise, nn.ReLU):
    pass


class ReLU6(_FeatureWise, nn.ReLU6):
    pass


class LeakyReLU(_FeatureWise, nn.LeakyReLU):
    pass


class ELU(_FeatureWise, nn.ELU):
    pass


class GELU(_FeatureWise, nn.GELU):
    pass


class SiLU(_FeatureWise, nn.SiLU):
    pass


class Mish(_FeatureWise, nn.Mish):
    pass


class Sigmoid(_FeatureWise, nn.Sigmoid):
    pass


class Tanh(_FeatureWise, nn.Tanh):
    pass


class Softmax(_FeatureWise, nn.Softmax):
    pass
