"""The command line: the default study, derivations, errors (exit code 2, one line)."""

import json
import os
import subprocess
import sys

import pytest

from gaussflow.cli import main
from gaussflow.symbolic import derive
from gaussflow.variants import VARIANTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_writes_figures_and_summary(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"]["blowup"]["statuses"] == {"blowup": len(summary["cases"]["blowup"]["runs"])}
    assert summary["cases"]["collapse"]["statuses"] == {"completed": len(summary["cases"]["collapse"]["runs"])}
    # the case called "collapse" collapses (Sigma -> 0) in every run, as the study promises
    assert summary["cases"]["collapse"]["regimes"] == {"collapse": len(summary["cases"]["collapse"]["runs"])}
    assert summary["cases"]["blowup"]["regimes"] == {"blowup": len(summary["cases"]["blowup"]["runs"])}
    for run in summary["cases"]["blowup"]["runs"]:
        assert run["blowup_time"] > 0
    for name in ["disk_collapse", "disk_blowup", "eigenvalues_collapse", "eigenvalues_blowup"]:
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.pdf").exists()
    assert "blowup" in (out / "summary.md").read_text()
    # one self-contained report next to the figures, its path printed
    from test_report import assert_self_contained, embedded_pngs

    assert f"report: {out / 'report.html'}" in printed
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    figures = [(out / f"{name}.png").read_bytes() for name in
               ["disk_collapse", "eigenvalues_collapse", "disk_blowup", "eigenvalues_blowup"]]
    assert embedded_pngs(page) == figures
    assert f"gaussflow run --quick --out {out}" in page
    n = len(summary["cases"]["collapse"]["runs"])
    assert f"collapse / statuses / completed</th><td>{n}<" in page


def test_derive_prints_odes(capsys):
    assert main(["derive", "softmax"]) == 0
    text = capsys.readouterr().out
    assert "d Sigma/dt" in text and "beta*W_O*V*Sigma*K.T*Q" in text
    assert main(["derive", "softmax", "--latex"]) == 0
    assert r"\begin{aligned}" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_derivation_files_are_current(name):
    """derivations/NAME.md must equal what `gaussflow derive --all --out derivations/` writes."""
    path = os.path.join(ROOT, "derivations", f"{name}.md")
    assert os.path.exists(path), f"missing {path}: run `gaussflow derive --all --out derivations/`"
    with open(path) as fh:
        on_disk = fh.read()
    assert on_disk == derive(name).markdown(), (
        f"{path} is stale: run `gaussflow derive --all --out derivations/`")


def test_usage_errors_exit_2_with_one_line(capsys):
    assert main(["derive", "nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gaussflow: error: unknown variant")
    assert main(["derive"]) == 2


def test_cli_process_exit_code():
    proc = subprocess.run([sys.executable, "-m", "gaussflow.cli", "derive", "bogus"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("gaussflow: error:")


def test_output_into_a_closed_pipe_is_not_an_error():
    """`gaussflow derive --all | head -1`: the reader stops early; no traceback, exit code 0."""
    proc = subprocess.run(f"{sys.executable} -m gaussflow derive --all | head -c 20",
                          shell=True, capture_output=True, text=True,
                          executable="/bin/bash", env=dict(os.environ))
    assert proc.stdout.startswith("affine")
    assert "Error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_importing_plots_leaves_the_backend_alone():
    code = "import matplotlib, gaussflow.plots; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, MPLBACKEND="svg")).stdout.strip()
    assert out == "svg"


@pytest.mark.parametrize("command", ["run", "derive", "solve", "validate", "reproduce", "bench"])
def test_every_subcommand_takes_json_and_quiet(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--json" in text and "--quiet" in text
