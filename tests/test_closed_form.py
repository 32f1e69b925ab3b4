"""The closed-form fast path of gf.solve / gf.sweep (gaussflow.closed_form) against integration.

Integration runs at rtol 1e-12; the two must agree to 1e-10 (relative to the largest entry at
each save time) on converging, collapsing and blowing-up flows, for constant beta and a depth
schedule beta (1 + t), in solve and sweep; blow-up times agree to the accuracy of the
integrator's estimate (O(1/f) relative at the stop, f = tr Sigma / tr Sigma0 = blowup_threshold).
"""

import numpy as np
import pytest

import gaussflow as gf
from gaussflow import closed_form as cf
from gaussflow.attention.symbols import K, Q, beta, t, x, y

from conftest import random_spd

class ScheduledSoftmax(gf.Attention):
    """Softmax with the depth schedule beta (1 + t) (the scalar keeps the built-in name ``beta``,
    so that the CLI's key listing, built from every registered variant, knows it)."""

    name = "softmax_schedule_test"
    score = beta * (1 + t) * (Q * x).T * (K * y)
    normalisation = gf.SoftmaxNormalisation()
    defaults = {"W_O": "identity"}


D = 3
TOL = 1e-10
INT = dict(rtol=1e-12, atol=1e-14, closed_form="never")
THR = 1e12  # integrator's blow-up estimate accurate to ~1 / THR relative


def _cases():
    """``name -> (field, g0, t1, kind)``: kind of the expected status."""
    rng = np.random.default_rng(3)
    Qf = rng.normal(size=(D, D))
    Ql = rng.normal(size=(1, D))  # rank one: A + A^T <= 0 of rank 1, collapse to rank 2
    Kn = rng.normal(size=(D, D))
    S0 = random_spd(rng, D)
    a0 = rng.normal(size=D)
    I = np.eye(D)
    return {
        # A = -Q^T Q symmetric: the mean is in closed form too
        "converging": (gf.Softmax(Qf, -Qf, 0.7 * I, beta=0.4), gf.Gaussian(a0, S0), 3.0, "completed"),
        "collapsing": (gf.Softmax(Ql, -Ql, I, beta=1.0), gf.Gaussian(a0, S0), 50.0, "completed"),
        "blowup": (gf.Softmax(Qf, Qf, I, beta=0.3), gf.Gaussian(a0, S0), 3.0, "blowup"),
        "blowup_negative_v": (gf.Softmax(Qf, -Qf, -1.5 * I, beta=0.3), gf.Gaussian(a0, S0), 3.0,
                              "blowup"),
        # A not symmetric: only alpha0 = 0 has a closed-form mean (it stays 0)
        "nonsymmetric_zero_mean": (gf.Softmax(Qf, Kn, I, beta=0.2), gf.Gaussian(np.zeros(D), S0),
                                   3.0, None),
        "schedule_converging": (ScheduledSoftmax(Qf, -Qf, I, beta=0.3), gf.Gaussian(a0, S0), 3.0,
                                "completed"),
        "schedule_blowup": (ScheduledSoftmax(Qf, Qf, I, beta=0.3), gf.Gaussian(a0, S0), 3.0,
                            "blowup"),
    }


CASES = _cases()


def _agree(a, b):
    """Largest error over save times, relative to the largest entry at each time."""
    n = min(len(a.ts), len(b.ts))
    assert n >= 2
    np.testing.assert_array_equal(a.ts[:n - 1], b.ts[:n - 1])
    err = 0.0
    for k in range(n - 1):  # the last saved state of a blow-up is the stop (times differ)
        if a.ts[k] != b.ts[k]:
            continue
        scale_c = np.abs(b.covs[k]).max()
        scale_m = max(np.abs(b.means[k]).max(), 1e-300)
        err = max(err, np.abs(a.covs[k] - b.covs[k]).max() / scale_c,
                  np.abs(a.means[k] - b.means[k]).max() / scale_m if scale_m > 1e-300 else
                  np.abs(a.means[k]).max())
    return err


@pytest.mark.parametrize("name", sorted(CASES))
def test_solve_closed_form_matches_integration(name):
    field, g0, t1, kind = CASES[name]
    ts = np.linspace(0.0, t1, 31)
    fast = gf.solve(field, g0, t1, ts, blowup_threshold=THR)
    slow = gf.solve(field, g0, t1, ts, blowup_threshold=THR, **INT)
    assert fast.method == "closed_form" and fast.num_steps == 0
    assert slow.method == "integrate" and slow.num_steps > 0
    assert fast.status == slow.status
    if kind is not None:
        assert fast.status == kind
    assert _agree(fast, slow) <= TOL
    if fast.status == "blowup":
        # the stop: the first float t where tr Sigma / tr Sigma0 >= THR, just before T*; near
        # T* one float step of t changes f by about f eps T* / (T* - t) ~ THR^2 eps / T* relative
        f = np.trace(fast.covs[-1]) / np.trace(np.asarray(g0.cov))
        assert THR <= f <= THR * (1 + 10 * THR * np.finfo(float).eps)
        assert fast.t_stop < fast.blowup_time
        assert abs(fast.blowup_time - slow.blowup_time) <= 1e-11 * fast.blowup_time
    else:
        assert fast.blowup_time is None and fast.t_stop == t1
        np.testing.assert_allclose(fast.covs[-1], slow.covs[-1], rtol=0,
                                   atol=TOL * np.abs(slow.covs[-1]).max())


def test_blowup_times_are_exact():
    """Constant beta: T* = 1 / lambda_max(Sigma0^{1/2} v beta (A + A^T) Sigma0^{1/2}) (theory);
    schedule beta (1 + t): v beta lambda (T + T^2 / 2) = 1 with lambda for beta = 1."""
    field, g0, t1, _ = CASES["blowup"]
    T = gf.solve(field, g0, t1).blowup_time
    assert T == pytest.approx(gf.theory.blowup_time(field, g0), rel=1e-13)
    field, g0, t1, _ = CASES["schedule_blowup"]
    w, U = np.linalg.eigh(np.asarray(g0.cov))
    R = (U * np.sqrt(w)) @ U.T
    A = np.asarray(field.K).T @ np.asarray(field.Q)
    lam = np.linalg.eigvalsh(R @ (A + A.T) @ R).max() * float(field.beta)
    exact = -1 + np.sqrt(1 + 2 / lam)
    assert gf.solve(field, g0, t1).blowup_time == pytest.approx(exact, rel=1e-12)


def test_sweep_closed_form_matches_solve_and_integration():
    """One sweep over every case of one class: per-member closed form (solve's), the statuses,
    blow-up times and saved states of the integrated sweep; the member without W_O V = v I is
    integrated inside the same sweep."""
    names = ["converging", "collapsing", "blowup", "blowup_negative_v", "nonsymmetric_zero_mean"]
    fields = [CASES[n][0] for n in names]
    Qf = np.asarray(fields[0].Q)
    fields.append(gf.Softmax(Qf, -Qf, np.diag([1.0, 2.0, 3.0]), beta=0.4))
    # one shape: pad the rank-one Q of "collapsing" with zero rows (same A)
    Qs = [np.asarray(f.Q) for f in fields]
    Ks = [np.asarray(f.K) for f in fields]
    Qs = [np.vstack([q, np.zeros((D - len(q), D))]) for q in Qs]
    Ks = [np.vstack([k, np.zeros((D - len(k), D))]) for k in Ks]
    fields = [gf.Softmax(q, k, np.asarray(f.V), beta=float(f.beta)) for q, k, f in
              zip(Qs, Ks, fields)]
    g0s = [CASES[n][1] for n in names] + [CASES["converging"][1]]
    t1, ts = 3.0, np.linspace(0.0, 3.0, 31)
    # Tsit5 throughout (the NumPy engine's default first pass of 1024 steps would hand the
    # ~1100-step blow-ups to LSODA, whose blow-up estimate is another integrator's)
    one_pass = dict(first_pass_steps=16384)
    fast = gf.sweep(fields, g0s, t1, ts, blowup_threshold=THR, rtol=1e-12, atol=1e-14, **one_pass)
    slow = gf.sweep(fields, g0s, t1, ts, blowup_threshold=THR, **INT, **one_pass)
    assert list(fast.solvers) == ["closed_form"] * 5 + ["tsit5"]
    assert fast.method.endswith("+closed_form") and "closed_form" not in slow.method
    assert list(fast.status) == list(slow.status)
    assert list(fast.status[:4]) == ["completed", "completed", "blowup", "blowup"]
    np.testing.assert_allclose(fast.blowup_time, slow.blowup_time, rtol=1e-11)
    for i, f in enumerate(fields):
        mf, ms = fast.member(i), slow.member(i)
        assert mf.method == ("closed_form" if i < 5 else "integrate")
        assert _agree(mf, ms) <= TOL
        one = gf.solve(f, g0s[i], t1, ts, blowup_threshold=THR)
        if i < 5:
            np.testing.assert_array_equal(one.covs, mf.covs)
            assert one.t_stop == mf.t_stop
    # the integrated member is the one of the all-integrated sweep (same steps; a batch of
    # another size rounds differently)
    assert fast.num_steps[5] == slow.num_steps[5]
    np.testing.assert_allclose(fast.covs[5], slow.covs[5], rtol=0, atol=1e-13)


def test_schedule_sweep_uses_closed_form():
    field, g0, t1, _ = CASES["schedule_blowup"]
    f2 = CASES["schedule_converging"][0]
    ts = np.linspace(0.0, t1, 31)
    fast = gf.sweep([field, f2], [g0, g0], t1, ts, blowup_threshold=THR)
    assert list(fast.solvers) == ["closed_form"] * 2 and fast.method == "closed_form"
    assert list(fast.status) == ["blowup", "completed"]
    for i, f in enumerate((field, f2)):
        slow = gf.solve(f, g0, t1, ts, blowup_threshold=THR, **INT)
        assert _agree(fast.member(i), slow) <= TOL


def test_not_used_without_identity_value_map_or_closed_mean():
    rng = np.random.default_rng(0)
    Qf, Kn, S0 = rng.normal(size=(D, D)), rng.normal(size=(D, D)), random_spd(rng, D)
    g0 = gf.Gaussian(rng.normal(size=D), S0)
    V = np.eye(D) + 1e-6 * rng.normal(size=(D, D))  # close to, but not, a multiple of I
    tr = gf.solve(gf.Softmax(Qf, -Qf, V, beta=0.3), g0, 1.0)
    assert tr.method == "integrate" and tr.num_steps > 0
    with pytest.raises(ValueError, match=r"W_O V = v I fails"):
        gf.solve(gf.Softmax(Qf, -Qf, V, beta=0.3), g0, 1.0, closed_form="always")
    # W_O V = v I, but A = K^T Q not symmetric and alpha0 != 0: the mean has no closed form
    field = gf.Softmax(Qf, Kn, np.eye(D), beta=0.2)
    assert gf.solve(field, g0, 1.0).method == "integrate"
    with pytest.raises(ValueError, match="mean has no closed form"):
        gf.solve(field, g0, 1.0, closed_form="always")
    with pytest.raises(ValueError, match="member 1: W_O V = v I fails"):
        gf.sweep([field, gf.Softmax(Qf, -Qf, V, beta=0.3)], gf.Gaussian(np.zeros(D), S0), 1.0,
                 closed_form="always")
    # a W_O that makes W_O V = v I with V != I is fine
    Vf = random_spd(rng, D)
    tr = gf.solve(gf.Softmax(Qf, -Qf, Vf, W_O=2.0 * np.linalg.inv(Vf), beta=0.3), g0, 1.0)
    assert tr.method == "closed_form"


def test_closed_form_argument_checked():
    field, g0, t1, _ = CASES["converging"]
    with pytest.raises(ValueError, match="closed_form must be one of"):
        gf.solve(field, g0, t1, closed_form="yes")
    with pytest.raises(ValueError, match="closed_form must be one of"):
        gf.sweep([field, field], g0, t1, closed_form=True)


def test_time_structure_of_the_increment():
    assert {c.key: c.time_structure for c in gf.Softmax.derivation().closed_forms}[
        cf.KEY] == "linear"
    assert {c.key: c.time_structure for c in ScheduledSoftmax.derivation().closed_forms}[
        cf.KEY] == "profile"
