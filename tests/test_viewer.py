"""The browser viewer's page (sparseconv.viz.to_html): self-contained, its data decode back to the
scan exactly, large clouds are sampled and the page says so, KITTI boxes land where the label says,
and the command line writes it."""
import base64
import json
import os
import re

import numpy as np
import pytest

from sparseconv import io as sio
from sparseconv.viz import MAX_DISPLAY_POINTS, read_kitti_calib, read_kitti_labels, to_html, write_html
from sparseconv.viz.colors import CLASS_PALETTE, WRONG

DATASETS = os.path.join(os.path.dirname(__file__), "..", "datasets")


def decode(page):
    """(header, {name: array}) as the page's script reads them."""
    meta = json.loads(re.search(r'<script id="sc-meta" type="application/json">(.*?)</script>', page, re.S).group(1))
    blob = base64.b64decode(re.search(r'<script id="sc-data" type="application/octet-stream">(.*?)</script>',
                                      page, re.S).group(1))

    def view(entry):
        return np.frombuffer(blob, dtype=np.dtype(entry["dtype"]).newbyteorder("<"), count=entry["length"],
                             offset=entry["offset"])

    arrays = {"positions": view(meta["positions"]).reshape(-1, 3)}
    for a in meta["attributes"]:
        arrays[a["name"]] = view(a).reshape(-1, a["components"]) if a["components"] > 1 else view(a)
    if "indices" in meta:
        arrays["indices"] = view(meta["indices"])
    if meta.get("voxels"):
        v = meta["voxels"]
        arrays.update(voxel_centres=view(v["centres"]).reshape(-1, 3), voxel_counts=view(v["counts"]),
                      voxel_cells=view(v["cells"]).reshape(-1, 3))
    return meta, arrays


def test_page_is_self_contained_and_its_data_decode_to_the_scan():
    scan = sio.read_scan(os.path.join(DATASETS, "street_000.npz"))
    page = to_html(scan, voxel_size=0.5)
    assert not re.search(r"""(src|href)\s*=|https?://|@import|url\(""", page.split('<script id="sc-data"')[0]), \
        "the page must not load anything"
    meta, arrays = decode(page)
    np.testing.assert_array_equal(arrays["positions"] + np.asarray(meta["offset"], np.float32), scan.points)
    np.testing.assert_array_equal(arrays["intensity"], scan.intensity)
    np.testing.assert_array_equal(arrays["labels"], scan.labels)
    assert arrays["labels"].dtype == np.uint8  # the narrowest type that holds the ids
    assert meta["total_points"] == meta["shown_points"] == len(scan) and meta["notes"] == []
    assert {m["name"] for m in meta["modes"]} == {"height", "intensity", "label"} and meta["default_mode"] == "label"
    # voxel layer: one centre per occupied 0.5 m cell, counts add up to the points
    cells = np.unique(np.floor(scan.points.astype(np.float64) / 0.5).astype(np.int64), axis=0)
    assert meta["voxels"]["count"] == len(cells) and arrays["voxel_counts"].sum() == len(scan)
    np.testing.assert_array_equal(arrays["voxel_cells"], cells)
    np.testing.assert_allclose(arrays["voxel_centres"], (cells + 0.5) * 0.5, atol=1e-5)
    label_mode = next(m for m in meta["modes"] if m["name"] == "label")
    assert label_mode["entries"][0][0].startswith("road")  # the legend, largest class first


def test_prediction_adds_prediction_and_error_modes():
    gen = np.random.default_rng(0)
    points = gen.uniform(-5, 5, (1000, 3)).astype(np.float32)
    truth = gen.integers(0, 3, 1000)
    prediction = truth.copy()
    prediction[:100] = (truth[:100] + 1) % 3
    page = to_html(points, attributes={"labels": truth}, prediction=prediction,
                   label_names={0: "road", 1: "sidewalk", 2: "car"})
    meta, arrays = decode(page)
    np.testing.assert_array_equal(arrays["prediction"], prediction)
    modes = {m["name"]: m for m in meta["modes"]}
    assert meta["default_mode"] == "prediction" and {"label", "prediction", "error"} <= set(modes)
    assert modes["label"]["title"] == "ground truth"
    assert modes["prediction"]["table"]["1"] == list(CLASS_PALETTE["sidewalk"])
    assert modes["error"]["wrong"] == list(WRONG) and modes["error"]["entries"][0][0] == "wrong  10.0%"
    with pytest.raises(ValueError, match=r"prediction must be integer labels, one per point \(1000\)"):
        to_html(points, prediction=prediction[:10])
    with pytest.raises(ValueError, match="color 'rgb' is not available for this scan; choose from height"):
        to_html(points, color="rgb")
    with pytest.raises(ValueError, match=r"attribute 'colors' must be uint8 RGB \[P, 3\], got float64 \(1000, 3\)"):
        to_html(points, attributes={"colors": np.zeros((1000, 3))})
    with pytest.raises(ValueError, match=r"attribute 'ring' must have one row per point \(1000\), got shape \(5,\)"):
        to_html(points, attributes={"ring": np.zeros(5)})


def test_large_clouds_are_sampled_and_the_page_says_so():
    gen = np.random.default_rng(0)
    points = gen.normal(size=(5000, 3)).astype(np.float32)
    page = to_html(points, attributes={"intensity": np.arange(5000, dtype=np.float32)}, max_points=1000, seed=3)
    meta, arrays = decode(page)
    assert meta["shown_points"] == 1000 and meta["total_points"] == 5000
    assert "Showing 1,000 of 5,000 points: a uniform random sample (seed 3)" in page  # visible on the page
    idx = arrays["indices"]
    assert len(np.unique(idx)) == 1000 and (np.diff(idx.astype(np.int64)) > 0).all()
    np.testing.assert_array_equal(arrays["positions"], points[idx])
    np.testing.assert_array_equal(arrays["intensity"], idx.astype(np.float32))  # attributes follow their points


def test_two_million_points_stay_below_the_limit_and_a_lidar_scan_stays_small():
    points = np.random.default_rng(0).uniform(-50, 50, (2_000_000, 3)).astype(np.float32)
    page = to_html(points, attributes={"intensity": np.ones(2_000_000, np.float32)})
    meta, _ = decode(page)
    assert meta["shown_points"] == MAX_DISPLAY_POINTS == 1_000_000 and meta["total_points"] == 2_000_000
    assert len(page) < 30e6
    from sparseconv.data import generate_lidar_scan

    scan = generate_lidar_scan(0)  # 64 beams x 2048: ~130k points
    attributes = {"intensity": scan.intensity, "labels": scan.labels, "ring": scan.ring, "column": scan.column}
    page = to_html(scan.points, attributes=attributes, prediction=scan.labels, voxel_size=0.1)
    assert len(scan) > 120_000 and len(page) < 10e6, len(page)  # well under the 30 MB asked for
    meta, arrays = decode(page)
    assert meta["shown_points"] == len(scan) and arrays["ring"].dtype == np.uint8


def test_far_away_clouds_keep_millimetres():
    points = np.array([[500000.123, 4000000.456, 100.789], [500010.0, 4000005.0, 101.0]])
    meta, arrays = decode(to_html(points))
    assert meta["offset"] == [500005.0, 4000003.0, 101.0]
    np.testing.assert_allclose(arrays["positions"] + np.asarray(meta["offset"]), points, atol=1e-3)


LABEL = ("Car 0.00 0 -1.57 599.41 156.40 629.75 189.25 1.50 1.60 4.00 2.00 1.65 20.00 0.00\n"
         "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n"
         "Pedestrian 0.00 0 0.2 100 100 120 180 1.80 0.60 0.80 -3.00 1.65 10.00 1.5707963267948966 0.9\n")


def test_kitti_boxes_in_the_lidar_frame(tmp_path):
    label = tmp_path / "000000.txt"
    label.write_text(LABEL)
    car, person = read_kitti_labels(label)  # DontCare skipped
    assert car.type == "Car" and car.size_hwl == (1.5, 1.6, 4.0) and car.score is None and person.score == 0.9
    # no calib: camera axes turned to LiDAR axes. The car stands 20 m ahead (x), 2 m right (y = -2), its
    # bottom 1.65 m below the camera (z = -1.65); rotation_y = 0 puts its 4 m length along camera x, i.e.
    # LiDAR y, and its 1.6 m width along camera z, i.e. LiDAR x
    lo, hi = car.corners.min(0), car.corners.max(0)
    np.testing.assert_allclose(lo, [20 - 0.8, -2 - 2.0, -1.65], atol=1e-9)
    np.testing.assert_allclose(hi, [20 + 0.8, -2 + 2.0, -1.65 + 1.5], atol=1e-9)
    np.testing.assert_allclose(car.corners[:4, 2], -1.65)  # bottom face first
    # rotation_y = pi/2 turns the pedestrian's length onto the camera z axis = LiDAR x
    extent = person.corners.max(0) - person.corners.min(0)
    np.testing.assert_allclose(extent, [0.8, 0.6, 1.8], atol=1e-9)
    # with a calib file: exact transform (here a pure 1 m shift along LiDAR x, identity rectification)
    calib = tmp_path / "calib.txt"
    calib.write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\n"
                     "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 -1\n")
    shifted = read_kitti_labels(label, read_kitti_calib(calib))[0]
    np.testing.assert_allclose(shifted.corners, car.corners + [1.0, 0.0, 0.0], atol=1e-9)
    bad = tmp_path / "bad.txt"
    bad.write_text("Car 0 0 0 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: a KITTI label_2 line has 15 fields \(16 with a score\), got 7"):
        read_kitti_labels(bad)
    calib.write_text("R0_rect: 1 0 0\n")
    with pytest.raises(ValueError, match="calib.txt: R0_rect must have 9 numbers, got 3"):
        read_kitti_calib(calib)


def test_cli_view_html_with_prediction_and_boxes(tmp_path, monkeypatch, capsys):
    from sparseconv.app import cli

    scan_path = os.path.abspath(os.path.join(DATASETS, "street_000.npz"))
    scan = sio.read_scan(scan_path)
    prediction = scan.labels.copy()
    prediction[:50] = 6
    sio.write_scan(tmp_path / "pred.npz", scan.points, {"labels": prediction})
    (tmp_path / "label.txt").write_text(LABEL)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["view", scan_path, "--html", "out.html", "--prediction", "pred.npz", "--boxes", "label.txt",
                     "--voxel-size", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "-> out.html" in out and "without --calib: camera axes turned to LiDAR axes" in out
    assert not os.path.exists(tmp_path / "street_000.png")  # --html alone writes no picture
    page = (tmp_path / "out.html").read_text()
    meta, arrays = decode(page)
    np.testing.assert_array_equal(arrays["prediction"], prediction)
    assert len(meta["boxes"]) == 2 and meta["default_mode"] == "prediction" and meta["voxels"]["count"] > 0
    assert "without --calib" in page  # the frame note is on the page
    # the PNG with a prediction: ground truth, prediction and error panels
    assert cli.main(["view", scan_path, "--prediction", "pred.npz", "--size", "128", "-o", "cmp.png"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "cmp.png").size == (3 * 128 + 230, 128)
    # arguments that would be ignored are errors instead
    for args, message in [(("--boxes", "label.txt"), "give --html OUT.html too"),
                          (("--calib", "label.txt", "--html", "x.html"), "--calib places --boxes"),
                          (("--html", "x.htm1"), "x.htm1: the viewer is written as HTML; name it *.html"),
                          (("--color", "error", "--html", "x.html"), "--color error needs --prediction FILE"),
                          (("--prediction", "pred.npz", "--voxel-size", "1", "-o", "x.png"),
                           "picture is per point; drop --voxel-size")]:
        assert cli.main(["view", scan_path, *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not os.path.exists(tmp_path / "x.html") and not os.path.exists(tmp_path / "x.png")


def test_write_html_is_atomic_and_checks_the_name(tmp_path):
    with pytest.raises(ValueError, match="out.txt: the viewer is written as HTML; name it"):
        write_html(tmp_path / "out.txt", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="the scan has no points to show"):
        write_html(tmp_path / "out.html", np.zeros((0, 3)))
    assert os.listdir(tmp_path) == []
