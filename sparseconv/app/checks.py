"""The library's self-check: every spatial op against its dense PyTorch twin, as a table.

:func:`run_checks` builds a grid of module configurations per op (kernel size, stride,
padding, dilation, groups; float64), runs :func:`sparseconv.testing.check_dense_equivalence`
on seeded random sparse inputs (batch 2, one batch entry empty in every other case) and
gathers, per op, how many configurations were tried, the largest absolute error over the
forward outputs and every gradient, and the failures. ``sparseconv check`` prints it.

``quick=True`` tries a handful of configurations per op (a couple of seconds);
the full grid is a pairwise cover of kernel x stride x padding x dilation x groups.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import torch

from .. import nn as snn
from ..testing import check_dense_equivalence, random_sparse_tensor

__all__ = ["CheckResult", "run_checks", "format_table", "OPS"]

#: The ops on the kernel x stride x padding x dilation x groups grid.
GRID_OPS = ("SparseConv3d", "SubMConv3d", "SparseConvTranspose3d", "SparseInverseConv3d", "SparseMaxPool3d",
            "SparseAvgPool3d")
#: The deformable, dynamic and zoo ops, each over its own list of configurations (:func:`_variant_cases`).
VARIANT_OPS = ("SparseDeformConv3d", "SubMDeformConv3d", "SparseDynamicConv3d", "SparseCondConv3d", "SparseODConv3d",
               "DepthwiseSeparableConv3d", "SpatiallySeparableConv3d", "FlattenedConv3d", "AsymmetricConv3d",
               "RepVGGBlock3d", "CentralDifferenceConv3d", "CoordConv3d", "Involution3d", "OctaveConv3d")
#: The ops :func:`run_checks` covers, in table order.
OPS = GRID_OPS + VARIANT_OPS


@dataclass
class CheckResult:
    """One row of the table: an op over its configurations."""

    op: str
    configs: int = 0
    max_abs_error: float = 0.0
    failures: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.configs > 0 and not self.failures


# (kernel, stride, padding, dilation, (cin, cout, groups))
_QUICK = [
    (3, 1, 1, 1, (4, 6, 1)),
    (2, 2, 0, 1, (4, 6, 2)),
    ((3, 2, 1), (1, 2, 3), (1, 1, 0), (1, 2, 1), (4, 8, 4)),
]
_KERNELS = [1, 2, 3, 5, (3, 2, 1)]
_STRIDES = [1, 2, 3, (1, 2, 3)]
_PADDINGS = [0, 1, (2, 0, 1)]
_DILATIONS = [1, 2, (1, 2, 1)]
_GROUPINGS = [(4, 6, 1), (4, 6, 2), (8, 4, 4), (4, 8, 4)]
_SHAPE = (9, 8, 10)


def _full_grid() -> List[tuple]:
    """Every kernel x stride x padding x dilation, the channel grouping cycling through
    plain, grouped and depthwise."""
    combos = itertools.product(_KERNELS, _STRIDES, _PADDINGS, _DILATIONS)
    return [(k, s, p, d, g) for (k, s, p, d), g in zip(combos, itertools.cycle(_GROUPINGS))]


def _triple(v) -> Tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


def _fits(shape, kernel, padding, dilation) -> bool:
    return all(n + 2 * p - d * (k - 1) - 1 >= 0 for n, k, p, d in zip(shape, _triple(kernel), _triple(padding), _triple(dilation)))


def _input(case: int, channels: int, shape=_SHAPE) -> "object":
    return random_sparse_tensor(shape, channels, batch_size=2, density=0.1,
                                empty_batches=(1,) if case % 2 else (), dtype=torch.float64, seed=case)


Case = Tuple[str, Callable[[], Tuple[torch.nn.Module, object, Optional[object]]]]


def _cases(op: str, quick: bool) -> Iterator[Case]:
    seen = set()
    for label, make in _raw_cases(op, quick):
        if label not in seen:  # e.g. SubMConv3d ignores stride and padding
            seen.add(label)
            yield label, make


def _perturbed_deform(layer):
    """A deformable layer whose offset predictor is not zero, so the sampling is fractional."""
    torch.nn.init.normal_(layer.offset_conv.weight, std=0.3)
    return layer


def _octave_net(c: int, alpha: float):
    """Octave layers from one tensor to (H, L) pairs and back: all four paths."""
    return torch.nn.Sequential(snn.OctaveConv3d(c, 6, 3, 0, alpha), snn.OctaveConv3d(6, 6, 3, alpha, alpha),
                               snn.OctaveConv3d(6, 4, 3, alpha, 0))


# op -> [(label, module factory, input channels)]; the quick run takes the first of each.
_VARIANTS = {
    "SparseDeformConv3d": [
        ("k=3 s=2 p=1 v2", lambda: _perturbed_deform(snn.SparseDeformConv3d(4, 6, 3, 2, 1, modulated=True)), 4),
        ("k=3 s=1 p=1 v1 g=2 og=2", lambda: _perturbed_deform(
            snn.SparseDeformConv3d(4, 6, 3, 1, 1, groups=2, offset_groups=2)), 4)],
    "SubMDeformConv3d": [
        ("k=3 v2", lambda: _perturbed_deform(snn.SubMDeformConv3d(4, 6, 3, modulated=True)), 4),
        ("k=(3,1,3) d=2 v1", lambda: _perturbed_deform(snn.SubMDeformConv3d(4, 6, (3, 1, 3), dilation=2)), 4)],
    "SparseDynamicConv3d": [
        ("k=3 E=3 submanifold", lambda: snn.SparseDynamicConv3d(4, 6, 3, 3, submanifold=True), 4),
        ("k=3 s=2 p=1 E=2 sigmoid", lambda: snn.SparseDynamicConv3d(4, 6, 3, 2, 2, 1, mode="sigmoid"), 4)],
    "SparseCondConv3d": [("k=3 E=3 submanifold", lambda: snn.SparseCondConv3d(4, 6, 3, 3, submanifold=True), 4)],
    "SparseODConv3d": [("k=3 E=2 submanifold", lambda: snn.SparseODConv3d(4, 6, 3, 2, submanifold=True), 4),
                       ("k=3 s=2 E=2 g=2", lambda: snn.SparseODConv3d(4, 6, 3, 2, 2, groups=2), 4)],
    "DepthwiseSeparableConv3d": [
        ("k=3 submanifold", lambda: snn.DepthwiseSeparableConv3d(4, 6, 3), 4),
        ("k=3 s=2 p=1", lambda: snn.DepthwiseSeparableConv3d(4, 6, 3, 2, 1, submanifold=False), 4)],
    "SpatiallySeparableConv3d": [
        ("k=3 chain", lambda: snn.SpatiallySeparableConv3d(4, 6, 3), 4),
        ("k=3 factorised mid=3", lambda: snn.SpatiallySeparableConv3d(4, 6, 3, 3, factorised=True), 4)],
    "FlattenedConv3d": [
        ("k=3 chain", lambda: snn.FlattenedConv3d(4, 6, 3), 4),
        ("k=(3,5,3) factorised", lambda: snn.FlattenedConv3d(4, 6, (3, 5, 3), factorised=True), 4)],
    "AsymmetricConv3d": [("k=3 train", lambda: snn.AsymmetricConv3d(4, 6), 4),
                         ("k=3 g=2 eval", lambda: snn.AsymmetricConv3d(4, 6, groups=2).eval(), 4)],
    "RepVGGBlock3d": [("k=3 identity train", lambda: snn.RepVGGBlock3d(4, 4), 4),
                      ("k=3 eval", lambda: snn.RepVGGBlock3d(4, 6).eval(), 4)],
    "CentralDifferenceConv3d": [
        ("k=3 theta=0.7", lambda: snn.CentralDifferenceConv3d(4, 6, 3, theta=0.7), 4),
        ("k=3 cross", lambda: snn.CentralDifferenceConv3d(4, 6, 3, theta=0.5, footprint="cross"), 4),
        ("k=3 diagonal s=2 p=1", lambda: snn.CentralDifferenceConv3d(
            4, 6, 3, 2, 1, footprint="diagonal", submanifold=False), 4)],
    "CoordConv3d": [("k=3", lambda: snn.CoordConv3d(4, 6, 3), 4),
                    ("k=3 s=2 radius", lambda: snn.CoordConv3d(4, 6, 3, 2, 1, with_radius=True, submanifold=False), 4)],
    "Involution3d": [("k=3 G=2", lambda: snn.Involution3d(4, 3, groups=2, reduction=2), 4),
                     ("k=(3,1,3) G=4 d=2", lambda: snn.Involution3d(8, (3, 1, 3), groups=4, dilation=2), 8)],
    "OctaveConv3d": [("k=3 alpha=0.5", lambda: _octave_net(4, 0.5), 4),
                     ("k=3 alpha=0.25", lambda: _octave_net(4, 0.25), 4)],
}


def _variant_cases(op: str, quick: bool) -> Iterator[Case]:
    cases = _VARIANTS[op][:1] if quick else _VARIANTS[op]
    for n, (label, make, channels) in enumerate(cases):
        yield label, (lambda make=make, c=channels, n=n: (make(), _input(n, c), None))


def _raw_cases(op: str, quick: bool) -> Iterator[Case]:
    if op in _VARIANTS:
        yield from _variant_cases(op, quick)
        return
    grid = _QUICK if quick else _full_grid()
    for n, (kernel, stride, padding, dilation, (cin, cout, groups)) in enumerate(grid):
        label = f"k={kernel} s={stride} p={padding} d={dilation} g={groups}"
        if not _fits(_SHAPE, kernel, padding, dilation):
            continue
        if op == "SparseConv3d":
            yield label, (lambda k=kernel, s=stride, p=padding, d=dilation, ci=cin, co=cout, g=groups, c=n:
                          (snn.SparseConv3d(ci, co, k, s, p, d, g), _input(c, ci), None))
        elif op == "SubMConv3d":
            yield f"k={kernel} d={dilation} g={groups}", (
                lambda k=kernel, d=dilation, ci=cin, co=cout, g=groups, c=n:
                (snn.SubMConv3d(ci, co, k, d, g), _input(c, ci), None))
        elif op == "SparseConvTranspose3d":
            out_pad = tuple(max(s_, d_) - 1 for s_, d_ in zip(_triple(stride), _triple(dilation)))
            yield label, (lambda k=kernel, s=stride, p=padding, d=dilation, op_=out_pad, ci=cin, co=cout, g=groups, c=n:
                          (snn.SparseConvTranspose3d(ci, co, k, s, p, op_, d, g),
                           random_sparse_tensor((5, 4, 6), ci, batch_size=2, density=0.15, seed=c), None))
        elif op == "SparseInverseConv3d":
            def make(k=kernel, s=stride, p=padding, d=dilation, ci=cin, co=cout, g=groups, c=n):
                x = _input(c, ci)
                y = snn.SparseConv3d(ci, co, k, s, p, d, g).double()(x).detach()
                return snn.SparseInverseConv3d(co, ci, k, s, p, d, g), y, x
            yield label, make
        elif op == "SparseMaxPool3d":
            if any(2 * pp > kk for pp, kk in zip(_triple(padding), _triple(kernel))):
                continue  # max_pool3d requires padding <= kernel / 2
            yield f"k={kernel} s={stride} p={padding} d={dilation}", (
                lambda k=kernel, s=stride, p=padding, d=dilation, c=n:
                (snn.SparseMaxPool3d(k, s, p, d), _input(c, 3), None))
        elif op == "SparseAvgPool3d":
            if any(2 * pp > kk for pp, kk in zip(_triple(padding), _triple(kernel))):
                continue  # avg_pool3d requires padding <= kernel / 2
            for include in ((True,) if quick else (True, False)):
                yield f"k={kernel} s={stride} p={padding} count_include_pad={include}", (
                    lambda k=kernel, s=stride, p=padding, inc=include, c=n:
                    (snn.SparseAvgPool3d(k, s, p, inc), _input(c, 3), None))
        else:  # pragma: no cover
            raise ValueError(op)


def run_checks(quick: bool = False, ops: Tuple[str, ...] = OPS, seed: int = 0,
               progress: Optional[Callable[[str, str], None]] = None) -> List[CheckResult]:
    """Run the dense-twin checks; one :class:`CheckResult` per op (in :data:`OPS` order).

    A configuration that raises counts as a failure (the exception's message is kept).
    ``progress(op, config)`` is called before each configuration.
    """
    results = []
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")
        row = CheckResult(op)
        t0 = time.perf_counter()
        for i, (label, make) in enumerate(_cases(op, quick)):
            if progress is not None:
                progress(op, label)
            torch.manual_seed(seed + i)
            try:
                module, x, target = make()
                module = module.double()
                report = check_dense_equivalence(module, x, target=target)
            except Exception as exc:  # a crash is a failure of the op, reported in the table
                row.configs += 1
                row.failures.append(f"{label}: raised {type(exc).__name__}: {exc}")
                continue
            row.configs += 1
            err = report.max_abs_error
            row.max_abs_error = max(row.max_abs_error, err if err == err else float("inf"))
            if not report.passed:
                row.failures.append(f"{label}: " + "; ".join(report.failures))
        row.seconds = time.perf_counter() - t0
        results.append(row)
    return results


def format_table(results: List[CheckResult]) -> str:
    """The results as an aligned text table (op, configs, max abs error, time, PASS/FAIL)."""
    head = ("op", "configs", "max abs error", "time", "result")
    rows = [(r.op, str(r.configs), f"{r.max_abs_error:.2e}", f"{r.seconds:.2f} s", "PASS" if r.passed else "FAIL")
            for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    align = ["<", ">", ">", ">", "<"]

    def fmt(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    return "\n".join(lines)
