"""Build the documentation site, check three pages in headless Chromium, refresh the screenshots.

    python -m scripts.docs_screenshots [--site DIR] [--out docs/screenshots] [--no-screenshots]

Builds with `mkdocs build --strict` (warnings are errors), opens the landing page, the softmax
variant page and the core API page in headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) and checks what the browser laid out: MathML elements
present and rendered as MathML (`MathMLElement`, fractions taller than a letter, the rows of an
aligned block on separate lines), no raw `$`-delimited LaTeX left in the text, and the
`gaussflow.solve` entry with its signature on the API page. Writes `landing.png`, `variant.png`
and `api.png` to the output folder. `tests/test_docs.py` runs the same checks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The pages checked and photographed: name -> path in the built site.
PAGES = {"landing": "index.html", "variant": "variants/softmax.html", "api": "api/core.html"}

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

# What the page looks like to the browser (run in the page).
_PROBE = r"""
const maths = Array.from(document.querySelectorAll('math'));
const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height, r.top]; };
const mi = document.querySelector('math mi');
const fr = document.querySelector('math mfrac');
const rows = Array.from(document.querySelectorAll('math mtable')).map(
    (t) => Array.from(t.querySelectorAll(':scope > mtr')).map((r) => box(r)[2]));
const main = document.querySelector('[role="main"]') || document.body;
const text = main.innerText;
return {
  title: document.title,
  n_math: maths.length,
  n_display: maths.filter((m) => m.getAttribute('display') === 'block').length,
  mathml_elements: maths.length > 0 && maths.every((m) => m instanceof MathMLElement),
  zero_size: maths.filter((m) => { const b = box(m); return b[0] === 0 || b[1] === 0; }).length,
  letter_height: mi ? box(mi)[1] : 0,
  fraction_height: fr ? box(fr)[1] : 0,
  table_rows: rows,
  text: text,
  signatures: Array.from(document.querySelectorAll('.doc-signature, .doc-heading code'))
      .map((e) => e.innerText),
  headings: Array.from(document.querySelectorAll('h1, h2, h3')).map((h) => h.id),
  images: Array.from(document.images).map((i) => [i.getAttribute('src'), i.naturalWidth]),
};
"""


def build(site_dir: str, quiet: bool = True) -> None:
    """`mkdocs build --strict` into `site_dir` (raises `CalledProcessError` on any warning)."""
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
           os.path.join(ROOT, "mkdocs.yml"), "-d", os.path.abspath(site_dir)]
    if quiet:
        cmd.append("-q")
    subprocess.run(cmd, check=True, cwd=ROOT)


def find_browser() -> tuple[str, str] | None:
    """`(chromium, chromedriver)` paths, or None where either is missing."""
    browser = next((p for p in CHROMIUM if os.path.exists(p)), shutil.which("chromium"))
    driver = next((p for p in CHROMEDRIVER if os.path.exists(p)), shutil.which("chromedriver"))
    return (browser, driver) if browser and driver else None


def open_pages(site_dir: str, screenshot_dir: str | None = None,
               pages: dict[str, str] = PAGES) -> dict[str, dict]:
    """Open each page of the built site in headless Chromium; what `_PROBE` reports, per page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError("no Chromium/ChromeDriver (apt-get install -y chromium chromium-driver)")
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="gaussflow-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars",
                 "--force-device-scale-factor=1", "--window-size=1280,1400",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    results = {}
    try:
        driver.set_page_load_timeout(30)
        for name, rel in pages.items():
            url = "file://" + os.path.join(os.path.abspath(site_dir), rel)
            driver.get(url)
            results[name] = driver.execute_script(_PROBE)
            if screenshot_dir:
                os.makedirs(screenshot_dir, exist_ok=True)
                driver.save_screenshot(os.path.join(screenshot_dir, f"{name}.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return results


def problems(results: dict[str, dict]) -> list[str]:
    """What is wrong with the rendered pages (empty when all is well)."""
    out = []
    for name, r in results.items():
        text = r["text"]
        if r["n_math"] == 0:
            out.append(f"{name}: no <math> element")
        elif not r["mathml_elements"]:
            out.append(f"{name}: <math> is not laid out as MathML by this browser")
        if r["zero_size"]:
            out.append(f"{name}: {r['zero_size']} <math> elements have no size")
        for raw in ("$\\", "\\Sigma", "\\beta", "$$"):
            if raw in text:
                i = text.index(raw)
                out.append(f"{name}: raw LaTeX {raw!r} left in the text: {text[i - 40:i + 40]!r}")
        if r["fraction_height"] and r["fraction_height"] < 1.5 * r["letter_height"]:
            out.append(f"{name}: fractions are not stacked ({r['fraction_height']:.1f}px)")
        for rows in r["table_rows"]:
            if len(rows) > 1 and len(set(round(y) for y in rows)) < len(rows):
                out.append(f"{name}: rows of an aligned block share a line")
        for src, width in r["images"]:
            if not width:
                out.append(f"{name}: image {src} did not load")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default=os.path.join(ROOT, "site"), help="build folder (./site)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshots"),
                    help="screenshot folder (docs/screenshots)")
    ap.add_argument("--no-screenshots", action="store_true", help="check only")
    args = ap.parse_args(argv)
    build(args.site)
    results = open_pages(args.site, None if args.no_screenshots else args.out)
    found = problems(results)
    for name, r in results.items():
        print(f"{name}: {PAGES[name]}: {r['n_math']} math elements ({r['n_display']} display)")
    for p in found:
        print("PROBLEM:", p, file=sys.stderr)
    if not args.no_screenshots:
        print("screenshots:", ", ".join(os.path.join(args.out, f"{n}.png") for n in PAGES))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
