r"""What one layer of a sparse network costs: output-size and receptive-field formulas, and per-layer
counts of kernel-map pairs, multiply-accumulates (real and dense-equivalent) and receptive-field
growth, for :func:`sparseconv.analysis.summary`.

Formulas (public, tested against the dense ops):

* :func:`conv_output_size`: ``floor((n + 2p - d (k - 1) - 1) / s) + 1`` (``F.conv3d``);
* :func:`conv_transpose_output_size`: ``(n - 1) s - 2p + d (k - 1) + output_padding + 1``;
* :func:`receptive_field`: ``RF_n = RF_{n-1} + (k_n - 1) d_n J_{n-1}`` with ``J_{n-1} = s_1 ... s_{n-1}``
  the product of the earlier strides (``RF_0 = 1``, ``J_0 = 1``), in input voxels per axis.

Per layer (:func:`layer_cost`): ``pairs`` are the kernel-map pairs the core op ran over; real MACs are
``pairs x C_in/G x C_out`` for a convolution (the core's work), dense-equivalent MACs what ``F.conv3d``
(``F.conv_transpose3d``) on the densified grid would do, ``B x prod(output grid) x C_out x C_in/G x K``
(``B x prod(input grid) x C_in x C_out/G x K``). Layers whose work is not one static conv:

* dynamic convs: the conv's MACs plus mixing the experts' kernels, ``B x E x C_out x C_in/G x K``
  (their attention MLPs are ``nn.Linear`` children with rows of their own);
* deformable convs: the corner map's pairs (rebuilt from the layer's offsets, so counting costs one
  more offset prediction): ``sum over offset groups of pairs x (channels of the group) x C_out/G``; dense
  equivalent: ``8 x`` the plain conv's (eight trilinear corners per tap);
* involution: ``pairs x C`` (one multiply-add per pair and channel; the kernel MLP is two ``nn.Linear``
  children); depthwise convs are ``pairs x C``;
* octave convs: their own down- and upsampling (``N_h x C`` each, depthwise); the four path convs are
  :class:`~sparseconv.nn.SubMConv3d` children with rows of their own;
* spatially separable / flattened convs: the chain's three (four) maps, or the factorised kernel's one.

``nn.Linear`` counts ``rows x in x out`` (dense equivalent: the same), dense ``nn.Conv*d`` their usual
count; normalisation, activations, pooling, additions and biases are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from . import nn as snn
from ._validation import triple
from .engine.kmap import KernelMap, KernelMapKey
from .engine.tensor import SparseTensor
from .nn.dynamic import _SparseDynamicConvNd
from .nn.functional import conv_map_key, find_inverse_map
from .nn.functional.deform import _channel_segments, deform_geometry, deform_kernel_map
from .nn.octave import _DOWN
from .nn.separable import _AxisFactorisedConv3d

__all__ = ["conv_output_size", "conv_transpose_output_size", "receptive_field", "LayerCost", "layer_cost",
           "conv_kernel_map", "conv_macs"]

Triple = Tuple[int, int, int]


def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1) -> Tuple[int, ...]:
    """Output extent of ``F.conv3d`` per axis: ``(n + 2p - d (k - 1) - 1) // s + 1`` (ints or triples)."""
    n, k, s, p, d = _axes(size, kernel_size, stride, padding, dilation)
    out = tuple((ni + 2 * pi - di * (ki - 1) - 1) // si + 1 for ni, ki, si, pi, di in zip(n, k, s, p, d))
    if any(o < 1 for o in out):
        raise ValueError(f"kernel_size={k} with padding={p}, dilation={d} does not fit size={n}: output {out}")
    return out


def conv_transpose_output_size(size, kernel_size, stride=1, padding=0, output_padding=0, dilation=1) -> Tuple[int, ...]:
    """Output extent of ``F.conv_transpose3d`` per axis: ``(n - 1) s - 2p + d (k - 1) + output_padding + 1``."""
    n, k, s, p, d = _axes(size, kernel_size, stride, padding, dilation)
    op = triple(output_padding, "output_padding", 0)
    for o, si, di in zip(op, s, d):
        if o >= max(si, di):
            raise ValueError(f"output_padding {op} must be smaller than stride {s} or dilation {d}")
    out = tuple((ni - 1) * si - 2 * pi + di * (ki - 1) + oi + 1 for ni, ki, si, pi, di, oi in zip(n, k, s, p, d, op))
    if any(o < 1 for o in out):
        raise ValueError(f"transposed conv with kernel_size={k}, padding={p} gives an empty output {out}")
    return out


def _axes(size, kernel_size, stride, padding, dilation):
    return (triple(size, "size", 1), triple(kernel_size, "kernel_size", 1), triple(stride, "stride", 1),
            triple(padding, "padding", 0), triple(dilation, "dilation", 1))


def receptive_field(layers: Sequence[Tuple]) -> List[Tuple[Triple, Triple]]:
    """``(receptive field, jump)`` per axis after each layer of a chain of convs / poolings.

    ``layers``: ``(kernel_size, stride, dilation)`` per layer (ints or triples).
    ``RF_n = RF_{n-1} + (k_n - 1) d_n J_{n-1}``, ``J_n = J_{n-1} s_n`` (``RF_0 = J_0 = 1``): the
    growth of a layer is scaled by the product of *all* earlier strides, not only the last one.
    """
    rf, jump = (1, 1, 1), (1, 1, 1)
    out = []
    for kernel_size, stride, dilation in layers:
        rf, jump = grow(rf, jump, kernel_size, stride, dilation)
        out.append((rf, jump))
    return out


def grow(rf, jump, kernel_size, stride=1, dilation=1, transposed: bool = False):
    """One step of :func:`receptive_field`; a transposed conv divides the jump by its stride first
    (its taps are spaced at the finer output grid)."""
    k, s, d = triple(kernel_size, "kernel_size", 1), triple(stride, "stride", 1), triple(dilation, "dilation", 1)
    if transposed:
        jump = tuple(j / si for j, si in zip(jump, s))
        return tuple(r + (ki - 1) * di * j for r, ki, di, j in zip(rf, k, d, jump)), jump
    return (tuple(r + (ki - 1) * di * j for r, ki, di, j in zip(rf, k, d, jump)),
            tuple(j * si for j, si in zip(jump, s)))


@dataclass
class LayerCost:
    """One call's cost: kernel-map pairs (None for layers without a map), MACs, dense-equivalent MACs,
    and the receptive-field step ``(kernel_size, stride, dilation, transposed)`` (None: no growth)."""

    pairs: Optional[int] = None
    macs: int = 0
    dense_macs: int = 0
    growth: Optional[Tuple] = None


# -- plain convolutions -----------------------------------------------------------------------
_NATIVE_CONVS = (snn.SubMConv3d, snn.SparseConv3d, snn.SparseConvTranspose3d, snn.SparseInverseConv3d)


def _conv_key(module: nn.Module) -> KernelMapKey:
    if isinstance(module, snn.SubMConv3d):
        return KernelMapKey("submanifold", module.kernel_size, dilation=module.dilation)
    if isinstance(module, snn.SparseConvTranspose3d):
        return KernelMapKey("transposed", module.kernel_size, module.stride, module.padding, module.dilation,
                            module.output_padding)
    # SparseConv3d and SparseInverseConv3d (whose map is the transposed strided one)
    return KernelMapKey("conv", module.kernel_size, module.stride, module.padding, module.dilation)


def conv_kernel_map(module: nn.Module, input: SparseTensor, target: Optional[SparseTensor] = None) -> KernelMap:
    """The kernel map a :mod:`sparseconv.nn` convolution uses on ``input`` (as its forward looks it up).
    After the forward ran the map is cached on the input's coordinate set, so this builds nothing."""
    key = _conv_key(module)
    if isinstance(module, snn.SparseInverseConv3d):
        return find_inverse_map(input, key, target)
    return input.coordinate_set.kernel_map(key)


def conv_macs(module: nn.Module, kmap: KernelMap) -> int:
    """``pairs x C_in / groups x C_out`` for a sparse convolution over ``kmap``."""
    return kmap.num_pairs * (module.in_channels // module.groups) * module.out_channels


def _dense_conv_macs(batch: int, out_grid, c_in: int, c_out: int, groups: int, kernel_size) -> int:
    return batch * math.prod(out_grid) * c_out * (c_in // groups) * math.prod(kernel_size)


def _map_cost(kmap: KernelMap, c_in: int, c_out: int, groups: int, kernel_size, transposed: bool = False) -> LayerCost:
    batch = kmap.output.batch_size
    grid = kmap.input.spatial_shape if transposed else kmap.output.spatial_shape
    return LayerCost(kmap.num_pairs, kmap.num_pairs * (c_in // groups) * c_out,
                     _dense_conv_macs(batch, grid, c_in, c_out, groups, kernel_size))


def _native_conv(m, x: SparseTensor, args, kwargs, output) -> LayerCost:
    target = kwargs.get("target", args[1] if len(args) > 1 else None)
    kmap = conv_kernel_map(m, x, target)
    if isinstance(output, SparseTensor) and kmap.output is not output.coordinate_set:
        raise RuntimeError(f"{type(m).__name__}: could not identify the kernel map it used")
    transposed = isinstance(m, (snn.SparseConvTranspose3d, snn.SparseInverseConv3d))
    cost = _map_cost(kmap, m.in_channels, m.out_channels, m.groups, m.kernel_size, transposed)
    cost.growth = (m.kernel_size, m.stride, m.dilation, transposed)
    return cost


def _keyed_conv(m, x: SparseTensor, submanifold: bool) -> Tuple[KernelMap, LayerCost]:
    kmap = x.coordinate_set.kernel_map(conv_map_key(m.kernel_size, m.stride, m.padding, m.dilation, submanifold))
    cost = _map_cost(kmap, m.in_channels, m.out_channels, m.groups, m.kernel_size)
    cost.growth = (m.kernel_size, m.stride, m.dilation, False)
    return kmap, cost


def _dynamic(m, x: SparseTensor, args, kwargs, output) -> LayerCost:
    _, cost = _keyed_conv(m, x, m.submanifold)
    mixing = x.batch_size * m.num_experts * m.weight[0].numel()
    cost.macs += mixing
    cost.dense_macs += mixing
    return cost


def _deform(m, x: SparseTensor, args, kwargs, output) -> LayerCost:
    key, out_set = deform_geometry(x, m.kernel_size, m.stride, m.padding, m.dilation, m.submanifold)
    with torch.no_grad():  # the predictor's forward() without its hooks: its own row already counts it
        pred = m.offset_conv.forward(x).feats
    split = m.offset_groups * m.kernel_volume * 3
    offsets = pred[:, :split].reshape(len(out_set), m.offset_groups, m.kernel_volume, 3)
    masks = torch.sigmoid(pred[:, split:]).reshape(len(out_set), m.offset_groups, m.kernel_volume) \
        if m.modulated else None
    pairs = [deform_kernel_map(x.coordinate_set, out_set, key, offsets[:, g], None if masks is None else masks[:, g],
                               keep_zero_weights=False)[0].num_pairs for g in range(m.offset_groups)]
    c_out_g = m.out_channels // m.groups
    macs = sum(pairs[g] * (hi - lo) * c_out_g
               for g, lo, hi, _, _ in _channel_segments(m.in_channels, m.out_channels, m.groups, m.offset_groups))
    dense = 8 * _dense_conv_macs(x.batch_size, out_set.spatial_shape, m.in_channels, m.out_channels, m.groups,
                                 m.kernel_size)
    return LayerCost(sum(pairs), macs, dense, (m.kernel_size, m.stride, m.dilation, False))


def _cdc(m, x: SparseTensor, args, kwargs, output) -> LayerCost:
    return _keyed_conv(m, x, m.submanifold)[1]


def _axis_factorised(m, x: SparseTensor, args, kwargs, output) -> LayerCost:
    if m.factorised:
        steps = [(m.kernel(), 1)]
    else:
        steps = [(w.detach(), g) for w, g in m.steps()]
    total = LayerCost(0, 0, 0, (m.kernel_size, 1, m.dilation, False))
    for weight, groups in steps:
        kernel = tuple(weight.shape[2:])
        kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", kernel, dilation=m.dilation))
        step = _map_cost(kmap, weight.shape[1] * groups, weight.shape[0], groups, kernel)
        total.pairs += step.pairs
        total.macs += step.macs
        total.dense_macs += step.dense_macs
    return total


def _involution(m, x: SparseTensor, args, kwargs, output) -> LayerCost:
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", m.kernel_size, dilation=m.dilation))
    dense = x.batch_size * math.prod(x.spatial_shape) * m.in_channels * m.kernel_volume
    return LayerCost(kmap.num_pairs, kmap.num_pairs * m.in_channels, dense, (m.kernel_size, 1, m.dilation, False))


def _octave(m, x, args, kwargs, output) -> LayerCost:
    fine = x if isinstance(x, SparseTensor) else x[0]
    kmap = fine.coordinate_set.kernel_map(_DOWN)
    coarse_cells = fine.batch_size * math.prod(kmap.output.spatial_shape) * 8
    channels = (m.high_in if m.low_out else 0) + (m.high_out if m.conv_lh is not None else 0)
    return LayerCost(kmap.num_pairs * (bool(m.low_out) + (m.conv_lh is not None)), kmap.num_pairs * channels,
                     coarse_cells * channels, (m.kernel_size, 1, m.dilation, False))


def _compat_conv(m, x, args, kwargs, output) -> Optional[LayerCost]:
    """spconv-compatible convs: the cached map from the input's sites to the output's with this
    layer's kernel size (and dilation)."""
    st = x._sparse_tensor()
    out_set = output._coordinate_set()
    kernel, dilation = tuple(m.kernel_size), tuple(m.dilation)
    if len(kernel) != 3:
        return None
    candidates = [km for km in st.coordinate_set.cached_kernel_maps().values()
                  if km.output is out_set and km.key.kernel_size == kernel
                  and (km.key.kind == "submanifold" or km.key.dilation == dilation)]
    if m.inverse:
        candidates = [km.transpose() for km in out_set.cached_kernel_maps().values()
                      if km.output is st.coordinate_set and km.key.kernel_size == kernel]
    if len(candidates) != 1:
        return None
    kmap = candidates[0]
    cost = _map_cost(kmap, m.in_channels, m.out_channels, m.groups, kernel, m.transposed or m.inverse)
    cost.growth = (kernel, tuple(m.stride), dilation, m.transposed or m.inverse)
    return cost


def _linear(m, x, args, kwargs, output) -> LayerCost:
    out = output.feats if isinstance(output, SparseTensor) else output
    macs = out.numel() * m.in_features if isinstance(out, torch.Tensor) else 0
    return LayerCost(None, macs, macs)


_DENSE_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DENSE_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _dense_conv(m, x, args, kwargs, output) -> Optional[LayerCost]:
    if isinstance(m, _DENSE_CONVS) and isinstance(output, torch.Tensor):
        macs = output.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    elif isinstance(m, _DENSE_TRANSPOSED) and isinstance(x, torch.Tensor):
        macs = x.numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)
    else:
        return None
    return LayerCost(None, macs, macs)


def _pool(m, x: SparseTensor, args, kwargs, output) -> LayerCost:
    return LayerCost(growth=(m.kernel_size, m.stride, getattr(m, "dilation", 1), False))


def _counters():
    from .compat._spconv_conv import SparseConvolution  # the compat layer imports sparseconv.nn, not this

    return [
        (_NATIVE_CONVS, _native_conv),
        (_SparseDynamicConvNd, _dynamic),
        (snn.SparseDeformConv3d, _deform),
        (snn.CentralDifferenceConv3d, _cdc),
        (_AxisFactorisedConv3d, _axis_factorised),
        (snn.Involution3d, _involution),
        (snn.OctaveConv3d, _octave),
        (SparseConvolution, _compat_conv),
        (nn.Linear, _linear),
        (_DENSE_CONVS + _DENSE_TRANSPOSED, _dense_conv),
        ((snn.SparseMaxPool3d, snn.SparseAvgPool3d), _pool),
    ]


def counted(module: nn.Module) -> bool:
    """Whether :func:`layer_cost` has a rule for ``module`` (such layers get a row even with children)."""
    return any(isinstance(module, types) for types, _ in _counters())


def layer_cost(module: nn.Module, args: tuple, kwargs: dict, output) -> LayerCost:
    """The cost of one call ``output = module(*args, **kwargs)`` (module docstring); zeros for layers
    without a rule (normalisation, activations, containers)."""
    x = args[0] if args else None
    for types, rule in _counters():
        if isinstance(module, types):
            cost = rule(module, x, args, kwargs, output)
            return cost if cost is not None else LayerCost()
    return LayerCost()
