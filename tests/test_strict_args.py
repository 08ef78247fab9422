"""Strict argument checks at the public API's edges (issue 16).

* every convolution checks its bias' shape (never broadcast), dtype (never promotes the output)
  and device, in the functional ops, the modules and the spconv compat layer;
* integer-valued floats (``4.0``) and NumPy scalars are accepted where an integer is meant and a
  non-integer (``3.7``) is a ``ValueError`` naming the argument, never truncated;
* a feature-wise module on the wrong channel count names itself and both counts.
"""
import numpy as np
import pytest
import torch

import sparseconv.compat.spconv as spconv
import sparseconv.nn as snn
from sparseconv import SparseTensor, voxelize
from sparseconv.models import minkunet14, second_backbone, sparse_resnet14, voxelize_in_range
from sparseconv.nn.functional import (
    sparse_conv3d,
    sparse_conv_transpose3d,
    sparse_deform_conv3d,
    sparse_inverse_conv3d,
    subm_conv3d,
)
from sparseconv.nn.functional.dynamic import sparse_conv3d_per_sample


def _x(channels=4, dtype=torch.float32, batch_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(batch_size * 6 * 6 * 6, generator=g)[:40]
    coords = torch.stack(
        (cells // 216, cells // 36 % 6, cells // 6 % 6, cells % 6), 1
    )
    feats = torch.randn(len(coords), channels, generator=g, dtype=dtype)
    return SparseTensor(feats, coords, (6, 6, 6), batch_size)


# -- bias: shape, dtype, device --------------------------------------------------------------------
def _conv_calls():
    """(name, call(x, bias), bias shape) for every functional convolution with 4 -> 6 channels."""
    w = torch.randn(6, 4, 3, 3, 3)
    wt = torch.randn(4, 6, 3, 3, 3)

    def inverse(x, b):
        y = sparse_conv3d(x, torch.randn(4, 4, 3, 3, 3), None, 2, 1)
        return sparse_inverse_conv3d(y, wt, b, 2, 1)

    def deform(x, b):
        return sparse_deform_conv3d(x, torch.zeros(len(x), 27 * 3), w, b, submanifold=True)

    def per_sample(x, b):
        return sparse_conv3d_per_sample(x, torch.randn(x.batch_size, 6, 4, 3, 3, 3), b, submanifold=True)

    return [
        ("sparse_conv3d", lambda x, b: sparse_conv3d(x, w, b, 1, 1), (6,)),
        ("subm_conv3d", lambda x, b: subm_conv3d(x, w, b), (6,)),
        ("sparse_conv_transpose3d", lambda x, b: sparse_conv_transpose3d(x, wt, b), (6,)),
        ("sparse_inverse_conv3d", inverse, (6,)),
        ("sparse_deform_conv3d", deform, (6,)),
        ("sparse_conv3d_per_sample", per_sample, (2, 6)),
    ]


@pytest.mark.parametrize("name,call,shape", _conv_calls(), ids=[c[0] for c in _conv_calls()])
def test_functional_bias_shape_dtype_device(name, call, shape):
    x = _x()
    good = call(x, torch.zeros(shape))
    assert good.dtype == torch.float32 and good.num_channels == 6
    want = r"\[B=2, C_out=6\]" if len(shape) == 2 else r"\[C_out=6\]"
    with pytest.raises(ValueError, match=rf"bias must have shape {want}, got \(3, 1\)"):
        call(x, torch.zeros(3, 1))  # [N, 6] + [3, 1] would broadcast to garbage or a raw torch error
    with pytest.raises(ValueError, match=rf"bias must have shape {want}, got \(1, {', '.join(map(str, shape))}\)"):
        call(x, torch.zeros(1, *shape))  # broadcasts silently without the check
    with pytest.raises(TypeError, match="input features are torch.float32 but bias is torch.float64"):
        call(x, torch.zeros(shape, dtype=torch.float64))  # would turn the output float64
    with pytest.raises(ValueError, match="input features are on cpu but bias is on meta"):
        call(x, torch.zeros(shape, device="meta"))
    with pytest.raises(ValueError, match=rf"bias must have shape {want}, got list"):
        call(x, [0.0] * 6)


def _spconv_input(channels=4):
    x = _x(channels)
    return spconv.SparseConvTensor(x.feats, x.coords.to(torch.int32), list(x.spatial_shape), x.batch_size)


_NATIVE, _COMPAT = r"\[C_out=6\]", r"\[out_channels=6\]"
_LAYERS = [
    (lambda: snn.SubMConv3d(4, 6, 3), _x, _NATIVE),
    (lambda: snn.SparseConv3d(4, 6, 3, 1, 1), _x, _NATIVE),
    (lambda: snn.SparseConvTranspose3d(4, 6, 3), _x, _NATIVE),
    (lambda: snn.SubMDeformConv3d(4, 6, 3), _x, _NATIVE),
    (lambda: spconv.SubMConv3d(4, 6, 3, indice_key="s"), _spconv_input, _COMPAT),
    (lambda: spconv.SparseConv3d(4, 6, 3, 2, 1), _spconv_input, _COMPAT),
    (lambda: spconv.SparseConvTranspose3d(4, 6, 3), _spconv_input, _COMPAT),
    (lambda: spconv.SubMConv3d(4, 6, 1), _spconv_input, _COMPAT),
]


@pytest.mark.parametrize("make,make_input,want", _LAYERS)
def test_layer_bias_checked(make, make_input, want):
    x, layer = make_input(), make()
    bad = [
        (torch.zeros(1, 6), ValueError, rf"bias must have shape {want}, got \(1, 6\)"),
        (torch.zeros(3, 1), ValueError, rf"bias must have shape {want}, got \(3, 1\)"),
        (torch.zeros(6, dtype=torch.float64), TypeError, "input features are torch.float32 but bias is torch.float64"),
        (torch.zeros(6, device="meta"), ValueError, "input features are on cpu but bias is on meta"),
    ]
    for bias, error, match in bad:
        layer.bias = torch.nn.Parameter(bias)
        with pytest.raises(error, match=match):
            layer(x)
    layer.bias = torch.nn.Parameter(torch.zeros(6))
    out = layer(x)
    assert (out.feats if isinstance(out, SparseTensor) else out.features).dtype == torch.float32


@pytest.mark.parametrize("make", [m for m, _, want in _LAYERS if want == _COMPAT])
def test_compat_weight_checked(make):
    x, layer = _spconv_input(), make()
    layer.weight = torch.nn.Parameter(layer.weight.detach().double())
    with pytest.raises(TypeError, match="input features are torch.float32 but weight is torch.float64"):
        layer(x)
    layer.weight = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"weight must have shape \[out, \*kernel_size, in/groups\]"):
        layer(x)


def test_dynamic_module_bias_checked():
    x = _x()
    module = snn.SparseCondConv3d(4, 6, 3, num_experts=2, submanifold=True)
    module.bias = torch.nn.Parameter(torch.zeros(2, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="SparseCondConv3d: input features are torch.float32 but bias is torch.float64"):
        module(x)
    module.bias = torch.nn.Parameter(torch.zeros(6))
    with pytest.raises(ValueError, match=r"SparseCondConv3d: bias must have shape \[E=2, C_out=6\], got \(6,\)"):
        module(x)


def test_compat_inverse_bias_checked_and_names_layer():
    x = _spconv_input()
    down = spconv.SparseConv3d(4, 4, 3, 2, 1, indice_key="down", name="down")
    up = spconv.SparseInverseConv3d(4, 6, 3, indice_key="down", name="up")
    up.bias = torch.nn.Parameter(torch.zeros(6, 1))
    with pytest.raises(ValueError, match=r"up.*: bias must have shape \[out_channels=6\], got \(6, 1\)"):
        up(down(x))


def test_compat_bias_follows_autocast_like_the_native_path():
    x = _spconv_input()
    layer = spconv.SubMConv3d(4, 6, 3)
    native = snn.SubMConv3d(4, 6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).features.dtype == torch.bfloat16
        assert native(x.to_sparse_tensor()).feats.dtype == torch.bfloat16


# -- integers: integer-valued floats and NumPy scalars accepted, fractions refused ----------------
def test_sparse_tensor_integer_arguments():
    x = _x()
    for shape in ((6.0, 6.0, 6.0), (np.int64(6), np.int32(6), np.float32(6)), np.array([6, 6, 6]),
                  torch.tensor([6, 6, 6])):
        st = SparseTensor(x.feats, x.coords, shape, np.int64(2))
        assert st.spatial_shape == (6, 6, 6) and all(type(s) is int for s in st.spatial_shape)
        assert st.batch_size == 2 and type(st.batch_size) is int
    assert SparseTensor(x.feats, x.coords, (6, 6, 6), 3.0).batch_size == 3
    inferred = x.coords.max(0).values + 1  # one-element tensors, as such code computes them
    st = SparseTensor(x.feats, x.coords, tuple(inferred[1:]), inferred[0])
    assert st.spatial_shape == tuple(inferred[1:].tolist()) and type(st.batch_size) is int
    assert snn.SubMConv3d(4, 4, torch.tensor(3)).kernel_size == (3, 3, 3)
    with pytest.raises(ValueError, match=r"spatial_shape must be an integer, got 6\.5"):
        SparseTensor(x.feats, x.coords, (6, 6.5, 6))
    with pytest.raises(ValueError, match=r"batch_size must be an integer, got 2\.5"):
        SparseTensor(x.feats, x.coords, (6, 6, 6), 2.5)
    with pytest.raises(TypeError, match="batch_size must be an int, got bool"):
        SparseTensor(x.feats, x.coords, (6, 6, 6), True)
    crop = x.crop((np.int64(1), 1.0, 0), (4.0, np.int64(4), 6))
    assert crop.spatial_shape == (4, 4, 6)
    with pytest.raises(ValueError, match=r"size must be an integer, got 4\.5"):
        x.crop((0, 0, 0), (4.5, 4, 4))


def test_voxelize_integer_and_numpy_arguments():
    points = torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) * 4
    ref = voxelize(points, 0.5, batch_size=3).tensor
    for size in (np.float32(0.5), np.float64(0.5), (np.float32(0.5),) * 3, np.array([0.5, 0.5, 0.5])):
        st = voxelize(points, size, batch_size=np.int64(3), align=np.int64(1)).tensor
        assert torch.equal(st.coords, ref.coords) and st.voxel_size == (0.5, 0.5, 0.5)
    assert voxelize(points, 0.5, batch_size=3.0).tensor.batch_size == 3
    with pytest.raises(ValueError, match=r"batch_size must be an integer, got 2\.7"):
        voxelize(points, 0.5, batch_size=2.7)  # never truncated to 2
    with pytest.raises(ValueError, match=r"align must be an integer, got 1\.5"):
        voxelize(points, 0.5, align=1.5)
    st = voxelize_in_range(points, np.float32(0.5), (0, 0, 0, 4, 4, 4))
    assert st.spatial_shape == (8, 8, 8)


def test_modules_integer_and_numpy_arguments():
    conv = snn.SparseConv3d(np.int64(4), 6.0, np.int64(3), stride=np.int32(2), padding=1.0, groups=np.int64(2))
    assert (conv.in_channels, conv.out_channels, conv.groups) == (4, 6, 2)
    assert all(type(v) is int for v in (conv.in_channels, conv.out_channels, conv.groups, *conv.kernel_size))
    assert tuple(conv.weight.shape) == (6, 2, 3, 3, 3) and conv.stride == (2, 2, 2)
    assert snn.SubMConv3d(4, 4, (3.0, np.int64(3), 1)).kernel_size == (3, 3, 1)
    assert snn.SparseMaxPool3d(np.int64(2)).kernel_size == (2, 2, 2)
    assert snn.SubMDeformConv3d(4, 4, 3, offset_groups=np.int64(2)).offset_groups == 2
    dyn = snn.SparseDynamicConv3d(np.int64(4), 4, 3, num_experts=2.0)
    assert dyn.num_experts == 2 and tuple(dyn.weight.shape) == (2, 4, 4, 3, 3, 3)
    cases = [
        (lambda: snn.SubMConv3d(4, 4, 3.7), r"kernel_size must be an integer, got 3\.7"),
        (lambda: snn.SubMConv3d(4.5, 4, 3), r"in_channels must be an integer, got 4\.5"),
        (lambda: snn.SubMConv3d(4, 4, 3, groups=2.5), r"groups must be an integer, got 2\.5"),
        (lambda: snn.SparseConv3d(4, 4, 3, stride=(1, 1.5, 1)), r"stride must be an integer, got 1\.5"),
        (lambda: snn.SparseDynamicConv3d(4, 4, 3, num_experts=2.5), r"num_experts .* must be an integer, got 2\.5"),
        (lambda: snn.SubMDeformConv3d(4, 4, 3, offset_groups=1.5), r"offset_groups must be an integer, got 1\.5"),
    ]
    for make, match in cases:
        with pytest.raises(ValueError, match=match):
            make()
    x = _x()
    out = sparse_conv3d(x, torch.randn(4, 4, 3, 3, 3), None, np.int64(2), 1.0, np.int64(1), np.int64(1))
    assert out.spatial_shape == (3, 3, 3)
    with pytest.raises(ValueError, match=r"padding must be an integer, got 0\.5"):
        sparse_conv3d(x, torch.randn(4, 4, 3, 3, 3), None, 1, 0.5)


def test_models_integer_and_numpy_arguments():
    net = minkunet14(np.int64(3), 5.0, base_channels=np.int64(8))
    assert (net.in_channels, net.num_classes) == (3, 5) and type(net.num_classes) is int
    assert second_backbone(4.0, out_channels=np.int64(32), channels=(8, 8.0, np.int64(8), 8, 8)).out_channels == 32
    assert sparse_resnet14(np.int32(1), 10.0, base_channels=8).num_classes == 10
    with pytest.raises(ValueError, match=r"num_classes must be an integer, got 5\.5"):
        minkunet14(3, 5.5)
    with pytest.raises(ValueError, match=r"channels must be an integer, got 8\.5"):
        second_backbone(4, channels=(8, 8.5, 8, 8, 8))
    with pytest.raises(ValueError, match=r"base_channels must be a positive int, got 0"):
        sparse_resnet14(1, 10, base_channels=0)


def test_compat_integer_and_numpy_arguments():
    x = _x()
    t = spconv.SparseConvTensor(x.feats, x.coords.int(), [6.0, np.int64(6), 6], np.int64(2))
    assert t.spatial_shape == [6, 6, 6] and t.batch_size == 2
    assert spconv.SparseConvTensor(x.feats, x.coords.int(), np.array([6, 6, 6]), torch.tensor(2)).batch_size == 2
    with pytest.raises(ValueError, match=r"spatial_shape must be an integer, got 6\.5"):
        spconv.SparseConvTensor(x.feats, x.coords.int(), [6, 6.5, 6], 2)
    with pytest.raises(ValueError, match=r"batch_size must be an integer, got 2\.5"):
        spconv.SparseConvTensor(x.feats, x.coords.int(), [6, 6, 6], 2.5)
    layer = spconv.SparseConv3d(np.int64(4), 6.0, np.int64(3), stride=np.int64(2), padding=1.0)
    assert layer.kernel_size == [3, 3, 3] and layer.in_channels == 4 and layer.out_channels == 6
    assert tuple(layer(t).features.shape)[1] == 6
    with pytest.raises(ValueError, match=r"kernel_size must be an integer, got 3\.5"):
        spconv.SubMConv3d(4, 4, 3.5)
    with pytest.raises(ValueError, match=r"out_channels must be an integer, got 6\.5"):
        spconv.SubMConv3d(4, 6.5, 3)


# -- channel mismatch in feature-wise modules -----------------------------------------------------
@pytest.mark.parametrize(
    "module,match",
    [
        (snn.BatchNorm(16), r"BatchNorm\(num_features=16\) expects 16 channels, got features with 4 channels"),
        (snn.SyncBatchNorm(8), r"SyncBatchNorm\(num_features=8\) expects 8 channels, got features with 4 channels"),
        (snn.LayerNorm(6), r"LayerNorm\(normalized_shape=6\) expects 6 channels, got features with 4 channels"),
        (snn.Linear(5, 3), r"Linear\(in_features=5\) expects 5 channels, got features with 4 channels"),
        (snn.LayerNorm((2, 4)), r"LayerNorm on sparse features \[N, C\] needs normalized_shape=\(C,\), got \(2, 4\)"),
    ],
)
def test_feature_wise_channel_mismatch_names_module(module, match):
    with pytest.raises(ValueError, match=match):
        module(_x(channels=4))


def test_feature_wise_modules_still_run_on_matching_channels():
    x = _x(channels=4)
    for module in (snn.BatchNorm(4), snn.LayerNorm(4), snn.Linear(4, 3), snn.ReLU()):
        out = module(x)
        assert out.coordinate_set is x.coordinate_set
    linear = snn.Linear(4, 3)
    assert torch.equal(linear(x).feats, torch.nn.functional.linear(x.feats, linear.weight, linear.bias))


def test_compat_channel_mismatch_names_layer():
    x = _spconv_input(channels=4)
    net = spconv.SparseSequential(spconv.SubMConv3d(4, 8, 3), torch.nn.BatchNorm1d(16), torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"SparseSequential layer '1': BatchNorm1d\(num_features=16\) expects 16 "
                                         r"channels, got features with 8 channels"):
        net(x)
    with pytest.raises(ValueError, match=r"SparseBatchNorm\(num_features=3\) expects 3 channels, got features with 4"):
        spconv.SparseBatchNorm(3)(x)
    good = spconv.SparseSequential(spconv.SubMConv3d(4, 8, 3), torch.nn.BatchNorm1d(8), torch.nn.ReLU())
    assert good(x).features.shape == (len(x.features), 8)


def test_metrics_and_launch_take_numpy_integers():
    from sparseconv.distributed import launch
    from sparseconv.metrics import confusion_matrix

    assert torch.equal(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), np.int64(2)), torch.eye(2).long())
    with pytest.raises(ValueError, match=r"num_classes must be an integer, got 2\.5"):
        confusion_matrix(torch.tensor([0]), torch.tensor([0]), 2.5)
    with pytest.raises(ValueError, match=r"nproc must be an integer, got 1\.5"):
        launch(print, 1.5)
