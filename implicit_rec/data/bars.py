"""Loaders for the BARS / FuxiCTR "x1" releases: TaobaoAd_x1, KuaiVideo_x1, AmazonElectronics_x1.

Each release is ``DIR/train.csv`` and ``DIR/test.csv`` (formats in ``shared/notes/datasets.md``);
a loader returns an :class:`~implicit_rec.data.events.EventTable`:

- ``split``: test.csv rows are 2 (test). Validation (1) is the last ``valid_fraction`` of the
  train.csv rows in time order (rows tied with the cut time go to validation as well); the rest
  is train (0). The test file is never used for validation or vocabularies.
- ``time``: the timestamp column where the release has one (KuaiVideo), else the row order
  (train.csv rows 0..n-1, then test.csv rows). Rows are stored sorted by (file, time), stably.
  AmazonElectronics rows are grouped by user rather than globally time-ordered, so its
  validation slice and day windows follow file order, not calendar time.
- ``day``: train + validation rows in ``n_train_days`` windows of (nearly) equal row counts by
  time order (ties share a window), 0 .. n_train_days - 1; test rows get ``n_train_days``.
- ``user``: a dense id of every distinct user (>= 2, never OOV: it is a grouping key for gAUC
  and histories, not a feature); the user *feature* column (``userid`` / ``user_id``) is
  encoded like every other categorical.
- categorical columns and sequences: vocabularies fitted on split == 0 rows (see ``vocabulary``);
  numeric ``price`` (TaobaoAd) becomes log1p(price) (prices are >= 0 and heavy-tailed; a negative,
  empty or non-numeric price is an error).
- KuaiVideo's ``is_like`` / ``is_follow`` are outcomes of the impression (other labels), so they
  are never features; they are not read.

Defaults follow the reference settings: min_count 10 / 10 / 1, max_len 50 / 100 / 100.
Memory: the encoded table is built in memory (about 4 bytes per sequence position plus ~40 bytes
per row); the CSV is read in chunks of ``chunk_rows``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .cells import MISSING, order_keys, parse_floats, parse_ints, parse_labels, parse_times
from .csv_reader import check_columns, count_data_rows, read_csv_chunks, read_header
from .errors import DataError
from .events import EventTable, Schema
from .sequences import split_sequences
from .vocabulary import TokenCounter, Vocab, fit_vocab

MinCount = int | Mapping[str, int]
VOCAB_NOTE = "fitted on split==0 rows; 0 = padding, 1 = OOV, known ids from 2 sorted by raw id"


@dataclasses.dataclass(frozen=True)
class Release:
    """How one BARS release maps onto an event table."""

    name: str
    label: str
    user: str
    time: str | None  # timestamp column, or None for row order
    categorical: tuple[str, ...]
    item: tuple[str, ...]
    numeric: tuple[str, ...] = ()  # log1p-transformed, must be >= 0
    sequences: tuple[tuple[str, str], ...] = ()
    unused: tuple[str, ...] = ()
    min_count: int = 1
    max_len: int = 100

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns read from the CSV files (all required)."""
        cols = (self.label,) + ((self.time,) if self.time else ()) + self.categorical + self.numeric
        return cols + tuple(s for s, _ in self.sequences)


TAOBAOAD = Release(
    "taobaoad_x1",
    label="clk",
    user="userid",
    time=None,
    categorical=(
        "userid",
        "cms_segid",
        "cms_group_id",
        "final_gender_code",
        "age_level",
        "pvalue_level",
        "shopping_level",
        "occupation",
        "new_user_class_level",
        "adgroup_id",
        "cate_id",
        "campaign_id",
        "customer",
        "brand",
        "pid",
        "btag",
    ),
    item=("adgroup_id", "cate_id", "campaign_id", "customer", "brand"),
    numeric=("price",),
    sequences=(("cate_his", "cate_id"), ("brand_his", "brand"), ("btag_his", "btag")),
    min_count=10,
    max_len=50,
)
KUAIVIDEO = Release(
    "kuaivideo_x1",
    label="is_click",
    user="user_id",
    time="timestamp",
    categorical=("user_id", "item_id"),
    item=("item_id",),
    sequences=(("pos_items", "item_id"), ("neg_items", "item_id")),
    unused=("is_like", "is_follow"),
    min_count=10,
    max_len=100,
)
AMAZONELECTRONICS = Release(
    "amazonelectronics_x1",
    label="label",
    user="user_id",
    time=None,
    categorical=("user_id", "item_id", "cate_id"),
    item=("item_id", "cate_id"),
    sequences=(("item_history", "item_id"), ("cate_history", "cate_id")),
    min_count=1,
    max_len=100,
)
VISUAL_FILE = "item_visual_emb_dim64.h5"
BLOCK = 100_000  # rows per vectorized step over whole columns (bounds temporaries)


def load_taobaoad(
    directory,
    *,
    min_count: MinCount = 10,
    max_len: int = 50,
    valid_fraction: float = 0.1,
    n_train_days: int = 7,
    chunk_rows: int = 100_000,
) -> EventTable:
    """TaobaoAd_x1 (``clk``; profile, ad and context ids; log1p price; cate/brand/btag histories).

    ``min_count``: an int, or {column: int} overriding the default 10 per vocabulary.
    """
    return load_release(
        TAOBAOAD,
        directory,
        min_count=min_count,
        max_len=max_len,
        valid_fraction=valid_fraction,
        n_train_days=n_train_days,
        chunk_rows=chunk_rows,
    )


def load_kuaivideo(
    directory,
    *,
    min_count: MinCount = 10,
    max_len: int = 100,
    valid_fraction: float = 0.1,
    n_train_days: int = 7,
    visual_embeddings: bool | None = None,
    chunk_rows: int = 100_000,
) -> EventTable:
    """KuaiVideo_x1 (``is_click``; user and item ids; pos_items / neg_items share ``item_id``).

    visual_embeddings: None loads ``DIR/item_visual_emb_dim64.h5`` when it exists, True requires
      it, False skips it. Loaded, ``info["item_visual_emb"]`` is a (vocab_sizes["item_id"], 64)
      float32 array indexed by the *encoded* item id (rows 0 = padding and 1 = OOV, and known
      items without a vector, are zero; ``info["item_visual_emb_missing"]`` counts the latter).
      Reading it needs h5py.
    """
    table, vocabs = build_release(
        KUAIVIDEO,
        directory,
        min_count=min_count,
        max_len=max_len,
        valid_fraction=valid_fraction,
        n_train_days=n_train_days,
        chunk_rows=chunk_rows,
    )
    path = Path(directory) / VISUAL_FILE
    if visual_embeddings or (visual_embeddings is None and path.is_file()):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such file (visual_embeddings=True requires it; pass "
                "visual_embeddings=None to load it only when present)."
            )
        emb, missing = read_visual_embeddings(path, vocabs["item_id"])
        table.info.update(item_visual_emb=emb, item_visual_emb_missing=missing, item_visual_emb_file=str(path))
    return table


def load_amazonelectronics(
    directory,
    *,
    min_count: MinCount = 1,
    max_len: int = 100,
    valid_fraction: float = 0.1,
    n_train_days: int = 7,
    chunk_rows: int = 100_000,
) -> EventTable:
    """AmazonElectronics_x1 (``label``; user, item and category ids; item / category histories)."""
    return load_release(
        AMAZONELECTRONICS,
        directory,
        min_count=min_count,
        max_len=max_len,
        valid_fraction=valid_fraction,
        n_train_days=n_train_days,
        chunk_rows=chunk_rows,
    )


# -- the shared engine --------------------------------------------------------------------------


def load_release(rel: Release, directory, **options) -> EventTable:
    """Read DIR/train.csv and DIR/test.csv of ``rel`` and encode them (see the module docstring)."""
    return build_release(rel, directory, **options)[0]


def build_release(
    rel: Release,
    directory,
    *,
    min_count: MinCount,
    max_len: int,
    valid_fraction: float,
    n_train_days: int,
    chunk_rows: int = 100_000,
) -> tuple[EventTable, dict[str, Vocab]]:
    """(table, {categorical column: fitted Vocab}) of a release; see :func:`load_release`."""
    check_split_options(valid_fraction=valid_fraction, n_train_days=n_train_days, max_len=max_len)
    counts = resolve_min_count(min_count, rel.min_count, rel.categorical)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory}: no such directory; expected the {rel.name} release (train.csv and test.csv)."
        )
    files = [directory / "train.csv", directory / "test.csv"]
    raw = _read(rel, files, max_len, chunk_rows)
    n = len(raw["label"])
    file_idx = raw.pop("file")
    time, time_note = order_keys(raw.pop("time")) if rel.time else (np.arange(n, dtype=np.int64), None)
    split = np.where(file_idx == 0, 0, 2).astype(np.int8)
    split[tail_by_time(time, np.flatnonzero(split == 0), valid_fraction)] = 1
    day = assign_days(time, split, n_train_days)
    train = split == 0
    if not train.any():
        raise DataError(
            files[0],
            None,
            None,
            "no training rows remain after carving out validation "
            "(too many rows share the last timestamps?); lower "
            "valid_fraction.",
        )
    vocabs = {c: _fit(rel, c, raw, train, counts[c]) for c in rel.categorical}
    columns = {"user": dense_ids(raw["cat"][rel.user]), "time": time, "day": day, "split": split, "label": raw["label"]}
    missing = {c: int((v == MISSING).sum()) for c, v in raw["cat"].items() if (v == MISSING).any()}
    for c in rel.categorical:
        columns[c] = vocabs[c].encode(raw["cat"].pop(c))
    for c in rel.numeric:
        columns[c] = np.log1p(raw["num"].pop(c)).astype(np.float32)
    for s, v in rel.sequences:
        columns[s] = _encode_sequence(raw["seq"].pop(s), vocabs[v])
    order = np.lexsort((time, file_idx))
    if (order != np.arange(n)).any():
        columns = {k: v[order] for k, v in columns.items()}
    info = {
        "source": rel.name,
        "files": [str(f) for f in files],
        "rows": split_counts(columns["split"]),
        "time": f"{time_note} from column {rel.time!r}" if rel.time else "row order (train.csv, then test.csv)",
        "vocab": VOCAB_NOTE,
        "min_count": counts,
        "max_len": max_len,
        "valid_fraction": valid_fraction,
        "n_train_days": n_train_days,
        "numeric_transforms": {c: "log1p" for c in rel.numeric},
        "missing_cells": missing,
        "unused_columns": list(rel.unused),
        "test_oov_rate": oov_rates(columns, rel.categorical),
    }
    schema = Schema(
        categorical=rel.categorical, item=rel.item, numeric=rel.numeric, sequences=rel.sequences, max_len=max_len
    )
    sizes = {c: vocabs[c].size for c in rel.categorical}
    return EventTable(schema, columns, sizes, rel.name, info), vocabs


def _read(rel: Release, files, max_len: int, chunk_rows: int) -> dict:
    """Parse every chunk of the files into raw arrays.

    Sequence columns go straight into preallocated (rows, max_len) int32 arrays (int64 if an id
    needs it) that are later encoded in place, so the peak memory stays near the table's size.
    """
    for path in files:
        check_columns(path, read_header(path, rel.columns), rel.columns)
    capacity = sum(count_data_rows(path) for path in files)
    labels, times, file_idx = [], [], []
    cat = {c: [] for c in rel.categorical}
    num = {c: [] for c in rel.numeric}
    seq = {s: np.empty((capacity, max_len), np.int32) for s, _ in rel.sequences}
    fmt, start = None, 0
    for fi, path in enumerate(files):
        for chunk in read_csv_chunks(path, rel.columns, chunk_rows):
            cells, w, stop = chunk.cells, chunk.where, start + len(chunk)
            labels.append(parse_labels(cells[rel.label], w, rel.label))
            if rel.time:
                t, fmt = parse_times(cells[rel.time], w, rel.time, fmt)
                times.append(t)
            for c in rel.categorical:
                cat[c].append(parse_ints(cells[c], w, c, allow_missing=c != rel.user))
            for c in rel.numeric:
                num[c].append(parse_floats(cells[c], w, c, minimum=0.0))
            for s in seq:
                block = split_sequences(cells[s], max_len, w, s)
                if stop > len(seq[s]):  # quoted newlines made the line count too small
                    seq[s] = np.concatenate([seq[s], np.empty((stop - len(seq[s]), max_len), seq[s].dtype)])
                if seq[s].dtype == np.int32 and block.max(initial=0) > np.iinfo(np.int32).max:
                    seq[s] = seq[s].astype(np.int64)
                seq[s][start:stop] = block
            file_idx.append(np.full(len(chunk), fi, np.int8))
            start = stop
    return {
        "label": np.concatenate(labels),
        "file": np.concatenate(file_idx),
        "time": np.concatenate(times) if times else None,
        "cat": {c: np.concatenate(v) for c, v in cat.items()},
        "num": {c: np.concatenate(v) for c, v in num.items()},
        "seq": {s: a if len(a) == start else a[:start].copy() for s, a in seq.items()},
    }


def _fit(rel: Release, column: str, raw: dict, train: np.ndarray, min_count: int) -> Vocab:
    """Vocabulary of ``column`` over training rows: its cells plus the tokens of sharing sequences."""
    counter = TokenCounter()
    counter.add(raw["cat"][column][train])
    for s, v in rel.sequences:
        if v == column:
            tokens = raw["seq"][s]
            for a in range(0, len(tokens), BLOCK):
                counter.add_sequences(tokens[a : a + BLOCK][train[a : a + BLOCK]])
    return fit_vocab(counter, min_count)


def _encode_sequence(tokens: np.ndarray, vocab: Vocab) -> np.ndarray:
    """(n, max_len) int32 encoded block by block (in place when the raw tokens are int32)."""
    out = tokens if tokens.dtype == np.int32 else np.empty(tokens.shape, np.int32)
    for a in range(0, len(tokens), BLOCK):
        out[a : a + BLOCK] = vocab.encode_sequences(tokens[a : a + BLOCK])
    return out


# -- helpers shared with the interactions loader --------------------------------------------------


def check_split_options(**options) -> None:
    """Validate valid_fraction / test_fraction (0 <= f < 1), n_train_days and max_len (>= 1)."""
    for name, value in options.items():
        if name.endswith("_fraction") and not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}.")
        if name in ("n_train_days", "max_len") and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value}.")


def resolve_min_count(min_count: MinCount, default: int, columns) -> dict[str, int]:
    """{column: min_count} from an int or a partial mapping (unnamed columns keep ``default``)."""
    if isinstance(min_count, Mapping):
        unknown = sorted(set(min_count) - set(columns))
        if unknown:
            raise ValueError(f"min_count names unknown column(s) {unknown}; columns: {list(columns)}.")
        out = {c: int(min_count.get(c, default)) for c in columns}
    else:
        out = {c: int(min_count) for c in columns}
    bad = {c: m for c, m in out.items() if m < 1}
    if bad:
        raise ValueError(f"min_count must be >= 1, got {bad}.")
    return out


def tail_by_time(times: np.ndarray, rows: np.ndarray, fraction: float) -> np.ndarray:
    """The rows among ``rows`` in the last ``fraction`` of them by time (ties with the cut included).

    The cut is the time of the row at position ``len(rows) - round(fraction * len(rows))`` in
    time order; every row at or after that time is in the tail, so equal times never straddle it.
    """
    rows = np.asarray(rows)
    k = len(rows) - int(round(fraction * len(rows)))
    if fraction <= 0 or k >= len(rows):
        return rows[:0]
    t = times[rows]
    cut = np.partition(t, k)[k]
    return rows[t >= cut]


def time_windows(times: np.ndarray, n_windows: int) -> np.ndarray:
    """(n,) int16 window of each time: equal row counts in time order, equal times together."""
    times = np.asarray(times)
    if len(times) == 0:
        return np.zeros(0, np.int16)
    rank = np.searchsorted(np.sort(times), times, side="left")
    return (rank * n_windows // len(times)).astype(np.int16)


def assign_days(time: np.ndarray, split: np.ndarray, n_train_days: int) -> np.ndarray:
    """(n,) int16: train + validation rows in ``n_train_days`` windows, test rows ``n_train_days``."""
    day = np.full(len(time), n_train_days, np.int16)
    fit = split != 2
    day[fit] = time_windows(time[fit], n_train_days)
    return day


def dense_ids(raw: np.ndarray) -> np.ndarray:
    """(n,) int64 id >= 2 of every distinct raw value (the ``user`` grouping key)."""
    return np.unique(raw, return_inverse=True)[1].astype(np.int64).ravel() + 2


def split_counts(split: np.ndarray) -> dict[str, int]:
    return {name: int((split == code).sum()) for name, code in (("train", 0), ("valid", 1), ("test", 2))}


def oov_rates(columns: dict, categorical) -> dict[str, float]:
    """Fraction of test rows whose value is OOV, per categorical column (a diagnostic)."""
    test = columns["split"] == 2
    if not test.any():
        return {}
    return {c: round(float((columns[c][test] == 1).mean()), 6) for c in categorical}


def read_visual_embeddings(path, vocab: Vocab) -> tuple[np.ndarray, int]:
    """((vocab.size, D) float32 rows by encoded id, number of known ids without a vector).

    The file holds datasets ``key`` (K,) raw item ids and ``value`` (K, D) vectors.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError(
            f"{path} exists and reading it needs h5py: pip install h5py (or pip "
            "install 'implicit-rec[kuaivideo]'), or pass visual_embeddings=False."
        ) from None
    with h5py.File(path, "r") as f:
        for name in ("key", "value"):
            if name not in f:
                raise DataError(
                    path,
                    None,
                    name,
                    f"no dataset {name!r}; expected 'key' (item ids) and 'value' (one vector per key).",
                )
        keys, values = np.asarray(f["key"][()]), np.asarray(f["value"][()])
    if keys.dtype.kind in "SUO":
        text = np.array([k.decode() if isinstance(k, bytes) else str(k) for k in keys.ravel()])
        keys = parse_ints(text, _H5Where(path), "key", allow_missing=False)
    if keys.ndim != 1 or values.ndim != 2 or len(values) != len(keys) or keys.dtype.kind not in "iu":
        raise DataError(
            path,
            None,
            "value",
            f"expected integer 'key' (K,) and 'value' (K, D); got {keys.dtype} {keys.shape} and {values.shape}.",
        )
    if not np.isfinite(values).all():
        raise DataError(path, None, "value", "contains NaN or infinite entries.")
    emb = np.zeros((vocab.size, values.shape[1]), np.float32)
    index = vocab.encode(keys.astype(np.int64))
    known = index >= 2
    emb[index[known]] = values[known]
    return emb, int(vocab.size - 2 - len(np.unique(index[known])))


class _H5Where:
    """Error locations inside an HDF5 dataset (entry numbers instead of lines)."""

    def __init__(self, path):
        self.path = path

    def error(self, row: int, column, problem: str) -> DataError:
        return DataError(self.path, row + 1, column, problem, unit="entry")
