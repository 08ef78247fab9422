"""sparseconv.io: every format read back equal to what numpy / Open3D / laspy wrote, voxel files
round-trip, and every broken file fails with a clear error naming it."""
import os
import zipfile

import numpy as np
import pytest
import torch

from sparseconv import io as sio
from sparseconv import voxelize

DATASETS = os.path.join(os.path.dirname(__file__), "..", "datasets")
o3d = pytest.importorskip("open3d")


def _cloud(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "points": rng.uniform(-20, 20, (n, 3)).astype(np.float32),
        "intensity": rng.uniform(0, 1, n).astype(np.float32),
        "colors": rng.integers(0, 256, (n, 3)).astype(np.uint8),
        "normals": rng.normal(size=(n, 3)).astype(np.float32),
        "labels": rng.integers(0, 7, n).astype(np.int64),
    }


def _o3d_cloud(c, with_normals=True, with_labels=True):
    pc = o3d.t.geometry.PointCloud()
    pc.point.positions = o3d.core.Tensor(c["points"])
    pc.point.colors = o3d.core.Tensor(c["colors"])
    pc.point.intensity = o3d.core.Tensor(c["intensity"][:, None])
    if with_normals:
        pc.point.normals = o3d.core.Tensor(c["normals"])
    if with_labels:
        pc.point.label = o3d.core.Tensor(c["labels"][:, None].astype(np.int32))
    return pc


# -- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("ascii", [False, True], ids=["binary", "ascii"])
def test_ply_written_by_open3d(tmp_path, ascii):
    c = _cloud()
    path = str(tmp_path / "cloud.ply")
    assert o3d.t.io.write_point_cloud(path, _o3d_cloud(c), write_ascii=ascii)
    scan = sio.read_scan(path)
    assert scan.format == "ply" and len(scan) == 50
    rtol = 1e-5 if ascii else 0  # Open3D's ascii PLY keeps 6-7 significant digits
    np.testing.assert_allclose(scan.points, c["points"], rtol=rtol)
    np.testing.assert_array_equal(scan.colors, c["colors"])
    np.testing.assert_allclose(scan.normals, c["normals"], rtol=rtol, atol=1e-6 if ascii else 0)
    np.testing.assert_allclose(scan.intensity, c["intensity"], rtol=rtol, atol=1e-6 if ascii else 0)
    np.testing.assert_array_equal(scan.labels, c["labels"])
    assert scan.labels.dtype == np.int64 and scan.colors.dtype == np.uint8


def test_ply_big_endian_all_property_types_and_faces(tmp_path):
    """Property types Open3D drops (ushort, char, double) come through; a face element is skipped."""
    n = 4
    rec = np.zeros(n, dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("scalar_intensity", ">f4"),
                             ("class", ">u2"), ("flag", "i1"), ("ring", ">u4")])
    rec["x"], rec["y"], rec["z"] = [1.5, 2, 3, 4], [0, -1, -2, -3], [1e6, 2e6, 3e6, 4e6]
    rec["scalar_intensity"] = [0.1, 0.2, 0.3, 0.4]
    rec["class"] = [40, 48, 50, 65535]
    rec["flag"] = [-1, 0, 1, 2]
    rec["ring"] = [7, 8, 9, 10]
    faces = np.array([(3, 0, 1, 2)], dtype=[("n", "u1"), ("a", ">i4"), ("b", ">i4"), ("c", ">i4")])
    header = ("ply\nformat binary_big_endian 1.0\ncomment made by hand\nelement vertex 4\n"
              "property double x\nproperty double y\nproperty double z\nproperty float scalar_intensity\n"
              "property ushort class\nproperty char flag\nproperty uint ring\n"
              "element face 1\nproperty list uchar int vertex_indices\nend_header\n")
    path = tmp_path / "be.ply"
    path.write_bytes(header.encode() + rec.tobytes() + faces.tobytes())
    scan = sio.read_scan(path)
    assert scan.points.dtype == np.float64
    np.testing.assert_array_equal(scan.points[:, 2], [1e6, 2e6, 3e6, 4e6])
    np.testing.assert_allclose(scan.intensity, [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(scan.labels, [40, 48, 50, 65535])
    np.testing.assert_array_equal(scan.attributes["flag"], [-1, 0, 1, 2])
    np.testing.assert_array_equal(scan.attributes["ring"], [7, 8, 9, 10])


@pytest.mark.parametrize("ascii", [False, True], ids=["binary", "ascii"])
def test_write_scan_ply_round_trip_with_label_table(tmp_path, ascii):
    c = _cloud(30, seed=1)
    names = {i: f"class_{i}" for i in range(7)}
    colors = {i: (i * 30, 255 - i * 30, 7) for i in range(7)}
    path = tmp_path / "mine.ply"
    sio.write_scan(path, c["points"], {k: c[k] for k in ("intensity", "colors", "normals", "labels")},
                   label_names=names, label_colors=colors, ascii=ascii)
    scan = sio.read_scan(path)
    np.testing.assert_allclose(scan.points, c["points"], rtol=1e-6)
    np.testing.assert_array_equal(scan.colors, c["colors"])
    np.testing.assert_array_equal(scan.labels, c["labels"])
    np.testing.assert_allclose(scan.intensity, c["intensity"], rtol=1e-6)
    assert scan.label_names == names and scan.label_colors == colors
    # and Open3D agrees with what we wrote
    pc = o3d.t.io.read_point_cloud(str(path))
    np.testing.assert_allclose(pc.point.positions.numpy(), c["points"], rtol=1e-6)


@pytest.mark.parametrize("mode", ["binary", "ascii", "compressed"])
def test_pcd_written_by_open3d(tmp_path, mode):
    c = _cloud(40, seed=2)
    path = str(tmp_path / "cloud.pcd")
    assert o3d.t.io.write_point_cloud(path, _o3d_cloud(c), write_ascii=mode == "ascii", compressed=mode == "compressed")
    scan = sio.read_scan(path)
    assert len(scan) == 40
    np.testing.assert_allclose(scan.points, c["points"], atol=1e-5)
    np.testing.assert_array_equal(scan.colors, c["colors"])  # packed rgb unpacked
    np.testing.assert_allclose(scan.normals, c["normals"], atol=1e-5)
    np.testing.assert_allclose(scan.intensity, c["intensity"], atol=1e-6)
    np.testing.assert_array_equal(scan.labels, c["labels"])


def test_pcd_with_pcl_float_rgb_and_count_fields(tmp_path):
    rgb = np.array([0x00FF8000, 0x000000FF], dtype=np.uint32)
    rec = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("hist", "<f4", (3,))])
    rec["x"] = [1, 2]
    rec["rgb"] = rgb.view(np.float32)
    rec["hist"] = [[1, 2, 3], [4, 5, 6]]
    header = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb hist\nSIZE 4 4 4 4 4\nTYPE F F F F F\nCOUNT 1 1 1 1 3\n"
              "WIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA binary\n")
    path = tmp_path / "pcl.pcd"
    path.write_bytes(header.encode() + rec.tobytes())
    scan = sio.read_scan(path)
    np.testing.assert_array_equal(scan.colors, [[255, 128, 0], [0, 0, 255]])
    np.testing.assert_array_equal(scan.attributes["hist"], [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("ncols", [3, 4, 6, 7, 5])
def test_xyz_text_columns(tmp_path, ncols):
    rng = np.random.default_rng(ncols)
    table = rng.uniform(0, 1, (25, ncols))
    if ncols in (6, 7):
        table[:, -3:] = rng.integers(0, 256, (25, 3))
    path = tmp_path / "cloud.xyz"
    np.savetxt(path, table, fmt="%.6f")
    if ncols == 6:  # x y z r g b or x y z nx ny nz: never guessed, the columns are named
        with pytest.raises(sio.ScanFormatError, match=r"cloud\.xyz: 6 unnamed columns are ambiguous: "
                                                      r"x,y,z,red,green,blue or x,y,z,nx,ny,nz"):
            sio.read_scan(path)
        scan = sio.read_scan(path, columns="x,y,z,red,green,blue")
    else:
        scan = sio.read_scan(path)
    np.testing.assert_allclose(scan.points, table[:, :3], atol=1e-6)
    if ncols in (4, 7):
        np.testing.assert_allclose(scan.intensity, table[:, 3], atol=1e-6)
    if ncols in (6, 7):
        np.testing.assert_array_equal(scan.colors, table[:, -3:].astype(np.uint8))
    if ncols == 5:
        assert set(scan.attributes) == {"c3", "c4"}


def test_pts_with_count_line_and_comma_separated_xyz(tmp_path):
    pts = tmp_path / "leica.pts"
    pts.write_text("3\n1 2 3 -500 10 20 30\n4 5 6 0 40 50 60\n7 8 9 500 70 80 90\n")
    scan = sio.read_scan(pts)
    np.testing.assert_array_equal(scan.points, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(scan.intensity, [-500, 0, 500])
    np.testing.assert_array_equal(scan.colors[2], [70, 80, 90])
    csv = tmp_path / "commas.xyz"
    csv.write_text("# a comment\n1.0,2.0,3.0\n4.0,5.0,6.0\n")
    np.testing.assert_array_equal(sio.read_scan(csv).points, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("ext,key", [("xyzn", "normals"), ("xyzrgb", "colors"), ("pts", "colors")])
def test_text_formats_written_by_open3d(tmp_path, ext, key):
    c = _cloud(20, seed=3)
    pc = o3d.t.geometry.PointCloud()
    pc.point.positions = o3d.core.Tensor(c["points"])
    if key == "normals":
        pc.point.normals = o3d.core.Tensor(c["normals"])
    else:
        pc.point.colors = o3d.core.Tensor(c["colors"].astype(np.float32) / 255 if ext == "xyzrgb" else c["colors"])
    path = str(tmp_path / f"cloud.{ext}")
    assert o3d.t.io.write_point_cloud(path, pc)
    scan = sio.read_scan(path)
    np.testing.assert_allclose(scan.points, c["points"], atol=1e-5)
    if key == "normals":
        np.testing.assert_allclose(scan.normals, c["normals"], atol=1e-5)
    else:
        np.testing.assert_allclose(scan.colors.astype(int), c["colors"].astype(int), atol=1)


def test_kitti_bin_and_semantickitti_labels(tmp_path):
    c = _cloud(64, seed=4)
    velodyne = tmp_path / "sequences" / "00" / "velodyne"
    labels_dir = tmp_path / "sequences" / "00" / "labels"
    velodyne.mkdir(parents=True)
    labels_dir.mkdir()
    rec = np.concatenate([c["points"], c["intensity"][:, None]], 1).astype("<f4")
    rec.tofile(velodyne / "000000.bin")
    semantic = np.random.default_rng(0).choice([0, 10, 40, 48, 50, 252], 64)
    instance = np.arange(64) % 5
    ((instance.astype(np.uint32) << 16) | semantic.astype(np.uint32)).tofile(labels_dir / "000000.label")

    scan = sio.read_scan(velodyne / "000000.bin")
    assert scan.format == "kitti"
    np.testing.assert_array_equal(scan.points, c["points"])
    np.testing.assert_array_equal(scan.intensity, c["intensity"])
    np.testing.assert_array_equal(scan.labels, semantic)
    np.testing.assert_array_equal(scan.attributes["instance"], instance)
    from sparseconv.viz import CLASS_PALETTE  # SemanticKITTI classes take the project's palette

    assert scan.label_names[40] == "road" and scan.label_colors[40] == CLASS_PALETTE["road"] == (120, 60, 150)
    assert sio.read_scan(velodyne / "000000.bin", labels=None).labels is None
    sem, inst = sio.read_label(labels_dir / "000000.label", num_points=64)
    np.testing.assert_array_equal(sem, semantic)
    np.testing.assert_array_equal(inst, instance)
    # a flat layout: NAME.label beside NAME.bin; and write_label / write_scan produce the same bytes
    flat = tmp_path / "flat"
    flat.mkdir()
    sio.write_scan(flat / "scan.bin", c["points"], {"intensity": c["intensity"]})
    sio.write_label(flat / "scan.label", semantic, instance)
    assert (flat / "scan.bin").read_bytes() == (velodyne / "000000.bin").read_bytes()
    assert (flat / "scan.label").read_bytes() == (labels_dir / "000000.label").read_bytes()
    np.testing.assert_array_equal(sio.read_scan(flat / "scan.bin").labels, semantic)


def test_numpy_formats(tmp_path):
    c = _cloud(33, seed=5)
    plain = np.concatenate([c["points"], c["intensity"][:, None]], 1)
    np.save(tmp_path / "plain.npy", plain)
    scan = sio.read_scan(tmp_path / "plain.npy")
    np.testing.assert_array_equal(scan.points, c["points"])
    np.testing.assert_array_equal(scan.intensity, c["intensity"])

    structured = np.zeros(33, dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("remission", "f4"), ("semantic", "u2")])
    for i, a in enumerate("xyz"):
        structured[a] = c["points"][:, i]
    structured["remission"] = c["intensity"]
    structured["semantic"] = c["labels"]
    np.save(tmp_path / "structured.npy", structured)
    scan = sio.read_scan(tmp_path / "structured.npy")
    np.testing.assert_allclose(scan.points, c["points"])
    np.testing.assert_array_equal(scan.intensity, c["intensity"])
    np.testing.assert_array_equal(scan.labels, c["labels"])

    np.savez(tmp_path / "arrays.npz", points=c["points"], intensity=c["intensity"], colors=c["colors"],
             labels=c["labels"], normals=c["normals"], class_names=np.array(["a", "b", "c", "d", "e", "f", "g"]))
    scan = sio.read_scan(tmp_path / "arrays.npz")
    np.testing.assert_array_equal(scan.points, c["points"])
    np.testing.assert_array_equal(scan.colors, c["colors"])
    np.testing.assert_array_equal(scan.normals, c["normals"])
    np.testing.assert_array_equal(scan.labels, c["labels"])
    assert scan.label_names[6] == "g" and "class_names" not in scan.attributes

    sio.write_scan(tmp_path / "mine.npz", scan)
    again = sio.read_scan(tmp_path / "mine.npz")
    for k in ("colors", "normals", "labels", "intensity"):
        np.testing.assert_array_equal(again.attributes[k], scan.attributes[k])
    assert again.label_names == scan.label_names


def test_las_written_by_laspy(tmp_path):
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = [0.001, 0.001, 0.001]
    header.offsets = [500000.0, 4000000.0, 0.0]
    las = laspy.LasData(header)
    xyz = np.array([[500001.25, 4000002.5, 10.0], [500003.125, 4000001.0, 11.5], [500000.0, 4000000.0, 12.0]])
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.intensity = np.array([10, 200, 3000], dtype=np.uint16)
    las.classification = np.array([2, 6, 9], dtype=np.uint8)
    las.red = np.array([65535, 0, 32768], dtype=np.uint16)
    las.green = np.array([0, 65535, 32768], dtype=np.uint16)
    las.blue = np.array([0, 0, 65535], dtype=np.uint16)
    las.write(str(tmp_path / "tile.las"))
    scan = sio.read_scan(tmp_path / "tile.las")
    assert scan.points.dtype == np.float64  # UTM coordinates keep their millimetres
    np.testing.assert_allclose(scan.points, xyz, atol=1e-6)
    np.testing.assert_array_equal(scan.intensity, [10, 200, 3000])
    np.testing.assert_array_equal(scan.labels, [2, 6, 9])
    np.testing.assert_array_equal(scan.colors, [[255, 0, 0], [0, 255, 0], [128, 128, 255]])


def test_las_without_laspy_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_laspy(name, *args, **kwargs):
        if name == "laspy":
            raise ImportError("No module named 'laspy'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "tile.laz").write_bytes(b"LASF" + b"\0" * 300)
    monkeypatch.setattr(builtins, "__import__", no_laspy)
    with pytest.raises(sio.MissingDependencyError, match=r"tile\.laz.*sparseconv\[las\]"):
        sio.read_scan(tmp_path / "tile.laz")


# -- voxel files --------------------------------------------------------------------------

def test_voxel_npz_round_trip(tmp_path):
    c = _cloud(500, seed=6)
    feats = torch.from_numpy(np.concatenate([c["intensity"][:, None], c["colors"] / 255.0], 1).astype(np.float32))
    vox = voxelize(torch.from_numpy(c["points"]), 2.0, feats=feats, origin=(0.5, 0.25, 0.0))
    path = sio.write_voxels(tmp_path / "v.npz", vox, feature_names=["intensity", "red", "green", "blue"],
                            source="cloud.ply", reduce="mean")
    back = sio.read_voxels(path)
    assert torch.equal(back.tensor.coords, vox.tensor.coords)
    assert torch.equal(back.tensor.feats, vox.tensor.feats)
    assert torch.equal(back.point_to_voxel, vox.point_to_voxel)
    assert torch.equal(back.num_points, vox.num_points)
    assert back.tensor.voxel_size == vox.tensor.voxel_size and back.tensor.origin == vox.tensor.origin
    assert back.tensor.spatial_shape == vox.tensor.spatial_shape
    assert back.feature_names == ("intensity", "red", "green", "blue")
    assert back.source == "cloud.ply" and back.reduce == "mean"
    # read as a scan: the points are the voxel centres
    scan = sio.read_scan(path)
    assert scan.format == "voxels"
    np.testing.assert_allclose(scan.points, vox.tensor.voxel_centers().numpy())
    np.testing.assert_array_equal(scan.attributes["num_points"], vox.num_points.numpy())


def test_voxel_ply_holds_the_voxel_centres(tmp_path):
    c = _cloud(300, seed=7)
    vox = voxelize(torch.from_numpy(c["points"]), 1.5, feats=torch.from_numpy(c["intensity"][:, None]))
    sio.write_voxels(tmp_path / "v.ply", vox, feature_names=["intensity"])
    scan = sio.read_scan(tmp_path / "v.ply")
    np.testing.assert_allclose(scan.points, vox.tensor.voxel_centers().numpy(), rtol=1e-6)
    np.testing.assert_allclose(scan.intensity, vox.tensor.feats[:, 0].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(scan.attributes["num_points"], vox.num_points.numpy())


# -- errors ---------------------------------------------------------------------------------

def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.ply: no such file"):
        sio.read_scan(tmp_path / "nothere.ply")
    with pytest.raises(sio.ScanFormatError, match="is a directory"):
        sio.read_scan(tmp_path)


@pytest.mark.parametrize("name", ["scan.foo", "scan", "scan.dat"])
def test_unknown_extension(tmp_path, name):
    (tmp_path / name).write_text("1 2 3\n")
    with pytest.raises(sio.UnsupportedFormatError, match=rf"{name}: (unknown extension|no file extension)"):
        sio.read_scan(tmp_path / name)


@pytest.mark.parametrize("ext", ["ply", "pcd", "bin", "xyz", "pts", "npy", "npz", "las", "label"])
def test_empty_file(tmp_path, ext):
    path = tmp_path / f"empty.{ext}"
    path.write_bytes(b"")
    with pytest.raises(sio.ScanFormatError, match=rf"empty\.{ext}: is empty"):
        sio.read_scan(path)


def _ply(tmp_path, c, ascii=False):
    path = tmp_path / ("a.ply" if ascii else "b.ply")
    sio.write_scan(path, c["points"], {"intensity": c["intensity"]}, ascii=ascii)
    return path


def test_truncated_binary_ply(tmp_path):
    path = _ply(tmp_path, _cloud())
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(sio.ScanFormatError, match=r"b\.ply: truncated: the PLY header declares 50 vertices"):
        sio.read_scan(path)


def test_truncated_ascii_ply(tmp_path):
    path = _ply(tmp_path, _cloud(), ascii=True)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(sio.ScanFormatError, match=r"a\.ply: truncated: the PLY header declares 50 vertices but only 47"):
        sio.read_scan(path)


@pytest.mark.parametrize("content,message", [
    (b"\x89PNG\r\n\x1a\n\0\0\0garbage", "not a PLY file"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n", "no 'end_header'"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float128 x\nend_header\n", "unknown type"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex lots\nend_header\n", "does not parse"),
    (b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
     "contains no points"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float u\nend_header\n0\n", "no x, y, z"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
     b"1 2 3\n4 five 6\n", "does not parse"),
])
def test_corrupt_ply(tmp_path, content, message):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(sio.ScanFormatError, match=rf"bad\.ply: .*{message}"):
        sio.read_scan(path)


def test_kitti_bin_size_not_multiple_of_16(tmp_path):
    path = tmp_path / "000000.bin"
    np.zeros(4 * 10 + 3, dtype="<f4").tofile(path)
    with pytest.raises(sio.ScanFormatError, match=r"000000\.bin: size 172 bytes is not a multiple of 16"):
        sio.read_scan(path)


def test_label_length_mismatch(tmp_path):
    np.zeros((10, 4), dtype="<f4").tofile(tmp_path / "s.bin")
    np.zeros(9, dtype="<u4").tofile(tmp_path / "s.label")
    with pytest.raises(sio.ScanFormatError, match=r"s\.label: holds 9 labels but the scan has 10 points"):
        sio.read_scan(tmp_path / "s.bin")
    (tmp_path / "t.label").write_bytes(b"\0" * 10)
    with pytest.raises(sio.ScanFormatError, match=r"t\.label: size 10 bytes is not a multiple of 4"):
        sio.read_label(tmp_path / "t.label")
    with pytest.raises(sio.ScanFormatError, match=r"s\.label: a \.label file holds labels, not points"):
        sio.read_scan(tmp_path / "s.label")


def test_broken_pcd(tmp_path):
    c = _cloud(20)
    for mode in ("binary", "compressed"):
        path = str(tmp_path / f"{mode}.pcd")
        o3d.t.io.write_point_cloud(path, _o3d_cloud(c), compressed=mode == "compressed")
        data = open(path, "rb").read()
        open(path, "wb").write(data[:-9])
        with pytest.raises(sio.ScanFormatError, match=rf"{mode}\.pcd: truncated"):
            sio.read_scan(path)
    path = str(tmp_path / "ascii.pcd")
    o3d.t.io.write_point_cloud(path, _o3d_cloud(c), write_ascii=True)
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(lines[:-2]) + "\n")
    with pytest.raises(sio.ScanFormatError, match=r"ascii\.pcd: ascii PCD data has 18 rows .* declares 20 points"):
        sio.read_scan(path)
    (tmp_path / "junk.pcd").write_bytes(b"\0\1\2\3" * 50)
    with pytest.raises(sio.ScanFormatError, match=r"junk\.pcd: .*(not a PCD file|no DATA line)"):
        sio.read_scan(tmp_path / "junk.pcd")


def test_broken_text(tmp_path):
    (tmp_path / "ragged.xyz").write_text("1 2 3\n4 5\n")
    with pytest.raises(sio.ScanFormatError, match=r"ragged\.xyz: text point data does not parse"):
        sio.read_scan(tmp_path / "ragged.xyz")
    (tmp_path / "words.xyz").write_text("1 2 3\nfoo bar baz\n")
    with pytest.raises(sio.ScanFormatError, match=r"words\.xyz: text point data does not parse"):
        sio.read_scan(tmp_path / "words.xyz")
    (tmp_path / "two.xyz").write_text("1 2\n3 4\n")
    with pytest.raises(sio.ScanFormatError, match=r"two\.xyz: needs at least 3 columns"):
        sio.read_scan(tmp_path / "two.xyz")
    (tmp_path / "short.pts").write_text("5\n1 2 3\n4 5 6\n")
    with pytest.raises(sio.ScanFormatError, match=r"short\.pts: the first line declares 5 points but 2 rows follow"):
        sio.read_scan(tmp_path / "short.pts")
    (tmp_path / "binary.xyz").write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(sio.ScanFormatError, match=r"binary\.xyz: is not a text point file"):
        sio.read_scan(tmp_path / "binary.xyz")
    (tmp_path / "comments.xyz").write_text("# nothing but a comment\n")
    with pytest.raises(sio.ScanFormatError, match=r"comments\.xyz: contains no points"):
        sio.read_scan(tmp_path / "comments.xyz")


def test_broken_numpy(tmp_path):
    np.save(tmp_path / "ok.npy", np.zeros((100, 4), np.float32))
    data = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(sio.ScanFormatError, match=r"cut\.npy: is not a readable NumPy file"):
        sio.read_scan(tmp_path / "cut.npy")
    np.save(tmp_path / "flat.npy", np.zeros(12, np.float32))
    with pytest.raises(sio.ScanFormatError, match=r"flat\.npy: holds an array of shape \(12,\)"):
        sio.read_scan(tmp_path / "flat.npy")
    np.save(tmp_path / "none.npy", np.zeros((0, 3), np.float32))
    with pytest.raises(sio.ScanFormatError, match=r"none\.npy: contains no points"):
        sio.read_scan(tmp_path / "none.npy")
    np.savez(tmp_path / "ok.npz", points=np.zeros((500, 3), np.float32), intensity=np.zeros(500, np.float32))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) - 200])
    with pytest.raises(sio.ScanFormatError, match=r"cut\.npz: (is a corrupt or truncated|is not a readable)"):
        sio.read_scan(tmp_path / "cut.npz")
    np.savez(tmp_path / "nopoints.npz", foo=np.zeros((5, 3)))
    with pytest.raises(sio.ScanFormatError, match=r"nopoints\.npz: has no 'points'"):
        sio.read_scan(tmp_path / "nopoints.npz")
    with zipfile.ZipFile(tmp_path / "notnpy.npz", "w") as z:
        z.writestr("points.npy", b"this is not an array")
    with pytest.raises(sio.ScanFormatError, match=r"notnpy\.npz"):
        sio.read_scan(tmp_path / "notnpy.npz")


def test_broken_las(tmp_path):
    pytest.importorskip("laspy")
    (tmp_path / "bad.las").write_bytes(b"LASF" + b"\x01" * 50)
    with pytest.raises(sio.ScanFormatError, match=r"bad\.las: is not a readable LAS/LAZ file"):
        sio.read_scan(tmp_path / "bad.las")


# -- atomic writes ---------------------------------------------------------------------

def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with sio.atomic_write(target) as f:
            f.write(b"half of it")
            raise RuntimeError("disk on fire")
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with sio.atomic_write(target) as f:
            f.write(b"new but broken")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_writers_are_atomic_and_check_their_target(tmp_path, monkeypatch):
    c = _cloud(10)
    sio.write_scan(tmp_path / "ok.ply", c["points"])
    assert sorted(os.listdir(tmp_path)) == ["ok.ply"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "ok.ply").st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600
    with pytest.raises(FileNotFoundError, match="output directory .* does not exist"):
        sio.write_scan(tmp_path / "no" / "such" / "dir.ply", c["points"])
    with pytest.raises(sio.UnsupportedFormatError, match=r"out\.las: cannot write"):
        sio.write_scan(tmp_path / "out.las", c["points"])
    with pytest.raises(ValueError, match="attribute 'intensity' has 3 rows for 10 points"):
        sio.write_scan(tmp_path / "bad.ply", c["points"], {"intensity": np.zeros(3)})
    # a failure while the archive is written leaves no file
    vox = voxelize(torch.from_numpy(c["points"]), 1.0)

    def boom(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="no space"):
        sio.write_voxels(tmp_path / "v.npz", vox)
    assert sorted(os.listdir(tmp_path)) == ["ok.ply"]


# -- the shipped samples ------------------------------------------------------------

def test_shipped_samples_read():
    kitti = sio.read_scan(os.path.join(DATASETS, "semantickitti", "sequences", "00", "velodyne", "000000.bin"))
    assert len(kitti) > 10_000 and kitti.labels is not None and kitti.intensity is not None
    assert set(np.unique(kitti.labels)) <= set(sio.SEMANTIC_KITTI_LABELS)
    room = sio.read_scan(os.path.join(DATASETS, "indoor", "room_000.ply"))
    assert room.colors is not None and room.labels is not None and room.label_names[0] == "floor"
    street = sio.read_scan(os.path.join(DATASETS, "street_000.npz"))
    assert street.label_names[0] == "road" and street.labels.max() < len(street.label_names)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(DATASETS) for f in fs)
    assert total < 5 * 1024 * 1024
