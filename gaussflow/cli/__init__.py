"""The `gaussflow` command line.

Errors in the input (`ValueError`/`TypeError` raised by gaussflow's checks, bad files, an
output folder that cannot be written) print one line `gaussflow: error: ...` to stderr and exit
with code 2, before any work; `--debug` shows the traceback. The optional compilation cache never
stops a command: a cache that cannot be used prints one line `gaussflow: warning: ...`.

One module per subcommand (`run`, `derive`, `solve`, `validate`, `reproduce`, `bench`),
each with `add(subparsers)` and `cmd(args)`; input files are read in `gaussflow.cli.io`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
import warnings

from collections.abc import Sequence

from . import bench, derive, reproduce, run, solve, validate
from ._common import UsageError, prepare_out, remove_created
from .derive import write_derivations
from .io import SOLVE_KEYS, problem_from_arrays, read_arrays

__all__ = ["COMMANDS", "SOLVE_KEYS", "UsageError", "build_parser", "enable_compilation_cache",
           "main", "problem_from_arrays", "read_arrays", "write_derivations"]

COMMANDS = [run.add, derive.add, solve.add, validate.add, reproduce.add, bench.add]


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Switch on JAX's persistent compilation cache at `path`.

    The entries are verified against gaussflow's manifest first (see `gaussflow.cache`).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The cache folder (default `$GAUSSFLOW_CACHE_DIR` or `~/.cache/gaussflow/jax`);
        `""` or `"off"` leaves the cache off.

    Returns
    -------
    str or None
        The folder, or `None` when the cache stays off (a folder that cannot be used only warns,
        with a `gaussflow.cache.CacheWarning`).
    """
    from ..cache import enable

    return enable(path)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`gaussflow CMD: error: ...`), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `gaussflow` command: the global options and one subcommand per module."""
    parser = _Parser(
        prog="gaussflow",
        description=textwrap.dedent("""\
            Mean-field dynamics of deep Transformers on Gaussian token distributions:
            derive closures symbolically, integrate them, validate against particles."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="JAX persistent compilation cache (default $GAUSSFLOW_CACHE_DIR or "
                        "~/.cache/gaussflow/jax; 'off' disables it)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _enable_cache(path) -> None:
    """The compilation cache, its warnings printed as one line each (never an error)."""
    from ..cache import CacheWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CacheWarning)
        enable_compilation_cache(path)
    for w in caught:
        if issubclass(w.category, CacheWarning):
            print(f"gaussflow: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `gaussflow` command line.

    Parameters
    ----------
    argv : Sequence of str, optional
        The arguments (default `sys.argv[1:]`).

    Returns
    -------
    int
        The exit code: the subcommand's (0 on success), 2 for an error in the input (one line
        `gaussflow: error: ...` on stderr; `--debug` raises instead) or when no subcommand is
        given (the help is printed).
    """
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures to files; no display needed
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["gaussflow", *(sys.argv[1:] if argv is None else argv)])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    created, done = [], False
    try:
        if getattr(args, "out", None) is not None:
            created = prepare_out(args.out, "--out")  # before any work
        _enable_cache(args.cache_dir)
        code = int(args.func(args) or 0)
        done = True
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # the reader stopped early (`gaussflow derive ... | head`): not an error
        done = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, KeyError) as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"gaussflow: error: {msg}", file=sys.stderr)
        return 2
    finally:
        if not done:
            remove_created(created)
