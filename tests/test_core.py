"""The gather-GEMM-scatter core: gradcheck in float64, what backward keeps, bad input."""
import pytest
import torch

from sparseconv.engine.core import gather_gemm_scatter
from sparseconv.engine.kmap import KernelMap, KernelMapKey
from sparseconv.testing import random_sparse_tensor


def _map(kind="submanifold", kernel=(3, 3, 3), stride=(1, 1, 1)):
    x = random_sparse_tensor((5, 5, 5), 4, batch_size=2, density=0.3, seed=1)
    return x, x.coordinate_set.kernel_map(KernelMapKey(kind, kernel, stride))


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("kind,kernel,stride", [("submanifold", (3, 3, 3), (1, 1, 1)), ("conv", (2, 3, 2), (2, 1, 2)),
                                                ("transposed", (3, 1, 2), (2, 2, 1))])
def test_gradcheck_float64(kind, kernel, stride, groups):
    x, kmap = _map(kind, kernel, stride)
    feats = x.feats.clone().requires_grad_()
    weight = torch.randn(kmap.kernel_volume, groups, 4 // groups, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: gather_gemm_scatter(f, w, kmap), (feats, weight))


def test_matches_explicit_sum_over_pairs():
    x, kmap = _map()
    weight = torch.randn(kmap.kernel_volume, 2, 2, 3, dtype=torch.float64)
    expected = torch.zeros(kmap.num_outputs, 6, dtype=torch.float64)
    for k in range(kmap.kernel_volume):
        ins, outs = kmap.pairs(k)
        for i, o in zip(ins.tolist(), outs.tolist()):
            for g in range(2):
                expected[o, 3 * g:3 * g + 3] += x.feats[i, 2 * g:2 * g + 2] @ weight[k, g]
    assert torch.allclose(gather_gemm_scatter(x.feats, weight, kmap), expected, rtol=1e-12, atol=1e-12)


def test_backward_keeps_only_features_and_weight():
    x, kmap = _map()
    feats = x.feats.clone().requires_grad_()
    weight = torch.randn(kmap.kernel_volume, 1, 4, 8, dtype=torch.float64, requires_grad=True)
    out = gather_gemm_scatter(feats, weight, kmap)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert len(saved) == 2
    assert saved[0].data_ptr() == feats.data_ptr() and saved[1].data_ptr() == weight.data_ptr()


def test_bad_input_is_rejected():
    x, kmap = _map()
    weight = torch.randn(kmap.kernel_volume, 1, 4, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"feats must have shape \[%d, C\]" % kmap.num_inputs):
        gather_gemm_scatter(x.feats[:-1], weight, kmap)
    with pytest.raises(ValueError, match="weight must have shape"):
        gather_gemm_scatter(x.feats, weight[:-1], kmap)
    with pytest.raises(ValueError, match="feats has 4 channels but weight expects 6"):
        gather_gemm_scatter(x.feats, torch.randn(kmap.kernel_volume, 2, 3, 8, dtype=torch.float64), kmap)
    with pytest.raises(TypeError, match="does not match weight dtype"):
        gather_gemm_scatter(x.feats.float(), weight, kmap)


def test_bitwise_deterministic_forward_and_backward():
    x = random_sparse_tensor((9, 9, 9), 16, batch_size=2, density=0.3, dtype=torch.float32, seed=4)
    kmap = x.coordinate_set.kernel_map(KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)))
    weight = torch.randn(27, 1, 16, 32)
    grad = torch.randn(kmap.num_outputs, 32)
    results = []
    for _ in range(2):
        f = x.feats.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        out = gather_gemm_scatter(f, w, kmap)
        out.backward(grad)
        results.append((out.detach(), f.grad, w.grad))
    for first, second in zip(*results):
        assert torch.equal(first, second)


def test_bfloat16_accumulates_in_float32():
    x, kmap = _map()
    weight = torch.randn(kmap.kernel_volume, 1, 4, 8, dtype=torch.float64)
    reference = gather_gemm_scatter(x.feats, weight, kmap)
    feats_bf16, weight_bf16 = x.feats.bfloat16(), weight.bfloat16()
    out = gather_gemm_scatter(feats_bf16, weight_bf16, kmap)
    assert out.dtype == torch.bfloat16
    # same rounded inputs, exact float64 arithmetic, one final rounding: what fp32 accumulation gives
    exact = gather_gemm_scatter(feats_bf16.double(), weight_bf16.double(), kmap).bfloat16()
    assert torch.allclose(out.double(), exact.double(), rtol=2 ** -7, atol=1e-6 * exact.abs().max().item())
    assert (out.double() - reference).abs().max() <= 0.02 * reference.abs().max()


def _scrambled_map(kmap):
    """The same pairs but each offset's pairs doubled and shuffled: rows repeat within an offset,
    so the map is not injective (like the 8 corner pairs per tap of a deformable conv)."""
    gen = torch.Generator().manual_seed(0)
    ins, outs, counts = [], [], []
    for k in range(kmap.kernel_volume):
        i, o = kmap.pairs(k)
        i, o = torch.cat((i, i)), torch.cat((o, o))
        perm = torch.randperm(i.numel(), generator=gen)
        ins.append(i[perm])
        outs.append(o[perm])
        counts.append(i.numel())
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + c)
    return KernelMap(kmap.key, torch.cat(ins), torch.cat(outs), tuple(bounds), kmap.num_inputs, kmap.num_outputs,
                     kmap.input, kmap.output, injective=False)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("injective", [True, False])
def test_gradcheck_with_pair_weights(groups, injective):
    x, kmap = _map("conv", (2, 2, 2), (1, 1, 1))
    if not injective:
        kmap = _scrambled_map(kmap)
    feats = x.feats.clone().requires_grad_()
    weight = torch.randn(kmap.kernel_volume, groups, 4 // groups, 2, dtype=torch.float64, requires_grad=True)
    pairs = torch.rand(kmap.num_pairs, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w, a: gather_gemm_scatter(f, w, kmap, a), (feats, weight, pairs))


def test_pair_weights_match_explicit_sum_on_non_injective_map():
    x, kmap = _map("submanifold", (3, 3, 3))
    kmap = _scrambled_map(kmap)
    weight = torch.randn(kmap.kernel_volume, 1, 4, 3, dtype=torch.float64)
    pairs = torch.rand(kmap.num_pairs, dtype=torch.float64)
    expected = torch.zeros(kmap.num_outputs, 3, dtype=torch.float64)
    for k in range(kmap.kernel_volume):
        lo, hi = kmap.offset_bounds[k], kmap.offset_bounds[k + 1]
        for p in range(lo, hi):
            expected[kmap.out_rows[p]] += pairs[p] * x.feats[kmap.in_rows[p]] @ weight[k, 0]
    assert torch.allclose(gather_gemm_scatter(x.feats, weight, kmap, pairs), expected, rtol=1e-12, atol=1e-12)


def test_pair_weights_of_ones_change_nothing():
    x, kmap = _map()
    weight = torch.randn(kmap.kernel_volume, 1, 4, 3, dtype=torch.float64)
    ones = torch.ones(kmap.num_pairs, dtype=torch.float64)
    assert torch.allclose(gather_gemm_scatter(x.feats, weight, kmap, ones), gather_gemm_scatter(x.feats, weight, kmap))
    with pytest.raises(ValueError, match=r"pair_weights must have shape \[%d\]" % kmap.num_pairs):
        gather_gemm_scatter(x.feats, weight, kmap, ones[:-1])
