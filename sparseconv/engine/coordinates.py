"""CoordinateSet: the active sites of a sparse tensor, and the home of their kernel-map cache.

Every :class:`~sparseconv.SparseTensor` points at one ``CoordinateSet``. Tensors that
share coordinates (``st.replace(feats)``, the output of a submanifold conv, BatchNorm,
activations) share the same object, so a kernel map built once for it is reused by
every later layer that asks for the same :class:`~sparseconv.engine.kmap.KernelMapKey`.
The cache is keyed by the coordinate set's identity plus that key: never by a user
string. Caches are not pickled (see :meth:`__getstate__`).
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Optional, Tuple

import torch

from .hashing import CoordinateHash, pack_coords
from .kmap import KernelMap, KernelMapKey, build_kernel_map


class CoordinateSet:
    """Immutable integer coordinates ``[N, 4]`` = ``(batch, x, y, z)`` in a grid.

    Attributes:
        coords: int64 ``[N, 4]``, unique rows, inside ``[0, batch_size) x spatial_shape``.
        spatial_shape: ``(X, Y, Z)`` extent of the grid.
        batch_size: number of batch entries (entries may be empty).
        voxel_size: per-axis world size of one voxel, or ``None`` when unknown.
        origin: world position of the min corner of voxel ``(0, 0, 0)``, or ``None``.
            The centre of voxel ``c`` is ``origin + (c + 0.5) * voxel_size``.
    """

    def __init__(
        self,
        coords: torch.Tensor,
        spatial_shape: Tuple[int, int, int],
        batch_size: int,
        voxel_size: Optional[Tuple[float, float, float]] = None,
        origin: Optional[Tuple[float, float, float]] = None,
    ):
        self.coords = coords
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.batch_size = int(batch_size)
        self.voxel_size = voxel_size
        self.origin = origin
        self._keys: Optional[torch.Tensor] = None
        self._sorted: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None
        self._hash: Optional[CoordinateHash] = None
        self._kernel_maps: Dict[KernelMapKey, KernelMap] = {}
        # (KernelMapKey, weak ref to the finer set): the strided maps that produced this set, so an
        # inverse conv can find its way back without being told. Weak, because the finer set owns
        # that map and the map holds this set: a strong ref would close a reference cycle.
        self._producers: List[Tuple[KernelMapKey, "weakref.ReferenceType[CoordinateSet]"]] = []
        self.kernel_map_builds = 0  # maps built on this set (for tests and analysis)
        self._regridded: Dict[Tuple[int, int, int], "CoordinateSet"] = {}

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def device(self) -> torch.device:
        return self.coords.device

    @property
    def keys(self) -> torch.Tensor:
        """Packed int64 keys of the coordinates (see :func:`sparseconv.engine.hashing.pack_coords`)."""
        if self._keys is None:
            self._keys = pack_coords(self.coords)
        return self._keys

    def sorted_keys(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(keys in ascending order, order)`` with ``order[j]`` the row of the j-th key, or
        ``order=None`` when the rows are already sorted (the usual case: voxelize and every
        strided or transposed map emit sorted coordinates)."""
        if self._sorted is None:
            keys = self.keys
            if keys.numel() < 2 or bool((keys[1:] > keys[:-1]).all()):
                self._sorted = (keys, None)
            else:
                sorted_keys, order = torch.sort(keys)
                self._sorted = (sorted_keys, order)
        return self._sorted

    @property
    def hash_table(self) -> CoordinateHash:
        """The coordinate hash of this set, built on first use."""
        if self._hash is None:
            self._hash = CoordinateHash(self.keys)
        return self._hash

    def kernel_map(self, key: KernelMapKey) -> KernelMap:
        """The :class:`~sparseconv.engine.kmap.KernelMap` for ``key`` with this set as input, cached
        (and holding this set weakly, see :mod:`sparseconv.engine.kmap.types`)."""
        kmap = self._kernel_maps.get(key)
        if kmap is None:
            kmap = build_kernel_map(self, key).owned_by(self)
            self._kernel_maps[key] = kmap
            self.kernel_map_builds += 1
        return kmap

    def on_grid(self, spatial_shape: Tuple[int, int, int]) -> "CoordinateSet":
        """The same sites (same rows, same ``coords`` tensor) in a grid of ``spatial_shape``, which
        must hold them; cached here, so its kernel maps are built once however often it is asked
        for (a network that pads the grid reuses them on every call)."""
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if spatial_shape == self.spatial_shape:
            return self
        if any(s < own for s, own in zip(spatial_shape, self.spatial_shape)):
            raise ValueError(f"spatial_shape {spatial_shape} must hold this set's grid {self.spatial_shape}")
        regridded = self._regridded.get(spatial_shape)
        if regridded is None:
            regridded = CoordinateSet(self.coords, spatial_shape, self.batch_size, self.voxel_size, self.origin)
            self._regridded[spatial_shape] = regridded
        return regridded

    def cached_kernel_maps(self) -> Dict[KernelMapKey, KernelMap]:
        return dict(self._kernel_maps)

    def add_producer(self, key: KernelMapKey, finer: "CoordinateSet") -> None:
        """Record that the strided conv ``key`` on ``finer`` produced this set (held weakly)."""
        self._producers.append((key, weakref.ref(finer)))

    @property
    def produced_by(self) -> List[Tuple[KernelMapKey, "CoordinateSet"]]:
        """``(key, finer set)`` of every strided conv that produced this set and whose input is alive."""
        live = ((key, ref()) for key, ref in self._producers)
        return [(key, finer) for key, finer in live if finer is not None]

    def to(self, device: torch.device) -> "CoordinateSet":
        if torch.device(device) == self.coords.device:
            return self
        return CoordinateSet(self.coords.to(device), self.spatial_shape, self.batch_size, self.voxel_size, self.origin)

    def __getstate__(self):
        # Hash tables and kernel maps are derived data: rebuild them after unpickling rather
        # than carrying them into checkpoints or across processes.
        return {
            "coords": self.coords,
            "spatial_shape": self.spatial_shape,
            "batch_size": self.batch_size,
            "voxel_size": self.voxel_size,
            "origin": self.origin,
        }

    def __setstate__(self, state):
        self.__init__(**state)

    def __repr__(self) -> str:
        return (
            f"CoordinateSet(num_sites={len(self)}, spatial_shape={self.spatial_shape}, "
            f"batch_size={self.batch_size}, cached_maps={len(self._kernel_maps)})"
        )
