"""What the numba backends share: explicit SIMD vectors for numba, torch's thread count, numpy views.

The micro-kernels are written with explicit SIMD vectors (a small numba extension: a vector type
lowered to an LLVM ``<8 x float>`` / ``<4 x double>`` (``<16 x float>`` with AVX-512) and
``fma``/load/store/broadcast intrinsics), because left to itself LLVM either scalarises the loops
(numba disables the SLP vectoriser) or spills.

numba's on-disk cache (``cache=True``) tracks each function's own file only: after editing an
intrinsic here, clear ``__pycache__/*.nb*`` beside :mod:`.numba_conv` too.
"""
from __future__ import annotations

import warnings

import numba
import numpy as np
import torch
import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

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



def _vector_bytes() -> int:
    """One register's width: 64 bytes with AVX-512, else 32 (AVX2). With 16 registers of 32 bytes,
    the 8 accumulators + 2 weight vectors + 1 broadcast of the micro-kernel fit only at 32 bytes
    a vector (at 64 bytes, measured 1.3-2x slower at 32-64 channels on AVX2 from spills)."""
    if numba.config.CPU_NAME:  # numba told to compile for another CPU than this one
        return 32
    return 64 if llvm.get_host_cpu_features().get("avx512f", False) else 32


_VECTOR_BYTES = _vector_bytes()


def vector_lanes(bits: int) -> int:
    """Elements of ``bits`` bits in one vector register."""
    return _VECTOR_BYTES * 8 // bits


def vec_of(arr):
    return _Vec(arr.dtype, vector_lanes(arr.dtype.bitwidth))


def _element_ptr(context, builder, arrty, arr, idx):
    return builder.gep(context.make_array(arrty)(context, builder, arr).data, [idx])


@intrinsic
def index_load(typingctx, arr, idx):
    """``arr.flat[idx]`` for ``idx >= 0``. Plain ``arr[idx]`` with a signed index also handles
    negative indices (a sign test and a conditional add), which in the weight gradient's inner
    loop cost registers and made LLVM spill: measured 1.5-2x slower there."""

    def codegen(context, builder, sig, args):
        return builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))

    return arr.dtype(arr, idx), codegen


@intrinsic
def vload(typingctx, arr, idx):
    """``arr.flat[idx : idx + lanes]`` (1-D contiguous ``arr``, no bounds check)."""
    vt = vec_of(arr)

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(ptr, context.get_value_type(vt).as_pointer()), align=1)

    return vt(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, vec):
    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, vec), codegen


@intrinsic
def vbroadcast(typingctx, arr, idx):
    """``arr.flat[idx]`` in every lane."""
    vt = vec_of(arr)

    def codegen(context, builder, sig, args):
        scalar = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))
        lt = context.get_value_type(vt)
        i32 = ir.IntType(32)
        one = builder.insert_element(ir.Constant(lt, ir.Undefined), scalar, ir.Constant(i32, 0))
        mask = ir.Constant(ir.VectorType(i32, vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(one, ir.Constant(lt, ir.Undefined), mask)

    return vt(arr, idx), codegen


@intrinsic
def vzero(typingctx, arr):
    vt = vec_of(arr)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def vfma(typingctx, a, b, c):
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
def vadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@njit(inline="always", boundscheck=False, error_model="numpy", cache=True)
def add_to(out, at, vec):
    vstore(out, at, vadd(vload(out, at), vec))


@njit(inline="always", boundscheck=False, error_model="numpy", cache=True)
def fma_4x2(x, j0, j1, j2, j3, v0, v1, a00, a01, a10, a11, a20, a21, a30, a31):
    """One step of a 4-row x 2-vector register tile: ``a_r0 += x[j_r] * v0``, ``a_r1 += x[j_r] * v1``."""
    s = vbroadcast(x, j0)
    a00 = vfma(s, v0, a00)
    a01 = vfma(s, v1, a01)
    s = vbroadcast(x, j1)
    a10 = vfma(s, v0, a10)
    a11 = vfma(s, v1, a11)
    s = vbroadcast(x, j2)
    a20 = vfma(s, v0, a20)
    a21 = vfma(s, v1, a21)
    s = vbroadcast(x, j3)
    a30 = vfma(s, v0, a30)
    a31 = vfma(s, v1, a31)
    return a00, a01, a10, a11, a20, a21, a30, a31


@njit(inline="always", boundscheck=False, error_model="numpy", cache=True)
def add_to_rows(out, m, q0, q1, q2, q3, at, v0, v1, v2, v3):
    """Add vector ``v_j`` at ``out[q_j + at]`` for the first ``m`` of the 4 rows of a register tile."""
    add_to(out, q0 + at, v0)
    if m > 1:
        add_to(out, q1 + at, v1)
    if m > 2:
        add_to(out, q2 + at, v2)
    if m > 3:
        add_to(out, q3 + at, v3)


@njit(inline="always", boundscheck=False, error_model="numpy", cache=True)
def add_scalars_to_rows(out, m, q0, q1, q2, q3, at, s0, s1, s2, s3):
    """Scalar twin of :func:`add_to_rows` (leftover channels)."""
    out[q0 + at] += s0
    if m > 1:
        out[q1 + at] += s1
    if m > 2:
        out[q2 + at] += s2
    if m > 3:
        out[q3 + at] += s3


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class TorchThreads:
    """Run numba with torch's thread count. numba's OpenMP threading layer shares the OpenMP
    runtime with torch, so setting numba's count also sets torch's: re-assert torch's afterwards,
    or a numba call would silently change how many threads (and so which summation order) torch
    uses."""

    def __enter__(self):
        self.torch_threads = torch.get_num_threads()
        self.previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.torch_threads, numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        numba.set_num_threads(self.previous)
        torch.set_num_threads(self.torch_threads)
