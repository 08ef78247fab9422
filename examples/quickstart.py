"""Quickstart: a synthetic 64-beam LiDAR scan through a small sparse U-Net, on the CPU.

    python examples/quickstart.py [--seed 0] [--voxel-size 0.1]

Simulates a scan (Open3D ray casting of a procedural street), voxelizes it, runs a
two-level sparse U-Net (submanifold convs, a strided conv and its inverse) forward and
backward, maps the per-voxel outputs back to the points, and checks one layer against
its dense twin on a crop of the scan.
"""
import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import sparseconv.nn as snn  # noqa: E402
from sparseconv import SparseTensor, devoxelize, voxelize  # noqa: E402
from sparseconv.data import SEMANTIC_CLASSES, generate_lidar_scan  # noqa: E402
from sparseconv.testing import check_dense_equivalence  # noqa: E402


class TinyUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(snn.SubMConv3d(in_channels, width, 3), snn.BatchNorm(width), snn.ReLU())
        self.down = nn.Sequential(snn.SparseConv3d(width, 2 * width, 2, stride=2), snn.BatchNorm(2 * width), snn.ReLU())
        self.inner = nn.Sequential(snn.SubMConv3d(2 * width, 2 * width, 3), snn.BatchNorm(2 * width), snn.ReLU())
        self.up = snn.SparseInverseConv3d(2 * width, width, 2, stride=2)
        self.head = snn.SubMConv3d(2 * width, num_classes, 1)

    def forward(self, x: SparseTensor) -> SparseTensor:
        skip = self.stem(x)
        y = self.up(self.inner(self.down(skip)))  # back on the stem's coordinates, maps reused
        return self.head(y.replace(torch.cat([y.feats, skip.feats], 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voxel-size", type=float, default=0.1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    scan = generate_lidar_scan(seed=args.seed)
    t1 = time.perf_counter()
    points = torch.from_numpy(scan.points).float()
    feats = torch.from_numpy(scan.features()).float()  # x, y, z, intensity
    st, point_to_voxel = voxelize(points, args.voxel_size, feats=feats)
    t2 = time.perf_counter()
    print(f"scan: {len(points):,} points ({t1 - t0:.2f} s); voxelized at {args.voxel_size} m: "
          f"{len(st):,} voxels, grid {st.spatial_shape} ({1000 * (t2 - t1):.0f} ms)")

    model = TinyUNet(feats.shape[1], len(SEMANTIC_CLASSES))
    logits = model(st)
    t3 = time.perf_counter()
    loss = nn.functional.cross_entropy(devoxelize(logits, point_to_voxel), torch.from_numpy(scan.labels))
    loss.backward()
    t4 = time.perf_counter()
    print(f"U-Net forward {1000 * (t3 - t2):.0f} ms, loss + backward {1000 * (t4 - t3):.0f} ms, loss {loss.item():.3f}")
    print(f"kernel maps built on the input coordinates: {st.coordinate_set.kernel_map_builds}")

    # One layer against its dense twin, in float64, on the densest 24^3 block of the scan.
    crop = st.crop(st.densest_block((24, 24, 24)), (24, 24, 24)).to(torch.float64)
    report = check_dense_equivalence(model.stem[0].double(), crop)
    print(f"dense twin check of {report.module} on {report.num_sites} voxels: "
          f"{'PASS' if report.passed else 'FAIL'} (max abs error {report.max_abs_error:.2e})")


if __name__ == "__main__":
    main()
