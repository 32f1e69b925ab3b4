"""The whole-command progress bar and the cost model (`gaussflow.progress`): estimates that
decide whether a command announces its expected time, and the announcement itself."""

import pytest

from gaussflow import progress as P
from gaussflow.cli import main
from gaussflow.validation import example

DEFAULT_N, DEFAULT_SEEDS = [256, 1024, 4096], [0, 1, 2, 3, 4]


@pytest.mark.parametrize("variant,kind", [("softmax", "attention"), ("sinkhorn", "sinkhorn"),
                                          ("affine", "local")])
def test_particle_kind(variant, kind):
    field, _, _ = example(variant, d=3)
    assert P.particle_kind(field) == kind


def test_validate_notice_only_for_long_defaults():
    soft, _, _ = example("softmax", d=3)
    assert P.validate_seconds(soft, 3, DEFAULT_N, 5, 1.0)[0] < P.LONG_SECONDS
    assert P.validate_notice(soft, 3, DEFAULT_N, DEFAULT_SEEDS, 1.0) is None
    sk, _, _ = example("sinkhorn", d=3)
    total, per = P.validate_seconds(sk, 3, DEFAULT_N, 5, 1.0)
    assert total > P.LONG_SECONDS and per[-1] > 0.9 * sum(per)  # N = 4096 dominates
    text = P.validate_notice(sk, 3, DEFAULT_N, DEFAULT_SEEDS, 1.0)
    assert P.format_seconds(total) in text and "N = 4096" in text
    # the suggested options are estimated under the threshold by the same model
    opt = text.split("; ")[-1]
    ns = [int(v) for v in opt.split("--n ")[1].split()[0].split(",")]
    seeds = opt.split("--seeds ")[1].split()[0].split(",") if "--seeds" in opt else DEFAULT_SEEDS
    assert len(ns) >= 2 and max(ns) < 4096
    assert P.validate_seconds(sk, 3, ns, len(seeds), 1.0)[0] <= P.LONG_SECONDS


def test_work_bar_counts_estimated_seconds(capsys):
    with P.WorkBar(10.0, "job", enabled=True) as bar:
        for _ in bar.each(["a", "b"], [3.0, 5.0]):
            pass
        assert bar.done == pytest.approx(8.0)
        with bar.stage(2.0):
            pass
        assert bar.done == pytest.approx(10.0)
    err = capsys.readouterr().err
    assert "job" in err and "elapsed" in err and "left" in err and "100%" in err
    with P.WorkBar(1.0, "silent", enabled=False) as bar:
        with bar.stage(1.0):
            pass
    assert capsys.readouterr().err == ""


def test_validate_cli_announces_a_long_run(tmp_path, capsys, monkeypatch):
    import gaussflow.validation

    def stop(*args, **kwargs):
        raise ValueError("stopped before the work")

    monkeypatch.setattr(P, "LONG_SECONDS", 0.0)
    monkeypatch.setattr(gaussflow.validation, "validate", stop)  # the notice comes before it
    assert main(["validate", "affine", "--d", "2", "--n", "16,32", "--seeds", "0,1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "stopped before the work" in err.splitlines()[-1]
    first = err.lstrip().splitlines()[0]
    assert first.startswith("gaussflow validate affine: expected about ")
    assert "N = " not in first  # affine particles cost no pairs: nothing to blame on N


def test_reproduce_notice_names_the_shorter_options():
    from gaussflow.reproduce import PARTS

    full = sum(P.reproduce_seconds(PARTS, False).values())
    quick = sum(P.reproduce_seconds(PARTS, True).values())
    assert quick < full
    text = P.reproduce_notice(PARTS, False)
    assert text.startswith(f"expected about {P.format_seconds(full)}")
    assert f"--quick takes about {P.format_seconds(quick)}" in text and "--only" in text
    assert P.reproduce_notice(("clustering",), True) is None  # short: no notice
