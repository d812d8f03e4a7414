"""``python -m implicit_rec`` = the ``implicit-rec`` command."""

import sys

from .cli import main

sys.exit(main())
