"""Core-op backends side by side: torch path vs numba kernel, forward and backward, cached map.

For each scene (simulated 64-beam street scan at 5 cm, indoor RGB-D sweep at 2 cm), layer
(SubMConv3d k3, SparseConv3d k3 s2) and channel count (16, 32, 64) it prints median milliseconds
of ``gather_gemm_scatter`` forward and of its backward (feature + weight gradients) for
``backend="torch"`` and ``backend="numba"``, with their ratio. The two backends are timed
interleaved within one process (torch, numba, torch, numba, ...) so a noisy machine hits both alike;
compare ratios, not absolute numbers, across runs.

Run:  python benchmarks/bench_backends.py            (full)
      python benchmarks/bench_backends.py --quick    (smaller scans, fewer repeats)
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

from sparseconv.engine import backends  # noqa: E402
from sparseconv.engine.core import gather_gemm_scatter  # noqa: E402
from sparseconv.data import generate_indoor_scene, generate_lidar_scan  # noqa: E402
from sparseconv.engine.kmap import KernelMapKey  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402

LAYERS = (
    ("SubM k3", KernelMapKey("submanifold", (3, 3, 3))),
    ("Conv k3 s2", KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1))),
)
BACKENDS = ("torch", "numba")


def interleaved_medians(fns, repeats: int):
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [1000 * statistics.median(ts) for ts in times]


def scenes(quick: bool):
    lidar = generate_lidar_scan(0).points
    indoor = generate_indoor_scene(0).points
    if quick:
        lidar, indoor = lidar[::4], indoor[::4]
    for name, points, voxel in (("lidar 5cm", lidar, 0.05), ("indoor 2cm", indoor, 0.02)):
        x, _ = voxelize(torch.as_tensor(points, dtype=torch.float32), voxel)
        yield name, x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="subsampled scans, few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 11)
    if not backends.numba_available():
        sys.exit(f"numba backend unavailable: {backends.numba_unavailable_reason()}")

    from sparseconv.testing import random_sparse_tensor

    tiny = random_sparse_tensor((6, 6, 6), 1, dtype=torch.float32)
    start = time.perf_counter()
    gather_gemm_scatter(tiny.feats, torch.zeros(27, 1, 1, 1), tiny.coordinate_set.kernel_map(LAYERS[0][1]),
                        backend="numba")
    first = time.perf_counter() - start

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; numba first call (import + compile or cache load) {first:.1f} s")
    print(f"median ms over {repeats} interleaved repeats; backward = feature + weight gradients\n")
    print("| scene | layer | pairs | C | fwd torch | fwd numba | ratio | bwd torch | bwd numba | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scene, x in scenes(args.quick):
        for layer, key in LAYERS:
            kmap = x.coordinate_set.kernel_map(key)
            for c in (16, 32, 64):
                gen = torch.Generator().manual_seed(c)
                feats = torch.randn(len(x), c, generator=gen)
                weight = torch.randn(kmap.kernel_volume, 1, c, c, generator=gen) / c ** 0.5
                grad = torch.randn(kmap.num_outputs, c, generator=gen)
                f = feats.clone().requires_grad_()
                w = weight.clone().requires_grad_()
                outs = {b: gather_gemm_scatter(f, w, kmap, backend=b) for b in BACKENDS}

                def forward(b):
                    return lambda: gather_gemm_scatter(feats, weight, kmap, backend=b)

                def backward(b):
                    return lambda: torch.autograd.grad(outs[b], (f, w), grad, retain_graph=True)

                fwd = interleaved_medians([forward(b) for b in BACKENDS], repeats)
                bwd = interleaved_medians([backward(b) for b in BACKENDS], repeats)
                print(f"| {scene} | {layer} | {kmap.num_pairs} | {c} | {fwd[0]:.2f} | {fwd[1]:.2f} | "
                      f"{fwd[1] / fwd[0]:.2f} | {bwd[0]:.2f} | {bwd[1]:.2f} | {bwd[1] / bwd[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
