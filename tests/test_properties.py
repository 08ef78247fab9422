"""Property-based proof of the dense-equivalence contract (issue 16), with ``hypothesis``.

For every generated case (coordinates, grid shape, batch size with entries forced empty, kernel
size, stride, padding, dilation, groups and channels) each op equals its dense PyTorch twin at
the active output sites, forward and backward, in float64, and its active sites are exactly the
contracted ones (:func:`sparseconv.testing.check_dense_equivalence`). A geometry whose output
grid is empty is refused by both: the sparse op raises ``ValueError`` where the dense op raises.

Coordinates at the documented limits (the last voxel of a ``MAX_EXTENT`` grid, batch index
``MAX_BATCH - 1``) cannot be densified; there the property is translation: the op on a few sites
at the limits equals, site for site, the same op on the same sites moved into a small grid, and
that small case is checked against its dense twin.

Default suite: ``FAST`` (30 derandomised examples per property, a few seconds). The deep profile
(``DEEP``: 1500 fresh random examples per property, thousands of cases in all) is marked slow::

    python -m pytest -m slow tests/test_properties.py
"""
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.engine.hashing import MAX_BATCH, MAX_EXTENT
from sparseconv.testing import check_dense_equivalence

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
DEEP = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies ------------------------------------------------------------------------------------
def per_axis(low: int, high: int):
    """An int or a 3-tuple of ints in ``[low, high]`` (both forms the API takes)."""
    value = st.integers(low, high)
    return st.one_of(value, st.tuples(value, value, value))


def _t(v):
    return (v,) * 3 if isinstance(v, int) else tuple(v)


@st.composite
def sparse_inputs(draw, channels: int, min_shape=(1, 1, 1), max_extent: int = 6, max_sites: int = 16):
    """A float64 SparseTensor: grid axes from ``min_shape`` to ``max(min_shape + 3, max_extent)``, batch
    1-3 with some entries forced empty (every entry in about one case of ten), unique sites anywhere
    in the grid including its faces."""
    shape = tuple(draw(st.integers(lo, max(lo + 3, max_extent))) for lo in min_shape)
    batch_size = draw(st.integers(1, 3))
    if draw(st.integers(0, 9)) == 0:
        empty = set(range(batch_size))
    else:
        empty = draw(st.sets(st.integers(0, batch_size - 1), max_size=batch_size - 1))
    live = [b for b in range(batch_size) if b not in empty]
    sites = []
    if live:
        site = st.tuples(st.sampled_from(live), *(st.integers(0, n - 1) for n in shape))
        sites = draw(st.lists(site, unique=True, min_size=1, max_size=max_sites))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    feats = torch.randn(len(sites), channels, generator=gen, dtype=torch.float64)
    coords = torch.tensor(sites, dtype=torch.int64).reshape(-1, 4)
    return SparseTensor(feats, coords, shape, batch_size)


def _min_shape(kernel, padding, dilation):
    """Per axis, one voxel short of the smallest grid with a non-empty output (so both sides occur)."""
    return tuple(max(1, d * (k - 1) + 1 - 2 * p - 1) for k, p, d in zip(_t(kernel), _t(padding), _t(dilation)))


@st.composite
def channel_groups(draw):
    """``(in_channels, out_channels, groups)``: plain, grouped and depthwise."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    return groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), groups


def _seeded(module):
    torch.manual_seed(0)
    module.reset_parameters()
    return module.double()


def _assert_equivalent(module, x, **kwargs):
    event(f"compared ({'no sites' if len(x) == 0 else 'sites'}, batch {x.batch_size})")
    report = check_dense_equivalence(module, x, **kwargs)
    assert report.passed, (module, x, report.failures)


def _conv_grid_is_empty(x, kernel, stride, padding, dilation) -> bool:
    return any(n + 2 * p - d * (k - 1) - 1 < 0 for n, k, p, d in zip(x.spatial_shape, kernel, padding, dilation))


# -- properties ------------------------------------------------------------------------------------
def _sparse_conv(data, kernel, stride, padding, dilation, grouping):
    cin, cout, groups = grouping
    x = data.draw(sparse_inputs(cin, _min_shape(kernel, padding, dilation)))
    module = _seeded(snn.SparseConv3d(cin, cout, kernel, stride, padding, dilation, groups))
    if _conv_grid_is_empty(x, module.kernel_size, module.stride, module.padding, module.dilation):
        event("empty output grid refused")
        with pytest.raises(ValueError, match="empty output grid"):
            module(x)
        return
    _assert_equivalent(module, x)


def _subm_conv(data, kernel, dilation, grouping):
    cin, cout, groups = grouping
    x = data.draw(sparse_inputs(cin))
    _assert_equivalent(_seeded(snn.SubMConv3d(cin, cout, kernel, dilation, groups)), x)


def _transposed_conv(data, kernel, stride, padding, dilation, grouping):
    cin, cout, groups = grouping
    x = data.draw(sparse_inputs(cin, max_extent=4, max_sites=12))
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(_t(stride), _t(dilation)))
    module = _seeded(snn.SparseConvTranspose3d(cin, cout, kernel, stride, padding, output_padding, dilation, groups))
    grid = [
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, k, s, p, d, op in zip(
            x.spatial_shape, module.kernel_size, module.stride, module.padding, module.dilation, output_padding
        )
    ]
    if min(grid) < 1:
        event("empty output grid refused")
        with pytest.raises(ValueError, match="empty output grid"):
            module(x)
        return
    _assert_equivalent(module, x)


def _inverse_conv(data, kernel, stride, padding, dilation, grouping):
    cin, cout, groups = grouping
    x = data.draw(sparse_inputs(cin, _min_shape(kernel, padding, dilation)))
    down = snn.SparseConv3d(cin, cin, kernel, stride, padding, dilation).double()
    if _conv_grid_is_empty(x, down.kernel_size, down.stride, down.padding, down.dilation):
        return
    coarse = down(x)
    module = _seeded(snn.SparseInverseConv3d(cin, cout, kernel, stride, padding, dilation, groups))
    _assert_equivalent(module, coarse.detach(), target=x)


def _pooling(data, kernel, stride, padding, dilation, average):
    kernel = _t(kernel)
    padding = tuple(min(p, k // 2) for p, k in zip(_t(padding), kernel))  # the pooling contract's range
    dilation = 1 if average else dilation
    # torch's avg_pool3d (the twin) refuses a grid smaller than the kernel, whatever the padding
    min_shape = kernel if average else _min_shape(kernel, padding, dilation)
    x = data.draw(sparse_inputs(2, min_shape))
    if average:
        module = snn.SparseAvgPool3d(kernel, stride, padding, count_include_pad=data.draw(st.booleans()))
    else:
        module = snn.SparseMaxPool3d(kernel, stride, padding, dilation)
    if _conv_grid_is_empty(x, kernel, module.stride, padding, _t(dilation)):
        event("empty output grid refused")
        with pytest.raises(ValueError, match="empty output grid"):
            module(x)
        return
    _assert_equivalent(module, x)


# -- the same properties at the coordinate and batch limits ------------------------------------------
_TOP = 3  # sites lie in the last _TOP voxels of every axis


@st.composite
def limit_cases(draw):
    """A few sites at the limits: coordinates up to MAX_EXTENT - 1, batch index 0 or MAX_BATCH - 1."""
    kind = draw(st.sampled_from(["subm", "conv", "inverse", "max_pool"]))
    kernel = _t(draw(per_axis(1, 3)))
    stride = (1, 1, 1) if kind == "subm" else _t(draw(per_axis(1, 3)))
    padding = _t(draw(per_axis(0, 1)))
    if kind == "max_pool":
        padding = tuple(min(p, k // 2) for p, k in zip(padding, kernel))
    dilation = _t(draw(per_axis(1, 2)))
    coordinate = st.integers(MAX_EXTENT - _TOP, MAX_EXTENT - 1)
    site = st.tuples(st.sampled_from([0, MAX_BATCH - 1]), coordinate, coordinate, coordinate)
    sites = draw(st.lists(site, min_size=1, max_size=6, unique=True))
    seed = draw(st.integers(0, 2**31 - 1))
    return kind, kernel, stride, padding, dilation, sites, seed


def _module_for(kind, kernel, stride, padding, dilation):
    if kind == "subm":
        return _seeded(snn.SubMConv3d(2, 3, kernel, dilation))
    if kind == "conv":
        return _seeded(snn.SparseConv3d(2, 3, kernel, stride, padding, dilation))
    if kind == "inverse":
        return _seeded(snn.SparseInverseConv3d(2, 3, kernel, stride, padding, dilation))
    return snn.SparseMaxPool3d(kernel, stride, padding, dilation)


def _run(module, kind, x, down):
    if kind != "inverse":
        return module(x)
    return module(down(x), x)


def _by_site(coords, feats):
    """Rows sorted by site (coordinates below 2^16, batch below 2^15: the key is exact)."""
    order = torch.argsort(((coords[:, 0] * 2**16 + coords[:, 1]) * 2**16 + coords[:, 2]) * 2**16 + coords[:, 3])
    return coords[order], feats[order]


def _at_limits(case):
    kind, kernel, stride, padding, dilation, sites, seed = case
    # A window of the grid's high corner, wide enough that no kernel reaches its low faces and
    # starting at a multiple of the stride, so strided output sites translate by start // stride.
    reach = max(d * (k - 1) + p + s for k, s, p, d in zip(kernel, stride, padding, dilation)) + _TOP + 1
    start = []
    for s in stride:
        width = reach
        while (MAX_EXTENT - width) % s:
            width += 1
        start.append(MAX_EXTENT - width)
    widths = tuple(MAX_EXTENT - a for a in start)
    coords = torch.tensor(sites, dtype=torch.int64)
    feats = torch.randn(len(sites), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    full = SparseTensor(feats, coords, (MAX_EXTENT,) * 3, MAX_BATCH)
    small_coords = coords - torch.tensor([0, *start])
    small_coords[:, 0] = (coords[:, 0] > 0).long()
    small = SparseTensor(feats, small_coords, widths, 2)

    module = _module_for(kind, kernel, stride, padding, dilation)
    down = snn.SparseConv3d(2, 2, kernel, stride, padding, dilation).double()
    grid = [(MAX_EXTENT + 2 * p - d * (k - 1) - 1) // s + 1 for k, s, p, d in zip(kernel, stride, padding, dilation)]
    if kind != "subm" and max(grid) > MAX_EXTENT:  # the output grid must fit the key layout too
        event("output grid beyond MAX_EXTENT refused")
        with pytest.raises(ValueError, match=f"exceeds the largest supported extent of {MAX_EXTENT} voxels"):
            (down if kind == "inverse" else module)(full)
        return
    if kind == "inverse":
        _assert_equivalent(module, down(small).detach(), target=small)
    else:
        _assert_equivalent(module, small)
    with torch.no_grad():
        out_full, out_small = _run(module, kind, full, down), _run(module, kind, small, down)
    assert out_full.batch_size == MAX_BATCH and len(out_full) == len(out_small)
    shift = torch.tensor(start) if kind in ("subm", "inverse") else torch.tensor(start) // torch.tensor(stride)
    moved = out_full.coords.clone()
    moved[:, 1:] -= shift
    moved[:, 0] = (moved[:, 0] > 0).long()
    a_coords, a_feats = _by_site(moved, out_full.feats)
    b_coords, b_feats = _by_site(out_small.coords, out_small.feats)
    assert torch.equal(a_coords, b_coords)
    assert torch.allclose(a_feats, b_feats, rtol=1e-12, atol=1e-12)


# -- registration: each property in the fast default profile and the deep slow one ----------------
_PROPERTIES = {
    "sparse_conv3d": (_sparse_conv, dict(
        data=st.data(), kernel=per_axis(1, 4), stride=per_axis(1, 3), padding=per_axis(0, 2),
        dilation=per_axis(1, 3), grouping=channel_groups())),
    "subm_conv3d": (_subm_conv, dict(
        data=st.data(), kernel=per_axis(1, 4), dilation=per_axis(1, 3), grouping=channel_groups())),
    "sparse_conv_transpose3d": (_transposed_conv, dict(
        data=st.data(), kernel=per_axis(1, 3), stride=per_axis(1, 3), padding=per_axis(0, 2),
        dilation=per_axis(1, 2), grouping=channel_groups())),
    "sparse_inverse_conv3d": (_inverse_conv, dict(
        data=st.data(), kernel=per_axis(1, 3), stride=per_axis(1, 3), padding=per_axis(0, 1),
        dilation=per_axis(1, 2), grouping=channel_groups())),
    "pooling": (_pooling, dict(
        data=st.data(), kernel=per_axis(1, 3), stride=st.one_of(st.none(), per_axis(1, 3)),
        padding=per_axis(0, 1), dilation=per_axis(1, 2), average=st.booleans())),
    "limits": (_at_limits, dict(case=limit_cases())),
}

for _name, (_body, _strategies) in _PROPERTIES.items():
    globals()[f"test_{_name}_matches_dense_twin"] = FAST(given(**_strategies)(_body))
    globals()[f"test_{_name}_matches_dense_twin_deep"] = pytest.mark.slow(DEEP(given(**_strategies)(_body)))
