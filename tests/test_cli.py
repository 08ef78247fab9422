"""The ``sparseconv`` command, driven as a user would: ``python -m sparseconv ...`` in a subprocess."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sparseconv.analysis import format_count
from sparseconv.app import cli, display
from sparseconv import io as sio

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DATASETS = os.path.join(ROOT, "datasets")
KITTI = os.path.join("semantickitti", "sequences", "00", "velodyne")


def run(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "sparseconv", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def one_line_error(proc, *fragments):
    """The failure is one line on stderr, 'sparseconv...: error: ...', without a traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sparseconv") and ": error: " in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A working folder with the shipped samples and a few broken files."""
    d = tmp_path_factory.mktemp("cli")
    shutil.copytree(DATASETS, d / "data", ignore=shutil.ignore_patterns("*.py", "*.md"))
    (d / "data" / "broken.bin").write_bytes(b"\0" * 17)
    (d / "data" / "empty.ply").write_bytes(b"")
    return d


def test_help_everywhere(work):
    proc = run("--help", cwd=work)
    assert proc.returncode == 0
    for command in ("info", "voxelize", "view", "check", "summary", "demo"):
        assert command in proc.stdout
    assert "exit codes" in proc.stdout


@pytest.mark.parametrize("command", ["info", "voxelize", "view", "check", "summary", "demo"])
def test_help_of_each_command(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sparseconv {command}") and "--debug" in out


def test_info(work):
    path = os.path.join("data", KITTI, "000000.bin")
    proc = run("info", path, "--voxel-sizes", "0.1,0.4", cwd=work)
    assert proc.returncode == 0, proc.stderr
    scan = sio.read_scan(work / path)
    out = proc.stdout
    assert f"points      {len(scan):,}" in out
    assert "KITTI Velodyne .bin" in out and "SemanticKITTI .label" in out
    assert "intensity" in out and "labels" in out and "road" in out
    lo, hi = scan.bounds()
    assert f"{lo[0]:10.3f} .. {hi[0]:10.3f}" in out
    import torch

    from sparseconv import voxelize

    n = len(voxelize(torch.from_numpy(scan.points), 0.4).tensor)
    assert any(line.split()[:3] == ["0.4", "m", f"{n:,}"] for line in out.splitlines() if "0.4 m" in line)


def test_voxelize_one_file(work):
    proc = run("voxelize", "data/indoor/room_000.ply", "--voxel-size", "0.1", "--reduce", "max", "-o", "room.npz",
               cwd=work)
    assert proc.returncode == 0, proc.stderr
    scan = sio.read_scan(work / "data" / "indoor" / "room_000.ply")
    vf = sio.read_voxels(work / "room.npz")
    assert f"{len(scan):,} points -> {len(vf.tensor):,} voxels" in proc.stdout and " ms" in proc.stdout
    assert vf.feature_names == ("intensity", "red", "green", "blue", "labels")
    assert vf.reduce == "max" and vf.point_to_voxel.shape == (len(scan),)
    assert vf.tensor.voxel_size == (0.1, 0.1, 0.1)
    # max intensity per voxel, recomputed here
    p2v = vf.point_to_voxel.numpy()
    expect = np.full(len(vf.tensor), -np.inf)
    np.maximum.at(expect, p2v, scan.intensity.astype(np.float64))
    np.testing.assert_allclose(vf.tensor.feats[:, 0].numpy(), expect, rtol=1e-6)


def test_voxelize_many_files_with_one_broken(work):
    proc = run("voxelize", f"data/{KITTI}/000000.bin", f"data/{KITTI}/000001.bin", "data/broken.bin",
               "data/street_000.npz", "--voxel-size", "0.2", "-o", "voxels", cwd=work)
    assert proc.returncode == 2
    assert "broken.bin: size 17 bytes is not a multiple of 16" in proc.stderr and "Traceback" not in proc.stderr
    assert "voxelized 3 of 4 files" in proc.stdout
    assert sorted(os.listdir(work / "voxels")) == ["000000.npz", "000001.npz", "street_000.npz"]
    vf = sio.read_voxels(work / "voxels" / "000001.npz")
    assert vf.source.endswith("000001.bin") and "labels" in vf.feature_names
    assert not any(name.startswith(".") for name in os.listdir(work / "voxels"))  # no temporary files left


def test_view_writes_a_picture_of_the_scan(work):
    proc = run("view", f"data/{KITTI}/000000.bin", "--color", "label", "--size", "256", "-o", "kitti.png", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "coloured by label -> kitti.png" in proc.stdout
    img = np.asarray(Image.open(work / "kitti.png").convert("RGB"))
    assert img.shape == (256, 2 * 256 + 230, 3)
    road = np.array(sio.SEMANTIC_KITTI_CLASS_COLORS[8])
    assert (img == road).all(2).sum() > 500  # the road, in the road's colour
    # no display and no -o: ./STEM.png in the current folder, voxelized on request
    proc = run("view", "data/street_000.npz", "--voxel-size", "0.5", "--color", "intensity", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "voxels at 0.5 m" in proc.stdout and os.path.isfile(work / "street_000.png")


def test_check_quick(work):
    proc = run("check", "--quick", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from sparseconv.app.checks import GRID_OPS, OPS, VARIANT_OPS

    rows = [ln.split() for ln in proc.stdout.splitlines()]
    table = {r[0]: r for r in rows if r and r[0] in OPS}
    assert set(table) == set(OPS) and len(OPS) == 20
    for op, r in table.items():
        assert r[-1] == "PASS" and int(r[1]) >= (3 if op in GRID_OPS else 1) and float(r[2]) < 1e-9
    assert {"SparseDeformConv3d", "SparseDynamicConv3d", "Involution3d", "OctaveConv3d"} <= set(VARIANT_OPS)
    assert "all 20 ops match their dense twins" in proc.stdout


def test_summary_of_a_builtin_model(tmp_path, capsys):
    from sparseconv.analysis import summarize_scan

    scan = os.path.join(os.path.dirname(__file__), "..", "datasets", "street_000.npz")
    assert cli.main(["summary", "sparse_resnet14", scan, "--voxel-size", "0.5"]) == 0
    out = capsys.readouterr().out
    expected = summarize_scan("sparse_resnet14", scan, 0.5)
    assert out.splitlines()[0].split()[:4] == ["Layer", "Type", "Output", "(sites"]
    assert f"MACs {format_count(expected.total_macs)} ({expected.total_macs:,})" in out and "conv1" in out
    assert cli.main(["summary", "vgg16", scan]) == 2
    assert "invalid choice: 'vgg16'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown model 'vgg16'; built-in models: minkunet14"):
        summarize_scan("vgg16", scan)


def test_check_list_and_unknown_op(capsys):
    from sparseconv.app.checks import OPS

    assert cli.main(["check", "--list"]) == 0
    assert capsys.readouterr().out.split() == list(OPS)
    assert cli.main(["check", "--op", "SparseWarpConv3d"]) == 2
    assert "unknown op 'SparseWarpConv3d' for --op; 'sparseconv check --list' lists the 20 ops" in capsys.readouterr().err


def test_check_failure_exits_1(monkeypatch, capsys):
    from sparseconv.app import checks

    def failing(quick, ops, seed):
        return [checks.CheckResult("SparseConv3d", 3, 0.5, ["k=3: forward max abs error 0.5"], 0.1)]

    monkeypatch.setattr(checks, "run_checks", failing)
    assert cli.main(["check", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 of 1 ops FAILED" in out


def test_demo(work):
    proc = run("demo", "--output-dir", "demo_out", "--steps", "3", "--voxel-size", "0.2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for fragment in ("points", "voxels", "forward:", "layer", "out sites", "SubMConv3d", "SparseInverseConv3d",
                     "accuracy", "sparseconv_demo.png"):
        assert fragment in out, fragment
    img = np.asarray(Image.open(work / "demo_out" / "sparseconv_demo.png").convert("RGB"))
    assert img.shape[0] == 640 and (img[40:600, :1280] != (16, 18, 24)).any(2).mean() > 0.05
    assert img.shape[1] == 3 * 640 + 230  # ground truth, prediction and error panels
    page = (work / "demo_out" / "sparseconv_demo.html").read_text()
    assert "sparseconv_demo.html" in out and '"name":"error"' in page and '"name":"prediction"' in page


def test_missing_file(work):
    proc = run("info", "no_such_scan.ply", cwd=work)
    assert proc.returncode == 2
    one_line_error(proc, "no_such_scan.ply", "no such file")


def test_bad_voxel_size(work):
    proc = run("voxelize", "data/street_000.npz", "--voxel-size", "-0.5", "-o", "x.npz", cwd=work)
    assert proc.returncode == 2
    one_line_error(proc, "--voxel-size", "must be a positive number", "'-0.5'")
    assert not os.path.exists(work / "x.npz")


def test_bad_input_files(work):
    proc = run("view", "data/empty.ply", "-o", "never.png", cwd=work)
    assert proc.returncode == 2
    one_line_error(proc, "empty.ply: is empty")
    assert not os.path.exists(work / "never.png")
    proc = run("info", "data/street_000.npz", "--voxel-sizes", "0,1", cwd=work)
    assert proc.returncode == 2
    one_line_error(proc, "--voxel-sizes")


def test_unknown_command_and_no_command(work):
    proc = run("frobnicate", cwd=work)
    assert proc.returncode == 2
    one_line_error(proc, "invalid choice: 'frobnicate'")
    assert cli.main([]) == 2


def test_debug_shows_the_traceback(work):
    proc = run("--debug", "info", "no_such_scan.ply", cwd=work)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and proc.stderr.rstrip().endswith("no_such_scan.ply: no such file")


def test_in_process_errors(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    assert cli.main(["view", "data/street_000.npz", "--color", "rgb", "-o", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "has no RGB colours to colour by; use --color height|intensity|label" in err
    assert cli.main(["voxelize", "data/street_000.npz", "data/indoor/room_000.ply", "--voxel-size", "1",
                     "-o", "one.npz"]) == 2
    assert "names one file but 2 inputs" in capsys.readouterr().err
    assert cli.main(["voxelize", "data/street_000.npz", "--voxel-size", "1e-9", "-o", "tiny.npz"]) == 2
    assert "street_000.npz: points span a grid" in capsys.readouterr().err

    def bug(args):
        raise RuntimeError("something impossible")

    monkeypatch.setattr(cli, "cmd_info", bug)
    assert cli.main(["info", "x.ply"]) == 3
    assert "internal error: RuntimeError: something impossible" in capsys.readouterr().err


def test_display_detection(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert not display.has_display()
    monkeypatch.setenv("DISPLAY", ":4242")  # set but nothing listens: no window (Open3D would hang offscreen)
    assert not display.has_display()
    monkeypatch.setenv("DISPLAY", "not a display")
    assert not display.has_display()
    (tmp_path / "wayland-7").write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-7")
    assert display.has_display()
