"""Dense saves before a blow-up (`gaussflow.savetimes`) and the labels of the unit-disk figures."""

import numpy as np
import pytest

import gaussflow as gf
from gaussflow import plots, theory
from gaussflow.plots_regimes import regime_disk
from gaussflow.savetimes import blowup_save_times, solve_resolved
from gaussflow.study import default_weights

N_SAVE = 201


@pytest.fixture(scope="module")
def blowup():
    """The default study's blow-up case (softmax, $V = I$: a closed-form $t^*$) and two runs:
    equispaced saves, and `solve_resolved`."""
    field, t1 = default_weights()["blowup"]
    g0 = gf.Gaussian(np.zeros(2), np.array([[0.8, 0.1], [0.1, 0.2]]))
    plain = gf.solve(field, g0, t1, ts=np.linspace(0, t1, N_SAVE))
    return field, g0, t1, plain, solve_resolved(field, g0, t1, n_save=N_SAVE)


def test_blowup_save_times_are_dense_near_t_star():
    ts = blowup_save_times(0.0, 2.0, 201)
    assert len(ts) == 201 and ts[0] == 0.0 and np.all(np.diff(ts) > 0) and ts[-1] < 2.0
    assert 2.0 - ts[-1] == pytest.approx(2.0 * 1e-6)
    assert np.sum(ts > 0.9 * 2.0) >= 100  # the geometric half lies in the last 10 %
    for bad, match in [(dict(t_star=0.0), "t_star"), (dict(n=3), "n must"),
                       (dict(gap=0.5), "gap")]:
        with pytest.raises(ValueError, match=match):
            blowup_save_times(**{"t0": 0.0, "t_star": 1.0, "n": 10, **bad})


def test_blowup_run_is_saved_densely_up_to_t_star(blowup):
    field, g0, t1, plain, fine = blowup
    t_star = theory.blowup_time(field, g0)
    assert plain.status == fine.status == "blowup"
    assert fine.blowup_time == pytest.approx(t_star, rel=1e-10)
    last = fine.ts > 0.9 * t_star
    assert np.sum(last) >= 100 > np.sum(plain.ts > 0.9 * t_star)
    assert len(fine.ts) >= N_SAVE
    # smooth up to t*: the normalised covariance moves by small steps, up to rank one
    u, w = plots.disk_coordinates(fine.covs)
    assert np.max(np.hypot(np.diff(u), np.diff(w))) < 0.01
    assert np.hypot(u[-1], w[-1]) > 1 - 1e-4  # reaches the circle (rank one)
    assert fine.extra["save_times"] == "refined toward blow-up"
    # a run that ends before t* keeps its equispaced saves
    tr = solve_resolved(field, g0, 0.5 * t_star, n_save=11)
    assert tr.status == "completed"
    np.testing.assert_allclose(tr.ts, np.linspace(0, 0.5 * t_star, 11))
    with pytest.raises(ValueError, match="ts"):
        solve_resolved(field, g0, 1.0, ts=[0, 1])


def _texts(fig):
    out = [t.get_text() for ax in fig.axes for t in ax.texts]
    for ax in fig.axes:
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
        out += [ax.get_xlabel(), ax.get_ylabel()]
    return " | ".join(out)


def test_disk_figures_define_coordinates_markers_and_colours(blowup):
    field, g0, t1, plain, fine = blowup
    fig = plots.unit_disk([plain, fine])
    text = _texts(fig)
    for needle in ("[[a,", "[c,", "(a-b)/(a+b)", "2c/(a+b)", "rank one", "start, t = 0", "end",
                   "colour: viridis"):
        assert needle.replace(" ", "") in text.replace(" ", ""), (needle, text)
    plots.plt.close(fig)
    fig = regime_disk([fine], ["blowup"])
    text = _texts(fig)
    for needle in ("2c/(a+b)", "start, t = 0", "end", "blowup"):
        assert needle.replace(" ", "") in text.replace(" ", ""), (needle, text)
    plots.plt.close(fig)
