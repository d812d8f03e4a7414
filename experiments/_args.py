"""Argument types shared by the experiment scripts.

Each is an argparse ``type=``: a bad value makes argparse print the usage and one
``error: argument --FLAG: ...`` line and exit with status 2, as ``implicit-rec`` does for its flags,
before any work starts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from implicit_rec.argtypes import directory

__all__ = ["directory", "integer", "integers", "names", "positive_float"]


def integer(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}.") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}.")
        return value

    return parse


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}.")
    return value


def integers(minimum: int) -> Callable[[str], list[int]]:
    """A comma list of integers >= ``minimum``, e.g. ``5,6,8``."""
    one = integer(minimum)

    def parse(text: str) -> list[int]:
        items = [t.strip() for t in text.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"expected a comma list of integers >= {minimum}, got {text!r}.")
        return [one(t) for t in items]

    return parse


def names(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A non-empty comma list of names from ``choices``, e.g. ``mlp,din``."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",")]
        bad = [t for t in items if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{', '.join(map(repr, bad))} not known; choose from {', '.join(choices)} (comma-separated)."
            )
        return items

    return parse
