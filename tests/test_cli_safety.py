"""The command line's output safety and exit codes: no output lands on an input, none is left partial,
none replaces an existing file without --force, layouts are named not guessed, and exit 2 means bad
input while exit 3 means a fault in the library."""
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from sparseconv import io as sio
from sparseconv.app import cli

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def error_line(capsys):
    """The one stderr line of a failed in-process run."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparseconv") and ": error: " in lines[0], lines
    return lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with a small labelled scan in several formats."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 4, (200, 3)).astype(np.float32)
    sio.write_scan("a.ply", pts, {"intensity": rng.uniform(0, 1, 200).astype(np.float32)})
    sio.write_scan("pts.npz", pts, {"labels": np.arange(200) % 3})
    (tmp_path / "pcd").mkdir()
    header = ("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 200\nHEIGHT 1\n"
              "POINTS 200\nDATA binary\n")
    (tmp_path / "a.pcd").write_bytes(header.encode() + pts.tobytes())
    return tmp_path


def listing(folder):
    return sorted(os.listdir(folder))


# -- outputs never land on inputs ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["pts.npz", "a.ply"])
def test_output_equal_to_the_input_is_refused(work, capsys, name):
    before = (work / name).read_bytes()
    for extra in ([], ["--force"]):
        assert cli.main(["voxelize", name, "--voxel-size", "0.5", "-o", name, *extra]) == 2
        assert f"{name}: is the input file {name}; the output must not overwrite an input" in error_line(capsys)
    assert (work / name).read_bytes() == before


def test_output_that_is_the_input_by_another_name(work, capsys):
    os.link(work / "pts.npz", work / "hardlink.npz")
    os.symlink(work / "pts.npz", work / "symlink.npz")
    before = (work / "pts.npz").read_bytes()
    for out in ("hardlink.npz", "symlink.npz", "./sub/../pts.npz"):
        assert cli.main(["voxelize", "pts.npz", "--voxel-size", "0.5", "-o", out, "--force"]) == 2
        assert "is the input file pts.npz" in error_line(capsys)
    assert (work / "pts.npz").read_bytes() == before


def test_directory_output_onto_an_input_is_refused(work, capsys):
    assert cli.main(["voxelize", "pts.npz", "a.ply", "--voxel-size", "0.5", "-o", ".", "--force"]) == 2
    assert "pts.npz: is the input file pts.npz" in error_line(capsys)


def test_existing_output_needs_force(work, capsys):
    (work / "v.npz").write_bytes(b"precious")
    assert cli.main(["voxelize", "a.ply", "--voxel-size", "0.5", "-o", "v.npz"]) == 2
    assert "v.npz: exists; pass --force to overwrite it" in error_line(capsys)
    assert (work / "v.npz").read_bytes() == b"precious"
    assert cli.main(["voxelize", "a.ply", "--voxel-size", "0.5", "-o", "v.npz", "--force"]) == 0
    assert len(sio.read_voxels(work / "v.npz").point_to_voxel) == 200
    # in a directory too, checked for every output before any is written
    (work / "out").mkdir()
    (work / "out" / "pts.npz").write_bytes(b"precious")
    assert cli.main(["voxelize", "a.ply", "pts.npz", "--voxel-size", "0.5", "-o", "out"]) == 2
    assert "out/pts.npz: exists; pass --force" in error_line(capsys)
    assert listing(work / "out") == ["pts.npz"]


def test_unknown_output_extension_creates_nothing(work, capsys):
    before = listing(work)
    assert cli.main(["voxelize", "a.ply", "--voxel-size", "0.5", "-o", "out.csv"]) == 2
    assert "out.csv: cannot write voxels as '.csv'; supported: .npz, .ply" in error_line(capsys)
    assert listing(work) == before  # no directory called out.csv
    # a directory name with a dot is a directory when it ends with /
    assert cli.main(["voxelize", "a.ply", "--voxel-size", "0.5", "-o", "v1.2/", "-q"]) == 0
    assert listing(work / "v1.2") == ["a.npz"]


def test_inputs_whose_outputs_clash(work, capsys):
    before = listing(work)
    assert cli.main(["voxelize", "a.ply", "a.pcd", "--voxel-size", "0.5", "-o", "vox"]) == 2
    assert "a.ply and a.pcd would both be written to vox/a.npz" in error_line(capsys)
    assert listing(work) == before  # the output directory was not even created
    assert cli.main(["voxelize", "a.ply", "./a.ply", "--voxel-size", "0.5", "-o", "vox"]) == 2
    assert "./a.ply: is given more than once (as a.ply)" in error_line(capsys)
    assert cli.main(["voxelize", "a.ply", "pcd/../a.ply", "--voxel-size", "0.5", "-o", "vox"]) == 2
    assert "pcd/../a.ply: is given more than once (as a.ply)" in error_line(capsys)
    # same stems in different folders: widened by the folder name
    (work / "pcd" / "a.ply").write_bytes((work / "a.ply").read_bytes())
    assert cli.main(["voxelize", "a.ply", "pcd/a.ply", "--voxel-size", "0.5", "-o", "vox", "-q"]) == 0
    assert listing(work / "vox") == sorted([f"{work.name}_a.npz", "pcd_a.npz"])


def test_view_keeps_an_existing_picture(work, capsys):
    (work / "a.png").write_bytes(b"precious")
    assert cli.main(["view", "a.ply", "--headless"]) == 2
    assert "a.png: exists; pass --force" in error_line(capsys)
    assert (work / "a.png").read_bytes() == b"precious"


# -- signals leave nothing partial ----------------------------------------------------------------

@pytest.mark.parametrize("signame,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_mid_write_leaves_no_partial_file(work, signame, code):
    """The writer is interrupted by a real signal half-way through the archive."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        from sparseconv.app import cli

        real = np.savez_compressed

        def half_then_signal(f, **arrays):
            f.write(b"half an archive")
            f.flush()
            os.kill(os.getpid(), signal.{signame})
            real(f, **arrays)  # reached only if the signal were ignored

        np.savez_compressed = half_then_signal
        sys.exit(cli.main(["voxelize", "a.ply", "--voxel-size", "0.5", "-o", "out.npz"]))
    """)
    before = listing(work)
    proc = run("-c", script, cwd=work)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("sparseconv: terminated" if code == 143 else "sparseconv: interrupted")
    assert listing(work) == before  # neither out.npz nor a hidden .out.npz.*.part


def test_partial_files_are_tracked_and_removed(tmp_path):
    """What the signal handlers call: every temporary file of a write in progress goes."""
    target = tmp_path / "x.bin"
    with pytest.raises(FileNotFoundError):
        with sio.atomic_write(target) as f:
            f.write(b"partial")
            pending = sio.partial_files()
            assert len(pending) == 1 and os.path.basename(pending[0]).startswith(".x.bin.")
            assert sio.remove_partial_files() == pending and not os.path.exists(pending[0])
    assert listing(tmp_path) == [] and sio.partial_files() == []


# -- layouts are named, never guessed ---------------------------------------------------------------

def test_nuscenes_by_name_or_by_format(work, capsys):
    rec = np.zeros((80, 5), "<f4")
    rec[:, 0] = np.arange(80)
    rec[:, 4] = np.arange(80) % 32
    rec.tofile(work / "sweep.bin")
    rec.tofile(work / "n008__LIDAR_TOP__1.pcd.bin")
    assert cli.main(["info", "sweep.bin"]) == 2
    line = error_line(capsys)
    assert "sweep.bin: the layout of this .bin is ambiguous" in line and "KITTI records" in line and "nuScenes records" in line
    assert cli.main(["info", "sweep.bin", "--format", "nuscenes", "--voxel-sizes", "1"]) == 0
    out = capsys.readouterr().out
    assert "points      80 " in out and "nuScenes .pcd.bin" in out and "ring" in out
    assert cli.main(["info", "n008__LIDAR_TOP__1.pcd.bin", "--voxel-sizes", "1"]) == 0
    assert "points      80 " in capsys.readouterr().out
    assert cli.main(["voxelize", "sweep.bin", "--input-format", "nuscenes", "--voxel-size", "1", "-o", "s.npz"]) == 0
    capsys.readouterr()
    assert sio.read_voxels(work / "s.npz").point_to_voxel.shape == (80,)
    assert cli.main(["voxelize", "sweep.bin", "--format", "nuscenes", "--voxel-size", "1", "-o", "t.npz"]) == 2
    assert "'nuscenes' is an input format: use --input-format nuscenes" in error_line(capsys)


def test_columns_and_labels_flags(work, capsys):
    np.save(work / "six.npy", np.hstack([np.random.default_rng(1).uniform(0, 3, (50, 3)), np.ones((50, 3))]))
    assert cli.main(["info", "six.npy"]) == 2
    assert "6 unnamed columns are ambiguous: x,y,z,red,green,blue or x,y,z,nx,ny,nz" in error_line(capsys)
    assert cli.main(["info", "six.npy", "--columns", "x,y,z,nx,ny,nz", "--voxel-sizes", "1"]) == 0
    assert "normals" in capsys.readouterr().out
    np.save(work / "labels.npy", np.arange(50) % 4)
    assert cli.main(["voxelize", "six.npy", "--columns", "x,y,z,_,_,_", "--labels", "labels.npy", "--voxel-size", "1",
                     "-o", "six_vox.npz"]) == 0
    capsys.readouterr()
    assert sio.read_voxels(work / "six_vox.npz").feature_names == ("one", "labels")
    np.save(work / "short.npy", np.arange(49))
    assert cli.main(["info", "six.npy", "--columns", "x,y,z,_,_,_", "--labels", "short.npy"]) == 2
    assert "short.npy: holds 49 labels but six.npy has 50 points" in error_line(capsys)
    assert cli.main(["voxelize", "six.npy", "a.ply", "--columns", "x,y,z,_,_,_", "--labels", "labels.npy",
                     "--voxel-size", "1", "-o", "vox"]) == 2
    assert "--labels attaches labels to one scan" in error_line(capsys)
    assert cli.main(["info", "a.ply", "--columns", "x,y,z"]) == 2
    assert "a.ply: columns= names the columns of unnamed tables" in error_line(capsys)


# -- exit codes -----------------------------------------------------------------------------------

def _hostile_files(folder):
    """A few hostile files of different formats, each a few kilobytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 3)})
    (folder / "lie.npy").write_bytes(buf.getvalue() + b"\0" * 48)
    with zipfile.ZipFile(folder / "lie.npz", "w") as z:
        z.writestr("points.npy", buf.getvalue() + b"\0" * 48)
    (folder / "lie.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\n"
                                     b"property float x\nproperty float y\nproperty float z\nend_header\n" + b"\0" * 3000)
    (folder / "lie.pcd").write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 0 0 0\nWIDTH 100\n"
                                     b"HEIGHT 1\nPOINTS 100\nDATA binary\n" + b"\0" * 1200)
    names = ["lie.npy", "lie.npz", "lie.ply", "lie.pcd"]
    laspy = pytest.importorskip("laspy")
    las = laspy.LasData(laspy.LasHeader(point_format=3, version="1.2"))
    las.x, las.y, las.z = np.zeros(3), np.zeros(3), np.zeros(3)
    las.write(str(folder / "ok.las"))
    data = bytearray((folder / "ok.las").read_bytes())
    struct.pack_into("<I", data, 100, 4_000_000_000)  # variable-length records
    (folder / "lie.las").write_bytes(bytes(data))
    return names + ["lie.las"]


def test_hostile_files_end_to_end(work):
    """Every command on every hostile file, in a fresh process measured from inside: one line naming the
    file, exit 2, no output, and the process's peak memory (torch included) far under 1 GB."""
    names = _hostile_files(work)
    probe = textwrap.dedent("""
        import contextlib, io, json, resource, sys, time
        from sparseconv.app.cli import main
        results = []
        for name in sys.argv[1:]:
            for command in (["info", name], ["voxelize", name, "--voxel-size", "0.1", "-o", "hostile_out.npz"]):
                err = io.StringIO()
                t0 = time.perf_counter()
                with contextlib.redirect_stderr(err):
                    rc = main(command)
                results.append([name, rc, err.getvalue(), time.perf_counter() - t0])
        print(json.dumps({"results": results, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """)
    proc = run("-c", probe, *names, cwd=work)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["results"]) == 2 * len(names)
    for name, rc, err, seconds in report["results"]:
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"sparseconv: error: {name}: "), (name, rc, err)
        assert seconds < 5, (name, seconds)
    assert report["peak_kb"] < 1024 * 1024, report["peak_kb"]  # ru_maxrss is in kilobytes on Linux
    assert not os.path.exists(work / "hostile_out.npz")


def test_max_bytes_flag(work, capsys):
    assert cli.main(["info", "pts.npz", "--max-bytes", "1K"]) == 2
    line = error_line(capsys)
    assert "pts.npz: the archive would decompress to" in line and "over the 1.0 KB limit" in line
    assert cli.main(["info", "pts.npz", "--max-bytes", "none", "--voxel-sizes", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["info", "pts.npz", "--max-bytes", "lots"]) == 2
    assert "--max-bytes" in capsys.readouterr().err


def test_demo_on_a_scan_too_fine_to_voxelize_is_bad_input(work, capsys):
    assert cli.main(["demo", "--input", "a.ply", "--voxel-size", "1e-9", "--output-dir", "demo"]) == 2
    assert "a.ply: points span a grid" in error_line(capsys)


def test_library_fault_is_exit_3_not_bad_input(work, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(sio, "describe_scan", broken)
    assert cli.main(["info", "a.ply"]) == 3
    assert "internal error: ValueError: an internal invariant broke (this is a bug" in capsys.readouterr().err


def test_bad_input_kinds_are_exit_2(work, capsys, monkeypatch):
    assert cli.main(["info", "missing.ply"]) == 2
    assert "missing.ply: no such file" in error_line(capsys)
    assert cli.main(["info", "pcd"]) == 2
    assert "pcd: is a directory" in error_line(capsys)
    assert cli.main(["voxelize", "a.ply", "--voxel-size", "0.5", "-o", "no/such/dir/v.npz"]) == 2
    assert "output directory" in error_line(capsys)

    def needs_laspy(*args, **kwargs):
        raise sio.MissingDependencyError("x.las: reading LAS/LAZ needs laspy: pip install 'sparseconv[las]'")

    monkeypatch.setattr(sio, "describe_scan", needs_laspy)
    assert cli.main(["info", "a.ply"]) == 2
    assert "pip install 'sparseconv[las]'" in error_line(capsys)


def test_old_paths_warn_and_still_work():
    code = textwrap.dedent("""
        import importlib, warnings
        for old, new in (("sparseconv.cli", "sparseconv.app.cli"), ("sparseconv.demo", "sparseconv.app.demo"),
                         ("sparseconv.checks", "sparseconv.app.checks")):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            print(module is importlib.import_module(new), [str(w.message) for w in caught
                                                           if w.category is DeprecationWarning])
    """)
    proc = run("-c", code, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"True ['{old} moved to {new}; the old path will be removed in sparseconv 0.3']"
        for old, new in (("sparseconv.cli", "sparseconv.app.cli"), ("sparseconv.demo", "sparseconv.app.demo"),
                         ("sparseconv.checks", "sparseconv.app.checks"))]
