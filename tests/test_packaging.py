"""Packaging: one version, dependencies that match the imports, optional features that name their extra."""
from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

import sparseconv

ROOT = Path(sparseconv.__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
IMPORT_NAMES = {"pillow": "PIL", "laspy[lazrs]": "laspy"}  # distribution -> module, where they differ


def _distribution(requirement: str) -> str:
    for stop in "<>=!~ ;":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def _module_level_imports() -> set:
    """Top-level packages imported at module level (not inside functions) anywhere in sparseconv."""
    found = set()
    for path in (ROOT / "sparseconv").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"sparseconv", "__future__"}


def test_version_in_one_place():
    from sparseconv._version import __version__

    assert sparseconv.__version__ == __version__
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sparseconv._version.__version__"}


def test_required_dependencies_match_module_level_imports():
    """Whatever a module imports at load time is a required dependency, except the optional ones a
    module loads on purpose (open3d in the synthetic-scan modules, behind sparseconv.data's lazy
    import that names the extra); scipy is not used and not required."""
    required = {IMPORT_NAMES.get(r, _distribution(r)) for r in PYPROJECT["project"]["dependencies"]}
    assert {"torch", "numpy", "numba", "PIL", "tqdm"} <= required and "scipy" not in required
    # llvmlite ships with numba; triton (the gpu extra) is imported only by the Triton backend, which
    # sparseconv.engine.backends loads on first use
    optional_at_load = {"open3d", "llvmlite", "triton"}
    assert _module_level_imports() - optional_at_load <= required
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"open3d", "las", "gpu", "test"} <= set(extras)


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    from sparseconv import data
    from sparseconv._optional import MissingDependencyError

    monkeypatch.setitem(sys.modules, "open3d", None)  # "import open3d" now fails as if not installed
    data.__dict__.pop("generate_lidar_scan", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'sparseconv\[open3d\]'"):
        data.generate_lidar_scan  # noqa: B018


def test_py_typed_and_license_ship():
    assert (ROOT / "sparseconv" / "py.typed").exists()
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}


def test_demo_without_open3d_names_the_extra(monkeypatch, tmp_path, capsys):
    """`sparseconv demo` simulates its scan with Open3D: without it, exit 2 and one line naming the
    extra (not "internal error ... this is a bug", exit 3), and no picture written."""
    from sparseconv.app import cli

    monkeypatch.setitem(sys.modules, "open3d", None)
    code = cli.main(["demo", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'sparseconv[open3d]'" in err and "internal error" not in err
    assert list(tmp_path.iterdir()) == []
