"""spconv compat internals: ``SparseConvTensor``, the ``indice_key`` registry and ``SparseModule``.

A :class:`SparseConvTensor` holds spconv's public state (``features``, ``indices``,
``spatial_shape``, ``batch_size``, ``indice_dict``) and, lazily, a sparseconv
:class:`~sparseconv.engine.coordinates.CoordinateSet` built from it, which owns the kernel-map
cache. 1-D and 2-D tensors are lifted to 3-D by leading singleton axes (a 2-D grid
``(H, W)`` is the 3-D grid ``(1, H, W)``), so every layer runs on sparseconv's 3-D kernel
maps and its single core op.
"""
from __future__ import annotations

import enum
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..engine.coordinates import CoordinateSet
from ..engine.kmap import KernelMap
from ..engine.tensor import SparseTensor

SPCONV_API_VERSION = "2.3.8"
"""The spconv release whose PyTorch API and numerics this layer reproduces."""

from .._validation import INTEGER_DTYPES, as_int, positive_int


class ConvAlgo(enum.Enum):
    """spconv's choice of GEMM kernel. A performance hint only: every value gives the same result
    here (all layers run sparseconv's gather-GEMM-scatter)."""

    Native = 0
    MaskImplicitGemm = 1
    MaskSplitImplicitGemm = 2


# -- lifting n-D (n <= 3) parameters to sparseconv's 3-D ones -------------------------------------
def expand_nd(ndim: int, value, name: str = "value") -> List[int]:
    """An int or a sequence of ``ndim`` ints (list, tuple, numpy array, tensor) -> list of ``ndim`` ints."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or {ndim} ints, got bool")
    if isinstance(value, torch.Tensor) or hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, (int, float)):
        return [as_int(value, name)] * ndim
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}") from None
    if len(items) != ndim:
        raise ValueError(f"{name} must have {ndim} entries (one per spatial axis), got {len(items)}: {items}")
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) for v in items):
        raise TypeError(f"{name} must contain ints, got {items}")
    return [as_int(v, name) for v in items]


def lift(values: Sequence[int], fill: int) -> Tuple[int, int, int]:
    """Prepend ``fill`` so an n-D parameter becomes the 3-D one (leading axes of extent 1)."""
    values = [int(v) for v in values]
    return tuple([fill] * (3 - len(values)) + values)  # type: ignore[return-value]


def _check_ndim(ndim: int) -> None:
    if ndim == 4:
        raise NotImplementedError(
            "4-D sparse tensors are not supported by sparseconv's compat layer (it runs on 3-D kernel maps); "
            "1-D, 2-D and 3-D are"
        )
    if ndim not in (1, 2, 3):
        raise ValueError(f"spconv tensors have 1 to 3 spatial axes here, got {ndim}")


def describe_layer(module: nn.Module) -> str:
    """How error messages name a layer: its assigned name (if any) and its repr."""
    label = getattr(module, "_sparse_unique_name", "") or getattr(module, "name", None) or ""
    text = f"{type(module).__name__}({module.extra_repr()})"
    return f"'{label}' {text}" if label else text


class IndiceData:
    """What a layer with an ``indice_key`` recorded in a forward pass (spconv's ``IndiceData``).

    Attributes mirror spconv's names: ``indices`` / ``spatial_shape`` are the layer's input,
    ``out_indices`` / ``out_spatial_shape`` its output, ``is_subm``, ``ksize``, ``stride``,
    ``padding``, ``dilation``. ``kernel_map`` is the sparseconv map, ``kind`` one of
    ``"subm"``, ``"conv"``, ``"pool"``, ``"transposed"``, and ``layer`` describes the
    layer that registered it (used in error messages).
    """

    def __init__(
        self,
        kind: str,
        layer: str,
        kernel_map: KernelMap,
        ndim: int,
        ksize: List[int],
        stride: List[int],
        padding: List[int],
        dilation: List[int],
        indices: torch.Tensor,
        spatial_shape: List[int],
        batch_size: int,
    ):
        self.kind = kind
        self.layer = layer
        self.kernel_map = kernel_map
        self.ndim = ndim
        self.ksize = list(ksize)
        self.stride = list(stride)
        self.padding = list(padding)
        self.dilation = list(dilation)
        self.indices = indices
        self.spatial_shape = list(spatial_shape)
        self.batch_size = batch_size
        self.algo = ConvAlgo.Native
        self._out_indices: Optional[torch.Tensor] = indices if kind == "subm" else None

    @property
    def is_subm(self) -> bool:
        return self.kind == "subm"

    @property
    def out_spatial_shape(self) -> List[int]:
        return list(self.kernel_map.output.spatial_shape[3 - self.ndim:])

    @property
    def out_indices(self) -> torch.Tensor:
        if self._out_indices is None:
            self._out_indices = unlift_coords(self.kernel_map.output.coords, self.ndim)
        return self._out_indices

    def __repr__(self) -> str:
        return (
            f"IndiceData(kind={self.kind!r}, ksize={self.ksize}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, layer={self.layer})"
        )


def unlift_coords(coords: torch.Tensor, ndim: int) -> torch.Tensor:
    """sparseconv's int64 ``[N, 4]`` coordinates -> spconv's int32 ``[N, ndim + 1]`` indices."""
    if ndim == 3:
        return coords.to(torch.int32)
    return torch.cat((coords[:, :1], coords[:, 4 - ndim:]), 1).to(torch.int32)


def same_sites(a: CoordinateSet, b: CoordinateSet) -> bool:
    """Whether two coordinate sets hold the same rows in the same order (cheap when identical)."""
    if a is b:
        return True
    return (
        a.spatial_shape == b.spatial_shape
        and a.batch_size == b.batch_size
        and len(a) == len(b)
        and a.coords.device == b.coords.device
        and bool(torch.equal(a.coords, b.coords))
    )


class SparseConvTensor:
    """spconv's sparse tensor: ``features [N, C]`` at ``indices [N, ndim + 1]`` = ``(batch, *spatial)``.

    ``spatial_shape`` is ordered like the index columns (spconv's ``[D, H, W]`` for ``(b, z, y, x)``
    indices) and :meth:`dense` is ``[B, C, *spatial_shape]``. Indices must be unique and inside
    ``spatial_shape`` (checked when the tensor is first used by a layer or densified; spconv does
    not check and gives undefined results). Any integer dtype is accepted for ``indices``
    (spconv requires int32); outputs of layers carry int32 indices like spconv's.

    ``indice_dict`` is the per-forward registry of :class:`IndiceData` by ``indice_key``; layers
    copy it, add their entry and hand it to their output, so later layers can reuse or invert
    a map by key.

    ``grid``, ``voxel_num``, ``benchmark``, ``permanent_thrust_allocator``, ``enable_timer`` and
    ``force_algo`` are accepted for compatibility; they are GPU performance and profiling
    options of spconv that do not change any result here.
    """

    def __init__(
        self,
        features: torch.Tensor,
        indices: torch.Tensor,
        spatial_shape: Union[Sequence[int], torch.Tensor],
        batch_size: int,
        grid: Optional[torch.Tensor] = None,
        voxel_num: Optional[torch.Tensor] = None,
        indice_dict: Optional[dict] = None,
        benchmark: bool = False,
        permanent_thrust_allocator: bool = False,
        enable_timer: bool = False,
        force_algo: Optional[ConvAlgo] = None,
    ):
        if not isinstance(features, torch.Tensor) or not isinstance(indices, torch.Tensor):
            raise TypeError("features and indices must be torch.Tensor")
        if features.dim() != 2:
            raise ValueError(f"features must have shape [N, C], got {tuple(features.shape)}")
        if indices.dim() != 2 or indices.shape[1] < 2:
            raise ValueError(f"indices must have shape [N, ndim + 1] (batch first), got {tuple(indices.shape)}")
        if indices.dtype not in INTEGER_DTYPES:
            raise TypeError(f"indices must be an integer tensor (spconv uses int32), got {indices.dtype}")
        ndim = indices.shape[1] - 1
        _check_ndim(ndim)
        shape = expand_nd(ndim, spatial_shape, "spatial_shape")
        if len(shape) != ndim:
            raise ValueError(f"spatial_shape must have {ndim} entries for indices with {ndim + 1} columns")
        self._features = features
        self._indices: Optional[torch.Tensor] = indices
        self._spatial_shape = shape
        self._batch_size = _batch_size(batch_size)
        self._ndim = ndim
        self._coords: Optional[CoordinateSet] = None
        self._coords_sig: Optional[tuple] = None
        self.indice_dict: Dict[str, IndiceData] = {} if indice_dict is None else indice_dict
        self.grid = grid
        self.voxel_num = voxel_num
        self.benchmark = benchmark
        self.benchmark_record: dict = {}
        self.thrust_allocator = None
        self._timer = None
        self.force_algo = force_algo
        self.int8_scale = None

    # -- internal construction -------------------------------------------------------------------
    @classmethod
    def _from_coordinate_set(
        cls,
        features: torch.Tensor,
        coordinate_set: CoordinateSet,
        ndim: int,
        indice_dict: Dict[str, IndiceData],
        like: Optional["SparseConvTensor"] = None,
        indices: Optional[torch.Tensor] = None,
    ) -> "SparseConvTensor":
        """A tensor on an existing (validated) coordinate set; ``indices`` are derived lazily
        unless given (they must then equal the set's coordinates)."""
        out = cls.__new__(cls)
        out._features = features
        out._indices = indices
        out._spatial_shape = list(coordinate_set.spatial_shape[3 - ndim:])
        out._batch_size = coordinate_set.batch_size
        out._ndim = ndim
        out._coords = coordinate_set
        out._coords_sig = out._signature()
        out.indice_dict = indice_dict
        out.grid = like.grid if like is not None else None
        out.voxel_num = like.voxel_num if like is not None else None
        out.benchmark = like.benchmark if like is not None else False
        out.benchmark_record = like.benchmark_record if like is not None else {}
        out.thrust_allocator = like.thrust_allocator if like is not None else None
        out._timer = like._timer if like is not None else None
        out.force_algo = like.force_algo if like is not None else None
        out.int8_scale = like.int8_scale if like is not None else None
        return out

    def _signature(self) -> tuple:
        idx = self._indices
        idx_sig = None if idx is None else (id(idx), idx._version)
        return (idx_sig, tuple(self._spatial_shape), self._batch_size)

    def _coordinate_set(self) -> CoordinateSet:
        """The sparseconv coordinate set of ``indices`` (built and validated on first use, rebuilt
        if ``indices``, ``spatial_shape`` or ``batch_size`` were replaced or changed in place)."""
        if self._coords is not None and self._coords_sig == self._signature():
            return self._coords
        idx = self._indices
        if idx is None:  # derived tensor whose shape or batch size was reassigned
            idx = unlift_coords(self._coords.coords, self._ndim)  # type: ignore[union-attr]
            self._indices = idx
        if idx.dim() != 2 or idx.shape[1] != self._ndim + 1:
            raise ValueError(f"indices must have shape [N, {self._ndim + 1}], got {tuple(idx.shape)}")
        coords = idx.to(torch.int64)
        if self._ndim < 3:
            zeros = coords.new_zeros(coords.shape[0], 3 - self._ndim)
            coords = torch.cat((coords[:, :1], zeros, coords[:, 1:]), 1)
        device = self._features.device
        st = SparseTensor(
            torch.zeros(coords.shape[0], 0, device=device), coords.to(device), lift(self._spatial_shape, 1), self._batch_size
        )
        self._coords = st.coordinate_set
        self._coords_sig = self._signature()
        return self._coords

    def _sparse_tensor(self) -> SparseTensor:
        """The features as a sparseconv SparseTensor on the (lifted) coordinate set."""
        feats = self._features
        if not feats.is_floating_point():
            raise TypeError(f"features must be floating point for sparseconv layers, got {feats.dtype}")
        cs = self._coordinate_set()
        if feats.shape[0] != len(cs):
            raise ValueError(f"features has {feats.shape[0]} rows but indices has {len(cs)}")
        return SparseTensor.from_coordinate_set(feats, cs)

    # -- spconv's public state -------------------------------------------------------------------
    @property
    def features(self) -> torch.Tensor:
        return self._features

    @features.setter
    def features(self, value):
        raise ValueError(
            "SparseConvTensor.features cannot be assigned (as in spconv 2.x); "
            "use x = x.replace_feature(new_features)"
        )

    @property
    def indices(self) -> torch.Tensor:
        if self._indices is None:
            self._indices = unlift_coords(self._coords.coords, self._ndim)  # type: ignore[union-attr]
            self._coords_sig = self._signature()
        return self._indices

    @indices.setter
    def indices(self, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[1] != self._ndim + 1:
            raise ValueError(f"indices must be a tensor of shape [N, {self._ndim + 1}], got {getattr(value, 'shape', value)}")
        self._indices = value

    @property
    def spatial_shape(self) -> List[int]:
        return self._spatial_shape

    @spatial_shape.setter
    def spatial_shape(self, value) -> None:
        shape = expand_nd(self._ndim, value, "spatial_shape")
        self.indices  # materialise before the coordinate set goes stale
        self._spatial_shape = shape

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.indices
        self._batch_size = _batch_size(value)

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return self._ndim

    @property
    def spatial_size(self) -> int:
        size = 1
        for s in self._spatial_shape:
            size *= int(s)
        return size

    @property
    def is_quantized(self) -> bool:
        return self._features.dtype == torch.qint8

    def q_scale(self):
        raise NotImplementedError("quantized spconv tensors are not supported by sparseconv's compat layer")

    def dequantize(self) -> "SparseConvTensor":
        return self.replace_feature(self._features.dequantize())

    def find_indice_pair(self, key) -> Optional[IndiceData]:
        if key is None:
            return None
        return self.indice_dict.get(key)

    # -- new tensors -----------------------------------------------------------------------------
    def replace_feature(self, feature: torch.Tensor) -> "SparseConvTensor":
        """Same indices, shape, batch size and ``indice_dict``; new features ``[N, C']``."""
        if not isinstance(feature, torch.Tensor):
            raise TypeError(f"replace_feature expects a torch.Tensor, got {type(feature).__name__}")
        # Row counts are checked when the tensor is next used: spconv code may replace the features
        # and then assign matching indices (e.g. concatenating scales).
        out = self.shadow_copy()
        out._features = feature
        return out

    def shadow_copy(self) -> "SparseConvTensor":
        """A new tensor sharing every member (features, indices, coordinate set, ``indice_dict``)."""
        out = SparseConvTensor.__new__(SparseConvTensor)
        out.__dict__.update(self.__dict__)
        return out

    def minus(self) -> "SparseConvTensor":
        return self.replace_feature(-self._features)

    def select_by_index(self, valid_indices: torch.Tensor) -> "SparseConvTensor":
        """The rows ``valid_indices`` (a bool mask or row numbers), with an empty ``indice_dict``
        (the recorded maps do not apply to the new site set). Unlike spconv 2.3.8 the source
        tensor's ``indice_dict`` is left untouched."""
        return SparseConvTensor(
            self._features[valid_indices], self.indices[valid_indices], self._spatial_shape, self._batch_size,
            self.grid, self.voxel_num, {}, self.benchmark,
        )

    def _aligned_features(self, other, op: str) -> torch.Tensor:
        if isinstance(other, torch.Tensor):
            return other
        if not isinstance(other, SparseConvTensor):
            raise TypeError(f"cannot {op} SparseConvTensor and {type(other).__name__}")
        if not same_sites(self._coordinate_set(), other._coordinate_set()):
            raise ValueError(
                f"cannot {op} SparseConvTensors on different sites ({len(self._coordinate_set())} vs "
                f"{len(other._coordinate_set())} rows, or the same count in another order); "
                "use sparseconv.compat.spconv.functional.sparse_add for misaligned tensors"
            )
        return other._features

    def __add__(self, other) -> "SparseConvTensor":
        return self.replace_feature(self._features + self._aligned_features(other, "add"))

    def __radd__(self, other) -> "SparseConvTensor":
        return self.replace_feature(self._aligned_features(other, "add") + self._features)

    def __iadd__(self, other) -> "SparseConvTensor":
        self._features = self._features + self._aligned_features(other, "add")
        return self

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> "SparseConvTensor":
        """From a channels-last dense tensor ``[B, *spatial, C]``: the sites where any channel is non-zero."""
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise ValueError(f"from_dense expects a channels-last tensor [B, *spatial, C], got {getattr(x, 'shape', x)}")
        active = (x != 0).any(-1)
        indices = active.nonzero().to(torch.int32)
        return cls(x[active], indices, list(x.shape[1:-1]), x.shape[0])

    def dense(self, channels_first: bool = True) -> torch.Tensor:
        """``[B, C, *spatial_shape]`` (or ``[B, *spatial_shape, C]``), zero off the active sites.

        Differentiable in ``features``; the result is contiguous (so ``.view`` works on it, as
        detection necks do with ``dense().view(B, C * D, H, W)``).
        """
        cs = self._coordinate_set()
        feats = self._features
        if feats.shape[0] != len(cs):
            raise ValueError(f"features has {feats.shape[0]} rows but indices has {len(cs)}")
        c = cs.coords
        X, Y, Z = cs.spatial_shape
        flat_index = ((c[:, 0] * X + c[:, 1]) * Y + c[:, 2]) * Z + c[:, 3]
        channels = feats.shape[1]
        flat = feats.new_zeros(self._batch_size * X * Y * Z, channels).index_copy(0, flat_index, feats)
        out = flat.view(self._batch_size, *self._spatial_shape, channels)
        if not channels_first:
            return out
        return out.permute(0, self._ndim + 1, *range(1, self._ndim + 1)).contiguous()

    # -- sparseconv interop ----------------------------------------------------------------------
    def to_sparse_tensor(self) -> SparseTensor:
        """The same data as a native :class:`sparseconv.SparseTensor` (sharing the kernel-map cache).

        3-D index columns ``(b, i, j, k)`` become sparseconv's ``(b, x, y, z)`` unchanged; 1-D and
        2-D tensors come out lifted to 3-D (leading spatial axes of extent 1)."""
        return self._sparse_tensor()

    @classmethod
    def from_sparse_tensor(cls, st: SparseTensor, indice_dict: Optional[dict] = None) -> "SparseConvTensor":
        """Wrap a native SparseTensor (3-D) without copying; shares its coordinate set."""
        if not isinstance(st, SparseTensor):
            raise TypeError(f"expected a sparseconv.SparseTensor, got {type(st).__name__}")
        return cls._from_coordinate_set(st.feats, st.coordinate_set, 3, {} if indice_dict is None else indice_dict)

    def __repr__(self) -> str:
        return (
            f"SparseConvTensor[shape={tuple(self._features.shape)}, spatial_shape={self._spatial_shape}, "
            f"batch_size={self._batch_size}, keys={sorted(self.indice_dict)}]"
        )


def _batch_size(value) -> int:
    """spconv passes batch sizes as ints, NumPy integers or one-element tensors."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return positive_int(value, "batch_size")


class SparseModule(nn.Module):
    """Base class of layers that take a :class:`SparseConvTensor` (rather than its features)
    inside :class:`SparseSequential`. ``name`` labels the layer in error messages."""

    def __init__(self, name: Optional[str] = None):
        super().__init__()
        self.name = name
        self._sparse_unique_name = ""


def assign_name_for_sparse_modules(module: nn.Module) -> None:
    """Label every SparseModule in ``module`` with its qualified name (used in error messages)."""
    for qualified, child in module.named_modules():
        if isinstance(child, SparseModule):
            child._sparse_unique_name = qualified
