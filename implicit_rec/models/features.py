"""Embedding front end shared by the foundation model and the vertical models.

A batch is a dict of arrays from an ``EventTable`` (see ``implicit_rec.data.events``).
Every categorical column has its own embedding table; a behaviour sequence shares the
table of the column named in the schema (``cate_his`` uses ``cate_id``'s), so a
candidate and the history live in one space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..data.events import Schema


class FeatureEmbedder(nnx.Module):
    """Embeds one event batch.

    Returns a dict with
      fields (B, F, e): every scalar categorical column, plus one projection per numeric column;
      candidate (B, e): sum of the embeddings of the item columns that sequences share
        (the query of target attention, in the sequence space);
      item (B, I * e): the candidate's item fields, concatenated (item-only representation);
      sequence (B, L, e): per position, the sum of the sequence columns' embeddings,
        for the last ``max_len`` positions; mask (B, L) bool.
    """

    def __init__(self, schema: Schema, vocab_sizes: dict, dim: int, max_len: int, *, rngs: nnx.Rngs):
        self.schema = schema
        self.max_len = min(max_len, schema.max_len)
        self.dim = dim
        self.tables = nnx.Dict({c: nnx.Embed(int(vocab_sizes[c]), dim, rngs=rngs) for c in schema.categorical})
        self.numeric = nnx.Dict({c: nnx.Linear(1, dim, rngs=rngs) for c in schema.numeric})
        shared = set(schema.sequence_vocab.values())
        self.query_fields = tuple(c for c in schema.item if c in shared) or tuple(schema.item)

    @property
    def num_fields(self) -> int:
        return len(self.schema.categorical) + len(self.schema.numeric)

    def __call__(self, batch: dict) -> dict:
        fields = [self.tables[c](batch[c]) for c in self.schema.categorical]
        fields += [self.numeric[c](batch[c][:, None].astype(jnp.float32)) for c in self.schema.numeric]
        candidate = sum(self.tables[c](batch[c]) for c in self.query_fields)
        item = jnp.concatenate([self.tables[c](batch[c]) for c in self.schema.item], axis=-1)
        seq, mask = None, None
        for name, vocab in self.schema.sequences:
            ids = batch[name][:, -self.max_len :]
            emb = self.tables[vocab](ids)
            seq = emb if seq is None else seq + emb
            mask = ids > 0 if mask is None else mask | (ids > 0)
        out = {"fields": jnp.stack(fields, axis=1), "candidate": candidate, "item": item}
        if seq is not None:
            out.update(sequence=seq, mask=mask)
        return out


def target_attention(query: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled dot-product attention of one query per row over a masked sequence.

    query (B, d), keys / values (B, L, d), mask (B, L) -> (B, d); rows without events give 0.
    """
    scores = jnp.einsum("bd,bld->bl", query, keys) / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1) * mask
    return jnp.einsum("bl,bld->bd", weights, values)


class MLP(nnx.Module):
    """Dense layers with an activation between them (none after the last)."""

    def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs, activation=nnx.relu):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x
