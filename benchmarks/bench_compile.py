"""torch.compile vs eager: compile time and speed, torch path and numba path, side by side.

On the simulated 64-beam street scan (``sparseconv.data.generate_lidar_scan``, voxelized at 10 cm,
4 input channels) it times a layer (``SubMConv3d(16, 16, 3) -> BatchNorm -> ReLU``) and MinkUNet14
(base 16 channels, 7 classes: the network of ``examples/train_segmentation.py``), each for

* forward: eval mode under ``torch.no_grad()``;
* training step: train mode, forward + ``loss.backward()`` (gradients set to None between steps),

eagerly and compiled (``torch.compile(model, fullgraph=True)``, inductor), with the core op on the
torch path and on the numba path. Kernel maps are built once beforehand (:func:`sparseconv.engine.plan`),
so both sides run on cached maps. "compile s" is the first compiled call's time less a steady call's.
Eager and compiled calls are timed interleaved (eager, compiled, eager, ...) so a noisy machine hits
both alike: read the ratios.

The torch path is measured by emptying ``backends.AUTO_ORDER`` for the duration (what ``"auto"``
picks when numba is absent); the library has no global backend switch.

Run:  python benchmarks/bench_compile.py            (full: about 15-20 min on the 2-core CI machine)
      python benchmarks/bench_compile.py --quick    (the layer's forward on a quarter scan)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.abspath(os.path.dirname(__file__)))

from bench_backends import interleaved_medians  # noqa: E402

import sparseconv.nn as snn  # noqa: E402
from sparseconv.data import generate_lidar_scan  # noqa: E402
from sparseconv.engine import backends, plan  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402
from sparseconv.models import minkunet14  # noqa: E402

PATHS = ("torch", "numba")


@contextlib.contextmanager
def core_path(name: str):
    """The core op's ``backend="auto"`` resolves to ``name`` inside the block."""
    saved = backends.AUTO_ORDER
    backends.AUTO_ORDER = () if name == "torch" else ("numba",)
    try:
        yield
    finally:
        backends.AUTO_ORDER = saved


def scan(quick: bool):
    lidar = generate_lidar_scan(0)
    points = torch.as_tensor(lidar.points, dtype=torch.float32)
    if quick:
        points = points[::4]
    x, _ = voxelize(points, 0.1)
    torch.manual_seed(0)
    return x.replace(torch.randn(len(x), 4))


def models():
    yield "layer", lambda: torch.nn.Sequential(snn.SubMConv3d(4, 16, 3), snn.BatchNorm(16), snn.ReLU())
    yield "MinkUNet14", lambda: minkunet14(4, 7, base_channels=16)


def step_fn(model, x, mode: str):
    if mode == "forward":
        def run():
            with torch.no_grad():
                return model(x).feats
    else:
        def run():
            model.zero_grad(set_to_none=True)
            out = model(x).feats
            out.square().mean().backward()
            return out
    return run


def measure(make, x, mode: str, repeats: int):
    torch.manual_seed(0)
    eager = make().train(mode == "train")
    compiled_model = copy.deepcopy(eager)
    plan(eager, x)  # maps (and backend layouts) cached before anything is timed or compiled
    compiled = torch.compile(compiled_model, fullgraph=True)
    run_eager, run_compiled = step_fn(eager, x, mode), step_fn(compiled, x, mode)
    run_eager()
    start = time.perf_counter()
    run_compiled()
    first_s = time.perf_counter() - start
    eager_ms, compiled_ms = interleaved_medians([run_eager, run_compiled], repeats)
    return first_s - compiled_ms / 1000, eager_ms, compiled_ms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the layer's forward on a quarter scan, 3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    x = scan(args.quick)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"numba {'available' if backends.numba_available() else 'missing'}")
    print(f"street scan at 10 cm: {len(x):,} voxels, grid {x.spatial_shape}, 4 input channels\n")
    print("| network | step | core path | compile s | eager ms | compiled ms | eager / compiled |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, make in models():
        if args.quick and name != "layer":
            continue
        for mode in ("forward",) if args.quick else ("forward", "train"):
            for path in PATHS:
                if path == "numba" and not backends.numba_available():
                    continue
                torch._dynamo.reset()
                with core_path(path):
                    compile_s, eager_ms, compiled_ms = measure(make, x, mode, repeats)
                print(f"| {name} | {mode} | {path} | {compile_s:.1f} | {eager_ms:.1f} | {compiled_ms:.1f} | "
                      f"{eager_ms / compiled_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
