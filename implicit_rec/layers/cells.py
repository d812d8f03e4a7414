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

from . import initializers
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
        self.inject = initializers.linear(d_input, d_state, rngs=rngs)
        self.norm = initializers.layer_norm(d_state, rngs=rngs) if norm == "layer" else None

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
    nothing (a = 0). Head i reads columns i d_h .. (i + 1) d_h of W_q z, K and V
    (d_h = d_state / H), sliced rather than reshaped to (B, L, H, d_h): XLA:CPU
    differentiates the slices without transposes (2.35x faster, 20 iterations at the
    VM's sizes: ``python -m benchmarks.transformer_step``). The spectral option bounds the direct state path only:
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
        self.query = initializers.linear(d_state, d_state, use_bias=False, rngs=rngs)
        self.key = initializers.linear(d_item, d_state, use_bias=False, rngs=rngs)
        self.value = initializers.linear(d_item, d_state, use_bias=False, rngs=rngs)
        self.out = initializers.linear(d_state, d_state, rngs=rngs)
        self.context = initializers.linear(d_context, d_state, rngs=rngs) if d_context else None
        self.mlp_in = initializers.linear(d_state, mlp_ratio * d_state, rngs=rngs)
        self.mlp_out = initializers.linear(mlp_ratio * d_state, d_state, rngs=rngs, kernel_init=initializers.zeros)

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
            "keys": self.key(seq),  # (B, L, d_state): head i in columns i c .. (i + 1) c, c = d_state / H
            "values": self.value(seq),
            "mask": x["mask"].astype(bool),
            "injection": injection,
        }

    def __call__(self, z: jax.Array, ctx: dict) -> jax.Array:
        q, mask = self.query(z), ctx["mask"]  # (B, d_state), (B, L)
        c = self.d_state // self.num_heads
        heads = []  # one (B, L) attention per head on its columns: no (B, L, H, c) transposes to differentiate
        for lo in range(0, self.d_state, c):
            keys, values = ctx["keys"][:, :, lo : lo + c], ctx["values"][:, :, lo : lo + c]
            scores = jnp.einsum("bc,blc->bl", q[:, lo : lo + c], keys) / jnp.sqrt(c).astype(q.dtype)
            scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
            weights = jax.nn.softmax(scores, axis=-1) * mask  # rows with no events get zero weights
            heads.append(jnp.einsum("bl,blc->bc", weights, values))
        attended = jnp.concatenate(heads, axis=-1)
        h = StateLinear.apply(ctx["w"], z) + self.out(attended) + ctx["injection"]
        return jnp.tanh(h + self.mlp_out(nnx.gelu(self.mlp_in(h))))


class GraphCell(nnx.Module):
    """A weight-tied message-passing block over a learned graph of V nodes, one state per node.

    Input x is a dict with ``"nodes"`` (B, V, d_input) per-node input features, optionally
    ``"context"`` (B, d_context) (broadcast to every node) and ``"query"`` (B,) int, the node that
    :meth:`read` returns (the cell itself does not use it). The state z (B, V * d_node) is the
    node states Z (B, V, d_node), node-major. ``prepare`` computes the injection
    u = nodes U + context C + b_v (b_v a learned per-node bias: the node's identity); each iteration

        m_c = sum_j A_jc Z_j                     messages along the learned edges j -> c (A: V x V)
        h   = Z W + m M + u                      (W: the state map, ``StateLinear``)
        Z  <- tanh(h + W_2 gelu(W_1 h))          (per-node MLP, shared by the nodes)

    so k iterations move information k hops along A: the block an implicit GNN iterates, with the
    graph itself learned. A is unconstrained (threshold cascades are not contractions): the
    spectral option bounds W only, so the block *encourages* rather than guarantees a unique fixed
    point; train it with random-k iterations and watch the convergence monitor. Cost per
    iteration and example: V^2 d_node + 2 V d_node^2 + 4 V d_node^2 multiply-adds.
    """

    def __init__(
        self,
        num_nodes: int,
        d_node: int,
        d_input: int,
        *,
        rngs: nnx.Rngs,
        d_context: int = 0,
        mlp_ratio: int = 2,
        parameterization: str = "spectral",
        gamma: float = 0.9,
    ):
        if num_nodes < 1 or d_node < 1 or d_input < 1:
            raise ValueError(f"GraphCell needs num_nodes, d_node, d_input >= 1, got {num_nodes}, {d_node}, {d_input}.")
        self.num_nodes, self.d_node = num_nodes, d_node
        self.d_state = num_nodes * d_node
        self.adjacency = nnx.Param(nnx.initializers.normal(1.0 / num_nodes)(rngs.params(), (num_nodes, num_nodes)))
        self.w = StateLinear(d_node, d_node, rngs=rngs, parameterization=parameterization, gamma=gamma)
        self.message = initializers.linear(d_node, d_node, use_bias=False, rngs=rngs)
        self.inject = initializers.linear(d_input, d_node, rngs=rngs)
        self.node_bias = nnx.Param(nnx.initializers.normal(0.1)(rngs.params(), (num_nodes, d_node)))
        self.context = initializers.linear(d_context, d_node, use_bias=False, rngs=rngs) if d_context else None
        self.mlp_in = initializers.linear(d_node, mlp_ratio * d_node, rngs=rngs)
        self.mlp_out = initializers.linear(mlp_ratio * d_node, d_node, rngs=rngs, kernel_init=initializers.zeros)

    def prepare(self, x: dict) -> dict:
        unknown = set(x) - {"nodes", "context", "query"}
        if unknown or "nodes" not in x:
            raise ValueError(
                "GraphCell input must be a dict with 'nodes' (B, V, d_input) and optionally 'context' "
                f"(B, d_context) and 'query' (B,); got keys {sorted(x)}."
            )
        nodes = x["nodes"]
        if nodes.shape[1] != self.num_nodes:
            raise ValueError(f"x['nodes'] has {nodes.shape[1]} nodes; this GraphCell has {self.num_nodes}.")
        u = self.inject(nodes) + self.node_bias[...]
        if self.context is not None:
            if "context" not in x:
                raise ValueError("this GraphCell was built with d_context > 0; pass x['context'].")
            u = u + self.context(x["context"])[:, None, :]
        return {"w": self.w.prepare(), "adjacency": self.adjacency[...], "injection": u.reshape(u.shape[0], -1)}

    def __call__(self, z: jax.Array, ctx: dict) -> jax.Array:
        nodes = z.reshape(z.shape[0], self.num_nodes, self.d_node)
        messages = jnp.einsum("jc,bjd->bcd", ctx["adjacency"], nodes)
        h = StateLinear.apply(ctx["w"], nodes) + self.message(messages) + ctx["injection"].reshape(nodes.shape)
        return jnp.tanh(h + self.mlp_out(nnx.gelu(self.mlp_in(h)))).reshape(z.shape)

    def read(self, z: jax.Array, x: dict) -> jax.Array:
        """The state of node ``x["query"]`` per row: (B, d_node)."""
        nodes = z.reshape(z.shape[0], self.num_nodes, self.d_node)
        return jnp.take_along_axis(nodes, x["query"][:, None, None].astype(jnp.int32), axis=1)[:, 0]
