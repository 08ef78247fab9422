"""Deformable and dynamic sparse convolutions next to a SubMConv3d of the same size.

On the simulated LiDAR scan (``generate_lidar_scan(0)``, voxelized at 5 cm) it prints, at 16 and
32 channels, median times of the forward pass (no grad) and of forward + backward (gradients of
the features and of every parameter) for:

* ``SubMConv3d`` k3: the baseline;
* ``SubMDeformConv3d`` k3, v2 (modulated): with the fresh zero-initialised offset predictor
  (integer offsets: zero-weight corners are dropped without grad, so the corner map has the
  plain map's pairs) and with a perturbed predictor (fractional offsets, as after training: 8
  corners per tap); the time includes the offset/mask predictor (a SubMConv3d with
  ``4 K`` outputs) and the per-call corner map;
* ``SparseDynamicConv3d`` (softmax), ``SparseCondConv3d``, ``SparseODConv3d``: k3, 4 experts,
  submanifold, on the one scan (B = 1) and on a batch of two scans (B = 2, a second seed),
  where the map is split by sample (first call; then cached).

``pairs`` is the number of (input, output) pairs of the map the core op runs over. Each layer
is timed alternately with a fresh ``SubMConv3d`` of the same size on the same input, so the
``x SubM`` ratios hold on a loaded machine.

Run:  python benchmarks/bench_variants.py            (full scan)
      python benchmarks/bench_variants.py --quick    (32-beam x 1024 scan, few repeats)
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import sparseconv.nn as snn  # noqa: E402
from sparseconv import SparseTensor  # noqa: E402
from sparseconv.data import generate_lidar_scan  # noqa: E402
from sparseconv.nn.functional.deform import deform_kernel_map  # noqa: E402
from sparseconv.nn.functional.dynamic import split_by_sample  # noqa: E402
from sparseconv.engine.kmap import KernelMapKey  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402


def paired_median_ms(fn, reference, repeats: int):
    """Medians of ``fn`` and ``reference`` timed alternately, so load on a shared machine hits
    both alike and their ratio stays meaningful."""
    fn()
    reference()
    times, ref_times = [], []
    for _ in range(repeats):
        for f, out in ((fn, times), (reference, ref_times)):
            start = time.perf_counter()
            f()
            out.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), 1000 * statistics.median(ref_times)


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


def run(quick: bool) -> None:
    repeats = 3 if quick else 7
    torch.manual_seed(0)
    print(f"# sparseconv variants, {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    st = scan(0, quick)
    pair = batch_of(st, scan(1, quick))
    subm_pairs = st.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3))).num_pairs
    print(f"\nLiDAR scan (seed 0{', 32-beam x 1024' if quick else ', 64-beam x 2048'}), 5 cm: {len(st):,} voxels, "
          f"grid {st.spatial_shape}; batch of two scans: {len(pair):,} voxels\n")
    print("| layer | C | B | pairs | fwd ms | fwd x SubM | fwd+bwd ms | fwd+bwd x SubM |")
    print("|---|---|---|---|---|---|---|---|")
    for channels in (16, 32):

        def perturbed_deform():
            layer = snn.SubMDeformConv3d(channels, channels, 3, modulated=True, bias=False)
            torch.nn.init.normal_(layer.offset_conv.weight, std=0.5 / channels)
            return layer

        rows = [
            ("SubMConv3d k3", lambda: snn.SubMConv3d(channels, channels, 3, bias=False), (st, pair)),
            ("SubMDeformConv3d k3 v2, fresh (integer offsets)",
             lambda: snn.SubMDeformConv3d(channels, channels, 3, modulated=True, bias=False), (st,)),
            ("SubMDeformConv3d k3 v2, fractional offsets", perturbed_deform, (st,)),
            ("SparseDynamicConv3d k3 softmax, 4 experts",
             lambda: snn.SparseDynamicConv3d(channels, channels, 3, 4, bias=False, submanifold=True), (st, pair)),
            ("SparseCondConv3d k3, 4 experts",
             lambda: snn.SparseCondConv3d(channels, channels, 3, 4, bias=False, submanifold=True), (st, pair)),
            ("SparseODConv3d k3, 4 experts",
             lambda: snn.SparseODConv3d(channels, channels, 3, 4, bias=False, submanifold=True), (st, pair)),
        ]
        for label, make, inputs in rows:
            torch.manual_seed(0)
            layer = make()
            for data in inputs:
                x = data.replace(torch.randn(len(data), channels))
                x_grad = data.replace(x.feats.clone().requires_grad_())
                kmap = data.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
                pairs = deform_pairs(layer, x) if "Deform" in label else kmap.num_pairs
                split_by_sample(kmap)  # the dynamic layers' per-sample split, cached as in training
                plain = snn.SubMConv3d(channels, channels, 3, bias=False)

                def forward_backward(module):
                    module.zero_grad(set_to_none=True)
                    module(x_grad).feats.sum().backward()

                with torch.no_grad():
                    fwd, ref_fwd = paired_median_ms(lambda: layer(x), lambda: plain(x), repeats)
                both, ref_both = paired_median_ms(
                    lambda: forward_backward(layer), lambda: forward_backward(plain), repeats
                )
                print(f"| {label} | {channels} | {data.batch_size} | {pairs:,} | {fwd:.1f} | {fwd / ref_fwd:.2f} | "
                      f"{both:.1f} | {both / ref_both:.2f} |")
    print(f"\n(the plain submanifold map of the scan has {subm_pairs:,} pairs)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller scan and few repeats (smoke run)")
    run(parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
