r"""Model analysis: per-layer output sites, kernel-map pairs, parameters, MACs (real and
dense-equivalent), FLOPs, feature memory, receptive field and time of one forward on a real input.

:func:`summary` runs the model once with forward hooks and gives a row to every module that does
work of its own: every leaf module, and every module with children that computes besides them
(deformable and dynamic convs, octave and involution layers, ...; :func:`sparseconv.costs.counted`)
or owns parameters directly. Children are rows of their own, so nothing is counted twice: a
``SubMDeformConv3d`` row counts the deformable conv, its ``offset_conv`` row the offset predictor.

MACs are exact for the input given, because a sparse convolution's work is set by its kernel map,
not by its kernel volume: a conv with map pairs ``P = sum_k |pairs_k|`` over all kernel offsets does

.. math::
    \mathrm{MACs} = P \cdot \frac{C_\text{in}}{G} \cdot C_\text{out}

(``G`` = groups); FLOPs are ``2 x MACs``. The map is read back from the input's coordinate set after
the layer ran (it is cached there, so nothing is rebuilt). Dense-equivalent MACs are what
``F.conv3d`` on the densified grid would do. The rules for every layer type, and the output-size and
receptive-field formulas, are in :mod:`sparseconv.costs`. The receptive field (input voxels per axis)
follows each tensor through the layers, ``RF_n = RF_{n-1} + (k_n - 1) d_n J_{n-1}`` with ``J`` the
product of the strides so far; a tensor a layer did not produce (a residual sum) takes the largest
field recorded on its coordinates.

By default the forward runs in eval mode under ``torch.no_grad()`` on a copy of the input
with a *fresh* coordinate set, so the measured time includes building every kernel map
(the cost of a forward on a new scan) and the input's own map cache is left untouched.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .costs import (
    conv_kernel_map, conv_macs, conv_output_size, conv_transpose_output_size, counted, grow, layer_cost,
    receptive_field,
)
from .engine.coordinates import CoordinateSet
from .engine.tensor import SparseTensor

__all__ = ["LayerSummary", "Summary", "summary", "summary_table", "conv_kernel_map", "conv_macs",
           "conv_output_size", "conv_transpose_output_size", "receptive_field", "format_count"]


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
        macs: multiply-accumulates (see the module docstring); ``flops`` is ``2 x macs``.
        dense_macs: what the dense twin on the densified grid would do.
        kernel_pairs: kernel-map pairs of a sparse conv (over all offsets), else ``None``.
        feature_bytes: memory of the output's features (last call).
        receptive_field: input voxels per axis seen by one output site (sparse outputs), else ``None``.
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
    dense_macs: int = 0
    kernel_pairs: Optional[int] = None
    feature_bytes: int = 0
    receptive_field: Optional[Tuple[float, float, float]] = None
    time_s: float = 0.0

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def rf(self) -> str:
        if self.receptive_field is None:
            return "-"
        values = [f"{v:g}" for v in self.receptive_field]
        return values[0] if len(set(values)) == 1 else "x".join(values)

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
        total_macs, total_dense_macs, total_pairs, total_feature_bytes: sums over the layers
            (``total_flops`` = ``2 x total_macs``).
        forward_time_s: wall time of the whole forward (hooks included; they are cheap).
        input_sites, input_channels, batch_size: the example input (first SparseTensor argument).
        kernel_maps_built: kernel maps built during the forward, over all coordinate sets seen.
    """

    model: str
    layers: List[LayerSummary] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    total_dense_macs: int = 0
    total_pairs: int = 0
    total_feature_bytes: int = 0
    forward_time_s: float = 0.0
    input_sites: Optional[int] = None
    input_channels: Optional[int] = None
    batch_size: Optional[int] = None
    kernel_maps_built: int = 0

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def totals(self) -> Dict[str, Any]:
        """The headline numbers as a dict."""
        return {
            "model": self.model,
            "params": self.total_params,
            "trainable_params": self.trainable_params,
            "macs": self.total_macs,
            "flops": self.total_flops,
            "dense_macs": self.total_dense_macs,
            "kernel_pairs": self.total_pairs,
            "feature_bytes": self.total_feature_bytes,
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
                name, layer.type, layer.output, f"{layer.params:,}",
                f"{layer.kernel_pairs:,}" if layer.kernel_pairs is not None else "-",
                format_count(layer.macs) if layer.macs else "-",
                format_count(layer.dense_macs) if layer.dense_macs else "-",
                format_bytes(layer.feature_bytes), layer.rf, f"{1000 * layer.time_s:.1f}",
            ))
        return rows

    def _footer(self) -> List[str]:
        inp = ""
        if self.input_sites is not None:
            inp = f"input: {self.input_sites:,} sites x {self.input_channels} channels, batch {self.batch_size}; "
        return [
            f"{self.model}: {inp}params {self.total_params:,} ({self.trainable_params:,} trainable); "
            f"MACs {format_count(self.total_macs)} ({self.total_macs:,}), FLOPs {format_count(self.total_flops)}, "
            f"dense-equivalent MACs {format_count(self.total_dense_macs)}; kernel-map pairs {self.total_pairs:,}; "
            f"feature memory {format_bytes(self.total_feature_bytes)}; forward {1000 * self.forward_time_s:.1f} ms; "
            f"kernel maps built {self.kernel_maps_built}",
        ]

    _HEADER = ("Layer", "Type", "Output (sites x ch)", "Params", "Pairs", "MACs", "Dense MACs", "Features", "RF",
               "Time (ms)")

    def __str__(self) -> str:
        rows = [self._HEADER] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        right = (False, False) + (True,) * 8

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
            lines.append("|" + "|".join(["---"] * 2 + ["---:"] * 8) + "|")
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self._rows()]
            lines.append("")
        lines += self._footer()
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Summary(model={self.model!r}, layers={len(self.layers)}, params={self.total_params}, "
                f"macs={self.total_macs}, forward_time_s={self.forward_time_s:.4f})")


def format_bytes(n: int) -> str:
    """``1536 -> '1.5 KB'`` (KB, MB, GB; powers of 1024)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_count(n: float) -> str:
    """``1234567 -> '1.23 M'`` (K, M, G, T)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def _first_sparse(values) -> Optional[SparseTensor]:
    for v in values:
        if isinstance(v, SparseTensor):
            return v
    return None


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


def _sparse_parts(value) -> List[Tuple[torch.Tensor, Any]]:
    """``(features, coordinate set)`` of each sparse tensor in ``value`` (a SparseTensor, an
    spconv-compatible tensor, or a tuple of them such as an octave pair)."""
    if isinstance(value, SparseTensor):
        return [(value.feats, value.coordinate_set)]
    if hasattr(value, "_sparse_tensor") and hasattr(value, "features"):  # sparseconv.compat.spconv tensors
        return [(value.features, value._coordinate_set())]
    if isinstance(value, (tuple, list)):
        return [part for v in value for part in _sparse_parts(v)]
    return []


class _FieldTracker:
    """Receptive field and jump of every sparse tensor seen, by the identity of its features (held
    weakly); a tensor never seen takes the largest field recorded on its coordinate set."""

    def __init__(self):
        self._by_feats: Dict[int, Tuple[Any, tuple, tuple]] = {}
        self._by_set: Dict[int, Tuple[tuple, tuple]] = {}

    def get(self, value) -> Tuple[tuple, tuple]:
        best = ((1, 1, 1), (1, 1, 1))
        for feats, cs in _sparse_parts(value)[:1]:
            entry = self._by_feats.get(id(feats))
            if entry is not None and entry[0]() is feats:
                return entry[1], entry[2]
            best = self._by_set.get(id(cs), best)
        return best

    def put(self, value, rf: tuple, jump: tuple) -> None:
        for feats, cs in _sparse_parts(value):
            self._by_feats[id(feats)] = (weakref.ref(feats), rf, jump)
            known = self._by_set.get(id(cs))
            if known is None or max(known[0]) < max(rf):
                self._by_set[id(cs)] = (rf, jump)


def summary(
    model: nn.Module,
    example_input,
    *,
    train: bool = False,
    no_grad: bool = True,
    fresh_maps: bool = True,
) -> Summary:
    """Run ``model(example_input)`` once and account for every layer.

    Args:
        model: any ``nn.Module``; every leaf module, and every module that computes besides its
            children or owns parameters directly, gets a row.
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
    fields = _FieldTracker()

    def note_sets(values):
        for v in values:
            for _, cs in _sparse_parts(v):
                if isinstance(cs, CoordinateSet) and id(cs) not in coordinate_sets:
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
        cost = layer_cost(module, a, kw, output)
        row.macs += cost.macs
        row.dense_macs += cost.dense_macs
        if cost.pairs is not None:
            row.kernel_pairs = (row.kernel_pairs or 0) + cost.pairs
        parts = _sparse_parts(output)
        if parts:
            note_sets((output,))
            rf, jump = fields.get(a[0]) if a else ((1, 1, 1), (1, 1, 1))
            if cost.growth is not None:
                kernel_size, stride, dilation, transposed = cost.growth
                rf, jump = grow(rf, jump, kernel_size, stride, dilation, transposed)
            fields.put(output, rf, jump)
            row.receptive_field = rf
            row.output_sites, row.output_channels, row.output_shape = len(parts[0][0]), parts[0][0].shape[1], None
            row.feature_bytes = sum(f.numel() * f.element_size() for f, _ in parts)
        elif isinstance(output, torch.Tensor):
            row.output_sites = None
            row.output_shape = tuple(output.shape)
            row.output_channels = int(output.shape[1]) if output.dim() > 1 else None
            row.feature_bytes = output.numel() * output.element_size()

    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for m in model.modules():
            own_params = next(m.parameters(recurse=False), None) is not None
            if next(m.children(), None) is None or counted(m) or own_params:
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
        total_dense_macs=sum(r.dense_macs for r in order),
        total_pairs=sum(r.kernel_pairs or 0 for r in order),
        total_feature_bytes=sum(r.feature_bytes for r in order),
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


#: Built-in models :func:`summarize_scan` builds: name -> (factory(in_channels), default voxel size).
BUILTIN_MODELS = ("minkunet14", "minkunet18", "minkunet34", "second_backbone", "centerpoint_backbone",
                  "sparse_resnet14", "sparse_resnet18", "sparse_resnet34")
_DETECTION_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.2)


def summarize_scan(model: str, path, voxel_size=None, num_classes: int = 20, seed: int = 0) -> Summary:
    """:func:`summary` of a built-in model (:data:`BUILTIN_MODELS`, freshly initialised with ``seed``) on
    a scan file, as ``sparseconv summary MODEL SCAN`` prints it.

    Input features are ``(x, y, z, intensity)`` (intensity 0 where the file has none). Voxel size: 5 cm
    for the U-Nets and ResNets, ``(0.1, 0.1, 0.2)`` m on the fixed ``[-51.2, 51.2]^2 x [-5, 3.2]`` m grid
    for the SECOND / CenterPoint backbones (the README's setting); ``voxel_size`` overrides it.
    """
    from . import io as sio
    from . import models
    from .engine.voxelize import voxelize

    if model not in BUILTIN_MODELS:
        raise ValueError(f"unknown model {model!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
    scan = sio.read_scan(path)
    points = torch.from_numpy(scan.points.astype("float32"))
    intensity = scan.attributes.get("intensity")
    intensity = torch.zeros(len(points)) if intensity is None else torch.from_numpy(intensity.astype("float32"))
    feats = torch.cat((points, intensity[:, None]), 1)
    torch.manual_seed(seed)
    if model in ("second_backbone", "centerpoint_backbone"):
        x = models.voxelize_in_range(points, voxel_size or (0.1, 0.1, 0.2), _DETECTION_RANGE, feats)
        net = getattr(models, model)(4)
    else:
        x = voxelize(points, voxel_size or 0.05, feats=feats).tensor
        net = getattr(models, model)(4, num_classes)
    if len(x) == 0:
        raise ValueError(f"{path}: no points inside the grid of {model}")
    return summary(net, x)
