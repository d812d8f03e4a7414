"""``python -m implicit_rec.domains NAME ...``: see :mod:`implicit_rec.domains.cli`."""

from .cli import main

raise SystemExit(main())
