"""Conversion between spconv-layout compat modules and sparseconv's native modules.

Weights (``nn`` below is ``sparseconv.nn``):

============================  =====================================  ======================================
compat layer                  spconv weight                          native module and weight
============================  =====================================  ======================================
``SubMConv3d``                ``[O, kD, kH, kW, I/G]``               ``nn.SubMConv3d``  ``[O, I/G, kD, kH, kW]``
``SparseConv3d``              ``[O, kD, kH, kW, I/G]``               ``nn.SparseConv3d`` ``[O, I/G, k...]``
``SparseConvTranspose3d``     ``[O, kD, kH, kW, I/G]``               ``nn.SparseConvTranspose3d`` ``[I, O/G, k...]``
``SparseInverseConv3d``       ``[O, kD, kH, kW, I/G]``               ``nn.SparseInverseConv3d`` ``[I, O/G, k...]``
any kernel-1, stride-1 layer  ``[O, 1, 1, 1, I]`` read as ``[I, O]``  ``nn.SubMConv3d(k=1)`` ``[O, I, 1, 1, 1]``
============================  =====================================  ======================================

1-D and 2-D compat layers become 3-D native layers with leading kernel axes of extent 1 (their
inputs lifted by :meth:`SparseConvTensor.to_sparse_tensor`).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from .. import nn as snn
from ._spconv_conv import (
    MAX_NUM_VOXELS_BUFFER,
    SparseConv3d,
    SparseConvolution,
    SparseConvTranspose3d,
    SparseInverseConv3d,
    SubMConv3d,
)
from ._spconv_core import lift
from ._spconv_modules import (
    Identity,
    SparseAvgPool,
    SparseBatchNorm,
    SparseIdentity,
    SparseMaxPool,
    SparseMaxPool3d,
    SparseReLU,
    SparseSequential,
    SparseSyncBatchNorm,
    ToDense,
)


# -- tensor-level weight conversion ------------------------------------------------------------------
def _core_from_spconv(weight: torch.Tensor, groups: int) -> torch.Tensor:
    out_channels, in_per_group = weight.shape[0], weight.shape[-1]
    return weight.reshape(groups, out_channels // groups, -1, in_per_group).permute(2, 0, 3, 1)


def _spconv_from_core(core: torch.Tensor, kernel_size) -> torch.Tensor:
    k, g, ci, co = core.shape
    return core.permute(1, 3, 0, 2).reshape(g * co, *kernel_size, ci)


def _core_from_native(weight: torch.Tensor, groups: int, transposed: bool) -> torch.Tensor:
    if transposed:
        in_channels, out_per_group = weight.shape[:2]
        return weight.reshape(groups, in_channels // groups, out_per_group, -1).permute(3, 0, 1, 2)
    out_channels, in_per_group = weight.shape[:2]
    return weight.reshape(groups, out_channels // groups, in_per_group, -1).permute(3, 0, 2, 1)


def _native_from_core(core: torch.Tensor, kernel_size, transposed: bool) -> torch.Tensor:
    k, g, ci, co = core.shape
    if transposed:
        return core.permute(1, 2, 3, 0).reshape(g * ci, co, *kernel_size)
    return core.permute(1, 3, 2, 0).reshape(g * co, ci, *kernel_size)


def _core_to_spconv_reading(core: torch.Tensor, kernel_nd, conv1x1: bool) -> torch.Tensor:
    """Core weight -> the spconv weight a compat layer reads as that core weight."""
    k, g, ci, co = core.shape
    if conv1x1 and g == 1:
        # the layer multiplies by weight.reshape(I, O): store the [I, O] matrix's memory as [O, *k, I]
        return core[0, 0].contiguous().reshape(co, *kernel_nd, ci)
    return _spconv_from_core(core, kernel_nd).contiguous()


def _spconv_reading_to_core(weight: torch.Tensor, groups: int, conv1x1: bool) -> torch.Tensor:
    if conv1x1 and groups == 1:
        return weight.reshape(1, 1, weight.shape[-1], weight.shape[0])
    return _core_from_spconv(weight, groups)


def spconv_weight_to_native(
    weight: torch.Tensor, transposed: bool = False, groups: int = 1, conv1x1: bool = False
) -> torch.Tensor:
    """spconv 2.x weight ``[O, *k, I/G]`` -> the weight of the equivalent native module (3-D kernel).

    ``transposed`` (a transposed or inverse conv) gives ``nn.ConvTranspose3d``'s layout
    ``[I, O/G, kD, kH, kW]``, otherwise ``nn.Conv3d``'s ``[O, I/G, kD, kH, kW]``. ``conv1x1=True``
    marks a kernel-1, stride-1 layer (spconv applies it as ``features @ weight.view(I, O)`` when
    ``groups == 1``); its native equivalent is ``SubMConv3d(kernel_size=1)``, so the result is
    ``[O, I/G, 1, 1, 1]`` whatever ``transposed`` says.
    """
    kernel_size = lift(weight.shape[1:-1], 1)
    core = _spconv_reading_to_core(weight, groups, conv1x1)
    return _native_from_core(core, kernel_size, transposed and not conv1x1).contiguous()


def native_weight_to_spconv(
    weight: torch.Tensor, transposed: bool = False, groups: int = 1, conv1x1: bool = False, ndim: int = 3
) -> torch.Tensor:
    """A native weight -> the spconv-layout weight of the equivalent compat layer.

    ``transposed`` says the native weight has ``nn.ConvTranspose3d``'s layout; ``conv1x1`` that the
    compat layer is a kernel-1, stride-1 layer (read as spconv reads those); ``ndim`` < 3 drops the
    leading kernel axes (which must be 1). Inverse of :func:`spconv_weight_to_native`.
    """
    kernel_size = tuple(weight.shape[2:])
    if any(k != 1 for k in kernel_size[: 3 - ndim]):
        raise ValueError(f"a {ndim}-D layer needs kernel extent 1 on the leading axes, got {kernel_size}")
    core = _core_from_native(weight, groups, transposed)
    return _core_to_spconv_reading(core, kernel_size[3 - ndim:], conv1x1)


# -- module conversion -----------------------------------------------------------------------------
_FEATUREWISE_TO_NATIVE = [
    (nn.SyncBatchNorm, snn.SyncBatchNorm),
    (nn.BatchNorm1d, snn.BatchNorm),
    (nn.LayerNorm, snn.LayerNorm),
    (nn.Linear, snn.Linear),
    (nn.Dropout, snn.Dropout),
    (nn.Identity, snn.Identity),
    (nn.ReLU6, snn.ReLU6),
    (nn.ReLU, snn.ReLU),
    (nn.LeakyReLU, snn.LeakyReLU),
    (nn.ELU, snn.ELU),
    (nn.GELU, snn.GELU),
    (nn.SiLU, snn.SiLU),
    (nn.Mish, snn.Mish),
    (nn.Sigmoid, snn.Sigmoid),
    (nn.Tanh, snn.Tanh),
    (nn.Softmax, snn.Softmax),
]


def _clone_as(module: nn.Module, cls) -> nn.Module:
    """A deep copy of ``module`` re-classed as ``cls`` (a torch class and its sparse counterpart
    share constructor state, parameters and buffers)."""
    new = copy.deepcopy(module)
    new.__class__ = cls
    return new


def _find_keyed_layer(root: Optional[nn.Module], key: Optional[str]) -> Optional[nn.Module]:
    if root is None or key is None:
        return None
    for child in root.modules():
        if getattr(child, "indice_key", None) != key:
            continue
        if isinstance(child, SparseMaxPool) or (
            isinstance(child, SparseConvolution) and not child.subm and not child.inverse and not child.transposed
            and not child.conv1x1
        ):
            return child
    return None


def _conv_to_native(module: SparseConvolution, root: Optional[nn.Module], inverse_of: Optional[nn.Module]) -> nn.Module:
    bias = module.bias is not None
    k3 = lift(module.kernel_size, 1)
    g = module.groups
    native_transposed = False
    if module.conv1x1:
        native = snn.SubMConv3d(module.in_channels, module.out_channels, 1, groups=g, bias=bias)
    elif module.subm:
        native = snn.SubMConv3d(module.in_channels, module.out_channels, k3, lift(module.dilation, 1), g, bias)
    elif module.inverse:
        pair = inverse_of if inverse_of is not None else _find_keyed_layer(root, module.indice_key)
        if pair is None:
            raise ValueError(
                f"cannot convert {type(module).__name__}(indice_key={module.indice_key!r}) on its own: the native "
                "SparseInverseConv3d needs the stride, padding and dilation of the layer it inverts. Convert the "
                "container holding both layers, or pass inverse_of=<the strided layer>"
            )
        if list(pair.kernel_size) != list(module.kernel_size):
            raise ValueError(f"inverse_of has kernel_size {pair.kernel_size}, the inverse conv {module.kernel_size}")
        native = snn.SparseInverseConv3d(
            module.in_channels, module.out_channels, k3, lift(pair.stride, 1), lift(pair.padding, 0),
            lift(pair.dilation, 1), g, bias,
        )
        native_transposed = True
    elif module.transposed:
        native = snn.SparseConvTranspose3d(
            module.in_channels, module.out_channels, k3, lift(module.stride, 1), lift(module.padding, 0),
            lift(module.output_padding, 0), 1, g, bias,
        )
        native_transposed = True
    else:
        native = snn.SparseConv3d(
            module.in_channels, module.out_channels, k3, lift(module.stride, 1), lift(module.padding, 0),
            lift(module.dilation, 1), g, bias,
        )
    native = native.to(device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        native.weight.copy_(_native_from_core(module.core_weight(), native.kernel_size, native_transposed))
        if bias:
            native.bias.copy_(module.bias)
    native.train(module.training)
    return native


def to_native(module: nn.Module, inverse_of: Optional[nn.Module] = None, _root: Optional[nn.Module] = None) -> nn.Module:
    """The equivalent sparseconv native module (a new module; weights copied and converted).

    Converts compat convolutions (see the table in this module's docstring), ``SparseSequential``
    (to ``torch.nn.Sequential`` with the same child names, so state-dict keys keep their prefixes),
    torch feature-wise modules (``nn.BatchNorm1d`` -> ``sparseconv.nn.BatchNorm``, ``nn.ReLU`` ->
    ``sparseconv.nn.ReLU``, ...), ``ToDense`` and ``SparseMaxPool3d`` (to a native max pool followed
    by ReLU: spconv's zero-initialised max). A ``SparseInverseConv3d`` takes stride, padding and
    dilation from the layer of its ``indice_key`` inside the module being converted, or from
    ``inverse_of``. Custom ``nn.Module`` classes (whose ``forward`` is spconv code) cannot be
    converted; convert their state dicts with :func:`state_dict_to_native`.

    The native module takes ``x.to_sparse_tensor()`` and gives the same features on the same sites.
    """
    root = module if _root is None else _root
    if isinstance(module, SparseConvolution):
        return _conv_to_native(module, root, inverse_of)
    if isinstance(module, SparseSequential) or type(module) is nn.Sequential:
        return nn.Sequential(OrderedDict((name, to_native(child, None, root)) for name, child in module.named_children()))
    if isinstance(module, SparseMaxPool):
        pool = snn.SparseMaxPool3d(
            lift(module.kernel_size, 1), lift(module.stride, 1), lift(module.padding, 0), lift(module.dilation, 1)
        )
        return nn.Sequential(pool, snn.ReLU())
    if isinstance(module, SparseAvgPool):
        raise NotImplementedError(
            "SparseAvgPool3d (mean over the active sites of each window) has no native sparseconv module; "
            "sparseconv.nn.SparseAvgPool3d divides by the window size like nn.AvgPool3d"
        )
    if isinstance(module, ToDense):
        return snn.ToDense()
    if isinstance(module, (SparseIdentity, Identity)):
        return snn.Identity()
    compat_featurewise = {SparseBatchNorm: nn.BatchNorm1d, SparseSyncBatchNorm: nn.SyncBatchNorm, SparseReLU: nn.ReLU}
    torch_type = compat_featurewise.get(type(module), type(module))
    for torch_cls, native_cls in _FEATUREWISE_TO_NATIVE:
        if torch_type is torch_cls:
            return _clone_as(module, native_cls)
    raise NotImplementedError(
        f"to_native cannot convert {type(module).__name__}: supported are compat convolutions, SparseSequential, "
        "SparseMaxPool, ToDense and torch feature-wise modules (BatchNorm1d, ReLU, ...); convert custom modules' "
        "state dicts with state_dict_to_native"
    )


_NATIVE_TO_TORCH = [(native, torch_cls) for torch_cls, native in _FEATUREWISE_TO_NATIVE]


def from_native(module: nn.Module, indice_keys: Optional[Mapping[str, str]] = None, _prefix: str = "") -> nn.Module:
    """The equivalent spconv-layout compat module (a new module; weights copied and converted).

    Native convolutions become ``SubMConv3d`` / ``SparseConv3d`` / ``SparseConvTranspose3d`` /
    ``SparseInverseConv3d``; ``torch.nn.Sequential`` becomes ``SparseSequential`` (same child names);
    native feature-wise modules become their torch classes, ``ToDense`` the compat ``ToDense``.
    Native inverse convs find their strided conv by coordinates, compat ones by ``indice_key``: pass
    ``indice_keys`` mapping qualified module names (``""`` for ``module`` itself) to keys, giving
    each inverse conv and the strided conv it undoes the same key. Not convertible
    (``NotImplementedError``): even-kernel submanifold convs, dilated transposed convs, kernel-1
    convs with padding and kernel-1 inverse convs (spconv has none of them), and native pooling
    (its max pool treats empty sites as ``-inf``, spconv's as 0), except the ``Sequential(SparseMaxPool3d,
    ReLU)`` that :func:`to_native` makes of spconv's max pool, which converts back.
    """
    keys = dict(indice_keys or {})
    children_list = list(module.children()) if isinstance(module, nn.Sequential) else []
    if (
        len(children_list) == 2 and type(children_list[0]) is snn.SparseMaxPool3d and type(children_list[1]) is snn.ReLU
    ):
        # the form to_native gives spconv's max pool: max over the window, then ReLU (outputs start at 0)
        pool = children_list[0]
        return SparseMaxPool3d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, indice_key=keys.get(_prefix))
    if isinstance(module, nn.Sequential):
        children = OrderedDict(
            (name, from_native(child, keys, f"{_prefix}.{name}" if _prefix else name))
            for name, child in module.named_children()
        )
        return SparseSequential(children)
    if isinstance(module, (snn.SubMConv3d, snn.SparseConv3d, snn.SparseConvTranspose3d, snn.SparseInverseConv3d)):
        return _conv_from_native(module, keys.get(_prefix))
    if isinstance(module, snn.ToDense):
        return ToDense()
    for native_cls, torch_cls in _NATIVE_TO_TORCH:
        if type(module) is native_cls:
            return _clone_as(module, torch_cls)
    raise NotImplementedError(
        f"from_native cannot convert {type(module).__name__}: supported are native convolutions, nn.Sequential, "
        "ToDense and feature-wise modules"
    )


def _conv_from_native(module: nn.Module, key: Optional[str]) -> SparseConvolution:
    i, o, k, g = module.in_channels, module.out_channels, tuple(module.kernel_size), module.groups
    bias = module.bias is not None
    native_transposed = isinstance(module, (snn.SparseConvTranspose3d, snn.SparseInverseConv3d))
    if isinstance(module, snn.SubMConv3d):
        if any(v % 2 == 0 for v in k):
            raise NotImplementedError(f"SubMConv3d with even kernel_size {k} has no spconv equivalent")
        new = SubMConv3d(i, o, k, dilation=module.dilation, groups=g, bias=bias, indice_key=key)
    elif isinstance(module, snn.SparseInverseConv3d):
        if key is None:
            raise ValueError(
                "from_native needs an indice_key for a SparseInverseConv3d (and the same key for the strided conv it "
                "undoes): pass indice_keys={qualified_name: key}"
            )
        new = SparseInverseConv3d.__new__(SparseInverseConv3d)
        SparseConvolution.__init__(new, 3, i, o, k, groups=g, bias=bias, inverse=True, indice_key=key)
    elif isinstance(module, snn.SparseConvTranspose3d):
        new = SparseConvTranspose3d(
            i, o, k, module.stride, module.padding, module.dilation, g, bias, indice_key=key,
            output_padding=module.output_padding,
        )
    else:
        new = SparseConv3d(i, o, k, module.stride, module.padding, module.dilation, g, bias, indice_key=key)
    new = new.to(device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        core = _core_from_native(module.weight, g, native_transposed)
        new.weight.copy_(_core_to_spconv_reading(core, k, new.conv1x1))
        if bias:
            new.bias.copy_(module.bias)
    new.train(module.training)
    return new


# -- state dicts -----------------------------------------------------------------------------------
def _compat_convs(model: nn.Module) -> Dict[str, SparseConvolution]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SparseConvolution)}


def state_dict_to_native(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Convert a spconv-layout state dict of ``model`` (a compat model: it tells which entries are
    convolution weights and of which kind) to sparseconv's native layout, as :func:`to_native`
    would. Other entries are kept; spconv's ``max_num_voxels_during_training`` buffers are dropped
    (native layers have none)."""
    convs = _compat_convs(model)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for name, value in state_dict.items():
        prefix, _, leaf = name.rpartition(".")
        module = convs.get(prefix)
        if module is not None and leaf == MAX_NUM_VOXELS_BUFFER:
            continue
        if module is not None and leaf == "weight":
            value = spconv_weight_to_native(value, module.transposed or module.inverse, module.groups, module.conv1x1)
        out[name] = value
    return out


def state_dict_from_native(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Convert a native-layout state dict (as produced by ``to_native(model).state_dict()``) to the
    spconv layout ``model`` (a compat model) loads. Missing ``max_num_voxels_during_training``
    buffers are filled from ``model``."""
    convs = _compat_convs(model)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for name, value in state_dict.items():
        prefix, _, leaf = name.rpartition(".")
        module = convs.get(prefix)
        if module is not None and leaf == "weight":
            native_transposed = (module.transposed or module.inverse) and not module.conv1x1
            value = native_weight_to_spconv(value, native_transposed, module.groups, module.conv1x1, module.ndim)
        out[name] = value
    for prefix, module in convs.items():
        buffer = getattr(module, MAX_NUM_VOXELS_BUFFER, None)
        name = f"{prefix}.{MAX_NUM_VOXELS_BUFFER}" if prefix else MAX_NUM_VOXELS_BUFFER
        if buffer is not None and name not in out:
            out[name] = buffer.detach().clone()
    return out


__all__ = [
    "to_native",
    "from_native",
    "state_dict_to_native",
    "state_dict_from_native",
    "spconv_weight_to_native",
    "native_weight_to_spconv",
]
