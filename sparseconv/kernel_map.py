"""Kernel maps (rulebooks): which input row meets which output row through which weight.

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
:class:`~sparseconv.coordinates.CoordinateSet` under a :class:`KernelMapKey`,
which holds every parameter that determines the map.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional, Tuple

import torch

from . import backends
from .coordinates import CoordinateSet
from .hashing import COORD_MARGIN, check_grid, offset_key, unpack_keys

Triple = Tuple[int, int, int]
KINDS = ("submanifold", "conv", "transposed")


@dataclass(frozen=True)
class KernelMapKey:
    """Everything besides the input coordinates that determines a kernel map."""

    kind: str
    kernel_size: Triple
    stride: Triple = (1, 1, 1)
    padding: Triple = (0, 0, 0)
    dilation: Triple = (1, 1, 1)
    output_padding: Triple = (0, 0, 0)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name, minimum in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1), ("output_padding", 0)):
            value = getattr(self, name)
            if len(value) != 3 or any(not isinstance(v, int) or v < minimum for v in value):
                raise ValueError(f"{name} must be 3 ints >= {minimum}, got {value}")

    @property
    def kernel_volume(self) -> int:
        kd, kh, kw = self.kernel_size
        return kd * kh * kw


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Immutable rulebook: pairs of offset ``k`` are ``in_rows[b[k]:b[k+1]]`` / ``out_rows[...]``.

    Attributes:
        key: the parameters it was built for.
        in_rows, out_rows: int64 ``[P]``, grouped by offset.
        offset_bounds: ``K + 1`` Python ints delimiting each offset's pairs (no device sync to read).
        num_inputs, num_outputs: rows of the input and output feature matrices.
        input: coordinate set of the inputs.
        output: coordinate set of the outputs (the input's own for submanifold maps).
        identity_offset: an offset whose pairs are exactly ``(i, i)`` for every row, or None;
            the core op skips its gather and scatter.
        injective: within one offset every input row and every output row appears at most once
            (true of every map built here: a tap moves each site by a fixed vector). Maps made
            elsewhere, such as the corner pairs of a deformable convolution, set it False and the
            core op accumulates with a scatter-add instead of gather-add-copy.
    """

    key: KernelMapKey
    in_rows: torch.Tensor
    out_rows: torch.Tensor
    offset_bounds: Tuple[int, ...]
    num_inputs: int
    num_outputs: int
    input: CoordinateSet
    output: CoordinateSet
    identity_offset: Optional[int] = None
    injective: bool = True
    # Not an __init__ argument: a map made from another (dataclasses.replace, tests cutting a map)
    # starts with an empty cache instead of sharing, and so misusing, the other's derived data.
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def kernel_volume(self) -> int:
        return len(self.offset_bounds) - 1

    @property
    def num_pairs(self) -> int:
        return self.offset_bounds[-1]

    def pairs(self, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.offset_bounds[k], self.offset_bounds[k + 1]
        return self.in_rows[lo:hi], self.out_rows[lo:hi]

    def pair_counts(self) -> Tuple[int, ...]:
        b = self.offset_bounds
        return tuple(b[k + 1] - b[k] for k in range(self.kernel_volume))

    def derived(self, name: Hashable, build: Callable[["KernelMap"], Any]) -> Any:
        """``build(self)``, computed on first ask and kept with this map under ``name``: what is
        derived from the pairs alone (the transposed map, a backend's reordering of the pairs)
        is built once per map, like the map itself."""
        value = self._derived.get(name)
        if value is None:
            value = self._derived[name] = build(self)
        return value

    def transpose(self) -> "KernelMap":
        """The same pairs with inputs and outputs swapped: the map of the inverse convolution."""
        return self.derived("transpose", KernelMap._transposed)

    def _transposed(self) -> "KernelMap":
        return KernelMap(
            key=self.key,
            in_rows=self.out_rows,
            out_rows=self.in_rows,
            offset_bounds=self.offset_bounds,
            num_inputs=self.num_outputs,
            num_outputs=self.num_inputs,
            input=self.output,
            output=self.input,
            identity_offset=self.identity_offset,
            injective=self.injective,
        )


def kernel_offsets(kernel_size: Triple, device=None) -> torch.Tensor:
    """Kernel taps ``[K, 3]`` in row-major order, matching ``weight.reshape(..., K)``."""
    taps = list(itertools.product(*(range(k) for k in kernel_size)))
    return torch.tensor(taps, dtype=torch.int64, device=device).reshape(-1, 3)


def output_spatial_shape(key: KernelMapKey, spatial_shape: Triple) -> Triple:
    """Output grid extent, with PyTorch's formulas for ``F.conv3d`` / ``F.conv_transpose3d``."""
    if key.kind == "submanifold":
        return tuple(spatial_shape)  # type: ignore[return-value]
    shape = []
    for n, k, s, p, d, op in zip(
        spatial_shape, key.kernel_size, key.stride, key.padding, key.dilation, key.output_padding
    ):
        if key.kind == "conv":
            size = (n + 2 * p - d * (k - 1) - 1) // s + 1
        else:
            size = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        shape.append(size)
    if any(size < 1 for size in shape):
        raise ValueError(
            f"{key.kind} with kernel_size={key.kernel_size}, stride={key.stride}, padding={key.padding}, "
            f"dilation={key.dilation} on spatial_shape {tuple(spatial_shape)} gives an empty output grid {tuple(shape)}"
        )
    return tuple(shape)  # type: ignore[return-value]


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


def _build_submanifold(coord_set: CoordinateSet, key: KernelMapKey) -> KernelMap:
    """Neighbour search on sorted keys.

    Tap ``(tx, ty, tz)`` of site ``j`` is the key ``keys[j] + column_delta(tx, ty) + tz * dz``. A
    kernel that is odd on every axis is symmetric (tap ``K-1-k`` is tap ``k`` reversed), so only
    the taps before the centre are searched and the rest mirrored; the centre is the identity.
    On CPU with numba installed the search is :func:`sparseconv.backends.numba_cpu.submanifold_pairs`
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
    fast = backends.numba_backend() if keys.device.type == "cpu" else None
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


def _build_generative(coord_set: CoordinateSet, key: KernelMapKey) -> KernelMap:
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
    ok = (axis_ok[0][:, None, None] & axis_ok[1][None, :, None] & axis_ok[2][None, None, :]).reshape(kx * ky * kz, len(coords))
    # Three device-to-host syncs for the whole map (not one per tap): the pair counts (kept on the
    # host as the offset bounds), the size of the nonzero result and the number of output sites.
    counts = ok.sum(1).tolist()
    tap, rows = ok.nonzero().unbind(1)  # tap-major, rows ascending within a tap
    tx, ty, tz = tap // (ky * kz), tap // kz % ky, tap % kz
    out_keys = batch_key[rows] | (axis_out[0][tx, rows] << 32) | (axis_out[1][ty, rows] << 16) | axis_out[2][tz, rows]
    unique_keys, out_rows = torch.unique(out_keys, sorted=True, return_inverse=True)
    out_set = CoordinateSet(
        unpack_keys(unique_keys),
        out_shape,
        coord_set.batch_size,
        *_output_geometry(coord_set, key),
    )
    if key.kind == "conv":
        out_set.produced_by.append((key, coord_set))
    return KernelMap(
        key, rows, out_rows, _bounds_from_counts(counts), len(coord_set), unique_keys.numel(),
        coord_set, out_set,
    )


def _output_geometry(coord_set: CoordinateSet, key: KernelMapKey):
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


def build_kernel_map(coord_set: CoordinateSet, key: KernelMapKey) -> KernelMap:
    """Build the map for ``key`` on ``coord_set`` (uncached; use ``coord_set.kernel_map(key)``)."""
    if key.kind == "submanifold":
        _check_reach(key)
        return _build_submanifold(coord_set, key)
    return _build_generative(coord_set, key)
