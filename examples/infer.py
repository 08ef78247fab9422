"""Label a scan with a trained segmentation checkpoint; write the labelled scan and a picture.

    python examples/infer.py runs/segmentation/best.pt datasets/street_000.npz
    python examples/infer.py CHECKPOINT SCAN [--out DIR] [--bf16]

The checkpoint (from ``train_segmentation.py``) carries the network's configuration, the voxel
size, the input features and the class table, so the scan is prepared exactly as in training:
read with :func:`sparseconv.io.read_scan` (PLY, PCD, KITTI ``.bin``, NPZ, text, LAS ...),
voxelized, run through MinkUNet, and each point given its voxel's class. Writes to ``--out``
(default: beside the scan):

* ``NAME.labels.ply`` -- the points coloured by predicted class, with a ``label`` property
  and the class table as ``comment label ID NAME R G B`` lines;
* ``NAME.labels.npz`` -- ``points``, ``labels`` (predicted), ``scores`` (softmax confidence),
  ``class_names`` and ``class_colors``;
* ``NAME.labels.png`` -- bird's-eye and perspective views coloured by predicted class.

When the scan has ground-truth labels with the same class ids, it also prints the mIoU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_segmentation import ALIGN, build_model  # noqa: E402

from sparseconv import io as sio  # noqa: E402
from sparseconv.metrics import confusion_matrix, mean_iou  # noqa: E402
from sparseconv.render import render_views, save_png, scan_colors  # noqa: E402
from sparseconv.engine.voxelize import voxelize  # noqa: E402


def load_checkpoint(path: str):
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "model" not in checkpoint:
        raise ValueError(f"{path}: not a checkpoint written by train_segmentation.py (no 'config'/'model')")
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint["config"]


@torch.no_grad()
def predict(model, config: Dict, scan: "sio.Scan", bf16: bool = False):
    """Per-point ``(labels int64 [P], scores float32 [P])`` for ``scan``."""
    try:
        feats = scan.features(config["features"])
    except KeyError as error:
        raise ValueError(f"the checkpoint needs features {config['features']}: {error.args[0]}") from None
    points = torch.from_numpy(np.ascontiguousarray(scan.points, dtype=np.float32))
    vox = voxelize(points, config["voxel_size"], feats=torch.from_numpy(np.ascontiguousarray(feats, np.float32)),
                   align=ALIGN)  # as in training
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(vox.tensor).feats.float()
    probs = logits.softmax(1)[vox.point_to_voxel]
    scores, labels = probs.max(1)
    return labels, scores


def main(argv=None) -> Dict[str, str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="best.pt / last.pt from train_segmentation.py")
    p.add_argument("scan", help="a point-cloud file")
    p.add_argument("--out", default=None, help="output folder (default: beside the scan)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    args = p.parse_args(argv)
    for name in ("checkpoint", "scan"):
        if not os.path.isfile(getattr(args, name)):
            p.error(f"{name}: no such file {getattr(args, name)}")

    model, config = load_checkpoint(args.checkpoint)
    scan = sio.read_scan(args.scan)
    tic = time.perf_counter()
    labels, scores = predict(model, config, scan, args.bf16)
    seconds = time.perf_counter() - tic

    names, colors = config["class_names"], np.asarray(config["class_colors"], dtype=np.uint8)
    label_names = dict(enumerate(names))
    label_colors = {i: tuple(int(c) for c in colors[i]) for i in range(len(names))}
    out_dir = args.out or os.path.dirname(os.path.abspath(args.scan))
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, os.path.basename(args.scan).split(".")[0] + ".labels")
    pred = labels.numpy()
    point_colors = colors[pred]
    attributes = {"label": pred.astype(np.int32), "red": point_colors[:, 0], "green": point_colors[:, 1],
                  "blue": point_colors[:, 2], "score": scores.numpy().astype(np.float32)}
    written = {
        "ply": sio.write_scan(stem + ".ply", scan.points, attributes, label_names=label_names,
                              label_colors=label_colors),
        "npz": sio.write_scan(stem + ".npz", scan.points, {"labels": pred, "scores": scores.numpy()},
                              label_names=label_names, label_colors=label_colors),
    }
    rgb, legend = scan_colors(scan.points, "label", labels=pred, label_names=label_names, label_colors=label_colors)
    subtitle = f"{len(pred):,} points, {seconds:.2f} s"
    truth = scan.labels
    if truth is not None and truth.shape == pred.shape:
        known = (truth >= 0) & (truth < len(names))
        if known.any():
            cm = confusion_matrix(labels[torch.from_numpy(known)], torch.from_numpy(truth[known].astype(np.int64)),
                                  len(names))
            miou = mean_iou(cm)
            subtitle += f", mIoU vs ground truth {100 * miou:.1f}%"
            print(f"mIoU against the scan's own labels: {100 * miou:.1f}%")
    image = render_views(scan.points, rgb, legend=legend, title=f"{os.path.basename(args.scan)}: predicted classes",
                         subtitle=subtitle)
    written["png"] = save_png(stem + ".png", image)
    print(f"labelled {len(pred):,} points in {seconds:.2f} s; wrote " + ", ".join(written.values()))
    return written


if __name__ == "__main__":
    main()
