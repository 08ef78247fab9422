"""Building kernel maps (rulebooks): which input row meets which output row through which weight.

A :class:`KernelMap` lists, for every kernel offset ``k`` (row-major over
``(kD, kH, kW)``, the same order as ``weight[..., kd, kh, kw]``), the pairs
``(in_row, out_row)`` such that the convolution is

    out[out_row] += x[in_row] @ W[k]     for every pair of offset k.

One builder serves every convolution, from the offset of a kernel tap
``t = (kd, kh, kw)`` (per axis, ``t * dilation``):

* ``"submanifold"``: outputs are the inputs; ``out[o]`` reads ``x[o - left + t*d]``,
  ``left = d*(k-1)//2`` per axis (PyTorch's ``padding='same'``).
* ``"conv"``: ``out[o]`` reads ``x[o*s - p + t*d]`` (``F.conv3d``); the output sites
  are every site of the output grid the kernel reaches from an active input.
* ``"transposed"``: ``x[i]`` writes ``out[i*s - p + t*d]`` (``F.conv_transpose3d``);
  again every reachable site of the output grid is active.
* inverse: :meth:`KernelMap.transpose` of a ``"conv"`` map, sending the coarse
  output back to the exact input sites it came from.

Maps are built by :func:`build_kernel_map` and cached on the input's
:class:`~sparseconv.engine.coordinates.CoordinateSet` under a :class:`KernelMapKey`,
which holds every parameter that determines the map.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

import torch

from .. import backends
from ..hashing import COORD_MARGIN, check_grid, offset_key, unpack_keys
from .types import KernelMap, KernelMapKey, output_spatial_shape

if TYPE_CHECKING:
    from ..coordinates import CoordinateSet


def _bounds_from_counts(counts) -> Tuple[int, ...]:
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + int(c))
    return tuple(bounds)


def _check_reach(key: KernelMapKey) -> None:
    for k, d in zip(key.kernel_size, key.dilation):
        if d * (k - 1) > COORD_MARGIN:
            raise ValueError(
                f"kernel_size {key.kernel_size} with dilation {key.dilation} reaches more than "
                f"{COORD_MARGIN} voxels along an axis, beyond what the coordinate keys support"
            )


def _build_submanifold(coord_set: "CoordinateSet", key: KernelMapKey) -> KernelMap:
    """Neighbour search on sorted keys.

    Tap ``(tx, ty, tz)`` of site ``j`` is the key ``keys[j] + column_delta(tx, ty) + tz * dz``. A
    kernel that is odd on every axis is symmetric (tap ``K-1-k`` is tap ``k`` reversed), so only
    the taps before the centre are searched and the rest mirrored; the centre is the identity.
    On CPU with numba installed the search is :func:`sparseconv.engine.backends.numba_kmap.submanifold_pairs`
    (one merge walk per kernel column); otherwise :func:`_submanifold_pairs_torch`. Both give the
    same pairs in the same order (tested).
    """
    keys, order = coord_set.sorted_keys()
    n = keys.numel()
    kx, ky, kz = key.kernel_size
    dx, dy, dz = key.dilation
    lx, ly, lz = (d * (k - 1) // 2 for k, d in zip(key.kernel_size, key.dilation))
    num_taps = kx * ky * kz
    symmetric = all(k % 2 == 1 for k in key.kernel_size)
    centre = num_taps // 2 if symmetric else None
    searched = centre if symmetric else num_taps
    column_deltas = [offset_key(tx * dx - lx, ty * dy - ly, -lz) for tx in range(kx) for ty in range(ky)]
    fast = backends.numba_map_search() if keys.device.type == "cpu" else None
    if fast is not None:
        in_rows, out_rows, counts = fast.submanifold_pairs(keys, column_deltas, kz, dz, searched, centre)
    else:
        in_rows, out_rows, counts = _submanifold_pairs_torch(keys, column_deltas, kz, dz, searched, centre)
    if order is not None:  # positions in sorted order -> rows
        in_rows, out_rows = order[in_rows], order[out_rows]
    return KernelMap(
        key, in_rows, out_rows, _bounds_from_counts(counts), n, n, coord_set, coord_set, identity_offset=centre
    )


def _submanifold_pairs_torch(keys, column_deltas, kernel_depth: int, dilation_z: int, searched_taps: int, centre):
    """``(in_positions, out_positions, counts)`` of a submanifold map on sorted ``keys`` (see
    :func:`_build_submanifold`) in torch ops: per kernel column one ``searchsorted`` finds where
    the column's lowest tap lands for every site; the taps up the column follow by stepping (keys
    are unique, so the insertion point of ``q + 1`` is that of ``q`` plus one when ``q`` is
    present)."""
    n = keys.numel()
    padded = torch.cat((keys, keys.new_full((1,), -1)))  # position n: a sentinel no key equals
    positions = torch.arange(n, device=keys.device)
    found, landed = [], []
    for column, delta in enumerate(column_deltas):
        first = column * kernel_depth
        if first >= searched_taps:
            break
        query = keys + delta
        at = torch.searchsorted(keys, query)
        for tz in range(min(kernel_depth, searched_taps - first)):
            if tz:
                for _ in range(dilation_z):
                    at = at + (padded[at] == query)
                    query = query + 1
            found.append(padded[at] == query)
            landed.append(at)
    ins, outs, counts = [], [], []
    if found:
        # Two device-to-host syncs for the whole search (not one per tap): the pair counts, which
        # the map keeps on the host, and the size of the nonzero result.
        hits = torch.stack(found)  # [taps, n]
        counts = hits.sum(1).tolist()
        outs = list(hits.nonzero()[:, 1].split(counts))
        ins = [at[out_pos] for at, out_pos in zip(landed, outs)]
    if centre is not None:
        ins.append(positions)
        outs.append(positions)
        counts.append(n)
        for k in range(centre - 1, -1, -1):
            ins.append(outs[k])
            outs.append(ins[k])
            counts.append(counts[k])
    return torch.cat(ins), torch.cat(outs), tuple(counts)


def _build_generative(coord_set: "CoordinateSet", key: KernelMapKey) -> KernelMap:
    """Strided ("conv") and transposed maps: candidate output sites per tap, then deduplicated.

    Each axis is handled on its own: for tap ``t`` the output coordinate of every input and
    whether it exists (divisible by the stride, inside the output grid). A kernel tap is a
    triple of axis taps, so its pairs are the inputs valid on all three axes.
    """
    coords = coord_set.coords
    device = coords.device
    out_shape = output_spatial_shape(key, coord_set.spatial_shape)
    check_grid(out_shape, coord_set.batch_size)
    axis_out, axis_ok = [], []
    for axis in range(3):
        c = coords[:, axis + 1]
        taps = torch.arange(key.kernel_size[axis], device=device)[:, None] * key.dilation[axis]
        s, p = key.stride[axis], key.padding[axis]
        if key.kind == "conv":  # out o reads in o*s - p + t*d  =>  o = (i + p - t*d) / s when exact
            numerator = c[None, :] + p - taps
            o = torch.div(numerator, s, rounding_mode="floor")
            ok = (o * s == numerator) & (o >= 0) & (o < out_shape[axis])
        else:  # in i writes out i*s - p + t*d
            o = c[None, :] * s - p + taps
            ok = (o >= 0) & (o < out_shape[axis])
        axis_out.append(o + COORD_MARGIN)
        axis_ok.append(ok)
    batch_key = coords[:, 0] << 48
    kx, ky, kz = key.kernel_size
    ok = axis_ok[0][:, None, None] & axis_ok[1][None, :, None] & axis_ok[2][None, None, :]
    ok = ok.reshape(kx * ky * kz, len(coords))  # [taps, inputs]
    # Three device-to-host syncs for the whole map (not one per tap): the pair counts (kept on the
    # host as the offset bounds), the size of the nonzero result and the number of output sites.
    counts = ok.sum(1).tolist()
    tap, rows = ok.nonzero().unbind(1)  # tap-major, rows ascending within a tap
    tx, ty, tz = tap // (ky * kz), tap // kz % ky, tap % kz
    out_keys = batch_key[rows] | (axis_out[0][tx, rows] << 32) | (axis_out[1][ty, rows] << 16) | axis_out[2][tz, rows]
    unique_keys, out_rows = torch.unique(out_keys, sorted=True, return_inverse=True)
    out_set = type(coord_set)(  # the set's own class: this module does not import it
        unpack_keys(unique_keys),
        out_shape,
        coord_set.batch_size,
        *_output_geometry(coord_set, key),
    )
    if key.kind == "conv":
        out_set.add_producer(key, coord_set)
    return KernelMap(
        key, rows, out_rows, _bounds_from_counts(counts), len(coord_set), unique_keys.numel(),
        coord_set, out_set,
    )


def _output_geometry(coord_set: "CoordinateSet", key: KernelMapKey):
    """World voxel size and origin of the output grid, so voxel centres stay in world units.

    A conv output site ``o`` covers input sites ``o*s - p + [0, d*(k-1)]``; its centre is placed
    at the centre of that window. A transposed output ``j`` is the inverse relation.
    """
    if coord_set.voxel_size is None or coord_set.origin is None:
        return None, None
    size, origin = [], []
    for v, o, k, s, p, d in zip(
        coord_set.voxel_size, coord_set.origin, key.kernel_size, key.stride, key.padding, key.dilation
    ):
        half_window = d * (k - 1) / 2
        if key.kind == "conv":
            size.append(v * s)
            origin.append(o + (-p + half_window + 0.5 - 0.5 * s) * v)
        else:
            size.append(v / s)
            origin.append(o + ((p - half_window) / s + 0.5 - 0.5 / s) * v)
    return tuple(size), tuple(origin)


def build_kernel_map(coord_set: "CoordinateSet", key: KernelMapKey) -> KernelMap:
    """Build the map for ``key`` on ``coord_set`` (uncached, holding both coordinate sets strongly;
    ``coord_set.kernel_map(key)`` caches it, owned weakly, see :mod:`.types`)."""
    if key.kind == "submanifold":
        _check_reach(key)
        return _build_submanifold(coord_set, key)
    return _build_generative(coord_set, key)
