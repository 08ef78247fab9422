"""Speed of kernel-map builds and sparse convolutions on realistic scans, with baselines.

Prints a table of median times (ms) for each scene:

* map build (hash + rulebook) for SubMConv3d k=3 and SparseConv3d k=3 s=2 on fresh coordinates,
* forward (map cached) and backward of those layers at 16, 32 and 64 channels,
* the GEMM floor: the layer's real multiply-adds at the best ``torch.mm`` rate measured in this
  run on a cache-resident ``[8192, C] @ [C, C]`` block, and one plain ``torch.mm`` over all pairs,
* dense ``F.conv3d`` on a crop of the grid next to the sparse layer on the same crop,
* spconv's CPU build on the same coordinates and weights when it is installed (1 and 2 threads).

Run:  python benchmarks/bench_conv.py            (full: 64-beam street scan + indoor scene)
      python benchmarks/bench_conv.py --quick    (small scans, few repeats: a smoke run)
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv import SparseTensor  # noqa: E402
from sparseconv.coordinates import CoordinateSet  # noqa: E402
from sparseconv.data import generate_indoor_scene, generate_lidar_scan  # noqa: E402
from sparseconv.kernel_map import KernelMapKey, build_kernel_map  # noqa: E402
from sparseconv.nn import SparseConv3d, SubMConv3d  # noqa: E402
from sparseconv.voxelize import voxelize  # noqa: E402

SUBM = KernelMapKey("submanifold", (3, 3, 3))
DOWN = KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1))


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def best_gemm_rate(channels: int, repeats: int) -> float:
    """Multiply-adds per ms of torch.mm on a cache-resident [8192, C] @ [C, C] block."""
    a = torch.randn(8192, channels)
    w = torch.randn(channels, channels)
    inner = 20
    ms = median_ms(lambda: [a @ w for _ in range(inner)], repeats, warmup=2) / inner
    return 8192 * channels * channels / ms


def fresh(coord_set: CoordinateSet) -> CoordinateSet:
    """Same coordinates, empty caches: a map build measured from scratch (hash included)."""
    return CoordinateSet(coord_set.coords, coord_set.spatial_shape, coord_set.batch_size)


def scenes(quick: bool):
    if quick:
        lidar = generate_lidar_scan(seed=0, num_beams=32, horizontal_resolution=1024)
        indoor = generate_indoor_scene(seed=0, num_views=4)
    else:
        lidar = generate_lidar_scan(seed=0)
        indoor = generate_indoor_scene(seed=0)
    yield "street LiDAR 64-beam, 5 cm", lidar.points, 0.05
    yield "indoor room, 2 cm", indoor.points, 0.02


def spconv_layer_ms(st: SparseTensor, channels: int, threads: int, repeats: int):
    """(map + forward) ms of spconv's SubMConv3d, or None when spconv is not installed."""
    try:
        import spconv.pytorch as spconv  # type: ignore
    except Exception:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer = spconv.SubMConv3d(channels, channels, 3, bias=False)
        feats = torch.randn(len(st), channels)
        indices = st.coords.int()

        def run():
            x = spconv.SparseConvTensor(feats, indices, list(st.spatial_shape), st.batch_size)
            layer(x)

        with torch.no_grad():
            return median_ms(run, repeats)
    finally:
        torch.set_num_threads(previous)


def run(quick: bool) -> None:
    repeats = 3 if quick else 7
    channel_list = (16, 32) if quick else (16, 32, 64)
    torch.manual_seed(0)
    print(f"# sparseconv benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, points, voxel_size in scenes(quick):
        st, _ = voxelize(torch.from_numpy(points).float(), voxel_size)
        cs = st.coordinate_set
        subm_map, down_map = cs.kernel_map(SUBM), cs.kernel_map(DOWN)
        print(f"\n## {name}: {len(points):,} points -> {len(st):,} voxels, grid {st.spatial_shape}")
        print(f"pairs: SubM k3 {subm_map.num_pairs:,}, Conv k3 s2 {down_map.num_pairs:,} "
              f"({down_map.num_outputs:,} outputs)")
        print(f"map build (fresh coordinates, hash included): SubM k3 "
              f"{median_ms(lambda: build_kernel_map(fresh(cs), SUBM), repeats):.1f} ms, Conv k3 s2 "
              f"{median_ms(lambda: build_kernel_map(fresh(cs), DOWN), repeats):.1f} ms")
        print()
        print("| layer | C | forward ms | backward ms | GEMM floor ms | fwd / floor | one mm over all pairs ms |"
              " dense conv3d crop ms | sparse on crop ms | spconv 1t / 2t ms (map+fwd) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        crop_size = (96, 96, 32)
        cropped = st.crop(st.densest_block(crop_size), crop_size)
        for channels in channel_list:
            rate = best_gemm_rate(channels, repeats)
            feats = torch.randn(len(st), channels)
            for label, layer, kmap in (
                ("SubMConv3d k3", SubMConv3d(channels, channels, 3, bias=False), subm_map),
                ("SparseConv3d k3 s2", SparseConv3d(channels, channels, 3, 2, 1, bias=False), down_map),
            ):
                x = st.replace(feats)
                with torch.no_grad():
                    fwd = median_ms(lambda: layer(x), repeats)
                x_grad = st.replace(feats.clone().requires_grad_())
                grad = torch.randn(kmap.num_outputs, channels)

                def backward():
                    out = layer(x_grad)
                    out.feats.backward(grad)

                bwd = max(median_ms(backward, repeats) - fwd, 0.0)
                floor = kmap.num_pairs * channels * channels / rate
                big_a = torch.randn(kmap.num_pairs, channels)
                w = torch.randn(channels, channels)
                one_mm = median_ms(lambda: big_a @ w, repeats)
                dense_in = torch.randn(1, channels, *cropped.spatial_shape)
                dense_w = torch.randn(channels, channels, 3, 3, 3)
                stride = 1 if "SubM" in label else 2
                dense = median_ms(lambda: F.conv3d(dense_in, dense_w, None, stride, 1), max(1, repeats // 2))
                crop_x = cropped.replace(torch.randn(len(cropped), channels))
                with torch.no_grad():
                    sparse_crop = median_ms(lambda: layer(crop_x), repeats)
                spconv_cell = "not installed"
                if "SubM" in label:
                    one = spconv_layer_ms(st, channels, 1, repeats)
                    if one is not None:
                        spconv_cell = f"{one:.1f} / {spconv_layer_ms(st, channels, 2, repeats):.1f}"
                else:
                    spconv_cell = "-"
                print(f"| {label} | {channels} | {fwd:.1f} | {bwd:.1f} | {floor:.1f} | {fwd / floor:.2f}x | "
                      f"{one_mm:.1f} | {dense:.1f} ({len(cropped):,} active of {cropped.spatial_shape}) | "
                      f"{sparse_crop:.1f} | {spconv_cell} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small scans and few repeats (smoke run)")
    args = parser.parse_args(argv)
    run(args.quick)


if __name__ == "__main__":
    main()
