"""Optional compiled backends for :func:`sparseconv.core.gather_gemm_scatter`.

The pure-PyTorch path in :mod:`sparseconv.core` is the reference; a backend here computes the same
thing faster for the cases it supports and is chosen per call (``backend=`` of the core op). Nothing
here imports a compiler at ``import sparseconv`` time: :func:`numba_backend` imports :mod:`.numba_cpu`
and :func:`triton_backend` imports :mod:`.triton_conv` on first use.
"""
from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Optional

BACKENDS = ("auto", "torch", "numba", "triton")

_numba_module: Optional[ModuleType] = None
_numba_error: Optional[BaseException] = None


def numba_available() -> bool:
    """numba is installed and its backend module imports (the import is done once, on first ask)."""
    return numba_backend() is not None


def numba_backend() -> Optional[ModuleType]:
    """The numba backend module, or None when numba is missing or fails to import."""
    global _numba_module, _numba_error
    if _numba_module is None and _numba_error is None:
        if importlib.util.find_spec("numba") is None:
            _numba_error = ImportError("numba is not installed")
        else:
            try:
                from . import numba_cpu as module
            except Exception as error:  # a broken numba install must not break the torch path
                _numba_error = error
            else:
                _numba_module = module
    return _numba_module


def numba_unavailable_reason() -> str:
    numba_backend()
    return "" if _numba_error is None else f"{type(_numba_error).__name__}: {_numba_error}"


_triton_module: Optional[ModuleType] = None
_triton_error: Optional[BaseException] = None


def triton_backend() -> Optional[ModuleType]:
    """The Triton backend module (:mod:`.triton_conv`), or None when triton is missing or fails to import."""
    global _triton_module, _triton_error
    if _triton_module is None and _triton_error is None:
        if importlib.util.find_spec("triton") is None:
            _triton_error = ImportError("triton is not installed")
        else:
            try:
                from . import triton_conv as module
            except Exception as error:  # a broken triton install must not break the torch path
                _triton_error = error
            else:
                _triton_module = module
    return _triton_module


def triton_unavailable_reason() -> str:
    triton_backend()
    return "" if _triton_error is None else f"{type(_triton_error).__name__}: {_triton_error}"
