"""Field checks of the domain studies' frozen config dataclasses, built on ``solvers._options``.

A config class lists one checker per field and calls :func:`check_fields` from ``__post_init__``::

    CHECKS = {"n_train": integer(1), "lr": number(0.0), "z0": choice("zero", "blurred"), ...}

A checker is ``checker(name, value) -> value`` (the value normalized: ``int``, ``float``, ``tuple``) and
raises ``TypeError`` / ``ValueError`` naming the field, the value and what is expected. A field
without a checker is a programming error (every new field must say what it accepts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from solvers._options import check_choice, check_float, check_int, reject_unknown_kwargs

from .sweep import check_ks

Checker = Callable[[str, Any], Any]

__all__ = [
    "boolean",
    "check_fields",
    "choice",
    "instance",
    "integer",
    "integers",
    "iteration_counts",
    "number",
    "optional",
    "reject_unknown_kwargs",
    "check_choice",
    "check_float",
    "check_int",
]


def integer(minimum: int) -> Checker:
    """An integer >= ``minimum`` (bools and floats such as 1.5 are refused, not truncated)."""
    return lambda name, value: check_int(name, value, minimum)


def number(low: float, *, inclusive: bool = False, high: float | None = None, high_inclusive: bool = True) -> Checker:
    """A finite real number > ``low`` (>= with ``inclusive``) and <= ``high`` (< unless ``high_inclusive``)."""

    def check(name: str, value: Any) -> float:
        value = check_float(name, value, low=low, low_inclusive=inclusive, high=high)
        if high is not None and not high_inclusive and value >= high:
            raise ValueError(f"{name} must be {'>=' if inclusive else '>'} {low} and < {high}, got {value}.")
        return value

    return check


def choice(*allowed: str) -> Checker:
    """One of the strings ``allowed``."""
    return lambda name, value: check_choice(name, value, allowed)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


def optional(checker: Checker) -> Checker:
    """None, or a value ``checker`` accepts."""
    return lambda name, value: None if value is None else checker(name, value)


def instance(cls: type) -> Checker:
    def check(name: str, value: Any):
        if not isinstance(value, cls):
            raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}.")
        return value

    return check


def integers(minimum: int) -> Checker:
    """A non-empty tuple (or list) of distinct integers >= ``minimum``, e.g. dims=(4, 8)."""

    def check(name: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not value:
            raise TypeError(f"{name} must be a non-empty tuple of integers >= {minimum}, got {value!r}.")
        out = tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))
        repeated = sorted({v for v in out if out.count(v) > 1})
        if repeated:
            raise ValueError(f"{name} lists {', '.join(map(str, repeated))} more than once, got {value!r}.")
        return out

    return check


def iteration_counts(name: str, value: Any) -> tuple[int, ...]:
    """Test-time iteration counts: :func:`~implicit_rec.domains.sweep.check_ks`."""
    return check_ks(value, name)


def check_fields(config: Any, checks: Mapping[str, Checker]) -> None:
    """Run ``checks[field]`` on every field of the frozen dataclass ``config`` and store the normalized
    value; errors name the field as ``ClassName.field``."""
    cls = type(config).__name__
    for field in dataclasses.fields(config):
        if field.name not in checks:
            raise NotImplementedError(f"{cls}.{field.name} has no checker; add one to its CHECKS.")
        value = checks[field.name](f"{cls}.{field.name}", getattr(config, field.name))
        object.__setattr__(config, field.name, value)
