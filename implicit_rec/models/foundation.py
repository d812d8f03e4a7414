"""The foundation model (FM): a larger CTR model whose intermediate representations LoopFM logs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ..data.events import Schema
from ..layers import initializers
from .features import MLP, DINAttention, FeatureEmbedder, match_counts


@dataclasses.dataclass(frozen=True)
class FMSize:
    embed_dim: int
    model_dim: int
    layers: int
    heads: int
    hidden: tuple[int, ...]


FM_SIZES = {
    "small": FMSize(embed_dim=16, model_dim=32, layers=1, heads=2, hidden=(128, 64)),
    "medium": FMSize(embed_dim=32, model_dim=64, layers=2, heads=4, hidden=(256, 64)),
    "large": FMSize(embed_dim=48, model_dim=96, layers=3, heads=4, hidden=(384, 64)),
}


class FoundationModel(nnx.Module):
    """Transformer encoder over a long behaviour history, DIN target attention to the candidate, MLP head.

    It also reads what no VM reads: the table's ``fm_sequences`` (other surfaces' behaviours), pooled
    by DIN attention, and exact match counts of the candidate in every stream (see ``features``).

    ``__call__(batch)`` returns a dict with ``logit`` (B,), ``interaction`` (B, d): the top hidden
    layer for (user history, candidate) — the default logged representation —, ``item``
    (B, d): an item-only embedding of the candidate, and ``user`` (B, d): the candidate-free user
    representation (mean-pooled encoded history and other-surface behaviours, projected; an input of
    the MLP). d = the last hidden size (64).
    The history is the last ``max_len`` behaviours (default 4x a VM's 50).
    """

    def __init__(self, schema: Schema, vocab_sizes: dict, *, rngs: nnx.Rngs, size: str = "medium", max_len: int = 200):
        if size not in FM_SIZES:
            raise ValueError(f"unknown FM size {size!r}; choose one of {', '.join(FM_SIZES)}.")
        s = FM_SIZES[size]
        self.size = size
        self.embed = FeatureEmbedder(schema, vocab_sizes, s.embed_dim, max_len, rngs=rngs, fm_streams=True)
        self.pairs = self.embed.match_pairs(fm_streams=True)
        self.seq_in = initializers.linear(s.embed_dim, s.model_dim, rngs=rngs)
        self.position = initializers.embed(self.embed.max_len, s.model_dim, rngs=rngs)
        self.blocks = nnx.List([_EncoderBlock(s.model_dim, s.heads, rngs=rngs) for _ in range(s.layers)])
        self.query = initializers.linear(s.embed_dim, s.model_dim, rngs=rngs)
        self.attention = DINAttention(s.model_dim, self.embed.max_len, rngs=rngs)
        # fields; interest, interest * q, mean of the encoded history; soft count; exact match counts
        width = self.embed.num_fields * s.embed_dim + 3 * s.model_dim + 1 + len(self.pairs)
        self.reads_fm_streams = bool(schema.fm_sequences)
        if self.reads_fm_streams:  # other surfaces' behaviours: DIN pooling in the embedding space
            self.fm_attention = DINAttention(s.embed_dim, self.embed.max_len, rngs=rngs)
            width += 2 * s.embed_dim + 1
        # the user representation: candidate-free, from the whole history (and other surfaces)
        user_in = s.model_dim + (s.embed_dim if self.reads_fm_streams else 0)
        self.user_proj = initializers.linear(user_in, s.hidden[-1], rngs=rngs)
        self.user_query = initializers.linear(s.embed_dim, s.hidden[-1], rngs=rngs)
        width += 2 * s.hidden[-1]  # user, user * (candidate, projected)
        self.mlp = MLP((width,) + s.hidden, rngs=rngs)
        self.out = initializers.linear(s.hidden[-1], 1, rngs=rngs)
        self.item_proj = initializers.linear(len(schema.item) * s.embed_dim, s.hidden[-1], rngs=rngs)
        self.dim = s.hidden[-1]

    def __call__(self, batch: dict) -> dict:
        e = self.embed(batch)
        seq, mask = e["sequence"], e["mask"]
        h = self.seq_in(seq) + self.position(jnp.arange(seq.shape[1]))[None]
        for block in self.blocks:
            h = block(h, mask)
        q = self.query(e["candidate"])
        att = self.attention(q, h, mask)
        interest = att["pooled"]
        pooled = jnp.sum(h * mask[..., None], 1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
        parts = [e["fields"].reshape(seq.shape[0], -1), interest, interest * q, pooled, att["count"]]
        parts.append(match_counts(batch, self.pairs, self.embed.max_len).astype(interest.dtype))
        user_parts = [pooled]
        if self.reads_fm_streams:
            other = self.fm_attention(e["candidate"], e["fm_sequence"], e["fm_mask"])
            parts += [other["pooled"], other["pooled"] * e["candidate"], other["count"]]
            fm_mask = e["fm_mask"][..., None]
            user_parts.append(jnp.sum(e["fm_sequence"] * fm_mask, 1) / jnp.maximum(fm_mask.sum(1), 1))
        user = jnp.tanh(self.user_proj(jnp.concatenate(user_parts, -1)))
        x = jnp.concatenate([*parts, user, user * self.user_query(e["candidate"])], -1)
        hidden = nnx.relu(self.mlp(x))
        return {
            "logit": self.out(hidden)[:, 0],
            "interaction": hidden,
            "item": jnp.tanh(self.item_proj(e["item"])),
            "user": user,
        }


class _EncoderBlock(nnx.Module):
    """Pre-norm transformer encoder block with key padding mask."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.norm1 = initializers.layer_norm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
        self.norm2 = initializers.layer_norm(dim, rngs=rngs)
        self.ff = MLP((dim, 2 * dim, dim), rngs=rngs, activation=nnx.gelu)

    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        attn_mask = mask[:, None, None, :] & mask[:, None, :, None]
        y = self.attn(self.norm1(h), mask=attn_mask, deterministic=True)
        h = h + jnp.where(mask[..., None], y, 0.0)
        return h + self.ff(self.norm2(h))
