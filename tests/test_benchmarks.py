"""Smoke run of the speed benchmark: ``benchmarks/bench_conv.py --quick`` runs end to end and
prints a complete, well-formed row for every scene and layer (numbers are not judged here:
speed is measured in ``benchmarks/``, never asserted in tests)."""
import importlib.util
import pathlib
import re

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_conv.py"


def test_bench_conv_quick_prints_every_row(capsys):
    spec = importlib.util.spec_from_file_location("bench_conv", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick"])
    out = capsys.readouterr().out
    assert out.count("\n## ") == 2  # two scenes
    rows = [line for line in out.splitlines() if line.startswith("| SubMConv3d") or line.startswith("| SparseConv3d")]
    assert len(rows) == 4  # 2 scenes x 2 layers x 1 channel count
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 16
        layer, channels, pairs, map_ms, fwd, bwd, ratio, floor, fwd_floor = cells[:9]
        assert channels == "16" and int(pairs.replace(",", "")) > 0
        times = [float(v) for v in (map_ms, fwd, bwd, floor)]
        assert all(t > 0 for t in times)
        # each ratio agrees with its two columns, which are printed rounded to 0.1 ms
        for shown, num, den in ((ratio, times[2], times[1]), (fwd_floor, times[1], times[3])):
            low = (num - 0.05) / (den + 0.05)
            high = (num + 0.05) / (den - 0.05) if den > 0.05 else float("inf")
            assert low - 0.005 <= float(shown) <= high + 0.005
        assert re.fullmatch(r"[\d.]+ \([\d.]+x\)", cells[10])  # peak MB (ratio)
