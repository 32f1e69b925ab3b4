"""Helpers shared by the subcommands: the user-facing error, help layout, output folders."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable


class UsageError(ValueError):
    """A user-facing error from the command line."""


def fmt(example: str) -> dict:
    """`add_parser` keywords for a help text ending in an example."""
    return {"epilog": "example:\n  " + example, "formatter_class": argparse.RawDescriptionHelpFormatter}


def report_files(seconds: float, out: str, files: Iterable[str]) -> int:
    """Print the run time and the files a command wrote (into the folder `out`); exit code 0."""
    print(f"done in {seconds:.1f} s; files written to {os.path.abspath(out)}:")
    for f in files:
        print(f"  {f}")
    return 0


def _why(e: OSError) -> str:
    text = e.strerror if isinstance(e.strerror, str) else str(e)
    return f"{text}: {e.filename}" if e.filename else text


def prepare_out(out: str, flag: str = "--out") -> list[str]:
    """Create the folder `out` and check a file can be written in it, before any work.

    A probe file is written and removed.

    Parameters
    ----------
    out : str
        The output folder.
    flag : str
        The option named in the error.

    Returns
    -------
    list of str
        The folders it created, deepest first (see `remove_created`).

    Raises
    ------
    UsageError
        Naming `flag`, if `out` is not a folder name, is a file or a dangling link, or cannot be
        created or written.
    """
    if not isinstance(out, str) or not out.strip():
        raise UsageError(f"{flag} must be a folder name, got {out!r}")
    path = os.path.abspath(out)
    if os.path.lexists(path) and not os.path.isdir(path):
        kind = "a dangling link" if os.path.islink(path) else "a file"
        raise UsageError(f"{flag} {out} is {kind}; pass a folder name")
    created, p = [], path
    while not os.path.lexists(p) and os.path.dirname(p) != p:
        created.append(p)
        p = os.path.dirname(p)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gaussflow-probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        remove_created(created)
        raise UsageError(f"{flag} {out} cannot be created or written ({_why(e)}); pass a "
                         "writable folder") from None
    return created


def prepare_file(path: str, flag: str) -> None:
    """Check that the file `path` can be written (its folder exists and takes a probe file).

    Raises `UsageError` naming `flag` otherwise.
    """
    if not isinstance(path, str) or not path.strip():
        raise UsageError(f"{flag} must be a file name, got {path!r}")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder; pass a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: folder {folder} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(prefix=".gaussflow-probe-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"{flag} {path} cannot be written ({_why(e)}); pass a writable "
                         "location") from None


def remove_created(created: Iterable[str]) -> None:
    """Remove the folders `prepare_out` created, if still empty (after a failed command)."""
    for d in created:
        try:
            os.rmdir(d)
        except OSError:
            break


def int_list(name: str, text: str) -> list[int]:
    """`"1,2,3"` as `[1, 2, 3]` (a `UsageError` names `--name` otherwise)."""
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated integers, got {text!r}") from None
