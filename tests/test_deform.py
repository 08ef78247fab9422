"""Deformable sparse convolution: equal to a plain dense deformable convolution (grid_sample
based, in sparseconv.testing) at the active sites, forward and backward, for random offsets that
land between voxels, outside the grid and on empty voxels; the plain conv when offsets are zero."""
import pytest
import torch
import torch.nn.functional as F

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.nn.functional.deform import _base_positions, deform_geometry, sparse_deform_conv3d
from sparseconv.engine.hashing import pack_coords
from sparseconv.testing import (
    check_dense_equivalence,
    deform_dense_twin,
    dense_deform_conv3d,
    random_sparse_tensor,
    sites_to_dense,
)

SHAPE = (6, 7, 5)


def _input(channels=4, seed=1, dtype=torch.float64, empty=()):
    return random_sparse_tensor(
        SHAPE, channels, batch_size=2, density=0.25, empty_batches=empty, dtype=dtype, seed=seed
    )


def _random_offsets(rows, columns, seed, far=True):
    """Integer part in [-2, 2] (some rows +-7: off the grid), fractional part in [0.1, 0.9]:
    between voxels and away from the kink of trilinear interpolation at integers."""
    gen = torch.Generator().manual_seed(seed)
    whole = torch.randint(-2, 3, (rows, columns), generator=gen).double()
    if far:
        whole[::5] += 7 * torch.sign(torch.randn(whole[::5].shape, generator=gen))
    return whole + 0.1 + 0.8 * torch.rand(rows, columns, generator=gen, dtype=torch.float64)


def _at(dense, coords):
    return dense[coords[:, 0], :, coords[:, 1], coords[:, 2], coords[:, 3]]


# -- the dense reference itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation,groups",
    [(3, 1, 1, 1, 1), (3, 2, 1, 1, 2), ((3, 2, 1), (1, 2, 3), (1, 0, 1), (1, 2, 1), 2), (2, 1, "same", 1, 1),
     (3, 1, "same", 2, 4)],
)
def test_dense_reference_with_zero_offsets_is_conv3d(kernel, stride, padding, dilation, groups):
    torch.manual_seed(0)
    x = torch.randn(2, 4, *SHAPE, dtype=torch.float64)
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    w = torch.randn(8, 4 // groups, *k, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64)
    if padding == "same":
        pads = []
        for kk, d in reversed(list(zip(k, (dilation,) * 3))):
            pads += [d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2]
        expected = F.conv3d(F.pad(x, pads), w, b, 1, 0, dilation, groups)
    else:
        expected = F.conv3d(x, w, b, stride, padding, dilation, groups)
    volume = k[0] * k[1] * k[2]
    zeros = torch.zeros(2, 2 * volume * 3, *expected.shape[2:], dtype=torch.float64)
    ones = torch.ones(2, 2 * volume, *expected.shape[2:], dtype=torch.float64)
    out = dense_deform_conv3d(x, zeros, w, b, stride, padding, dilation, groups, 2, ones)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_dense_reference_samples_trilinearly_with_zero_outside():
    """One voxel, one tap (k=1): the output is the trilinear weight of that voxel at the position."""
    x = torch.zeros(1, 1, 3, 3, 3, dtype=torch.float64)
    x[0, 0, 1, 1, 1] = 1.0
    w = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    offsets = torch.zeros(1, 3, 3, 3, 3, dtype=torch.float64)
    offsets[0, :, 0, 0, 0] = torch.tensor([0.75, 0.5, 1.25])  # site (0,0,0) samples (0.75, 0.5, 1.25)
    offsets[0, :, 2, 2, 2] = torch.tensor([-3.5, 0.0, 0.0])  # site (2,2,2) samples outside the grid
    out = dense_deform_conv3d(x, offsets, w)
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(0.75 * 0.5 * 0.75)
    assert out[0, 0, 2, 2, 2].item() == 0.0


# -- sparse == dense ----------------------------------------------------------------------------

CASES = [
    # submanifold, kernel, stride, padding, dilation, groups, offset_groups, modulated, in, out
    (True, 3, 1, 0, 1, 1, 1, True, 4, 6),
    (True, (3, 2, 1), 1, 0, 1, 2, 2, False, 4, 6),
    (True, 3, 1, 0, 2, 1, 2, True, 4, 4),
    (True, 2, 1, 0, 1, 2, 1, True, 4, 6),
    (False, 3, 2, 1, 1, 1, 1, True, 4, 6),
    (False, 3, 2, 1, 1, 2, 2, True, 4, 6),
    (False, (2, 3, 2), (2, 1, 2), (0, 1, 1), 1, 1, 2, False, 4, 6),
    (False, 3, 1, 1, 1, 2, 4, True, 4, 6),
    (True, 3, 1, 0, 1, 3, 2, True, 6, 6),  # offset groups cut conv groups
]


def _case_id(case):
    sub, k, s, p, d, g, og, mod = case[:8]
    return f"{'subm' if sub else 'strided'}-k{k}-s{s}-d{d}-g{g}-og{og}-{'v2' if mod else 'v1'}".replace(" ", "")


@pytest.mark.parametrize("index,case", [pytest.param(i, c, id=_case_id(c)) for i, c in enumerate(CASES)])
def test_sparse_matches_dense_deform_conv3d_forward_and_backward(index, case):
    submanifold, kernel, stride, padding, dilation, groups, offset_groups, modulated, cin, cout = case
    x = _input(cin, seed=index, empty=(1,) if index == 3 else ())
    torch.manual_seed(index)
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    volume = k[0] * k[1] * k[2]
    weight = torch.randn(cout, cin // groups, *k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    key, out_set = deform_geometry(x, k, stride, padding, dilation, submanifold)
    n_out = len(out_set)
    offsets = _random_offsets(n_out, offset_groups * volume * 3, seed=index).requires_grad_()
    masks = torch.rand(n_out, offset_groups * volume, dtype=torch.float64, requires_grad=True) if modulated else None

    # the offsets do what the test claims: between voxels, off the grid, onto empty voxels
    positions = _base_positions(key, out_set)[:, None] + offsets.detach().view(n_out, offset_groups, volume, 3)
    extent = torch.tensor(SHAPE, dtype=torch.float64)
    outside = ((positions <= -1) | (positions >= extent)).any(-1)
    assert outside.any() and (~outside).any()
    inside = positions[~outside].floor().long().clamp(min=0)  # a corner of each in-grid position
    inside = torch.minimum(inside, torch.tensor(SHAPE) - 1)
    batch = out_set.coords[:, None, None, :1].expand(*positions.shape[:3], 1)[~outside]
    hits = x.coordinate_set.hash_table.query(pack_coords(torch.cat((batch, inside), 1)))
    assert (hits < 0).any() and (hits >= 0).any()  # some corners are empty voxels, some active

    feats = x.feats.clone().requires_grad_()
    out = sparse_deform_conv3d(
        x.replace(feats), offsets, weight, bias, masks, stride, padding, dilation, groups, offset_groups, submanifold
    )
    c = out.coords
    assert out.coordinate_set is out_set
    dense_in = x.dense().detach().requires_grad_()
    dense_offsets = sites_to_dense(offsets, c, x.batch_size, out_set.spatial_shape)
    dense_masks = None if masks is None else sites_to_dense(masks, c, x.batch_size, out_set.spatial_shape)
    dense_out = dense_deform_conv3d(
        dense_in, dense_offsets, weight, bias, stride, "same" if submanifold else padding, dilation, groups,
        offset_groups, dense_masks,
    )
    assert tuple(dense_out.shape[2:]) == out.spatial_shape
    reference = _at(dense_out, c)
    torch.testing.assert_close(out.feats, reference, rtol=1e-10, atol=1e-10)

    grad = torch.randn_like(reference)
    sparse_inputs = [feats, weight, bias, offsets] + ([masks] if modulated else [])
    dense_inputs = [dense_in, weight, bias, offsets] + ([masks] if modulated else [])
    sparse_grads = torch.autograd.grad(out.feats, sparse_inputs, grad)
    dense_grads = list(torch.autograd.grad(reference, dense_inputs, grad))
    dense_grads[0] = _at(dense_grads[0], x.coords)
    for name, s, d in zip(["feats", "weight", "bias", "offsets", "masks"], sparse_grads, dense_grads):
        torch.testing.assert_close(s, d, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")
    assert sparse_grads[3].abs().sum() > 0


def test_gradcheck_float64():
    x = random_sparse_tensor((3, 4, 3), 2, batch_size=2, density=0.35, seed=5)
    key, out_set = deform_geometry(x, (2, 2, 1), submanifold=True)
    n = len(out_set)
    offsets = _random_offsets(n, 2 * 4 * 3, seed=3, far=False).requires_grad_()
    masks = torch.rand(n, 2 * 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 2, 2, 1, dtype=torch.float64, requires_grad=True)
    feats = x.feats.clone().requires_grad_()

    def fn(f, w, o, m):
        return sparse_deform_conv3d(x.replace(f), o, w, None, m, offset_groups=2, submanifold=True).feats

    assert torch.autograd.gradcheck(fn, (feats, weight, offsets, masks))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("submanifold", [True, False])
def test_zero_offsets_and_unit_masks_equal_the_plain_conv(submanifold, dtype):
    x = _input(4, seed=7, dtype=dtype)
    torch.manual_seed(0)
    if submanifold:
        plain = snn.SubMConv3d(4, 8, 3, groups=2).to(dtype)
        kwargs = dict(groups=2, submanifold=True)
    else:
        plain = snn.SparseConv3d(4, 8, 3, 2, 1, groups=2).to(dtype)
        kwargs = dict(stride=2, padding=1, groups=2)
    expected = plain(x)
    n = len(expected)
    for offset_groups in (1, 2):
        zeros = torch.zeros(n, offset_groups * 27 * 3, dtype=dtype)
        ones = torch.ones(n, offset_groups * 27, dtype=dtype)
        for needs_grad in (False, True):  # both the pruned and the full corner map
            offsets = zeros.clone().requires_grad_(needs_grad)
            out = sparse_deform_conv3d(
                x, offsets, plain.weight, plain.bias, ones, offset_groups=offset_groups, **kwargs
            )
            assert out.coordinate_set is expected.coordinate_set
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(out.feats, expected.feats, rtol=tol, atol=tol)


# -- the module ---------------------------------------------------------------------------------


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("submanifold", [True, False])
def test_fresh_module_is_the_plain_conv(submanifold, modulated):
    """Zero-initialised offset predictor: v1 is the plain conv; v2 the plain conv with masks 1/2."""
    x = _input(4, seed=2)
    torch.manual_seed(0)
    if submanifold:
        deform = snn.SubMDeformConv3d(4, 6, 3, modulated=modulated).double()
        plain = snn.SubMConv3d(4, 6, 3).double()
    else:
        deform = snn.SparseDeformConv3d(4, 6, 3, 2, 1, modulated=modulated).double()
        plain = snn.SparseConv3d(4, 6, 3, 2, 1).double()
    scale = 0.5 if modulated else 1.0
    with torch.no_grad():
        plain.weight.copy_(deform.weight * scale)
        plain.bias.copy_(deform.bias)
    torch.testing.assert_close(deform(x).feats, plain(x).feats, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [dict(submanifold=True), dict(submanifold=True, offset_groups=2, groups=2, modulated=False),
     dict(stride=2, padding=1), dict(stride=(2, 1, 2), padding=1, offset_groups=4, groups=2, dilation=(1, 2, 1))],
    ids=["subm-v2", "subm-v1-og2-g2", "strided-v2", "strided-og4-g2-dilated"],
)
def test_module_matches_its_dense_twin_including_the_offset_predictor(kwargs):
    x = _input(4, seed=3)
    torch.manual_seed(1)
    module = snn.SparseDeformConv3d(4, 6, 3, **kwargs).double()
    torch.nn.init.normal_(module.offset_conv.weight, std=0.3)  # non-integer offsets
    torch.nn.init.normal_(module.offset_conv.bias, std=0.5)
    fn, sites = deform_dense_twin(module, x)
    report = check_dense_equivalence(module, x, dense_fn=fn, expected_sites=sites, rtol=1e-9)
    assert report.passed, report.failures
    assert set(report.gradient_errors) == {"input", "weight", "bias", "offset_conv.weight", "offset_conv.bias"}
    # gradients do reach the offset/mask predictor
    module.zero_grad()
    module(x).feats.square().sum().backward()
    assert module.offset_conv.weight.grad.abs().sum() > 0


def test_module_float32_and_no_grad_pruning_agree():
    x = _input(8, seed=4, dtype=torch.float32)
    torch.manual_seed(2)
    module = snn.SubMDeformConv3d(8, 8, 3, offset_groups=2)
    torch.nn.init.normal_(module.offset_conv.weight, std=0.2)
    with torch.no_grad():
        pruned = module(x).feats
    full = module(x).feats
    torch.testing.assert_close(pruned, full.detach(), rtol=1e-5, atol=1e-5)
    assert "offset_groups=2" in repr(module) and "submanifold" in repr(module)


def test_permuted_input_rows():
    """Coordinates need not be sorted: the hash finds corners by key."""
    x = _input(4, seed=6)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    shuffled = SparseTensor(x.feats[perm], x.coords[perm], x.spatial_shape, x.batch_size)
    torch.manual_seed(3)
    module = snn.SubMDeformConv3d(4, 4, 3).double()
    torch.nn.init.normal_(module.offset_conv.weight, std=0.3)
    torch.testing.assert_close(module(shuffled).feats, module(x).feats[perm], rtol=1e-12, atol=1e-12)


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors():
    x = _input(4, seed=1)
    n = len(x)
    w = torch.randn(6, 4, 3, 3, 3, dtype=torch.float64)
    good = torch.zeros(n, 27 * 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"offsets must have shape \[N_out=%d, offset_groups\*K\*3=81\]" % n):
        sparse_deform_conv3d(x, good[:, :-1], w, submanifold=True)
    with pytest.raises(ValueError, match=r"offsets must have shape .*got \(%d, 81\)" % (n - 1)):
        sparse_deform_conv3d(x, good[1:], w, submanifold=True)
    with pytest.raises(ValueError, match=r"offsets must have shape \[N_out=%d, offset_groups\*K\*3=162\]" % n):
        sparse_deform_conv3d(x, good, w, offset_groups=2, submanifold=True)
    with pytest.raises(ValueError, match=r"masks must have shape \[N_out=%d, offset_groups\*K=27\]" % n):
        sparse_deform_conv3d(x, good, w, masks=torch.ones(n, 26, dtype=torch.float64), submanifold=True)
    with pytest.raises(TypeError, match="offsets dtype torch.float32 does not match"):
        sparse_deform_conv3d(x, good.float(), w, submanifold=True)
    with pytest.raises(ValueError, match=r"in_channels \(4\) must be divisible by offset_groups \(3\)"):
        sparse_deform_conv3d(x, good, w, offset_groups=3, submanifold=True)
    with pytest.raises(ValueError, match=r"in_channels \(4\) must be divisible by offset_groups \(3\)"):
        snn.SparseDeformConv3d(4, 6, 3, offset_groups=3)
    with pytest.raises(ValueError, match="offset_groups must be a positive int"):
        snn.SparseDeformConv3d(4, 6, 3, offset_groups=0)
    with pytest.raises(ValueError, match="submanifold deformable convolution has stride 1"):
        snn.SparseDeformConv3d(4, 6, 3, stride=2, submanifold=True)
    with pytest.raises(ValueError, match="submanifold deformable convolution has stride 1"):
        sparse_deform_conv3d(x, good, w, stride=2, submanifold=True)
    with pytest.raises(ValueError, match="expects in_channels=4, input has 6 channels"):
        snn.SubMDeformConv3d(4, 6, 3)(_input(6))


@pytest.mark.parametrize("submanifold", [True, False])
def test_empty_input(submanifold):
    x = SparseTensor(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.long), SHAPE, 2)
    module = snn.SparseDeformConv3d(4, 6, 3, *((1, 0) if submanifold else (2, 1)), submanifold=submanifold).double()
    out = module(x)
    assert out.feats.shape == (0, 6)
    out.feats.sum().backward()
