"""Linear programs: implicit vs explicit GNN, test error and Lipschitz constant against iterations.

    python -m experiments.domain_lp [--preset tiny|default] [--set KEY=VALUE ...] [--seed S] [--out DIR]

The same as ``python -m implicit_rec.domains lp ...`` (:mod:`implicit_rec.domains.cli`); the study is
``implicit_rec.domains.lp.STUDY``.
"""

from __future__ import annotations

import sys

from implicit_rec.domains.cli import main as domain_main


def main(argv: list[str] | None = None) -> int:
    return domain_main(["lp", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
