"""The configuration (moved to a package; split into modules in the next commit)."""

from .sections import *  # noqa: F403
from .sections import _AUTO as _AUTO
