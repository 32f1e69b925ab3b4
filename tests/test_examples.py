"""The examples run in quick mode (in-process, sharing compiled solves) and write their figures."""

import json
import os
import runpy

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


# rank_histograms: 2 draws in d = 3 only (each d and variant is a compilation; the full
# histogram's ceil(d/2) property is tested exactly in test_theory.py)
EXTRA = {"rank_histograms.py": ["--draws", "2", "--dims", "3"]}


@pytest.mark.parametrize("script", ["regimes_2d.py", "rank_histograms.py", "clustering.py",
                                    "bert_layer.py", "depth_minilm.py",
                                    "whole_model.py"])
def test_example_quick_writes_figures(script, tmp_path):
    out = tmp_path / "figs"
    ns = runpy.run_path(os.path.join(EXAMPLES, script), run_name="example")
    files = ns["main"](["--quick", "--out", str(out)] + EXTRA.get(script, []))
    assert files
    for f in files:
        assert os.path.getsize(f) > 10_000, f  # a real PNG, not an empty canvas
        assert os.path.exists(f[:-4] + ".pdf")


def test_cli_reproduce_quick_clustering(tmp_path, capsys):
    from gaussflow.cli import main

    assert main(["reproduce", "--quick", "--only", "clustering", "--out", str(tmp_path)]) == 0
    assert os.path.exists(tmp_path / "clustering_spectrum.png")
    assert os.path.exists(tmp_path / "summary.json")
    # the report: written next to the figure, its path printed, the figure embedded
    from test_report import assert_self_contained, embedded_pngs

    assert f"report: {tmp_path / 'report.html'}" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert embedded_pngs(page) == [(tmp_path / "clustering_spectrum.png").read_bytes()]
    summary = json.loads((tmp_path / "summary.json").read_text())
    rank = summary["clustering"]["effective_rank_end"]
    assert f"effective_rank_end</th><td>{rank:.4g}<" in page
