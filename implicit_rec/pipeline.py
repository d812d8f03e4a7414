"""``implicit-rec run``: data -> FM -> historical store -> VMs -> baselines -> sweep -> report.

Run directory (every file written atomically; a rerun of the same command resumes)::

    config.toml        the effective configuration (a rerun must match it, or use --force)
    run.json           package versions, command, status ("running" / "finished"), stage times
    log.txt            everything printed
    cache/             prepared dataset tables (data.cache_dir = "auto")
    models/fm.*        FM parameters (.msgpack), metrics (.json), in-progress epoch checkpoint (.train.msgpack)
    store/             the FM's logged embeddings (LoopFM features, KD targets)
    models/vm-*.*      each VM and explicit baseline, the same three files
    sweep.json         the test-time iteration sweep and the Lipschitz diagnostic
    metrics.json       everything (schema: ``implicit_rec.report.METRICS_SCHEMA``)
    report.md, *.png   tables and plots (``implicit_rec.report``)

A stage is skipped when its output exists; a training run continues after its last finished
epoch. Resumed runs reach exactly the metrics of uninterrupted ones (same seeds, same data order).

Before any training the data are checked against the configuration (:func:`check_data`: every
window has events, validation and test have both labels, the VMs' KD rows are logged). A run
directory this invocation created is removed again when the configuration or the data are
refused, so a fixed command starts clean. A damaged ``run.json``, ``config.toml`` or result file
is a :class:`RunError` saying which file and how to recover (remove the directory or ``--force``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
from flax import nnx

from . import config as config_mod
from . import metrics, report
from . import sweep as sweep_mod
from .atomic import write_text_atomic
from .checkpoint import restore_state, save_state
from .config import RunConfig
from .data import load_dataset
from .loopfm import study
from .loopfm.batches import table_batches, vm_batches
from .loopfm.store import HistoricalStore
from .loopfm.transfer import transfer_ratios
from .models.foundation import FoundationModel
from .models.training import TrainConfig, predict


class RunError(RuntimeError):
    """A problem the user can fix (bad path, finished run, changed config); printed as one line."""


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("implicit-rec", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def study_config(cfg: RunConfig, max_len_available: int) -> study.StudyConfig:
    """The LoopFM study settings of a run configuration."""
    fm, vm = cfg.fm, cfg.vm
    return study.StudyConfig(
        fm_days=tuple(fm.days),
        vm_days=tuple(vm.days),
        log_from_day=fm.log_from_day,
        fm_size=fm.size,
        fm_max_len=fm.max_len or min(100, max_len_available),
        vm_max_len=min(vm.max_len, max_len_available),
        history_len=vm.history_len,
        embedding=fm.embedding,
        store_dtype=fm.store_dtype,
        archs=vm.archs,
        transfers=vm.transfers,
        seeds=vm.seeds,
        fm_train=TrainConfig(
            epochs=fm.epochs, batch_size=fm.batch_size, learning_rate=fm.learning_rate, patience=fm.patience
        ),
        vm_train=TrainConfig(
            epochs=vm.epochs,
            batch_size=vm.batch_size,
            learning_rate=vm.learning_rate,
            patience=vm.patience,
            kd_weight=vm.kd_weight,
        ),
        implicit_train_iters=vm.train_max_iter,
        implicit_eval_iters=vm.eval_max_iter,
        kd_on_main=vm.kd_on_main,
        out_of_fold=fm.out_of_fold,
        vm_hidden=vm.hidden,
        d_state=vm.d_state,
        implicit_method=vm.method,
    )


def _first_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diff = _first_difference(va, vb, f"{prefix}{key}.")
            if diff:
                return diff
        elif va != vb:
            return f"{prefix}{key}: {va!r} in the run directory, {vb!r} now"
    return None


def read_json(path: Path, *, expect: type = dict):
    """The JSON value in ``path``; RunError naming the file, the position and how to recover."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problem = f"is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
    except UnicodeDecodeError as err:
        problem = f"is not UTF-8 text (byte {err.start})"
    else:
        if isinstance(value, expect):
            return value
        problem = f"holds a JSON {type(value).__name__}, not an object"
    run = path.parent.parent if path.parent.name == "models" else path.parent
    raise RunError(
        f"{path.name} in {path.parent} {problem}: the run directory is damaged; remove {run} "
        "or rerun with --force to start over."
    )


def _json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


class Run:
    """One run directory. ``log`` prints a line (and appends it to log.txt); ``bar`` is a tqdm factory or None."""

    def __init__(
        self,
        out: str | os.PathLike,
        cfg: RunConfig,
        *,
        force: bool = False,
        quiet: bool = False,
        command: list | None = None,
        events: Callable[[str], None] | None = None,
        existing: bool = False,
    ):
        self.out, self.cfg, self.quiet = Path(out), cfg, quiet
        self.events = events or (lambda name: None)  # called after each checkpoint (tests interrupt here)
        try:
            config_mod.check_run(cfg)  # also for a RunConfig built in Python, not read by load_config
        except config_mod.ConfigError as err:
            raise RunError(str(err)) from None
        self.created = False  # whether this invocation made the run directory (removed if refused)
        if not existing:  # existing=True: reopen a run directory as it is (implicit-rec sweep)
            self._prepare(force, command)
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm

    # -- run directory -----------------------------------------------------------------------
    def _prepare(self, force: bool, command) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} exists and is not a directory.")
        if force and out.exists():
            shutil.rmtree(out)
        state = self.state()
        if state.get("status") == "finished":
            raise RunError(f"{out} holds a finished run; use --force to overwrite it or choose another --out.")
        self.created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise RunError(f"cannot write to the output directory {out}: {err.strerror or err}.") from None
        saved = out / "config.toml"
        if saved.is_file():
            try:
                before = config_mod.load_config(saved).to_dict()
            except config_mod.ConfigError as err:
                raise RunError(
                    f"the run directory's config.toml is damaged ({err}); remove {out} or rerun "
                    "with --force to start over."
                ) from None
            diff = _first_difference(before, self.cfg.to_dict())
            if diff:
                raise RunError(
                    f"{out} holds an unfinished run with another configuration ({diff}); "
                    "rerun with the same settings to resume, or use --force to start over."
                )
        else:
            write_text_atomic(saved, config_mod.to_toml(self.cfg))
        if not state:
            state = {"versions": versions(), "command": command or sys.argv, "status": "running", "stages": {}}
            self._save_state(state)

    def state(self) -> dict:
        """run.json ({} before the first write); RunError if it is damaged."""
        path = self.out / "run.json"
        if not path.is_file():
            return {}
        state = read_json(path)
        if not isinstance(state.get("status"), str) or not isinstance(state.get("stages"), dict):
            raise RunError(
                f"run.json in {self.out} lacks its 'status' or 'stages' entry: the run directory is "
                f"damaged; remove {self.out} or rerun with --force to start over."
            )
        return state

    def _save_state(self, state: dict) -> None:
        _json(self.out / "run.json", state)

    def _stage_done(self, name: str, seconds: float) -> None:
        state = self.state()
        state["stages"][name] = seconds  # this invocation's time (a resumed stage is timed again)
        self._save_state(state)
        self.events(f"stage:{name}")

    def log(self, line: str) -> None:
        with open(self.out / "log.txt", "a") as fh:
            fh.write(line + "\n")
        if not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(line)

    # -- stages ------------------------------------------------------------------------------
    def load_data(self):
        d = self.cfg.data
        cache = self.out / "cache" if d.cache_dir == config_mod._AUTO else Path(d.cache_dir)
        t0 = time.perf_counter()
        if cache.exists() and not cache.is_dir():
            raise RunError(f"data.cache_dir={str(cache)!r} is a file; point it at a directory (or 'auto').")
        try:
            table = load_dataset(d.dataset, cache_dir=cache, preset=d.preset, seed=d.seed, progress_bar=self.bar)
        except (OSError, ValueError, TypeError) as err:  # missing / unreadable files, DataError
            raise RunError(f"data.dataset={d.dataset!r}: {_oserror_text(err)}") from None
        seconds = time.perf_counter() - t0
        rows = len(table["label"])
        duplicates = table.info.get("duplicate_events")
        self.log(
            f"data: {table.name}, {rows:,} events, {len(np.unique(np.asarray(table['user']))):,} users "
            f"({rows / max(seconds, 1e-9):,.0f} rows/s)"
            + (f"; {duplicates:,} exact duplicate events (kept)" if duplicates else "")
        )
        state = self.state()
        state["data"] = {"name": table.name, "events": rows, "duplicate_events": duplicates}
        self._save_state(state)
        self._stage_done("data", seconds)
        return table

    def check_data(self, table, scfg: study.StudyConfig) -> None:
        """RunError naming the keys if the configuration's windows do not fit the data."""
        problem = data_problem(table, self.cfg, scfg)
        if problem:
            raise RunError(f"{problem} ({_days_present(table)}).")

    def _model_paths(self, stem: str) -> tuple[Path, Path, Path]:
        base = self.out / "models" / stem
        return base.with_suffix(".msgpack"), base.with_suffix(".json"), base.with_suffix(".train.msgpack")

    def _fit_options(self, ckpt: Path) -> dict:
        return {"checkpoint": ckpt, "progress_bar": self.bar}

    def train_fm(self, table, scfg: study.StudyConfig) -> tuple[FoundationModel, dict]:
        weights, result_path, ckpt = self._model_paths("fm")
        if result_path.is_file():
            result = read_json(result_path)
            fm = FoundationModel(
                table.schema, table.vocab_sizes, rngs=nnx.Rngs(0), size=scfg.fm_size, max_len=scfg.fm_max_len
            )
            _restore(fm, weights, self.out)
            fm.eval()
            return fm, result
        self.log(f"FM ({scfg.fm_size}) on days {scfg.fm_days[0]}-{scfg.fm_days[1] - 1}")
        t0 = time.perf_counter()
        fm, hist = study.train_fm(table, scfg, self.log, **self._fit_options(ckpt))
        test_rows = table.rows("test")
        res = _evaluate(predict(fm, table_batches(table), test_rows), table, test_rows)
        result = {
            **res,
            "params": sweep_mod.count_params(fm),
            "size": scfg.fm_size,
            "seconds": time.perf_counter() - t0,
            "examples_per_second": hist["examples_per_second"],
            "history": hist["history"],
        }
        self.log(f"FM test: AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} logloss {res['logloss']:.4f}")
        save_state(fm, weights)
        _json(result_path, result)
        ckpt.unlink(missing_ok=True)
        self._stage_done("fm", result["seconds"])
        return fm, result

    def build_store(self, table, fm, scfg) -> HistoricalStore:
        path = self.out / "store"
        if path.is_dir():  # written atomically: present means complete
            return HistoricalStore.load(path, table)
        t0 = time.perf_counter()
        store = study.build_store(fm, table, scfg, self.log)
        store.save(path)
        self.log(
            f"store: {len(store.rows):,} logged events, dim {store.dim}, "
            f"{HistoricalStore.size_on_disk(path) / 2**20:.1f} MiB"
        )
        self._stage_done("store", time.perf_counter() - t0)
        return store

    def train_vm(
        self, table, store, scfg, arch: str, transfer: str, seed: int, hidden: tuple | None = None, kind: str = "vm"
    ) -> dict:
        """Train (or load the result of) one VM; returns its result row."""
        tag = f"{arch}-{'x'.join(map(str, hidden))}" if hidden else arch
        name = f"{tag}/{transfer}"
        stem = f"{kind}-{tag}-{transfer.replace('+', '_')}-s{seed}"
        weights, result_path, ckpt = self._model_paths(stem)
        if result_path.is_file():
            return read_json(result_path)
        t0 = time.perf_counter()
        model, hist, make = study.train_vm(
            table, store, scfg, arch, transfer, seed, self.log, hidden=hidden, **self._fit_options(ckpt)
        )
        test_rows = table.rows("test")
        res = _evaluate(predict(model, make, test_rows), table, test_rows)
        result = {
            "name": name,
            "arch": arch,
            "transfer": transfer,
            "seed": seed,
            **res,
            "params": sweep_mod.count_params(model),
            "hidden": list(hidden or scfg.vm_hidden) if arch != "implicit" else None,
            "epochs": hist["epochs_run"],
            "seconds": time.perf_counter() - t0,
            "examples_per_second": hist["examples_per_second"],
            "weights": str(weights.relative_to(self.out)),
        }
        save_state(model, weights)
        _json(result_path, result)
        ckpt.unlink(missing_ok=True)
        self.log(
            f"{kind} {name:>22} seed {seed}: AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} "
            f"logloss {res['logloss']:.4f} ({result['examples_per_second']:,.0f} ex/s)"
        )
        self.events(f"model:{stem}")
        return result

    def load_vm(self, table, store, scfg, result: dict):
        hidden = tuple(result["hidden"]) if result.get("hidden") else None
        model = study.make_vm(table, store, scfg, result["arch"], result["transfer"], result["seed"], hidden)
        _restore(model, self.out / result["weights"], self.out)
        model.eval()
        return model, vm_batches(table, store, scfg.history_len, result["transfer"])

    def run_sweep(self, table, store, scfg, vms: list[dict], baselines: list[dict]) -> dict:
        sw = self.cfg.sweep
        test_rows = table.rows("test")
        labels, users = np.asarray(table["label"][test_rows]), np.asarray(table["user"][test_rows])
        lip_rows = test_rows[np.random.default_rng(0).permutation(len(test_rows))[: sw.lipschitz_examples]]
        rows, lips, points = [], [], []
        todo = [v for v in vms if v["arch"] == "implicit"]
        bar = self.bar(total=len(todo) * len(sw.methods) + len(baselines), desc="sweep") if self.bar else None
        t0 = time.perf_counter()
        for v in todo:
            model, make = self.load_vm(table, store, scfg, v)
            x_lip = sweep_mod.vm_features(model, make, lip_rows)
            for method in sw.methods:
                for r in sweep_mod.implicit_sweep(
                    model,
                    make,
                    test_rows,
                    labels,
                    users,
                    sw.iterations,
                    method,
                    repeats=sw.timing_repeats,
                    timed=v["transfer"] == sw.baseline_transfer,
                ):
                    rows.append(
                        {"vm": v["name"], "seed": v["seed"], "transfer": v["transfer"], "params": v["params"], **r}
                    )
                for r in sweep_mod.lipschitz_sweep(
                    model,
                    x_lip,
                    sw.iterations,
                    method,
                    perturbations=sw.lipschitz_perturbations,
                    scale=sw.lipschitz_scale,
                    seed=v["seed"],
                ):
                    lips.append({"vm": v["name"], "seed": v["seed"], **r})
                if bar:
                    bar.update(1)
        for b in baselines:
            model, make = self.load_vm(table, store, scfg, b)
            point = sweep_mod.explicit_point(model, make, test_rows, labels, users, repeats=sw.timing_repeats)
            lip = sweep_mod.explicit_lipschitz(
                model,
                sweep_mod.vm_features(model, make, lip_rows),
                perturbations=sw.lipschitz_perturbations,
                scale=sw.lipschitz_scale,
                seed=b["seed"],
            )
            points.append(
                {
                    "vm": b["name"],
                    "seed": b["seed"],
                    "transfer": b["transfer"],
                    "params": b["params"],
                    "hidden": b["hidden"],
                    **point,
                    "lipschitz_max": lip["max"],
                    "lipschitz_mean": lip["mean"],
                }
            )
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        result = {"sweep": rows, "lipschitz": lips, "baselines": points, "seconds": time.perf_counter() - t0}
        _json(self.out / "sweep.json", result)
        self._stage_done("sweep", result["seconds"])
        return result

    # -- the whole job -----------------------------------------------------------------------
    def execute(self, only_sweep: bool = False) -> dict:
        t_start = time.perf_counter()
        self.log(f"implicit-rec run -> {self.out}")
        try:
            table = self.load_data()
            scfg = study_config(self.cfg, table.schema.max_len)
            self.check_data(table, scfg)
        except RunError:
            if self.created:  # refused before any training: leave nothing half-written behind
                shutil.rmtree(self.out, ignore_errors=True)
            raise
        fm, fm_result = self.train_fm(table, scfg)
        store = self.build_store(table, fm, scfg)
        vms = [
            self.train_vm(table, store, scfg, a, t, s)
            for a in scfg.archs
            for t in scfg.transfers
            for s in range(scfg.seeds)
        ]
        sw = self.cfg.sweep
        baselines = [
            self.train_vm(
                table, store, scfg, sw.baseline_arch, sw.baseline_transfer, 0, hidden=tuple(h), kind="baseline"
            )
            for h in sw.baselines
        ]
        sweep_path = self.out / "sweep.json"
        if sweep_path.is_file() and not only_sweep:
            swept = read_json(sweep_path)
        else:
            swept = self.run_sweep(table, store, scfg, vms, baselines)
        result = self.assemble(table, fm_result, vms, baselines, swept)
        result["timing"]["total_s"] = time.perf_counter() - t_start
        _json(self.out / "metrics.json", result)
        written = report.write_report(result, self.out)
        state = self.state()
        state["status"] = "finished"
        self._save_state(state)
        return {"metrics": result, "files": [self.out / "metrics.json", *written]}

    def assemble(self, table, fm_result, vms, baselines, swept) -> dict:
        fm_metrics = {
            k: fm_result[k] for k in ("auc", "gauc", "logloss", "params", "size", "seconds", "examples_per_second")
        }
        ratios = {}
        for arch in self.cfg.vm.archs:
            variants = {
                t: {m: [v[m] for v in vms if v["arch"] == arch and v["transfer"] == t] for m in ("auc", "logloss")}
                for t in self.cfg.vm.transfers
            }
            variants = {t: d for t, d in variants.items() if d["auc"]}
            if "none" in variants and len(variants) > 1:
                ratios[arch] = transfer_ratios({"auc": fm_result["auc"], "logloss": fm_result["logloss"]}, variants)
        stages = self.state().get("stages", {})
        timing = {
            "stages_s": stages,
            "examples_per_second": {f"{v['name']}#s{v['seed']}": v["examples_per_second"] for v in vms + baselines},
            "fm_examples_per_second": fm_result["examples_per_second"],
        }
        duplicates = table.info.get("duplicate_events")
        return {
            "schema_version": report.SCHEMA_VERSION,
            "dataset": {
                "spec": self.cfg.data.dataset,
                "name": table.name,
                "events": int(len(table["label"])),
                "test_events": int(len(table.rows("test"))),
                "duplicate_events": None if duplicates is None else int(duplicates),
            },
            "config": self.cfg.to_dict(),
            "versions": self.state().get("versions", versions()),
            "fm": fm_metrics,
            "vms": vms,
            "baselines": swept["baselines"],
            "transfer_ratio": ratios,
            "sweep": swept["sweep"],
            "lipschitz": swept["lipschitz"],
            "timing": timing,
        }


def _restore(model, path: Path, out: Path) -> None:
    """restore_state, with a damaged or missing weights file as a RunError saying how to recover."""
    try:
        restore_state(model, path)
    except (OSError, ValueError) as err:
        raise RunError(
            f"cannot restore {path.name} in {path.parent} ({_oserror_text(err)}): the run directory "
            f"is damaged; remove {out} or rerun with --force to start over."
        ) from None


def _oserror_text(err: Exception) -> str:
    """'PATH: reason' for an OSError (whose str() is '[Errno 20] ...'), str(err) otherwise."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror.lower()}."
    return str(err)


def _days_present(table) -> str:
    day, split = np.asarray(table["day"]), np.asarray(table["split"])
    train_days = np.unique(day[split == 0])
    return (
        f"the data has days {day.min()}-{day.max()}, training events on days {train_days.min()}-{train_days.max()}"
        if len(train_days)
        else "the data has no training events"
    )


def _both_labels(labels: np.ndarray) -> bool:
    return 0 < float(np.sum(labels)) < len(labels)


def data_problem(table, cfg: RunConfig, scfg: study.StudyConfig) -> str | None:
    """Why the configuration's windows do not fit ``table`` (naming the keys), or None.

    The FM needs training events in ``fm.days`` (at least 2: the last 10% is its validation, which
    needs both labels to early-stop on AUC); the VMs need training events in ``vm.days``; the
    validation and test splits need both labels (AUC); with a LoopFM or KD transfer some events
    must be logged, and with KD every row a VM reads (its training window, validation, test).
    """
    day, label = np.asarray(table["day"]), np.asarray(table["label"])
    fm_rows = study.window_rows(table, "train", scfg.fm_days)
    fm_train, fm_valid = study.fm_split(table, fm_rows)
    if len(fm_train) == 0:
        return f"fm.days={list(cfg.fm.days)} holds {len(fm_rows)} training events; the FM needs at least 2"
    if not _both_labels(label[fm_valid]):
        return (
            f"fm.days={list(cfg.fm.days)}: the FM's validation part (the last 10% of its window, "
            f"{len(fm_valid)} events) has only label {int(label[fm_valid][0])}; AUC needs both: widen fm.days"
        )
    if len(study.window_rows(table, "train", scfg.vm_days)) == 0:
        return f"vm.days={list(cfg.vm.days)} holds no training events"
    for split in ("valid", "test"):
        rows = table.rows(split)
        if not _both_labels(label[rows]):
            what = "no events" if len(rows) == 0 else f"only label {int(label[rows][0])} in {len(rows)} events"
            return (
                f"the {'validation' if split == 'valid' else 'test'} split of data.dataset has {what}; "
                "AUC (early stopping, results) needs both labels"
            )
    transfers = set(cfg.vm.transfers) | ({cfg.sweep.baseline_transfer} if cfg.sweep.baselines else set())
    logged = study.logged_rows(table, scfg)
    log_key = f"fm.log_from_day={'auto' if cfg.fm.log_from_day is None else cfg.fm.log_from_day}"
    if not logged.any():
        return f"{log_key}: the FM logs no events (the data has none on or after that day)"
    if any(t.endswith("kd") for t in transfers):
        for name, rows in (
            ("vm.days", study.window_rows(table, "train", scfg.vm_days)),
            ("the validation split", table.rows("valid")),
            ("the test split", table.rows("test")),
        ):
            missing = rows[~logged[rows]]
            if len(missing):
                return (
                    f"{log_key}: {len(missing)} events of {name} (days {day[missing].min()}-"
                    f"{day[missing].max()}) are not logged by the FM, so the KD transfers have no target; "
                    "lower fm.log_from_day or drop the KD transfers"
                )
    if cfg.fm.out_of_fold > 1:
        user = np.asarray(table["user"])
        fold = user[fm_rows] % cfg.fm.out_of_fold
        for k in np.unique(user[study.out_of_fold_rows(table, scfg)] % cfg.fm.out_of_fold):
            if len(study.fm_split(table, fm_rows[fold != k])[0]) == 0:
                return (
                    f"fm.out_of_fold={cfg.fm.out_of_fold}: the FM of fold {k} would have no training "
                    f"events (all {len(fm_rows)} in fm.days belong to fold {k}'s "
                    f"{len(np.unique(user[fm_rows]))} user(s)); use more users or fm.out_of_fold=0"
                )
    return None


def _evaluate(probs: np.ndarray, table, rows: np.ndarray) -> dict:
    return metrics.evaluate(np.asarray(table["label"][rows]), probs, np.asarray(table["user"][rows]))


def run(out, cfg: RunConfig, **options) -> dict:
    """Run (or resume) the whole job into ``out``; see :class:`Run`."""
    return Run(out, cfg, **options).execute()


def rerun_sweep(out, *, quiet: bool = False) -> dict:
    """Redo the sweep of a run directory from its saved configuration and models, then the report."""
    out = Path(out)
    if not (out / "config.toml").is_file():
        raise RunError(f"{out} is not a run directory (no config.toml); run `implicit-rec run --out {out}` first.")
    try:
        cfg = config_mod.load_config(out / "config.toml")
    except config_mod.ConfigError as err:
        raise RunError(
            f"the run directory's config.toml is damaged ({err}); rerun `implicit-rec run --out {out} --force`."
        ) from None
    if not (out / "models" / "fm.json").is_file():
        raise RunError(f"{out} has no trained FM yet; finish the run with `implicit-rec run` first.")
    return Run(out, cfg, quiet=quiet, existing=True).execute(only_sweep=True)
