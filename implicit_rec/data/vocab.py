"""Vocabularies and the parsing of raw columns into raw ids, with errors that point at the input.

Encoding conventions (shared by every loader):

- index 0 = padding, 1 = out-of-vocabulary (OOV), known ids from 2 **in sorted order of their
  raw value** (deterministic and vectorizable; the order carries no frequency information);
- a vocabulary is fitted on the training split only: an id that never occurs in a training row,
  or occurs fewer than ``min_count`` times there, encodes as OOV = 1;
- counts include the occurrences inside every behaviour sequence that shares the vocabulary
  (e.g. ``cate_id`` counts ``cate_id`` cells plus ``cate_his`` tokens of training rows). Only the
  tokens a row keeps (its last ``max_len``) are counted;
- sequences are ``^``-joined non-negative integers; the empty string is the empty sequence; an
  empty token ("3^^5", a leading or trailing ``^``) or a token that is not a non-negative integer
  ("3^x^5", "-1") is an error. A sequence keeps its **last** ``max_len`` tokens and is pre-padded
  with 0, so the newest token is in the last column;
- an empty *categorical* cell is a value of its own ("missing", raw value ``MISSING``) that gets
  a vocabulary entry like any other id when it is frequent enough in training (the FuxiCTR
  behaviour for ``na_value=""``). Empty labels, numbers, user ids and timestamps are errors.

Bad input raises :class:`DataError` (a ``ValueError``) naming the file, the 1-based line
(the header is line 1; for parquet the 1-based data row) and the column. Nothing is skipped
silently.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .events import OOV, PAD

SEP = "^"
PAD_TOKEN = -1  # raw value of a padded sequence position (tokens are >= 0)
MISSING = np.iinfo(np.int64).min  # raw value of an empty integer categorical cell
MISSING_STR = ""  # raw value of an empty string categorical cell
MAX_DIGITS = 18  # longest integer token (fits int64)
MAX_CELL = 1024  # longest scalar cell in characters (guards fixed-width string arrays)
LUT_LIMIT = 1 << 26  # integer ids below this are encoded by direct lookup (<= 256 MB table)


class DataError(ValueError):
    """Bad input data; ``file``, ``line`` (1-based, header = 1) and ``column`` say where."""

    def __init__(self, file, line: int | None, column: str | None, problem: str, unit: str = "line"):
        self.file, self.line, self.column, self.problem = str(file), line, column, problem
        where = [self.file]
        if line is not None:
            where.append(f"{unit} {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


@dataclasses.dataclass(frozen=True)
class Where:
    """Locates rows of a chunk in their file, for error messages.

    lines: (n,) 1-based line number of each row (CSV) or 1-based data row (parquet, unit="row").
    """

    file: str
    lines: np.ndarray
    unit: str = "line"

    def error(self, row: int, column: str | None, problem: str) -> DataError:
        return DataError(self.file, int(self.lines[row]), column, problem, self.unit)

    @classmethod
    def rows(cls, file, n: int, first: int = 1, unit: str = "row") -> Where:
        return cls(str(file), np.arange(first, first + n), unit)


# -- scalar columns -----------------------------------------------------------------------------


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


# -- sequences ----------------------------------------------------------------------------------


def split_sequences(values: Sequence[str], max_len: int, where: Where, column: str) -> np.ndarray:
    """(n, max_len) int64 raw tokens of ``^``-joined cells, last ``max_len`` kept, pre-padded.

    Padding is ``PAD_TOKEN`` (-1). Vectorized over the whole chunk: the cells are joined into one
    byte buffer; tokens are the runs between separators, read digit position by digit position.
    """
    n = len(values)
    out = np.full((n, max_len), PAD_TOKEN, np.int64)
    if n == 0:
        return out
    values = ["" if v is None else v for v in values]
    joined = SEP.join(values)
    if not joined.isascii():
        row = next(i for i, v in enumerate(values) if not v.isascii())
        raise where.error(
            row,
            column,
            f"sequence {values[row][:80]!r} contains non-ASCII characters; "
            "tokens must be non-negative integers joined by '^'.",
        )
    b = np.frombuffer(joined.encode("ascii"), np.uint8)
    lens = np.fromiter(map(len, values), np.int64, n)
    row_start = np.concatenate([[0], np.cumsum(lens[:-1] + 1)])
    is_sep = b == ord(SEP)
    bad = ~is_sep & ((b < ord("0")) | (b > ord("9")))
    sep_pos = np.flatnonzero(is_sep)
    seg_start = np.concatenate([[0], sep_pos + 1])
    seg_end = np.concatenate([sep_pos, [len(b)]])
    joiner = np.zeros(len(b) + 1, bool)  # the separators that join cells, not tokens
    joiner[row_start[1:] - 1] = True
    seg_row = np.concatenate([[0], np.cumsum(joiner[sep_pos])])
    if bad.any():
        seg = int(np.searchsorted(seg_start, np.argmax(bad), side="right") - 1)
        _token_error(values, where, column, int(seg_row[seg]), joined[seg_start[seg] : seg_end[seg]])
    seg_len = seg_end - seg_start
    keep = lens[seg_row] > 0  # an empty cell is one empty segment: the empty sequence
    if (keep & (seg_len == 0)).any():
        row = int(seg_row[np.argmax(keep & (seg_len == 0))])
        raise where.error(
            row,
            column,
            f"sequence {values[row][:80]!r} has an empty token (a stray "
            f"{SEP!r}); join non-empty ids with a single {SEP!r}.",
        )
    if (seg_len > MAX_DIGITS).any():
        seg = int(np.argmax(seg_len > MAX_DIGITS))
        _token_error(
            values,
            where,
            column,
            int(seg_row[seg]),
            joined[seg_start[seg] : seg_end[seg]],
            f"has more than {MAX_DIGITS} digits",
        )
    start, length = seg_start[keep], seg_len[keep]
    digits = int(length.max(initial=0))
    dtype = np.int32 if digits <= 9 else np.int64  # 9 digits always fit int32
    tokens = np.zeros(len(start), dtype)
    last_byte = len(b) - 1
    for k in range(digits):  # one pass per digit position (<= 18)
        digit = b[np.minimum(start + k, last_byte)].astype(dtype) - ord("0")
        tokens = np.where(length > k, tokens * 10 + digit, tokens)
    tok_row = seg_row[keep]
    count = np.bincount(tok_row, minlength=n)
    last = np.cumsum(count)[tok_row] - 1  # index of the row's last token
    col = max_len - 1 - (last - np.arange(len(tokens)))
    kept = col >= 0
    out.ravel()[tok_row[kept] * max_len + col[kept]] = tokens[kept]
    return out


def _token_error(values, where, column, row, token, why="is not a non-negative integer id"):
    raise where.error(
        row,
        column,
        f"token {token!r} in sequence {values[row][:80]!r} {why}; tokens "
        f"must be non-negative integers joined by {SEP!r}.",
    )


# -- counting and vocabularies ------------------------------------------------------------------


class TokenCounter:
    """Accumulates occurrence counts of raw values (ints or strings) chunk by chunk.

    Small non-negative integers are counted with ``bincount`` (fast); other values with
    ``np.unique``. ``PAD_TOKEN`` entries of sequences are never counted.
    """

    DENSE = 1 << 24

    def __init__(self):
        self._dense = np.zeros(0, np.int64)
        self._sparse: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, values: np.ndarray) -> None:
        """Count every entry of ``values`` (any shape)."""
        values = np.asarray(values).ravel()
        if values.dtype.kind in "iu":
            dense = (values >= 0) & (values < self.DENSE)
            counts = np.bincount(values[dense], minlength=len(self._dense))
            counts[: len(self._dense)] += self._dense
            self._dense = counts
            values = values[~dense]
        if len(values):
            self._sparse.append(np.unique(values, return_counts=True))

    def add_sequences(self, raw: np.ndarray) -> None:
        """Count the tokens of an (n, max_len) raw sequence block, ignoring padding."""
        raw = np.asarray(raw)
        self.add(raw[raw != PAD_TOKEN])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys sorted ascending, counts): every value added, with its number of occurrences."""
        keys, counts = [], []
        if self._dense.any():
            k = np.flatnonzero(self._dense)
            keys.append(k.astype(np.int64))
            counts.append(self._dense[k])
        if self._sparse:
            k = np.concatenate([s[0] for s in self._sparse])
            c = np.concatenate([s[1] for s in self._sparse])
            uniq, inverse = np.unique(k, return_inverse=True)
            keys.append(uniq)
            counts.append(np.bincount(inverse, weights=c, minlength=len(uniq)).astype(np.int64))
        if not keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len({k.dtype.kind in "iu" for k in keys}) > 1:
            raise TypeError("a vocabulary cannot mix integer and string ids.")
        keys, counts = np.concatenate(keys), np.concatenate(counts)
        order = np.argsort(keys, kind="stable")
        return keys[order], counts[order]


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A fitted vocabulary: ``keys[i]`` (raw id) encodes as ``i + 2``.

    keys: (K,) sorted raw ids that occurred >= ``min_count`` times in training;
    counts: (K,) their training counts. ``size`` = K + 2 (padding and OOV included).
    """

    keys: np.ndarray
    counts: np.ndarray
    min_count: int = 1

    @property
    def size(self) -> int:
        return len(self.keys) + 2

    @functools.cached_property
    def _table(self) -> np.ndarray | None:
        """Direct lookup table raw id -> index for the non-negative integer keys below LUT_LIMIT."""
        if self.keys.dtype.kind not in "iu":
            return None
        pos = np.flatnonzero((self.keys >= 0) & (self.keys < LUT_LIMIT))
        if len(pos) == 0:
            return None
        table = np.full(int(self.keys[pos[-1]]) + 1, OOV, np.int32)
        table[self.keys[pos]] = pos + 2
        return table

    def __len__(self) -> int:
        return self.size

    def encode(self, values: np.ndarray) -> np.ndarray:
        """int32 indices of raw ids (any shape): known ids >= 2, others OOV = 1."""
        values = np.asarray(values)
        if len(self.keys) == 0:
            return np.full(values.shape, OOV, np.int32)
        if (values.dtype.kind in "iu") != (self.keys.dtype.kind in "iu"):
            raise TypeError(f"cannot encode {values.dtype} ids with a {self.keys.dtype} vocabulary.")
        table = self._table
        if table is None:
            return self._search(values)
        direct = (values >= 0) & (values < len(table))
        out = table[np.where(direct, values, 0)]
        if not direct.all():  # negative or huge ids (e.g. MISSING): binary search
            out[~direct] = self._search(values[~direct])
        return out

    def _search(self, values: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.keys, values), len(self.keys) - 1)
        return np.where(self.keys[pos] == values, pos + 2, OOV).astype(np.int32)

    def encode_sequences(self, raw: np.ndarray) -> np.ndarray:
        """(n, max_len) int32 from raw tokens: padding -> 0, known -> >= 2, unknown -> OOV."""
        raw = np.asarray(raw)
        return np.where(raw == PAD_TOKEN, PAD, self.encode(raw)).astype(np.int32)


def fit_vocab(counter: TokenCounter, min_count: int = 1) -> Vocab:
    """The vocabulary of the ids counted at least ``min_count`` times (keys sorted by raw id)."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}.")
    keys, counts = counter.result()
    keep = counts >= min_count
    return Vocab(keys[keep], counts[keep], int(min_count))


def fit_vocab_from(*arrays: np.ndarray, min_count: int = 1) -> Vocab:
    """Convenience: fit on in-memory raw arrays (scalar columns or padded raw sequences)."""
    counter = TokenCounter()
    for a in arrays:
        a = np.asarray(a)
        counter.add_sequences(a) if a.ndim == 2 else counter.add(a)
    return fit_vocab(counter, min_count)


def encode_sequences(
    values: Sequence[str], vocab: Vocab, max_len: int, where: Where | None = None, column: str = "sequence"
) -> np.ndarray:
    """(n, max_len) int32: ``^``-joined cells split, truncated to the last ``max_len``, encoded."""
    where = where or Where.rows("<memory>", len(values))
    return vocab.encode_sequences(split_sequences(values, max_len, where, column))


# -- CSV reading --------------------------------------------------------------------------------


@dataclasses.dataclass
class Chunk:
    """Up to ``chunk_rows`` consecutive data rows: column name -> tuple of str cells."""

    cells: dict[str, tuple]
    where: Where

    def __len__(self) -> int:
        return len(self.where.lines)


def read_header(path: Path, expected: Sequence[str] = ()) -> list[str]:
    """The column names of a CSV file (line 1); errors for a missing or empty file.

    ``expected`` (the columns a loader needs) only makes the empty-file message more helpful.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, None, "is a directory; expected a CSV file.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            header = next(csv.reader(f), None)
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as e:
            raise DataError(path, 1, None, f"unreadable CSV header ({e}).") from None
    if not header or header == [""] * len(header):
        raise DataError(
            path,
            1,
            expected[0] if expected else None,
            "the file is empty; expected a header line naming the columns"
            + (f" {', '.join(expected)}." if expected else "."),
        )
    return [h.strip() for h in header]


def check_columns(path, header: Sequence[str], required: Sequence[str]) -> None:
    """Error naming the first required column the header lacks (or a duplicated name)."""
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(path, 1, name, "the header names this column twice.")
        seen.add(name)
    missing = [c for c in required if c not in seen]
    if missing:
        raise DataError(path, 1, missing[0], f"the header lacks required column(s) {missing}; it has {list(header)}.")


def read_csv_chunks(path, columns: Sequence[str], chunk_rows: int = 100_000) -> Iterator[Chunk]:
    """Stream a CSV with a header as chunks of the named columns (other columns are ignored).

    Every row must have as many fields as the header; a blank line is an error (never skipped).
    A file with a header but no data rows is an error.
    """
    path = Path(path)
    header = read_header(path, columns)
    check_columns(path, header, columns)
    index = [header.index(c) for c in columns]
    width = len(header)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            next(reader)
            rows, lines, total = [], [], 0
            for row in reader:
                if len(row) != width:
                    _width_error(path, reader.line_num, row, header)
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) == chunk_rows:
                    total += len(rows)
                    yield _chunk(path, rows, lines, columns, index)
                    rows, lines = [], []
        except UnicodeDecodeError:
            raise not_utf8(path, header) from None
        except csv.Error as e:
            raise DataError(path, reader.line_num, None, f"unreadable CSV ({e}).") from None
        if rows:
            total += len(rows)
            yield _chunk(path, rows, lines, columns, index)
    if total == 0:
        raise DataError(path, 2, columns[0] if columns else None, "the file has a header but no data rows.")


def not_utf8(path, header: Sequence[str] | None = None) -> DataError:
    """DataError at the first byte of ``path`` that is not UTF-8: line, CSV column and byte offset.

    The text decoder reads ahead, so the line a ``UnicodeDecodeError`` surfaces at is not the bad
    one; this rescans the file line by line in binary (only on this error path).
    """
    offset = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
                if header is None:  # line 1 decodes: it names the columns
                    header = [h.strip() for h in next(csv.reader([text.lstrip("\ufeff")]), [])]
            except UnicodeDecodeError as err:
                prefix = raw[: err.start].decode("utf-8").lstrip("\ufeff")
                field = len(next(csv.reader([prefix]), [""])) - 1 if prefix else 0
                column = header[field] if header is not None and field < len(header) else None
                hint = " (the file looks UTF-16)" if line_no == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
                return DataError(
                    path,
                    line_no,
                    column,
                    f"byte 0x{raw[err.start]:02x} at character "
                    f"{len(prefix) + 1} of the line (file offset {offset + err.start}) is not "
                    f"valid UTF-8{hint}; the file must be UTF-8 encoded: convert it, e.g. "
                    "`iconv -f latin1 -t utf-8`.",
                )
            offset += len(raw)
    return DataError(path, None, None, "is not valid UTF-8; the file must be UTF-8 encoded.")


def _width_error(path, line, row, header):
    if not row:
        raise DataError(path, line, header[0], "blank line; remove it (every line must be a data row).")
    column = header[len(row)] if len(row) < len(header) else "(extra field)"
    raise DataError(
        path,
        line,
        column,
        f"{len(row)} field(s), but the header has {len(header)}; is a value quoted wrongly or a delimiter missing?",
    )


def _chunk(path, rows, lines, columns, index) -> Chunk:
    fields = list(zip(*rows))
    return Chunk({c: fields[i] for c, i in zip(columns, index)}, Where(str(path), np.asarray(lines, np.int64)))


def count_data_rows(path, block: int = 1 << 24) -> int:
    """Lines after the header (an upper bound on the data rows; exact without quoted newlines)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(block):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return max(lines + (last != b"\n") - 1, 0)


def file_signature(path) -> list | None:
    """[size, mtime_ns] of a file (None if it does not exist), for cache keys."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]
