"""The torch reference path of the core op: per kernel offset, gather, GEMM, scatter.

This is the reference every other backend is proven equal to, and the path for anything a compiled
backend does not cover (pair weights, non-injective maps, CUDA tensors without a GPU backend, double
backward). How it is fast on a CPU is described in :mod:`sparseconv.engine.core`.

Depthwise fast path: when every group has one input and one output channel (``weight [K, C, 1, 1]``,
``groups == C_in == C_out``) a pair's contribution ``x[i, c] * W[k, c]`` is an elementwise product,
so :func:`grouped_mm` and :func:`grouped_weight_grad` skip the batched 1 x 1 GEMMs and multiply
(and reduce) elementwise over the whole ``[P, C]`` block: same map walk, same accumulation,
no GEMM (``benchmarks/bench_variants.py`` times it against the grouped-GEMM formulation). The numba
backend has the same branch (:func:`~sparseconv.engine.backends.numba_conv._pairs_depthwise`).
"""
from __future__ import annotations

import torch

from ..kmap import KernelMap


def grouped_mm(rows: torch.Tensor, weight_k: torch.Tensor) -> torch.Tensor:
    """``rows [P, G*Ci] @ blockdiag(weight_k [G, Ci, Co]) -> [P, G*Co]``."""
    groups, c_in, c_out = weight_k.shape
    if groups == 1:
        return rows @ weight_k[0]
    if c_in == 1 and c_out == 1:  # depthwise: one multiply per pair and channel
        return rows * weight_k[:, 0, 0]
    per_group = rows.view(-1, groups, c_in).transpose(0, 1)  # [G, P, Ci]
    return torch.bmm(per_group, weight_k).transpose(0, 1).reshape(-1, groups * c_out)


def _largest_offset(kmap: KernelMap) -> int:
    counts = [c for k, c in enumerate(kmap.pair_counts()) if k != kmap.identity_offset]
    return max(counts, default=0)


def grouped_weight_grad(x_k: torch.Tensor, g_k: torch.Tensor, out: torch.Tensor) -> None:
    """``out [G, Ci, Co] = x_k^T @ g_k`` per group, written in place."""
    groups, c_in, c_out = out.shape
    if groups == 1:
        torch.mm(x_k.t(), g_k, out=out[0])
    elif c_in == 1 and c_out == 1:  # depthwise: a per-channel dot product over the pairs
        torch.sum(x_k * g_k, 0, out=out[:, 0, 0])
    else:
        torch.bmm(x_k.view(-1, groups, c_in).permute(1, 2, 0), g_k.view(-1, groups, c_out).transpose(0, 1), out=out)


def _accumulate(target: torch.Tensor, rows: torch.Tensor, contribution: torch.Tensor, injective: bool, buffer):
    """``target[rows] += contribution``. Rows unique within the offset (injective maps) take the
    parallel gather-add-copy route; others a scatter-add."""
    if not injective:
        target.index_add_(0, rows, contribution)
        return
    acc = torch.index_select(target, 0, rows, out=buffer[: rows.numel()])
    acc += contribution
    target.index_copy_(0, rows, acc)


def _accumulate_mm(target, rows, gathered, weight_k, injective: bool, buffer) -> None:
    """``target[rows] += gathered @ weight_k`` (block-diagonal over groups)."""
    if injective and weight_k.shape[0] == 1:
        acc = torch.index_select(target, 0, rows, out=buffer[: rows.numel()])
        acc.addmm_(gathered, weight_k[0])
        target.index_copy_(0, rows, acc)
    else:
        _accumulate(target, rows, grouped_mm(gathered, weight_k), injective, buffer)


def forward(feats, weight, pair_weights, kmap: KernelMap) -> torch.Tensor:
    groups, c_in, c_out = weight.shape[1:]
    identity = kmap.identity_offset
    if identity is not None and pair_weights is None:
        out = grouped_mm(feats, weight[identity])
    else:
        out = feats.new_zeros(kmap.num_outputs, groups * c_out)
        identity = None
    largest = _largest_offset(kmap) if identity is not None else max(kmap.pair_counts(), default=0)
    gathered_buffer = feats.new_empty(largest, groups * c_in)
    acc_buffer = feats.new_empty(largest, groups * c_out)
    bounds = kmap.offset_bounds
    for k in range(kmap.kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi or k == identity:
            continue
        gathered = torch.index_select(feats, 0, kmap.in_rows[lo:hi], out=gathered_buffer[: hi - lo])
        if pair_weights is not None:
            gathered.mul_(pair_weights[lo:hi, None])
        _accumulate_mm(out, kmap.out_rows[lo:hi], gathered, weight[k], kmap.injective, acc_buffer)
    return out


def backward(feats, weight, pair_weights, grad_out, kmap: KernelMap, needs):
    """All gradients in one pass over the map: each offset's output-gradient rows are gathered
    once and serve the input gradient (``a * g @ W^T`` scattered to the inputs), the weight
    gradient (``(a * x)^T @ g``) and the pair-weight gradient (``<x, g @ W^T>`` per pair)."""
    need_feats, need_weight, need_pairs = needs
    groups, c_in, c_out = weight.shape[1:]
    weight_t = weight.transpose(2, 3)
    identity = kmap.identity_offset if pair_weights is None else None
    grad_feats = grad_weight = grad_pairs = None
    if need_feats:
        if identity is not None:
            grad_feats = grouped_mm(grad_out, weight_t[identity])
        else:
            grad_feats = feats.new_zeros(kmap.num_inputs, groups * c_in)
    if need_weight:
        grad_weight = torch.zeros_like(weight)
        if identity is not None:
            grouped_weight_grad(feats, grad_out, grad_weight[identity])
    if need_pairs:
        grad_pairs = torch.zeros_like(pair_weights)
    largest = _largest_offset(kmap) if identity is not None else max(kmap.pair_counts(), default=0)
    g_buffer = grad_out.new_empty(largest, groups * c_out)
    x_buffer = feats.new_empty(largest, groups * c_in) if (need_weight or need_pairs) else None
    acc_buffer = feats.new_empty(largest, groups * c_in) if need_feats else None
    bounds = kmap.offset_bounds
    for k in range(kmap.kernel_volume):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi or k == identity:
            continue
        in_rows = kmap.in_rows[lo:hi]
        g_k = torch.index_select(grad_out, 0, kmap.out_rows[lo:hi], out=g_buffer[: hi - lo])
        x_k = None
        if need_weight or need_pairs:
            x_k = torch.index_select(feats, 0, in_rows, out=x_buffer[: hi - lo])
        if pair_weights is None:
            if need_weight:
                grouped_weight_grad(x_k, g_k, grad_weight[k])
            if need_feats:
                _accumulate_mm(grad_feats, in_rows, g_k, weight_t[k], kmap.injective, acc_buffer)
            continue
        a_k = pair_weights[lo:hi, None]
        back = grouped_mm(g_k, weight_t[k])  # g @ W^T: [P_k, C_in]
        if need_pairs:
            grad_pairs[lo:hi] = (x_k * back).sum(1)
        if need_weight:
            grouped_weight_grad(x_k.mul_(a_k), g_k, grad_weight[k])
        if need_feats:
            _accumulate(grad_feats, in_rows, back.mul_(a_k), kmap.injective, acc_buffer)
    return grad_feats, grad_weight, grad_pairs


SUPPORTED = "every case (any device and floating dtype, pair weights, non-injective maps)"


def supports(feats, weight, kernel_map, pair_weights=None) -> bool:
    """The reference path computes every case."""
    return True


def map_tensors(kmap: KernelMap, backward: bool) -> list:
    """Nothing beyond the map's own pairs is needed."""
    return []


def attach_map_tensors(kmap: KernelMap, tensors) -> None:
    """Nothing to attach (see :func:`map_tensors`)."""
