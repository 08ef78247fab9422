"""Import paths that moved in 0.2 (the pipeline layout) keep working for one release, with a
:class:`DeprecationWarning` that names the new path.

``import sparseconv.core`` / ``from sparseconv.kernel_map import KernelMapKey`` are answered by a
meta-path finder that returns an alias of the new module; ``sparseconv.functional`` (attribute
access without an import) by the package's ``__getattr__``. ``sparseconv.voxelize`` stays the
function: its module alias is callable, so it stays right even after ``import sparseconv.voxelize``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

# old module path -> new module path (removed in 0.3)
MOVED = {
    "sparseconv.hashing": "sparseconv.engine.hashing",
    "sparseconv.coordinates": "sparseconv.engine.coordinates",
    "sparseconv.tensor": "sparseconv.engine.tensor",
    "sparseconv.voxelize": "sparseconv.engine.voxelize",
    "sparseconv.kernel_map": "sparseconv.engine.kmap",
    "sparseconv.core": "sparseconv.engine.core",
    "sparseconv.backends": "sparseconv.engine.backends",
    "sparseconv.backends.numba_cpu": "sparseconv.engine.backends.numba_conv",
    "sparseconv.functional": "sparseconv.nn.functional",
    "sparseconv.deform": "sparseconv.nn.functional.deform",
    "sparseconv.dynamic": "sparseconv.nn.functional.dynamic",
}


def warn_moved(old: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} moved to {MOVED[old]}; the old path will be removed in sparseconv 0.3",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _ModuleAlias(types.ModuleType):
    """Stands for the moved module: attribute reads go to it."""

    def __init__(self, old: str, new: str):
        super().__init__(old, f"Deprecated alias of {new}.")
        self.__dict__["_target"] = new

    def __getattr__(self, name):
        return getattr(importlib.import_module(self.__dict__["_target"]), name)

    def __dir__(self):
        return dir(importlib.import_module(self.__dict__["_target"]))


class _CallableModuleAlias(_ModuleAlias):
    """``sparseconv.voxelize`` is both a module path and the package's ``voxelize`` function."""

    def __call__(self, *args, **kwargs):
        return self.voxelize(*args, **kwargs)


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        alias_type = _CallableModuleAlias if spec.name == "sparseconv.voxelize" else _ModuleAlias
        module = alias_type(spec.name, MOVED[spec.name])
        if spec.name == "sparseconv.backends":
            module.__path__ = []  # a package, so "sparseconv.backends.numba_cpu" resolves too
        return module

    def exec_module(self, module):
        # stacklevel: past importlib's frames, to the line with the import statement
        warnings.warn(
            f"{module.__name__} moved to {MOVED[module.__name__]}; the old path will be removed in sparseconv 0.3",
            DeprecationWarning,
            stacklevel=8,
        )


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(), is_package=fullname == "sparseconv.backends")


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
