"""The canonical encoded form of every dataset: an event table, cached on disk as .npy files.

One row per impression. Columns (all numpy arrays with N rows):

- ``user`` (N,) int64: encoded user id (>= 2; 0 = padding, 1 = out-of-vocabulary);
- ``time`` (N,) int64: the order key (a timestamp, or the row order where the source has none);
  events of one user are ordered by it; equal times mean "same moment";
- ``day`` (N,) int16: the time window an event falls in (used for FM / VM / test windows);
- ``split`` (N,) int8: 0 train, 1 validation, 2 test;
- ``label`` (N,) float32 in {0, 1};
- one (N,) integer column per categorical feature (0 pad, 1 OOV, >= 2 known ids);
- one (N,) float32 column per numeric feature;
- one (N, max_len) integer column per behaviour sequence, pre-padded with 0 (oldest first,
  newest last), sharing the vocabulary named in its spec; ``schema.fm_sequences`` are more such
  columns (behaviours on other surfaces) that only the foundation model reads.

The categorical and sequence columns are signed integers; the synthetic generator and the BARS
loaders store the narrowest type holding the vocabulary's indices (int8, int16 or int32), which
keeps a table's histories at a quarter to a half of their int32 bytes. Batches
(:meth:`EventTable.take`, :func:`batches`) give them as int32 whatever the stored type.

``info`` holds provenance; its numpy entries (e.g. a synthetic table's true click probability) are
saved as ``info.<name>.npy`` beside the columns. They are not columns: no batch reads them.

The schema and vocabulary sizes live in ``meta.json`` beside the arrays. Arrays are
memory-mapped on load, so batches are read without loading the table into memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..atomic import atomic_directory

PAD, OOV = 0, 1
SPLITS = {"train": 0, "valid": 1, "test": 2}
BASE_COLUMNS = ("user", "time", "day", "split", "label")
FORMAT_VERSION = 1
INFO_ARRAYS = "info_arrays"  # meta.json key naming the info entries stored as info.<name>.npy


@dataclasses.dataclass(frozen=True)
class Schema:
    """Which columns an event table has and how they are encoded.

    categorical: names of categorical columns; the first ones are conventionally the user
      profile, then the candidate item fields, then context.
    item: the subset of ``categorical`` that describes the candidate item (used for
      item-only embeddings and target attention).
    numeric: names of float columns.
    sequences: name -> vocabulary it shares (a categorical column name), e.g.
      ``{"cate_his": "cate_id"}``.
    max_len: padded length of every sequence column.
    fm_sequences: (column, vocabulary) of behaviour sequences from other surfaces that only the
      foundation model reads (its information edge); same shape, padding and vocabulary sharing
      as ``sequences``. Real-data loaders leave it empty.
    """

    categorical: tuple[str, ...]
    item: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    sequences: tuple[tuple[str, str], ...] = ()
    max_len: int = 50
    fm_sequences: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        unknown_items = set(self.item) - set(self.categorical)
        if unknown_items:
            raise ValueError(f"item fields {sorted(unknown_items)} are not categorical columns.")
        for field in ("sequences", "fm_sequences"):
            for seq, vocab in getattr(self, field):
                if vocab not in self.categorical:
                    raise ValueError(
                        f"{field} entry {seq!r} shares vocabulary {vocab!r}, which is not a categorical column."
                    )
        names = list(self.categorical) + list(self.numeric) + [s for s, _ in self.all_sequences]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"schema names {repeated} more than once; every column needs its own name.")

    @property
    def all_sequences(self) -> tuple[tuple[str, str], ...]:
        """``sequences`` then ``fm_sequences``: every (N, max_len) column."""
        return self.sequences + self.fm_sequences

    @property
    def query_fields(self) -> tuple[str, ...]:
        """The item fields whose vocabulary a behaviour sequence shares (all item fields if none does):
        the candidate's identity in the history's space (the query of target attention)."""
        shared = {vocab for _, vocab in self.sequences + self.fm_sequences}
        return tuple(c for c in self.item if c in shared) or tuple(self.item)

    @property
    def sequence_vocab(self) -> dict[str, str]:
        return dict(self.sequences)

    def to_json(self) -> dict:
        return {
            "categorical": list(self.categorical),
            "item": list(self.item),
            "numeric": list(self.numeric),
            "sequences": [list(p) for p in self.sequences],
            "max_len": self.max_len,
            "fm_sequences": [list(p) for p in self.fm_sequences],
        }

    @classmethod
    def from_json(cls, d: dict) -> Schema:
        return cls(
            tuple(d["categorical"]),
            tuple(d["item"]),
            tuple(d["numeric"]),
            tuple(tuple(p) for p in d["sequences"]),
            int(d["max_len"]),
            tuple(tuple(p) for p in d.get("fm_sequences", ())),  # absent in caches written before it existed
        )


@dataclasses.dataclass
class EventTable:
    """An encoded event table (see module docstring). ``columns`` maps names to arrays."""

    schema: Schema
    columns: dict[str, np.ndarray]
    vocab_sizes: dict[str, int]  # categorical column -> size including PAD and OOV
    name: str = "events"
    # provenance (source, counts, ...); numpy-array entries (e.g. item embeddings) are side arrays
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        needed = (
            list(BASE_COLUMNS)
            + list(self.schema.categorical)
            + list(self.schema.numeric)
            + [s for s, _ in self.schema.all_sequences]
        )
        missing = [c for c in needed if c not in self.columns]
        if missing:
            raise ValueError(f"event table {self.name!r} lacks columns {missing}.")
        n = len(self.columns["label"])
        for c in needed:
            if len(self.columns[c]) != n:
                raise ValueError(f"column {c!r} has {len(self.columns[c])} rows, expected {n}.")
        for s, _ in self.schema.all_sequences:
            if self.columns[s].ndim != 2 or self.columns[s].shape[1] != self.schema.max_len:
                raise ValueError(
                    f"sequence column {s!r} must have shape (N, {self.schema.max_len}), got {self.columns[s].shape}."
                )
        for c in self.schema.categorical:
            if c not in self.vocab_sizes:
                raise ValueError(f"no vocabulary size for categorical column {c!r}.")

    def __len__(self) -> int:
        return len(self.columns["label"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def rows(self, split: str) -> np.ndarray:
        """Row indices of a split ('train', 'valid', 'test'), in time order within users."""
        return np.flatnonzero(np.asarray(self.columns["split"]) == SPLITS[split])

    @property
    def index_columns(self) -> frozenset[str]:
        """The categorical and sequence columns (integer indices; int32 in batches)."""
        return frozenset(self.schema.categorical) | {s for s, _ in self.schema.all_sequences}

    def take(self, index: np.ndarray, names=None) -> dict[str, np.ndarray]:
        """A batch: the columns ``names`` (default: every column) at the given rows, reading only those
        rows of memory maps; the :attr:`index_columns` as int32 whatever their stored type."""
        index, ints = np.asarray(index), self.index_columns
        names = self.columns if names is None else names
        return {n: np.asarray(self.columns[n][index], np.int32 if n in ints else None) for n in names}

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write arrays and meta.json to ``directory`` atomically (temp dir, then rename)."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            for name, col in self.columns.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(col), allow_pickle=False)
            arrays = {k: v for k, v in self.info.items() if isinstance(v, np.ndarray)}
            for name, arr in arrays.items():
                np.save(tmp / f"info.{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            info = {k: v for k, v in self.info.items() if k not in arrays}
            write_meta(
                tmp,
                self.schema,
                self.vocab_sizes,
                sorted(self.columns),
                len(self),
                self.name,
                {**info, INFO_ARRAYS: sorted(arrays)},
            )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> EventTable:
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} is not an event-table cache (no meta.json).")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: unsupported cache format {meta.get('format')!r}; delete the directory to rebuild it."
            )
        columns = {
            name: np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            for name in meta["columns"]
        }
        info = dict(meta.get("info", {}))
        for name in info.pop(INFO_ARRAYS, []):
            info[name] = np.load(directory / f"info.{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        return cls(Schema.from_json(meta["schema"]), columns, meta["vocab_sizes"], meta["name"], info)


def write_meta(
    directory: Path, schema: Schema, vocab_sizes: dict, columns: list[str], rows: int, name: str, info: dict
) -> None:
    """Write meta.json of an event-table directory (the arrays are ``<column>.npy`` beside it)."""
    meta = {
        "format": FORMAT_VERSION,
        "name": name,
        "rows": int(rows),
        "schema": schema.to_json(),
        "vocab_sizes": {k: int(v) for k, v in vocab_sizes.items()},
        "columns": list(columns),
        "info": info,
    }
    (Path(directory) / "meta.json").write_text(json.dumps(meta, indent=2))


def batches(
    table: EventTable,
    rows: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield dict batches of ``table`` over ``rows`` (optionally shuffled, deterministic by seed).

    Only the rows of one batch are read at a time, so memory-mapped tables stream.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    rows = np.asarray(rows)
    if shuffle:
        rows = np.random.default_rng(seed).permutation(rows)
    stop = len(rows) - (len(rows) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        chunk = rows[start : start + batch_size]
        order = np.argsort(chunk, kind="stable")  # sequential reads from the memory maps
        batch = table.take(chunk[order])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        yield {k: v[inverse] for k, v in batch.items()}


class HistoryIndex:
    """Point-in-time lookup: the same user's last L eligible events strictly before a given event.

    Built once from (users, times) of all events (O(N log N)); ``lookup(rows, L)``
    answers for any subset of events, so a batch's histories are computed on the fly
    without an (N, L) array in memory. An event never sees itself, events at the same
    time, or later events. ``eligible`` (N,) bool restricts which events may appear in
    histories (e.g. only the events the FM logged).
    """

    def __init__(self, users: np.ndarray, times: np.ndarray, eligible: np.ndarray | None = None):
        users = np.asarray(users)  # a reference: a memory-mapped column stays on disk
        self._users = users if np.issubdtype(users.dtype, np.integer) else users.astype(np.int64)
        times = np.asarray(times)
        n = len(users)
        eligible = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
        _, time_rank = np.unique(times, return_inverse=True)
        self._stride = np.int64(n + 1)
        self._time_rank = time_rank.astype(np.int32 if n < 2**31 else np.int64).ravel()
        cand = np.flatnonzero(eligible)
        key = self._keys(cand)
        order = np.argsort(key, kind="stable")
        self._cand = cand[order]
        self._cand_key = key[order]  # sorted (user, time) keys of the eligible events
        # Each user with eligible events, sorted, and where its block of _cand starts (one more entry:
        # len(_cand)); a user without any starts where the next larger one does.
        cand_users = self._cand_key // self._stride  # sorted
        starts = np.flatnonzero(np.r_[True, cand_users[1:] != cand_users[:-1]]) if len(cand_users) else cand_users
        self._user_ids = cand_users[starts]
        self._user_start = np.append(starts, len(self._cand))

    def _keys(self, rows: np.ndarray) -> np.ndarray:
        """(user, time rank) of ``rows`` as one int64 key that sorts lexicographically."""
        key = self._users[rows].astype(np.int64)
        key *= self._stride
        key += self._time_rank[rows]
        return key

    def lookup(self, rows: np.ndarray, length: int) -> np.ndarray:
        """(len(rows), length) int64 event indices, oldest first, pre-padded with -1."""
        rows = np.asarray(rows, np.int64)
        end = np.searchsorted(self._cand_key, self._keys(rows), side="left")
        start = self._user_start[np.searchsorted(self._user_ids, self._users[rows], side="left")]
        pos = end[:, None] - length + np.arange(length)[None, :]
        valid = pos >= start[:, None]
        if len(self._cand) == 0:
            return np.full((len(rows), length), -1, np.int64)
        return np.where(valid, self._cand[np.clip(pos, 0, len(self._cand) - 1)], -1)
