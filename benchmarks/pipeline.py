"""Benchmark of the `implicit-rec run` pipeline's throughput.

Run from the repository root::

    python -m benchmarks.pipeline [--preset default] [--repeats 3]

Measures, in one process on the synthetic data: preprocessing (generating and encoding the table,
rows per second), and training throughput (examples per second over the training steps after
compilation; ``fit`` reports it) of the explicit VM (DIN front end, MLP 64-32) and the implicit VM
(same front end, implicit MLP cell, 10 Anderson iterations while training), each for one epoch
on the VM window with LoopFM + KD inputs, alternating the two ``repeats`` times; medians and their
ratio. Writes ``benchmarks/results/pipeline.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from implicit_rec import config
from implicit_rec.atomic import write_text_atomic
from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.loopfm import study
from implicit_rec.tables import markdown_table

from .common import RESULTS, machine_info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=["tiny", "default"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table = synthetic_events(args.preset, seed=0, cache_dir=tmp)
        prep_s = time.perf_counter() - t0
        rows = len(table["label"])
        cfg = study.resolve(config.load_config(None, ("fm.epochs=1", "vm.epochs=1")), table.schema.max_len)
        fm, _ = study.train_fm(table, cfg.fm, log=lambda s: None)
        store = study.build_store(fm, table, cfg.fm, log=lambda s: None)
        speeds = {"din": [], "implicit": []}
        for _ in range(args.repeats):
            for arch in speeds:
                _, hist, _ = study.train_vm(table, store, cfg.vm, arch, "loopfm+kd", 0)
                speeds[arch].append(hist["examples_per_second"])
    med = {a: float(np.median(v)) for a, v in speeds.items()}
    report = {
        "machine": machine_info(),
        "preset": args.preset,
        "rows": rows,
        "preprocessing_rows_per_second": rows / prep_s,
        "preprocessing_seconds": prep_s,
        "train_examples_per_second": speeds,
        "median": med,
        "implicit_over_explicit": med["implicit"] / med["din"],
    }
    md = "\n".join(
        [
            f"# Pipeline throughput (synthetic {args.preset}, {rows:,} rows)",
            "",
            f"Preprocessing: {rows / prep_s:,.0f} rows/s ({prep_s:.1f} s).",
            "",
            markdown_table(
                ["VM (loopfm+kd)", "train examples/s (median)", "runs"],
                [[a, f"{med[a]:,.0f}", ", ".join(f"{v:,.0f}" for v in speeds[a])] for a in speeds],
                align="lrl",
            ),
            "",
            f"implicit / explicit throughput: {report['implicit_over_explicit']:.2f}",
            "",
        ]
    )
    write_text_atomic(RESULTS / "pipeline.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(RESULTS / "pipeline.md", md)
    print(md)


if __name__ == "__main__":
    main()
