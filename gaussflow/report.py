"""One self-contained HTML report per study.

`write_report` writes a single HTML file that opens in any browser without a network or the
files next to it: the figures are embedded as base64 `data:image/png` URIs, the style sheet is
inline, and there is no script. It holds a title, the command line that made the results, the
date, the versions of the packages that computed them, the key numbers (a nested summary dict,
flattened into one table per top-level section) and every figure with its caption.

`gaussflow run`, `gaussflow validate` and `gaussflow reproduce` call it with their summaries and
print the report's path; from Python, pass the summary that `gaussflow.study.run_study` or
`gaussflow.reproduce.reproduce` returns (its `files` are the figures), or
`gaussflow.display.validation_numbers(report)` with the PNG of `ValidationReport.plot`.
"""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import os
import platform
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .display import PNG_SIGNATURE, data_uri, fmt, html_table, matrix_text

#: Packages whose versions a report lists (those installed).
PACKAGES = ("gaussflow", "jax", "jaxlib", "diffrax", "equinox", "sympy", "numpy", "scipy",
            "matplotlib")

#: Captions of the figures the studies write, by file name (regular expressions on the name
#: without `.png`); a figure matching none is captioned by its file name.
CAPTIONS = (
    (r"disk_(\w+)", "Normalised covariance Σ / tr Σ on the unit disk, "
                    "case '{0}': one path per initial covariance (start: dot, end: cross)."),
    (r"eigenvalues_(\w+)", "Eigenvalues of Σ(t) against depth, case '{0}'."),
    (r"validate-(\w+)", "Closure against particles, {0}: error against the number of particles N "
                        "(dots: seeds; line: root mean square; dashed: the N^(-1/2) reference)."),
    (r"regime_maps", "Regime maps: fraction of random weight draws in each regime against the "
                     "scale and d."),
    (r"blowup_times", "Blow-up times: solver against the closed form."),
    (r"regime_(\w+)", "Regime '{0}': paths of the 2-D flows on the unit disk and in the PSD cone, "
                      "coloured by their classified regime (red dashes: the theory's limits)."),
    (r"rank_histograms", "Rank of the limit covariance, d = 3, 4, 5."),
    (r"clustering_spectrum", "Normalised spectrum against depth, d = 8: closure and mirrored "
                             "particle cloud."),
    (r"clustering_gap", "Largest closure-particle spectrum gap against N, independent and "
                        "mirrored clouds."),
    (r"meanfield", "Mean-field limit from compactly supported data, every variant."),
    (r"depth_minilm", "Closure against tokens through the layers of all-MiniLM-L6-v2."),
)

#: Most rows of one numbers table (the rest is counted; the JSON summary has everything).
MAX_ROWS = 300

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
code, pre { background: #f4f4f4; padding: 0.1em 0.3em; white-space: pre-wrap; }
figure { display: inline-block; vertical-align: top; width: 520px; max-width: 100%;
         margin: 0.5em 1em 0.5em 0; }
figure img { width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
"""


def versions() -> dict[str, str]:
    """`{package: version}` for the installed `PACKAGES`, and Python's."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def caption_for(png: str) -> str:
    """The caption of the figure file `png` (`CAPTIONS`, else its file name)."""
    stem = os.path.basename(png)[: -len(".png")] if png.endswith(".png") else os.path.basename(png)
    for pattern, text in CAPTIONS:
        m = re.fullmatch(pattern, stem)
        if m:
            return text.format(*m.groups())
    return stem


def number_rows(numbers: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten the nested mapping `numbers` into `(path, value)` rows, the path `a / b / c`.

    Numbers get 4 significant digits, short lists (at most 16 scalars) and small matrices are
    written inline, longer lists are counted (`"n entries"`).
    """
    rows = []
    for k, v in numbers.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            rows += number_rows(v, key + " / ")
        elif isinstance(v, (list, tuple, np.ndarray)):
            rows.append((key, _sequence_text(v)))
        else:
            rows.append((key, fmt(v)))
    return rows


def _scalar(x) -> bool:
    return x is None or isinstance(x, (str, bool, int, float, np.number, np.bool_))


def _sequence_text(v) -> str:
    items = list(v)
    if items and all(isinstance(r, (list, tuple, np.ndarray)) for r in items):
        rows = [list(r) for r in items]
        if (len(rows) * max(len(r) for r in rows) <= 16
                and all(isinstance(x, (int, float, np.number)) for r in rows for x in r)):
            return matrix_text(np.array(rows, float))
    elif len(items) <= 16 and all(_scalar(x) for x in items):
        if any(isinstance(x, str) for x in items):
            return "; ".join(map(str, items))
        return "[" + ", ".join(fmt(x) for x in items) + "]"
    return f"{len(items)} entries (see the JSON summary)"


def _sections(numbers: Mapping[str, Any]) -> list[tuple[str | None, list[tuple[str, str]]]]:
    """Top-level scalars in one table, each top-level mapping in a table of its own."""
    top = {k: v for k, v in numbers.items() if not isinstance(v, Mapping)}
    out = [(None, number_rows(top))] if top else []
    out += [(str(k), number_rows(v)) for k, v in numbers.items() if isinstance(v, Mapping)]
    return out


def _check_figures(figures):
    if isinstance(figures, (str, bytes, os.PathLike)):
        raise TypeError("figures must be a list of PNG paths or (path, caption) pairs, got one "
                        f"path {figures!r}; wrap it in a list")
    out = []
    for f in figures:
        path, cap = (f, None) if isinstance(f, (str, os.PathLike)) else tuple(f)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"figures: {path!r} is not a file; pass the PNG files the study wrote")
        with open(path, "rb") as fh:
            data = fh.read()
        if not data.startswith(PNG_SIGNATURE):
            raise ValueError(f"figures: {path!r} is not a PNG file; pass the .png of each figure")
        out.append((path, caption_for(path) if cap is None else str(cap), data))
    return out


def write_report(path: str | os.PathLike, title: str, numbers: Mapping[str, Any],
                 figures: Sequence[str | os.PathLike | tuple[str, str]] = (),
                 command: str | Sequence[str] | None = None,
                 files: Sequence[str | os.PathLike] = ()) -> str:
    """Write one self-contained HTML report and return its path.

    Parameters
    ----------
    path : str or os.PathLike
        The HTML file to write (its folder must exist), e.g. `out/report.html`.
    title : str
        The report's title.
    numbers : Mapping
        The key numbers: a (nested) summary dict such as a study's `summary.json`. Top-level
        scalars form one table, each top-level mapping a table of its own; the key `files` is
        left out (pass it as `files`).
    figures : sequence
        PNG paths, or `(path, caption)` pairs; each is embedded as a `data:image/png` URI.
        Without a caption, one from `CAPTIONS` (by file name) or the file name.
    command : str, sequence of str or None
        The command line that made the results (a sequence is quoted with `shlex.join`); `None`:
        "not recorded".
    files : sequence
        Other files written alongside (listed by name, not linked).

    Returns
    -------
    str
        `path`, as a string.

    Raises
    ------
    TypeError
        If `numbers` is not a mapping or `figures` is a single path.
    ValueError
        If the folder of `path` does not exist, or a figure is not an existing PNG file.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise ValueError(f"path: folder {folder} does not exist; create it first")
    if not isinstance(numbers, Mapping):
        raise TypeError(f"numbers must be a mapping (a summary dict), got {type(numbers).__name__}")
    figs = _check_figures(figures)
    if command is not None and not isinstance(command, str):
        command = shlex.join(str(c) for c in command)
    esc = html.escape
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
             f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             html_table([("command", command or "not recorded"), ("date", when)]
                        + [(f"{k} version", v) for k, v in versions().items()])]
    parts.append("<h2>Key numbers</h2>")
    for name, rows in _sections({k: v for k, v in numbers.items() if k != "files"}):
        more = len(rows) - MAX_ROWS
        rows = rows[:MAX_ROWS] + ([("…", f"{more} more rows (see the JSON summary)")]
                                  if more > 0 else [])
        parts.append(html_table(rows, name))
    if figs:
        parts.append("<h2>Figures</h2>")
    for fpath, cap, data in figs:
        name = os.path.basename(fpath)
        parts.append(f"<figure><img src='{data_uri(data)}' alt='{esc(name, quote=True)}'>"
                     f"<figcaption><b>{esc(name)}</b>: {esc(cap)}</figcaption></figure>")
    others = [os.path.basename(os.fspath(f)) for f in files
              if os.fspath(f) not in {p for p, _, _ in figs}]
    if others:
        parts.append("<h2>Other files</h2><ul>"
                     + "".join(f"<li><code>{esc(f)}</code></li>" for f in others) + "</ul>")
    parts.append("</body></html>\n")
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    return path


def write_study_report(out_dir: str | os.PathLike, title: str, summary: Mapping[str, Any],
                       command: str | Sequence[str] | None = None,
                       name: str = "report.html") -> str:
    """`write_report` for a study summary whose `files` lists what it wrote (the dict
    `gaussflow.study.run_study` and `gaussflow.reproduce.reproduce` return): its PNGs are the
    figures, the other files are listed; written to `out_dir/name`.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The study's output folder.
    title : str
        The report's title.
    summary : Mapping
        The study's summary, with `files`.
    command : str, sequence of str or None
        The command line (see `write_report`).
    name : str
        The report's file name in `out_dir`.

    Returns
    -------
    str
        The report's path.
    """
    files = [os.fspath(f) for f in summary.get("files", [])]
    pngs = [f for f in files if f.endswith(".png")]
    return write_report(os.path.join(os.fspath(out_dir), name), title, summary, pngs, command,
                        [f for f in files if not f.endswith(".png")])
