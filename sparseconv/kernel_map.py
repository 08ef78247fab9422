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
from typing import Optional, Tuple

import torch

from .coordinates import CoordinateSet
from .hashing import pack_coords, unpack_keys

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
    _transpose_cache: dict = field(default_factory=dict, repr=False, compare=False)

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

    def transpose(self) -> "KernelMap":
        """The same pairs with inputs and outputs swapped: the map of the inverse convolution."""
        cached = self._transpose_cache.get("t")
        if cached is None:
            cached = KernelMap(
                key=self.key,
                in_rows=self.out_rows,
                out_rows=self.in_rows,
                offset_bounds=self.offset_bounds,
                num_inputs=self.num_outputs,
                num_outputs=self.num_inputs,
                input=self.output,
                output=self.input,
                identity_offset=self.identity_offset,
            )
            self._transpose_cache["t"] = cached
        return cached


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


def _bounds_from_counts(counts: torch.Tensor) -> Tuple[int, ...]:
    return tuple([0] + torch.cumsum(counts, 0).tolist())


def _build_submanifold(coord_set: CoordinateSet, key: KernelMapKey) -> KernelMap:
    coords = coord_set.coords
    n = coords.shape[0]
    device = coords.device
    taps = kernel_offsets(key.kernel_size, device)
    dilation = torch.tensor(key.dilation, device=device)
    left = torch.tensor([d * (k - 1) // 2 for k, d in zip(key.kernel_size, key.dilation)], device=device)
    deltas = taps * dilation - left  # [K, 3]: out o reads in o + delta
    num_taps = taps.shape[0]
    # A kernel that is odd on every axis is symmetric: tap K-1-k has delta -delta(k), so the pairs of
    # k > K//2 are the swapped pairs of K-1-k. Query only the first half plus the centre.
    symmetric = all(k % 2 == 1 for k in key.kernel_size)
    centre = num_taps // 2 if symmetric else None
    queried = centre + 1 if symmetric else num_taps
    shape = torch.tensor(coord_set.spatial_shape, device=device)
    neighbours = coords[None, :, 1:] + deltas[:queried, None, :]  # [Q, N, 3]
    inside = ((neighbours >= 0) & (neighbours < shape)).all(-1)
    batch = coords[:, :1].expand(queried, n, 1)
    keys = pack_coords(torch.cat((batch, neighbours.clamp(min=0)), -1), coord_set.spatial_shape)
    rows = coord_set.hash_table.query(keys)
    rows = torch.where(inside, rows, torch.full_like(rows, -1))
    found = rows >= 0  # [Q, N]
    out_all = torch.arange(n, device=device).expand(queried, n)
    in_parts, out_parts = [], []
    counts = found.sum(1)
    in_first, out_first = rows[found], out_all[found]  # grouped by offset, row-major
    if not symmetric:
        return KernelMap(key, in_first, out_first, _bounds_from_counts(counts), n, n, coord_set, coord_set)
    # offsets 0..centre as queried, then centre+1..K-1 mirrored from centre-1..0
    in_parts.append(in_first)
    out_parts.append(out_first)
    bounds = _bounds_from_counts(counts)
    for k in range(centre - 1, -1, -1):
        lo, hi = bounds[k], bounds[k + 1]
        in_parts.append(out_first[lo:hi])
        out_parts.append(in_first[lo:hi])
    mirrored_counts = torch.cat((counts, counts[:centre].flip(0)))
    return KernelMap(
        key,
        torch.cat(in_parts),
        torch.cat(out_parts),
        _bounds_from_counts(mirrored_counts),
        n,
        n,
        coord_set,
        coord_set,
        identity_offset=centre,
    )


def _build_generative(coord_set: CoordinateSet, key: KernelMapKey) -> KernelMap:
    """Strided ("conv") and transposed maps: output sites are created, then deduplicated."""
    coords = coord_set.coords
    n = coords.shape[0]
    device = coords.device
    out_shape = output_spatial_shape(key, coord_set.spatial_shape)
    taps = kernel_offsets(key.kernel_size, device)
    stride = torch.tensor(key.stride, device=device)
    padding = torch.tensor(key.padding, device=device)
    tap_shift = taps * torch.tensor(key.dilation, device=device)  # [K, 3]
    xyz = coords[None, :, 1:]
    if key.kind == "conv":
        # out o reads in o*s - p + t*d  =>  o = (i + p - t*d) / s when that divides exactly
        numerator = xyz + padding - tap_shift[:, None, :]
        out_xyz = torch.div(numerator, stride, rounding_mode="floor")
        valid = (numerator - out_xyz * stride == 0).all(-1)
    else:
        out_xyz = xyz * stride - padding + tap_shift[:, None, :]
        valid = torch.ones(out_xyz.shape[:2], dtype=torch.bool, device=device)
    valid &= ((out_xyz >= 0) & (out_xyz < torch.tensor(out_shape, device=device))).all(-1)
    num_taps = taps.shape[0]
    batch = coords[:, :1].expand(num_taps, n, 1)
    keys = pack_coords(torch.cat((batch, out_xyz), -1)[valid], out_shape)  # grouped by offset
    in_rows = torch.arange(n, device=device).expand(num_taps, n)[valid]
    counts = valid.sum(1)
    unique_keys, out_rows = torch.unique(keys, sorted=True, return_inverse=True)
    out_set = CoordinateSet(
        unpack_keys(unique_keys, out_shape),
        out_shape,
        coord_set.batch_size,
        *_output_geometry(coord_set, key),
    )
    if key.kind == "conv":
        out_set.produced_by.append((key, coord_set))
    return KernelMap(key, in_rows, out_rows, _bounds_from_counts(counts), n, unique_keys.numel(), coord_set, out_set)


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
        return _build_submanifold(coord_set, key)
    return _build_generative(coord_set, key)
