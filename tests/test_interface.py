"""User interface: `gaussflow solve` (files, random, JSON), --help examples, one-line errors,
notebook reprs, and silence of the library unless asked."""

import json

import numpy as np
import pytest
import scipy.linalg

import gaussflow as gf
from gaussflow.cli import SOLVE_KEYS, build_parser, main

BLOW = {"Q": [[1.0, 0.2], [0.0, 1.0]], "K": [[1.0, 0.0], [0.0, 0.5]], "V": np.eye(2).tolist(),
        "cov": [[0.5, 0.1], [0.1, 0.3]], "mean": [0.1, 0.0], "t1": 5.0}


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gaussflow: error:"), err
    for n in needles:
        assert n in err[0], err[0]


def test_solve_npz_blowup_matches_theory(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", **{k: np.asarray(v) for k, v in BLOW.items()})
    assert main(["solve", "softmax", "--input", str(tmp_path / "w.npz"), "--out",
                 str(tmp_path / "o"), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "status: blowup" in printed.out and printed.err == ""
    z = np.load(tmp_path / "o" / "solve-softmax.npz")
    assert set(z.files) == {"ts", "means", "covs", "cov_index", "eigenvalues", "status",
                            "t_stop", "blowup_time"}
    np.testing.assert_array_equal(z["cov_index"], np.arange(len(z["ts"])))  # d = 2: every time
    # the saves approach t* (savetimes.solve_resolved): dense in the last 10 % before it
    assert np.sum(z["ts"] > 0.9 * float(z["blowup_time"])) >= 50
    assert str(z["status"]) == "blowup"
    # DESIGN.md: W_O V = I gives T* = 1 / lambda_max(beta S0^1/2 (A + A^T) S0^1/2), A = K^T Q
    A = np.array(BLOW["K"]).T @ np.array(BLOW["Q"])
    R = scipy.linalg.sqrtm(np.array(BLOW["cov"])).real
    T = 1 / np.linalg.eigvalsh(R @ (A + A.T) @ R).max()
    assert float(z["blowup_time"]) == pytest.approx(T, rel=1e-5)
    assert z["covs"].shape == (len(z["ts"]), 2, 2) and z["ts"][-1] == float(z["t_stop"])
    for name in ("solve-softmax-eigenvalues", "solve-softmax-disk"):
        assert (tmp_path / "o" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "o" / f"{name}.pdf").exists()


def test_solve_json_affine_is_the_matrix_exponential(tmp_path, capsys):
    W = np.array([[-0.5, 1.0], [-0.3, 0.2]])
    b, m0, S0 = np.array([0.3, -0.1]), np.array([1.0, 2.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    (tmp_path / "a.json").write_text(json.dumps({"W": W.tolist(), "b": b.tolist(),
                                                 "mean": m0.tolist(), "cov": S0.tolist()}))
    assert main(["solve", "affine", "--input", str(tmp_path / "a.json"), "--t1", "2",
                 "--out", str(tmp_path), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed" and summary["d"] == 2 and summary["blowup_time"] is None
    z = np.load(tmp_path / "solve-affine.npz")
    E = scipy.linalg.expm(2 * W)
    np.testing.assert_allclose(z["covs"][-1], E @ S0 @ E.T, rtol=1e-7)
    np.testing.assert_allclose(z["means"][-1], E @ m0 + np.linalg.solve(W, (E - np.eye(2)) @ b),
                               rtol=1e-7)


def test_solve_random_json_and_progress(tmp_path, capsys):
    assert main(["solve", "l2", "--d", "3", "--seed", "4", "--out", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["d"] == 3 and summary["status"] == "completed" and "seed = 4" in summary["source"]
    assert len(summary["final_eigenvalues"]) == 3
    assert "100.0% of [t0, t1]" in out.err  # the progress meter, on without --quiet
    assert not (tmp_path / "solve-l2-disk.png").exists()  # the disk is for d = 2 only


def test_every_subcommand_help_shows_an_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"run", "derive", "solve", "validate", "reproduce", "bench"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert "example" in p.format_help(), name


def test_solve_help_documents_every_key():
    text = build_parser()._subparsers._group_actions[0].choices["solve"].format_help()
    for variant, (req, opt) in SOLVE_KEYS.items():
        assert variant in text
        for k in req + opt:
            assert k in text, k


def test_file_errors_exit_2_with_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["solve", "softmax", "--input", str(tmp_path / "nope.npz")],
                    "does not exist")
    (tmp_path / "bad.json").write_text("{not json")
    _one_line_error(capsys, ["solve", "softmax", "--input", str(tmp_path / "bad.json")],
                    "not valid JSON")
    (tmp_path / "m.json").write_text(json.dumps({"Q": [[1.0]], "V": [[1.0]], "cov": [[1.0]]}))
    _one_line_error(capsys, ["solve", "softmax", "--input", str(tmp_path / "m.json")],
                    "missing key(s) K")
    (tmp_path / "u.json").write_text(json.dumps({"W": [[1.0]], "cov": [[1.0]], "q": 1}))
    _one_line_error(capsys, ["solve", "affine", "--input", str(tmp_path / "u.json")],
                    "unknown key(s) q")
    (tmp_path / "w.txt").write_text("1 2 3")
    _one_line_error(capsys, ["solve", "softmax", "--input", str(tmp_path / "w.txt")],
                    ".npz or .json")
    (tmp_path / "z.npz").write_bytes(b"garbage")
    _one_line_error(capsys, ["solve", "softmax", "--input", str(tmp_path / "z.npz")],
                    "cannot read")
    (tmp_path / "c.json").write_text(json.dumps({"W": [[1.0, 0], [0, 1]], "cov": [[1.0, 2.0],
                                                                                  [2.0, 1.0]]}))
    _one_line_error(capsys, ["solve", "affine", "--input", str(tmp_path / "c.json")], "cov")
    _one_line_error(capsys, ["solve", "masked", "--d", "2"], "solve supports")
    _one_line_error(capsys, ["solve", "softmax", "--checkpoint", str(tmp_path)], "multihead")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        main(["--debug", "solve", "softmax", "--input", str(tmp_path / "nope.json")])


def test_reprs():
    g = gf.Gaussian([1.0, 2.0], [[2.0, 0.5], [0.5, 1.0]])
    assert "d=2" in repr(g) and r"\mathcal N" in g._repr_latex_() and "0.5" in g._repr_latex_()
    pg = gf.PositionalGaussians.repeat(g, 3)
    assert "n_blocks=3" in repr(pg) and "tr cov in [3, 3]" in repr(pg)
    assert pg._repr_html_().count("<tr>") == 4
    D = gf.derive("softmax")
    assert D._repr_latex_().startswith("$$\\begin{aligned}") and "exact" in repr(D)
    tr = gf.Trajectory(ts=np.array([0.0, 1.0]), means=np.zeros((2, 2)), covs=np.stack([np.eye(2)] * 2),
                       status="blowup", t_stop=1.0, blowup_time=1.25, field_name="softmax")
    assert "blowup_time=1.25" in repr(tr) and "<td>blowup</td>" in tr._repr_html_()
    B = 3
    sw = gf.SweepResult(ts=np.zeros(2), means=np.zeros((B, 2, 2)), covs=np.zeros((B, 2, 2, 2)),
                        mask=np.ones((B, 2), bool), final_means=np.zeros((B, 2)),
                        final_covs=np.zeros((B, 2, 2)),
                        status=np.array(["completed", "blowup", "blowup"]),
                        t_stop=np.array([2.0, 0.5, 0.7]), blowup_time=np.array([np.nan, 0.5, 0.7]),
                        num_steps=np.zeros(B, int), compile_seconds=1.0, run_seconds=0.1,
                        n_devices=1, chunk_size=B, field_name="softmax")
    assert "blowup: 2, completed: 1" in repr(sw)
    h = sw._repr_html_()
    assert "[0.5, 0.7]" in h and "blowup: 2" in h


@pytest.fixture(scope="module")
def small_affine():
    return gf.Affine([[-0.2, 0.5], [-0.5, -0.1]], [0.1, 0.0]), gf.Gaussian([0.5, 0.0], np.eye(2))


def test_library_prints_nothing_unless_asked(small_affine, capsys):
    f, g = small_affine
    gf.solve(f, g, 1.0)
    gf.sweep(f, [g, g], 1.0)
    rep = gf.validate(f, g, 1.0, n_particles=(16, 64), seeds=(0, 1))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    r = repr(rep)
    assert r.startswith("ValidationReport(affine, ") and "\n" not in r
    page = rep._repr_html_()  # the table and small figure of gaussflow.display
    assert "<caption>Validation of affine</caption>" in page and "data:image/png" in page
    assert f"verdict</th><td>{rep.verdict}</td>" in page
    gf.validate(f, g, 1.0, n_particles=(16, 64), seeds=(0, 1), progress=True)
    err = capsys.readouterr().err  # one bar over the whole validation: elapsed and remaining
    assert "validate affine" in err and "elapsed" in err and "left" in err
