"""Kernel maps against references built independently of the library.

Each map is compared, offset by offset, with two references:

* a brute-force Python loop written from the semantics in the ``kernel_map`` docstring
  (submanifold: ``out[o]`` reads ``x[o - left + t*d]``; conv: ``out[o]`` reads
  ``x[o*s - p + t*d]``; transposed: ``x[i]`` writes ``out[i*s - p + t*d]``);
* PyTorch itself: the dense input carries a unique id per active site and the weight is
  one-hot per kernel tap, so ``F.conv3d`` / ``F.conv_transpose3d`` report, for every
  output site and tap, which input site (if any) that tap connects.

Pairs are compared as sets of ``(input coordinate, output coordinate)`` per offset.
"""
import dataclasses
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparseconv import SparseTensor
from sparseconv.nn import functional as SF
from sparseconv.engine.kmap import (
    KernelMap,
    KernelMapKey,
    build_kernel_map,
    kernel_offsets,
    output_spatial_shape,
)
from sparseconv.testing import random_sparse_tensor


def _t3(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def _random_input(spatial_shape=(5, 6, 4), batch_size=2, density=0.3, empty=(), seed=0, shuffle=True, channels=2):
    """Random sparse tensor; coordinate rows shuffled so no test relies on sorted input."""
    x = random_sparse_tensor(spatial_shape, channels, batch_size=batch_size, density=density,
                             empty_batches=empty, seed=seed)
    if not shuffle:
        return x
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 100))
    return SparseTensor(x.feats[perm], x.coords[perm], spatial_shape, batch_size)


def _dense_out_shape(kind, shape, kernel, stride=1, padding=0, dilation=1, output_padding=0):
    """Output grid from PyTorch on dense zero tensors, one axis at a time (``conv1d`` along each
    axis gives the same extent as ``conv3d``, and stays cheap for a 10000-voxel axis)."""
    if kind == "submanifold":
        return tuple(shape)
    kernel, stride, padding, dilation, output_padding = map(_t3, (kernel, stride, padding, dilation, output_padding))
    out = []
    for a in range(3):
        x = torch.zeros(1, 1, shape[a])
        w = torch.zeros(1, 1, kernel[a])
        if kind == "conv":
            y = F.conv1d(x, w, None, stride[a], padding[a], dilation[a])
        else:
            y = F.conv_transpose1d(x, w, None, stride[a], padding[a], output_padding[a], 1, dilation[a])
        out.append(y.shape[-1])
    return tuple(out)


def _dense_out_shape_3d(kind, shape, kernel, stride=1, padding=0, dilation=1, output_padding=0):
    """The same from F.conv3d / F.conv_transpose3d (small grids only)."""
    x = torch.zeros(1, 1, *shape)
    w = torch.zeros(1, 1, *kernel)
    if kind == "submanifold":
        return tuple(F.conv3d(x, w, None, 1, "same", dilation).shape[2:])
    if kind == "conv":
        return tuple(F.conv3d(x, w, None, stride, padding, dilation).shape[2:])
    return tuple(F.conv_transpose3d(x, w, None, stride, padding, output_padding, 1, dilation).shape[2:])


def _taps(kernel):
    """Kernel taps in row-major order over (kD, kH, kW), as weight.reshape(..., K) orders them."""
    K = int(np.prod(kernel))
    return [tuple(int(v) for v in np.unravel_index(k, kernel)) for k in range(K)]


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------
def reference_pairs_loop(coords, spatial_shape, batch_size, key):
    """Brute force: list (one entry per offset) of sets of (in_coord, out_coord) 4-tuples."""
    kind = key.kind
    kernel, s, p, d = key.kernel_size, key.stride, key.padding, key.dilation
    active = {tuple(c) for c in coords.tolist()}
    out_shape = _dense_out_shape(kind, spatial_shape, kernel, s, p, d, key.output_padding)
    ref = []
    for t in _taps(kernel):
        pairs = set()
        if kind == "submanifold":
            # PyTorch padding='same': total d*(k-1), low side gets the floor half.
            left = [di * (ki - 1) // 2 for ki, di in zip(kernel, d)]
            for o in active:
                src = (o[0],) + tuple(o[a + 1] - left[a] + t[a] * d[a] for a in range(3))
                if src in active:
                    pairs.add((src, o))
        elif kind == "conv":
            for b in range(batch_size):
                for o in itertools.product(*(range(n) for n in out_shape)):
                    src = (b,) + tuple(o[a] * s[a] - p[a] + t[a] * d[a] for a in range(3))
                    if src in active:
                        pairs.add((src, (b,) + o))
        else:
            for i in active:
                dst = tuple(i[a + 1] * s[a] - p[a] + t[a] * d[a] for a in range(3))
                if all(0 <= dst[a] < out_shape[a] for a in range(3)):
                    pairs.add((i, (i[0],) + dst))
        ref.append(pairs)
    return ref, out_shape


def reference_pairs_dense(coords, spatial_shape, batch_size, key):
    """PyTorch reference: unique ids through one-hot per-tap weights."""
    kind = key.kind
    kernel, s, p, d = key.kernel_size, key.stride, key.padding, key.dilation
    K = int(np.prod(kernel))
    n = coords.shape[0]
    ids = torch.zeros(batch_size, 1, *spatial_shape, dtype=torch.float64)
    c = coords
    ids[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] = torch.arange(1, n + 1, dtype=torch.float64)
    onehot = torch.eye(K, dtype=torch.float64).reshape(K, 1, *kernel)
    if kind == "submanifold":
        pads = []
        for ki, di in reversed(list(zip(kernel, d))):
            total = di * (ki - 1)
            pads += [total // 2, total - total // 2]
        out = F.conv3d(F.pad(ids, pads), onehot, None, 1, 0, d)
    elif kind == "conv":
        out = F.conv3d(ids, onehot, None, s, p, d)
    else:
        out = F.conv_transpose3d(ids, onehot.reshape(1, K, *kernel), None, s, p, key.output_padding, 1, d)
    coord_list = [tuple(r) for r in coords.tolist()]
    active = set(coord_list)
    ref = []
    for k in range(K):
        nz = out[:, k].nonzero().tolist()
        pairs = set()
        for b, x, y, z in nz:
            src = coord_list[int(round(out[b, k, x, y, z].item())) - 1]
            dst = (b, x, y, z)
            if kind == "submanifold" and dst not in active:
                continue  # submanifold outputs are the input sites only
            pairs.add((src, dst))
        ref.append(pairs)
    return ref


def map_pairs(kmap):
    """Map rows back to coordinates: list of sets per offset, plus a duplicate check."""
    ic = [tuple(r) for r in kmap.input.coords.tolist()]
    oc = [tuple(r) for r in kmap.output.coords.tolist()]
    result = []
    for k in range(kmap.kernel_volume):
        ins, outs = kmap.pairs(k)
        lst = [(ic[i], oc[o]) for i, o in zip(ins.tolist(), outs.tolist())]
        assert len(lst) == len(set(lst)), f"offset {k} lists a pair twice"
        result.append(set(lst))
    return result


def check_map(x, key, expect_output_is_input=False):
    kmap = x.coordinate_set.kernel_map(key)
    ref, out_shape = reference_pairs_loop(x.coords, x.spatial_shape, x.batch_size, key)
    dense_ref = reference_pairs_dense(x.coords, x.spatial_shape, x.batch_size, key)
    assert ref == dense_ref, "the two references disagree (test bug)"

    # structure
    K = int(np.prod(key.kernel_size))
    assert kmap.key == key
    assert kmap.kernel_volume == K
    assert len(kmap.offset_bounds) == K + 1
    assert kmap.offset_bounds[0] == 0
    assert list(kmap.offset_bounds) == sorted(kmap.offset_bounds)
    assert kmap.num_pairs == kmap.in_rows.numel() == kmap.out_rows.numel()
    assert kmap.pair_counts() == tuple(len(r) for r in ref)
    assert kmap.in_rows.dtype == torch.int64 and kmap.out_rows.dtype == torch.int64
    assert kmap.input is x.coordinate_set
    assert kmap.num_inputs == len(x)
    assert kmap.num_outputs == len(kmap.output)
    if kmap.num_pairs:
        assert 0 <= int(kmap.in_rows.min()) and int(kmap.in_rows.max()) < kmap.num_inputs
        assert 0 <= int(kmap.out_rows.min()) and int(kmap.out_rows.max()) < kmap.num_outputs

    # output grid and sites
    assert kmap.output.spatial_shape == out_shape
    assert kmap.output.batch_size == x.batch_size
    out_coords = [tuple(r) for r in kmap.output.coords.tolist()]
    assert len(out_coords) == len(set(out_coords)), "output coordinates are not unique"
    if expect_output_is_input:
        assert kmap.output is x.coordinate_set
    else:
        assert out_coords == sorted(out_coords), "output coordinates not sorted by (batch, x, y, z)"
        reached = set().union(*ref) if ref else set()
        assert set(out_coords) == {o for _, o in reached}

    # pairs, offset by offset
    got = map_pairs(kmap)
    for k in range(K):
        assert got[k] == ref[k], f"offset {k} (tap {_taps(key.kernel_size)[k]}) differs"

    if kmap.identity_offset is not None:
        _assert_identity_pairs(kmap, len(x))
    return kmap


def _assert_identity_pairs(kmap, n):
    """Offset ``identity_offset`` holds exactly the pairs (i, i), once for every row i."""
    ins, outs = kmap.pairs(kmap.identity_offset)
    assert torch.equal(ins, outs)
    assert torch.equal(torch.sort(ins).values, torch.arange(n))


# ---------------------------------------------------------------------------------------------
# brute-force comparisons
# ---------------------------------------------------------------------------------------------
SUBM_CASES = [
    ((1, 1, 1), (1, 1, 1)),
    ((3, 3, 3), (1, 1, 1)),
    ((5, 5, 5), (1, 1, 1)),
    ((2, 2, 2), (1, 1, 1)),
    ((3, 2, 1), (1, 1, 1)),
    ((3, 3, 3), (2, 2, 2)),
    ((3, 3, 3), (1, 2, 3)),
    ((2, 2, 2), (2, 2, 2)),
    ((2, 3, 4), (1, 2, 1)),
    ((1, 3, 5), (3, 1, 1)),
]


def _with_empty(cases, empties):
    """Each case once, cycling through the empty-batch patterns (an empty entry in some cases)."""
    return [case + (empties[i % len(empties)],) for i, case in enumerate(cases)]


@pytest.mark.parametrize("kernel,dilation,empty", _with_empty(SUBM_CASES, [(), (1,), (0,)]))
def test_submanifold_matches_brute_force(kernel, dilation, empty):
    x = _random_input(empty=empty, seed=len(kernel) * sum(kernel) + 7 * sum(dilation))
    check_map(x, KernelMapKey("submanifold", kernel, dilation=dilation), expect_output_is_input=True)


CONV_CASES = [
    # kernel, stride, padding, dilation
    ((2, 2, 2), (1, 1, 1), (0, 0, 0), (1, 1, 1)),
    ((3, 3, 3), (1, 1, 1), (0, 0, 0), (1, 1, 1)),
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1)),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ((3, 3, 3), (3, 3, 3), (0, 0, 0), (1, 1, 1)),
    ((3, 3, 3), (1, 2, 3), (1, 1, 1), (1, 1, 1)),
    ((3, 2, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1)),
    ((3, 2, 1), (1, 2, 3), (1, 0, 0), (1, 1, 1)),
    ((3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2)),
    ((3, 3, 3), (2, 2, 2), (0, 1, 2), (1, 2, 3)),
    ((1, 1, 1), (2, 2, 2), (0, 0, 0), (1, 1, 1)),
    ((2, 3, 2), (2, 1, 3), (1, 1, 0), (2, 1, 1)),
    ((2, 2, 2), (3, 3, 3), (2, 2, 2), (1, 1, 1)),
]


@pytest.mark.parametrize("kernel,stride,padding,dilation,empty", _with_empty(CONV_CASES, [(), (1,), (0,)]))
def test_conv_matches_brute_force(kernel, stride, padding, dilation, empty):
    x = _random_input(empty=empty, seed=sum(kernel) + 3 * sum(stride) + 5 * sum(padding) + 7 * sum(dilation))
    check_map(x, KernelMapKey("conv", kernel, stride, padding, dilation))


TRANSPOSED_CASES = [
    # kernel, stride, padding, dilation, output_padding
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), (0, 0, 0)),
    ((3, 3, 3), (1, 1, 1), (0, 0, 0), (1, 1, 1), (0, 0, 0)),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (2, 2, 2), (0, 1, 1)),
    ((3, 2, 1), (2, 1, 3), (1, 0, 0), (1, 2, 1), (1, 0, 2)),
    ((2, 3, 2), (2, 2, 2), (0, 1, 0), (1, 1, 1), (1, 0, 1)),
    ((3, 3, 3), (1, 1, 1), (2, 2, 2), (1, 1, 1), (0, 0, 0)),
]


@pytest.mark.parametrize("kernel,stride,padding,dilation,output_padding,empty",
                         _with_empty(TRANSPOSED_CASES, [(), (1,)]))
def test_transposed_matches_brute_force(kernel, stride, padding, dilation, output_padding, empty):
    x = _random_input((4, 3, 5), empty=empty, seed=sum(kernel) + 3 * sum(stride) + 5 * sum(padding))
    check_map(x, KernelMapKey("transposed", kernel, stride, padding, dilation, output_padding))


@pytest.mark.parametrize("kind", ["submanifold", "conv", "transposed"])
def test_empty_input_gives_empty_map(kind):
    x = SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.int64), (4, 5, 6), 2)
    key = KernelMapKey(kind, (3, 3, 3), (2, 2, 2) if kind != "submanifold" else (1, 1, 1))
    kmap = x.coordinate_set.kernel_map(key)
    assert kmap.num_pairs == 0
    assert kmap.pair_counts() == (0,) * 27
    assert kmap.num_inputs == 0 and kmap.num_outputs == 0
    assert kmap.output.coords.shape == (0, 4)


def test_single_site_submanifold_only_centre():
    """One active site: only the centre tap connects it, to itself."""
    x = SparseTensor(torch.ones(1, 1), torch.tensor([[0, 2, 2, 2]]), (5, 5, 5))
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    counts = kmap.pair_counts()
    centre = int(np.ravel_multi_index((1, 1, 1), (3, 3, 3)))
    assert counts == tuple(1 if k == centre else 0 for k in range(27))


def test_batches_do_not_mix():
    """Two sites at the same x, y, z in different batch entries are never neighbours."""
    coords = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 2], [1, 1, 1, 1]])
    x = SparseTensor(torch.ones(3, 1), coords, (3, 3, 3))
    for key in (KernelMapKey("submanifold", (3, 3, 3)), KernelMapKey("conv", (2, 2, 2), (2, 2, 2)),
                KernelMapKey("transposed", (2, 2, 2), (2, 2, 2))):
        kmap = x.coordinate_set.kernel_map(key)
        b_in = kmap.input.coords[kmap.in_rows, 0]
        b_out = kmap.output.coords[kmap.out_rows, 0]
        assert torch.equal(b_in, b_out)
    sub = x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    assert sub.num_pairs == 1 + 2 + 2  # row 0 with itself; rows 1, 2 with themselves and each other (both ways)


# ---------------------------------------------------------------------------------------------
# offsets and output shapes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", [(1, 1, 1), (3, 3, 3), (3, 2, 1), (2, 4, 3)])
def test_kernel_offsets_row_major(kernel):
    offs = kernel_offsets(kernel)
    assert offs.dtype == torch.int64
    assert offs.shape == (int(np.prod(kernel)), 3)
    # weight[..., kd, kh, kw].reshape(K)[k] is the tap at np.unravel_index(k, kernel)
    w = torch.arange(int(np.prod(kernel))).reshape(kernel)
    for k, (a, b, c) in enumerate(offs.tolist()):
        assert int(w[a, b, c]) == k


SHAPE_CASES = [
    ("conv", (7, 8, 9), (3, 3, 3), (1, 1, 1), (0, 0, 0), (1, 1, 1), (0, 0, 0)),
    ("conv", (7, 8, 9), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (0, 0, 0)),
    ("conv", (7, 8, 9), (2, 3, 4), (3, 2, 1), (1, 0, 2), (2, 1, 1), (0, 0, 0)),
    ("conv", (5, 5, 5), (5, 5, 5), (1, 1, 1), (0, 0, 0), (1, 1, 1), (0, 0, 0)),
    ("conv", (10, 1, 4), (3, 1, 2), (4, 1, 3), (0, 0, 1), (3, 1, 2), (0, 0, 0)),
    ("transposed", (4, 5, 6), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    ("transposed", (4, 5, 6), (2, 3, 1), (2, 1, 3), (0, 1, 0), (1, 2, 1), (1, 1, 2)),
    ("transposed", (1, 1, 1), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), (0, 0, 0)),
    ("submanifold", (4, 5, 6), (3, 3, 3), (1, 1, 1), (0, 0, 0), (2, 2, 2), (0, 0, 0)),
]


@pytest.mark.parametrize("kind,shape,kernel,stride,padding,dilation,output_padding", SHAPE_CASES)
def test_output_spatial_shape_matches_torch(kind, shape, kernel, stride, padding, dilation, output_padding):
    key = KernelMapKey(kind, kernel, stride, padding, dilation, output_padding)
    expected = _dense_out_shape_3d(kind, shape, kernel, stride, padding, dilation, output_padding)
    assert _dense_out_shape(kind, shape, kernel, stride, padding, dilation, output_padding) == expected
    assert tuple(output_spatial_shape(key, shape)) == expected


def test_empty_output_grid_raises():
    with pytest.raises(ValueError, match="empty output grid"):
        output_spatial_shape(KernelMapKey("conv", (5, 5, 5)), (3, 8, 8))
    with pytest.raises(ValueError, match="empty output grid"):
        output_spatial_shape(KernelMapKey("transposed", (1, 1, 1), padding=(1, 0, 0)), (1, 4, 4))
    # PyTorch agrees these grids are empty
    with pytest.raises(RuntimeError):
        F.conv3d(torch.zeros(1, 1, 3, 8, 8), torch.zeros(1, 1, 5, 5, 5))
    x = _random_input((3, 8, 8))
    before = x.coordinate_set.kernel_map_builds
    with pytest.raises(ValueError, match="empty output grid"):
        x.coordinate_set.kernel_map(KernelMapKey("conv", (5, 5, 5)))
    assert x.coordinate_set.kernel_map_builds == before
    assert x.coordinate_set.cached_kernel_maps() == {}


def test_unknown_kind_rejected():
    with pytest.raises(ValueError, match="kind must be one of"):
        KernelMapKey("deconv", (3, 3, 3))
    with pytest.raises(ValueError, match="'Conv'"):
        KernelMapKey("Conv", (3, 3, 3))


def test_kernel_map_is_immutable():
    x = _random_input()
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    assert isinstance(kmap, KernelMap)
    with pytest.raises(dataclasses.FrozenInstanceError):
        kmap.in_rows = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        kmap.identity_offset = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        kmap.key.kind = "conv"


def test_key_equality_and_hash():
    a = KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1))
    b = KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1))
    c = KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1), (2, 2, 2))
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a.kernel_volume == 27
    assert KernelMapKey("submanifold", (3, 2, 1)).kernel_volume == 6


# ---------------------------------------------------------------------------------------------
# caching
# ---------------------------------------------------------------------------------------------
def test_cache_same_key_builds_once():
    x = _random_input()
    cs = x.coordinate_set
    assert cs.kernel_map_builds == 0
    m1 = cs.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    assert cs.kernel_map_builds == 1
    m2 = cs.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))  # equal, freshly built key
    assert m2 is m1
    assert cs.kernel_map_builds == 1
    m3 = cs.kernel_map(KernelMapKey("submanifold", (3, 3, 3), dilation=(2, 2, 2)))
    assert m3 is not m1
    assert cs.kernel_map_builds == 2
    m4 = cs.kernel_map(KernelMapKey("submanifold", (5, 5, 5)))
    assert m4 is not m1 and m4 is not m3
    assert cs.kernel_map_builds == 3
    assert set(cs.cached_kernel_maps()) == {m1.key, m3.key, m4.key}


def test_build_kernel_map_is_uncached():
    x = _random_input()
    key = KernelMapKey("submanifold", (3, 3, 3))
    a = build_kernel_map(x.coordinate_set, key)
    b = build_kernel_map(x.coordinate_set, key)
    assert a is not b
    assert x.coordinate_set.kernel_map_builds == 0
    assert torch.equal(a.in_rows, b.in_rows) and torch.equal(a.out_rows, b.out_rows)


def test_replace_reuses_cache():
    x = _random_input(channels=3)
    w = torch.randn(4, 3, 3, 3, 3, dtype=torch.float64)
    y = SF.subm_conv3d(x, w)
    assert x.coordinate_set.kernel_map_builds == 1
    x2 = x.replace(torch.randn(len(x), 3, dtype=torch.float64))
    assert x2.coordinate_set is x.coordinate_set
    SF.subm_conv3d(x2, w)
    assert x.coordinate_set.kernel_map_builds == 1
    # the submanifold output lives on the same coordinates, so a second layer reuses the map too
    assert y.coordinate_set is x.coordinate_set
    SF.subm_conv3d(y, torch.randn(4, 4, 3, 3, 3, dtype=torch.float64))
    assert x.coordinate_set.kernel_map_builds == 1


def test_strided_output_set_is_shared_and_records_producer():
    x = _random_input((8, 7, 6), channels=2)
    key = KernelMapKey("conv", (2, 2, 2), (2, 2, 2))
    m1 = x.coordinate_set.kernel_map(key)
    m2 = x.coordinate_set.kernel_map(key)
    assert m1.output is m2.output
    assert len(m1.output.produced_by) == 1
    produced_key, fine = m1.output.produced_by[0]
    assert produced_key == key and fine is x.coordinate_set

    # through the functional API: two strided convs of the same input land on one coordinate set
    w1 = torch.randn(3, 2, 2, 2, 2, dtype=torch.float64)
    y1 = SF.sparse_conv3d(x, w1, stride=2)
    y2 = SF.sparse_conv3d(x.replace(x.feats * 2), w1, stride=2)
    assert y1.coordinate_set is y2.coordinate_set is m1.output
    assert x.coordinate_set.kernel_map_builds == 1
    # so a layer after them builds its map once
    w2 = torch.randn(3, 3, 3, 3, 3, dtype=torch.float64)
    SF.subm_conv3d(y1, w2)
    SF.subm_conv3d(y2, w2)
    assert y1.coordinate_set.kernel_map_builds == 1


def test_transposed_map_does_not_record_producer():
    x = _random_input()
    kmap = x.coordinate_set.kernel_map(KernelMapKey("transposed", (2, 2, 2), (2, 2, 2)))
    assert kmap.output.produced_by == []


def test_transpose_swaps_and_is_cached():
    x = _random_input((8, 7, 6))
    kmap = x.coordinate_set.kernel_map(KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)))
    t = kmap.transpose()
    assert kmap.transpose() is t
    assert t.input is kmap.output and t.output is kmap.input
    assert t.num_inputs == kmap.num_outputs and t.num_outputs == kmap.num_inputs
    assert torch.equal(t.in_rows, kmap.out_rows) and torch.equal(t.out_rows, kmap.in_rows)
    assert t.offset_bounds == kmap.offset_bounds
    # per offset, the coordinate pairs are the forward ones swapped
    fwd, bwd = map_pairs(kmap), map_pairs(t)
    for k in range(kmap.kernel_volume):
        assert bwd[k] == {(o, i) for i, o in fwd[k]}
    # and the cached transpose survives a second cache lookup of the forward map
    assert x.coordinate_set.kernel_map(kmap.key).transpose() is t


@pytest.mark.parametrize("kernel", [(3, 3, 3), (5, 5, 5), (3, 1, 5)])
def test_identity_offset_submanifold(kernel):
    x = _random_input((6, 6, 6), density=0.4)
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", kernel))
    # the tap at the kernel centre reads the site itself
    centre = int(np.ravel_multi_index(tuple(k // 2 for k in kernel), kernel))
    assert kmap.identity_offset == centre
    _assert_identity_pairs(kmap, len(x))
    # and the pairs, mapped back to coordinates, are every site with itself
    assert map_pairs(kmap)[centre] == {(c, c) for c in map(tuple, x.coords.tolist())}


def test_symmetric_submanifold_pairs_mirror():
    """For odd kernels, the pairs of tap t are those of the mirrored tap with in/out swapped."""
    x = _random_input((6, 5, 7), density=0.35)
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 5, 3), dilation=(1, 2, 1)))
    pairs = map_pairs(kmap)
    K = kmap.kernel_volume
    for k in range(K):
        assert pairs[K - 1 - k] == {(o, i) for i, o in pairs[k]}


def test_reach_beyond_key_margin_rejected():
    x = _random_input()
    with pytest.raises(ValueError, match="reaches more than"):
        x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3), dilation=(1, 1, 2000)))
    assert x.coordinate_set.cached_kernel_maps() == {}


def _clustered_large_scene(seed=0):
    """Clusters of sites far apart in a 10000^3 grid with batch 4 (a 200 m scene at 2 cm),
    some touching the grid's faces."""
    gen = torch.Generator().manual_seed(seed)
    corners = [(0, 0, 9993, 5000), (1, 9993, 0, 3), (3, 5000, 5000, 9993), (3, 7000, 20, 0), (0, 4, 9000, 9000)]
    rows = set()
    for b, cx, cy, cz in corners:
        for x, y, z in (torch.rand(7, 7, 7, generator=gen) < 0.35).nonzero().tolist():
            rows.add((b, cx + x, cy + y, cz + z))
    coords = torch.tensor(sorted(rows))
    coords = coords[torch.randperm(coords.shape[0], generator=gen)]
    return SparseTensor(torch.zeros(coords.shape[0], 1), coords, (10000, 10000, 10000), 4)


@pytest.mark.parametrize("kernel,dilation", [((3, 3, 3), (1, 1, 1)), ((2, 3, 2), (2, 1, 3))])
def test_submanifold_large_extent(kernel, dilation):
    x = _clustered_large_scene()
    key = KernelMapKey("submanifold", kernel, dilation=dilation)
    ref, _ = reference_pairs_loop(x.coords, x.spatial_shape, x.batch_size, key)
    kmap = x.coordinate_set.kernel_map(key)
    assert map_pairs(kmap) == ref
    assert sum(map(len, ref)) > 2 * len(x)  # the clusters really have neighbours


@pytest.mark.parametrize("kind,kernel,stride,padding", [("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)),
                                                        ("conv", (2, 2, 2), (2, 2, 2), (0, 0, 0)),
                                                        ("transposed", (2, 2, 2), (2, 2, 2), (0, 0, 0))])
def test_generative_large_extent(kind, kernel, stride, padding):
    """Input-side brute force (the output grid is too large to loop over)."""
    x = _clustered_large_scene(seed=1)
    key = KernelMapKey(kind, kernel, stride, padding)
    out_shape = _dense_out_shape(kind, x.spatial_shape, kernel, stride, padding)
    ref = []
    for t in _taps(kernel):
        pairs = set()
        for i in map(tuple, x.coords.tolist()):
            if kind == "conv":  # o*s - p + t == i
                num = [i[a + 1] + padding[a] - t[a] for a in range(3)]
                if any(v % stride[a] for a, v in enumerate(num)):
                    continue
                o = [v // stride[a] for a, v in enumerate(num)]
            else:
                o = [i[a + 1] * stride[a] - padding[a] + t[a] for a in range(3)]
            if all(0 <= o[a] < out_shape[a] for a in range(3)):
                pairs.add((i, (i[0], *o)))
        ref.append(pairs)
    kmap = x.coordinate_set.kernel_map(key)
    assert kmap.output.spatial_shape == out_shape
    assert map_pairs(kmap) == ref
    out = [tuple(r) for r in kmap.output.coords.tolist()]
    assert out == sorted(set(out))
    assert set(out) == {o for pairs in ref for _, o in pairs}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel_size=(3, 0, 3)), "kernel_size must be 3 ints >= 1"),
        (dict(kernel_size=(3, 3, 3), stride=(0, 1, 1)), "stride must be 3 ints >= 1"),
        (dict(kernel_size=(3, 3, 3), padding=(-1, 0, 0)), "padding must be 3 ints >= 0"),
        (dict(kernel_size=(3, 3, 3), dilation=(1, 1)), "dilation must be 3 ints >= 1"),
    ],
)
def test_key_rejects_invalid_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KernelMapKey("conv", **kwargs)


def test_strided_maps_have_no_reach_limit():
    # two sites 2000 voxels apart along x meet in one output of a kernel-2, dilation-2000 conv
    x = SparseTensor(torch.randn(2, 1), torch.tensor([[0, 0, 0, 0], [0, 2000, 0, 0]]))
    kmap = x.coordinate_set.kernel_map(KernelMapKey("conv", (2, 1, 1), dilation=(2000, 1, 1)))
    assert kmap.num_outputs == 1 and kmap.pair_counts() == (1, 1)


def test_tensor_owns_its_coordinates():
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 2, 2]])
    st = SparseTensor(torch.randn(2, 1), coords)
    coords[0, 1] = 5
    assert st.coords[0].tolist() == [0, 1, 1, 1]


def test_derived_data_is_built_once_per_map():
    from sparseconv.engine.kmap import KernelMapKey
    from sparseconv.testing import random_sparse_tensor

    x = random_sparse_tensor((6, 6, 6), 1, density=0.3, seed=0)
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    calls = []

    def build(m):
        calls.append(m)
        return object()

    first = kmap.derived("probe", build)
    assert kmap.derived("probe", build) is first and calls == [kmap]
    assert kmap.transpose() is kmap.transpose() and kmap.transpose().transpose().in_rows is kmap.in_rows
    # a map made from this one starts with its own, empty cache
    import dataclasses

    copy = dataclasses.replace(kmap, injective=False)
    assert copy.derived("probe", build) is not first and len(calls) == 2
    assert copy.transpose() is not kmap.transpose() and not copy.transpose().injective
