"""Dense twins of the deformable and dynamic convolutions: plain dense deformable convolution
(trilinear sampling with ``F.grid_sample``) and per-sample ``F.conv3d`` with mixed expert kernels."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.tensor import SparseTensor
from .grids import DenseFn, _dense_geometry, _occupancy, _reach, _triple_of
from .plain import plain_dense_twin


def dense_deform_conv3d(
    input: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    offset_groups: int = 1,
    masks: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Plain dense 3D deformable convolution (DCN v1, or v2 with ``masks``), loop-free.

    ``y[b, :, o] = bias + sum_n W[:, :, n] m[b, g, n, o] x_b(o s - p + t_n d + dp[b, g, n, o])``
    for input channels of offset group ``g``, where ``x_b(P)`` samples the zero-padded grid
    trilinearly (voxel centres at integer positions) with ``F.grid_sample``.

    Args:
        input: ``[B, C_in, X, Y, Z]``.
        offsets: ``[B, offset_groups * K * 3, X', Y', Z']``, channel ``(g K + n) 3 + axis``
            (axis 0 is X, the first spatial dim), in voxels.
        weight: ``[C_out, C_in / groups, kD, kH, kW]``; ``bias``: ``[C_out]`` or None.
        padding: ints, or ``'same'`` (stride 1, low side ``d (k-1) // 2``), the submanifold form.
        masks: ``[B, offset_groups * K, X', Y', Z']`` or None.

    Returns:
        ``[B, C_out, X', Y', Z']``, with ``X'`` as ``F.conv3d`` (or ``X`` for ``'same'``).
    """
    B, C = input.shape[:2]
    spatial = tuple(input.shape[2:])
    kernel3 = tuple(weight.shape[2:])
    volume = kernel3[0] * kernel3[1] * kernel3[2]
    out_shape, low = _dense_geometry(spatial, kernel3, stride, padding, dilation)
    stride3, dilation3 = _triple_of(stride), _triple_of(dilation)
    G = offset_groups
    dtype, device = input.dtype, input.device
    # undeformed positions base[n, axis, X', Y', Z'] = o s - p + t d
    axes = []
    for a in range(3):
        o = torch.arange(out_shape[a], dtype=dtype, device=device) * stride3[a] - low[a]
        t = torch.arange(kernel3[a], dtype=dtype, device=device) * dilation3[a]
        axes.append((o, t))
    grid_o = torch.stack(torch.meshgrid(*(o for o, _ in axes), indexing="ij"))  # [3, X', Y', Z']
    grid_t = torch.stack(torch.meshgrid(*(t for _, t in axes), indexing="ij")).reshape(3, volume)  # [3, K]
    base = grid_o[None] + grid_t.t()[:, :, None, None, None]  # [K, 3, X', Y', Z']
    positions = base + offsets.view(B, G, volume, 3, *out_shape)  # [B, G, K, 3, X', Y', Z']
    # grid_sample on the grid padded by one zero voxel (so every axis has >= 3 voxels):
    # align_corners=True puts voxel i of an axis of size m at -1 + 2 i / (m - 1).
    padded = F.pad(input, (1, 1, 1, 1, 1, 1)).reshape(B * G, C // G, *(n + 2 for n in spatial))
    norm = torch.stack([2 * (positions[:, :, :, a] + 1) / (spatial[a] + 1) - 1 for a in range(3)], dim=-1)
    # grid_sample's last dim is (W, H, D) = (Z, Y, X); output [B*G, C/G, K, X', Y'*Z']
    grid = norm.flip(-1).reshape(B * G, volume, out_shape[0], out_shape[1] * out_shape[2], 3)
    sampled = F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.view(B, G, C // G, volume, *out_shape)
    if masks is not None:
        sampled = sampled * masks.view(B, G, 1, volume, *out_shape)
    c_out = weight.shape[0]
    cols = sampled.reshape(B, groups, C // groups, volume, -1)
    w = weight.reshape(groups, c_out // groups, C // groups, volume)
    out = torch.einsum("bgcks,gock->bgos", cols, w).reshape(B, c_out, *out_shape)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1)
    return out


def deform_dense_twin(module: nn.Module, input: SparseTensor) -> Tuple[DenseFn, torch.Tensor]:
    """Dense twin of a :class:`~sparseconv.nn.SparseDeformConv3d` (offsets predicted from the input):
    the offset conv's dense twin, then :func:`dense_deform_conv3d`. For :func:`check_dense_equivalence`."""
    m = module
    predictor_twin, sites = plain_dense_twin(m.offset_conv, input)
    split = m.offset_groups * m.kernel_volume * 3

    def fn(d: torch.Tensor) -> torch.Tensor:
        pred = predictor_twin(d)
        masks = torch.sigmoid(pred[:, split:]) if m.modulated else None
        padding = "same" if m.submanifold else m.padding
        return dense_deform_conv3d(
            d, pred[:, :split], m.weight, m.bias, m.stride, padding, m.dilation, m.groups, m.offset_groups, masks
        )

    return fn, sites



def dense_per_sample_conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv3d`` of each batch entry with its own kernel: ``weight [B, C_out, C_in/G, kD, kH, kW]``,
    ``bias [B, C_out]``; ``padding='same'`` pads ``d (k-1) // 2`` low and the rest high."""
    outs = []
    for b in range(input.shape[0]):
        x = input[b : b + 1]
        if isinstance(padding, str):
            _dense_geometry(input.shape[2:], weight.shape[3:], stride, padding, dilation)  # validates
            pads = []
            for k, d in reversed(list(zip(weight.shape[3:], _triple_of(dilation)))):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x, pad = F.pad(x, pads), 0
        else:
            pad = padding
        outs.append(F.conv3d(x, weight[b], None if bias is None else bias[b], stride, pad, dilation, groups))
    return torch.cat(outs)


def dense_dynamic_conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    kernel_attention: torch.Tensor,
    spatial_attention: Optional[torch.Tensor] = None,
    in_channel_attention: Optional[torch.Tensor] = None,
    out_channel_attention: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Dense dynamic convolution from given attentions: per-sample ``F.conv3d`` with

        W_b = sum_e pi[b, e] (alpha_s[b] * alpha_c[b] * alpha_f[b] * W_e),   bias_b = sum_e pi[b, e] bias_e

    ``weight [E, C_out, C_in/G, kD, kH, kW]``, ``bias [E, C_out]``, ``kernel_attention [B, E]``,
    ``spatial_attention [B, K]`` (per tap), ``in_channel_attention [B, C_in]``,
    ``out_channel_attention [B, C_out]`` (the last three optional, as in ODConv).
    """
    B = kernel_attention.shape[0]
    E, c_out, cin_g = weight.shape[:3]
    kernel3 = tuple(weight.shape[3:])
    w = weight[None].expand(B, *weight.shape)  # [B, E, C_out, C_in/G, kD, kH, kW]
    if spatial_attention is not None:
        w = w * spatial_attention.view(B, 1, 1, 1, *kernel3)
    if in_channel_attention is not None:
        # output channel o of group j reads input channels j*C_in/G + c
        per_out = in_channel_attention.view(B, groups, 1, cin_g).expand(B, groups, c_out // groups, cin_g)
        w = w * per_out.reshape(B, 1, c_out, cin_g, 1, 1, 1)
    if out_channel_attention is not None:
        w = w * out_channel_attention.view(B, 1, c_out, 1, 1, 1, 1)
    mixed = (kernel_attention.view(B, E, 1, 1, 1, 1, 1) * w).sum(1)
    mixed_bias = None if bias is None else kernel_attention @ bias
    return dense_per_sample_conv3d(input, mixed, mixed_bias, stride, padding, dilation, groups)


def dynamic_dense_twin(module: nn.Module, input: SparseTensor) -> Tuple[DenseFn, torch.Tensor]:
    """Dense twin of a dynamic sparse conv (:class:`~sparseconv.nn.SparseDynamicConv3d`,
    :class:`~sparseconv.nn.SparseCondConv3d`, :class:`~sparseconv.nn.SparseODConv3d`): the mean
    over each sample's active voxels taken on the dense grid (sum / active count), the module's
    own attention head on it, then :func:`dense_dynamic_conv3d`. For :func:`check_dense_equivalence`."""
    m = module
    occ = _occupancy(input)
    counts = occ.sum((1, 2, 3, 4)).clamp(min=1)
    if m.submanifold:
        sites = occ[:, 0] > 0.5
    else:
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation)

    def fn(d: torch.Tensor) -> torch.Tensor:
        pooled = d.sum((2, 3, 4)) / counts.to(d.dtype)[:, None]
        att = m.attention(pooled)
        return dense_dynamic_conv3d(
            d, m.weight, m.bias, att.kernel, att.spatial, att.in_channel, att.out_channel,
            m.stride, "same" if m.submanifold else m.padding, m.dilation, m.groups,
        )

    return fn, sites

