"""Bad-input battery: every public entry point rejects bad input with the intended exception and a
message naming the argument, *before any work* (no XLA compilation happens); the CLI answers with
exit code 2 and one line on stderr, no traceback."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import gaussflow as gf
from gaussflow import particles, theory
from gaussflow.cli import main

I2 = np.eye(2)
G2 = gf.Gaussian.standard(2)
SM = gf.Softmax(I2, I2, I2)
POS = gf.PositionalGaussians.repeat(G2, 2)
LAYERS = gf.Layers([(SM, 1.0)])
MASKED = gf.Masked(SM, 2)
G3 = gf.Gaussian.standard(3)
AFF3 = gf.Affine(np.eye(3))
# a batch of two states whose second covariance has a negative eigenvalue 10% of the largest, at
# the scale 1e-20 (built under vmap, which checks shapes only: sweep checks the values)
TINY_BAD = jax.vmap(gf.Gaussian)(np.zeros((2, 2)), np.stack([I2, np.diag([1e-20, -1e-21])]))

# (id, call, exception, message regex)
API_CASES = [
    # --- states: shapes, dtypes, finiteness, symmetry, PSD
    ("mean-complex", lambda: gf.Gaussian([1 + 1j, 0.0], I2), TypeError, "mean is complex"),
    ("cov-complex", lambda: gf.Gaussian([0.0, 0.0], I2 * (1 + 0j)), TypeError, "cov is complex"),
    ("mean-None-entry", lambda: gf.Gaussian(np.array([None, 1.0], dtype=object), I2), TypeError,
     "mean contains None"),
    ("mean-strings", lambda: gf.Gaussian(np.array(["1", "2"]), I2), TypeError,
     "mean must be an array of real numbers, got dtype <U1"),
    ("mean-ragged", lambda: gf.Gaussian([[1.0], [1.0, 2.0]], I2), TypeError,
     "mean must be an array of real numbers"),
    ("cov-None", lambda: gf.Gaussian([0.0, 0.0], None), TypeError, "cov must be an array"),
    ("cov-shape", lambda: gf.Gaussian(np.zeros(2), np.eye(3)), ValueError, "cov must be 2 x 2"),
    ("cov-asym", lambda: gf.Gaussian(np.zeros(2), [[1.0, 0.5], [0.2, 1.0]]), ValueError,
     r"cov is not symmetric .*pass \(S \+ S.T\) / 2"),
    ("cov-not-psd", lambda: gf.Gaussian(np.zeros(2), [[1.0, 2.0], [2.0, 1.0]]), ValueError,
     "cov is not positive semi-definite .*M @ M.T"),
    ("cov-tiny-negative", lambda: gf.Gaussian([0.0, 0.0], [[1e-20, 0.0], [0.0, -1e-21]]),
     ValueError, r"cov is not positive semi-definite \(smallest eigenvalue -1e-21\)"),
    ("sweep-cov-tiny-negative", lambda: gf.sweep(SM, TINY_BAD, 1.0), ValueError,
     r"g0s.cov\[1\] is not positive semi-definite"),
    ("mean-inf", lambda: gf.Gaussian([np.inf, 0.0], I2), ValueError, "mean contains NaN or inf"),
    ("blocks-shape", lambda: gf.PositionalGaussians(np.zeros((3, 2)), np.stack([I2] * 2)),
     ValueError, r"covs must have shape \(n_blocks, d, d\) = \(3, 2, 2\)"),
    ("blocks-psd", lambda: gf.PositionalGaussians(np.zeros((2, 2)), np.stack([I2, -I2])),
     ValueError, r"covs\[1\] is not positive semi-definite"),
    ("block-index-range", lambda: POS.block(2), IndexError,
     "block index 2 is out of range for 2 blocks"),
    ("block-index-negative", lambda: POS.block(-3), IndexError,
     "block index -3 is out of range for 2 blocks"),
    ("block-index-float", lambda: POS.block(1.0), TypeError, "b must be an int block index"),
    ("blocks-count", lambda: gf.PositionalGaussians.repeat(G2, 0), ValueError,
     "n_blocks must be a positive integer"),
    # --- fields: weights, scales, head counts
    ("K-shape", lambda: gf.Softmax(np.ones((2, 3)), np.ones((2, 2)), np.eye(3)), ValueError,
     r"K has shape \(2, 2\) but axis 1 must be 3"),
    ("W_O-required", lambda: gf.Softmax(I2, I2, np.ones((3, 2))), ValueError,
     r"W_O is required .*pass W_O of shape \(2, 3\)"),
    ("Q-complex", lambda: gf.Softmax(I2 * 1j, I2, I2), TypeError, "Q is complex"),
    ("beta-string", lambda: gf.Softmax(I2, I2, I2, beta="1"), TypeError, "beta must be a real number"),
    ("beta-vector", lambda: gf.Softmax(I2, I2, I2, beta=[1.0, 2.0]), ValueError, "beta must be a scalar"),
    ("beta-complex", lambda: gf.Softmax(I2, I2, I2, beta=1j), TypeError, "beta is complex"),
    ("l2-c-zero", lambda: gf.L2(I2, I2, I2, c=0.0), ValueError, "c must be > 0"),
    ("sinkhorn-eps", lambda: gf.Sinkhorn(I2, I2, I2, eps=-1.0), ValueError, "eps must be > 0"),
    ("sigmoid-bias-nan", lambda: gf.Sigmoid(I2, I2, I2, bias=np.nan), ValueError, "bias must be finite"),
    ("sigmoid-gh", lambda: gf.Sigmoid(I2, I2, I2, gh_order=0), ValueError, "gh_order must be a positive"),
    ("affine-W", lambda: gf.Affine(np.ones((2, 3))), ValueError, r"W must be square \(d, d\)"),
    ("affine-b", lambda: gf.Affine(I2, np.ones(3)), ValueError, r"b has shape \(3,\) but axis 0 must be 2"),
    ("heads-zero", lambda: gf.MultiHead.split(I2, I2, I2, None, 0), ValueError,
     "n_heads must be a positive integer"),
    ("heads-indivisible", lambda: gf.MultiHead.split(np.ones((4, 2)), np.ones((4, 2)), I2, None, 3),
     ValueError, "not divisible by n_heads=3"),
    ("heads-betas", lambda: gf.MultiHead.split(I2, I2, I2, None, 2, beta=[1.0, 2.0, 3.0]), ValueError,
     "beta has 3 entries but n_heads=2"),
    ("heads-kind", lambda: gf.MultiHead([gf.L2(I2, I2, I2)]), TypeError, r"heads\[0\] must be a gf.Softmax"),
    ("layers-duration", lambda: gf.Layers([(SM, -1.0)]), ValueError, r"schedule\[0\] duration must be > 0"),
    ("layers-dims", lambda: gf.Layers([(SM, 1.0), (AFF3, 1.0)]), ValueError, "different dimensions"),
    ("masked-approx", lambda: gf.Masked(gf.Unnormalized(I2, I2, I2), 2), ValueError,
     "cannot take this field: Unnormalized is approximate"),
    ("sum-dims", lambda: SM + AFF3, ValueError, "parts act on different dimensions"),
    ("velocity-x", lambda: SM.velocity(G2, np.ones(3)), ValueError, r"x must have shape \(\.\.\., 2\)"),
    # --- solve: time spans, options, state/field agreement
    ("t1-before-t0", lambda: gf.solve(SM, G2, -1.0), ValueError, "t1 must be greater than t0"),
    ("t1-nan", lambda: gf.solve(SM, G2, np.nan), ValueError, "t1 must be finite"),
    ("ts-decreasing", lambda: gf.solve(SM, G2, 1.0, ts=[0.0, 0.5, 0.4]), ValueError,
     "ts must be strictly increasing"),
    ("ts-outside", lambda: gf.solve(SM, G2, 1.0, ts=[0.0, 2.0]), ValueError, r"ts must lie in \[t0, t1\]"),
    ("max-steps", lambda: gf.solve(SM, G2, 1.0, max_steps=10.0), ValueError,
     "max_steps must be a positive integer"),
    ("threshold", lambda: gf.solve(SM, G2, 1.0, blowup_threshold=0.5), ValueError,
     "blowup_threshold must be > 1"),
    ("solver-name", lambda: gf.solve(SM, G2, 1.0, solver="rk4"), ValueError, "solver must be a diffrax"),
    ("g0-tuple", lambda: gf.solve(SM, (np.zeros(2), I2), 1.0), TypeError, r"g0 must be a gf.Gaussian"),
    ("g0-dim", lambda: gf.solve(SM, G3, 1.0), ValueError, "g0 has dimension 3 but the field"),
    ("g0-positional", lambda: gf.solve(MASKED, G2, 1.0), TypeError, "g0 must be a gf.PositionalGaussians"),
    ("schedule-end", lambda: gf.solve(LAYERS, G2, 2.0), ValueError, "past the end of the schedule"),
    ("sweep-sizes", lambda: gf.sweep([SM, SM], [G2, G2, G2], 1.0), ValueError,
     "fields has 2 members but g0s has 3"),
    # --- derive, particles, validate, theory
    ("derive-name", lambda: gf.derive("sofmax"), ValueError, "unknown variant 'sofmax'; choose one of"),
    ("derive-type", lambda: gf.derive(3), TypeError, "takes a variant name or a gaussflow field"),
    ("sample-n", lambda: particles.sample(G2, 10.5), ValueError, "n must be an integer >= 1"),
    ("sample-seed", lambda: particles.sample(G2, 10, seed="a"), TypeError, "seed must be an int"),
    ("sample-seed-overflow", lambda: particles.sample(G2, 10, seed=2**70), ValueError,
     r"seed must be an int in \[0, 2\*\*32\) or a JAX PRNG key"),
    ("sample-seed-negative", lambda: particles.sample(G2, 10, seed=-1), ValueError,
     r"seed must be an int in \[0, 2\*\*32\)"),
    ("sample-seed-float", lambda: particles.sample(G2, 10, seed=1.0), TypeError,
     r"seed must be an int in \[0, 2\*\*32\) or a JAX PRNG key"),
    ("velocity-sinkhorn-iter", lambda: particles.velocity(SM, np.zeros((4, 2)),
                                                          sinkhorn_max_iter=0.5),
     ValueError, "sinkhorn_max_iter must be an integer >= 1"),
    ("velocity-sinkhorn-tol", lambda: particles.velocity(SM, np.zeros((4, 2)), sinkhorn_tol=0.0),
     ValueError, "sinkhorn_tol must be > 0"),
    ("simulate-n-valid", lambda: particles.simulate_batch(SM, np.zeros((2, 5, 2)), [0.0, 1.0],
                                                          n_valid=[5, 2.5]),
     ValueError, r"n_valid\[1\] must be an integer >= 1, got 2.5"),
    ("simulate-block", lambda: particles.simulate(SM, np.zeros((5, 2)), [0.0, 1.0], block=0),
     ValueError, "block must be an integer >= 1"),
    ("simulate-x0", lambda: particles.simulate(SM, np.zeros((5, 3)), [0.0, 1.0]), ValueError,
     "x0 has dimension 3 but the field"),
    ("simulate-empty", lambda: particles.simulate(SM, np.zeros((0, 2)), [0.0, 1.0]), ValueError,
     "N, d >= 1"),
    ("simulate-positions", lambda: particles.simulate(SM, np.zeros((5, 2)), [0.0, 1.0],
                                                      positions=np.zeros(4)),
     ValueError, r"positions has shape \(4,\) but axis 0 must be 5"),
    ("moments-shape", lambda: particles.empirical_moments(np.zeros(3)), ValueError,
     r"X must have shape \(\.\.\., N, d\)"),
    ("validate-sizes", lambda: gf.validate(SM, G2, 1.0, n_particles=(100,)), ValueError,
     "at least two distinct sizes"),
    ("validate-seeds", lambda: gf.validate(SM, G2, 1.0, seeds=(0, 0)), ValueError,
     "seeds must be distinct"),
    ("validate-seed-range", lambda: gf.validate(SM, G2, 1.0, seeds=(0, 2**32)), ValueError,
     r"seeds must be ints in \[0, 2\*\*32\)"),
    ("validate-seed-float", lambda: gf.validate(SM, G2, 1.0, seeds=(0, 1.5)), TypeError,
     "seeds must hold integers, got 1.5"),
    ("validate-sizes-float", lambda: gf.validate(SM, G2, 1.0, n_particles=(100.5, 200)),
     TypeError, "n_particles must hold integers, got 100.5"),
    ("validate-sizes-string", lambda: gf.validate(SM, G2, 1.0, n_particles="256"), TypeError,
     "n_particles must be a sequence of integers"),
    ("theory-hypothesis", lambda: theory.blowup_time(gf.L2(I2, I2, I2), G2), ValueError,
     "hypothesis 'softmax attention' fails"),
    ("theory-g0", lambda: theory.blowup_time(SM, "g"), TypeError, "g0 must be a gf.Gaussian"),
    ("theory-method", lambda: theory.effective_rank(I2, method="x"), ValueError,
     "method must be 'entropy' or 'threshold'"),
]


class _CompileCounter:
    """Counts XLA backend compilations (jax.monitoring)."""

    def __init__(self):
        self.n = 0
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            self.n += 1


COMPILES = _CompileCounter()


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_rejects_before_any_work(call, exc, match):
    before = COMPILES.n
    with pytest.raises(exc, match=match):
        call()
    assert COMPILES.n == before, "an XLA compilation ran before the input was rejected"


def test_battery_is_large_and_distinct():
    assert len(API_CASES) >= 30 and len({c[0] for c in API_CASES}) == len(API_CASES)


def test_accepted_edge_cases():
    """What is deliberately allowed: negative/zero beta (A -> -A, uniform), bool and int arrays,
    singular covariances, a single particle."""
    gf.Softmax(I2, I2, I2, beta=-1.0)
    gf.Sinkhorn(I2, I2, I2, beta=0.0)
    g = gf.Gaussian(np.array([True, False]), np.zeros((2, 2), dtype=int))
    assert g.mean.dtype == np.float64 and float(g.mean[0]) == 1.0
    # PSD tolerance relative to the matrix's own scale: tiny covariances, round-off negatives
    gf.Gaussian([0.0, 0.0], [[1e-20, 0.0], [0.0, 1e-21]])
    gf.Gaussian([0.0, 0.0], [[1e-20, 0.0], [0.0, -1e-31]])
    gf.Gaussian([0.0, 0.0], [[1e20, 0.0], [0.0, -1e9]])
    # negative block indices count from the end, as in Python
    pos = gf.PositionalGaussians(np.arange(4.0).reshape(2, 2), np.stack([I2, 2 * I2]))
    assert np.array_equal(pos.block(-1).cov, pos.block(1).cov)
    assert np.array_equal(pos.block(-2).mean, [0.0, 1.0])
    # typed JAX keys and raw keys are seeds
    assert np.array_equal(particles.sample(G2, 3, seed=jax.random.key(5)),
                          particles.sample(G2, 3, seed=jax.random.PRNGKey(5)))


def _file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    return str(f)


CLI_CASES = [
    (["derive", "sofmax"], "unknown variant 'sofmax'"),
    (["derive"], "derive needs a variant name"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["derive", "softmax", "--latex", "--markdown"], "not allowed with argument --latex"),
    (["validate", "softmax", "--d", "abc"], "argument --d: invalid int value: 'abc'"),
    (["validate", "softmax", "--d", "0"], "d must be a positive integer"),
    (["validate", "softmax", "--n", "abc"], "--n must be comma-separated integers"),
    (["validate", "softmax", "--n", "100"], "at least two distinct sizes"),
    (["validate", "softmax", "--t1", "nan"], "t1 must be finite"),
    (["validate", "softmax", "--seeds", "1,1"], "seeds must be distinct"),
    (["validate", "nonsense"], "no example for variant 'nonsense'"),
    (["bench", "nonsense"], "unknown benchmark"),
    (["reproduce", "--only", "x"], "argument --only: invalid choice: 'x'"),
    (["run", "--out", "{file}"], "is a file; pass a folder name"),
]


@pytest.mark.parametrize("argv,match", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_bad_input_exit_2_one_line(argv, match, tmp_path, capsys):
    argv = [a.replace("{file}", _file(tmp_path)) for a in argv]
    if "--cache-dir" not in argv:
        argv = ["--cache-dir", "off"] + argv
    before = COMPILES.n
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    import re
    assert re.search(match, lines[0]), lines[0]
    assert COMPILES.n == before


def test_cli_subprocess_bad_option():
    proc = subprocess.run([sys.executable, "-m", "gaussflow.cli", "--cache-dir", "off", "validate",
                           "softmax", "--t1", "-1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["gaussflow: error: --t1 must be > 0, got -1.0"]


def test_cli_cache_dir_that_is_a_file_only_warns(tmp_path, capsys):
    """The compilation cache is an optimisation: a --cache-dir that cannot be used is one warning
    line and the command runs (tests/test_cache_faults.py has the other cases)."""
    f = _file(tmp_path)
    assert main(["--cache-dir", f, "derive", "softmax"]) == 0
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gaussflow: warning: compilation cache {f} "
                                                   "is a file"), lines
    assert "--cache-dir off" in lines[0] and "d Sigma/dt" in cap.out
