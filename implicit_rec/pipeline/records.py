"""The typed stage records: frozen dataclasses whose ``to_dict`` is a stage's file and ``metrics.json``.

A :class:`Record` serialises to JSON values and back (``from_dict(r.to_dict()) == r``); unknown or
missing keys are a ValueError naming them. ``RunMetrics`` is the ``metrics.json`` schema
(``implicit_rec.report.METRICS_SCHEMA``).
"""

from __future__ import annotations

import dataclasses
import types
import typing

import numpy as np

from ..config import IMPLICIT_ARCHS


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
class CeilingResult(Record):
    """What the data allow on the test split (``ceiling.json``, ``metrics.json`` ``ceiling``).

    ``bayes``: AUC, gAUC and logloss of the true click probability (the synthetic data record it);
    ``fm_window`` / ``vm_window``: the window-limited ceilings of a model reading the FM's / the VMs'
    history lengths (``procedure``; :mod:`implicit_rec.ceiling`); ``hops``: {str(h): AUC} of a model
    resolving h steps of the category cascade (``multihop`` data; None for other data). Real data have
    none (``available`` false, ``reason`` says why)."""

    available: bool
    bayes: dict | None = None  # {auc, gauc, logloss}
    fm_window: dict | None = None
    vm_window: dict | None = None
    fm_len: int | None = None
    vm_len: int | None = None
    procedure: str = ""
    reason: str = ""
    hops: dict | None = None  # {"1": auc, "2": auc, "4": auc, "8": auc}: the hop ceilings (implicit_rec.ceiling)


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

    name: str  # "arch/transfer" (baselines: "arch-dDEPTH@MATCH/transfer", e.g. "din-d4@params/loopfm+kd")
    arch: str
    transfer: str
    seed: int
    auc: float
    gauc: float
    logloss: float
    params: int
    hidden: tuple[int, ...] | None  # MLP widths of an MLP / DIN VM; None for implicit and transformer VMs
    epochs: int
    seconds: float
    examples_per_second: float
    weights: str  # parameter file, relative to the run directory
    # explicit baselines (loopfm.baselines.BaselineSpec); None for the VMs of vm.archs
    depth: int | None = None  # layers: MLP hidden layers or transformer encoder layers
    width: int | None = None  # the chosen width of every layer
    match: str | None = None  # what the width matches: "params" | "flops" (of sweep.match_arch)
    flops: float | None = None  # FLOPs per example of the forward pass
    target: float | None = None  # the matched implicit VM's parameters or FLOPs per example
    # per-epoch records of ``training.fit`` (an implicit VM's include its convergence monitor)
    history: tuple[dict, ...] = ()

    @property
    def is_implicit(self) -> bool:
        """Whether the VM's core is an ImplicitLayer (``arch`` in ``IMPLICIT_ARCHS``)."""
        return self.arch in IMPLICIT_ARCHS


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
    ceiling: CeilingResult | None = None  # None in runs written before ceilings existed
    comparisons: tuple[dict, ...] = ()  # paired differences a - b with 95% intervals (pipeline.compare)
