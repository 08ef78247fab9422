"""The browser viewer in a real browser: headless Chromium (Debian's ``chromium``; .ci/run installs
it) loads a page made by sparseconv.viz.to_html, draws it with WebGL (SwiftShader, no GPU needed),
clicks a known point through the page's own click handler and reports what it read back.

The page's test hook: with ``#selftest=I`` in the URL it projects point I in its first animation
frame, dispatches a click there,
and writes the picked record, the readout text, the pixel under the point and every error caught
(window errors, console.error, WebGL errors) as JSON into ``<pre id="selftest">``, which
``--dump-dom`` prints. The same run takes a ``--screenshot``.
"""
import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from sparseconv.viz import CLASS_PALETTE, write_html
from sparseconv.viz.colors import BACKGROUND

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)")

FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=900,600"]
# virtual time (ms) the page gets to run its first animation frames before the DOM is dumped; on a
# loaded machine SwiftShader's first frame can miss the short budget, so a longer one is tried next
VIRTUAL_TIME_BUDGETS = (5000, 30000)
CANVAS_WIDTH = 900 - 300  # the panel on the right is 300 px wide


def scene():
    """A 44 x 44 ground grid: road (0) for x < 0, sidewalk (1) for x >= 0; one known point."""
    xs, ys = np.meshgrid(np.linspace(-10, 10, 44), np.linspace(-10, 10, 44))
    points = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1).astype(np.float32)
    labels = (points[:, 0] >= 0).astype(np.int64)
    intensity = np.linspace(0, 1, len(points), dtype=np.float32)
    known = int(np.argmin(np.linalg.norm(points[:, :2] - [4.0, -3.0], axis=1)))
    intensity[known] = 0.625
    ring = np.arange(len(points)) % 64
    return points, {"intensity": intensity, "labels": labels, "ring": ring}, known


def open_page(page, index, tmp_path):
    """Load ``page`` with ``#selftest=index``: (the page's self-test JSON, the screenshot's canvas part, stderr)."""
    from PIL import Image

    shot = tmp_path / "shot.png"
    for budget in VIRTUAL_TIME_BUDGETS:
        proc = subprocess.run([BROWSER, *FLAGS, f"--virtual-time-budget={budget}",
                               f"--user-data-dir={tmp_path / f'profile{budget}'}", f"--screenshot={shot}",
                               "--dump-dom", f"file://{os.path.abspath(page)}#selftest={index}"],
                              capture_output=True, text=True, timeout=90)
        found = re.search(r'<pre id="selftest">(.*?)</pre>', proc.stdout, re.S)
        if found and found.group(1):
            break
    assert found and found.group(1), f"the page wrote no self-test result; stderr: {proc.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    canvas = np.asarray(Image.open(shot).convert("RGB")).astype(int)[:, :CANVAS_WIDTH]
    return result, canvas, proc.stderr


def test_viewer_draws_and_a_click_reads_back_the_point(tmp_path):
    points, attributes, known = scene()
    page = write_html(tmp_path / "scan.html", points, attributes=attributes, label_names={0: "road", 1: "sidewalk"},
                      title="browser test")
    result, canvas, stderr = open_page(page, known, tmp_path)
    assert result["errors"] == []  # no window error, no console.error, no WebGL error
    assert "Uncaught" not in stderr

    # the click on the known point reads back its coordinates and every attribute
    picked = result["picked"]
    assert picked["index"] == known
    np.testing.assert_allclose([picked["x"], picked["y"], picked["z"]], points[known], atol=1e-5)
    assert picked["intensity"] == 0.625 and picked["ring"] == known % 64
    assert picked["labels"] == 1 and picked["labels_name"] == "sidewalk"
    assert "labels_name: sidewalk" in result["readout"] and "intensity: 0.625" in result["readout"]
    # the screenshot is not blank and shows both classes in their colours
    drawn = (np.abs(canvas - BACKGROUND).sum(2) > 12).mean()
    assert drawn > 0.05, (drawn, result)
    # the pixel under the point has the point's class colour
    assert result["pixel"] == result["expected"] == list(CLASS_PALETTE["sidewalk"]), result
    for name in ("road", "sidewalk"):
        close = (np.abs(canvas - CLASS_PALETTE[name]).max(2) <= 3).sum()
        assert close > 300, (name, close)
    left, right = canvas[:, : CANVAS_WIDTH // 2], canvas[:, CANVAS_WIDTH // 2:]
    # seen from the default camera (azimuth -60 deg), x < 0 (road) is on the left of the picture
    assert (np.abs(left - CLASS_PALETTE["road"]).max(2) <= 3).sum() > (np.abs(right - CLASS_PALETTE["road"]).max(2) <= 3).sum()


def test_error_view_paints_wrong_points_red(tmp_path):
    from sparseconv.viz.colors import RIGHT, WRONG

    points, attributes, known = scene()
    prediction = attributes["labels"].copy()
    wrong = points[:, 1] > 2.0
    prediction[wrong] = 1 - prediction[wrong]
    target = int(np.flatnonzero(wrong & (points[:, 0] < -3))[0])  # a road point predicted sidewalk
    page = write_html(tmp_path / "errors.html", points, attributes=attributes, prediction=prediction,
                      label_names={0: "road", 1: "sidewalk"}, color="error")
    result, canvas, stderr = open_page(page, target, tmp_path)
    assert result["errors"] == [] and "Uncaught" not in stderr
    picked = result["picked"]
    assert picked["index"] == target and picked["labels_name"] == "road" and picked["prediction_name"] == "sidewalk"
    assert result["pixel"] == list(WRONG), result
    red = (np.abs(canvas - WRONG).max(2) <= 3).sum()
    grey = (np.abs(canvas - RIGHT).max(2) <= 3).sum()
    assert red > 300 and grey > red  # 8 of 20 m of the grid are wrong
