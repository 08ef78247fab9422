"""What each ``sparseconv`` subcommand does with its parsed arguments: a call into the
library, then printing. Each returns the exit code; bad input raises (see :mod:`.cli`)."""
from __future__ import annotations

import os
import sys
import time

from .errors import BAD_INPUT, EXIT_CHECK_FAILED, EXIT_INTERNAL, EXIT_OK, CliError
from .outputs import plan_outputs

__all__ = ["cmd_info", "cmd_voxelize", "cmd_check", "cmd_summary", "cmd_demo", "read_options", "fmt_size"]

PROG = "sparseconv"


def fmt_size(v) -> str:
    """``0.1`` -> ``"0.1"``; ``(0.1, 0.1, 0.2)`` -> ``"0.1,0.1,0.2"``."""
    return f"{v:g}" if not isinstance(v, tuple) else ",".join(f"{x:g}" for x in v)


def read_options(args, labels_allowed: bool = True) -> dict:
    """The reading options common to the commands that read scans, as read_scan keywords."""
    options = {"format": args.input_format, "columns": args.columns, "max_bytes": args.max_bytes}
    if args.labels is not None:
        if not labels_allowed:
            raise CliError("--labels attaches labels to one scan; give one input file")
        options["labels"] = args.labels
    return options


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else (str(exc) or type(exc).__name__)
    return " ".join(text.split())


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------

def cmd_info(args) -> int:
    from ..io import describe_scan

    opts = read_options(args)
    print(describe_scan(args.file, args.voxel_sizes, **opts))
    return EXIT_OK


# --------------------------------------------------------------------------------------
# voxelize
# --------------------------------------------------------------------------------------

def cmd_voxelize(args) -> int:
    from tqdm import tqdm

    from ..data.convert import voxelize_file

    files = list(args.files)
    for f in files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"{f}: no such file")
    opts = read_options(args, labels_allowed=len(files) == 1)
    outputs = plan_outputs(files, args.output, args.format, args.force)
    if outputs[0] != args.output:  # -o names a directory
        os.makedirs(args.output, exist_ok=True)
    features = None if args.features is None else [n for n in args.features.split(",") if n.strip()]
    many = len(files) > 1
    failed = 0
    total_points = total_voxels = 0
    t_start = time.perf_counter()
    bar = tqdm(list(zip(files, outputs)), disable=not many or args.quiet, file=sys.stderr, unit="file",
               desc="voxelizing", leave=False)
    for path, out_path in bar:
        t0 = time.perf_counter()
        try:
            r = voxelize_file(path, out_path, args.voxel_size, reduce=args.reduce, features=features,
                              overwrite=args.force, **opts)
        except BAD_INPUT as exc:
            if not many:
                raise
            failed += 1
            tqdm.write(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
            continue
        total_points += r.num_points
        total_voxels += r.num_voxels
        line = (f"{path}: {r.num_points:,} points -> {r.num_voxels:,} voxels at {fmt_size(args.voxel_size)} m "
                f"({args.reduce}); read {1000 * r.read_seconds:.0f} ms, voxelize {1000 * r.voxelize_seconds:.0f} ms, "
                f"total {1000 * (time.perf_counter() - t0):.0f} ms -> {out_path}")
        if not args.quiet:
            tqdm.write(line) if many else print(line)
    bar.close()
    if many:
        print(f"voxelized {len(files) - failed} of {len(files)} files: {total_points:,} points -> {total_voxels:,} voxels "
              f"in {time.perf_counter() - t_start:.2f} s")
    if failed:
        raise CliError(f"{failed} of {len(files)} files failed (see the errors above)")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# check and demo
# --------------------------------------------------------------------------------------

def cmd_summary(args) -> int:
    from ..analysis import summarize_scan

    print(summarize_scan(args.model, args.scan, args.voxel_size))
    return EXIT_OK


def cmd_check(args) -> int:
    from . import checks

    if args.list:
        print("\n".join(checks.OPS))
        return EXIT_OK
    unknown = [op for op in args.op or () if op not in checks.OPS]
    if unknown:
        raise CliError(f"unknown op {unknown[0]!r} for --op; 'sparseconv check --list' lists the {len(checks.OPS)} ops")
    ops = tuple(args.op) if args.op else checks.OPS
    grid = "quick" if args.quick else "full"
    print(f"dense-twin checks ({grid} grid, float64, forward and gradients): each sparse op against "
          f"torch.nn.functional on the dense grid")
    t0 = time.perf_counter()
    results = checks.run_checks(quick=args.quick, ops=ops, seed=args.seed)
    elapsed = time.perf_counter() - t0
    print()
    print(checks.format_table(results))
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


def cmd_demo(args) -> int:
    from .demo import run_demo

    t0 = time.perf_counter()
    result = run_demo(args.output_dir, input=args.input, seed=args.seed, voxel_size=args.voxel_size, steps=args.steps)
    print(f"demo done in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK if result.picture else EXIT_INTERNAL
