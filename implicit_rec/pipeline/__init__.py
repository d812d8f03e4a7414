"""``implicit-rec run``: data -> FM -> historical store -> VMs -> baselines -> sweep -> report.

The run is a sequence of stage functions, each returning a frozen dataclass (a :class:`Record`)
whose ``to_dict`` is what the stage writes and what ``metrics.json`` holds::

    data_stage       -> DataSummary   (the table; checked against the configuration by check_data)
    ceiling_stage    -> CeilingResult ceiling.json (the attainable AUC; none for real data)
    fm_stage         -> FMResult      models/fm.json (+ fm.test.npy, its test predictions)
    store_stage      -> StoreInfo     store/ (the HistoricalStore)
    vm_stage         -> VMResult      models/vm-*.json, models/baseline-*.json (+ .test.npy)
    sweep_stage      -> SweepResult   sweep.json (+ models/vm-*.kK.test.npy, implicit VMs at K iterations)
    comparison_stage -> (rows)        paired differences with 95% bootstrap intervals (pipeline.compare;
                                      after the sweep, whose predictions at k = 16 and 2 it compares)
    assemble      -> RunMetrics    metrics.json (``implicit_rec.report`` reads it)

:meth:`RunDir.cached` does the bookkeeping of every stage once: load the stage's file if a
finished stage left it, else compute, save (atomically) and mark the stage done in ``run.json``.

Run directory (every file written atomically; a rerun of the same command resumes)::

    config.toml        the effective configuration (a rerun must match it, or use --force)
    run.json           package versions, command, status ("running" / "finished"), stage times
    log.txt            everything printed
    cache/             prepared dataset tables (data.cache_dir = "auto")
    ceiling.json       the attainable test AUC (Bayes and window ceilings; none for real data)
    models/fm.*        FM parameters (.msgpack), result (.json), test predictions (.test.npy),
                       in-progress epoch checkpoint (.train.msgpack)
    store/             the FM's logged embeddings (LoopFM features, KD targets); while the logging
                       pass runs it is store.partial/, which an interrupted pass resumes from;
                       models/fm-oof*.msgpack: the out-of-fold FMs that log the FM window
    models/vm-*.*      each VM and explicit baseline, the same four files; an implicit VM also has
                       .k16.test.npy / .k2.test.npy, its test predictions at k iterations (the sweep)
    sweep.json         the test-time iteration sweep and the Lipschitz diagnostic (while it runs,
                       sweep.parts/ keeps each finished model's rows, so an interrupted sweep resumes)
    comparisons.json   paired differences between models with 95% bootstrap intervals (while it
                       runs, comparisons.parts/ keeps each model's replicates, so it resumes)
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

from ..loopfm import study
from .checks import check_config, check_data, data_problem
from .records import CeilingResult, DataSummary, FMResult, Record, RunMetrics, StoreInfo, SweepResult, Timing, VMResult
from .rundir import RunDir, RunError, _oserror_text, read_json, record_file, versions
from .stages import (
    LoopFMModels,
    assemble,
    ceiling_stage,
    comparison_stage,
    data_stage,
    fm_stage,
    load_fm,
    load_vm,
    loopfm_stages,
    prepare,
    rerun_sweep,
    run,
    store_stage,
    sweep_stage,
    transfer_ratio,
    vm_stage,
)

__all__ = [
    # records
    "Record",
    "CeilingResult",
    "DataSummary",
    "FMResult",
    "StoreInfo",
    "VMResult",
    "SweepResult",
    "Timing",
    "RunMetrics",
    # the run directory
    "RunDir",
    "RunError",
    "record_file",
    "read_json",
    "versions",
    "_oserror_text",  # 'PATH: reason' of an OSError (implicit_rec.cli prints it)
    # checks
    "check_config",
    "check_data",
    "data_problem",
    # stages
    "data_stage",
    "ceiling_stage",
    "comparison_stage",
    "fm_stage",
    "load_fm",
    "store_stage",
    "vm_stage",
    "load_vm",
    "sweep_stage",
    "transfer_ratio",
    "LoopFMModels",
    "loopfm_stages",
    "assemble",
    "run",
    "prepare",
    "rerun_sweep",
    # the LoopFM study the stages train through (tests patch study.train_fm)
    "study",
]
