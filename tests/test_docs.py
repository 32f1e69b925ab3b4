"""The documentation site: built with `mkdocs build --strict`, math as MathML, checked in Chromium.

Needs the `docs` extra (`pip install ".[docs]"`: mkdocs, mkdocstrings, latex2mathml, selenium)
and, for the browser test, Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
"""

import glob
import html
import os
import re
import shutil

import sys

import pytest

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install '.[docs]'")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install '.[docs]'")
pytest.importorskip("latex2mathml", reason="the docs extra is not installed: pip install '.[docs]'")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # scripts/ lives at the repository root
from scripts import docs_screenshots  # noqa: E402
from scripts.mathml import MathMLExtension, latex_to_mathml  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    docs_screenshots.build(str(out))  # --strict: any warning fails the build
    return out


def _text(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _visible(page_html):
    """The page's text outside <pre>/<code>/<math>, tags dropped."""
    page_html = re.sub(r"<(pre|code|math|script|style)\b.*?</\1>", " ", page_html, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page_html))


# ---------------------------------------------------------------- math conversion (no build)

def test_latex_to_mathml_patches_what_mathml_core_lacks():
    aligned = latex_to_mathml(r"\begin{aligned} a &= b \\ \frac{d\Sigma}{dt} &= c \end{aligned}",
                              display=True)
    assert aligned.startswith('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">')
    assert aligned.count("<mtr>") == 2 and "<mi>&</mi>" not in aligned and "linebreak" not in aligned
    assert 'columnalign="right"' in aligned and "<mfrac>" in aligned
    letters = latex_to_mathml(r"\mathcal N \mathbb R \mathcal L y \sim \mu")
    assert "𝒩" in letters and "ℝ" in letters and "ℒ" in letters and "mathvariant" not in letters
    assert "<mo>&#x0223C;</mo>" in letters
    assert r'encoding="application/x-tex">\mathcal N' in letters


def test_markdown_extension_leaves_code_and_prices_alone():
    import markdown

    md = markdown.Markdown(extensions=["fenced_code", MathMLExtension()])
    out = md.convert("Costs $5 and $6; `$HOME` and $W_O V$, *x* $a * b$; `$$...$$`.\n\n"
                     "```\n$\\Sigma$ in code\n```\n\n$$\n\\Gamma \\\\ x\n$$\n")
    assert "Costs $5 and $6" in out and "<code>$HOME</code>" in out and "<code>$$...$$</code>" in out
    assert out.count("<math") == 3 and "$\\Sigma$ in code" in out
    assert "<msub><mi>W</mi><mi>O</mi></msub>" in out and "<em>x</em>" in out


def test_readme_directive_relevels_and_rejects_unknown_sections():
    from mkdocs.exceptions import PluginError

    from scripts import mkdocs_hooks

    section = mkdocs_hooks.readme_section("Solving", level=1)
    assert section.startswith("# Solving\n") and "\n## Errors and statuses\n" in section
    assert "## Validation against particles" not in section
    with pytest.raises(PluginError, match="no section 'No such section'"):
        mkdocs_hooks.readme_section("No such section")


# ---------------------------------------------------------------- the built site

def test_site_builds_strict_with_every_page(site):
    names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "derivations",
                                                                            "*.md")))
    assert len(names) >= 8
    overview = _text(site / "variants" / "index.html")
    for name in names:  # one page per derivation, listed in the navigation
        page = _text(site / "variants" / f"{name}.html")
        assert "<math" in page and f'href="{name}.html"' in overview, name
    # README sections pulled in at build time (not copied into site-src/)
    assert "Errors and statuses" in _text(site / "solving.html")
    assert "Approximate closures: measured error" in _text(site / "validation.html")
    assert "gaussflow reproduce" in _text(site / "cli.html")
    theory = _text(site / "theory.html")
    assert 'src="figures/regime_either.png"' in theory and (site / "figures" /
                                                             "regime_either.png").exists()
    for page in glob.glob(str(site / "**" / "*.html"), recursive=True):
        text = _text(page)
        # offline: no script, stylesheet or font from the network
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', text), page
        visible = _visible(text)
        assert "$\\" not in visible and "$$" not in visible, page  # no LaTeX left unconverted


def test_api_reference_from_docstrings(site):
    core = _text(site / "api" / "core.html")
    for name in ("derive", "solve", "sweep", "validate", "Gaussian", "Trajectory"):
        assert f'id="gaussflow.{name}"' in core, name
    signature = html.unescape(re.sub(r"<[^>]+>", "", re.search(
        r'id="gaussflow\.solve".*?</pre>', core, re.S).group(0)))
    assert re.search(r"solve\(\s*field.*g0.*t1.*rtol", signature, re.S), signature
    assert core.count("<math") > 10  # LaTeX in the docstrings, converted like the pages
    variants = _text(site / "api" / "variants.html")
    for cls in ("Softmax", "L2", "Sinkhorn", "MultiHead", "Sigmoid", "Unnormalized", "Masked",
                "Affine", "Layers"):
        assert re.search(rf'id="gaussflow\.variants\.\w+\.{cls}"', variants), cls
    assert 'id="gaussflow.theory.classify"' in _text(site / "api" / "theory.html")


def test_committed_screenshots_exist():
    for name in docs_screenshots.PAGES:
        path = os.path.join(ROOT, "docs", "screenshots", f"{name}.png")
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path
        assert os.path.getsize(path) > 20_000, path


def _need_browser():
    """Skip without selenium or a browser where none can be installed; fail where one can."""
    pytest.importorskip("selenium", reason="the docs extra is not installed: pip install '.[docs]'")
    if docs_screenshots.find_browser() is None:
        if shutil.which("apt-get") or shutil.which("apt"):
            pytest.fail("Chromium is missing: apt-get install -y chromium chromium-driver "
                        "(.ci/run does this)")
        pytest.skip("no Chromium/ChromeDriver and no package manager to install them")


def test_pages_render_in_headless_chromium(site, tmp_path):
    _need_browser()
    results = docs_screenshots.open_pages(str(site), str(tmp_path))
    assert docs_screenshots.problems(results) == []
    landing, variant, api = results["landing"], results["variant"], results["api"]
    for r in results.values():
        assert r["mathml_elements"] and r["n_math"] > 0
    assert landing["n_display"] >= 1 and landing["fraction_height"] > 1.5 * landing["letter_height"]
    # softmax page: the aligned "Result" block is a table, one line per equation
    assert variant["n_display"] >= 10 and any(len(rows) == 4 for rows in variant["table_rows"])
    assert "Gaussian closure (exact)" in variant["title"] + variant["text"]
    assert any(re.match(r"solve\(\s*field", s) for s in api["signatures"]), api["signatures"][:5]
    assert "gaussflow.solve" in api["headings"]
    for name in docs_screenshots.PAGES:
        assert os.path.getsize(tmp_path / f"{name}.png") > 20_000


def test_study_report_opens_in_headless_chromium(tmp_path):
    """A report of `gaussflow.report` (figures of a solved trajectory and of a validation
    report, embedded) opens from disk with every image decoded by the browser."""
    _need_browser()
    import numpy as np

    import gaussflow as gf
    from gaussflow import display, report
    from test_report import _validation_report

    tr = gf.solve(gf.Softmax(np.eye(2), -np.eye(2), np.eye(2)), gf.Gaussian(np.zeros(2), np.eye(2)),
                  2.0, ts=np.linspace(0, 2, 11))
    figs = [tmp_path / "eigenvalues_case.png", tmp_path / "validate-softmax.png"]
    figs[0].write_bytes(tr._repr_png_())
    figs[1].write_bytes(_validation_report()._repr_png_())
    report.write_report(tmp_path / "report.html", "browser check", {"status": tr.status}, figs)
    results = docs_screenshots.open_pages(str(tmp_path), None, {"report": "report.html"})
    images = results["report"]["images"]
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src, _ in images)
    widths = [w for _, w in images]
    assert all(w > 0 for w in widths), widths  # decoded: the browser knows the PNG's size
    assert widths == [int(display.FIGSIZE[0] * display.DPI)] * 2
    assert "browser check" in results["report"]["title"]
