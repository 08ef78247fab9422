"""bfloat16 autocast on CPU: sparse convs compute what their dense twins compute under autocast.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` a sparse conv casts its input features and
weight to bfloat16 (as autocast does for ``F.conv3d``), accumulates in float32 and rounds the
result once. So its output must equal, to within one bfloat16 rounding, the float64 convolution
of the bfloat16-rounded input and weight; and it must agree with ``F.conv3d`` under autocast.
"""
import pytest
import torch
import torch.nn.functional as F

import sparseconv.nn as snn
from sparseconv.models import minkunet14
from sparseconv.testing import dense_twin, random_sparse_tensor

BF16_EPS = 2.0 ** -8  # unit roundoff of bfloat16 (8 significant bits)


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _rounded(module):
    """A float64 copy of ``module`` whose weights are the bfloat16-rounded originals."""
    import copy

    twin = copy.deepcopy(module).double()
    with torch.no_grad():
        for p in twin.parameters():
            p.copy_(p.to(torch.bfloat16).double())
    return twin


LAYERS = [
    ("subm k3", lambda: snn.SubMConv3d(8, 16, 3, bias=True), False),
    ("conv k3 s2", lambda: snn.SparseConv3d(8, 16, 3, stride=2, padding=1), False),
    ("transposed k2 s2", lambda: snn.SparseConvTranspose3d(8, 16, 2, stride=2), False),
    ("inverse k2 s2", lambda: snn.SparseInverseConv3d(8, 16, 2, stride=2), True),
    ("grouped subm", lambda: snn.SubMConv3d(8, 16, 3, groups=2), False),
]


@pytest.mark.parametrize("name,make,inverse", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_sparse_conv_under_autocast_is_the_rounded_convolution(name, make, inverse):
    torch.manual_seed(0)
    layer = make()
    fine = random_sparse_tensor((9, 10, 11), 8, batch_size=2, density=0.3, dtype=torch.float32, seed=3)
    if inverse:
        coarse = snn.SparseConv3d(8, 8, 2, stride=2)(fine).detach()
        x, target = coarse, fine
    else:
        x, target = fine, None
    call = (lambda m, t: m(t, target)) if inverse else (lambda m, t: m(t))
    with _autocast():
        out = call(layer, x)
    assert out.feats.dtype == torch.bfloat16
    # exact reference: float64 arithmetic on the bfloat16-rounded input and weights. The sum over
    # the kernel is rounded once, the bias once, and their sum once, so each output is within
    # two roundings of the scale |conv| + |bias|.
    rounded = _rounded(layer)
    rounded_input = x.replace(x.feats.to(torch.bfloat16).double())
    reference = call(rounded, rounded_input).feats
    bias = rounded.bias.detach() if rounded.bias is not None else torch.zeros(reference.shape[1], dtype=torch.float64)
    scale = (reference - bias).abs() + bias.abs()
    assert ((out.feats.double() - reference).abs() <= 2 * BF16_EPS * scale + 1e-6).all(), name
    # and F.conv3d / F.conv_transpose3d under autocast, read at the same sites
    dense_fn, sites = dense_twin(layer, x, target)
    with _autocast():
        dense_out = dense_fn(x.dense())
    assert dense_out.dtype == torch.bfloat16
    c = out.coords
    dense_at_sites = dense_out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]].double()
    assert int(sites.sum()) == len(out)
    assert ((out.feats.double() - dense_at_sites).abs() <= 4 * BF16_EPS * scale + 1e-5).all(), name


def test_gradients_under_autocast_are_float32_and_match_float32_training():
    torch.manual_seed(0)
    layer = snn.SubMConv3d(8, 16, 3)
    x = random_sparse_tensor((10, 10, 10), 8, batch_size=2, density=0.3, dtype=torch.float32, seed=1)
    grad = torch.randn(len(x), 16)

    def grads(autocast: bool):
        layer.zero_grad()
        feats = x.feats.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = layer(x.replace(feats)).feats
        out.float().backward(grad)
        return feats.grad, layer.weight.grad.clone(), layer.bias.grad.clone()

    low, full = grads(True), grads(False)
    for a, b in zip(low, full):
        assert a.dtype == torch.float32
        assert (a - b).norm() <= 4 * BF16_EPS * b.norm()


def test_minkunet_under_autocast_matches_float32_within_bf16_tolerance():
    torch.manual_seed(0)
    x = random_sparse_tensor((24, 24, 24), 4, batch_size=2, density=0.15, dtype=torch.float32, seed=2)
    model = minkunet14(4, 5, base_channels=8).eval()
    full = model(x).feats
    with _autocast():
        low = model(x).feats
    assert low.dtype == torch.bfloat16
    # ~30 layers, each rounding its input once: the error grows like sqrt(depth) roundings
    relative = ((low.float() - full).norm() / full.norm()).item()
    assert relative < 16 * BF16_EPS, relative
    assert (low.float().argmax(1) == full.argmax(1)).float().mean() > 0.95

    # Gradients through ~30 bfloat16 layers are checked where they can be exact (one layer, above);
    # for the whole network, training under autocast is shown to learn in tests/test_examples.py.
    model.train()
    with _autocast():
        out = model(x).feats
    F.cross_entropy(out.float(), torch.arange(len(x)) % 5).backward()
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


def test_dtype_mismatch_outside_autocast_still_raises():
    layer = snn.SubMConv3d(4, 4, 3)
    x = random_sparse_tensor((6, 6, 6), 4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="input features are torch.bfloat16 but weight is torch.float32"):
        layer(x)
