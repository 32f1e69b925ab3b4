"""Rich notebook displays (`gaussflow.display`) and the one-file HTML report (`gaussflow.report`).

The reports the commands write are checked next to the runs that make them: `gaussflow run` in
tests/test_cli.py, `validate` in tests/test_validate.py, `reproduce` in tests/test_examples.py;
the report in a browser in tests/test_docs.py."""

import base64
import html
import json
import re

import numpy as np
import pytest

import gaussflow as gf
from gaussflow import display, report
from gaussflow.validation_report import ValidationReport, quantity_stats

PNG = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(page):
    """The PNG bytes of every `<img>` in `page` (which must all be data URIs)."""
    srcs = re.findall(r"<img\b[^>]*\bsrc=['\"]([^'\"]*)['\"]", page)
    out = []
    for s in srcs:
        assert s.startswith("data:image/png;base64,"), s[:60]
        out.append(base64.b64decode(s.split(",", 1)[1], validate=True))
    return out


def assert_self_contained(page):
    """No reference outside the page: no URL, no file, no script or style sheet to fetch."""
    assert "http:" not in page and "https:" not in page
    assert not re.search(r"\b(src|href)=['\"](?!data:)", page), "a src/href that is not a data: URI"
    assert "<script" not in page and "<link" not in page


def _softmax(d, A_sign=-1.0, seed=0):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(d, d)) / np.sqrt(d)
    return gf.Softmax(Q, A_sign * Q, np.eye(d))


@pytest.fixture(scope="module")
def trajectories():
    """Closed-form softmax trajectories (no compilation): d = 2 collapsing, d = 48, a blow-up."""
    small = gf.solve(_softmax(2), gf.Gaussian(np.zeros(2), np.eye(2)), 3.0,
                     ts=np.linspace(0, 3, 31))
    d = 48
    big = gf.solve(_softmax(d), gf.Gaussian(np.ones(d), np.eye(d)), 3.0, ts=np.linspace(0, 3, 200))
    blow = gf.solve(gf.Softmax(np.eye(2), np.eye(2), np.eye(2)), gf.Gaussian(np.zeros(2), np.eye(2)),
                    5.0, ts=np.linspace(0, 5, 21))
    return small, big, blow


def test_trajectory_html_table_and_figure(trajectories):
    small, _, _ = trajectories
    page = small._repr_html_()
    assert "<table>" in page and "completed" in page
    assert f"[0, {display.fmt(small.t_stop)}]" in page  # t range
    assert display.vector_text(small.means[-1]) in page  # final mean, entry by entry at d = 2
    (png,) = embedded_pngs(page)
    assert png.startswith(PNG) and png == small._repr_png_()
    assert_self_contained(page)


def test_trajectory_large_d_is_summarised_and_bounded(trajectories):
    small, big, _ = trajectories
    page = big._repr_html_()
    cov = big.covs[-1]
    er = display.fmt(float(gf.theory.effective_rank(cov)))
    top = np.linalg.eigvalsh(cov)[::-1][:display.TOP_EIGENVALUES]
    assert f"<td>{er}</td>" in page
    assert display.vector_text(top) in page
    assert display.fmt(float(np.trace(cov))) in page
    # no d x d dump: the table has a handful of rows, the page is the size of the d = 2 one
    assert page.count("<tr>") < 20
    assert len(page) < 3 * len(small._repr_html_()) and len(page) < 80_000
    assert embedded_pngs(page)[0].startswith(PNG)


def test_blowup_trajectory_shows_its_time(trajectories):
    _, _, blow = trajectories
    page = blow._repr_html_()
    assert blow.status == "blowup" and "blow-up time" in page
    assert f"blow-up time</th><td>{blow.blowup_time:.8g}<" in page
    assert blow._repr_png_().startswith(PNG)


def test_displays_leave_pyplot_alone(trajectories):
    import matplotlib
    import matplotlib.pyplot as plt

    before, backend = plt.get_fignums(), matplotlib.get_backend()
    trajectories[0]._repr_png_()
    _validation_report()._repr_png_()
    assert plt.get_fignums() == before  # drawn on Figures of their own, not through pyplot
    assert matplotlib.get_backend() == backend


def _validation_report(exact=True):
    """A report built from synthetic errors (no particle run): the display only reads it."""
    ns, seeds = [16, 64, 256], [0, 1, 2]
    rng = np.random.default_rng(0)
    E = {q: np.outer(np.array(ns, float) ** -0.5, 1 + 0.1 * rng.random(3)) for q in ("mean", "cov")}
    st = {q: quantity_stats(ns, E[q], exact, (-0.75, -0.25), 2.0, 1e-6) for q in E}
    return ValidationReport(
        field_name="softmax", exact=exact, d=3, t1=0.5, ts=[0.0, 0.25, 0.5], n_particles=ns,
        seeds=seeds, mean=st["mean"], cov=st["cov"], mc_mean=E["mean"].tolist(),
        mc_cov=E["cov"].tolist(), verdict="consistent", reasons=["mean: falls like N^-0.50"],
        slope_band=(-0.75, -0.25), band_factor=2.0, floor=1e-6, statuses={})


def test_validation_report_html_and_png():
    rep = _validation_report()
    page = rep._repr_html_()
    assert "<table>" in page and "consistent" in page and "falls like N^-0.50" in page
    assert f"{rep.cov.slope:+.3f}" in page
    assert ", ".join(display.fmt(v) for v in rep.mean.rms) in page
    (png,) = embedded_pngs(page)
    assert png.startswith(PNG) and rep._repr_png_().startswith(PNG)
    num = display.validation_numbers(rep)
    assert num["cov"]["slope"] == rep.cov.slope and json.dumps(num)  # plain, JSON-ready values


def test_sweep_html_counts_and_timing():
    fields = [_softmax(2, seed=s) for s in range(3)] + [gf.Softmax(np.eye(2), np.eye(2),
                                                                   np.eye(2))]
    res = gf.sweep(fields, gf.Gaussian(np.zeros(2), np.eye(2)), 5.0, ts=np.linspace(0, 5, 6))
    page = res._repr_html_()
    counts = ", ".join(f"{k}: {v}" for k, v in res.counts().items())
    assert f"statuses</th><td>{counts}</td>" in page and "blowup: 1" in counts
    assert "compile" in page and f"{res.run_seconds:.3g} s" in page
    assert "members</th><td>4<" in page


# ----------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def figure_files(tmp_path_factory, trajectories):
    folder = tmp_path_factory.mktemp("figs")
    paths = []
    for name, tr in zip(("eigenvalues_small", "spectrum"), trajectories):
        p = folder / f"{name}.png"
        p.write_bytes(tr._repr_png_())
        paths.append(str(p))
    (folder / "summary.json").write_text("{}")
    return folder, paths


def test_write_report_is_self_contained(figure_files):
    folder, paths = figure_files
    summary = {"variant": "softmax", "seconds": 1.25, "files": paths,
               "cases": {"collapse": {"statuses": {"completed": 13}, "A": [[1.0, 2.0], [3.0, 4.0]],
                                      "runs": [{"x": 1}] * 40}}}
    out = report.write_report(folder / "report.html", "a <study>", summary,
                              [paths[0], (paths[1], "my caption & more")],
                              command=["gaussflow", "run", "--out", "a b"],
                              files=[folder / "summary.json"])
    page = open(out, encoding="utf-8").read()
    assert_self_contained(page)
    imgs = embedded_pngs(page)
    assert [open(p, "rb").read() for p in paths] == imgs  # every figure embedded, byte for byte
    assert "<title>a &lt;study&gt;</title>" in page
    assert "gaussflow run --out &#x27;a b&#x27;" in page  # shlex-quoted, escaped
    assert "my caption &amp; more" in page
    assert html.escape(report.caption_for(paths[0])) in page  # a known figure name gets its caption
    assert "collapse / statuses / completed" in page and "[[1, 2], [3, 4]]" in page
    assert "40 entries" in page and "summary.json" in page
    assert f"numpy version</th><td>{np.__version__}<" in page


def test_write_report_rejects_bad_figures(tmp_path, figure_files):
    folder, paths = figure_files
    with pytest.raises(ValueError, match="figures: .* is not a file"):
        report.write_report(tmp_path / "r.html", "t", {}, [str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="not a PNG file"):
        report.write_report(tmp_path / "r.html", "t", {}, [str(folder / "summary.json")])
    with pytest.raises(TypeError, match="wrap it in a list"):
        report.write_report(tmp_path / "r.html", "t", {}, paths[0])
    with pytest.raises(ValueError, match="path: folder .*nowhere does not exist"):
        report.write_report(tmp_path / "nowhere" / "r.html", "t", {}, paths)
    with pytest.raises(TypeError, match="numbers must be a mapping"):
        report.write_report(tmp_path / "r.html", "t", [1, 2])
    assert not (tmp_path / "r.html").exists()
