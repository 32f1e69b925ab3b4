r"""Math to MathML at build time: a Python-Markdown extension for the documentation site.

`$...$` (inline) and `$$...$$` (display) become MathML with `latex2mathml`, so the built site
needs no JavaScript and no network: browsers render MathML Core natively (Chromium since 109,
Firefox, Safari). The extension is registered for the pages *and* for mkdocstrings, so the LaTeX
in docstrings is converted the same way (`scripts/mkdocs_hooks.py`).

What MathML Core lacks is patched here, on the LaTeX or on the MathML:

- `\begin{aligned}` (which latex2mathml turns into one line with literal `&`) becomes an
  `array` with alternating right/left columns (an `mtable`; `site-src/css/math.css` aligns its
  cells);
- `\sim`, which latex2mathml writes as a tilde, becomes the relation ∼;
- `mathvariant` other than `normal` (ignored by MathML Core) on a letter becomes the
  Mathematical Alphanumeric Unicode letter (`\mathcal N` -> 𝒩, `\mathbb R` -> ℝ).

Math inside code (fenced blocks, backtick spans) is left alone; a `$` followed by a space or a
digit, or `\$`, is not math.
"""

from __future__ import annotations

import html
import re
import unicodedata

import latex2mathml.converter
from markdown import Extension, Markdown
from markdown.inlinepatterns import InlineProcessor
from markdown.preprocessors import Preprocessor

_VARIANT_NAMES = {
    "script": "SCRIPT", "double-struck": "DOUBLE-STRUCK", "bold": "BOLD", "fraktur": "FRAKTUR",
    "italic": "ITALIC", "bold-italic": "BOLD ITALIC", "sans-serif": "SANS-SERIF",
    "monospace": "MONOSPACE", "bold-script": "BOLD SCRIPT", "bold-fraktur": "BOLD FRAKTUR",
}
# Letters that Unicode encodes in the Letterlike Symbols block (holes in the Mathematical block).
_LETTERLIKE = {
    ("SCRIPT", "B"): "ℬ", ("SCRIPT", "E"): "ℰ", ("SCRIPT", "F"): "ℱ", ("SCRIPT", "H"): "ℋ",
    ("SCRIPT", "I"): "ℐ", ("SCRIPT", "L"): "ℒ", ("SCRIPT", "M"): "ℳ", ("SCRIPT", "R"): "ℛ",
    ("SCRIPT", "e"): "ℯ", ("SCRIPT", "g"): "ℊ", ("SCRIPT", "o"): "ℴ",
    ("DOUBLE-STRUCK", "C"): "ℂ", ("DOUBLE-STRUCK", "H"): "ℍ", ("DOUBLE-STRUCK", "N"): "ℕ",
    ("DOUBLE-STRUCK", "P"): "ℙ", ("DOUBLE-STRUCK", "Q"): "ℚ", ("DOUBLE-STRUCK", "R"): "ℝ",
    ("DOUBLE-STRUCK", "Z"): "ℤ", ("FRAKTUR", "C"): "ℭ", ("FRAKTUR", "H"): "ℌ",
    ("FRAKTUR", "I"): "ℑ", ("FRAKTUR", "R"): "ℜ", ("FRAKTUR", "Z"): "ℨ", ("ITALIC", "h"): "ℎ",
}


def _styled_letter(variant: str, ch: str) -> str | None:
    name = _VARIANT_NAMES.get(variant)
    if name is None or not ("A" <= ch <= "Z" or "a" <= ch <= "z"):
        return None
    if (name, ch) in _LETTERLIKE:
        return _LETTERLIKE[(name, ch)]
    case = "CAPITAL" if ch.isupper() else "SMALL"
    try:
        return unicodedata.lookup(f"MATHEMATICAL {name} {case} {ch.upper()}")
    except KeyError:
        return None


_MI_VARIANT = re.compile(r'<mi mathvariant="([a-z-]+)">([A-Za-z])</mi>')
_ALIGNED = re.compile(r"\\begin\{aligned\}(.*?)\\end\{aligned\}", re.S)


def _aligned_to_array(m: re.Match) -> str:
    body = m.group(1)
    rows = re.split(r"\\\\", body)
    ncols = max(row.count("&") for row in rows) + 1
    spec = "".join("rl"[i % 2] for i in range(ncols))
    # "&=" starts the right-hand cell with a relation: an empty atom before it keeps its spacing.
    return r"\begin{array}{" + spec + "}" + body.replace("&", "&{}") + r"\end{array}"


def latex_to_mathml(tex: str, display: bool = False) -> str:
    """One formula as a `<math>` element (MathML Core as far as Chromium renders it)."""
    tex = _ALIGNED.sub(_aligned_to_array, tex.strip())
    out = latex2mathml.converter.convert(tex, display="block" if display else "inline")

    def letter(m: re.Match) -> str:
        styled = _styled_letter(m.group(1), m.group(2))
        return f"<mi>{styled}</mi>" if styled else m.group(0)

    out = _MI_VARIANT.sub(letter, out)
    out = out.replace("<mi>&#x0007E;</mi>", "<mo>&#x0223C;</mo>")  # \sim (latex2mathml: "~")
    # Keep the source for copy/paste and for tools that read annotations.
    annotation = f'<annotation encoding="application/x-tex">{html.escape(tex)}</annotation>'
    return re.sub(r"^(<math[^>]*>)(.*)</math>$",
                  lambda m: f"{m.group(1)}<semantics>{m.group(2)}{annotation}</semantics></math>",
                  out, flags=re.S)


# Display math: `$$ ... $$`, possibly over several lines; a backtick code span (matched first, so
# that the `$$` in it is not math) is kept as it is.
_DISPLAY = re.compile(r"(?P<code>(?<!`)(?P<ticks>`+)(?!`).+?(?<!`)(?P=ticks)(?!`))"
                      r"|(?<!\\)\$\$(?P<tex>.+?)(?<!\\)\$\$", re.S)
# Inline math: no space after the opening `$` or before the closing one, no digit right after it
# (so "costs $5 and $6" is text), no blank line inside.
_INLINE = r"(?<![\\$\w])\$(?![\s$])((?:[^$\n]|\n(?!\s*\n))+?)(?<![\s\\])\$(?![\w$])"


class _DisplayMath(Preprocessor):
    """Replaces each `$$...$$` (outside fenced code, already stashed) by a stashed `<math>`."""

    def run(self, lines: list[str]) -> list[str]:
        text = "\n".join(lines)
        if "$$" not in text:
            return lines

        def repl(m: re.Match) -> str:
            if m.group("code"):
                return m.group(0)
            # On a line of its own the placeholder becomes a block, otherwise it stays inline.
            return self.md.htmlStash.store(latex_to_mathml(m.group("tex"), display=True))

        return _DISPLAY.sub(repl, text).split("\n")


class _InlineMath(InlineProcessor):
    def handleMatch(self, m: re.Match, data: str):  # noqa: N802 (Python-Markdown's name)
        return self.md.htmlStash.store(latex_to_mathml(m.group(1))), m.start(0), m.end(0)


class MathMLExtension(Extension):
    """`$...$` and `$$...$$` to MathML (see the module docstring)."""

    def extendMarkdown(self, md: Markdown) -> None:  # noqa: N802 (Python-Markdown's name)
        # After fenced code (25) has stashed code blocks; before HTML blocks (20).
        md.preprocessors.register(_DisplayMath(md), "gaussflow_display_math", 24)
        # After backtick code spans (190), before backslash escapes (180).
        md.inlinePatterns.register(_InlineMath(_INLINE, md), "gaussflow_inline_math", 185)


def makeExtension(**kwargs) -> MathMLExtension:  # noqa: N802 (Python-Markdown's entry point)
    return MathMLExtension(**kwargs)


__all__ = ["MathMLExtension", "latex_to_mathml", "makeExtension"]
