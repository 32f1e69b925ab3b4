"""Failure injection for the persistent compilation cache (``gaussflow.cache``).

Each case: the command still produces the correct result, and afterwards the cache folder holds
nothing but gaussflow's own files (``gaussflow.cache.owned``, no temporary file) plus the foreign
files the test put there, untouched. The cache is an optimisation: a folder that cannot be used
gives one warning line and the command runs without it.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.linalg

from gaussflow import cache
from gaussflow.cli import main

W = np.array([[-1.0, 0.5], [0.0, -2.0]])
M0 = np.array([1.0, 0.0])
PROBLEM = {"W": W.tolist(), "mean": M0.tolist(), "cov": np.eye(2).tolist(), "t1": 1.0}


def _check_result(summary):
    E = scipy.linalg.expm(W)  # mean(1) = e^W m0, Sigma(1) = e^W e^{W^T}
    assert summary["status"] == "completed"
    np.testing.assert_allclose(summary["final_mean"], E @ M0, rtol=1e-6)
    np.testing.assert_allclose(summary["final_eigenvalues"], np.linalg.eigvalsh(E @ E.T),
                               rtol=1e-6)


def _argv(tmp, cache_dir, out="out"):
    inp = tmp / "problem.json"
    if not inp.exists():
        inp.write_text(json.dumps(PROBLEM))
    head = [] if cache_dir is None else ["--cache-dir", str(cache_dir)]
    return head + ["solve", "affine", "--input", str(inp), "--n-save", "3", "--quiet", "--json",
                   "--out", str(tmp / out)]


def _snapshot(folder, names):
    """Contents of the foreign files ``names`` (a link: its target text)."""
    snap = {}
    for n in names:
        p = os.path.join(folder, n)
        if os.path.islink(p):
            snap[n] = ("link", os.readlink(p))
        elif os.path.isdir(p):
            snap[n] = ("dir", sorted(os.listdir(p)))
        else:
            snap[n] = ("file", open(p, "rb").read())
    return snap


def _only_own_and_foreign(folder, foreign_snapshot):
    names = set(os.listdir(folder))
    stray = sorted(n for n in names - set(foreign_snapshot) if not cache.owned(n))
    assert not stray, f"unexpected files in the cache folder: {stray}"
    tmp = [n for n in names if n.endswith(".tmp")]
    assert not tmp, f"temporary files left behind: {tmp}"
    assert _snapshot(folder, foreign_snapshot) == foreign_snapshot, "a foreign file was changed"


# --------------------------------------------------- caches that cannot be used (in-process)
def _run_in_process(tmp_path, capsys, cache_dir):
    code = main(_argv(tmp_path, cache_dir))
    cap = capsys.readouterr()
    assert code == 0, cap.err
    _check_result(json.loads(cap.out))
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gaussflow: warning: compilation cache"), lines
    assert "--cache-dir off" in lines[0] and "Traceback" not in cap.err
    return lines[0]


def test_cache_under_a_file_warns_and_runs(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    line = _run_in_process(tmp_path, capsys, tmp_path / "afile" / "jax")
    assert str(tmp_path / "afile" / "jax") in line
    assert (tmp_path / "afile").read_text() == "x"


def test_read_only_cache_folder_warns_and_runs(tmp_path, capsys):
    # /proc exists and refuses new files even to root
    line = _run_in_process(tmp_path, capsys, "/proc")
    assert "compilation cache /proc " in line


def test_read_only_home_warns_and_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GAUSSFLOW_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", "/proc/gaussflow-no-home")
    line = _run_in_process(tmp_path, capsys, None)
    assert "/proc/gaussflow-no-home/.cache/gaussflow/jax" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_chmod_read_only_cache_warns_and_runs(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        _run_in_process(tmp_path, capsys, ro)
    finally:
        ro.chmod(0o700)
    assert list(ro.iterdir()) == []


def test_dangling_link_as_cache_folder_warns_and_runs(tmp_path, capsys):
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    line = _run_in_process(tmp_path, capsys, tmp_path / "link")
    assert "dangling" in line and not (tmp_path / "nowhere").exists()


def test_manifest_that_is_a_folder_warns_runs_and_removes_nothing(tmp_path, capsys):
    c = tmp_path / "c"
    (c / cache.MANIFEST).mkdir(parents=True)
    c.chmod(0o700)
    (c / cache.MANIFEST / "inside").write_text("keep")
    (c / "0123-cache").write_bytes(b"an entry gaussflow cannot vouch for today")
    before = _snapshot(c, os.listdir(c))
    line = _run_in_process(tmp_path, capsys, c)
    assert cache.MANIFEST in line
    assert _snapshot(c, os.listdir(c)) == before  # nothing removed, nothing added


def test_warns_once_per_folder(tmp_path):
    (tmp_path / "afile").write_text("")
    bad = str(tmp_path / "afile" / "jax")
    with pytest.warns(cache.CacheWarning):
        assert cache.enable(bad) is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.enable(bad) is None


# ------------------------------------------------------- the rules of verify/record (no JAX)
def _folder(tmp_path):
    c = tmp_path / "c"
    c.mkdir(mode=0o700)
    return c


def test_entries_of_a_live_session_are_left_alone(tmp_path):
    c = _folder(tmp_path)
    (c / "fresh-cache").write_bytes(b"being written by another process")
    (c / "old-cache").write_bytes(b"stale")
    now = time.time()
    os.utime(c / "old-cache", (now - 3600, now - 3600))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sid = f"{__import__('socket').gethostname()}:{other.pid}"
        (c / cache.MANIFEST).write_text(json.dumps(
            {"versions": cache.versions(), "entries": {}, "sessions": {sid: {"start": now - 60}}}))
        report = cache.verify(str(c))
        assert report["pending"] == ["fresh-cache"] and report["removed"] == ["old-cache"]
        assert (c / "fresh-cache").exists()
    finally:
        other.kill()
        other.wait()
    report = cache.verify(str(c))  # the writer has ended without recording it: unverified
    assert report["removed"] == ["fresh-cache"] and not (c / "fresh-cache").exists()
    assert json.loads((c / cache.MANIFEST).read_text())["sessions"] == {}


def test_foreign_files_folders_and_links_are_left_alone(tmp_path):
    c = _folder(tmp_path)
    (c / "notes.txt").write_text("mine")
    (c / "sub").mkdir()
    (c / "sub" / "x-cache").write_text("not at the top level")
    (c / "odd-cache").mkdir()  # a folder named like an entry
    os.symlink(tmp_path / "nowhere", c / "dangling")
    target = tmp_path / "target"
    target.write_text("outside")
    os.symlink(target, c / "linked-cache")  # JAX would read/write through it: the link goes
    foreign = _snapshot(c, ["notes.txt", "sub", "odd-cache", "dangling"])
    report = cache.verify(str(c))
    assert report["removed"] == ["linked-cache"] and not os.path.lexists(c / "linked-cache")
    assert target.read_text() == "outside"
    cache.record(str(c))
    _only_own_and_foreign(str(c), foreign)


def test_record_merges_with_disk_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    c = _folder(tmp_path)
    (c / "a-cache").write_bytes(b"a")
    cache.record(str(c))
    (c / "b-cache").write_bytes(b"b")
    old = time.time() - 3600
    os.utime(c / "a-cache", (old, old))
    cache.record(str(c), since=time.time() - 60)  # a-cache is older: kept from the disk's copy
    assert set(json.loads((c / cache.MANIFEST).read_text())["entries"]) == {"a-cache", "b-cache"}
    monkeypatch.setattr(cache, "versions", lambda: {"unserialisable": object()})
    with pytest.raises(TypeError):
        cache.record(str(c))
    _only_own_and_foreign(str(c), {})
    monkeypatch.undo()
    assert cache.verify(str(c))["removed"] == []


# ------------------------------------------------ real processes: concurrency, then tampering
def _spawn(tmp, cache_dir, out):
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("GAUSSFLOW_CACHE_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "gaussflow"] + _argv(tmp, cache_dir, out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    _check_result(json.loads(out))
    return err


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """Two CLI processes with one cache folder; the second starts once the first has written
    entries (so it meets entries another live process is writing)."""
    tmp = tmp_path_factory.mktemp("shared")
    c = tmp / "cache"
    a = _spawn(tmp, c, "out-a")
    deadline = time.time() + 300
    while a.poll() is None and time.time() < deadline:
        if c.is_dir() and any(n.endswith("-cache") for n in os.listdir(c)):
            break
        time.sleep(0.05)
    b = _spawn(tmp, c, "out-b")
    return tmp, c, _finish(a), _finish(b)


def test_two_processes_keep_each_others_entries(shared_cache):
    tmp, c, err_a, err_b = shared_cache
    assert "removed" not in err_a and "removed" not in err_b, (err_a, err_b)
    _only_own_and_foreign(str(c), {})
    m = json.loads((c / cache.MANIFEST).read_text())
    assert m["sessions"] == {}  # both deregistered at exit
    entries = sorted(n for n in os.listdir(c) if n.endswith("-cache"))
    assert len(entries) >= 3 and sorted(m["entries"]) == entries


def test_tampered_entries_are_removed_foreign_files_kept(shared_cache, tmp_path):
    _, shared, _, _ = shared_cache
    c = tmp_path / "cache"
    shutil.copytree(shared, c, symlinks=True)
    entries = sorted(n for n in os.listdir(c) if n.endswith("-cache"))
    (c / entries[0]).write_bytes((c / entries[0]).read_bytes()[:50])  # truncated
    a, b = (c / entries[1]).read_bytes(), (c / entries[2]).read_bytes()  # swapped
    (c / entries[1]).write_bytes(b)
    (c / entries[2]).write_bytes(a)
    (c / "README.txt").write_text("foreign")
    (c / "subdir").mkdir()
    (c / "subdir" / "f").write_text("foreign")
    os.symlink(tmp_path / "nowhere", c / "dangling")
    foreign = _snapshot(c, ["README.txt", "subdir", "dangling"])
    err = _finish(_spawn(tmp_path, c, "out"))
    assert "removed 3 unverified compilation cache entries" in err, err
    _only_own_and_foreign(str(c), foreign)
    report = cache.verify(str(c))  # the recompiled entries were recorded at exit
    assert report["removed"] == [] and report["pending"] == []
    assert sorted(report["kept"]) == sorted(n for n in os.listdir(c) if n.endswith("-cache"))


_API_RUN = """
import sys
import jax
import numpy as np
import gaussflow as gf
if sys.argv[1] == "preset":
    jax.config.update("jax_compilation_cache_dir", sys.argv[2])
f = gf.Softmax(np.array([[1.0, 0.5]]), np.array([[-1.0, 0.2]]), np.eye(2))
tr = gf.solve(f, gf.Gaussian.standard(2), 0.5)
print(tr.status, jax.config.jax_compilation_cache_dir)
"""


def test_python_api_uses_the_default_cache(tmp_path):
    """A plain `gf.solve` in a fresh process enables the default cache folder (entries and the
    manifest written); a folder the program set itself is left as it is."""
    default, own = tmp_path / "default", tmp_path / "own"
    env = dict(os.environ, GAUSSFLOW_CACHE_DIR=str(default),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    out = subprocess.run([sys.executable, "-c", _API_RUN, "default"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["completed", str(default)]
    names = os.listdir(default)
    assert cache.MANIFEST in names and any(n.endswith(cache.ENTRY_SUFFIX) for n in names)
    out = subprocess.run([sys.executable, "-c", _API_RUN, "preset", str(own)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["completed", str(own)]
    assert cache.MANIFEST not in os.listdir(own)  # not gaussflow's folder: left to JAX alone
