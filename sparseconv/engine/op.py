"""The core op registered with PyTorch: ``torch.ops.sparseconv.gather_gemm_scatter``.

:func:`sparseconv.engine.core.gather_gemm_scatter` validates its arguments, picks a backend and
calls this operator, which takes tensors and plain numbers only (a :class:`KernelMap` is a Python
object that ``torch.compile`` and ``torch.export`` cannot pass through an operator), so that
graphs capture it as one node:

* ``sparseconv::gather_gemm_scatter(feats, weight, pair_weights?, in_rows, out_rows,
  offset_bounds: int[K+1], num_outputs, identity_offset (-1: none), injective, backend: str,
  map_tensors: Tensor[]) -> Tensor [num_outputs, C_out]``
* ``sparseconv::gather_gemm_scatter_backward(grad_out, <the same arguments>, need_feats,
  need_weight, need_pairs) -> (grad_feats, grad_weight, grad_pairs)``, each an empty tensor
  when not asked for.

Both have fake (meta) implementations, so dynamo, AOTAutograd and ``torch.export`` trace them on
any device without running them; the backward op is registered as the forward's autograd formula.
The real implementations rebuild the map (:func:`kernel_map_from_tensors`), hand the backend its
``map_tensors`` (what it derived from the map, e.g. numba's tile layout) and run the backend's
``forward`` / ``backward``: the same functions, on the same data, as an eager call, so results and
their bits do not depend on whether the op ran eagerly, compiled or exported.

With ``create_graph=True`` the backward runs the torch path's backward as ordinary torch operations
instead of the backward op, as the core op did before it was registered; that backward writes into
preallocated buffers (``out=`` variants), which autograd refuses to differentiate, so double
backward is not supported (unchanged by the registration).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import backends
from .kmap import KernelMap

FORWARD_NAME = "sparseconv::gather_gemm_scatter"
BACKWARD_NAME = "sparseconv::gather_gemm_scatter_backward"


def kernel_map_from_tensors(
    in_rows: Tensor,
    out_rows: Tensor,
    offset_bounds: Sequence[int],
    num_inputs: int,
    num_outputs: int,
    identity_offset: int,
    injective: bool,
) -> KernelMap:
    """A :class:`KernelMap` with these pairs (no key, no coordinate sets); ``identity_offset`` -1
    stands for None."""
    return KernelMap(
        key=None,
        in_rows=in_rows,
        out_rows=out_rows,
        offset_bounds=tuple(int(b) for b in offset_bounds),
        num_inputs=int(num_inputs),
        num_outputs=int(num_outputs),
        input_ref=None,
        output_ref=None,
        identity_offset=None if identity_offset < 0 else int(identity_offset),
        injective=bool(injective),
    )


def _backend_map(backend: str, feats, in_rows, out_rows, offset_bounds, num_outputs, identity_offset, injective,
                 map_tensors):
    module = backends.core_backend(backend)
    if module is None:
        raise RuntimeError(f"backend={backend!r} is unavailable ({backends.unavailable_reason(backend)})")
    kmap = kernel_map_from_tensors(
        in_rows, out_rows, offset_bounds, feats.shape[0], num_outputs, identity_offset, injective
    )
    module.attach_map_tensors(kmap, map_tensors)
    return module, kmap


@torch.library.custom_op(FORWARD_NAME, mutates_args=())
def gather_gemm_scatter_op(
    feats: Tensor,
    weight: Tensor,
    pair_weights: Optional[Tensor],
    in_rows: Tensor,
    out_rows: Tensor,
    offset_bounds: List[int],
    num_outputs: int,
    identity_offset: int,
    injective: bool,
    backend: str,
    map_tensors: List[Tensor],
) -> Tensor:
    """``out[o] += a_p * feats[i] @ weight[k]`` over the pairs; see :mod:`sparseconv.engine.core`."""
    module, kmap = _backend_map(
        backend, feats, in_rows, out_rows, offset_bounds, num_outputs, identity_offset, injective, map_tensors
    )
    # The inputs already have the dtype to compute in; autocast must not recast the GEMMs.
    with torch.autocast(feats.device.type, enabled=False):
        return module.forward(feats, weight, pair_weights, kmap).contiguous()


@gather_gemm_scatter_op.register_fake
def _forward_fake(feats, weight, pair_weights, in_rows, out_rows, offset_bounds, num_outputs, identity_offset,
                  injective, backend, map_tensors):
    return feats.new_empty(num_outputs, weight.shape[1] * weight.shape[3])


@torch.library.custom_op(BACKWARD_NAME, mutates_args=())
def gather_gemm_scatter_backward_op(
    grad_out: Tensor,
    feats: Tensor,
    weight: Tensor,
    pair_weights: Optional[Tensor],
    in_rows: Tensor,
    out_rows: Tensor,
    offset_bounds: List[int],
    num_outputs: int,
    identity_offset: int,
    injective: bool,
    backend: str,
    map_tensors: List[Tensor],
    need_feats: bool,
    need_weight: bool,
    need_pairs: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`gather_gemm_scatter_op` in feats, weight and pair weights (empty when not
    needed)."""
    module, kmap = _backend_map(
        backend, feats, in_rows, out_rows, offset_bounds, num_outputs, identity_offset, injective, map_tensors
    )
    needs = (need_feats, need_weight, need_pairs)
    with torch.autocast(feats.device.type, enabled=False):
        grads = module.backward(feats, weight, pair_weights, grad_out.contiguous(), kmap, needs)
    # contiguous, as the fake implementation promises (a backend may follow the weight's strides)
    return tuple(feats.new_empty(0) if g is None else g.contiguous() for g in grads)


@gather_gemm_scatter_backward_op.register_fake
def _backward_fake(grad_out, feats, weight, pair_weights, in_rows, out_rows, offset_bounds, num_outputs,
                   identity_offset, injective, backend, map_tensors, need_feats, need_weight, need_pairs):
    empty = feats.new_empty(0)
    return (
        feats.new_empty(feats.shape) if need_feats else empty,
        weight.new_empty(weight.shape) if need_weight else empty,
        pair_weights.new_empty(pair_weights.shape) if need_pairs and pair_weights is not None else empty,
    )


def _setup_context(ctx, inputs, output):
    feats, weight, pair_weights, in_rows, out_rows, bounds, num_outputs, identity, injective, backend, tensors = inputs
    ctx.save_for_backward(feats, weight, pair_weights)
    # The map's tensors are kept like the map itself was (they belong to its cache, no copy), not
    # saved: only features and weights count as saved activations.
    ctx.map_args = (in_rows, out_rows, bounds, num_outputs, identity, injective, backend, list(tensors))


def _backward(ctx, grad_out):
    feats, weight, pair_weights = ctx.saved_tensors
    in_rows, out_rows, bounds, num_outputs, identity, injective, backend, tensors = ctx.map_args
    need_feats, need_weight, need_pairs = ctx.needs_input_grad[:3]
    if torch.is_grad_enabled():  # create_graph=True: differentiable torch operations
        from .backends import torch_ref

        kmap = kernel_map_from_tensors(in_rows, out_rows, bounds, feats.shape[0], num_outputs, identity, injective)
        with torch.autocast(feats.device.type, enabled=False):
            grads = torch_ref.backward(
                feats, weight, pair_weights, grad_out.contiguous(), kmap, (need_feats, need_weight, need_pairs)
            )
    else:
        grads = gather_gemm_scatter_backward_op(
            grad_out, feats, weight, pair_weights, in_rows, out_rows, bounds, num_outputs, identity, injective,
            backend, tensors, need_feats, need_weight, need_pairs,
        )
        grads = tuple(g if need else None for g, need in zip(grads, (need_feats, need_weight, need_pairs)))
    # one gradient (None) per non-differentiable argument; map_tensors takes a list of them
    return (*grads, None, None, None, None, None, None, None, [None] * len(tensors))


gather_gemm_scatter_op.register_autograd(_backward, setup_context=_setup_context)
