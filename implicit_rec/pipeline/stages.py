"""``implicit-rec run``: data -> FM -> historical store -> VMs -> baselines -> sweep -> report.

The run is a sequence of stage functions, each returning a frozen dataclass (a :class:`Record`)
whose ``to_dict`` is what the stage writes and what ``metrics.json`` holds::

    data_stage    -> DataSummary   (the table; checked against the configuration by check_data)
    fm_stage      -> FMResult      models/fm.json
    store_stage   -> StoreInfo     store/ (the HistoricalStore)
    vm_stage      -> VMResult      models/vm-*.json, models/baseline-*.json
    sweep_stage   -> SweepResult   sweep.json
    assemble      -> RunMetrics    metrics.json (``implicit_rec.report`` reads it)

:meth:`RunDir.cached` does the bookkeeping of every stage once: load the stage's file if a
finished stage left it, else compute, save (atomically) and mark the stage done in ``run.json``.

Run directory (every file written atomically; a rerun of the same command resumes)::

    config.toml        the effective configuration (a rerun must match it, or use --force)
    run.json           package versions, command, status ("running" / "finished"), stage times
    log.txt            everything printed
    cache/             prepared dataset tables (data.cache_dir = "auto")
    models/fm.*        FM parameters (.msgpack), result (.json), in-progress epoch checkpoint (.train.msgpack)
    store/             the FM's logged embeddings (LoopFM features, KD targets)
    models/vm-*.*      each VM and explicit baseline, the same three files
    sweep.json         the test-time iteration sweep and the Lipschitz diagnostic
    metrics.json       everything (:class:`RunMetrics`; ``implicit_rec.report.METRICS_SCHEMA``)
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

import dataclasses
import json
import os
import platform
import shutil
import sys
import time
import types
import typing
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import numpy as np

from .. import config as config_mod
from .. import metrics, report
from .. import sweep as sweep_mod
from ..atomic import write_json_atomic, write_text_atomic
from ..checkpoint import restore_state, save_state
from ..config import RunConfig, SweepConfig
from ..data import load_data
from ..data.events import EventTable
from ..loopfm import study
from ..loopfm.batches import table_batches, vm_batches
from ..loopfm.store import HistoricalStore
from ..loopfm.transfer import transfer_ratios
from ..models.foundation import FoundationModel
from ..models.training import predict
from ..models.vertical import VerticalModel
from ..params import count_params


class RunError(RuntimeError):
    """A problem the user can fix (bad path, finished run, changed config); printed as one line."""


# -- typed stage results ----------------------------------------------------------------------


class Record:
    """Mixin of the frozen stage dataclasses: ``to_dict`` is the JSON form, ``from_dict`` its inverse.

    Fields hold JSON values, other Records, tuples of them (lists in JSON) or ``X | None``;
    ``from_dict(r.to_dict()) == r``. An unknown or missing key is a ValueError naming it.
    """

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__} has no key(s) {unknown}; known: {list(fields)}.")
        required = (n for n, f in fields.items() if f.default is dataclasses.MISSING)
        missing = [n for n in required if n not in d and fields[n].default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{cls.__name__} lacks the key(s) {missing}.")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _typed(hints[k], v, f"{cls.__name__}.{k}") for k, v in d.items()})


def _plain(v):
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _typed(tp, v, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return None if v is None else _typed(next(a for a in args if a is not type(None)), v, where)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(v)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {type(v).__name__}.")
        return tuple(_typed(args[0], x, f"{where}[{i}]") for i, x in enumerate(v))
    return v


@dataclasses.dataclass(frozen=True)
class DataSummary(Record):
    """The dataset of a run (``metrics.json`` ``dataset``)."""

    spec: str
    name: str
    events: int
    test_events: int
    duplicate_events: int | None  # exact duplicate events (kept); None when the loader does not count them


@dataclasses.dataclass(frozen=True)
class FMResult(Record):
    """The FM on the test split (``models/fm.json``, ``metrics.json`` ``fm``)."""

    auc: float
    gauc: float
    logloss: float
    params: int
    size: str
    seconds: float  # training and testing
    examples_per_second: float  # training steps after the first (compiling) one
    history: tuple[dict, ...] = ()  # per-epoch records of ``training.fit``


@dataclasses.dataclass(frozen=True)
class StoreInfo(Record):
    """The FM's historical store (``metrics.json`` ``store``)."""

    events: int  # logged events
    dim: int
    kind: str  # "interaction" | "item"
    dtype: str
    bytes_on_disk: int


@dataclasses.dataclass(frozen=True)
class VMResult(Record):
    """One trained VM or explicit baseline on the test split (``models/<stem>.json``, ``metrics.json`` ``vms``)."""

    name: str  # "arch/transfer" (baselines: "arch-w1xw2/transfer")
    arch: str
    transfer: str
    seed: int
    auc: float
    gauc: float
    logloss: float
    params: int
    hidden: tuple[int, ...] | None  # MLP widths of an explicit VM; None for the implicit VM
    epochs: int
    seconds: float
    examples_per_second: float
    weights: str  # parameter file, relative to the run directory


@dataclasses.dataclass(frozen=True)
class SweepResult(Record):
    """The test-time iteration sweep (``sweep.json``); rows as documented in ``implicit_rec.report``."""

    sweep: tuple[dict, ...]  # one row per implicit VM x method x k
    lipschitz: tuple[dict, ...]
    baselines: tuple[dict, ...]  # the explicit baselines on the sweep's axes
    seconds: float


@dataclasses.dataclass(frozen=True)
class Timing(Record):
    stages_s: dict  # stage -> seconds of the invocation that ran it
    examples_per_second: dict  # "name#sSEED" -> training examples per second
    fm_examples_per_second: float
    total_s: float  # this invocation


@dataclasses.dataclass(frozen=True)
class RunMetrics(Record):
    """``metrics.json``: everything the report draws (schema ``implicit_rec.report.METRICS_SCHEMA``)."""

    schema_version: int
    dataset: DataSummary
    config: dict  # the effective configuration, as config.toml
    versions: dict
    fm: FMResult
    vms: tuple[VMResult, ...]
    baselines: tuple[dict, ...]
    transfer_ratio: dict  # arch -> transfer_ratios(...)
    sweep: tuple[dict, ...]
    lipschitz: tuple[dict, ...]
    timing: Timing
    store: StoreInfo | None = None


R = TypeVar("R")


def _row(r) -> dict:
    """A sweep row as a dict (the sweep functions return dicts or typed rows with ``to_dict``)."""
    return r.to_dict() if hasattr(r, "to_dict") else dict(r)


# -- the run directory ------------------------------------------------------------------------


class RunDir:
    """A run directory: ``run.json``, ``log.txt``, the stage cache and the ``events`` hook.

    ``events(name)`` is called after each stage is marked done (``"stage:NAME"``) and after each
    model is saved (``"model:STEM"``); tests interrupt runs there. ``bar`` is a tqdm factory or None.
    """

    def __init__(
        self, out: str | os.PathLike, *, quiet: bool = False, events: Callable[[str], None] | None = None
    ) -> None:
        self.out, self.quiet = Path(out), quiet
        self.events = events or (lambda name: None)
        self.created = False  # whether this invocation made the directory (removed if the run is refused)
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm

    def prepare(self, cfg: RunConfig, *, force: bool = False, command: list | None = None) -> None:
        """Create (or reopen to resume) the directory of a run of ``cfg``; RunError if it holds
        a finished run or another configuration."""
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
            diff = _first_difference(before, cfg.to_dict())
            if diff:
                raise RunError(
                    f"{out} holds an unfinished run with another configuration ({diff}); "
                    "rerun with the same settings to resume, or use --force to start over."
                )
        else:
            write_text_atomic(saved, config_mod.to_toml(cfg))
        if not state:
            state = {"versions": versions(), "command": command or sys.argv, "status": "running", "stages": {}}
            self.save_state(state)

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

    def save_state(self, state: dict) -> None:
        write_json_atomic(self.out / "run.json", state)

    def mark_done(self, stage: str, seconds: float) -> None:
        """Record the stage's time in run.json (this invocation's: a resumed stage is timed again)."""
        state = self.state()
        state["stages"][stage] = seconds
        self.save_state(state)
        self.events(f"stage:{stage}")

    def log(self, line: str) -> None:
        with open(self.out / "log.txt", "a") as fh:
            fh.write(line + "\n")
        if not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(line)

    def model_paths(self, stem: str) -> tuple[Path, Path, Path]:
        """(parameters .msgpack, result .json, epoch checkpoint .train.msgpack) of model ``stem``."""
        base = self.out / "models" / stem
        return base.with_suffix(".msgpack"), base.with_suffix(".json"), base.with_suffix(".train.msgpack")

    def cached(
        self,
        path: Path,
        compute: Callable[[], R],
        load: Callable[[Path], R],
        save: Callable[[R, Path], None],
        *,
        stage: str | None = None,
        event: str | None = None,
        recompute: bool = False,
    ) -> R:
        """``load(path)`` if a finished stage left ``path``; else ``compute()``, ``save`` it to ``path``
        (atomically: present means complete), mark ``stage`` done in run.json and signal ``event``."""
        if path.exists() and not recompute:
            return load(path)
        t0 = time.perf_counter()
        value = compute()
        save(value, path)
        if stage is not None:
            self.mark_done(stage, time.perf_counter() - t0)
        if event is not None:
            self.events(event)
        return value


def record_file(cls: type[R]) -> tuple[Callable[[Path], R], Callable[[R, Path], None]]:
    """(load, save) of a :class:`Record` as a JSON file; a damaged file is a RunError saying how to recover."""

    def load(path: Path) -> R:
        try:
            return cls.from_dict(read_json(path))
        except (TypeError, ValueError) as err:
            raise RunError(f"{path.name} in {path.parent}: {err}; {_RECOVER.format(run=_run_of(path))}") from None

    def save(value: R, path: Path) -> None:
        write_json_atomic(path, value.to_dict())

    return load, save


_RECOVER = "the run directory is damaged; remove {run} or rerun with --force to start over."


def _run_of(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "models" else path.parent


# -- stages -----------------------------------------------------------------------------------


def data_stage(run: RunDir, cfg: RunConfig) -> tuple[EventTable, DataSummary]:
    """Load (or prepare and cache) the dataset; logs its size."""
    d = cfg.data
    t0 = time.perf_counter()
    try:
        table = load_data(d, default_cache_dir=run.out / "cache", progress_bar=run.bar)
    except (OSError, ValueError, TypeError) as err:  # missing / unreadable files, DataError
        raise RunError(f"data.dataset={d.dataset!r}: {_oserror_text(err)}") from None
    seconds = time.perf_counter() - t0
    duplicates = table.info.get("duplicate_events")
    summary = DataSummary(
        spec=d.dataset,
        name=table.name,
        events=int(len(table["label"])),
        test_events=int(len(table.rows("test"))),
        duplicate_events=None if duplicates is None else int(duplicates),
    )
    run.log(
        f"data: {table.name}, {summary.events:,} events, {len(np.unique(np.asarray(table['user']))):,} users "
        f"({summary.events / max(seconds, 1e-9):,.0f} rows/s)"
        + (f"; {duplicates:,} exact duplicate events (kept)" if duplicates else "")
    )
    state = run.state()
    state["data"] = {"name": table.name, "events": summary.events, "duplicate_events": duplicates}
    run.save_state(state)
    run.mark_done("data", seconds)
    return table, summary


def check_data(table: EventTable, cfg: RunConfig) -> None:
    """RunError naming the keys if the configuration's windows do not fit the data."""
    problem = data_problem(table, cfg)
    if problem:
        raise RunError(f"{problem} ({_days_present(table)}).")


def _evaluate(model, make_batch: Callable, table: EventTable) -> dict:
    """AUC, gAUC and logloss of ``model`` on the test split."""
    rows = table.rows("test")
    probs = predict(model, make_batch, rows)
    return metrics.evaluate(np.asarray(table["label"][rows]), probs, np.asarray(table["user"][rows]))


def fm_stage(run: RunDir, table: EventTable, cfg: RunConfig) -> FMResult:
    """Train and test the FM of ``cfg`` (resolved, :func:`study.resolve`); its parameters go to models/fm.msgpack."""
    fm = cfg.fm
    weights, result_path, ckpt = run.model_paths("fm")

    def compute() -> FMResult:
        run.log(f"FM ({fm.size}) on days {fm.days[0]}-{fm.days[1] - 1}")
        t0 = time.perf_counter()
        model, hist = study.train_fm(table, fm, run.log, checkpoint=ckpt, progress_bar=run.bar)
        res = _evaluate(model, table_batches(table), table)
        run.log(f"FM test: AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} logloss {res['logloss']:.4f}")
        save_state(model, weights)
        return FMResult(
            **res,
            params=count_params(model),
            size=fm.size,
            seconds=time.perf_counter() - t0,
            examples_per_second=hist["examples_per_second"],
            history=tuple(hist["history"]),
        )

    result = run.cached(result_path, compute, *record_file(FMResult), stage="fm")
    ckpt.unlink(missing_ok=True)
    return result


def load_fm(run: RunDir, table: EventTable, cfg: RunConfig) -> FoundationModel:
    """The trained FM of the run (eval mode)."""
    model = study.make_fm(table, cfg.fm)
    _restore(model, run.model_paths("fm")[0], run.out)
    model.eval()
    return model


def store_stage(run: RunDir, table: EventTable, cfg: RunConfig) -> tuple[HistoricalStore, StoreInfo]:
    """The trained FM's historical store (store/), built once."""
    path = run.out / "store"

    def save(store: HistoricalStore, path: Path) -> None:
        store.save(path)
        run.log(
            f"store: {len(store.rows):,} logged events, dim {store.dim}, "
            f"{HistoricalStore.size_on_disk(path) / 2**20:.1f} MiB"
        )

    store = run.cached(
        path,
        lambda: study.build_store(load_fm(run, table, cfg), table, cfg.fm, run.log),
        lambda p: HistoricalStore.load(p, table),
        save,
        stage="store",
    )
    info = StoreInfo(
        events=int(len(store.rows)),
        dim=int(store.dim),
        kind=store.kind,
        dtype=str(store.embeddings.dtype),
        bytes_on_disk=int(HistoricalStore.size_on_disk(path)),
    )
    return store, info


def vm_stage(
    run: RunDir,
    table: EventTable,
    store: HistoricalStore,
    cfg: RunConfig,
    arch: str,
    transfer: str,
    seed: int,
    hidden: tuple[int, ...] | None = None,
    kind: str = "vm",
) -> VMResult:
    """Train and test one VM (``kind="baseline"``: an explicit baseline of widths ``hidden``)."""
    tag = f"{arch}-{'x'.join(map(str, hidden))}" if hidden else arch
    name = f"{tag}/{transfer}"
    stem = f"{kind}-{tag}-{transfer.replace('+', '_')}-s{seed}"
    weights, result_path, ckpt = run.model_paths(stem)

    def compute() -> VMResult:
        t0 = time.perf_counter()
        model, hist, make = study.train_vm(
            table, store, cfg.vm, arch, transfer, seed, hidden, checkpoint=ckpt, progress_bar=run.bar
        )
        res = _evaluate(model, make, table)
        save_state(model, weights)
        result = VMResult(
            name=name,
            arch=arch,
            transfer=transfer,
            seed=seed,
            **res,
            params=count_params(model),
            hidden=tuple(hidden or cfg.vm.hidden) if arch != "implicit" else None,
            epochs=hist["epochs_run"],
            seconds=time.perf_counter() - t0,
            examples_per_second=hist["examples_per_second"],
            weights=str(weights.relative_to(run.out)),
        )
        run.log(
            f"{kind} {name:>22} seed {seed}: AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} "
            f"logloss {res['logloss']:.4f} ({result.examples_per_second:,.0f} ex/s)"
        )
        return result

    result = run.cached(result_path, compute, *record_file(VMResult), event=f"model:{stem}")
    ckpt.unlink(missing_ok=True)
    return result


def load_vm(
    run: RunDir, table: EventTable, store: HistoricalStore, cfg: RunConfig, result: VMResult
) -> tuple[VerticalModel, Callable]:
    """The trained VM of ``result`` (eval mode) and its batch function."""
    model = study.make_vm(table, store, cfg.vm, result.arch, result.transfer, result.seed, result.hidden)
    _restore(model, run.out / result.weights, run.out)
    model.eval()
    return model, vm_batches(table, store, cfg.vm.history_len, result.transfer)


def sweep_stage(
    run: RunDir,
    table: EventTable,
    store: HistoricalStore,
    cfg: RunConfig,
    vms: tuple[VMResult, ...],
    baselines: tuple[VMResult, ...],
    *,
    recompute: bool = False,
) -> SweepResult:
    """Every implicit VM at each k of ``sweep.iterations``, the explicit baselines as points (sweep.json)."""
    sw: SweepConfig = cfg.sweep

    def compute() -> SweepResult:
        test_rows = table.rows("test")
        labels, users = np.asarray(table["label"][test_rows]), np.asarray(table["user"][test_rows])
        lip_rows = test_rows[np.random.default_rng(0).permutation(len(test_rows))[: sw.lipschitz_examples]]
        rows, lips, points = [], [], []
        todo = [v for v in vms if v.arch == "implicit"]
        bar = run.bar(total=len(todo) * len(sw.methods) + len(baselines), desc="sweep") if run.bar else None
        t0 = time.perf_counter()
        for v in todo:
            model, make = load_vm(run, table, store, cfg, v)
            x_lip = sweep_mod.vm_features(model, make, lip_rows)
            tag = {"vm": v.name, "seed": v.seed}
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
                    timed=v.transfer == sw.baseline_transfer,
                ):
                    rows.append({**tag, "transfer": v.transfer, "params": v.params, **_row(r)})
                for r in sweep_mod.lipschitz_sweep(
                    model,
                    x_lip,
                    sw.iterations,
                    method,
                    perturbations=sw.lipschitz_perturbations,
                    scale=sw.lipschitz_scale,
                    seed=v.seed,
                ):
                    lips.append({**tag, **_row(r)})
                if bar:
                    bar.update(1)
        for b in baselines:
            model, make = load_vm(run, table, store, cfg, b)
            point = sweep_mod.explicit_point(model, make, test_rows, labels, users, repeats=sw.timing_repeats)
            lip = _row(
                sweep_mod.explicit_lipschitz(
                    model,
                    sweep_mod.vm_features(model, make, lip_rows),
                    perturbations=sw.lipschitz_perturbations,
                    scale=sw.lipschitz_scale,
                    seed=b.seed,
                )
            )
            points.append(
                {
                    "vm": b.name,
                    "seed": b.seed,
                    "transfer": b.transfer,
                    "params": b.params,
                    "hidden": list(b.hidden or ()),
                    **_row(point),
                    "lipschitz_max": lip["max"],
                    "lipschitz_mean": lip["mean"],
                }
            )
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        return SweepResult(tuple(rows), tuple(lips), tuple(points), time.perf_counter() - t0)

    return run.cached(run.out / "sweep.json", compute, *record_file(SweepResult), stage="sweep", recompute=recompute)


def transfer_ratio(cfg: RunConfig, fm: FMResult, vms: tuple[VMResult, ...]) -> dict:
    """arch -> :func:`transfer_ratios` of its transfer variants (per-seed AUC and logloss) against
    its plain VM, for every arch trained with ``"none"`` and at least one other variant."""
    ratios = {}
    for arch in cfg.vm.archs:
        variants = {
            t: {m: [getattr(v, m) for v in vms if v.arch == arch and v.transfer == t] for m in ("auc", "logloss")}
            for t in cfg.vm.transfers
        }
        variants = {t: d for t, d in variants.items() if d["auc"]}
        if "none" in variants and len(variants) > 1:
            ratios[arch] = transfer_ratios({"auc": fm.auc, "logloss": fm.logloss}, variants)
    return ratios


@dataclasses.dataclass(frozen=True)
class LoopFMModels:
    """What the LoopFM stages leave: the table, the resolved configuration, and the stage results."""

    table: EventTable
    cfg: RunConfig  # resolved against the data (study.resolve)
    data: DataSummary
    fm: FMResult
    store: HistoricalStore
    store_info: StoreInfo
    vms: tuple[VMResult, ...]


def loopfm_stages(run: RunDir, cfg: RunConfig) -> LoopFMModels:
    """Data (checked against ``cfg``), FM, store and every VM arch x transfer x seed of ``cfg``.

    The directory this invocation created is removed again when the data are refused."""
    try:
        table, data = data_stage(run, cfg)
        check_data(table, cfg)
    except RunError:
        if run.created:  # refused before any training: leave nothing half-written behind
            shutil.rmtree(run.out, ignore_errors=True)
        raise
    resolved = study.resolve(cfg, table.schema.max_len)
    fm = fm_stage(run, table, resolved)
    store, store_info = store_stage(run, table, resolved)
    vms = tuple(
        vm_stage(run, table, store, resolved, a, t, s)
        for a in cfg.vm.archs
        for t in cfg.vm.transfers
        for s in range(cfg.vm.seeds)
    )
    return LoopFMModels(table, resolved, data, fm, store, store_info, vms)


def assemble(
    run: RunDir,
    cfg: RunConfig,
    models: LoopFMModels,
    swept: SweepResult,
    baselines: tuple[VMResult, ...],
    total_s: float,
) -> RunMetrics:
    """metrics.json of the run of ``cfg`` (as given, not resolved: it is the run's configuration)."""
    state = run.state()
    timing = Timing(
        stages_s=state.get("stages", {}),
        examples_per_second={f"{v.name}#s{v.seed}": v.examples_per_second for v in models.vms + baselines},
        fm_examples_per_second=models.fm.examples_per_second,
        total_s=total_s,
    )
    return RunMetrics(
        schema_version=report.SCHEMA_VERSION,
        dataset=models.data,
        config=cfg.to_dict(),
        versions=state.get("versions", versions()),
        fm=models.fm,
        vms=models.vms,
        baselines=swept.baselines,
        transfer_ratio=transfer_ratio(cfg, models.fm, models.vms),
        sweep=swept.sweep,
        lipschitz=swept.lipschitz,
        timing=timing,
        store=models.store_info,
    )


def _execute(run: RunDir, cfg: RunConfig, *, only_sweep: bool = False) -> dict:
    t_start = time.perf_counter()
    run.log(f"implicit-rec run -> {run.out}")
    models = loopfm_stages(run, cfg)
    t, store, resolved, sw = models.table, models.store, models.cfg, cfg.sweep
    baselines = tuple(
        vm_stage(
            run, models.table, models.store, models.cfg, sw.baseline_arch, sw.baseline_transfer, 0, tuple(h), "baseline"
        )
        for h in sw.baselines
    )
    swept = sweep_stage(run, t, store, resolved, models.vms, baselines, recompute=only_sweep)
    result = assemble(run, cfg, models, swept, baselines, time.perf_counter() - t_start).to_dict()
    write_json_atomic(run.out / "metrics.json", result)
    written = report.write_report(result, run.out)
    state = run.state()
    state["status"] = "finished"
    run.save_state(state)
    return {"metrics": result, "files": [run.out / "metrics.json", *written]}


def check_config(cfg: RunConfig) -> None:
    """RunError for a configuration :func:`config.check_run` refuses (also one built in Python)."""
    try:
        config_mod.check_run(cfg)
    except config_mod.ConfigError as err:
        raise RunError(str(err)) from None


def run(
    out: str | os.PathLike,
    cfg: RunConfig,
    *,
    force: bool = False,
    quiet: bool = False,
    command: list | None = None,
    events: Callable[[str], None] | None = None,
) -> dict:
    """Run (or resume) the whole job into ``out``; returns ``{"metrics": dict, "files": [paths]}``."""
    check_config(cfg)
    rundir = RunDir(out, quiet=quiet, events=events)
    rundir.prepare(cfg, force=force, command=command)
    return _execute(rundir, cfg)


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
    check_config(cfg)
    return _execute(RunDir(out, quiet=quiet), cfg, only_sweep=True)


# -- helpers ----------------------------------------------------------------------------------


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("implicit-rec", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


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
    raise RunError(f"{path.name} in {path.parent} {problem}: {_RECOVER.format(run=_run_of(path))}")


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


def data_problem(table: EventTable, cfg: RunConfig) -> str | None:
    """Why the configuration's windows do not fit ``table`` (naming the keys), or None.

    The FM needs training events in ``fm.days`` (at least 2: the last 10% is its validation, which
    needs both labels to early-stop on AUC); the VMs need training events in ``vm.days``; the
    validation and test splits need both labels (AUC); with a LoopFM or KD transfer some events
    must be logged, and with KD every row a VM reads (its training window, validation, test).
    """
    day, label = np.asarray(table["day"]), np.asarray(table["label"])
    fm = study.resolve(cfg, table.schema.max_len).fm
    fm_rows = study.window_rows(table, "train", cfg.fm.days)
    fm_train, fm_valid = study.fm_split(table, fm_rows)
    if len(fm_train) == 0:
        return f"fm.days={list(cfg.fm.days)} holds {len(fm_rows)} training events; the FM needs at least 2"
    if not _both_labels(label[fm_valid]):
        return (
            f"fm.days={list(cfg.fm.days)}: the FM's validation part (the last 10% of its window, "
            f"{len(fm_valid)} events) has only label {int(label[fm_valid][0])}; AUC needs both: widen fm.days"
        )
    if len(study.window_rows(table, "train", cfg.vm.days)) == 0:
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
    logged = study.logged_rows(table, fm)
    log_key = f"fm.log_from_day={'auto' if cfg.fm.log_from_day is None else cfg.fm.log_from_day}"
    if not logged.any():
        return f"{log_key}: the FM logs no events (the data has none on or after that day)"
    if any(t.endswith("kd") for t in transfers):
        for name, rows in (
            ("vm.days", study.window_rows(table, "train", cfg.vm.days)),
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
        for k in np.unique(user[study.out_of_fold_rows(table, fm)] % cfg.fm.out_of_fold):
            if len(study.fm_split(table, fm_rows[fold != k])[0]) == 0:
                return (
                    f"fm.out_of_fold={cfg.fm.out_of_fold}: the FM of fold {k} would have no training "
                    f"events (all {len(fm_rows)} in fm.days belong to fold {k}'s "
                    f"{len(np.unique(user[fm_rows]))} user(s)); use more users or fm.out_of_fold=0"
                )
    return None
