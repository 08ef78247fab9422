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
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .. import nn as snn
from ..engine.tensor import SparseTensor
from ..nn.dynamic import _SparseDynamicConvNd
from .deform_dynamic import deform_dense_twin, dynamic_dense_twin
from .grids import DenseFn
from .plain import plain_dense_twin
from .zoo import zoo_dense_twin

_DYNAMIC = _SparseDynamicConvNd  # every dynamic convolution (DynamicConv, CondConv, ODConv)


def dense_twin(
    module: nn.Module, input: SparseTensor, target: Optional[SparseTensor] = None
) -> Tuple[DenseFn, torch.Tensor]:
    """The dense PyTorch twin of a :mod:`sparseconv.nn` spatial module, and its active sites.

    Returns ``(dense_fn, sites)``: ``dense_fn`` maps a dense ``[B, C, X, Y, Z]`` input to the
    dense output; ``sites`` is a bool ``[B, X', Y', Z']`` mask of the output sites the
    contract says are active. ``target`` is the strided conv's input for an inverse conv.
    Covers the plain convolutions and poolings (:mod:`.plain`), the deformable and dynamic
    convolutions (:mod:`.deform_dynamic`) and the variant zoo (:mod:`.zoo`).
    """
    if isinstance(module, snn.SparseDeformConv3d):
        return deform_dense_twin(module, input)
    if isinstance(module, _DYNAMIC):
        return dynamic_dense_twin(module, input)
    twin = plain_dense_twin(module, input, target)
    if twin is None:
        twin = zoo_dense_twin(module, input)
    if twin is None:
        raise TypeError(f"no built-in dense twin for {type(module).__name__}; pass dense_fn=")
    return twin


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

