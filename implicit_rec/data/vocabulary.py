"""Vocabularies: raw ids counted on the training split, encoded as dense int32 indices.

Encoding conventions (shared by every loader):

- index 0 = padding, 1 = out-of-vocabulary (OOV), known ids from 2 **in sorted order of their
  raw value** (deterministic and vectorizable; the order carries no frequency information);
- a vocabulary is fitted on the training split only: an id that never occurs in a training row,
  or occurs fewer than ``min_count`` times there, encodes as OOV = 1;
- counts include the occurrences inside every behaviour sequence that shares the vocabulary
  (e.g. ``cate_id`` counts ``cate_id`` cells plus ``cate_his`` tokens of training rows). Only the
  tokens a row keeps (its last ``max_len``) are counted.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from .errors import Where
from .events import OOV, PAD
from .sequences import PAD_TOKEN, split_sequences

LUT_LIMIT = 1 << 26  # integer ids below this are encoded by direct lookup (<= 256 MB table)


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
        if values.dtype.kind in "iu" and len(values) and values.min() >= 0 and values.max() < self.DENSE:
            counts = np.bincount(values, minlength=len(self._dense))  # all small: no masks
            counts[: len(self._dense)] += self._dense
            self._dense = counts
            return
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
        if raw.size and raw.dtype.kind == "i" and raw.min() >= PAD_TOKEN and raw.max() < self.DENSE:
            counts = np.bincount((raw - PAD_TOKEN).ravel(), minlength=len(self._dense) + 1)[1:]  # padding at 0
            counts[: len(self._dense)] += self._dense
            self._dense = counts
            return
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

    @property
    def index_dtype(self) -> np.dtype:
        """The narrowest signed integer type holding every index (what the BARS loaders store)."""
        return index_dtype(self.size)

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

    @functools.cached_property
    def _sequence_table(self) -> np.ndarray | None:
        """[OOV, PAD, index of raw 0, 1, ..., OOV]: raw token t (>= -1) encodes as entry t + 2; None
        unless every key is a non-negative integer below LUT_LIMIT."""
        table = self._table
        if table is None or len(self.keys) == 0 or self.keys[0] < 0 or self.keys[-1] >= LUT_LIMIT:
            return None
        return np.concatenate([[OOV, PAD], table, [OOV]]).astype(np.int32)

    @functools.cached_property
    def _tables_by_dtype(self) -> dict:
        return {}

    def _table_as(self, dtype) -> np.ndarray:
        """The sequence lookup table in ``dtype`` (cast once per dtype)."""
        dtype = np.dtype(dtype)
        if dtype not in self._tables_by_dtype:
            self._tables_by_dtype[dtype] = self._sequence_table.astype(dtype, copy=False)
        return self._tables_by_dtype[dtype]

    def encode_sequences(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n, max_len) indices from raw tokens: padding -> 0, known -> >= 2, unknown -> OOV.

        out: an integer array of raw's shape to write into (may be ``raw`` itself), wide enough
        for the indices (see :attr:`index_dtype`); int32 when None.
        """
        raw = np.asarray(raw)
        table = self._sequence_table
        if table is not None and raw.dtype.kind == "i":  # one lookup: raw + 2, clipped into the table
            index = np.add(raw, 2, dtype=np.result_type(raw.dtype, np.int32))  # PAD_TOKEN = -1 -> 1
            np.clip(index, 0, len(table) - 1, out=index)  # ids below PAD -> <= 0, past the table -> OOV
            return np.take(table if out is None else self._table_as(out.dtype), index, out=out)
        encoded = np.where(raw == PAD_TOKEN, PAD, self.encode(raw)).astype(np.int32)
        if out is None:
            return encoded
        out[...] = encoded
        return out


def narrowest_int(lo: int, hi: int) -> np.dtype:
    """The narrowest signed integer type of int8, int16, int32 and int64 holding every value in lo .. hi."""
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"no integer type holds {lo} .. {hi}.")


def index_dtype(size: int) -> np.dtype:
    """The narrowest signed integer type (int8, int16, int32) holding the indices 0 .. size - 1."""
    return narrowest_int(0, max(size - 1, 0))


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
