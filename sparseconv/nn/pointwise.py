"""Feature-wise modules: torch modules applied to the features of a SparseTensor.

Each class here *is* its torch counterpart (same arguments, parameters and
``state_dict``) whose ``forward`` maps ``SparseTensor -> SparseTensor`` on the same
coordinates (sharing the kernel-map cache). Plain tensors pass through to the torch
behaviour, so these modules also work on dense features.

Normalisation statistics are taken over the active sites of the whole batch, never
over the empty grid: ``BatchNorm(C)(x)`` equals ``nn.BatchNorm1d(C)(x.feats)``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..engine.tensor import SparseTensor


def _expected_channels(module) -> Optional[Tuple[str, int]]:
    """``(argument name, channels)`` a feature-wise module needs, or None when any count will do."""
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return "num_features", module.num_features
    if isinstance(module, nn.Linear):
        return "in_features", module.in_features
    if isinstance(module, nn.LayerNorm):
        return "normalized_shape", module.normalized_shape[-1] if len(module.normalized_shape) == 1 else None
    return None


def check_feature_channels(module: nn.Module, feats: torch.Tensor, where: str = "") -> None:
    """Raise ``ValueError`` naming the module and both counts when ``feats [N, C]`` has the wrong ``C``
    (rather than the torch message from deep inside the op); ``where`` prefixes the message."""
    expected = _expected_channels(module)
    if expected is None:
        return
    argument, channels = expected
    if channels is None:
        raise ValueError(
            f"{where}{type(module).__name__} on sparse features [N, C] needs normalized_shape=(C,), "
            f"got {tuple(module.normalized_shape)}"
        )
    if feats.dim() != 2 or feats.shape[1] != channels:
        raise ValueError(
            f"{where}{type(module).__name__}({argument}={channels}) expects {channels} channels, "
            f"got features with {feats.shape[-1] if feats.dim() else 0} channels (shape {tuple(feats.shape)})"
        )


class _FeatureWise:
    """Mixin: run the torch module's ``forward`` on ``input.feats``."""

    def forward(self, input):
        if isinstance(input, SparseTensor):
            check_feature_channels(self, input.feats)  # type: ignore[arg-type]
            return input.replace(super().forward(input.feats))  # type: ignore[misc]
        if isinstance(input, torch.Tensor):
            return super().forward(input)  # type: ignore[misc]
        raise TypeError(f"{type(self).__name__} expects a SparseTensor or a Tensor, got {type(input).__name__}")


class BatchNorm(_FeatureWise, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the features of the active sites (statistics over all sites of the batch)."""


class SyncBatchNorm(BatchNorm):
    """BatchNorm whose batch statistics are taken over the active sites of *every* process.

    In training mode inside an initialised ``torch.distributed`` process group of more than one
    process, each process contributes ``(count, sum, sum of squares)`` of its active-site
    features; one autograd-aware ``all_reduce`` (``torch.distributed.nn.functional``) gives
    the global mean and biased variance, so forward and gradients equal a single
    ``BatchNorm`` over the concatenated batch, and the running statistics (unbiased variance,
    as PyTorch) stay identical on every rank. Works with gloo on CPU (``nn.SyncBatchNorm``
    supports GPUs only) and with nccl. Outside a process group, or in eval mode, it is
    :class:`BatchNorm`. Parameters and buffers are those of ``nn.BatchNorm1d``.
    """

    def __init__(self, *args, process_group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _distributed(self) -> bool:
        import torch.distributed as dist

        return (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        )

    def forward(self, input):
        if not self._distributed():
            return super().forward(input)
        feats = input.feats if isinstance(input, SparseTensor) else input
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
            raise ValueError(f"SyncBatchNorm expects features [N, C], got {getattr(feats, 'shape', type(feats))}")
        check_feature_channels(self, feats)
        out = self._sync_normalize(feats)
        return input.replace(out) if isinstance(input, SparseTensor) else out

    def _sync_normalize(self, feats: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        stats_dtype = torch.float64 if feats.dtype == torch.float64 else torch.float32
        x = feats.to(stats_dtype)
        local = torch.cat((x.new_full((1,), float(x.shape[0])), x.sum(0), (x * x).sum(0)))
        total = all_reduce(local, group=self.process_group) if self.process_group else all_reduce(local)
        count, channels = total[0], self.num_features
        if float(count.detach()) < 2:  # the count has a grad_fn (all_reduce); its value is all we read
            raise ValueError("SyncBatchNorm needs more than one active site across all processes in training")
        mean = total[1 : 1 + channels] / count
        var = (total[1 + channels :] / count - mean * mean).clamp(min=0)
        with torch.no_grad():
            if self.track_running_stats:
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                if momentum is None:  # cumulative moving average, as nn.BatchNorm
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.to(stats_dtype) + self.bias.to(stats_dtype)
        return out.to(feats.dtype)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every :class:`BatchNorm` (not already synchronised) in ``module`` by a
    :class:`SyncBatchNorm` with the same parameters and buffers; returns the module."""
    if isinstance(module, BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
            process_group=process_group,
        )
        sync.load_state_dict(module.state_dict())
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module


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
