"""The headless renderer: points land on the pixels the projection says, in their colours,
the z-buffer keeps the right point, and pictures of the sample scans look like the scans."""
import os

import numpy as np
import pytest
from PIL import Image

from sparseconv import io as sio
from sparseconv.viz import (
    BACKGROUND,
    BirdsEyeView,
    PerspectiveCamera,
    colormap,
    label_palette,
    render_birdseye,
    render_perspective,
    render_views,
    save_png,
    scan_colors,
)

DATASETS = os.path.join(os.path.dirname(__file__), "..", "datasets")
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def test_birdseye_puts_known_points_on_known_pixels():
    view = BirdsEyeView((0.0, 0.0, 10.0, 10.0), 100, 100)  # 10 px per metre, row 0 at y = 10
    points = np.array([[0.05, 9.95, 0], [9.95, 0.05, 0], [5.02, 5.02, 0], [2.55, 7.55, 1]])
    colors = np.array([RED, GREEN, BLUE, WHITE], dtype=np.uint8)
    img, _ = render_birdseye(points, colors, view=view, point_radius=0)
    assert img.shape == (100, 100, 3)
    expected = {(0, 0): RED, (99, 99): GREEN, (49, 50): BLUE, (24, 25): WHITE}  # (row, col)
    for (r, c), rgb in expected.items():
        assert tuple(img[r, c]) == rgb, (r, c)
    assert (img.reshape(-1, 3) != BACKGROUND).any(1).sum() == 4  # nothing else drawn
    cols, rows = view.project(points)
    np.testing.assert_array_equal(np.floor(rows).astype(int), [0, 99, 49, 24])
    np.testing.assert_array_equal(np.floor(cols).astype(int), [0, 99, 50, 25])


def test_birdseye_splats_discs_and_keeps_the_highest_point():
    view = BirdsEyeView((0.0, 0.0, 10.0, 10.0), 100, 100)
    points = np.array([[5.05, 5.05, 0.0], [5.05, 5.05, 2.0], [5.05, 5.05, 1.0]])
    colors = np.array([RED, GREEN, BLUE], dtype=np.uint8)
    img, _ = render_birdseye(points, colors, view=view, point_radius=2)
    assert tuple(img[49, 50]) == GREEN  # the highest of three points on one pixel
    drawn = (img.reshape(100, 100, 3) != BACKGROUND).any(2)
    assert drawn.sum() == 21  # a radius-2 disc
    assert drawn[47:52, 48:53].sum() == 21
    # input order does not matter
    img2, _ = render_birdseye(points[::-1], colors[::-1], view=view, point_radius=2)
    np.testing.assert_array_equal(img, img2)
    # voxel footprints: squares
    img3, _ = render_birdseye(points[:1], colors[:1], view=view, point_radius=2, square=True)
    drawn = (img3 != BACKGROUND).any(2)
    assert drawn.sum() == 25 and drawn[47:52, 48:53].all()


def test_perspective_projection_and_nearest_point_wins():
    cam = PerspectiveCamera(eye=(0.0, 0.0, 10.0), target=(0.0, 0.0, 0.0), width=101, height=81, fov_deg=90.0,
                            up=(0.0, 1.0, 0.0))
    # looking straight down with y up the image: +x is to the right, +y up
    cols, rows, depth = cam.project(np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]))
    np.testing.assert_allclose(cols, [50.5, 50.5 + 25.25, 50.5])
    np.testing.assert_allclose(rows, [40.5, 40.5, 40.5 - 25.25])
    np.testing.assert_allclose(depth, [10, 10, 10])
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 20.0]])  # the last is behind the camera
    colors = np.array([RED, GREEN, BLUE], dtype=np.uint8)
    img, _ = render_perspective(points, colors, camera=cam, point_radius=0, fog=0)
    assert tuple(img[40, 50]) == GREEN
    assert (img.reshape(-1, 3) != BACKGROUND).any(1).sum() == 1


def test_colormap_and_palettes():
    c = colormap(np.array([0.0, 0.5, 1.0, np.nan, 7.0]), 0.0, 1.0)
    assert tuple(c[0]) == (68, 1, 84) and tuple(c[2]) == (253, 231, 37) and tuple(c[4]) == (253, 231, 37)
    assert tuple(c[3]) == (128, 128, 128)
    pal = label_palette(range(20))
    assert len(set(pal.values())) == 20 and pal == label_palette(range(20))
    pts = np.zeros((4, 3))
    colors, legend = scan_colors(pts, "label", labels=np.array([3, 3, 1, 9]), label_names={3: "car"},
                                 label_colors={3: (1, 2, 3)})
    assert tuple(colors[0]) == (1, 2, 3) and legend.entries[0][0].startswith("car  50.0%")
    with pytest.raises(ValueError, match="no labels"):
        scan_colors(pts, "label")
    with pytest.raises(ValueError, match="unknown colour mode"):
        scan_colors(pts, "mood")


def _render_sample(path, mode):
    scan = sio.read_scan(path)
    colors, legend = scan_colors(scan.points, mode, intensity=scan.intensity, labels=scan.labels, colors=scan.colors,
                                 label_names=scan.label_names, label_colors=scan.label_colors)
    return scan, colors, legend


@pytest.mark.parametrize("rel,mode", [
    (("semantickitti", "sequences", "00", "velodyne", "000000.bin"), "label"),
    (("indoor", "room_000.ply"), "rgb"),
    (("street_000.npz"), "height"),
])
def test_sample_scan_pictures_match_the_projected_points(tmp_path, rel, mode):
    path = os.path.join(DATASETS, *rel) if isinstance(rel, tuple) else os.path.join(DATASETS, rel)
    scan, colors, legend = _render_sample(path, mode)
    S = 320
    picture = render_views(scan.points, colors, legend=legend, title=os.path.basename(path), panel_size=S)
    out = save_png(tmp_path / "scan.png", picture)
    png = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(png, picture)
    assert png.shape == (S, 2 * S + 230, 3)
    # both views are far from blank
    for panel in (png[30:S - 30, :S], png[30:S - 30, S:2 * S]):
        drawn = (panel != BACKGROUND).any(2).mean()
        assert drawn > 0.04, drawn
    # the bird's-eye panel shows exactly the projected points (away from the text overlays)
    bev, view = render_birdseye(scan.points, colors, S, S)
    cols, rows = view.project(scan.points.astype(np.float64))
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    inside = (c0 >= 0) & (c0 < S) & (r0 >= 30) & (r0 < S - 45)
    occupied = np.zeros((S, S), bool)
    occupied[r0[inside], c0[inside]] = True
    drawn = (png[:, :S] != BACKGROUND).any(2)
    band = slice(30, S - 45)  # clear of the title and the scale bar
    assert drawn[band][occupied[band]].mean() == 1.0  # every pixel hit by a point is coloured
    near = np.zeros((S, S), bool)  # within one pixel (a splat) of some point, wherever that point is
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r, c = r0 + dr, c0 + dc
            ok = (r >= 0) & (r < S) & (c >= 0) & (c < S)
            near[r[ok], c[ok]] = True
    assert not drawn[band][~near[band]].any()  # nothing is drawn farther than a splat from a point
    # every colour drawn there is the colour of a point (the bird's-eye view adds no shading)
    key = lambda a: (a[..., 0].astype(np.int64) << 16) | (a[..., 1].astype(np.int64) << 8) | a[..., 2]  # noqa: E731
    assert np.isin(key(png[band, :S][drawn[band]]), key(colors)).all()
    if mode == "label":  # every class present is in the legend and in the picture
        for _, rgb in legend.entries[:4]:
            assert ((png == np.array(rgb, np.uint8)).all(2)).sum() > 20


def test_save_png_is_atomic(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    save_png(tmp_path / "a.png", img)
    assert os.listdir(tmp_path) == ["a.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "b.png", img.astype(np.float32))
    assert os.listdir(tmp_path) == ["a.png"]


def test_confusion_matrix_picture_shades_cells_by_row_rate():
    from sparseconv.viz import render_confusion_matrix

    cm = np.array([[90, 10, 0], [0, 50, 50], [0, 0, 0]])
    image = render_confusion_matrix(cm, ("a", "b", "c"), cell_size=40)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    # cell (0,0) at 90% is brighter than cell (0,2) at 0%; rows without items stay at the 0% colour
    top, left, cell = 120, 130, 40

    def cell_colour(i, j):
        return image[top + i * cell + 2, left + j * cell + 2].astype(int)

    assert cell_colour(0, 0).sum() > cell_colour(0, 2).sum()
    np.testing.assert_array_equal(cell_colour(2, 0), cell_colour(0, 2))
    np.testing.assert_array_equal(cell_colour(1, 1), cell_colour(1, 2))  # 50% and 50%
    with pytest.raises(ValueError, match="confusion must be \\[2, 2\\] for 2 class names"):
        render_confusion_matrix(cm, ("a", "b"))


def test_long_subtitle_wraps_inside_the_legend_column():
    from sparseconv.viz import BACKGROUND

    gen = np.random.default_rng(0)
    points = gen.uniform(-10, 10, (500, 3)).astype(np.float32)
    colors = np.full((500, 3), 200, dtype=np.uint8)
    subtitle = "32,631 points, 1.27 s, mIoU vs ground truth 77.8% on every class of this scan"
    image = render_views(points, colors, title="scan", subtitle=subtitle, panel_size=200, legend_width=230)
    margin = image[:, -4:]  # the last pixels of the legend column stay background
    assert (margin == np.asarray(BACKGROUND, dtype=np.uint8)).all()
    one_line = render_views(points, colors, title="scan", subtitle="short", panel_size=200, legend_width=230)
    legend_ink = lambda img: int((img[:, 400:] != np.asarray(BACKGROUND, dtype=np.uint8)).any(2).sum())  # noqa: E731
    assert legend_ink(image) > legend_ink(one_line)


# --------------------------------------------------------------------------------------
# issue 18: palette, truth / prediction / error panel, wrapped names, sparse clouds, framing
# --------------------------------------------------------------------------------------

def _cielab(rgb):
    """sRGB (D65) -> CIELAB, written out here from the standard formulas."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_class_palette_tells_the_semantickitti_classes_apart():
    from sparseconv.viz import CLASS_PALETTE, class_colors

    assert set(sio.SEMANTIC_KITTI_CLASSES) <= set(CLASS_PALETTE)
    lab = {name: _cielab(rgb) for name, rgb in CLASS_PALETTE.items()}
    assert np.linalg.norm(lab["road"] - lab["sidewalk"]) > 100  # was ~60 (purple vs magenta)
    names = sorted(lab)
    closest = min(np.linalg.norm(lab[a] - lab[b]) for i, a in enumerate(names) for b in names[i + 1:])
    assert closest > 20
    # io's SemanticKITTI table and the synthetic street use it
    np.testing.assert_array_equal(sio.SEMANTIC_KITTI_CLASS_COLORS[8], CLASS_PALETTE["road"])
    np.testing.assert_array_equal(sio.SEMANTIC_KITTI_CLASS_COLORS[10], CLASS_PALETTE["sidewalk"])
    np.testing.assert_array_equal(class_colors(["sidewalk", "no-such-class"])[0], CLASS_PALETTE["sidewalk"])
    # names the palette knows colour labels that bring no colour of their own
    colors, _ = scan_colors(np.zeros((2, 3)), "label", labels=np.array([7, 9]), label_names={7: "road", 9: "sidewalk"})
    assert tuple(colors[0]) == CLASS_PALETTE["road"] and tuple(colors[1]) == CLASS_PALETTE["sidewalk"]


def test_comparison_panel_shows_truth_prediction_and_wrong_points_in_red():
    from sparseconv.viz import CLASS_PALETTE, render_comparison
    from sparseconv.viz.colors import RIGHT, WRONG

    xs, ys = np.meshgrid(np.arange(20) + 0.5, np.arange(20) + 0.5)
    points = np.stack([xs.ravel(), ys.ravel(), np.zeros(400)], 1)
    truth = (points[:, 0] > 10).astype(np.int64)              # 0 road on the left, 1 sidewalk on the right
    prediction = truth.copy()
    wrong = (points[:, 0] < 10) & (points[:, 1] > 10)           # top-left quarter predicted sidewalk
    prediction[wrong] = 1
    S = 200
    image = render_comparison(points, truth, prediction, label_names={0: "road", 1: "sidewalk"}, panel_size=S)
    assert image.shape == (S, 3 * S + 230, 3)
    view = BirdsEyeView.fit(points, S, S)
    cols, rows = view.project(points)
    c, r = np.floor(cols).astype(int), np.floor(rows).astype(int)
    away = (r > 30) & (r < S - 45)  # clear of titles and the scale bar
    road, sidewalk = CLASS_PALETTE["road"], CLASS_PALETTE["sidewalk"]
    for i in np.flatnonzero(away):
        assert tuple(image[r[i], c[i]]) == (sidewalk if truth[i] else road)                # truth
        assert tuple(image[r[i], S + c[i]]) == (sidewalk if prediction[i] else road)       # prediction
        assert tuple(image[r[i], 2 * S + c[i]]) == (WRONG if wrong[i] else RIGHT)          # error
    red = (image[:, 2 * S: 3 * S] == WRONG).all(2)
    assert red.sum() > 0 and not red[:, : S // 2 - 5][r.max() // 2 + 10:].any()          # no red bottom-left
    with pytest.raises(ValueError, match="one row per point, got 400, 400 and 3"):
        render_comparison(points, truth, prediction[:3])


def test_long_file_names_wrap_in_the_legend_and_nothing_is_cut():
    from PIL import ImageFont

    from sparseconv.viz.panels import wrap_text

    name = "sequence_08_velodyne_frame_004071_with_a_very_long_descriptive_suffix.bin"
    font = ImageFont.load_default(size=16)
    lines = wrap_text(f"{name} coloured by label", font, 206)
    assert len(lines) >= 3 and "".join(lines).replace(" ", "") == (name + "colouredbylabel")
    assert all(font.getlength(line) <= 206 for line in lines)
    points = np.random.default_rng(0).uniform(-5, 5, (300, 3))
    colors = np.full((300, 3), 200, np.uint8)
    image = render_views(points, colors, title=name, panel_size=200, legend_width=230)
    background = np.asarray(BACKGROUND, np.uint8)
    assert (image[:, -10:] == background).all()  # the name does not run off the picture
    ink_rows = (image[:100, 400 + 14: -10] != background).any(2).any(1)
    text_lines = int(np.sum(ink_rows[1:] & ~ink_rows[:-1]))
    assert text_lines >= 4  # the title's lines plus the "N points" line


def test_a_fifty_point_cloud_is_drawn_with_large_points():
    from sparseconv.viz.render import MAX_AUTO_RADIUS, auto_radius

    points = np.random.default_rng(1).uniform(-10, 10, (50, 3))
    colors = np.full((50, 3), 230, np.uint8)
    S = 320
    bev, view = render_birdseye(points, colors, S, S)
    per, camera = render_perspective(points, colors, S, S, fog=0)
    background = np.asarray(BACKGROUND, np.uint8)
    cols, rows = view.project(points)
    radius = auto_radius(cols, rows, S, S)
    assert 3 <= radius <= MAX_AUTO_RADIUS
    drawn = (bev != background).any(2)
    for c, r in zip(np.floor(cols).astype(int), np.floor(rows).astype(int)):
        assert drawn[max(r - 2, 0): r + 3, max(c - 2, 0): c + 3].all()  # at least a 5 x 5 block per point
    assert drawn.sum() >= 50 * 25 and (per != background).any(2).sum() >= 50 * 25
    dense = np.random.default_rng(2).uniform(-10, 10, (200_000, 3))
    assert auto_radius(*view.project(dense), S, S) == 0  # dense clouds keep 1-pixel points


def _bunny_like(seed=0):
    """A body, a head and two tall thin ears (centimetre scale), as surface samples."""
    gen = np.random.default_rng(seed)

    def ellipsoid(n, centre, radii):
        d = gen.normal(size=(n, 3))
        return centre + radii * d / np.linalg.norm(d, axis=1, keepdims=True)

    return np.concatenate([
        ellipsoid(3000, [0.0, 0.0, 0.05], [0.07, 0.05, 0.05]),
        ellipsoid(1000, [0.06, 0.0, 0.11], [0.03, 0.03, 0.03]),
        ellipsoid(400, [0.065, 0.012, 0.18], [0.006, 0.01, 0.05]),
        ellipsoid(400, [0.055, -0.012, 0.18], [0.006, 0.01, 0.05]),
    ])


def test_perspective_view_frames_the_whole_object():
    points = _bunny_like()
    S = 320
    camera = PerspectiveCamera.looking_at(points, S, S)
    cols, rows, depth = camera.project(points)
    assert (depth > 0).all()
    assert cols.min() >= 0 and cols.max() < S and rows.min() >= 0 and rows.max() < S  # nothing cropped
    # and it is close: the object spans most of the frame in one direction
    assert max(cols.max() - cols.min(), rows.max() - rows.min()) > 0.85 * S
    colors = np.full((points.shape[0], 3), 230, np.uint8)
    picture = render_views(points, colors, panel_size=S)
    panel = (picture[:, S + 1: 2 * S] != np.asarray(BACKGROUND, np.uint8)).any(2)
    assert not panel[:, 0].any() and not panel[:, -1].any() and not panel[-1].any()  # no ink at the edges
    # the fit is never looser than the bounding sphere's
    centre = (points.min(0) + points.max(0)) / 2
    sphere_distance = np.linalg.norm(points - centre, axis=1).max() / np.sin(np.radians(30))
    assert np.linalg.norm(np.subtract(camera.eye, camera.target)) <= 1.04 * sphere_distance


def test_old_render_module_warns_and_still_works():
    import importlib
    import sys

    sys.modules.pop("sparseconv.render", None)
    with pytest.warns(DeprecationWarning, match="sparseconv.render moved to sparseconv.viz; the old path will be removed"):
        old = importlib.import_module("sparseconv.render")
    from sparseconv import viz

    assert old.render_views is viz.render_views and old.scan_colors is viz.scan_colors
