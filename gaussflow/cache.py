"""JAX's persistent compilation cache, with an integrity check on what it reads back.

The cache holds *compiled executables* (machine code), so it is code read back from a writable
folder. What JAX 0.10 does with a damaged or altered entry (measured, see
`tests/test_codegen_safety.py`):

- flipped or truncated bytes in an entry: rejected. Entries are zlib streams (zstd when the
  `zstandard` package or Python 3.14's `compression.zstd` is present); zlib's checksum fails,
  JAX warns and recompiles. zstd frames written by JAX carry no checksum, so this is not assured.
- an entry replaced by another *valid* executable (e.g. two entries swapped, or an executable
  re-compressed after editing): **accepted and run** — the cache file name (a hash of the
  program) is not checked against the content, and a jitted function silently returns another
  function's results.

So gaussflow adds a manifest: `gaussflow-manifest.json` in the cache folder holds the SHA-256 of
every entry written by a gaussflow process, together with the gaussflow, jax and jaxlib versions,
and the gaussflow processes using the folder now ("sessions": host, process id, start time).
`enable` verifies the folder *before* switching the cache on; at exit, the entries written
during the run are added to the manifest.

Rules (what is removed, what is left alone):

- An entry (`<key>-cache`) whose digest matches the manifest is kept.
- An entry the manifest does not vouch for (unknown, or a different digest; every entry when the
  versions differ) is removed together with its `<key>-atime` file — *unless* it was modified
  after the start of a live gaussflow session registered in the manifest: another process may be
  writing it right now (JAX writes entries in place, not atomically), and that process records it
  at its exit. Such an entry is left alone (not vouched for; it is checked again at the next start
  after its writer has ended). A session is live while its process id runs on this host; one
  from another host counts as live for `REMOTE_SESSION_S` seconds.
- A symbolic link named like an entry is removed (the link only, never its target): JAX would read
  through it or write through it to another place.
- Only gaussflow's own names are ever removed or written: JAX entries (`*-cache`, `*-atime`),
  the manifest, its lock file `gaussflow-manifest.lock` and its temporary files
  (`.gaussflow-manifest.*.tmp`, replaced atomically with `os.replace`; stale ones older than an
  hour are removed). Folders and any other file in the cache folder are left alone and ignored.
- The manifest is read, merged and rewritten under an exclusive `fcntl.flock` on the lock file,
  so concurrent processes do not lose each other's records.

The cache is an optimisation and never stops a computation: when the folder cannot be created or
written (read-only home, a path under a file, a dangling link), is not safe (owned by another user,
writable by group or others) or holds a manifest that is not a regular file, `enable` warns
once (`CacheWarning`, naming the folder and `--cache-dir off`) and leaves the cache off.

Scope: this guards against corruption, stale or foreign entries and tampering between runs by
anything that does not also rewrite the manifest. A process running as the same user can rewrite
the manifest too (as it could the installed package); an entry swapped *during* a run, or while
another gaussflow process is live, is only caught at the next start after those processes end.
`path = "off"` (CLI `--cache-dir off`) disables the cache.

**Python API.** The CLI enables the cache at start. A Python program gets it too: the first
call of `gf.solve`, `gf.sweep`, `gf.particles.simulate` or `gf.validate` in a process calls
`ensure_enabled`, which enables the default folder (`$GAUSSFLOW_CACHE_DIR` or
`~/.cache/gaussflow/jax`) unless JAX's cache folder is already set (by the program itself or an
earlier `enable`) or `GAUSSFLOW_CACHE_DIR=off`. So a fresh process's first sweep loads its
compiled pieces instead of compiling them again.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import socket
import stat
import sys
import tempfile
import time
import warnings

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None

MANIFEST = "gaussflow-manifest.json"
LOCK = "gaussflow-manifest.lock"
_TMP_PREFIX, _TMP_SUFFIX = ".gaussflow-manifest.", ".tmp"
#: File name endings of JAX's cache entries (`<key>-cache`) and their access-time files.
ENTRY_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"
#: A session registered from another host is taken as live for this many seconds.
REMOTE_SESSION_S = 86400.0
_STALE_TMP_S = 3600.0

_registered: dict = {}  # folder -> time it was verified (this process)
_warned: set = set()


class CacheWarning(UserWarning):
    """The compilation cache could not be used (the command runs without it)."""


class CacheUnusable(OSError):
    """The cache folder is in a state gaussflow does not change (e.g. the manifest is a folder)."""


def default_path() -> str:
    """The default cache folder: `$GAUSSFLOW_CACHE_DIR`, or `~/.cache/gaussflow/jax`."""
    return os.environ.get("GAUSSFLOW_CACHE_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "gaussflow", "jax"))


def versions() -> dict:
    """The library versions an entry is valid for."""
    import jax
    import jaxlib

    from . import __version__

    return {"gaussflow": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "python": sys.version.split()[0]}


def owned(name: str) -> bool:
    """Whether `name` (a file name in the cache folder) is one gaussflow or JAX writes."""
    return (name in (MANIFEST, LOCK) or name.endswith((ENTRY_SUFFIX, ATIME_SUFFIX))
            or (name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX)))


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _scan(path: str) -> dict:
    """``name -> lstat`` of the entry-named files and links of ``path`` (folders are ignored)."""
    out = {}
    for name in os.listdir(path):
        if not name.endswith((ENTRY_SUFFIX, ATIME_SUFFIX)):
            continue
        try:
            st = os.lstat(os.path.join(path, name))
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            out[name] = st
    return out


def _session_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(sid: str, info, now: float) -> bool:
    host, _, pid = sid.rpartition(":")
    if not isinstance(info, dict) or not isinstance(info.get("start"), (int, float)):
        return False
    if host != socket.gethostname():
        return now - info["start"] < REMOTE_SESSION_S
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process with that id
        return True
    return True


@contextlib.contextmanager
def _locked(path: str):
    """Hold an exclusive lock on the folder's manifest while reading-modifying-writing it."""
    for own in (MANIFEST, LOCK):  # checked before the lock file is created
        f = os.path.join(path, own)
        if os.path.lexists(f) and not stat.S_ISREG(os.lstat(f).st_mode):
            raise CacheUnusable(f"{f} is not a regular file (remove it)")
    lock = os.path.join(path, LOCK)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load(path: str) -> dict:
    """The manifest as ``{"entries": {...}, "sessions": {...}}``; entries only if versions match."""
    f = os.path.join(path, MANIFEST)
    if not os.path.lexists(f):
        return {"entries": {}, "sessions": {}}
    if not stat.S_ISREG(os.lstat(f).st_mode):
        raise CacheUnusable(f"{f} is not a regular file (remove it)")
    try:
        with open(f) as fh:
            m = json.load(fh)
    except (ValueError, UnicodeDecodeError):
        return {"entries": {}, "sessions": {}}
    if not isinstance(m, dict):
        return {"entries": {}, "sessions": {}}
    entries, sessions = m.get("entries"), m.get("sessions")
    ok = m.get("versions") == versions() and isinstance(entries, dict)
    return {"entries": dict(entries) if ok else {},
            "sessions": dict(sessions) if isinstance(sessions, dict) else {}}


def _store(path: str, m: dict) -> None:
    """Write the manifest atomically (temporary file, then ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=path)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"versions": versions(), "entries": dict(sorted(m["entries"].items())),
                       "sessions": m["sessions"]}, fh, indent=0)
        os.replace(tmp, os.path.join(path, MANIFEST))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove(path: str, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(path, name))


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


def verify(path: str, session_start: float | None = None) -> dict:
    """Remove the entries of `path` that the manifest does not vouch for (see the module's rules).

    Parameters
    ----------
    path : str
        The cache folder.
    session_start : float, optional
        With it, registers this process as a session that started then (a `time.time()` value).

    Returns
    -------
    dict
        `{"kept": [...], "removed": [...], "pending": [...]}` (entry file names; pending:
        unverified entries left alone because a live session may be writing them).

    Raises
    ------
    CacheUnusable
        If the manifest or its lock file is not a regular file.
    """
    now = time.time()
    with _locked(path):
        m = _load(path)
        own = _session_id()
        sessions = {s: v for s, v in m["sessions"].items() if s != own and _alive(s, v, now)}
        live_since = min((v["start"] for v in sessions.values()), default=None)
        if session_start is not None:
            sessions[own] = {"start": session_start}
        known, files = m["entries"], _scan(path)
        kept, removed, pending, entries = [], [], [], {}
        for name, st in sorted(files.items()):
            if not name.endswith(ENTRY_SUFFIX):
                continue
            if stat.S_ISLNK(st.st_mode):
                removed.append(name)
                _remove(path, name)
                continue
            digest = _digest(os.path.join(path, name))
            if known.get(name) == digest:
                kept.append(name)
                entries[name] = digest
            elif live_since is not None and st.st_mtime >= live_since:
                pending.append(name)
            else:
                removed.append(name)
                _remove(path, name)
                _remove(path, name[: -len(ENTRY_SUFFIX)] + ATIME_SUFFIX)
        for name, st in files.items():  # access-time files whose entry is gone
            if (name.endswith(ATIME_SUFFIX) and name[: -len(ATIME_SUFFIX)] + ENTRY_SUFFIX
                    not in kept + pending and (live_since is None or st.st_mtime < live_since)):
                _remove(path, name)
        for name in os.listdir(path):  # temporary manifests of crashed processes
            if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    if now - os.lstat(os.path.join(path, name)).st_mtime > _STALE_TMP_S:
                        os.remove(os.path.join(path, name))
        _store(path, {"entries": entries, "sessions": sessions})
    return {"kept": kept, "removed": removed, "pending": pending}


def record(path: str, since: float = 0.0, final: bool = True) -> None:
    """Add the entries written since `since` to the manifest (merged with what is on disk).

    Parameters
    ----------
    path : str
        The cache folder (nothing happens if it is not a folder).
    since : float
        A `time.time()` value: entries modified at or after it are recorded.
    final : bool
        This process is done with the folder (its session is removed from the manifest).
    """
    if not os.path.isdir(path):
        return
    with _locked(path):
        m = _load(path)
        files = _scan(path)
        entries = {n: v for n, v in m["entries"].items()
                   if n in files and stat.S_ISREG(files[n].st_mode)}
        for name, st in files.items():
            if (name.endswith(ENTRY_SUFFIX) and stat.S_ISREG(st.st_mode)
                    and st.st_mtime >= since):
                entries[name] = _digest(os.path.join(path, name))
        sessions = dict(m["sessions"])
        if final:
            sessions.pop(_session_id(), None)
        _store(path, {"entries": entries, "sessions": sessions})


def _record_at_exit(path: str, since: float) -> None:
    with contextlib.suppress(OSError, ValueError):
        record(path, since, final=True)


def _warn(path: str, why: str) -> None:
    if (path, why) in _warned:
        return
    _warned.add((path, why))
    warnings.warn(f"compilation cache {path} {why}; running without it (pass --cache-dir off "
                  "or set GAUSSFLOW_CACHE_DIR=off to skip the cache)", CacheWarning, stacklevel=3)


def enable(path: str | os.PathLike | None = None) -> str | None:
    """Verify `path` (default `default_path()`) and switch JAX's persistent cache on there.

    `path = ""` or `"off"` leaves it off.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The cache folder (created with mode `0o700` if missing).

    Returns
    -------
    str or None
        The folder (absolute), or `None` when the cache stays off: also when the folder cannot be
        used, with a `CacheWarning` saying why (never an error: the cache is an optimisation).

    Raises
    ------
    TypeError
        If `path` is not a folder name.
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
    try:
        if os.path.lexists(path) and not os.path.isdir(path):
            why = ("is a dangling symbolic link" if os.path.islink(path)
                   else "is a file, not a folder")
            _warn(path, why)
            return None
        os.makedirs(path, mode=0o700, exist_ok=True)
        why = _unsafe_folder(path)
        if why:
            _warn(path, why)
            return None
        if path in _registered:  # verified earlier in this process: vouch for what it wrote since
            record(path, _registered[path], final=False)
        else:
            start = time.time() - 1.0
            report = verify(path, session_start=start)
            if report["removed"]:
                n = len(report["removed"])
                warnings.warn(f"removed {n} unverified compilation cache "
                              f"entr{'y' if n == 1 else 'ies'} from {path} (they will be "
                              "recompiled)", CacheWarning, stacklevel=2)
            _registered[path] = start
            atexit.register(_record_at_exit, path, start)
    except OSError as e:
        detail = e.strerror if isinstance(e.strerror, str) else str(e)
        if e.filename and os.fspath(e.filename) != path:
            detail += f": {os.fspath(e.filename)}"
        _warn(path, f"cannot be used ({detail})")
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    _reset_jax_cache()
    return path


_ensured = False


def ensure_enabled() -> str | None:
    """Enable the default cache once per process for the Python API (see the module docstring).

    Does nothing when JAX's `jax_compilation_cache_dir` is already set or `GAUSSFLOW_CACHE_DIR` is
    `off`/empty; otherwise `enable` (which warns, never raises, when the folder cannot be used).

    Returns
    -------
    str or None
        The folder in use, or `None`.
    """
    global _ensured
    import jax

    current = jax.config.jax_compilation_cache_dir
    if _ensured or current:
        return current or None
    _ensured = True
    return enable(None)


def _reset_jax_cache():
    """Make JAX pick up the new cache folder.

    JAX fixes its cache at the first compilation (which may already have happened in this
    process), so a folder set later is otherwise ignored."""
    try:
        from jax.experimental.compilation_cache import compilation_cache as _cc

        _cc.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - older/newer JAX layouts
        pass
