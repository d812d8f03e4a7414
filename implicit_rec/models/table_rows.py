"""Row alignment of large embedding tables while :func:`~implicit_rec.models.training.fit` trains.

Why: XLA:CPU splits an element-wise pass over a large array (Adam's update of a table, the zeroing
of its gradient) into a few parallel work groups along the leading dimension, and when a table's
row count does not divide evenly into them the pass runs on a slow path (measured for tables,
whose rows are short; a stacked (agents, rows, d) array split unevenly along its agents is
not affected): on 2 cores, Adam alone
on tables of 400,001 and 200,001 rows x 8 took about 13 ms per step against 4 ms for 400,002 and
200,002 rows (measured once, beside other work), and a DIN VM's whole train step at the ``large``
preset's vocabulary 14.7 ms as built against 8.5 ms padded (``python -m benchmarks.table_rows``,
a quiet machine). Vocabulary sizes (ids + out-of-vocabulary rows) are arbitrary.

What: for training only, every ``nnx.Embed`` table of at least :data:`MIN_ROWS` rows gets zero rows
appended up to a multiple of :data:`ALIGN` (840 = lcm(1..8): any split into at most 8 groups, what
XLA uses for these memory-bound passes on up to 64 cores). No id reaches the padding, so its
gradient is 0, its Adam moments stay 0 and it stays 0: the real rows train **bit for bit** as
without padding. The model is padded on entry to ``fit`` and trimmed back before it returns (also on
an error); checkpoints hold the trimmed arrays, so their format does not change. Smaller tables
are left alone: their passes are short either way.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

ALIGN = 840  # lcm(1, ..., 8)
MIN_ROWS = 8 * ALIGN  # tables at least this long are padded (by at most 1/8 of their rows)


def aligned_rows(rows: int) -> int:
    """``rows`` rounded up to a multiple of :data:`ALIGN` when ``rows >= MIN_ROWS``, else ``rows``."""
    return -(-rows // ALIGN) * ALIGN if rows >= MIN_ROWS else rows


@dataclasses.dataclass(frozen=True)
class TableRows:
    """The tables of a model that training pads: path of the ``embedding`` parameter (str keys,
    as in the model's state) -> (rows, padded rows). Empty when no table is large enough."""

    tables: dict[tuple[str, ...], tuple[int, int]]

    @classmethod
    def of(cls, model: nnx.Module) -> TableRows:
        tables = {}
        for path, node in nnx.iter_graph(model):
            if isinstance(node, nnx.Embed):
                rows = int(node.embedding.shape[0])
                if aligned_rows(rows) != rows:
                    tables[(*map(str, path), "embedding")] = (rows, aligned_rows(rows))
        return cls(tables)

    def __bool__(self) -> bool:
        return bool(self.tables)

    def pad_model(self, model: nnx.Module) -> None:
        """Append the zero rows to ``model``'s tables, in place."""
        self._resize_model(model, pad=True)

    def trim_model(self, model: nnx.Module) -> None:
        """Drop the padding rows of ``model``'s tables, in place (a no-op on a trimmed model)."""
        self._resize_model(model, pad=False)

    def pad_tree(self, tree: dict) -> dict:
        """A pure dict (a model's, an optimizer's: every array whose path ends with a table's path,
        e.g. Adam's moments of it) with the tables' arrays padded; other entries are shared."""
        return self._resize_tree(tree, (), pad=True)

    def trim_tree(self, tree: dict) -> dict:
        """:meth:`pad_tree` undone: the padded arrays cut back to their rows."""
        return self._resize_tree(tree, (), pad=False)

    def _resize_model(self, model: nnx.Module, pad: bool) -> None:
        for path, node in nnx.iter_graph(model):
            key = (*map(str, path), "embedding")
            if isinstance(node, nnx.Embed) and key in self.tables:
                node.embedding.set_value(self._resize(node.embedding.get_value(), *self.tables[key], pad))

    def _resize_tree(self, tree, path: tuple[str, ...], pad: bool):
        if isinstance(tree, dict):
            return {k: self._resize_tree(v, (*path, str(k)), pad) for k, v in tree.items()}
        for table, (rows, padded) in self.tables.items():
            if path[len(path) - len(table) :] == table:
                return self._resize(tree, rows, padded, pad)
        return tree

    @staticmethod
    def _resize(array, rows: int, padded: int, pad: bool):
        """``array`` (rows, ...) -> (padded, ...) with zero rows, or back; unchanged when already so."""
        if pad and array.shape[0] == rows:
            xp = jnp if isinstance(array, jnp.ndarray) else np  # device arrays stay on the device
            return xp.concatenate([array, xp.zeros((padded - rows, *array.shape[1:]), array.dtype)])
        if not pad and array.shape[0] == padded:
            return array[:rows]
        return array
