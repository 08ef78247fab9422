"""The ``sparseconv`` command: inspect, voxelize and picture scans, check the library, run the demo.

    sparseconv demo                                   # the main job on built-in data
    sparseconv info scan.ply
    sparseconv voxelize scans/*.bin --voxel-size 0.05 -o voxels/
    sparseconv view scan.bin --color label -o scan.png
    sparseconv view scan.bin --html scan.html         # interactive viewer, one self-contained page
    sparseconv check --quick

This module parses arguments and maps errors to exit codes; :mod:`.commands` (and :mod:`.view`) run each
subcommand. Exit codes: 0 success; 1 a check failed; 2 bad arguments or input (missing
file, unreadable or hostile scan, bad value, an output that would overwrite an input or
an existing file without ``--force``, a missing optional package); 3 a fault in the
library (a bug: run again with ``--debug`` for the traceback); 130 interrupted (SIGINT),
143 terminated (SIGTERM) -- both after removing any partly written output. Errors are
one line on stderr, ``sparseconv: error: ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import Optional, Sequence

import numpy as np

from ..io.atomic import remove_partial_files
from ..io.files import DEFAULT_MAX_BYTES
from ..io.registry import FORMATS
from .commands import cmd_check, cmd_demo, cmd_info, cmd_summary, cmd_voxelize, one_line
from .view import cmd_view
from .errors import (
    BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CliError,
)

__all__ = ["main", "build_parser", "CliError", "EXIT_OK", "EXIT_CHECK_FAILED", "EXIT_USAGE", "EXIT_INTERNAL",
           "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

PROG = "sparseconv"
COLOR_CHOICES = ("auto", "height", "intensity", "label", "rgb", "prediction", "error")
DEFAULT_INFO_SIZES = (0.05, 0.1, 0.2, 0.5)
INPUT_FORMATS = tuple(sorted(name for name, f in FORMATS.items() if f.reader is not None and f.holds_points))

_EPILOG = ("exit codes: 0 ok, 1 check failed, 2 bad arguments or input, 3 internal error (run with --debug), "
           "130 interrupted, 143 terminated")


class _ArgumentError(Exception):
    pass


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler, so writes in progress unwind and clean up."""


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


def _size_list(text: str):
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


def _byte_count(text: str) -> Optional[int]:
    """``536870912``, ``512M``, ``2G`` (powers of 1024), or ``none`` (no cap)."""
    t = text.strip().upper().rstrip("B")
    if t == "NONE":
        return None
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a byte count such as 512M or 2G, or none; got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive byte count, got {text!r}")
    return int(value)


def _output_format(text: str) -> str:
    if text in ("npz", "ply"):
        return text
    if text in FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is an input format: use --input-format {text} "
                                         f"(--format names the output format: npz or ply)")
    raise argparse.ArgumentTypeError(f"must be npz or ply, got {text!r}")


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------

def _reading_options(p: argparse.ArgumentParser, format_alias: bool) -> None:
    names = ("--input-format", "--format") if format_alias else ("--input-format",)
    p.add_argument(*names, dest="input_format", choices=INPUT_FORMATS, default=None, metavar="NAME",
                   help="read the input as this format instead of by its extension: " + ", ".join(INPUT_FORMATS)
                        + " (e.g. nuscenes for a 5-float sweep not named *.pcd.bin)")
    p.add_argument("--columns", default=None, metavar="x,y,z,...",
                   help="name the columns of a .bin, plain .npy or text file (e.g. x,y,z,intensity,ring; _ skips one); "
                        "needed where the layout is ambiguous, e.g. six unnamed columns")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="attach per-point labels from this file (a SemanticKITTI .label or an .npy of integers)")
    p.add_argument("--max-bytes", type=_byte_count, default=DEFAULT_MAX_BYTES, metavar="N",
                   help=f"most bytes to decompress from one input (.npz, LAZ, compressed PCD), e.g. 2G or none "
                        f"(default {DEFAULT_MAX_BYTES >> 20}M)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

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

    formats = ("PLY, PCD, XYZ/PTS/TXT/CSV text, KITTI .bin (+ SemanticKITTI .label), nuScenes .pcd.bin, .npy/.npz, "
               "LAS/LAZ (with laspy)")
    p = add("info", "points, extent, attributes and voxel counts of a scan",
            f"Print a scan's points, extent, attributes and voxel counts at a few voxel sizes.\nReads {formats}.", cmd_info)
    p.add_argument("file", metavar="FILE", help="the scan")
    p.add_argument("--voxel-sizes", type=_size_list, default=DEFAULT_INFO_SIZES, metavar="S[,S...]",
                   help="voxel sizes in metres to count voxels at (default: 0.05,0.1,0.2,0.5)")
    _reading_options(p, format_alias=True)

    p = add("voxelize", "voxelize one or many scans to .npz (or .ply of voxel centres)",
            "Voxelize scans and write, per scan, an .npz (coords, feats, voxel size, origin, point-to-voxel map)\n"
            "or a .ply of voxel centres. Features: intensity, RGB and normals when present (--features to choose);\n"
            "labels become a per-voxel majority 'labels' column. A progress bar shows for several files.\n"
            "An output never replaces an input; an existing output needs --force.", cmd_voxelize)
    p.add_argument("files", nargs="+", metavar="FILE", help="scans to voxelize")
    p.add_argument("--voxel-size", type=_voxel_size, required=True, metavar="S",
                   help="voxel edge in metres, or three (x,y,z) separated by commas")
    p.add_argument("--reduce", choices=("mean", "max", "sum", "first", "count"), default="mean",
                   help="how the points of a voxel combine (default: mean)")
    p.add_argument("--features", default=None, metavar="NAMES",
                   help="comma-separated features: xyz, intensity, rgb, normals, ones, or any attribute "
                        "(default: those of intensity, rgb, normals the scan has)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output .npz/.ply file (one input) or directory (any number of inputs; a name without an "
                        "extension, or ending in /)")
    p.add_argument("--format", type=_output_format, default=None, metavar="{npz,ply}",
                   help="output format in a directory (default: npz)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files (never an input)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-file lines, no progress bar")
    _reading_options(p, format_alias=False)

    p = add("view", "picture a scan (browser page with --html, a window with a display, else a PNG)",
            "With --html OUT.html, write one self-contained page (no network needed) with an interactive WebGL\n"
            "viewer: orbit/pan/zoom, colour modes, click a point to read its values, layers for voxels, ground\n"
            "truth / prediction / error and KITTI boxes. Otherwise show the scan in an Open3D window when a\n"
            "display is present (DISPLAY or WAYLAND_DISPLAY is set) and no -o is given, or render a PNG headless:\n"
            "a bird's-eye and a perspective view with a legend (with --prediction: ground truth, prediction and\n"
            "error panels). Without -o the PNG is ./STEM.png (STEM: the scan's file name); an existing PNG or\n"
            "page needs --force.", cmd_view)
    p.add_argument("file", metavar="FILE", help="the scan")
    p.add_argument("--voxel-size", type=_voxel_size, default=None, metavar="S", help="show voxel centres at this size")
    p.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                   help="colour by height, intensity, label, rgb, prediction or error (the last two need --prediction; "
                        "default auto: prediction, else label, else rgb, else intensity, else height)")
    p.add_argument("-o", "--output", default=None, metavar="PICTURE.png", help="write a PNG here (no window)")
    p.add_argument("--force", action="store_true", help="overwrite an existing PNG or page")
    p.add_argument("--size", type=_image_size, default=640, metavar="PX", help="panel size in pixels (default 640)")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.add_argument("--html", default=None, metavar="OUT.html",
                   help="write the interactive browser viewer here (no window; a PNG only if -o is given too)")
    p.add_argument("--prediction", default=None, metavar="FILE",
                   help="predicted labels, one per point: a scan file with labels (e.g. infer.py's .labels.npz) "
                        "or a .label file; adds the prediction and error views")
    p.add_argument("--boxes", default=None, metavar="LABEL.txt", help="KITTI label_2 file: object boxes (with --html)")
    p.add_argument("--calib", default=None, metavar="CALIB.txt",
                   help="KITTI calib file placing --boxes in the LiDAR frame (without it: axes turned, no offset)")
    _reading_options(p, format_alias=True)

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

    from ..analysis import BUILTIN_MODELS

    p = add("summary", "per-layer pairs, MACs, memory and receptive field of a built-in model on a scan",
            "Voxelize SCAN, run a freshly initialised built-in model once (eval, no grad) and print every layer's\n"
            "output sites, kernel-map pairs, parameters, MACs, dense-equivalent MACs, feature memory, receptive\n"
            "field and time, with totals (sparseconv.analysis.summarize_scan).", cmd_summary)
    p.add_argument("model", choices=BUILTIN_MODELS, metavar="MODEL", help=f"one of: {', '.join(BUILTIN_MODELS)}")
    p.add_argument("scan", metavar="SCAN", help="a point-cloud file (any format 'sparseconv info' reads)")
    p.add_argument("--voxel-size", type=_positive_float, default=None, metavar="S",
                   help="voxel size in metres (default 0.05; SECOND/CenterPoint: 0.1 x 0.1 x 0.2 on their grid)")

    p = add("demo", "the main job on built-in data: scan -> voxels -> sparse U-Net -> picture",
            "Simulate a 64-beam street scan (or read --input), voxelize it, fit a small sparse U-Net to the scan's\n"
            "labels for a few steps, run a timed forward pass with a per-layer summary, and write a PNG of the\n"
            "scan coloured by the network's prediction beside its ground truth and errors (sparseconv_demo.png\n"
            "in --output-dir) and the same as an interactive browser page (sparseconv_demo.html).", cmd_demo)
    p.add_argument("--output-dir", default=".", metavar="DIR", help="where the PNG and HTML go (default: .)")
    p.add_argument("--input", default=None, metavar="FILE", help="use this scan instead of a simulated one")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="scan and weight seed (default 0)")
    p.add_argument("--voxel-size", type=_positive_float, default=0.1, metavar="S", help="voxel size in metres (default 0.1)")
    p.add_argument("--steps", type=_nonneg_int, default=20, help="optimiser steps before the timed forward (default 20; 0: untrained)")
    return parser


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _cleanup_on_signals():
    """SIGTERM raises :class:`_Terminated` and SIGINT ``KeyboardInterrupt`` in the main thread
    (so atomic writes in progress unwind and delete their temporary files); the previous
    handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)


def _run(argv: Sequence[str]) -> int:
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
    except BrokenPipeError:  # e.g. `sparseconv info x | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, BAD_INPUT):
            print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
            return exc.code if isinstance(exc, CliError) else EXIT_USAGE
        print(f"{PROG}: internal error: {type(exc).__name__}: {one_line(exc)} "
              f"(this is a bug; run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _cleanup_on_signals():
            return _run(argv)
    except KeyboardInterrupt:
        remove_partial_files()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        remove_partial_files()
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
