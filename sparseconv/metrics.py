"""Segmentation metrics from a confusion matrix.

``confusion[t, p]`` counts the items (points or voxels) of true class ``t`` predicted as ``p``.
Confusion matrices add, so a metric over many scans, or over the shards of several processes
(``sparseconv.distributed.all_reduce_sum``), is the metric of the summed matrix.

Per-class IoU is ``TP / (TP + FP + FN)``; a class that never occurs in the ground truth and is
never predicted has no IoU (``nan``) and is left out of the mean, as in the SemanticKITTI and
ScanNet benchmarks.
"""
from __future__ import annotations

import torch

from ._validation import positive_int

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "overall_accuracy"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = -1) -> torch.Tensor:
    """int64 ``[num_classes, num_classes]`` counts of ``(target, pred)``; ``target == ignore_index`` is skipped.

    Raises ``ValueError`` for mismatched shapes, non-integer labels, or labels outside
    ``[0, num_classes)`` (other than ``ignore_index`` in ``target``).
    """
    num_classes = positive_int(num_classes, "num_classes")
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of class ids, got {getattr(t, 'dtype', type(t))}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    keep = target != ignore_index
    pred, target = pred[keep].long(), target[keep].long()
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} has class ids outside [0, {num_classes}): min {int(t.min())}, max {int(t.max())}")
    flat = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes).cpu()


def _check_confusion(confusion: torch.Tensor) -> torch.Tensor:
    if not isinstance(confusion, torch.Tensor) or confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] tensor, got {getattr(confusion, 'shape', confusion)}")
    return confusion.double()


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """float64 ``[C]``: ``TP / (TP + FP + FN)`` per class, ``nan`` for a class absent from both
    the ground truth and the predictions."""
    c = _check_confusion(confusion)
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean of :func:`iou_per_class` over the classes that have one (``nan`` if none has)."""
    iou = iou_per_class(confusion)
    valid = ~torch.isnan(iou)
    return float(iou[valid].mean()) if bool(valid.any()) else float("nan")


def overall_accuracy(confusion: torch.Tensor) -> float:
    """Fraction of items predicted correctly (``nan`` for an empty matrix)."""
    c = _check_confusion(confusion)
    total = float(c.sum())
    return float(c.diagonal().sum()) / total if total else float("nan")
