"""Backends of the core op :func:`sparseconv.engine.core.gather_gemm_scatter`, and of the map search.

* :mod:`.torch_ref`: the pure-PyTorch path, the reference every other backend is proven equal to;
  runs anywhere PyTorch does.
* :mod:`.numba_conv` (+ :mod:`.numba_support`): a fused, output-stationary CPU kernel compiled with
  numba; :mod:`.numba_kmap`: the submanifold map search on CPU.

A backend is chosen per call (``backend=`` of the core op). numba is a required dependency, but it
is imported on first use, not at ``import sparseconv`` time, and a broken numba install leaves the
torch path working (:func:`numba_unavailable_reason` says why numba is off).

A core-op backend is a module named in :data:`CORE_BACKENDS` with five functions:
``supports(feats, weight, kernel_map, pair_weights) -> bool``, ``forward(feats, weight, pair_weights,
kernel_map)``, ``backward(feats, weight, pair_weights, grad_out, kernel_map, needs)``,
``map_tensors(kernel_map, backward) -> list of tensors`` (whatever it derives from a map and caches
on it, such as a reordering of the pairs, handed to the registered op as tensors so that compiled
and exported graphs carry it) and ``attach_map_tensors(kernel_map, tensors)`` (puts them back on the
map the registered op rebuilds from its tensor arguments), plus ``SUPPORTED``, a phrase naming the
cases ``supports`` accepts. ``backend="auto"`` tries the names of :data:`AUTO_ORDER` in turn and
falls back to ``"torch"``.

Import direction: the core op and the kernel-map builder import this package; backends import
:mod:`.torch_ref` and the kernel-map types, never the core op or the coordinate set.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Dict, Optional, Tuple

BACKENDS = ("auto", "torch", "numba", "triton")
#: Core-op backends by name: the module that implements each (imported on first use). "triton_tf32"
#: is the Triton backend with TF32 float32 GEMMs (``allow_tf32=True`` of the core op).
CORE_BACKENDS: Dict[str, str] = {
    "torch": "torch_ref", "numba": "numba_conv", "triton": "triton_conv", "triton_tf32": "triton_tf32",
}
#: The CPU backends ``backend="auto"`` tries, in order, before the torch path (CUDA tensors: the
#: core op asks Triton first).
AUTO_ORDER: Tuple[str, ...] = ("numba",)

_modules: Dict[str, Optional[ModuleType]] = {}
_errors: Dict[str, BaseException] = {}


#: Optional third-party package each backend module needs (imported with the module).
_REQUIRES: Dict[str, str] = {
    "numba_conv": "numba", "numba_kmap": "numba", "triton_conv": "triton", "triton_tf32": "triton",
}


def _load(name: str) -> Optional[ModuleType]:
    """``sparseconv.engine.backends.<name>``, imported once; None when the package it needs
    (:data:`_REQUIRES`) is missing or fails to import."""
    if name not in _modules:
        module = None
        requirement = _REQUIRES.get(name)
        if requirement is not None and importlib.util.find_spec(requirement) is None:
            _errors[name] = ImportError(f"{requirement} is not installed (pip install {'sparseconv[gpu]' if requirement == 'triton' else requirement})")
        else:
            try:
                module = importlib.import_module(f"{__name__}.{name}")
            except Exception as error:  # a broken optional install must not break the torch path
                _errors[name] = error
        _modules[name] = module
    return _modules[name]


def core_backend(name: str) -> Optional[ModuleType]:
    """The module of core-op backend ``name`` (a key of :data:`CORE_BACKENDS`), or None when its
    dependencies are unavailable (:func:`unavailable_reason` says why). A new backend needs only
    its entries in :data:`CORE_BACKENDS` (and :data:`_REQUIRES`)."""
    if name == "numba":
        return numba_backend()  # through the public probes, which tests replace to simulate a missing package
    if name == "triton":
        return triton_backend()
    return _load(CORE_BACKENDS[name])


def unavailable_reason(name: str) -> str:
    """Why core-op backend ``name`` is unavailable; empty when it is available."""
    if core_backend(name) is not None:
        return ""
    error = _errors.get(CORE_BACKENDS[name])
    return "" if error is None else f"{type(error).__name__}: {error}"


def numba_backend() -> Optional[ModuleType]:
    """The numba core-op backend (:mod:`.numba_conv`), or None when numba is unavailable."""
    return _load("numba_conv")


def numba_map_search() -> Optional[ModuleType]:
    """The numba submanifold map search (:mod:`.numba_kmap`), or None when numba is unavailable."""
    return _load("numba_kmap")


def numba_available() -> bool:
    """numba is installed and its backend imports (the import is done once, on first ask)."""
    return numba_backend() is not None


def numba_unavailable_reason() -> str:
    return unavailable_reason("numba")


def triton_backend() -> Optional[ModuleType]:
    """The Triton core-op backend (:mod:`.triton_conv`), or None when triton is unavailable."""
    return _load("triton_conv")


def triton_unavailable_reason() -> str:
    return unavailable_reason("triton")
