"""The ``sparseconv demo`` job: scan -> voxels -> sparse U-Net -> per-layer summary -> picture.

:func:`run_demo` simulates a 64-beam street scan (or reads ``input``), voxelizes it, fits a
small sparse U-Net (:class:`DemoUNet`) to the scan's labels for a few optimiser steps (so
the picture shows what the network learned rather than the noise of random weights;
``steps=0`` runs the untrained network), runs one timed forward pass with a forward hook
on every layer (:func:`layer_summary`), and writes a PNG of the scan coloured by the
predicted class.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import nn as snn
from .engine.tensor import SparseTensor
from .engine.voxelize import devoxelize, voxelize

__all__ = ["DemoUNet", "LayerStat", "layer_summary", "format_summary", "DemoResult", "run_demo"]


def _block(cin: int, cout: int, conv: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, snn.BatchNorm(cout), snn.ReLU())


class DemoUNet(nn.Module):
    """A three-level sparse U-Net: submanifold convs at each level, strided convs down,
    inverse convs up (back onto the exact input sites, maps reused) with skip connections."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.stem = _block(in_channels, w1, snn.SubMConv3d(in_channels, w1, 3))
        self.down1 = _block(w1, w2, snn.SparseConv3d(w1, w2, 2, stride=2))
        self.enc1 = _block(w2, w2, snn.SubMConv3d(w2, w2, 3))
        self.down2 = _block(w2, w3, snn.SparseConv3d(w2, w3, 2, stride=2))
        self.enc2 = _block(w3, w3, snn.SubMConv3d(w3, w3, 3))
        self.up2 = snn.SparseInverseConv3d(w3, w2, 2, stride=2)
        self.dec1 = _block(2 * w2, w2, snn.SubMConv3d(2 * w2, w2, 3))
        self.up1 = snn.SparseInverseConv3d(w2, w1, 2, stride=2)
        self.dec0 = _block(2 * w1, w1, snn.SubMConv3d(2 * w1, w1, 3))
        self.head = snn.SubMConv3d(w1, num_classes, 1)

    def forward(self, x: SparseTensor) -> SparseTensor:
        s0 = self.stem(x)
        s1 = self.enc1(self.down1(s0))
        s2 = self.enc2(self.down2(s1))
        u1 = self.up2(s2)
        u1 = self.dec1(u1.replace(torch.cat([u1.feats, s1.feats], 1)))
        u0 = self.up1(u1)
        u0 = self.dec0(u0.replace(torch.cat([u0.feats, s0.feats], 1)))
        return self.head(u0)


@dataclass
class LayerStat:
    """One row of the per-layer summary."""

    name: str
    type: str
    sites: int
    channels: int
    params: int
    ms: float


def layer_summary(model: nn.Module, x, *args) -> Tuple[object, List[LayerStat]]:
    """Run ``model(x, *args)`` once with a forward hook on every leaf module; return the
    output and one :class:`LayerStat` per leaf call, in call order (output sites and
    channels of SparseTensor outputs; wall time between the layer's pre- and post-hook)."""
    stats: List[LayerStat] = []
    handles = []
    starts: Dict[int, float] = {}

    def pre(name):
        def hook(module, inputs):
            starts[id(module)] = time.perf_counter()
        return hook

    def post(name):
        def hook(module, inputs, output):
            ms = 1000 * (time.perf_counter() - starts.pop(id(module), time.perf_counter()))
            if isinstance(output, SparseTensor):
                sites, channels = len(output), output.num_channels
            elif isinstance(output, torch.Tensor):
                sites, channels = (output.shape[0] if output.dim() else 1), (output.shape[-1] if output.dim() > 1 else 1)
            else:
                sites, channels = 0, 0
            params = sum(p.numel() for p in module.parameters(recurse=False))
            stats.append(LayerStat(name, type(module).__name__, int(sites), int(channels), int(params), ms))
        return hook

    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name)))
    try:
        out = model(x, *args)
    finally:
        for h in handles:
            h.remove()
    return out, stats


def format_summary(stats: Sequence[LayerStat]) -> str:
    """The per-layer summary as an aligned table with a total line."""
    head = ("layer", "type", "out sites", "channels", "params", "time ms")
    rows = [(s.name, s.type, f"{s.sites:,}", str(s.channels), f"{s.params:,}", f"{s.ms:.1f}") for s in stats]
    total = ("total", "", "", "", f"{sum(s.params for s in stats):,}", f"{sum(s.ms for s in stats):.1f}")
    widths = [max(len(h), *(len(r[i]) for r in rows + [total])) for i, h in enumerate(head)]
    align = ["<", "<", ">", ">", ">", ">"]

    def fmt(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows), fmt(["-" * w for w in widths]), fmt(total)])


@dataclass
class DemoResult:
    """What :func:`run_demo` did (timings in seconds)."""

    source: str
    num_points: int
    num_voxels: int
    spatial_shape: Tuple[int, int, int]
    timings: Dict[str, float]
    summary: List[LayerStat]
    picture: str
    accuracy: Optional[float] = None
    class_names: Tuple[str, ...] = ()
    losses: List[float] = field(default_factory=list)


def _load_input(path: Optional[str], seed: int):
    """(points, feats, labels or None, class names, class colours, source description)."""
    if path is None:
        from .data.synthetic import generate_lidar_scan

        scan = generate_lidar_scan(seed)
        colors = {i: tuple(int(c) for c in rgb) for i, rgb in enumerate(scan.class_colors)}
        return (scan.points, scan.features(), scan.labels.astype(np.int64), tuple(scan.class_names), colors,
                f"simulated 64-beam street scan (seed {seed})")
    from . import io as sio

    scan = sio.read_scan(path)
    names = ["xyz"] + (["intensity"] if scan.intensity is not None else []) + (["rgb"] if scan.colors is not None else [])
    feats = scan.features(names)
    labels, class_names, colors = None, (), {}
    if scan.labels is not None:
        ids, labels = np.unique(scan.labels, return_inverse=True)
        labels = labels.astype(np.int64)
        lookup = scan.label_names or {}
        class_names = tuple(lookup.get(int(i), str(int(i))) for i in ids)
        colors = {k: tuple(scan.label_colors[int(i)]) for k, i in enumerate(ids) if scan.label_colors and int(i) in scan.label_colors}
    return scan.points, feats, labels, class_names, colors, path


def run_demo(
    output_dir: str = ".",
    *,
    input: Optional[str] = None,
    seed: int = 0,
    voxel_size: float = 0.1,
    steps: int = 20,
    width: int = 16,
    picture_name: str = "sparseconv_demo.png",
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo; see the module docstring. ``log`` receives each progress line."""
    from .render import render_views, save_png, scan_colors

    torch.manual_seed(seed)
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    points, feats_np, labels_np, class_names, class_colors, source = _load_input(input, seed)
    timings["load"] = time.perf_counter() - t0
    log(f"scan: {source}: {len(points):,} points ({timings['load']:.2f} s)")

    t0 = time.perf_counter()
    pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    feats = torch.from_numpy(np.ascontiguousarray(feats_np, dtype=np.float32))
    vox = voxelize(pts, voxel_size, feats=feats)
    st, p2v = vox.tensor, vox.point_to_voxel
    timings["voxelize"] = time.perf_counter() - t0
    log(f"voxelize at {voxel_size:g} m: {len(st):,} voxels, grid {st.spatial_shape}, "
        f"{feats.shape[1]} input channels ({1000 * timings['voxelize']:.0f} ms)")

    num_classes = max(len(class_names), 2) if labels_np is not None else 8
    model = DemoUNet(feats.shape[1], num_classes, width)
    losses: List[float] = []
    if labels_np is not None and steps > 0:
        from .data.datasets import majority_labels

        target = majority_labels(p2v, torch.from_numpy(labels_np), len(st))
        valid = target >= 0
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        t0 = time.perf_counter()
        model.train()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            logits = model(st).feats
            loss = nn.functional.cross_entropy(logits[valid], target[valid])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        timings["fit"] = time.perf_counter() - t0
        log(f"fit: {steps} Adam steps on the scan's own labels, loss {losses[0]:.3f} -> {losses[-1]:.3f} "
            f"({timings['fit']:.2f} s, {1000 * timings['fit'] / steps:.0f} ms/step)")
    elif labels_np is None:
        log("fit: skipped (the scan has no labels); the picture shows the untrained network's classes")

    model.eval()
    with torch.no_grad():
        model(st)  # warm-up: builds and caches the kernel maps, as a real pipeline would have
        t0 = time.perf_counter()
        out, stats = layer_summary(model, st)
        timings["forward"] = time.perf_counter() - t0
    log(f"forward: {1000 * timings['forward']:.0f} ms for {len(st):,} voxels -> {out.num_channels} class scores per voxel")
    log("")
    log(format_summary(stats))
    log("")

    pred = devoxelize(out, p2v).argmax(1).numpy()
    accuracy = None
    if labels_np is not None:
        accuracy = float((pred == labels_np).mean())
        fitted = " (the network was fitted to this scan: not a held-out score)" if losses else ""
        log(f"per-point accuracy against the scan's labels: {100 * accuracy:.1f}%{fitted}")
    names = class_names or tuple(f"class {i}" for i in range(num_classes))
    t0 = time.perf_counter()
    colors, legend = scan_colors(points, "label", labels=pred, label_names=dict(enumerate(names)),
                                 label_colors=class_colors or None)
    legend.title = "predicted class"
    title = "sparseconv demo: prediction" + (f" ({100 * accuracy:.0f}% of points right)" if accuracy is not None else "")
    image = render_views(points, colors, legend=legend, title=title)
    os.makedirs(output_dir, exist_ok=True)
    picture = save_png(os.path.join(output_dir, picture_name), image)
    timings["render"] = time.perf_counter() - t0
    log(f"picture: {picture} ({timings['render']:.2f} s)")
    return DemoResult(source, len(points), len(st), st.spatial_shape, timings, stats, picture, accuracy,
                      tuple(names), losses)
