"""The Triton backend of the core op equals the torch path, forward and both gradients, for every
dtype and every geometry family; it is deterministic, and its arguments and limits are checked.

No GPU is needed: the kernels run in Triton's interpreter on CPU tensors. The interpreter is switched
on per test (``TRITON_INTERPRET=1`` through ``monkeypatch``, read by the backend at each call), so the
rest of the suite is untouched by it. Where a GPU is, the main checks run again compiled on CUDA
tensors (``device`` parameter, marked ``cuda``).
"""
import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from sparseconv.engine import backends  # noqa: E402
from sparseconv.engine.backends import triton_conv  # noqa: E402
from sparseconv.engine.core import gather_gemm_scatter  # noqa: E402
from sparseconv.engine.kmap import KernelMapKey  # noqa: E402
from sparseconv.testing import random_sparse_tensor  # noqa: E402


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(autouse=True)
def interpreter(request, monkeypatch):
    """CPU tests run the kernels in Triton's interpreter, CUDA tests compiled."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)


SUBM = KernelMapKey("submanifold", (3, 3, 3))
CONV = KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1))
# name: (key, inverse (run the transpose of the key's map), groups, c_in, c_out, empty batch entries)
FAMILIES = {
    "submanifold": (SUBM, False, 1, 4, 6, ()),
    "strided": (CONV, False, 1, 5, 4, ()),
    "strided_k2_no_identity": (KernelMapKey("conv", (2, 2, 2), (2, 2, 2)), False, 1, 4, 4, ()),
    "transposed": (KernelMapKey("transposed", (3, 3, 3), (2, 2, 2), (1, 1, 1)), False, 1, 4, 3, ()),
    "inverse": (CONV, True, 1, 4, 5, ()),
    "groups": (SUBM, False, 2, 3, 4, ()),
    "groups_strided": (KernelMapKey("conv", (2, 3, 2), (2, 1, 2), (0, 1, 0)), False, 4, 2, 2, ()),
    "dilation": (KernelMapKey("submanifold", (3, 3, 3), dilation=(2, 1, 2)), False, 1, 4, 4, ()),
    "dilated_strided": (KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (2, 2, 2), (2, 2, 2)), False, 1, 3, 4, ()),
    "non_cubic": (KernelMapKey("submanifold", (3, 1, 2)), False, 1, 4, 4, ()),
    "non_cubic_strided": (KernelMapKey("conv", (1, 3, 2), (1, 2, 2)), False, 1, 4, 4, ()),
    "empty_batch_entries": (SUBM, False, 1, 4, 4, (0, 2)),
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (rtol, atol relative to the reference's largest magnitude) against a float64 reference: one
# rounding of the output type plus float32 accumulation
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


def _case(key, inverse, groups, c_in, c_out, empty=(), seed=0, shape=(6, 6, 6), density=0.2, batch_size=3,
          device="cpu"):
    x = random_sparse_tensor(
        shape, groups * c_in, batch_size=batch_size, density=density, empty_batches=empty,
        dtype=torch.float32, seed=seed,
    ).to(device)
    kmap = x.coordinate_set.kernel_map(key)
    if inverse:  # the inverse map sends the coarse output back to the input sites
        kmap = kmap.transpose()
        x_feats = torch.randn(kmap.num_inputs, groups * c_in, generator=torch.Generator().manual_seed(seed + 2))
    else:
        x_feats = x.feats
    weight = torch.randn(kmap.kernel_volume, groups, c_in, c_out, generator=torch.Generator().manual_seed(seed + 1))
    return x_feats.to(device), weight.to(device), kmap


def _run(feats, weight, kmap, backend, dtype, grad_seed=7, **kwargs):
    feats = feats.to(dtype).requires_grad_()
    weight = weight.to(dtype).requires_grad_()
    out = gather_gemm_scatter(feats, weight, kmap, backend=backend, **kwargs)
    assert out.dtype == dtype
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.device, dtype)
    grad_feats, grad_weight = torch.autograd.grad(out, (feats, weight), grad)
    assert grad_feats.dtype == dtype and grad_weight.dtype == dtype
    return out.detach(), grad_feats, grad_weight


def _reference(feats, weight, kmap, dtype, grad_seed=7):
    """The torch path in float64 on the inputs rounded to ``dtype`` (and the same output gradient)."""
    feats64 = feats.to(dtype).double().requires_grad_()
    weight64 = weight.to(dtype).double().requires_grad_()
    out = gather_gemm_scatter(feats64, weight64, kmap, backend="torch")
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.device, dtype).double()
    return (out.detach(), *torch.autograd.grad(out, (feats64, weight64), grad))


def _assert_close(actual, expected, dtype, what):
    rtol, atol = TOL[dtype]
    actual, expected = actual.cpu(), expected.cpu()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_matches_torch_path(family, dtype, device):
    key, inverse, groups, c_in, c_out, empty = FAMILIES[family]
    feats, weight, kmap = _case(key, inverse, groups, c_in, c_out, empty, device=device)
    assert kmap.num_pairs > 0 and kmap.num_outputs > triton_conv._BLOCK_M_INTERPRETED  # several tiles
    got = _run(feats, weight, kmap, "triton", dtype)
    expected = _reference(feats, weight, kmap, dtype)
    for name, a, e in zip(("output", "input gradient", "weight gradient"), got, expected):
        _assert_close(a, e, dtype, name)
    if dtype == torch.float32:  # and against the torch path in the same precision
        for a, e in zip(got, _run(feats, weight, kmap, "torch", dtype)):
            torch.testing.assert_close(a.cpu(), e.cpu(), rtol=1e-5, atol=1e-5 * max(1.0, float(e.abs().max())))


@pytest.mark.parametrize("device", DEVICES)
def test_wide_channels_span_several_blocks(device):
    """Channels beyond one block of input channels (32) and of output channels (64)."""
    feats, weight, kmap = _case(SUBM, False, 1, 40, 72, density=0.1, shape=(5, 5, 5), batch_size=2, device=device)
    for a, e in zip(_run(feats, weight, kmap, "triton", torch.float32), _reference(feats, weight, kmap, torch.float32)):
        _assert_close(a, e, torch.float32, "wide")


def test_more_than_62_offsets_sort_by_a_two_word_mask():
    feats, weight, kmap = _case(KernelMapKey("submanifold", (5, 5, 3)), False, 1, 2, 3)
    assert kmap.kernel_volume == 75
    for a, e in zip(_run(feats, weight, kmap, "triton", torch.float32), _reference(feats, weight, kmap, torch.float32)):
        _assert_close(a, e, torch.float32, "75 offsets")


def test_weight_gradient_split_into_partial_sums(monkeypatch):
    """Offsets with more pairs than a split take several programs whose partial sums are added in order."""
    monkeypatch.setattr(triton_conv, "_MIN_SPLIT", 8)
    monkeypatch.setattr(triton_conv, "_MAX_SPLITS", 4)
    feats, weight, kmap = _case(SUBM, False, 2, 3, 4)
    assert max(kmap.pair_counts()) > 3 * 8  # every split used by the largest offset
    got = _run(feats, weight, kmap, "triton", torch.float32)
    expected = _reference(feats, weight, kmap, torch.float32)
    _assert_close(got[2], expected[2], torch.float32, "weight gradient")


def test_plan_reproduces_the_map_and_skips_only_unreached_offsets():
    _, _, kmap = _case(CONV, False, 1, 1, 1)
    plan = triton_conv._plan(kmap)
    order = plan.order.long()
    assert torch.equal(order.sort().values, torch.arange(kmap.num_outputs))
    for k in range(kmap.kernel_volume):  # the table holds exactly the pairs of every offset
        reached = plan.table[k] >= 0
        from_table = sorted(zip(plan.table[k][reached].tolist(), order[reached].tolist()))
        from_map = sorted(zip(*(rows.tolist() for rows in kmap.pairs(k))))
        assert from_table == from_map
    block = plan.block_m
    for t in range(plan.tile_counts.numel()):
        reached = (plan.table[:, t * block:(t + 1) * block] >= 0).any(1).nonzero().squeeze(1).tolist()
        assert plan.tile_offsets[t, : plan.tile_counts[t]].tolist() == reached
    masks = [tuple((plan.table[:, r] >= 0).tolist()) for r in range(kmap.num_outputs)]
    assert masks == sorted(masks, reverse=True)  # rows sorted by offset mask: equal masks adjacent


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_bitwise(device, dtype):
    feats, weight, kmap = _case(SUBM, False, 2, 3, 4, device=device)
    first = _run(feats, weight, kmap, "triton", dtype)
    second = _run(feats, weight, kmap, "triton", dtype)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_allow_tf32_runs_and_is_validated(device):
    feats, weight, kmap = _case(SUBM, False, 1, 4, 4, device=device)
    got = _run(feats, weight, kmap, "triton", torch.float32, allow_tf32=True)
    for a, e in zip(got, _reference(feats, weight, kmap, torch.float32)):
        _assert_close(a, e, torch.bfloat16, "tf32")  # TF32 keeps 10 mantissa bits: bfloat16-level bound
    with pytest.raises(TypeError, match="allow_tf32 must be a bool"):
        gather_gemm_scatter(feats, weight, kmap, backend="triton", allow_tf32=1)


def test_empty_output_and_no_pairs():
    feats, weight, kmap = _case(SUBM, False, 1, 4, 4)
    no_pairs = dataclasses.replace(
        kmap, in_rows=kmap.in_rows[:0], out_rows=kmap.out_rows[:0],
        offset_bounds=(0,) * (kmap.kernel_volume + 1), identity_offset=None,
    )
    out, grad_feats, grad_weight = _run(feats, weight, no_pairs, "triton", torch.float32)
    assert out.shape == (kmap.num_outputs, 4) and not out.any()
    assert not grad_feats.any() and not grad_weight.any()


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    feats, weight, kmap = _case(SUBM, False, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"backend='triton' needs CUDA tensors.*TRITON_INTERPRET=1"):
        gather_gemm_scatter(feats, weight, kmap, backend="triton")


def test_unsupported_cases_are_refused_by_name():
    feats, weight, kmap = _case(SUBM, False, 1, 4, 4)
    with pytest.raises(ValueError, match="backend='triton' supports .*got torch.float64"):
        gather_gemm_scatter(feats.double(), weight.double(), kmap, backend="triton")
    with pytest.raises(ValueError, match="backend='triton' supports .*pair_weights=given"):
        gather_gemm_scatter(feats, weight, kmap, torch.ones(kmap.num_pairs), backend="triton")
    with pytest.raises(ValueError, match="backend='triton' supports .*injective=False"):
        gather_gemm_scatter(feats, weight, dataclasses.replace(kmap, injective=False), backend="triton")
    module = backends.triton_backend()
    assert module.supports(feats, weight, kmap) and not module.supports(feats, weight, kmap, torch.ones(kmap.num_pairs))


def test_auto_takes_triton_only_for_cuda_tensors(monkeypatch):
    """On CPU tensors ``auto`` keeps its CPU choice even with the interpreter on."""
    def refuse(*args):
        raise AssertionError("auto ran the triton backend on CPU tensors")

    monkeypatch.setattr(triton_conv.TritonConv, "forward", refuse)
    feats, weight, kmap = _case(SUBM, False, 1, 4, 4)
    out = gather_gemm_scatter(feats, weight, kmap, backend="auto")
    torch.testing.assert_close(out, gather_gemm_scatter(feats, weight, kmap, backend="torch"))


def test_missing_triton_is_reported(monkeypatch):
    monkeypatch.setitem(backends._modules, "triton_conv", None)
    monkeypatch.setitem(backends._errors, "triton_conv", ImportError("triton is not installed"))
    feats, weight, kmap = _case(SUBM, False, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"backend='triton' needs triton \(ImportError: triton is not installed\)"):
        gather_gemm_scatter(feats, weight, kmap, backend="triton")
    out = gather_gemm_scatter(feats, weight, kmap)  # auto falls back silently only where triton was optional
    assert out.shape == (kmap.num_outputs, 4)


def test_autocast_inputs_run_natively_in_the_autocast_dtype():
    """Under autocast the core op casts to the autocast dtype first; Triton then computes in it."""
    feats, weight, kmap = _case(SUBM, False, 1, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gather_gemm_scatter(feats, weight, kmap, backend="triton")
    assert out.dtype == torch.bfloat16
    _assert_close(out, _reference(feats, weight, kmap, torch.bfloat16)[0], torch.bfloat16, "autocast")
