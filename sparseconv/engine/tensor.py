"""SparseTensor: features on the active sites of a batched 3D voxel grid."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.utils._pytree as pytree

from .._validation import INTEGER_DTYPES, as_int, number_triple, triple
from .coordinates import CoordinateSet
from .hashing import check_grid, pack_coords


def _spatial_shape(value) -> Tuple[int, int, int]:
    """``spatial_shape`` as 3 positive ints: ints, NumPy integers, integer-valued floats (``4.0``),
    or a 1-D tensor / array of 3 such values; ``3.7`` is an error, never truncated."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"spatial_shape must be 3 positive ints, got a tensor of shape {tuple(value.shape)}")
        value = value.tolist()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (tuple, list, torch.Size)) or len(value) != 3:
        raise ValueError(f"spatial_shape must be 3 positive ints, got {value!r}")
    shape = tuple(as_int(s, "spatial_shape") for s in value)
    if any(s < 1 for s in shape):
        raise ValueError(f"spatial_shape must be 3 positive ints, got {shape}")
    return shape  # type: ignore[return-value]


class SparseTensor:
    """Features ``feats [N, C]`` at integer sites ``coords [N, 4]`` = ``(batch, x, y, z)``.

    Its dense twin is :meth:`dense`, a ``[B, C, X, Y, Z]`` tensor that is zero off the
    active sites, laid out channels-first so ``torch.nn.functional.conv3d(st.dense(), w)``
    is the reference every sparse op is tested against.

    Args:
        feats: floating-point ``[N, C]``.
        coords: integer ``[N, 4]``, each row unique, non-negative, batch index first.
        spatial_shape: ``(X, Y, Z)``; inferred as ``coords.max(0) + 1`` when omitted.
            Every coordinate must lie inside it.
        batch_size: number of batch entries; inferred as ``max(batch) + 1`` when omitted.
            Larger values add empty entries.
        voxel_size: world size of one voxel (a number or one per axis), optional.
        origin: world position of the min corner of voxel ``(0, 0, 0)``, optional.
            With both, :meth:`voxel_centers` returns world coordinates.

    Raises:
        TypeError: ``feats`` not floating point, ``coords`` not integer.
        ValueError: wrong shapes, negative, out-of-range or duplicate coordinates.
    """

    __slots__ = ("feats", "coordinate_set")

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        spatial_shape: Optional[Sequence[int]] = None,
        batch_size: Optional[int] = None,
        *,
        voxel_size: Union[None, float, Sequence[float]] = None,
        origin: Union[None, float, Sequence[float]] = None,
    ):
        if not isinstance(feats, torch.Tensor) or not isinstance(coords, torch.Tensor):
            raise TypeError("feats and coords must be torch.Tensor")
        if not feats.is_floating_point():
            raise TypeError(f"feats must be a floating-point tensor, got {feats.dtype}")
        if coords.dtype not in INTEGER_DTYPES:
            raise TypeError(f"coords must be an integer tensor, got {coords.dtype}")
        if feats.dim() != 2:
            raise ValueError(f"feats must have shape [N, C], got {tuple(feats.shape)}")
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must have shape [N, 4] as (batch, x, y, z), got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        if feats.device != coords.device:
            raise ValueError(f"feats is on {feats.device} but coords is on {coords.device}")
        coords = coords.to(torch.int64, copy=True)  # owned: cached keys and maps must not go stale
        n = coords.shape[0]
        if n and bool((coords < 0).any()):
            row = int((coords < 0).any(1).nonzero()[0])
            raise ValueError(f"coords must be non-negative, row {row} is {coords[row].tolist()}")
        maxima = coords.max(0).values.tolist() if n else [-1, -1, -1, -1]
        if spatial_shape is None:
            spatial_shape = tuple(max(m + 1, 1) for m in maxima[1:])
        else:
            spatial_shape = _spatial_shape(spatial_shape)
            for axis, (m, s) in enumerate(zip(maxima[1:], spatial_shape)):
                if m >= s:
                    raise ValueError(
                        f"coords axis {axis + 1} reaches {m}, outside spatial_shape {spatial_shape} (max {s - 1})"
                    )
        if batch_size is None:
            batch_size = max(maxima[0] + 1, 1)
        else:
            batch_size = as_int(batch_size, "batch_size")
            if batch_size < 1 or maxima[0] >= batch_size:
                raise ValueError(
                    f"batch_size must be positive and exceed every batch index (max {maxima[0]}), got {batch_size}"
                )
        check_grid(spatial_shape, batch_size)
        if n > 1:
            keys = torch.sort(pack_coords(coords)).values
            dup = keys[1:] == keys[:-1]
            if bool(dup.any()):
                raise ValueError(f"coords contain {int(dup.sum())} duplicate rows; every site must appear once")
        if voxel_size is not None:
            voxel_size = number_triple(voxel_size, "voxel_size", positive=True)
        if origin is not None:
            origin = number_triple(origin, "origin", positive=False)
        coordinate_set = CoordinateSet(coords, spatial_shape, batch_size, voxel_size, origin)
        self.feats = feats
        self.coordinate_set = coordinate_set

    @classmethod
    def from_coordinate_set(cls, feats: torch.Tensor, coordinate_set: CoordinateSet) -> "SparseTensor":
        """Wrap features on an existing (already validated) coordinate set, sharing its map cache."""
        if feats.dim() != 2 or feats.shape[0] != len(coordinate_set):
            raise ValueError(f"feats must have shape [{len(coordinate_set)}, C], got {tuple(feats.shape)}")
        st = cls.__new__(cls)
        st.feats = feats
        st.coordinate_set = coordinate_set
        return st

    # -- basic properties -------------------------------------------------------------
    @property
    def coords(self) -> torch.Tensor:
        return self.coordinate_set.coords

    @property
    def spatial_shape(self) -> Tuple[int, int, int]:
        return self.coordinate_set.spatial_shape

    @property
    def batch_size(self) -> int:
        return self.coordinate_set.batch_size

    @property
    def voxel_size(self) -> Optional[Tuple[float, float, float]]:
        return self.coordinate_set.voxel_size

    @property
    def origin(self) -> Optional[Tuple[float, float, float]]:
        return self.coordinate_set.origin

    @property
    def num_channels(self) -> int:
        return self.feats.shape[1]

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def __len__(self) -> int:
        return self.feats.shape[0]

    # -- conversions ------------------------------------------------------------------
    def replace(self, feats: torch.Tensor) -> "SparseTensor":
        """Same coordinates (and shared kernel-map cache), new features ``[N, C']``."""
        if not isinstance(feats, torch.Tensor) or not feats.is_floating_point():
            raise TypeError("feats must be a floating-point torch.Tensor")
        return SparseTensor.from_coordinate_set(feats, self.coordinate_set)

    def dense(self) -> torch.Tensor:
        """Dense ``[B, C, X, Y, Z]`` tensor, zero off the active sites (differentiable)."""
        B, C = self.batch_size, self.num_channels
        X, Y, Z = self.spatial_shape
        c = self.coords
        flat_index = ((c[:, 0] * X + c[:, 1]) * Y + c[:, 2]) * Z + c[:, 3]
        flat = self.feats.new_zeros(B * X * Y * Z, C).index_copy(0, flat_index, self.feats)
        return flat.view(B, X, Y, Z, C).permute(0, 4, 1, 2, 3)

    @classmethod
    def from_dense(cls, x: torch.Tensor, **kwargs) -> "SparseTensor":
        """Keep the sites of a ``[B, C, X, Y, Z]`` tensor where any channel is non-zero."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            raise ValueError(f"from_dense expects a [B, C, X, Y, Z] tensor, got {getattr(x, 'shape', type(x))}")
        if not x.is_floating_point():
            raise TypeError(f"from_dense expects a floating-point tensor, got {x.dtype}")
        B, C, X, Y, Z = x.shape
        active = (x != 0).any(dim=1)
        coords = active.nonzero()
        feats = x.permute(0, 2, 3, 4, 1)[active]
        return cls(feats, coords, (X, Y, Z), B, **kwargs)

    def to(self, *args, **kwargs) -> "SparseTensor":
        """Like ``torch.Tensor.to`` for the features; coordinates follow the device."""
        feats = self.feats.to(*args, **kwargs)
        return SparseTensor.from_coordinate_set(feats, self.coordinate_set.to(feats.device))

    def cpu(self) -> "SparseTensor":
        return self.to("cpu")

    def cuda(self, device=None) -> "SparseTensor":
        return self.to("cuda" if device is None else device)

    def detach(self) -> "SparseTensor":
        return self.replace(self.feats.detach())

    def voxel_centers(self) -> torch.Tensor:
        """World coordinates ``[N, 3]`` of the voxel centres; needs ``voxel_size`` and ``origin``."""
        if self.voxel_size is None or self.origin is None:
            raise ValueError("voxel_centers needs voxel_size and origin; pass them to SparseTensor or use voxelize()")
        size = torch.tensor(self.voxel_size, dtype=torch.float64, device=self.device)
        origin = torch.tensor(self.origin, dtype=torch.float64, device=self.device)
        return origin + (self.coords[:, 1:].to(torch.float64) + 0.5) * size

    def crop(self, start: Sequence[int], size: Sequence[int]) -> "SparseTensor":
        """The sites with ``start <= (x, y, z) < start + size``, shifted to a grid of ``size``.

        Batch entries are kept; voxel size and origin follow the shift, so world positions hold.
        """
        if not isinstance(start, (tuple, list, torch.Size)) or len(start) != 3:
            raise ValueError(f"crop needs start as 3 ints, got {start!r}")
        start, size = tuple(as_int(v, "start") for v in start), triple(size, "size", minimum=1)
        lo = torch.tensor(start, device=self.device)
        extent = torch.tensor(size, device=self.device)
        xyz = self.coords[:, 1:]
        keep = ((xyz >= lo) & (xyz < lo + extent)).all(1)
        coords = self.coords[keep].clone()
        coords[:, 1:] -= lo
        origin = None
        if self.origin is not None and self.voxel_size is not None:
            origin = tuple(o + s * v for o, s, v in zip(self.origin, start, self.voxel_size))
        return SparseTensor(
            self.feats[keep], coords, size, self.batch_size,
            voxel_size=self.voxel_size, origin=origin,
        )

    def densest_block(self, size: Sequence[int]) -> Tuple[int, int, int]:
        """Start of the ``size`` block (aligned to multiples of ``size``) holding the most sites."""
        extent = torch.tensor(triple(size, "size", minimum=1), device=self.device)
        block = self.coords[:, 1:] // extent
        grid = (torch.tensor(self.spatial_shape, device=self.device) + extent - 1) // extent
        block_id = (block[:, 0] * grid[1] + block[:, 1]) * grid[2] + block[:, 2]
        best = block[block_id == torch.bincount(block_id).argmax()][0] * extent
        return tuple(best.tolist())  # type: ignore[return-value]

    def batch_counts(self) -> torch.Tensor:
        """Number of active sites per batch entry, int64 ``[B]``."""
        return torch.bincount(self.coords[:, 0], minlength=self.batch_size)

    def __getstate__(self):
        return {"feats": self.feats, "coordinate_set": self.coordinate_set}

    def __setstate__(self, state):
        self.feats = state["feats"]
        self.coordinate_set = state["coordinate_set"]

    def __repr__(self) -> str:
        return (
            f"SparseTensor(num_sites={len(self)}, channels={self.num_channels}, spatial_shape={self.spatial_shape}, "
            f"batch_size={self.batch_size}, dtype={self.dtype}, device={self.device})"
        )


# -- pytree: features are the leaf, the coordinate set (with its kernel maps) the context --------
# So SparseTensors cross torch.compile / torch.export / torch.func boundaries: traced code sees the
# features as a tensor input and the coordinates, with their cached maps, as constants. Two trees
# match only when they are on the same coordinate set object (identity, not equal coordinates).


def _flatten(st: SparseTensor):
    return [st.feats], st.coordinate_set


def _flatten_with_keys(st: SparseTensor):
    return [(pytree.GetAttrKey("feats"), st.feats)], st.coordinate_set


def _unflatten(leaves, coordinate_set: CoordinateSet) -> SparseTensor:
    return SparseTensor.from_coordinate_set(leaves[0], coordinate_set)


def _dumpable_context(coordinate_set: CoordinateSet):
    raise TypeError(
        "a SparseTensor input or output cannot be saved in an ExportedProgram (its coordinate set and kernel "
        "maps are Python objects); export sparseconv.engine.FixedCoordinates(model, coordinate_set), which takes "
        "and returns feature tensors"
    )


pytree.register_pytree_node(
    SparseTensor, _flatten, _unflatten,
    serialized_type_name="sparseconv.SparseTensor", flatten_with_keys_fn=_flatten_with_keys,
    to_dumpable_context=_dumpable_context, from_dumpable_context=_dumpable_context,
)
