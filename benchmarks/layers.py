"""Benchmark of an ImplicitLayer training step against explicit MLPs.

Run from the repository root::

    python -m benchmarks.layers [--quick]

Writes ``benchmarks/results/layers.{json,md}`` and prints the markdown.

Model: ImplicitLayer(MLPCell(d=128, d_in=32), spectral gamma=0.9) + linear head,
regression on B=256 random inputs, Adam step (forward, backward, update), float32.
The implicit model runs exactly k in {10, 30, 100} forward iterations (tol=1e-12
never stops early) with grad="ift" (adjoint also k iterations), "phantom"
(1 step) and "unroll". Baselines: an explicit MLP with the same number of
parameters (input layer, one hidden d x d layer, head: exactly the implicit
model's count) and explicit MLPs as deep as the implicit model iterates (k untied
d x d tanh layers). Reported: median step time (round-robin repeats) and XLA's
compiled temporary memory of the step.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.layers import ImplicitLayer, MLPCell, SolverConfig
from implicit_rec.params import count_params
from implicit_rec.tables import markdown_table

from .common import RESULTS, compiled_temp_bytes, machine_info, median_times

B, D_IN, D = 256, 32, 128
ITERS = (10, 30, 100)
GRADS = ("ift", "phantom", "unroll")


class ImplicitModel(nnx.Module):
    def __init__(self, iters: int, grad: str, rngs: nnx.Rngs):
        solver = SolverConfig(method="anderson", max_iter=iters, tol=1e-12, grad=grad)
        self.layer = ImplicitLayer(MLPCell(D, D_IN, rngs=rngs), D, rngs=rngs, train_solver=solver)
        self.head = nnx.Linear(D, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(self.layer(x)[0])[:, 0]


class ExplicitMLP(nnx.Module):
    """Input projection, ``depth`` bias-free hidden tanh layers of width D (untied, like W), head."""

    def __init__(self, depth: int, rngs: nnx.Rngs):
        self.inp = nnx.Linear(D_IN, D, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(D, D, use_bias=False, rngs=rngs) for _ in range(depth)])
        self.head = nnx.Linear(D, 1, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.inp(x))
        for layer in self.hidden:
            h = jnp.tanh(layer(h))
        return self.head(h)[:, 0]


def pure_train_step(model: nnx.Module):
    """(step, args): a pure Adam step over (params, rest, opt_state, x, y) and its inputs.

    ``rest`` (non-trainable state such as the spectral-norm vectors) goes in and
    comes out, the functional NNX pattern.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-3)

    def step(params, rest, opt_state, x, y):
        def loss(params, rest):
            model = nnx.merge(graphdef, params, rest, copy=True)
            value = jnp.mean((model(x) - y) ** 2)
            return value, nnx.state(model, nnx.Not(nnx.Param))

        (value, rest), grads = jax.value_and_grad(loss, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, value

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(B, D_IN)), jnp.float32)
    y = jnp.asarray(np.sin(rng.normal(size=(B,))), jnp.float32)
    return step, (params, rest, tx.init(params), x, y)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 9
    t0 = time.perf_counter()
    models = {f"implicit {grad} k={k}": ImplicitModel(k, grad, nnx.Rngs(0)) for grad in GRADS for k in ITERS}
    models["explicit equal params (depth 1)"] = ExplicitMLP(1, nnx.Rngs(0))
    models.update({f"explicit depth {k}": ExplicitMLP(k, nnx.Rngs(0)) for k in ITERS})
    rows, thunks = {}, {}
    for name, model in models.items():
        step, step_args = pure_train_step(model)
        jitted = jax.jit(step)
        thunks[name] = lambda jitted=jitted, a=step_args: jitted(*a)
        temp_mib = compiled_temp_bytes(step, *step_args) / 2**20
        rows[name] = dict(model=name, params=count_params(model), temp_mib=temp_mib)
    for name, seconds in median_times(thunks, repeats).items():
        rows[name]["step_ms"] = seconds * 1e3
    report = dict(
        machine=machine_info(),
        config=dict(
            batch=B,
            d_input=D_IN,
            d_state=D,
            iterations=ITERS,
            repeats=repeats,
            solver="anderson, tol=1e-12 (runs exactly k iterations)",
            dtype="float32",
        ),
        rows=list(rows.values()),
        runtime_s=time.perf_counter() - t0,
    )
    lines = [
        "# ImplicitLayer training step vs explicit MLPs",
        "",
        f"B={B}, d_in={D_IN}, d={D}, float32, Adam step; medians of {repeats} round-robin repeats; "
        f"{report['machine']['cpu_count']} CPUs, jax {report['machine']['jax']}.",
        "",
        markdown_table(
            ["model", "params", "step ms", "compiled temp MiB"],
            [[r["model"], f"{r['params']:,}", f"{r['step_ms']:.2f}", f"{r['temp_mib']:.2f}"] for r in report["rows"]],
        ),
    ]
    md = "\n".join(lines) + "\n"
    write_json_atomic(RESULTS / "layers.json", report)
    write_text_atomic(RESULTS / "layers.md", md)
    print(md)
    print(f"total runtime {report['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
