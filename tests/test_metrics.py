"""Confusion matrix, IoU, mIoU and accuracy against counts made by hand."""
import math

import pytest
import torch

from sparseconv.metrics import confusion_matrix, iou_per_class, mean_iou, overall_accuracy


def test_confusion_matrix_counts_every_pair_and_skips_ignored():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(-1, 5, (500,), generator=gen)
    pred = torch.randint(0, 5, (500,), generator=gen)
    cm = confusion_matrix(pred, target, 5)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(target.tolist(), pred.tolist()):
        if t != -1:
            expected[t, p] += 1
    assert torch.equal(cm, expected)
    assert int(cm.sum()) == int((target != -1).sum())


def test_iou_and_accuracy_on_a_worked_example():
    # true: 0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    cm = confusion_matrix(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 2]), 4)
    iou = iou_per_class(cm)
    # class 0: TP 2, FP 0, FN 1 -> 2/3; class 1: TP 1, FP 1, FN 1 -> 1/3; class 2: TP 1, FP 1 -> 1/2
    assert iou[:3].tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert math.isnan(iou[3])  # class 3 neither occurs nor is predicted
    assert mean_iou(cm) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert overall_accuracy(cm) == pytest.approx(4 / 6)


def test_confusion_matrices_add_across_shards():
    gen = torch.Generator().manual_seed(1)
    target, pred = torch.randint(0, 3, (90,), generator=gen), torch.randint(0, 3, (90,), generator=gen)
    parts = sum(confusion_matrix(pred[i::3], target[i::3], 3) for i in range(3))
    assert torch.equal(parts, confusion_matrix(pred, target, 3))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="pred has class ids outside \\[0, 3\\)"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="target has class ids outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([-2]), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="pred must be an integer tensor"):
        confusion_matrix(torch.tensor([0.5]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        confusion_matrix(torch.tensor([0]), torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="confusion must be a square"):
        iou_per_class(torch.zeros(2, 3))
