"""Loaders for the BARS / FuxiCTR "x1" CSV releases and for generic interaction logs.

Every loader returns an :class:`EventTable` (see ``events``):

- vocabularies are fitted on the *training* rows only (not validation, not test): index 0 is
  padding, 1 the out-of-vocabulary id, known ids (count >= ``min_count``, counting occurrences in
  the sequences that share the vocabulary) get 2, 3, ... in sorted order of their raw value;
- ``^``-joined sequences keep their *last* ``max_len`` ids, pre-padded with 0 (newest last);
  an empty field is an empty sequence; an empty token ("3^^5") or a non-integer token is an error;
- validation is carved out of the end of the training file (``valid_fraction`` of its rows in time
  order); the test file is never used for early stopping;
- ``day``: training rows split into ``n_train_days`` equal windows in time order, test rows get
  day ``n_train_days``;
- bad input (missing columns, empty files, wrong field counts, non-numeric labels or numbers,
  NaN, labels other than 0/1, malformed sequences) raises :class:`DataError` naming the file, the
  1-based line (the header is line 1) and the column. Nothing is skipped silently.

The readers use the standard csv module (one pass, every field kept as a string until encoded):
simple and exact, but slow for the full 25M-row TaobaoAd; encode once with a cache directory.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .events import OOV, PAD, SPLITS, EventTable, HistoryIndex, Schema


class DataError(ValueError):
    """Malformed input data; the message names the file, line and column."""


@dataclasses.dataclass(frozen=True)
class CsvFormat:
    name: str
    user: str
    label: str
    time: Optional[str]
    categorical: tuple[str, ...]
    item: tuple[str, ...]
    numeric: tuple[str, ...]
    sequences: tuple[tuple[str, str], ...]
    min_count: int
    max_len: int


TAOBAOAD = CsvFormat(
    "taobaoad", user="userid", label="clk", time=None,
    categorical=("userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
                 "shopping_level", "occupation", "new_user_class_level", "adgroup_id", "cate_id",
                 "campaign_id", "customer", "brand", "pid", "btag"),
    item=("adgroup_id", "cate_id", "campaign_id", "customer", "brand"), numeric=("price",),
    sequences=(("cate_his", "cate_id"), ("brand_his", "brand"), ("btag_his", "btag")), min_count=10, max_len=50)
KUAIVIDEO = CsvFormat(
    "kuaivideo", user="user_id", label="is_click", time="timestamp", categorical=("user_id", "item_id"),
    item=("item_id",), numeric=(), sequences=(("pos_items", "item_id"), ("neg_items", "item_id")),
    min_count=10, max_len=100)
AMAZONELECTRONICS = CsvFormat(
    "amazonelectronics", user="user_id", label="label", time=None,
    categorical=("user_id", "item_id", "cate_id"), item=("item_id", "cate_id"), numeric=(),
    sequences=(("item_history", "item_id"), ("cate_history", "cate_id")), min_count=1, max_len=100)
FORMATS = {f.name: f for f in (TAOBAOAD, KUAIVIDEO, AMAZONELECTRONICS)}


# ------------------------------------------------------------------------------------------ reading
def read_csv(path: Path, required: Sequence[str]) -> dict[str, list[str]]:
    """Read a CSV with a header into column -> list of strings, checking columns and field counts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: line 1: the file is empty (expected a header with {', '.join(required)})")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: line 1: missing column(s) {', '.join(missing)}; header has {', '.join(header)}")
        columns: dict[str, list[str]] = {h: [] for h in header}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise DataError(f"{path}: line {line}: expected {len(header)} fields, found {len(row)}")
            for h, v in zip(header, row):
                columns[h].append(v)
    if not columns[header[0]]:
        raise DataError(f"{path}: line 2: the file has a header but no rows")
    return columns


def parse_label(values: list[str], path: Path, column: str) -> np.ndarray:
    out = np.empty(len(values), np.float32)
    for i, v in enumerate(values):
        try:
            x = float(v)
        except ValueError:
            raise DataError(f"{path}: line {i + 2}: column {column!r}: label {v!r} is not a number") from None
        if x not in (0.0, 1.0):
            raise DataError(f"{path}: line {i + 2}: column {column!r}: label must be 0 or 1, got {v!r}")
        out[i] = x
    return out


def parse_float(values: list[str], path: Path, column: str) -> np.ndarray:
    out = np.empty(len(values), np.float64)
    for i, v in enumerate(values):
        try:
            x = float(v)
        except ValueError:
            raise DataError(f"{path}: line {i + 2}: column {column!r}: {v!r} is not a number") from None
        if not math.isfinite(x):
            raise DataError(f"{path}: line {i + 2}: column {column!r}: value {v!r} is not finite")
        out[i] = x
    return out


def parse_sequences(values: list[str], path: Path, column: str) -> list[list[str]]:
    out = []
    for i, v in enumerate(values):
        if v == "":
            out.append([])
            continue
        tokens = v.split("^")
        for t in tokens:
            if not t.strip().lstrip("-").isdigit():
                what = "an empty id" if t == "" else f"the id {t!r}, which is not an integer"
                raise DataError(f"{path}: line {i + 2}: column {column!r}: malformed sequence {v!r} "
                                f"({what}); ids are integers joined by '^'")
        out.append([t.strip() for t in tokens])
    return out


# ------------------------------------------------------------------------------------------ encoding
def fit_vocab(scalars: list[str], sequences: list[list[list[str]]], fit: np.ndarray, min_count: int) -> dict:
    """raw id -> index (2..) from the rows where ``fit`` is True; ids below ``min_count`` are left out (OOV)."""
    counts: dict[str, int] = {}
    rows = np.flatnonzero(fit)
    for r in rows:
        counts[scalars[r]] = counts.get(scalars[r], 0) + 1
        for seqs in sequences:
            for t in seqs[r]:
                counts[t] = counts.get(t, 0) + 1
    known = sorted((k for k, c in counts.items() if c >= min_count), key=lambda k: (len(k), k))
    return {k: i + 2 for i, k in enumerate(known)}


def encode_scalars(values: list[str], vocab: dict) -> np.ndarray:
    return np.fromiter((vocab.get(v, OOV) for v in values), np.int32, len(values))


def encode_sequences(seqs: list[list[str]], vocab: dict, max_len: int) -> np.ndarray:
    out = np.full((len(seqs), max_len), PAD, np.int32)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if s:
            out[i, max_len - len(s):] = [vocab.get(t, OOV) for t in s]
    return out


def _time_windows(order_key: np.ndarray, n: int) -> np.ndarray:
    """Split rows into n equal windows by rank of ``order_key`` (ties kept together by stable sort)."""
    rank = np.empty(len(order_key), np.int64)
    rank[np.argsort(order_key, kind="stable")] = np.arange(len(order_key))
    return np.minimum(rank * n // max(len(order_key), 1), n - 1).astype(np.int16)


def load_bars(name: str, directory: str | os.PathLike, *, min_count: Optional[int] = None,
              max_len: Optional[int] = None, valid_fraction: float = 0.1, n_train_days: int = 7) -> EventTable:
    """Load ``DIR/train.csv`` and ``DIR/test.csv`` of a BARS x1 release ("taobaoad", "kuaivideo",
    "amazonelectronics"). TaobaoAd's price is stored as log1p(price). KuaiVideo's is_like and
    is_follow are not used (the label is is_click); the path of its optional
    ``item_visual_emb_dim64.h5`` is recorded in ``table.info["visual_embeddings"]`` (the embeddings are
    not used by the models yet)."""
    if name not in FORMATS:
        raise ValueError(f"unknown BARS dataset {name!r}; choose one of {', '.join(FORMATS)}.")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}.")
    fmt = FORMATS[name]
    min_count = fmt.min_count if min_count is None else min_count
    max_len = fmt.max_len if max_len is None else max_len
    directory = Path(directory)
    required = [fmt.label, *fmt.categorical, *fmt.numeric, *(s for s, _ in fmt.sequences)]
    if fmt.time:
        required.append(fmt.time)
    files = [directory / "train.csv", directory / "test.csv"]
    raw = [read_csv(f, required) for f in files]
    n_train = len(raw[0][fmt.label])
    n = n_train + len(raw[1][fmt.label])
    cat = lambda col: raw[0][col] + raw[1][col]  # noqa: E731

    label = np.concatenate([parse_label(r[fmt.label], f, fmt.label) for r, f in zip(raw, files)])
    if fmt.time:
        time = np.concatenate([parse_float(r[fmt.time], f, fmt.time) for r, f in zip(raw, files)]).astype(np.int64)
    else:
        time = np.arange(n, dtype=np.int64)
    split = np.full(n, SPLITS["train"], np.int8)
    split[n_train:] = SPLITS["test"]
    train_order = np.argsort(time[:n_train], kind="stable")
    n_valid = int(round(valid_fraction * n_train))
    if n_valid:
        split[train_order[n_train - n_valid:]] = SPLITS["valid"]
    day = np.full(n, n_train_days, np.int16)
    day[:n_train] = _time_windows(time[:n_train], n_train_days)
    fit = split == SPLITS["train"]

    seqs = {s: sum((parse_sequences(r[s], f, s) for r, f in zip(raw, files)), []) for s, _ in fmt.sequences}
    columns = {"label": label, "time": time, "split": split, "day": day}
    vocab_sizes = {}
    for col in fmt.categorical:
        shared = [seqs[s] for s, v in fmt.sequences if v == col]
        vocab = fit_vocab(cat(col), shared, fit, min_count)
        columns[col] = encode_scalars(cat(col), vocab)
        vocab_sizes[col] = len(vocab) + 2
        for s, v in fmt.sequences:
            if v == col:
                columns[s] = encode_sequences(seqs[s], vocab, max_len)
    for col in fmt.numeric:
        values = np.concatenate([parse_float(r[col], f, col) for r, f in zip(raw, files)])
        if name == "taobaoad" and col == "price":
            if np.any(values < 0):
                bad = int(np.flatnonzero(values < 0)[0])
                f, line = (files[0], bad + 2) if bad < n_train else (files[1], bad - n_train + 2)
                raise DataError(f"{f}: line {line}: column 'price': negative price")
            values = np.log1p(values)
        columns[col] = values.astype(np.float32)
    user_vocab = {u: i + 2 for i, u in enumerate(sorted(set(cat(fmt.user)), key=lambda k: (len(k), k)))}
    columns["user"] = np.fromiter((user_vocab[u] for u in cat(fmt.user)), np.int64, n)
    schema = Schema(fmt.categorical, fmt.item, fmt.numeric, fmt.sequences, max_len)
    info = {"source": name, "directory": str(directory), "min_count": min_count}
    visual = directory / "item_visual_emb_dim64.h5"
    if name == "kuaivideo" and visual.is_file():
        info["visual_embeddings"] = str(visual)
    return EventTable(schema, columns, vocab_sizes, name=name, info=info)


def load_interactions(path: str | os.PathLike, *, user: str = "user_id", item: str = "item_id",
                      timestamp: str = "timestamp", label: Optional[str] = "label",
                      rating: Optional[str] = None, rating_threshold: Optional[float] = None,
                      categorical: Sequence[str] = (), max_len: int = 50, min_count: int = 1,
                      valid_fraction: float = 0.1, test_fraction: float = 0.1, n_days: int = 8) -> EventTable:
    """A generic interaction log (CSV, or parquet with pyarrow) as an event table.

    The label is ``label`` (0/1), or ``rating >= rating_threshold``. Each event's behaviour sequence
    ``item_his`` is the same user's items from *strictly* earlier events (equal timestamps are not
    earlier). Rows are split by time: the last ``test_fraction`` of events is test, the
    ``valid_fraction`` before it validation; ``day`` = ``n_days`` equal windows in time order.
    """
    path = Path(path)
    use_rating = rating is not None
    if use_rating and rating_threshold is None:
        raise ValueError("rating= needs rating_threshold= (label = rating >= threshold).")
    target = rating if use_rating else label
    required = [user, item, timestamp, target, *categorical]
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from err
        tab = pq.read_table(path)
        missing = [c for c in required if c not in tab.column_names]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        cols = {c: [("" if v is None else str(v)) for v in tab.column(c).to_pylist()] for c in required}
        if not cols[user]:
            raise DataError(f"{path}: the file has no rows")
    else:
        cols = read_csv(path, required)
    n = len(cols[user])
    time = parse_float(cols[timestamp], path, timestamp)
    if use_rating:
        y = (parse_float(cols[rating], path, rating) >= rating_threshold).astype(np.float32)
    else:
        y = parse_label(cols[label], path, label)
    rank = np.empty(n, np.int64)
    rank[np.argsort(time, kind="stable")] = np.arange(n)
    split = np.full(n, SPLITS["train"], np.int8)
    split[rank >= n - int(round(test_fraction * n))] = SPLITS["test"]
    split[(rank >= n - int(round((test_fraction + valid_fraction) * n))) & (split != SPLITS["test"])] = SPLITS["valid"]
    fit = split == SPLITS["train"]
    users_raw = cols[user]
    user_vocab = {u: i + 2 for i, u in enumerate(sorted(set(users_raw)))}
    user_ids = np.fromiter((user_vocab[u] for u in users_raw), np.int64, n)
    time_key = np.unique(time, return_inverse=True)[1].astype(np.int64)
    history = HistoryIndex(user_ids, time_key).lookup(np.arange(n), max_len)
    item_vocab = fit_vocab(cols[item], [], fit, min_count)
    item_ids = encode_scalars(cols[item], item_vocab)
    columns = {"user": user_ids, "time": time_key, "label": y, "split": split,
               "day": _time_windows(time, n_days), item: item_ids,
               "item_his": np.where(history >= 0, item_ids[np.clip(history, 0, None)], PAD).astype(np.int32)}
    vocab_sizes = {item: len(item_vocab) + 2}
    for c in categorical:
        vocab = fit_vocab(cols[c], [], fit, min_count)
        columns[c] = encode_scalars(cols[c], vocab)
        vocab_sizes[c] = len(vocab) + 2
    user_col = "user_cat"
    user_cat_vocab = fit_vocab(users_raw, [], fit, min_count)
    columns[user_col] = encode_scalars(users_raw, user_cat_vocab)
    vocab_sizes[user_col] = len(user_cat_vocab) + 2
    schema = Schema((user_col, item, *categorical), (item,), (), (("item_his", item),), max_len)
    return EventTable(schema, columns, vocab_sizes, name=path.stem,
                      info={"source": "interactions", "file": str(path)})
