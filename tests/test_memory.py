"""Memory stays flat over repeated training steps of a MinkUNet (issue 16); measured in full by
``benchmarks/bench_memory.py``, asserted loosely here on a small scan.

Exact: after warm-up the numbers of live ``CoordinateSet``, ``KernelMap``, ``CoordinateHash``,
``SparseTensor`` and ``torch.Tensor`` objects and the bytes of live tensor storage do not change
from step to step, counted with automatic garbage collection off (so nothing may survive a step
through a reference cycle). Loose: the Python heap (``tracemalloc``) and the resident set grow by
less than a bound far below one step's working set.
"""
import importlib.util
import pathlib
import sys

import torch

from sparseconv import voxelize
from sparseconv.models import minkunet14
from sparseconv.models.blocks import pad_grid

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_memory.py"
STEPS = 20
RECORDED = (5, 10, 15, 20)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, bench)  # its dataclass looks its module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def _scan():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2000, 3, generator=g) * torch.tensor([8.0, 8.0, 2.0])
    return points, torch.randn(2000, 4, generator=g), g


def _assert_flat(records):
    assert [r.step for r in records] == list(RECORDED)
    first, last = records[0], records[-1]
    for r in records[1:]:
        assert r.live == first.live, (r.step, r.live, first.live)
        assert r.tensors == first.tensors and r.tensor_mb == first.tensor_mb, (r.step, r.tensors, first.tensors)
    assert last.python_heap_mb - first.python_heap_mb < 1.0  # ~6 KiB/step measured, saturating
    if first.rss_mb is not None:
        assert last.rss_mb - first.rss_mb < 64  # allocator noise; a per-step leak of a map or a grid is more


def test_memory_flat_with_fresh_coordinates_every_step():
    bench = _bench()
    points, feats, g = _scan()
    torch.manual_seed(0)
    model = minkunet14(4, 5, base_channels=8)

    def make_input(step):  # a new coordinate set (and new kernel maps) every step
        return voxelize(points + torch.tensor([0.05 * step, 0.0, 0.0]), 0.25, feats, align=16).tensor

    records = bench.measure(model, make_input, lambda x: torch.randint(0, 5, (len(x),), generator=g), STEPS, RECORDED)
    _assert_flat(records)
    assert records[-1].live["KernelMap"] == 0 and records[-1].live["CoordinateSet"] == 0  # all freed


def test_map_cache_does_not_grow_on_a_reused_input():
    bench = _bench()
    points, feats, g = _scan()
    torch.manual_seed(0)
    model = minkunet14(4, 5, base_channels=8)
    x = pad_grid(voxelize(points, 0.25, feats, align=16).tensor, 16)  # the net runs on x's own coordinate set
    labels = torch.randint(0, 5, (len(x),), generator=g)
    records = bench.measure(model, lambda step: x, lambda _: labels, STEPS, RECORDED)
    _assert_flat(records)
    maps = x.coordinate_set.cached_kernel_maps()
    assert len(maps) > 0 and x.coordinate_set.kernel_map_builds == len(maps)  # built once, then reused
    assert records[-1].live["KernelMap"] >= len(maps)  # x's maps and those cached on its coarser levels
