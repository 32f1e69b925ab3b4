"""Outputs that scale with d: `gaussflow solve` on a d = 64 checkpoint writes summaries, not dumps
(the .npz keeps Sigma at a few times, the printed text describes the spectrum, the figure has a
colour bar instead of a 64-entry legend)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from gaussflow import plots
from gaussflow.cli import main
from gaussflow.cli.solve import COV_SAVES, LARGE_D, PRINT_MAX, cov_index
from gaussflow.theory import effective_rank, spectrum_summary

D = 64


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    from gaussflow.weights import write_random_bert

    root = tmp_path_factory.mktemp("large_d")
    ckpt = write_random_bert(root / "bert", d=D, heads=2)
    out = root / "out"
    return ckpt, out


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr()


def test_solve_checkpoint_outputs_are_summaries(solved, capsys):
    ckpt, out = solved
    code, cap = _run(["solve", "multihead", "--checkpoint", str(ckpt), "--t1", "0.1",
                      "--n-save", "41", "--out", str(out), "--quiet"], capsys)
    assert code == 0, cap.err
    z = np.load(out / "solve-multihead.npz")
    n_t = len(z["ts"])
    assert n_t == 41
    # Sigma at a few times only; the spectrum at every time
    assert z["covs"].shape == (COV_SAVES, D, D)
    assert z["cov_index"][0] == 0 and z["cov_index"][-1] == n_t - 1
    assert z["eigenvalues"].shape == (n_t, D)
    np.testing.assert_allclose(z["eigenvalues"][z["cov_index"]],
                               np.linalg.eigvalsh(z["covs"]), rtol=1e-10, atol=1e-12)
    full = n_t * D * D * 8
    size = (out / "solve-multihead.npz").stat().st_size
    bound = (COV_SAVES * D * D + 2 * n_t * D) * 8 + 10_000  # covs, eigenvalues, means, headers
    assert size < bound < full / 4, (size, bound, full)
    # the printed text: a summary line, not 64 numbers
    text = cap.out
    line = next(ln for ln in text.splitlines() if ln.startswith("final Sigma"))
    assert "effective rank" in line and "trace" in line
    assert len(line) < 400 and text.count(",") < 40
    summary = json.loads((out / "solve-multihead.json").read_text())
    assert summary["covs_saved"] == COV_SAVES
    assert summary["final_spectrum"]["d"] == D
    assert len(summary["final_eigenvalues"]) == D


def test_solve_all_covs_keeps_every_time(solved, capsys):
    ckpt, out = solved
    code, cap = _run(["solve", "multihead", "--checkpoint", str(ckpt), "--t1", "0.1",
                      "--n-save", "41", "--all-covs", "--out", str(out), "--quiet"], capsys)
    assert code == 0, cap.err
    z = np.load(out / "solve-multihead.npz")  # the same solve (compiled once), every Sigma kept
    assert z["covs"].shape == (41, D, D)
    np.testing.assert_array_equal(z["cov_index"], np.arange(41))


def test_cov_index_rule():
    assert list(cov_index(201, LARGE_D)) == list(range(201))
    idx = cov_index(201, LARGE_D + 1)
    assert len(idx) == COV_SAVES and idx[0] == 0 and idx[-1] == 200
    assert list(cov_index(3, 500)) == [0, 1, 2]


def test_spectrum_summary_matches_the_metrics():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(D, D))
    S = M @ M.T / D
    s = spectrum_summary(S, top=3)
    w = np.linalg.eigvalsh(S)
    assert s["trace"] == pytest.approx(np.trace(S))
    assert s["effective_rank"] == pytest.approx(float(effective_rank(S)))
    assert s["top"] == pytest.approx(w[::-1][:3].tolist())
    assert s["min"] == pytest.approx(w[0]) and s["max"] == pytest.approx(w[-1])
    with pytest.raises(ValueError, match="top"):
        spectrum_summary(S, top=0)
    with pytest.raises(ValueError, match="cov"):
        spectrum_summary(np.stack([S, S]))


@pytest.mark.parametrize("d", [PRINT_MAX, D])
def test_eigenvalue_figure_legend_only_when_readable(d):
    ts = np.linspace(0, 1, 5)
    covs = np.stack([np.diag(np.linspace(1, 2, d)) * (1 + t) for t in ts])
    fig = plots.eigenvalues([SimpleNamespace(ts=ts, covs=covs)])
    ax = fig.axes[0]
    if d <= plots.LEGEND_MAX:
        assert len(ax.get_legend().get_texts()) == d
        assert len(fig.axes) == 1
    else:
        assert ax.get_legend() is None
        assert len(fig.axes) == 2  # the colour bar over the eigenvalue index
    plots.plt.close(fig)
    labels = [f"run {i}" for i in range(plots.LEGEND_MAX + 1)]
    fig = plots.eigenvalues([SimpleNamespace(ts=ts, covs=covs[:, :2, :2])] * len(labels),
                            labels=labels)
    assert fig.axes[0].get_legend() is None
    plots.plt.close(fig)
