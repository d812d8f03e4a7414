"""What a configuration key is and how a value is checked.

:func:`_field` declares a key (default, one-line doc, choices or range); :class:`_Section` is the base
of every section: on construction each value is coerced to its declared type (:func:`_coerce`: a
list becomes a tuple, an int a float where a float is declared, 'auto' None) and range-checked, so a
section built in Python (``VMConfig(epochs=0)``) is validated like one read from TOML. A value of the
wrong type or outside its range is a :class:`ConfigError` naming the key. Float keys must be finite
(``nan`` and ``inf`` are TOML numbers, never a useful setting).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

_AUTO = "auto"  # spelling of "None / derive it" in TOML, which has no null


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and what to do.

    ``key``: the 'section.key' the problem is about (None when it is not one key's), so callers
    can say where that key was set.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _field(
    default,
    doc: str,
    *,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    below: float | None = None,
    positive: bool = False,
    sources: tuple[str, ...] | None = None,
):
    """A config field: ``min`` / ``max`` are inclusive bounds, ``below`` an exclusive upper bound,
    ``positive`` means ``> 0`` (rates, scales); ``sources``: the data sources a loader option applies to."""
    meta = {
        "doc": doc,
        "choices": choices,
        "min": min,
        "max": max,
        "below": below,
        "positive": positive,
        "sources": sources,
    }
    if isinstance(default, (list, tuple)):
        return dataclasses.field(
            default_factory=lambda d=default: tuple(tuple(v) if isinstance(v, list) else v for v in d), metadata=meta
        )
    return dataclasses.field(default=default, metadata=meta)


def _table(cls, doc: str):
    """A sub-table field (``[data.options]``): a section nested in a section."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


class _Section:
    """What every section shares: each field coerced and range-checked on construction (a list
    becomes a tuple, an int a float where a float is declared), then the section's own ``_check``.

    ``_name`` is the section's key prefix (``"vm"``, ``"data.options"``) used in the messages.
    """

    _name = ""

    def __post_init__(self):
        for f, tp in _typed_fields(type(self)):
            key = f"{self._name}.{f.name}"
            value = getattr(self, f.name)
            if _is_section(tp):
                if isinstance(value, Mapping):
                    value = tp(**value)
                elif not isinstance(value, tp):
                    raise ConfigError(f"{key} must be a {tp.__name__} (a table), got {value!r}.", key)
            else:
                try:
                    value = _coerce(value, tp, f.metadata, key)
                except ConfigError as err:
                    raise ConfigError(str(err), key) from None
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Checks across the fields of one section (none by default)."""


@functools.cache
def _typed_fields(cls) -> tuple:
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls))


def _is_section(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, _Section)


def _plain(v):
    """A config value as TOML holds it: None as 'auto', tuples as lists, sections as tables."""
    if v is None:
        return _AUTO
    if isinstance(v, _Section):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _closest(name: str, options, prefix: str = "") -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    if match:
        return f"; did you mean {prefix + match[0]!r}?"
    return f"; valid: {', '.join(prefix + o for o in options)}."


def _coerce(value: Any, tp, meta: dict, key: str) -> Any:
    """``value`` as type ``tp`` (lists as tuples, ints as floats), or ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None, int | dict[str, int] | None
        if value is None or (isinstance(value, str) and value == _AUTO):
            return None
        options = [a for a in args if a is not type(None)]
        tables = [a for a in options if typing.get_origin(a) is dict]
        chosen = tables[0] if tables and isinstance(value, Mapping) else next(a for a in options if a not in tables)
        return _coerce(value, chosen, meta, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}.")
        return {str(k): _coerce(v, args[1], meta, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}.")
        return tuple(_coerce(v, args[0], meta, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}.")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}.")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}.")
    choices = meta.get("choices")
    if choices and value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        raise ConfigError(
            f"{key}={value!r} is not valid; {f'did you mean {hint[0]!r}? ' if hint else ''}"
            f"choose one of {', '.join(choices)}."
        )
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key} must be >= {meta['min']}, got {value!r}.")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{key} must be <= {meta['max']}, got {value!r}.")
    if meta.get("below") is not None and value >= meta["below"]:
        raise ConfigError(f"{key} must be < {meta['below']}, got {value!r}.")
    if meta.get("positive") and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}.")
    return value
