"""The package layout's rules: no import cycles, modules of one concern (at most about 500 lines),
old import paths still working for one release with a DeprecationWarning, and a coordinate pyramid
freed by reference counting alone."""
from __future__ import annotations

import ast
import gc
import importlib
import sys
import warnings
import weakref
from pathlib import Path

import pytest
import torch

import sparseconv

PACKAGE_ROOT = Path(sparseconv.__file__).parent
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set) -> set:
    """Every sparseconv module ``path`` imports, at module level or inside functions (an import
    inside a function is still a dependency), but not under ``if TYPE_CHECKING:``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in child.names)  # "from pkg import submodule"
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def _graph():
    files = {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules) for name, path in files.items()}


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in graph:
        if v not in index:
            strongconnect(v)
    return result


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """A package imports its own submodules (``__init__`` re-exports) and a submodule may import its
    package's siblings, but no chain of imports leads back to where it started. A parent package
    importing its child is not counted as the child depending on the parent."""
    graph = _graph()
    # importing "a.b.c" runs "a.b"'s __init__: an edge child -> parent package would make every
    # package with re-exports look cyclic, so edges to an ancestor package are dropped.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    assert _cycles(graph) == []


def test_modules_stay_small():
    too_long = {
        _module_name(p): n
        for p in PACKAGE_ROOT.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("sparseconv.core", "sparseconv.engine.core", "gather_gemm_scatter"),
        ("sparseconv.kernel_map", "sparseconv.engine.kmap", "KernelMapKey"),
        ("sparseconv.functional", "sparseconv.nn.functional", "subm_conv3d"),
        ("sparseconv.coordinates", "sparseconv.engine.coordinates", "CoordinateSet"),
        ("sparseconv.deform", "sparseconv.nn.functional.deform", "sparse_deform_conv3d"),
        ("sparseconv.dynamic", "sparseconv.nn.functional.dynamic", "sparse_conv3d_per_sample"),
        ("sparseconv.backends", "sparseconv.engine.backends", "numba_backend"),
        ("sparseconv.backends.numba_cpu", "sparseconv.engine.backends.numba_conv", "forward"),
        ("sparseconv.hashing", "sparseconv.engine.hashing", "pack_coords"),
    ],
)
def test_moved_import_paths_warn_and_work(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)  # the new module itself, not a copy
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_moved_attribute_and_voxelize_stay_usable():
    sparseconv.__dict__.pop("functional", None)  # bound by an earlier test's "import sparseconv.functional"
    with pytest.warns(DeprecationWarning, match="sparseconv.functional moved to sparseconv.nn.functional"):
        functional = sparseconv.functional
    assert functional.subm_conv3d is sparseconv.nn.functional.subm_conv3d
    sys.modules.pop("sparseconv.voxelize", None)
    with pytest.warns(DeprecationWarning, match="sparseconv.voxelize moved to sparseconv.engine.voxelize"):
        from sparseconv.voxelize import REDUCTIONS
    assert REDUCTIONS is importlib.import_module("sparseconv.engine.voxelize").REDUCTIONS
    # the import machinery binds the module alias to sparseconv.voxelize: it must still voxelize
    st, _ = sparseconv.voxelize(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), voxel_size=0.5)
    assert len(st) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module("sparseconv.engine.voxelize")  # the new path does not warn


def test_unet_pyramid_is_freed_by_reference_counting():
    """With the cycle collector off, a U-Net forward + backward's coordinate sets and kernel maps
    go as soon as the last tensor on them does (maps hold the set that caches them weakly)."""
    from sparseconv.models import minkunet14
    from sparseconv.testing import random_sparse_tensor

    torch.manual_seed(0)
    model = minkunet14(in_channels=2, num_classes=3, base_channels=4).double()
    # A first forward imports the backends lazily; an exception raised and caught inside an import
    # holds the caller's frames in a cycle until a collection. Warm up on another cloud, so what the
    # test watches is sparseconv's own references.
    model(random_sparse_tensor((32, 32, 32), 2, batch_size=2, density=0.02, dtype=torch.float64, seed=2))
    x = random_sparse_tensor((32, 32, 32), 2, batch_size=2, density=0.02, dtype=torch.float64, seed=1)
    gc.collect()
    gc.disable()
    try:
        out = model(x)
        out.feats.sum().backward()
        sets, maps = [out.coordinate_set], []  # the finest level (the decoder returns to it)
        for coordinate_set in sets:  # the pyramid: every set reachable through cached maps
            for kmap in coordinate_set.cached_kernel_maps().values():
                maps.append(weakref.ref(kmap))
                if all(kmap.output is not s for s in sets):
                    sets.append(kmap.output)
        refs = [weakref.ref(s) for s in sets]
        assert len(refs) >= 5 and len(maps) >= 5  # several levels, several maps
        del sets, coordinate_set, kmap, out, x
        assert [r for r in refs if r() is not None] == []
        assert [m for m in maps if m() is not None] == []
    finally:
        gc.enable()
