"""Steady nonlinear PDE domain: implicit FNO vs explicit FNOs against test-time iterations.

    python -m experiments.domain_pde [--preset tiny|default] [--out DIR] [--seed N] [--quiet]

Solves -div(a grad u) + u + u^3 = f (periodic grid) for random (a, f) with the reference
solver in ``implicit_rec.domains.pde`` (cached as .npz under DIR/../cache), trains the
models and writes DIR/metrics.json, DIR/report.md, DIR/error_vs_iterations.png,
DIR/lipschitz_vs_iterations.png and DIR/example.png (atomically). The study lives in
``implicit_rec.domains.pde_study``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from implicit_rec.domains import pde_study

from ._args import integer, output_directory


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help=f"one of {', '.join(sorted(pde_study.PRESETS))}")
    parser.add_argument("--out", default="runs/domain-pde", type=output_directory)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.preset not in pde_study.PRESETS:
        parser.error(f"--preset {args.preset!r} is not known; choose one of {', '.join(sorted(pde_study.PRESETS))}.")
    out = Path(args.out)
    log = (lambda _: None) if args.quiet else (lambda msg: print(msg, flush=True))
    result = pde_study.run_study(args.preset, args.seed, cache_dir=out.parent / "cache", log=log)
    pde_study.write_outputs(result, out)
    if not args.quiet:
        print(pde_study.report(result))
        print(f"wrote {out}/metrics.json, report.md, " + ", ".join(pde_study.PLOTS))
    return out


if __name__ == "__main__":
    main()
