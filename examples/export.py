"""Export MinkUNet14 on one scan's voxels with torch.export: save, load, run, compare with eager.

    python examples/export.py                       # writes runs/export/minkunet14.pt2
    python examples/export.py --onnx                # also minkunet14.onnx (needs onnx + onnxscript)

The recipe (the README's "Compile and export" section):

1. voxelize the scan into a SparseTensor ``x``;
2. ``sparseconv.engine.plan(model, x)``: build every kernel map the network needs, eagerly;
3. ``torch.export.export(FixedCoordinates(model, x.coordinate_set), (x.feats,))``: the network on
   these coordinates as a program of plain tensors, its kernel maps stored as constants;
4. ``torch.export.save`` / ``torch.export.load`` (``import sparseconv`` first: it registers the
   ``sparseconv::gather_gemm_scatter`` operator the program calls), then ``program.module()(feats)``.

The loaded program runs on these coordinates with any features of the right shape; a new scan
needs a new export (its maps are different). The result equals eager bit for bit.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv.data import generate_lidar_scan  # noqa: E402
from sparseconv.engine import FixedCoordinates, plan  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402
from sparseconv.models import minkunet14  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/export", help="output folder (default runs/export)")
    parser.add_argument("--voxel-size", type=float, default=0.1, help="voxel size in metres (default 0.1)")
    parser.add_argument("--beams", type=int, default=32, help="scanner beams (default 32)")
    parser.add_argument("--columns", type=int, default=1024, help="scanner columns per revolution (default 1024)")
    parser.add_argument("--base-channels", type=int, default=16, help="MinkUNet14 base width (default 16)")
    parser.add_argument("--onnx", action="store_true", help="also write an ONNX model (custom-domain core op)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    scan = generate_lidar_scan(0, args.beams, args.columns)
    points = torch.as_tensor(scan.points, dtype=torch.float32)
    intensity = torch.as_tensor(scan.intensity, dtype=torch.float32).reshape(-1, 1)
    x = voxelize(points, args.voxel_size, torch.cat([points, intensity], 1)).tensor
    torch.manual_seed(0)
    model = minkunet14(4, 7, base_channels=args.base_channels).eval()

    plan(model, x)  # 2. every kernel map built and cached on x's coordinates
    start = time.perf_counter()
    program = torch.export.export(FixedCoordinates(model, x.coordinate_set), (x.feats,))  # 3.
    export_s = time.perf_counter() - start
    path = os.path.join(args.out, "minkunet14.pt2")
    torch.export.save(program, path)  # 4.
    loaded = torch.export.load(path).module()
    logits = loaded(x.feats)
    with torch.no_grad():
        eager = model(x).feats
    identical = torch.equal(logits, eager)
    print(f"{len(x):,} voxels -> logits {tuple(logits.shape)}; exported in {export_s:.1f} s to {path} "
          f"({os.path.getsize(path) / 2**20:.1f} MiB); loaded program equals eager: {identical}")
    result = {"program": path, "identical": identical, "num_voxels": len(x)}
    if args.onnx:
        from sparseconv.engine.onnx_export import onnx_translation_table

        onnx_path = os.path.join(args.out, "minkunet14.onnx")
        onnx_program = torch.onnx.export(FixedCoordinates(model, x.coordinate_set), (x.feats,), dynamo=True,
                                         custom_translation_table=onnx_translation_table(), verbose=False)
        onnx_program.save(onnx_path)
        custom = sum(node.domain == "sparseconv" for node in onnx_program.model_proto.graph.node)
        print(f"ONNX model with {custom} sparseconv::GatherGemmScatter nodes written to {onnx_path}")
        result.update(onnx=onnx_path, onnx_custom_nodes=custom)
    return result


if __name__ == "__main__":
    main()
