"""Attention heads as column slices against a (B, H, T, d / H) transpose: the transformer stack and the sequence cell.

Run from the repository root (about a minute on 2 cores)::

    python -m benchmarks.transformer_step

``stacks.EncoderLayer`` takes each attention head's query, key and value as column slices of the
(B, T, 3 d) projection and runs one batched (B, T, d / H) product per head. Until this benchmark's
commit it reshaped the projection to (B, T, 3, H, d / H) and transposed it to (3, B, H, T, d / H);
XLA:CPU's backward pass then wrote the projection's gradient through padded, strided 5-D
transposes, which cost more than the layer's matrix products. Both forms are timed here side by
side, round-robin in one process: the compiled gradient (forward and backward, with respect to
every parameter) of a ``TransformerStack`` of each (width, depth) the large run's baseline plan
gives the transformers, at the shapes of its VMs with LoopFM input: batch 256, a context token and
25 behaviour + 20 logged-request tokens (T = 46), item embeddings of 8, a 96-wide context. The
former layout is written out here (``transposed_heads_layer``) from the same parameters. Reported:
medians, the speed-up, and the largest difference between the two forms' outputs and gradients
(they compute the same function; only float rounding may differ). No target: the figure says what
the baselines' training gains (the VM's train step adds its embeddings and Adam,
``table_rows.md``).

The implicit-seq VM's ``SequenceCell`` had the same layout (keys and values (B, L, H, d / H), one
query per head) and now slices columns as well: timed the same way, as the gradient of 20 iterations
of the cell (d_state 32, the VM default; the same 45 events and 96-wide context), unrolled, which is
what its solver's forward and adjoint passes repeat.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.layers import SequenceCell
from implicit_rec.layers.weights import StateLinear
from implicit_rec.models.stacks import EncoderLayer, TransformerStack, key_bias
from implicit_rec.tables import markdown_table

from .common import RESULTS, machine_info, median_times

BATCH, SEQUENCE, ITEM, CONTEXT = 256, 45, 8, 96
PLAN = ((30, 1), (24, 2), (18, 4), (12, 8))  # the large run's transformer baselines: (width, depth)
FORMS = ("transposed heads", "head slices")
CELL_STATE, CELL_ITERATIONS = 32, 20


def transposed_heads_layer(layer: EncoderLayer, t: jax.Array, bias: jax.Array, *, queries: int | None = None):
    """``EncoderLayer.__call__`` as it was: heads split by a (3, B, H, T, d / H) transpose."""
    b, n, d = t.shape
    h = layer.num_heads
    qkv = jnp.transpose(layer.qkv(layer.attention_norm(t)).reshape(b, n, 3, h, d // h), (2, 0, 3, 1, 4))
    q, k, v = qkv[0], qkv[1], qkv[2]
    if queries is not None:
        q, t = q[:, :, :queries], t[:, :queries]
    scores = (q * (d // h) ** -0.5) @ jnp.swapaxes(k, -1, -2) + bias
    weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
    attended = (weights @ v) / weights.sum(axis=-1, keepdims=True)
    t = t + layer.out(jnp.swapaxes(attended, 1, 2).reshape(b, t.shape[1], d))
    return t + layer.mlp_out(nnx.gelu(layer.mlp_in(layer.mlp_norm(t))))


def transposed_heads_cell(cell: SequenceCell, z: jax.Array, ctx: dict) -> jax.Array:
    """``SequenceCell.__call__`` as it was: queries (B, H, d / H), keys and values (B, L, H, d / H)."""
    shape = (cell.num_heads, cell.d_state // cell.num_heads)
    q = cell.query(z).reshape(z.shape[:1] + shape)
    keys = ctx["keys"].reshape(ctx["keys"].shape[:2] + shape)
    values = ctx["values"].reshape(ctx["values"].shape[:2] + shape)
    scores = jnp.einsum("bhd,blhd->bhl", q, keys) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    mask = ctx["mask"][:, None, :]
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1) * mask
    attended = jnp.einsum("bhl,blhd->bhd", weights, values).reshape(z.shape)
    h = StateLinear.apply(ctx["w"], z) + cell.out(attended) + ctx["injection"]
    return jnp.tanh(h + cell.mlp_out(nnx.gelu(cell.mlp_in(h))))


def _cell_gradient(form: str, x: dict):
    """A thunk running the compiled loss-and-gradient of CELL_ITERATIONS cell steps, and its result."""
    cell = SequenceCell(CELL_STATE, ITEM, d_context=CONTEXT, num_heads=2, rngs=nnx.Rngs(0))
    graph, params = nnx.split(cell)
    z0 = 0.1 * jax.random.normal(jax.random.key(1), (BATCH, CELL_STATE))

    def loss(params, x):
        cell = nnx.merge(graph, params)
        ctx, z = cell.prepare(x), z0
        for _ in range(CELL_ITERATIONS):
            z = cell(z, ctx) if form == "head slices" else transposed_heads_cell(cell, z, ctx)
        return jnp.sum(jnp.sin(3.0 * z))

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
    return (lambda: compiled(params, x)), compiled(params, x)


def _max_difference(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((BATCH, SEQUENCE), bool)
    mask[:, :25] = rng.random((BATCH, 25)) < 0.6  # behaviour sequences shorter than 25: padded on the left
    return {
        "sequence": jnp.asarray(rng.standard_normal((BATCH, SEQUENCE, ITEM)), jnp.float32),
        "mask": jnp.asarray(mask),
        "context": jnp.asarray(rng.standard_normal((BATCH, CONTEXT)), jnp.float32),
    }


def _gradient(width: int, depth: int, form: str, x: dict):
    """A thunk running the compiled loss-and-gradient of one stack, and its first result."""
    stack = TransformerStack(CONTEXT, ITEM, width, depth, num_heads=2, rngs=nnx.Rngs(0))
    graph, params = nnx.split(stack)

    def loss(params, x):
        model = nnx.merge(graph, params)
        if form == "head slices":
            out = model(x)
        else:  # TransformerStack.__call__ with the former layer
            seq, mask = x["sequence"], x["mask"]
            t = jnp.concatenate([model.context(x["context"])[:, None], model.tokens(seq)], axis=1)
            bias = key_bias(jnp.concatenate([jnp.ones((BATCH, 1), bool), mask.astype(bool)], axis=1), t.dtype)
            *inner, last = model.layers
            for layer in inner:
                t = transposed_heads_layer(layer, t, bias)
            out = model.norm(transposed_heads_layer(last, t, bias, queries=1)[:, 0])
        return jnp.sum(jnp.sin(3.0 * out))

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
    return (lambda: compiled(params, x)), compiled(params, x)


def run(repeats: int) -> dict:
    x = _inputs()
    thunks, results = {}, {}
    for width, depth in PLAN:
        for form in FORMS:
            thunks[(width, depth, form)], results[(width, depth, form)] = _gradient(width, depth, form, x)
    for form in FORMS:
        thunks[("cell", form)], results[("cell", form)] = _cell_gradient(form, x)
    times = median_times(thunks, repeats)
    rows = []
    for width, depth in PLAN:
        diff = _max_difference(*(results[(width, depth, f)] for f in FORMS))
        ms = {f: 1e3 * times[(width, depth, f)] for f in FORMS}
        rows.append(
            {
                "width": width,
                "depth": depth,
                "step_ms": ms,
                "speedup": ms[FORMS[0]] / ms[FORMS[1]],
                "max_abs_diff": diff,
            }
        )
    cell_ms = {f: 1e3 * times[("cell", f)] for f in FORMS}
    cell = {
        "d_state": CELL_STATE,
        "iterations": CELL_ITERATIONS,
        "step_ms": cell_ms,
        "speedup": cell_ms[FORMS[0]] / cell_ms[FORMS[1]],
        "max_abs_diff": _max_difference(*(results[("cell", f)] for f in FORMS)),
    }
    return {
        "repeats": repeats,
        "sequence_cell": cell,
        "shapes": {"batch": BATCH, "tokens": 1 + SEQUENCE, "item": ITEM, "context": CONTEXT, "heads": 2},
        "machine": machine_info(),
        "stacks": rows,
    }


def markdown(report: dict) -> str:
    rows = [
        [
            r["width"],
            r["depth"],
            f"{r['step_ms'][FORMS[0]]:.2f}",
            f"{r['step_ms'][FORMS[1]]:.2f}",
            f"{r['speedup']:.2f}x",
            f"{r['max_abs_diff']:.1e}",
        ]
        for r in report["stacks"]
    ]
    c = report["sequence_cell"]
    cell_row = [
        f"SequenceCell (d_state {c['d_state']}), {c['iterations']} iterations unrolled",
        f"{c['step_ms'][FORMS[0]]:.2f}",
        f"{c['step_ms'][FORMS[1]]:.2f}",
        f"{c['speedup']:.2f}x",
        f"{c['max_abs_diff']:.1e}",
    ]
    s, m = report["shapes"], report["machine"]
    return "\n".join(
        [
            "# Attention heads as column slices vs a transpose: the transformer baselines' stack and the sequence cell",
            "",
            f"Compiled loss and gradient (every parameter) of `TransformerStack`, batch {s['batch']}, {s['tokens']} "
            f"tokens, {s['heads']} heads; medians of {report['repeats']} round-robin calls. {m['cpu_count']} CPUs, "
            f"{m['platform']}, Python {m['python']}, JAX {m['jax']}; load average after {report['load_average'][0]:.2f}"
            + (f"; {report['note']}" if report["note"] else "")
            + ".",
            "",
            markdown_table(
                ["width", "depth", "ms, transposed heads (before)", "ms, head slices", "speed-up", "max |difference|"],
                rows,
            ),
            "",
            markdown_table(
                [
                    "the implicit-seq cell",
                    "ms, transposed heads (before)",
                    "ms, head slices",
                    "speed-up",
                    "max |difference|",
                ],
                [cell_row],
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--note", default="", help="how quiet the machine was (recorded with the results)")
    args = parser.parse_args(argv)
    report = {**run(args.repeats), "note": args.note, "load_average": os.getloadavg()}
    write_json_atomic(RESULTS / "transformer_step.json", report)
    text = markdown(report)
    write_text_atomic(RESULTS / "transformer_step.md", text)
    print(text)


if __name__ == "__main__":
    main()
