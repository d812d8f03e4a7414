"""The transformer baselines' sequence stack: per-head column slices against a (B, H, T, d / H) transpose.

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
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.models.stacks import EncoderLayer, TransformerStack, key_bias
from implicit_rec.tables import markdown_table

from .common import RESULTS, machine_info, median_times

BATCH, SEQUENCE, ITEM, CONTEXT = 256, 45, 8, 96
PLAN = ((30, 1), (24, 2), (18, 4), (12, 8))  # the large run's transformer baselines: (width, depth)
FORMS = ("transposed heads", "head slices")


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
    times = median_times(thunks, repeats)
    rows = []
    for width, depth in PLAN:
        before, after = (results[(width, depth, f)] for f in FORMS)
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
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
    return {
        "repeats": repeats,
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
    s, m = report["shapes"], report["machine"]
    return "\n".join(
        [
            "# The transformer baselines' stack: attention heads as column slices vs a 5-D transpose",
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
