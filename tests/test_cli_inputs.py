"""The command line rejects bad input before any work: output folders that cannot be written
(``--out``), input files with values the API would reject (strings, null, booleans, lists for
scalars), and a fuzz over input files (exit code 0 or 2 only, no traceback, nothing written for a
rejected file)."""

import contextlib
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gaussflow.cli import main

AFFINE = {"W": [[-1.0, 0.5], [0.0, -2.0]], "mean": [1.0, 0.0], "cov": [[1.0, 0.0], [0.0, 1.0]],
          "t1": 0.5}


def _main(argv):
    """``main(argv)`` in-process: (exit code, stdout, stderr, seconds)."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


def _error_line(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gaussflow: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------- --out (item 2)
COMMANDS = {
    "solve": ["solve", "affine", "--n-save", "3", "--quiet"],
    "run": ["run", "--quick"],
    "validate": ["validate", "affine", "--d", "2", "--n", "64", "--seeds", "0", "--quiet"],
    "reproduce": ["reproduce", "--quick", "--only", "ranks"],
    "derive": ["derive", "--all"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_out_under_a_file_fails_fast(tmp_path, name):
    (tmp_path / "afile").write_text("not a folder")
    code, out, err, seconds = _main(COMMANDS[name] + ["--out", str(tmp_path / "afile" / "sub")])
    assert code == 2 and out == ""
    _error_line(err, "--out", "afile")
    assert seconds < 3.0, f"{name} took {seconds:.1f} s before checking --out"
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("name", ["solve", "run"])
def test_out_in_a_read_only_place_fails_fast(tmp_path, name):
    # /proc refuses new folders even to root (chmod cannot simulate read-only for root)
    code, _, err, seconds = _main(COMMANDS[name] + ["--out", "/proc/gaussflow-test-out/x"])
    assert code == 2 and seconds < 3.0
    _error_line(err, "--out /proc/gaussflow-test-out/x")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_out_read_only_folder_fails_fast(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err, seconds = _main(COMMANDS["solve"] + ["--out", str(ro)])
    finally:
        ro.chmod(0o700)
    assert code == 2 and seconds < 3.0
    _error_line(err, "--out", "cannot be created or written")
    assert list(ro.iterdir()) == []


def test_out_error_in_a_new_process_has_no_traceback(tmp_path):
    (tmp_path / "afile").write_text("")
    p = subprocess.run([sys.executable, "-m", "gaussflow", "solve", "affine", "--out",
                        str(tmp_path / "afile" / "sub")], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    _error_line(p.stderr, "--out")


def test_rejected_input_leaves_no_new_out_folder(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({**AFFINE, "t1": "1"}))
    out = tmp_path / "new" / "deep"
    code, _, err, _ = _main(["solve", "affine", "--input", str(tmp_path / "bad.json"),
                             "--out", str(out)])
    assert code == 2
    _error_line(err, "'t1'")
    assert not (tmp_path / "new").exists()


def test_derive_out_needs_all(tmp_path):
    code, _, err, _ = _main(["derive", "softmax", "--out", str(tmp_path / "d")])
    assert code == 2
    _error_line(err, "--all")
    assert not (tmp_path / "d").exists()


def test_bench_json_in_a_missing_folder_fails_fast(tmp_path):
    code, _, err, seconds = _main(["bench", "--quick", "--json", str(tmp_path / "no" / "b.json")])
    assert code == 2 and seconds < 3.0
    _error_line(err, "--json", "does not exist")


# ------------------------------------------------------------------ strict input files (item 7)
def _solve_file(tmp_path, variant, content, name="in.json"):
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    else:
        np.savez(path, **content)
    out = tmp_path / "out"
    code, stdout, err, _ = _main(["solve", variant, "--input", str(path), "--n-save", "3",
                                  "--quiet", "--out", str(out)])
    return code, err, path, out


MULTI = {"Q": [[1.0, 0.0], [0.0, 1.0]], "K": [[1.0, 0.0], [0.0, 1.0]],
         "V": [[1.0, 0.0], [0.0, 1.0]], "heads": 2, "cov": [[1.0, 0.0], [0.0, 1.0]]}
SOFT = {"Q": [[1.0, 0.0], [0.0, 1.0]], "K": [[1.0, 0.0], [0.0, 1.0]],
        "V": [[1.0, 0.0], [0.0, 1.0]], "cov": [[1.0, 0.0], [0.0, 1.0]]}


@pytest.mark.parametrize("variant, change, needles, not_in", [
    ("softmax", {"beta": "0.5"}, ["'beta'", "string"], []),
    ("softmax", {"Q": [["1", "0"], ["0", "1"]]}, ["'Q'", "string"], []),
    ("affine", {"t1": [1, 2]}, ["'t1'", "single number"], []),
    ("multihead", {"heads": [2]}, ["'heads'", "positive integer"], []),
    ("multihead", {"heads": True}, ["'heads'"], []),
    ("multihead", {"heads": 2.0}, ["'heads'", "integer"], []),
    ("multihead", {"heads": 0}, ["'heads'", "positive integer"], []),
    ("affine", {"mean": None}, ["'mean'", "null"], ["NaN"]),
    ("affine", {"cov": None}, ["cov", "null"], ["NaN"]),
    ("affine", {"t1": -1}, ["'t1'", "> 0"], ["--t1"]),
    ("softmax", {"beta": True}, ["'beta'", "boolean"], []),
    ("softmax", {"beta": {"value": 1}}, ["'beta'", "object"], []),
    ("softmax", {"V": [[1.0, 0.0], [0.0]]}, ["'V'", "ragged"], []),
    ("softmax", {"cov": [[1.0, None], [0.0, 1.0]]}, ["'cov'", "null"], []),
    ("l2", {"c": -1.0}, ["'c'", "> 0"], []),
    ("affine", {"W": [[1.0, 0.0]]}, ["W"], []),
    ("affine", {"mean": [1.0, 0.0, 0.0]}, ["mean"], []),
])
def test_json_values_are_as_strict_as_the_api(tmp_path, variant, change, needles, not_in):
    base = {"softmax": SOFT, "l2": SOFT, "multihead": MULTI, "affine": AFFINE}[variant]
    code, err, path, out = _solve_file(tmp_path, variant, {**base, **change})
    assert code == 2
    line = _error_line(err, str(path), *needles)
    for n in not_in:
        assert n not in line, line
    assert not out.exists()


def test_npz_values_are_as_strict_as_the_api(tmp_path):
    arrays = {k: np.asarray(v) for k, v in AFFINE.items()}
    code, err, path, _ = _solve_file(tmp_path, "affine", {**arrays, "t1": np.array("1.0")},
                                     name="a.npz")
    assert code == 2
    _error_line(err, str(path), "'t1'", "dtype")
    arrays = {k: np.asarray(v) for k, v in MULTI.items()}
    code, err, path, _ = _solve_file(tmp_path, "multihead", {**arrays, "heads": np.array(True)},
                                     name="m.npz")
    assert code == 2
    _error_line(err, str(path), "'heads'")


def test_valid_json_file_still_solves(tmp_path):
    code, err, _, out = _solve_file(tmp_path, "multihead", {**MULTI, "beta": [0.5, 1.0],
                                                            "t1": 0.25})
    assert code == 0, err
    z = np.load(out / "solve-multihead.npz")
    assert z["ts"][-1] == pytest.approx(0.25)


# ------------------------------------------------------------------------- fuzz (item 8)
_number = st.one_of(st.integers(-3, 3), st.floats(-3, 3),
                    st.sampled_from([float("nan"), float("inf"), 1e308, 0.0]))
_leaf = st.one_of(_number, st.none(), st.booleans(), st.text(max_size=3))
_value = st.one_of(
    _leaf,
    st.lists(_leaf, max_size=3),
    st.lists(st.lists(_number, min_size=1, max_size=2), min_size=1, max_size=2),
    st.lists(st.lists(_leaf, max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=2), _number, max_size=1),
)
_KEYS = ["W", "b", "Q", "K", "V", "W_O", "beta", "heads", "mean", "cov", "t1", "junk"]


@st.composite
def _input_files(draw):
    variant = draw(st.sampled_from(["affine", "softmax", "multihead"]))
    base = {"affine": AFFINE, "softmax": SOFT, "multihead": MULTI}[variant]
    content = {**base, "t1": 0.1}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(_KEYS))
        if draw(st.booleans()) and key in content:
            del content[key]
        else:
            content[key] = draw(_value)
    return variant, content


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=_input_files())
def test_fuzz_input_files(tmp_path_factory, case):
    variant, content = case
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "in.json"
    path.write_text(json.dumps(content))  # NaN/Infinity are written as JSON extensions
    out = tmp / "out"
    code, _, err, _ = _main(["solve", variant, "--input", str(path), "--n-save", "2", "--quiet",
                             "--out", str(out)])
    assert code in (0, 2), (code, err)
    event(f"exit code {code}")
    assert "Traceback" not in err
    if code == 2:
        _error_line(err)
        assert not out.exists(), "a rejected input wrote results"
    else:
        assert (out / f"solve-{variant}.npz").exists()


def test_solve_closed_form_option(tmp_path):
    """`--closed-form`: softmax with V = I (W_O V = I) is evaluated in closed form by default and
    integrated with `never`; `always` where no closed form applies is a clear error (exit 2)."""
    path = tmp_path / "soft.json"
    path.write_text(json.dumps(dict(SOFT, Q=[[0.5, 0.2], [0.1, -0.3]], t1=0.5)))
    methods = {}
    for mode in ("auto", "never"):
        code, stdout, err, _ = _main(["solve", "softmax", "--input", str(path), "--n-save", "3",
                                      "--quiet", "--json", "--closed-form", mode,
                                      "--out", str(tmp_path / mode)])
        assert code == 0, err
        methods[mode] = json.loads(stdout)
    assert methods["auto"]["method"] == "closed_form"
    assert methods["never"]["method"] == "integrate"
    code, _, err, _ = _main(["solve", "affine", "--closed-form", "always", "--n-save", "3",
                             "--quiet", "--out", str(tmp_path / "a")])
    assert code == 2
    _error_line(err, "closed_form")
