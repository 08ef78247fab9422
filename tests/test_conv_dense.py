"""The heart of the suite: every spatial module equals its dense PyTorch twin at the active
sites, the active sites are exactly the contracted ones, and gradients match (float64)."""
import copy
import itertools

import pytest
import torch

import sparseconv.nn as snn
from sparseconv.testing import assert_dense_equivalent, check_dense_equivalence, dense_twin, random_sparse_tensor

KERNELS = [1, 2, 3, 5, (3, 2, 1), (1, 3, 5)]
STRIDES = [1, 2, 3, (1, 2, 3)]
DILATIONS = [1, 2, 3, (1, 2, 1)]
PADDINGS = [0, 1, (2, 0, 1)]
# (in_channels, out_channels, groups): plain, grouped, 4 groups, depthwise (groups == in_channels)
GROUPINGS = [(4, 6, 1), (4, 6, 2), (8, 4, 4), (4, 8, 4)]
SHAPE = (11, 10, 12)
# the convolution tests run again on CUDA tensors where a GPU is (python -m pytest -m cuda)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _input(case: int, channels: int, dtype=torch.float64):
    # batch 3 with entry 1 empty in every other case: empty entries must stay harmless
    empty = (1,) if case % 2 else ()
    return random_sparse_tensor(SHAPE, channels, batch_size=3, density=0.08, empty_batches=empty, dtype=dtype, seed=case)


def _cases():
    """A pairwise cover of kernel x stride x dilation x groups x padding."""
    cases = []
    for i, kernel in enumerate(KERNELS):
        for j, stride in enumerate(STRIDES):
            cases.append(
                (kernel, stride, PADDINGS[(i + j) % 3], DILATIONS[(i + 2 * j) % 4], GROUPINGS[(i + 3 * j) % 4])
            )
    return cases


def _fits(kernel, padding, dilation):
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    p = (padding,) * 3 if isinstance(padding, int) else padding
    d = (dilation,) * 3 if isinstance(dilation, int) else dilation
    return all(n + 2 * pp - dd * (kk - 1) - 1 >= 0 for n, kk, pp, dd in zip(SHAPE, k, p, d))


def _id(case):
    return "k{}-s{}-p{}-d{}-g{}".format(*case[:4], case[4][2]).replace(" ", "")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index,case", list(enumerate(_cases())), ids=lambda v: _id(v) if isinstance(v, tuple) else "")
def test_sparse_conv3d_matches_conv3d(index, case, device):
    kernel, stride, padding, dilation, (cin, cout, groups) = case
    assert _fits(kernel, padding, dilation)
    torch.manual_seed(0)
    module = snn.SparseConv3d(cin, cout, kernel, stride, padding, dilation, groups).double().to(device)
    assert_dense_equivalent(module, _input(index, cin).to(device))


@pytest.mark.parametrize(
    "kernel,dilation,grouping",
    [(k, d, g) for (k, d), g in zip(itertools.product(KERNELS, DILATIONS), itertools.cycle(GROUPINGS))],
)
@pytest.mark.parametrize("device", DEVICES)
def test_subm_conv3d_matches_same_padded_conv3d(kernel, dilation, grouping, device):
    cin, cout, groups = grouping
    torch.manual_seed(1)
    module = snn.SubMConv3d(cin, cout, kernel, dilation, groups).double().to(device)
    report = assert_dense_equivalent(module, _input(7, cin).to(device))
    assert report.num_sites == len(_input(7, cin))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", _cases(), ids=_id)
def test_sparse_conv_transpose3d_matches_conv_transpose3d(case, device):
    kernel, stride, padding, dilation, (cin, cout, groups) = case
    s = (stride,) * 3 if isinstance(stride, int) else stride
    d = (dilation,) * 3 if isinstance(dilation, int) else dilation
    output_padding = tuple(max(ss, dd) - 1 for ss, dd in zip(s, d))
    torch.manual_seed(2)
    module = snn.SparseConvTranspose3d(cin, cout, kernel, stride, padding, output_padding, dilation, groups)
    module = module.double().to(device)
    x = random_sparse_tensor((5, 4, 6), cin, batch_size=2, density=0.15, empty_batches=(0,), seed=3).to(device)
    assert_dense_equivalent(module, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", _cases(), ids=_id)
def test_inverse_conv3d_returns_to_strided_conv_input(case, device):
    kernel, stride, padding, dilation, (cin, cout, groups) = case
    torch.manual_seed(3)
    x = _input(11, cin).to(device)
    down = snn.SparseConv3d(cin, cout, kernel, stride, padding, dilation, groups).double().to(device)
    y = down(x)
    up = snn.SparseInverseConv3d(cout, cin, kernel, stride, padding, dilation, groups).double().to(device)
    assert_dense_equivalent(up, y, target=x)
    # found without target: the output lands on x's own coordinate set (and its cached maps)
    assert up(y).coordinate_set is x.coordinate_set


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation",
    [(2, None, 0, 1), (3, 2, 1, 1), (3, 1, 1, 2), ((3, 2, 1), (1, 2, 3), (1, 1, 0), 1), (5, 3, 2, (1, 2, 1))],
)
def test_max_pool3d_matches_max_pool3d_on_minus_inf_grid(kernel, stride, padding, dilation):
    x = _input(5, 4)
    assert_dense_equivalent(snn.SparseMaxPool3d(kernel, stride, padding, dilation), x)


def test_max_pool3d_equals_zero_filled_twin_for_nonnegative_features():
    x = _input(6, 3)
    x = x.replace(x.feats.abs())
    pooled = snn.SparseMaxPool3d(3, 2, 1)(x)
    dense = torch.nn.functional.max_pool3d(x.dense(), 3, 2, 1)
    c = pooled.coords
    assert torch.equal(pooled.feats, dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((3, 2, 1), (1, 2, 3), (1, 1, 0))])
def test_avg_pool3d_matches_avg_pool3d(kernel, stride, padding, count_include_pad):
    assert_dense_equivalent(snn.SparseAvgPool3d(kernel, stride, padding, count_include_pad), _input(8, 4))


@pytest.mark.parametrize(
    "module",
    [
        snn.SparseConv3d(4, 8, 3, 2, 1),
        snn.SubMConv3d(4, 8, 3),
        snn.SparseConvTranspose3d(4, 8, 3, 2, 1, 1),
        snn.SparseConv3d(8, 8, 3, 1, 1, groups=8),
    ],
    ids=["conv", "subm", "transposed", "depthwise"],
)
@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_dense_twin_at_float32_precision(module, device):
    """On CUDA this is the Triton backend (``backend="auto"``) against cuDNN at float32 precision."""
    x = _input(9, module.in_channels, dtype=torch.float32).to(device)
    report = check_dense_equivalence(copy.deepcopy(module).to(device), x, rtol=1e-5)
    assert report.passed, report.failures


def test_checker_detects_a_wrong_module():
    """The checker itself must fail on a module that is off by a little."""

    class Off(snn.SubMConv3d):
        def forward(self, input):
            out = super().forward(input)
            return out.replace(out.feats * (1 + 1e-6))

    x = _input(4, 4)
    module = Off(4, 4, 3).double()
    _, sites = dense_twin(module, x)
    twin_of_module = lambda d: torch.nn.functional.conv3d(d, module.weight, module.bias, 1, "same")  # noqa: E731
    report = check_dense_equivalence(module, x, dense_fn=twin_of_module, expected_sites=sites)
    assert not report.passed
    assert any("forward" in f for f in report.failures)
    with pytest.raises(AssertionError, match="disagrees with its dense twin"):
        assert_dense_equivalent(module, x, dense_fn=twin_of_module, expected_sites=sites)


def test_checker_detects_wrong_active_sites():
    x = _input(4, 4)
    module = snn.SparseConv3d(4, 4, 3, 2).double()
    twin, sites = dense_twin(module, x)
    wrong = sites.clone()
    wrong.view(-1)[wrong.view(-1).nonzero()[0]] = False
    report = check_dense_equivalence(module, x, dense_fn=twin, expected_sites=wrong)
    assert not report.sites_match and not report.passed
