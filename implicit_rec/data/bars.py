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

Reading and memory: the files are streamed. With pyarrow installed (the ``parquet`` extra) they are
parsed by ``pyarrow.csv``'s streaming reader in batches of ``ARROW_BLOCK_BYTES`` (histories read as
bytes) and the histories split by :func:`~.sequences.token_runs` (whole-array SWAR digit parsing,
two batches at once in threads), counted and encoded as flat token arrays; anything irregular there
(a parse error, an empty required cell, a bad token, a double quote anywhere in a file) makes the
loader read again with the csv module in chunks of ``chunk_rows``, whose errors name the file, line
and column — so every error message is the csv reader's. Columns go to disk as they are read,
by appending ``write()`` calls (``_AppendFile``: a third of the kernel time of writing through
memory maps): raw ids to flat files
(in the narrowest integer type that holds them), histories straight into their final ``.npy`` (raw
while the vocabularies are still being counted, encoded once they are known — for releases without
a timestamp the training rows are the first rows of train.csv — the raw ones then encoded in place,
memory-mapped block by block). Encoded categorical and history columns are stored in the narrowest
signed type that holds their vocabulary's indices (``Vocab.index_dtype``: int8, int16 or int32;
batches widen them to int32); on the 3-million-row synthetic benchmark this cut the bytes written
from 2.2 GB to 0.8 GB. Without a timestamp, time, split and day have closed forms (row order) and
are written block by block, like the dense user ids (a lookup table); nothing is sorted. The table's
columns are read-only memory maps of ``.npy`` files in a temporary directory that is removed at once
(the maps keep the data readable on POSIX systems until the table is dropped; ``EventTable.save``
copies them). Peak memory hardly grows with the rows: measured 276 MiB at 313k TaobaoAd rows and
321 MiB at 3 million (about 20 bytes a row more, and a few batches), whose histories take 0.6 GB on
disk (1.8 GB as int32). A release whose file is not in time order (KuaiVideo) is sorted in memory.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from .cells import MISSING, order_keys, parse_floats, parse_ints, parse_labels, parse_times
from .csv_reader import check_columns, read_csv_chunks, read_header, scan_csv
from .errors import DataError
from .events import OOV, PAD, EventTable, Schema
from .sequences import PAD_TOKEN, pad_runs, split_sequences, token_runs
from .vocabulary import TokenCounter, Vocab, fit_vocab, narrowest_int

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
BLOCK = 65_536  # rows per block when stored columns are counted and encoded (bounds temporaries)
ARROW_BLOCK_BYTES = 4 << 20  # bytes of CSV per batch of pyarrow's streaming reader
DENSE_ID_LIMIT = 1 << 24  # user ids below this are made dense by a lookup table (else np.unique in memory)
CONVERT_THREADS = 2  # batches converted at once (NumPy releases the GIL in its loops)


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
    work = Path(tempfile.mkdtemp(prefix=f"implicit-rec-{rel.name}-"))
    try:
        return _build(rel, files, work, counts, max_len, valid_fraction, n_train_days, chunk_rows)
    finally:  # the arrays stay readable through their memory maps (POSIX)
        shutil.rmtree(work, ignore_errors=True)


def _build(rel, files, work, counts, max_len, valid_fraction, n_train_days, chunk_rows):
    raw = _read(rel, files, max_len, chunk_rows, work, valid_fraction, counts)
    n = raw.rows
    rows = (_TimeOrder if rel.time else _RowOrder)(raw, valid_fraction, n_train_days)
    if rows.counts["train"] == 0:
        raise DataError(
            files[0],
            None,
            None,
            "no training rows remain after carving out validation "
            "(too many rows share the last timestamps?); lower "
            "valid_fraction.",
        )
    if raw.counted_rows != rows.counts["train"]:  # counted while reading: the train prefix (row order)
        if raw.vocabs is not None:  # pragma: no cover - the prefix is known exactly before reading
            raise AssertionError("histories were encoded with vocabularies of other training rows")
        raw.count(rel, rows.train())
    vocabs = raw.vocabs or {c: fit_vocab(raw.counters[c], counts[c]) for c in rel.categorical}
    out = _NpyColumns(work / "table")
    with out.writer("user", np.int64, (n,)) as w:
        for block in _dense_id_blocks(raw.store, rel.user):
            w.write(block)
    for name, dtype in (("time", np.int64), ("day", np.int16), ("split", np.int8)):
        with out.writer(name, dtype, (n,)) as w:
            for a in range(0, n, BLOCK):
                w.write(rows.block(name, a, min(a + BLOCK, n)))
    _copy_column(out, raw.store, "label", np.float32, n)
    missing, oov = {}, {}
    for c in rel.categorical:
        missing[c] = oov[c] = 0
        with out.writer(c, vocabs[c].index_dtype, (n,)) as w:
            for block in raw.store.blocks(c):
                missing[c] += int(np.count_nonzero(block == MISSING))
                encoded = vocabs[c].encode(block)
                oov[c] += int(np.count_nonzero(encoded[rows.test(w.rows, w.rows + len(block))] == OOV))
                w.write(encoded)
    missing = {c: m for c, m in missing.items() if m}
    for c in rel.numeric:
        _copy_column(out, raw.store, c, np.float32, n)
    for s, v in rel.sequences:
        if s in raw.sequences:
            out.add(s, raw.sequences[s].finish(vocabs[v]))
            continue
        with out.writer(s, vocabs[v].index_dtype, (n, max_len)) as w:
            for block in raw.store.blocks(s):
                w.write(vocabs[v].encode_sequences(block))
    raw.store.close()
    columns = out.open()
    if rows.order is not None:  # a file not in time order: sorted in memory
        columns = {k: np.asarray(v)[rows.order] for k, v in columns.items()}
    n_test = rows.counts["test"]
    info = {
        "source": rel.name,
        "files": [str(f) for f in files],
        "rows": rows.counts,
        "time": f"{rows.time_note} from column {rel.time!r}" if rel.time else "row order (train.csv, then test.csv)",
        "vocab": VOCAB_NOTE,
        "min_count": counts,
        "max_len": max_len,
        "valid_fraction": valid_fraction,
        "n_train_days": n_train_days,
        "numeric_transforms": {c: "log1p" for c in rel.numeric},
        "missing_cells": missing,
        "unused_columns": list(rel.unused),
        "test_oov_rate": {c: round(oov[c] / n_test, 6) for c in rel.categorical} if n_test else {},
    }
    schema = Schema(
        categorical=rel.categorical, item=rel.item, numeric=rel.numeric, sequences=rel.sequences, max_len=max_len
    )
    sizes = {c: vocabs[c].size for c in rel.categorical}
    return EventTable(schema, columns, sizes, rel.name, info), vocabs


class _RowOrder:
    """time, split and day of a release without a timestamp, in closed form block by block.

    time = row order; train.csv's rows are train, then the last ``valid_fraction`` of them (rounded)
    validation (what :func:`tail_by_time` gives for distinct times); day = row * n_train_days //
    (train.csv rows) (what :func:`time_windows` gives); test.csv's rows are test, day n_train_days.
    """

    order = None
    time_note = None

    def __init__(self, raw, valid_fraction: float, n_train_days: int):
        self.n0, self.n, self.days = raw.file_rows[0], raw.rows, n_train_days
        self.n_fit = self.n0 - int(round(valid_fraction * self.n0))
        self.counts = {"train": self.n_fit, "valid": self.n0 - self.n_fit, "test": self.n - self.n0}

    def train(self) -> np.ndarray:
        return np.arange(self.n) < self.n_fit

    def test(self, a: int, z: int) -> slice:
        return slice(max(self.n0 - a, 0), z - a)

    def block(self, name: str, a: int, z: int) -> np.ndarray:
        rows = np.arange(a, z, dtype=np.int64)
        if name == "time":
            return rows
        if name == "split":
            return (rows >= self.n_fit).astype(np.int8) + (rows >= self.n0)
        return np.where(rows < self.n0, rows * self.days // max(self.n0, 1), self.days).astype(np.int16)


class _TimeOrder:
    """time, split and day of a release with a timestamp column, in memory (see the module docstring)."""

    def __init__(self, raw, valid_fraction: float, n_train_days: int):
        n = raw.rows
        file_idx = np.repeat(np.arange(len(raw.file_rows), dtype=np.int8), raw.file_rows)
        self.time, self.time_note = order_keys(raw.time)
        split = np.where(file_idx == 0, 0, 2).astype(np.int8)
        split[tail_by_time(self.time, np.flatnonzero(split == 0), valid_fraction)] = 1
        self.split, self.day = split, assign_days(self.time, split, n_train_days)
        self.counts = split_counts(split)
        order = np.lexsort((self.time, file_idx))
        self.order = order if (order != np.arange(n)).any() else None

    def train(self) -> np.ndarray:
        return self.split == 0

    def test(self, a: int, z: int) -> np.ndarray:
        return self.split[a:z] == 2

    def block(self, name: str, a: int, z: int) -> np.ndarray:
        return getattr(self, name)[a:z]


def _dense_id_blocks(store, name: str) -> Iterator[np.ndarray]:
    """:func:`dense_ids` of a stored column, block by block (a lookup table when the ids are small)."""
    lo, hi = 0, -1
    for block in store.blocks(name):
        if len(block):
            lo, hi = min(lo, int(block.min())), max(hi, int(block.max()))
    if lo < 0 or hi >= DENSE_ID_LIMIT:
        yield dense_ids(store.read(name))
        return
    present = np.zeros(hi + 1, bool)
    for block in store.blocks(name):
        present[block] = True
    table = np.cumsum(present, dtype=np.int64) + 1  # the k-th distinct id (k from 1) -> k + 1
    for block in store.blocks(name):
        yield table[block]


def _copy_column(out, store, name: str, dtype, n: int) -> None:
    with out.writer(name, dtype, (n,)) as w:
        for block in store.blocks(name):
            w.write(block)


class _Fallback(Exception):
    """The fast reader met something irregular: read again with the exact (csv-module) reader."""


class _AppendFile:
    """A file written by appending ``write()`` calls of whole arrays (unbuffered: each goes straight to the kernel).

    Measured on ext4 (this project's 2-core build machine, a virtual machine): appending 2-4 GB in
    420 KiB pieces through memory maps of the bytes being appended (one page fault per 4 KiB page)
    costs 2-8 times the system time of ``write()``, which is cheapest without reserving the space
    first (``posix_fallocate``); on the 3-million-row TaobaoAd benchmark the loader took 30-40% less
    wall time. Handing the writes to a background thread did not help (measured), so it writes in line.
    """

    def __init__(self, path: Path, append: bool = False):
        self.path = path
        self.file: io.FileIO | None = io.FileIO(path, "a" if append else "w")

    def write(self, values) -> None:
        data = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
        view = memoryview(data)
        while len(view):  # a raw write may take fewer bytes than offered
            view = view[self.file.write(view) :]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _map_rows(path: Path, dtype, shape: tuple, offset: int, start: int, stop: int, mode: str = "r") -> np.ndarray:
    """Rows start..stop of a file of (rows, *shape) ``dtype`` values from byte ``offset``, memory-mapped."""
    per_row = np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))
    return np.memmap(path, dtype, mode, offset=offset + start * per_row, shape=(stop - start, *shape))


class _RawStore:
    """Raw columns appended chunk by chunk to flat files in ``directory``; read back in blocks.

    An integer column is stored in the narrowest signed type that holds its values so far (int8,
    int16, int32 or int64; rewritten wider when a chunk needs it), and read back in its own type.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.files, self.dtypes, self.shapes, self.rows, self.declared = {}, {}, {}, {}, {}

    def append(self, name: str, values: np.ndarray) -> None:
        values = np.asarray(values)
        self.declared.setdefault(name, values.dtype)
        if values.dtype.kind == "i":  # the narrowest type holding this chunk and the earlier ones
            need = narrowest_int(int(values.min()), int(values.max())) if len(values) else np.dtype(np.int8)
            values = values.astype(np.promote_types(need, self.dtypes.get(name, need)), copy=False)
        if name not in self.files:
            self.dtypes[name], self.shapes[name], self.rows[name] = values.dtype, values.shape[1:], 0
            self.files[name] = _AppendFile(self.directory / name)
        elif values.dtype != self.dtypes[name]:
            wide = np.promote_types(values.dtype, self.dtypes[name])
            if wide != self.dtypes[name]:  # e.g. int32 tokens, then one chunk needs int64: rewrite
                self._widen(name, wide)
            values = values.astype(wide)
        self.files[name].write(values)
        self.rows[name] += len(values)

    def _widen(self, name: str, dtype) -> None:
        self.files[name].close()
        old = np.fromfile(self.directory / name, self.dtypes[name])
        self.files[name] = _AppendFile(self.directory / name)
        self.files[name].write(old.astype(dtype))
        self.dtypes[name] = np.dtype(dtype)

    def blocks(self, name: str, rows: int = BLOCK) -> Iterator[np.ndarray]:
        """The column in blocks of ``rows`` rows (memory-mapped, read-only; never the whole column at once)."""
        for start in range(0, self.rows[name], rows):
            stop = min(start + rows, self.rows[name])
            block = _map_rows(self.directory / name, self.dtypes[name], self.shapes[name], 0, start, stop)
            yield np.asarray(block).astype(self.declared[name], copy=False)

    def read(self, name: str) -> np.ndarray:
        n = self.rows[name] * int(np.prod(self.shapes[name], dtype=np.int64))
        values = np.fromfile(self.directory / name, self.dtypes[name], n).reshape((-1, *self.shapes[name]))
        return values.astype(self.declared[name], copy=False)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _NpyColumns:
    """Final columns written as ``NAME.npy`` block by block, then opened as read-only memory maps."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.paths: dict[str, Path] = {}

    @contextlib.contextmanager
    def writer(self, name: str, dtype, shape: tuple):
        path = self.directory / f"{name}.npy"
        header = _npy_header(dtype, shape)
        f = _AppendFile(path)
        try:
            f.write(np.frombuffer(header, np.uint8))
            writer = _BlockWriter(f, np.dtype(dtype))
            yield writer
        finally:
            f.close()
        if writer.rows != shape[0]:
            raise AssertionError(f"{name}: wrote {writer.rows} rows, expected {shape[0]}")  # pragma: no cover
        self.paths[name] = path

    def add(self, name: str, path: Path) -> None:
        self.paths[name] = path

    def open(self) -> dict[str, np.ndarray]:
        return {k: np.load(p, mmap_mode="r", allow_pickle=False) for k, p in self.paths.items()}


class _BlockWriter:
    def __init__(self, f: _AppendFile, dtype):
        self.f, self.dtype, self.rows = f, dtype, 0

    def write(self, block: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(block, self.dtype))
        self.rows += len(block)


class _Raw:
    """What :func:`_read` returns: times in memory (if the release has them), the other columns in a :class:`_RawStore`.

    ``counters``: one TokenCounter per vocabulary, filled while reading with the first
    ``counted_rows`` rows (the training rows, when they are a known prefix of train.csv).
    """

    def __init__(self, store, time, file_rows, counters, counted_rows, sequences, vocabs):
        self.store, self.time, self.file_rows = store, time, file_rows
        self.counters, self.counted_rows = counters, counted_rows
        self.sequences, self.vocabs = sequences, vocabs  # {name: _SeqFile} unless stored raw; early vocabs

    @property
    def rows(self) -> int:
        return int(sum(self.file_rows))

    def count(self, rel: Release, train: np.ndarray) -> None:
        """Count the vocabularies over the rows where ``train`` (a pass over the stored columns)."""
        self.counters = {c: TokenCounter() for c in rel.categorical}
        for c in rel.categorical:
            self._count_column(c, self.counters[c], train, TokenCounter.add)
        for s, v in rel.sequences:
            self._count_column(s, self.counters[v], train, TokenCounter.add_sequences)
        self.counted_rows = int(train.sum())

    def blocks(self, name: str) -> Iterator[np.ndarray]:
        if name not in self.sequences:
            yield from self.store.blocks(name)
            return
        yield from self.sequences[name].raw_blocks()

    def _count_column(self, name, counter, train, add):
        start = 0
        for block in self.blocks(name):
            add(counter, block[train[start : start + len(block)]])
            start += len(block)


def _read(
    rel: Release, files, max_len: int, chunk_rows: int, work: Path, valid_fraction: float = 0.0, min_count=None
) -> _Raw:
    """Parse the files chunk by chunk into a :class:`_Raw` (bounded memory: columns go to disk).

    With pyarrow installed the files are parsed by ``pyarrow.csv`` (streaming, in threads) and the
    histories by :func:`~.sequences.tokens_from_buffer`; anything irregular (a parse error, a
    null where a value is required, a non-finite number, a bad token, quotes in the file) makes
    it read everything again with the csv module, whose errors name the file, line and column.
    When the release has no time column the training rows are the first rows of train.csv: the
    vocabularies are counted while reading, and once they are complete the later rows' histories
    are encoded as they are read (the earlier ones in place at the end).
    """
    for path in files:
        check_columns(path, read_header(path, rel.columns), rel.columns)
    scans = [scan_csv(path) for path in files]
    quoted = any(q for _, q in scans)
    plan = {"n_fit": None, "lines": scans[0][0], "min_count": None}
    if rel.time is None:  # train rows = the first n_fit rows (row order is time order)
        lines = scans[0][0]
        plan["n_fit"] = lines - int(round(valid_fraction * lines)) if valid_fraction > 0 else lines
        plan["min_count"] = None if quoted else min_count  # quoted newlines: lines are not rows
    sources = [] if quoted or _arrow_csv() is None else [lambda: _arrow_chunks(_arrow_csv(), rel, files, max_len)]
    sources.append(lambda: _csv_chunks(rel, files, max_len, chunk_rows))
    for i, source in enumerate(sources):
        for wide in (False, True):
            directory = work / f"read{i}{int(wide)}"
            try:
                return _read_with(rel, files, directory, source(), plan, max_len, wide)
            except _Fallback as e:
                shutil.rmtree(directory, ignore_errors=True)
                if i + 1 == len(sources) and wide:  # pragma: no cover - the csv reader raises DataError
                    raise AssertionError(f"unexpected fallback from the csv reader: {e}") from None
                if not isinstance(e, _Wide):
                    break
    raise AssertionError("unreachable")  # pragma: no cover


def _read_with(rel: Release, files, directory: Path, chunks, plan: dict, max_len: int, wide: bool) -> _Raw:
    """Consume ``chunks`` into a _Raw; int64 tokens raise _Wide unless ``wide`` (then they are stored raw)."""
    store = _RawStore(directory)
    sequences = {} if wide else {s: _SeqFile(directory / f"{s}.npy", max_len) for s, _ in rel.sequences}
    counters = {c: TokenCounter() for c in rel.categorical}
    shared = dict(rel.sequences)
    n_fit, min_count, vocabs = plan["n_fit"], plan["min_count"], None
    times, file_rows = [], [0] * len(files)
    start = 0
    try:
        for fi, chunk in chunks:
            n = len(chunk["label"])
            store.append("label", chunk["label"])
            if rel.time:
                times.append(chunk["time"])
            fit = 0 if n_fit is None or fi > 0 else max(0, min(n, n_fit - start))
            for c, v in chunk["cat"].items():
                store.append(c, v)
                if fit:
                    counters[c].add(v[:fit])
            runs = {s: v if isinstance(v, tuple) else _runs_of(v) for s, v in chunk["seq"].items()}
            for c, v in chunk["num"].items():
                store.append(c, np.log1p(v).astype(np.float32))  # the final column
            for s, (values, ends) in runs.items():
                if fit:
                    counters[shared[s]].add(values[: ends[fit]])
            if vocabs is None and min_count is not None and start + n >= n_fit and not wide:
                vocabs = {c: fit_vocab(counters[c], min_count[c]) for c in rel.categorical}
            for s, (values, ends) in runs.items():
                if wide:
                    store.append(s, pad_runs(values, ends, max_len, PAD_TOKEN))
                    continue
                if values.dtype != np.int32:
                    raise _Wide(s)
                raw = n if vocabs is None else max(0, min(n, n_fit - start)) if fi == 0 else 0
                if raw:
                    sequences[s].append_raw(pad_runs(values[: ends[raw]], ends[: raw + 1], max_len, PAD_TOKEN))
                if raw < n:
                    vocab = vocabs[shared[s]]
                    block = pad_runs(vocab.encode_sequences(values[ends[raw] :]), ends[raw:] - ends[raw], max_len, PAD)
                    sequences[s].append_encoded(block, vocab.index_dtype)
            file_rows[fi] += n
            start += n
    except BaseException:
        store.close()
        for f in sequences.values():
            f.close()
        raise
    if vocabs is not None and file_rows[0] != plan["lines"]:  # pragma: no cover - lines are rows without quotes
        raise _Fallback("train.csv has a different number of rows than lines")
    counted = 0 if n_fit is None else min(n_fit, file_rows[0])
    return _Raw(store, np.concatenate(times) if rel.time else None, file_rows, counters, counted, sequences, vocabs)


def _runs_of(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, ends) of padded (n, max_len) raw tokens: the tokens flat, and row i's at values[ends[i]:ends[i + 1]]."""
    real = tokens != PAD_TOKEN
    return tokens[real], np.concatenate([[0], np.cumsum(real.sum(axis=1))])


class _Wide(_Fallback):
    """A history token needs int64: read again, storing the raw histories as int64."""


HEADER_BYTES = 256  # fixed .npy header of the history files (written by _SeqFile.finish)


class _SeqFile:
    """A final (rows, max_len) history column written row block by row block into ``NAME.npy``.

    Raw blocks (tokens, while the vocabularies are still being counted) come first, stored in the
    narrowest signed integer type that holds them (the rows so far are rewritten wider if a later
    block needs it); then encoded blocks, in the vocabulary's :attr:`~.vocabulary.Vocab.index_dtype`.
    :meth:`finish` encodes the raw rows in place and, where the raw type is the wider one, moves
    every row down to its place in one (rows, max_len) array of the index type. On the synthetic
    TaobaoAd release (100 categories, 1000 brands, 4 behaviour types) the histories take a third of
    the bytes of int32 (int8, int16, int8): they were three quarters of what the loader wrote.
    """

    def __init__(self, path: Path, max_len: int):
        self.path, self.max_len = path, max_len
        self.raw_rows = self.encoded_rows = 0
        self.raw_dtype = np.dtype(np.int8)
        self.dtype: np.dtype | None = None  # the index type, fixed by the first encoded block
        self.f = _AppendFile(path)
        self.f.write(np.zeros(HEADER_BYTES, np.uint8))  # the .npy header, once the shape is known

    @property
    def rows(self) -> int:
        return self.raw_rows + self.encoded_rows

    def append_raw(self, block: np.ndarray) -> None:
        if self.encoded_rows:  # pragma: no cover - guarded by _read_with
            raise AssertionError("raw history blocks must precede encoded ones")
        if len(block):
            need = narrowest_int(int(block.min()), int(block.max()))
            if need.itemsize > self.raw_dtype.itemsize:
                self._widen(need)
        self.f.write(block.astype(self.raw_dtype, copy=False))
        self.raw_rows += len(block)

    def append_encoded(self, block: np.ndarray, dtype) -> None:
        if self.dtype is None:
            self.dtype = np.dtype(dtype)
            if self.raw_dtype.itemsize < self.dtype.itemsize:
                self._widen(self.dtype)
        self.f.write(block.astype(self.dtype, copy=False))
        self.encoded_rows += len(block)

    def raw_blocks(self) -> Iterator[np.ndarray]:
        """The raw rows as int32 blocks (before :meth:`finish`; only while no row is encoded)."""
        self.close()
        for a in range(0, self.raw_rows, BLOCK):
            z = min(a + BLOCK, self.raw_rows)
            yield np.asarray(_map_rows(self.path, self.raw_dtype, (self.max_len,), HEADER_BYTES, a, z), np.int32)

    def _widen(self, dtype) -> None:
        """Rewrite the raw rows so far as ``dtype`` (block by block, into a new file)."""
        self.f.close()
        wider = self.path.with_suffix(".wide")
        f = _AppendFile(wider)
        f.write(np.zeros(HEADER_BYTES, np.uint8))
        for a in range(0, self.raw_rows, BLOCK):
            z = min(a + BLOCK, self.raw_rows)
            f.write(np.asarray(_map_rows(self.path, self.raw_dtype, (self.max_len,), HEADER_BYTES, a, z), dtype))
        f.close()
        wider.replace(self.path)
        self.raw_dtype = np.dtype(dtype)
        self.f = _AppendFile(self.path, append=True)

    def close(self) -> None:
        self.f.close()

    def finish(self, vocab: Vocab) -> Path:
        """Encode the raw rows in place (memory-mapped block by block), write the header."""
        self.f.close()
        if self.dtype is None:
            self.dtype = vocab.index_dtype
            if self.raw_dtype.itemsize < self.dtype.itemsize:
                self._widen(self.dtype)
                self.f.close()
        shape, dtype = (self.max_len,), self.dtype
        in_place = self.raw_dtype == dtype
        for a in range(0, self.raw_rows, BLOCK):  # rows move down (never up): read before overwritten
            z = min(a + BLOCK, self.raw_rows)
            raw = _map_rows(self.path, self.raw_dtype, shape, HEADER_BYTES, a, z, "r+" if in_place else "r")
            out = raw if in_place else _map_rows(self.path, dtype, shape, HEADER_BYTES, a, z, "r+")
            vocab.encode_sequences(raw if in_place else np.array(raw), out=out)
            del raw, out  # unmapped: the pages leave this process (the kernel writes them back)
        if not in_place:
            encoded_at = HEADER_BYTES + self.raw_rows * self.max_len * self.raw_dtype.itemsize
            for a in range(0, self.encoded_rows, BLOCK):
                z = min(a + BLOCK, self.encoded_rows)
                block = np.array(_map_rows(self.path, dtype, shape, encoded_at, a, z))
                out = _map_rows(self.path, dtype, shape, HEADER_BYTES, self.raw_rows + a, self.raw_rows + z, "r+")
                out[...] = block
                del out
            os.truncate(self.path, HEADER_BYTES + self.rows * self.max_len * dtype.itemsize)
        with open(self.path, "r+b") as f:
            f.write(_npy_header(dtype, (self.rows, self.max_len)))
        return self.path


def _npy_header(dtype, shape: tuple) -> bytes:
    """A .npy version 1.0 header of exactly HEADER_BYTES bytes."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    text = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def _csv_chunks(rel: Release, files, max_len: int, chunk_rows: int):
    """(file index, parsed chunk) from the csv module; errors name the file, line and column."""
    fmt = None
    for fi, path in enumerate(files):
        for chunk in read_csv_chunks(path, rel.columns, chunk_rows):
            cells, w = chunk.cells, chunk.where
            parsed = {"label": parse_labels(cells[rel.label], w, rel.label), "cat": {}, "num": {}, "seq": {}}
            if rel.time:
                parsed["time"], fmt = parse_times(cells[rel.time], w, rel.time, fmt)
            for c in rel.categorical:
                parsed["cat"][c] = parse_ints(cells[c], w, c, allow_missing=c != rel.user)
            for c in rel.numeric:
                parsed["num"][c] = parse_floats(cells[c], w, c, minimum=0.0)
            for s, _ in rel.sequences:
                tokens = split_sequences(cells[s], max_len, w, s)
                fits = tokens.max(initial=0) <= np.iinfo(np.int32).max
                parsed["seq"][s] = tokens.astype(np.int32) if fits else tokens
            yield fi, parsed


def _arrow_csv():
    """``pyarrow.csv`` if it can be imported (the ``parquet`` extra), else None."""
    try:
        import pyarrow.csv as arrow_csv
    except ImportError:
        return None
    return arrow_csv


def _arrow_chunks(arrow_csv, rel: Release, files, max_len: int):
    """(file index, parsed chunk) from pyarrow's streaming CSV reader; _Fallback on anything irregular."""
    import pyarrow as pa

    types = {rel.label: pa.float64(), **{c: pa.int64() for c in rel.categorical}}
    types.update({c: pa.float64() for c in rel.numeric})
    types.update({s: pa.binary() for s, _ in rel.sequences})  # bytes: no UTF-8 validation
    if rel.time:
        types[rel.time] = pa.int64()
    with concurrent.futures.ThreadPoolExecutor(CONVERT_THREADS) as pool:
        pending: collections.deque = collections.deque()  # batches being converted, in file order
        for fi, path in enumerate(files):
            header = read_header(path, rel.columns)
            try:
                reader = arrow_csv.open_csv(
                    path,  # not a memory map: its pages would stay in the process's RSS
                    read_options=arrow_csv.ReadOptions(
                        column_names=header, skip_rows=1, block_size=ARROW_BLOCK_BYTES, use_threads=False
                    ),  # one parser thread: the conversions run in CONVERT_THREADS others
                    parse_options=arrow_csv.ParseOptions(ignore_empty_lines=False),
                    convert_options=arrow_csv.ConvertOptions(
                        include_columns=list(rel.columns),
                        column_types=types,
                        null_values=[""],
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
                rows = 0
                for batch in reader:
                    rows += batch.num_rows
                    pending.append((fi, pool.submit(_from_arrow, rel, batch, max_len)))
                    while len(pending) > CONVERT_THREADS:
                        done_fi, future = pending.popleft()
                        yield done_fi, future.result()
            except (pa.ArrowException, ValueError, TypeError) as e:  # the exact reader says what is wrong
                raise _Fallback(str(e)) from None
            if rows == 0:
                raise _Fallback("no data rows")
        while pending:
            done_fi, future = pending.popleft()
            yield done_fi, future.result()


def _from_arrow(rel: Release, batch, max_len: int) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    def column(name):
        return batch.column(batch.schema.get_field_index(name))

    def values(name):
        arr = column(name)
        if arr.null_count:
            raise _Fallback(f"empty {name}")
        return arr.to_numpy(zero_copy_only=False)

    label = values(rel.label)
    if not ((label == 0) | (label == 1)).all():
        raise _Fallback("label")
    parsed = {"label": label.astype(np.float32), "cat": {}, "num": {}, "seq": {}}
    if rel.time:
        parsed["time"] = values(rel.time).astype(np.int64)
    for c in rel.categorical:
        arr = column(c)
        if arr.null_count and c == rel.user:
            raise _Fallback("empty user")
        v = pc.fill_null(arr, MISSING).to_numpy(zero_copy_only=False) if arr.null_count else arr.to_numpy()
        if np.count_nonzero(v == MISSING) != arr.null_count:
            raise _Fallback("the MISSING sentinel")
        parsed["cat"][c] = v
    for c in rel.numeric:
        v = values(c)
        if not (np.isfinite(v) & (v >= 0)).all():
            raise _Fallback(c)
        parsed["num"][c] = v
    for s, _ in rel.sequences:
        arr = column(s)
        offsets_buf, data_buf = arr.buffers()[1:3]
        wide = pa.types.is_large_binary(arr.type)
        offsets = np.frombuffer(offsets_buf, np.int64 if wide else np.int32)[arr.offset : arr.offset + len(arr) + 1]
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        runs = token_runs(data, offsets, max_len)
        if runs is None:
            raise _Fallback(s)
        parsed["seq"][s] = runs
    return parsed


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
