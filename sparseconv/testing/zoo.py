"""Dense twins of the variant zoo (:mod:`sparseconv.nn.separable`, ``.reparam``, ``.cdc``,
``.coordconv``, ``.involution``, ``.octave``), written from the dense definitions, not from the
sparse code: each is ``F.conv3d`` / ``F.avg_pool3d`` / elementwise math on ``x.dense()``, with the
occupancy mask wherever a submanifold step discards what lands on empty sites.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.tensor import SparseTensor
from ..nn.cdc import CentralDifferenceConv3d
from ..nn.coordconv import CoordConv3d
from ..nn.involution import Involution3d
from ..nn.octave import OctaveConv3d
from ..nn.reparam import ReparamConv3d
from ..nn.separable import DepthwiseSeparableConv3d, _AxisFactorisedConv3d
from .grids import DenseFn, _occupancy, _reach, dense_same_conv3d
from .plain import plain_dense_twin

__all__ = [
    "dense_axis_chain", "dense_central_difference_conv3d", "dense_coordinate_grid",
    "dense_involution3d", "dense_octave_conv3d", "zoo_dense_twin",
]


def dense_axis_chain(d: torch.Tensor, steps, bias, dilation, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """A chain of dense 'same' convs ``steps = [(weight, groups), ...]`` (bias after the last).

    ``mask`` (``[B, 1, X, Y, Z]``): multiply every step's output by it (the submanifold chain).
    ``mask=None``: the unmasked chain on a grid padded by ``dil (k-1)`` voxels per side, so no step
    is cut off at the border; cropped back at the end (the exactly factorised kernel)."""
    spatial = d.shape[2:]
    margins = [0, 0, 0]
    if mask is None:
        margins = [max(dil * (max(w.shape[2 + a] for w, _ in steps) - 1), 0) for a, dil in enumerate(dilation)]
        d = F.pad(d, [m for m in reversed(margins) for _ in range(2)])
    for n, (weight, groups) in enumerate(steps):
        d = dense_same_conv3d(d, weight, bias if n == len(steps) - 1 else None, dilation, groups)
        if mask is not None:
            d = d * mask
    if mask is None:
        d = d[:, :, margins[0]: margins[0] + spatial[0], margins[1]: margins[1] + spatial[1],
              margins[2]: margins[2] + spatial[2]]
    return d


def dense_central_difference_conv3d(d, weight, bias, theta, stride, padding, dilation, groups, same: bool):
    """Dense CDC on the zero-filled grid: ``conv(x, W) - theta * x(p0) * sum_taps W`` with ``x(p0)`` the
    window's centre voxel, read by slicing the padded grid (``same``: 'same' padding, stride 1)."""
    kernel = weight.shape[2:]
    if same:
        out = dense_same_conv3d(d, weight, bias, dilation, groups)
        centre = d
    else:
        out = F.conv3d(d, weight, bias, stride, padding, dilation, groups)
        padded = F.pad(d, [p for p in reversed(padding) for _ in range(2)])
        starts = [(k - 1) // 2 * dil for k, dil in zip(kernel, dilation)]
        centre = padded[:, :,
                        starts[0]:: stride[0], starts[1]:: stride[1], starts[2]:: stride[2]][
                            :, :, : out.shape[2], : out.shape[3], : out.shape[4]]
    tap_sum = weight.sum((2, 3, 4), keepdim=True)
    return out - theta * F.conv3d(centre, tap_sum, None, 1, 0, 1, groups)


def dense_coordinate_grid(x: SparseTensor, world: bool, with_radius: bool) -> torch.Tensor:
    """CoordConv's channels on the whole dense grid ``[B, 3 (+1), X, Y, Z]``, zero at the empty sites."""
    shape = x.spatial_shape
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    if world:
        axes = [o + (a + 0.5) * v for a, o, v in zip(axes, x.origin, x.voxel_size)]
    else:
        axes = [2 * a / (n - 1) - 1 if n > 1 else a * 0 for a, n in zip(axes, shape)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    if with_radius:
        grid = torch.cat((grid, grid.norm(dim=0, keepdim=True)))
    occ = _occupancy(x)
    return (grid[None] * occ).to(x.dtype)


def dense_involution3d(d: torch.Tensor, kernels: torch.Tensor, kernel_size, dilation) -> torch.Tensor:
    """``y[b, c, o] = sum_t H[b, g(c), t, o] x[b, c, o - l + t dil]`` on the zero-filled grid;
    ``kernels`` ``[B, G, K, X, Y, Z]``. The neighbours come from a one-hot 'same' conv per tap."""
    B, C = d.shape[:2]
    volume = kernels.shape[2]
    groups = kernels.shape[1]
    one_hot = torch.eye(volume, dtype=d.dtype).view(volume, 1, *kernel_size).repeat(C, 1, 1, 1, 1)
    neighbours = dense_same_conv3d(d, one_hot, None, dilation, C).view(B, groups, C // groups, volume, *d.shape[2:])
    return (neighbours * kernels[:, :, None]).sum(3).reshape(B, C, *d.shape[2:])


def _dense_batchnorm(y: torch.Tensor, bn: nn.Module, occ: torch.Tensor) -> torch.Tensor:
    """BatchNorm of a dense grid with statistics over the active sites only (training) or the
    running statistics (eval)."""
    if bn.training:
        count = occ.sum()
        mean = (y * occ).sum((0, 2, 3, 4)) / count
        var = (((y - mean.view(1, -1, 1, 1, 1)) * occ) ** 2).sum((0, 2, 3, 4)) / count
    else:
        mean, var = bn.running_mean, bn.running_var
    shape = (1, -1, 1, 1, 1)
    return (y - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def dense_octave_conv3d(m: OctaveConv3d, h: torch.Tensor, low: Optional[torch.Tensor], occ_h: torch.Tensor):
    """One octave layer on dense grids (``h`` fine, ``low`` coarse or None); outputs masked to the
    active sites (``occ_h`` fine occupancy; the coarse occupancy is its 2x2x2 stride-2 reach)."""
    occ_l = (F.max_pool3d(occ_h, 2, 2) > 0).to(h.dtype)
    y_h = dense_same_conv3d(h, m.conv_hh.weight, None, m.dilation)
    if m.conv_lh is not None:
        up = dense_same_conv3d(low, m.conv_lh.weight, None, m.dilation)
        up = up.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
        pad = [n - u for n, u in zip(h.shape[2:], up.shape[2:])]
        y_h = y_h + F.pad(up, [0, pad[2], 0, pad[1], 0, pad[0]])
    if m.bias_h is not None:
        y_h = y_h + m.bias_h.view(1, -1, 1, 1, 1)
    y_h = y_h * occ_h
    if not m.low_out:
        return y_h, None
    y_l = dense_same_conv3d(F.avg_pool3d(h, 2, 2), m.conv_hl.weight, None, m.dilation)
    if m.conv_ll is not None:
        y_l = y_l + dense_same_conv3d(low, m.conv_ll.weight, None, m.dilation)
    if m.bias_l is not None:
        y_l = y_l + m.bias_l.view(1, -1, 1, 1, 1)
    return y_h, y_l * occ_l


def _octave_chain_twin(layers: Sequence[OctaveConv3d], x: SparseTensor) -> Tuple[DenseFn, torch.Tensor]:
    occ = _occupancy(x)

    def fn(d: torch.Tensor) -> torch.Tensor:
        h, low = d, None
        for layer in layers:
            h, low = dense_octave_conv3d(layer, h, low, occ.to(d.dtype))
        return h

    return fn, occ[:, 0] > 0.5


def zoo_dense_twin(module: nn.Module, x: SparseTensor) -> Optional[Tuple[DenseFn, torch.Tensor]]:
    """The dense twin ``(dense_fn, active sites)`` of a zoo module, None for anything else. An octave
    network is an ``nn.Sequential`` of :class:`OctaveConv3d` from ``alpha_in = 0`` to ``alpha_out = 0``."""
    m = module
    occ = _occupancy(x)
    input_sites = occ[:, 0] > 0.5
    if isinstance(m, DepthwiseSeparableConv3d):
        depthwise_fn, sites = plain_dense_twin(m.depthwise, x)
        return (lambda d: F.conv3d(depthwise_fn(d), m.pointwise.weight, m.pointwise.bias)), sites
    if isinstance(m, _AxisFactorisedConv3d):
        mask = None if m.factorised else occ
        return (lambda d: dense_axis_chain(d, m.steps(), m.bias, m.dilation, None if mask is None else mask.to(d.dtype))), input_sites
    if isinstance(m, ReparamConv3d):
        def reparam_fn(d):
            o = occ.to(d.dtype)
            out = sum(_dense_batchnorm(dense_same_conv3d(d, b.conv.weight, None, m.dilation, m.groups), b.bn, o)
                      for b in m.branches())
            return out if m.identity is None else out + _dense_batchnorm(d, m.identity, o)
        return reparam_fn, input_sites
    if isinstance(m, CentralDifferenceConv3d):
        masked = lambda: m.weight * m.footprint_mask.to(m.weight.dtype)  # noqa: E731
        sites = input_sites if m.submanifold else _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation)
        return (lambda d: dense_central_difference_conv3d(
            d, masked(), m.bias, m.theta, m.stride, m.padding, m.dilation, m.groups, m.submanifold)), sites
    if isinstance(m, CoordConv3d):
        conv_fn, sites = plain_dense_twin(m.conv, x.replace(
            x.feats.new_zeros(len(x), m.conv.in_channels)))
        coords = dense_coordinate_grid(x, m.world, m.with_radius)
        return (lambda d: conv_fn(torch.cat((d, coords.to(d.dtype)), 1))), sites
    if isinstance(m, Involution3d):
        def involution_fn(d):
            feats = d.permute(0, 2, 3, 4, 1)
            kernels = m.span(F.relu(m.reduce(feats)))  # [B, X, Y, Z, G*K]
            kernels = kernels.view(*feats.shape[:4], m.groups, m.kernel_volume).permute(0, 4, 5, 1, 2, 3)
            return dense_involution3d(d, kernels, m.kernel_size, m.dilation)
        return involution_fn, input_sites
    if isinstance(m, nn.Sequential) and len(m) and all(isinstance(c, OctaveConv3d) for c in m) \
            and m[0].low_in == 0 and m[-1].low_out == 0:
        return _octave_chain_twin(list(m), x)
    return None
