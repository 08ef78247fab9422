"""Dynamic sparse convolutions: expert kernels mixed per sample (CondConv, DynamicConv, ODConv).

Every layer here computes, for each batch entry ``b``, a kernel

    W_b = sum_e pi_e(b) * (alpha_s(b) * alpha_c(b) * alpha_f(b) * W_e),   bias_b = sum_e pi_e(b) bias_e

from attentions on ``z_b``, the mean of the input features over sample ``b``'s active voxels
(not over the empty grid), and convolves sample ``b`` with ``W_b``. ``alpha_s`` (per kernel tap),
``alpha_c`` (per input channel) and ``alpha_f`` (per output channel) are ODConv's and are 1 for
CondConv and DynamicConv. The mixed kernels go through
:func:`sparseconv.nn.functional.dynamic.sparse_conv3d_per_sample`: one core-op call for the whole batch over
the kernel map split by sample, with the GEMM work of one static convolution.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import nn

from .functional import dynamic as SDY
from .functional._checks import check_bias, check_dtype_device
from . import functional as SF
from .._validation import IntOrTriple, as_int
from ..engine.tensor import SparseTensor
from .conv import _ConvGeometry


class Attention(NamedTuple):
    """Per-sample attentions of a dynamic convolution (None where the layer has none)."""

    kernel: torch.Tensor  # [B, E]: expert weights pi
    spatial: Optional[torch.Tensor] = None  # [B, K]: per kernel tap (row-major over kD, kH, kW)
    in_channel: Optional[torch.Tensor] = None  # [B, C_in]
    out_channel: Optional[torch.Tensor] = None  # [B, C_out]


class _SparseDynamicConvNd(_ConvGeometry):
    """Experts, validation and the forward pass shared by every dynamic convolution.

    ``weight`` is ``[num_experts, out_channels, in_channels / groups, kD, kH, kW]`` (each expert
    an ``nn.Conv3d`` weight, initialised as ``nn.Conv3d`` does), ``bias`` ``[num_experts, out_channels]``.
    Subclasses define :meth:`attention` (pooled features ``[B, C_in]`` -> :class:`Attention`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        num_experts: int,
        stride: IntOrTriple,
        padding: IntOrTriple,
        dilation: IntOrTriple,
        groups: int,
        bias: bool,
        submanifold: bool,
        temperature: float,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.num_experts = as_int(num_experts, "num_experts (K, the number of expert kernels)", minimum=1)
        self.submanifold = bool(submanifold)
        SF.conv_map_key(self.kernel_size, self.stride, self.padding, self.dilation, self.submanifold)  # validates
        self.temperature = temperature
        self.kernel_volume = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        experts, c_in, c_out = self.num_experts, self.in_channels, self.out_channels
        self.weight = nn.Parameter(torch.empty(experts, c_out, c_in // self.groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(experts, c_out)) if bias else None
        self.reset_parameters()

    @property
    def temperature(self) -> float:
        """Divides the attention logits; may be changed during training (annealing)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {value!r}")
        self._temperature = float(value)

    def reset_parameters(self) -> None:
        # every expert as torch.nn.Conv3d initialises its weight and bias
        fan_in = self.weight[0].numel() // self.out_channels
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        for e in range(self.num_experts):
            nn.init.kaiming_uniform_(self.weight[e], a=math.sqrt(5))
            if self.bias is not None:
                nn.init.uniform_(self.bias[e], -bound, bound)

    def attention(self, pooled: torch.Tensor) -> Attention:  # pragma: no cover - abstract
        raise NotImplementedError

    def mixed_weight(self, att: Attention) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per-sample kernels ``[B, C_out, C_in/G, kD, kH, kW]`` and biases ``[B, C_out]``."""
        B = att.kernel.shape[0]
        weight = torch.einsum("be,eoc...->boc...", att.kernel, self.weight)
        # ODConv's attentions are shared by all experts, so they scale the mixed kernel
        if att.spatial is not None:
            weight = weight * att.spatial.view(B, 1, 1, *self.kernel_size)
        if att.in_channel is not None:
            cin_g, cout_g = self.in_channels // self.groups, self.out_channels // self.groups
            per_out = att.in_channel.view(B, self.groups, 1, cin_g).expand(B, self.groups, cout_g, cin_g)
            weight = weight * per_out.reshape(B, self.out_channels, cin_g, 1, 1, 1)
        if att.out_channel is not None:
            weight = weight * att.out_channel.view(B, self.out_channels, 1, 1, 1, 1)
        bias = None if self.bias is None else att.kernel @ self.bias
        return weight, bias

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        where = f"{type(self).__name__}: "
        check_dtype_device("weight", self.weight, input.feats, where)
        check_bias(self.bias, (self.num_experts, self.out_channels), f"[E={self.num_experts}, C_out={self.out_channels}]",
                   input.feats, where)
        att = self.attention(SF.global_avg_pool(input))
        weight, bias = self.mixed_weight(att)
        return SDY.sparse_conv3d_per_sample(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups, self.submanifold
        )

    def extra_repr(self) -> str:
        s = self._geometry_repr(f"num_experts={self.num_experts}")
        s += f", temperature={self.temperature:g}"
        if self.submanifold:
            s += ", submanifold"
        return s


def _router(in_channels: int, hidden: int, outputs: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(in_channels, outputs)
    return nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs))


class SparseDynamicConv3d(_SparseDynamicConvNd):
    r"""Dynamic sparse 3D convolution: ``num_experts`` kernels mixed per sample.

    .. math::
        W(x_b) = \sum_{e} \pi_e(x_b)\, W_e, \qquad
        \pi(x_b) = \operatorname{softmax}\!\big(r(z_b) / T\big) \;\text{(mode='softmax', DynamicConv)}
        \;\text{or}\; \sigma\big(r(z_b) / T\big) \;\text{(mode='sigmoid', CondConv)}

    where ``z_b`` is the mean of sample ``b``'s input features over its active voxels and ``r`` the
    routing net ``Linear(C_in, hidden) -> ReLU -> Linear(hidden, E)`` (a single ``Linear`` when
    ``hidden_channels=0``). Biases mix the same way. Each sample is convolved with its own kernel
    in one core-op call for the batch (see :mod:`sparseconv.nn.functional.dynamic`): exactly per-sample
    ``F.conv3d`` with ``W(x_b)`` at the active output sites, at the GEMM cost of one static conv.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            :class:`~sparseconv.nn.SparseConv3d`; with ``submanifold=True`` outputs stay at the
            input sites ('same' padding, stride 1) as :class:`~sparseconv.nn.SubMConv3d`.
        num_experts: ``E >= 1`` expert kernels.
        mode: ``'softmax'`` (DynamicConv, Chen et al. 2020) or ``'sigmoid'`` (CondConv, Yang et al. 2019).
        temperature: ``T > 0``; DynamicConv anneals it from 30 to 1 early in training (set
            ``module.temperature``).
        hidden_channels: width of the routing net's hidden layer; default ``max(4, in_channels // 4)``
            (DynamicConv's reduction 4); 0 for a single linear layer.

    Shape:
        - Input: SparseTensor ``[N, in_channels]``, ``B`` batch entries.
        - Output: SparseTensor ``[N_out, out_channels]`` on the sites of ``SparseConv3d`` (or the
          input sites when ``submanifold``).
        - ``weight``: ``[E, out_channels, in_channels / groups, kD, kH, kW]``; ``bias``: ``[E, out_channels]``.
    """

    MODES = ("softmax", "sigmoid")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        num_experts: int = 4,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = True,
        submanifold: bool = False,
        mode: str = "softmax",
        temperature: float = 1.0,
        hidden_channels: Optional[int] = None,
    ):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        super().__init__(
            in_channels, out_channels, kernel_size, num_experts, stride, padding, dilation, groups, bias,
            submanifold, temperature,
        )
        self.mode = mode
        hidden = max(4, self.in_channels // 4) if hidden_channels is None else hidden_channels
        self.hidden_channels = as_int(hidden, "hidden_channels", minimum=0)
        self.router = _router(self.in_channels, self.hidden_channels, self.num_experts)

    def attention(self, pooled: torch.Tensor) -> Attention:
        logits = self.router(pooled) / self.temperature
        return Attention(torch.softmax(logits, dim=1) if self.mode == "softmax" else torch.sigmoid(logits))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}"


class SparseCondConv3d(SparseDynamicConv3d):
    """CondConv (Yang et al. 2019): :class:`SparseDynamicConv3d` with sigmoid routing
    ``pi(x_b) = sigmoid(z_b R + c)`` by a single linear layer (``hidden_channels=0``); experts
    are not forced to sum to one."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        num_experts: int = 4,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = True,
        submanifold: bool = False,
        temperature: float = 1.0,
        hidden_channels: int = 0,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, num_experts, stride, padding, dilation, groups, bias,
            submanifold, "sigmoid", temperature, hidden_channels,
        )


class SparseODConv3d(_SparseDynamicConvNd):
    r"""Omni-dimensional dynamic convolution (ODConv, Li et al. 2022), sparse and 3D.

    .. math::
        W(x_b) = \sum_{e} \pi_e(b)\; \alpha_s(b) \odot \alpha_c(b) \odot \alpha_f(b) \odot W_e

    with four attentions from a shared squeeze ``h_b = ReLU(Linear(z_b))`` (``z_b``: mean over the
    sample's active voxels): kernel-wise ``pi = softmax(.. / T)`` over the ``E`` experts, and
    ``sigmoid(.. / T)`` over the kernel taps (``alpha_s``, ``K`` values), the input channels
    (``alpha_c``) and the output channels (``alpha_f``). The three are shared by the experts, as in
    the reference ODConv. The biases mix with ``pi`` only. Differences from the 2D original: no
    BatchNorm in the squeeze (its statistics would couple the samples), the three sigmoid heads
    are always present (also for depthwise layers or one expert).

    Args: as :class:`SparseDynamicConv3d` (no ``mode``); ``hidden_channels`` defaults to
    ``max(16, in_channels // 16)`` (ODConv's reduction 1/16, at least 16).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        num_experts: int = 4,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = True,
        submanifold: bool = False,
        temperature: float = 1.0,
        hidden_channels: Optional[int] = None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, num_experts, stride, padding, dilation, groups, bias,
            submanifold, temperature,
        )
        hidden = max(16, self.in_channels // 16) if hidden_channels is None else hidden_channels
        self.hidden_channels = as_int(hidden, "hidden_channels", minimum=1)
        self.squeeze = nn.Sequential(nn.Linear(self.in_channels, self.hidden_channels), nn.ReLU(inplace=True))
        self.kernel_fc = nn.Linear(self.hidden_channels, self.num_experts)
        self.spatial_fc = nn.Linear(self.hidden_channels, self.kernel_volume)
        self.in_channel_fc = nn.Linear(self.hidden_channels, self.in_channels)
        self.out_channel_fc = nn.Linear(self.hidden_channels, self.out_channels)

    def attention(self, pooled: torch.Tensor) -> Attention:
        h = self.squeeze(pooled)
        t = self.temperature
        return Attention(
            kernel=torch.softmax(self.kernel_fc(h) / t, dim=1),
            spatial=torch.sigmoid(self.spatial_fc(h) / t),
            in_channel=torch.sigmoid(self.in_channel_fc(h) / t),
            out_channel=torch.sigmoid(self.out_channel_fc(h) / t),
        )
