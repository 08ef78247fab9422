"""Import paths that moved in 0.2 (the pipeline layout) keep working for one release, with a
:class:`DeprecationWarning` that names the new path.

``import sparseconv.core`` / ``from sparseconv.kernel_map import KernelMapKey`` are answered by a
meta-path finder that warns and hands back the new module itself (so ``sparseconv.core is
sparseconv.engine.core`` and patching either patches both); ``sparseconv.functional`` (attribute
access without an import) by the package's ``__getattr__``. ``sparseconv.voxelize`` stays the
function: its old module path gets a callable alias instead, so the package attribute the import
binds still voxelizes.
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
    "sparseconv.cli": "sparseconv.app.cli",
    "sparseconv.demo": "sparseconv.app.demo",
    "sparseconv.checks": "sparseconv.app.checks",
    "sparseconv.render": "sparseconv.viz",
}
# old paths that are also the name of a function in the package namespace
_CALLABLE = {"sparseconv.voxelize": "voxelize"}


def warn_moved(old: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} moved to {MOVED[old]}; the old path will be removed in sparseconv 0.3",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _CallableModuleAlias(types.ModuleType):
    """Stands for a moved module whose old path is also a package function's name: attribute reads
    go to the new module, and calling it calls that function."""

    def __init__(self, old: str, new: str):
        super().__init__(old, f"Deprecated alias of {new}.")
        self.__dict__["_target"] = new

    def __getattr__(self, name):
        return getattr(importlib.import_module(self.__dict__["_target"]), name)

    def __dir__(self):
        return dir(importlib.import_module(self.__dict__["_target"]))

    def __call__(self, *args, **kwargs):
        return getattr(self, _CALLABLE[self.__name__])(*args, **kwargs)


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        if spec.name in _CALLABLE:
            return _CallableModuleAlias(spec.name, MOVED[spec.name])
        return None  # a plain module, replaced by the new one in exec_module

    def exec_module(self, module):
        old = module.__name__
        # stacklevel: past importlib's frames, to the line with the import statement
        warnings.warn(
            f"{old} moved to {MOVED[old]}; the old path will be removed in sparseconv 0.3",
            DeprecationWarning,
            stacklevel=8,
        )
        if old not in _CALLABLE:
            # the import system returns what sys.modules holds once this returns: the new module
            sys.modules[old] = importlib.import_module(MOVED[old])


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader())


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
