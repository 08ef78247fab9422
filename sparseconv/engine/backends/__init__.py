"""Backends of the core op :func:`sparseconv.engine.core.gather_gemm_scatter`, and of the map search.

* :mod:`.torch_ref`: the pure-PyTorch path, the reference every other backend is proven equal to;
  runs anywhere PyTorch does.
* :mod:`.numba_conv` (+ :mod:`.numba_support`): a fused, output-stationary CPU kernel compiled with
  numba; :mod:`.numba_kmap`: the submanifold map search on CPU.
* :mod:`.triton_conv`: an output-stationary implicit GEMM in Triton for CUDA tensors (triton is
  optional: ``pip install sparseconv[gpu]``; :func:`triton_unavailable_reason` says why it is off).

A backend is chosen per call (``backend=`` of the core op). numba is a required dependency, but it
is imported on first use, not at ``import sparseconv`` time, and a broken numba install leaves the
torch path working (:func:`numba_unavailable_reason` says why numba is off).

Import direction: the core op and the kernel-map builder import this package; backends import
:mod:`.torch_ref` and the kernel-map types, never the core op or the coordinate set.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Dict, Optional

BACKENDS = ("auto", "torch", "numba", "triton")

_modules: Dict[str, Optional[ModuleType]] = {}
_errors: Dict[str, BaseException] = {}


def _optional_module(name: str, dependency: str, install: str) -> Optional[ModuleType]:
    """``sparseconv.engine.backends.<name>`` (a module needing ``dependency``), imported once; None
    when ``dependency`` is missing or fails to import."""
    if name not in _modules:
        module = None
        if importlib.util.find_spec(dependency) is None:
            _errors[name] = ImportError(f"{dependency} is not installed ({install})")
        else:
            try:
                module = importlib.import_module(f"{__name__}.{name}")
            except Exception as error:  # a broken install must not break the torch path
                _errors[name] = error
        _modules[name] = module
    return _modules[name]


def _numba_module(name: str) -> Optional[ModuleType]:
    return _optional_module(name, "numba", "pip install numba")


def numba_backend() -> Optional[ModuleType]:
    """The numba core-op backend (:mod:`.numba_conv`), or None when numba is unavailable."""
    return _numba_module("numba_conv")


def numba_map_search() -> Optional[ModuleType]:
    """The numba submanifold map search (:mod:`.numba_kmap`), or None when numba is unavailable."""
    return _numba_module("numba_kmap")


def numba_available() -> bool:
    """numba is installed and its backend imports (the import is done once, on first ask)."""
    return numba_backend() is not None


def numba_unavailable_reason() -> str:
    numba_backend()
    error = _errors.get("numba_conv")
    return "" if error is None else f"{type(error).__name__}: {error}"


def triton_backend() -> Optional[ModuleType]:
    """The Triton core-op backend (:mod:`.triton_conv`), or None when triton is unavailable."""
    return _optional_module("triton_conv", "triton", "pip install sparseconv[gpu]")


def triton_unavailable_reason() -> str:
    triton_backend()
    error = _errors.get("triton_conv")
    return "" if error is None else f"{type(error).__name__}: {error}"
