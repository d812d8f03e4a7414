"""Deblurring: implicit proximal-gradient CNN vs explicit and unrolled CNNs against iterations.

    python -m experiments.domain_deblur [--preset tiny|default] [--set KEY=VALUE ...] [--seed S] [--out DIR]

The same as ``python -m implicit_rec.domains deblur ...`` (:mod:`implicit_rec.domains.cli`); the study is
``implicit_rec.domains.deblur.STUDY``.
"""

from __future__ import annotations

import sys

from implicit_rec.domains.cli import main as domain_main


def main(argv: list[str] | None = None) -> int:
    return domain_main(["deblur", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
