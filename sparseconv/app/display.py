"""Whether ``sparseconv view`` can open a window, and the Open3D window itself."""
from __future__ import annotations

import os
import sys

import numpy as np

__all__ = ["has_display", "open_window"]


def has_display() -> bool:
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


def open_window(points: np.ndarray, colors: np.ndarray, title: str) -> bool:
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
