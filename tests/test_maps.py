"""Regime maps (gaussflow.theory.maps): every run counted, softmax V = I against the closed forms."""

import csv
import json
import math
import os

import numpy as np
import pytest

import gaussflow as gf
from gaussflow.theory import maps as TM


@pytest.fixture(scope="module")
def softmax_map():
    # two scales x two dimensions x 12 draws; one compilation per d
    return TM.regime_map("softmax", "I", params=(0.5, 2.0), dims=(2, 3), n_draws=12, seed=0)


def test_counts_sum_to_draws_and_every_run_has_a_label(softmax_map):
    m = softmax_map
    assert set(m.labels) == {(p, d) for p in (0.5, 2.0) for d in (2, 3)}
    for key, c in m.counts().items():
        assert sum(c.values()) == 12, key
        assert len(m.regimes[key]) == len(m.status[key]) == 12
    for row in m.rows():
        assert sum(row[lab] for lab in m.all_labels()) == row["n"] == 12
    # the draws mix the regimes the module docstring promises
    labels = set(m.all_labels())
    assert {"collapse", "blowup"} <= labels and any(lab.startswith("rank") for lab in labels)


def test_softmax_identity_map_matches_closed_form(softmax_map):
    agr = TM.closed_form_agreement(softmax_map)
    assert agr["n"] == 48
    assert agr["mismatches"] == []
    assert agr["undetermined"] == 0
    assert agr["agree"] == 48
    # blow-up iff T* <= t1, at T* to 1e-6 relative
    assert agr["blowups"] == agr["predicted_blowups"] > 0
    assert agr["blowup_rel_err_max"] < 1e-6
    # the prediction itself: T* = 1 / (beta lambda_max(A + A^T)) from the weights
    w = TM.draw_weights(3, 12, seed=0)
    for i in range(12):
        A = w["K"][i].T @ w["Q"][i]
        lam = np.linalg.eigvalsh(A + A.T)[-1]
        T = softmax_map.predicted_blowup[(2.0, 3)][i]
        if lam > 1e-9 * np.abs(A).max():
            assert T == pytest.approx(1 / (2.0 * lam), rel=1e-12)
        else:
            assert math.isinf(T)


def test_softmax_map_is_flat_in_beta(softmax_map):
    """Sigma(t; beta) = Sigma(beta t; 1) and t1 = T / beta: each draw gets the same label."""
    for d in (2, 3):
        assert softmax_map.labels[(0.5, d)] == softmax_map.labels[(2.0, d)]
        t_a = [r.blowup_time for r in softmax_map.regimes[(0.5, d)] if r.kind == "blowup"]
        t_b = [r.blowup_time for r in softmax_map.regimes[(2.0, d)] if r.kind == "blowup"]
        np.testing.assert_allclose(np.array(t_a) * 0.5, np.array(t_b) * 2.0, rtol=1e-6)


def test_agreement_reports_a_wrong_label(softmax_map):
    m = TM.RegimeMap(**{k: getattr(softmax_map, k) for k in
                        ("variant", "value", "params", "dims", "n_draws", "horizon", "mix",
                         "seed", "regimes", "status", "t1", "predicted_blowup",
                         "predicted_rank")})
    m.labels = {k: list(v) for k, v in softmax_map.labels.items()}
    key = (0.5, 3)
    i = next(j for j, lab in enumerate(m.labels[key]) if lab != "blowup")
    m.labels[key][i] = "growth"
    agr = TM.closed_form_agreement(m)
    assert len(agr["mismatches"]) == 1 and agr["mismatches"][0][:4] == (0.5, 3, i, "growth")
    assert agr["agree"] == 47


def test_draws_without_mixing_are_negative_semidefinite_with_kernel_of_q():
    w = TM.draw_weights(4, 20, seed=3, mix=0.0)
    for Q, K, k in zip(w["Q"], w["K"], w["k"]):
        A = K.T @ Q
        assert np.linalg.eigvalsh(A + A.T)[-1] <= 1e-10 * np.abs(A).max()
        f = gf.Softmax(Q, K, np.eye(4), beta=1.0)
        assert gf.theory.limit_rank(f) == 4 - k
    # the same seed gives the same draws; another seed other draws
    np.testing.assert_array_equal(TM.draw_weights(4, 20, seed=3)["Q"],
                                  TM.draw_weights(4, 20, seed=3)["Q"])
    assert not np.array_equal(TM.draw_weights(4, 20, seed=3)["Q"],
                              TM.draw_weights(4, 20, seed=4)["Q"])


def test_labels_and_their_order():
    R = gf.theory.Regime
    assert TM.regime_label(R("converge", rank=2)) == "rank 2"
    assert TM.regime_label(R("blowup", rank=1)) == "blowup"
    assert TM.sort_labels(["undetermined", "rank 10", "blowup", "rank 2", "collapse", "growth",
                           "rank 2"]) == ["collapse", "rank 2", "rank 10", "blowup", "growth",
                                          "undetermined"]


@pytest.mark.parametrize("kw,msg", [
    (dict(variant="relu"), "variant must be one of"),
    (dict(value="V"), "value must be one of"),
    (dict(params=(0.5, 0.0)), "params must be"),
    (dict(params=()), "params must be"),
    (dict(dims=(1, 2)), "dims must be"),
    (dict(dims=(2.0,)), "dims must be"),
    (dict(n_draws=0), "n_draws must be a positive integer"),
    (dict(horizon=-1.0), "horizon must be"),
    (dict(mix=float("nan")), "mix must be"),
    (dict(n_save=4), "n_save must be at least 5"),
    (dict(sweep_options={"ts": [0, 1]}), "sweep_options may not set"),
])
def test_bad_arguments_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TM.regime_map(**kw)


def test_closed_form_agreement_needs_softmax_identity():
    m = TM.RegimeMap("l2", "I", (1.0,), (2,), 1, 1.0, 1.0, 0)
    with pytest.raises(ValueError, match="rmap: the closed forms need softmax with V = I"):
        TM.closed_form_agreement(m)
    with pytest.raises(TypeError, match="rmap must be a RegimeMap"):
        TM.closed_form_agreement({})


def test_cli_reproduce_quick_maps(tmp_path):
    from gaussflow.cli import main

    assert main(["reproduce", "--quick", "--only", "maps", "--out", str(tmp_path)]) == 0
    for name in ("regime_maps.png", "regime_maps.pdf", "blowup_times.png", "regime_maps.csv",
                 "regime_maps.json", "summary.json"):
        assert os.path.exists(tmp_path / name), name
    with open(tmp_path / "regime_maps.csv") as fh:
        rows = list(csv.DictReader(fh))
    labels = [k for k in rows[0] if k not in ("variant", "value", "param", "p", "d", "n", "t1")]
    assert {(r["variant"], r["value"]) for r in rows} == {(v, c) for v, c, _ in TM.MAPS}
    for r in rows:
        assert sum(int(r[lab]) for lab in labels) == int(r["n"]) == 6
    summary = json.loads((tmp_path / "regime_maps.json").read_text())
    cf = summary["closed_form"]
    assert cf["mismatches"] == [] and cf["blowups"] == cf["predicted_blowups"]
    assert cf["blowup_rel_err_max"] is None or cf["blowup_rel_err_max"] < 1e-6
