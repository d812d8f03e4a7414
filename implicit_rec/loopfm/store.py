"""The historical representation store: FM embeddings logged at past requests, read point-in-time.

The FM runs once over the events it would have served (those from ``log_from`` on: after its own
training window), and each event's representation — computed from that event's features and
earlier history, never its label — is stored with its FM logit. A VM never runs the FM: for an
event at time t it reads the same user's last L logged embeddings from events strictly before t.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import atomic_directory
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
    ) -> HistoricalStore:
        """One store from ``parts``, ``[(fm_apply, rows), ...]``: each part's rows logged by its own FM
        (out-of-fold logging), in the order given, as :meth:`build` logs one.

        The outputs are written in place into arrays of the final size, so the peak memory is the
        store's own (M, d) embeddings, not chunk lists plus their concatenation per part and again
        across parts (at the ``large`` preset's size, a 3.6 GB store: 5.3 GB above the table's columns,
        11.1 GB before; ``python -m benchmarks.store_memory``). ``kind`` is checked before any FM runs."""
        _check_kind(kind)
        parts = [(apply, np.asarray(rows, np.int64)) for apply, rows in parts]
        total = sum(len(rows) for _, rows in parts)
        if total == 0:
            raise ValueError("the store has no rows to log: every part's rows are empty.")
        embeddings, logits, at = None, np.empty(total, np.float32), 0
        for fm_apply, rows in parts:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                out = fm_apply(pad_rows(chunk, batch_size))
                emb = np.asarray(out[kind][: len(chunk)])
                if embeddings is None:
                    embeddings = np.empty((total, emb.shape[1]), dtype)
                embeddings[at : at + len(chunk)] = emb
                logits[at : at + len(chunk)] = np.asarray(out["logit"][: len(chunk)])
                at += len(chunk)
        return cls(table, np.concatenate([rows for _, rows in parts]), embeddings, logits, kind)

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
            (tmp / "meta.json").write_text(
                json.dumps(
                    {
                        "kind": self.kind,
                        "dim": self.dim,
                        "dtype": str(self.embeddings.dtype),
                        "events": int(len(self.rows)),
                    }
                )
            )
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
