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
from ..layers import initializers


class FeatureEmbedder(nnx.Module):
    """Embeds one event batch.

    Returns a dict with
      fields (B, F, e): every scalar categorical column, plus one projection per numeric column;
      candidate (B, e): sum of the embeddings of the item columns that sequences share
        (the query of target attention, in the sequence space);
      item (B, I * e): the candidate's item fields, concatenated (item-only representation);
      sequence (B, L, e): per position, the sum of the sequence columns' embeddings,
        for the last ``max_len`` positions; mask (B, L) bool;
      fm_sequence (B, L, e), fm_mask (B, L): the same for ``schema.fm_sequences`` (other surfaces'
        behaviours), only with ``fm_streams=True`` (the foundation model; no VM reads them).
    """

    def __init__(
        self, schema: Schema, vocab_sizes: dict, dim: int, max_len: int, *, rngs: nnx.Rngs, fm_streams: bool = False
    ):
        self.schema = schema
        self.fm_streams = fm_streams
        self.max_len = min(max_len, schema.max_len)
        self.dim = dim
        self.tables = nnx.Dict({c: initializers.embed(int(vocab_sizes[c]), dim, rngs=rngs) for c in schema.categorical})
        self.numeric = nnx.Dict({c: initializers.linear(1, dim, rngs=rngs) for c in schema.numeric})
        self.query_fields = schema.query_fields

    @property
    def num_fields(self) -> int:
        return len(self.schema.categorical) + len(self.schema.numeric)

    def __call__(self, batch: dict) -> dict:
        fields = [self.tables[c](batch[c]) for c in self.schema.categorical]
        fields += [self.numeric[c](batch[c][:, None].astype(jnp.float32)) for c in self.schema.numeric]
        candidate = sum(self.tables[c](batch[c]) for c in self.query_fields)
        item = jnp.concatenate([self.tables[c](batch[c]) for c in self.schema.item], axis=-1)
        seq, mask = self._stream(batch, self.schema.sequences) if self.schema.sequences else (None, None)
        out = {"fields": jnp.stack(fields, axis=1), "candidate": candidate, "item": item}
        if seq is not None:
            out.update(sequence=seq, mask=mask)
        if self.fm_streams and self.schema.fm_sequences:
            out["fm_sequence"], out["fm_mask"] = self._stream(batch, self.schema.fm_sequences)
        return out

    def _stream(self, batch: dict, columns: tuple[tuple[str, str], ...]) -> tuple[jax.Array, jax.Array]:
        """(B, L, e) per-position sum of the columns' embeddings, and the (B, L) mask of real entries."""
        seq, mask = None, None
        for name, vocab in columns:
            ids = batch[name][:, -self.max_len :]
            emb = self.tables[vocab](ids)
            seq = emb if seq is None else seq + emb
            mask = ids > 0 if mask is None else mask | (ids > 0)
        return seq, mask

    def match_pairs(self, fm_streams: bool = False) -> tuple[tuple[str, str], ...]:
        """(sequence column, candidate column) pairs sharing a vocabulary of an item field."""
        columns = self.schema.sequences + (self.schema.fm_sequences if fm_streams else ())
        return tuple((seq, vocab) for seq, vocab in columns if vocab in self.schema.item)


class DINAttention(nnx.Module):
    """Target attention as in DIN (Zhou et al., 2018): unnormalised, so counts survive pooling.

    For each history position l, an activation unit scores
        a_l = MLP([k_l, q, k_l - q, k_l * q]),   k_l = h_l + p_l (a learned position embedding;
                                                  ``keys`` (B, L, d) replace h_l here when given),
    and gates it with w_l = sigmoid(a_l) in (0, 1) — no softmax over positions, which would keep only
    the *mix* of matching behaviours and lose *how many* there are (the reason DIN does not normalise).
    Returns the gated sum ``pooled`` = sum_l w_l h_l / L (B, d) — divided by the fixed L, not by the
    count — and the soft count ``count`` = log1p(sum_l w_l) (B, 1).

    query (B, d), values (B, L, d), mask (B, L) bool; L <= ``max_len``.
    """

    def __init__(self, dim: int, max_len: int, *, rngs: nnx.Rngs, hidden: int = 32):
        self.position = initializers.embed(max_len, dim, rngs=rngs)
        self.unit = MLP((4 * dim, hidden, 1), rngs=rngs)

    def __call__(self, query: jax.Array, values: jax.Array, mask: jax.Array, keys: jax.Array | None = None) -> dict:
        length = values.shape[1]
        keys = (values if keys is None else keys) + self.position(jnp.arange(length))[None]
        q = jnp.broadcast_to(query[:, None, :], keys.shape)
        scores = self.unit(jnp.concatenate([keys, q, keys - q, keys * q], axis=-1))[..., 0]
        weights = jax.nn.sigmoid(scores) * mask
        pooled = jnp.einsum("bl,bld->bd", weights, values) / length
        return {"pooled": pooled, "count": jnp.log1p(jnp.sum(weights, axis=1, keepdims=True))}


def match_counts(batch: dict, pairs: tuple[tuple[str, str], ...], max_len: int) -> jax.Array:
    """log1p(number of the last ``max_len`` history entries equal to the candidate's id), per pair.

    ``pairs``: (sequence column, candidate column sharing its vocabulary); PAD (0) and OOV (1) never
    match. (B, len(pairs)) float32 — exact "how often did this user act on this brand / category"
    counts, the cross feature a recommendation engineer adds by hand.
    """
    if not pairs:
        raise ValueError("match_counts needs at least one (sequence, candidate) pair.")
    counts = []
    for seq, cand in pairs:
        ids, target = batch[seq][:, -max_len:], batch[cand][:, None]
        counts.append(jnp.sum((ids == target) & (target > 1), axis=1))
    return jnp.log1p(jnp.stack(counts, axis=1).astype(jnp.float32))


def target_attention(query: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled dot-product attention of one query per row over a masked sequence.

    query (B, d), keys / values (B, L, d), mask (B, L) -> (B, d); rows without events give 0.
    """
    scores = jnp.einsum("bd,bld->bl", query, keys) / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1) * mask
    return jnp.einsum("bl,bld->bd", weights, values)


class NodeCounts(nnx.Module):
    """Per-node features of id sequences, for a graph over one vocabulary of V ids.

    For each stream s of ids (B, L_s) with its mask and each of ``channels`` channels p:
    n_{b,v,(s,p)} = sum_l w_{s,l,p} [ids_{b,l} = v] over the real positions, with learned position
    profiles w (initialised: channel 0 all ones, a plain count; channel 1 a ramp rising to the
    newest position; the others small random), so the model can weight recent behaviours more or
    ignore old ones. A scatter-add per row: memory O(B V), not O(B L V).

    ``lengths``: L_s of each stream. Returns (B, V, len(lengths) * channels).
    """

    def __init__(self, num_nodes: int, lengths: tuple[int, ...], *, rngs: nnx.Rngs, channels: int = 4):
        if channels < 2:
            raise ValueError(f"NodeCounts needs channels >= 2 (a count and a recency ramp), got {channels}.")
        self.num_nodes, self.lengths = num_nodes, tuple(lengths)
        profiles = []
        for length in self.lengths:
            ramp = (jnp.arange(length, dtype=jnp.float32) + 1) / length
            rest = nnx.initializers.normal(0.1)(rngs.params(), (length, channels - 2))
            profiles.append(nnx.Param(jnp.concatenate([jnp.ones((length, 1)), ramp[:, None], rest], axis=1)))
        self.profiles = nnx.List(profiles)

    def __call__(self, streams: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
        out = []
        for (ids, mask), profile in zip(streams, self.profiles, strict=True):
            weights = profile[...][None, -ids.shape[1] :] * mask[..., None]  # (B, L, P)
            scatter = jax.vmap(lambda i, w: jnp.zeros((self.num_nodes, w.shape[-1]), w.dtype).at[i].add(w))
            out.append(scatter(ids.astype(jnp.int32), weights))
        return jnp.concatenate(out, axis=-1)


class MLP(nnx.Module):
    """Dense layers with an activation between them (none after the last)."""

    def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs, activation=nnx.relu):
        self.layers = nnx.List([initializers.linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x
