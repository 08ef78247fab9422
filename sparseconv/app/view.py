"""``sparseconv view``: a scan as a browser page (``--html``), in a window, or as a PNG (with
``--prediction``: ground truth, prediction and error side by side)."""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

import numpy as np

from .commands import PROG, fmt_size, read_options
from .display import has_display, open_window
from .errors import EXIT_OK, CliError
from .outputs import check_new_file

__all__ = ["cmd_view"]



def _view_data(scan, voxel_size):
    """(points, intensity, labels, colors) -- per point, or per voxel with --voxel-size."""
    if voxel_size is None:
        return scan.points, scan.intensity, scan.labels, scan.colors
    import torch

    from ..data.datasets import majority_labels
    from ..engine.voxelize import voxelize

    pts = torch.from_numpy(np.ascontiguousarray(scan.points))
    feats = []
    if scan.intensity is not None:
        feats.append(torch.from_numpy(scan.intensity.astype(np.float32))[:, None])
    if scan.colors is not None:
        feats.append(torch.from_numpy(scan.colors.astype(np.float32)))
    try:
        vox = voxelize(pts, voxel_size, feats=torch.cat(feats, 1) if feats else None, drop_invalid=True)
    except ValueError as exc:  # the points do not fit a grid at this voxel size
        raise CliError(f"{scan.path}: {exc}") from None
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
    if requested == "prediction":  # the prediction is put in the scan's labels (see cmd_view)
        return "label"
    if requested != "auto":
        need = {"intensity": scan.intensity, "label": scan.labels, "rgb": scan.colors}
        if requested in need and need[requested] is None:
            have = [m for m, v in (("intensity", scan.intensity), ("label", scan.labels), ("rgb", scan.colors)) if v is not None]
            what = {"label": "labels", "rgb": "RGB colours", "intensity": "intensity"}[requested]
            raise CliError(f"{scan.path}: has no {what} to colour by; use --color {'|'.join(['height'] + have)}")
        return requested
    for mode, value in (("label", scan.labels), ("rgb", scan.colors), ("intensity", scan.intensity)):
        if value is not None:
            return mode
    return "height"


def _read_prediction(path: str, scan) -> np.ndarray:
    """Per-point predicted labels from a scan file's ``labels`` (e.g. infer.py's NAME.labels.npz)
    or a SemanticKITTI ``.label`` file; one per point of ``scan``."""
    from ..io import read_label, read_scan

    if path.lower().endswith(".label"):
        prediction, _ = read_label(path, len(scan))
    else:
        prediction = read_scan(path).labels
        if prediction is None:
            raise CliError(f"{path}: has no labels to use as the prediction")
    if prediction.shape != (len(scan),):
        raise CliError(f"{path}: has {prediction.shape[0]:,} labels but {scan.path} has {len(scan):,} points")
    return prediction.astype(np.int64)


def _write_viewer(args, scan, prediction: Optional[np.ndarray]) -> None:
    """``view --html``: the browser viewer, with the KITTI boxes and voxel layer asked for."""
    from ..viz import read_kitti_calib, read_kitti_labels, write_html

    boxes, note = [], ""
    if args.boxes:
        calib = read_kitti_calib(args.calib) if args.calib else None
        boxes = read_kitti_labels(args.boxes, calib)
        note = (f"boxes: {os.path.basename(args.boxes)}, moved into the LiDAR frame with {os.path.basename(args.calib)}"
                if calib else
                f"boxes: {os.path.basename(args.boxes)} without --calib: camera axes turned to LiDAR axes "
                "(x = z_cam, y = -x_cam, z = -y_cam), the camera-LiDAR offset (about 0.3 m) not applied; "
                "pass --calib for exact placement")
    t0 = time.perf_counter()
    write_html(args.html, scan, prediction=prediction, voxel_size=args.voxel_size, boxes=boxes, boxes_note=note,
               color=args.color)
    size = os.path.getsize(args.html)
    print(f"{args.file}: {len(scan):,} points -> {args.html} ({size / 2 ** 20:.1f} MB, "
          f"{time.perf_counter() - t0:.2f} s); open it in a browser")
    if note:
        print(note)


def _check_view_args(args) -> None:
    if args.calib and not args.boxes:
        raise CliError("--calib places --boxes; give --boxes FILE too")
    if args.boxes and not args.html:
        raise CliError("--boxes are drawn in the browser viewer; give --html OUT.html too")
    if args.html and not args.html.lower().endswith((".html", ".htm")):
        raise CliError(f"{args.html}: the viewer is written as HTML; name it *.html")
    if args.color in ("prediction", "error") and not args.prediction:
        raise CliError(f"--color {args.color} needs --prediction FILE")
    if args.color == "error" and not args.html:
        raise CliError("--color error is a view of the browser viewer (--html); the PNG with --prediction shows "
                       "ground truth, prediction and error side by side")


def cmd_view(args) -> int:
    from ..io import read_scan
    from ..viz import render_comparison, render_views, save_png, scan_colors

    _check_view_args(args)
    if args.html:
        check_new_file(args.html, [args.file], args.force)
    window = args.output is None and not args.headless and not args.html and has_display()
    out = args.output or (os.path.splitext(os.path.basename(args.file))[0] + ".png")
    picture = not args.html or args.output is not None
    if picture and not window:
        if not out.lower().endswith(".png"):
            raise CliError(f"{out}: the picture is written as PNG; name it *.png")
        check_new_file(out, [args.file], args.force)
    scan = read_scan(args.file, **read_options(args))
    prediction = _read_prediction(args.prediction, scan) if args.prediction else None
    if args.html:
        _write_viewer(args, scan, prediction)
        if not picture:
            return EXIT_OK
    if prediction is not None and scan.labels is not None:
        if args.voxel_size is not None and not args.html:
            raise CliError("the ground truth / prediction / error picture is per point; drop --voxel-size, or add "
                           "--html OUT.html for a voxel layer")
        image = render_comparison(scan.points, scan.labels, prediction, label_names=scan.label_names,
                                  label_colors=scan.label_colors, title=os.path.basename(args.file),
                                  panel_size=args.size)
        save_png(out, image)
        print(f"{args.file}: ground truth, prediction and error -> {out} ({image.shape[1]}x{image.shape[0]})")
        return EXIT_OK
    if prediction is not None:  # no ground truth to compare with: picture the prediction as the labels
        scan.attributes["labels"] = prediction
    mode = _pick_color(scan, args.color)
    points, intensity, labels, colors = _view_data(scan, args.voxel_size)
    rgb, legend = scan_colors(points, "label" if mode == "label" else mode, intensity=intensity, labels=labels,
                              colors=colors, label_names=scan.label_names, label_colors=scan.label_colors)
    what = f"{len(points):,} voxels at {fmt_size(args.voxel_size)} m" if args.voxel_size else f"{len(points):,} points"
    title = f"{os.path.basename(args.file)} coloured by {mode}"
    if window:
        if open_window(points, rgb, title):
            return EXIT_OK
        print(f"{PROG}: could not open a window; rendering a PNG instead", file=sys.stderr)
        check_new_file(out, [args.file], args.force)
    t0 = time.perf_counter()
    size = None if args.voxel_size is None else float(np.max(args.voxel_size))
    image = render_views(points, rgb, legend=legend, title=title, subtitle=what, panel_size=args.size, point_size=size)
    save_png(out, image)
    print(f"{args.file}: {what}, coloured by {mode} -> {out} ({image.shape[1]}x{image.shape[0]}, "
          f"{time.perf_counter() - t0:.2f} s)")
    return EXIT_OK


