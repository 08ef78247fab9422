"""The ``sparseconv`` command: inspect, voxelize and picture scans, check the library, run the demo.

    sparseconv demo                                   # the main job on built-in data
    sparseconv info scan.ply
    sparseconv voxelize scans/*.bin --voxel-size 0.05 -o voxels/
    sparseconv view scan.bin --color label -o scan.png
    sparseconv check --quick

Exit codes: 0 success; 1 a check failed; 2 bad arguments or input (missing file, unreadable
scan, bad value); 3 an unexpected internal error (a bug: run again with ``--debug`` for the
traceback); 130 interrupted. Errors are one line on stderr, ``sparseconv: error: ...``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["main", "EXIT_OK", "EXIT_CHECK_FAILED", "EXIT_USAGE", "EXIT_INTERNAL"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

PROG = "sparseconv"
COLOR_CHOICES = ("auto", "height", "intensity", "label", "rgb")
DEFAULT_INFO_SIZES = (0.05, 0.1, 0.2, 0.5)

_EPILOG = ("exit codes: 0 ok, 1 check failed, 2 bad arguments or input, 3 internal error (run with --debug), "
           "130 interrupted")


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 (or ``code``)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (raised, so main() decides what to print)."""

    def error(self, message: str):  # type: ignore[override]
        raise _ArgumentError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------
# Argument types
# --------------------------------------------------------------------------------------

def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _voxel_size(text: str):
    """``0.05`` or ``0.05,0.05,0.1`` (per axis)."""
    parts = [p for p in text.replace(" ", "").split(",")]
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"must be one positive number or three (x,y,z), got {text!r}")
    values = [_positive_float(p) for p in parts]
    return values[0] if len(values) == 1 else tuple(values)


def _size_list(text: str) -> Tuple[float, ...]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("needs at least one voxel size")
    return tuple(_positive_float(p) for p in parts)


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _image_size(text: str) -> int:
    value = _nonneg_int(text)
    if not 64 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be between 64 and 4096 pixels, got {text!r}")
    return value


def _fmt_size(v) -> str:
    return f"{v:g}" if not isinstance(v, tuple) else ",".join(f"{x:g}" for x in v)


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------

def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _describe_attribute(name: str, value: np.ndarray, scan) -> str:
    dtype = str(value.dtype)
    shape = f"[{value.shape[1]}]" if value.ndim > 1 else ""
    if name in ("labels", "instance") or (value.ndim == 1 and np.issubdtype(value.dtype, np.integer) and name == "batch"):
        ids, counts = np.unique(value, return_counts=True)
        order = np.argsort(-counts)
        names = scan.label_names if name == "labels" and scan.label_names else {}
        top = ", ".join(f"{names.get(int(ids[i]), int(ids[i]))} {100 * counts[i] / value.shape[0]:.1f}%" for i in order[:8])
        more = f", ... (+{len(ids) - 8})" if len(ids) > 8 else ""
        kind = "classes" if name == "labels" else "ids"
        return f"{name:<10} {dtype:<8} {len(ids)} {kind}: {top}{more}"
    if value.size == 0:
        return f"{name:<10} {dtype}{shape}"
    v = value.astype(np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return f"{name:<10} {dtype}{shape} (no finite values)"
    return f"{name:<10} {dtype + shape:<8} [{finite.min():.4g}, {finite.max():.4g}]  mean {finite.mean():.4g}"


_FORMAT_NAMES = {
    "ply": "PLY", "pcd": "PCD", "xyz": "XYZ text", "xyzn": "XYZ + normals text", "xyzrgb": "XYZ + RGB text",
    "pts": "PTS text", "kitti": "KITTI Velodyne .bin (float32 x y z intensity)", "npy": "NumPy .npy",
    "npz": "NumPy .npz", "voxels": "sparseconv voxel file (.npz; points are voxel centres)", "las": "LAS", "laz": "LAZ",
}


def cmd_info(args) -> int:
    import torch

    from . import io as sio
    from .engine.voxelize import voxelize

    scan = sio.read_scan(args.file)
    pts = scan.points
    finite = np.isfinite(pts).all(1)
    lo, hi = scan.bounds()
    print(f"file        {args.file}")
    fmt = _FORMAT_NAMES.get(scan.format, scan.format)
    if scan.format == "kitti" and scan.labels is not None:
        fmt += " + SemanticKITTI .label"
    print(f"format      {fmt}, {_human_bytes(os.path.getsize(args.file))}")
    print(f"points      {len(scan):,}" + ("" if finite.all() else f"  ({int((~finite).sum()):,} with NaN/inf coordinates)")
          + f"  ({pts.dtype})")
    for axis, name in enumerate("xyz"):
        prefix = "extent     " if axis == 0 else "           "
        print(f"{prefix} {name}  {lo[axis]:10.3f} .. {hi[axis]:10.3f} m   ({hi[axis] - lo[axis]:.3f} m)")
    if scan.attributes:
        for i, (name, value) in enumerate(scan.attributes.items()):
            print(("attributes  " if i == 0 else "            ") + _describe_attribute(name, value, scan))
    else:
        print("attributes  none (x, y, z only)")
    if scan.format == "voxels":
        vf = sio.read_voxels(args.file)
        t = vf.tensor
        print(f"voxel file  voxel size {_fmt_size(tuple(t.voxel_size))} m, origin {tuple(round(o, 4) for o in t.origin)}, "
              f"grid {t.spatial_shape}, features {', '.join(vf.feature_names) or 'none'}, "
              f"{vf.point_to_voxel.numel():,} points mapped" + (f", from {vf.source}" if vf.source else ""))
    sizes = args.voxel_sizes
    rows = []
    cloud = torch.from_numpy(np.ascontiguousarray(pts))
    for s in sizes:
        t0 = time.perf_counter()
        try:
            vox = voxelize(cloud, s, drop_invalid=True)
        except ValueError as exc:
            rows.append((f"{s:g} m", "-", "-", str(exc).split(";")[0][:60], ""))
            continue
        n = len(vox.tensor)
        rows.append((f"{s:g} m", f"{n:,}", f"{int(finite.sum()) / max(n, 1):.2f}",
                     " x ".join(str(v) for v in vox.tensor.spatial_shape), f"{1000 * (time.perf_counter() - t0):.0f} ms"))
    head = ("voxel size", "voxels", "points/voxel", "grid", "time")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [head] + rows
    for i, r in enumerate(lines):
        cells = "  ".join(f"{c:>{w}}" if j in (1, 2, 4) else f"{c:<{w}}" for j, (c, w) in enumerate(zip(r, widths)))
        print(("voxels      " if i == 0 else "            ") + cells.rstrip())
    return EXIT_OK


# --------------------------------------------------------------------------------------
# voxelize
# --------------------------------------------------------------------------------------

def _default_features(scan) -> List[str]:
    names = []
    if scan.intensity is not None:
        names.append("intensity")
    if scan.colors is not None:
        names.append("rgb")
    if scan.normals is not None:
        names.append("normals")
    return names


def _output_names(files: Sequence[str], ext: str) -> List[str]:
    """A distinct output file name per input: the stem, widened by parent folders on clashes."""
    parts = [os.path.normpath(os.path.abspath(f)).split(os.sep) for f in files]
    depth = [1] * len(files)

    def name(i):
        comps = parts[i][-depth[i]:]
        comps[-1] = os.path.splitext(comps[-1])[0]
        return "_".join(c for c in comps if c) + ext

    for _ in range(max((len(p) for p in parts), default=1)):
        names = [name(i) for i in range(len(files))]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            return names
        for i, n in enumerate(names):
            if n in clashes and depth[i] < len(parts[i]):
                depth[i] += 1
    raise CliError("the same input file is given more than once")


def _plan_outputs(files: Sequence[str], out: str, fmt: Optional[str]) -> List[str]:
    ext_of_out = os.path.splitext(out)[1].lower()
    if len(files) == 1 and ext_of_out in (".npz", ".ply") and not os.path.isdir(out):
        if fmt is not None and "." + fmt != ext_of_out:
            raise CliError(f"--format {fmt} does not match the output file {out}")
        return [out]
    if os.path.exists(out) and not os.path.isdir(out):
        raise CliError(f"{out}: exists and is not a directory (for several inputs -o names a directory)")
    if ext_of_out in (".npz", ".ply") and len(files) > 1:
        raise CliError(f"-o {out} names one file but {len(files)} inputs were given; pass a directory")
    ext = "." + (fmt or "npz")
    return [os.path.join(out, n) for n in _output_names(files, ext)]


def _voxelize_one(path: str, out_path: str, args) -> Tuple[int, int, float, float]:
    import torch

    from . import io as sio
    from .data.datasets import majority_labels
    from .engine.voxelize import voxelize

    t0 = time.perf_counter()
    scan = sio.read_scan(path)
    t_read = time.perf_counter() - t0
    names = args.features.split(",") if args.features else _default_features(scan)
    names = [n for n in (x.strip() for x in names) if n]
    try:
        feats, cols = scan.feature_columns(names)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    if not cols:
        feats, cols = np.ones((len(scan), 1), np.float32), ["one"]
    t1 = time.perf_counter()
    try:
        vox = voxelize(torch.from_numpy(np.ascontiguousarray(scan.points)), args.voxel_size,
                       feats=torch.from_numpy(feats), reduce=args.reduce, drop_invalid=True)
    except ValueError as exc:
        raise CliError(f"{path}: {exc}") from None
    tensor = vox.tensor
    if args.reduce == "count":
        cols = ["count"]
    label_names = None
    if scan.labels is not None:
        lab = majority_labels(vox.point_to_voxel, torch.from_numpy(scan.labels), len(tensor), ignore_index=-1)
        tensor = tensor.replace(torch.cat([tensor.feats, lab.to(tensor.dtype)[:, None]], 1))
        cols = cols + ["labels"]
        label_names = scan.label_names
    t_vox = time.perf_counter() - t1
    sio.write_voxels(out_path, tensor, vox.point_to_voxel, num_points=vox.num_points, feature_names=cols,
                     source=os.path.abspath(path), reduce=args.reduce, label_names=label_names)
    return len(scan), len(tensor), t_read, t_vox


def cmd_voxelize(args) -> int:
    from tqdm import tqdm

    files = list(args.files)
    for f in files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"{f}: no such file")
    outputs = _plan_outputs(files, args.output, args.format)
    if len(outputs) > 1 or os.path.splitext(args.output)[1].lower() not in (".npz", ".ply"):
        os.makedirs(args.output, exist_ok=True)
    many = len(files) > 1
    failed = 0
    total_points = total_voxels = 0
    t_start = time.perf_counter()
    bar = tqdm(list(zip(files, outputs)), disable=not many or args.quiet, file=sys.stderr, unit="file",
               desc="voxelizing", leave=False)
    for path, out_path in bar:
        t0 = time.perf_counter()
        try:
            n_points, n_voxels, t_read, t_vox = _voxelize_one(path, out_path, args)
        except (CliError, FileNotFoundError, ValueError, OSError) as exc:
            if not many:
                raise
            failed += 1
            tqdm.write(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            continue
        total_points += n_points
        total_voxels += n_voxels
        line = (f"{path}: {n_points:,} points -> {n_voxels:,} voxels at {_fmt_size(args.voxel_size)} m ({args.reduce}); "
                f"read {1000 * t_read:.0f} ms, voxelize {1000 * t_vox:.0f} ms, total {1000 * (time.perf_counter() - t0):.0f} ms"
                f" -> {out_path}")
        if not args.quiet:
            tqdm.write(line) if many else print(line)
    bar.close()
    if many:
        done = len(files) - failed
        print(f"voxelized {done} of {len(files)} files: {total_points:,} points -> {total_voxels:,} voxels "
              f"in {time.perf_counter() - t_start:.2f} s")
    if failed:
        raise CliError(f"{failed} of {len(files)} files failed (see the errors above)")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# view
# --------------------------------------------------------------------------------------

def _has_display() -> bool:
    """Whether a window can be shown: a reachable Wayland or X11 display (always on macOS/Windows).

    The display named by ``WAYLAND_DISPLAY`` / ``DISPLAY`` must answer, not merely be set:
    Open3D falls back to an invisible offscreen context on a dead display and would wait
    there forever for a window to close.
    """
    if sys.platform in ("darwin", "win32"):
        return True
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if wayland:
        sock = wayland if os.path.isabs(wayland) else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), wayland)
        if os.path.exists(sock):
            return True
    display = os.environ.get("DISPLAY", "")
    if ":" not in display:
        return False
    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".")[0])
    except ValueError:
        return False
    if host in ("", "unix") or host.startswith("/"):
        return os.path.exists(f"/tmp/.X11-unix/X{number}") or (host.startswith("/") and os.path.exists(display))
    import socket

    try:
        with socket.create_connection((host, 6000 + number), timeout=0.5):
            return True
    except OSError:
        return False


def _view_data(scan, voxel_size, mode: str):
    """(points, intensity, labels, colors) -- per point, or per voxel with --voxel-size."""
    if voxel_size is None:
        return scan.points, scan.intensity, scan.labels, scan.colors
    import torch

    from .data.datasets import majority_labels
    from .engine.voxelize import voxelize

    pts = torch.from_numpy(np.ascontiguousarray(scan.points))
    feats = []
    if scan.intensity is not None:
        feats.append(torch.from_numpy(scan.intensity.astype(np.float32))[:, None])
    if scan.colors is not None:
        feats.append(torch.from_numpy(scan.colors.astype(np.float32)))
    f = torch.cat(feats, 1) if feats else None
    vox = voxelize(pts, voxel_size, feats=f, drop_invalid=True)
    centres = vox.tensor.voxel_centers().numpy()
    out = vox.tensor.feats.numpy()
    col = 0
    intensity = colors = labels = None
    if scan.intensity is not None:
        intensity = out[:, col]
        col += 1
    if scan.colors is not None:
        colors = np.clip(np.rint(out[:, col: col + 3]), 0, 255).astype(np.uint8)
    if scan.labels is not None:
        labels = majority_labels(vox.point_to_voxel, torch.from_numpy(scan.labels), len(vox.tensor)).numpy()
    return centres, intensity, labels, colors


def _pick_color(scan, requested: str) -> str:
    if requested != "auto":
        need = {"intensity": scan.intensity, "label": scan.labels, "rgb": scan.colors}
        if requested in need and need[requested] is None:
            have = [m for m, v in (("intensity", scan.intensity), ("label", scan.labels), ("rgb", scan.colors)) if v is not None]
            what = {"label": "labels", "rgb": "RGB colours", "intensity": "intensity"}[requested]
            raise CliError(f"{scan.path}: has no {what} to colour by; use --color {'|'.join(['height'] + have)}")
        return requested
    if scan.labels is not None:
        return "label"
    if scan.colors is not None:
        return "rgb"
    if scan.intensity is not None:
        return "intensity"
    return "height"


def _open_window(points: np.ndarray, colors: np.ndarray, title: str) -> bool:
    """An interactive Open3D window; False when no window could be opened."""
    try:
        import open3d as o3d
    except ImportError:
        return False
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(window_name=title, width=1280, height=800):
        return False
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64))
    pcd.colors = o3d.utility.Vector3dVector(np.asarray(colors, dtype=np.float64) / 255.0)
    vis.add_geometry(pcd)
    opt = vis.get_render_option()
    opt.background_color = np.array([0.06, 0.07, 0.09])
    opt.point_size = 2.0
    vis.run()
    vis.destroy_window()
    return True


def cmd_view(args) -> int:
    from . import io as sio
    from .render import render_views, save_png, scan_colors

    scan = sio.read_scan(args.file)
    mode = _pick_color(scan, args.color)
    points, intensity, labels, colors = _view_data(scan, args.voxel_size, mode)
    rgb, legend = scan_colors(points, "label" if mode == "label" else mode, intensity=intensity, labels=labels,
                              colors=colors, label_names=scan.label_names, label_colors=scan.label_colors)
    what = f"{len(points):,} voxels at {_fmt_size(args.voxel_size)} m" if args.voxel_size else f"{len(points):,} points"
    title = f"{os.path.basename(args.file)} coloured by {mode}"
    window = args.output is None and not args.headless and _has_display()
    if window:
        if _open_window(points, rgb, title):
            return EXIT_OK
        print(f"{PROG}: could not open a window; rendering a PNG instead", file=sys.stderr)
    out = args.output or (os.path.splitext(os.path.basename(args.file))[0] + ".png")
    if not out.lower().endswith(".png"):
        raise CliError(f"{out}: the picture is written as PNG; name it *.png")
    t0 = time.perf_counter()
    size = None if args.voxel_size is None else float(np.max(args.voxel_size))
    image = render_views(points, rgb, legend=legend, title=title, subtitle=what, panel_size=args.size, point_size=size)
    save_png(out, image)
    print(f"{args.file}: {what}, coloured by {mode} -> {out} ({image.shape[1]}x{image.shape[0]}, "
          f"{time.perf_counter() - t0:.2f} s)")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------

def cmd_summary(args) -> int:
    from .analysis import summarize_scan

    print(summarize_scan(args.model, args.scan, args.voxel_size))
    return EXIT_OK


# --------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------

def cmd_check(args) -> int:
    from .checks import OPS, format_table, run_checks

    if args.list:
        print("\n".join(OPS))
        return EXIT_OK
    unknown = [op for op in args.op or () if op not in OPS]
    if unknown:
        raise CliError(f"unknown op {unknown[0]!r} for --op; 'sparseconv check --list' lists the {len(OPS)} ops")
    ops = tuple(args.op) if args.op else OPS
    grid = "quick" if args.quick else "full"
    print(f"dense-twin checks ({grid} grid, float64, forward and gradients): each sparse op against "
          f"torch.nn.functional on the dense grid")
    t0 = time.perf_counter()
    results = run_checks(quick=args.quick, ops=ops, seed=args.seed)
    elapsed = time.perf_counter() - t0
    print()
    print(format_table(results))
    print()
    configs = sum(r.configs for r in results)
    failed = [r for r in results if not r.passed]
    for r in failed:
        for f in r.failures[:10]:
            print(f"FAIL {r.op}: {f}")
        if len(r.failures) > 10:
            print(f"FAIL {r.op}: ... and {len(r.failures) - 10} more")
    if failed:
        print(f"{len(failed)} of {len(results)} ops FAILED ({configs} configurations, {elapsed:.1f} s)")
        return EXIT_CHECK_FAILED
    worst = max((r.max_abs_error for r in results), default=0.0)
    print(f"all {len(results)} ops match their dense twins: {configs} configurations, "
          f"max abs error {worst:.1e}, {elapsed:.1f} s")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run_demo

    t0 = time.perf_counter()
    result = run_demo(args.output_dir, input=args.input, seed=args.seed, voxel_size=args.voxel_size,
                      steps=args.steps)
    print(f"demo done in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK if result.picture else EXIT_INTERNAL


# --------------------------------------------------------------------------------------
# Parser and main
# --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    parser = _Parser(prog=PROG, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Sparse 3D convolution for point clouds: inspect, voxelize and picture scans, "
                                 "check the library against dense PyTorch, run the demo.",
                     epilog="start with:  sparseconv demo\n" + _EPILOG)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, help, description, func):
        p = sub.add_parser(name, help=help, description=description, parents=[common], epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    formats = "PLY, PCD, XYZ/PTS, KITTI .bin (+ SemanticKITTI .label), .npy/.npz, LAS/LAZ (with laspy)"
    p = add("info", "points, extent, attributes and voxel counts of a scan",
            f"Print a scan's points, extent, attributes and voxel counts at a few voxel sizes.\nReads {formats}.", cmd_info)
    p.add_argument("file", metavar="FILE", help="the scan")
    p.add_argument("--voxel-sizes", type=_size_list, default=DEFAULT_INFO_SIZES, metavar="S[,S...]",
                   help="voxel sizes in metres to count voxels at (default: 0.05,0.1,0.2,0.5)")

    p = add("voxelize", "voxelize one or many scans to .npz (or .ply of voxel centres)",
            "Voxelize scans and write, per scan, an .npz (coords, feats, voxel size, origin, point-to-voxel map)\n"
            "or a .ply of voxel centres. Features: intensity, RGB and normals when present (--features to choose);\n"
            "labels become a per-voxel majority 'labels' column. A progress bar shows for several files.",
            cmd_voxelize)
    p.add_argument("files", nargs="+", metavar="FILE", help="scans to voxelize")
    p.add_argument("--voxel-size", type=_voxel_size, required=True, metavar="S",
                   help="voxel edge in metres, or three (x,y,z) separated by commas")
    p.add_argument("--reduce", choices=("mean", "max", "sum", "first", "count"), default="mean",
                   help="how the points of a voxel combine (default: mean)")
    p.add_argument("--features", default=None, metavar="NAMES",
                   help="comma-separated features: xyz, intensity, rgb, normals, ones, or any attribute "
                        "(default: those of intensity, rgb, normals the scan has)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output .npz/.ply file (one input) or directory (any number of inputs)")
    p.add_argument("--format", choices=("npz", "ply"), default=None, help="output format in a directory (default: npz)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-file lines, no progress bar")

    p = add("view", "picture a scan (a window with a display, else a PNG)",
            "Show a scan in an Open3D window when a display is present (DISPLAY or WAYLAND_DISPLAY is set) and\n"
            "no -o is given; otherwise render a PNG headless: a bird's-eye and a perspective view, coloured as\n"
            "asked, with a legend. Without -o the PNG is ./STEM.png (STEM: the scan's file name).", cmd_view)
    p.add_argument("file", metavar="FILE", help="the scan")
    p.add_argument("--voxel-size", type=_voxel_size, default=None, metavar="S", help="show voxel centres at this size")
    p.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                   help="colour by height, intensity, label or rgb (default auto: label, else rgb, else intensity, else height)")
    p.add_argument("-o", "--output", default=None, metavar="PICTURE.png", help="write a PNG here (no window)")
    p.add_argument("--size", type=_image_size, default=640, metavar="PX", help="panel size in pixels (default 640)")
    p.add_argument("--headless", action="store_true", help="never open a window")

    p = add("check", "dense-vs-sparse equivalence of every op, as a table",
            "Run every spatial op (convolutions, transposed and inverse convolutions, pooling) against its dense\n"
            "PyTorch twin over a grid of kernel sizes, strides, paddings, dilations and groups, and the deformable,\n"
            "dynamic and variant convolutions over their own configurations, in float64, forward and backward.\n"
            "Prints a table; exits 1 if any configuration disagrees.", cmd_check)
    p.add_argument("--quick", action="store_true", help="a few configurations per op (about a second)")
    p.add_argument("--op", action="append", default=None, metavar="NAME",
                   help="only this op (repeatable; --list shows the names)")
    p.add_argument("--list", action="store_true", help="list the ops the check covers and exit")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed for weights and inputs (default 0)")

    from .analysis import BUILTIN_MODELS

    p = add("summary", "per-layer pairs, MACs, memory and receptive field of a built-in model on a scan",
            "Voxelize SCAN, run a freshly initialised built-in model once (eval, no grad) and print every layer's\n"
            "output sites, kernel-map pairs, parameters, MACs, dense-equivalent MACs, feature memory, receptive\n"
            "field and time, with totals (sparseconv.analysis.summarize_scan).", cmd_summary)
    p.add_argument("model", choices=BUILTIN_MODELS, metavar="MODEL", help=f"one of: {', '.join(BUILTIN_MODELS)}")
    p.add_argument("scan", metavar="SCAN", help="a point-cloud file (any format 'sparseconv info' reads)")
    p.add_argument("--voxel-size", type=float, default=None, metavar="S",
                   help="voxel size in metres (default 0.05; SECOND/CenterPoint: 0.1 x 0.1 x 0.2 on their grid)")

    p = add("demo", "the main job on built-in data: scan -> voxels -> sparse U-Net -> picture",
            "Simulate a 64-beam street scan (or read --input), voxelize it, fit a small sparse U-Net to the scan's\n"
            "labels for a few steps, run a timed forward pass with a per-layer summary, and write a PNG of the\n"
            "scan coloured by the network's prediction (sparseconv_demo.png in --output-dir).", cmd_demo)
    p.add_argument("--output-dir", default=".", metavar="DIR", help="where the PNG goes (default: .)")
    p.add_argument("--input", default=None, metavar="FILE", help="use this scan instead of a simulated one")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="scan and weight seed (default 0)")
    p.add_argument("--voxel-size", type=_positive_float, default=0.1, metavar="S", help="voxel size in metres (default 0.1)")
    p.add_argument("--steps", type=_nonneg_int, default=20, help="optimiser steps before the timed forward (default 20; 0: untrained)")
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except _ArgumentError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
        debug = debug or bool(getattr(args, "debug", False))
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `sparseconv info x | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass
        return EXIT_OK
    except Exception as exc:
        from .io import MissingDependencyError

        expected = (CliError, FileNotFoundError, ValueError, KeyError, OSError, MissingDependencyError)
        if debug:
            traceback.print_exc()
        if isinstance(exc, expected):
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return exc.code if isinstance(exc, CliError) else EXIT_USAGE
        print(f"{PROG}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(this is a bug; run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
