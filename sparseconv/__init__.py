"""sparseconv: sparse 3D convolution for point clouds on plain PyTorch.

Every convolution is gather, GEMM, scatter over a kernel map:
points -> voxelize -> SparseTensor -> kernel map -> gather-GEMM-scatter -> modules.

The package tree follows that pipeline: :mod:`sparseconv.engine` (coordinates, hashing, kernel
maps, the core op and its backends), :mod:`sparseconv.nn` (modules, with the stateless ops in
:mod:`sparseconv.nn.functional`), then what is built on them: :mod:`.models`, :mod:`.compat`,
:mod:`.io`, :mod:`.data`, :mod:`.viz`, :mod:`.analysis`, :mod:`.testing`, and the application
layer :mod:`.app` (command line, demo, checks). The README's layout table lists every module.
"""
import importlib

from . import _deprecated
from ._version import __version__
from .engine.coordinates import CoordinateSet
from .engine.kmap import KernelMap, KernelMapKey
from .engine.tensor import SparseTensor
from .engine.voxelize import Voxelization, devoxelize, trilinear_devoxelize, voxelize
from . import analysis, models, nn, testing  # noqa: E402  (after the engine they build on)

_deprecated.install()

__all__ = [
    "__version__",
    "SparseTensor",
    "CoordinateSet",
    "KernelMap",
    "KernelMapKey",
    "Voxelization",
    "voxelize",
    "devoxelize",
    "trilinear_devoxelize",
    "nn",
    "testing",
    "analysis",
    "models",
]


def __getattr__(name: str):
    # moved modules reached as attributes (``sparseconv.functional``) without an import
    old = f"{__name__}.{name}"
    if old in _deprecated.MOVED:
        _deprecated.warn_moved(old)
        return importlib.import_module(_deprecated.MOVED[old])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
