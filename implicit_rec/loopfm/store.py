"""The historical representation store: FM embeddings logged at past requests, read point-in-time.

The FM runs once over the events it would have served (those from ``log_from`` on: after its own
training window), and each event's representation — computed from that event's features and
earlier history, never its label — is stored with its FM logit. A VM never runs the FM: for an
event at time t it reads the same user's last L logged embeddings from events strictly before t.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_directory, write_json_atomic
from ..data.events import EventTable, HistoryIndex
from ..models.training import pad_rows

KINDS = ("interaction", "item", "user")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported; choose one of {', '.join(KINDS)}.")


class HistoricalStore:
    """Logged FM outputs for a subset of a table's events, with a point-in-time history lookup.

    embeddings (M, d) float16/float32, logits (M,) float32, rows (M,) the table rows they belong to.
    """

    def __init__(
        self, table: EventTable, rows: np.ndarray, embeddings: np.ndarray, logits: np.ndarray, kind: str = "interaction"
    ):
        _check_kind(kind)
        rows = np.asarray(rows, np.int64)
        if not (len(rows) == len(embeddings) == len(logits)):
            raise ValueError("rows, embeddings and logits must have the same length.")
        self.kind = kind
        self.rows, self.embeddings, self.logits = rows, embeddings, np.asarray(logits, np.float32)
        self.slot = np.full(len(table), -1, np.int32 if len(rows) < 2**31 else np.int64)  # -1: not logged
        self.slot[rows] = np.arange(len(rows))
        logged = self.slot >= 0
        self.index = HistoryIndex(np.asarray(table["user"]), np.asarray(table["time"]), eligible=logged)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @classmethod
    def build(
        cls,
        fm_apply: Callable[[np.ndarray], dict],
        table: EventTable,
        rows: np.ndarray,
        *,
        kind: str = "interaction",
        dtype=np.float16,
        batch_size: int = 2048,
    ) -> HistoricalStore:
        """Run ``fm_apply(rows) -> {"logit", "interaction", "item", "user"}`` over ``rows`` and keep ``kind``.

        ``fm_apply`` always gets ``batch_size`` rows (the last chunk padded by repeating its last row,
        the padding's outputs dropped), so a jitted ``fm_apply`` compiles once."""
        return cls.build_parts([(fm_apply, rows)], table, kind=kind, dtype=dtype, batch_size=batch_size)

    @classmethod
    def build_parts(
        cls,
        parts: list[tuple[Callable[[np.ndarray], dict], np.ndarray]],
        table: EventTable,
        *,
        kind: str = "interaction",
        dtype=np.float16,
        batch_size: int = 2048,
        directory: str | os.PathLike | None = None,
        key: str = "",
        checkpoint_seconds: float = 30.0,
    ) -> HistoricalStore:
        """One store from ``parts``, ``[(fm_apply, rows), ...]``: each part's rows logged by its own FM
        (out-of-fold logging), in the order given, as :meth:`build` logs one.

        The outputs are written in place into arrays of the final size, so the peak memory is the
        store's own (M, d) embeddings, not chunk lists plus their concatenation per part and again
        across parts (at the ``large`` preset's size, a 3.6 GB store: 5.3 GB above the table's columns,
        11.1 GB before; ``python -m benchmarks.store_memory``). ``kind`` is checked before any FM runs.

        ``directory``: build on disk and resumably (the logging pass is 15 to 40 minutes at the
        ``large`` preset on 2 cores). The arrays are memory-mapped ``.npy`` files there; at most every
        ``checkpoint_seconds`` they are flushed and ``state.json`` records the events done and what
        they were computed for: ``key`` (the caller's identity of the FMs, e.g. a digest of their
        parameters), the rows, ``kind``, ``dtype`` and ``batch_size``. A later call with the same
        arguments continues after the last recorded chunk (its result equals an uninterrupted
        build's); a record for anything else, or a damaged one, is discarded and the pass starts
        again. When complete, ``state.json`` is removed and the directory is a saved store
        (:meth:`load` reads it); the store returned maps its files."""
        _check_kind(kind)
        parts = [(apply, np.asarray(rows, np.int64)) for apply, rows in parts]
        total = sum(len(rows) for _, rows in parts)
        if total == 0:
            raise ValueError("the store has no rows to log: every part's rows are empty.")
        rows = np.concatenate([rows for _, rows in parts])
        if directory is None:
            out = _Outputs(total, np.dtype(dtype))
        else:
            identity = {
                "format": _STATE_FORMAT,
                "key": str(key),
                "kind": kind,
                "dtype": np.dtype(dtype).name,
                "batch_size": int(batch_size),
                "parts": [len(r) for _, r in parts],
                "rows_blake2b": hashlib.blake2b(np.ascontiguousarray(rows).view(np.uint8)).hexdigest(),
            }
            out = _DiskOutputs.open(Path(directory), rows, np.dtype(dtype), identity, checkpoint_seconds)
        offset = 0
        for fm_apply, part_rows in parts:
            # the recorded count is a chunk boundary of its part (chunks start at multiples of batch_size)
            for start in range(max(out.done - offset, 0), len(part_rows), batch_size):
                chunk = part_rows[start : start + batch_size]
                res = fm_apply(pad_rows(chunk, batch_size))
                out.write(offset + start, np.asarray(res[kind][: len(chunk)]), np.asarray(res["logit"][: len(chunk)]))
            offset += len(part_rows)
        out.finish(kind)
        return cls(table, rows, out.embeddings, out.logits, kind)

    def history(self, rows: np.ndarray, length: int, prev: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(len(rows), length, d) float32 embeddings of each event's last ``length`` logged predecessors
        (oldest first, zero-padded) and the (len(rows), length) bool mask. ``prev``: those
        predecessors' table rows, when the caller already looked them up (:meth:`predecessors`)."""
        prev = self.predecessors(rows, length) if prev is None else prev
        mask = prev >= 0
        slots = self.slot[np.where(mask, prev, 0)]
        emb = self.embeddings[np.maximum(slots, 0)].astype(np.float32)  # one pass: gather, then convert
        emb[~mask] = 0.0
        return emb, mask

    def logits_at(self, prev: np.ndarray) -> np.ndarray:
        """The logged FM logits of table rows ``prev`` (any shape; -1 = padding gives 0)."""
        prev = np.asarray(prev)
        slots = self.slot[np.maximum(prev, 0)]
        return np.where(prev >= 0, self.logits[np.maximum(slots, 0)], 0.0).astype(np.float32)

    def predecessors(self, rows: np.ndarray, length: int) -> np.ndarray:
        """(len(rows), length) table rows of each event's last ``length`` logged predecessors, -1 padded."""
        return self.index.lookup(rows, length)

    def fm_logit(self, rows: np.ndarray) -> np.ndarray:
        """The logged FM logit of each of ``rows`` (all must be logged events)."""
        slots = self.slot[np.asarray(rows)]
        if np.any(slots < 0):
            raise KeyError("some rows were not logged by the FM (they precede the store's window).")
        return self.logits[slots]

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            for name in ("rows", "embeddings", "logits"):
                np.save(tmp / f"{name}.npy", getattr(self, name), allow_pickle=False)
            _write_meta(tmp, self.kind, self.embeddings)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, table: EventTable) -> HistoricalStore:
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        # the embeddings (GBs at real size) stay on disk, memory-mapped like the table: batches read their rows
        arrays = {
            n: np.load(directory / f"{n}.npy", allow_pickle=False, mmap_mode="r" if n == "embeddings" else None)
            for n in ("rows", "embeddings", "logits")
        }
        return cls(table, arrays["rows"], arrays["embeddings"], arrays["logits"], meta["kind"])

    @staticmethod
    def size_on_disk(directory: str | os.PathLike) -> int:
        return sum(f.stat().st_size for f in Path(directory).iterdir() if f.is_file())


def _write_meta(directory: Path, kind: str, embeddings: np.ndarray) -> None:
    """A saved store's ``meta.json``."""
    meta = {"kind": kind, "dim": int(embeddings.shape[1]), "dtype": str(embeddings.dtype), "events": len(embeddings)}
    (directory / "meta.json").write_text(json.dumps(meta))


class _Outputs:
    """The store's arrays in memory, filled chunk by chunk (the embeddings' width comes with the first chunk)."""

    done = 0  # events already logged (none: nothing resumes in memory)

    def __init__(self, total: int, dtype: np.dtype):
        self.total, self.dtype = total, dtype
        self.embeddings: np.ndarray | None = None
        self.logits = np.empty(total, np.float32)

    def _allocate(self, dim: int) -> np.ndarray:
        return np.empty((self.total, dim), self.dtype)

    def write(self, at: int, emb: np.ndarray, logit: np.ndarray) -> None:
        if self.embeddings is None:
            self.embeddings = self._allocate(emb.shape[1])
        self.embeddings[at : at + len(emb)] = emb
        self.logits[at : at + len(emb)] = logit

    def finish(self, kind: str) -> None:
        pass


_STATE_FORMAT = 1


class _DiskOutputs(_Outputs):
    """The store's arrays as memory-mapped ``.npy`` files in ``directory``, with the resume record
    ``state.json`` (see :meth:`HistoricalStore.build_parts`)."""

    def __init__(self, directory: Path, total: int, dtype: np.dtype, identity: dict, every: float):
        self.directory, self.identity, self.every = directory, identity, every
        self.total, self.dtype, self.done = total, dtype, 0
        self.embeddings, self.logits = None, None
        self.last = time.monotonic()

    @classmethod
    def open(cls, directory: Path, rows: np.ndarray, dtype: np.dtype, identity: dict, every: float) -> _DiskOutputs:
        out = cls(directory, len(rows), dtype, identity, every)
        if not out._resume():
            out.embeddings, out.logits, out.done = None, None, 0  # drop any half-opened files of the record
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            np.save(directory / "rows.npy", rows, allow_pickle=False)
            out.logits = np.lib.format.open_memmap(directory / "logits.npy", "w+", np.float32, (len(rows),))
            out._record()
        return out

    def _resume(self) -> bool:
        """Continue from ``state.json`` if it records this build; False (start again) otherwise."""
        try:
            state = json.loads((self.directory / "state.json").read_text())
            if state.get("identity") != self.identity or not isinstance(state.get("done"), int):
                return False
            self.logits = np.load(self.directory / "logits.npy", mmap_mode="r+")
            if self.logits.shape != (self.total,) or self.logits.dtype != np.float32:
                return False
            if state["done"] > 0:
                self.embeddings = np.load(self.directory / "embeddings.npy", mmap_mode="r+")
                if self.embeddings.shape != (self.total, state.get("dim")) or self.embeddings.dtype != self.dtype:
                    return False
        except (OSError, ValueError):  # missing, unreadable or truncated files (json's errors are ValueErrors)
            return False
        self.done = min(state["done"], self.total)
        return True

    def _allocate(self, dim: int) -> np.ndarray:
        return np.lib.format.open_memmap(self.directory / "embeddings.npy", "w+", self.dtype, (self.total, dim))

    def _record(self) -> None:
        """Flush the arrays, then record how many events they hold (so the record never runs ahead of the data)."""
        for array in (self.embeddings, self.logits):
            if array is not None:
                array.flush()
        dim = None if self.embeddings is None else int(self.embeddings.shape[1])
        write_json_atomic(self.directory / "state.json", {"identity": self.identity, "done": self.done, "dim": dim})
        self.last = time.monotonic()

    def write(self, at: int, emb: np.ndarray, logit: np.ndarray) -> None:
        super().write(at, emb, logit)
        self.done = at + len(emb)
        if time.monotonic() - self.last >= self.every:
            self._record()

    def finish(self, kind: str) -> None:
        """Flush, write ``meta.json`` and drop the record: the directory is now a saved store."""
        self.embeddings.flush()
        self.logits.flush()
        _write_meta(self.directory, kind, self.embeddings)
        (self.directory / "state.json").unlink()
        self.embeddings = np.load(self.directory / "embeddings.npy", mmap_mode="r")  # read-only, as load maps it
        self.logits = np.load(self.directory / "logits.npy")
