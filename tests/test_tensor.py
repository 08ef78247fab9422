"""SparseTensor: validation, dense round trips, sharing of the coordinate set, pickling."""
import copy
import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from sparseconv import SparseTensor
from sparseconv.nn import functional as SF
from sparseconv.engine.hashing import MAX_BATCH, MAX_EXTENT
from sparseconv.engine.kmap import KernelMapKey


def _coords_feats(n=30, shape=(5, 6, 7), batch_size=2, channels=3, seed=0, dtype=torch.float32):
    """``n`` distinct random sites in random order, with random features (numpy-seeded)."""
    rng = np.random.default_rng(seed)
    total = batch_size * int(np.prod(shape))
    flat = rng.choice(total, size=n, replace=False)
    coords = np.stack(np.unravel_index(flat, (batch_size, *shape)), axis=1)
    feats = rng.standard_normal((n, channels))
    return torch.from_numpy(feats).to(dtype), torch.from_numpy(coords).to(torch.int64)


# ---------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------
def test_construction_keeps_data():
    feats, coords = _coords_feats()
    st = SparseTensor(feats, coords, (5, 6, 7), 2)
    assert torch.equal(st.coords, coords) and st.coords.dtype == torch.int64
    assert st.feats is feats
    assert st.spatial_shape == (5, 6, 7)
    assert st.batch_size == 2
    assert len(st) == 30 and st.num_channels == 3
    assert st.dtype == torch.float32 and st.device == torch.device("cpu")
    assert st.voxel_size is None and st.origin is None


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
def test_narrow_integer_coords_become_int64(dtype):
    feats, coords = _coords_feats(n=10, shape=(4, 4, 4))
    st = SparseTensor(feats, coords.to(dtype), (4, 4, 4), 2)
    assert st.coords.dtype == torch.int64
    assert torch.equal(st.coords, coords)


def test_spatial_shape_and_batch_size_inference():
    coords = torch.tensor([[0, 3, 0, 1], [2, 0, 5, 0], [1, 1, 1, 8]])
    st = SparseTensor(torch.ones(3, 2), coords)
    assert st.spatial_shape == (4, 6, 9)  # per-axis max + 1
    assert st.batch_size == 3  # max batch index + 1
    assert st.batch_counts().tolist() == [1, 1, 1]


def test_inferred_batch_size_can_hide_trailing_empty_entries_explicit_keeps_them():
    feats, coords = _coords_feats(n=12, shape=(4, 4, 4), batch_size=1)
    coords[:, 0] = 1  # every site in batch entry 1; entry 0 empty
    st = SparseTensor(feats, coords)
    assert st.batch_size == 2
    st4 = SparseTensor(feats, coords, batch_size=4)
    assert st4.batch_size == 4
    assert st4.batch_counts().tolist() == [0, 12, 0, 0]
    d = st4.dense()
    assert d.shape == (4, 3, 4, 4, 4)
    assert bool((d[0] == 0).all()) and bool((d[2:] == 0).all())


def test_empty_tensor():
    st = SparseTensor(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int64))
    assert len(st) == 0 and st.spatial_shape == (1, 1, 1) and st.batch_size == 1
    st = SparseTensor(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int64), (3, 4, 5), 3)
    assert st.batch_counts().tolist() == [0, 0, 0]
    assert st.dense().shape == (3, 4, 3, 4, 5)
    assert int(st.dense().count_nonzero()) == 0


def test_float_feature_dtypes_accepted():
    _, coords = _coords_feats(n=5)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert SparseTensor(torch.ones(5, 2, dtype=dtype), coords).dtype == dtype


# ---------------------------------------------------------------------------------------------
# construction errors
# ---------------------------------------------------------------------------------------------
def test_non_float_feats_rejected():
    _, coords = _coords_feats(n=5)
    for dtype in (torch.int64, torch.int32, torch.bool):
        with pytest.raises(TypeError, match="feats must be a floating-point tensor"):
            SparseTensor(torch.ones(5, 2, dtype=dtype), coords)


def test_non_integer_coords_rejected():
    feats, coords = _coords_feats(n=5)
    for dtype in (torch.float32, torch.float64, torch.bool):
        with pytest.raises(TypeError, match="coords must be an integer tensor"):
            SparseTensor(feats, coords.to(dtype))


def test_non_tensor_inputs_rejected():
    feats, coords = _coords_feats(n=5)
    with pytest.raises(TypeError, match="must be torch.Tensor"):
        SparseTensor(feats.tolist(), coords)
    with pytest.raises(TypeError, match="must be torch.Tensor"):
        SparseTensor(feats, coords.numpy())


def test_wrong_shapes_rejected():
    feats, coords = _coords_feats(n=5)
    with pytest.raises(ValueError, match=r"feats must have shape \[N, C\]"):
        SparseTensor(feats[:, 0], coords)
    with pytest.raises(ValueError, match=r"feats must have shape \[N, C\]"):
        SparseTensor(feats[:, :, None], coords)
    with pytest.raises(ValueError, match=r"coords must have shape \[N, 4\]"):
        SparseTensor(feats, coords[:, 1:])
    with pytest.raises(ValueError, match=r"coords must have shape \[N, 4\]"):
        SparseTensor(feats, coords.reshape(-1))
    with pytest.raises(ValueError, match=r"coords must have shape \[N, 4\]"):
        SparseTensor(feats, torch.cat((coords, coords[:, :1]), 1))


def test_row_mismatch_rejected():
    feats, coords = _coords_feats(n=5)
    with pytest.raises(ValueError, match="feats has 4 rows but coords has 5"):
        SparseTensor(feats[:4], coords)


def test_negative_coords_rejected():
    feats, coords = _coords_feats(n=5)
    for col in range(4):
        bad = coords.clone()
        bad[3, col] = -1
        with pytest.raises(ValueError, match="coords must be non-negative, row 3"):
            SparseTensor(feats, bad)


def test_coords_outside_explicit_spatial_shape_rejected():
    coords = torch.tensor([[0, 1, 2, 3], [1, 4, 0, 0]])
    feats = torch.ones(2, 1)
    SparseTensor(feats, coords, (5, 3, 4))  # fits exactly
    with pytest.raises(ValueError, match=r"coords axis 1 reaches 4, outside spatial_shape \(4, 3, 4\)"):
        SparseTensor(feats, coords, (4, 3, 4))
    with pytest.raises(ValueError, match="coords axis 2 reaches 2, outside spatial_shape"):
        SparseTensor(feats, coords, (5, 2, 4))
    with pytest.raises(ValueError, match="coords axis 3 reaches 3, outside spatial_shape"):
        SparseTensor(feats, coords, (5, 3, 3))


def test_bad_spatial_shape_rejected():
    feats, coords = _coords_feats(n=5, shape=(4, 4, 4))
    with pytest.raises(ValueError, match="spatial_shape must be 3 positive ints"):
        SparseTensor(feats, coords, (4, 4))
    with pytest.raises(ValueError, match="spatial_shape must be 3 positive ints"):
        SparseTensor(feats, coords, (4, 0, 4))


def test_duplicate_coords_rejected():
    feats, coords = _coords_feats(n=6)
    dup = coords.clone()
    dup[4] = dup[1]
    dup[5] = dup[1]
    with pytest.raises(ValueError, match="coords contain 2 duplicate rows"):
        SparseTensor(feats, dup)
    # same x, y, z in another batch entry, or a permutation of the axes, is not a duplicate
    ok = torch.tensor([[0, 1, 2, 3], [1, 1, 2, 3], [0, 3, 2, 1], [0, 2, 1, 3]])
    assert len(SparseTensor(torch.ones(4, 1), ok)) == 4
    with pytest.raises(ValueError, match="coords contain 1 duplicate rows"):
        SparseTensor(torch.ones(5, 1), torch.cat((ok, ok[2:3])))


def test_batch_size_too_small_rejected():
    feats, coords = _coords_feats(n=10, batch_size=3)
    top = int(coords[:, 0].max())
    with pytest.raises(ValueError, match="batch_size must be positive and exceed every batch index"):
        SparseTensor(feats, coords, batch_size=top)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        SparseTensor(torch.zeros(0, 1), torch.zeros(0, 4, dtype=torch.int64), batch_size=0)


def test_grid_too_large_rejected():
    coords = torch.tensor([[0, 0, 0, 0]])
    SparseTensor(torch.ones(1, 1), coords, (MAX_EXTENT, MAX_EXTENT, MAX_EXTENT), MAX_BATCH)
    with pytest.raises(ValueError, match="exceeds the largest supported extent"):
        SparseTensor(torch.ones(1, 1), coords, (4, MAX_EXTENT + 1, 4))
    with pytest.raises(ValueError, match="exceeds the largest supported batch size"):
        SparseTensor(torch.ones(1, 1), coords, (4, 4, 4), MAX_BATCH + 1)


def test_bad_voxel_size_rejected():
    feats, coords = _coords_feats(n=5)
    with pytest.raises(ValueError, match="voxel_size must be a positive number or 3 positive numbers"):
        SparseTensor(feats, coords, voxel_size=(0.1, 0.2), origin=0.0)
    with pytest.raises(ValueError, match="origin must be a number or 3 numbers"):
        SparseTensor(feats, coords, voxel_size=0.1, origin=(0.0, 1.0, 2.0, 3.0))
    # the same checks as voxelize(): positive, finite, numbers
    with pytest.raises(ValueError, match="voxel_size must be positive and finite on every axis"):
        SparseTensor(feats, coords, voxel_size=(0.1, -0.2, 0.1))
    with pytest.raises(ValueError, match="origin must be finite"):
        SparseTensor(feats, coords, voxel_size=0.1, origin=(0.0, float("nan"), 0.0))
    with pytest.raises(TypeError, match="voxel_size must be a positive number or 3 positive numbers, got bool"):
        SparseTensor(feats, coords, voxel_size=True)


# ---------------------------------------------------------------------------------------------
# dense / from_dense
# ---------------------------------------------------------------------------------------------
def test_dense_places_each_feature():
    feats, coords = _coords_feats(n=40, shape=(4, 5, 6), batch_size=3, channels=2, dtype=torch.float64)
    st = SparseTensor(feats, coords, (4, 5, 6), 3)
    d = st.dense()
    assert d.shape == (3, 2, 4, 5, 6) and d.dtype == torch.float64
    expected = np.zeros((3, 2, 4, 5, 6))
    for (b, x, y, z), f in zip(coords.tolist(), feats.tolist()):
        expected[b, :, x, y, z] = f
    np.testing.assert_array_equal(d.numpy(), expected)


def test_dense_non_cubic_axes_not_mixed():
    """A single site per axis direction lands on that axis only."""
    coords = torch.tensor([[0, 2, 0, 0], [0, 0, 3, 0], [1, 0, 0, 4]])
    feats = torch.tensor([[1.0], [2.0], [3.0]])
    d = SparseTensor(feats, coords, (3, 4, 5), 2).dense()
    assert d[0, 0, 2, 0, 0] == 1 and d[0, 0, 0, 3, 0] == 2 and d[1, 0, 0, 0, 4] == 3
    assert int(d.count_nonzero()) == 3


def test_from_dense_round_trip():
    feats, coords = _coords_feats(n=40, shape=(4, 5, 6), batch_size=3, channels=2, dtype=torch.float64)
    st = SparseTensor(feats, coords, (4, 5, 6), 3, voxel_size=0.5, origin=(1.0, 2.0, 3.0))
    back = SparseTensor.from_dense(st.dense(), voxel_size=0.5, origin=(1.0, 2.0, 3.0))
    assert back.spatial_shape == (4, 5, 6) and back.batch_size == 3
    assert back.voxel_size == st.voxel_size and back.origin == st.origin
    want = {tuple(c): tuple(f) for c, f in zip(coords.tolist(), feats.tolist())}
    got = {tuple(c): tuple(f) for c, f in zip(back.coords.tolist(), back.feats.tolist())}
    assert got == want
    assert torch.equal(back.dense(), st.dense())


def test_from_dense_drops_all_zero_sites_and_keeps_empty_batches():
    x = torch.zeros(3, 2, 3, 3, 3)
    x[1, 0, 0, 1, 2] = 5.0
    x[1, 1, 2, 2, 2] = -1.0  # one non-zero channel is enough
    st = SparseTensor.from_dense(x)
    assert st.batch_size == 3
    assert sorted(map(tuple, st.coords.tolist())) == [(1, 0, 1, 2), (1, 2, 2, 2)]
    assert st.batch_counts().tolist() == [0, 2, 0]


def test_from_dense_errors():
    with pytest.raises(ValueError, match=r"from_dense expects a \[B, C, X, Y, Z\] tensor"):
        SparseTensor.from_dense(torch.zeros(2, 3, 3, 3))
    with pytest.raises(TypeError, match="from_dense expects a floating-point tensor"):
        SparseTensor.from_dense(torch.zeros(1, 1, 2, 2, 2, dtype=torch.int64))


def test_dense_is_differentiable():
    feats, coords = _coords_feats(n=20, shape=(4, 4, 4), channels=3, dtype=torch.float64)
    feats.requires_grad_()
    st = SparseTensor(feats, coords, (4, 4, 4), 2)
    weights = torch.randn(2, 3, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (st.dense() * weights).sum().backward()
    expected = torch.stack([weights[b, :, x, y, z] for b, x, y, z in coords.tolist()])
    assert torch.equal(feats.grad, expected)


# ---------------------------------------------------------------------------------------------
# replace / to / voxel_centers / batch_counts
# ---------------------------------------------------------------------------------------------
def test_replace_shares_coordinate_set_and_cache():
    feats, coords = _coords_feats(n=25, channels=2, dtype=torch.float64)
    st = SparseTensor(feats, coords)
    kmap = st.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    new = st.replace(torch.zeros(25, 5, dtype=torch.float64))
    assert new.coordinate_set is st.coordinate_set
    assert new.num_channels == 5 and torch.equal(new.coords, st.coords)
    assert new.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3))) is kmap
    assert st.coordinate_set.kernel_map_builds == 1
    assert st.detach().coordinate_set is st.coordinate_set


def test_replace_rejects_bad_feats():
    feats, coords = _coords_feats(n=8)
    st = SparseTensor(feats, coords)
    with pytest.raises(TypeError, match="feats must be a floating-point torch.Tensor"):
        st.replace(torch.ones(8, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="feats must be a floating-point torch.Tensor"):
        st.replace([[0.0]] * 8)
    with pytest.raises(ValueError, match=r"feats must have shape \[8, C\]"):
        st.replace(torch.ones(7, 3))


def test_to_float64():
    feats, coords = _coords_feats(n=12)
    st = SparseTensor(feats, coords, voxel_size=0.1, origin=0.0)
    st64 = st.to(torch.float64)
    assert st64.dtype == torch.float64 and st64.feats.dtype == torch.float64
    assert torch.equal(st64.feats, feats.double())
    assert torch.equal(st64.coords, st.coords) and st64.coords.dtype == torch.int64
    assert st64.spatial_shape == st.spatial_shape and st64.batch_size == st.batch_size
    assert st64.voxel_size == st.voxel_size and st64.origin == st.origin
    # same device: same coordinates, so the map cache is shared
    assert st64.coordinate_set is st.coordinate_set
    assert st.feats.dtype == torch.float32  # original untouched


def test_voxel_centers():
    coords = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4], [0, 5, 1, 2]])
    st = SparseTensor(torch.ones(3, 1), coords, voxel_size=(0.5, 0.25, 2.0), origin=(1.0, -2.0, 10.0))
    centres = st.voxel_centers()
    assert centres.shape == (3, 3) and centres.dtype == torch.float64
    size, origin = (0.5, 0.25, 2.0), (1.0, -2.0, 10.0)
    expected = [[origin[a] + (c[a + 1] + 0.5) * size[a] for a in range(3)] for c in coords.tolist()]
    assert torch.allclose(centres, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # a scalar voxel size applies to every axis
    st = SparseTensor(torch.ones(3, 1), coords, voxel_size=0.1, origin=0.0)
    expected = [[(c[a + 1] + 0.5) * 0.1 for a in range(3)] for c in coords.tolist()]
    assert torch.allclose(st.voxel_centers(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_voxel_centers_needs_geometry():
    feats, coords = _coords_feats(n=4)
    for kwargs in ({}, {"voxel_size": 0.1}, {"origin": (0.0, 0.0, 0.0)}):
        st = SparseTensor(feats, coords, **kwargs)
        with pytest.raises(ValueError, match="voxel_centers needs voxel_size and origin"):
            st.voxel_centers()


def test_batch_counts():
    feats, coords = _coords_feats(n=50, shape=(4, 4, 4), batch_size=5, seed=9)
    coords = coords[coords[:, 0] != 3]  # entry 3 empty
    st = SparseTensor(feats[: len(coords)], coords, (4, 4, 4), 6)  # entry 5 empty too
    counts = st.batch_counts()
    assert counts.dtype == torch.int64
    c = Counter(coords[:, 0].tolist())
    assert counts.tolist() == [c.get(b, 0) for b in range(6)]
    assert counts[3] == 0 and counts[5] == 0


# ---------------------------------------------------------------------------------------------
# pickling and deep copies
# ---------------------------------------------------------------------------------------------
def _with_cached_maps():
    feats, coords = _coords_feats(n=30, channels=2, dtype=torch.float64)
    st = SparseTensor(feats, coords, (5, 6, 7), 2, voxel_size=0.2, origin=(1.0, 2.0, 3.0))
    SF.subm_conv3d(st, torch.randn(3, 2, 3, 3, 3, dtype=torch.float64))
    SF.sparse_conv3d(st, torch.randn(3, 2, 2, 2, 2, dtype=torch.float64), stride=2)
    st.coordinate_set.hash_table  # noqa: B018 - build the hash so there is one to drop
    cs = st.coordinate_set
    assert len(cs.cached_kernel_maps()) == 2 and cs._hash is not None and cs.kernel_map_builds == 2
    return st


@pytest.mark.parametrize("clone", [lambda st: pickle.loads(pickle.dumps(st)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
def test_pickle_and_deepcopy_drop_caches(clone):
    st = _with_cached_maps()
    back = clone(st)
    assert isinstance(back, SparseTensor)
    assert torch.equal(back.coords, st.coords) and torch.equal(back.feats, st.feats)
    assert back.spatial_shape == st.spatial_shape and back.batch_size == st.batch_size
    assert back.voxel_size == st.voxel_size and back.origin == st.origin
    cs = back.coordinate_set
    assert cs is not st.coordinate_set
    assert cs.cached_kernel_maps() == {}
    assert cs._hash is None
    assert cs.kernel_map_builds == 0
    # the original keeps its caches
    assert len(st.coordinate_set.cached_kernel_maps()) == 2 and st.coordinate_set._hash is not None
    # and the copy still works: maps rebuild on demand and match the original's
    key = KernelMapKey("submanifold", (3, 3, 3))
    a, b = st.coordinate_set.kernel_map(key), cs.kernel_map(key)
    assert cs.kernel_map_builds == 1
    assert torch.equal(a.in_rows, b.in_rows) and torch.equal(a.out_rows, b.out_rows)
    assert torch.equal(cs.hash_table.query(cs.keys), torch.arange(len(back)))


def test_pickle_keeps_shared_coordinate_set_shared():
    st = _with_cached_maps()
    other = st.replace(st.feats * 2)
    a, b = pickle.loads(pickle.dumps((st, other)))
    assert a.coordinate_set is b.coordinate_set
    assert torch.equal(b.feats, st.feats * 2)
