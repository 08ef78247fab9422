"""The training and inference examples, run end to end on tiny simulated scans: resume continues a
run exactly, N processes equal one process with the same global batch, bf16 autocast trains, and
inference writes a labelled scan and a picture."""
import json
import os
import sys

import numpy as np
import pytest
import torch

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
sys.path.insert(0, os.path.abspath(EXAMPLES))

import infer  # noqa: E402
import train_segmentation as train  # noqa: E402

from sparseconv import io as sio  # noqa: E402

TINY = ["--train-scenes", "2", "--val-scenes", "1", "--beams", "16", "--columns", "256", "--voxel-size", "0.2",
        "--base-channels", "4", "--eval-every", "1", "--quiet", "--threads", "1"]


def _run(out, *extra):
    return train.main(["--out", str(out), *TINY, *extra])


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_training_writes_checkpoints_metrics_and_picture(tmp_path):
    history = _run(tmp_path, "--epochs", "2")
    assert [h["epoch"] for h in history] == [1, 2]
    for name in ("last.pt", "best.pt", "metrics.json", "confusion.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == history
    last = history[-1]
    assert 0.0 <= last["val_miou"] <= 1.0 and 0.0 <= last["val_accuracy"] <= 1.0
    assert set(last["val_iou"]) == set(train.SEMANTIC_CLASSES)
    assert history[1]["train_loss"] < history[0]["train_loss"]  # it learns something even this small
    state = _state(tmp_path / "last.pt")
    assert state["epoch"] == 1 and state["config"]["num_classes"] == len(train.SEMANTIC_CLASSES)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    full = _run(straight, "--epochs", "2")
    first = _run(interrupted, "--epochs", "2", "--stop-after", "1")
    assert _untimed(first) == _untimed(full[:1])
    resumed = train.main(["--out", str(interrupted), "--resume", str(interrupted / "last.pt"), "--epochs", "2",
                          "--quiet", "--threads", "1"])
    assert _untimed(resumed) == _untimed(full)
    a, b = _state(straight / "last.pt"), _state(interrupted / "last.pt")
    for part in ("model", "optimizer"):
        assert _flatten(a[part]).keys() == _flatten(b[part]).keys()
        for key, value in _flatten(a[part]).items():
            other = _flatten(b[part])[key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, (part, key)


def _untimed(history):
    """The history without its wall-clock field, which no two runs share."""
    return [{k: v for k, v in record.items() if k != "train_seconds"} for record in history]


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    if isinstance(tree, (list, tuple)):
        return _flatten(dict(enumerate(tree)), prefix)
    return {prefix: tree}


def test_resume_rejects_a_different_epoch_count(tmp_path, capsys):
    _run(tmp_path, "--epochs", "2", "--stop-after", "1")
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path), "--resume", str(tmp_path / "last.pt"), "--epochs", "3"])
    assert "--epochs 3 differs from the checkpoint's 2" in capsys.readouterr().err


def test_bad_arguments_name_the_option(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--epochs", "0"])
    assert "--epochs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--resume", "/nonexistent/last.pt"])
    assert "no such checkpoint" in capsys.readouterr().err


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    """DDP over gloo with SyncBatchNorm, 2 processes x batch 1 == 1 process x batch 2."""
    one = _run(tmp_path / "one", "--epochs", "1", "--batch-size", "2")
    two = _run(tmp_path / "two", "--epochs", "1", "--batch-size", "1", "--nproc", "2")
    assert two[0]["train_loss"] == pytest.approx(one[0]["train_loss"], rel=1e-5)
    assert two[0]["val_miou"] == pytest.approx(one[0]["val_miou"], abs=1e-3)
    a, b = _state(tmp_path / "one" / "last.pt")["model"], _state(tmp_path / "two" / "last.pt")["model"]
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def test_bf16_autocast_training_runs_and_learns(tmp_path):
    history = _run(tmp_path, "--epochs", "2", "--bf16")
    assert history[1]["train_loss"] < history[0]["train_loss"]
    state = _state(tmp_path / "last.pt")["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # master weights stay fp32


def test_infer_writes_labelled_scan_and_picture(tmp_path):
    _run(tmp_path / "run", "--epochs", "1")
    scan_path = os.path.join(os.path.dirname(__file__), "..", "datasets", "street_000.npz")
    written = infer.main([str(tmp_path / "run" / "last.pt"), scan_path, "--out", str(tmp_path / "pred")])
    scan = sio.read_scan(scan_path)
    ply, npz = sio.read_scan(written["ply"]), np.load(written["npz"])
    np.testing.assert_array_equal(ply.points, scan.points)
    np.testing.assert_array_equal(ply.labels, npz["labels"])
    assert npz["labels"].shape == (len(scan),) and npz["labels"].min() >= 0
    assert npz["labels"].max() < len(train.SEMANTIC_CLASSES)
    assert ((npz["scores"] > 0) & (npz["scores"] <= 1)).all()
    # the labels are the network's: re-run the model and compare
    model, config = infer.load_checkpoint(str(tmp_path / "run" / "last.pt"))
    labels, _ = infer.predict(model, config, scan)
    np.testing.assert_array_equal(labels.numpy(), npz["labels"])
    from PIL import Image

    with Image.open(written["png"]) as image:
        assert image.size[0] > 600 and image.size[1] > 300
    page = open(written["html"], encoding="utf-8").read()  # the browser viewer beside the picture
    assert '"name":"prediction"' in page and '"name":"score"' in page


def test_infer_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    with pytest.raises(ValueError, match="not a checkpoint written by train_segmentation.py"):
        infer.load_checkpoint(str(bogus))
