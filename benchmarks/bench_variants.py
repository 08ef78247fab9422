"""Every sparse convolution variant next to a SubMConv3d of the same channels, with MACs.

On the simulated LiDAR scan (``generate_lidar_scan(0)``, voxelized at 5 cm) it prints, at 16 and
32 channels (``--quick``: 16), median times of the forward pass (no grad) and of forward + backward
(gradients of the features and of every parameter) for:

* ``SubMConv3d`` k3: the baseline;
* ``SubMDeformConv3d`` k3, v2 (modulated): with the fresh zero-initialised offset predictor
  (integer offsets: zero-weight corners are dropped without grad, so the corner map has the
  plain map's pairs) and with a perturbed predictor (fractional offsets, as after training: 8
  corners per tap); the time includes the offset/mask predictor and the per-call corner map;
* ``SparseDynamicConv3d`` (softmax), ``SparseCondConv3d``, ``SparseODConv3d``: k3, 4 experts,
  submanifold, on the one scan (B = 1) and on a batch of two scans (B = 2, a second seed);
* the zoo: depthwise, depthwise-separable, spatially separable and flattened (chain and
  factorised), ACNet (training form and fused), RepVGG, central difference, CoordConv, involution,
  octave (an (H, L) pair in and out).

``pairs`` is the number of (input, output) pairs of the plain k3 map (deformable: of its corner
map); ``MACs`` come from the kernel maps (:func:`sparseconv.analysis.summary`). Each layer is
timed alternately with a fresh ``SubMConv3d`` of the same size on the same input, so the
``x SubM`` ratios hold on a loaded machine; ``x same-MAC SubM`` does the same against a SubMConv3d
whose channel count makes its MACs about the layer's: the cost against a plain conv of the same MACs. A last table times the core's
depthwise path against the same depthwise conv as grouped GEMMs and as one diagonal GEMM.

Run:  python benchmarks/bench_variants.py            (full scan)
      python benchmarks/bench_variants.py --quick    (32-beam x 1024 scan, 16 channels, few repeats)
      --threads 1                                    (single-threaded: stabler ratios on a shared machine)
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Optional, Sequence

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import sparseconv.nn as snn  # noqa: E402
from sparseconv import SparseTensor  # noqa: E402
from sparseconv.data import generate_lidar_scan  # noqa: E402
from sparseconv.nn.functional.deform import deform_kernel_map  # noqa: E402
from sparseconv.nn.functional.dynamic import split_by_sample  # noqa: E402
from sparseconv.engine.kmap import KernelMapKey  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402
from sparseconv.engine.core import gather_gemm_scatter  # noqa: E402
from sparseconv.analysis import format_count, summary  # noqa: E402


STATISTICS = {"median": statistics.median, "min": min}


def paired_ms(fn, reference, repeats: int, statistic: str = "median"):
    """Median (or fastest, ``statistic="min"``) times of ``fn`` and ``reference`` timed alternately, so
    load on a shared machine hits both alike and their ratio stays meaningful. On a machine whose
    load far exceeds its cores a short call mostly waits for the scheduler; the fastest turn then
    measures the work."""
    fn()
    reference()
    times, ref_times = [], []
    for _ in range(repeats):
        for f, out in ((fn, times), (reference, ref_times)):
            start = time.perf_counter()
            f()
            out.append(time.perf_counter() - start)
    reduce = STATISTICS[statistic]
    return 1000 * reduce(times), 1000 * reduce(ref_times)


def scan(seed: int, quick: bool) -> SparseTensor:
    points = generate_lidar_scan(seed, 32, 1024).points if quick else generate_lidar_scan(seed).points
    st, _ = voxelize(torch.from_numpy(points).float(), 0.05)
    return st


def batch_of(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    shape = tuple(max(p, q) for p, q in zip(a.spatial_shape, b.spatial_shape))
    cb = b.coords.clone()
    cb[:, 0] = 1
    return SparseTensor(torch.cat((a.feats, b.feats)), torch.cat((a.coords, cb)), shape, 2)


def deform_pairs(layer, x: SparseTensor) -> int:
    with torch.no_grad():
        offsets, masks = layer.predict_offsets(x)
        key = KernelMapKey("submanifold", layer.kernel_size, dilation=layer.dilation)
        kmap, _ = deform_kernel_map(
            x.coordinate_set, x.coordinate_set, key, offsets.view(len(x), -1, 3), masks, keep_zero_weights=False
        )
    return kmap.num_pairs


def macs_of(layer, x) -> int:
    """The layer's multiply-adds on ``x`` (every child included), from the kernel maps."""
    return summary(layer, (x,) if isinstance(x, tuple) else x, fresh_maps=False).total_macs


def _total(out):
    return sum(t.feats.sum() for t in out) if isinstance(out, tuple) else out.feats.sum()


def _with_feats(data, channels, grad: bool):
    """``data`` (a SparseTensor or an octave pair) with random features (requiring grad if asked)."""
    if isinstance(data, tuple):
        return tuple(_with_feats(d, c, grad) for d, c in zip(data, channels))
    feats = torch.randn(len(data), channels)
    return data.replace(feats.requires_grad_() if grad else feats)


def octave_pair(st: SparseTensor, channels: int):
    """The (H, L) octave pair an alpha = 1/2 octave network carries on ``st``: H on its sites, L on
    their 2x2x2 downsampling."""
    with torch.no_grad():
        h, low = snn.OctaveConv3d(channels, channels, 3, 0, 0.5)(st.replace(torch.zeros(len(st), channels)))
    return (h, low), (h.num_channels, low.num_channels)


def variant_rows(channels: int, st: SparseTensor, pair: SparseTensor):
    """(label, layer factory, inputs, input channels) for every variant."""
    c = channels

    def perturbed_deform():
        layer = snn.SubMDeformConv3d(c, c, 3, modulated=True, bias=False)
        torch.nn.init.normal_(layer.offset_conv.weight, std=0.5 / c)
        return layer

    def fused_acnet():
        block = snn.AsymmetricConv3d(c, c).eval()
        return block.fuse()

    octave_inputs, octave_channels = octave_pair(st, c)
    both = (st, pair)
    return [
        ("SubMConv3d k3", lambda: snn.SubMConv3d(c, c, 3, bias=False), both, c),
        ("SubMDeformConv3d k3 v2, fresh (integer offsets)",
         lambda: snn.SubMDeformConv3d(c, c, 3, modulated=True, bias=False), (st,), c),
        ("SubMDeformConv3d k3 v2, fractional offsets", perturbed_deform, (st,), c),
        ("SparseDynamicConv3d k3 softmax, 4 experts",
         lambda: snn.SparseDynamicConv3d(c, c, 3, 4, bias=False, submanifold=True), both, c),
        ("SparseCondConv3d k3, 4 experts", lambda: snn.SparseCondConv3d(c, c, 3, 4, bias=False, submanifold=True), both, c),
        ("SparseODConv3d k3, 4 experts", lambda: snn.SparseODConv3d(c, c, 3, 4, bias=False, submanifold=True), both, c),
        ("SubMConv3d k3 depthwise (groups=C)", lambda: snn.SubMConv3d(c, c, 3, groups=c, bias=False), (st,), c),
        ("DepthwiseSeparableConv3d k3", lambda: snn.DepthwiseSeparableConv3d(c, c, 3), (st,), c),
        ("SpatiallySeparableConv3d k3, chain", lambda: snn.SpatiallySeparableConv3d(c, c, 3), (st,), c),
        ("SpatiallySeparableConv3d k3, factorised",
         lambda: snn.SpatiallySeparableConv3d(c, c, 3, factorised=True), (st,), c),
        ("FlattenedConv3d k3, chain", lambda: snn.FlattenedConv3d(c, c, 3), (st,), c),
        ("FlattenedConv3d k3, factorised", lambda: snn.FlattenedConv3d(c, c, 3, factorised=True), (st,), c),
        ("AsymmetricConv3d k3 (ACNet, training form)", lambda: snn.AsymmetricConv3d(c, c), (st,), c),
        ("AsymmetricConv3d k3 fused (one SubMConv3d)", fused_acnet, (st,), c),
        ("RepVGGBlock3d k3 (training form)", lambda: snn.RepVGGBlock3d(c, c), (st,), c),
        ("CentralDifferenceConv3d k3, theta 0.7", lambda: snn.CentralDifferenceConv3d(c, c, 3), (st,), c),
        ("CentralDifferenceConv3d k3, cross", lambda: snn.CentralDifferenceConv3d(c, c, 3, footprint="cross"), (st,), c),
        ("CoordConv3d k3", lambda: snn.CoordConv3d(c, c, 3, bias=False), (st,), c),
        (f"Involution3d k3, G={max(c // 16, 1)}", lambda: snn.Involution3d(c, 3, groups=max(c // 16, 1)), (st,), c),
        ("OctaveConv3d k3, alpha 0.5 (H, L in and out)", lambda: snn.OctaveConv3d(c, c, 3, 0.5, 0.5),
         (octave_inputs,), octave_channels),
    ]


def depthwise_paths(st: SparseTensor, channels: int, repeats: int, statistic: str) -> None:
    """The core's depthwise path next to the same depthwise conv as grouped GEMMs (2 channels per group,
    block-diagonal 2x2 weights) and as one dense GEMM with a diagonal weight."""
    kmap = st.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    x = torch.randn(len(st), channels)
    w = torch.randn(27, channels, 1, 1)
    pairs = w[:, :, 0, 0].view(27, channels // 2, 2)
    block = torch.diag_embed(pairs)  # [K, C/2, 2, 2]
    diagonal = torch.diag_embed(w[:, :, 0, 0])[:, None]  # [K, 1, C, C]
    runs = [
        ("depthwise path, torch backend", lambda: gather_gemm_scatter(x, w, kmap, backend="torch")),
        ("depthwise, numba backend (auto)", lambda: gather_gemm_scatter(x, w, kmap)),
        ("grouped GEMM 2x2 blocks, torch backend", lambda: gather_gemm_scatter(x, block, kmap, backend="torch")),
        ("grouped GEMM 2x2 blocks, numba backend", lambda: gather_gemm_scatter(x, block, kmap)),
        ("dense GEMM, diagonal weight (auto)", lambda: gather_gemm_scatter(x, diagonal, kmap)),
    ]
    reference = runs[0][1]
    print(f"\nDepthwise k3 forward at {channels} channels ({kmap.num_pairs:,} pairs), paired with the torch depthwise path:\n")
    print("| formulation | ms | x depthwise path |")
    print("|---|---|---|")
    for label, fn in runs:
        t, ref = paired_ms(fn, reference, repeats, statistic)
        print(f"| {label} | {t:.1f} | {t / ref:.2f} |")


def run(quick: bool, repeats: Optional[int] = None, skip: Sequence[str] = (), statistic: str = "median") -> None:
    repeats = repeats or (3 if quick else 7)
    torch.manual_seed(0)
    print(f"# sparseconv variants, {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {statistic} of {repeats} turns")
    st = scan(0, quick)
    pair = batch_of(st, scan(1, quick))
    subm_pairs = st.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3))).num_pairs
    print(f"\nLiDAR scan (seed 0{', 32-beam x 1024' if quick else ', 64-beam x 2048'}), 5 cm: {len(st):,} voxels, "
          f"grid {st.spatial_shape}; batch of two scans: {len(pair):,} voxels\n")
    print("`x SubM`: time over a SubMConv3d k3 of the same channels on the same input; `x same-MAC SubM`: time over "
          "a SubMConv3d k3 with C' x C' channels doing about the layer's MACs (C' = round(sqrt(MACs / pairs))), the "
          "plain conv of the same MACs. Every ratio is timed in turns with its reference.\n")
    print("| layer | C | B | pairs | MACs | fwd ms | fwd x SubM | fwd x same-MAC SubM | fwd+bwd ms | fwd+bwd x SubM | "
          "fwd+bwd x same-MAC SubM (C') |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for channels in ((16,) if quick else (16, 32)):
        for label, make, inputs, in_channels in variant_rows(channels, st, pair):
            if label != "SubMConv3d k3" and any(word in label for word in skip):
                continue
            torch.manual_seed(0)
            layer = make()
            for data in inputs:
                x = _with_feats(data, in_channels, grad=False)
                x_grad = _with_feats(data, in_channels, grad=True)
                first = data[0] if isinstance(data, tuple) else data
                kmap = first.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
                pairs = deform_pairs(layer, x) if "Deform" in label else kmap.num_pairs
                split_by_sample(kmap)  # the dynamic layers' per-sample split, cached as in training
                macs = macs_of(layer, x)
                same_mac = max(1, round((macs / kmap.num_pairs) ** 0.5))
                layer.train("training form" in label)

                def forward_backward(module, inp):
                    module.zero_grad(set_to_none=True)
                    _total(module(inp)).backward()

                ratios = []
                for c_ref in (channels, same_mac):
                    plain = snn.SubMConv3d(c_ref, c_ref, 3, bias=False)
                    plain_x = first.replace(torch.randn(len(first), c_ref))
                    plain_x_grad = first.replace(torch.randn(len(first), c_ref).requires_grad_())
                    with torch.no_grad():
                        fwd, ref_fwd = paired_ms(lambda: layer(x), lambda: plain(plain_x), repeats, statistic)
                    both, ref_both = paired_ms(lambda: forward_backward(layer, x_grad),
                                               lambda: forward_backward(plain, plain_x_grad), repeats, statistic)
                    ratios.append((fwd, fwd / ref_fwd, both, both / ref_both))
                (fwd, fwd_subm, both, both_subm), (_, fwd_same, _, both_same) = ratios
                print(f"| {label} | {channels} | {first.batch_size} | {pairs:,} | {format_count(macs)} | {fwd:.1f} | "
                      f"{fwd_subm:.2f} | {fwd_same:.2f} | {both:.1f} | {both_subm:.2f} | {both_same:.2f} ({same_mac}) |")
    print(f"\n(the plain submanifold map of the scan has {subm_pairs:,} pairs)")
    depthwise_paths(st, 16 if quick else 32, repeats, statistic)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller scan and few repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch (and so numba) threads; 1 keeps the ratios stable on a machine shared with other jobs")
    parser.add_argument("--statistic", choices=sorted(STATISTICS), default="median",
                        help="median (default) or fastest of the timed turns (min: for a heavily loaded machine)")
    parser.add_argument("--repeats", type=int, default=None, help="timed turns per pair (default 7, --quick 3)")
    parser.add_argument("--skip", action="append", default=[], metavar="WORD",
                        help="leave out the variants whose label contains WORD (repeatable), e.g. --skip Deform")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run(args.quick, args.repeats, args.skip, args.statistic)


if __name__ == "__main__":
    main()
