"""Module behaviour: PyTorch weight layout, state_dict interchange, composition, bad arguments."""
import copy
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.testing import _same_conv3d, random_sparse_tensor


def _x(channels=4, dtype=torch.float64, seed=0):
    return random_sparse_tensor((8, 7, 9), channels, batch_size=2, density=0.15, dtype=dtype, seed=seed)


def _at(dense, st):
    c = st.coords
    return dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def test_conv3d_state_dict_loads_unchanged():
    dense = nn.Conv3d(4, 6, (3, 2, 1), stride=2, padding=1, dilation=(1, 2, 1), groups=2).double()
    sparse = snn.SparseConv3d(4, 6, (3, 2, 1), stride=2, padding=1, dilation=(1, 2, 1), groups=2).double()
    sparse.load_state_dict(dense.state_dict())
    x = _x()
    y = sparse(x)
    assert torch.allclose(y.feats, _at(dense(x.dense()), y), rtol=1e-12, atol=1e-12)
    assert {k: v.shape for k, v in sparse.state_dict().items()} == {k: v.shape for k, v in dense.state_dict().items()}


def test_conv_transpose3d_state_dict_loads_unchanged():
    dense = nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    sparse = snn.SparseConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    sparse.load_state_dict(dense.state_dict())
    x = _x()
    y = sparse(x)
    assert torch.allclose(y.feats, _at(dense(x.dense()), y), rtol=1e-12, atol=1e-12)


def test_same_padding_twin_is_pytorchs_same_padding():
    m = snn.SubMConv3d(4, 4, (2, 3, 4), dilation=(1, 2, 3)).double()
    d = _x().dense()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = F.conv3d(d, m.weight, m.bias, 1, "same", m.dilation)
    assert torch.allclose(_same_conv3d(d, m), reference, rtol=1e-12, atol=1e-12)


def test_initialisation_matches_torch_scheme():
    torch.manual_seed(5)
    dense = nn.Conv3d(4, 6, 3)
    torch.manual_seed(5)
    sparse = snn.SparseConv3d(4, 6, 3)
    assert torch.equal(dense.weight, sparse.weight) and torch.equal(dense.bias, sparse.bias)


def test_sequential_unet_like_stack_with_inverse_conv():
    torch.manual_seed(0)
    x = _x(channels=3, dtype=torch.float32)
    enc = nn.Sequential(snn.SubMConv3d(3, 8, 3), snn.BatchNorm(8), snn.ReLU())
    down = snn.SparseConv3d(8, 16, 2, stride=2)
    up = snn.SparseInverseConv3d(16, 8, 2, stride=2)
    skip = enc(x)
    y = up(down(skip))
    assert y.coordinate_set is x.coordinate_set
    out = snn.SubMConv3d(16, 2, 1)(y.replace(torch.cat([y.feats, skip.feats], 1)))
    out.feats.sum().backward()
    assert enc[0].weight.grad is not None and enc[0].weight.grad.abs().sum() > 0


def test_feature_wise_modules_equal_their_torch_counterparts():
    x = _x(channels=6, dtype=torch.float32)
    bn, ref = snn.BatchNorm(6), nn.BatchNorm1d(6)
    ref.load_state_dict(bn.state_dict())
    assert torch.allclose(bn(x).feats, ref(x.feats))
    assert torch.allclose(bn.running_mean, ref.running_mean)
    for sparse_cls, torch_cls in [(snn.ReLU, nn.ReLU), (snn.GELU, nn.GELU), (snn.SiLU, nn.SiLU), (snn.Tanh, nn.Tanh)]:
        y = sparse_cls()(x)
        assert y.coordinate_set is x.coordinate_set
        assert torch.equal(y.feats, torch_cls()(x.feats))
    lin = snn.Linear(6, 3)
    assert torch.equal(lin(x).feats, F.linear(x.feats, lin.weight, lin.bias))
    assert torch.equal(snn.ReLU()(x.feats), F.relu(x.feats))
    with pytest.raises(TypeError, match="ReLU expects a SparseTensor or a Tensor"):
        snn.ReLU()([1, 2])


def test_global_pools_reduce_over_active_sites_only():
    x = random_sparse_tensor((5, 5, 5), 3, batch_size=3, density=0.2, empty_batches=(1,), seed=2)
    d = x.dense()
    counts = (d != 0).any(1).flatten(1).sum(1)
    assert torch.allclose(snn.GlobalSumPool()(x), d.flatten(2).sum(2))
    mean = snn.GlobalAvgPool()(x)
    assert torch.allclose(mean[[0, 2]], d.flatten(2).sum(2)[[0, 2]] / counts[[0, 2], None])
    assert torch.equal(mean[1], torch.zeros(3, dtype=torch.float64))
    mx = snn.GlobalMaxPool()(x)
    for b in (0, 2):
        assert torch.equal(mx[b], x.feats[x.coords[:, 0] == b].max(0).values)
    assert torch.equal(mx[1], torch.zeros(3, dtype=torch.float64))


def test_to_dense_module():
    x = _x()
    assert torch.equal(snn.ToDense()(x), x.dense())


def test_extra_repr_names_hyperparameters():
    assert "stride=(2, 2, 2)" in repr(snn.SparseConv3d(4, 8, 3, 2))
    assert "groups=2" in repr(snn.SubMConv3d(4, 8, 3, groups=2))
    assert "bias=False" in repr(snn.SparseConvTranspose3d(4, 8, 3, bias=False))
    assert "inverse" in repr(snn.SparseInverseConv3d(4, 8, 3, 2))


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: snn.SparseConv3d(4, 6, 3, groups=4), ValueError, r"out_channels \(6\) must be divisible by groups \(4\)"),
        (lambda: snn.SparseConv3d(3, 4, 3, groups=2), ValueError, r"in_channels \(3\) must be divisible by groups"),
        (lambda: snn.SparseConv3d(4, 4, 0), ValueError, "kernel_size must be >= 1"),
        (lambda: snn.SparseConv3d(4, 4, 3, stride=0), ValueError, "stride must be >= 1"),
        (lambda: snn.SparseConv3d(4, 4, 3, padding=-1), ValueError, "padding must be >= 0"),
        (lambda: snn.SparseConv3d(4, 4, (3, 3)), ValueError, "kernel_size must have 3 entries"),
        (lambda: snn.SparseConv3d(4, 4, 2.5), ValueError, "kernel_size must be an integer, got 2.5"),
        (lambda: snn.SubMConv3d(4, 4, 3, dilation=0), ValueError, "dilation must be >= 1"),
        (lambda: snn.SparseConvTranspose3d(4, 4, 3, stride=2, output_padding=2), ValueError,
         "output_padding .* must be smaller than stride"),
        (lambda: snn.SparseMaxPool3d(2, padding=2), ValueError, "padding .* must be at most half of kernel_size"),
        (lambda: snn.SparseConv3d(0, 4, 3), ValueError, "in_channels must be a positive int"),
    ],
)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_forward_input():
    x = _x(channels=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="expects in_channels=5, input has 4 channels"):
        snn.SubMConv3d(5, 4, 3)(x)
    with pytest.raises(TypeError, match="expects a SparseTensor"):
        snn.SubMConv3d(4, 4, 3)(x.dense())
    with pytest.raises(TypeError, match="input features are torch.float32 but weight is torch.float64"):
        snn.SubMConv3d(4, 4, 3).double()(x)
    with pytest.raises(ValueError, match="empty output grid"):
        snn.SparseConv3d(4, 4, 9)(x)


def test_inverse_conv_needs_a_matching_strided_conv():
    x = _x(channels=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="no strided conv with kernel_size=.* produced input's coordinates"):
        snn.SparseInverseConv3d(4, 4, 3, 2)(x)
    y = snn.SparseConv3d(4, 4, 3, 2)(x)
    with pytest.raises(ValueError, match="no strided conv with kernel_size=\\(2, 2, 2\\)"):
        snn.SparseInverseConv3d(4, 4, 2, 2)(y)
    other = _x(channels=4, dtype=torch.float32, seed=9)
    with pytest.raises(ValueError, match="not the output of a conv .* applied to target"):
        snn.SparseInverseConv3d(4, 4, 3, 2)(y, other)


def test_modules_pickle_and_deepcopy_without_state_leaks():
    m = nn.Sequential(snn.SubMConv3d(4, 8, 3), snn.BatchNorm(8), snn.ReLU())
    x = _x(channels=4, dtype=torch.float32)
    m.eval()
    y = m(x)
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert torch.equal(clone(x).feats, y.feats)
    x2 = pickle.loads(pickle.dumps(y))
    assert x2.coordinate_set.cached_kernel_maps() == {}
    assert torch.equal(x2.feats, y.feats) and torch.equal(x2.coords, y.coords)
    assert isinstance(x2, SparseTensor)
