"""Safe code generation: the only ``exec`` runs in-memory generated source; the persistent
compilation cache (compiled code on disk) is verified before use, and a tampered entry is rejected.
"""

import ast
import glob
import os
import subprocess
import sys
import zlib

import gaussflow

PKG = os.path.dirname(os.path.abspath(gaussflow.__file__))
DANGEROUS = {"exec", "eval", "compile", "__import__"}
DANGEROUS_MODULES = {"pickle", "marshal", "shelve", "dill", "cloudpickle"}


def test_only_exec_is_codegen_compile_source():
    """Audit: no eval/pickle/marshal anywhere; exactly one exec, in codegen.compile_source, and
    codegen reads no files."""
    execs = []
    for path in glob.glob(os.path.join(PKG, "**", "*.py"), recursive=True):
        tree = ast.parse(open(path).read())
        func_of = {}
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef):
                for node in ast.walk(fn):
                    func_of.setdefault(id(node), fn.name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not DANGEROUS_MODULES & {n.split(".")[0] for n in names}, (path, names)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in DANGEROUS:
                execs.append((os.path.relpath(path, PKG), node.func.id, func_of.get(id(node))))
    assert {(f, fn) for f, _, fn in execs} == {(os.path.join("codegen", "compile.py"), "compile_source")}
    assert [c for _, c, _ in execs].count("exec") == 1
    src = open(os.path.join(PKG, "codegen", "compile.py")).read()
    assert "open(" not in src and "read_text" not in src


_RUN = r"""
import sys, warnings
import numpy as np, scipy.linalg, jax, jax.numpy as jnp
import gaussflow as gf
from gaussflow.cli import enable_compilation_cache
warnings.simplefilter("always")
assert enable_compilation_cache(sys.argv[1]) == sys.argv[1]
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
f1 = jax.jit(lambda x: jnp.sin(x) + 1.0)   # two programs with the same signature
f2 = jax.jit(lambda x: jnp.cos(x) * 2.0)
x = jnp.arange(3.0)
W = np.array([[-1.0, 0.5], [0.0, -2.0]])
E = scipy.linalg.expm(W)  # Sigma(1) = e^W Sigma0 e^{W^T}
tr = gf.solve(gf.Affine(W), gf.Gaussian([1.0, 0.0], np.eye(2)), 1.0, ts=[0.0, 1.0])
ok = (np.allclose(f1(x), np.sin(x) + 1) and np.allclose(f2(x), np.cos(x) * 2)
      and tr.status == "completed" and np.allclose(tr.final.cov, E @ E.T, rtol=1e-6, atol=0))
print("RESULT", "correct" if ok else "WRONG")
"""


def _run(cache, env):
    p = subprocess.run([sys.executable, "-c", _RUN, cache], capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout, p.stderr


def test_tampered_cache_entries_are_rejected(tmp_path):
    cache = str(tmp_path / "cache")
    env = {**os.environ, "GAUSSFLOW_CACHE_DIR": cache}
    out, _ = _run(cache, env)
    assert "RESULT correct" in out
    entries = sorted(glob.glob(os.path.join(cache, "*-cache")))
    lambdas = [e for e in entries if os.path.basename(e).startswith("jit__lambda")]
    assert len(lambdas) == 2 and len(entries) > 3
    assert os.path.exists(os.path.join(cache, "gaussflow-manifest.json"))
    # Tamper: swap the two same-signature executables (JAX alone runs the wrong one: measured),
    # flip one byte inside a decompressed entry and re-compress it (passes zlib's checksum), and
    # truncate another (zlib catches that one by itself).
    a, b = (open(p, "rb").read() for p in lambdas)
    open(lambdas[0], "wb").write(b)
    open(lambdas[1], "wb").write(a)
    others = [e for e in entries if e not in lambdas]
    raw = bytearray(zlib.decompress(open(others[0], "rb").read()))
    raw[len(raw) // 2] ^= 0x01
    open(others[0], "wb").write(zlib.compress(bytes(raw)))
    open(others[1], "wb").write(open(others[1], "rb").read()[:100])
    out, err = _run(cache, env)
    assert "RESULT correct" in out
    assert "removed 4 unverified compilation cache entries" in err
    # the recompiled entries were recorded at exit: the manifest vouches for every entry again
    from gaussflow.cache import verify

    report = verify(cache)
    assert report["removed"] == [] and len(report["kept"]) == len(entries)
