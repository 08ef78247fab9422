"""``install_spconv_shim``: make ``import spconv.pytorch`` resolve to sparseconv's compat layer."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings

from . import _spconv_conv, _spconv_core, _spconv_functional, _spconv_modules
from . import spconv as _facade

_SHIM_FLAG = "__sparseconv_shim__"


def is_spconv_shim(module) -> bool:
    """Whether ``module`` is one of the shim's stand-in ``spconv`` modules."""
    return bool(getattr(module, _SHIM_FLAG, False))


def _module(name: str, doc: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)
    module.__path__ = []  # a package with no files: unknown submodules fail with ModuleNotFoundError
    setattr(module, _SHIM_FLAG, True)
    return module


def _build_shim() -> dict:
    version = _spconv_core.SPCONV_API_VERSION
    public = {name: getattr(_facade, name) for name in _facade.__all__}
    doc = "sparseconv's stand-in for spconv.pytorch (see sparseconv.compat.spconv)."
    submodules = {
        "conv": _spconv_conv,
        "core": _spconv_core,
        "modules": _spconv_modules,
        "pool": _spconv_modules,
        "tables": _spconv_modules,
        "functional": _spconv_functional,
    }
    pytorch = _module("spconv.pytorch", doc, **public)
    modules = {"spconv.pytorch": pytorch}
    for short, source in submodules.items():
        sub = _module(f"spconv.pytorch.{short}", f"sparseconv's stand-in for spconv.pytorch.{short}.")
        sub.__dict__.update({k: v for k, v in source.__dict__.items() if not k.startswith("__")})
        setattr(pytorch, short, sub)
        modules[sub.__name__] = sub
    constants = _module(
        "spconv.constants",
        "spconv's tuning constants; accepted and without effect here.",
        SPCONV_USE_DIRECT_TABLE=False,
        SAVED_WEIGHT_LAYOUT="",
        ALL_WEIGHT_IS_KRSC=True,
        FILTER_HWIO=False,
    )
    core = _module("spconv.core", "spconv.core stand-in.", ConvAlgo=_spconv_core.ConvAlgo)
    top = _module(
        "spconv",
        "sparseconv's stand-in for spconv 2.x (installed by sparseconv.compat.install_spconv_shim).",
        __version__=version,
        SPCONV_VERSION_NUMBERS=[int(v) for v in version.split(".")],
        ConvAlgo=_spconv_core.ConvAlgo,
        constants=constants,
        core=core,
        pytorch=pytorch,
    )
    modules.update({"spconv": top, "spconv.constants": constants, "spconv.core": core})
    return modules


def _real_spconv_importable() -> bool:
    if importlib.util.find_spec("spconv") is None:
        return False
    before = set(sys.modules)
    try:
        importlib.import_module("spconv.pytorch")
        return True
    except Exception as error:  # a broken install: fall back to the shim
        for name in set(sys.modules) - before:
            if name == "spconv" or name.startswith("spconv."):
                del sys.modules[name]
        warnings.warn(f"spconv is installed but `import spconv.pytorch` failed ({error!r}); using sparseconv's shim")
        return False


def install_spconv_shim(force: bool = False) -> bool:
    """Register ``spconv``, ``spconv.pytorch`` (and its ``conv``, ``core``, ``modules``, ``pool``,
    ``tables``, ``functional`` submodules, ``spconv.constants``, ``spconv.core``) in ``sys.modules``,
    backed by :mod:`sparseconv.compat.spconv`, so unmodified model files that do
    ``import spconv.pytorch as spconv`` run on sparseconv.

    Does nothing when the real spconv imports (unless ``force=True``, which replaces it for this
    process). Returns whether ``import spconv.pytorch`` now resolves to the shim.
    """
    current = sys.modules.get("spconv")
    if current is not None and is_spconv_shim(current):
        return True
    if not force:
        if current is not None or _real_spconv_importable():
            return False
    for name in [n for n in sys.modules if n == "spconv" or n.startswith("spconv.")]:
        del sys.modules[name]
    sys.modules.update(_build_shim())
    return True


def uninstall_spconv_shim() -> bool:
    """Remove the shim's modules from ``sys.modules``; returns whether any were installed."""
    names = [n for n, m in list(sys.modules.items()) if (n == "spconv" or n.startswith("spconv.")) and is_spconv_shim(m)]
    for name in names:
        del sys.modules[name]
    return bool(names)
