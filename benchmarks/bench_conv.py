"""Speed and memory of kernel-map builds and sparse convolutions on realistic scans.

For each scene (a simulated 64-beam street scan at 5 cm, an indoor RGB-D sweep at 2 cm) and each
layer (SubMConv3d k=3, SparseConv3d k=3 stride 2) at 16, 32 and 64 channels it prints medians of:

* ``map``: kernel-map build from fresh coordinates (sorting/search included);
* ``fwd``: forward with the map cached; ``bwd``: feature + weight gradients (``.grad`` unset
  before, as after ``zero_grad()``); their ratio;
* ``floor``: the layer's multiply-adds at the ``torch.mm`` rate on a cache-resident
  ``[R, C] @ [C, C]`` block (R chosen as the best of 4096..32768 rows: what the cores can do), and
  ``fwd / floor``;
* ``1 mm``: one plain ``torch.mm`` with as many rows as the map has pairs (same multiply-adds);
* ``peak``: peak extra resident memory during a forward (output included), and its ratio to
  input features + output features + kernel map;
* ``map+fwd``: the whole layer, next to spconv's CPU build (1 and 2 threads) when installed, and
  spconv's index build alone (a 1-channel layer, single-threaded) next to our ``map``;
* dense ``F.conv3d`` on the densest 96x96x32 crop next to the sparse layer on that crop.

Quantities that are compared are timed in turns within one loop (forward, backward and floor;
our map and spconv's; our whole layer and spconv's), so that this machine's drifting speed
(shared cores and memory bandwidth) hits both sides of a ratio alike.

Run:  python benchmarks/bench_conv.py            (full)
      python benchmarks/bench_conv.py --quick    (small scans, 16 channels, few repeats: the smoke run
                                                 of tests/test_benchmarks.py)
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv import SparseTensor  # noqa: E402
from sparseconv.engine import backends  # noqa: E402
from sparseconv.engine.coordinates import CoordinateSet  # noqa: E402
from sparseconv.data import generate_indoor_scene, generate_lidar_scan  # noqa: E402
from sparseconv.engine.kmap import KernelMapKey, build_kernel_map  # noqa: E402
from sparseconv.nn import SparseConv3d, SubMConv3d  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402

LAYERS = (
    ("SubMConv3d k3", KernelMapKey("submanifold", (3, 3, 3)), lambda c: SubMConv3d(c, c, 3, bias=False)),
    ("SparseConv3d k3 s2", KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)),
     lambda c: SparseConv3d(c, c, 3, 2, 1, bias=False)),
)
CROP = (96, 96, 32)


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def interleaved_ms(timers, repeats: int):
    """Median of each timer's milliseconds, the timers run in turns (a, b, c, a, b, c, ...) after one
    warm-up round, so a machine whose speed drifts during the run slows them alike and their ratios
    hold. A timer returns the seconds it measured (see :func:`timed`)."""
    for timer in timers:
        timer()
    samples = [[] for _ in timers]
    for _ in range(repeats):
        for timer, ts in zip(timers, samples):
            ts.append(timer())
    return [1000 * statistics.median(ts) for ts in samples]


def timed(fn):
    """A timer (for :func:`interleaved_ms`) of the whole of ``fn()``."""

    def timer():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return timer


def best_gemm_block(channels: int, repeats: int) -> int:
    """The row count R (4096..32768) at which ``[R, C] @ [C, C]`` (output preallocated) runs
    ``torch.mm`` at its best multiply-add rate: the cache-resident block of the GEMM floor."""
    w = torch.randn(channels, channels)
    best, best_rows = 0.0, 4096
    for rows in (4096, 8192, 16384, 32768):
        a = torch.randn(rows, channels)
        out = torch.empty(rows, channels)
        ms = median_ms(lambda: torch.mm(a, w, out=out), repeats, 2)
        if rows / ms > best:
            best, best_rows = rows / ms, rows
    return best_rows


def floor_timer(rows: int, channels: int, layer_macs: int, inner: int = 20):
    """A timer of the GEMM floor: seconds that ``layer_macs`` multiply-adds take at the rate of
    ``inner`` back-to-back ``torch.mm`` calls on a cache-resident ``[rows, C] @ [C, C]`` block."""
    a, w, out = torch.randn(rows, channels), torch.randn(channels, channels), torch.empty(rows, channels)

    def timer():
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, w, out=out)
        return (time.perf_counter() - start) * layer_macs / (inner * rows * channels * channels)

    return timer


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


_M_MMAP_THRESHOLD = -3
_TIMING_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling: steady-state allocation behaviour
_MEMORY_MMAP_THRESHOLD = 128 << 10  # every large block from mmap, returned on free


def peak_extra_mb(fn):
    """Peak resident memory added while ``fn`` runs (its result included), in MB; None off Linux.

    For the measurement only, large blocks come straight from mmap and go back on free (so
    resident memory tracks live tensors) and free heap pages are returned first; the
    high-water mark is reset through ``/proc/self/clear_refs``.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL("libc.so.6")
    gc.collect()
    libc.mallopt(_M_MMAP_THRESHOLD, _MEMORY_MMAP_THRESHOLD)
    try:
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        before = _status_kb("VmRSS")
        result = fn()
        peak = _status_kb("VmHWM")
        del result
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _TIMING_MMAP_THRESHOLD)
    return (peak - before) / 1024


def fresh(coord_set: CoordinateSet) -> CoordinateSet:
    """Same coordinates, empty caches: a map build measured from scratch."""
    return CoordinateSet(coord_set.coords, coord_set.spatial_shape, coord_set.batch_size)


def scenes(quick: bool):
    if quick:
        yield "street LiDAR 32-beam x 1024, 5 cm", generate_lidar_scan(0, 32, 1024).points, 0.05
        yield "indoor RGB-D sweep (4 views), 2 cm", generate_indoor_scene(0, num_views=4).points, 0.02
    else:
        yield "street LiDAR 64-beam x 2048, 5 cm", generate_lidar_scan(0).points, 0.05
        yield "indoor RGB-D sweep (10 views), 2 cm", generate_indoor_scene(0).points, 0.02


def spconv_timer(st: SparseTensor, key: KernelMapKey, channels: int, threads: int):
    """A timer of spconv's whole layer (index build + forward) at ``threads`` threads, or None when
    spconv is not installed."""
    try:
        import spconv.pytorch as spconv  # type: ignore
    except Exception:
        return None
    if key.kind == "submanifold":
        layer = spconv.SubMConv3d(channels, channels, 3, bias=False)
    else:
        layer = spconv.SparseConv3d(channels, channels, 3, 2, 1, bias=False)
    feats = torch.randn(len(st), channels)
    indices = st.coords.int()

    def timer():
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                start = time.perf_counter()
                layer(spconv.SparseConvTensor(feats, indices, list(st.spatial_shape), st.batch_size))
                return time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)

    return timer


def run(quick: bool) -> None:
    repeats = 3 if quick else 9
    channel_list = (16,) if quick else (16, 32, 64)
    torch.manual_seed(0)
    core = "numba" if backends.numba_available() else f"torch ({backends.numba_unavailable_reason()})"
    print(f"# sparseconv {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, core op backend: {core}")
    gemm_rows = {c: best_gemm_block(c, repeats) for c in channel_list}
    for name, points, voxel_size in scenes(quick):
        st, _ = voxelize(torch.from_numpy(points).float(), voxel_size)
        cs = st.coordinate_set
        cropped = st.crop(st.densest_block(CROP), CROP)
        print(f"\n## {name}: {len(points):,} points -> {len(st):,} voxels, grid {st.spatial_shape}\n")
        print("| layer | C | pairs | map ms | fwd ms | bwd ms | bwd/fwd | floor ms | fwd/floor | 1 mm ms "
              "| peak MB (x in+out+map) | map+fwd ms | spconv map+fwd 1t / 2t ms | spconv map ms | dense crop ms "
              "| sparse crop ms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, key, make in LAYERS:
            kmap = cs.kernel_map(key)
            map_timer = timed(lambda: build_kernel_map(fresh(cs), key))
            spconv_map_timer = spconv_timer(st, key, 1, 1)
            if spconv_map_timer is None:
                map_ms, spconv_map_cell = median_ms(map_timer, repeats), "-"
            else:
                map_ms, spconv_map = interleaved_ms([map_timer, spconv_map_timer], repeats)
                spconv_map_cell = f"{spconv_map:.1f}"
            map_bytes = kmap.in_rows.numel() * 8 * 2
            for channels in channel_list:
                layer = make(channels)
                feats = torch.randn(len(st), channels)
                x = st.replace(feats)
                x_grad = st.replace(feats.clone().requires_grad_())
                grad = torch.randn(kmap.num_outputs, channels)

                def forward():
                    with torch.no_grad():
                        layer(x)

                def backward_only():
                    x_grad.feats.grad = None  # as in training after zero_grad(): nothing to add to
                    layer.zero_grad(set_to_none=True)
                    out = layer(x_grad).feats
                    start = time.perf_counter()
                    out.backward(grad)
                    return time.perf_counter() - start

                macs = kmap.num_pairs * channels * channels
                fwd, bwd, floor = interleaved_ms(
                    [timed(forward), backward_only, floor_timer(gemm_rows[channels], channels, macs)], repeats
                )
                with torch.no_grad():
                    peak = peak_extra_mb(lambda: layer(x))
                    whole_timer = timed(lambda: layer(SparseTensor.from_coordinate_set(feats, fresh(cs))))
                spconv_timers = [spconv_timer(st, key, channels, t) for t in (1, 2)]
                if spconv_timers[0] is None:
                    with torch.no_grad():
                        whole = median_ms(whole_timer, repeats)
                    spconv_cell = "not installed"
                else:
                    with torch.no_grad():
                        whole, one, two = interleaved_ms([whole_timer, *spconv_timers], repeats)
                    spconv_cell = f"{one:.1f} / {two:.1f} ({one / whole:.1f}x slower)"
                rows = torch.randn(kmap.num_pairs, channels)
                weight = torch.randn(channels, channels)
                one_mm = median_ms(lambda: rows @ weight, repeats)
                io_mb = (len(st) + kmap.num_outputs) * channels * 4 / 2**20 + map_bytes / 2**20
                peak_cell = "n/a" if peak is None else f"{peak:.1f} ({peak / io_mb:.2f}x)"
                stride = key.stride[0]
                dense_in = torch.randn(1, channels, *CROP)
                dense_w = torch.randn(channels, channels, 3, 3, 3)
                dense = median_ms(lambda: F.conv3d(dense_in, dense_w, None, stride, 1), max(1, repeats // 3))
                crop_x = cropped.replace(torch.randn(len(cropped), channels))
                with torch.no_grad():
                    sparse_crop = median_ms(lambda: layer(crop_x), repeats)
                print(f"| {label} | {channels} | {kmap.num_pairs:,} | {map_ms:.1f} | {fwd:.1f} | {bwd:.1f} | "
                      f"{bwd / fwd:.2f} | {floor:.1f} | {fwd / floor:.2f} | {one_mm:.1f} | {peak_cell} | {whole:.1f} | "
                      f"{spconv_cell} | {spconv_map_cell} | {dense:.1f} | {sparse_crop:.1f} ({len(cropped):,} sites) |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small scans and few repeats (smoke run)")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _TIMING_MMAP_THRESHOLD)
    run(args.quick)


if __name__ == "__main__":
    main()
