"""The stage functions of ``implicit-rec run``: data -> FM -> store -> VMs -> baselines -> sweep -> metrics.

Each stage returns its record (:mod:`.records`) through :meth:`RunDir.cached`; :func:`run` and
:func:`rerun_sweep` run them all into a run directory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import ceiling as ceiling_mod
from .. import config as config_mod
from .. import metrics, report
from .. import sweep as sweep_mod
from ..atomic import atomic_path, write_json_atomic
from ..checkpoint import load_module, save_state
from ..config import RunConfig, SweepConfig
from ..data import load_data
from ..data.events import EventTable
from ..loopfm import study
from ..loopfm.baselines import BaselineSpec, plan_baselines
from ..loopfm.batches import table_batches, vm_batches
from ..loopfm.store import HistoricalStore
from ..loopfm.transfer import transfer_ratios
from ..models.foundation import FoundationModel
from ..models.training import predict
from ..models.vertical import VerticalModel
from ..params import count_params
from . import compare
from .checks import check_config, check_data
from .records import CeilingResult, DataSummary, FMResult, RunMetrics, StoreInfo, SweepResult, Timing, VMResult
from .rundir import RunDir, RunError, _oserror_text, read_json, record_file, versions

SWEEP_PARTS = "sweep.parts"  # the run directory's folder of the sweep's finished models (until sweep.json)
COMPARISON_PARTS = "comparisons.parts"  # each compared model's bootstrap replicates (until comparisons.json)


def _row(r) -> dict:
    """A sweep row as a dict (the sweep functions return dicts or typed rows with ``to_dict``)."""
    return r.to_dict() if hasattr(r, "to_dict") else dict(r)


def data_stage(run: RunDir, cfg: RunConfig) -> tuple[EventTable, DataSummary]:
    """Load (or prepare and cache) the dataset; logs its size."""
    d = cfg.data
    t0 = time.perf_counter()
    try:
        table = run.writer_first(  # the writer prepares the cache, the other processes read it
            "data",
            # the synthetic generator simulates user blocks on every CPU (the large preset: 80 blocks)
            lambda: load_data(d, default_cache_dir=run.out / "cache", progress_bar=run.bar, workers=None),
        )
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
        f"(ready in {seconds:.1f} s; a cached table only loads)"
        + (f"; {duplicates:,} exact duplicate events (kept)" if duplicates else "")
    )
    state = run.state()
    state["data"] = {"name": table.name, "events": summary.events, "duplicate_events": duplicates}
    run.save_state(state)
    run.mark_done("data", seconds)
    return table, summary


def _evaluate(run: RunDir, model, make_batch: Callable, table: EventTable, predictions: Path) -> dict:
    """AUC, gAUC and logloss of ``model`` on the test split; its test predictions go to ``predictions``
    (float32 .npy, in ``table.rows("test")`` order: the paired comparisons read them) from the writer."""
    rows = table.rows("test")
    probs = predict(model, make_batch, rows)
    if run.writer:
        _save_predictions(probs, predictions)
    return metrics.evaluate(np.asarray(table["label"][rows]), probs, np.asarray(table["user"][rows]))


def predictions_path(weights: Path, iterations: int | None = None) -> Path:
    """The test-prediction file beside a model's parameter file (``models/STEM.test.npy``); with
    ``iterations`` k, the sweep's predictions of an implicit VM at k iterations (``models/STEM.kK.test.npy``)."""
    return weights.with_suffix(".test.npy" if iterations is None else f".k{int(iterations)}.test.npy")


def _save_predictions(probs: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(probs, np.float32), allow_pickle=False)


def ceiling_stage(run: RunDir, table: EventTable, cfg: RunConfig) -> CeilingResult:
    """The attainable test AUC (``ceiling.json``): Bayes and the FM / VM window ceilings of ``cfg``
    (resolved), and the hop ceilings of data with a category cascade; real data have none."""

    def compute() -> CeilingResult:
        found = ceiling_mod.ceilings(table, cfg.fm.max_len, cfg.vm.max_len)
        if found is None:
            run.log("ceiling: none (the data do not record a true click probability)")
            return CeilingResult(available=False, reason="the data do not record a true click probability")
        result = CeilingResult(available=True, **found)
        hops = ", ".join(f"{h}: {auc:.4f}" for h, auc in (result.hops or {}).items())
        hops = f", cascade hops {hops}" if hops else ""
        run.log(
            f"ceiling (test AUC): Bayes {result.bayes['auc']:.4f}, FM window ({result.fm_len}) "
            f"{result.fm_window['auc']:.4f}, VM window ({result.vm_len}) {result.vm_window['auc']:.4f}{hops}"
        )
        return result

    return run.cached(run.out / "ceiling.json", compute, *record_file(CeilingResult), stage="ceiling")


def fm_stage(run: RunDir, table: EventTable, cfg: RunConfig) -> FMResult:
    """Train and test the FM of ``cfg`` (resolved, :func:`study.resolve`); its parameters go to models/fm.msgpack."""
    fm = cfg.fm
    weights, result_path, ckpt = run.model_paths("fm")

    def compute() -> FMResult:
        run.log(f"FM ({fm.size}) on days {fm.days[0]}-{fm.days[1] - 1}")
        t0 = time.perf_counter()
        model, hist = study.train_fm(
            table, fm, run.log, checkpoint=ckpt, write_checkpoint=run.writer, progress_bar=run.bar
        )
        res = _evaluate(run, model, table_batches(table), table, predictions_path(weights))
        run.log(f"FM test: AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} logloss {res['logloss']:.4f}")
        if run.writer:
            save_state(model, weights)
        return FMResult(
            **res,
            params=count_params(model),
            size=fm.size,
            seconds=time.perf_counter() - t0,
            examples_per_second=hist["examples_per_second"],
            history=tuple(hist["history"]),
        )

    result = run.cached(result_path, compute, *record_file(FMResult), stage="fm", collective=True)
    if run.writer:
        ckpt.unlink(missing_ok=True)
    return result


def load_fm(run: RunDir, table: EventTable, cfg: RunConfig) -> FoundationModel:
    """The trained FM of the run (eval mode)."""
    model = _restore(lambda: study.make_fm(table, cfg.fm), run.model_paths("fm")[0], run.out)
    model.eval()
    return model


def store_stage(run: RunDir, table: EventTable, cfg: RunConfig) -> tuple[HistoricalStore, StoreInfo]:
    """The trained FM's historical store (store/), built once; its out-of-fold FMs are kept in
    models/fm-oof{k}.msgpack as they finish (with mid-epoch checkpoints), so an interrupted stage
    resumes after its last finished FM, and the writer logs into store.partial/, so an interrupted
    logging pass resumes after its last recorded chunk (the other processes of a job log in memory)."""
    path, partial = run.out / "store", run.out / "store.partial"

    def save(store: HistoricalStore, path: Path) -> None:
        # the writer's finished store.partial/ is the saved store: published by a rename, not copied
        os.replace(partial, path)
        run.log(
            f"store: {len(store.rows):,} logged events, dim {store.dim}, "
            f"{HistoricalStore.size_on_disk(path) / 2**20:.1f} MiB"
        )

    store = run.cached(
        path,
        lambda: study.build_store(
            load_fm(run, table, cfg),
            table,
            cfg.fm,
            run.log,
            models_dir=run.out / "models",
            write=run.writer,
            directory=partial if run.writer else None,
        ),
        lambda p: HistoricalStore.load(p, table),
        save,
        stage="store",
        collective=True,  # the out-of-fold FMs train across the processes
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
    baseline: BaselineSpec | None = None,
) -> VMResult:
    """Train and test one VM (of ``arch``), or the explicit ``baseline`` (of ``baseline.arch``)."""
    kind, tag = ("baseline", baseline.tag) if baseline else ("vm", arch)
    name = f"{tag}/{transfer}"
    stem = f"{kind}-{tag.replace('@', '-')}-{transfer.replace('+', '_')}-s{seed}"
    weights, result_path, ckpt = run.model_paths(stem)
    hidden = baseline.hidden if baseline else None
    shape = {"depth": baseline.depth, "width": baseline.width} if baseline else {}

    def compute() -> VMResult:
        t0 = time.perf_counter()
        model, hist, make = study.train_vm(
            table,
            store,
            cfg.vm,
            arch,
            transfer,
            seed,
            hidden,
            **shape,
            checkpoint=ckpt,
            write_checkpoint=run.writer,
            progress_bar=run.bar,
        )
        res = _evaluate(run, model, make, table, predictions_path(weights))
        if run.writer:
            save_state(model, weights)
        result = VMResult(
            name=name,
            arch=arch,
            transfer=transfer,
            seed=seed,
            **res,
            params=count_params(model),
            hidden=None if model.is_implicit or arch == "transformer" else tuple(hidden or cfg.vm.hidden),
            epochs=hist["epochs_run"],
            seconds=time.perf_counter() - t0,
            examples_per_second=hist["examples_per_second"],
            weights=str(weights.relative_to(run.out)),
            history=tuple(hist["history"]),
            **(
                {**shape, "match": baseline.match, "flops": baseline.flops, "target": baseline.target}
                if baseline
                else {}
            ),
        )
        for r in hist["history"] if model.is_implicit else ():
            run.log(
                f"  {name} seed {seed} epoch {r['epoch']}: valid AUC {r['valid_auc']:.4f}, converged "
                f"{r['eval_converged_fraction']:.1%} in {r['eval_mean_nstep']:.1f} iterations, spectral radius "
                f"{r['spectral_radius_mean']:.2f} (max {r['spectral_radius_max']:.2f})"
            )
        run.log(
            f"{kind} {name:>22} seed {seed}: AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} "
            f"logloss {res['logloss']:.4f} ({result.examples_per_second:,.0f} ex/s)"
        )
        return result

    result = run.cached(result_path, compute, *record_file(VMResult), event=f"model:{stem}", collective=True)
    if run.writer:
        ckpt.unlink(missing_ok=True)
    return result


def load_vm(
    run: RunDir, table: EventTable, store: HistoricalStore, cfg: RunConfig, result: VMResult
) -> tuple[VerticalModel, Callable]:
    """The trained VM of ``result`` (eval mode) and its batch function."""
    build = functools.partial(
        study.make_vm,
        table,
        store,
        cfg.vm,
        result.arch,
        result.transfer,
        result.seed,
        result.hidden,
        depth=result.depth,
        width=result.width,
    )
    model = _restore(build, run.out / result.weights, run.out)
    model.eval()
    return model, vm_batches(table, store, cfg.vm.history_len, result.transfer)


def baseline_plan(run: RunDir, models: LoopFMModels) -> tuple[BaselineSpec, ...]:
    """The explicit baselines of ``sweep`` with their widths matched (``baselines.json``, planned once:
    :func:`~implicit_rec.loopfm.baselines.plan_baselines`)."""

    def compute() -> tuple[BaselineSpec, ...]:
        try:
            return plan_baselines(models.table, models.store, models.cfg.vm, models.cfg.sweep, run.log)
        except ValueError as err:
            raise RunError(str(err)) from None

    def load(path: Path) -> tuple[BaselineSpec, ...]:
        try:
            return tuple(BaselineSpec(**d) for d in read_json(path)["baselines"])
        except (KeyError, TypeError) as err:
            raise RunError(f"{path} is damaged ({err}); delete it and rerun: it is planned again.") from None

    def save(specs: tuple[BaselineSpec, ...], path: Path) -> None:
        write_json_atomic(path, {"baselines": [b.to_dict() for b in specs]})

    return run.cached(run.out / "baselines.json", compute, load, save, stage="baseline-plan")


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
    """Every implicit VM at each k of ``sweep.iterations``, the explicit baselines as points (sweep.json).

    Also writes each implicit VM's test predictions at the k of ``compare.ITERATION_PAIR`` that are
    swept (:func:`predictions_path`; with its evaluation method if swept, else the first method):
    the ``NAME@kK`` comparisons read them. Resumable per model: each swept VM's rows and each
    baseline's point go to ``sweep.parts/STEM.json`` as soon as they are done, a rerun after an
    interruption loads them instead of sweeping the model again, and the folder is removed once
    sweep.json is written (``recompute``: everything is swept afresh)."""
    sw: SweepConfig = cfg.sweep
    parts = run.out / SWEEP_PARTS
    bar = None

    def part(weights: str, steps: int, fn: Callable[[], dict]) -> dict:
        """``fn()`` for the model of ``weights`` with its ``seconds``, saved to ``sweep.parts/STEM.json``,
        or that file's content where an interrupted sweep finished the model."""
        path = parts / f"{Path(weights).stem}.json"
        if path.is_file():
            value = read_json(path)
        else:
            t = time.perf_counter()
            value = fn()
            value["seconds"] = time.perf_counter() - t
            write_json_atomic(path, value)
        if bar:
            bar.update(steps)
        return value

    def sweep_implicit(v: VMResult, test_rows, labels, users, lip_rows) -> dict:
        model, make = load_vm(run, table, store, cfg, v)
        x_lip = sweep_mod.vm_features(model, make, lip_rows)
        tag = {"vm": v.name, "seed": v.seed}
        saved = model.core.eval_solver.method if model.core.eval_solver.method in sw.methods else sw.methods[0]
        rows, lips = [], []
        for method in sw.methods:
            out = sweep_mod.implicit_sweep(
                model,
                make,
                test_rows,
                labels,
                users,
                sw.iterations,
                method,
                repeats=sw.timing_repeats,
                timing_rows=sw.timing_rows,
                keep=compare.ITERATION_PAIR if method == saved else (),
                level=compare.LEVEL,
            )
            for k, probs in out.predictions.items():
                _save_predictions(probs, predictions_path(run.out / v.weights, k))
            for r in out.rows:
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
        return {"rows": rows, "lipschitz": lips}

    def baseline_point(b: VMResult, test_rows, labels, users, lip_rows) -> dict:
        model, make = load_vm(run, table, store, cfg, b)
        saved_probs = predictions_path(run.out / b.weights)  # the baseline's test, done in its model stage
        point = sweep_mod.explicit_point(
            model,
            make,
            test_rows,
            labels,
            users,
            repeats=sw.timing_repeats,
            timing_rows=sw.timing_rows,
            probs=_load_predictions(saved_probs) if saved_probs.is_file() else None,
        )
        lip = _row(
            sweep_mod.explicit_lipschitz(
                model,
                sweep_mod.vm_features(model, make, lip_rows),
                perturbations=sw.lipschitz_perturbations,
                scale=sw.lipschitz_scale,
                seed=b.seed,
            )
        )
        return {
            "point": {
                "vm": b.name,
                "seed": b.seed,
                "transfer": b.transfer,
                "params": b.params,
                "hidden": list(b.hidden or ()),
                **{k: getattr(b, k) for k in ("arch", "width", "match", "target")},
                **_row(point),
                "lipschitz_max": lip["max"],
                "lipschitz_mean": lip["mean"],
            }
        }

    def compute() -> SweepResult:
        nonlocal bar
        if recompute:
            shutil.rmtree(parts, ignore_errors=True)
        test_rows = table.rows("test")
        labels, users = np.asarray(table["label"][test_rows]), np.asarray(table["user"][test_rows])
        lip_rows = test_rows[np.random.default_rng(0).permutation(len(test_rows))[: sw.lipschitz_examples]]
        data = (test_rows, labels, users, lip_rows)
        todo = [v for v in vms if v.is_implicit]
        bar = run.bar(total=len(todo) * len(sw.methods) + len(baselines), desc="sweep") if run.bar else None
        done = [part(v.weights, len(sw.methods), functools.partial(sweep_implicit, v, *data)) for v in todo]
        points = [part(b.weights, 1, functools.partial(baseline_point, b, *data)) for b in baselines]
        if bar:
            bar.close()
        return SweepResult(
            tuple(r for d in done for r in d["rows"]),
            tuple(r for d in done for r in d["lipschitz"]),
            tuple(p["point"] for p in points),
            sum(d["seconds"] for d in done + points),
        )

    load, save_record = record_file(SweepResult)

    def save(result: SweepResult, path: Path) -> None:
        save_record(result, path)
        shutil.rmtree(parts, ignore_errors=True)  # sweep.json holds all of them now

    return run.cached(run.out / "sweep.json", compute, load, save, stage="sweep", recompute=recompute)


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
    ceiling: CeilingResult


def checked_data(run: RunDir, cfg: RunConfig) -> tuple[EventTable, DataSummary]:
    """:func:`data_stage`, checked against ``cfg`` (:func:`check_data`); the directory this invocation
    created is removed again when the data are refused."""
    try:
        table, data = data_stage(run, cfg)
        check_data(table, cfg)
    except RunError:
        if run.created:  # refused before any training: leave nothing half-written behind
            shutil.rmtree(run.out, ignore_errors=True)
        raise
    return table, data


def loopfm_stages(run: RunDir, cfg: RunConfig) -> LoopFMModels:
    """Data (checked against ``cfg``: :func:`checked_data`), FM, store and every VM arch x transfer x
    seed of ``cfg``."""
    table, data = checked_data(run, cfg)
    resolved = study.resolve(cfg, table.schema.max_len)
    ceiling = ceiling_stage(run, table, resolved)
    fm = fm_stage(run, table, resolved)
    store, store_info = store_stage(run, table, resolved)
    vms = tuple(
        vm_stage(run, table, store, resolved, a, t, s)
        for a in cfg.vm.archs
        for t in cfg.vm.transfers
        for s in range(cfg.vm.seeds)
    )
    return LoopFMModels(table, resolved, data, fm, store, store_info, vms, ceiling)


def _test_predictions(
    run: RunDir, models: LoopFMModels, result: VMResult | None, iterations: int | None = None
) -> np.ndarray:
    """(N,) test predictions of the FM (``result=None``) or of a VM, read from ``models/STEM.test.npy``;
    recomputed from the saved parameters (and written) when a run from before they were saved lacks them.
    With ``iterations`` k: the sweep's predictions of the implicit VM at k (``models/STEM.kK.test.npy``)."""
    weights = run.model_paths("fm")[0] if result is None else run.out / result.weights
    path = predictions_path(weights, iterations)
    if iterations is not None and not path.is_file():
        raise RunError(
            f"{path} is missing (the sweep writes it); redo the sweep with `implicit-rec sweep --run {run.out}`."
        )
    if not path.is_file():
        if result is None:
            model, make = load_fm(run, models.table, models.cfg), table_batches(models.table)
        else:
            model, make = load_vm(run, models.table, models.store, models.cfg, result)
        _evaluate(run, model, make, models.table, path)
    return _load_predictions(path)


def _load_predictions(path: Path) -> np.ndarray:
    """A model's saved test predictions (``models/STEM.test.npy``); a damaged file is a RunError saying what to do."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: {_oserror_text(err)}; delete it and rerun: it is recomputed from the model.") from None


def comparison_stage(
    run: RunDir,
    models: LoopFMModels,
    baselines: tuple[VMResult, ...],
    iterations: tuple[int, ...] = (),
    *,
    recompute: bool = False,
) -> tuple[dict, ...]:
    """The paired comparisons of :func:`compare.comparison_pairs` with 95% bootstrap intervals
    (``comparisons.json``). Run after the sweep: the ``NAME@kK`` pairs read the sweep's predictions
    at the swept ``iterations``, so a redone sweep (``recompute``) redoes them. Resumable per model:
    each model's bootstrap replicates go to ``comparisons.parts/`` as they are computed
    (:class:`compare.ReplicateFiles`, keyed by the test set and the model's predictions), a rerun
    after an interruption reads them, and the folder is removed once comparisons.json is written."""
    parts = run.out / COMPARISON_PARTS

    def compute() -> tuple[dict, ...]:
        if recompute:
            shutil.rmtree(parts, ignore_errors=True)
        pairs = compare.comparison_pairs(models.vms, baselines, iterations)
        predictions = {}
        for name in dict.fromkeys(n for pair in pairs for n in pair):
            if name == "fm":
                predictions[name] = _test_predictions(run, models, None)[None]
            else:
                base, k = compare.split_iterations(name)
                results = [v for v in models.vms + baselines if v.name == base]
                predictions[name] = np.stack([_test_predictions(run, models, v, k) for v in results])
        table, rows = models.table, models.table.rows("test")
        labels, users = np.asarray(table["label"][rows]), np.asarray(table["user"][rows])
        return compare.compare(labels, users, predictions, pairs, memo=compare.ReplicateFiles(parts))

    def load(path: Path) -> tuple[dict, ...]:
        return tuple(read_json(path)["comparisons"])

    def save(rows: tuple[dict, ...], path: Path) -> None:
        write_json_atomic(path, {"comparisons": list(rows)})
        shutil.rmtree(parts, ignore_errors=True)  # comparisons.json holds the results now

    return run.cached(run.out / "comparisons.json", compute, load, save, stage="comparisons", recompute=recompute)


def assemble(
    run: RunDir,
    cfg: RunConfig,
    models: LoopFMModels,
    swept: SweepResult,
    baselines: tuple[VMResult, ...],
    comparisons: tuple[dict, ...],
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
        ceiling=models.ceiling,
        comparisons=comparisons,
    )


def _execute(run: RunDir, cfg: RunConfig, *, only_sweep: bool = False) -> dict:
    t_start = time.perf_counter()
    run.log(f"implicit-rec run -> {run.out}")
    models = loopfm_stages(run, cfg)
    t, store, resolved, sw = models.table, models.store, models.cfg, cfg.sweep
    baselines = tuple(
        vm_stage(run, t, store, resolved, spec.arch, sw.baseline_transfer, seed, spec)
        for spec in baseline_plan(run, models)
        for seed in range(cfg.vm.seeds)
    )
    swept = sweep_stage(run, t, store, resolved, models.vms, baselines, recompute=only_sweep)
    comparisons = comparison_stage(run, models, baselines, sw.iterations, recompute=only_sweep)

    def finish() -> tuple[dict, list]:
        result = assemble(run, cfg, models, swept, baselines, comparisons, time.perf_counter() - t_start).to_dict()
        write_json_atomic(run.out / "metrics.json", result)
        written = report.write_report(result, run.out)
        state = run.state()
        state["status"] = "finished"
        run.save_state(state)
        return result, written

    result, written = run.step("metrics.json", finish) or (read_json(run.out / "metrics.json"), [])
    return {"metrics": result, "files": [run.out / "metrics.json", *written]}


def run(
    out: str | os.PathLike,
    cfg: RunConfig,
    *,
    force: bool = False,
    quiet: bool = False,
    command: list | None = None,
    events: Callable[[str], None] | None = None,
) -> dict:
    """Run (or resume) the whole job into ``out``; returns ``{"metrics": dict, "files": [paths]}``.

    Under ``jax.distributed`` every process calls this with the same arguments (``implicit-rec run
    --processes P``): they train each model data-parallel over every process's devices where
    ``fm.devices`` / ``vm.devices`` is 0, process 0 writes ``out`` (see :class:`RunDir`)."""
    check_config(cfg)
    rundir = RunDir(out, quiet=quiet, events=events, **_processes())
    rundir.prepare(cfg, force=force, command=command)
    import jax

    if jax.process_count() > 1:
        rundir.log(
            f"jax.distributed: {jax.process_count()} processes, {jax.device_count()} devices "
            f"(fm.devices={cfg.fm.devices}, vm.devices={cfg.vm.devices}; 0 = all); process 0 writes {rundir.out}"
        )
    return _execute(rundir, cfg)


def prepare(
    out: str | os.PathLike, cfg: RunConfig, *, force: bool = False, quiet: bool = False, command: list | None = None
) -> None:
    """Create (or reopen) the run directory and its dataset cache, checked against ``cfg``: what the
    launcher of a multi-process run does before it starts the processes (``implicit-rec run --processes``)."""
    check_config(cfg)
    rundir = RunDir(out, quiet=quiet)
    rundir.prepare(cfg, force=force, command=command)
    checked_data(rundir, cfg)


def _processes() -> dict:
    """RunDir's ``writer`` and ``sync`` for this process: process 0 writes, ``sync`` is the barrier of
    every process of the ``jax.distributed`` job (:func:`implicit_rec.processes.barrier`); {} in a run
    of one process."""
    import jax

    if jax.process_count() == 1:
        return {}
    from ..processes import barrier

    return {"writer": jax.process_index() == 0, "sync": barrier}


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


def _restore(build: Callable, path: Path, out: Path):
    """``load_module(build, path)``, with a damaged or missing weights file as a RunError saying how to recover."""
    try:
        return load_module(build, path)
    except (OSError, ValueError) as err:
        raise RunError(
            f"cannot restore {path.name} in {path.parent} ({_oserror_text(err)}): the run directory "
            f"is damaged; remove {out} or rerun with --force to start over."
        ) from None
