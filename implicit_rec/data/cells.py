"""Scalar cells of a raw column (ids, strings, numbers, labels, timestamps) parsed into NumPy arrays.

Every parser takes the (n,) raw cells of one column and a :class:`~.errors.Where` that locates
them, and raises a :class:`~.errors.DataError` naming the file, line and column of the first bad
cell. An empty *categorical* cell is a value of its own (raw value ``MISSING``, or ``MISSING_STR``
for string ids) that gets a vocabulary entry like any other id when it is frequent enough in
training (the FuxiCTR behaviour for ``na_value=""``). Empty labels, numbers, user ids and
timestamps are errors.
"""

from __future__ import annotations

import warnings

import numpy as np

from .errors import Where

MISSING = np.iinfo(np.int64).min  # raw value of an empty integer categorical cell
MISSING_STR = ""  # raw value of an empty string categorical cell
MAX_CELL = 1024  # longest scalar cell in characters (guards fixed-width string arrays)


def _as_text(values) -> np.ndarray:
    """(n,) str array of raw cells; None (a parquet null) becomes ''."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "U":
            return values
        if values.dtype == object:
            values = ["" if v is None else v for v in values]
        else:
            return values.astype(str)
    return np.array(values, dtype=str) if len(values) else np.zeros(0, "U1")


def _check_width(text: np.ndarray, where: Where, column: str) -> None:
    if len(text) and text.dtype.itemsize // 4 > MAX_CELL:
        row = int(np.argmax(np.char.str_len(text) > MAX_CELL))
        raise where.error(
            row,
            column,
            f"cell of {len(text[row])} characters is too long for an id or "
            "a number; is the delimiter or the column order wrong?",
        )


def _first_bad(text: np.ndarray, ok) -> int:
    for i, s in enumerate(text):
        if not ok(s):
            return i
    raise AssertionError("no bad cell found")  # pragma: no cover


def _is_int(s: str) -> bool:
    """An integer id that fits int64 (and is not the ``MISSING`` sentinel)."""
    try:
        return MISSING < int(s) <= np.iinfo(np.int64).max
    except (ValueError, OverflowError):
        return False


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def parse_ints(values, where: Where, column: str, *, allow_missing: bool = True) -> np.ndarray:
    """(n,) int64 raw ids from integer cells; empty cells become ``MISSING`` (or an error).

    Accepts str cells (CSV) or an integer / float / object array (parquet; floats must be whole).
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
        return values.astype(np.int64)
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return _whole_floats(values, where, column, allow_missing)
    text = _as_text(values)
    _check_width(text, where, column)
    missing = text == ""
    if missing.any() and not allow_missing:
        raise where.error(int(np.argmax(missing)), column, "empty value; every row needs one.")
    out = np.full(len(text), MISSING, np.int64)
    try:
        out[~missing] = text[~missing].astype(np.int64)
        if (out[~missing] == MISSING).any():
            raise OverflowError("the MISSING sentinel")
    except (ValueError, OverflowError):
        bad = _first_bad(text, lambda s: s == "" or _is_int(s))
        raise where.error(bad, column, f"{str(text[bad])!r} is not an integer id (64-bit).") from None
    return out


def _whole_floats(values, where, column, allow_missing):
    nan = np.isnan(values)
    if nan.any() and not allow_missing:
        raise where.error(int(np.argmax(nan)), column, "empty value (null / NaN); every row needs one.")
    whole = nan | (np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**63))
    if not whole.all():
        bad = int(np.argmax(~whole))
        raise where.error(bad, column, f"{values[bad]!r} is not an integer id.")
    return np.where(nan, MISSING, np.nan_to_num(values)).astype(np.int64)


def parse_strings(values, where: Where, column: str, *, allow_missing: bool = True) -> np.ndarray:
    """(n,) str raw ids (any text, taken verbatim); empty cells stay '' or are an error."""
    text = _as_text(values)
    _check_width(text, where, column)
    if not allow_missing and len(text):
        missing = text == ""
        if missing.any():
            raise where.error(int(np.argmax(missing)), column, "empty value; every row needs one.")
    return text


def parse_floats(values, where: Where, column: str, *, minimum: float | None = None) -> np.ndarray:
    """(n,) float64 from numeric cells; empty, non-numeric, NaN and infinite cells are errors."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iufb":
        out = values.astype(np.float64)
    else:
        text = _as_text(values)
        _check_width(text, where, column)
        try:
            out = text.astype(np.float64)
        except ValueError:
            bad = _first_bad(text, _is_float)
            what = "empty value" if text[bad].strip() == "" else f"{str(text[bad])!r} is not a number"
            raise where.error(bad, column, f"{what}; every row needs a number.") from None
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.argmax(bad))
        raise where.error(
            row, column, f"{out[row]} (missing or infinite) is not allowed; fill or drop the row before loading."
        )
    if minimum is not None and (out < minimum).any():
        row = int(np.argmax(out < minimum))
        raise where.error(row, column, f"{out[row]} is below the minimum {minimum}.")
    return out


def parse_labels(values, where: Where, column: str) -> np.ndarray:
    """(n,) float32 labels in {0, 1}; anything else (empty, NaN, 2, 0.5, 'yes') is an error."""
    out = parse_floats(values, where, column)
    bad = (out != 0) & (out != 1)
    if bad.any():
        row = int(np.argmax(bad))
        raise where.error(row, column, f"label {out[row]} is not 0 or 1.")
    return out.astype(np.float32)


TIME_FORMATS = ("int", "float", "datetime")


def _times_as(text: np.ndarray, fmt: str) -> np.ndarray:
    """Parse all cells in one format (ValueError / OverflowError if any cell does not fit)."""
    if fmt == "int":
        return text.astype(np.int64)
    if fmt == "float":
        out = text.astype(np.float64)
        if not np.isfinite(out).all():
            raise ValueError("not finite")
        return out
    if not (np.char.find(text, "-") > 0).all():  # ISO dates start with the year: "2017-05-06"
        raise ValueError("not ISO-8601")
    with warnings.catch_warnings():  # "...Z" suffixes: UTC is what we want
        warnings.simplefilter("ignore")
        out = text.astype("datetime64[s]")
    if np.isnat(out).any():
        raise ValueError("NaT")
    return out.astype(np.int64)


def _fits(s: str, fmt: str) -> bool:
    try:
        _times_as(np.array([s]), fmt)
        return True
    except (ValueError, OverflowError):
        return False


def parse_times(values, where: Where, column: str, fmt: str | None = None) -> tuple[np.ndarray, str]:
    """((n,) int64 or float64 order keys, format) from timestamps.

    ``fmt`` None detects the format: integers, else finite numbers, else ISO-8601 datetimes
    (converted to int64 seconds, UTC). Pass the detected format for later chunks so a file is
    read consistently. Empty, NaN and unparsable cells are errors.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        if np.isnat(values).any():
            raise where.error(int(np.argmax(np.isnat(values))), column, "missing timestamp (null).")
        return values.astype("datetime64[s]").astype(np.int64), "datetime"
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64), "int"
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return parse_floats(values, where, column), "float"
    text = _as_text(values)
    _check_width(text, where, column)
    empty = np.char.str_len(np.char.strip(text)) == 0
    if empty.any():
        raise where.error(int(np.argmax(empty)), column, "empty timestamp; every row needs one.")
    for f in (fmt,) if fmt else TIME_FORMATS:
        try:
            return _times_as(text, f), f
        except (ValueError, OverflowError):
            continue
    expected = fmt or next((f for f in TIME_FORMATS if _fits(text[0], f)), None)
    bad = 0 if expected is None else _first_bad(text, lambda s: _fits(s, expected))
    raise where.error(
        bad,
        column,
        f"timestamp {str(text[bad])!r} is not "
        + (
            f"in the format of the file's first rows ({expected})."
            if expected
            else "an integer, a finite number or an ISO-8601 datetime."
        ),
    )


def order_keys(times: np.ndarray) -> tuple[np.ndarray, str]:
    """(int64 order keys, note): whole numbers as they are, fractional ones by their dense rank."""
    times = np.asarray(times)
    if times.dtype.kind in "iu":
        return times.astype(np.int64), "timestamp"
    if (times == np.round(times)).all() and np.abs(times).max(initial=0) < 2.0**62:
        return times.astype(np.int64), "timestamp"
    return np.unique(times, return_inverse=True)[1].astype(np.int64), "rank of fractional timestamps"
