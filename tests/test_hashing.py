"""Coordinate packing and the coordinate hash, checked against Python sets and dicts."""
import itertools

import pytest
import torch

from sparseconv import SparseTensor
from sparseconv.engine.hashing import (
    COORD_MARGIN,
    MAX_BATCH,
    MAX_EXTENT,
    CoordinateHash,
    offset_key,
    pack_coords,
    unpack_keys,
)


def _unique_coords(n, batch_size, spatial_shape, seed):
    """``n`` distinct random (b, x, y, z) rows inside the grid, in random order."""
    capacity = batch_size
    for extent in spatial_shape:
        capacity *= extent
    assert n <= capacity // 2, "grid too small for that many distinct sites"
    gen = torch.Generator().manual_seed(seed)
    hi = torch.tensor([batch_size, *spatial_shape])
    seen, rows = set(), []
    while len(rows) < n:
        cand = (torch.rand(n, 4, generator=gen, dtype=torch.float64) * hi).long()
        for r in map(tuple, cand.tolist()):
            if r not in seen:
                seen.add(r)
                rows.append(r)
                if len(rows) == n:
                    break
    return torch.tensor(rows, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# pack / unpack
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size,shape", [(2, (5, 6, 7)), (4, (10000, 10000, 10000)),
                                              (MAX_BATCH, (MAX_EXTENT, MAX_EXTENT, MAX_EXTENT))])
def test_pack_unpack_round_trip(batch_size, shape):
    coords = _unique_coords(200, batch_size, shape, seed=1)
    # include the grid's extreme corners
    corners = torch.tensor([[b, x, y, z] for b in (0, batch_size - 1) for x in (0, shape[0] - 1)
                            for y in (0, shape[1] - 1) for z in (0, shape[2] - 1)])
    coords = torch.cat((coords, corners))
    keys = pack_coords(coords)
    assert keys.dtype == torch.int64 and keys.shape == (coords.shape[0],)
    assert bool((keys >= 0).all()), "keys must be non-negative (the hash reserves -1)"
    assert torch.equal(unpack_keys(keys), coords)
    # distinct coordinates get distinct keys
    distinct = {tuple(r) for r in coords.tolist()}
    assert len(set(keys.tolist())) == len(distinct)


def test_pack_accepts_narrow_integer_dtypes_and_batched_shapes():
    coords = _unique_coords(24, 3, (7, 8, 9), seed=2)
    keys = pack_coords(coords)
    assert torch.equal(pack_coords(coords.to(torch.int32)), keys)
    assert torch.equal(pack_coords(coords.to(torch.int16)), keys)
    # [..., 4] -> [...]
    assert torch.equal(pack_coords(coords.reshape(2, 3, 4, 4)), keys.reshape(2, 3, 4))
    assert torch.equal(unpack_keys(keys.reshape(2, 3, 4)), coords.reshape(2, 3, 4, 4))


def test_sorting_keys_sorts_coordinates_lexicographically():
    coords = _unique_coords(400, 3, (9, 300, 5), seed=3)
    keys = pack_coords(coords)
    by_key = coords[torch.argsort(keys)].tolist()
    assert by_key == sorted(coords.tolist())


def test_offset_key_is_neighbour_difference():
    """pack(c + d) == pack(c) + offset_key(d) for |d| <= margin, also just outside the grid."""
    gen = torch.Generator().manual_seed(4)
    shape = (10000, 20, 10000)
    coords = _unique_coords(200, 4, shape, seed=4)
    # sites on the grid border too, so c + d leaves the grid
    coords[:50, 1] = 0
    coords[50:100, 3] = shape[2] - 1
    m = COORD_MARGIN
    offsets = [(0, 0, 0), (1, 0, 0), (0, -1, 0), (0, 0, 1), (-1, -1, -1), (m, -m, m), (-m, m, -m), (3, -7, 2)]
    offsets += [tuple(int(v) for v in torch.randint(-m, m + 1, (3,), generator=gen)) for _ in range(20)]
    present = set(pack_coords(coords).tolist())
    for d in offsets:
        moved = coords.clone()
        moved[:, 1:] += torch.tensor(d)
        assert torch.equal(pack_coords(moved), pack_coords(coords) + offset_key(*d)), d
        # and the shifted key unpacks to the shifted coordinate, in or out of the grid
        assert torch.equal(unpack_keys(pack_coords(coords) + offset_key(*d)), moved)
        outside = ((moved[:, 1:] < 0) | (moved[:, 1:] >= torch.tensor(shape))).any(1)
        # a neighbour outside the grid never collides with a site's key
        assert not (set(pack_coords(moved[outside]).tolist()) & present)


# ---------------------------------------------------------------------------------------------
# CoordinateHash
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 16, 1000])
def test_hash_present_and_absent_random_keys(n):
    gen = torch.Generator().manual_seed(n)
    keys = torch.unique(torch.randint(0, 2**62, (n + 50,), generator=gen))[:n]
    keys = keys[torch.randperm(keys.numel(), generator=gen)]
    h = CoordinateHash(keys)
    assert torch.equal(h.query(keys), torch.arange(keys.numel()))
    probes = torch.randint(0, 2**62, (3000,), generator=gen)
    expected = {k: i for i, k in enumerate(keys.tolist())}
    got = h.query(probes).tolist()
    assert got == [expected.get(k, -1) for k in probes.tolist()]
    # keys adjacent to present ones are the likeliest collisions: still absent
    near = torch.cat((keys + 1, keys - 1))
    assert h.query(near).tolist() == [expected.get(k, -1) for k in near.tolist()]


@pytest.mark.parametrize("step", [1, 2, 1 << 16, 1 << 32, 1 << 48])
def test_hash_structured_keys(step):
    """Arithmetic progressions (consecutive z, rows of x, whole batches) probe correctly."""
    keys = torch.arange(600, dtype=torch.int64) * step
    keys = keys[torch.randperm(600, generator=torch.Generator().manual_seed(5))]
    h = CoordinateHash(keys)
    assert torch.equal(h.query(keys), torch.arange(600))
    lookup = {k: i for i, k in enumerate(keys.tolist())}
    probes = torch.arange(-5, 605, dtype=torch.int64) * step + 1
    probes = torch.cat((probes, torch.arange(600, 700, dtype=torch.int64) * step))
    assert h.query(probes).tolist() == [lookup.get(k, -1) for k in probes.tolist()]


def test_hash_empty_table():
    h = CoordinateHash(torch.empty(0, dtype=torch.int64))
    q = torch.tensor([0, 1, 5, 2**40, -1], dtype=torch.int64)
    assert h.query(q).tolist() == [-1] * 5
    assert h.query(torch.empty(0, dtype=torch.int64)).shape == (0,)
    assert h.num_keys == 0


def test_hash_negative_and_sentinel_queries_are_absent():
    keys = torch.tensor([0, 3, 17, 2**50], dtype=torch.int64)
    h = CoordinateHash(keys)
    assert h.query(torch.tensor([-1, -2, -(2**40), 0])).tolist() == [-1, -1, -1, 0]


def test_hash_duplicate_queries():
    keys = torch.tensor([10, 20, 30, 40, 50], dtype=torch.int64)
    h = CoordinateHash(keys)
    q = torch.tensor([30, 30, 30, 10, 10, 99, 99, 50], dtype=torch.int64)
    assert h.query(q).tolist() == [2, 2, 2, 0, 0, -1, -1, 4]


@pytest.mark.parametrize("shape", [(24,), (4, 6), (2, 3, 4), (1, 24, 1), (0, 3)])
def test_hash_query_keeps_shape(shape):
    keys = torch.arange(0, 120, 5, dtype=torch.int64)  # 24 keys: 0, 5, ..., 115
    h = CoordinateHash(keys)
    numel = int(torch.tensor(shape).prod())
    q = (torch.arange(numel, dtype=torch.int64) * 7 % 130).reshape(shape)
    got = h.query(q)
    assert got.shape == q.shape and got.dtype == torch.int64
    for qq, gg in zip(q.reshape(-1).tolist(), got.reshape(-1).tolist()):
        assert gg == (qq // 5 if qq % 5 == 0 and qq < 120 else -1)
    # a non-contiguous query view works too
    if q.dim() == 2 and numel:
        assert torch.equal(h.query(q.t()), got.t())


@pytest.mark.parametrize("bad", [torch.arange(4, dtype=torch.int32), torch.arange(4).double(),
                                 torch.arange(8).reshape(2, 4)])
def test_hash_rejects_non_int64_or_non_1d(bad):
    with pytest.raises(TypeError, match="1-D int64"):
        CoordinateHash(bad)


def test_hash_capacity_is_power_of_two_with_low_load():
    for n in (0, 1, 8, 9, 100, 1024, 1025):
        h = CoordinateHash(torch.arange(n, dtype=torch.int64) * 3)
        cap = h.table_keys.numel()
        assert cap & (cap - 1) == 0
        assert cap >= 2 * n
        assert cap <= max(16, 4 * n)
        assert h.table_rows.numel() == cap
        # every key is stored exactly once
        stored = h.table_keys[h.table_keys != -1]
        assert sorted(stored.tolist()) == (torch.arange(n) * 3).tolist()


# ---------------------------------------------------------------------------------------------
# large extents: a 200 m scene at 2 cm
# ---------------------------------------------------------------------------------------------
def test_large_extent_scene_build_and_query():
    shape, batch_size, n = (10000, 10000, 10000), 4, 6000
    coords = _unique_coords(n, batch_size, shape, seed=6)
    st = SparseTensor(torch.randn(n, 2), coords, shape, batch_size)
    assert st.spatial_shape == shape
    h = st.coordinate_set.hash_table
    assert st.coordinate_set.hash_table is h  # built once
    keys = pack_coords(coords)
    assert torch.equal(h.query(keys), torch.arange(n))
    # memory is O(N): no tensor the table holds is anywhere near a dense grid
    assert h.table_keys.numel() <= 4 * n + 16
    for value in vars(h).values():
        if isinstance(value, torch.Tensor):
            assert value.numel() <= 4 * n + 16
    # absent random sites, and every site's face neighbours, against a Python set
    present = {tuple(r): i for i, r in enumerate(coords.tolist())}
    others = _unique_coords(2000, batch_size, shape, seed=7)
    assert h.query(pack_coords(others)).tolist() == [present.get(tuple(r), -1) for r in others.tolist()]
    for d in itertools.product((-1, 0, 1), repeat=3):
        if sum(map(abs, d)) != 1:
            continue
        moved = coords.clone()
        moved[:, 1:] += torch.tensor(d)
        got = h.query(pack_coords(coords) + offset_key(*d)).tolist()
        assert got == [present.get(tuple(r), -1) for r in moved.tolist()]


def test_large_extent_clustered_neighbours():
    """Dense clusters far apart in a 10000^3 grid: neighbour lookups agree with a set."""
    gen = torch.Generator().manual_seed(8)
    centres = torch.tensor([[0, 10, 9990, 5000], [1, 9999 - 6, 0, 3], [3, 5000, 5000, 9990], [3, 7000, 20, 20]])
    rows = set()
    for c in centres.tolist():
        local = (torch.rand(7, 7, 7, generator=gen) < 0.4).nonzero()
        for x, y, z in local.tolist():
            rows.add((c[0], c[1] + x, c[2] + y, c[3] + z))
    coords = torch.tensor(sorted(rows))
    coords = coords[torch.randperm(coords.shape[0], generator=gen)]
    st = SparseTensor(torch.zeros(coords.shape[0], 1), coords, (10000, 10000, 10000), 4)
    h = st.coordinate_set.hash_table
    lookup = {tuple(r): i for i, r in enumerate(coords.tolist())}
    keys = pack_coords(coords)
    for d in itertools.product((-1, 0, 1), repeat=3):
        got = h.query(keys + offset_key(*d)).tolist()
        want = [lookup.get((b, x + d[0], y + d[1], z + d[2]), -1) for b, x, y, z in coords.tolist()]
        assert got == want, d
    assert h.table_keys.numel() <= 4 * coords.shape[0] + 16
