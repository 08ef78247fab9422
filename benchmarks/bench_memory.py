"""Memory across repeated training steps of a MinkUNet: flat, with no cache growth.

Run:  python benchmarks/bench_memory.py [--quick] [--iterations N]

Each step voxelizes the scan afresh (new coordinates, so a fresh coordinate set and fresh kernel
maps, as a data loader gives), then runs forward, a cross-entropy loss, backward and an SGD step.
A second run reuses one input tensor for every step (its maps are built at the first step and then
served from its coordinate set's cache, which must not grow). After
every step it records:

* RSS: the process' resident memory (``/proc/self/statm``), after ``malloc_trim`` so that pages the
  C allocator holds free do not count;
* Python heap: ``tracemalloc``'s current size (Python objects, not tensor storage);
* tensors: live ``torch.Tensor`` objects the garbage collector sees, and their unique storages' bytes;
* live ``CoordinateSet``, ``KernelMap``, ``CoordinateHash`` and ``SparseTensor`` objects, counted
  *without* a ``gc.collect()`` (automatic collection is switched off during the run), so an object
  kept alive only by a reference cycle shows up as growth.

Objects are counted among those made since the run started (with collection off they all stay in
the gc's youngest generation), which keeps a record cheap: the input built before the run, the
model's parameters and everything imported are not in the counts.

It prints the records at a few steps and the growth between the warm-up step and the last one.
``tests/test_memory.py`` runs :func:`measure` on a small scan and asserts the counts stay constant.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tracemalloc
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv import SparseTensor, voxelize  # noqa: E402
from sparseconv.engine.coordinates import CoordinateSet  # noqa: E402
from sparseconv.engine.hashing import CoordinateHash  # noqa: E402
from sparseconv.engine.kmap import KernelMap  # noqa: E402
from sparseconv.models import minkunet14  # noqa: E402
from sparseconv.models.blocks import pad_grid  # noqa: E402

TRACKED = {"CoordinateSet": CoordinateSet, "KernelMap": KernelMap, "CoordinateHash": CoordinateHash,
           "SparseTensor": SparseTensor}


@dataclass
class Record:
    step: int
    rss_mb: Optional[float]
    python_heap_mb: float
    tensors: int
    tensor_mb: float
    live: Dict[str, int]


def _malloc_trim() -> None:
    """Hand the C heap's free pages back to the OS (glibc), so RSS counts memory in use rather than
    the allocator's fragmentation; a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb() -> Optional[float]:
    """Resident set size of this process in MiB after :func:`_malloc_trim` (Linux ``/proc``), or None
    elsewhere."""
    _malloc_trim()
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_objects(generation: Optional[int] = None) -> Dict[str, int]:
    """Counts of live tracked objects (and of torch tensors and their storage bytes) among the objects
    the gc tracks (only those of ``generation`` when given); no collection."""
    counts = {name: 0 for name in TRACKED}
    tensors, storages = 0, {}
    with warnings.catch_warnings():  # isinstance on some deprecated torch objects warns
        warnings.simplefilter("ignore")
        objects = gc.get_objects() if generation is None else gc.get_objects(generation)
        for obj in objects:
            for name, cls in TRACKED.items():
                if isinstance(obj, cls):
                    counts[name] += 1
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                tensors += 1
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    del objects
    counts["tensors"] = tensors
    counts["tensor_bytes"] = sum(storages.values())
    return counts


def measure(
    model: torch.nn.Module,
    make_input: Callable[[int], SparseTensor],
    labels: Callable[[SparseTensor], torch.Tensor],
    iterations: int,
    record_steps: Optional[Iterable[int]] = None,
) -> List[Record]:
    """Run ``iterations`` training steps (``make_input(step)`` -> forward -> cross-entropy against
    ``labels(x)`` -> backward -> SGD step) and record memory after the steps in ``record_steps``
    (default: every step; a record walks every object the gc tracks, so it costs more than a small
    step); see the module docstring."""
    wanted = set(range(1, iterations + 1) if record_steps is None else record_steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    records = []
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        for step in range(1, iterations + 1):
            x = make_input(step)
            loss = torch.nn.functional.cross_entropy(model(x).feats, labels(x))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            del x, loss
            if step not in wanted:
                continue
            live = live_objects(generation=0)  # gc is off: generation 0 = everything made since the start
            tensors, tensor_bytes = live.pop("tensors"), live.pop("tensor_bytes")
            heap, _ = tracemalloc.get_traced_memory()
            records.append(Record(step, rss_mb(), heap / 2**20, tensors, tensor_bytes / 2**20, live))
    finally:
        tracemalloc.stop()
        if was_enabled:
            gc.enable()
    return records


def scan_points(quick: bool):
    """``(points [P, 3], features [P, 4])``: the simulated 64-beam street scan (32 x 512 for --quick)."""
    from sparseconv.data import generate_lidar_scan

    scan = generate_lidar_scan(0, 32, 512) if quick else generate_lidar_scan(0)
    return torch.from_numpy(scan.points), torch.from_numpy(scan.features())


def print_records(title: str, records: List[Record], warmup: int) -> None:
    print(f"\n## {title}\n")
    print("| step | RSS MB | Python heap MB | live tensors | tensor MB | " + " | ".join(TRACKED) + " |")
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(TRACKED))
    for r in records:
        rss = "-" if r.rss_mb is None else f"{r.rss_mb:.1f}"
        print(f"| {r.step} | {rss} | {r.python_heap_mb:.2f} | {r.tensors} | {r.tensor_mb:.1f} | "
              + " | ".join(str(r.live[name]) for name in TRACKED) + " |")
    first, last = next(r for r in records if r.step >= warmup), records[-1]
    steps = last.step - first.step
    if steps:
        rss = "n/a" if first.rss_mb is None else f"{(last.rss_mb - first.rss_mb) / steps * 1024:+.1f} KiB/step"
        print(f"\ngrowth from step {first.step} to {last.step}: RSS {rss}, Python heap "
              f"{(last.python_heap_mb - first.python_heap_mb) / steps * 1024:+.2f} KiB/step, live tensors "
              f"{last.tensors - first.tensors:+d}, "
              + ", ".join(f"{n} {last.live[n] - first.live[n]:+d}" for n in TRACKED))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32 x 512 scan, base 8 channels, 20 steps")
    parser.add_argument("--iterations", type=int, default=None, help="steps per run (default 100, 20 with --quick)")
    args = parser.parse_args(argv)
    iterations = args.iterations or (20 if args.quick else 100)
    torch.manual_seed(0)
    points, feats = scan_points(args.quick)
    voxel_size = 0.2 if args.quick else 0.1
    model = minkunet14(4, 7, base_channels=8 if args.quick else 16)
    gen = torch.Generator().manual_seed(0)
    num_voxels = len(voxelize(points, voxel_size).tensor)
    fixed_labels = torch.randint(0, 7, (num_voxels,), generator=gen)

    def fresh(step: int) -> SparseTensor:  # new coordinates every step: a shifted copy of the scan
        shift = torch.tensor([0.37 * step % voxel_size, 0.0, 0.0])
        return voxelize(points + shift, voxel_size, feats, align=16).tensor

    # on a grid already a multiple of MinkUNet's total stride, so the net runs on this very coordinate
    # set and its kernel maps are built at step 1 and then served from its cache
    fixed = pad_grid(voxelize(points, voxel_size, feats, align=16).tensor, 16)
    print(f"# memory over repeated training steps, MinkUNet14 (base {8 if args.quick else 16}), "
          f"{len(points):,} points -> {num_voxels:,} voxels at {voxel_size} m, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    warmup = min(5, iterations)
    steps = sorted({1, warmup, *range(10, iterations + 1, 10), iterations})
    runs = (
        ("fresh coordinates every step", fresh, lambda x: torch.randint(0, 7, (len(x),), generator=gen)),
        ("one input reused every step", lambda step: fixed, lambda x: fixed_labels),
    )
    for title, make_input, labels in runs:
        print_records(title, measure(model, make_input, labels, iterations, steps), warmup)


if __name__ == "__main__":
    main()
