"""Cells: the weight-tied blocks f(z, x) whose fixed point an ImplicitLayer computes.

A cell has two methods:

- ``prepare(x) -> ctx``: everything that depends on the input and parameters but not
  on the state z, computed once per forward pass outside the solver loop (the input
  injection, attention keys and values, normalized weight matrices);
- ``__call__(z, ctx) -> z``: one application of the block; z has shape (B, d_state).

``ctx["injection"]`` (B, d_state) is the input-injection term; ImplicitLayer uses it
for a learned initial state.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from .weights import StateLinear

NORMS = (None, "layer")


def _check_norm(norm):
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not supported; choose None or 'layer'.")


class MLPCell(nnx.Module):
    """Input-injection cell  z <- act(W z + U x + b).

    Guarantees: with ``parameterization="spectral"``, gamma < 1, a 1-Lipschitz
    ``activation`` (tanh, relu), ``norm=None`` and ``residual=False``, the map is a
    gamma-contraction in z, so the fixed point exists and is unique for every x.
    ``norm="layer"`` (z <- LayerNorm(act(...))) and ``residual=True``
    (z <- LayerNorm(z + act(W z + U x + b)), the DEQ "residual block" form; needs
    a norm to stay bounded) train well in practice but only *encourage* a unique
    fixed point.

    Shapes: x (B, d_input), z (B, d_state).
    """

    def __init__(
        self,
        d_state: int,
        d_input: int,
        *,
        rngs: nnx.Rngs,
        activation: Callable = jnp.tanh,
        parameterization: str = "spectral",
        gamma: float = 0.9,
        norm: str | None = None,
        residual: bool = False,
    ):
        _check_norm(norm)
        if residual and norm is None:
            raise ValueError("residual=True needs norm='layer' (z + act(...) is unbounded otherwise).")
        self.d_state = d_state
        self.activation = activation
        self.residual = residual
        self.w = StateLinear(d_state, d_state, rngs=rngs, parameterization=parameterization, gamma=gamma)
        self.inject = nnx.Linear(d_input, d_state, rngs=rngs)
        self.norm = nnx.LayerNorm(d_state, rngs=rngs) if norm == "layer" else None

    def prepare(self, x: jax.Array) -> dict:
        return {"w": self.w.prepare(), "injection": self.inject(x)}

    def __call__(self, z: jax.Array, ctx: dict) -> jax.Array:
        out = self.activation(StateLinear.apply(ctx["w"], z) + ctx["injection"])
        if self.residual:
            out = z + out
        return self.norm(out) if self.norm is not None else out


class SequenceCell(nnx.Module):
    """A weight-tied block that attends from the state to an injected behaviour sequence.

    Input x is a dict with ``"sequence"`` (B, L, d_item) (e.g. embedded behaviour or
    LoopFM history), ``"mask"`` (B, L) bool (True = real event) and optionally
    ``"context"`` (B, d_context) (user / candidate features). Keys and values are
    computed once in ``prepare``; each iteration:

        a = MultiHeadAttention(query = W_q z, keys K, values V, mask)      (B, d_state)
        h = W z + W_o a + c            (c = context injection)
        z <- tanh(h + W_2 gelu(W_1 h))                                      (mix with an MLP)

    W uses the chosen parameterization. A row whose mask is all False attends to
    nothing (a = 0). The spectral option bounds the direct state path only:
    attention and the MLP make the whole block *encourage*, not guarantee, a unique
    fixed point (check ``ImplicitLayer.spectral_radius``).
    """

    def __init__(
        self,
        d_state: int,
        d_item: int,
        *,
        rngs: nnx.Rngs,
        d_context: int = 0,
        num_heads: int = 2,
        mlp_ratio: int = 2,
        parameterization: str = "spectral",
        gamma: float = 0.9,
    ):
        if d_state % num_heads:
            raise ValueError(f"d_state={d_state} must be divisible by num_heads={num_heads}.")
        self.d_state, self.num_heads = d_state, num_heads
        self.w = StateLinear(d_state, d_state, rngs=rngs, parameterization=parameterization, gamma=gamma)
        self.query = nnx.Linear(d_state, d_state, use_bias=False, rngs=rngs)
        self.key = nnx.Linear(d_item, d_state, use_bias=False, rngs=rngs)
        self.value = nnx.Linear(d_item, d_state, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(d_state, d_state, rngs=rngs)
        self.context = nnx.Linear(d_context, d_state, rngs=rngs) if d_context else None
        self.mlp_in = nnx.Linear(d_state, mlp_ratio * d_state, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * d_state, d_state, rngs=rngs, kernel_init=nnx.initializers.zeros_init())

    def _heads(self, t: jax.Array) -> jax.Array:
        return t.reshape(t.shape[:-1] + (self.num_heads, self.d_state // self.num_heads))

    def prepare(self, x: dict) -> dict:
        unknown = set(x) - {"sequence", "mask", "context"}
        if unknown or "sequence" not in x or "mask" not in x:
            raise ValueError(
                "SequenceCell input must be a dict with 'sequence' (B, L, d_item), 'mask' "
                f"(B, L) and optionally 'context'; got keys {sorted(x)}."
            )
        seq = x["sequence"]
        batch = seq.shape[0]
        if self.context is not None:
            if "context" not in x:
                raise ValueError("this SequenceCell was built with d_context > 0; pass x['context'].")
            injection = self.context(x["context"])
        else:
            injection = jnp.zeros((batch, self.d_state), seq.dtype)
        return {
            "w": self.w.prepare(),
            "keys": self._heads(self.key(seq)),
            "values": self._heads(self.value(seq)),
            "mask": x["mask"].astype(bool),
            "injection": injection,
        }

    def __call__(self, z: jax.Array, ctx: dict) -> jax.Array:
        q = self._heads(self.query(z))  # (B, H, dh)
        scores = jnp.einsum("bhd,blhd->bhl", q, ctx["keys"]) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        mask = ctx["mask"][:, None, :]
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1) * mask  # rows with no events get zero weights
        attended = jnp.einsum("bhl,blhd->bhd", weights, ctx["values"]).reshape(z.shape)
        h = StateLinear.apply(ctx["w"], z) + self.out(attended) + ctx["injection"]
        return jnp.tanh(h + self.mlp_out(nnx.gelu(self.mlp_in(h))))
