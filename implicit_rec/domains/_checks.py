"""Field checks of the domain studies' frozen config dataclasses, built on ``solvers._options``.

A config class lists one checker per field and calls :func:`check_fields` from ``__post_init__``::

    CHECKS = {"n_train": integer(1), "lr": number(0.0), "z0": choice("zero", "blurred"), ...}

A checker is ``checker(name, value) -> value`` (the value normalized: ``int``, ``float``, ``tuple``) and
raises ``TypeError`` / ``ValueError`` naming the field, the value and what is expected. A field
without a checker is a programming error (every new field must say what it accepts).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

from solvers._options import check_choice, check_float, check_int, reject_unknown_kwargs

from ..sweep_core import check_iterations

Checker = Callable[[str, Any], Any]

__all__ = [
    "boolean",
    "check_fields",
    "check_overrides",
    "RENAMED",
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
    """Test-time iteration counts: :func:`~implicit_rec.sweep_core.check_iterations`."""
    return check_iterations(value, name)


# Old setting names of the domain configs -> the glossary's names (an old name is an error that says so).
RENAMED = {
    "ks": "iterations",
    "lr": "learning_rate",
    "batch": "batch_size",
    "train_iters": "train_max_iter",
    "eval_iters": "eval_max_iter",
    "lip_samples": "lipschitz_examples",
    "lipschitz_samples": "lipschitz_examples",
    "lip_perturbations": "lipschitz_perturbations",
    "lip_eps": "lipschitz_scale",
    "lip_scale": "lipschitz_scale",
    "lipschitz_eps": "lipschitz_scale",
}


def check_overrides(where: str, cls: type, overrides: Mapping[str, Any]) -> None:
    """TypeError naming every key of ``overrides`` that is not a field of the dataclass ``cls``, with the
    glossary's new name for a renamed key (:data:`RENAMED`) or the closest field otherwise."""
    valid = tuple(f.name for f in dataclasses.fields(cls))
    renamed = [key for key in overrides if key not in valid and RENAMED.get(key) in valid]
    if renamed:
        raise TypeError(
            f"{where}: "
            + ", ".join(f"'{key}' was renamed: did you mean '{RENAMED[key]}'?" for key in renamed)
            + f" Valid options are: {', '.join(valid)}."
        )
    unknown = [key for key in overrides if key not in valid]
    if unknown:
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=1)
            parts.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise TypeError(f"{where}: unknown setting(s) {', '.join(parts)}; valid settings are: {', '.join(valid)}.")


def check_fields(config: Any, checks: Mapping[str, Checker]) -> None:
    """Run ``checks[field]`` on every field of the frozen dataclass ``config`` and store the normalized
    value; errors name the field as ``ClassName.field``."""
    cls = type(config).__name__
    for field in dataclasses.fields(config):
        if field.name not in checks:
            raise NotImplementedError(f"{cls}.{field.name} has no checker; add one to its CHECKS.")
        value = checks[field.name](f"{cls}.{field.name}", getattr(config, field.name))
        object.__setattr__(config, field.name, value)
