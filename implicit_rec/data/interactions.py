"""A generic interaction log (CSV or parquet) as an event table with point-in-time histories.

Input: one row per event with a user id, an item id, a timestamp and either a 0/1 label or a
rating turned into a label by ``rating_threshold`` (label = rating >= threshold). Optional extra
categorical columns are named explicitly (none by default): ``item_categorical`` describe the
item of the row (e.g. its category; they become candidate-item fields and get a history
sequence), ``categorical`` are user or context fields (no history). Other columns are ignored.

Encoding:

- rows are stored in time order (stable); ``time`` is the timestamp (integers as they are,
  ISO-8601 datetimes as int64 seconds, fractional numbers by their rank);
- ids are taken verbatim as text from CSV ("7" and "07" differ), as integers or text from
  parquet; vocabularies are fitted on the training split (0 = padding, 1 = OOV, known ids from 2
  sorted by raw id, ``min_count`` as in ``vocabulary``), counting the history tokens of training rows;
- each event's behaviour sequences (``<item_col>_his`` and ``<col>_his`` per item categorical) are
  the same user's last ``max_len`` events **strictly earlier** in time (equal timestamps are not
  earlier), oldest first, pre-padded with 0 (``HistoryIndex``). ``history="positive"`` keeps only
  earlier events with label 1. An event's own label never enters its own or any earlier event's
  features;
- splits by time: events at or after the time of the row at the (1 - ``test_fraction``) position
  in time order are test (2); the ``valid_fraction`` slice before that (same rule) is validation
  (1); the rest is train (0). Equal times never straddle a boundary;
- ``day``: train + validation rows in ``n_train_days`` (default 7) equal-count windows by time,
  test rows ``n_train_days`` -- 8 windows with the defaults, like the synthetic data.

Refused (a :class:`~implicit_rec.data.errors.DataError` naming the file, and the line where there
is one): a file that is not UTF-8; a negative timestamp (usually a ``-1`` "unknown" sentinel:
drop or fill those rows, or shift relative times to start at 0); labels that are all 0 or all 1
(AUC is undefined); a single user (gAUC, per-user histories and out-of-fold user folds need
several: check ``user_col``); too few rows or distinct times for a non-empty train split, and for
non-empty validation and test splits when their fractions are > 0.

Exact duplicate events (every column read is equal) are **kept** -- an impression log can show
the same ad to the same user twice within one timestamp unit, and dropping rows would change the
label rate -- and counted in ``info["duplicate_events"]`` (``implicit-rec run`` logs the count and
records it in run.json and metrics.json). Duplicates share their time, so neither is in the
other's history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .bars import (
    VOCAB_NOTE,
    MinCount,
    assign_days,
    check_split_options,
    dense_ids,
    oov_rates,
    resolve_min_count,
    split_counts,
    tail_by_time,
)
from .cells import order_keys, parse_floats, parse_ints, parse_labels, parse_strings, parse_times
from .csv_reader import check_columns, read_csv_chunks, read_header
from .errors import DataError, Where
from .events import BASE_COLUMNS, PAD, EventTable, HistoryIndex, Schema
from .vocabulary import TokenCounter, Vocab, fit_vocab

PARQUET_SUFFIXES = (".parquet", ".pq")
HISTORY_BLOCK = 100_000  # rows per history lookup (bounds the (rows, max_len) index array)


def load_interactions(
    file,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    label_col: str = "label",
    rating_col: str = "rating",
    rating_threshold: float | None = None,
    categorical: Sequence[str] = (),
    item_categorical: Sequence[str] = (),
    history: str = "all",
    min_count: MinCount = 1,
    max_len: int = 50,
    test_fraction: float = 0.1,
    valid_fraction: float = 0.1,
    n_train_days: int = 7,
    chunk_rows: int = 100_000,
) -> EventTable:
    """Load and encode an interaction log (see the module docstring).

    history: "all" (every earlier event of the user) or "positive" (earlier events with label 1).
    min_count: an int or {column: int}. Returns an EventTable with categorical columns
    (user_col, item_col, *item_categorical, *categorical) and sequences ``<col>_his``.
    """
    path = Path(file)
    categorical, item_categorical = tuple(categorical), tuple(item_categorical)
    check_split_options(
        test_fraction=test_fraction, valid_fraction=valid_fraction, n_train_days=n_train_days, max_len=max_len
    )
    if test_fraction + valid_fraction >= 1:
        raise ValueError(f"test_fraction + valid_fraction must be < 1, got {test_fraction + valid_fraction}.")
    if history not in ("all", "positive"):
        raise ValueError(f"history must be 'all' or 'positive', got {history!r}.")
    features = (user_col, item_col) + item_categorical + categorical
    sequences = tuple((f"{c}_his", c) for c in (item_col,) + item_categorical)
    _check_names(features, sequences)
    counts = resolve_min_count(min_count, 1, features)
    target = rating_col if rating_threshold is not None else label_col
    raw = _read(
        path,
        user_col,
        item_col,
        time_col,
        target,
        rating_threshold,
        rating_col,
        item_categorical + categorical,
        chunk_rows,
    )

    time, time_note = order_keys(raw.pop("time"))
    order = np.argsort(time, kind="stable")
    time = time[order]
    label = raw.pop("label")[order]
    values = {c: raw[c][order] for c in features}
    n = len(time)
    split = np.zeros(n, np.int8)
    split[tail_by_time(time, np.arange(n), test_fraction + valid_fraction)] = 1
    split[tail_by_time(time, np.arange(n), test_fraction)] = 2
    _check_splits(path, split, time_col, test_fraction, valid_fraction)
    _check_labels(path, label, target)
    user = dense_ids(values[user_col])
    if len(np.unique(user)) < 2:
        raise DataError(
            path,
            None,
            user_col,
            f"every row has the same user ({str(values[user_col][0])!r}); "
            "gAUC, per-user histories and user folds need several users: "
            "is user_col the right column?",
        )
    index = HistoryIndex(user, time, eligible=label == 1 if history == "positive" else None)
    train = split == 0
    vocabs = _fit_all(values, dict(sequences), train, index, max_len, counts)
    columns = {
        "user": user,
        "time": time,
        "day": assign_days(time, split, n_train_days),
        "split": split,
        "label": label,
    }
    for c in features:
        columns[c] = vocabs[c].encode(values[c])
    columns.update(_histories(columns, dict(sequences), index, max_len))
    schema = Schema(
        categorical=features, item=(item_col,) + item_categorical, numeric=(), sequences=sequences, max_len=max_len
    )
    info = {
        "source": "interactions",
        "files": [str(path)],
        "rows": split_counts(split),
        "time": f"{time_note} from column {time_col!r}",
        "history": history,
        "label": (f"{rating_col} >= {rating_threshold}" if rating_threshold is not None else label_col),
        "vocab": VOCAB_NOTE,
        "min_count": counts,
        "max_len": max_len,
        "test_fraction": test_fraction,
        "valid_fraction": valid_fraction,
        "n_train_days": n_train_days,
        "duplicate_events": _count_duplicates([user, time, label, *(values[c] for c in features)]),
        "missing_cells": {
            c: int((values[c] == "").sum()) for c in features if values[c].dtype.kind == "U" and (values[c] == "").any()
        },
        "test_oov_rate": oov_rates(columns, features),
    }
    return EventTable(schema, columns, {c: vocabs[c].size for c in features}, path.stem, info)


def _check_splits(path: Path, split: np.ndarray, time_col: str, test_fraction: float, valid_fraction: float) -> None:
    """DataError unless train is non-empty, and validation / test are wherever their fraction > 0."""
    counts = split_counts(split)
    empty = [
        name
        for name, fraction in (("train", 1.0), ("valid", valid_fraction), ("test", test_fraction))
        if fraction > 0 and counts[name] == 0
    ]
    if empty:
        raise DataError(
            path,
            None,
            time_col,
            f"{len(split)} rows are too few to split by time: train "
            f"{counts['train']}, validation {counts['valid']}, test {counts['test']} rows with "
            f"test_fraction={test_fraction}, valid_fraction={valid_fraction}; the "
            f"{' and '.join(empty)} split is empty: add rows (with more distinct timestamps).",
        )


def _check_labels(path: Path, label: np.ndarray, column: str) -> None:
    """DataError if every label is the same: AUC (the metric of every model) needs both classes."""
    positives = int(label.sum())
    if positives in (0, len(label)):
        raise DataError(
            path,
            None,
            column,
            f"every one of the {len(label)} labels is {int(label[0])}; AUC is "
            "undefined without both clicks (1) and non-clicks (0): check the "
            "label column (or rating_threshold).",
        )


def _count_duplicates(columns: list[np.ndarray]) -> int:
    """Rows equal to an earlier row in every one of ``columns`` (arrays of equal length, any dtype)."""
    codes = np.stack([np.unique(c, return_inverse=True)[1].ravel() for c in columns], axis=1)
    return int(len(codes) - len(np.unique(codes, axis=0)))


def _check_names(features, sequences) -> None:
    names = list(features) + [s for s, _ in sequences]
    clash = [c for c in names if c in BASE_COLUMNS]
    if clash:
        raise ValueError(
            f"column name(s) {clash} clash with the event table's own columns "
            f"{list(BASE_COLUMNS)}; rename them in the file."
        )
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ValueError(
            f"column(s) {dup} are named twice (a feature and a history, or listed in "
            "both categorical and item_categorical)."
        )


def _read(path: Path, user_col, item_col, time_col, target, threshold, rating_col, extra, chunk_rows) -> dict:
    """Raw arrays of every needed column, concatenated over the file's chunks."""
    needed = (user_col, item_col, time_col, target) + tuple(extra)
    parts = {c: [] for c in (user_col, item_col) + tuple(extra)}
    labels, times, fmt = [], [], None
    hint = rating_col if threshold is None else None
    for cells, w in _chunks(path, needed, chunk_rows, hint):
        if threshold is None:
            labels.append(parse_labels(cells[target], w, target))
        else:
            labels.append((parse_floats(cells[target], w, target) >= threshold).astype(np.float32))
        t, fmt = parse_times(cells[time_col], w, time_col, fmt)
        if (t < 0).any():
            row = int(np.argmax(t < 0))
            raise w.error(
                row,
                time_col,
                f"negative timestamp {cells[time_col][row]!r}; if it marks an "
                "unknown time, drop or fill the row; shift relative times to start at 0.",
            )
        times.append(t)
        for c in parts:
            parts[c].append(_ids(cells[c], w, c, allow_missing=c not in (user_col, item_col)))
    out = {c: np.concatenate(v) for c, v in parts.items()}
    kinds = {c: {p.dtype.kind == "U" for p in v} for c, v in parts.items()}
    mixed = [c for c, k in kinds.items() if len(k) > 1]
    if mixed:  # only possible for parquet files whose row groups disagree on a column's type
        raise DataError(path, None, mixed[0], "ids are integers in some row groups and text in others.")
    out.update(label=np.concatenate(labels), time=np.concatenate(times))
    return out


def _ids(values, where: Where, column: str, allow_missing: bool) -> np.ndarray:
    """Integer ids stay int64 (parquet integer columns); anything else is verbatim text."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        return parse_ints(values, where, column, allow_missing=allow_missing)
    return parse_strings(values, where, column, allow_missing=allow_missing)


def _chunks(path: Path, needed, chunk_rows, rating_col=None) -> Iterator[tuple[dict, Where]]:
    """(column -> cells, Where) chunks of a CSV or parquet file (needed[3] is the label column)."""
    if path.is_dir():
        raise DataError(path, None, None, "is a directory; expected an interaction log (CSV or parquet file).")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    parquet = path.suffix.lower() in PARQUET_SUFFIXES
    header = _parquet_columns(path) if parquet else read_header(path, needed)
    if needed[3] not in header and rating_col in header:
        raise DataError(
            path,
            1,
            needed[3],
            f"no {needed[3]!r} column; to derive labels from "
            f"{rating_col!r} pass rating_threshold=... "
            "(label = rating >= threshold).",
        )
    check_columns(path, header, needed)
    if parquet:
        yield from _parquet_chunks(path, needed, chunk_rows)
    else:
        for chunk in read_csv_chunks(path, needed, chunk_rows):
            yield chunk.cells, chunk.where


def _parquet_columns(path: Path) -> list[str]:
    pq = _pyarrow_parquet(path)
    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as e:  # pyarrow raises several types for a corrupt or empty file
        raise DataError(path, None, None, f"unreadable parquet file ({e}).") from None


def _parquet_chunks(path: Path, needed, chunk_rows):
    pq = _pyarrow_parquet(path)
    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=list(needed)):
        if batch.num_rows == 0:
            continue
        cells = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in needed}
        yield cells, Where.rows(path, batch.num_rows, first=start + 1, unit="row")
        start += batch.num_rows
    if start == 0:
        raise DataError(path, 1, needed[0], "the file has no rows.", unit="row")


def _pyarrow_parquet(path):
    """``pyarrow.parquet``, imported only when a parquet file is read (the optional parquet extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"{path}: reading parquet needs the parquet extra: pip install 'implicit-rec[parquet]' "
            "(or convert the file to CSV)."
        ) from None
    return pq


def _fit_all(
    values: dict, history_of: dict, train: np.ndarray, index: HistoryIndex, max_len: int, counts: dict
) -> dict[str, Vocab]:
    """Vocabularies over training rows: each column's cells plus, for item-side columns, the
    tokens of the training rows' histories (one history lookup per block serves every column)."""
    counters = {c: TokenCounter() for c in values}
    for c, counter in counters.items():
        counter.add(values[c][train])
    rows = np.flatnonzero(train)
    for start in range(0, len(rows) if history_of else 0, HISTORY_BLOCK):
        idx = index.lookup(rows[start : start + HISTORY_BLOCK], max_len)
        idx = idx[idx >= 0]
        for c in history_of.values():
            counters[c].add(values[c][idx])
    return {c: fit_vocab(counter, counts[c]) for c, counter in counters.items()}


def _histories(encoded: dict, history_of: dict, index: HistoryIndex, max_len: int) -> dict:
    """{sequence: (n, max_len) int32}: each event's strictly earlier events' encoded values."""
    n = len(next(iter(encoded.values())))
    out = {s: np.empty((n, max_len), np.int32) for s in history_of}
    for start in range(0, n, HISTORY_BLOCK):
        idx = index.lookup(np.arange(start, min(start + HISTORY_BLOCK, n)), max_len)
        valid, safe = idx >= 0, np.maximum(idx, 0)
        for s, c in history_of.items():
            out[s][start : start + len(idx)] = np.where(valid, encoded[c][safe], PAD)
    return out
