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

Only t_0 is read, so the last layer updates t_0 alone: its keys and values still come from every
token, but its query, attention row, output projection and MLP are computed for one token instead
of 1 + L (the same output; about (D - 3/4) / D of the work of updating every token). The attention
takes each head's query, key and value as column slices of the (B, T, 3 d) projection and runs one
(B, T, d / H) product per head (H is small: 2 in the VMs), with the mask as an additive key bias
built once per call and the softmax's normalisation dividing the (B, T, d / H) result instead of
the (B, T, T) weights. Splitting heads with a (B, H, T, d / H) transpose instead made XLA:CPU's
backward pass write the projection's gradient through padded, strided 5-D transposes: at the large
run's shapes (B = 256, T = 46) the depth-1, width-30 stack's gradient took 22.4 ms that way against
9.8 ms, and the deeper baselines' 1.10-1.21x longer (``python -m benchmarks.transformer_step``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import initializers


def key_bias(mask: jax.Array, dtype) -> jax.Array:
    """(B, T) bool key mask -> (B, 1, 1, T) additive bias: 0 for a valid key, a large negative number
    (half the dtype's most negative, so adding a score cannot overflow) for a masked one."""
    return jnp.where(mask, 0.0, jnp.finfo(dtype).min / 2).astype(dtype)[:, None, None, :]


class EncoderLayer(nnx.Module):
    """One pre-LayerNorm encoder layer on tokens t (B, T, d), keys masked by a :func:`key_bias`."""

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

    def __call__(self, t: jax.Array, bias: jax.Array, *, queries: int | None = None) -> jax.Array:
        """t (B, T, d), bias (B, 1, 1, T) -> the updated tokens (B, T, d); with ``queries=n`` only the
        first n tokens are updated and returned (B, n, d) (they still attend to all T tokens)."""
        d = t.shape[-1]
        c = d // self.num_heads
        qkv = self.qkv(self.attention_norm(t))  # (B, T, 3 d): query heads | key heads | value heads
        if queries is not None:
            t = t[:, :queries]
        n_q, bias_row = t.shape[1], bias[:, 0]  # (B, 1, T)
        heads = []
        for lo in range(0, d, c):
            q = qkv[:, :n_q, lo : lo + c]  # (B, Tq, d / H)
            k, v = qkv[:, :, d + lo : d + lo + c], qkv[:, :, 2 * d + lo : 2 * d + lo + c]  # (B, T, d / H)
            scores = jnp.einsum("bic,bjc->bij", q * c**-0.5, k) + bias_row  # (B, Tq, T)
            weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
            heads.append(jnp.einsum("bij,bjc->bic", weights, v) / weights.sum(axis=-1, keepdims=True))
        t = t + self.out(jnp.concatenate(heads, axis=-1))  # softmax(scores) v, heads side by side: (B, Tq, d)
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
        bias = key_bias(jnp.concatenate([jnp.ones((seq.shape[0], 1), bool), mask], axis=1), t.dtype)
        *inner, last = self.layers
        for layer in inner:
            t = layer(t, bias)
        return self.norm(last(t, bias, queries=1)[:, 0])
