"""Dynamic sparse convolutions (DynamicConv, CondConv, ODConv): each sample convolved with its own
mixed kernel equals per-sample F.conv3d with that kernel at the active sites, forward and backward,
for batches of unequal samples; attention pools each sample's active voxels only."""
import pytest
import torch

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.nn.functional.dynamic import sparse_conv3d_per_sample, split_by_sample
from sparseconv.engine.kmap import KernelMapKey
from sparseconv.testing import (
    check_dense_equivalence,
    dense_dynamic_conv3d,
    dense_per_sample_conv3d,
    dynamic_dense_twin,
    random_sparse_tensor,
)

SHAPE = (7, 6, 8)


def _unequal_batch(channels=4, dtype=torch.float64, seed=0, shuffle=False):
    """Batch of 3: a dense-ish sample, a tiny one (2 voxels), a sparse one."""
    gen = torch.Generator().manual_seed(seed)
    coords = []
    for b, density in enumerate((0.3, None, 0.1)):
        if density is None:
            xyz = torch.tensor([[0, 0, 0], [3, 2, 5]])
        else:
            xyz = (torch.rand(SHAPE, generator=gen) < density).nonzero()
        coords.append(torch.cat((torch.full((len(xyz), 1), b), xyz), 1))
    coords = torch.cat(coords)
    if shuffle:
        coords = coords[torch.randperm(len(coords), generator=gen)]
    feats = torch.randn(len(coords), channels, generator=gen, dtype=dtype)
    return SparseTensor(feats, coords, SHAPE, 3)


FORMS = [
    dict(submanifold=True),
    dict(stride=2, padding=1),
    dict(submanifold=True, kernel_size=(3, 2, 1), dilation=(1, 2, 1), groups=2),
    dict(stride=(2, 1, 2), padding=(1, 0, 1), groups=2),
]
FORM_IDS = ["subm", "strided", "subm-k321-dilated-g2", "strided-aniso-g2"]


@pytest.mark.parametrize("form", FORMS, ids=FORM_IDS)
def test_per_sample_conv_matches_per_sample_conv3d(form):
    form = dict(form)
    kernel = form.pop("kernel_size", 3)
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    groups = form.get("groups", 1)
    x = _unequal_batch(4, shuffle=True)
    torch.manual_seed(0)
    weight = torch.randn(3, 6, 4 // groups, *k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    feats = x.feats.clone().requires_grad_()
    out = sparse_conv3d_per_sample(x.replace(feats), weight, bias, **form)
    dense_in = x.dense().detach().requires_grad_()
    padding = "same" if form.get("submanifold") else form.get("padding", 0)
    dense = dense_per_sample_conv3d(
        dense_in, weight, bias, form.get("stride", 1), padding, form.get("dilation", 1), groups
    )
    c = out.coords
    reference = dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]
    torch.testing.assert_close(out.feats, reference, rtol=1e-12, atol=1e-12)
    assert (out.coords[:, 0] == 1).sum() > 0  # the tiny sample has outputs too
    grad = torch.randn_like(reference)
    sparse_grads = torch.autograd.grad(out.feats, [feats, weight, bias], grad)
    dense_grads = torch.autograd.grad(reference, [dense_in, weight, bias], grad)
    ic = x.coords
    torch.testing.assert_close(sparse_grads[0], dense_grads[0][ic[:, 0], :, ic[:, 1], ic[:, 2], ic[:, 3]])
    torch.testing.assert_close(sparse_grads[1], dense_grads[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse_grads[2], dense_grads[2], rtol=1e-12, atol=1e-12)


MODULES = [
    (snn.SparseDynamicConv3d, {}),
    (snn.SparseDynamicConv3d, dict(temperature=0.5, hidden_channels=0)),
    (snn.SparseCondConv3d, {}),
    (snn.SparseODConv3d, {}),
]
MODULE_IDS = ["dynamic-softmax", "dynamic-softmax-T0.5-linear", "condconv-sigmoid", "odconv"]


@pytest.mark.parametrize("form", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("cls,extra", MODULES, ids=MODULE_IDS)
def test_module_matches_dense_twin_forward_and_backward(cls, extra, form):
    form = dict(form)
    kernel = form.pop("kernel_size", 3)
    torch.manual_seed(0)
    module = cls(4, 6, kernel, num_experts=3, **form, **extra).double()
    x = _unequal_batch(4)
    fn, sites = dynamic_dense_twin(module, x)
    report = check_dense_equivalence(module, x, dense_fn=fn, expected_sites=sites)
    assert report.passed, report.failures
    params = {name for name, _ in module.named_parameters()}
    assert set(report.gradient_errors) == {"input"} | params
    # the attention path gets gradient (not only vacuously equal zeros)
    module.zero_grad()
    module(x).feats.square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dense_dynamic_reference_mixes_per_sample():
    """The reference with explicit attentions equals a hand-mixed kernel for each sample."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 6, 2, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(3, 6, dtype=torch.float64)
    pi, s, ci, co = (torch.rand(2, n, dtype=torch.float64) for n in (3, 27, 4, 6))
    out = dense_dynamic_conv3d(x, w, b, pi, s, ci, co, 1, 1, 1, 2)
    for sample in range(2):
        kernel = torch.zeros(6, 2, 3, 3, 3, dtype=torch.float64)
        for e in range(3):
            for o in range(6):
                for c in range(2):
                    kernel[o, c] += pi[sample, e] * co[sample, o] * ci[sample, (o // 3) * 2 + c] * (
                        w[e, o, c] * s[sample].view(3, 3, 3)
                    )
        expected = torch.nn.functional.conv3d(x[sample: sample + 1], kernel, pi[sample] @ b, 1, 1, 1, 2)
        torch.testing.assert_close(out[sample: sample + 1], expected)


@pytest.mark.parametrize("cls", [snn.SparseDynamicConv3d, snn.SparseCondConv3d, snn.SparseODConv3d])
def test_each_sample_is_convolved_as_if_alone(cls):
    """Attention pools each sample's own active voxels: a sample's output does not depend on the
    other samples in the batch, nor on how large the (empty) grid around it is."""
    torch.manual_seed(1)
    module = cls(4, 5, 3, num_experts=4, submanifold=True).double()
    x = _unequal_batch(4)
    out = module(x)
    for b in range(3):
        rows = x.coords[:, 0] == b
        coords = x.coords[rows].clone()
        coords[:, 0] = 0
        alone = module(SparseTensor(x.feats[rows], coords, (20, 20, 20), 1))
        torch.testing.assert_close(alone.feats, out.feats[out.coords[:, 0] == b], rtol=1e-12, atol=1e-12)


def test_one_expert_softmax_is_the_static_conv():
    torch.manual_seed(2)
    dynamic = snn.SparseDynamicConv3d(4, 6, 3, num_experts=1, stride=2, padding=1).double()
    static = snn.SparseConv3d(4, 6, 3, 2, 1).double()
    with torch.no_grad():
        static.weight.copy_(dynamic.weight[0])
        static.bias.copy_(dynamic.bias[0])
    x = _unequal_batch(4)
    torch.testing.assert_close(dynamic(x).feats, static(x).feats, rtol=1e-12, atol=1e-12)


def test_split_map_regroups_pairs_by_tap_and_sample_and_is_cached():
    x = _unequal_batch(2, shuffle=True)
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    split = split_by_sample(kmap)
    assert split.kernel_volume == 27 * 3 and split.num_pairs == kmap.num_pairs
    batch = x.coords[:, 0]
    for k in range(27):
        pairs = set()
        for b in range(3):
            ins, outs = split.pairs(k * 3 + b)
            assert bool((batch[outs] == b).all()) and bool((batch[ins] == b).all())
            pairs |= set(zip(ins.tolist(), outs.tolist()))
        ins, outs = kmap.pairs(k)
        assert pairs == set(zip(ins.tolist(), outs.tolist()))
    again = split_by_sample(kmap)
    assert again is split  # one split map per map, so what a backend derives from it is kept too
    single = random_sparse_tensor((5, 5, 5), 2, batch_size=1, seed=1)
    single_map = single.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    assert split_by_sample(single_map) is single_map


def test_float32_forward_backward():
    torch.manual_seed(3)
    x = _unequal_batch(8, dtype=torch.float32)
    module = snn.SparseODConv3d(8, 8, 3, num_experts=4, submanifold=True)
    fn, sites = dynamic_dense_twin(module, x)
    report = check_dense_equivalence(module, x, dense_fn=fn, expected_sites=sites, rtol=1e-4)
    assert report.passed, report.failures


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match=r"num_experts \(K, the number of expert kernels\) must be an int >= 1, got 0"):
        snn.SparseDynamicConv3d(4, 4, 3, num_experts=0)
    with pytest.raises(ValueError, match="num_experts"):
        snn.SparseODConv3d(4, 4, 3, num_experts=-1)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            snn.SparseCondConv3d(4, 4, 3, temperature=bad)
    module = snn.SparseDynamicConv3d(4, 4, 3)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        module.temperature = 0.0
    with pytest.raises(ValueError, match="mode must be one of"):
        snn.SparseDynamicConv3d(4, 4, 3, mode="relu")
    with pytest.raises(ValueError, match="the submanifold form has stride 1"):
        snn.SparseODConv3d(4, 4, 3, stride=2, submanifold=True)
    with pytest.raises(ValueError, match=r"in_channels \(4\) must be divisible by groups \(3\)"):
        snn.SparseDynamicConv3d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="hidden_channels must be an int >= 1"):
        snn.SparseODConv3d(4, 4, 3, hidden_channels=0)
    x = _unequal_batch(4)
    with pytest.raises(ValueError, match="SparseDynamicConv3d expects in_channels=8, input has 4 channels"):
        snn.SparseDynamicConv3d(8, 4, 3)(x)
    w = torch.randn(2, 6, 4, 3, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"weight must have shape \[B=3, C_out, C_in/groups, kD, kH, kW\]"):
        sparse_conv3d_per_sample(x, w)
    w = torch.randn(3, 6, 4, 3, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"bias must have shape \[B=3, C_out=6\]"):
        sparse_conv3d_per_sample(x, w, torch.zeros(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="input has 4 channels but the weight expects in_channels=8"):
        sparse_conv3d_per_sample(x, w, groups=2)


def test_empty_batch_entry_is_harmless():
    x = random_sparse_tensor((6, 6, 6), 4, batch_size=3, density=0.2, empty_batches=(1,), seed=4)
    torch.manual_seed(4)
    module = snn.SparseODConv3d(4, 4, 3, num_experts=2, stride=2, padding=1).double()
    fn, sites = dynamic_dense_twin(module, x)
    report = check_dense_equivalence(module, x, dense_fn=fn, expected_sites=sites)
    assert report.passed, report.failures


def test_empty_input():
    x = SparseTensor(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.long), SHAPE, 2)
    for module in (snn.SparseODConv3d(4, 6, 3, submanifold=True), snn.SparseCondConv3d(4, 6, 3, stride=2)):
        out = module.double()(x)
        assert out.feats.shape == (0, 6)
        out.feats.sum().backward()
