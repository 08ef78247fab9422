"""Train MinkUNet for semantic segmentation of simulated LiDAR street scans.

    python examples/train_segmentation.py                      # ~8 min on a 2-core CPU
    python examples/train_segmentation.py --resume runs/segmentation/last.pt
    python examples/train_segmentation.py --nproc 2            # DDP over gloo (nccl on GPU)
    python examples/train_segmentation.py --bf16               # bfloat16 autocast

Data: ``--train-scenes`` street scans simulated on the fly (:class:`sparseconv.data.SyntheticScans`,
a ``--beams`` x ``--columns`` scanner, street seeds from 1000 on) and ``--val-scenes`` held-out
scans of *other* streets (seeds from 100000 on), never seen in training; the sample scans shipped
in ``datasets/`` (seeds 0-2) are unseen too, so ``infer.py`` on them is a fair test. Features per point: ``x, y, z``
(metres from the sensor) and intensity; 7 classes (road, sidewalk, building, car, pole,
vegetation, terrain). Training scans get a random rotation about the vertical axis and a random
mirror, drawn from ``(seed, epoch, scan)`` so a run is reproducible and a resumed run continues
exactly as an uninterrupted one would.

Per epoch it prints the mean training loss and the training mIoU (on voxels), then evaluates the
held-out scans per *point* (each point takes its voxel's prediction): mIoU, per-class IoU and
accuracy. It writes to ``--out``: ``last.pt`` (everything needed to resume), ``best.pt`` (best
held-out mIoU), ``metrics.json`` (the history) and ``confusion.png`` (held-out confusion matrix).

``--nproc N`` starts N processes (``sparseconv.distributed.launch``) joined by DDP; each takes
its share of the scans through a ``DistributedSampler``, BatchNorm becomes
``sparseconv.nn.SyncBatchNorm``, and the loss is the sum over the voxels of the global batch
divided by their global count, so N processes with per-process batch ``b`` compute the
gradient of a single process with batch ``N*b`` (the scans of each global batch are the same
ones too; a test checks that the two runs end with equal weights). Evaluation is sharded and the confusion
matrices summed. Checkpoints are written by rank 0 and hold the unwrapped model's state.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import sparseconv.nn as snn  # noqa: E402
from sparseconv.data import SparseCollate, SyntheticScans  # noqa: E402
from sparseconv.data.datasets import CloudSample  # noqa: E402
from sparseconv.data.synthetic import CLASS_COLORS, SEMANTIC_CLASSES  # noqa: E402
from sparseconv.distributed import all_reduce_sum, is_main_process, launch  # noqa: E402
from sparseconv.metrics import confusion_matrix, iou_per_class, mean_iou, overall_accuracy  # noqa: E402
from sparseconv.models import MinkUNet  # noqa: E402
from sparseconv.viz import render_confusion_matrix, save_png  # noqa: E402

FEATURES = ("xyz", "intensity")
TRAIN_SEED_BASE = 1_000  # the shipped sample scans (datasets/, seeds 0-2) stay unseen
VAL_SEED_BASE = 100_000
IGNORE = -1
ALIGN = 16  # MinkUNet's total stride: voxelize(align=ALIGN) makes a scan's coarse cells batch-independent


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

class Augmented(Dataset):
    """``dataset`` with a random yaw rotation and mirror per scan, drawn from ``(seed, epoch, index)``.

    The ``x, y, z`` feature columns turn with the points.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> CloudSample:
        sample = self.dataset[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        yaw = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(yaw), math.sin(yaw)
        turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
        if rng.random() < 0.5:
            turn[:, 1] *= -1  # mirror y before turning
        points = sample.points @ turn.T
        feats = sample.feats.copy()
        feats[:, :3] = points
        return CloudSample(points.astype(np.float32), feats, sample.labels, sample.name)


def scan_datasets(args) -> tuple:
    kwargs = dict(num_beams=args.beams, horizontal_resolution=args.columns, features=FEATURES)
    train = SyntheticScans(args.train_scenes, "lidar", seed=TRAIN_SEED_BASE + args.seed, **kwargs)
    val = SyntheticScans(args.val_scenes, "lidar", seed=VAL_SEED_BASE + args.seed, **kwargs)
    return Augmented(train, args.seed), val


# --------------------------------------------------------------------------------------
# Model and checkpoints
# --------------------------------------------------------------------------------------

def model_config(args) -> Dict:
    """What ``infer.py`` needs to rebuild the network and prepare a scan like training did."""
    return {
        "depth": args.depth,
        "base_channels": args.base_channels,
        "in_channels": 4,
        "num_classes": len(SEMANTIC_CLASSES),
        "stem_kernel_size": 3,
        "voxel_size": args.voxel_size,
        "features": list(FEATURES),
        "class_names": list(SEMANTIC_CLASSES),
        "class_colors": CLASS_COLORS.tolist(),
    }


def build_model(config: Dict, norm_layer=snn.BatchNorm) -> MinkUNet:
    return MinkUNet(
        config["in_channels"], config["num_classes"], config["depth"], config["base_channels"],
        stem_kernel_size=config["stem_kernel_size"], norm_layer=norm_layer,
    )


def save_checkpoint(path: str, state: Dict) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a half checkpoint


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


# --------------------------------------------------------------------------------------
# Train / evaluate
# --------------------------------------------------------------------------------------

def train_epoch(model, loader, optimizer, scheduler, device, args, epoch: int, num_classes: int) -> Dict:
    model.train()
    loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of voxel losses, voxels)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not is_main_process() or args.quiet,
               leave=False, dynamic_ncols=True)
    for batch in bar:
        batch = batch.to(device)
        labels = batch.voxel_labels
        count = (labels != IGNORE).sum().to(torch.float64)
        global_count = all_reduce_sum(count.reshape(1).cpu())[0].clamp(min=1)
        world = dist.get_world_size() if dist.is_initialized() else 1
        with autocast(device, args.bf16):
            logits = model(batch.tensor).feats
        loss_total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
        # DDP averages gradients over processes; scaling by world / global count makes that
        # average the gradient of the mean loss over every voxel of the global batch.
        loss = loss_total * (world / float(global_count))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += torch.tensor([float(loss_total.detach()), float(count)], dtype=torch.float64)
        confusion += confusion_matrix(logits.detach().argmax(1).cpu(), labels.cpu(), num_classes, IGNORE)
        bar.set_postfix(loss=f"{float(loss_total.detach()) / max(float(count), 1):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    loss_sum = all_reduce_sum(loss_sum)
    confusion = all_reduce_sum(confusion)
    return {"loss": float(loss_sum[0] / loss_sum[1].clamp(min=1)), "miou": mean_iou(confusion)}


@torch.no_grad()
def evaluate(model, dataset, collate, device, args, num_classes: int) -> torch.Tensor:
    """Point-level confusion matrix over this process's share of ``dataset`` (all of it when
    alone), summed over processes."""
    model.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for index in range(rank, len(dataset), world):
        batch = collate([dataset[index]]).to(device)
        with autocast(device, args.bf16):
            logits = model(batch.tensor).feats
        point_pred = logits.argmax(1)[batch.point_to_voxel]
        confusion += confusion_matrix(point_pred.cpu(), batch.labels.cpu(), num_classes, IGNORE)
    return all_reduce_sum(confusion)


def run(rank: int, world_size: int, args) -> Optional[Dict]:
    """One process of a (possibly distributed) run; returns the history on rank 0."""
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world_size))
    torch.manual_seed(args.seed)
    main = is_main_process()
    os.makedirs(args.out, exist_ok=True)

    checkpoint = None
    if args.resume:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
        config = checkpoint["config"]
    else:
        config = model_config(args)
    num_classes = config["num_classes"]
    norm = snn.SyncBatchNorm if world_size > 1 else snn.BatchNorm
    model = build_model(config, norm).to(device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    net = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model

    train_set, val_set = scan_datasets(args)
    collate = SparseCollate(config["voxel_size"], align=ALIGN)
    # One sampler for every world size: the shuffle of an epoch is a permutation seeded by
    # (seed, epoch), and process r takes every N-th scan of it. So N processes with batch b see
    # the same global batches as one process with batch N*b, and a resumed run the same order.
    sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train_set, args.batch_size, sampler=sampler, collate_fn=collate)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(loader),
                                                    pct_start=0.1)
    history: List[Dict] = []
    best, start_epoch, elapsed = -1.0, 0, 0.0
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        history, best = checkpoint["history"], checkpoint["best_miou"]
        start_epoch, elapsed = checkpoint["epoch"] + 1, checkpoint["train_seconds"]
        if main:
            print(f"resumed from {args.resume} after epoch {start_epoch} ({elapsed:.0f} s of training so far)")
    if main:
        params = sum(p.numel() for p in model.parameters())
        print(f"MinkUNet{config['depth']} base {config['base_channels']}: {params:,} parameters; "
              f"{len(train_set)} training scans, {len(val_set)} held-out; {world_size} process(es), "
              f"{torch.get_num_threads()} thread(s) each, {'bf16 autocast' if args.bf16 else 'float32'}")

    for epoch in range(start_epoch, args.stop_after or args.epochs):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        tic = time.perf_counter()
        stats = train_epoch(net, loader, optimizer, scheduler, device, args, epoch, num_classes)
        elapsed += time.perf_counter() - tic
        record = {"epoch": epoch + 1, "train_loss": stats["loss"], "train_miou": stats["miou"],
                  "train_seconds": round(elapsed, 1)}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            confusion = evaluate(model, val_set, collate, device, args, num_classes)
            iou = iou_per_class(confusion)
            record.update(val_miou=mean_iou(confusion), val_accuracy=overall_accuracy(confusion),
                          val_iou={n: (None if math.isnan(v) else round(float(v), 4))
                                   for n, v in zip(config["class_names"], iou.tolist())})
            if main:
                save_png(os.path.join(args.out, "confusion.png"), render_confusion_matrix(
                    confusion.numpy(), config["class_names"],
                    title=f"held-out scans, epoch {epoch + 1}"))
        history.append(record)
        improved = record.get("val_miou", -1.0) > best
        best = max(best, record.get("val_miou", -1.0))
        if main:
            line = (f"epoch {epoch + 1:3d}  loss {stats['loss']:.4f}  train mIoU {100 * stats['miou']:5.1f}%  "
                    f"[{elapsed:6.0f} s]")
            if "val_miou" in record:
                line += f"  held-out mIoU {100 * record['val_miou']:5.1f}%  acc {100 * record['val_accuracy']:5.1f}%"
            print(line, flush=True)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "config": config, "history": history,
                     "best_miou": best, "train_seconds": elapsed, "args": vars(args)}
            save_checkpoint(os.path.join(args.out, "last.pt"), state)
            if improved:
                save_checkpoint(os.path.join(args.out, "best.pt"), state)
            with open(os.path.join(args.out, "metrics.json"), "w") as f:
                json.dump(history, f, indent=1)
    if main and history and "val_iou" in history[-1]:
        last = history[-1]
        print("held-out IoU per class: " + ", ".join(
            f"{n} {'-' if v is None else f'{100 * v:.1f}'}" for n, v in last["val_iou"].items()))
        print(f"wrote {args.out}/last.pt, best.pt, metrics.json, confusion.png")
    return history if main else None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/segmentation", help="output folder (checkpoints, metrics, picture)")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--train-scenes", type=int, default=32, help="simulated training scans per epoch")
    p.add_argument("--val-scenes", type=int, default=4, help="held-out scans (other streets)")
    p.add_argument("--batch-size", type=int, default=2, help="scans per step and process")
    p.add_argument("--beams", type=int, default=32, help="scanner beams")
    p.add_argument("--columns", type=int, default=1024, help="scanner horizontal resolution")
    p.add_argument("--voxel-size", type=float, default=0.1, help="metres")
    p.add_argument("--depth", type=int, default=14, choices=(14, 18, 34), help="MinkUNet depth")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--eval-every", type=int, default=4, help="evaluate every N epochs (and after the last)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.add_argument("--nproc", type=int, default=1, help="processes (DDP over gloo on CPU, nccl on GPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (default: cores / nproc)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resume", default=None,
                   help="a last.pt to continue from; the run's settings come from it (pass the same --epochs)")
    p.add_argument("--stop-after", type=int, default=0, metavar="EPOCH",
                   help="stop after this epoch (a time-limited job); continue later with --resume")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    for name in ("epochs", "train_scenes", "val_scenes", "batch_size", "beams", "columns", "base_channels",
                 "eval_every", "nproc"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.stop_after <= args.epochs:
        p.error(f"--stop-after must be between 1 and --epochs ({args.epochs}), got {args.stop_after}")
    if args.voxel_size <= 0 or args.lr <= 0:
        p.error("--voxel-size and --lr must be positive")
    if args.device == "cuda" and torch.cuda.device_count() < args.nproc:
        p.error(f"--nproc {args.nproc} needs as many GPUs, found {torch.cuda.device_count()}")
    if args.resume:
        if not os.path.isfile(args.resume):
            p.error(f"--resume: no such checkpoint {args.resume}")
        # A resumed run continues the saved one: its data, model and optimiser settings come from
        # the checkpoint; only where to write and how to run (processes, threads) may change.
        saved = torch.load(args.resume, map_location="cpu", weights_only=False)["args"]
        if args.epochs != saved["epochs"]:
            p.error(f"--epochs {args.epochs} differs from the checkpoint's {saved['epochs']} (the learning-rate "
                    "schedule spans the whole run); resume with the same --epochs")
        keep = {"out", "nproc", "threads", "device", "resume", "quiet", "stop_after"}
        for name, value in saved.items():
            if name not in keep:
                setattr(args, name, value)
    return args


def main(argv=None) -> Optional[List[Dict]]:
    args = parse_args(argv)
    if args.nproc == 1:
        return run(0, 1, args)
    launch(run, args.nproc, args, backend="nccl" if args.device == "cuda" else "gloo")
    with open(os.path.join(args.out, "metrics.json")) as f:
        return json.load(f)


if __name__ == "__main__":
    main()
