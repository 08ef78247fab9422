"""Deformable sparse 3D convolution (DCN v1 / v2) on the shared gather-GEMM-scatter core.

For every output site ``o`` and kernel tap ``n`` (taps row-major over ``(kD, kH, kW)``, as in
``weight[..., kd, kh, kw]``) the convolution reads the input at a fractional position

    P(o, n) = base(o, n) + dp(o, n)
    base(o, n) = o * s - p + t_n * d                 (strided form, as F.conv3d)
    base(o, n) = o - l + t_n * d,  l = d (k-1) // 2   (submanifold form: stride 1, 'same')

and the output is

    y(o) = b + sum_n W[:, :, n] * m(o, n) * x(P(o, n))

where ``x(P)`` is trilinear interpolation of the zero-filled voxel grid (voxel centres at the
integer coordinates; empty voxels and voxels outside the grid read as zero) and ``m`` is the
optional v2 modulation. Trilinear interpolation is a weighted sum over the 8 lattice corners
``c`` of ``P``: ``x(P) = sum_c w_c(P) x[c]`` with ``w_c = prod_axis (f if c is the upper corner
else 1 - f)``, ``f = P - floor(P)``. So the whole layer is

    y(o) = b + sum_n sum_c (w_c(P(o, n)) m(o, n)) * x[c] @ W[n]

which is exactly the core op over a kernel map whose offset-``n`` pairs are
``(row of corner c, o)`` for every corner that is an active voxel, with the per-pair weight
``w_c * m``. The map is built per call (offsets depend on the input, so it is never cached)
and is not injective (several outputs can read the same corner through one tap, one output
reads up to 8 corners), so the core scatter-adds. Trilinear weights are differentiable in
``dp`` and the masks enter linearly, so the core's pair-weight gradient carries the
gradients of offsets and masks; feature and weight gradients are the core's as usual.

Offset groups (as ``torchvision.ops.deform_conv2d``): the input channels split into
``offset_groups`` consecutive slices; slice ``g`` is sampled with its own offsets and masks.
They combine with the convolution ``groups`` freely (both must divide ``in_channels``): every
contiguous run of input channels that lies in one offset group and one conv group is one core
call on that channel slice with the matching weight slice, written to that conv group's output
channels. With ``offset_groups`` a multiple or a divisor of ``groups`` this is one core call per
offset group. A loop over offset groups (a small constant) is the only Python loop added.

Exactly at integer positions interpolation has a kink: the gradient there is the one-sided
(upper) derivative, as ``F.grid_sample`` computes it. Corners with zero trilinear weight are
therefore kept whenever offsets or masks need a gradient; without one they are dropped, so a
layer whose offsets are integers costs the same GEMM work as the plain convolution.

Cost: the corner map is rebuilt on every call, ``O(N_out K)`` candidate corners (8 per site and
tap; the distinct interpolation cells are searched in the input's sorted keys, 4 binary searches
each), and the core then runs up to 8 times the pairs of the plain map. Next to a submanifold
conv whose map is cached this is one to two orders of magnitude slower on a sparse scan at
16-32 channels (``benchmarks/bench_variants.py``); the map build, not the GEMM, dominates.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ..._validation import IntOrTriple, positive_int
from ...engine.coordinates import CoordinateSet
from ...engine.core import gather_gemm_scatter
from ...engine.hashing import offset_key, pack_coords
from ...engine.kmap import KernelMap, KernelMapKey, kernel_offsets
from ...engine.tensor import SparseTensor
from ._checks import autocast_conv_inputs, check_conv_args
from .conv import conv_map_key, conv_weight_to_core

DEFORM_LAYER = "submanifold deformable convolution"

# Offsets larger than this (in voxels) are clamped before ``floor`` (only to find the corner
# cell: such a position lies outside every grid, its corners read zero either way).
_FAR = float(1 << 20)


def deform_geometry(
    input: SparseTensor,
    kernel_size: IntOrTriple,
    stride: IntOrTriple = 1,
    padding: IntOrTriple = 0,
    dilation: IntOrTriple = 1,
    submanifold: bool = False,
) -> Tuple[KernelMapKey, CoordinateSet]:
    """The regular map key of a deformable layer and its output sites.

    Submanifold: the input sites (stride 1, 'same' padding). Strided: the output sites of
    :func:`~sparseconv.nn.functional.sparse_conv3d` with the same geometry (its cached map is
    built or reused), so offsets predicted by that conv line up row for row.
    """
    key = conv_map_key(kernel_size, stride, padding, dilation, submanifold, DEFORM_LAYER)
    if submanifold:
        return key, input.coordinate_set
    return key, input.coordinate_set.kernel_map(key).output


def _base_positions(key: KernelMapKey, out_set: CoordinateSet) -> torch.Tensor:
    """Integer ``[N_out, K, 3]``: the undeformed input position of every (output site, tap)."""
    device = out_set.device
    taps = kernel_offsets(key.kernel_size, device) * torch.tensor(key.dilation, device=device)
    xyz = out_set.coords[:, 1:]
    if key.kind == "submanifold":
        left = torch.tensor([d * (k - 1) // 2 for k, d in zip(key.kernel_size, key.dilation)], device=device)
        start = xyz - left
    else:
        start = xyz * torch.tensor(key.stride, device=device) - torch.tensor(key.padding, device=device)
    return start[:, None, :] + taps[None, :, :]


def deform_kernel_map(
    in_set: CoordinateSet,
    out_set: CoordinateSet,
    key: KernelMapKey,
    offsets: torch.Tensor,
    masks: Optional[torch.Tensor] = None,
    keep_zero_weights: bool = True,
) -> Tuple[KernelMap, torch.Tensor]:
    """The corner pairs of one offset group and their differentiable pair weights.

    Args:
        in_set, out_set: input and output coordinate sets.
        key: the regular map key (geometry: kernel, stride, padding, dilation, form).
        offsets: ``[N_out, K, 3]`` displacements in input voxels (x, y, z).
        masks: ``[N_out, K]`` modulation, or None.
        keep_zero_weights: keep corners whose weight is exactly zero (needed for the offset
            and mask gradients at integer positions and zero masks).

    Returns:
        ``(kmap, pair_weights)``: a non-injective :class:`KernelMap` with pairs grouped by tap,
        and ``[P]`` weights ``w_corner * mask`` aligned with ``kmap.in_rows``.

    Corners are found by binary search in the input's sorted keys: the distinct interpolation
    cells are found first (``torch.unique``: sites share most cells), then for each of the 4
    corner columns ``(bx, by)`` of every cell one ``searchsorted`` finds the lower z corner; the
    upper one (key + 1) can only sit at the next position. Candidates cost ``O(N_out K)``
    integer/bool work; the differentiable weights are computed for the active corners only.
    """
    n_out, volume = offsets.shape[0], offsets.shape[1]
    device = offsets.device
    with torch.no_grad():
        cell = torch.nan_to_num(offsets.detach(), nan=0.0).clamp(-_FAR, _FAR).floor()  # [N, K, 3]
        # Clamping to [-2, extent] keeps every corner's inside/outside status (below -1 both
        # corners are outside, at or above the extent both are) and keeps keys within the packing
        # margin, so a corner outside the grid simply is not found, like an empty voxel.
        lower = _base_positions(key, out_set) + cell.to(torch.int64)
        extent = torch.tensor(in_set.spatial_shape, device=device)
        lower = torch.clamp(lower, min=torch.full_like(extent, -2), max=extent).permute(2, 1, 0)  # [3, K, N]
        site_keys = pack_coords(torch.nn.functional.pad(out_set.coords[:, :1], (0, 3)))  # batch field + margins
        cell_keys = site_keys + (lower[0] << 32) + (lower[1] << 16) + lower[2]  # [K, N] packed lower corners
        # Many (site, tap) share a cell (neighbouring sites reach it through different taps), so
        # each distinct cell is searched once, in ascending key order.
        cells, cell_of = torch.unique(cell_keys, return_inverse=True)  # cell_of: [K, N]
        keys, order = in_set.sorted_keys()
        padded = torch.cat((keys, keys.new_full((1,), -1)))  # position n: a sentinel no key equals
        lower_at = torch.empty(cells.numel(), 4, dtype=torch.int64, device=device)
        cell_hit = torch.empty(cells.numel(), 8, dtype=torch.bool, device=device)  # corners (bx, by, bz)
        for column, (bx, by) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            query = cells + offset_key(bx, by, 0)
            at = torch.searchsorted(keys, query)
            found = padded[at] == query
            cell_hit[:, 2 * column] = found
            cell_hit[:, 2 * column + 1] = padded[at + found] == query + 1
            lower_at[:, column] = at
        flat = cell_hit[cell_of].view(-1).nonzero().squeeze(1)  # (tap, site, corner) order: grouped by tap
        tap_site = flat >> 3
        corner = flat & 7
        tap = torch.div(tap_site, n_out, rounding_mode="floor")
        out_rows = tap_site - tap * n_out
        cell_id = cell_of.view(-1)[tap_site]
        upper_z = corner & 1
        # the lower z corner sits at lower_at[cell, column]; the upper one a position further
        # when the lower one is active
        position = lower_at.view(-1)[cell_id * 4 + (corner >> 1)]
        position += upper_z & cell_hit.view(-1)[cell_id * 8 + corner - upper_z]
        in_rows = position if order is None else order[position]
        source = out_rows * volume + tap  # index into offsets' [N, K]
        bits = torch.stack((corner >> 2, (corner >> 1) & 1, upper_z), dim=1).bool()  # [P, 3]
    # trilinear weight of each active corner, differentiable in offsets (and masks)
    frac = (offsets - cell).reshape(-1, 3).index_select(0, source)  # fractional part of the position
    weights = torch.where(bits, frac, 1 - frac).prod(dim=1)
    if masks is not None:
        weights = weights * masks.reshape(-1).index_select(0, source)
    if not keep_zero_weights:
        nonzero = (weights != 0).nonzero().squeeze(1)
        in_rows, out_rows, tap, weights = in_rows[nonzero], out_rows[nonzero], tap[nonzero], weights[nonzero]
    bounds = torch.searchsorted(tap, torch.arange(volume + 1, device=device)).tolist()
    kmap = KernelMap(
        key, in_rows, out_rows, tuple(bounds), len(in_set), len(out_set), in_set, out_set,
        identity_offset=None, injective=False,
    )
    return kmap, weights


def _channel_segments(in_channels: int, out_channels: int, groups: int, offset_groups: int):
    """Split the convolution into core calls: ``(offset group, in lo, in hi, conv group lo, hi)``.

    Each entry covers input channels ``[in lo, in hi)`` of one offset group, lying in conv groups
    ``[lo, hi)``; either whole conv groups (several at once) or a part of a single one.
    """
    cin_g = in_channels // groups
    slice_width = in_channels // offset_groups
    segments = []
    for g in range(offset_groups):
        a, b = g * slice_width, (g + 1) * slice_width
        if a % cin_g == 0 and b % cin_g == 0:  # whole conv groups: one call
            segments.append((g, a, b, a // cin_g, b // cin_g))
            continue
        start = a
        while start < b:  # the offset group is cut by conv-group boundaries
            j = start // cin_g
            stop = min(b, (j + 1) * cin_g)
            segments.append((g, start, stop, j, j + 1))
            start = stop
    return segments


def _check_offsets(name: str, tensor, rows: int, width: int, width_text: str, feats: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != (rows, width):
        raise ValueError(
            f"{name} must have shape [N_out={rows}, {width_text}={width}] (one row per output site), "
            f"got {tuple(tensor.shape)}"
        )
    if tensor.dtype != feats.dtype:
        raise TypeError(f"{name} dtype {tensor.dtype} does not match the input features' {feats.dtype}")
    if tensor.device != feats.device:
        raise ValueError(f"{name} is on {tensor.device} but the input is on {feats.device}")


def check_offset_groups(in_channels: int, offset_groups) -> int:
    offset_groups = positive_int(offset_groups, "offset_groups")
    if in_channels % offset_groups:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by offset_groups ({offset_groups})")
    return offset_groups


def sparse_deform_conv3d(
    input: SparseTensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    masks: Optional[torch.Tensor] = None,
    stride: IntOrTriple = 1,
    padding: IntOrTriple = 0,
    dilation: IntOrTriple = 1,
    groups: int = 1,
    offset_groups: int = 1,
    submanifold: bool = False,
) -> SparseTensor:
    """Deformable sparse convolution with explicit offsets (and masks for v2).

    ``y(o) = b + sum_n W[:, :, n] m(o, n) x(base(o, n) + dp(o, n))``, ``x(.)`` trilinear over the
    zero-filled grid (see the module docstring for ``base``).

    Args:
        input: SparseTensor ``[N, C_in]``.
        offsets: ``[N_out, offset_groups * K * 3]``, laid out ``(group, tap, xyz)``: column
            ``(g K + n) 3 + a`` displaces tap ``n`` of offset group ``g`` along axis ``a``, in voxels.
        weight: ``[C_out, C_in / groups, kD, kH, kW]`` (``nn.Conv3d`` layout), ``K = kD kH kW``.
        bias: ``[C_out]`` or None.
        masks: ``[N_out, offset_groups * K]`` modulation (v2), column ``g K + n``; None for v1.
        stride, padding, dilation, groups: as ``F.conv3d`` (strided form).
        offset_groups: input channels split into this many slices, each with its own offsets.
        submanifold: outputs at the input sites with 'same' padding (stride 1, padding 0).

    ``N_out`` is ``len(input)`` (submanifold) or the number of sites of
    ``sparse_conv3d(input, weight, stride=stride, padding=padding, dilation=dilation)``.
    Dense twin: :func:`sparseconv.testing.dense_deform_conv3d`.
    """
    input, weight, bias, offsets, masks = autocast_conv_inputs(input, weight, bias, offsets, masks)
    groups = check_conv_args(input, weight, bias, groups)
    offset_groups = check_offset_groups(input.num_channels, offset_groups)
    key, out_set = deform_geometry(input, tuple(weight.shape[2:]), stride, padding, dilation, submanifold)
    volume = key.kernel_volume
    n_out = len(out_set)
    _check_offsets("offsets", offsets, n_out, offset_groups * volume * 3, "offset_groups*K*3", input.feats)
    if masks is not None:
        _check_offsets("masks", masks, n_out, offset_groups * volume, "offset_groups*K", input.feats)
    offsets_g = offsets.reshape(n_out, offset_groups, volume, 3)
    masks_g = None if masks is None else masks.reshape(n_out, offset_groups, volume)
    keep_zero = torch.is_grad_enabled() and (offsets.requires_grad or (masks is not None and masks.requires_grad))
    c_out, c_out_g = weight.shape[0], weight.shape[0] // groups
    cin_g = weight.shape[1]
    core = conv_weight_to_core(weight, groups)  # [K, G, C_in/G, C_out/G]
    feats = input.feats
    maps: List[Optional[Tuple[KernelMap, torch.Tensor]]] = [None] * offset_groups
    pieces = {}
    for g, lo, hi, j0, j1 in _channel_segments(input.num_channels, c_out, groups, offset_groups):
        if maps[g] is None:
            maps[g] = deform_kernel_map(
                input.coordinate_set, out_set, key, offsets_g[:, g],
                None if masks_g is None else masks_g[:, g], keep_zero_weights=keep_zero,
            )
        kmap, pair_weights = maps[g]
        if j1 - j0 > 1 or hi - lo == cin_g:  # whole conv groups
            w = core[:, j0:j1]
        else:  # part of one conv group: the matching rows of its weight
            w = core[:, j0:j1, lo - j0 * cin_g: hi - j0 * cin_g]
        contribution = gather_gemm_scatter(feats[:, lo:hi], w, kmap, pair_weights)
        span = (j0 * c_out_g, j1 * c_out_g)
        pieces[span] = contribution if span not in pieces else pieces[span] + contribution
    # spans are whole conv groups, identical or disjoint, together covering every output channel
    out = torch.cat([pieces[span] for span in sorted(pieces)], dim=1) if len(pieces) > 1 else pieces[(0, c_out)]
    if bias is not None:
        out = out + bias
    return SparseTensor.from_coordinate_set(out, out_set)
