"""One command line for every domain study.

    python -m implicit_rec.domains NAME [--preset P] [--set KEY=VALUE ...] [--seed S] [--out DIR]
        [--cache-dir DIR] [--quiet] [--no-compile-cache]

NAME is one of :data:`STUDIES` (lp, deblur, pde). ``--set`` overrides a field of the study's config
(repeatable; ``spec.m=20`` sets a field of a nested config; tuples as ``iterations=0,1,2,4``,
booleans as true / false, ``none`` for None). Writes DIR/metrics.json, DIR/report.md and the
study's plots (DIR replaced atomically; default runs/domain-NAME); generated data are cached in
``--cache-dir`` (default DIR/../cache). JAX's persistent compilation cache is on, as for
``implicit-rec`` (off with ``--no-compile-cache`` or ``IMPLICIT_REC_JAX_CACHE=off``).
:func:`add_parser` registers the same command on another CLI (``implicit-rec domain NAME ...``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

from ..argtypes import directory, output_directory
from .study import Result, Study

STUDIES = {
    "lp": "implicit_rec.domains.lp",
    "deblur": "implicit_rec.domains.deblur",
    "pde": "implicit_rec.domains.pde_study",
}
HELP = "run a domain study of the Implicit Models paper (LP, deblurring, PDE) and its iteration sweep"


def load(name: str) -> Study:
    """The ``STUDY`` of domain ``name``."""
    if name not in STUDIES:
        raise ValueError(f"domain {name!r} is not known; choose one of {', '.join(STUDIES)}.")
    return importlib.import_module(STUDIES[name]).STUDY


def parse_value(text: str, current: Any) -> Any:
    """A ``--set`` value: a Python literal (numbers, tuples), true / false, none, else the text itself.

    A single number for a tuple-valued setting (``dims=4``) becomes a one-element tuple.
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(current, tuple) and not isinstance(value, tuple):
        value = (value,)
    return value


def _current(config: Any, key: str) -> Any:
    for part in key.split("."):
        if not dataclasses.is_dataclass(config):
            return None
        config = getattr(config, part, None)
    return config


def overrides(study: Study, preset: str, pairs: list[str]) -> dict:
    """{key: value} from ``KEY=VALUE`` texts, typed after the preset's values."""
    base = study.presets.get(preset)
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set epochs=2.")
        key = key.strip()
        out[key] = parse_value(text, _current(base, key))
    return out


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}.")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("name", choices=list(STUDIES), help="the domain study")
    parser.add_argument("--preset", default="default", help="named config (tiny, default, ...); default %(default)s")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )
    parser.add_argument("--seed", type=_seed, help="the config's seed (same as --set seed=S)")
    parser.add_argument("--out", type=output_directory, help="output directory (default runs/domain-NAME)")
    parser.add_argument(
        "--cache-dir", type=directory, help="where generated data sets are cached (default OUT/../cache)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress log, no report on the terminal")
    parser.set_defaults(func=run, parser=parser)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``domain`` on an argparse subparsers object; sets ``func=run``."""
    return add_arguments(subparsers.add_parser("domain", help=HELP, description=HELP))


def configure(args: argparse.Namespace) -> tuple[Study, Any]:
    """(study, config) of parsed arguments; a bad preset or setting exits with one usage error."""
    study = load(args.name)
    if args.preset not in study.presets:
        args.parser.error(
            f"--preset {args.preset!r} is not known for {study.name}; choose one of {', '.join(study.presets)}."
        )
    try:
        values = overrides(study, args.preset, args.overrides)
        if args.seed is not None:
            values["seed"] = args.seed
        return study, study.configure(args.preset, **values)
    except (TypeError, ValueError) as err:
        args.parser.error(str(err))


def run(args: argparse.Namespace) -> int:
    """Configure, compute and write one study; prints the report unless ``--quiet``."""
    study, config = configure(args)
    out = Path(args.out or f"runs/domain-{study.name}")
    cache = Path(args.cache_dir) if args.cache_dir else out.parent / "cache"
    log = (lambda _: None) if args.quiet else (lambda s: print(s, flush=True))
    result: Result = study.run(config, out, cache_dir=cache, log=log)
    if not args.quiet:
        print(study.report(result))
        print(f"wrote {out}/metrics.json, report.md, {', '.join(result.metrics['plots'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m implicit_rec.domains`` (and ``experiments/domain_*.py``): turns JAX's persistent
    compilation cache on first, as ``implicit-rec`` does (``--no-compile-cache``, or
    ``IMPLICIT_REC_JAX_CACHE=off``, turns it off), and tunes glibc's malloc (``implicit_rec.allocator``)."""
    parser = argparse.ArgumentParser(prog="python -m implicit_rec.domains", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile every program afresh (no persistent JAX compilation cache; as IMPLICIT_REC_JAX_CACHE=off)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.command = "domain"
    from ..cli import compile_cache, tune_allocator

    tune_allocator()
    compile_cache(args)
    return args.func(args)
