"""Validated solver options. Every check runs in Python at call time, before tracing."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

METHODS = ("anderson", "picard")
STOPS = ("rel", "abs")
GRADS = ("ift", "phantom", "unroll")


class IterationConfig(NamedTuple):
    """Static settings of one iteration loop (forward solve, adjoint solve or sweep)."""

    method: str
    max_iter: int
    tol: float
    stop: str
    damping: float
    memory: int
    ridge: float


def reject_unknown_kwargs(func: str, kwargs: dict, valid: tuple[str, ...]) -> None:
    """Raise TypeError naming every keyword not in ``valid`` and the closest valid one."""
    unknown = [key for key in kwargs if key not in valid]
    if not unknown:
        return
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        parts.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise TypeError(
        f"{func}() got unknown keyword argument(s) {', '.join(parts)}; valid options are: {', '.join(valid)}."
    )


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(repr(a) for a in allowed)}.")
    return value


def _static_number(name: str, value: Any) -> float:
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} must be a Python number (it sets up the loop statically), not a traced array.")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, np.generic)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_float(name: str, value: Any, *, low: float, low_inclusive: bool, high: float | None = None) -> float:
    value = _static_number(name, value)
    too_low = value < low if low_inclusive else value <= low
    if too_low or (high is not None and value > high):
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return value


def make_config(
    *,
    method,
    max_iter,
    tol,
    stop,
    damping,
    memory,
    ridge,
    max_iter_name="max_iter",
    tol_name="tol",
    allow_zero_tol=False,
) -> IterationConfig:
    return IterationConfig(
        method=check_choice("method", method, METHODS),
        max_iter=check_int(max_iter_name, max_iter, 0 if max_iter_name == "steps" else 1),
        tol=check_float(tol_name, tol, low=0.0, low_inclusive=allow_zero_tol),
        stop=check_choice("stop", stop, STOPS),
        damping=check_float("damping", damping, low=0.0, low_inclusive=False, high=1.0),
        memory=check_int("memory", memory, 1),
        ridge=check_float("ridge", ridge, low=0.0, low_inclusive=True),
    )


def check_batch_axis(batch_axis: Any) -> int | None:
    if batch_axis is None:
        return None
    if isinstance(batch_axis, bool) or not isinstance(batch_axis, (numbers.Integral, np.integer)):
        raise TypeError(f"batch_axis must be an int or None, got {batch_axis!r}.")
    return int(batch_axis)


def check_output_like_input(f: Callable, z0, args: tuple, what: str = "f") -> None:
    """Check that f(z0, *args) has z0's structure, shapes and dtypes, naming the first bad leaf."""
    if not callable(f):
        raise TypeError(f"{what} must be callable as {what}(z, *args), got {type(f).__name__}.")
    out = jax.eval_shape(f, z0, *args)
    in_paths, in_def = jax.tree_util.tree_flatten_with_path(z0)
    out_paths, out_def = jax.tree_util.tree_flatten_with_path(out)
    if in_def != out_def:
        raise TypeError(
            f"{what}(z, *args) must return a pytree with the structure of z0: "
            f"z0 is {in_def}, but {what} returned {out_def}."
        )
    for (path, zin), (_, zout) in zip(in_paths, out_paths):
        name = "z0" + jax.tree_util.keystr(path)
        if tuple(zin.shape) != tuple(zout.shape):
            raise ValueError(
                f"{what}(z, *args) changes the shape of leaf {name}: "
                f"z0 has {tuple(zin.shape)}, {what} returned {tuple(zout.shape)}."
            )
        if np.dtype(zin.dtype) != np.dtype(zout.dtype):
            raise TypeError(
                f"{what}(z, *args) changes the dtype of leaf {name}: z0 is {zin.dtype}, "
                f"{what} returned {zout.dtype}; cast the output (or z0) so they match."
            )
