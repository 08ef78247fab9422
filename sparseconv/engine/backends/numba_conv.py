"""numba-compiled CPU backend of the core op ``out[o] += x[i] @ W[k]`` (see :mod:`sparseconv.engine.core`).

One fused kernel per call, output-stationary: the output rows are cut into tiles of ``_TILE``
consecutive rows, one parallel task each; a task runs through its tile's pairs offset by offset
and accumulates straight into the tile's rows, which stay in cache until the tile is done. So an
output row goes to memory once per layer, not once per offset as in an offset-major loop (the
torch path's gather-add-copy), which is what a layer at 16-32 channels spends its time on. The
pairs are regrouped by (tile, offset) once per kernel map by a stable counting sort
(:func:`_tile_order`) and cached on the map (:meth:`KernelMap.derived`).

Tasks own disjoint output rows (or, in the weight gradient, their own partial gradient), so no
atomics; each output element receives its contributions in a fixed order, so results are bitwise
deterministic and independent of the thread count.

The micro-kernel is written with explicit SIMD vectors (:mod:`.numba_support`: a vector
type lowered to an LLVM ``<8 x float>`` / ``<4 x double>`` (``<16 x float>`` with AVX-512) and
``fma``/load/store/broadcast intrinsics), because left to itself LLVM either scalarises the loops
(numba disables the SLP vectoriser) or spills: a block of 4 pairs x 2 vectors of output channels
keeps 8 accumulators in registers over the whole input-channel loop, reading one weight row
segment per input channel for all 4 pairs and broadcasting the 4 input values. Leftover output
channels (a channel count not a multiple of the vector width, e.g. 3 or 5) take a scalar loop.
Channel counts are runtime values: one compiled kernel serves every layer of a dtype.
Depthwise weights (one input and one output channel per group, ``[K, C, 1, 1]``) take
:func:`_pairs_depthwise` instead: ``out[o, c] += x[i, c] w[k, c]`` a vector of channels at a time,
no GEMM (the input gradient reuses it with the same weights; the weight gradient stays generic).

What runs where:

* forward: the identity offset of a submanifold map stays one ``torch`` GEMM that initialises the
  output (as in the torch path); every other offset runs in the kernel.
* backward: one kernel (:func:`_backward_tiles`) walks the *transposed* map's tile layout (tiles
  of input rows) and, for each (tile, offset) group of pairs while their rows are in cache, adds
  the input gradient (the forward's micro-kernel with ``W^T``) and the weight gradient
  (``x[i]^T g[o]``, a 4 x 2-vector register tile of the weight block running over the pairs).
  The weight gradient goes into a fixed number of partial gradients, one per run of tiles with
  about equal pair counts (:func:`_part_tiles`), summed in a fixed order; their number is set by
  the map and the weight's size, not by the thread count. One walk instead of an input-gradient
  pass plus an offset-major weight-gradient pass: measured 1.5-2x faster on the weight gradient
  and up to 1.2x on the whole backward.

* submanifold kernel maps: :mod:`.numba_kmap`.

Supported by the core op (:func:`supports`): CPU, float32/float64, injective maps, no
``pair_weights``. Anything else stays on the torch path.

Compile cost (measured on the 2-core CI machine, fresh cache): about 20 s for float32 and 12 s more
for float64 on first use (map search, tile layout, forward and backward kernels), written to
numba's on-disk cache (``cache=True``: ``__pycache__`` next to this file, or numba's user-wide cache
dir when that is read-only), so later processes load it in about a second. Most of it is numba's
parallel-loop machinery (a trivial ``prange`` loop alone takes 1.5 s). The two big micro-kernels
(:func:`_pairs_gemm`, :func:`_pairs_weight_grad`) are plain calls, not numba-inlined: inlining them
into each caller cost a third more compile time and ran no faster.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .numba_support import (
    TorchThreads, add_scalars_to_rows, add_to_rows, as_numpy, fma_4x2, index_load, vbroadcast, vector_lanes, vfma, vload,
    vzero,
)
from .torch_ref import grouped_mm

_TILE = 128  # rows per tile of the tile layout: output rows (forward), input rows (backward)
# The weight gradient takes the pairs in chunks whose input and output-gradient rows fill _CHUNK_BYTES
# (half of a 32 KB L1 data cache at most: 64 pairs at 64 channels in float32).
_CHUNK_BYTES = 32 << 10
# The weight gradient sums up to _MAX_PARTS partial gradients of at most _PARTIALS_BYTES in all.
_MAX_PARTS = 16
_PARTIALS_BYTES = 64 << 20

# ---------------------------------------------------------------- the kernel


@njit(boundscheck=False, error_model="numpy", cache=True)
def _pairs_depthwise(x, w, w_base, channels, m, i0, i1, i2, i3, q0, q1, q2, q3, out, lanes, zero):
    """Depthwise block of up to 4 pairs (``m``): ``out[q, c] += x[i, c] * w[w_base + c]`` for every
    channel ``c``, a vector of channels at a time (no GEMM: one multiply-add per pair and channel)."""
    c = 0
    while c + lanes <= channels:
        wv = vload(w, w_base + c)
        empty = vzero(w)
        add_to_rows(out, m, q0, q1, q2, q3, c, vfma(vload(x, i0 + c), wv, empty), vfma(vload(x, i1 + c), wv, empty),
                    vfma(vload(x, i2 + c), wv, empty), vfma(vload(x, i3 + c), wv, empty))
        c += lanes
    for cc in range(c, channels):
        wv = index_load(w, w_base + cc)
        add_scalars_to_rows(out, m, q0, q1, q2, q3, cc, index_load(x, i0 + cc) * wv, index_load(x, i1 + cc) * wv,
                            index_load(x, i2 + cc) * wv, index_load(x, i3 + cc) * wv)


@njit(boundscheck=False, error_model="numpy", cache=True)
def _pairs_gemm(x, w, in_rows, out_rows, p0, p1, k, out, groups, c_in, c_out, lanes, zero):
    """``out[o, g*Co:(g+1)*Co] += x[i, g*Ci:(g+1)*Ci] @ w[k, g]`` for the pairs
    ``(i, o) = (in_rows[p], out_rows[p])``, ``p0 <= p < p1``, all of offset ``k``; ``x``, ``w``
    ``[K, G, Ci, Co]`` and ``out`` flattened, C order."""
    x_cols = groups * c_in
    out_cols = groups * c_out
    for p in range(p0, p1, 4):
        m = min(4, p1 - p)  # pairs in this block; missing ones repeat the last, unstored
        i0 = index_load(in_rows, p) * x_cols
        i1 = index_load(in_rows, p + min(1, m - 1)) * x_cols
        i2 = index_load(in_rows, p + min(2, m - 1)) * x_cols
        i3 = index_load(in_rows, p + min(3, m - 1)) * x_cols
        q0 = index_load(out_rows, p) * out_cols
        q1 = index_load(out_rows, p + min(1, m - 1)) * out_cols
        q2 = index_load(out_rows, p + min(2, m - 1)) * out_cols
        q3 = index_load(out_rows, p + min(3, m - 1)) * out_cols
        if c_in == 1 and c_out == 1:  # depthwise: out[o, c] += x[i, c] w[k, c], vectors across channels
            _pairs_depthwise(x, w, k * groups, groups, m, i0, i1, i2, i3, q0, q1, q2, q3, out, lanes, zero)
            continue
        for g in range(groups):
            x0 = i0 + g * c_in
            x1 = i1 + g * c_in
            x2 = i2 + g * c_in
            x3 = i3 + g * c_in
            w_base = (k * groups + g) * c_in * c_out
            c0 = 0
            while c0 + 2 * lanes <= c_out:  # 4 pairs x 2 vectors of output channels
                a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = vzero(w)
                wp = w_base + c0
                for ci in range(c_in):
                    w0 = vload(w, wp)
                    w1 = vload(w, wp + lanes)
                    wp += c_out
                    a00, a01, a10, a11, a20, a21, a30, a31 = fma_4x2(
                        x, x0 + ci, x1 + ci, x2 + ci, x3 + ci, w0, w1, a00, a01, a10, a11, a20, a21, a30, a31
                    )
                c = g * c_out + c0
                add_to_rows(out, m, q0, q1, q2, q3, c, a00, a10, a20, a30)
                add_to_rows(out, m, q0, q1, q2, q3, c + lanes, a01, a11, a21, a31)
                c0 += 2 * lanes
            if c0 + lanes <= c_out:  # 4 pairs x 1 vector
                a00 = a10 = a20 = a30 = vzero(w)
                wp = w_base + c0
                for ci in range(c_in):
                    w0 = vload(w, wp)
                    wp += c_out
                    a00 = vfma(vbroadcast(x, x0 + ci), w0, a00)
                    a10 = vfma(vbroadcast(x, x1 + ci), w0, a10)
                    a20 = vfma(vbroadcast(x, x2 + ci), w0, a20)
                    a30 = vfma(vbroadcast(x, x3 + ci), w0, a30)
                c = g * c_out + c0
                add_to_rows(out, m, q0, q1, q2, q3, c, a00, a10, a20, a30)
                c0 += lanes
            for c in range(c0, c_out):  # leftover channels, scalar
                s0 = s1 = s2 = s3 = zero
                wp = w_base + c
                for ci in range(c_in):
                    wv = index_load(w, wp)
                    wp += c_out
                    s0 += index_load(x, x0 + ci) * wv
                    s1 += index_load(x, x1 + ci) * wv
                    s2 += index_load(x, x2 + ci) * wv
                    s3 += index_load(x, x3 + ci) * wv
                cc = g * c_out + c
                add_scalars_to_rows(out, m, q0, q1, q2, q3, cc, s0, s1, s2, s3)


@njit(parallel=True, boundscheck=False, nogil=True, error_model="numpy", cache=True)
def _gemm_tiles(x, w, in_rows, out_rows, group_bounds, out, num_outputs, kernel_volume, tile, skip, zero_first,
                groups, c_in, c_out, lanes, zero):
    """``out[o] += sum over the map's pairs (i, o) of x[i] @ w[k]``, one parallel task per tile of
    ``tile`` output rows; the pairs of tile ``t`` and offset ``k`` are ``group_bounds[t*K + k]`` to
    ``group_bounds[t*K + k + 1]`` (see :func:`_tile_order`). Offset ``skip`` is left out; with
    ``zero_first`` the tile's rows are zeroed before accumulating."""
    out_cols = groups * c_out
    for t in prange((num_outputs + tile - 1) // tile):
        if zero_first:
            for e in range(t * tile * out_cols, min((t + 1) * tile, num_outputs) * out_cols):
                out[e] = zero
        for k in range(kernel_volume):
            lo = group_bounds[t * kernel_volume + k]
            hi = group_bounds[t * kernel_volume + k + 1]
            if k != skip and lo < hi:
                _pairs_gemm(x, w, in_rows, out_rows, lo, hi, k, out, groups, c_in, c_out, lanes, zero)


@njit(boundscheck=False, error_model="numpy", cache=True)
def _pairs_weight_grad(x, g, in_rows, out_rows, p0, p1, gw, w_base, grp, x_cols, g_cols, c_in, c_out, lanes, zero):
    """``gw[w_base : w_base + Ci*Co] += x[i, grp*Ci:(grp+1)*Ci]^T g[o, grp*Co:(grp+1)*Co]`` summed over
    the pairs ``p0 <= p < p1``, in order. Every 4-row x 2-vector register tile of the block runs over
    all the pairs, so their rows (a few KB) are read from L1 after the first tile."""
    for r in range(0, c_in, 4):
        m = min(4, c_in - r)  # weight rows in this tile; missing ones repeat the last, unstored
        x0 = grp * c_in + r
        x1 = x0 + min(1, m - 1)
        x2 = x0 + min(2, m - 1)
        x3 = x0 + min(3, m - 1)
        q0 = w_base + r * c_out
        q1 = q0 + min(1, m - 1) * c_out
        q2 = q0 + min(2, m - 1) * c_out
        q3 = q0 + min(3, m - 1) * c_out
        c0 = 0
        while c0 + 2 * lanes <= c_out:
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = vzero(gw)
            for p in range(p0, p1):
                xi = index_load(in_rows, p) * x_cols
                gp = index_load(out_rows, p) * g_cols + grp * c_out + c0
                v0 = vload(g, gp)
                v1 = vload(g, gp + lanes)
                a00, a01, a10, a11, a20, a21, a30, a31 = fma_4x2(
                    x, xi + x0, xi + x1, xi + x2, xi + x3, v0, v1, a00, a01, a10, a11, a20, a21, a30, a31
                )
            add_to_rows(gw, m, q0, q1, q2, q3, c0, a00, a10, a20, a30)
            add_to_rows(gw, m, q0, q1, q2, q3, c0 + lanes, a01, a11, a21, a31)
            c0 += 2 * lanes
        if c0 + lanes <= c_out:
            a00 = a10 = a20 = a30 = vzero(gw)
            for p in range(p0, p1):
                xi = index_load(in_rows, p) * x_cols
                v0 = vload(g, index_load(out_rows, p) * g_cols + grp * c_out + c0)
                a00 = vfma(vbroadcast(x, xi + x0), v0, a00)
                a10 = vfma(vbroadcast(x, xi + x1), v0, a10)
                a20 = vfma(vbroadcast(x, xi + x2), v0, a20)
                a30 = vfma(vbroadcast(x, xi + x3), v0, a30)
            add_to_rows(gw, m, q0, q1, q2, q3, c0, a00, a10, a20, a30)
            c0 += lanes
        for c in range(c0, c_out):  # leftover channels, scalar
            s0 = s1 = s2 = s3 = zero
            for p in range(p0, p1):
                xi = index_load(in_rows, p) * x_cols
                gv = index_load(g, index_load(out_rows, p) * g_cols + grp * c_out + c)
                s0 += index_load(x, xi + x0) * gv
                s1 += index_load(x, xi + x1) * gv
                s2 += index_load(x, xi + x2) * gv
                s3 += index_load(x, xi + x3) * gv
            add_scalars_to_rows(gw, m, q0, q1, q2, q3, c, s0, s1, s2, s3)


@njit(parallel=True, boundscheck=False, nogil=True, error_model="numpy", cache=True)
def _backward_tiles(x, g, wt, in_rows, out_rows, group_bounds, part_tiles, grad_x, partials, num_inputs, kernel_volume,
                    tile, skip, zero_first, need_input, need_weight, groups, c_in, c_out, lanes, zero, chunk):
    """Both gradients of ``out[o] += x[i] @ w[k]`` in one walk over the *transposed* map's tile
    layout (``in_rows`` are output rows ``o``, ``out_rows`` input rows ``i``, tiles cut the input
    rows): for each (tile, offset) group of pairs, with their rows in cache,

    * ``need_input``: ``grad_x[i] += g[o] @ w[k]^T`` (``wt`` is ``w`` transposed, ``[K, G, Co, Ci]``),
      as the forward kernel; with ``zero_first`` the tile's rows are zeroed first;
    * ``need_weight``: ``partials[s, k] += x[i]^T g[o]`` in chunks of ``chunk`` pairs, where part ``s``
      covers tiles ``part_tiles[s]`` to ``part_tiles[s + 1]``, one parallel task per part.

    Offset ``skip`` is left out of the input gradient (the caller's GEMM covers it) but not of the
    weight gradient: a torch GEMM reducing over all rows sums in an order that depends on the thread
    count, which this kernel's fixed parts do not."""
    x_cols = groups * c_in
    g_cols = groups * c_out
    block = kernel_volume * groups * c_in * c_out
    for s in prange(part_tiles.shape[0] - 1):
        for t in range(part_tiles[s], part_tiles[s + 1]):
            if need_input and zero_first:
                for e in range(t * tile * x_cols, min((t + 1) * tile, num_inputs) * x_cols):
                    grad_x[e] = zero
            for k in range(kernel_volume):
                lo = group_bounds[t * kernel_volume + k]
                hi = group_bounds[t * kernel_volume + k + 1]
                if lo == hi:
                    continue
                if need_input and k != skip:
                    _pairs_gemm(g, wt, in_rows, out_rows, lo, hi, k, grad_x, groups, c_out, c_in, lanes, zero)
                if need_weight:
                    for p0 in range(lo, hi, chunk):
                        p1 = min(p0 + chunk, hi)
                        for grp in range(groups):
                            w_base = s * block + (k * groups + grp) * c_in * c_out
                            _pairs_weight_grad(x, g, out_rows, in_rows, p0, p1, partials, w_base, grp, x_cols, g_cols,
                                               c_in, c_out, lanes, zero)


@njit(parallel=True, boundscheck=False, nogil=True, error_model="numpy", cache=True)
def _tile_order(in_rows, out_rows, bounds, tile, num_tiles):
    """The map's pairs as int32 rows grouped by (tile of output rows, offset), keeping their order
    within a group: a stable counting sort. Returns ``(in_rows, out_rows, group_bounds)``. Group
    ``(t, k)`` holds pairs of offset ``k`` only, so both passes run one task per offset without
    sharing a counter."""
    kernel_volume = bounds.shape[0] - 1
    counts = np.zeros(num_tiles * kernel_volume, np.int64)
    for k in prange(kernel_volume):
        for p in range(bounds[k], bounds[k + 1]):
            counts[(index_load(out_rows, p) // tile) * kernel_volume + k] += 1
    group_bounds = np.zeros(num_tiles * kernel_volume + 1, np.int64)
    for g in range(num_tiles * kernel_volume):
        group_bounds[g + 1] = group_bounds[g] + counts[g]
    tiled_in = np.empty(in_rows.shape[0], np.int32)
    tiled_out = np.empty(in_rows.shape[0], np.int32)
    for k in prange(kernel_volume):
        fill = group_bounds[k:-1:kernel_volume].copy()  # next free slot of group (t, k), for every t
        for p in range(bounds[k], bounds[k + 1]):
            o = index_load(out_rows, p)
            t = o // tile
            tiled_in[fill[t]] = index_load(in_rows, p)
            tiled_out[fill[t]] = o
            fill[t] += 1
    return tiled_in, tiled_out, group_bounds


# ---------------------------------------------------------------- public functions

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_TILES_KEY = ("numba_tiles", _TILE)
SUPPORTED = "CPU float32/float64 features, injective kernel maps and no pair_weights"


def supports(feats, weight, kernel_map, pair_weights=None) -> bool:
    """Cases this backend computes: CPU, float32/float64, injective map, no pair weights."""
    return (
        pair_weights is None
        and kernel_map.injective
        and feats.device.type == "cpu"
        and weight.device.type == "cpu"
        and kernel_map.in_rows.device.type == "cpu"
        and feats.dtype in _DTYPES
        and weight.dtype == feats.dtype
        and feats.dim() == 2
        and weight.dim() == 4
        and kernel_map.in_rows.dtype == torch.int64
        and kernel_map.out_rows.dtype == torch.int64
    )


def _tiles(kmap) -> tuple:
    """``kmap``'s pairs grouped by (tile of output rows, offset), as numpy arrays (cached on the map)."""
    num_tiles = (kmap.num_outputs + _TILE - 1) // _TILE
    bounds = np.asarray(kmap.offset_bounds, dtype=np.int64)
    return _tile_order(as_numpy(kmap.in_rows), as_numpy(kmap.out_rows), bounds, _TILE, num_tiles)


def _tile_tensors(kmap) -> tuple:
    """:func:`_tiles` as tensors sharing the arrays' memory (cached on the map, so a compiled graph
    sees the same tensors on every call)."""
    return tuple(torch.from_numpy(array) for array in kmap.derived(_TILES_KEY, _tiles))


def map_tensors(kmap, backward: bool) -> list:
    """The tile layout of ``kmap`` (three tensors) and, with ``backward``, that of its transpose
    (three more), built once per map: what the registered op hands to :func:`attach_map_tensors`."""
    tensors = list(kmap.derived(("numba_tile_tensors", _TILE), _tile_tensors))
    if backward:
        tensors += kmap.transpose().derived(("numba_tile_tensors", _TILE), _tile_tensors)
    return tensors


def attach_map_tensors(kmap, tensors) -> None:
    """Cache the layouts of :func:`map_tensors` on ``kmap`` (a map rebuilt from tensors), so
    :func:`forward` and :func:`backward` do not sort its pairs again. Layouts not given are built
    when needed."""
    for target, start in ((kmap, 0), (kmap.transpose(), 3)):
        if len(tensors) >= start + 3:
            arrays = tuple(as_numpy(t) for t in tensors[start : start + 3])
            target.derived(_TILES_KEY, lambda _map, arrays=arrays: arrays)


def _run(x, w, kmap, out, skip, zero_first):
    """``out (+)= pairs(x) @ w`` over every offset of ``kmap`` but ``skip``, in place (contiguous
    tensors); ``zero_first``: overwrite ``out`` rather than add to it."""
    if out.numel() == 0:
        return
    if kmap.num_pairs == 0 or x.numel() == 0:
        if zero_first:
            out.zero_()
        return
    np_dtype = _DTYPES[x.dtype]
    lanes = vector_lanes(x.element_size() * 8)
    groups, c_in, c_out = w.shape[1:]
    tiled_in, tiled_out, group_bounds = kmap.derived(_TILES_KEY, _tiles)
    with TorchThreads():
        _gemm_tiles(
            as_numpy(x).reshape(-1), as_numpy(w).reshape(-1), tiled_in, tiled_out, group_bounds,
            out.detach().numpy().reshape(-1), kmap.num_outputs, kmap.kernel_volume, _TILE,
            -1 if skip is None else skip, zero_first, groups, c_in, c_out, lanes, np_dtype(0),
        )


def _part_tiles(group_bounds: np.ndarray, kernel_volume: int, weight_bytes: int) -> np.ndarray:
    """Where the parts of :func:`_backward_tiles` start and end, in tiles: up to ``_MAX_PARTS``
    runs of consecutive tiles with about equal numbers of pairs (tasks of equal work), as many as
    the tiles and the ``_PARTIALS_BYTES`` budget of partial weight gradients allow. Set by the map
    and the weight's size alone, never by the thread count, so the weight gradient's summation
    order (and its bits) is the same on every machine."""
    pairs_before_tile = group_bounds[::kernel_volume]  # one entry per tile, and the total
    num_tiles = len(pairs_before_tile) - 1
    num_parts = max(1, min(_MAX_PARTS, num_tiles, _PARTIALS_BYTES // max(1, weight_bytes)))
    targets = pairs_before_tile[-1] * np.arange(1, num_parts) // num_parts
    inner = np.searchsorted(pairs_before_tile, targets, side="left")
    return np.unique(np.concatenate(([0], inner, [num_tiles]))).astype(np.int64)


def forward(feats, weight, pair_weights, kmap):
    """Same as :func:`.torch_ref.forward` (no ``pair_weights``)."""
    assert pair_weights is None
    groups, c_in, c_out = weight.shape[1:]
    identity = kmap.identity_offset
    if identity is not None:
        out = grouped_mm(feats, weight[identity]).contiguous()
    else:
        out = feats.new_empty(kmap.num_outputs, groups * c_out)
    _run(feats, weight, kmap, out, identity, zero_first=identity is None)
    return out


def backward(feats, weight, pair_weights, grad_out, kmap, needs):
    """Same as :func:`.torch_ref.backward` (no ``pair_weights``): both gradients in one walk
    over the transposed map's tiles (:func:`_backward_tiles`); the identity offset of a
    submanifold map is one torch GEMM for the input gradient; its weight gradient is the kernel's."""

    assert pair_weights is None
    need_feats, need_weight, _ = needs
    groups, c_in, c_out = weight.shape[1:]
    identity = kmap.identity_offset
    weight_t = weight.transpose(2, 3).contiguous()  # [K, G, Co, Ci]
    grad_feats = grad_weight = None
    if need_feats:
        if identity is not None:
            grad_feats = grouped_mm(grad_out, weight_t[identity]).contiguous()
        else:
            grad_feats = feats.new_empty(kmap.num_inputs, groups * c_in)
    if need_weight:
        grad_weight = weight.new_zeros(weight.shape)  # contiguous, whatever the weight's strides
    if kmap.num_pairs == 0 or feats.numel() == 0 or grad_out.numel() == 0 or not (need_feats or need_weight):
        if need_feats and identity is None:
            grad_feats.zero_()
        return grad_feats, grad_weight, None
    transposed = kmap.transpose()
    # the transposed map's pairs (o, i) grouped by tiles of input rows i
    rows_o, rows_i, group_bounds = transposed.derived(_TILES_KEY, _tiles)
    weight_bytes = weight.numel() * weight.element_size() if need_weight else 0
    part_tiles = _part_tiles(group_bounds, kmap.kernel_volume, weight_bytes)
    np_dtype = _DTYPES[feats.dtype]
    partials = np.zeros((len(part_tiles) - 1) * weight.numel() if need_weight else 0, np_dtype)
    grad_x = grad_feats.detach().numpy().reshape(-1) if need_feats else np.empty(0, np_dtype)
    with TorchThreads():
        _backward_tiles(
            as_numpy(feats).reshape(-1), as_numpy(grad_out).reshape(-1), as_numpy(weight_t).reshape(-1), rows_o, rows_i,
            group_bounds, part_tiles, grad_x, partials, kmap.num_inputs, kmap.kernel_volume, _TILE,
            -1 if identity is None else identity, identity is None, need_feats, need_weight,
            groups, c_in, c_out, vector_lanes(feats.element_size() * 8), np_dtype(0),
            max(4, _CHUNK_BYTES // ((c_in + c_out) * feats.element_size())),
        )
    if need_weight:  # partial gradients added left to right: the same order on every machine
        flat = grad_weight.view(-1)
        for part in torch.from_numpy(partials).view(len(part_tiles) - 1, -1):
            flat += part
    return grad_feats, grad_weight, None
