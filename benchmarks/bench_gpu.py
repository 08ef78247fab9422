"""GPU benchmark: the Triton backend against the torch path on the same GPU, and against spconv's CUDA
build when it is installed.

Sections (all on the simulated 64-beam street scan, ``sparseconv.data.generate_lidar_scan``):

* maps: voxelization (5 cm) and kernel-map construction (SubM k3, Conv k3 s2) on the device;
* layers: the core op of SubMConv3d k3 and SparseConv3d k3 s2 at 16-128 channels, forward and
  backward (feature + weight gradients) with a cached map, ``backend="torch"`` vs ``backend="triton"``
  and, when ``import spconv.pytorch`` works, spconv's SubMConv3d / SparseConv3d (its map cached
  through ``indice_key``);
* models: MinkUNet14 (5 cm voxels) and the SECOND backbone (nuScenes-like range, 0.1 x 0.1 x 0.2 m)
  forward and training step (forward + backward), Triton vs the torch path.

Each in float32 (exact; no TF32) and float16 (autocast for the models). Times are medians over
interleaved repeats, each bracketed by ``torch.cuda.synchronize()``; ratios are Triton's time over
the other's (below 1: Triton faster).

Run:  python benchmarks/bench_gpu.py            (needs a CUDA device)
      python benchmarks/bench_gpu.py --quick    (quarter scan, fewer repeats)
      python benchmarks/bench_gpu.py --only layers --only models   (some sections)
      python benchmarks/bench_gpu.py --dry-run  (no GPU: a tiny scan on CPU tensors with the Triton
                                                 kernels in Triton's interpreter; checks that the script
                                                 runs, its numbers mean nothing)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from unittest import mock

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv.engine import core  # noqa: E402
from sparseconv.engine.core import gather_gemm_scatter  # noqa: E402
from sparseconv.data import SEMANTIC_CLASSES, generate_lidar_scan  # noqa: E402
from sparseconv.engine.kmap import KernelMapKey  # noqa: E402
from sparseconv.models import minkunet14, second_backbone, voxelize_in_range  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402

LAYERS = (
    ("SubMConv3d k3", KernelMapKey("submanifold", (3, 3, 3))),
    ("SparseConv3d k3 s2", KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1))),
)
DTYPES = (("fp32", torch.float32), ("fp16", torch.float16))
SECTIONS = ("maps", "layers", "models")
DETECTION_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.2)
DETECTION_VOXEL = (0.1, 0.1, 0.2)
NO_CUDA = (
    "bench_gpu.py needs a CUDA device (torch.cuda.is_available() is False); "
    "run it with --dry-run to check the script on a CPU with Triton's interpreter"
)


def medians(fns, repeats: int, device: torch.device):
    """Median milliseconds of each function, timed interleaved after one warm-up call each (on CUDA:
    compilation, autotuning and caches are not timed)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - start)
    return [1000 * statistics.median(ts) for ts in times]


def torch_path():
    """Within this context ``backend="auto"`` never picks Triton: the models run on the torch path."""
    return mock.patch.object(core, "_select_triton", return_value=None)


def spconv_module():
    try:
        import spconv.pytorch as spconv_native
    except Exception:  # not installed, or a build that does not load
        return None
    return spconv_native


def scan(config):
    s = generate_lidar_scan(0, num_beams=config["beams"], horizontal_resolution=config["columns"])
    points = torch.from_numpy(s.points)[:: config["subsample"]]
    feats = torch.from_numpy(s.features())[:: config["subsample"]]
    return points, feats


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def bench_maps(points, voxel, device, repeats):
    print("## maps (fresh coordinate set each repeat)\n")
    print("| step | sites / pairs | ms |")
    print("|---|---|---|")
    points = points.to(device)
    x = voxelize(points, voxel).tensor
    (ms,) = medians([lambda: voxelize(points, voxel)], repeats, device)
    print(f"| voxelize {voxel} m | {len(x)} | {ms:.2f} |")
    for name, key in LAYERS:
        def build(key=key):
            return voxelize(points, voxel).tensor.coordinate_set.kernel_map(key)

        pairs = build().num_pairs
        (total,) = medians([build], repeats, device)
        print(f"| voxelize + map {name} | {pairs} | {total:.2f} |")
    print()


def _spconv_layer(spconv_native, name, channels, dtype, x, device):
    """spconv's layer and input for the same sites; the map is built on the first call and cached."""
    indices = x.coords.to(torch.int32)
    feats = torch.randn(len(x), channels, device=device, dtype=dtype)
    tensor = spconv_native.SparseConvTensor(feats, indices, list(x.spatial_shape), x.batch_size)
    if name.startswith("SubM"):
        layer = spconv_native.SubMConv3d(channels, channels, 3, bias=False, indice_key="bench")
    else:
        layer = spconv_native.SparseConv3d(channels, channels, 3, 2, 1, bias=False, indice_key="bench")
    layer = layer.to(device=device, dtype=dtype)
    out = layer(tensor)  # builds and caches the map in tensor.indice_dict
    return layer, tensor, out


def bench_layers(x, channel_list, device, repeats):
    spconv_native = spconv_module() if device.type == "cuda" else None
    print("## layers (core op, cached map; ratio = triton / other)\n")
    if spconv_native is None:
        print("spconv: not importable here, its columns are left out\n")
    head = "| layer | dtype | C | pairs | fwd torch | fwd triton | ratio | bwd torch | bwd triton | ratio |"
    if spconv_native is not None:
        head += " fwd spconv | ratio | bwd spconv | ratio |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, key in LAYERS:
        kmap = x.coordinate_set.kernel_map(key)
        for dtype_name, dtype in DTYPES:
            for c in channel_list:
                gen = torch.Generator().manual_seed(c)
                feats = torch.randn(len(x), c, generator=gen).to(device, dtype)
                weight = (torch.randn(kmap.kernel_volume, 1, c, c, generator=gen) / (3 * c ** 0.5)).to(device, dtype)
                grad = torch.randn(kmap.num_outputs, c, generator=gen).to(device, dtype)
                f = feats.clone().requires_grad_()
                w = weight.clone().requires_grad_()
                outs = {b: gather_gemm_scatter(f, w, kmap, backend=b) for b in ("torch", "triton")}
                fns_fwd = [lambda b=b: gather_gemm_scatter(feats, weight, kmap, backend=b) for b in ("torch", "triton")]
                fns_bwd = [
                    lambda b=b: torch.autograd.grad(outs[b], (f, w), grad, retain_graph=True) for b in ("torch", "triton")
                ]
                if spconv_native is not None:
                    layer, tensor, out = _spconv_layer(spconv_native, name, c, dtype, x, device)
                    sp_grad = torch.randn_like(out.features)
                    fns_fwd.append(lambda: layer(tensor))
                    fns_bwd.append(lambda: torch.autograd.grad(out.features, list(layer.parameters()), sp_grad,
                                                               retain_graph=True))
                fwd = medians(fns_fwd, repeats, device)
                bwd = medians(fns_bwd, repeats, device)
                row = (f"| {name} | {dtype_name} | {c} | {kmap.num_pairs} | {fwd[0]:.2f} | {fwd[1]:.2f} | "
                       f"{ratio(fwd[1], fwd[0])} | {bwd[0]:.2f} | {bwd[1]:.2f} | {ratio(bwd[1], bwd[0])} |")
                if spconv_native is not None:
                    row += f" {fwd[2]:.2f} | {ratio(fwd[1], fwd[2])} | {bwd[2]:.2f} | {ratio(bwd[1], bwd[2])} |"
                print(row, flush=True)
    print()


def bench_models(points, feats, config, device, repeats):
    print("## models (ratio = triton / torch path)\n")
    if device.type != "cuda":
        print("dry run on CPU tensors: the triton columns are backend='auto', which takes the CPU path there\n")
    print("| model | dtype | sites | fwd torch | fwd triton | ratio | train step torch | train step triton | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    points, feats = points.to(device), feats.to(device)
    segmentation = voxelize(points, config["voxel"], feats).tensor
    detection = voxelize_in_range(points, DETECTION_VOXEL, DETECTION_RANGE, feats)
    cases = (
        ("MinkUNet14", minkunet14(feats.shape[1], len(SEMANTIC_CLASSES), base_channels=config["base"]), segmentation),
        ("SECOND backbone", second_backbone(feats.shape[1]), detection),
    )
    for name, model, x in cases:
        model = model.to(device)
        for dtype_name, dtype in DTYPES:
            def precision():
                if dtype == torch.float32:
                    return contextlib.nullcontext()
                return torch.autocast(device.type, dtype=dtype)

            def forward():
                with torch.no_grad(), precision():
                    model(x)

            def train_step():
                model.zero_grad(set_to_none=True)
                with precision():
                    out = model(x)
                    loss = (out.feats if hasattr(out, "feats") else out[0]).float().square().mean()
                loss.backward()

            def on_torch_path(fn):
                def run():
                    with torch_path():
                        fn()
                return run

            fwd = medians([on_torch_path(forward), forward], repeats, device)
            step = medians([on_torch_path(train_step), train_step], repeats, device)
            print(f"| {name} | {dtype_name} | {len(x)} | {fwd[0]:.2f} | {fwd[1]:.2f} | {ratio(fwd[1], fwd[0])} | "
                  f"{step[0]:.2f} | {step[1]:.2f} | {ratio(step[1], step[0])} |", flush=True)
    print()


FULL = {"beams": 64, "columns": 2048, "subsample": 1, "voxel": 0.05, "base": 32, "channels": (16, 32, 64, 128)}
QUICK = {**FULL, "subsample": 4}
DRY = {"beams": 4, "columns": 32, "subsample": 1, "voxel": 2.0, "base": 4, "channels": (16,)}


@contextlib.contextmanager
def interpreter():
    """Triton's interpreter for the kernels of the dry run, switched off again afterwards."""
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the scan, fewer repeats")
    parser.add_argument("--dry-run", action="store_true", help="CPU + Triton interpreter on a tiny scan (no GPU)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    args = parser.parse_args(argv)
    if args.dry_run:
        config, device, repeats = DRY, torch.device("cpu"), args.repeats or 1
    else:
        if not torch.cuda.is_available():
            sys.exit(NO_CUDA)
        config, device = (QUICK if args.quick else FULL), torch.device("cuda")
        repeats = args.repeats or (5 if args.quick else 21)
    from sparseconv.engine import backends

    if backends.triton_backend() is None:
        sys.exit(f"the Triton backend is unavailable: {backends.triton_unavailable_reason()}")
    import triton

    with interpreter() if args.dry_run else contextlib.nullcontext():
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter, dry run)"
        print(f"# bench_gpu: {name}; torch {torch.__version__}, triton {triton.__version__}; "
              f"median ms over {repeats} interleaved repeats\n")
        points, feats = scan(config)
        sections = args.only or SECTIONS
        if "maps" in sections:
            bench_maps(points, config["voxel"], device, repeats)
        if "layers" in sections:
            bench_layers(voxelize(points.to(device), config["voxel"]).tensor, config["channels"], device, repeats)
        if "models" in sections:
            bench_models(points, feats, config, device, repeats)


if __name__ == "__main__":
    main()
