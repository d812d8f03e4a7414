"""The foundation model (FM): a larger CTR model whose intermediate representations LoopFM logs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ..data.events import Schema
from .features import MLP, FeatureEmbedder, target_attention


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
    """Transformer encoder over a long behaviour history, target attention to the candidate, MLP head.

    ``__call__(batch)`` returns a dict with ``logit`` (B,), ``interaction`` (B, d): the top hidden
    layer for (user history, candidate) — the default logged representation — and ``item``
    (B, d): an item-only embedding of the candidate. d = the last hidden size (64).
    The history is the last ``max_len`` behaviours (default 4x a VM's 50).
    """

    def __init__(self, schema: Schema, vocab_sizes: dict, *, rngs: nnx.Rngs, size: str = "medium", max_len: int = 200):
        if size not in FM_SIZES:
            raise ValueError(f"unknown FM size {size!r}; choose one of {', '.join(FM_SIZES)}.")
        s = FM_SIZES[size]
        self.size = size
        self.embed = FeatureEmbedder(schema, vocab_sizes, s.embed_dim, max_len, rngs=rngs)
        self.seq_in = nnx.Linear(s.embed_dim, s.model_dim, rngs=rngs)
        self.position = nnx.Embed(self.embed.max_len, s.model_dim, rngs=rngs)
        self.blocks = nnx.List([_EncoderBlock(s.model_dim, s.heads, rngs=rngs) for _ in range(s.layers)])
        self.query = nnx.Linear(s.embed_dim, s.model_dim, rngs=rngs)
        width = self.embed.num_fields * s.embed_dim + 3 * s.model_dim
        self.mlp = MLP((width,) + s.hidden, rngs=rngs)
        self.out = nnx.Linear(s.hidden[-1], 1, rngs=rngs)
        self.item_proj = nnx.Linear(len(schema.item) * s.embed_dim, s.hidden[-1], rngs=rngs)
        self.dim = s.hidden[-1]

    def __call__(self, batch: dict) -> dict:
        e = self.embed(batch)
        seq, mask = e["sequence"], e["mask"]
        h = self.seq_in(seq) + self.position(jnp.arange(seq.shape[1]))[None]
        for block in self.blocks:
            h = block(h, mask)
        q = self.query(e["candidate"])
        interest = target_attention(q, h, h, mask)
        pooled = jnp.sum(h * mask[..., None], 1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
        x = jnp.concatenate([e["fields"].reshape(seq.shape[0], -1), interest, interest * q, pooled], -1)
        hidden = nnx.relu(self.mlp(x))
        return {"logit": self.out(hidden)[:, 0], "interaction": hidden, "item": jnp.tanh(self.item_proj(e["item"]))}


class _EncoderBlock(nnx.Module):
    """Pre-norm transformer encoder block with key padding mask."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.ff = MLP((dim, 2 * dim, dim), rngs=rngs, activation=nnx.gelu)

    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        attn_mask = mask[:, None, None, :] & mask[:, None, :, None]
        y = self.attn(self.norm1(h), mask=attn_mask, deterministic=True)
        h = h + jnp.where(mask[..., None], y, 0.0)
        return h + self.ff(self.norm2(h))
