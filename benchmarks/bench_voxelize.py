"""Voxelization speed: 1 million points (and the simulated 64-beam scan) for every reduction.

Run:  python benchmarks/bench_voxelize.py [--quick]

Prints median times next to a plain ``torch.unique`` over the packed keys of the same points
(the sort every voxelizer has to do) as the baseline.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv import voxelize  # noqa: E402
from sparseconv.data import generate_lidar_scan  # noqa: E402
from sparseconv.engine.voxelize import REDUCTIONS  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k points, few repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    gen = torch.Generator().manual_seed(0)
    n = 100_000 if args.quick else 1_000_000
    uniform = torch.rand(n, 3, generator=gen) * torch.tensor([100.0, 100.0, 10.0])
    scan = generate_lidar_scan(0)
    clouds = [
        (f"{n:,} uniform points in 100x100x10 m, 0.1 m", uniform, 0.1),
        (f"64-beam scan ({len(scan.points):,} points), 0.05 m", torch.from_numpy(scan.points), 0.05),
    ]
    print(f"# voxelize, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| cloud | voxels | " + " | ".join(f"{r} ms" for r in REDUCTIONS) + " | torch.unique of keys ms |")
    print("|---|---|" + "---|" * (len(REDUCTIONS) + 1))
    for name, points, size in clouds:
        feats = torch.randn(points.shape[0], 4, generator=gen)
        voxels = len(voxelize(points, size).tensor)
        times = [median_ms(lambda: voxelize(points, size, feats, reduce=r), repeats) for r in REDUCTIONS]
        keys = torch.floor(points / size).long()
        keys = (keys[:, 0] << 40) | (keys[:, 1] << 20) | keys[:, 2]
        unique = median_ms(lambda: torch.unique(keys, sorted=True, return_inverse=True), repeats)
        print(f"| {name} | {voxels:,} | " + " | ".join(f"{t:.0f}" for t in times) + f" | {unique:.0f} |")


if __name__ == "__main__":
    main()
