"""Tests for sparseconv.voxelize: reductions against brute force, geometry, batching,
devoxelization, trilinear interpolation against its dense grid_sample twin, errors."""
import math
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparseconv import SparseTensor
from sparseconv.engine.voxelize import REDUCTIONS, Voxelization, devoxelize, trilinear_devoxelize, voxelize


def _cloud(seed, n=200, low=-3.0, high=3.0, channels=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g, dtype=dtype) * (high - low) + low)
    feats = torch.randn(n, channels, generator=g, dtype=dtype)
    return pts, feats


def _brute_force(points, feats, voxel_size, origin=(0.0, 0.0, 0.0), batch=None):
    """Dict {(b, ix, iy, iz) world cell: [point indices in input order]} with Python floats."""
    vs = voxel_size if isinstance(voxel_size, (tuple, list)) else (voxel_size,) * 3
    cells = defaultdict(list)
    for i, p in enumerate(points.tolist()):
        b = 0 if batch is None else int(batch[i])
        key = (b,) + tuple(math.floor((p[a] - origin[a]) / vs[a]) for a in range(3))
        cells[key].append(i)
    return cells


def _reduce_ref(feats, idx, reduce):
    rows = feats[idx]
    if reduce == "mean":
        return rows.mean(0)
    if reduce == "sum":
        return rows.sum(0)
    if reduce == "max":
        return rows.max(0).values
    if reduce == "first":
        return rows[0]
    if reduce == "count":
        return torch.tensor([float(len(idx))], dtype=feats.dtype)
    raise AssertionError(reduce)


def _world_cells(vox, voxel_size, origin):
    """World integer cell (b, ix, iy, iz) of every output voxel, recovered from its centre."""
    st = vox.tensor
    vs = torch.tensor(voxel_size if isinstance(voxel_size, (tuple, list)) else (voxel_size,) * 3, dtype=torch.float64)
    cell = torch.floor((st.voxel_centers() - torch.tensor(origin, dtype=torch.float64)) / vs).to(torch.int64)
    return [tuple([int(b)] + c) for b, c in zip(st.coords[:, 0].tolist(), cell.tolist())]


def _check_against_brute_force(vox, points, feats, voxel_size, origin, reduce, batch=None):
    cells = _brute_force(points, feats, voxel_size, origin, batch)
    st = vox.tensor
    got_cells = _world_cells(vox, voxel_size, origin)
    assert sorted(got_cells) == sorted(cells)
    assert len(st) == len(cells)
    for row, cell in enumerate(got_cells):
        idx = cells[cell]
        expected = _reduce_ref(feats, idx, reduce)
        torch.testing.assert_close(st.feats[row], expected, rtol=1e-12, atol=1e-12)
        assert int(vox.num_points[row]) == len(idx)
        assert (vox.point_to_voxel[idx] == row).all()


# -- reductions -------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_reductions_match_brute_force(reduce):
    points, feats = _cloud(0)
    vox = voxelize(points, 0.7, feats, reduce=reduce)
    assert isinstance(vox, Voxelization)
    _check_against_brute_force(vox, points, feats, 0.7, (0.0, 0.0, 0.0), reduce)
    expected_channels = 1 if reduce == "count" else feats.shape[1]
    assert vox.tensor.feats.shape == (len(vox.tensor), expected_channels)
    assert vox.tensor.feats.dtype == torch.float64
    assert vox.point_to_voxel.dtype == torch.int64 and vox.num_points.dtype == torch.int64
    assert int(vox.num_points.sum()) == points.shape[0]


@pytest.mark.parametrize(
    "voxel_size, origin",
    [
        ((0.5, 1.1, 0.3), None),
        (0.6, (0.25, -1.3, 2.0)),
        ((1.0, 0.4, 0.75), (-0.1, 0.2, 0.33)),
    ],
)
@pytest.mark.parametrize("reduce", ["mean", "max", "first"])
def test_per_axis_voxel_size_and_origin(voxel_size, origin, reduce):
    points, feats = _cloud(1, low=-5.0, high=-1.0)  # all world coordinates negative
    vox = voxelize(points, voxel_size, feats, reduce=reduce, origin=origin)
    _check_against_brute_force(vox, points, feats, voxel_size, origin or (0.0, 0.0, 0.0), reduce)
    vs = voxel_size if isinstance(voxel_size, tuple) else (voxel_size,) * 3
    assert vox.tensor.voxel_size == pytest.approx(vs)


def test_grid_is_aligned_to_world_origin_and_shifted_to_zero():
    points = torch.tensor([[-0.95, 0.05, 2.5], [-0.2, 0.9, 2.1], [0.3, 1.7, 3.9]], dtype=torch.float64)
    st, p2v = voxelize(points, 1.0)
    # World cells: (-1, 0, 2), (-1, 0, 2), (0, 1, 3) -> shift (-1, 0, 2).
    assert st.coords.tolist() == [[0, 0, 0, 0], [0, 1, 1, 1]]
    assert st.spatial_shape == (2, 2, 2)
    assert st.origin == pytest.approx((-1.0, 0.0, 2.0))
    assert p2v.tolist() == [0, 0, 1]
    torch.testing.assert_close(st.voxel_centers(), torch.tensor([[-0.5, 0.5, 2.5], [0.5, 1.5, 3.5]], dtype=torch.float64))
    assert st.coords.min(0).values[1:].tolist() == [0, 0, 0]


@pytest.mark.parametrize("voxel_size", [0.37, (0.2, 0.5, 0.9)])
def test_voxel_centers_contain_their_points(voxel_size):
    points, feats = _cloud(2, n=500, low=-7.0, high=4.0, dtype=torch.float32)
    vox = voxelize(points, voxel_size, feats, origin=(0.1, -0.2, 0.3))
    centres = vox.tensor.voxel_centers()[vox.point_to_voxel]
    half = torch.tensor(voxel_size if isinstance(voxel_size, tuple) else (voxel_size,) * 3, dtype=torch.float64) / 2
    assert ((points.double() - centres).abs() <= half * (1 + 1e-6)).all()
    st = vox.tensor
    assert st.spatial_shape == tuple((st.coords[:, 1:].max(0).values + 1).tolist())


def test_output_sorted_by_batch_then_xyz():
    points, feats = _cloud(3, n=300)
    batch = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(3))
    st = voxelize(points, 0.5, feats, batch=batch).tensor
    keys = st.coordinate_set.keys
    assert (keys[1:] > keys[:-1]).all()
    rows = [tuple(r) for r in st.coords.tolist()]
    assert rows == sorted(rows)


def test_features_default_to_ones_column():
    points, _ = _cloud(4, dtype=torch.float32)
    summed = voxelize(points, 0.8, reduce="sum")
    assert summed.tensor.feats.shape[1] == 1 and summed.tensor.feats.dtype == torch.float32
    assert torch.equal(summed.tensor.feats[:, 0], summed.num_points.float())
    counted = voxelize(points, 0.8, reduce="count")
    assert torch.equal(counted.tensor.feats, summed.tensor.feats)
    for reduce in ("mean", "max", "first"):
        assert torch.equal(voxelize(points, 0.8, reduce=reduce).tensor.feats, torch.ones(len(summed.tensor), 1))


def test_numpy_input_and_unpacking():
    points, feats = _cloud(5)
    vox = voxelize(points.numpy(), 0.7, feats.numpy())
    st, p2v = vox
    ref = voxelize(points, 0.7, feats)
    assert torch.equal(st.coords, ref.tensor.coords)
    assert torch.equal(st.feats, ref.tensor.feats)
    assert torch.equal(p2v, ref.point_to_voxel)


# -- batching ---------------------------------------------------------------------------------
def test_batch_vector_keeps_entries_apart():
    points, feats = _cloud(6)
    batch = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(6))
    # Duplicate the cloud in another batch entry: same places must not merge across entries.
    pts2 = torch.cat((points, points))
    feats2 = torch.cat((feats, feats * 2))
    batch2 = torch.cat((batch, batch + 3))
    vox = voxelize(pts2, 0.6, feats2, batch=batch2, reduce="sum")
    assert vox.tensor.batch_size == 6
    _check_against_brute_force(vox, pts2, feats2, 0.6, (0.0, 0.0, 0.0), "sum", batch=batch2.tolist())
    n = len(vox.tensor)
    first_half = vox.tensor.coords[:, 0] < 3
    assert int(first_half.sum()) * 2 == n
    torch.testing.assert_close(vox.tensor.feats[~first_half], 2 * vox.tensor.feats[first_half])


def test_list_of_clouds_with_empty_entry():
    a, fa = _cloud(7, n=50)
    c, fc = _cloud(8, n=70)
    empty = torch.empty(0, 3, dtype=torch.float64)
    vox = voxelize([a, empty, c], 0.5, [fa, torch.empty(0, 3, dtype=torch.float64), fc], reduce="max")
    st = vox.tensor
    assert st.batch_size == 3
    assert st.batch_counts()[1] == 0
    assert vox.point_to_voxel.shape == (120,)
    batch = torch.cat((torch.zeros(50, dtype=torch.int64), torch.full((70,), 2)))
    ref = voxelize(torch.cat((a, c)), 0.5, torch.cat((fa, fc)), batch=batch, reduce="max")
    assert torch.equal(st.coords, ref.tensor.coords)
    assert torch.equal(st.feats, ref.tensor.feats)
    assert torch.equal(vox.point_to_voxel, ref.point_to_voxel)
    _check_against_brute_force(vox, torch.cat((a, c)), torch.cat((fa, fc)), 0.5, (0.0, 0.0, 0.0), "max", batch.tolist())


def test_explicit_batch_size_adds_empty_entries():
    points, feats = _cloud(9, n=40)
    st = voxelize(points, 0.5, feats, batch_size=4).tensor
    assert st.batch_size == 4 and st.dense().shape[0] == 4
    with pytest.raises(ValueError, match="batch_size"):
        voxelize(points, 0.5, feats, batch=torch.full((40,), 2), batch_size=2)


# -- devoxelize -------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", ["first", "mean", "max", "sum"])
def test_devoxelize_reads_own_voxel(reduce):
    points, feats = _cloud(10)
    vox = voxelize(points, 0.9, feats, reduce=reduce)
    back = devoxelize(vox.tensor, vox.point_to_voxel)
    assert back.shape == feats.shape
    cells = _brute_force(points, feats, 0.9)
    for idx in cells.values():
        expected = _reduce_ref(feats, idx, reduce)
        for i in idx:
            torch.testing.assert_close(back[i], expected, rtol=1e-12, atol=1e-12)
    if reduce == "first":
        firsts = [idx[0] for idx in cells.values()]
        assert torch.equal(back[firsts], feats[firsts])


def test_devoxelize_gradient_and_dropped_rows():
    feats = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    st = SparseTensor(feats, torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    p2v = torch.tensor([2, -1, 0, 2, 3])
    out = devoxelize(st, p2v)
    assert torch.equal(out[1], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(out[[0, 2, 3, 4]], feats.detach()[[2, 0, 2, 3]])
    assert torch.autograd.gradcheck(lambda f: devoxelize(st.replace(f), p2v), (feats,))
    with pytest.raises(ValueError, match="point_to_voxel"):
        devoxelize(st, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="point_to_voxel"):
        devoxelize(st, torch.tensor([-2]))
    with pytest.raises(TypeError, match="point_to_voxel"):
        devoxelize(st, torch.tensor([0.0]))


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", ["mean", "sum", "max", "first"])
def test_voxelize_is_differentiable(reduce):
    points, feats = _cloud(11, n=40, channels=2)
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: voxelize(points, 1.2, f, reduce=reduce).tensor.feats, (feats,))


def test_mean_gradient_is_one_over_count():
    points, feats = _cloud(12, n=60, channels=1)
    feats.requires_grad_(True)
    vox = voxelize(points, 1.5, feats)
    vox.tensor.feats.sum().backward()
    torch.testing.assert_close(feats.grad[:, 0], 1.0 / vox.num_points[vox.point_to_voxel].double())


# -- drop_invalid -----------------------------------------------------------------------------
def test_drop_invalid_drops_nan_and_inf_rows():
    points, feats = _cloud(13, n=100)
    bad = [3, 17, 50, 99]
    dirty = points.clone()
    dirty[3, 0] = float("nan")
    dirty[17, 2] = float("inf")
    dirty[50, 1] = -float("inf")
    dirty[99] = float("nan")
    vox = voxelize(dirty, 0.7, feats, reduce="mean", drop_invalid=True)
    good = torch.tensor([i for i in range(100) if i not in bad])
    ref = voxelize(points[good], 0.7, feats[good], reduce="mean")
    assert torch.equal(vox.tensor.coords, ref.tensor.coords)
    assert torch.equal(vox.tensor.feats, ref.tensor.feats)
    assert vox.tensor.origin == ref.tensor.origin
    assert vox.point_to_voxel.shape == (100,)
    assert (vox.point_to_voxel[bad] == -1).all()
    assert torch.equal(vox.point_to_voxel[good], ref.point_to_voxel)
    back = devoxelize(vox.tensor, vox.point_to_voxel)
    assert (back[bad] == 0).all()


# -- trilinear devoxelize ---------------------------------------------------------------------
def _random_sparse(seed, shape=(5, 4, 6), batch_size=2, channels=3, density=0.4, voxel_size=(0.5, 0.8, 0.3),
                   origin=(-1.0, 0.5, 2.0)):
    g = torch.Generator().manual_seed(seed)
    dense_mask = torch.rand((batch_size,) + shape, generator=g) < density
    coords = dense_mask.nonzero()
    coords = coords[torch.randperm(coords.shape[0], generator=g)]  # unsorted rows on purpose
    feats = torch.randn(coords.shape[0], channels, generator=g, dtype=torch.float64)
    return SparseTensor(feats, coords, shape, batch_size, voxel_size=voxel_size, origin=origin)


def _query_points(seed, st, per_batch):
    """World points whose continuous grid position u spans the grid and one cell beyond."""
    g = torch.Generator().manual_seed(seed)
    shape = torch.tensor(st.spatial_shape, dtype=torch.float64)
    u = torch.rand(st.batch_size, per_batch, 3, generator=g, dtype=torch.float64) * (shape + 3.0) - 1.5
    u[:, :4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-0.5, 1.0, 1.0], [-2.0, 1.0, 1.0]], dtype=torch.float64)
    vs = torch.tensor(st.voxel_size, dtype=torch.float64)
    origin = torch.tensor(st.origin, dtype=torch.float64)
    world = origin + (u + 0.5) * vs
    return u, world


def _grid_sample_twin(dense, u, shape):
    """grid_sample on the dense [B, C, X, Y, Z] grid at continuous positions u [B, P, 3]."""
    size = torch.tensor(shape, dtype=torch.float64)
    norm = 2.0 * u / (size - 1.0) - 1.0  # align_corners=True: -1/+1 are the first/last centres
    grid = norm.flip(-1).unsqueeze(1).unsqueeze(1)  # [B, 1, 1, P, 3] as (z, y, x) -> (W, H, D)
    out = F.grid_sample(dense, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, :, 0, 0, :].permute(0, 2, 1)  # [B, P, C]


def test_trilinear_matches_grid_sample_dense_twin():
    st = _random_sparse(20)
    per_batch = 300
    u, world = _query_points(21, st, per_batch)
    batch = torch.arange(st.batch_size).repeat_interleave(per_batch)
    got = trilinear_devoxelize(st, world.reshape(-1, 3), batch)
    expected = _grid_sample_twin(st.dense(), u, st.spatial_shape).reshape(-1, st.num_channels)
    assert got.shape == (st.batch_size * per_batch, st.num_channels)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-12)
    # Points at a voxel centre read that voxel exactly.
    centres = st.voxel_centers()
    at_centres = trilinear_devoxelize(st, centres, st.coords[:, 0])
    assert torch.allclose(at_centres, st.feats, rtol=1e-6, atol=1e-12)
    # Points far outside read zero.
    far = torch.tensor([[100.0, 0.0, 0.0], [-50.0, -50.0, -50.0]], dtype=torch.float64)
    assert torch.equal(trilinear_devoxelize(st, far), torch.zeros(2, st.num_channels, dtype=torch.float64))


def test_trilinear_gradient_matches_dense_twin():
    st = _random_sparse(22, batch_size=2)
    per_batch = 200
    u, world = _query_points(23, st, per_batch)
    batch = torch.arange(st.batch_size).repeat_interleave(per_batch)
    weight = torch.randn(st.batch_size * per_batch, st.num_channels, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(24))

    feats_a = st.feats.clone().requires_grad_(True)
    (trilinear_devoxelize(st.replace(feats_a), world.reshape(-1, 3), batch) * weight).sum().backward()

    feats_b = st.feats.clone().requires_grad_(True)
    twin = _grid_sample_twin(st.replace(feats_b).dense(), u, st.spatial_shape).reshape(-1, st.num_channels)
    (twin * weight).sum().backward()
    assert torch.allclose(feats_a.grad, feats_b.grad, rtol=1e-6, atol=1e-12)


def test_trilinear_point_gradient_matches_dense_twin():
    st = _random_sparse(25, batch_size=1, channels=2)
    u, world = _query_points(26, st, 50)
    u = u[0]
    vs = torch.tensor(st.voxel_size, dtype=torch.float64)
    pts = world[0].clone().requires_grad_(True)
    trilinear_devoxelize(st, pts).sum().backward()
    # Twin in u-space, chain rule du/dp = 1 / voxel_size.
    uu = u.clone().requires_grad_(True)
    _grid_sample_twin(st.dense(), uu.unsqueeze(0), st.spatial_shape).sum().backward()
    inner = ((u > 0) & (u < torch.tensor(st.spatial_shape) - 1)).all(1)  # away from clamp/borders
    inner &= ((u - u.round()).abs() > 1e-6).all(1)  # away from cell boundaries (kinks)
    assert torch.allclose(pts.grad[inner], (uu.grad / vs)[inner], rtol=1e-6, atol=1e-10)


def test_trilinear_on_voxelize_output_and_numpy_points():
    points, feats = _cloud(27, n=300, dtype=torch.float32)
    st = voxelize(points, 0.6, feats).tensor
    dense = st.dense().double()
    u = (points.double() - torch.tensor(st.origin, dtype=torch.float64)) / 0.6 - 0.5
    expected = _grid_sample_twin(dense, u.unsqueeze(0), st.spatial_shape)[0]
    got = trilinear_devoxelize(st, points.numpy())
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_trilinear_errors():
    st = _random_sparse(28)
    no_geometry = SparseTensor(st.feats, st.coords)
    pts = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="voxel_size"):
        trilinear_devoxelize(no_geometry, pts)
    with pytest.raises(ValueError, match=r"points must have shape \[P, 3\]"):
        trilinear_devoxelize(st, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="points"):
        trilinear_devoxelize(st, torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        trilinear_devoxelize(st, torch.tensor([[float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="batch"):
        trilinear_devoxelize(st, pts, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="batch"):
        trilinear_devoxelize(st, pts, torch.tensor([0, 1]))


# -- voxelize errors --------------------------------------------------------------------------
def test_nan_or_infinite_points_raise():
    points, feats = _cloud(30, n=20)
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = points.clone()
        bad[5, 1] = value
        with pytest.raises(ValueError, match=r"points.*NaN or infinite"):
            voxelize(bad, 0.5, feats)


def test_all_invalid_with_drop_raises():
    with pytest.raises(ValueError, match="points"):
        voxelize(torch.full((3, 3), float("nan")), 0.5, drop_invalid=True)


@pytest.mark.parametrize(
    "points, message",
    [
        (torch.zeros(5, 2), r"points must have shape \[P, 3\]"),
        (torch.zeros(5), r"points must have shape \[P, 3\]"),
        (torch.zeros(2, 5, 3), r"points must have shape \[P, 3\]"),
    ],
)
def test_wrong_point_shapes_raise(points, message):
    with pytest.raises(ValueError, match=message):
        voxelize(points, 0.5)


def test_non_float_points_raise_type_error():
    with pytest.raises(TypeError, match="points must be a floating-point"):
        voxelize(torch.zeros(5, 3, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match=r"points\[1\] must be a floating-point"):
        voxelize([torch.zeros(2, 3), np.zeros((2, 3), dtype=np.int32)], 0.5)
    with pytest.raises(TypeError, match="points"):
        voxelize("not points", 0.5)


@pytest.mark.parametrize("voxel_size", [0.0, -0.5, (0.5, 0.0, 0.5), (0.5, 0.5, -1.0), float("nan"), float("inf")])
def test_non_positive_voxel_size_raises(voxel_size):
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(torch.zeros(4, 3), voxel_size)


def test_voxel_size_wrong_length_raises():
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(torch.zeros(4, 3), (0.5, 0.5))


def test_unknown_reduce_lists_allowed_values():
    with pytest.raises(ValueError, match=r"reduce must be one of .*'mean'.*'max'.*'sum'.*'first'.*'count'.*'median'"):
        voxelize(torch.zeros(4, 3), 0.5, reduce="median")


def test_feats_row_mismatch_and_bad_feats_raise():
    points, feats = _cloud(31, n=20)
    with pytest.raises(ValueError, match="feats has 19 rows but points has 20"):
        voxelize(points, 0.5, feats[:19])
    with pytest.raises(ValueError, match=r"feats must have shape \[P, C\]"):
        voxelize(points, 0.5, feats[:, 0])
    with pytest.raises(TypeError, match="feats must be a floating-point"):
        voxelize(points, 0.5, torch.ones(20, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"feats\[1\] has 3 rows but points\[1\] has 4"):
        voxelize([points[:4], points[4:8]], 0.5, [feats[:4], feats[4:7]])
    with pytest.raises(ValueError, match="feats must be None or a list of 2"):
        voxelize([points[:4], points[4:8]], 0.5, feats[:8])


def test_bad_batch_raises():
    points, feats = _cloud(32, n=20)
    with pytest.raises(ValueError, match="batch must be non-negative"):
        voxelize(points, 0.5, feats, batch=torch.tensor([0] * 19 + [-1]))
    with pytest.raises(ValueError, match=r"batch must have shape \[P\]"):
        voxelize(points, 0.5, feats, batch=torch.zeros(19, dtype=torch.int64))
    with pytest.raises(TypeError, match="batch must be an integer"):
        voxelize(points, 0.5, feats, batch=torch.zeros(20))
    with pytest.raises(ValueError, match="batch must be None when points is a list"):
        voxelize([points], 0.5, batch=torch.zeros(20, dtype=torch.int64))


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="points is empty"):
        voxelize(torch.empty(0, 3), 0.5)
    with pytest.raises(ValueError, match="points is empty"):
        voxelize([torch.empty(0, 3), torch.empty(0, 3)], 0.5)
    with pytest.raises(ValueError, match="empty list"):
        voxelize([], 0.5)


def test_huge_grid_raises():
    points = torch.tensor([[0.0, 0.0, 0.0], [1e6, 1e6, 1e6]], dtype=torch.float64)
    with pytest.raises(ValueError, match="too large"):
        voxelize(points, 1e-6)


def test_align_rounds_the_shift_so_a_scan_voxelizes_the_same_alone_or_batched():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(200, 3, generator=gen) * 3 + 1.37
    b = torch.rand(150, 3, generator=gen) * 2 - 0.8
    alone = voxelize([a], 0.1, align=16).tensor
    batched = voxelize([a, b], 0.1, align=16).tensor
    first = batched.coords[:, 0] == 0
    # same world cells, and coordinates that differ by a multiple of 16 (same coarse cells)
    torch.testing.assert_close(alone.voxel_centers(), batched.voxel_centers()[first])
    delta = batched.coords[first, 1:] - alone.coords[:, 1:]
    assert (delta == delta[0]).all() and (delta[0] % 16 == 0).all()
    shift = torch.round(torch.tensor(alone.origin) / 0.1).long()
    assert (shift % 16 == 0).all()
    with pytest.raises(ValueError, match="align must be a positive int, got 0"):
        voxelize([a], 0.1, align=0)
