"""README table: parameters, MACs and forward time (eval, no_grad, kernel maps built inside) of the model zoo."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv import voxelize
from sparseconv.analysis import summary, summary_table
from sparseconv.data import SEMANTIC_CLASSES, generate_lidar_scan
from sparseconv.models import centerpoint_backbone, minkunet18, second_backbone, sparse_resnet18, voxelize_in_range

torch.manual_seed(0)
scan = generate_lidar_scan(0)  # default 64-beam x 2048 sample scan
points, feats = torch.from_numpy(scan.points), torch.from_numpy(scan.features())
car = scan.points[scan.labels == SEMANTIC_CLASSES.index("car")]
nearest = car[np.argmin(np.linalg.norm(car[:, :2], axis=1))]
car = torch.from_numpy(car[np.linalg.norm(car[:, :2] - nearest[:2], axis=1) < 3.0])


def best(model, x, runs=3):  # fastest of a few forwards, each on fresh coordinates (maps built inside)
    return min((summary(model, x) for _ in range(runs)), key=lambda s: s.forward_time_s)

unet = minkunet18(4, len(SEMANTIC_CLASSES))  # base_channels=32
rows = {
    "MinkUNet18, scan @ 5 cm": best(unet, voxelize(points, 0.05, feats).tensor),
    "MinkUNet18, scan @ 10 cm": best(unet, voxelize(points, 0.1, feats).tensor),
    "SECOND backbone, scan @ (10, 10, 20) cm, grid 1024x1024x41": best(
        second_backbone(4), voxelize_in_range(points, (0.1, 0.1, 0.2), (-51.2, -51.2, -5.0, 51.2, 51.2, 3.2), feats)),
    "CenterPoint backbone, same input": best(
        centerpoint_backbone(4), voxelize_in_range(points, (0.1, 0.1, 0.2), (-51.2, -51.2, -5.0, 51.2, 51.2, 3.2), feats)),
    "SparseResNet18, car @ 2 cm": best(sparse_resnet18(1, len(SEMANTIC_CLASSES)), voxelize(car - car.mean(0), 0.02).tensor),
}
print(summary_table(rows))
print()
print(rows["MinkUNet18, scan @ 10 cm"].to_markdown(layers=False))
