"""Coordinate hashing: integer voxel coordinates to row indices, without a dense grid.

Coordinates ``(batch, x, y, z)`` are first packed into one int64 key with
:func:`pack_coords` (a fixed bit-field layout, so neighbour keys are one add away), then stored
in :class:`CoordinateHash`, an open-addressing table with linear probing whose build
and query are vectorised torch ops (a few rounds over all pending keys, no Python
loop over points). Memory is ``O(N)``: a 200 m LiDAR scene at 2 cm (10^4 voxels a
side) needs no ``10^12``-cell grid, only a key table twice the number of voxels.
"""
from __future__ import annotations

from typing import Sequence

import torch

# Fibonacci hashing multiplier 2^64 / golden ratio, as a signed int64 (torch has no uint64 math).
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_EMPTY = -1

AXIS_BITS = 16
COORD_MARGIN = 1024
"""Coordinates are stored shifted by this margin, so a site plus any offset of at most this
many voxels per axis still packs without carrying into the next field."""
MAX_EXTENT = (1 << AXIS_BITS) - 2 * COORD_MARGIN
"""Largest spatial extent per axis (63488 voxels: a 200 m scene at 4 mm)."""
MAX_BATCH = 1 << 15
_FIELD = (1 << AXIS_BITS) - 1


def check_grid(spatial_shape: Sequence[int], batch_size: int) -> None:
    """Raise ``ValueError`` when a grid does not fit the key layout of :func:`pack_coords`."""
    if any(int(s) > MAX_EXTENT for s in spatial_shape):
        raise ValueError(
            f"spatial_shape {tuple(spatial_shape)} exceeds the largest supported extent of {MAX_EXTENT} voxels per axis"
        )
    if int(batch_size) > MAX_BATCH:
        raise ValueError(f"batch_size {batch_size} exceeds the largest supported batch size of {MAX_BATCH}")


def pack_coords(coords: torch.Tensor) -> torch.Tensor:
    """Pack ``[..., 4]`` coordinates ``(b, x, y, z)`` into int64 keys, one 16-bit field per axis.

    ``key = b << 48 | (x + m) << 32 | (y + m) << 16 | (z + m)`` with ``m = COORD_MARGIN``.
    Sorting keys sorts coordinates by batch, then x, y, z, and for any offset ``d`` with
    ``|d| <= m`` per axis, ``pack(c + d) == pack(c) + offset_key(d)``: a neighbour's key is
    one add away, and a neighbour outside the grid packs to a key no site has.
    """
    c = coords.to(torch.int64)
    m = COORD_MARGIN
    return (c[..., 0] << 48) | ((c[..., 1] + m) << 32) | ((c[..., 2] + m) << 16) | (c[..., 3] + m)


def offset_key(dx: int, dy: int, dz: int) -> int:
    """The key difference of a spatial offset: ``pack(c + d) - pack(c)``."""
    return (int(dx) << 32) + (int(dy) << 16) + int(dz)


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_coords`: int64 keys ``[...]`` to coordinates ``[..., 4]``."""
    m = COORD_MARGIN
    return torch.stack(
        (keys >> 48, ((keys >> 32) & _FIELD) - m, ((keys >> 16) & _FIELD) - m, (keys & _FIELD) - m), dim=-1
    )


class CoordinateHash:
    """Open-addressing hash table from unique non-negative int64 keys to their row index.

    ``CoordinateHash(keys).query(q)`` returns, for every query key, the row ``i`` with
    ``keys[i] == q`` or ``-1`` when the key is absent. Capacity is the next power of two
    at or above ``2 * N`` (load factor <= 0.5), so probe chains stay short.
    """

    def __init__(self, keys: torch.Tensor):
        if keys.dtype != torch.int64 or keys.dim() != 1:
            raise TypeError(f"keys must be a 1-D int64 tensor, got {keys.dtype} with shape {tuple(keys.shape)}")
        n = keys.numel()
        capacity = 16
        while capacity < 2 * n:
            capacity *= 2
        self._mask = capacity - 1
        self._shift = 64 - (capacity.bit_length() - 1)
        device = keys.device
        self.table_keys = torch.full((capacity,), _EMPTY, dtype=torch.int64, device=device)
        self.table_rows = torch.full((capacity,), _EMPTY, dtype=torch.int64, device=device)
        self.num_keys = n
        self.max_probe = 0
        pending = torch.arange(n, device=device)
        slots = self._home_slot(keys)
        # Each round, every pending key tries its current slot; one key per free slot wins,
        # the others (and keys whose slot was already taken) move on to the next slot.
        while pending.numel():
            free = self.table_rows[slots] == _EMPTY
            self.table_rows.index_put_((slots[free],), pending[free])
            won = self.table_rows[slots] == pending
            self.table_keys[slots[won]] = keys[pending[won]]
            pending = pending[~won]
            slots = (slots[~won] + 1) & self._mask
            self.max_probe += 1

    def _home_slot(self, keys: torch.Tensor) -> torch.Tensor:
        # Multiply-shift hashing: the top bits of key * golden spread consecutive keys well.
        return ((keys * _GOLDEN) >> self._shift) & self._mask

    def query(self, keys: torch.Tensor) -> torch.Tensor:
        """Rows of ``keys`` in the table, ``-1`` where absent. Any shape; int64."""
        flat = keys.reshape(-1)
        result = torch.full_like(flat, _EMPTY)
        active = torch.arange(flat.numel(), device=flat.device)
        slots = self._home_slot(flat)
        wanted = flat
        for _ in range(self.max_probe):
            if not active.numel():
                break
            stored = self.table_keys[slots]
            hit = stored == wanted
            result[active[hit]] = self.table_rows[slots[hit]]
            go_on = (stored != _EMPTY) & ~hit
            active, slots, wanted = active[go_on], (slots[go_on] + 1) & self._mask, wanted[go_on]
        return result.view_as(keys)
