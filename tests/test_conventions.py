"""The public API's conventions, checked over the source: type hints on every public function
and method, and docstrings written in the one convention of the package (README, "Docstring
convention"): Markdown with code in backticks, math in LaTeX between `$...$` / `$$...$$`, no
Sphinx roles, raw strings where a docstring holds a backslash."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "gaussflow"

#: Modules not yet converted (relative to gaussflow/); this set only shrinks.
PENDING: set = set()

SPHINX_ROLE = re.compile(r":(func|class|meth|mod|data|attr|obj|exc|ref):`")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+\$", re.S)


def _modules():
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT).as_posix()
        if rel not in PENDING:
            yield rel, p


def _public_defs(tree):
    """(qualified name, node) of public functions, methods and classes (and ``__init__``)."""

    def visit(node, prefix):
        for n in ast.iter_child_nodes(node):
            if isinstance(n, ast.ClassDef) and not n.name.startswith("_"):
                yield prefix + n.name, n
                yield from visit(n, prefix + n.name + ".")
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not n.name.startswith("_") or n.name == "__init__":
                    yield prefix + n.name, n

    yield from visit(tree, "")


def _docstrings(tree, source=None):
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    for n in nodes:
        body = getattr(n, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            yield getattr(n, "name", "<module>"), body[0].value


def docstring_problems(text: str) -> list:
    """What breaks the convention in one docstring (empty when nothing)."""
    out = []
    if SPHINX_ROLE.search(text):
        out.append("Sphinx role (write the name in backticks)")
    for m in CODE_SPAN.finditer(text):
        code = m.group(2)
        if "^" in code or "_{" in code or "\\" in code:
            out.append(f"math inside a code span: {m.group(0)[:60]!r} (write it as $...$)")
    rest = MATH.sub(" ", CODE_SPAN.sub(" ", text))
    for bad in ("^{", "_{", "\\"):
        if bad in rest:
            i = rest.index(bad)
            out.append(f"LaTeX outside $...$: {rest[max(0, i - 30):i + 30]!r}")
    if rest.count("$") % 2:
        out.append("unbalanced $")
    return out


def test_docstring_checker_catches_each_rule():
    assert docstring_problems("see :func:`gaussflow.solve`")
    assert docstring_problems("``Sigma^{-1}``")
    assert docstring_problems(r"the inverse \Sigma^{-1} here")
    assert docstring_problems("an odd $ sign")
    assert not docstring_problems(r"``gf.solve`` integrates $\dot\Sigma = J\Sigma + \Sigma J^T$.")


@pytest.mark.parametrize("rel,path", list(_modules()), ids=lambda v: str(v))
def test_public_functions_have_type_hints(rel, path):
    missing = []
    for name, node in _public_defs(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            continue
        a = node.args
        args = [x for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
        args += [x for x in (a.vararg, a.kwarg) if x is not None]
        if any(x.annotation is None for x in args) or \
                (node.returns is None and node.name != "__init__"):
            missing.append(name)
    assert not missing, f"{rel}: public functions without complete type hints: {missing}"


@pytest.mark.parametrize("rel,path", list(_modules()), ids=lambda v: str(v))
def test_docstrings_follow_the_convention(rel, path):
    problems = []
    source = path.read_text()
    for name, node in _docstrings(ast.parse(source)):
        problems += [f"{name}: {p}" for p in docstring_problems(node.value)]
        literal = ast.get_source_segment(source, node) or ""
        if "\\" in literal and not literal.lstrip()[:1] in ("r", "R"):
            problems.append(f"{name}: a backslash in a docstring that is not a raw string")
    assert not problems, f"{rel}:\n" + "\n".join(problems)


def test_pending_lists_only_existing_modules():
    missing = [rel for rel in PENDING if not (ROOT / rel).exists()]
    assert not missing, f"PENDING names modules that do not exist: {missing}"
