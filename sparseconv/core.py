"""The one core op: gather, GEMM, scatter over a kernel map.

    out[o] += x[i] @ W[k]      for every pair (i, o) of offset k in the map

with grouped weights ``W: [K, G, C_in/G, C_out/G]`` (group ``g`` reads input channels
``g*C_in/G ...`` and writes output channels ``g*C_out/G ...``). Every convolution in
the package (submanifold, strided, transposed, inverse) lowers to this function.

Backward, from the same map:

    grad_x[i] += grad_out[o] @ W[k]^T        grad_W[k] = x[pairs_in]^T @ grad_out[pairs_out]

How it is fast on a CPU (measured in ``benchmarks/bench_conv.py``):

* Within one offset every input row and every output row appears at most once (a kernel
  tap moves each site by a fixed vector). So instead of a scatter-add (slow, serial on
  CPU) the op gathers the touched output rows, accumulates the GEMM into them in place
  (``addmm_``) and copies them back (``index_copy_``): gathers and copies are parallel
  and cache friendly.
* The identity offset of a submanifold map (the centre tap) is one plain GEMM that also
  initialises the output, with no gather or scatter.
* Gather and accumulate buffers are allocated once per call, sized for the largest
  offset, and reused: no per-offset allocation, and extra memory stays bounded by
  ``max_k(pairs_k) * (C_in + C_out)`` rather than growing with the whole map.
* Reduced-precision inputs (bfloat16, float16) are computed with float32 accumulation
  and rounded once at the end.

Only the input features, the weight and the (shared, cached) map are saved for
backward; gathered blocks are recomputed rather than kept. Results are deterministic:
the order of every floating-point addition is fixed by the map.
"""
from __future__ import annotations


import torch

from .kernel_map import KernelMap

_REDUCED = (torch.bfloat16, torch.float16)


def _grouped_mm(rows: torch.Tensor, weight_k: torch.Tensor) -> torch.Tensor:
    """``rows [P, G*Ci] @ blockdiag(weight_k [G, Ci, Co]) -> [P, G*Co]``."""
    groups, c_in, c_out = weight_k.shape
    if groups == 1:
        return rows @ weight_k[0]
    per_group = rows.view(-1, groups, c_in).transpose(0, 1)  # [G, P, Ci]
    return torch.bmm(per_group, weight_k).transpose(0, 1).reshape(-1, groups * c_out)


def _largest_offset(kmap: KernelMap) -> int:
    counts = [c for k, c in enumerate(kmap.pair_counts()) if k != kmap.identity_offset]
    return max(counts, default=0)


def _grouped_weight_grad(x_k: torch.Tensor, g_k: torch.Tensor, out: torch.Tensor) -> None:
    """``out [G, Ci, Co] = x_k^T @ g_k`` per group, written in place."""
    groups, c_in, c_out = out.shape
    if groups == 1:
        torch.mm(x_k.t(), g_k, out=out[0])
    else:
        torch.bmm(x_k.view(-1, groups, c_in).permute(1, 2, 0), g_k.view(-1, groups, c_out).transpose(0, 1), out=out)


def _accumulate(target: torch.Tensor, rows: torch.Tensor, gathered: torch.Tensor, weight_k: torch.Tensor, buffer):
    """``target[rows] += gathered @ weight_k`` for rows that are unique within the offset."""
    acc = torch.index_select(target, 0, rows, out=buffer[: rows.numel()])
    if weight_k.shape[0] == 1:
        acc.addmm_(gathered, weight_k[0])
    else:
        acc += _grouped_mm(gathered, weight_k)
    target.index_copy_(0, rows, acc)


def _forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    groups, c_in, c_out = weight.shape[1:]
    identity = kmap.identity_offset
    if identity is not None:
        out = _grouped_mm(feats, weight[identity])
    else:
        out = feats.new_zeros(kmap.num_outputs, groups * c_out)
    largest = _largest_offset(kmap)
    gathered_buffer = feats.new_empty(largest, groups * c_in)
    acc_buffer = feats.new_empty(largest, groups * c_out)
    bounds = kmap.offset_bounds
    for k in range(kmap.kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi or k == identity:
            continue
        gathered = torch.index_select(feats, 0, kmap.in_rows[lo:hi], out=gathered_buffer[: hi - lo])
        _accumulate(out, kmap.out_rows[lo:hi], gathered, weight[k], acc_buffer)
    return out


def _backward(feats, weight, grad_out, kmap: KernelMap, need_feats: bool, need_weight: bool):
    """Both gradients in one pass over the map: each offset's output-gradient rows are gathered
    once and serve the input gradient (``g @ W^T`` scattered to the inputs) and the weight
    gradient (``x^T @ g``)."""
    groups, c_in, c_out = weight.shape[1:]
    weight_t = weight.transpose(2, 3)
    identity = kmap.identity_offset
    grad_feats = grad_weight = None
    if need_feats:
        if identity is not None:
            grad_feats = _grouped_mm(grad_out, weight_t[identity])
        else:
            grad_feats = feats.new_zeros(kmap.num_inputs, groups * c_in)
    if need_weight:
        grad_weight = torch.zeros_like(weight)
        if identity is not None:
            _grouped_weight_grad(feats, grad_out, grad_weight[identity])
    largest = _largest_offset(kmap)
    g_buffer = grad_out.new_empty(largest, groups * c_out)
    x_buffer = feats.new_empty(largest, groups * c_in) if need_weight else None
    acc_buffer = feats.new_empty(largest, groups * c_in) if need_feats else None
    bounds = kmap.offset_bounds
    for k in range(kmap.kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi or k == identity:
            continue
        in_rows = kmap.in_rows[lo:hi]
        g_k = torch.index_select(grad_out, 0, kmap.out_rows[lo:hi], out=g_buffer[: hi - lo])
        if need_weight:
            x_k = torch.index_select(feats, 0, in_rows, out=x_buffer[: hi - lo])
            _grouped_weight_grad(x_k, g_k, grad_weight[k])
        if need_feats:
            _accumulate(grad_feats, in_rows, g_k, weight_t[k], acc_buffer)
    return grad_feats, grad_weight


class _GatherGemmScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats, weight, kmap):
        ctx.kmap = kmap
        ctx.save_for_backward(feats, weight)
        return _forward(feats, weight, kmap)

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        grad_feats, grad_weight = _backward(
            feats, weight, grad_out.contiguous(), ctx.kmap, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return grad_feats, grad_weight, None


def gather_gemm_scatter(feats: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """Apply ``weight [K, G, C_in/G, C_out/G]`` over ``kernel_map``; returns ``[num_outputs, C_out]``.

    ``kernel_map`` pairs ``(i, o)`` of offset ``k`` contribute ``feats[i] @ W[k]`` (block-diagonal
    over groups) to row ``o``. Differentiable in ``feats`` and ``weight``. bfloat16/float16
    inputs accumulate in float32 and return their own dtype.
    """
    if feats.dim() != 2 or feats.shape[0] != kernel_map.num_inputs:
        raise ValueError(f"feats must have shape [{kernel_map.num_inputs}, C], got {tuple(feats.shape)}")
    if weight.dim() != 4 or weight.shape[0] != kernel_map.kernel_volume:
        raise ValueError(
            f"weight must have shape [K={kernel_map.kernel_volume}, G, C_in/G, C_out/G], got {tuple(weight.shape)}"
        )
    if feats.shape[1] != weight.shape[1] * weight.shape[2]:
        raise ValueError(
            f"feats has {feats.shape[1]} channels but weight expects {weight.shape[1] * weight.shape[2]}"
        )
    if feats.dtype != weight.dtype:
        raise TypeError(f"feats dtype {feats.dtype} does not match weight dtype {weight.dtype}")
    if feats.dtype in _REDUCED:
        out = _GatherGemmScatter.apply(feats.float().contiguous(), weight.float(), kernel_map)
        return out.to(feats.dtype)
    return _GatherGemmScatter.apply(feats.contiguous(), weight, kernel_map)
