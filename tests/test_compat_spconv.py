"""spconv 2.x compatibility layer: layout, semantics, indice_key registry, misuse errors,
conversion to and from native modules, whole networks against native twins, the import shim,
and (when the real spconv is installed) layer-by-layer agreement with spconv itself."""
import os
import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.compat import is_spconv_shim
from sparseconv.compat import spconv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _input(shape=(9, 8, 7), channels=3, batch=2, density=0.2, seed=0, dtype=torch.float64, shuffle=True):
    """A SparseConvTensor with int32 indices in shuffled row order (spconv inputs come unsorted)."""
    gen = torch.Generator().manual_seed(seed)
    active = torch.rand((batch, *shape), generator=gen) < density
    indices = active.nonzero().to(torch.int32)
    if shuffle:
        indices = indices[torch.randperm(indices.shape[0], generator=gen)]
    feats = torch.randn(indices.shape[0], channels, generator=gen, dtype=dtype)
    return spconv.SparseConvTensor(feats, indices, list(shape), batch)


def _at(dense, x):
    """Rows of a dense [B, C, *spatial] tensor at x's indices."""
    i = x.indices.long()
    return dense[(i[:, 0], slice(None), *i[:, 1:].unbind(1))]


def _weight_as_torch(w):
    """spconv [O, *k, I] -> nn.Conv layout [O, I, *k]."""
    return w.permute(0, w.dim() - 1, *range(1, w.dim() - 1))


def _seeded(module, seed=0):
    torch.manual_seed(seed)
    for p in module.parameters():
        with torch.no_grad():
            p.normal_(0, 0.3)
    return module.double()


# -- SparseConvTensor ----------------------------------------------------------------------------
def test_dense_is_spconvs_batch_channel_spatial_layout():
    x = _input()
    d = x.dense()
    assert d.shape == (2, 3, 9, 8, 7) and d.is_contiguous()
    assert torch.equal(_at(d, x), x.features)
    assert int((d != 0).any(1).sum()) == x.indices.shape[0]
    last = x.dense(channels_first=False)
    assert last.shape == (2, 9, 8, 7, 3) and torch.equal(last.permute(0, 4, 1, 2, 3), d)
    back = spconv.SparseConvTensor.from_dense(last)
    assert torch.equal(back.dense(), d) and back.indices.dtype == torch.int32
    # differentiable, and 2-D tensors give [B, C, H, W]
    f = x.features.clone().requires_grad_()
    x.replace_feature(f).dense().sum().backward()
    assert torch.equal(f.grad, torch.ones_like(f))
    idx2 = x.indices[:, [0, 2, 3]].unique(dim=0)
    x2 = spconv.SparseConvTensor(torch.randn(idx2.shape[0], 3, dtype=torch.float64), idx2, [8, 7], 2)
    assert x2.dense().shape == (2, 3, 8, 7) and torch.equal(_at(x2.dense(), x2), x2.features)


def test_replace_feature_shares_sites_and_registry_and_features_is_read_only():
    x = _input()
    y = spconv.SubMConv3d(3, 4, 3, indice_key="k").double()(x)
    z = y.replace_feature(y.features * 2)
    assert z.indices is y.indices and z.spatial_shape == y.spatial_shape and z.indice_dict is y.indice_dict
    assert z._coordinate_set() is y._coordinate_set()
    with pytest.raises(ValueError, match="replace_feature"):
        z.features = torch.zeros(3)
    assert torch.equal((y + z).features, y.features * 3)
    with pytest.raises(ValueError, match="different sites"):
        y + spconv.SparseConvTensor(y.features, x.indices.flip(0), x.spatial_shape, 2)


def test_constructor_accepts_what_model_code_passes():
    import numpy as np

    x = _input()
    for shape in (np.array([9, 8, 7], dtype=np.int64), torch.tensor([9, 8, 7]), (9, 8, 7)):
        y = spconv.SparseConvTensor(x.features, x.indices.long(), shape, np.int64(2))
        assert y.spatial_shape == [9, 8, 7] and y.batch_size == 2 and torch.equal(y.dense(), x.dense())
    assert torch.equal(x.minus().features, -x.features) and x.shadow_copy().indices is x.indices
    native = x.to_sparse_tensor()
    assert torch.equal(native.coords, x.indices.long()) and native.spatial_shape == (9, 8, 7)
    wrapped = spconv.SparseConvTensor.from_sparse_tensor(native)
    assert torch.equal(wrapped.indices, x.indices) and wrapped._coordinate_set() is native.coordinate_set
    with pytest.raises(ValueError, match="spatial_shape must have 3 entries"):
        spconv.SparseConvTensor(x.features, x.indices, [9, 8], 2)
    with pytest.raises(TypeError, match="integer"):
        spconv.SparseConvTensor(x.features, x.indices.float(), [9, 8, 7], 2)
    with pytest.raises(NotImplementedError, match="4-D"):
        spconv.SparseConvTensor(x.features, torch.zeros(1, 5, dtype=torch.int32), [2, 2, 2, 2], 1)


def test_assigning_or_mutating_indices_rebuilds_the_coordinate_set():
    x = _input()
    first = x._coordinate_set()
    assert x._coordinate_set() is first
    x.indices[:, 1:] *= 1  # in-place op bumps the tensor version
    assert x._coordinate_set() is not first
    x.indices = x.indices.flip(0)
    assert torch.equal(x._coordinate_set().coords, x.indices.long())
    bad = spconv.SparseConvTensor(x.features, x.indices.clone(), [9, 8, 7], 2)
    bad.indices[1] = bad.indices[0]
    with pytest.raises(ValueError, match="duplicate"):
        bad.dense()
    outside = spconv.SparseConvTensor(x.features, x.indices, [4, 8, 7], 2)
    with pytest.raises(ValueError, match="outside spatial_shape"):
        spconv.SubMConv3d(3, 3, 3).double()(outside)


# -- layer semantics against dense PyTorch ---------------------------------------------------------
@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), ((5, 3, 1), 1), ((3, 5, 3), (2, 1, 1))])
def test_subm_is_centred_conv3d_at_the_input_sites(kernel, dilation):
    x = _input()
    m = _seeded(spconv.SubMConv3d(3, 4, kernel, dilation=dilation, padding=1))
    y = m(x)
    pad = [d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation)]
    ref = F.conv3d(x.dense(), _weight_as_torch(m.weight), m.bias, 1, pad, m.dilation)
    assert y.indices is x.indices and y.spatial_shape == x.spatial_shape
    assert torch.allclose(y.features, _at(ref, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation", [(3, 2, 1, 1), (2, 2, 0, 1), ((3, 1, 1), (2, 1, 1), 0, 1), (3, 1, 1, 2), (3, 2, (0, 1, 1), 1)]
)
def test_sparse_conv_is_conv3d_at_every_reachable_site(kernel, stride, padding, dilation):
    x = _input()
    m = _seeded(spconv.SparseConv3d(3, 5, kernel, stride, padding, dilation))
    y = m(x)
    ref = F.conv3d(x.dense(), _weight_as_torch(m.weight), m.bias, m.stride, m.padding, m.dilation)
    reach = F.conv3d((x.dense() != 0).any(1, keepdim=True).double(), torch.ones(1, 1, *m.kernel_size,
                     dtype=torch.float64), None, m.stride, m.padding, m.dilation)[:, 0] > 0
    assert y.spatial_shape == list(ref.shape[2:]) and y.indices.dtype == torch.int32
    assert y.indices.shape[0] == int(reach.sum())
    assert torch.allclose(y.features, _at(ref, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 0), (2, 2, 0), (3, 2, 1), ((3, 2, 1), (1, 2, 2), 0)])
def test_transposed_is_conv_transpose3d_with_the_krsc_weight(kernel, stride, padding):
    x = _input()
    m = _seeded(spconv.SparseConvTranspose3d(3, 4, kernel, stride, padding))
    y = m(x)
    ref = F.conv_transpose3d(x.dense(), m.weight.permute(4, 0, 1, 2, 3), m.bias, m.stride, m.padding)
    assert y.spatial_shape == list(ref.shape[2:])
    assert torch.allclose(y.features, _at(ref, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (2, 2, 0), (3, 2, 0)])
def test_inverse_conv_returns_to_the_strided_convs_input_sites(kernel, stride, padding):
    x = _input()
    down = _seeded(spconv.SparseConv3d(3, 5, kernel, stride, padding, indice_key="down"))
    up = _seeded(spconv.SparseInverseConv3d(5, 2, kernel, indice_key="down"), 1)
    z = spconv.SubMConv3d(5, 5, 3, indice_key="mid").double()(down(x))  # sites kept in between
    y = up(z)
    assert y.indices is x.indices and y.spatial_shape == x.spatial_shape
    k, s, p = down.kernel_size, down.stride, down.padding
    out_pad = [n - ((m - 1) * s_ + k_ - 2 * p_) for n, m, s_, k_, p_ in zip(x.spatial_shape, z.spatial_shape, s, k, p)]
    ref = F.conv_transpose3d(z.dense(), up.weight.permute(4, 0, 1, 2, 3), up.bias, s, p, out_pad)
    assert torch.allclose(y.features, _at(ref, y), rtol=1e-12, atol=1e-12)


def test_kernel_one_layers_multiply_by_weight_viewed_as_in_by_out_like_spconv():
    x = _input()
    for layer in (spconv.SubMConv3d(3, 5, 1), spconv.SparseConv3d(3, 5, 1), spconv.SparseConvTranspose3d(3, 5, 1)):
        m = _seeded(layer)
        y = m(x)
        assert y.indices is x.indices
        assert torch.allclose(y.features, x.features @ m.weight.reshape(3, 5) + m.bias, rtol=1e-12, atol=1e-12)
    strided = _seeded(spconv.SparseConv3d(3, 5, 1, stride=2))  # not the 1x1 path: a true strided conv
    ref = F.conv3d(x.dense(), _weight_as_torch(strided.weight), strided.bias, 2)
    y = strided(x)
    assert torch.allclose(y.features, _at(ref, y), rtol=1e-12, atol=1e-12)


def test_groups_extension_matches_grouped_conv3d():
    x = _input(channels=4)
    m = _seeded(spconv.SparseConv3d(4, 6, 3, 2, 1, groups=2))
    assert m.weight.shape == (6, 3, 3, 3, 2)
    y = m(x)
    ref = F.conv3d(x.dense(), _weight_as_torch(m.weight), m.bias, 2, 1, groups=2)
    assert torch.allclose(y.features, _at(ref, y), rtol=1e-12, atol=1e-12)


def test_2d_and_1d_layers_run_as_lifted_3d():
    x3 = _input(shape=(1, 9, 8))
    x = spconv.SparseConvTensor(x3.features, x3.indices[:, [0, 2, 3]], [9, 8], 2)
    m = _seeded(spconv.SparseConv2d(3, 4, 3, 2, 1, indice_key="d"))
    y = m(x)
    ref = F.conv2d(x.dense(), _weight_as_torch(m.weight), m.bias, 2, 1)
    assert y.indices.shape[1] == 3 and y.spatial_shape == list(ref.shape[2:])
    assert torch.allclose(y.dense(), ref * (y.dense() != 0).any(1, keepdim=True), rtol=1e-12, atol=1e-12)
    back = _seeded(spconv.SparseInverseConv2d(4, 3, 3, indice_key="d"))(y)
    assert back.indices is x.indices
    sub = _seeded(spconv.SubMConv2d(3, 2, 3))
    ref = F.conv2d(x.dense(), _weight_as_torch(sub.weight), sub.bias, 1, 1)
    assert torch.allclose(sub(x).features, _at(ref, x), rtol=1e-12, atol=1e-12)
    x1 = spconv.SparseConvTensor(x3.features[:5], torch.tensor([[0, 1], [0, 3], [1, 0], [1, 2], [0, 4]], dtype=torch.int32), [6], 2)
    m1 = _seeded(spconv.SparseConv1d(3, 2, 3, 1, 1))
    ref = F.conv1d(x1.dense(), _weight_as_torch(m1.weight), m1.bias, 1, 1)
    y1 = m1(x1)
    assert torch.allclose(y1.features, _at(ref, y1), rtol=1e-12, atol=1e-12)


def test_max_pool_starts_from_zero_like_spconv():
    x = _input(density=0.5)
    y = spconv.SparseMaxPool3d(2)(x)  # stride defaults to kernel_size
    assert y.spatial_shape == [4, 4, 3]
    native = snn.SparseMaxPool3d(2)(x.to_sparse_tensor())
    assert torch.equal(y.features, native.feats.clamp(min=0))
    assert bool((native.feats < 0).any())  # the case where the two definitions differ is exercised
    dense = F.max_pool3d(x.dense(), 2)  # zero-filled grid: the same definition where windows have holes
    assert torch.equal(y.features, _at(dense, y).clamp(min=0))


def test_avg_pool_divides_by_the_active_inputs_and_global_pools():
    x = _input(density=0.3)
    y = spconv.SparseAvgPool3d(2, 2)(x)
    d = x.dense()
    counts = F.avg_pool3d((d != 0).any(1, keepdim=True).double(), 2) * 8
    ref = F.avg_pool3d(d, 2) * 8 / counts.clamp(min=1)
    assert torch.allclose(y.features, _at(ref, y), rtol=1e-12, atol=1e-12)
    b = x.indices[:, 0].long()
    assert torch.equal(spconv.SparseGlobalMaxPool()(x), torch.stack([x.features[b == i].max(0).values for i in (0, 1)]))
    assert torch.allclose(spconv.SparseGlobalAvgPool()(x), torch.stack([x.features[b == i].mean(0) for i in (0, 1)]))


def test_sequential_feeds_features_to_torch_modules():
    x = _input()
    seq = spconv.SparseSequential(
        spconv.SubMConv3d(3, 4, 3, indice_key="a"), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2),
        spconv.SparseReLU(), spconv.ToDense(),
    ).double()
    conv, bn, relu, lin = seq[0], seq[1], seq[2], seq[3]
    out = seq(x)
    ref = lin(relu(bn(conv(x).features))).relu()
    assert torch.allclose(_at(out, x), ref, rtol=1e-12, atol=1e-12)
    assert len(seq) == 6 and isinstance(seq[-1], spconv.ToDense) and len(seq[:2]) == 2
    empty = spconv.SparseConvTensor(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.int32), [4, 4, 4], 1)
    assert spconv.SparseSequential(spconv.SubMConv3d(3, 4, 3), nn.BatchNorm1d(4)).double()(empty).features.shape == (0, 4)


def test_tables_and_sparse_add():
    x = _input()
    a = spconv.SubMConv3d(3, 4, 3, indice_key="s").double()(x)
    b = a.replace_feature(a.features * 3)
    assert torch.equal(spconv.JoinTable()([a, b]).features, torch.cat([a.features, b.features], 1))
    assert torch.equal(spconv.AddTable()([a, b]).features, a.features * 4)
    both = spconv.ConcatTable().add(spconv.Identity()).add(spconv.SparseReLU())(a)
    assert both[0] is a and torch.equal(both[1].features, a.features.relu())
    sub = a.select_by_index(torch.arange(0, a.indices.shape[0], 2))
    total = spconv.functional.sparse_add(a, sub)  # sites of a: keeps a's order and registry
    assert total.indices is a.indices and total.indice_dict is a.indice_dict
    expected = a.features.clone()
    expected[::2] += sub.features
    assert torch.equal(total.features, expected)
    shifted = spconv.SparseConvTensor(a.features[:3], a.indices[:3].clone(), a.spatial_shape, 2)
    shifted.indices[:, 1] = (shifted.indices[:, 1] + 1) % 9
    union = spconv.functional.sparse_add(sub, shifted)
    assert torch.allclose(union.dense(), sub.dense() + shifted.dense()) and union.indice_dict == {}


# -- indice_key registry and misuse --------------------------------------------------------------
def test_submanifold_key_reuses_one_map_and_registry_flows_with_outputs():
    x = _input()
    a, b = spconv.SubMConv3d(3, 4, 3, indice_key="subm1").double(), spconv.SubMConv3d(4, 4, 3, indice_key="subm1").double()
    ya = a(x)
    entry = ya.indice_dict["subm1"]
    assert entry.is_subm and entry.ksize == [3, 3, 3] and entry.indices is x.indices
    yb = b(ya)
    assert yb.indice_dict["subm1"] is entry and x.indice_dict == {}
    assert x._coordinate_set().kernel_map_builds == 1
    # an equal but separately built site set may reuse the key (same rows, same order)
    again = spconv.SparseConvTensor(ya.features, ya.indices.clone(), ya.spatial_shape, 2, indice_dict=ya.indice_dict)
    assert torch.allclose(b(again).features, yb.features)
    down = spconv.SparseConv3d(4, 4, 3, 2, 1, indice_key="down").double()(yb)
    assert set(down.indice_dict) == {"subm1", "down"} and down.indice_dict["down"].out_spatial_shape == down.spatial_shape


def _layers_named(*layers):
    model = spconv.SparseSequential(*layers).double()
    spconv.assign_name_for_sparse_modules(model)
    return model


def test_same_key_with_different_kernel_size_names_both_layers():
    model = _layers_named(spconv.SubMConv3d(3, 4, 3, indice_key="k"), spconv.SubMConv3d(4, 4, 5, indice_key="k"))
    with pytest.raises(ValueError) as info:
        model(_input())
    message = str(info.value)
    assert "'k'" in message and "kernel_size [3, 3, 3] vs [5, 5, 5]" in message
    assert "'0' SubMConv3d(3, 4" in message and "'1' SubMConv3d(4, 4" in message
    # spconv's 1x1 path lets this through silently; here it is the same misuse
    with pytest.raises(ValueError, match=r"kernel_size \[3, 3, 3\] vs \[1, 1, 1\]"):
        _layers_named(spconv.SubMConv3d(3, 4, 3, indice_key="k"), spconv.SubMConv3d(4, 4, 1, indice_key="k"))(_input())


def test_same_key_with_different_dilation_is_an_error():
    model = _layers_named(spconv.SubMConv3d(3, 4, 3, indice_key="k"), spconv.SubMConv3d(4, 4, 3, dilation=2, indice_key="k"))
    with pytest.raises(ValueError, match=r"dilation \[1, 1, 1\] vs \[2, 2, 2\]"):
        model(_input())


def test_same_key_on_a_different_coordinate_set_is_an_error():
    x = _input()
    y = spconv.SubMConv3d(3, 4, 3, indice_key="k").double()(x)
    moved = y.indices.clone()
    moved[:, 1] = (moved[:, 1] + 1) % 9  # same count and grid: spconv would reuse the map silently
    other = spconv.SparseConvTensor(y.features, moved, y.spatial_shape, 2, indice_dict=y.indice_dict)
    with pytest.raises(ValueError, match="different coordinate set"):
        spconv.SubMConv3d(4, 4, 3, indice_key="k").double()(other)


def test_strided_keys_must_be_unique_and_subm_keys_stay_submanifold():
    x = _input()
    with pytest.raises(ValueError, match="used twice"):
        _layers_named(spconv.SparseConv3d(3, 4, 3, 2, 1, indice_key="d"), spconv.SparseConv3d(4, 4, 3, 2, 1, indice_key="d"))(x)
    with pytest.raises(ValueError, match=r"'0' SubMConv3d.*'1' SparseConv3d"):
        _layers_named(spconv.SubMConv3d(3, 4, 3, indice_key="d"), spconv.SparseConv3d(4, 4, 3, 2, 1, indice_key="d"))(x)
    with pytest.raises(ValueError, match="used twice"):
        _layers_named(spconv.SparseMaxPool3d(2, indice_key="p"), spconv.SubMConv3d(3, 3, 3, indice_key="p"))(x)


def test_inverse_conv_misuse_is_explained():
    x = _input()
    with pytest.raises(ValueError, match="found no layer registered under indice_key 'nope'"):
        spconv.SparseInverseConv3d(3, 3, 3, indice_key="nope").double()(x)
    down = spconv.SparseConv3d(3, 4, 3, 2, 1, indice_key="d").double()(x)
    with pytest.raises(ValueError, match=r"kernel_size \[3, 3, 3\], this layer has \[2, 2, 2\]"):
        spconv.SparseInverseConv3d(4, 3, 2, indice_key="d").double()(down)
    twice = spconv.SparseConv3d(4, 4, 3, 2, 1).double()(down)
    with pytest.raises(ValueError, match="different coordinate set"):
        spconv.SparseInverseConv3d(4, 3, 3, indice_key="d").double()(twice)
    subm = spconv.SubMConv3d(3, 3, 3, indice_key="s").double()(x)
    with pytest.raises(ValueError, match="submanifold"):
        spconv.SparseInverseConv3d(3, 3, 3, indice_key="s").double()(subm)


def test_unsupported_arguments_fail_loudly():
    with pytest.raises(NotImplementedError, match="dilation"):
        spconv.SparseConvTranspose3d(3, 3, 3, 2, dilation=2)
    with pytest.raises(NotImplementedError, match="4-D"):
        spconv.SparseConv4d(3, 3, 3)
    with pytest.raises(NotImplementedError, match="kernel_size 1"):
        spconv.SparseInverseConv3d(3, 3, 1, indice_key="k")
    with pytest.raises(NotImplementedError, match="act_type"):
        spconv.SparseConvolution(3, 3, 3, 3, act_type="ReLU")
    with pytest.raises(ValueError, match="odd kernel_size"):
        spconv.SubMConv3d(3, 3, 2)
    with pytest.raises(ValueError, match="padding 0"):
        spconv.SparseConv3d(3, 3, 1, padding=1)
    with pytest.warns(UserWarning, match="ignores stride"):
        spconv.SubMConv3d(3, 3, 3, stride=2)
    with pytest.raises(TypeError, match="SparseConvTensor"):
        spconv.SubMConv3d(3, 3, 3)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="in_channels=3"):
        spconv.SubMConv3d(3, 3, 3).double()(_input(channels=4))
    # performance hints are accepted and change nothing
    x = _input()
    torch.manual_seed(0)
    a = spconv.SubMConv3d(3, 4, 3, algo=spconv.ConvAlgo.MaskImplicitGemm, fp32_accum=True).double()
    torch.manual_seed(0)
    b = spconv.SubMConv3d(3, 4, 3).double()
    assert torch.equal(a(x).features, b(x).features)


def test_record_voxel_count_buffer_and_spconv_checkpoint_layout():
    m = spconv.SparseConv3d(3, 4, 3, 2, 1, record_voxel_count=True, indice_key="d").double()
    sd = m.state_dict()
    assert sd["weight"].shape == (4, 3, 3, 3, 3) and "max_num_voxels_during_training" in sd
    y = m(_input())
    assert int(m.get_max_num_voxels()) == y.indices.shape[0]
    fresh = spconv.SparseConv3d(3, 4, 3, 2, 1, record_voxel_count=True).double()
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh(_input()).features, y.features)


# -- native conversion and whole networks ---------------------------------------------------------
def _compat_stack():
    return spconv.SparseSequential(OrderedDict([
        ("stem", spconv.SubMConv3d(3, 8, 3, indice_key="s1")),
        ("bn", nn.BatchNorm1d(8)),
        ("act", nn.ReLU()),
        ("down", spconv.SparseConv3d(8, 8, 3, 2, 1, indice_key="d1")),
        ("mid", spconv.SubMConv3d(8, 8, 3, dilation=2, indice_key="s2")),
        ("proj", spconv.SubMConv3d(8, 6, 1)),
        ("up", spconv.SparseInverseConv3d(6, 4, 3, indice_key="d1")),
        ("group", spconv.SubMConv3d(4, 4, 3, groups=2)),
        ("pool", spconv.SparseMaxPool3d(2)),
        ("gen", spconv.SparseConvTranspose3d(4, 3, 2, 2)),
    ]))


def test_to_native_and_back_give_identical_outputs_and_weights():
    compat = _seeded(_compat_stack()).eval()  # eval: running statistics stay put across the three runs
    x = _input()
    expected = compat(x)
    native = spconv.to_native(compat)
    assert isinstance(native.up, snn.SparseInverseConv3d) and native.up.stride == (2, 2, 2)
    assert isinstance(native.proj, snn.SubMConv3d) and native.proj.weight.shape == (6, 8, 1, 1, 1)
    got = native(x.to_sparse_tensor())
    assert torch.allclose(got.dense(), expected.dense(), rtol=1e-12, atol=1e-12)
    back = spconv.from_native(native, indice_keys={"down": "d1", "up": "d1"})
    assert isinstance(back, spconv.SparseSequential) and isinstance(back.up, spconv.SparseInverseConv3d)
    assert compat.state_dict().keys() == back.state_dict().keys()
    for name, value in compat.state_dict().items():
        assert torch.equal(value, back.state_dict()[name]), name
    assert torch.allclose(back(x).dense(), expected.dense(), rtol=1e-12, atol=1e-12)
    # state dicts alone, both ways
    sd = spconv.state_dict_to_native(compat.state_dict(), compat)
    assert all(torch.equal(sd[k], v) for k, v in native.state_dict().items())
    again = spconv.state_dict_from_native(native.state_dict(), compat)
    assert all(torch.equal(again[k], v) for k, v in compat.state_dict().items())
    with pytest.raises(ValueError, match="inverse_of"):
        spconv.to_native(compat.up)


def test_weight_helpers_round_trip_for_every_layer_kind():
    torch.manual_seed(0)
    for transposed, groups, conv1x1, shape in [
        (False, 1, False, (6, 3, 2, 1, 4)), (True, 1, False, (6, 3, 2, 1, 4)), (False, 2, False, (6, 3, 3, 3, 2)),
        (True, 2, False, (6, 1, 2, 3, 2)), (False, 1, True, (6, 1, 1, 1, 4)), (True, 1, True, (6, 1, 1, 1, 4)),
    ]:
        w = torch.randn(shape, dtype=torch.float64)
        native = spconv.spconv_weight_to_native(w, transposed, groups, conv1x1)
        back = spconv.native_weight_to_spconv(native, transposed and not conv1x1, groups, conv1x1)
        assert torch.equal(back, w)


def _block(sp, c_in, c_out, kernel, indice_key, stride=1, padding=0, kind="subm"):
    if kind == "subm":
        conv = sp.SubMConv3d(c_in, c_out, kernel, bias=False, padding=padding, indice_key=indice_key)
    else:
        conv = sp.SparseConv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False, indice_key=indice_key)
    return sp.SparseSequential(conv, nn.BatchNorm1d(c_out, eps=1e-3, momentum=0.01), nn.ReLU())


class CompatSecondBackbone(nn.Module):
    """A SECOND / VoxelBackBone8x-style backbone written only with spconv API calls."""

    def __init__(self, sp, c_in=4):
        super().__init__()
        self.sp = sp
        self.conv_input = sp.SparseSequential(
            sp.SubMConv3d(c_in, 8, 3, padding=1, bias=False, indice_key="subm1"), nn.BatchNorm1d(8), nn.ReLU()
        )
        self.conv1 = sp.SparseSequential(_block(sp, 8, 8, 3, "subm1", padding=1))
        self.conv2 = sp.SparseSequential(
            _block(sp, 8, 16, 3, "spconv2", 2, 1, "spconv"), _block(sp, 16, 16, 3, "subm2", padding=1),
            _block(sp, 16, 16, 3, "subm2", padding=1),
        )
        self.conv3 = sp.SparseSequential(
            _block(sp, 16, 24, 3, "spconv3", 2, 1, "spconv"), _block(sp, 24, 24, 3, "subm3", padding=1)
        )
        self.conv4 = sp.SparseSequential(
            _block(sp, 24, 24, 3, "spconv4", 2, (0, 1, 1), "spconv"), _block(sp, 24, 24, 3, "subm4", padding=1)
        )
        self.conv_out = sp.SparseSequential(
            sp.SparseConv3d(24, 32, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False, indice_key="spconv_down2"),
            nn.BatchNorm1d(32, eps=1e-3, momentum=0.01), nn.ReLU(),
        )

    def forward(self, voxel_features, voxel_coords, batch_size, sparse_shape):
        x = self.sp.SparseConvTensor(voxel_features, voxel_coords.int(), sparse_shape, batch_size)
        x = self.conv_input(x)
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x4 = self.conv4(x3)
        out = self.conv_out(x4)
        spatial = out.dense()
        n, c, d, h, w = spatial.shape
        return spatial.view(n, c * d, h, w), [x1.dense(), x2.dense(), x3.dense(), x4.dense()]


def _native_block(c_in, c_out, kernel, stride=1, padding=0, kind="subm"):
    conv = snn.SubMConv3d(c_in, c_out, kernel, bias=False) if kind == "subm" else \
        snn.SparseConv3d(c_in, c_out, kernel, stride, padding, bias=False)
    return nn.Sequential(conv, snn.BatchNorm(c_out, eps=1e-3, momentum=0.01), snn.ReLU())


class NativeSecondBackbone(nn.Module):
    def __init__(self, c_in=4):
        super().__init__()
        self.conv_input = nn.Sequential(snn.SubMConv3d(c_in, 8, 3, bias=False), snn.BatchNorm(8), snn.ReLU())
        self.conv1 = nn.Sequential(_native_block(8, 8, 3))
        self.conv2 = nn.Sequential(_native_block(8, 16, 3, 2, 1, "spconv"), _native_block(16, 16, 3), _native_block(16, 16, 3))
        self.conv3 = nn.Sequential(_native_block(16, 24, 3, 2, 1, "spconv"), _native_block(24, 24, 3))
        self.conv4 = nn.Sequential(_native_block(24, 24, 3, 2, (0, 1, 1), "spconv"), _native_block(24, 24, 3))
        self.conv_out = nn.Sequential(
            snn.SparseConv3d(24, 32, (3, 1, 1), (2, 1, 1), 0, bias=False), snn.BatchNorm(32, eps=1e-3, momentum=0.01),
            snn.ReLU(),
        )

    def forward(self, st):
        x1 = self.conv1(self.conv_input(st))
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x4 = self.conv4(x3)
        spatial = self.conv_out(x4).dense()
        n, c, d, h, w = spatial.shape
        return spatial.reshape(n, c * d, h, w), [x1.dense(), x2.dense(), x3.dense(), x4.dense()]


def test_second_backbone_in_spconv_api_matches_native_network():
    x = _input(shape=(41, 24, 20), channels=4, density=0.03, seed=3)
    compat = _seeded(CompatSecondBackbone(spconv)).train()
    native = NativeSecondBackbone().double().train()
    native.load_state_dict(spconv.state_dict_to_native(compat.state_dict(), compat))
    f1 = x.features.clone().requires_grad_()
    f2 = x.features.clone().requires_grad_()
    bev, scales = compat(f1, x.indices, 2, x.spatial_shape)
    bev_n, scales_n = native(SparseTensor(f2, x.indices, x.spatial_shape, 2))
    assert bev.shape == (2, 32 * 2, 3, 3)
    assert torch.allclose(bev, bev_n, rtol=1e-10, atol=1e-10)
    for a, b in zip(scales, scales_n):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(bev)
    (bev * grad).sum().backward()
    (bev_n * grad).sum().backward()
    assert torch.allclose(f1.grad, f2.grad, rtol=1e-9, atol=1e-10)
    for (name, p), (_, q) in zip(compat.named_parameters(), native.named_parameters()):
        g = spconv.spconv_weight_to_native(p.grad) if p.dim() == 5 else p.grad
        assert torch.allclose(g, q.grad, rtol=1e-9, atol=1e-10), name


class CompatUNet(nn.Module):
    """A sparse U-Net (encoder, max-pool bottleneck, inverse-conv decoder with skip concatenation)
    written only with spconv API calls."""

    def __init__(self, sp):
        super().__init__()
        self.stem = sp.SparseSequential(sp.SubMConv3d(3, 8, 3, indice_key="subm1"), nn.BatchNorm1d(8), nn.ReLU())
        self.down1 = sp.SparseSequential(
            sp.SparseConv3d(8, 16, 3, 2, 1, bias=False, indice_key="down1"), nn.BatchNorm1d(16), nn.ReLU(),
            sp.SubMConv3d(16, 16, 3, indice_key="subm2"), nn.ReLU(),
        )
        self.pool = sp.SparseMaxPool3d(2, 2, indice_key="pool2")
        self.bottleneck = sp.SparseSequential(sp.SubMConv3d(16, 16, 3, indice_key="subm3"), nn.ReLU())
        self.unpool = sp.SparseInverseConv3d(16, 16, 2, indice_key="pool2")
        self.merge2 = sp.SparseSequential(sp.SubMConv3d(32, 16, 3, indice_key="subm2"), nn.BatchNorm1d(16), nn.ReLU())
        self.up1 = sp.SparseInverseConv3d(16, 8, 3, indice_key="down1", bias=False)
        self.merge1 = sp.SparseSequential(sp.SubMConv3d(16, 8, 3, indice_key="subm1"), nn.ReLU())
        self.head = sp.SubMConv3d(8, 5, 1)

    def forward(self, x):
        x1 = self.stem(x)
        x2 = self.down1(x1)
        u2 = self.unpool(self.bottleneck(self.pool(x2)))
        m2 = self.merge2(u2.replace_feature(torch.cat([x2.features, u2.features], 1)))
        u1 = self.up1(m2)
        m1 = self.merge1(u1.replace_feature(torch.cat([x1.features, u1.features], 1)))
        return self.head(m1)


class NativeUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(snn.SubMConv3d(3, 8, 3), snn.BatchNorm(8), snn.ReLU())
        self.down1 = nn.Sequential(
            snn.SparseConv3d(8, 16, 3, 2, 1, bias=False), snn.BatchNorm(16), snn.ReLU(), snn.SubMConv3d(16, 16, 3), snn.ReLU()
        )
        self.pool = snn.SparseMaxPool3d(2, 2)
        self.bottleneck = nn.Sequential(snn.SubMConv3d(16, 16, 3), snn.ReLU())
        self.unpool = snn.SparseInverseConv3d(16, 16, 2, stride=2)
        self.merge2 = nn.Sequential(snn.SubMConv3d(32, 16, 3), snn.BatchNorm(16), snn.ReLU())
        self.up1 = snn.SparseInverseConv3d(16, 8, 3, stride=2, padding=1, bias=False)
        self.merge1 = nn.Sequential(snn.SubMConv3d(16, 8, 3), snn.ReLU())
        self.head = snn.SubMConv3d(8, 5, 1)

    def forward(self, x):
        x1 = self.stem(x)
        x2 = self.down1(x1)
        pooled = self.pool(x2)
        u2 = self.unpool(self.bottleneck(pooled.replace(pooled.feats.clamp(min=0))))  # spconv's max starts at 0
        m2 = self.merge2(u2.replace(torch.cat([x2.feats, u2.feats], 1)))
        u1 = self.up1(m2)
        m1 = self.merge1(u1.replace(torch.cat([x1.feats, u1.feats], 1)))
        return self.head(m1)


def test_sparse_unet_in_spconv_api_matches_native_network():
    x = _input(shape=(14, 13, 12), density=0.12, seed=5)
    compat = _seeded(CompatUNet(spconv)).train()
    native = NativeUNet().double().train()
    native.load_state_dict(spconv.state_dict_to_native(compat.state_dict(), compat))
    y = compat(x)
    y_native = native(x.to_sparse_tensor())
    assert y.indices is x.indices  # the decoder ends on the input sites, in the input's order
    assert torch.allclose(y.features, y_native.feats, rtol=1e-10, atol=1e-10)
    assert set(y.indice_dict) == {"subm1", "down1", "subm2", "pool2", "subm3"}


# -- the import shim -----------------------------------------------------------------------------
def _run(code):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_shim_makes_unmodified_spconv_imports_work():
    out = _run("""
        import sys, torch
        from sparseconv.compat import install_spconv_shim, uninstall_spconv_shim, is_spconv_shim
        assert install_spconv_shim(force=True)
        import spconv.pytorch as spconv
        from spconv.pytorch import SparseConvTensor, SubMConv3d
        from spconv.pytorch.conv import SparseConvolution
        from spconv.pytorch.modules import SparseModule
        import spconv as top
        if float(top.__version__[2:]) >= 2.2:
            top.constants.SPCONV_USE_DIRECT_TABLE = False  # what OpenPCDet does
        assert is_spconv_shim(top) and spconv.SparseConvTensor is SparseConvTensor
        assert issubclass(SubMConv3d, SparseConvolution) and issubclass(SparseConvolution, SparseModule)
        assert spconv.modules.is_spconv_module(SubMConv3d(2, 2, 3))  # what Point Transformer V3 asks
        x = SparseConvTensor(torch.randn(3, 2), torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 2, 1, 1]]).int(), [3, 3, 3], 1)
        y = spconv.SparseSequential(SubMConv3d(2, 4, 3, indice_key="a"), torch.nn.ReLU())(x)
        print(tuple(y.dense().shape))
        try:
            import spconv.pytorch.not_a_module
        except ModuleNotFoundError:
            print("missing submodule ok")
        assert install_spconv_shim()  # already installed
        assert uninstall_spconv_shim() and "spconv" not in sys.modules
    """)
    assert "(1, 4, 3, 3, 3)" in out and "missing submodule ok" in out


def test_shim_steps_aside_for_an_importable_spconv():
    out = _run("""
        import sys, types
        fake = types.ModuleType("spconv")
        sys.modules["spconv"] = fake
        from sparseconv.compat import install_spconv_shim
        print(install_spconv_shim(), sys.modules["spconv"] is fake)
    """)
    assert out.split() == ["False", "True"]


# -- the real spconv (optional) ------------------------------------------------------------------
def _real_spconv():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import spconv as top
            import spconv.pytorch as real
    except Exception as error:  # not installed, or installed but unusable
        pytest.skip(f"the real spconv is not importable here ({type(error).__name__}: {error}); "
                    "install the CPU build with `pip install spconv` to compare against it")
    if is_spconv_shim(top):
        pytest.skip("`spconv` is sparseconv's own shim in this process, not the real library")
    return real


def _canonical(t):
    i = t.indices.long()
    key = i[:, 0]
    for axis, size in enumerate(t.spatial_shape, 1):
        key = key * size + i[:, axis]
    order = torch.argsort(key)
    return i[order], t.features[order]


def _spconv_stack(sp):
    return [
        sp.SubMConv3d(3, 8, 3, padding=1, indice_key="subm1"),
        sp.SubMConv3d(8, 8, 3, dilation=2, bias=False, indice_key="subm_d"),
        sp.SubMConv3d(8, 6, (5, 3, 1), indice_key="subm_a"),
        sp.SubMConv3d(6, 5, 1),
        sp.SparseMaxPool3d(3, 2, 1, indice_key="pool1"),  # features still signed: tests the zero start
        sp.SparseConv3d(5, 7, 3, 2, 1, indice_key="down1"),
        sp.SparseConv3d(7, 4, 1),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        sp.SparseInverseConv3d(4, 6, 3, indice_key="down1"),
        sp.SparseConv3d(6, 6, 2, 2, 0, indice_key="down2"),
        sp.SparseConv3d(6, 6, (3, 1, 1), (2, 1, 1), 0),
        sp.SparseConvTranspose3d(6, 5, 1),
        sp.SparseConvTranspose3d(5, 4, 3, 2, 1, indice_key="up_t"),
        sp.SparseInverseConv3d(4, 6, 3, indice_key="up_t"),
        sp.SparseConvTranspose3d(6, 4, (2, 3, 2), (2, 1, 2), 0),
    ]


def test_layer_by_layer_against_real_spconv():
    real = _real_spconv()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # spconv 2.3.8's CPU scatter-add races with several threads
    try:
        gen = torch.Generator().manual_seed(0)
        shape, batch = [22, 19, 17], 2
        indices = (torch.rand((batch, *shape), generator=gen) < 0.06).nonzero().int()
        indices = indices[torch.randperm(indices.shape[0], generator=gen)].contiguous()  # spconv needs contiguous
        feats = torch.randn(indices.shape[0], 3, generator=gen)
        torch.manual_seed(0)
        theirs = real.SparseSequential(*_spconv_stack(real))
        ours = spconv.SparseSequential(*_spconv_stack(spconv))
        ours.load_state_dict(theirs.state_dict())  # spconv checkpoints load unchanged
        xr = real.SparseConvTensor(feats, indices, shape, batch)
        xc = spconv.SparseConvTensor(feats, indices, shape, batch)
        for index, (a, b) in enumerate(zip(theirs, ours)):
            if isinstance(a, real.SparseModule):
                xr, xc = a(xr), b(xc)
            else:
                xr, xc = xr.replace_feature(a(xr.features)), xc.replace_feature(b(xc.features))
            assert list(xr.spatial_shape) == xc.spatial_shape, (index, b)
            ir, fr = _canonical(xr)
            ic, fc = _canonical(xc)
            assert torch.equal(ir, ic), (index, b)
            assert torch.allclose(fr, fc, rtol=1e-5, atol=1e-5), (index, b, (fr - fc).abs().max())
            assert torch.allclose(xr.dense(), xc.dense(), rtol=1e-5, atol=1e-5)
        # a whole U-Net, inverse convs back onto the input sites in the input's order
        torch.manual_seed(1)
        unet_theirs = CompatUNet(real)
        unet_ours = CompatUNet(spconv)
        unet_ours.load_state_dict(unet_theirs.state_dict())
        yr = unet_theirs(real.SparseConvTensor(feats, indices, shape, batch))
        yc = unet_ours(spconv.SparseConvTensor(feats, indices, shape, batch))
        assert torch.equal(yr.indices, yc.indices)
        assert torch.allclose(yr.features, yc.features, rtol=1e-5, atol=1e-5)
        # 2-D layers
        idx2 = indices[:, [0, 2, 3]].unique(dim=0).contiguous()
        f2 = torch.randn(idx2.shape[0], 3, generator=gen)

        def stack2(sp):
            return sp.SparseSequential(
                sp.SubMConv2d(3, 5, 3, indice_key="a"), sp.SparseConv2d(5, 4, 3, 2, 1, indice_key="b"),
                sp.SubMConv2d(4, 4, (3, 5)), sp.SparseInverseConv2d(4, 3, 3, indice_key="b"), sp.SparseMaxPool2d(2),
                sp.SparseConvTranspose2d(3, 2, 3, 2),
            )

        torch.manual_seed(2)
        two_theirs, two_ours = stack2(real), stack2(spconv)
        two_ours.load_state_dict(two_theirs.state_dict())
        yr = two_theirs(real.SparseConvTensor(f2, idx2, shape[1:], batch))
        yc = two_ours(spconv.SparseConvTensor(f2, idx2, shape[1:], batch))
        assert list(yr.spatial_shape) == yc.spatial_shape
        assert torch.allclose(yr.dense(), yc.dense(), rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(threads)
