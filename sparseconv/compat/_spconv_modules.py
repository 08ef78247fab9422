"""spconv compat containers, pooling, feature-wise wrappers and tables."""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import functional as SF
from ..nn.pointwise import check_feature_channels
from ..engine.kmap import KernelMapKey
from ._spconv_conv import MAX_NUM_VOXELS_BUFFER
from ._spconv_core import (
    SparseConvTensor,
    SparseModule,
    _check_ndim,
    describe_layer,
    expand_nd,
    lift,
    same_sites,
)
from ._spconv_registry import lookup_or_register


# -- feature-wise modules that accept a SparseConvTensor ------------------------------------------
class _FeatureWise:
    def forward(self, input):
        if isinstance(input, SparseConvTensor):
            check_feature_channels(self, input.features)  # type: ignore[arg-type]
            return input.replace_feature(super().forward(input.features))  # type: ignore[misc]
        return super().forward(input)  # type: ignore[misc]


class SparseBatchNorm(_FeatureWise, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on the features of a SparseConvTensor (statistics over the active sites)."""


class SparseSyncBatchNorm(_FeatureWise, nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` on the features of a SparseConvTensor."""


class SparseReLU(_FeatureWise, nn.ReLU):
    """``nn.ReLU`` on the features of a SparseConvTensor."""


class SparseIdentity(_FeatureWise, nn.Identity):
    """Returns its input."""


class Identity(nn.Module):
    """Returns its input (spconv's ``spconv.pytorch.Identity``)."""

    def forward(self, input):
        return input

    def input_spatial_size(self, out_size):
        return out_size


_SPARSE_AWARE = (SparseModule, SparseBatchNorm, SparseSyncBatchNorm, SparseReLU, SparseIdentity, Identity)


def is_spconv_module(module: nn.Module) -> bool:
    """Whether :class:`SparseSequential` passes the whole SparseConvTensor to ``module``
    (otherwise it passes the features and wraps the result with ``replace_feature``)."""
    return isinstance(module, _SPARSE_AWARE)


def is_sparse_conv(module: nn.Module) -> bool:
    from ._spconv_conv import SparseConvolution

    return isinstance(module, SparseConvolution)


class SparseSequential(SparseModule):
    """Sequential container mixing sparse layers and plain torch modules.

    A :class:`SparseModule` (convolutions, pooling, ``ToDense``, nested ``SparseSequential``)
    receives the SparseConvTensor; any other module (``nn.BatchNorm1d``, ``nn.ReLU``,
    ``nn.Linear``, ...) receives ``x.features`` and its result replaces them. As in spconv,
    plain modules are skipped when the tensor has no sites (BatchNorm cannot run on 0 rows).
    Once a module returns something other than a SparseConvTensor (``ToDense``), later modules
    get that value as is. Built from modules, an ``OrderedDict``, or keyword arguments.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for index, module in enumerate(args):
                self.add_module(str(index), module)
        for key, module in kwargs.items():
            if key in self._modules:
                raise ValueError(f"SparseSequential: module name {key!r} is used twice")
            self.add_module(key, module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.items())
        if isinstance(index, slice):
            return SparseSequential(OrderedDict(modules[index]))
        if not -len(modules) <= index < len(modules):
            raise IndexError(f"index {index} is out of range for SparseSequential of length {len(modules)}")
        return modules[index][1]

    def add(self, module: nn.Module, name: Optional[str] = None) -> None:
        name = str(len(self._modules)) if name is None else name
        if name in self._modules:
            raise KeyError(f"SparseSequential already has a module named {name!r}")
        self.add_module(name, module)

    def forward(self, input):
        for name, module in self._modules.items():
            if is_spconv_module(module):
                input = module(input)
            elif isinstance(input, SparseConvTensor):
                check_feature_channels(module, input.features, f"SparseSequential layer {name!r}: ")
                if input.features.shape[0] != 0:
                    input = input.replace_feature(module(input.features))
            else:
                input = module(input)
        return input


class ToDense(SparseModule):
    """``SparseConvTensor -> [B, C, *spatial_shape]`` dense tensor (channels first)."""

    def forward(self, x: SparseConvTensor) -> torch.Tensor:
        if not isinstance(x, SparseConvTensor):
            raise TypeError(f"ToDense expects a SparseConvTensor, got {type(x).__name__}")
        return x.dense()


class RemoveGrid(SparseModule):
    """Drops spconv's pre-allocated grid buffer (kept for API compatibility; there is no grid here)."""

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        x.grid = None
        return x


# -- pooling ---------------------------------------------------------------------------------------
class _SparsePool(SparseModule):
    reduce = "max"

    def __init__(self, ndim, kernel_size=3, stride=1, padding=0, dilation=1, indice_key=None, subm=False,
                 algo=None, record_voxel_count=False, name=None):
        super().__init__(name=name)
        _check_ndim(ndim)
        if subm:
            raise NotImplementedError("submanifold pooling (subm=True) is not supported by sparseconv's compat layer")
        self.ndim = ndim
        self.kernel_size = expand_nd(ndim, kernel_size, "kernel_size")
        self.stride = list(self.kernel_size) if stride is None else expand_nd(ndim, stride, "stride")
        self.padding = expand_nd(ndim, padding, "padding")
        self.dilation = expand_nd(ndim, dilation, "dilation")
        for label, values, minimum in (("kernel_size", self.kernel_size, 1), ("stride", self.stride, 1),
                                       ("padding", self.padding, 0), ("dilation", self.dilation, 1)):
            if any(v < minimum for v in values):
                raise ValueError(f"{label} must be >= {minimum} on every axis, got {values}")
        self.subm = False
        self.indice_key = indice_key
        self.algo = algo
        self.record_voxel_count = record_voxel_count
        if record_voxel_count:
            self.register_buffer(MAX_NUM_VOXELS_BUFFER, torch.zeros(1, dtype=torch.int32))

    def get_max_num_voxels(self) -> Optional[torch.Tensor]:
        return getattr(self, MAX_NUM_VOXELS_BUFFER, None)

    def _key(self) -> KernelMapKey:
        return KernelMapKey(
            "conv", lift(self.kernel_size, 1), lift(self.stride, 1), lift(self.padding, 0), lift(self.dilation, 1)
        )

    def forward(self, input: SparseConvTensor) -> SparseConvTensor:
        if not isinstance(input, SparseConvTensor):
            raise TypeError(f"{describe_layer(self)} expects a SparseConvTensor, got {type(input).__name__}")
        if input.ndim != self.ndim:
            raise ValueError(f"{describe_layer(self)} is {self.ndim}-D but its input has {input.ndim} spatial axes")
        kernel_map, indice_dict = lookup_or_register(
            input, self, "pool", self._key(), self.ndim, self.kernel_size, self.stride, self.padding,
            self.dilation, self.indice_key,
        )
        feats = self._reduce(input._sparse_tensor(), kernel_map)
        buffer = getattr(self, MAX_NUM_VOXELS_BUFFER, None)
        if buffer is not None:
            with torch.no_grad():
                buffer.clamp_(min=kernel_map.num_outputs)
        return SparseConvTensor._from_coordinate_set(feats, kernel_map.output, self.ndim, indice_dict, like=input)

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            s += f", padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.indice_key is not None:
            s += f", indice_key={self.indice_key!r}"
        return s


class SparseMaxPool(_SparsePool):
    """Max pooling with spconv 2.x's numerics: each output site is the maximum over the active
    inputs in its window *and zero* (spconv starts every output at 0), i.e. ``relu`` of
    sparseconv's max pool. Identical to sparseconv's max pool for non-negative features (the
    usual case, after ReLU); for negative ones the output is 0 and no gradient flows.
    Output sites are those of a regular conv with the same parameters; ``indice_key``
    registers the map so a :class:`SparseInverseConv3d` can un-pool.
    """

    def _reduce(self, st, kernel_map):
        key = kernel_map.key
        pooled = SF.sparse_max_pool3d(st, key.kernel_size, key.stride, key.padding, key.dilation)
        return F.relu(pooled.feats)


class SparseAvgPool(_SparsePool):
    """Average pooling over the *active* sites of each window (spconv 2.x divides by the number of
    active inputs, not by the kernel volume, unlike ``nn.AvgPool3d``)."""

    def _reduce(self, st, kernel_map):
        feats = st.feats
        sums = feats.new_zeros(kernel_map.num_outputs, feats.shape[1]).index_add(
            0, kernel_map.out_rows, feats.index_select(0, kernel_map.in_rows)
        )
        counts = torch.bincount(kernel_map.out_rows, minlength=kernel_map.num_outputs)
        return sums / counts.clamp(min=1).to(feats.dtype)[:, None]


def _make_pool(base, ndim):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, indice_key=None, algo=None,
                 record_voxel_count=False, name=None):
        base.__init__(self, ndim, kernel_size, stride, padding, dilation, indice_key=indice_key, algo=algo,
                      record_voxel_count=record_voxel_count, name=name)

    return __init__


class SparseMaxPool1d(SparseMaxPool):
    __init__ = _make_pool(SparseMaxPool, 1)


class SparseMaxPool2d(SparseMaxPool):
    __init__ = _make_pool(SparseMaxPool, 2)


class SparseMaxPool3d(SparseMaxPool):
    """spconv ``SparseMaxPool3d(kernel_size, stride=None, padding=0, dilation=1, indice_key=None)``;
    ``stride`` defaults to ``kernel_size``. See :class:`SparseMaxPool` for the numerics."""

    __init__ = _make_pool(SparseMaxPool, 3)


class SparseAvgPool1d(SparseAvgPool):
    __init__ = _make_pool(SparseAvgPool, 1)


class SparseAvgPool2d(SparseAvgPool):
    __init__ = _make_pool(SparseAvgPool, 2)


class SparseAvgPool3d(SparseAvgPool):
    """spconv ``SparseAvgPool3d(kernel_size, stride=None, ...)``: mean over the active sites of each window."""

    __init__ = _make_pool(SparseAvgPool, 3)


class SparseMaxPool4d(SparseMaxPool):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("SparseMaxPool4d: 4-D sparse tensors are not supported by sparseconv's compat layer")


class SparseGlobalMaxPool(SparseModule):
    """``SparseConvTensor -> [B, C]``: max over each batch entry's active sites (0 for an empty entry)."""

    def forward(self, input: SparseConvTensor) -> torch.Tensor:
        return SF.global_max_pool(input._sparse_tensor())


class SparseGlobalAvgPool(SparseModule):
    """``SparseConvTensor -> [B, C]``: mean over each batch entry's active sites (0 for an empty entry).

    spconv 2.3.8 has no CPU implementation, and its GPU one returns only the first channel's
    mean per entry; this returns every channel."""

    def forward(self, input: SparseConvTensor) -> torch.Tensor:
        return SF.global_avg_pool(input._sparse_tensor())


# -- tables ----------------------------------------------------------------------------------------
def _check_aligned(tensors: List[SparseConvTensor], what: str) -> None:
    if not tensors:
        raise ValueError(f"{what} needs at least one SparseConvTensor")
    first = tensors[0]._coordinate_set()
    for t in tensors[1:]:
        if not same_sites(first, t._coordinate_set()):
            raise ValueError(f"{what} needs SparseConvTensors on the same sites in the same order")


class JoinTable(SparseModule):
    """Concatenate the features of tensors on the same sites (channel axis)."""

    def forward(self, input: List[SparseConvTensor]) -> SparseConvTensor:
        _check_aligned(input, "JoinTable")
        return input[0].replace_feature(torch.cat([t.features for t in input], 1))


class AddTable(SparseModule):
    """Sum the features of tensors on the same sites."""

    def forward(self, input: List[SparseConvTensor]) -> SparseConvTensor:
        _check_aligned(input, "AddTable")
        return input[0].replace_feature(sum(t.features for t in input))  # type: ignore[arg-type]


class AddTableMisaligned(SparseModule):
    """Sum tensors on different sites (union of sites); see :func:`sparse_add`."""

    def forward(self, input: List[SparseConvTensor]) -> SparseConvTensor:
        return sparse_add(*input)


class ConcatTable(SparseModule):
    """Apply every child to the same input; returns the list of outputs."""

    def forward(self, input):
        return [module(input) for module in self._modules.values()]

    def add(self, module: nn.Module) -> "ConcatTable":
        self.add_module(str(len(self._modules)), module)
        return self


def sparse_add(*tensors: SparseConvTensor) -> SparseConvTensor:
    """Sum SparseConvTensors of one grid on the union of their sites.

    When the union equals the sites of the largest operand, the result keeps that operand's
    sites, row order and ``indice_dict`` (so keyed maps stay valid); otherwise the result is on
    a new, sorted site set with an empty ``indice_dict``.
    """
    if not tensors or not all(isinstance(t, SparseConvTensor) for t in tensors):
        raise TypeError("sparse_add expects one or more SparseConvTensors")
    first = tensors[0]
    for t in tensors[1:]:
        if t.spatial_shape != first.spatial_shape or t.batch_size != first.batch_size or t.ndim != first.ndim:
            raise ValueError("sparse_add needs tensors with the same spatial_shape, batch_size and ndim")
        if t.features.shape[1] != first.features.shape[1]:
            raise ValueError("sparse_add needs tensors with the same number of channels")
    sets = [t._coordinate_set() for t in tensors]
    largest = max(range(len(tensors)), key=lambda i: len(sets[i]))
    X, Y, Z = sets[0].spatial_shape

    def flat(cs):
        c = cs.coords
        return ((c[:, 0] * X + c[:, 1]) * Y + c[:, 2]) * Z + c[:, 3]

    keys = torch.cat([flat(cs) for cs in sets])
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    feats = torch.cat([t.features for t in tensors])
    base = tensors[largest]
    if unique.numel() == len(sets[largest]):
        # every site is one of the largest operand's: keep its rows, order and registry
        order = torch.argsort(flat(sets[largest]))
        rows = order[inverse]
        out = feats.new_zeros(unique.numel(), feats.shape[1]).index_add(0, rows, feats)
        return base.replace_feature(out)
    out = feats.new_zeros(unique.numel(), feats.shape[1]).index_add(0, inverse, feats)
    z = unique % Z
    rest = unique // Z
    y = rest % Y
    rest = rest // Y
    x = rest % X
    b = rest // X
    coords = torch.stack((b, x, y, z), 1)
    nd = first.ndim
    indices = torch.cat((coords[:, :1], coords[:, 4 - nd:]), 1).to(torch.int32)
    return SparseConvTensor(out, indices, first.spatial_shape, first.batch_size, benchmark=first.benchmark)
