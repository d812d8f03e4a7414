"""Training steps of the VMs and the FM at the ``large`` preset's vocabulary sizes, tables padded or not.

Run from the repository root (about a minute on 2 cores)::

    python -m benchmarks.table_rows

``fit`` pads every embedding table of at least ``table_rows.MIN_ROWS`` rows to a multiple of
``table_rows.ALIGN`` rows while it trains (``implicit_rec/models/table_rows.py``): XLA:CPU runs an
element-wise pass over an array whose leading dimension does not split evenly into its parallel
work groups on a slow path, and Adam makes such a pass over every table at every step. This times
the compiled train step (``training._train_step``: loss, gradient, Adam; called as ``fit`` calls
it) of the DIN and the implicit VM and of the small FM built with the vocabulary sizes of ``implicit-rec run --preset
large``'s table (userid 400,001 rows, adgroup 200,002, campaign 63,303, customer 24,997) on batches of 256 rows of
the tiny synthetic data (which ids the batches hold does not change the cost), with the tables as
they are and padded, round-robin in one process; medians. It also checks that both give the same
parameters, bit for bit, after the timed steps. No target: the figure says what the large run's
training gained.
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np
import optax
from flax import nnx

from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.loopfm.batches import vm_batches
from implicit_rec.models import training
from implicit_rec.models.foundation import FoundationModel
from implicit_rec.models.table_rows import TableRows
from implicit_rec.models.vertical import VerticalModel, bce_with_logits
from implicit_rec.tables import markdown_table

from .common import RESULTS, machine_info, median_times

# Vocabulary sizes (rows, with the out-of-vocabulary rows) of the large preset's table (seed 0) where
# they exceed the tiny preset's; the others are the tiny table's.
LARGE_VOCAB = {"userid": 400_001, "adgroup_id": 200_002, "campaign_id": 63_303, "customer": 24_997, "brand": 4_002}
ARCHS = ("din", "implicit", "fm")  # the VMs (max_len 25) and the small FM (max_len 32), as the large run trains them
BATCH = 256


def _loss(model, batch):
    out = model(batch)
    return bce_with_logits(out["logit"], batch["label"], batch["weight"]), out


def _setup(arch: str, padded: bool, table, batches: list[dict]):
    sizes = {**table.vocab_sizes, **LARGE_VOCAB}
    if arch == "fm":
        model = FoundationModel(table.schema, sizes, rngs=nnx.Rngs(0), size="small", max_len=32)
    else:
        model = VerticalModel(table.schema, sizes, rngs=nnx.Rngs(0), arch=arch, max_len=25)
    tables = TableRows.of(model)
    if padded:
        tables.pad_model(model)
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    model.train()
    state = {"i": 0}
    train_step = nnx.cached_partial(training._train_step, model, opt)  # as fit calls it

    def step():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        return train_step(batch, _loss)[0]

    def params():
        if padded:
            tables.trim_model(model)
        out = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        if padded:
            tables.pad_model(model)
        return out

    return step, params, tables


def run(repeats: int) -> dict:
    table = synthetic_events(preset="tiny", seed=0)
    make = vm_batches(table, None, 20, "none")
    rng = np.random.default_rng(0)
    batches = [
        {**make(rng.integers(0, len(table), BATCH)), "weight": np.ones(BATCH, np.float32)} for _ in range(repeats)
    ]
    results = {}
    for arch in ARCHS:
        (plain, plain_params, tables), (padded, padded_params, _) = (
            _setup(arch, p, table, batches) for p in (False, True)
        )
        times = median_times({"as built": plain, "padded": padded}, repeats)
        same = jax.tree.leaves(jax.tree.map(np.array_equal, plain_params(), padded_params()))
        results[arch] = {
            "step_ms": {k: 1e3 * v for k, v in times.items()},
            "padded_over_as_built": times["padded"] / times["as built"],
            "identical_parameters": bool(all(same)),
            "padded_tables": {"/".join(k): list(v) for k, v in tables.tables.items()},
        }
    return {"repeats": repeats, "batch": BATCH, "vocab": LARGE_VOCAB, "machine": machine_info(), "archs": results}


def markdown(report: dict) -> str:
    rows = []
    for arch, r in report["archs"].items():
        ms = r["step_ms"]
        rows.append(
            [
                arch,
                f"{ms['as built']:.2f}",
                f"{ms['padded']:.2f}",
                f"{1 / r['padded_over_as_built']:.2f}x",
                "yes" if r["identical_parameters"] else "NO",
            ]
        )
    tables = next(iter(report["archs"].values()))["padded_tables"]
    padded = ", ".join(f"{k.split('/')[-2]} {a:,} -> {b:,}" for k, (a, b) in tables.items())
    m = report["machine"]
    return "\n".join(
        [
            "# Embedding tables padded to aligned row counts while training: train steps at the large vocabulary",
            "",
            f"Compiled train step (loss, gradient, Adam), batch {report['batch']}, medians of {report['repeats']} "
            f"round-robin steps; tables padded: {padded}. {m['cpu_count']} CPUs, {m['platform']}, "
            f"Python {m['python']}, JAX {m['jax']}; load average after {report['load_average'][0]:.2f}"
            + (f"; {report['note']}" if report["note"] else "")
            + ".",
            "",
            markdown_table(
                ["model", "step ms, tables as built", "step ms, padded", "speed-up", "same parameters"], rows
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--note", default="", help="how quiet the machine was (recorded with the results)")
    args = parser.parse_args(argv)
    report = {**run(args.repeats), "note": args.note, "load_average": os.getloadavg()}
    write_json_atomic(RESULTS / "table_rows.json", report)
    text = markdown(report)
    write_text_atomic(RESULTS / "table_rows.md", text)
    print(text)


if __name__ == "__main__":
    main()
