"""Check a sparse module against its dense PyTorch twin.

The contract of every op in sparseconv: evaluated at the active output sites, the
sparse op equals its dense twin on ``x.dense()``, the active output sites are
exactly those the contract names, and gradients with respect to the input features
and to every parameter equal the dense twin's (the dense output gradient being the
sparse one placed at the active sites, zero elsewhere).

>>> report = check_dense_equivalence(SparseConv3d(4, 8, 3, stride=2).double(), x.to(torch.float64))
>>> assert report.passed, report

:func:`dense_twin` knows the twin of every spatial module in :mod:`sparseconv.nn`;
for your own module pass ``dense_fn`` (and ``expected_sites`` if you want the site
set checked).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import nn as snn
from .engine.tensor import SparseTensor

DenseFn = Callable[[torch.Tensor], torch.Tensor]


def random_sparse_tensor(
    spatial_shape: Sequence[int] = (8, 8, 8),
    channels: int = 4,
    batch_size: int = 2,
    density: float = 0.15,
    empty_batches: Sequence[int] = (),
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> SparseTensor:
    """A seeded random SparseTensor: each site active with probability ``density``
    (batch entries listed in ``empty_batches`` stay empty), standard-normal features."""
    gen = torch.Generator().manual_seed(seed)
    active = torch.rand((batch_size, *spatial_shape), generator=gen) < density
    for b in empty_batches:
        active[b] = False
    coords = active.nonzero()
    feats = torch.randn(coords.shape[0], channels, generator=gen, dtype=dtype)
    return SparseTensor(feats, coords, tuple(spatial_shape), batch_size)


def _occupancy(x: SparseTensor) -> torch.Tensor:
    occ = torch.zeros((x.batch_size, 1, *x.spatial_shape), dtype=torch.float64, device=x.device)
    c = x.coords
    occ[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] = 1.0
    return occ


def _reach(occ: torch.Tensor, kernel_size, stride, padding, dilation, transposed=False, output_padding=0):
    """Sites a kernel reaches from occupied inputs: the dense conv of the occupancy with ones."""
    ones = torch.ones((1, 1, *kernel_size), dtype=occ.dtype, device=occ.device)
    if transposed:
        hit = F.conv_transpose3d(occ, ones, None, stride, padding, output_padding, 1, dilation)
    else:
        hit = F.conv3d(occ, ones, None, stride, padding, dilation)
    return hit[:, 0] > 0.5


def _inverse_output_padding(module, coarse_shape, fine_shape) -> Tuple[int, ...]:
    return tuple(
        n - ((m - 1) * s - 2 * p + d * (k - 1) + 1)
        for n, m, s, p, d, k in zip(
            fine_shape, coarse_shape, module.stride, module.padding, module.dilation, module.kernel_size
        )
    )


def _same_conv3d(d: torch.Tensor, m) -> torch.Tensor:
    """``F.conv3d(padding='same')``, padding explicitly (low side ``d(k-1)//2``, the rest high)
    so even kernels do not trigger PyTorch's warning about an internal padded copy."""
    pads = []
    for k, dil in reversed(list(zip(m.kernel_size, m.dilation))):
        total = dil * (k - 1)
        pads += [total // 2, total - total // 2]
    return F.conv3d(F.pad(d, pads), m.weight, m.bias, 1, 0, m.dilation, m.groups)


def dense_twin(
    module: nn.Module, input: SparseTensor, target: Optional[SparseTensor] = None
) -> Tuple[DenseFn, torch.Tensor]:
    """The dense PyTorch twin of a :mod:`sparseconv.nn` spatial module, and its active sites.

    Returns ``(dense_fn, sites)``: ``dense_fn`` maps a dense ``[B, C, X, Y, Z]`` input to the
    dense output; ``sites`` is a bool ``[B, X', Y', Z']`` mask of the output sites the
    contract says are active. ``target`` is the strided conv's input for an inverse conv.
    """
    m = module
    occ = _occupancy(input)
    if isinstance(m, snn.SubMConv3d):
        return (lambda d: _same_conv3d(d, m)), occ[:, 0] > 0.5
    if isinstance(m, snn.SparseConv3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation)
        return (lambda d: F.conv3d(d, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)), sites
    if isinstance(m, snn.SparseConvTranspose3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation, True, m.output_padding)
        fn = lambda d: F.conv_transpose3d(  # noqa: E731
            d, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation
        )
        return fn, sites
    if isinstance(m, snn.SparseInverseConv3d):
        if target is None:
            raise ValueError("the dense twin of SparseInverseConv3d needs target= (the strided conv's input)")
        out_pad = _inverse_output_padding(m, input.spatial_shape, target.spatial_shape)
        fn = lambda d: F.conv_transpose3d(  # noqa: E731
            d, m.weight, m.bias, m.stride, m.padding, out_pad, m.groups, m.dilation
        )
        return fn, _occupancy(target)[:, 0] > 0.5
    if isinstance(m, snn.SparseMaxPool3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation)
        empty = occ == 0

        def max_twin(d):
            return F.max_pool3d(d.masked_fill(empty.expand_as(d), float("-inf")), m.kernel_size, m.stride, m.padding, m.dilation)

        return max_twin, sites
    if isinstance(m, snn.SparseAvgPool3d):
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, (1, 1, 1))
        return (lambda d: F.avg_pool3d(d, m.kernel_size, m.stride, m.padding, count_include_pad=m.count_include_pad)), sites
    raise TypeError(f"no built-in dense twin for {type(m).__name__}; pass dense_fn=")


@dataclass
class EquivalenceReport:
    """Outcome of :func:`check_dense_equivalence`; ``passed`` is the verdict."""

    module: str
    sites_match: bool
    num_sites: int
    forward_error: float
    gradient_errors: Dict[str, float] = field(default_factory=dict)
    failures: Tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def max_abs_error(self) -> float:
        return max([self.forward_error, *self.gradient_errors.values()])


def _default_rtol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-5


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> Tuple[bool, float]:
    """allclose with ``atol = rtol * max|expected|``: relative error at the scale of the output,
    so values that cancel to nearly zero do not demand more digits than the dtype holds."""
    error = (actual - expected).abs().max().item() if actual.numel() else 0.0
    scale = expected.abs().max().item() if expected.numel() else 0.0
    return bool(torch.allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))), error


def check_dense_equivalence(
    module: nn.Module,
    input: SparseTensor,
    *,
    target: Optional[SparseTensor] = None,
    dense_fn: Optional[DenseFn] = None,
    expected_sites: Optional[torch.Tensor] = None,
    backward: bool = True,
    rtol: Optional[float] = None,
    seed: int = 0,
) -> EquivalenceReport:
    """Run ``module`` sparse and dense on ``input`` and compare, forward and backward.

    Args:
        module: a sparse module (``SparseTensor -> SparseTensor``).
        input: the input; use float64 modules and inputs for proof-grade comparisons.
        target: for :class:`~sparseconv.nn.SparseInverseConv3d`, the strided conv's input.
        dense_fn, expected_sites: override the built-in twin (see :func:`dense_twin`).
        backward: also compare gradients of the input features and of every parameter.
        rtol: relative tolerance at the output's scale; default 1e-9 (float64) or 1e-5.
        seed: seeds the random output gradient.

    Returns:
        An :class:`EquivalenceReport`; ``report.failures`` names each mismatch.
    """
    if dense_fn is None:
        dense_fn, sites = dense_twin(module, input, target)
        expected_sites = sites if expected_sites is None else expected_sites
    rtol = _default_rtol(input.dtype) if rtol is None else rtol
    failures = []
    feats = input.feats.detach().clone().requires_grad_(backward)
    sparse_in = input.replace(feats)
    params = dict(module.named_parameters())
    module.zero_grad(set_to_none=True)
    out = module(sparse_in, target) if target is not None else module(sparse_in)
    c = out.coords
    dense_in = input.dense().detach().clone().requires_grad_(backward)
    dense_out = dense_fn(dense_in)
    if tuple(dense_out.shape[2:]) != tuple(out.spatial_shape):
        failures.append(f"output grid {out.spatial_shape} != dense {tuple(dense_out.shape[2:])}")
        return EquivalenceReport(type(module).__name__, False, len(out), float("inf"), {}, tuple(failures))
    sites_match = True
    if expected_sites is not None:
        got = torch.zeros_like(expected_sites)
        got[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = True
        sites_match = bool(torch.equal(got, expected_sites)) and len(out) == int(expected_sites.sum())
        if not sites_match:
            failures.append(f"active sites differ: sparse {len(out)}, expected {int(expected_sites.sum())}")
    reference = dense_out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]
    ok, forward_error = _close(out.feats, reference, rtol)
    if not ok:
        failures.append(f"forward max abs error {forward_error:.3g}")
    gradient_errors: Dict[str, float] = {}
    if backward:
        gen = torch.Generator().manual_seed(seed)
        grad = torch.randn(out.feats.shape, generator=gen, dtype=out.feats.dtype).to(out.feats.device)
        sparse_grads = torch.autograd.grad(out.feats, [feats, *params.values()], grad, allow_unused=True)
        dense_grad = torch.zeros_like(dense_out)
        dense_grad[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = grad
        dense_grads = torch.autograd.grad(dense_out, [dense_in, *params.values()], dense_grad, allow_unused=True)
        ic = input.coords
        pairs = [("input", sparse_grads[0], dense_grads[0][ic[:, 0], :, ic[:, 1], ic[:, 2], ic[:, 3]])]
        pairs += [(name, s, d) for name, s, d in zip(params, sparse_grads[1:], dense_grads[1:])]
        for name, s, d in pairs:
            s = torch.zeros_like(d) if s is None and d is not None else s
            d = torch.zeros_like(s) if d is None and s is not None else d
            if s is None:
                continue
            ok, err = _close(s, d, rtol)
            gradient_errors[name] = err
            if not ok:
                failures.append(f"gradient of {name}: max abs error {err:.3g}")
    return EquivalenceReport(type(module).__name__, sites_match, len(out), forward_error, gradient_errors, tuple(failures))


def assert_dense_equivalent(module: nn.Module, input: SparseTensor, **kwargs) -> EquivalenceReport:
    """:func:`check_dense_equivalence`, raising ``AssertionError`` listing every failure."""
    report = check_dense_equivalence(module, input, **kwargs)
    if not report.passed:
        raise AssertionError(f"{report.module} disagrees with its dense twin: " + "; ".join(report.failures))
    return report


# -- dense twins of the deformable and dynamic convolutions -----------------------------------


def _dense_geometry(spatial_shape, kernel_size, stride, padding, dilation):
    """``(output grid, low-side padding)`` of a dense conv; ``padding='same'`` needs stride 1."""
    kernel3 = _triple_of(kernel_size)
    stride3, dilation3 = _triple_of(stride), _triple_of(dilation)
    if isinstance(padding, str):
        if padding != "same" or stride3 != (1, 1, 1):
            raise ValueError(f"padding must be 'same' (with stride 1) or ints, got {padding!r} with stride {stride3}")
        low = tuple(d * (k - 1) // 2 for k, d in zip(kernel3, dilation3))
        return tuple(spatial_shape), low
    padding3 = _triple_of(padding)
    out = tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(spatial_shape, kernel3, stride3, padding3, dilation3)
    )
    return out, padding3


def _triple_of(value) -> Tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def dense_deform_conv3d(
    input: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    offset_groups: int = 1,
    masks: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Plain dense 3D deformable convolution (DCN v1, or v2 with ``masks``), loop-free.

    ``y[b, :, o] = bias + sum_n W[:, :, n] m[b, g, n, o] x_b(o s - p + t_n d + dp[b, g, n, o])``
    for input channels of offset group ``g``, where ``x_b(P)`` samples the zero-padded grid
    trilinearly (voxel centres at integer positions) with ``F.grid_sample``.

    Args:
        input: ``[B, C_in, X, Y, Z]``.
        offsets: ``[B, offset_groups * K * 3, X', Y', Z']``, channel ``(g K + n) 3 + axis``
            (axis 0 is X, the first spatial dim), in voxels.
        weight: ``[C_out, C_in / groups, kD, kH, kW]``; ``bias``: ``[C_out]`` or None.
        padding: ints, or ``'same'`` (stride 1, low side ``d (k-1) // 2``), the submanifold form.
        masks: ``[B, offset_groups * K, X', Y', Z']`` or None.

    Returns:
        ``[B, C_out, X', Y', Z']``, with ``X'`` as ``F.conv3d`` (or ``X`` for ``'same'``).
    """
    B, C = input.shape[:2]
    spatial = tuple(input.shape[2:])
    kernel3 = tuple(weight.shape[2:])
    volume = kernel3[0] * kernel3[1] * kernel3[2]
    out_shape, low = _dense_geometry(spatial, kernel3, stride, padding, dilation)
    stride3, dilation3 = _triple_of(stride), _triple_of(dilation)
    G = offset_groups
    dtype, device = input.dtype, input.device
    # undeformed positions base[n, axis, X', Y', Z'] = o s - p + t d
    axes = []
    for a in range(3):
        o = torch.arange(out_shape[a], dtype=dtype, device=device) * stride3[a] - low[a]
        t = torch.arange(kernel3[a], dtype=dtype, device=device) * dilation3[a]
        axes.append((o, t))
    grid_o = torch.stack(torch.meshgrid(*(o for o, _ in axes), indexing="ij"))  # [3, X', Y', Z']
    grid_t = torch.stack(torch.meshgrid(*(t for _, t in axes), indexing="ij")).reshape(3, volume)  # [3, K]
    base = grid_o[None] + grid_t.t()[:, :, None, None, None]  # [K, 3, X', Y', Z']
    positions = base + offsets.view(B, G, volume, 3, *out_shape)  # [B, G, K, 3, X', Y', Z']
    # grid_sample on the grid padded by one zero voxel (so every axis has >= 3 voxels):
    # align_corners=True puts voxel i of an axis of size m at -1 + 2 i / (m - 1).
    padded = F.pad(input, (1, 1, 1, 1, 1, 1)).reshape(B * G, C // G, *(n + 2 for n in spatial))
    norm = torch.stack([2 * (positions[:, :, :, a] + 1) / (spatial[a] + 1) - 1 for a in range(3)], dim=-1)
    # grid_sample's last dim is (W, H, D) = (Z, Y, X); output [B*G, C/G, K, X', Y'*Z']
    grid = norm.flip(-1).reshape(B * G, volume, out_shape[0], out_shape[1] * out_shape[2], 3)
    sampled = F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.view(B, G, C // G, volume, *out_shape)
    if masks is not None:
        sampled = sampled * masks.view(B, G, 1, volume, *out_shape)
    c_out = weight.shape[0]
    cols = sampled.reshape(B, groups, C // groups, volume, -1)
    w = weight.reshape(groups, c_out // groups, C // groups, volume)
    out = torch.einsum("bgcks,gock->bgos", cols, w).reshape(B, c_out, *out_shape)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1)
    return out


def sites_to_dense(values: torch.Tensor, coords: torch.Tensor, batch_size: int, spatial_shape) -> torch.Tensor:
    """Per-site rows ``[N, D]`` placed on a dense ``[B, D, X, Y, Z]`` grid (zero elsewhere)."""
    out = values.new_zeros(batch_size, *spatial_shape, values.shape[1])
    out = out.index_put((coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]), values)
    return out.permute(0, 4, 1, 2, 3)


def deform_dense_twin(module: nn.Module, input: SparseTensor) -> Tuple[DenseFn, torch.Tensor]:
    """Dense twin of a :class:`~sparseconv.nn.SparseDeformConv3d` (offsets predicted from the input):
    the offset conv's dense twin, then :func:`dense_deform_conv3d`. For :func:`check_dense_equivalence`."""
    m = module
    predictor_twin, sites = dense_twin(m.offset_conv, input)
    split = m.offset_groups * m.kernel_volume * 3

    def fn(d: torch.Tensor) -> torch.Tensor:
        pred = predictor_twin(d)
        masks = torch.sigmoid(pred[:, split:]) if m.modulated else None
        padding = "same" if m.submanifold else m.padding
        return dense_deform_conv3d(
            d, pred[:, :split], m.weight, m.bias, m.stride, padding, m.dilation, m.groups, m.offset_groups, masks
        )

    return fn, sites


def dense_per_sample_conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv3d`` of each batch entry with its own kernel: ``weight [B, C_out, C_in/G, kD, kH, kW]``,
    ``bias [B, C_out]``; ``padding='same'`` pads ``d (k-1) // 2`` low and the rest high."""
    outs = []
    for b in range(input.shape[0]):
        x = input[b : b + 1]
        if isinstance(padding, str):
            _dense_geometry(input.shape[2:], weight.shape[3:], stride, padding, dilation)  # validates
            pads = []
            for k, d in reversed(list(zip(weight.shape[3:], _triple_of(dilation)))):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x, pad = F.pad(x, pads), 0
        else:
            pad = padding
        outs.append(F.conv3d(x, weight[b], None if bias is None else bias[b], stride, pad, dilation, groups))
    return torch.cat(outs)


def dense_dynamic_conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    kernel_attention: torch.Tensor,
    spatial_attention: Optional[torch.Tensor] = None,
    in_channel_attention: Optional[torch.Tensor] = None,
    out_channel_attention: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Dense dynamic convolution from given attentions: per-sample ``F.conv3d`` with

        W_b = sum_e pi[b, e] (alpha_s[b] * alpha_c[b] * alpha_f[b] * W_e),   bias_b = sum_e pi[b, e] bias_e

    ``weight [E, C_out, C_in/G, kD, kH, kW]``, ``bias [E, C_out]``, ``kernel_attention [B, E]``,
    ``spatial_attention [B, K]`` (per tap), ``in_channel_attention [B, C_in]``,
    ``out_channel_attention [B, C_out]`` (the last three optional, as in ODConv).
    """
    B = kernel_attention.shape[0]
    E, c_out, cin_g = weight.shape[:3]
    kernel3 = tuple(weight.shape[3:])
    w = weight[None].expand(B, *weight.shape)  # [B, E, C_out, C_in/G, kD, kH, kW]
    if spatial_attention is not None:
        w = w * spatial_attention.view(B, 1, 1, 1, *kernel3)
    if in_channel_attention is not None:
        # output channel o of group j reads input channels j*C_in/G + c
        per_out = in_channel_attention.view(B, groups, 1, cin_g).expand(B, groups, c_out // groups, cin_g)
        w = w * per_out.reshape(B, 1, c_out, cin_g, 1, 1, 1)
    if out_channel_attention is not None:
        w = w * out_channel_attention.view(B, 1, c_out, 1, 1, 1, 1)
    mixed = (kernel_attention.view(B, E, 1, 1, 1, 1, 1) * w).sum(1)
    mixed_bias = None if bias is None else kernel_attention @ bias
    return dense_per_sample_conv3d(input, mixed, mixed_bias, stride, padding, dilation, groups)


def dynamic_dense_twin(module: nn.Module, input: SparseTensor) -> Tuple[DenseFn, torch.Tensor]:
    """Dense twin of a dynamic sparse conv (:class:`~sparseconv.nn.SparseDynamicConv3d`,
    :class:`~sparseconv.nn.SparseCondConv3d`, :class:`~sparseconv.nn.SparseODConv3d`): the mean
    over each sample's active voxels taken on the dense grid (sum / active count), the module's
    own attention head on it, then :func:`dense_dynamic_conv3d`. For :func:`check_dense_equivalence`."""
    m = module
    occ = _occupancy(input)
    counts = occ.sum((1, 2, 3, 4)).clamp(min=1)
    if m.submanifold:
        sites = occ[:, 0] > 0.5
    else:
        sites = _reach(occ, m.kernel_size, m.stride, m.padding, m.dilation)

    def fn(d: torch.Tensor) -> torch.Tensor:
        pooled = d.sum((2, 3, 4)) / counts.to(d.dtype)[:, None]
        att = m.attention(pooled)
        return dense_dynamic_conv3d(
            d, m.weight, m.bias, att.kernel, att.spatial, att.in_channel, att.out_channel,
            m.stride, "same" if m.submanifold else m.padding, m.dilation, m.groups,
        )

    return fn, sites
