"""Checks across sections: settings that would leak the VMs' own labels into their inputs.

Windows are half-open day ranges written as two-element lists: ``fm.days = [0, 4]`` is days 0-3.
:func:`check_run` runs once, on the final configuration (file, ``--set`` and flags applied), and
refuses a configuration unless:

* ``fm.log_from_day >= fm.days[1]``: the FM never logs an event it was trained on (in-sample
  embeddings and logits would feed the VMs' LoopFM features and KD targets);
* ``fm.days`` and ``vm.days`` are disjoint, unless ``fm.out_of_fold = K >= 2``: then every event of
  the overlap is logged by an FM trained on the other user folds only, never on its own label;
* with a KD transfer, every VM training day is logged (``vm.days[0] >= fm.log_from_day``, or
  ``>= fm.days[0]`` with out-of-fold logging), or the VMs would have no KD target.
"""

from __future__ import annotations

from .fields import ConfigError
from .sections import RunConfig


def _day_range(start: int, end: int) -> str:
    """'days 4-5' / 'day 4': the days of the half-open window [start, end)."""
    return f"day {start}" if end - start == 1 else f"days {start}-{end - 1}"


def _days(window) -> str:
    """'[0, 4] (days 0-3)': a window as written in TOML and the days it holds."""
    return f"{list(window)} ({_day_range(*window)})"


def leakage_problems(cfg: RunConfig) -> list[str]:
    """What in ``cfg`` would let the VMs see their own labels (or leave them without KD targets).

    Empty when the configuration is sound; see the module docstring for the rules.
    """
    fm, vm = cfg.fm, cfg.vm
    (f0, f1), (v0, v1) = fm.days, vm.days
    log_from = f1 if fm.log_from_day is None else fm.log_from_day
    oof = fm.out_of_fold >= 2
    problems = []
    if log_from < f1:
        problems.append(
            f"fm.log_from_day={log_from} is inside fm.days={_days(fm.days)}: the FM would log embeddings and "
            f"logits of events it was trained on, and the VMs read them as LoopFM features and KD targets; "
            f"set fm.log_from_day >= {f1} (or 'auto'){' and use fm.out_of_fold' if not oof else ''} to log "
            "the FM window out of fold"
        )
    lo, hi = max(f0, v0), min(f1, v1)
    if lo < hi and not oof:
        disjoint = f"fm.days=[{f0}, {v0}]" if f0 < v0 else f"vm.days=[{f1}, {max(v1, f1 + 1)}]"
        problems.append(
            f"fm.days={_days(fm.days)} overlaps vm.days={_days(vm.days)} on {_day_range(lo, hi)}: "
            "the FM would be trained on the VMs' own labels and its logged outputs would carry them; make "
            f"the windows disjoint (e.g. {disjoint}) "
            "or set fm.out_of_fold=K >= 2 to log the overlap out of fold"
        )
    kd = [t for t in vm.transfers if t.endswith("kd")]
    if cfg.sweep.baseline_archs and cfg.sweep.baseline_transfer.endswith("kd"):
        kd.append(f"sweep.baseline_transfer={cfg.sweep.baseline_transfer!r}")
    first_logged = f0 if oof else log_from
    if kd and v0 < first_logged and not problems:  # (fixing an overlap or in-sample logging moves this)
        problems.append(
            f"vm.days={_days(vm.days)} starts before the FM logs (day {first_logged}, fm.log_from_day"
            f"{'' if fm.log_from_day is not None else ' auto'}): VM events of "
            f"{_day_range(v0, min(first_logged, v1))} have no FM logit for the KD "
            f"transfer(s) {', '.join(dict.fromkeys(kd))}; start vm.days at {first_logged} or later"
            + (f", or lower fm.log_from_day to {v0}" if v0 >= f1 else "")
            + ", or drop the KD transfers"
        )
    return problems


def check_run(cfg: RunConfig, origin: str = "config") -> None:
    """Raise :class:`ConfigError` (one line, naming the keys) if :func:`leakage_problems` finds any."""
    problems = leakage_problems(cfg)
    if problems:
        raise ConfigError(f"{origin}: label leakage or missing FM outputs: " + "; ".join(problems) + ".")
