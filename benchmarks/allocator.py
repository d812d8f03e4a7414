"""Benchmark of ``implicit_rec.allocator.tune`` (glibc keeps freed buffers) against glibc's defaults.

Run from the repository root (about a minute on 2 cores)::

    python -m benchmarks.allocator [--pairs 3] [--steps 50]

Each trial is its own process (the ``malloc`` settings are per process and must precede JAX's
threads): it sets ``IMPLICIT_REC_MALLOC`` to ``tuned`` or ``system``, calls ``allocator.tune``,
builds the default run's depth-8 transformer baseline stack (width 12, 2 heads; a batch of 256 rows
of 1 context + 45 sequence tokens, as the default configuration feeds it), compiles and warms up its
training gradient, then times ``--steps`` steps and records the wall seconds, the user and system
CPU seconds and the minor page faults of those steps (``getrusage``). Trials alternate
(tuned, system, tuned, ...) so both see the same machine noise; medians and their ratios are
reported. Writes ``benchmarks/results/allocator.{json,md}``; no target (issue 15's run targets are
measured by ``benchmarks.tiny_run``, which runs the ``implicit-rec`` command and so is tuned).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from implicit_rec import allocator
from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.tables import markdown_table

from .common import RESULTS

MODES = ("tuned", "system")
BATCH, SEQUENCE, D_ITEM, D_CONTEXT, WIDTH, DEPTH = 256, 45, 16, 200, 12, 8


def child(mode: str, steps: int) -> dict:
    """One trial in this process: tune (or not), then time ``steps`` training-gradient steps."""
    tuned = allocator.tune({allocator.ENV: mode})
    import jax  # after tune: JAX's threads must find the settings in place
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from implicit_rec.models.stacks import TransformerStack

    stack = TransformerStack(D_CONTEXT, D_ITEM, WIDTH, DEPTH, num_heads=2, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = {
        "sequence": jnp.asarray(rng.normal(size=(BATCH, SEQUENCE, D_ITEM)), jnp.float32),
        "mask": jnp.asarray(rng.random((BATCH, SEQUENCE)) < 0.7),
        "context": jnp.asarray(rng.normal(size=(BATCH, D_CONTEXT)), jnp.float32),
    }
    graph, params = nnx.split(stack)
    step = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graph, p)(x) ** 2)))
    temp = step.lower(params, x).compile().memory_analysis().temp_size_in_bytes
    for _ in range(3):
        jax.block_until_ready(step(params, x))
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        out = step(params, x)
    jax.block_until_ready(out)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "mode": mode,
        "tuned": tuned,
        "steps": steps,
        "temp_mib": temp / 2**20,
        "wall_s": wall,
        "user_s": r1.ru_utime - r0.ru_utime,
        "sys_s": r1.ru_stime - r0.ru_stime,
        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "minor_faults": r1.ru_minflt - r0.ru_minflt,
    }


def run(pairs: int, steps: int) -> dict:
    trials = []
    for _ in range(pairs):
        for mode in MODES:
            cmd = [sys.executable, "-m", "benchmarks.allocator", "--child", mode, "--steps", str(steps)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            trials.append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = ("wall_s", "user_s", "sys_s", "cpu_s", "minor_faults")
    medians = {m: {k: statistics.median(t[k] for t in trials if t["mode"] == m) for k in keys} for m in MODES}
    ratios = {k: medians["tuned"][k] / medians["system"][k] for k in keys}
    return {
        "pairs": pairs,
        "steps": steps,
        "shape": dict(batch=BATCH, sequence=SEQUENCE, width=WIDTH, depth=DEPTH),
        "temp_mib": trials[0]["temp_mib"],
        "tune_accepted": trials[0]["tuned"],
        "load_average": os.getloadavg(),
        "trials": trials,
        "medians": medians,
        "tuned_over_system": ratios,
    }


def markdown(report: dict) -> str:
    med, ratio = report["medians"], report["tuned_over_system"]
    rows = [
        [
            mode,
            *(f"{med[mode][k]:.2f}" for k in ("wall_s", "user_s", "sys_s", "cpu_s")),
            f"{med[mode]['minor_faults']:,.0f}",
        ]
        for mode in MODES
    ]
    rows.append(
        ["tuned / system", *(f"{ratio[k]:.2f}" for k in ("wall_s", "user_s", "sys_s", "cpu_s", "minor_faults"))]
    )
    every = "; ".join(f"{t['mode']} {t['wall_s']:.2f} s wall, {t['cpu_s']:.2f} s CPU" for t in report["trials"])
    return "\n".join(
        [
            f"# glibc malloc tuned (`implicit_rec.allocator`) vs glibc's defaults: {report['steps']} training steps",
            "",
            f"The default run's depth-8 transformer baseline (width 12, batch 256, 46 tokens), whose step has a "
            f"{report['temp_mib']:.0f} MiB temporary buffer; medians of {report['pairs']} alternated pairs of "
            f"processes. Load average after: {', '.join(f'{v:.2f}' for v in report['load_average'])}.",
            "",
            markdown_table(["malloc", "wall s", "user s", "system s", "CPU s", "minor page faults"], rows),
            "",
            f"Every trial: {every}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    report = run(args.pairs, args.steps)
    write_json_atomic(RESULTS / "allocator.json", report)
    text = markdown(report)
    write_text_atomic(RESULTS / "allocator.md", text)
    print(text)


if __name__ == "__main__":
    main()
