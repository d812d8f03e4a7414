"""Checks before any training: the configuration (:func:`check_config`) and its windows against the data
(:func:`check_data`, :func:`data_problem`)."""

from __future__ import annotations

import numpy as np

from .. import config as config_mod
from ..config import RunConfig
from ..data.events import EventTable
from ..loopfm import study
from .rundir import RunError


def check_data(table: EventTable, cfg: RunConfig) -> None:
    """RunError naming the keys if the configuration's windows do not fit the data."""
    problem = data_problem(table, cfg)
    if problem:
        raise RunError(f"{problem} ({_days_present(table)}).")


def check_config(cfg: RunConfig) -> None:
    """RunError for a configuration :func:`config.check_run` refuses (also one built in Python)."""
    try:
        config_mod.check_run(cfg)
    except config_mod.ConfigError as err:
        raise RunError(str(err)) from None


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
    transfers = set(cfg.vm.transfers) | ({cfg.sweep.baseline_transfer} if cfg.sweep.baseline_archs else set())
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
