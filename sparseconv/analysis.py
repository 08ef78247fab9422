r"""Model analysis: parameters, exact MACs and per-layer time of one forward on a real input.

:func:`summary` runs the model once with forward hooks on every leaf module and records,
per module: its output (active sites and channels, or a dense shape), its parameters, its
multiply-accumulates and its wall time.

MACs are exact for the input given, because a sparse convolution's work is set by its
kernel map, not by its kernel volume: a conv with map pairs ``P = sum_k |pairs_k|`` over all
kernel offsets ``k`` (the identity offset of a submanifold map included) does

.. math::
    \mathrm{MACs} = P \cdot \frac{C_\text{in}}{G} \cdot C_\text{out}

(``G`` = groups). The map is read back from the input's coordinate set after the layer
ran (it is cached there, so nothing is rebuilt). Linear layers count ``rows x in x out``,
dense ``nn.Conv*d`` layers ``output elements x C_in / G x kernel volume``. Normalisation,
activations, pooling, additions and bias terms are not counted (the usual convention).

By default the forward runs in eval mode under ``torch.no_grad()`` on a copy of the input
with a *fresh* coordinate set, so the measured time includes building every kernel map
(the cost of a forward on a new scan) and the input's own map cache is left untouched.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from . import nn as snn
from .engine.coordinates import CoordinateSet
from .nn.functional import find_inverse_map
from .engine.kmap import KernelMap, KernelMapKey
from .engine.tensor import SparseTensor

__all__ = ["LayerSummary", "Summary", "summary", "summary_table", "conv_kernel_map", "conv_macs"]


@dataclass
class LayerSummary:
    """One leaf module's share of a forward.

    Attributes:
        name: qualified module name (``""`` for a model that is itself a leaf).
        type: class name.
        calls: times it ran in the forward (values below are summed over calls, the output
            is the last call's).
        output_sites: active sites of a SparseTensor output, else ``None``.
        output_channels: channels of the output (dim 1 of a dense ``[B, C, ...]`` output).
        output_shape: shape of a dense tensor output, else ``None``.
        params: parameters owned by the module itself.
        macs: multiply-accumulates (see the module docstring).
        kernel_pairs: kernel-map pairs of a sparse conv (over all offsets), else ``None``.
        time_s: wall time of its forward calls, seconds.
    """

    name: str
    type: str
    calls: int = 0
    output_sites: Optional[int] = None
    output_channels: Optional[int] = None
    output_shape: Optional[Tuple[int, ...]] = None
    params: int = 0
    macs: int = 0
    kernel_pairs: Optional[int] = None
    time_s: float = 0.0

    @property
    def output(self) -> str:
        if self.output_sites is not None:
            return f"{self.output_sites:,} x {self.output_channels}"
        if self.output_shape is not None:
            return "[" + ", ".join(str(s) for s in self.output_shape) + "]"
        return "-"


@dataclass
class Summary:
    """Result of :func:`summary`; ``str()`` renders a table, :meth:`to_markdown` a Markdown one.

    Attributes:
        model: class name of the model.
        layers: one :class:`LayerSummary` per leaf module that ran, in order of first call.
        total_params, trainable_params: parameters of the whole model (shared ones once).
        total_macs: sum of the layers' MACs.
        forward_time_s: wall time of the whole forward (hooks included; they are cheap).
        input_sites, input_channels, batch_size: the example input (first SparseTensor argument).
        kernel_maps_built: kernel maps built during the forward, over all coordinate sets seen.
    """

    model: str
    layers: List[LayerSummary] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    forward_time_s: float = 0.0
    input_sites: Optional[int] = None
    input_channels: Optional[int] = None
    batch_size: Optional[int] = None
    kernel_maps_built: int = 0

    def totals(self) -> Dict[str, Any]:
        """The headline numbers as a dict."""
        return {
            "model": self.model,
            "params": self.total_params,
            "trainable_params": self.trainable_params,
            "macs": self.total_macs,
            "forward_time_s": self.forward_time_s,
            "input_sites": self.input_sites,
            "kernel_maps_built": self.kernel_maps_built,
        }

    def _rows(self) -> List[Tuple[str, ...]]:
        rows = []
        for layer in self.layers:
            name = layer.name or "(model)"
            if layer.calls > 1:
                name += f" (x{layer.calls})"
            rows.append((
                name, layer.type, layer.output, f"{layer.params:,}", format_count(layer.macs) if layer.macs else "-",
                f"{1000 * layer.time_s:.1f}",
            ))
        return rows

    def _footer(self) -> List[str]:
        inp = ""
        if self.input_sites is not None:
            inp = f"input: {self.input_sites:,} sites x {self.input_channels} channels, batch {self.batch_size}; "
        return [
            f"{self.model}: {inp}params {self.total_params:,} ({self.trainable_params:,} trainable); "
            f"MACs {format_count(self.total_macs)} ({self.total_macs:,}); forward {1000 * self.forward_time_s:.1f} ms; "
            f"kernel maps built {self.kernel_maps_built}",
        ]

    _HEADER = ("Layer", "Type", "Output (sites x ch)", "Params", "MACs", "Time (ms)")

    def __str__(self) -> str:
        rows = [self._HEADER] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        right = (False, False, True, True, True, True)

        def fmt(r):
            return "  ".join(c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(r, widths, right)).rstrip()

        rule = "-" * len(fmt(rows[0]))
        lines = [fmt(rows[0]), rule] + [fmt(r) for r in rows[1:]] + [rule] + self._footer()
        return "\n".join(lines)

    def to_markdown(self, layers: bool = True) -> str:
        """A Markdown table of the layers (``layers=False``: the totals only) and a totals line."""
        lines = []
        if layers:
            lines.append("| " + " | ".join(self._HEADER) + " |")
            lines.append("|" + "|".join(["---"] * 2 + ["---:"] * 4) + "|")
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self._rows()]
            lines.append("")
        lines += self._footer()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Summary(model={self.model!r}, layers={len(self.layers)}, params={self.total_params}, "
                f"macs={self.total_macs}, forward_time_s={self.forward_time_s:.4f})")


def format_count(n: float) -> str:
    """``1234567 -> '1.23 M'`` (K, M, G, T)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


# -- MAC counting ---------------------------------------------------------------------------
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

    After the forward ran the map is cached on the input's coordinate set, so this builds nothing.
    """
    key = _conv_key(module)
    if isinstance(module, snn.SparseInverseConv3d):
        return find_inverse_map(input, key, target)
    return input.coordinate_set.kernel_map(key)


def conv_macs(module: nn.Module, kmap: KernelMap) -> int:
    """``pairs x C_in / groups x C_out`` for a sparse convolution over ``kmap``."""
    return kmap.num_pairs * (module.in_channels // module.groups) * module.out_channels


_SPARSE_CONVS = (snn.SubMConv3d, snn.SparseConv3d, snn.SparseConvTranspose3d, snn.SparseInverseConv3d)
_DENSE_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DENSE_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _first_sparse(values) -> Optional[SparseTensor]:
    for v in values:
        if isinstance(v, SparseTensor):
            return v
    return None


def _layer_macs(module: nn.Module, args: tuple, kwargs: dict, output) -> Tuple[int, Optional[int]]:
    if isinstance(module, _SPARSE_CONVS):
        x = args[0]
        target = kwargs.get("target", args[1] if len(args) > 1 else None)
        kmap = conv_kernel_map(module, x, target)
        if isinstance(output, SparseTensor) and kmap.output is not output.coordinate_set:
            raise RuntimeError(f"{type(module).__name__}: could not identify the kernel map it used")
        return conv_macs(module, kmap), kmap.num_pairs
    if isinstance(module, nn.Linear):
        out = output.feats if isinstance(output, SparseTensor) else output
        if not isinstance(out, torch.Tensor):
            return 0, None
        return out.numel() * module.in_features, None
    if isinstance(module, _DENSE_CONVS) and isinstance(output, torch.Tensor):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size), None
    if isinstance(module, _DENSE_TRANSPOSED) and isinstance(args[0], torch.Tensor):
        k = math.prod(module.kernel_size)
        return args[0].numel() * (module.out_channels // module.groups) * k, None
    return 0, None


def _fresh_copy(x):
    if isinstance(x, SparseTensor):
        cs = x.coordinate_set
        return SparseTensor.from_coordinate_set(
            x.feats, CoordinateSet(cs.coords, cs.spatial_shape, cs.batch_size, cs.voxel_size, cs.origin)
        )
    if isinstance(x, (tuple, list)):
        return type(x)(_fresh_copy(v) for v in x)
    return x


def _sync(x) -> None:
    if isinstance(x, SparseTensor):
        x = x.feats
    if isinstance(x, torch.Tensor) and x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def summary(
    model: nn.Module,
    example_input,
    *,
    train: bool = False,
    no_grad: bool = True,
    fresh_maps: bool = True,
) -> Summary:
    """Run ``model(example_input)`` once and account for every leaf module.

    Args:
        model: any ``nn.Module``; leaf modules (those without children) get a row each.
        example_input: a SparseTensor, or a tuple of positional arguments.
        train: run in training mode (BatchNorm then updates its running statistics);
            default eval. The model's modes are restored afterwards.
        no_grad: run under ``torch.no_grad()`` (default).
        fresh_maps: give SparseTensor arguments a fresh coordinate set, so kernel maps are
            built (and timed) inside the forward and the caller's map cache is untouched.

    Returns:
        :class:`Summary`; ``print(summary(...))`` shows the table.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if fresh_maps:
        args = _fresh_copy(args)
    first = _first_sparse(args)

    rows: Dict[int, LayerSummary] = {}
    order: List[LayerSummary] = []
    starts: Dict[int, List[float]] = {}
    coordinate_sets: Dict[int, CoordinateSet] = {}
    builds_before: Dict[int, int] = {}

    def note_sets(values):
        for v in values:
            if isinstance(v, SparseTensor):
                cs = v.coordinate_set
                if id(cs) not in coordinate_sets:
                    coordinate_sets[id(cs)] = cs
                    builds_before[id(cs)] = cs.kernel_map_builds

    def pre_hook(module, a, kw):
        note_sets(a)
        note_sets(kw.values())
        _sync(_first_sparse(a) if a else None)
        starts.setdefault(id(module), []).append(time.perf_counter())

    names = {id(m): n for n, m in model.named_modules()}

    def post_hook(module, a, kw, output):
        _sync(output)
        elapsed = time.perf_counter() - starts[id(module)].pop()
        row = rows.get(id(module))
        if row is None:
            row = LayerSummary(names.get(id(module), ""), type(module).__name__,
                               params=sum(p.numel() for p in module.parameters(recurse=False)))
            rows[id(module)] = row
            order.append(row)
        row.calls += 1
        row.time_s += elapsed
        macs, pairs = _layer_macs(module, a, kw, output)
        row.macs += macs
        if pairs is not None:
            row.kernel_pairs = (row.kernel_pairs or 0) + pairs
        if isinstance(output, SparseTensor):
            note_sets((output,))
            row.output_sites, row.output_channels, row.output_shape = len(output), output.num_channels, None
        elif isinstance(output, torch.Tensor):
            row.output_sites = None
            row.output_shape = tuple(output.shape)
            row.output_channels = int(output.shape[1]) if output.dim() > 1 else None

    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for m in model.modules():
            if next(m.children(), None) is None:
                handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
                handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
        model.train(train)
        with torch.set_grad_enabled(not no_grad):
            note_sets(args)
            _sync(first)
            t0 = time.perf_counter()
            out = model(*args)
            _sync(out if isinstance(out, (SparseTensor, torch.Tensor)) else None)
            total_time = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode

    params = list({id(p): p for p in model.parameters()}.values())
    result = Summary(
        model=type(model).__name__,
        layers=order,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_macs=sum(r.macs for r in order),
        forward_time_s=total_time,
        kernel_maps_built=sum(cs.kernel_map_builds - builds_before[k] for k, cs in coordinate_sets.items()),
    )
    if first is not None:
        result.input_sites, result.input_channels, result.batch_size = len(first), first.num_channels, first.batch_size
    return result


def summary_table(summaries: Mapping[str, Summary]) -> str:
    """A Markdown table comparing several summaries: input, params, MACs, forward time."""
    lines = [
        "| model | input sites | params | MACs | forward (ms) | kernel maps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, s in summaries.items():
        sites = f"{s.input_sites:,}" if s.input_sites is not None else "-"
        lines.append(
            f"| {label} | {sites} | {s.total_params / 1e6:.2f} M | {format_count(s.total_macs)} | "
            f"{1000 * s.forward_time_s:.0f} | {s.kernel_maps_built} |"
        )
    return "\n".join(lines)
