"""Depthwise fast path of the core op; depthwise-separable, spatially separable and flattened convs
against their dense twins (float64, forward and backward)."""
import pytest
import torch

import sparseconv.nn as snn
from sparseconv.engine.core import gather_gemm_scatter
from sparseconv.engine.kmap import KernelMapKey
from sparseconv.nn.functional import sparse_conv3d
from sparseconv.nn.functional.kernels import compose_axis_kernels, embed_kernel, flattened_kernel
from sparseconv.testing import assert_dense_equivalent, random_sparse_tensor


def _depthwise_case(kind="submanifold", stride=(1, 1, 1)):
    x = random_sparse_tensor((6, 5, 6), 6, batch_size=2, density=0.3, seed=3)
    kmap = x.coordinate_set.kernel_map(KernelMapKey(kind, (3, 3, 3), stride))
    weight = torch.randn(kmap.kernel_volume, 6, 1, 1, dtype=torch.float64)
    return x, kmap, weight


@pytest.mark.parametrize("with_pairs", [False, True])
@pytest.mark.parametrize("kind,stride", [("submanifold", (1, 1, 1)), ("conv", (2, 2, 1))])
def test_depthwise_path_equals_the_block_diagonal_gemm(kind, stride, with_pairs):
    x, kmap, weight = _depthwise_case(kind, stride)
    pairs = torch.rand(kmap.num_pairs, dtype=torch.float64) if with_pairs else None
    dense_weight = torch.diag_embed(weight[:, :, 0, 0])[:, None]  # [K, 1, C, C]: the same conv as one GEMM
    inputs = [x.feats.clone().requires_grad_(), weight.clone().requires_grad_()]
    ref_inputs = [x.feats.clone().requires_grad_(), dense_weight.clone().requires_grad_()]
    pair_inputs = [pairs.clone().requires_grad_(), pairs.clone().requires_grad_()] if with_pairs else [None, None]
    out = gather_gemm_scatter(inputs[0], inputs[1], kmap, pair_inputs[0], backend="torch")
    ref = gather_gemm_scatter(ref_inputs[0], ref_inputs[1], kmap, pair_inputs[1], backend="torch")
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [t for t in (inputs[0], inputs[1], pair_inputs[0]) if t is not None], grad)
    want = torch.autograd.grad(ref, [t for t in (ref_inputs[0], ref_inputs[1], pair_inputs[1]) if t is not None], grad)
    assert torch.allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(got[1], torch.diagonal(want[1][:, 0], dim1=1, dim2=2)[:, :, None, None], rtol=1e-12, atol=1e-12)
    if with_pairs:
        assert torch.allclose(got[2], want[2], rtol=1e-12, atol=1e-12)


def test_depthwise_gradcheck_and_numba_agree():
    x, kmap, weight = _depthwise_case()
    feats = x.feats.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda f, ww: gather_gemm_scatter(f, ww, kmap, backend="torch"), (feats, w))
    # numba where installed (its depthwise branch), against the torch path, forward and backward
    results = []
    for backend in ("auto", "torch"):
        f, ww = x.feats.clone().requires_grad_(), weight.clone().requires_grad_()
        out = gather_gemm_scatter(f, ww, kmap, backend=backend)
        results.append((out, *torch.autograd.grad(out, (f, ww), torch.ones_like(out) * torch.arange(6.0).double())))
    for got, want in zip(*results):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("module", [
    lambda: snn.DepthwiseSeparableConv3d(4, 6, 3),
    lambda: snn.DepthwiseSeparableConv3d(4, 5, (3, 2, 3), 2, 1, dilation=(1, 1, 2), submanifold=False, bias=False),
    lambda: snn.SpatiallySeparableConv3d(4, 6, 3),
    lambda: snn.SpatiallySeparableConv3d(4, 6, 3, mid_channels=2, factorised=True),
    lambda: snn.SpatiallySeparableConv3d(3, 4, (3, 5, 1), dilation=(2, 1, 1), bias=False),
    lambda: snn.FlattenedConv3d(4, 6, 3),
    lambda: snn.FlattenedConv3d(4, 6, (3, 1, 5), dilation=(1, 2, 1), factorised=True),
])
def test_separable_modules_equal_their_dense_twins(module):
    torch.manual_seed(0)
    m = module().double()
    x = random_sparse_tensor((7, 6, 8), m.in_channels, batch_size=2, density=0.3, empty_batches=(1,), seed=2)
    assert_dense_equivalent(m, x)
    assert_dense_equivalent(m, random_sparse_tensor((7, 6, 8), m.in_channels, density=0.25, seed=5))


def test_chain_is_not_the_product_kernel_except_where_neighbourhoods_are_full():
    torch.manual_seed(1)
    chain = snn.SpatiallySeparableConv3d(3, 4, 3, bias=False).double()
    product = snn.SpatiallySeparableConv3d(3, 4, 3, bias=False, factorised=True).double()
    product.load_state_dict(chain.state_dict())
    sparse = random_sparse_tensor((6, 6, 6), 3, batch_size=1, density=0.4, seed=7)
    assert (chain(sparse).feats - product(sparse).feats).abs().max() > 1e-3  # paths through empty voxels dropped
    full = random_sparse_tensor((6, 6, 6), 3, batch_size=1, density=1.1, seed=7)  # every voxel active
    interior = (full.coords[:, 1:] >= 2).all(1) & (full.coords[:, 1:] <= 3).all(1)
    assert torch.allclose(chain(full).feats[interior], product(full).feats[interior], rtol=1e-12, atol=1e-12)


def test_kernel_algebra_by_hand():
    wx = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1, 1)
    wy = torch.tensor([1.0, 0.0, -1.0]).view(1, 1, 1, 3, 1)
    wz = torch.tensor([2.0, 1.0, 0.5]).view(1, 1, 1, 1, 3)
    w = compose_axis_kernels(wx, wy, wz)
    assert w.shape == (1, 1, 3, 3, 3) and w[0, 0, 2, 0, 1] == 3.0 * 1.0 * 1.0 and w[0, 0, 1, 2, 0] == 2.0 * -1.0 * 2.0
    flat = flattened_kernel(torch.full((1, 2, 1, 1, 1), 0.5), wx, wy, wz)
    assert flat[0, 1, 2, 0, 1] == 0.5 * 3.0
    embedded = embed_kernel(wx, 3)
    assert embedded[0, 0, :, 1, 1].tolist() == [1.0, 2.0, 3.0] and embedded.abs().sum() == 6.0
    with pytest.raises(ValueError, match="cannot centre a kernel of size 2 inside 3 on axis 0"):
        embed_kernel(torch.ones(1, 1, 2, 1, 1), 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="has stride 1 and 'same' padding"):
        snn.DepthwiseSeparableConv3d(4, 4, 3, stride=2)
    with pytest.raises(ValueError, match="mid_channels must be a positive int"):
        snn.SpatiallySeparableConv3d(4, 4, 3, mid_channels=0)
    x = random_sparse_tensor((4, 4, 4), 3, seed=0)
    with pytest.raises(ValueError, match="expects in_channels=4, input has 3 channels"):
        snn.FlattenedConv3d(4, 4, 3).double()(x)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), ((3, 1, 5), (1, 2, 2)), (2, 2)])
def test_sparse_conv_padding_same_equals_conv3d_same(kernel, dilation):
    torch.manual_seed(0)
    m = snn.SparseConv3d(4, 5, kernel, padding="same", dilation=dilation).double()
    x = random_sparse_tensor((7, 6, 8), 4, batch_size=2, density=0.2, seed=4)
    dense = torch.nn.functional.conv3d(x.dense(), m.weight, m.bias, 1, "same", m.dilation)
    out = m(x)
    assert out.spatial_shape == x.spatial_shape and len(out) > len(x)  # every reached site, not the input sites
    assert_dense_equivalent(m, x)
    c = out.coords
    assert torch.allclose(out.feats, dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], rtol=1e-12, atol=1e-12)
    functional = sparse_conv3d(x, m.weight, m.bias, 1, "same", dilation)
    assert functional.coordinate_set is out.coordinate_set and torch.equal(functional.feats, out.feats)


def test_padding_same_errors():
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1 \(as F.conv3d\), got stride=\(2, 2, 2\)"):
        snn.SparseConv3d(4, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"needs dilation \* \(kernel_size - 1\) even on every axis"):
        snn.SparseConv3d(4, 4, 2, padding="same")
    with pytest.raises(ValueError, match="padding must be an int, a triple of ints or 'same', got 'valid'"):
        snn.SparseConv3d(4, 4, 3, padding="valid")
