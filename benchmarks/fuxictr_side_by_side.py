"""Side by side: FuxiCTR's DIN (PyTorch CPU) and the project's DIN and implicit VMs, whole fits on the same rows.

Run from the repository root::

    python -m benchmarks.fuxictr_side_by_side [--seeds 3] [--skip-fuxictr] [--set vm.epochs=5]

The rows are the VM window of the synthetic default (train: ``vm.days``, the ``valid`` and ``test``
splits), with what FuxiCTR's DIN can consume: the categorical fields, the numeric price and the
three behaviour sequences (last ``vm.max_len`` positions) — the inputs of the project's ``din``
and ``implicit`` VMs with transfer ``none``. They are exported to FuxiCTR's npz input format (one
array per column, a ``feature_map.json``; sequences share their item field's embedding table, id 0
is the padding) and read by its ``NpzDataLoader`` (its default of one loader worker process).

FuxiCTR's DIN is its model zoo's DIN (``model_zoo/DIN``, not part of the ``fuxictr`` wheel), built
here from the wheel's layers as the zoo builds it: ``FeatureEmbeddingDict``, one ``DIN_Attention``
of target (cate_id, brand, btag) over the sequences (cate_his, brand_his, btag_his) — FuxiCTR's
activation unit, an MLP with Dice on [t, h, t - h, t * h], no softmax — and an ``MLP_Block`` on every
field's embedding, trained by FuxiCTR's ``BaseModel.fit`` (Adam, gradient clipping at 10, early
stopping on validation AUC, its default learning-rate decay on a plateau). Embedding dimension, MLP
widths, the activation unit's width, batch size, epochs, patience and learning rate are the
project's ``[vm]`` values.

Every model trains in its own fresh process, one after another, round-robin over the seeds (so a
change of the shared machine's load reaches each model alike), with 2 threads (PyTorch:
``torch.set_num_threads(2)``; XLA as it is) and no persistent compilation cache; then the project's
models again with the cache an earlier, uncounted fit filled (rows "warm cache", not judged). Per model: the
whole fit (the ``fit`` call: compilation, training, validation after every epoch, restoring the best
epoch) in wall and CPU seconds (the process and its loader workers), the model's construction
before it (for the VMs, XLA compiles every initializer there), training and validation seconds per
epoch (the first epoch's training includes the step's compilation), steady-state training examples/s
(epochs after the first), the test AUC (all models' test predictions scored by ``implicit_rec.metrics``)
and the parameter count. Medians over
the seeds. Targets (issue 15): the DIN's whole-fit examples/s >= 3x FuxiCTR's; validation <= 20% of
the training time per epoch (DIN and implicit); the implicit VM's whole-fit examples/s >= 0.8x the
DIN's. Without torch and fuxictr (the ``bench`` extra) the FuxiCTR model is skipped with a message
and its target is reported as not run. Writes ``benchmarks/results/fuxictr_side_by_side.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NAME = "fuxictr_side_by_side"
MODELS = ("fuxictr-din", "din", "implicit")
PROJECT_MODELS = ("din", "implicit")
WARM = ", warm cache"  # the project's models again, the compilation cache holding an earlier fit's programs
DATASET_ID = "implicit_rec_vm_rows"
THREADS = 2
TARGET_FIELDS = ("cate_id", "brand", "btag")  # FuxiCTR's DIN target: these fields' embeddings, concatenated
TARGETS = {"din_over_fuxictr": 3.0, "valid_over_train": 0.2, "implicit_over_din": 0.8}


def fuxictr_missing() -> str | None:
    """Why FuxiCTR's DIN cannot run here, or None."""
    missing = [m for m in ("torch", "fuxictr") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: pip install -e '.[bench]' (or make bench)"
    return None


# -- the rows, in both formats ----------------------------------------------------------------------


def _setup(preset: str, cache: Path, overrides: tuple[str, ...]):
    from implicit_rec import config
    from implicit_rec.data.synthetic import synthetic_events
    from implicit_rec.loopfm import study

    table = synthetic_events(preset, seed=0, cache_dir=cache)
    cfg = study.resolve(config.load_config(None, overrides), table.schema.max_len)
    return table, cfg, study


def split_rows(table, cfg, study) -> dict[str, np.ndarray]:
    """The rows a VM trains, validates and is tested on (``study.train_vm``, ``stages._evaluate``)."""
    return {
        "train": study.window_rows(table, "train", cfg.vm.days),
        "valid": table.rows("valid"),
        "test": table.rows("test"),
    }


def export(table, cfg, rows: dict[str, np.ndarray], out: Path) -> dict:
    """Write ``{train,valid,test}.npz`` (FuxiCTR's npz format: one array per column, sequences (N, L))
    and ``feature_map.json`` into ``out``; returns the feature map."""
    schema, length = table.schema, cfg.vm.max_len
    features = [
        {c: {"source": "", "type": "categorical", "vocab_size": int(table.vocab_sizes[c]), "padding_idx": 0}}
        for c in schema.categorical
    ]
    features += [{c: {"source": "", "type": "numeric"}} for c in schema.numeric]
    features += [
        {
            s: {
                "source": "",
                "type": "sequence",
                "share_embedding": vocab,
                "vocab_size": int(table.vocab_sizes[vocab]),
                "max_len": length,
                "padding_idx": 0,
            }
        }
        for s, vocab in schema.sequences
    ]
    feature_map = {
        "dataset_id": DATASET_ID,
        "num_fields": len(features),
        "total_features": int(sum(table.vocab_sizes[c] for c in schema.categorical)),
        "input_length": len(schema.categorical) + len(schema.numeric) + length * len(schema.sequences),
        "labels": ["label"],
        "features": features,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "feature_map.json").write_text(json.dumps(feature_map, indent=2))
    for split, r in rows.items():
        cols = {c: np.asarray(table[c][r]) for c in schema.categorical}
        cols.update({c: np.asarray(table[c][r], np.float32) for c in schema.numeric})
        cols.update({s: np.asarray(table[s][r])[:, -length:] for s, _ in schema.sequences})
        cols["label"] = np.asarray(table["label"][r], np.float32)
        np.savez(out / f"{split}.npz", **cols)
    np.savez(out / "rows.npz", **rows)
    return feature_map


# -- one whole fit per process ---------------------------------------------------------------------


def _cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its waited-for children (loader workers)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + usage.ru_utime + usage.ru_stime


class _NoStore:
    """Transfer ``none`` reads no historical store; ``study.make_vm`` reads only its ``dim``."""

    dim = 1


def fit_project(arch: str, seed: int, data: Path, preset: str, cache: Path, overrides: tuple[str, ...]) -> dict:
    """``study.train_vm`` of ``arch`` / transfer none (the pipeline's fit, with its convergence monitor
    for the implicit VM), then its test predictions."""
    from implicit_rec.models import training
    from implicit_rec.params import count_params

    table, cfg, study = _setup(preset, cache, overrides)
    rows = dict(np.load(data / "rows.npz"))
    if any(not np.array_equal(rows[k], v) for k, v in split_rows(table, cfg, study).items()):
        raise SystemExit("the exported rows are not the rows the VMs train on")
    fit, timing = study.fit, {}

    def timed_fit(*a, **k):  # the whole fit, apart from the model's construction
        t, cpu = time.perf_counter(), _cpu_seconds()
        out = fit(*a, **k)
        timing.update(whole_fit_s=time.perf_counter() - t, whole_fit_cpu_s=_cpu_seconds() - cpu)
        return out

    study.fit = timed_fit
    # fit's per-epoch seconds; for a fit that does not report them: its validation from the start of
    # its predict to the progress call after the epoch's monitor
    marks, valid = [], training.predict

    def timed_valid(*a, **k):
        marks.append(("valid", time.perf_counter()))
        return valid(*a, **k)

    training.predict = timed_valid
    t0 = time.perf_counter()
    model, hist, make = study.train_vm(
        table, _NoStore(), cfg.vm, arch, "none", seed, progress=lambda r: marks.append(("end", time.perf_counter()))
    )
    training.predict = valid
    build_s = time.perf_counter() - t0 - timing["whole_fit_s"]
    if "train_seconds" not in hist:
        start = t0 + build_s
        hist["train_seconds"], hist["valid_seconds"] = [], []
        for (_, v), (_, end) in zip(marks[0::2], marks[1::2]):
            hist["train_seconds"].append(v - start)
            hist["valid_seconds"].append(end - v)
            start = end
    t1 = time.perf_counter()
    probs = training.predict(model, make, rows["test"])
    return {
        "params": count_params(model),
        **timing,
        "build_s": build_s,
        "epochs": hist["epochs_run"],
        "train_seconds": hist["train_seconds"],
        "valid_seconds": hist["valid_seconds"],
        "n_train": len(rows["train"]),
        "test_predict_s": time.perf_counter() - t1,
        "probs": probs,
    }


def fit_fuxictr(seed: int, data: Path, overrides: tuple[str, ...]) -> dict:
    """FuxiCTR's DIN (model zoo structure, wheel layers) fitted by FuxiCTR on the exported rows."""
    import logging

    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbeddingDict, MLP_Block
    from fuxictr.pytorch.models import BaseModel
    from fuxictr.pytorch.torch_utils import seed_everything

    from implicit_rec import config

    logging.disable(logging.INFO)
    torch.set_num_threads(THREADS)
    seed_everything(seed)
    vm = config.load_config(None, overrides).vm
    feature_map = FeatureMap(DATASET_ID, str(data))
    feature_map.load(str(data / "feature_map.json"), {"embedding_dim": EMBED_DIM})
    sequences = tuple(name for name, spec in feature_map.features.items() if spec["type"] == "sequence")

    class DIN(BaseModel):
        """The model zoo's DIN: target attention per (target fields, sequence fields) pair, its pooled
        output replacing the sequences' embeddings, an MLP on every field's embedding."""

        def __init__(self, feature_map, targets, seqs, **kwargs):
            super().__init__(feature_map, model_id="DIN", **kwargs)
            self.targets, self.seqs = targets, seqs
            self.embedding_layer = FeatureEmbeddingDict(feature_map, EMBED_DIM)
            self.attention = DIN_Attention(
                EMBED_DIM * len(targets),
                attention_units=[ATTENTION_UNITS],
                hidden_activations="Dice",
                output_activation=None,
                dropout_rate=0,
                use_softmax=False,
            )
            self.dnn = MLP_Block(
                input_dim=feature_map.sum_emb_out_dim(),
                output_dim=1,
                hidden_units=list(vm.hidden),
                hidden_activations="ReLU",
                output_activation=self.output_activation,
                dropout_rates=0,
                batch_norm=False,
            )
            self.compile("adam", "binary_crossentropy", vm.learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            x = self.get_inputs(inputs)
            emb = self.embedding_layer(x)
            target = torch.cat([emb[f] for f in self.targets], dim=-1)
            history = torch.cat([emb[f] for f in self.seqs], dim=-1)
            pooled = self.attention(target, history, x[self.seqs[0]].long() != 0)
            for field, part in zip(self.seqs, pooled.split(EMBED_DIM, dim=-1)):
                emb[field] = part
            return {"y_pred": self.dnn(self.embedding_layer.dict2tensor(emb, flatten_emb=True))}

    with tempfile.TemporaryDirectory(prefix="fuxictr-model-") as root:
        t0 = time.perf_counter()
        model = DIN(
            feature_map,
            TARGET_FIELDS,
            sequences,
            gpu=-1,
            model_root=root,
            verbose=0,
            metrics=["AUC", "logloss"],
            monitor="AUC",
            early_stop_patience=vm.patience,
            embedding_regularizer=None,
            net_regularizer=None,
        )
        os.makedirs(model.model_dir, exist_ok=True)  # FuxiCTR's run_expid makes it: fit saves the best epoch there
        train_gen, valid_gen, test_gen = RankDataLoader(
            feature_map,
            stage="both",
            train_data=str(data / "train.npz"),
            valid_data=str(data / "valid.npz"),
            test_data=str(data / "test.npz"),
            batch_size=vm.batch_size,
            shuffle=True,
            data_format="npz",
        )
        epochs, valids = [], []
        train_epoch, evaluate = model.train_epoch, model.evaluate

        def timed_epoch(gen):
            start, n = time.perf_counter(), len(valids)
            train_epoch(gen)
            epochs.append(time.perf_counter() - start - sum(valids[n:]))

        def timed_evaluate(gen, metrics=None):
            start = time.perf_counter()
            out = evaluate(gen, metrics)
            valids.append(time.perf_counter() - start)
            return out

        model.train_epoch, model.evaluate = timed_epoch, timed_evaluate
        build_s = time.perf_counter() - t0
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        model.fit(train_gen, epochs=vm.epochs, validation_data=valid_gen)
        fit_s, fit_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        t1 = time.perf_counter()
        probs = model.predict(test_gen).astype(np.float32)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "params": int(params),
        "whole_fit_s": fit_s,
        "whole_fit_cpu_s": fit_cpu,
        "build_s": build_s,
        "epochs": len(epochs),
        "train_seconds": epochs,
        "valid_seconds": valids,
        "n_train": int(train_gen.num_samples),
        "test_predict_s": time.perf_counter() - t1,
        "probs": probs,
        "loader_workers": 1,
    }


EMBED_DIM = 8  # the VMs' embedding dimension (VerticalModel's default, which study.make_vm keeps)
ATTENTION_UNITS = 32  # the hidden width of the VMs' activation unit (features.DINAttention's default)


def worker(args) -> None:
    data, cache = Path(args.data), Path(args.cache)
    overrides = tuple(args.set)
    if args.worker == "fuxictr-din":
        r = fit_fuxictr(args.seed, data, overrides)
    else:
        from implicit_rec import compile_cache

        compile_cache.enable()  # as the implicit-rec commands do: $IMPLICIT_REC_JAX_CACHE (run_worker sets it)
        r = fit_project(args.worker, args.seed, data, args.preset, cache, overrides)
    np.save(Path(args.out).with_suffix(".npy"), r.pop("probs"))
    Path(args.out).write_text(json.dumps(r))


# -- the side by side ------------------------------------------------------------------------------


def run_worker(model: str, seed: int, tmp: Path, args, cache: Path | None = None) -> dict:
    """One whole fit of ``model`` in a fresh process; ``cache``: its persistent compilation cache
    (None: off)."""
    from .common import JAX_CACHE_VARS  # imported here, as below: this module's workers import no JAX first

    out = tmp / f"{model}-s{seed}.json"
    env = {k: v for k, v in os.environ.items() if k not in JAX_CACHE_VARS}
    env["IMPLICIT_REC_JAX_CACHE"] = str(cache) if cache is not None else "off"
    cmd = [sys.executable, "-m", f"benchmarks.{NAME}", "--worker", model, "--seed", str(seed)]
    cmd += ["--data", str(tmp / "data"), "--cache", str(tmp / "cache"), "--out", str(out), "--preset", args.preset]
    cmd += [x for kv in args.set for x in ("--set", kv)]
    t0 = time.perf_counter()
    log = tmp / f"{model}-s{seed}.log"
    with log.open("w") as sink:
        proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    r = json.loads(out.read_text())
    r["process_s"] = time.perf_counter() - t0
    r["probs"] = np.load(out.with_suffix(".npy"))
    return r


def later_valid_over_train(runs: list[dict]) -> float:
    """Median over the seeds of validation / training seconds in the epochs after the first (no
    compilation on either side; the first epoch's when a fit ran one)."""
    ratios = []
    for r in runs:
        valid, train = (
            (r["valid_seconds"][1:], r["train_seconds"][1:])
            if r["epochs"] > 1
            else (r["valid_seconds"], r["train_seconds"])
        )
        ratios.append(sum(valid) / sum(train))
    return float(statistics.median(ratios))


def summarize(model: str, runs: list[dict], labels: np.ndarray, users: np.ndarray) -> dict:
    """Medians over the seeds of one model's whole fits."""
    from implicit_rec import metrics

    def med(f):
        return float(statistics.median(f(r) for r in runs))

    def steady(r):  # epochs after the first: no compilation
        later = r["train_seconds"][1:] or r["train_seconds"]
        return r["n_train"] / statistics.median(later)

    return {
        "model": model,
        "seeds": len(runs),
        "params": runs[0]["params"],
        "epochs": [r["epochs"] for r in runs],
        "whole_fit_s": med(lambda r: r["whole_fit_s"]),
        "whole_fit_cpu_s": med(lambda r: r["whole_fit_cpu_s"]),
        "build_s": med(lambda r: r["build_s"]),
        "whole_fit_examples_per_s": med(lambda r: r["n_train"] * r["epochs"] / r["whole_fit_s"]),
        "steady_examples_per_s": med(steady),
        "first_epoch_train_s": med(lambda r: r["train_seconds"][0]),
        "train_s_per_epoch": med(lambda r: statistics.mean(r["train_seconds"])),
        "valid_s_per_epoch": med(lambda r: statistics.mean(r["valid_seconds"])),
        "valid_over_train": med(lambda r: sum(r["valid_seconds"]) / sum(r["train_seconds"])),
        "later_valid_over_train": later_valid_over_train(runs),
        "test_predict_s": med(lambda r: r["test_predict_s"]),
        "test_auc": float(np.mean([metrics.auc(labels, r["probs"]) for r in runs])),
        "test_gauc": float(np.mean([metrics.gauc(labels, r["probs"], users) for r in runs])),
        "runs": [{k: v for k, v in r.items() if k != "probs"} for r in runs],
    }


def targets(s: dict, skipped: str | None) -> list[dict]:
    def target(name, value, bound, op):
        passed = None if value is None else (value >= bound if op == ">=" else value <= bound)
        entry = {"name": name, "value": value, "target": f"{op} {bound:g}", "pass": passed}
        return entry

    fx, din, imp = s.get("fuxictr-din"), s["din"], s["implicit"]
    first = target(
        "DIN whole-fit examples/s over FuxiCTR DIN's (compilation and validation included, median over seeds)",
        din["whole_fit_examples_per_s"] / fx["whole_fit_examples_per_s"] if fx else None,
        TARGETS["din_over_fuxictr"],
        ">=",
    )
    if fx is None:
        first["note"] = f"FuxiCTR's DIN skipped: {skipped}"
    valid = [
        target(
            f"{arch} validation seconds / training seconds per epoch (whole fit, median over seeds)",
            s[arch]["valid_over_train"],
            TARGETS["valid_over_train"],
            "<=",
        )
        for arch in ("din", "implicit")
    ]
    for arch, entry in zip(("din", "implicit"), valid):
        entry["note"] = (
            "fit compiles the validation programs on a background thread during the first epoch (that time "
            f"is in the training seconds); epochs after the first alone: {s[arch]['later_valid_over_train']:.2f}"
        )
    return [
        first,
        *valid,
        target(
            "implicit VM whole-fit examples/s over the DIN's (compilation and validation included, median over seeds)",
            imp["whole_fit_examples_per_s"] / din["whole_fit_examples_per_s"],
            TARGETS["implicit_over_din"],
            ">=",
        ),
    ]


def markdown(r: dict) -> str:
    from implicit_rec.tables import markdown_table

    rows = []
    for m in r["models"].values():
        rows.append(
            [
                m["model"],
                f"{m['params']:,}",
                "/".join(map(str, m["epochs"])),
                f"{m['whole_fit_s']:.1f}",
                f"{m['whole_fit_cpu_s']:.1f}",
                f"{m['build_s']:.1f}",
                f"{m['whole_fit_examples_per_s']:,.0f}",
                f"{m['steady_examples_per_s']:,.0f}",
                f"{m['first_epoch_train_s']:.1f}",
                f"{m['train_s_per_epoch']:.2f}",
                f"{m['valid_s_per_epoch']:.2f}",
                f"{m['valid_over_train']:.1%}",
                f"{m['later_valid_over_train']:.1%}",
                f"{m['test_auc']:.4f}",
            ]
        )
    table = markdown_table(
        [
            "model",
            "params",
            "epochs (per seed)",
            "whole fit, s",
            "whole fit, CPU s",
            "model built in, s",
            "whole-fit examples/s",
            "steady examples/s",
            "first epoch's training, s",
            "training s / epoch",
            "validation s / epoch",
            "validation / training",
            "the same, epochs after the first",
            "test AUC",
        ],
        rows,
        align="lrlrrrrrrrrrrr",
    )
    checks = markdown_table(
        ["target", "value", "bound", "verdict"],
        [
            [
                t["name"],
                "n/a" if t["value"] is None else f"{t['value']:.2f}",
                t["target"],
                {True: "PASS", False: "FAIL", None: "not run"}[t["pass"]] + (f" ({t['note']})" if "note" in t else ""),
            ]
            for t in r["targets"]
        ],
        align="lrll",
    )
    m = r["machine"]
    return (
        f"# FuxiCTR's DIN vs the project's DIN and implicit VMs: whole fits on the same rows "
        f"(commit {r.get('commit', 'unknown')[:8]})\n\n"
        f"Synthetic {r['preset']}, VM window: {r['rows']['train']:,} training, {r['rows']['valid']:,} validation, "
        f"{r['rows']['test']:,} test rows; batch {r['vm']['batch_size']}, learning rate {r['vm']['learning_rate']}, "
        f"up to {r['vm']['epochs']} epochs (patience {r['vm']['patience']}), embedding dimension {EMBED_DIM}, "
        f"MLP {r['vm']['hidden']}; {r['seeds']} seeds, each model in its own process, round-robin, "
        f"{THREADS} threads, no compilation cache (rows '{WARM[2:]}': the project's models again, each process "
        "with the persistent compilation cache an earlier, uncounted fit of the same model filled, as a user's "
        "next fit finds it; for information, the targets are judged without it). Medians over the seeds (test AUC: "
        "mean). "
        f"{m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, JAX {m['jax']}"
        f"{', torch ' + r['torch'] + ', fuxictr ' + r['fuxictr'] if r.get('torch') else ''}; load average "
        f"(1, 5, 15 min) {', '.join(map(str, m['load_before']))} before, {', '.join(map(str, m['load_after']))} after."
        f"{' ' + r['note'] if r['note'] else ''}\n\n" + table + "\n\n" + checks + "\n" + _warm_line(r["models"])
    )


def _warm_line(models: dict) -> str:
    """The whole-fit ratios of the targets with the compilation cache warm (information, not judged)."""
    din, imp, fx = models.get(f"din{WARM}"), models.get(f"implicit{WARM}"), models.get("fuxictr-din")
    if din is None or imp is None:
        return ""
    parts = (
        [] if fx is None else [f"DIN / FuxiCTR {din['whole_fit_examples_per_s'] / fx['whole_fit_examples_per_s']:.2f}x"]
    )
    parts.append(f"implicit / DIN {imp['whole_fit_examples_per_s'] / din['whole_fit_examples_per_s']:.2f}x")
    return f"\nWith the compilation cache warm (not judged): whole-fit examples/s {', '.join(parts)}.\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="whole fits per model (round-robin)")
    parser.add_argument("--preset", default="default", choices=["tiny", "default"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run-configuration override")
    parser.add_argument("--skip-fuxictr", action="store_true", help="only the project's DIN and implicit VM")
    parser.add_argument("--note", default="", help="a sentence on the machine's state, added to the markdown")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    skipped = "--skip-fuxictr" if args.skip_fuxictr else fuxictr_missing()
    if skipped:
        print(f"FuxiCTR's DIN skipped: {skipped}")
    models = [m for m in MODELS if m != "fuxictr-din" or not skipped]
    from implicit_rec.atomic import write_json_atomic, write_text_atomic

    from .common import RESULTS, git_commit, machine_info

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fuxictr-bench-") as tmp:
        tmp = Path(tmp)
        table, cfg, study = _setup(args.preset, tmp / "cache", tuple(args.set))
        rows = split_rows(table, cfg, study)
        export(table, cfg, rows, tmp / "data")
        labels, users = np.asarray(table["label"][rows["test"]]), np.asarray(table["user"][rows["test"]])
        runs = {m: [] for m in [*models, *(f"{m}{WARM}" for m in PROJECT_MODELS)]}
        for seed in range(args.seeds):
            for m in models:
                runs[m].append(run_worker(m, seed, tmp, args))
                r = runs[m][-1]
                print(f"{m} seed {seed}: whole fit {r['whole_fit_s']:.1f} s, {r['epochs']} epochs", flush=True)
        # The project's models again, as a user's next fit meets them: the compilation cache (on by
        # default) holds the programs of an earlier fit of the same model (a priming fit, not counted).
        warm = tmp / "jax-cache"
        for m in PROJECT_MODELS:
            run_worker(m, 0, tmp, args, cache=warm)
        for seed in range(args.seeds):
            for m in PROJECT_MODELS:
                runs[f"{m}{WARM}"].append(r := run_worker(m, seed, tmp, args, cache=warm))
                print(f"{m}{WARM} seed {seed}: whole fit {r['whole_fit_s']:.1f} s, {r['epochs']} epochs", flush=True)
    summary = {m: summarize(m, v, labels, users) for m, v in runs.items()}
    versions = {}
    if "fuxictr-din" in models:
        import fuxictr
        import torch

        versions = {"torch": torch.__version__, "fuxictr": fuxictr.__version__}
    commit = git_commit()
    result = {
        "command": f"python -m benchmarks.{NAME} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "preset": args.preset,
        "seeds": args.seeds,
        "rows": {k: len(v) for k, v in rows.items()},
        "vm": {k: getattr(cfg.vm, k) for k in ("batch_size", "learning_rate", "epochs", "patience", "hidden")},
        "skipped": skipped,
        "note": args.note,
        **versions,
        "models": summary,
        "machine": machine_info(
            load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in os.getloadavg()]
        ),
    }
    result["targets"] = targets(summary, skipped)
    text = markdown(result)
    write_json_atomic(RESULTS / f"{NAME}.json", result)
    write_text_atomic(RESULTS / f"{NAME}.md", text)
    print(text)
    if args.strict and any(t["pass"] is False for t in result["targets"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
