"""Dataset classes over on-disk layouts, and the collate that batches clouds into one SparseTensor."""
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sparseconv import io as sio
from sparseconv import voxelize
from sparseconv.data import (
    PLYFolder,
    SemanticKITTI,
    SparseCollate,
    SyntheticScans,
    collate_clouds,
    majority_labels,
)
from sparseconv.data.datasets import CloudSample

DATASETS = os.path.join(os.path.dirname(__file__), "..", "datasets")


def _scan(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-10, 10, (n, 3)).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)


@pytest.fixture
def kitti_root(tmp_path):
    """sequences 00 (2 labelled scans), 03 (1 scan without labels), 08 (1 labelled scan)."""
    raw_ids = np.array([0, 10, 40, 48, 50, 52, 70, 252, 1], dtype=np.int64)
    for seq, frames, labelled in (("00", 2, True), ("03", 1, False), ("08", 1, True)):
        base = tmp_path / "dataset" / "sequences" / seq
        (base / "velodyne").mkdir(parents=True)
        (base / "labels").mkdir()
        for f in range(frames):
            pts, inten = _scan(100 + 10 * f, seed=int(seq) * 10 + f)
            sio.write_scan(base / "velodyne" / f"{f:06d}.bin", pts, {"intensity": inten})
            if labelled:
                sio.write_label(base / "labels" / f"{f:06d}.label", raw_ids[np.arange(len(pts)) % len(raw_ids)])
    return tmp_path / "dataset"


def test_semantickitti_layout_splits_and_label_mapping(kitti_root):
    ds = SemanticKITTI(kitti_root)
    assert len(ds) == 4 and ds.sequences == ("00", "03", "08") and ds.num_classes == 19
    sample = ds[0]
    assert sample.points.shape == (100, 3) and sample.feats.shape == (100, 4)
    assert ds.feature_names == ("x", "y", "z", "intensity")
    np.testing.assert_array_equal(sample.feats[:, :3], sample.points)
    raw = np.array([0, 10, 40, 48, 50, 52, 70, 252, 1])[np.arange(100) % 9]
    # unlabeled/outlier/other-structure -> ignore; moving-car -> car; road, sidewalk, building, vegetation
    expected = np.array([-1, 0, 8, 10, 12, -1, 14, 0, -1])[np.arange(100) % 9]
    np.testing.assert_array_equal(sample.labels, expected)
    assert ds.class_names[8] == "road"
    assert ds[2].labels is None  # sequence 03 has no label files
    assert len(SemanticKITTI(kitti_root, "val")) == 1
    assert len(SemanticKITTI(kitti_root, "train")) == 3  # 00 and 03 of the train split are present
    assert len(SemanticKITTI(kitti_root / "sequences", [0, "08"])) == 3
    raw_ds = SemanticKITTI(kitti_root, 0, remap=False, features=("intensity",))
    np.testing.assert_array_equal(raw_ds[0].labels, raw)
    assert raw_ds[0].feats.shape == (100, 1)
    assert ds[-1].name.endswith(os.path.join("08", "velodyne", "000000.bin"))
    with pytest.raises(IndexError):
        ds[4]


def test_semantickitti_errors(kitti_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        SemanticKITTI(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no 'sequences' folder"):
        SemanticKITTI(tmp_path / "dataset" / "sequences" / "00")
    with pytest.raises(FileNotFoundError, match="no scans found for sequences 11, 12"):
        SemanticKITTI(kitti_root, [11, 12])
    with pytest.raises(ValueError, match="sequences must be"):
        SemanticKITTI(kitti_root, "everything")
    # a label file of the wrong length is reported against that file
    label = kitti_root / "sequences" / "08" / "labels" / "000000.label"
    label.write_bytes(label.read_bytes()[:-8])
    with pytest.raises(sio.ScanFormatError, match=r"000000\.label: holds 98 labels but the scan has 100 points"):
        SemanticKITTI(kitti_root, "val")[0]
    with pytest.raises(KeyError, match="has no 'rgb' attribute"):
        SemanticKITTI(kitti_root, 0, features=("xyz", "rgb"))[0]


def test_shipped_semantickitti_sample():
    ds = SemanticKITTI(os.path.join(DATASETS, "semantickitti"))
    assert len(ds) == 2
    sample = ds[1]
    assert sample.labels is not None and sample.labels.min() >= 0
    names = {ds.class_names[i] for i in np.unique(sample.labels)}
    assert {"road", "sidewalk", "building", "car"} <= names


@pytest.fixture
def ply_root(tmp_path):
    root = tmp_path / "scans"
    (root / "scene0000_00").mkdir(parents=True)
    (root / "scene0001_00").mkdir()
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 4, (60, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (60, 3)).astype(np.uint8)
    # 1: labels inside the scan, with a class table in the header
    sio.write_scan(root / "scene0000_00" / "scan.ply", pts, {"colors": rgb, "labels": np.arange(60) % 3},
                   label_names={0: "floor", 1: "wall", 2: "chair"})
    # 2: ScanNet style, labels in NAME.labels.ply beside the scan
    sio.write_scan(root / "scene0001_00" / "scene0001_00_vh_clean_2.ply", pts[:40], {"colors": rgb[:40]})
    sio.write_scan(root / "scene0001_00" / "scene0001_00_vh_clean_2.labels.ply", pts[:40],
                   {"labels": np.full(40, 2)})
    # 3: no labels at all
    sio.write_scan(root / "zzz.ply", pts[:10], {"colors": rgb[:10]})
    return root, pts, rgb


def test_ply_folder(ply_root):
    root, pts, rgb = ply_root
    ds = PLYFolder(root)
    assert len(ds) == 3  # *.labels.ply files are not scans
    assert ds.class_names == ("floor", "wall", "chair")
    first, second, third = ds[0], ds[1], ds[2]
    np.testing.assert_allclose(first.feats, rgb / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(first.labels, np.arange(60) % 3)
    np.testing.assert_array_equal(second.labels, np.full(40, 2))
    assert third.labels is None and len(third) == 10
    mapped = PLYFolder(root, features=("xyz", "rgb"), label_map={0: 5, 2: 7}, class_names=list("abcdefgh"))
    np.testing.assert_array_equal(mapped[0].labels, np.array([5, -1, 7])[np.arange(60) % 3])
    assert mapped[0].feats.shape == (60, 6) and mapped.class_names[7] == "h"


def test_ply_folder_errors(ply_root, tmp_path):
    root, pts, _ = ply_root
    with pytest.raises(FileNotFoundError, match="no such directory"):
        PLYFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .ply scans found"):
        PLYFolder(tmp_path / "empty")
    sio.write_scan(root / "scene0001_00" / "scene0001_00_vh_clean_2.labels.ply", pts[:39], {"labels": np.full(39, 2)})
    with pytest.raises(sio.ScanFormatError, match=r"labels\.ply: holds 39 labels but .* has 40 points"):
        PLYFolder(root)[1]


def test_synthetic_scans_are_deterministic():
    ds = SyntheticScans(2, "lidar", seed=3, num_beams=8, horizontal_resolution=256)
    a, b = ds[0], ds[0]
    np.testing.assert_array_equal(a.points, b.points)
    assert a.feats.shape[1] == 4 and a.labels.max() < len(ds.class_names) == 7
    assert not np.array_equal(ds[1].points[:10], a.points[:10])
    assert a.name == "synthetic-lidar-3"
    indoor = SyntheticScans(1, "indoor", features=("ones",), num_views=1, image_size=(16, 12))
    assert indoor[0].feats.shape[1] == 1 and indoor.class_names[0] == "floor"
    with pytest.raises(ValueError, match="kind"):
        SyntheticScans(1, "underwater")


def _sample(points, feats, labels=None, name="s"):
    return CloudSample(np.asarray(points, np.float32), np.asarray(feats, np.float32),
                       None if labels is None else np.asarray(labels, np.int64), name)


def test_collate_batches_clouds_with_point_to_voxel_maps():
    a_pts, a_int = _scan(200, 1)
    b_pts, b_int = _scan(150, 2)
    a = _sample(a_pts, a_int[:, None], np.arange(200) % 4, "a")
    b = _sample(b_pts + 100, b_int[:, None], None, "b")  # far away: a different grid region
    batch = collate_clouds([a, b], 2.0)
    t = batch.tensor
    assert t.batch_size == 2 and batch.names == ["a", "b"]
    assert batch.point_offsets.tolist() == [0, 200, 350]
    assert batch.point_batch.tolist() == [0] * 200 + [1] * 150
    # every point's row is a voxel of its own sample, containing the point
    rows = batch.point_to_voxel
    assert torch.equal(t.coords[rows, 0], batch.point_batch)
    centres = t.voxel_centers()[rows]
    assert bool(((batch.points.double() - centres).abs() <= 1.0 + 1e-6).all())
    # features are the per-voxel means of each sample's points
    for b_idx, s in enumerate([a, b]):
        lo, hi = batch.point_offsets[b_idx], batch.point_offsets[b_idx + 1]
        single = voxelize(torch.from_numpy(s.points), 2.0, feats=torch.from_numpy(s.feats))
        mine = t.feats[rows[lo:hi]]
        assert torch.allclose(mine, single.tensor.feats[single.point_to_voxel], atol=1e-6)
        assert int((t.coords[:, 0] == b_idx).sum()) == len(single.tensor)
    # labels: sample b has none -> ignore_index; voxel labels are majority votes
    assert batch.labels[:200].tolist() == (np.arange(200) % 4).tolist()
    assert bool((batch.labels[200:] == -1).all())
    assert batch.voxel_labels.shape == (len(t),)
    b_rows = torch.unique(rows[200:])
    assert bool((batch.voxel_labels[b_rows] == -1).all())
    assert batch.num_points.sum() == 350


def test_majority_labels_votes_ties_and_ignores():
    p2v = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, -1])
    labels = torch.tensor([5, 5, 2, 3, 1, -1, -1, 4, 9])
    out = majority_labels(p2v, labels, 5)
    assert out.tolist() == [5, 1, -1, 4, -1]  # voxel 1 ties 3 vs 1 -> the smaller id; 2 and 4 have no votes


def test_dataloader_with_sparse_collate(kitti_root):
    loader = DataLoader(SemanticKITTI(kitti_root, [0, 8]), batch_size=2, collate_fn=SparseCollate(0.5))
    batches = list(loader)
    assert [b.batch_size for b in batches] == [2, 1]
    first = batches[0]
    assert first.tensor.num_channels == 4 and first.points.shape[0] == 100 + 110
    assert first.labels.shape == (210,) and first.voxel_labels is not None
    assert batches[1].tensor.batch_size == 1


def test_collate_rejects_mixed_feature_widths():
    a = _sample(np.zeros((3, 3)), np.zeros((3, 2)))
    b = _sample(np.ones((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="different feature widths"):
        collate_clouds([a, b], 1.0)
    with pytest.raises(ValueError, match="at least one sample"):
        collate_clouds([], 1.0)
