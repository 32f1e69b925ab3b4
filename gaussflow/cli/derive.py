"""`gaussflow derive`: print a variant's derived ODEs, or write every derivation."""

from __future__ import annotations

import argparse
import json
import os

from ._common import UsageError, fmt


def add(sub: argparse._SubParsersAction) -> None:
    """Register the `derive` subcommand on `sub` (the subparsers of the `gaussflow` parser)."""
    p = sub.add_parser("derive", help="print the derived ODEs of a variant",
                       description="Derive a variant's Gaussian closure symbolically and print it "
                       "(plain text, LaTeX or Markdown). --all --out DIR writes one Markdown file "
                       "per variant.",
                       **fmt("gaussflow derive softmax --latex\n  gaussflow derive --all --out derivations/"))
    p.add_argument("variant", nargs="?", help="variant name (softmax, ...) or layernorm")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--latex", action="store_true", help="print LaTeX")
    g.add_argument("--markdown", action="store_true", help="print the Markdown derivation")
    g.add_argument("--source", action="store_true", help="print the generated JAX source")
    p.add_argument("--all", action="store_true", help="every variant (with --out: write files)")
    p.add_argument("--out", help="folder for the Markdown files (with --all)")
    p.add_argument("--json", action="store_true", help="print the derivations as JSON "
                   "(name, exactness, equations as text and LaTeX)")
    p.add_argument("--quiet", action="store_true", help="with --all --out: do not list the files")
    p.set_defaults(func=cmd)


#: Maps between layers with a derivation of their own (not velocity fields).
MAPS = ("layernorm",)


def _derive(name: str):
    """The derivation of a variant or of a map in `MAPS` (realised: with its JAX source)."""
    from ..symbolic import derive

    if name.lower().replace("_", "").replace("-", "") == "layernorm":
        from ..layernorm import derivation
        return derivation(2)
    return derive(name)


def write_derivations(out_dir: str) -> list[str]:
    """Write `out_dir/NAME.md` for every built-in variant and map; returns the paths."""
    from ..variants import VARIANTS

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in sorted([*VARIANTS, *MAPS]):
        path = os.path.join(out_dir, f"{name}.md")
        with open(path, "w") as fh:
            fh.write(_derive(name).markdown())
        paths.append(path)
    return paths


def cmd(args: argparse.Namespace) -> int:
    """Print the derivation of `args.variant` (or of every variant with `--all`) as text, LaTeX,
    Markdown or JAX source; with `--all --out DIR`, write the Markdown files. Exit code 0."""
    from ..variants import VARIANTS

    if args.out and not args.all:
        raise UsageError("--out writes every derivation: use `gaussflow derive --all --out DIR` "
                         "(one variant is printed)")
    if args.all:
        if args.out:
            for p in write_derivations(args.out):
                if not args.quiet:
                    print(p)
            return 0
        names = sorted([*VARIANTS, *MAPS])
    else:
        if not args.variant:
            raise UsageError("derive needs a variant name (one of "
                             f"{', '.join(sorted([*VARIANTS, *MAPS]))}) or --all")
        names = [args.variant]
    if args.json:
        docs = []
        for name in names:
            D = _derive(name)
            docs.append({"name": name, "exact": bool(D.exact), "text": D.text(),
                         "latex": D.latex(), "equations": [list(e) for e in D.equations()]})
        print(json.dumps(docs[0] if len(docs) == 1 and not args.all else docs, indent=2))
        return 0
    for name in names:
        D = _derive(name)
        if args.latex:
            print(D.latex())
        elif args.markdown:
            print(D.markdown())
        elif args.source:
            print(D.jax_source)
        else:
            print(D.text())
    return 0
