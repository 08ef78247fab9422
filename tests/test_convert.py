"""The library functions under `sparseconv voxelize` and `sparseconv info`: voxelize_file and describe_scan."""
import numpy as np
import pytest
import torch

from sparseconv import io as sio
from sparseconv import voxelize
from sparseconv.data.convert import voxelize_file


@pytest.fixture
def scan_file(tmp_path):
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 5, (300, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    path = sio.write_scan(tmp_path / "s.npz", pts, {"intensity": rng.uniform(0, 1, 300).astype(np.float32),
                                                    "labels": labels})
    return path, pts, labels


def test_voxelize_file_writes_what_voxelize_computes(scan_file, tmp_path):
    path, pts, labels = scan_file
    result = voxelize_file(path, tmp_path / "v.npz", 0.5, reduce="max")
    vf = sio.read_voxels(tmp_path / "v.npz")
    expected = voxelize(torch.from_numpy(pts), 0.5)
    assert (result.num_points, result.num_voxels) == (300, len(expected.tensor)) == (300, len(vf.tensor))
    assert result.feature_names == vf.feature_names == ("intensity", "labels") and vf.reduce == "max"
    torch.testing.assert_close(vf.point_to_voxel, expected.point_to_voxel)
    # the labels column is each voxel's most frequent label (ties: the smallest id), counted here
    p2v = expected.point_to_voxel.numpy()
    counts = np.zeros((len(expected.tensor), 4), np.int64)
    np.add.at(counts, (p2v, labels), 1)
    np.testing.assert_array_equal(vf.tensor.feats[:, 1].numpy(), counts.argmax(1))


def test_voxelize_file_protects_inputs_and_existing_outputs(scan_file, tmp_path):
    path, _, _ = scan_file
    before = open(path, "rb").read()
    with pytest.raises(sio.InputError, match=r"s\.npz: is the input file"):
        voxelize_file(path, path, 0.5, overwrite=True)
    assert open(path, "rb").read() == before
    (tmp_path / "old.npz").write_bytes(b"old")
    with pytest.raises(sio.InputError, match=r"old\.npz: exists; pass overwrite=True"):
        voxelize_file(path, tmp_path / "old.npz", 0.5)
    assert (tmp_path / "old.npz").read_bytes() == b"old"
    voxelize_file(path, tmp_path / "old.npz", 0.5, overwrite=True)
    assert len(sio.read_voxels(tmp_path / "old.npz").tensor) > 0
    with pytest.raises(sio.InputError, match=r"has no 'normals' attribute"):
        voxelize_file(path, tmp_path / "n.npz", 0.5, features=["normals"])
    with pytest.raises(sio.InputError, match=r"s\.npz: .*grid"):
        voxelize_file(path, tmp_path / "tiny.npz", 1e-9)
    assert not (tmp_path / "n.npz").exists() and not (tmp_path / "tiny.npz").exists()


def test_describe_scan(scan_file):
    path, pts, _ = scan_file
    text = sio.describe_scan(path, voxel_sizes=(1.0,))
    lo, hi = pts.min(0), pts.max(0)
    assert "points      300  (float32)" in text and "NumPy .npz" in text
    assert f"x  {lo[0]:10.3f} .. {hi[0]:10.3f} m" in text
    n = len(voxelize(torch.from_numpy(pts), 1.0).tensor)
    assert any(line.split()[:3] == ["1", "m", f"{n:,}"] for line in text.splitlines())
