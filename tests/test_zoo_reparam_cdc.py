"""ACNet / RepVGG re-parameterisation (fuse == unfused in eval, float64) and central difference
convolution against their dense twins."""
import pytest
import torch

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.nn.functional.kernels import kernel_footprint
from sparseconv.testing import assert_dense_equivalent, random_sparse_tensor


def _randomise_batchnorms(module):
    gen = torch.Generator().manual_seed(4)
    for bn in module.modules():
        if isinstance(bn, snn.BatchNorm):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen, dtype=bn.running_mean.dtype))
            bn.running_var.copy_(torch.rand(n, generator=gen, dtype=bn.running_var.dtype) + 0.5)
            bn.weight.data.copy_(torch.randn(n, generator=gen, dtype=bn.weight.dtype))
            bn.bias.data.copy_(torch.randn(n, generator=gen, dtype=bn.bias.dtype))


BLOCKS = [
    lambda: snn.AsymmetricConv3d(4, 6),
    lambda: snn.AsymmetricConv3d(4, 4, (3, 5, 3), dilation=(1, 1, 2), groups=2),
    lambda: snn.RepVGGBlock3d(4, 4),
    lambda: snn.RepVGGBlock3d(4, 6, groups=2),
    lambda: snn.ReparamConv3d(6, 6, 5, axis_branches=True, pointwise_branch=True, identity_branch=True, groups=3),
]


@pytest.mark.parametrize("make", BLOCKS)
@pytest.mark.parametrize("train", [True, False])
def test_reparam_blocks_equal_their_dense_twins(make, train):
    torch.manual_seed(0)
    block = make().double()
    _randomise_batchnorms(block)
    block.train(train)
    x = random_sparse_tensor((7, 6, 8), block.in_channels, batch_size=2, density=0.3, seed=1)
    assert_dense_equivalent(block, x)


@pytest.mark.parametrize("make", BLOCKS)
def test_fuse_equals_the_block_in_eval(make):
    torch.manual_seed(0)
    block = make().double()
    _randomise_batchnorms(block)
    block.eval()
    fused = block.fuse()
    assert type(fused) is snn.SubMConv3d and fused.bias is not None and fused.weight.dtype == torch.float64
    x = random_sparse_tensor((7, 6, 8), block.in_channels, batch_size=2, density=0.3, seed=2)
    assert torch.allclose(fused(x).feats, block(x).feats, rtol=1e-12, atol=1e-12)
    assert block.training is False and block.cube.conv.weight.requires_grad  # the block itself is unchanged


def test_repvgg_identity_branch_and_bad_arguments():
    assert snn.RepVGGBlock3d(4, 4).identity is not None and snn.RepVGGBlock3d(4, 6).identity is None
    with pytest.raises(ValueError, match="needs an odd kernel_size to fuse its branches"):
        snn.AsymmetricConv3d(4, 4, 2)
    with pytest.raises(ValueError, match="identity_branch needs in_channels == out_channels, got 4 and 6"):
        snn.ReparamConv3d(4, 6, identity_branch=True)


def test_footprints_by_hand():
    assert int(kernel_footprint(3, "full").sum()) == 27
    assert int(kernel_footprint(3, "cross").sum()) == 7
    assert int(kernel_footprint(3, "diagonal").sum()) == 9  # centre + 8 corners
    assert int(kernel_footprint(5, "cross").sum()) == 13
    assert int(kernel_footprint(5, "diagonal").sum()) == 17  # centre + 8 corners at distance 1 and 2
    assert kernel_footprint(3, "cross")[1, 1, 0] and not kernel_footprint(3, "cross")[0, 1, 0]
    with pytest.raises(ValueError, match="footprint must be one of"):
        kernel_footprint(3, "ring")
    with pytest.raises(ValueError, match="needs an odd kernel_size"):
        kernel_footprint((3, 2, 3), "cross")


@pytest.mark.parametrize("kwargs", [
    dict(theta=0.7),
    dict(theta=1.0, footprint="cross", bias=True),
    dict(theta=0.5, footprint="diagonal", groups=2, dilation=(1, 2, 1)),
    dict(theta=0.7, stride=2, padding=1, submanifold=False),
    dict(theta=0.3, stride=(1, 2, 2), padding=(1, 0, 1), footprint="cross", submanifold=False, bias=True),
])
def test_cdc_equals_dense_cdc_on_the_zero_filled_grid(kwargs):
    torch.manual_seed(0)
    m = snn.CentralDifferenceConv3d(4, 6, 3, **kwargs).double()
    x = random_sparse_tensor((7, 6, 8), 4, batch_size=2, density=0.3, empty_batches=(1,), seed=3)
    report = assert_dense_equivalent(m, x)
    assert report.gradient_errors.keys() >= {"input", "weight"}


def test_cdc_sums_over_every_tap_not_only_active_neighbours():
    # one active voxel, no neighbours: y = w_c x - theta x sum(w), by hand
    m = snn.CentralDifferenceConv3d(1, 1, 3, theta=0.5).double()
    st = SparseTensor(torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[0, 1, 1, 1]]), (3, 3, 3), 1)
    w = m.weight.detach()[0, 0]
    expected = 2.0 * w[1, 1, 1] - 0.5 * 2.0 * w.sum()
    assert torch.allclose(m(st).feats[0, 0], expected, rtol=1e-12)
    plain = snn.CentralDifferenceConv3d(1, 1, 3, theta=0.0).double()
    plain.weight.data.copy_(m.weight.data)
    assert torch.allclose(plain(st).feats[0, 0], 2.0 * w[1, 1, 1], rtol=1e-12)


def test_cdc_bad_arguments():
    with pytest.raises(ValueError, match="theta must be a finite number"):
        snn.CentralDifferenceConv3d(4, 4, 3, theta=float("nan"))
    with pytest.raises(ValueError, match="needs an odd kernel_size"):
        snn.CentralDifferenceConv3d(4, 4, 2)
    with pytest.raises(ValueError, match="footprint must be one of"):
        snn.CentralDifferenceConv3d(4, 4, 3, footprint="ring")
    with pytest.raises(ValueError, match="has stride 1 and 'same' padding"):
        snn.CentralDifferenceConv3d(4, 4, 3, stride=2)
