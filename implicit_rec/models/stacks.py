"""An explicit sequence stack: a pre-LayerNorm transformer encoder read out at a context token.

The explicit counterpart of the implicit ``SequenceCell`` VM: it reads the same input (a dict with
``"sequence"`` (B, L, d_item), ``"mask"`` (B, L) bool and ``"context"`` (B, d_context)) but applies D
distinct layers once instead of iterating one weight-tied cell. Tokens (B, 1 + L, d):

    t_0 = W_c x + b_c                 (the context token: always valid)
    t_l = W_s s_l + b_s,  l = 1..L    (the sequence; masked positions are never attended to)

then D layers of

    t <- t + MHA(LN(t), key mask)     (H heads of width d / H, softmax over the valid keys)
    t <- t + W_2 gelu(W_1 LN(t))      (W_1: d -> 2 d, W_2: 2 d -> d)

and the output is LN(t_0) (B, d). Padded positions feed no valid token, so the output does not
depend on their contents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import initializers


class EncoderLayer(nnx.Module):
    """One pre-LayerNorm encoder layer on tokens t (B, T, d) with a key mask (B, T) bool."""

    def __init__(self, width: int, *, num_heads: int, mlp_ratio: int = 2, rngs: nnx.Rngs):
        if width % num_heads:
            raise ValueError(f"width={width} must be a multiple of num_heads={num_heads}.")
        self.num_heads = num_heads
        self.attention_norm = initializers.layer_norm(width, rngs=rngs)
        self.qkv = initializers.linear(width, 3 * width, rngs=rngs)
        self.out = initializers.linear(width, width, rngs=rngs)
        self.mlp_norm = initializers.layer_norm(width, rngs=rngs)
        self.mlp_in = initializers.linear(width, mlp_ratio * width, rngs=rngs)
        self.mlp_out = initializers.linear(mlp_ratio * width, width, rngs=rngs)

    def __call__(self, t: jax.Array, mask: jax.Array) -> jax.Array:
        b, n, d = t.shape
        q, k, v = jnp.split(self.qkv(self.attention_norm(t)).reshape(b, n, 3, self.num_heads, -1), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (B, T, H, d / H)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(b, n, d)
        t = t + self.out(attended)
        return t + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(t))))


class TransformerStack(nnx.Module):
    """Context token + projected sequence -> ``depth`` :class:`EncoderLayer` s -> LN(context token) (B, width)."""

    def __init__(
        self,
        d_context: int,
        d_item: int,
        width: int,
        depth: int,
        *,
        num_heads: int = 2,
        mlp_ratio: int = 2,
        rngs: nnx.Rngs,
    ):
        if depth < 1:
            raise ValueError(f"depth={depth} must be >= 1.")
        self.context = initializers.linear(d_context, width, rngs=rngs)
        self.tokens = initializers.linear(d_item, width, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(width, num_heads=num_heads, mlp_ratio=mlp_ratio, rngs=rngs) for _ in range(depth)]
        )
        self.norm = initializers.layer_norm(width, rngs=rngs)

    def __call__(self, x: dict) -> jax.Array:
        seq, mask = x["sequence"], x["mask"].astype(bool)
        t = jnp.concatenate([self.context(x["context"])[:, None], self.tokens(seq)], axis=1)
        mask = jnp.concatenate([jnp.ones((seq.shape[0], 1), bool), mask], axis=1)
        for layer in self.layers:
            t = layer(t, mask)
        return self.norm(t[:, 0])
