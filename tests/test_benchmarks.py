"""The benchmarks' --quick modes run and print their ratios (targets are judged on full runs)."""

import contextlib
import functools
import io
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import benchmarks  # noqa: E402


@functools.cache
def _quick(name):
    """``(result, printed text)`` of a quick run, run once per process (tests share it)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        (res,) = benchmarks.run([name], quick=True)
    return res, buf.getvalue()


@pytest.mark.parametrize("name", benchmarks.NAMES)
def test_quick_benchmark_runs_and_prints_ratio(name):
    res, out = _quick(name)
    assert res["name"] == name and math.isfinite(res["ratio"]) and res["ratio"] > 0
    assert f"## {name}" in out and "ratio (" in out and "| " in out


def test_unknown_benchmark_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        benchmarks.load("nope")


def test_cli_bench_subcommand(capsys):
    from gaussflow.cli import main

    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_rank_sweep_padding_is_the_unpadded_flow_plus_zeros():
    """Benchmark 1 embeds d = 3 in dimension 5: the padded block stays exactly zero and the
    leading block equals the unpadded solve (to the solver tolerance: the step-size controller's
    RMS norm sees more components)."""
    import numpy as np

    import gaussflow as gf
    from benchmarks.rank_sweep import draws, pad

    Q, V, S0, _ = draws(3, 1, seed=3)[1]  # a V = M^T M draw
    beta, t1 = 1 / np.sqrt(3), 50.0
    ref = gf.solve(gf.Softmax(Q, -Q, V, beta=beta), gf.Gaussian(np.zeros(3), S0), t1, [0, t1])
    Qp, Vp, Sp = pad(Q, V, S0, 5)
    got = gf.solve(gf.Softmax(Qp, -Qp, Vp, beta=beta), gf.Gaussian(np.zeros(5), Sp), t1, [0, t1])
    assert got.status == ref.status == "completed"
    C = got.covs[-1]
    assert np.all(C[3:, :] == 0) and np.all(C[:, 3:] == 0) and np.all(got.means[-1] == 0)
    assert np.abs(C[:3, :3] - ref.covs[-1]).max() <= 1e-7 * np.abs(ref.covs[-1]).max()


def test_rank_sweep_padding_keeps_the_closed_form_for_v_identity():
    """A V = I draw is padded with the identity block, so W_O V = I holds in dimension 5 and the
    padded flow (singular Sigma0) takes the closed form: zeros outside the leading block, and that
    block equal to the unpadded closed-form solve up to round-off."""
    import numpy as np

    import gaussflow as gf
    from benchmarks.rank_sweep import draws, pad

    Q, V, S0, kind = draws(3, 1, seed=3)[0]
    assert kind == "I"
    beta, t1 = 1 / np.sqrt(3), 1e10
    ref = gf.solve(gf.Softmax(Q, -Q, V, beta=beta), gf.Gaussian(np.zeros(3), S0), t1, [0, t1])
    Qp, Vp, Sp = pad(Q, V, S0, 5)
    np.testing.assert_array_equal(Vp, np.eye(5))
    got = gf.solve(gf.Softmax(Qp, -Qp, Vp, beta=beta), gf.Gaussian(np.zeros(5), Sp), t1, [0, t1])
    assert got.method == ref.method == "closed_form" and got.status == "completed"
    C = got.covs[-1]
    assert np.all(C[3:, :] == 0) and np.all(C[:, 3:] == 0) and np.all(got.means[-1] == 0)
    assert np.abs(C[:3, :3] - ref.covs[-1]).max() <= 1e-13 * np.abs(ref.covs[-1]).max()


def test_rank_sweep_quick_figures():
    """The quick rank sweep reports the exact limit rank ceil(d/2) for every V = I draw, errors
    against the closed form at the tolerance level, every flow completed, and no NaN anywhere
    (no closed form for V = M^T M: "n/a")."""
    res, out = _quick("rank_sweep")
    assert "nan" not in out
    for row in res["rows"]:
        d, hist = row["d"], [int(k) for k in row["rank hist (1..d)"].split("/")]
        assert row["statuses"] == f"completed: {row['runs']}"
        if row["V"] == "I":
            assert hist[(d + 1) // 2 - 1] == row["runs"], (d, hist)  # rank ceil(d/2)
            assert row["max err gaussflow"] <= 1e-8
            assert row["closed form"] == row["runs"]  # W_O V = I: the fast path
        else:
            assert row["max err gaussflow"] == "n/a"
            assert row["closed form"] == 0
    # fast path vs forced integration, side by side: same flows, closed form exact at t1
    side = res["fast_path_vs_integration"]
    for key in ("I", "all"):
        assert side[key]["closed_form"]["flows"] == side[key]["integrate"]["flows"] > 0
    assert side["I"]["closed_form"]["err"] <= 1e-13 * 1e2  # round-off of the evaluation
    assert side["I"]["integrate"]["err"] <= 1e-8
    assert "forced integration" in out


def test_cli_bench_help_names_every_benchmark(capsys):
    from gaussflow.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in benchmarks.NAMES:
        assert name in text, name
