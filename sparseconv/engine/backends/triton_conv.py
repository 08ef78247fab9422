"""Triton backend of the core op ``out[o] += x[i] @ W[k]`` (:mod:`sparseconv.engine.core`), for CUDA tensors.

Forward: an output-stationary implicit GEMM. From the kernel map, once per map (cached with
:meth:`~sparseconv.engine.kmap.KernelMap.derived`, built on the map's device with no host
round-trip), a :class:`_Plan`:

* a dense neighbour table ``table[k, r]``: the input row that reaches output row ``order[r]``
  through offset ``k``, or -1;
* ``order``: the output rows sorted by their offset mask (which offsets reach them), so the rows of
  one tile mostly share their pattern of missing neighbours (spconv's "mask implicit GEMM" idea);
* per tile of ``BLOCK_M`` consecutive sorted rows, the offsets that reach any of its rows
  (``tile_offsets[t, :tile_counts[t]]``, ascending); every other offset is skipped.

Each program owns one tile of output rows x ``BLOCK_N`` output channels of one group. It walks its
tile's offsets, gathers the input rows (masked loads where the table holds -1), multiplies them by
the offset's weight block with ``tl.dot`` into a float32 accumulator held in registers, and writes
the tile once. Every output element is computed by one program in a fixed order (offsets
ascending, input channels ascending): results are bitwise the same run to run, no atomics.

Backward: the input gradient is the same kernel over the transposed map
(:meth:`~sparseconv.engine.kmap.KernelMap.transpose`, whose plan is cached in turn) with ``W[k]^T``. The weight gradient
``grad_W[k] = x[in_rows_k]^T @ grad_out[out_rows_k]`` runs one program per (offset, split of the
offset's pairs, block of input channels x block of output channels, group), looping over its pairs
in order; the splits' partial sums (their number fixed by the map alone, at most ``_MAX_SPLITS``)
are added in order by a second kernel. No float atomics, so again deterministic.

Types: float32 (exact IEEE products by default; ``allow_tf32=True`` lets ``tl.dot`` use TF32
tensor cores), float16 and bfloat16 (tensor cores), all accumulated in float32 and rounded once.

Supported (:func:`supports`): CUDA tensors, or CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, how the tests prove it on a machine without a GPU); float32, float16,
bfloat16 (on compute capability 8.0 or newer); injective maps; no ``pair_weights`` (deformable and dynamic convolutions stay on the torch
path); fewer than 2**31 rows. Kernels are compiled (or wrapped for the interpreter) on first use,
per mode, and use Triton builtins only (no ``@triton.jit`` library functions such as ``tl.zeros``,
which Triton decorates for one mode when it is imported): so the interpreter runs them whether or not
``TRITON_INTERPRET`` was set before ``triton`` was imported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BLOCK_M = 64  # output rows per tile on a GPU
_BLOCK_M_INTERPRETED = 16  # smaller tiles under the interpreter: small test clouds still span several tiles
_BLOCK_P = 32  # pairs per step of the weight-gradient loop
_MIN_SPLIT = 256  # pairs per split of an offset in the weight gradient, at least...
_MAX_SPLITS = 16  # ...and at most this many splits per offset (partial gradients to add)
_INT32_MAX = 2**31 - 1


def interpreting() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels run on CPU tensors, in numpy."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def supports(feats, weight, kernel_map, pair_weights=None) -> bool:
    """Cases this backend computes: CUDA tensors (CPU tensors only under the interpreter), float32,
    float16 or bfloat16 (bfloat16 on GPUs of compute capability 8.0 or newer), an injective map, no
    ``pair_weights`` (those fall back to the torch path), and fewer than 2**31 rows."""
    device = feats.device
    if device.type == "cuda":
        on_device = feats.dtype != torch.bfloat16 or torch.cuda.get_device_capability(device)[0] >= 8
    else:
        on_device = device.type == "cpu" and interpreting()
    return (
        pair_weights is None
        and on_device
        and kernel_map.injective
        and weight.device == device
        and kernel_map.in_rows.device == device
        and feats.dtype in DTYPES
        and weight.dtype == feats.dtype
        and feats.dim() == 2
        and weight.dim() == 4
        and max(kernel_map.num_inputs, kernel_map.num_outputs, kernel_map.num_pairs) <= _INT32_MAX
    )


# --------------------------------------------------------------------------------------------- kernels


def _implicit_gemm_kernel(
    x_ptr, w_ptr, out_ptr, table_ptr, order_ptr, tile_offsets_ptr, tile_counts_ptr,
    num_rows, kernel_volume, c_in, c_out, x_row_stride, out_row_stride,
    w_stride_k, w_stride_g, w_stride_ci, w_stride_co,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):
    """One tile of output rows x one block of output channels of one group (see the module docstring)."""
    tile = tl.program_id(0)
    group = tl.program_id(2)
    positions = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = positions < num_rows
    rows = tl.load(order_ptr + positions, mask=row_ok, other=0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < c_out
    acc = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    count = tl.load(tile_counts_ptr + tile)
    for j in range(0, count):
        k = tl.load(tile_offsets_ptr + tile * kernel_volume + j)
        sources = tl.load(table_ptr + k.to(tl.int64) * num_rows + positions, mask=row_ok, other=-1)
        source_ok = sources >= 0
        x_rows = x_ptr + sources.to(tl.int64) * x_row_stride + group * c_in
        w_block = w_ptr + k * w_stride_k + group * w_stride_g
        for c0 in range(0, c_in, BLOCK_K):
            chans = c0 + tl.arange(0, BLOCK_K)
            chan_ok = chans < c_in
            a = tl.load(x_rows[:, None] + chans[None, :], mask=source_ok[:, None] & chan_ok[None, :], other=0.0)
            b = tl.load(
                w_block + chans[:, None] * w_stride_ci + cols[None, :] * w_stride_co,
                mask=chan_ok[:, None] & col_ok[None, :], other=0.0,
            )
            if DOT_IN_FP32:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    out = out_ptr + rows[:, None] * out_row_stride + group * c_out + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _weight_grad_kernel(
    x_ptr, g_ptr, partial_ptr, in_rows_ptr, out_rows_ptr, bounds_ptr,
    kernel_volume, num_splits, split_size, groups, c_in, c_out, x_row_stride, g_row_stride,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
    PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):
    """``partial[s, k, g, ci, co] = sum over pairs p of split s of offset k: x[in_p, ci] * g[out_p, co]``,
    pairs taken in order."""
    k = tl.program_id(0) // num_splits
    split = tl.program_id(0) % num_splits
    group = tl.program_id(2)
    blocks_co = (c_out + BLOCK_CO - 1) // BLOCK_CO
    ci = (tl.program_id(1) // blocks_co) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    co = (tl.program_id(1) % blocks_co) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    ci_ok = ci < c_in
    co_ok = co < c_out
    start = tl.load(bounds_ptr + k) + split * split_size
    stop = tl.minimum(tl.load(bounds_ptr + k + 1), start + split_size)
    acc = tl.full([BLOCK_CI, BLOCK_CO], 0.0, tl.float32)
    for p0 in range(start, stop, BLOCK_P):
        pairs = p0 + tl.arange(0, BLOCK_P)
        pair_ok = pairs < stop
        ins = tl.load(in_rows_ptr + pairs, mask=pair_ok, other=0).to(tl.int64)
        outs = tl.load(out_rows_ptr + pairs, mask=pair_ok, other=0).to(tl.int64)
        a = tl.load(
            x_ptr + ins[None, :] * x_row_stride + group * c_in + ci[:, None],
            mask=pair_ok[None, :] & ci_ok[:, None], other=0.0,
        )
        b = tl.load(
            g_ptr + outs[:, None] * g_row_stride + group * c_out + co[None, :],
            mask=pair_ok[:, None] & co_ok[None, :], other=0.0,
        )
        if DOT_IN_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    block = (((split * kernel_volume + k) * groups + group) * c_in + ci[:, None]) * c_out + co[None, :]
    tl.store(partial_ptr + block, acc, mask=ci_ok[:, None] & co_ok[None, :])


def _sum_splits_kernel(partial_ptr, out_ptr, num_splits, numel, BLOCK: tl.constexpr):
    """``out[e] = partial[0, e] + partial[1, e] + ...`` left to right, rounded once to ``out``'s type."""
    elems = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = elems < numel
    acc = tl.full([BLOCK], 0.0, tl.float32)
    for s in range(0, num_splits):
        acc += tl.load(partial_ptr + s * numel + elems, mask=ok, other=0.0)
    tl.store(out_ptr + elems, acc.to(out_ptr.dtype.element_ty), mask=ok)


_KERNEL_SOURCES = {
    "implicit_gemm": _implicit_gemm_kernel,
    "weight_grad": _weight_grad_kernel,
    "sum_splits": _sum_splits_kernel,
}
_compiled: dict = {}


def _kernel(name: str):
    """The ``triton.jit`` wrapper of a kernel for the current mode (compiled or interpreted): the
    decorator reads ``TRITON_INTERPRET`` when it is applied, so it is applied on first use per mode."""
    mode = (name, interpreting())
    if mode not in _compiled:
        _compiled[mode] = triton.jit(_KERNEL_SOURCES[name])
    return _compiled[mode]


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class _Plan:
    """The forward layout of one kernel map (see the module docstring). Shape:
    ``order [N_out]``, ``table [K, N_out]``, ``tile_offsets [T, K]``, ``tile_counts [T]``, int32."""

    order: torch.Tensor
    table: torch.Tensor
    tile_offsets: torch.Tensor
    tile_counts: torch.Tensor
    block_m: int


_MASK_BITS = 62  # offsets per int64 word of a row's offset mask


def _build_plan(kmap, block_m: int) -> _Plan:
    """All device ops, no host round-trip: the pair counts are the map's Python ``offset_bounds``."""
    device = kmap.in_rows.device
    volume, num_rows = kmap.kernel_volume, kmap.num_outputs
    counts = torch.tensor(kmap.pair_counts(), dtype=torch.int64, device=device)
    offset_of_pair = torch.repeat_interleave(
        torch.arange(volume, device=device), counts, output_size=kmap.num_pairs
    )
    table = torch.full((volume * num_rows,), -1, dtype=torch.int32, device=device)
    table.index_put_((offset_of_pair * num_rows + kmap.out_rows,), kmap.in_rows.to(torch.int32))
    table = table.view(volume, num_rows)
    reached = table >= 0
    # Sort rows by their offset mask, lexicographically over 62-bit words (a stable sort per word,
    # least significant word first), so equal masks end up next to each other.
    order = torch.arange(num_rows, device=device)
    for first in reversed(range(0, volume, _MASK_BITS)):
        bits = reached[first:first + _MASK_BITS].to(torch.int64)
        weights = torch.pow(2, torch.arange(bits.shape[0] - 1, -1, -1, device=device, dtype=torch.int64))
        word = (bits * weights[:, None]).sum(0)
        order = order[torch.sort(word[order], descending=True, stable=True).indices]
    table = table[:, order].contiguous()
    num_tiles = -(-num_rows // block_m)
    padded = torch.zeros((volume, num_tiles * block_m), dtype=torch.bool, device=device)
    padded[:, :num_rows] = reached[:, order]
    tile_reached = padded.view(volume, num_tiles, block_m).any(2).t()  # [T, K]
    offsets = torch.arange(volume, device=device, dtype=torch.int32).expand(num_tiles, volume)
    tile_offsets = torch.where(tile_reached, offsets, volume).sort(dim=1).values.to(torch.int32).contiguous()
    tile_counts = tile_reached.sum(1, dtype=torch.int32)
    return _Plan(order.to(torch.int32), table, tile_offsets, tile_counts, block_m)


def _plan(kmap) -> _Plan:
    block_m = _BLOCK_M_INTERPRETED if interpreting() else _BLOCK_M
    return kmap.derived(("triton_plan", block_m), lambda m: _build_plan(m, block_m))


def _bounds(kmap) -> torch.Tensor:
    return kmap.derived(
        "triton_offset_bounds",
        lambda m: torch.tensor(m.offset_bounds, dtype=torch.int64, device=m.in_rows.device),
    )


# ------------------------------------------------------------------------------------------ launching


def _block(channels: int, largest: int) -> int:
    """A power-of-two channel block for ``tl.dot``: at least 16, at most ``largest``."""
    return max(16, min(largest, triton.next_power_of_2(max(1, channels))))


def _dot_options(dtype: torch.dtype, allow_tf32: bool):
    """``(input precision of tl.dot, widen_bfloat16)``. Triton's interpreter mishandles bfloat16: its
    ``tl.dot`` multiplies the raw 16-bit patterns as integers and its float32 -> bfloat16 cast
    truncates. Under the interpreter, bfloat16 tiles are therefore widened to float32 before the dot
    (exact: a product of two bfloat16 values fits float32) and results are stored in float32 and
    rounded to bfloat16 by torch (round to nearest even, as the GPU's cast does)."""
    precision = "tf32" if allow_tf32 and dtype == torch.float32 else "ieee"
    return precision, dtype == torch.bfloat16 and interpreting()


def _implicit_gemm(x: torch.Tensor, weight: torch.Tensor, kmap, allow_tf32: bool) -> torch.Tensor:
    """``out[o] = sum over pairs (i, o) of offset k: x[i] @ W[k]`` (blockwise over groups), every
    output row written (zero where no pair reaches it). ``weight [K, G, Ci, Co]``, any strides."""
    groups, c_in, c_out = weight.shape[1:]
    precision, widen = _dot_options(x.dtype, allow_tf32)
    out = torch.empty((kmap.num_outputs, groups * c_out), dtype=torch.float32 if widen else x.dtype, device=x.device)
    if out.numel() == 0:
        return out.to(x.dtype)
    plan = _plan(kmap)
    block_n = _block(c_out, 64)
    grid = (plan.tile_counts.numel(), triton.cdiv(c_out, block_n), groups)
    _kernel("implicit_gemm")[grid](
        x, weight, out, plan.table, plan.order, plan.tile_offsets, plan.tile_counts,
        kmap.num_outputs, kmap.kernel_volume, c_in, c_out, x.stride(0), out.stride(0), *weight.stride(),
        BLOCK_M=plan.block_m, BLOCK_N=block_n, BLOCK_K=_block(c_in, 32),
        PRECISION=precision, DOT_IN_FP32=widen,
    )
    return out.to(x.dtype)


def _weight_grad(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, kmap, allow_tf32: bool):
    """``grad_W[k, g] = x[in_rows_k, g]^T @ grad_out[out_rows_k, g]``, in ``weight``'s dtype."""
    volume, groups, c_in, c_out = weight.shape
    precision, widen = _dot_options(x.dtype, allow_tf32)
    grad = torch.empty((volume, groups, c_in, c_out), dtype=torch.float32 if widen else weight.dtype, device=weight.device)
    if grad.numel() == 0:
        return grad.to(weight.dtype)
    largest = max(kmap.pair_counts(), default=0)
    split_size = max(_MIN_SPLIT, -(-largest // _MAX_SPLITS))
    num_splits = max(1, -(-largest // split_size))
    partial = torch.empty((num_splits, volume, groups, c_in, c_out), dtype=torch.float32, device=weight.device)
    block_ci, block_co = _block(c_in, 64), _block(c_out, 64)
    grid = (volume * num_splits, triton.cdiv(c_in, block_ci) * triton.cdiv(c_out, block_co), groups)
    _kernel("weight_grad")[grid](
        x, grad_out, partial, kmap.in_rows, kmap.out_rows, _bounds(kmap),
        volume, num_splits, split_size, groups, c_in, c_out, x.stride(0), grad_out.stride(0),
        BLOCK_P=_BLOCK_P, BLOCK_CI=block_ci, BLOCK_CO=block_co, PRECISION=precision, DOT_IN_FP32=widen,
    )
    block = 1024
    _kernel("sum_splits")[(triton.cdiv(grad.numel(), block),)](partial, grad, num_splits, grad.numel(), BLOCK=block)
    return grad.to(weight.dtype)


class TritonConv:
    """The backend object :func:`sparseconv.engine.core.gather_gemm_scatter` runs: ``forward`` and
    ``backward`` with the signatures of the torch path's ``_forward`` / ``_backward``.

    ``allow_tf32``: float32 GEMMs may use TF32 tensor cores (inputs rounded to a 10-bit mantissa);
    False (default) keeps exact float32 products.
    """

    def __init__(self, allow_tf32: bool = False):
        self.allow_tf32 = allow_tf32

    def forward(self, feats, weight, pair_weights, kmap) -> torch.Tensor:
        assert pair_weights is None
        return _implicit_gemm(feats, weight, kmap, self.allow_tf32)

    def backward(self, feats, weight, pair_weights, grad_out, kmap, needs):
        assert pair_weights is None
        need_feats, need_weight, _ = needs
        grad_feats: Optional[torch.Tensor] = None
        grad_weight: Optional[torch.Tensor] = None
        if need_feats:
            grad_feats = _implicit_gemm(grad_out, weight.transpose(2, 3), kmap.transpose(), self.allow_tf32)
        if need_weight:
            grad_weight = _weight_grad(feats, grad_out, weight, kmap, self.allow_tf32)
        return grad_feats, grad_weight, None


# ------------------------------------------------------------------------- the backend's interface

SUPPORTED = "CUDA float32/float16/bfloat16 features, injective kernel maps and no pair_weights"
_EXACT = TritonConv(allow_tf32=False)
forward = _EXACT.forward
backward = _EXACT.backward
_PLAN_TENSORS = 5  # order, table, tile_offsets, tile_counts, offset bounds


def _plan_tensors(kmap) -> list:
    plan = _plan(kmap)
    return [plan.order, plan.table, plan.tile_offsets, plan.tile_counts, _bounds(kmap)]


def map_tensors(kmap, backward: bool) -> list:
    """The forward plan of ``kmap`` (and, with ``backward``, of its transpose) and its offset bounds
    as tensors, built once per map: what the registered op hands to :func:`attach_map_tensors`."""
    tensors = _plan_tensors(kmap)
    if backward:
        tensors += _plan_tensors(kmap.transpose())
    return tensors


def attach_map_tensors(kmap, tensors) -> None:
    """Cache the plans of :func:`map_tensors` on ``kmap`` (a map the registered op rebuilt from its
    tensors), so the kernels do not rebuild them; plans not given are built when needed."""
    block_m = _BLOCK_M_INTERPRETED if interpreting() else _BLOCK_M
    for target, start in ((kmap, 0), (kmap.transpose(), _PLAN_TENSORS)):
        if len(tensors) >= start + _PLAN_TENSORS:
            order, table, tile_offsets, tile_counts, bounds = tensors[start:start + _PLAN_TENSORS]
            plan = _Plan(order, table, tile_offsets, tile_counts, block_m)
            target.derived(("triton_plan", block_m), lambda _map, plan=plan: plan)
            target.derived("triton_offset_bounds", lambda _map, bounds=bounds: bounds)
