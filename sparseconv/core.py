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


def _apply_map(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, transpose: bool) -> torch.Tensor:
    """Forward (``transpose=False``: in -> out with W) or its adjoint (out -> in with W^T)."""
    if transpose:
        weight = weight.transpose(2, 3)
        gather_side, scatter_side, num_rows = kmap.out_rows, kmap.in_rows, kmap.num_inputs
    else:
        gather_side, scatter_side, num_rows = kmap.in_rows, kmap.out_rows, kmap.num_outputs
    groups, c_in, c_out = weight.shape[1:]
    identity = kmap.identity_offset
    if identity is not None:
        out = _grouped_mm(feats, weight[identity])
    else:
        out = feats.new_zeros(num_rows, groups * c_out)
    largest = _largest_offset(kmap)
    gathered_buffer = feats.new_empty(largest, groups * c_in)
    acc_buffer = feats.new_empty(largest, groups * c_out)
    bounds = kmap.offset_bounds
    for k in range(kmap.kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi or k == identity:
            continue
        targets = scatter_side[lo:hi]
        gathered = torch.index_select(feats, 0, gather_side[lo:hi], out=gathered_buffer[: hi - lo])
        acc = torch.index_select(out, 0, targets, out=acc_buffer[: hi - lo])
        if groups == 1:
            acc.addmm_(gathered, weight[k, 0])
        else:
            acc += _grouped_mm(gathered, weight[k])
        out.index_copy_(0, targets, acc)
    return out


def _weight_grad(feats: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    kernel_volume, groups, c_in, c_out = weight.shape
    grad_weight = torch.zeros_like(weight)
    largest = _largest_offset(kmap)
    x_buffer = feats.new_empty(largest, groups * c_in)
    g_buffer = grad_out.new_empty(largest, groups * c_out)
    bounds = kmap.offset_bounds
    for k in range(kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        if k == kmap.identity_offset:
            x_k, g_k = feats, grad_out
        else:
            x_k = torch.index_select(feats, 0, kmap.in_rows[lo:hi], out=x_buffer[: hi - lo])
            g_k = torch.index_select(grad_out, 0, kmap.out_rows[lo:hi], out=g_buffer[: hi - lo])
        if groups == 1:
            torch.mm(x_k.t(), g_k, out=grad_weight[k, 0])
        else:
            x_g = x_k.view(-1, groups, c_in).permute(1, 2, 0)  # [G, Ci, P]
            g_g = g_k.view(-1, groups, c_out).transpose(0, 1)  # [G, P, Co]
            torch.bmm(x_g, g_g, out=grad_weight[k])
    return grad_weight


class _GatherGemmScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats, weight, kmap):
        ctx.kmap = kmap
        ctx.save_for_backward(feats, weight)
        return _apply_map(feats, weight, kmap, transpose=False)

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        kmap = ctx.kmap
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = _apply_map(grad_out, weight, kmap, transpose=True)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_grad(feats, grad_out, weight, kmap)
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
