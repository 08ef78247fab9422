"""numba-compiled CPU backend of the core op ``out[o] += x[i] @ W[k]`` (see :mod:`sparseconv.core`).

One fused kernel per call: offsets in order, and within an offset a ``prange`` over tasks of
``_TASK`` consecutive pairs. Output rows are unique within an offset (injective maps), so tasks
never write the same row and need no atomics; each output element receives its offsets'
contributions in offset order with a fixed summation order per pair, so results are bitwise
deterministic, independent of the thread count.

The micro-kernel is written with explicit SIMD vectors (a small numba extension below: a vector
type lowered to an LLVM ``<16 x float>`` / ``<8 x double>`` and ``fma``/load/store/broadcast
intrinsics), because left to itself LLVM either scalarises the loops (numba disables the SLP
vectoriser) or spills: a block of 4 pairs x 2 vectors of output channels keeps 8 accumulators in
registers over the whole input-channel loop, reading one weight row segment per input channel for
all 4 pairs and broadcasting the 4 input values. Leftover output channels (a channel count not a
multiple of the vector width, e.g. 3 or 5) take a scalar loop. Channel counts are runtime values:
one compiled kernel serves every layer of a dtype.

What runs where:

* forward: the identity offset of a submanifold map stays one ``torch`` GEMM that initialises the
  output (as in the torch path); every other offset runs in the kernel.
* backward: the input gradient is the same kernel over the transposed map with ``W^T``; the weight
  gradient is the torch path's own code (gather + GEMM per offset), unchanged.

Supported (:func:`supports`): CPU, float32/float64, injective maps, no ``pair_weights``. Anything
else stays on the torch path. Compile cost: about 2-3 s per dtype on first use in a fresh cache
(2-core EPYC), written to numba's on-disk cache (``cache=True``: ``__pycache__`` next to this file,
or numba's user-wide cache dir when that is read-only), so later processes load it in well under a
second.
"""
from __future__ import annotations

import warnings

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_TASK = 128  # pairs per parallel task

# Start numba's threading layer now, without its warning that the system's TBB is too old: it then
# takes OpenMP, which is what this backend wants anyway (see _run on sharing it with torch).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*TBB threading layer", category=numba.NumbaWarning)
    numba.get_num_threads()


# ---------------------------------------------------------------- explicit SIMD vectors in numba


class _Vec(types.Type):
    def __init__(self, dtype, lanes):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"SparseconvVec({dtype}x{lanes})")


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


_LANES = {types.float32: 16, types.float64: 8}  # one 512-bit register (two 256-bit ones without AVX-512)


def _vec_of(arr):
    return _Vec(arr.dtype, _LANES[arr.dtype])


def _element_ptr(context, builder, arrty, arr, idx):
    return builder.gep(context.make_array(arrty)(context, builder, arr).data, [idx])


@intrinsic
def _vload(typingctx, arr, idx):
    """``arr.flat[idx : idx + lanes]`` (1-D contiguous ``arr``, no bounds check)."""
    vt = _vec_of(arr)

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(ptr, context.get_value_type(vt).as_pointer()), align=1)

    return vt(arr, idx), codegen


@intrinsic
def _vstore(typingctx, arr, idx, vec):
    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, vec), codegen


@intrinsic
def _vbroadcast(typingctx, arr, idx):
    """``arr.flat[idx]`` in every lane."""
    vt = _vec_of(arr)

    def codegen(context, builder, sig, args):
        scalar = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))
        lt = context.get_value_type(vt)
        i32 = ir.IntType(32)
        one = builder.insert_element(ir.Constant(lt, ir.Undefined), scalar, ir.Constant(i32, 0))
        mask = ir.Constant(ir.VectorType(i32, vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(one, ir.Constant(lt, ir.Undefined), mask)

    return vt(arr, idx), codegen


@intrinsic
def _vzero(typingctx, arr):
    vt = _vec_of(arr)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def _vfma(typingctx, a, b, c):
    """``a * b + c`` lane-wise, one rounding."""

    def codegen(context, builder, sig, args):
        vt = args[0].type
        suffix = "f32" if isinstance(vt.element, ir.FloatType) else "f64"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vt, [vt] * 3), f"llvm.fma.v{vt.count}{suffix}"
        )
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _vadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@njit(inline="always", boundscheck=False, error_model="numpy", cache=True)
def _add_to(out, at, vec):
    _vstore(out, at, _vadd(_vload(out, at), vec))


# ---------------------------------------------------------------- the kernel


@njit(parallel=True, boundscheck=False, nogil=True, error_model="numpy", cache=True)
def _gemm_pairs(x, w, in_rows, out_rows, bounds, out, skip, groups, c_in, c_out, lanes, zero, task):
    """``out[o, g*Co:(g+1)*Co] += x[i, g*Ci:(g+1)*Ci] @ w[k, g]`` for every pair ``(i, o)`` of every
    offset ``k != skip``; ``x``, ``w`` ``[K, G, Ci, Co]`` and ``out`` flattened, C order."""
    x_cols = groups * c_in
    out_cols = groups * c_out
    for k in range(bounds.shape[0] - 1):
        lo = bounds[k]
        hi = bounds[k + 1]
        if k == skip or lo == hi:
            continue
        for t in prange((hi - lo + task - 1) // task):
            p0 = lo + t * task
            p1 = min(p0 + task, hi)
            for p in range(p0, p1, 4):
                m = min(4, p1 - p)  # pairs in this block; missing ones repeat the last, unstored
                i0 = in_rows[p] * x_cols
                i1 = in_rows[p + min(1, m - 1)] * x_cols
                i2 = in_rows[p + min(2, m - 1)] * x_cols
                i3 = in_rows[p + min(3, m - 1)] * x_cols
                q0 = out_rows[p] * out_cols
                q1 = out_rows[p + min(1, m - 1)] * out_cols
                q2 = out_rows[p + min(2, m - 1)] * out_cols
                q3 = out_rows[p + min(3, m - 1)] * out_cols
                for g in range(groups):
                    x0 = i0 + g * c_in
                    x1 = i1 + g * c_in
                    x2 = i2 + g * c_in
                    x3 = i3 + g * c_in
                    w_base = (k * groups + g) * c_in * c_out
                    c0 = 0
                    while c0 + 2 * lanes <= c_out:  # 4 pairs x 2 vectors of output channels
                        a00 = _vzero(w)
                        a01 = _vzero(w)
                        a10 = _vzero(w)
                        a11 = _vzero(w)
                        a20 = _vzero(w)
                        a21 = _vzero(w)
                        a30 = _vzero(w)
                        a31 = _vzero(w)
                        wp = w_base + c0
                        for ci in range(c_in):
                            w0 = _vload(w, wp)
                            w1 = _vload(w, wp + lanes)
                            wp += c_out
                            s = _vbroadcast(x, x0 + ci)
                            a00 = _vfma(s, w0, a00)
                            a01 = _vfma(s, w1, a01)
                            s = _vbroadcast(x, x1 + ci)
                            a10 = _vfma(s, w0, a10)
                            a11 = _vfma(s, w1, a11)
                            s = _vbroadcast(x, x2 + ci)
                            a20 = _vfma(s, w0, a20)
                            a21 = _vfma(s, w1, a21)
                            s = _vbroadcast(x, x3 + ci)
                            a30 = _vfma(s, w0, a30)
                            a31 = _vfma(s, w1, a31)
                        c = g * c_out + c0
                        _add_to(out, q0 + c, a00)
                        _add_to(out, q0 + c + lanes, a01)
                        if m > 1:
                            _add_to(out, q1 + c, a10)
                            _add_to(out, q1 + c + lanes, a11)
                        if m > 2:
                            _add_to(out, q2 + c, a20)
                            _add_to(out, q2 + c + lanes, a21)
                        if m > 3:
                            _add_to(out, q3 + c, a30)
                            _add_to(out, q3 + c + lanes, a31)
                        c0 += 2 * lanes
                    if c0 + lanes <= c_out:  # 4 pairs x 1 vector
                        a00 = _vzero(w)
                        a10 = _vzero(w)
                        a20 = _vzero(w)
                        a30 = _vzero(w)
                        wp = w_base + c0
                        for ci in range(c_in):
                            w0 = _vload(w, wp)
                            wp += c_out
                            a00 = _vfma(_vbroadcast(x, x0 + ci), w0, a00)
                            a10 = _vfma(_vbroadcast(x, x1 + ci), w0, a10)
                            a20 = _vfma(_vbroadcast(x, x2 + ci), w0, a20)
                            a30 = _vfma(_vbroadcast(x, x3 + ci), w0, a30)
                        c = g * c_out + c0
                        _add_to(out, q0 + c, a00)
                        if m > 1:
                            _add_to(out, q1 + c, a10)
                        if m > 2:
                            _add_to(out, q2 + c, a20)
                        if m > 3:
                            _add_to(out, q3 + c, a30)
                        c0 += lanes
                    for c in range(c0, c_out):  # leftover channels, scalar
                        s0 = zero
                        s1 = zero
                        s2 = zero
                        s3 = zero
                        wp = w_base + c
                        for ci in range(c_in):
                            wv = w[wp]
                            wp += c_out
                            s0 += x[x0 + ci] * wv
                            s1 += x[x1 + ci] * wv
                            s2 += x[x2 + ci] * wv
                            s3 += x[x3 + ci] * wv
                        cc = g * c_out + c
                        out[q0 + cc] += s0
                        if m > 1:
                            out[q1 + cc] += s1
                        if m > 2:
                            out[q2 + cc] += s2
                        if m > 3:
                            out[q3 + cc] += s3


# ---------------------------------------------------------------- public functions

_DTYPES = {torch.float32: (np.float32, 16), torch.float64: (np.float64, 8)}


def available() -> bool:
    return True  # importing this module imported numba


def supports(feats, weight, kernel_map, pair_weights=None) -> bool:
    """Cases this backend computes: CPU, float32/float64, injective map, no pair weights."""
    return (
        pair_weights is None
        and kernel_map.injective
        and feats.device.type == "cpu"
        and weight.device.type == "cpu"
        and kernel_map.in_rows.device.type == "cpu"
        and feats.dtype in _DTYPES
        and weight.dtype == feats.dtype
        and feats.dim() == 2
        and weight.dim() == 4
        and kernel_map.in_rows.dtype == torch.int64
        and kernel_map.out_rows.dtype == torch.int64
    )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _run(x, w, in_rows, out_rows, kmap, out, skip):
    """``out += pairs(x) @ w`` over every offset but ``skip``, in place (all contiguous tensors)."""
    if kmap.num_pairs == 0 or x.numel() == 0 or out.numel() == 0:
        return
    np_dtype, lanes = _DTYPES[x.dtype]
    groups, c_in, c_out = w.shape[1:]
    bounds = np.asarray(kmap.offset_bounds, dtype=np.int64)
    # Use torch's thread count. numba's OpenMP threading layer shares the OpenMP runtime with
    # torch, so setting numba's count also sets torch's: re-assert torch's afterwards, or a
    # numba call would silently change how many threads (and so which summation order) torch uses.
    torch_threads = torch.get_num_threads()
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        _gemm_pairs(
            _numpy(x).reshape(-1), _numpy(w).reshape(-1), _numpy(in_rows), _numpy(out_rows), bounds,
            out.detach().numpy().reshape(-1), -1 if skip is None else skip,
            groups, c_in, c_out, lanes, np_dtype(0), _TASK,
        )
    finally:
        numba.set_num_threads(previous)
        torch.set_num_threads(torch_threads)


def forward(feats, weight, pair_weights, kmap):
    """Same as :func:`sparseconv.core._forward` (no ``pair_weights``)."""
    from ..core import _grouped_mm

    assert pair_weights is None
    groups, c_in, c_out = weight.shape[1:]
    identity = kmap.identity_offset
    if identity is not None:
        out = _grouped_mm(feats, weight[identity]).contiguous()
    else:
        out = feats.new_zeros(kmap.num_outputs, groups * c_out)
    _run(feats, weight, kmap.in_rows, kmap.out_rows, kmap, out, identity)
    return out


def backward(feats, weight, pair_weights, grad_out, kmap, needs):
    """Same as :func:`sparseconv.core._backward` (no ``pair_weights``): the input gradient in the
    kernel over the transposed map, the weight gradient by the torch path's code."""
    from ..core import _backward, _grouped_mm

    assert pair_weights is None
    need_feats, need_weight, _ = needs
    grad_weight = None
    if need_weight:
        grad_weight = _backward(feats, weight, None, grad_out, kmap, (False, True, False))[1]
    grad_feats = None
    if need_feats:
        groups, c_in, c_out = weight.shape[1:]
        weight_t = weight.transpose(2, 3).contiguous()  # [K, G, Co, Ci]
        identity = kmap.identity_offset
        if identity is not None:
            grad_feats = _grouped_mm(grad_out, weight_t[identity]).contiguous()
        else:
            grad_feats = feats.new_zeros(kmap.num_inputs, groups * c_in)
        _run(grad_out, weight_t, kmap.out_rows, kmap.in_rows, kmap, grad_feats, identity)
    return grad_feats, grad_weight, None
