"""The numba CPU backend of the core op equals the torch path (forward and every gradient),
is deterministic, and the ``backend=`` argument is validated."""
import dataclasses

import pytest
import torch

pytest.importorskip("numba")

from sparseconv.engine import backends  # noqa: E402
from sparseconv.engine.core import gather_gemm_scatter  # noqa: E402
from sparseconv.engine.kmap import KernelMapKey  # noqa: E402
from sparseconv.testing import random_sparse_tensor  # noqa: E402

KEYS = {
    "subm_k3": KernelMapKey("submanifold", (3, 3, 3)),
    "conv_k3_s2": KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    "transposed_k3_s2": KernelMapKey("transposed", (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    "conv_k2_s2": KernelMapKey("conv", (2, 2, 2), (2, 2, 2)),  # no identity offset
}
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5)}


def _case(key, groups, c_in, c_out, dtype, seed=0, shape=(9, 9, 9)):
    x = random_sparse_tensor(shape, groups * c_in, batch_size=2, density=0.2, dtype=dtype, seed=seed)
    kmap = x.coordinate_set.kernel_map(key)
    gen = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(kmap.kernel_volume, groups, c_in, c_out, generator=gen, dtype=dtype)
    return x.feats, weight, kmap


def _run(feats, weight, kmap, backend, grad_seed=7):
    feats = feats.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    out = gather_gemm_scatter(feats, weight, kmap, backend=backend)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    grad_feats, grad_weight = torch.autograd.grad(out, (feats, weight), grad)
    return out.detach(), grad_feats, grad_weight


def _assert_close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale)


def test_available_and_supported():
    assert backends.numba_available()
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 4, 4, torch.float32)
    module = backends.numba_backend()
    assert module.supports(feats, weight, kmap)
    assert not module.supports(feats, weight, kmap, torch.ones(kmap.num_pairs))
    assert not module.supports(feats.half(), weight.half(), kmap)
    assert not module.supports(feats, weight, dataclasses.replace(kmap, injective=False))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("key", list(KEYS))
@pytest.mark.parametrize(
    "groups,c_in,c_out",
    # (1, 160, 96): the weight gradient's chunks (rows of 256 channels in 32 KB) are shorter than a
    # (tile, offset) group of pairs, so a group spans several chunks
    [(1, 3, 5), (1, 5, 3), (1, 16, 16), (1, 32, 32), (1, 64, 64), (1, 17, 40), (2, 8, 16), (2, 3, 5), (1, 160, 96)],
)
def test_matches_torch_path(key, groups, c_in, c_out, dtype):
    feats, weight, kmap = _case(KEYS[key], groups, c_in, c_out, dtype)
    for ours, reference in zip(_run(feats, weight, kmap, "numba"), _run(feats, weight, kmap, "torch")):
        _assert_close(ours, reference, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_empty_offsets_and_no_identity(dtype):
    """A conv map cut down to 3 of its 27 offsets (24 empty ones, no identity), and a map of no sites."""
    x = random_sparse_tensor((7, 7, 7), 6, batch_size=1, density=0.1, dtype=dtype, seed=3)
    cmap = x.coordinate_set.kernel_map(KEYS["conv_k3_s2"])
    kept = (0, 13, 26)
    b = cmap.offset_bounds
    keep = torch.zeros(cmap.num_pairs, dtype=torch.bool)
    bounds = [0]
    for k in range(cmap.kernel_volume):
        if k in kept:
            keep[b[k]:b[k + 1]] = True
        bounds.append(bounds[-1] + (b[k + 1] - b[k] if k in kept else 0))
    cut = dataclasses.replace(
        cmap, in_rows=cmap.in_rows[keep], out_rows=cmap.out_rows[keep], offset_bounds=tuple(bounds),
        identity_offset=None,
    )
    assert sum(c == 0 for c in cut.pair_counts()) >= 24 and cut.num_pairs > 0
    weight = torch.randn(27, 1, 6, 20, dtype=dtype)
    for ours, reference in zip(_run(x.feats, weight, cut, "numba"), _run(x.feats, weight, cut, "torch")):
        _assert_close(ours, reference, dtype)

    empty = random_sparse_tensor((5, 5, 5), 6, batch_size=1, density=0.0, dtype=dtype)
    emap = empty.coordinate_set.kernel_map(KEYS["subm_k3"])
    out, grad_feats, grad_weight = _run(empty.feats, weight, emap, "numba")
    assert out.shape == (0, 20) and grad_feats.shape == (0, 6) and not grad_weight.any()


def test_inverse_map():
    x = random_sparse_tensor((9, 9, 9), 8, batch_size=2, density=0.2, dtype=torch.float64)
    kmap = x.coordinate_set.kernel_map(KEYS["conv_k3_s2"]).transpose()
    feats = torch.randn(kmap.num_inputs, 8, dtype=torch.float64)
    weight = torch.randn(27, 1, 8, 16, dtype=torch.float64)
    for ours, reference in zip(_run(feats, weight, kmap, "numba"), _run(feats, weight, kmap, "torch")):
        _assert_close(ours, reference, torch.float64)


@pytest.mark.parametrize("c", [5, 32])
def test_bitwise_deterministic(c):
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, c, c, torch.float32, shape=(12, 12, 12))
    first = _run(feats, weight, kmap, "numba")
    second = _run(feats, weight, kmap, "numba")
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_auto_uses_numba_when_supported():
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 16, 16, torch.float32)
    auto = gather_gemm_scatter(feats, weight, kmap)
    assert torch.equal(auto, gather_gemm_scatter(feats, weight, kmap, backend="numba"))
    # Unsupported (pair weights) falls back to the torch path under "auto".
    pairs = torch.rand(kmap.num_pairs)
    torch.testing.assert_close(
        gather_gemm_scatter(feats, weight, kmap, pairs), gather_gemm_scatter(feats, weight, kmap, pairs, backend="torch"),
        rtol=0, atol=0,
    )


def test_reduced_precision_goes_through_float32():
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 16, 16, torch.float32)
    ours = gather_gemm_scatter(feats.bfloat16(), weight.bfloat16(), kmap, backend="numba")
    reference = gather_gemm_scatter(feats.bfloat16(), weight.bfloat16(), kmap, backend="torch")
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), reference.float(), rtol=1e-2, atol=1e-2)


def test_create_graph_takes_the_torch_backward():
    """With ``create_graph=True`` the numba backend's backward defers to the torch path's, so both
    behave alike (today: the torch path's backward is itself not differentiable and says so)."""
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 3, 4, torch.float64)
    errors = []
    for backend in ("torch", "numba"):
        f, w = feats.clone().requires_grad_(), weight.clone().requires_grad_()
        out = gather_gemm_scatter(f, w, kmap, backend=backend)
        try:
            torch.autograd.grad(out.sum(), (f, w), create_graph=True)
            errors.append(None)
        except RuntimeError as error:
            errors.append(str(error))
    assert errors[0] == errors[1]


def test_backend_argument_errors():
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 4, 4, torch.float32)
    with pytest.raises(ValueError, match="backend must be one of"):
        gather_gemm_scatter(feats, weight, kmap, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        gather_gemm_scatter(feats, weight, kmap, backend=None)
    with pytest.raises(ValueError, match="backend='numba' supports"):
        gather_gemm_scatter(feats, weight, kmap, torch.ones(kmap.num_pairs), backend="numba")
    with pytest.raises(ValueError, match="backend='numba' supports"):
        gather_gemm_scatter(feats, weight, dataclasses.replace(kmap, injective=False), backend="numba")


def test_numba_missing_raises_clearly(monkeypatch):
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 4, 4, torch.float32)
    monkeypatch.setattr(backends, "numba_backend", lambda: None)
    monkeypatch.setattr(backends, "numba_unavailable_reason", lambda: "ImportError: no numba")
    with pytest.raises(RuntimeError, match="backend='numba' needs numba"):
        gather_gemm_scatter(feats, weight, kmap, backend="numba")
    # "auto" quietly takes the torch path.
    assert torch.equal(gather_gemm_scatter(feats, weight, kmap), gather_gemm_scatter(feats, weight, kmap, backend="torch"))


def test_same_bits_whatever_the_thread_count():
    """The weight gradient sums partial gradients of runs of tiles; how many is set by the map, not
    by the thread count, so 1 and 2 threads give the same bits (forward and input gradient too)."""
    from sparseconv.engine.backends import numba_conv

    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 24, 40, torch.float32, shape=(16, 16, 16))
    group_bounds = kmap.transpose().derived(("numba_tiles", numba_conv._TILE), numba_conv._tiles)[2]
    parts = numba_conv._part_tiles(group_bounds, kmap.kernel_volume, weight.numel() * 4)
    assert len(parts) - 1 > 2  # several partial sums
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(_run(feats, weight, kmap, "numba"))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_backward_parts_balance_pairs_and_fit_the_budget():
    import numpy as np

    from sparseconv.engine.backends import numba_conv

    K, num_tiles = 2, 1000
    rng = np.random.default_rng(0)
    pairs_per_group = rng.integers(0, 50, size=num_tiles * K)
    pairs_per_group[:K * 10] = 2000  # a dense corner: the first 10 tiles hold about half the pairs
    group_bounds = np.concatenate(([0], np.cumsum(pairs_per_group)))
    parts = numba_conv._part_tiles(group_bounds, K, weight_bytes=4096)
    assert parts[0] == 0 and parts[-1] == num_tiles and (np.diff(parts) > 0).all()
    assert len(parts) - 1 == numba_conv._MAX_PARTS
    pairs_per_part = np.diff(group_bounds[::K][parts])
    largest_tile = np.diff(group_bounds[::K]).max()
    # each part is within one tile's pairs of an equal share
    assert np.abs(pairs_per_part - group_bounds[-1] / len(pairs_per_part)).max() <= largest_tile

    assert len(numba_conv._part_tiles(group_bounds[: 3 * K + 1], K, 4096)) - 1 == 3  # no more parts than tiles
    big = numba_conv._PARTIALS_BYTES // 3 + 1
    assert len(numba_conv._part_tiles(group_bounds, K, big)) - 1 == 2
    assert len(numba_conv._part_tiles(group_bounds, K, 2 * numba_conv._PARTIALS_BYTES)) - 1 == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_leaves_torch_thread_count_alone(threads):
    """numba's OpenMP layer shares the runtime with torch; a numba call must not change torch's
    thread count (it changes summation order, so a training run would not be reproducible)."""
    feats, weight, kmap = _case(KEYS["subm_k3"], 1, 4, 4, torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        _run(feats, weight, kmap, "numba")
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_tile_order_regroups_every_pair_by_tile_and_offset():
    from sparseconv.engine.backends import numba_conv

    x = random_sparse_tensor((14, 14, 14), 2, batch_size=2, density=0.2, seed=5)
    kmap = x.coordinate_set.kernel_map(KEYS["conv_k3_s2"])
    tiled_in, tiled_out, group_bounds = kmap.derived(("numba_tiles", numba_conv._TILE), numba_conv._tiles)
    assert kmap.num_outputs > 2 * numba_conv._TILE  # several tiles, the last one partial
    K, tile = kmap.kernel_volume, numba_conv._TILE
    seen = []
    for g in range(len(group_bounds) - 1):
        t, k = divmod(g, K)
        lo, hi = int(group_bounds[g]), int(group_bounds[g + 1])
        outs = torch.from_numpy(tiled_out[lo:hi]).long()
        assert ((outs // tile) == t).all()
        ref_in, ref_out = kmap.pairs(k)
        keep = (ref_out // tile) == t
        # the group holds exactly offset k's pairs of tile t, in the map's order
        assert torch.equal(torch.from_numpy(tiled_in[lo:hi]).long(), ref_in[keep])
        assert torch.equal(outs, ref_out[keep])
        seen.append(hi - lo)
    assert sum(seen) == kmap.num_pairs
    # cached on the map: a second ask returns the same arrays
    assert kmap.derived(("numba_tiles", tile), numba_conv._tiles)[0] is tiled_in


def test_non_contiguous_weight():
    """The nn modules hand the core a permuted view of their [out, in, kD, kH, kW] weight."""
    feats, weight, kmap = _case(KEYS["conv_k3_s2"], 1, 6, 10, torch.float64)
    view = weight.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    assert not view.is_contiguous() and torch.equal(view, weight)
    for ours, reference in zip(_run(feats, view, kmap, "numba"), _run(feats, weight, kmap, "torch")):
        _assert_close(ours, reference, torch.float64)


@pytest.mark.parametrize(
    "kernel_size,dilation",
    [((3, 3, 3), (1, 1, 1)), ((5, 3, 1), (1, 2, 3)), ((2, 2, 2), (1, 1, 1)), ((4, 3, 2), (2, 1, 2)), ((1, 1, 1), (1, 1, 1))],
)
@pytest.mark.parametrize("cloud", ["empty", "one site", "two scans"])
def test_submanifold_map_search_equals_the_torch_search(kernel_size, dilation, cloud):
    """The merge-walk search of the numba backend finds the same pairs, in the same order, as the
    torch ``searchsorted`` search; both are what ``_build_submanifold`` may use."""
    from sparseconv.engine.backends import numba_kmap
    from sparseconv.engine.hashing import offset_key
    from sparseconv.engine.kmap.build import _submanifold_pairs_torch

    if cloud == "empty":
        x = random_sparse_tensor((4, 4, 4), 1, batch_size=1, density=0.0)
    elif cloud == "one site":
        x = random_sparse_tensor((1, 1, 1), 1, batch_size=1, density=1.0)
    else:
        x = random_sparse_tensor((10, 11, 12), 1, batch_size=2, density=0.12, seed=4)
    keys, _ = x.coordinate_set.sorted_keys()
    assert keys.numel() == {"empty": 0, "one site": 1}.get(cloud, keys.numel()) and (cloud != "two scans" or keys.numel() > 200)
    kx, ky, kz = kernel_size
    reach = [d * (k - 1) // 2 for k, d in zip(kernel_size, dilation)]
    deltas = [offset_key(tx * dilation[0] - reach[0], ty * dilation[1] - reach[1], -reach[2])
              for tx in range(kx) for ty in range(ky)]
    symmetric = all(k % 2 for k in kernel_size)
    centre = kx * ky * kz // 2 if symmetric else None
    searched = centre if symmetric else kx * ky * kz
    ours = numba_kmap.submanifold_pairs(keys, deltas, kz, dilation[2], searched, centre)
    reference = _submanifold_pairs_torch(keys, deltas, kz, dilation[2], searched, centre)
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])
    assert ours[2] == reference[2] and len(ours[2]) == kx * ky * kz


def test_submanifold_map_without_numba_is_the_same_map(monkeypatch):
    from sparseconv.engine.kmap import build_kernel_map

    x = random_sparse_tensor((9, 9, 9), 1, batch_size=2, density=0.2, seed=6)
    with_numba = build_kernel_map(x.coordinate_set, KEYS["subm_k3"])
    monkeypatch.setattr(backends, "numba_backend", lambda: None)
    without = build_kernel_map(x.coordinate_set, KEYS["subm_k3"])
    assert torch.equal(with_numba.in_rows, without.in_rows) and torch.equal(with_numba.out_rows, without.out_rows)
    assert with_numba.offset_bounds == without.offset_bounds and with_numba.identity_offset == without.identity_offset
