"""The README's set-up commands are the ones CI runs, and its Python example works."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md")) as fh:
        return fh.read()


def test_readme_opens_with_the_two_setup_commands_used_by_ci():
    text = _readme()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert block == ['pip install . && gaussflow run', 'pip install ".[test]" && python -m pytest -n auto']
    with open(os.path.join(ROOT, ".ci", "run")) as fh:
        ci = fh.read()
    assert 'pip install ".[test]" && python -m pytest -n auto' in ci


def test_readme_python_example_runs():
    text = _readme()
    code = re.search(r"## Ten lines of Python\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    namespace = {}
    exec(compile(code, "README", "exec"), namespace)  # noqa: S102
    traj = namespace["traj"]
    assert traj.status in {"completed", "blowup"}
