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

Backends (the ``backend=`` argument of :func:`gather_gemm_scatter`): ``"torch"`` is
:mod:`sparseconv.engine.backends.torch_ref`, the reference. ``"numba"`` is
:mod:`sparseconv.engine.backends.numba_conv`, a fused
gather-GEMM-scatter kernel compiled with numba (optional dependency) for CPU float32/float64
injective maps without pair weights. ``"triton"`` is :mod:`sparseconv.engine.backends.triton_conv`, an
output-stationary implicit GEMM in Triton (optional dependency) for CUDA float32/float16/bfloat16
injective maps without pair weights (deformable and dynamic convolutions stay on the torch path):
float16/bfloat16 are computed natively with float32 accumulation, float32 with exact products unless
``allow_tf32=True``; CPU tensors are accepted only under Triton's interpreter (``TRITON_INTERPRET=1``,
how it is tested without a GPU). An explicitly named backend raises if it is missing or the case is
unsupported. ``"auto"`` (default) takes triton for CUDA tensors where it imports and supports the case,
numba for CPU tensors where it is installed and supports the case (on the 2-core CI machine its forward
took 0.25-0.53x and its backward 0.27-0.58x of the torch path's time at 16-64 channels,
``benchmarks/bench_backends.py``), else torch. No GPU has measured the triton backend yet
(``benchmarks/bench_gpu.py`` is ready to). All are deterministic, with no float atomics; they agree
to rounding, not bitwise (different summation order).
With ``create_graph=True`` the backward runs on the torch path (whose ``out=`` buffers autograd
cannot differentiate: double backward is not supported). Backends are looked up by name
(:data:`backends.CORE_BACKENDS`), so a new one slots in there.

The op itself runs as the registered operator ``torch.ops.sparseconv.gather_gemm_scatter``
(:mod:`sparseconv.engine.op`, with a fake implementation and its backward as a second operator),
which ``torch.compile`` and ``torch.export`` capture as one graph node; this function is the
Python front end that checks arguments, applies autocast and picks the backend.
"""
from __future__ import annotations


from typing import Optional

import torch

from . import backends
from .kmap import KernelMap
from .op import gather_gemm_scatter_op

_REDUCED = (torch.bfloat16, torch.float16)


def _select_backend(backend: str, feats, weight, pair_weights, kmap: KernelMap) -> str:
    """The name of the backend to run: ``backend`` itself (raising if it cannot run this case), or
    for ``"auto"`` the first of :data:`backends.AUTO_ORDER` that is available and supports it,
    else ``"torch"``."""
    if backend == "torch":
        return backend
    for name in backends.AUTO_ORDER if backend == "auto" else (backend,):
        module = backends.core_backend(name)
        if module is None:
            if backend == name:
                raise RuntimeError(f"backend={name!r} needs {name} ({backends.unavailable_reason(name)})")
            continue
        if module.supports(feats, weight, kmap, pair_weights):
            return name
        if backend == name:
            raise ValueError(
                f"backend={name!r} supports {module.SUPPORTED}; got {feats.dtype} on {feats.device}, "
                f"injective={kmap.injective}, pair_weights={'given' if pair_weights is not None else None}"
            )
    return "torch"


def _select_triton(backend: str, feats, weight, pair_weights, kmap: KernelMap, allow_tf32: bool) -> Optional[str]:
    """The Triton backend's name (``"triton"``, or ``"triton_tf32"`` with ``allow_tf32``) when
    ``backend="triton"``, or ``"auto"`` on CUDA tensors it supports; else None. Asked before the
    reduced-precision cast: Triton computes float16/bfloat16 natively."""
    if backend != "triton" and not (backend == "auto" and feats.device.type == "cuda"):
        return None
    module = backends.triton_backend()
    if module is None:
        if backend == "triton":
            raise RuntimeError(f"backend='triton' needs triton ({backends.triton_unavailable_reason()})")
        return None
    if not module.supports(feats, weight, kmap, pair_weights):
        if backend != "triton":
            return None
        if feats.device.type == "cpu" and not module.interpreting():
            raise RuntimeError(
                "backend='triton' needs CUDA tensors, got CPU tensors; CPU tensors run only in Triton's "
                "interpreter (environment variable TRITON_INTERPRET=1)"
            )
        raise ValueError(
            "backend='triton' supports CUDA float32/float16/bfloat16 features, injective kernel maps and no "
            f"pair_weights; got {feats.dtype} on {feats.device} (weight on {weight.device}, map on "
            f"{kmap.in_rows.device}), injective={kmap.injective}, "
            f"pair_weights={'given' if pair_weights is not None else None}"
        )
    return "triton_tf32" if allow_tf32 else "triton"


def _apply(feats, weight, pair_weights, kmap: KernelMap, backend: str, chosen: Optional[str] = None) -> torch.Tensor:
    """Run the registered op (:mod:`sparseconv.engine.op`) on ``kmap``'s tensors with the chosen
    backend; the backend's map-derived tensors for the backward are prepared only when a
    gradient can flow."""
    name = chosen or _select_backend(backend, feats, weight, pair_weights, kmap)
    differentiable = torch.is_grad_enabled() and (
        feats.requires_grad or weight.requires_grad or (pair_weights is not None and pair_weights.requires_grad)
    )
    map_tensors = backends.core_backend(name).map_tensors(kmap, differentiable)
    identity = -1 if kmap.identity_offset is None else kmap.identity_offset
    return gather_gemm_scatter_op(
        feats, weight, pair_weights, kmap.in_rows, kmap.out_rows, list(kmap.offset_bounds), kmap.num_outputs,
        identity, kmap.injective, name, map_tensors,
    )


def autocast_inputs(feats: torch.Tensor, *others: Optional[torch.Tensor]):
    """Inside ``torch.autocast`` for ``feats``' device, cast ``feats`` and the floating tensors in
    ``others`` to the autocast dtype, as autocast does for ``F.conv3d``; unchanged otherwise."""
    device_type = feats.device.type
    if not torch.is_autocast_enabled(device_type):
        return (feats, *others)
    dtype = torch.get_autocast_dtype(device_type)
    cast = lambda t: t if t is None or not t.is_floating_point() else t.to(dtype)  # noqa: E731
    return (cast(feats), *(cast(t) for t in others))


def gather_gemm_scatter(
    feats: torch.Tensor,
    weight: torch.Tensor,
    kernel_map: KernelMap,
    pair_weights: Optional[torch.Tensor] = None,
    backend: str = "auto",
    allow_tf32: bool = False,
) -> torch.Tensor:
    """Apply ``weight [K, G, C_in/G, C_out/G]`` over ``kernel_map``; returns ``[num_outputs, C_out]``.

    ``kernel_map`` pairs ``(i, o)`` of offset ``k`` contribute ``a * feats[i] @ W[k]`` (block-diagonal
    over groups) to row ``o``, where ``a`` is the pair's entry of ``pair_weights`` (``[P]``, aligned
    with ``kernel_map.in_rows``; 1 when omitted). Pair weights carry trilinear sampling weights,
    modulation masks and per-sample tap attention, so deformable and dynamic convolutions run
    through this same op. Differentiable in ``feats``, ``weight`` and ``pair_weights``.
    bfloat16/float16 inputs accumulate in float32 and return their own dtype. Inside
    ``torch.autocast`` the inputs are first cast to the autocast dtype (:func:`autocast_inputs`),
    so a sparse conv under autocast computes in the same precision as ``F.conv3d`` would.

    ``backend``: ``"auto"`` (default), ``"torch"``, ``"numba"`` or ``"triton"``; see the module docstring.
    ``allow_tf32``: let the Triton backend's float32 GEMMs use TF32 tensor cores (inputs rounded to a
    10-bit mantissa); by default, and on every other path, float32 products are exact.
    """
    if not isinstance(backend, str) or backend not in backends.BACKENDS:
        raise ValueError(f"backend must be one of {backends.BACKENDS}, got {backend!r}")
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {allow_tf32!r}")
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
    feats, weight, pair_weights = autocast_inputs(feats, weight, pair_weights)
    if feats.dtype != weight.dtype:
        raise TypeError(f"feats dtype {feats.dtype} does not match weight dtype {weight.dtype}")
    if pair_weights is not None:
        if pair_weights.shape != (kernel_map.num_pairs,):
            raise ValueError(
                f"pair_weights must have shape [{kernel_map.num_pairs}] (one per pair), got {tuple(pair_weights.shape)}"
            )
        if pair_weights.dtype != feats.dtype:
            raise TypeError(f"pair_weights dtype {pair_weights.dtype} does not match feats dtype {feats.dtype}")
    triton = _select_triton(backend, feats, weight, pair_weights, kernel_map, allow_tf32)
    if triton is not None:
        return _apply(feats.contiguous(), weight, pair_weights, kernel_map, backend, chosen=triton)
    if feats.dtype in _REDUCED:
        pairs32 = None if pair_weights is None else pair_weights.float()
        feats32, weight32 = feats.float().contiguous(), weight.float()
        return _apply(feats32, weight32, pairs32, kernel_map, backend).to(feats.dtype)
    return _apply(feats.contiguous(), weight, pair_weights, kernel_map, backend)
