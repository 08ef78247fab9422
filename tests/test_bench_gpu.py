"""``benchmarks/bench_gpu.py`` is ready to run on a GPU: without one it exits with a clear message,
and its dry run (CPU tensors, the Triton kernels in Triton's interpreter, a tiny scan) runs every
section end to end and prints well-formed rows (numbers are not judged: speed is measured on a GPU,
never asserted in tests)."""
import importlib.util
import os
import pathlib

import pytest
import torch

pytest.importorskip("triton")

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(out, first_cell):
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith(f"| {first_cell}")]


def _assert_ratio(shown, num, den):
    """``shown`` is ``num / den`` up to the rounding of all three to 0.01."""
    assert den > 0 and num > 0
    low = (num - 0.005) / (den + 0.005)
    high = (num + 0.005) / (den - 0.005) if den > 0.005 else float("inf")
    assert low - 0.005 <= shown <= high + 0.005


def test_exits_with_a_clear_message_without_cuda(bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA device .*--dry-run"):
        bench.main([])


def test_dry_run_maps_and_layers(bench, capsys):
    before = os.environ.get("TRITON_INTERPRET")
    bench.main(["--dry-run", "--only", "maps", "--only", "layers"])
    assert os.environ.get("TRITON_INTERPRET") == before  # the interpreter is switched off again
    out = capsys.readouterr().out
    assert "## models" not in out
    maps = _rows(out, "voxelize")
    assert len(maps) == 3 and all(int(sites) > 0 and float(ms) > 0 for _, sites, ms in maps)
    layers = _rows(out, "SubMConv3d") + _rows(out, "SparseConv3d")
    assert len(layers) == 4  # 2 layers x 2 dtypes x 1 channel count
    for row in layers:
        assert len(row) == 10 and row[1] in ("fp32", "fp16") and row[2] == "16" and int(row[3]) > 0
        fwd_torch, fwd_triton, fwd_ratio, bwd_torch, bwd_triton, bwd_ratio = map(float, row[4:])
        _assert_ratio(fwd_ratio, fwd_triton, fwd_torch)
        _assert_ratio(bwd_ratio, bwd_triton, bwd_torch)


@pytest.mark.slow
def test_dry_run_models(bench, capsys):
    bench.main(["--dry-run", "--only", "models"])
    out = capsys.readouterr().out
    rows = _rows(out, "MinkUNet14") + _rows(out, "SECOND backbone")
    assert len(rows) == 4  # 2 models x 2 dtypes
    for row in rows:
        assert len(row) == 9 and row[1] in ("fp32", "fp16") and int(row[2]) > 0
        fwd_torch, fwd_triton, fwd_ratio, step_torch, step_triton, step_ratio = map(float, row[3:])
        _assert_ratio(fwd_ratio, fwd_triton, fwd_torch)
        _assert_ratio(step_ratio, step_triton, step_torch)
