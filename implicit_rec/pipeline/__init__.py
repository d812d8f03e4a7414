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

from ..loopfm import study
from .checks import check_config, check_data, data_problem
from .records import DataSummary, FMResult, Record, RunMetrics, StoreInfo, SweepResult, Timing, VMResult
from .rundir import RunDir, RunError, _oserror_text, read_json, record_file, versions
from .stages import (
    LoopFMModels,
    assemble,
    data_stage,
    fm_stage,
    load_fm,
    load_vm,
    loopfm_stages,
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
    "rerun_sweep",
    # the LoopFM study the stages train through (tests patch study.train_fm)
    "study",
]
