"""Tests for the ray-cast synthetic LiDAR / RGB-D scene generators."""
import math

import numpy as np
import pytest

from sparseconv.data import (
    CLASS_COLORS,
    INDOOR_CLASSES,
    SEMANTIC_CLASSES,
    LidarScan,
    LidarSensor,
    PointCloudScan,
    generate_indoor_scene,
    generate_lidar_scan,
    make_street_scene,
    simulate_scan,
)

H = 512  # reduced horizontal resolution: enough for every check below


@pytest.fixture(scope="module")
def scan() -> LidarScan:
    return generate_lidar_scan(seed=3, horizontal_resolution=H)


@pytest.fixture(scope="module")
def indoor() -> PointCloudScan:
    return generate_indoor_scene(seed=1, num_views=4, image_size=(96, 72))


def _assert_same(a: LidarScan, b: LidarScan) -> None:
    for name in ("points", "intensity", "labels", "ring", "column"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_shapes_and_dtypes(scan):
    p = scan.num_points
    assert p > 0.8 * 64 * H  # a street scene returns most rays
    assert scan.points.shape == (p, 3) and scan.points.dtype == np.float32
    assert scan.intensity.shape == (p,) and scan.intensity.dtype == np.float32
    assert scan.labels.shape == (p,) and scan.labels.dtype == np.int64
    assert scan.ring.shape == (p,) and scan.column.shape == (p,)
    feats = scan.features()
    assert feats.shape == (p, 4) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats[:, :3], scan.points)
    np.testing.assert_array_equal(feats[:, 3], scan.intensity)
    assert scan.colors().shape == (p, 3) and scan.colors().dtype == np.uint8
    assert CLASS_COLORS.shape == (len(SEMANTIC_CLASSES), 3)


def test_determinism():
    a = generate_lidar_scan(seed=7, horizontal_resolution=256)
    b = generate_lidar_scan(seed=7, horizontal_resolution=256)
    _assert_same(a, b)
    c = generate_lidar_scan(seed=8, horizontal_resolution=256)
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)
    assert a.labels.shape != c.labels.shape or not np.array_equal(a.labels, c.labels)


def test_scene_deterministic_and_noise_seed_independent():
    s1, s2 = make_street_scene(11), make_street_scene(11)
    assert len(s1) == len(s2)
    for o1, o2 in zip(s1, s2):
        assert o1.label == o2.label and o1.reflectivity == o2.reflectivity
        np.testing.assert_array_equal(o1.mesh.vertex.positions.numpy(), o2.mesh.vertex.positions.numpy())
    assert len(make_street_scene(12)) != len(s1) or not np.array_equal(
        make_street_scene(12).objects[0].mesh.vertex.positions.numpy(), s1.objects[0].mesh.vertex.positions.numpy())
    sensor = LidarSensor(horizontal_resolution=128)
    a, b = simulate_scan(s1, sensor, seed=0), simulate_scan(s1, sensor, seed=1)
    # same scene, different noise: the same rays hit (almost) the same targets
    assert abs(a.num_points - b.num_points) < 0.01 * a.num_points
    assert not np.array_equal(a.points, b.points)


def test_noise_free_scan_hits_geometry_exactly():
    sensor = LidarSensor(horizontal_resolution=128, range_noise_std=0.0, intensity_noise_std=0.0)
    s = simulate_scan(make_street_scene(0), sensor, seed=0)
    road = s.labels == SEMANTIC_CLASSES.index("road")
    # flat asphalt at z = 0 (lane paint 4 mm above): exactly at -mount height
    np.testing.assert_allclose(s.points[road, 2], -sensor.mount_height, atol=5e-3)


def test_ground_height(scan):
    h = scan.sensor.mount_height
    for name in ("road", "terrain"):
        m = scan.labels == SEMANTIC_CLASSES.index(name)
        assert m.sum() > 50, name
        # noise std 1 cm along mostly oblique rays; terrain lies 2 cm below the road
        assert np.abs(scan.points[m, 2] + h).max() < 0.08, name
        assert abs(np.median(scan.points[m, 2]) + h) < 0.025, name
    side = scan.labels == SEMANTIC_CLASSES.index("sidewalk")
    assert abs(np.median(scan.points[side, 2]) - (0.15 - h)) < 0.03  # 15 cm kerb


def test_ranges_and_beam_angles(scan):
    s = scan.sensor
    r = scan.ranges()
    assert r.max() <= s.max_range + 1e-4 and r.min() >= s.min_range - 1e-4
    assert ((scan.ring >= 0) & (scan.ring < s.num_beams)).all()
    assert ((scan.column >= 0) & (scan.column < s.horizontal_resolution)).all()
    elev = np.arctan2(scan.points[:, 2], np.hypot(scan.points[:, 0], scan.points[:, 1]))
    np.testing.assert_allclose(elev, s.elevation_angles[scan.ring], atol=1e-4)
    np.testing.assert_allclose(np.degrees(s.elevation_angles[[0, -1]]), [2.0, -24.8])
    az = np.mod(np.arctan2(scan.points[:, 1], scan.points[:, 0]), 2 * math.pi)
    d = np.abs(az - s.azimuth_angles[scan.column])
    assert np.minimum(d, 2 * math.pi - d).max() < 1e-4
    # every (ring, column) cell holds at most one return
    cell = scan.ring * s.horizontal_resolution + scan.column
    assert np.unique(cell).size == cell.size


def test_labels_and_intensity(scan):
    assert ((scan.labels >= 0) & (scan.labels < len(SEMANTIC_CLASSES))).all()
    present = set(np.unique(scan.labels).tolist())
    assert len(present) >= 5
    assert {SEMANTIC_CLASSES.index(c) for c in ("road", "building", "car")} <= present
    assert ((scan.intensity >= 0) & (scan.intensity <= 1)).all()
    assert scan.intensity.std() > 0.01
    # retro-reflective lane paint / facades return more than dark asphalt on average
    road_i = scan.intensity[scan.labels == SEMANTIC_CLASSES.index("road")]
    bld_i = scan.intensity[scan.labels == SEMANTIC_CLASSES.index("building")]
    assert bld_i.mean() > road_i.mean()


def test_dropout_and_beams():
    scene = make_street_scene(2)
    full = simulate_scan(scene, LidarSensor(num_beams=16, horizontal_resolution=128), seed=0)
    half = simulate_scan(scene, LidarSensor(num_beams=16, horizontal_resolution=128, dropout_prob=0.5), seed=0)
    assert 0.4 < half.num_points / full.num_points < 0.6
    assert full.ring.max() < 16
    table = tuple(np.linspace(5.0, -30.0, 16))
    custom = LidarSensor(num_beams=16, horizontal_resolution=64, beam_elevations_deg=table)
    np.testing.assert_allclose(np.degrees(custom.elevation_angles), table)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_beams"):
        generate_lidar_scan(num_beams=0)
    with pytest.raises(ValueError, match="max_range"):
        generate_lidar_scan(max_range=-5.0)
    with pytest.raises(ValueError, match="horizontal_resolution"):
        LidarSensor(horizontal_resolution=0)
    with pytest.raises(ValueError, match="dropout_prob"):
        LidarSensor(dropout_prob=1.0)
    with pytest.raises(ValueError, match="range_noise_std"):
        LidarSensor(range_noise_std=-0.1)
    with pytest.raises(ValueError, match="min_range"):
        LidarSensor(min_range=200.0)
    with pytest.raises(ValueError, match="fov_up_deg"):
        LidarSensor(fov_up_deg=-30.0, fov_down_deg=-10.0)
    with pytest.raises(ValueError, match="beam_elevations_deg"):
        LidarSensor(num_beams=4, beam_elevations_deg=(0.0, -1.0))
    with pytest.raises(ValueError, match="seed"):
        make_street_scene(-1)
    with pytest.raises(ValueError, match="num_views"):
        generate_indoor_scene(num_views=0)
    with pytest.raises(ValueError, match="room_size"):
        generate_indoor_scene(room_size=(8.0, 6.0))
    with pytest.raises(TypeError, match="scene"):
        simulate_scan("not a scene")


def test_indoor_scene(indoor):
    assert indoor.num_points == 4 * 96 * 72  # closed room: every pixel returns
    assert indoor.features().shape == (indoor.num_points, 4)
    lo, hi = np.zeros(3), np.array([8.0, 6.0, 3.0])
    tol = 0.1  # depth noise std <= 1 mm + 0.15 % of depth (< 1.6 cm in this room)
    assert (indoor.points >= lo - tol).all() and (indoor.points <= hi + tol).all()
    assert ((indoor.labels >= 0) & (indoor.labels < len(INDOOR_CLASSES))).all()
    assert len(np.unique(indoor.labels)) >= 5
    assert ((indoor.intensity >= 0) & (indoor.intensity <= 1)).all()
    floor = indoor.labels == INDOOR_CLASSES.index("floor")
    ceiling = indoor.labels == INDOOR_CLASSES.index("ceiling")
    assert np.abs(indoor.points[floor, 2]).max() < 0.06
    assert np.abs(indoor.points[ceiling, 2] - 3.0).max() < 0.06


def test_indoor_noise_free_inside_room_and_deterministic():
    kw = dict(num_views=3, image_size=(48, 36), depth_noise_std=0.0, depth_noise_rel=0.0, room_size=(5.0, 4.0, 2.5))
    a = generate_indoor_scene(4, **kw)
    b = generate_indoor_scene(4, **kw)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.points >= -1e-4).all() and (a.points <= np.array([5.0, 4.0, 2.5]) + 1e-4).all()
    c = generate_indoor_scene(5, **kw)
    assert not np.array_equal(a.points, c.points)
