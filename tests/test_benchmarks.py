"""The benchmarks' --quick modes run and print their ratios (targets are judged on full runs)."""

import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import benchmarks  # noqa: E402


@pytest.mark.parametrize("name", benchmarks.NAMES)
def test_quick_benchmark_runs_and_prints_ratio(name, capsys):
    (res,) = benchmarks.run([name], quick=True)
    out = capsys.readouterr().out
    assert res["name"] == name and math.isfinite(res["ratio"]) and res["ratio"] > 0
    assert f"## {name}" in out and "ratio (" in out and "| " in out


def test_unknown_benchmark_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        benchmarks.load("nope")


def test_cli_bench_subcommand(capsys):
    from gaussflow.cli import main

    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
