"""One-seed probe of training recipes for the implicit VMs: test AUC at each k per recipe.

    python -m experiments.recipe_probe [--preset multihop] [--seed 0] [--data-seed 0] [--epochs 3] [--out runs/probe]
        [--only NAME,NAME]

Each recipe is a set of ``[vm]`` overrides (``RECIPES`` below; ``arch`` picks the VM, default
``implicit-seq``), trained with transfer ``none`` (no FM: the probe is about the core) on the
preset's VM window, then swept over k = 1..32 with Picard and Anderson
(``implicit_rec.sweep.implicit_sweep``); explicit recipes report their test AUC. One seed: a probe to
choose what the 3-seed study (``experiments/configs/test_time_compute.toml``) runs, not a result.
Writes OUT/probe.json and OUT/probe.md (atomically) and prints one JSON line per recipe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from implicit_rec import metrics
from implicit_rec import sweep as sweep_mod
from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.config import from_dict
from implicit_rec.data import load_dataset
from implicit_rec.loopfm import study
from implicit_rec.models.training import predict
from implicit_rec.tables import markdown_table

from ._args import directory, integer, names

ITERATIONS = (1, 2, 4, 8, 16, 32)
RANDOM_K = {"method": "picard", "train_iterations": [1, 16], "train_grad": "unroll"}
RECIPES = {  # name -> [vm] overrides ("arch" picks the VM)
    "din": {"arch": "din"},
    "default": {},  # Anderson, implicit gradient, 10 training iterations, spectral cap 0.9
    "rk12-unroll": {**RANDOM_K, "train_iterations": [1, 12]},
    "rk16-phantom-z0noise": {**RANDOM_K, "train_iterations": [2, 16], "train_grad": "phantom", "z0_noise": 0.5},
    "weight-jacobian-rk12": {
        **RANDOM_K,
        "train_iterations": [1, 12],
        "parameterization": "weight",
        "jacobian_weight": 1,
    },
    "g99-rk16": {**RANDOM_K, "gamma": 0.99},
    "g99-rk16-d64": {**RANDOM_K, "gamma": 0.99, "d_state": 64},
    "weight-rk16": {**RANDOM_K, "parameterization": "weight"},
    "graph-rk16": {**RANDOM_K, "arch": "implicit-graph", "node_dim": 16},  # the study's implicit-graph
}


class _NoStore:
    dim = 1  # transfer "none": the VM reads no FM embedding


def probe(preset: str, seed: int, epochs: int, recipes: dict, cache_dir: str, data_seed: int = 0) -> list[dict]:
    table = load_dataset("synthetic", preset=preset, seed=data_seed, cache_dir=cache_dir)
    test = table.rows("test")
    labels, users = np.asarray(table["label"][test]), np.asarray(table["user"][test])
    out = []
    for name, overrides in recipes.items():
        overrides = dict(overrides)
        arch = overrides.pop("arch", "implicit-seq")
        vm = study.resolve(from_dict({"vm": {"epochs": epochs, **overrides}}), table.schema.max_len).vm
        t0 = time.perf_counter()
        model, hist, make = study.train_vm(table, _NoStore(), vm, arch, "none", seed)
        row = {"recipe": name, "arch": arch, "train_s": round(time.perf_counter() - t0, 1)}
        row["valid_auc"] = [round(r["valid_auc"], 4) for r in hist["history"]]
        if model.is_implicit:
            row["spectral_radius"] = [round(r["spectral_radius_mean"], 2) for r in hist["history"]]
            for method in ("picard", "anderson"):
                swept = sweep_mod.implicit_sweep(model, make, test, labels, users, ITERATIONS, method, repeats=1)
                row[method] = {str(r.iterations): round(r.metrics["auc"], 4) for r in swept.rows}
        else:
            row["auc"] = round(metrics.evaluate(labels, predict(model, make, test), users)["auc"], 4)
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def markdown(rows: list[dict]) -> str:
    head = ("recipe", *(f"k={k}" for k in ITERATIONS), "spectral radius")
    body = []
    for r in rows:
        aucs = [r["picard"][str(k)] for k in ITERATIONS] if "picard" in r else [r["auc"]] * len(ITERATIONS)
        rho = r.get("spectral_radius", ["-"])[-1]
        body.append((r["recipe"], *(f"{a:.4f}" for a in aucs), str(rho)))
    return markdown_table(head, body) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="multihop", help="synthetic preset (default multihop)")
    parser.add_argument("--seed", type=integer(0), default=0, help="model seed")
    parser.add_argument("--data-seed", type=integer(0), default=0, help="seed of the synthetic data (default 0)")
    parser.add_argument("--epochs", type=integer(1), default=3)
    parser.add_argument("--only", type=names(tuple(RECIPES)), default=None, help="comma list of recipes to run")
    parser.add_argument("--out", type=directory, default="runs/probe")
    args = parser.parse_args(argv)
    recipes = {n: RECIPES[n] for n in args.only} if args.only else RECIPES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = probe(args.preset, args.seed, args.epochs, recipes, str(out / "cache"), args.data_seed)
    meta = {"preset": args.preset, "seed": args.seed, "data_seed": args.data_seed}
    write_json_atomic(out / "probe.json", {**meta, "recipes": rows})
    write_text_atomic(out / "probe.md", markdown(rows))


if __name__ == "__main__":
    main()
