"""numba submanifold map search: one merge walk of the sorted keys per kernel column.

Called by :func:`sparseconv.engine.kmap.build._build_submanifold` for CPU keys when numba is
installed; it finds the same pairs in the same order as the torch ``searchsorted`` search
(:func:`sparseconv.engine.kmap.build._submanifold_pairs_torch`), which tests check.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .numba_support import TorchThreads, index_load, as_numpy


@njit(inline="always", boundscheck=False, error_model="numpy", cache=True)
def _walk_column(keys, delta, first, taps_here, dilation_z, write, counts, bounds, ins, outs, mirror_from):
    """One merge walk of kernel column taps ``first .. first + taps_here - 1`` (see
    :func:`_submanifold_pairs`): without ``write``, count each tap's pairs into ``counts``; with it,
    write them at ``bounds[k]`` onwards, and mirrored at tap ``mirror_from - k`` when
    ``mirror_from >= 0``."""
    n = keys.shape[0]
    fill = np.zeros(taps_here, np.int64)
    at = 0
    for j in range(n):
        query = index_load(keys, j) + delta
        while at < n and index_load(keys, at) < query:
            at += 1
        probe = at
        for tz in range(taps_here):
            target = query + tz * dilation_z
            while probe < n and index_load(keys, probe) < target:
                probe += 1
            found = probe < n and index_load(keys, probe) == target
            if not write:
                counts[first + tz] += found  # branch-free: the match is a coin toss
            elif found:
                k = first + tz
                ins[bounds[k] + fill[tz]] = probe
                outs[bounds[k] + fill[tz]] = j
                if mirror_from >= 0:
                    ins[bounds[mirror_from - k] + fill[tz]] = j
                    outs[bounds[mirror_from - k] + fill[tz]] = probe
                fill[tz] += 1


@njit(parallel=True, boundscheck=False, nogil=True, error_model="numpy", cache=True)
def _submanifold_pairs(keys, column_deltas, kernel_depth, dilation_z, searched_taps, centre):
    """The pairs of a submanifold map on sorted unique ``keys``, as :func:`sparseconv.engine.kmap.build.
    _build_submanifold` makes them (same pairs, same order; positions in ``keys``): tap ``k`` of
    column ``c = k // kernel_depth`` looks for ``keys[j] + column_deltas[c] + (k % kernel_depth) *
    dilation_z`` for every site ``j``. Taps ``0 .. searched_taps - 1`` are searched; with
    ``centre >= 0`` (an odd kernel) the centre tap is the identity and tap ``K-1-k`` is tap ``k``
    mirrored. The queries of a column rise with ``j``, so one pointer walks ``keys`` once per
    column (a merge) instead of a binary search per query. One task per column, twice
    (:func:`_walk_column`): count, then fill. Returns ``(in_positions, out_positions, counts)``."""
    n = keys.shape[0]
    num_columns = (searched_taps + kernel_depth - 1) // kernel_depth
    num_taps = 2 * centre + 1 if centre >= 0 else searched_taps
    mirror_from = num_taps - 1 if centre >= 0 else -1
    counts = np.zeros(num_taps, np.int64)
    bounds = np.zeros(num_taps + 1, np.int64)
    ins = np.empty(0, np.int64)
    outs = np.empty(0, np.int64)
    for c in prange(num_columns):
        first = c * kernel_depth
        _walk_column(keys, column_deltas[c], first, min(kernel_depth, searched_taps - first), dilation_z, False,
                     counts, bounds, ins, outs, mirror_from)
    if centre >= 0:
        counts[centre] = n
        for k in range(centre):
            counts[num_taps - 1 - k] = counts[k]
    for k in range(num_taps):
        bounds[k + 1] = bounds[k] + counts[k]
    ins = np.empty(bounds[num_taps], np.int64)
    outs = np.empty(bounds[num_taps], np.int64)
    if centre >= 0:
        for j in range(n):
            ins[bounds[centre] + j] = j
            outs[bounds[centre] + j] = j
    for c in prange(num_columns):
        first = c * kernel_depth
        _walk_column(keys, column_deltas[c], first, min(kernel_depth, searched_taps - first), dilation_z, True,
                     counts, bounds, ins, outs, mirror_from)
    return ins, outs, counts


def submanifold_pairs(keys: torch.Tensor, column_deltas, kernel_depth: int, dilation_z: int, searched_taps: int,
                      centre):
    """:func:`_submanifold_pairs` on a sorted CPU int64 ``keys`` tensor: ``(in_positions,
    out_positions, counts)`` as tensors and a tuple."""
    with TorchThreads():
        ins, outs, counts = _submanifold_pairs(
            as_numpy(keys), np.asarray(column_deltas, dtype=np.int64), kernel_depth, dilation_z, searched_taps,
            -1 if centre is None else centre,
        )
    return torch.from_numpy(ins), torch.from_numpy(outs), tuple(int(c) for c in counts)
