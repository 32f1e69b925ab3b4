"""JAX's persistent compilation cache, with an integrity check on what it reads back.

The cache holds *compiled executables* (machine code), so it is code read back from a writable
folder. What JAX 0.10 does with a damaged or altered entry (measured, see
``tests/test_codegen_safety.py``):

- flipped or truncated bytes in an entry: rejected. Entries are zlib streams (zstd when the
  ``zstandard`` package or Python 3.14's ``compression.zstd`` is present); zlib's checksum fails,
  JAX warns and recompiles. zstd frames written by JAX carry no checksum, so this is not assured.
- an entry replaced by another *valid* executable (e.g. two entries swapped, or an executable
  re-compressed after editing): **accepted and run** — the cache file name (a hash of the
  program) is not checked against the content, and a jitted function silently returns another
  function's results.

So gaussflow adds a manifest: ``gaussflow-manifest.json`` in the cache folder holds the SHA-256 of
every entry written by a gaussflow process, together with the gaussflow, jax and jaxlib versions.
:func:`enable` verifies the folder *before* switching the cache on: entries whose digest does not
match the manifest, entries the manifest does not know, and every entry when the versions differ
are deleted (JAX recompiles them). At exit, entries written during the run are added to the
manifest. The folder must be owned by the user and not writable by group or others (else the
cache stays off, with a warning).

Scope: this guards against corruption, stale or foreign entries and tampering between runs by
anything that does not also rewrite the manifest. A process running as the same user can rewrite
the manifest too (as it could the installed package); and an entry swapped *during* a run is only
caught at the next start. ``path = "off"`` (CLI ``--cache-dir off``) disables the cache.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import stat
import sys
import time
import warnings

MANIFEST = "gaussflow-manifest.json"
#: File name endings of JAX's cache entries (``<key>-cache``) and their access-time files.
ENTRY_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"

_registered: dict = {}  # folder -> time it was verified (this process)


def default_path() -> str:
    """``$GAUSSFLOW_CACHE_DIR`` or ``~/.cache/gaussflow/jax``."""
    return os.environ.get("GAUSSFLOW_CACHE_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "gaussflow", "jax"))


def versions() -> dict:
    """The library versions an entry is valid for."""
    import jax
    import jaxlib

    from . import __version__

    return {"gaussflow": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "python": sys.version.split()[0]}


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entries(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(ENTRY_SUFFIX))


def _read_manifest(path: str) -> dict:
    try:
        with open(os.path.join(path, MANIFEST)) as fh:
            m = json.load(fh)
        if m.get("versions") == versions() and isinstance(m.get("entries"), dict):
            return m["entries"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _write_manifest(path: str, entries: dict) -> None:
    tmp = os.path.join(path, f".{MANIFEST}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump({"versions": versions(), "entries": dict(sorted(entries.items()))}, fh, indent=0)
    os.replace(tmp, os.path.join(path, MANIFEST))


def _unsafe_folder(path: str) -> str | None:
    """Why ``path`` may not hold executables, or ``None`` if it may."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if hasattr(os, "getuid"):
        if st.st_uid != os.getuid():
            return "is owned by another user"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return "is writable by group or others (chmod go-w it)"
    return None


def verify(path: str) -> dict:
    """Delete the entries of ``path`` that the manifest does not vouch for.

    Returns ``{"kept": [...], "removed": [...]}`` (entry file names). Only files with JAX's entry
    endings are touched.
    """
    known = _read_manifest(path)
    kept, removed = [], []
    for name in _entries(path):
        f = os.path.join(path, name)
        if known.get(name) == _digest(f):
            kept.append(name)
            continue
        removed.append(name)
        for victim in (f, f[: -len(ENTRY_SUFFIX)] + ATIME_SUFFIX):
            try:
                os.remove(victim)
            except FileNotFoundError:
                pass
    _write_manifest(path, {n: known[n] for n in kept})
    return {"kept": kept, "removed": removed}


def record(path: str, since: float = 0.0) -> None:
    """Add the entries written since ``since`` (or unknown to the manifest) to the manifest."""
    if not os.path.isdir(path):
        return
    known = _read_manifest(path)
    for name in _entries(path):
        f = os.path.join(path, name)
        if name not in known or os.path.getmtime(f) >= since:
            known[name] = _digest(f)
    known = {n: v for n, v in known.items() if os.path.exists(os.path.join(path, n))}
    _write_manifest(path, known)


def enable(path=None):
    """Verify ``path`` (default :func:`default_path`) and switch JAX's persistent cache on there.

    ``path = ""`` or ``"off"`` leaves it off. Returns the folder, or ``None`` when the cache stays
    off (also when the folder is unsafe: a warning says why).
    """
    import jax

    if path is None:
        path = default_path()
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cache path must be a folder name, got {type(path).__name__}")
    path = os.fspath(path)
    if path in ("", "off"):
        return None
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"cache folder {path} is a file; pass a folder name or 'off'")
    os.makedirs(path, mode=0o700, exist_ok=True)
    why = _unsafe_folder(path)
    if why:
        warnings.warn(f"gaussflow: compilation cache {path} {why}; running without it",
                      stacklevel=2)
        return None
    if path in _registered:  # verified earlier in this process: vouch for what it wrote since
        record(path, _registered[path])
        jax.config.update("jax_compilation_cache_dir", path)
        _reset_jax_cache()
        return path
    start = time.time()
    report = verify(path)
    if report["removed"]:
        warnings.warn(f"gaussflow: removed {len(report['removed'])} unverified compilation cache "
                      f"entr{'y' if len(report['removed']) == 1 else 'ies'} from {path} "
                      "(they will be recompiled)", stacklevel=2)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    _reset_jax_cache()
    _registered[path] = start - 1.0
    atexit.register(record, path, start - 1.0)
    return path


def _reset_jax_cache():
    """Make JAX pick up the new cache folder: it fixes its cache at the first compilation (which
    may already have happened in this process), so a folder set later is otherwise ignored."""
    try:
        from jax.experimental.compilation_cache import compilation_cache as _cc

        _cc.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - older/newer JAX layouts
        pass
