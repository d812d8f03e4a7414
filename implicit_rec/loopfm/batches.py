"""The one batch builder: event rows -> the dict of NumPy arrays every model (FM, VM, DSGD) reads.

A batch holds the table's categorical, numeric and sequence columns (``fm_sequences`` too) of ``rows`` and ``label``
(float32); a VM with a LoopFM transfer also gets ``loopfm`` (B, L, dim) and ``loopfm_mask`` (B, L),
the user's last L logged FM embeddings strictly before each event, ``loopfm_logit`` (B, L) the FM
logits logged with them, and ``loopfm_<field>`` (B, L) the
ids of each of those logged requests' candidate (``schema.query_fields``: what the FM's embedding was
about; features of past requests, never their labels), and one with KD gets
``fm_logit`` (B,), the FM's logged logit of the event. Arrays stay on the host: jitted steps take
them as arguments (one transfer, no recompilation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..data.events import EventTable
from .store import HistoricalStore


def table_batches(table: EventTable) -> Callable[[np.ndarray], dict]:
    """rows -> {column: (B, ...) array} of the model inputs and ``label``."""
    schema = table.schema
    names = list(schema.categorical) + list(schema.numeric) + [s for s, _ in schema.all_sequences]

    def make(rows):
        rows = np.asarray(rows)
        batch = table.take(rows, names)
        batch["label"] = np.asarray(table["label"][rows], np.float32)
        return batch

    return make


def vm_batches(
    table: EventTable, store: HistoricalStore | None, history_len: int, transfer: str
) -> Callable[[np.ndarray], dict]:
    """rows -> the batch of a VM with ``transfer`` (LoopFM history of ``history_len``, KD logit)."""
    if transfer != "none" and store is None:
        raise ValueError(f"transfer={transfer!r} reads the FM's historical store; pass store=.")
    base = table_batches(table)

    def make(rows):
        rows = np.asarray(rows)
        batch = base(rows)
        if transfer.startswith("loopfm"):
            prev = store.predecessors(rows, history_len)
            batch["loopfm"], batch["loopfm_mask"] = (np.asarray(a) for a in store.history(rows, history_len, prev))
            batch["loopfm_logit"] = store.logits_at(prev)
            for c in table.schema.query_fields:  # what each logged request was about (its ad's ids)
                batch[f"loopfm_{c}"] = np.where(prev >= 0, np.asarray(table[c])[np.maximum(prev, 0)], 0).astype(
                    np.int32
                )
        if transfer.endswith("kd"):
            batch["fm_logit"] = np.asarray(store.fm_logit(rows))
        return batch

    return make
