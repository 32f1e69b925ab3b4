"""The examples run in quick mode (in-process, sharing compiled solves) and write their figures."""

import os
import runpy
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("script", ["regimes_2d.py", "rank_histograms.py", "clustering.py"])
def test_example_quick_writes_figures(script, tmp_path, monkeypatch):
    out = tmp_path / "figs"
    monkeypatch.setattr(sys, "argv", [script, "--quick", "--out", str(out)])
    ns = runpy.run_path(os.path.join(EXAMPLES, script), run_name="example")
    files = ns["main"]([ "--quick", "--out", str(out)])
    assert files
    for f in files:
        assert os.path.getsize(f) > 10_000, f  # a real PNG, not an empty canvas
        assert os.path.exists(f[:-4] + ".pdf")


def test_cli_reproduce_quick_clustering(tmp_path, capsys):
    from gaussflow.cli import main

    assert main(["reproduce", "--quick", "--only", "clustering", "--out", str(tmp_path)]) == 0
    assert os.path.exists(tmp_path / "clustering_spectrum.png")
    assert os.path.exists(tmp_path / "summary.json")
