"""The one core op: gather, GEMM, scatter over a kernel map.

    out[o] += x[i] @ W[k]      for every pair (i, o) of offset k in the map

with grouped weights ``W: [K, G, C_in/G, C_out/G]`` (group ``g`` reads input channels
``g*C_in/G ...`` and writes output channels ``g*C_out/G ...``). Every convolution in
the package (submanifold, strided, transposed, inverse) lowers to this function.

Backward, from the same map:

    grad_x[i] += grad_out[o] @ W[k]^T        grad_W[k] = x[pairs_in]^T @ grad_out[pairs_out]

Only the input features, the weight and the (shared, cached) map are saved for
backward; gathered blocks are recomputed rather than kept.
"""
from __future__ import annotations

import torch

from .kernel_map import KernelMap


def _grouped_mm(rows: torch.Tensor, weight_k: torch.Tensor) -> torch.Tensor:
    """``rows [P, G*Ci] @ blockdiag(weight_k [G, Ci, Co]) -> [P, G*Co]``."""
    groups, c_in, c_out = weight_k.shape
    if groups == 1:
        return rows @ weight_k[0]
    per_group = rows.view(-1, groups, c_in).transpose(0, 1)  # [G, P, Ci]
    return torch.bmm(per_group, weight_k).transpose(0, 1).reshape(-1, groups * c_out)


def _apply_map(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, num_rows: int, transpose: bool):
    """Forward (``transpose=False``: in -> out with W) or its adjoint (out -> in with W^T)."""
    if transpose:
        weight = weight.transpose(2, 3)
        gather_side, scatter_side = kmap.out_rows, kmap.in_rows
    else:
        gather_side, scatter_side = kmap.in_rows, kmap.out_rows
    groups, _, c_out = weight.shape[1:]
    out = feats.new_zeros(num_rows, groups * c_out)
    bounds = kmap.offset_bounds
    for k in range(kmap.kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        if k == kmap.identity_offset:
            out += _grouped_mm(feats, weight[k])
            continue
        gathered = feats.index_select(0, gather_side[lo:hi])
        out.index_add_(0, scatter_side[lo:hi], _grouped_mm(gathered, weight[k]))
    return out


def _weight_grad(feats: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, kmap: KernelMap):
    kernel_volume, groups, c_in, c_out = weight.shape
    grad_weight = torch.zeros_like(weight)
    bounds = kmap.offset_bounds
    for k in range(kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        if k == kmap.identity_offset:
            x_k, g_k = feats, grad_out
        else:
            x_k = feats.index_select(0, kmap.in_rows[lo:hi])
            g_k = grad_out.index_select(0, kmap.out_rows[lo:hi])
        if groups == 1:
            grad_weight[k, 0] = x_k.t() @ g_k
        else:
            x_g = x_k.view(-1, groups, c_in).permute(1, 2, 0)  # [G, Ci, P]
            g_g = g_k.view(-1, groups, c_out).transpose(0, 1)  # [G, P, Co]
            grad_weight[k] = torch.bmm(x_g, g_g)
    return grad_weight


class _GatherGemmScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats, weight, kmap):
        ctx.kmap = kmap
        ctx.save_for_backward(feats, weight)
        return _apply_map(feats, weight, kmap, kmap.num_outputs, transpose=False)

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        kmap = ctx.kmap
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = _apply_map(grad_out, weight, kmap, kmap.num_inputs, transpose=True)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_grad(feats, grad_out, weight, kmap)
        return grad_feats, grad_weight, None


def gather_gemm_scatter(feats: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """Apply ``weight [K, G, C_in/G, C_out/G]`` over ``kernel_map``; returns ``[num_outputs, C_out]``.

    ``kernel_map`` pairs ``(i, o)`` of offset ``k`` contribute ``feats[i] @ W[k]`` (block-diagonal
    over groups) to row ``o``. Differentiable in ``feats`` and ``weight``.
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
    return _GatherGemmScatter.apply(feats.contiguous(), weight, kernel_map)
