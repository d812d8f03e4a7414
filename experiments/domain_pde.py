"""Steady nonlinear PDE: implicit FNO vs explicit FNOs against test-time iterations.

    python -m experiments.domain_pde [--preset tiny|default] [--set KEY=VALUE ...] [--seed S] [--out DIR]

The same as ``python -m implicit_rec.domains pde ...`` (:mod:`implicit_rec.domains.cli`); the study is
``implicit_rec.domains.pde_study.STUDY``.
"""

from __future__ import annotations

import sys

from implicit_rec.domains.cli import main as domain_main


def main(argv: list[str] | None = None) -> int:
    return domain_main(["pde", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
