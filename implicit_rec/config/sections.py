"""The configuration of every job (``implicit-rec run``, ``train-decentralized``, the experiment
scripts): a TOML file with five sections, every key validated and defined once, here.

Sections and keys (defaults in :data:`DEFAULT`; ``implicit-rec config`` prints them as commented
TOML, ``docs/configuration.md`` is their reference)::

    [data]          where the events come from: data.source, data.path, the synthetic preset
    [data.options]  options of the dataset loader (column names, split fractions, ...)
    [fm]            the foundation model, its training window and its logged embeddings
    [vm]            the vertical models: architectures x transfer variants x seeds, their training
    [sweep]         the test-time iteration sweep, the explicit baselines and the Lipschitz diagnostic
    [dsgd]          decentralized training of one VM across agents (``implicit-rec train-decentralized``)

Precedence: defaults < ``--config FILE`` < ``--set section.key=value`` < an entry point's own flags
(``--dataset``, ``--preset``, ``--seeds``). ``--set`` reads the value as TOML (``--set vm.seeds=2``,
``--set 'vm.archs=["mlp","implicit"]'``; a bare word is a string: ``--set fm.size=medium``); a key of
a sub-table has three parts (``--set data.options.user_col=uid``). :func:`add_config_args` and
:func:`config_from_args` give every entry point these arguments and this order.

``data.dataset = "SOURCE:PATH"`` (and ``--dataset SOURCE:PATH``) is shorthand for ``data.source`` and
``data.path``: ``"interactions:log.csv"``, ``"taobaoad:DIR"``, ``"synthetic"``.

An unknown section or key, a value of the wrong type or outside its allowed range is a
:class:`ConfigError` that names the key (and the file and line, or the ``--set`` / flag, it came
from) and suggests the closest valid key; a renamed key names its new name (:data:`RENAMED`). Float
keys must be finite (``nan`` and ``inf`` are TOML numbers, never a useful setting). Sections built in
Python (``VMConfig(epochs=0)``) are validated the same way, so library functions take them directly.
The dataset's path is checked (exists, right kind, readable) by :func:`check_data`, before an entry
point writes anything.

Windows are half-open day ranges written as two-element lists: ``fm.days = [0, 4]`` is days 0-3.
Checks across sections (:func:`check_run`, on the final configuration) refuse settings that leak
the VMs' own labels into their inputs:

* ``fm.log_from_day`` must be ``>= fm.days[1]``: the FM never logs an event it was trained on
  (in-sample embeddings and logits would feed the VMs' LoopFM features and KD targets);
* ``fm.days`` and ``vm.days`` must be disjoint, unless ``fm.out_of_fold = K >= 2``: then every event
  of the overlap is logged by an FM trained on the other user folds only, never on its own label;
* with a KD transfer, every VM training day must be logged (``vm.days[0] >= fm.log_from_day``, or
  ``>= fm.days[0]`` with out-of-fold logging), or the VMs would have no KD target.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsgd.topology import TOPOLOGIES
from solvers._options import METHODS as SOLVER_METHODS

_AUTO = "auto"  # spelling of "None / derive it" in TOML, which has no null


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and what to do.

    ``key``: the 'section.key' the problem is about (None when it is not one key's), so callers
    can say where that key was set.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _field(
    default,
    doc: str,
    *,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    below: float | None = None,
    positive: bool = False,
    sources: tuple[str, ...] | None = None,
):
    """A config field: ``min`` / ``max`` are inclusive bounds, ``below`` an exclusive upper bound,
    ``positive`` means ``> 0`` (rates, scales); ``sources``: the data sources a loader option applies to."""
    meta = {
        "doc": doc,
        "choices": choices,
        "min": min,
        "max": max,
        "below": below,
        "positive": positive,
        "sources": sources,
    }
    if isinstance(default, (list, tuple)):
        return dataclasses.field(
            default_factory=lambda d=default: tuple(tuple(v) if isinstance(v, list) else v for v in d), metadata=meta
        )
    return dataclasses.field(default=default, metadata=meta)


def _table(cls, doc: str):
    """A sub-table field (``[data.options]``): a section nested in a section."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


ARCHS = ("mlp", "din", "implicit")  # VM architectures
TRANSFERS = ("none", "kd", "loopfm", "loopfm+kd")  # how a VM uses the FM
METHODS = SOLVER_METHODS  # fixed-point solvers
OPTIMIZERS = ("sgd", "momentum", "adam")  # local update rule of every DSGD agent
SHARDINGS = ("iid", "by-user")  # how DSGD agents split the training rows
RELEASES = ("taobaoad", "kuaivideo", "amazonelectronics")  # BARS releases: a directory with train.csv, test.csv
SOURCES = ("synthetic", *RELEASES, "interactions")  # data.source (loaders: implicit_rec.data.LOADERS)
RELEASE_FILES = ("train.csv", "test.csv")

# Keys that were renamed: old -> new. Reading an old key is an error that names the new one.
RENAMED = {
    "vm.implicit_method": "vm.method",
    "vm.implicit_train_iters": "vm.train_max_iter",
    "vm.implicit_eval_iters": "vm.eval_max_iter",
}

# The one name of each recurring setting (docs/configuration.md prints this table).
GLOSSARY = {
    "max_iter": "a fixed-point solver's iteration cap (`vm.train_max_iter`, `vm.eval_max_iter`; `SolverConfig`)",
    "tol": "a solver's tolerance on the relative residual (`vm.train_tol`, `vm.eval_tol`)",
    "method": 'the fixed-point solver, "anderson" or "picard" (`vm.method`, `sweep.methods`)',
    "iterations": "the test-time iteration counts k of a sweep (`sweep.iterations`; sweep rows carry `iterations`)",
    "steps": "a fixed number of steps, taken without a stopping test: optimizer steps (`dsgd.steps`, the "
    "domains' training steps) and exact solver iterations (`solvers.iterate(steps=k)`, "
    "`ImplicitLayer.trajectory(steps=k)`)",
    "epochs": "passes over the training rows, with early stopping (`fm.epochs`, `vm.epochs`)",
    "learning_rate": "an optimizer's step size (never `lr`)",
    "lipschitz_examples": "test examples of the empirical Lipschitz estimate (`sweep.lipschitz_examples`)",
    "lipschitz_perturbations": "random perturbations per example (`sweep.lipschitz_perturbations`)",
    "lipschitz_scale": "perturbation norm relative to the input's norm (`sweep.lipschitz_scale`)",
}


class _Section:
    """What every section shares: each field coerced and range-checked on construction (a list
    becomes a tuple, an int a float where a float is declared), then the section's own ``_check``.

    ``_name`` is the section's key prefix (``"vm"``, ``"data.options"``) used in the messages.
    """

    _name = ""

    def __post_init__(self):
        for f, tp in _typed_fields(type(self)):
            key = f"{self._name}.{f.name}"
            value = getattr(self, f.name)
            if _is_section(tp):
                if isinstance(value, Mapping):
                    value = tp(**value)
                elif not isinstance(value, tp):
                    raise ConfigError(f"{key} must be a {tp.__name__} (a table), got {value!r}.", key)
            else:
                try:
                    value = _coerce(value, tp, f.metadata, key)
                except ConfigError as err:
                    raise ConfigError(str(err), key) from None
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Checks across the fields of one section (none by default)."""


@functools.cache
def _typed_fields(cls) -> tuple:
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls))


def _is_section(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, _Section)


def _check_window(cfg, name: str) -> None:
    if len(cfg.days) != 2 or cfg.days[0] >= cfg.days[1]:
        raise ConfigError(f"{name}.days must be [start, end) with start < end, got {list(cfg.days)}.", f"{name}.days")


def _check_lists(cfg, *fields: str, unique: bool = True) -> None:
    """Each list field non-empty and (``unique``) without repeats."""
    for field in fields:
        values, key = getattr(cfg, field), f"{cfg._name}.{field}"
        if not values:
            raise ConfigError(f"{key} must not be empty.", key)
        repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
        if unique and repeated:
            raise ConfigError(f"{key} lists {', '.join(map(repr, repeated))} more than once.", key)


@dataclasses.dataclass(frozen=True)
class LoaderOptions(_Section):
    """Options of the dataset loader; unset ('auto') = the loader's own default for data.source.

    Each option applies to the sources whose loader takes it (``sources`` in its metadata); setting
    one for another source is an error.
    """

    _name = "data.options"

    user_col: str | None = _field(None, "column of the user id", sources=("interactions",))
    item_col: str | None = _field(None, "column of the item id", sources=("interactions",))
    time_col: str | None = _field(
        None, "column of the timestamp (integers, ISO-8601 datetimes or numbers)", sources=("interactions",)
    )
    label_col: str | None = _field(None, "column of the 0/1 label", sources=("interactions",))
    rating_col: str | None = _field(
        None, "column of the rating (read when rating_threshold is set)", sources=("interactions",)
    )
    rating_threshold: float | None = _field(
        None, "label = rating >= threshold (instead of label_col)", sources=("interactions",)
    )
    categorical: tuple[str, ...] | None = _field(
        None, "extra user or context columns (no history)", sources=("interactions",)
    )
    item_categorical: tuple[str, ...] | None = _field(
        None, "extra columns describing the item (get a history sequence)", sources=("interactions",)
    )
    history: str | None = _field(
        None, "earlier events in the histories", choices=("all", "positive"), sources=("interactions",)
    )
    min_count: int | dict[str, int] | None = _field(
        None, "rarer ids map to OOV; an int or a table {column = count}", min=1, sources=(*RELEASES, "interactions")
    )
    max_len: int | None = _field(
        None, "behaviour-sequence length of the table", min=1, sources=(*RELEASES, "interactions")
    )
    test_fraction: float | None = _field(
        None, "last fraction of the events by time held out for testing", min=0, below=1, sources=("interactions",)
    )
    valid_fraction: float | None = _field(
        None,
        "fraction of the events before the test split used for validation",
        min=0,
        below=1,
        sources=(*RELEASES, "interactions"),
    )
    n_train_days: int | None = _field(
        None, "equal-count day windows of the train + validation events", min=1, sources=(*RELEASES, "interactions")
    )
    visual_embeddings: bool | None = _field(
        None, "load DIR/item_visual_emb_dim64.h5 (auto: when present)", sources=("kuaivideo",)
    )
    chunk_rows: int | None = _field(
        None,
        "rows read per chunk (memory bound; not part of the cache key)",
        min=1,
        sources=(*RELEASES, "interactions"),
    )

    def given(self) -> dict[str, Any]:
        """The options that are set (not 'auto'), as loader keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """Where the events come from."""

    _name = "data"

    source: str = _field("synthetic", "where the events come from", choices=SOURCES)
    path: str = _field(
        "",
        "interactions: a CSV or parquet file; taobaoad, kuaivideo, amazonelectronics: a directory "
        "holding train.csv and test.csv; synthetic: '' (none)",
    )
    preset: str = _field(
        "default", "size of the synthetic data (ignored for files)", choices=("tiny", "default", "large")
    )
    seed: int = _field(0, "seed of the synthetic data (ignored for files)", min=0)
    cache_dir: str = _field(_AUTO, "where prepared tables are cached; 'auto' = RUN/cache")
    options: LoaderOptions = _table(LoaderOptions, "options of the loader of data.source ([data.options])")

    @property
    def dataset(self) -> str:
        """The one-string form ``SOURCE:PATH`` (``"synthetic"``), as ``--dataset`` takes it."""
        return f"{self.source}:{self.path}" if self.path else self.source

    def _check(self) -> None:
        if self.source == "synthetic" and self.path:
            raise ConfigError(
                f"data.source='synthetic' takes no path, got data.path={self.path!r}; remove data.path "
                "or choose the source that reads it (e.g. data.source='interactions').",
                "data.path",
            )
        if self.source != "synthetic" and not self.path:
            target = "FILE" if self.source == "interactions" else "DIR"
            raise ConfigError(
                f"data.source={self.source!r} needs a path: set data.path = {target} "
                f"(or --dataset {self.source}:{target}).",
                "data.path",
            )
        for name in self.options.given():
            sources = LoaderOptions.__dataclass_fields__[name].metadata["sources"]
            if self.source not in sources:
                raise ConfigError(
                    f"data.options.{name} does not apply to data.source={self.source!r} (only to "
                    f"{', '.join(sources)}); remove it.",
                    f"data.options.{name}",
                )


@dataclasses.dataclass(frozen=True)
class FMConfig(_Section):
    """The foundation model: trained on an early window, then it logs an embedding per event."""

    _name = "fm"

    size: str = _field("small", "FM size", choices=("small", "medium", "large"))
    days: tuple[int, ...] = _field((0, 4), "[start, end) days the FM trains on", min=0)
    log_from_day: int | None = _field(None, "first day the FM logs; 'auto' = end of fm.days", min=0)
    max_len: int | None = _field(None, "behaviour-sequence length of the FM; 'auto' = min(100, data's)", min=1)
    embedding: str = _field("interaction", "logged representation", choices=("interaction", "item"))
    store_dtype: str = _field("float16", "dtype of the logged embeddings", choices=("float16", "float32"))
    out_of_fold: int = _field(0, "K >= 2: also log FM-window events out of fold (K FMs); 0 = off", min=0)
    epochs: int = _field(3, "training epochs (early stopping on validation AUC)", min=1)
    batch_size: int = _field(256, "training batch size", min=1)
    learning_rate: float = _field(2e-3, "Adam learning rate", positive=True)
    patience: int = _field(2, "epochs without validation improvement before stopping", min=1)

    def _check(self) -> None:
        _check_window(self, "fm")
        if self.out_of_fold == 1:
            raise ConfigError("fm.out_of_fold=1 is not a fold count: use 0 (off) or K >= 2 folds.", "fm.out_of_fold")


@dataclasses.dataclass(frozen=True)
class VMConfig(_Section):
    """The vertical models: every arch x transfer x seed is trained and tested."""

    _name = "vm"

    archs: tuple[str, ...] = _field(("din", "implicit"), "architectures", choices=ARCHS)
    transfers: tuple[str, ...] = _field(TRANSFERS, "transfer variants", choices=TRANSFERS)
    seeds: int = _field(1, "seeds per variant (mean and std are reported)", min=1)
    days: tuple[int, ...] = _field((4, 7), "[start, end) days the VMs train on", min=0)
    max_len: int = _field(25, "behaviour-sequence length of the VMs", min=1)
    history_len: int = _field(20, "L: logged FM embeddings per LoopFM feature", min=1)
    hidden: tuple[int, ...] = _field((64, 32), "hidden widths of the explicit VMs' MLP", min=1)
    d_state: int = _field(32, "state size of the implicit VM", min=1)
    epochs: int = _field(5, "training epochs (early stopping on validation AUC)", min=1)
    batch_size: int = _field(256, "training batch size", min=1)
    learning_rate: float = _field(3e-3, "Adam learning rate", positive=True)
    patience: int = _field(2, "epochs without validation improvement before stopping", min=1)
    kd_weight: float = _field(1.0, "weight of the distillation loss", min=0)
    kd_on_main: bool = _field(False, "distill into the main head instead of an auxiliary head")
    method: str = _field("anderson", "fixed-point solver of the implicit VM", choices=METHODS)
    train_max_iter: int = _field(10, "solver iteration cap of the implicit VM while training", min=1)
    train_tol: float = _field(1e-4, "solver tolerance (relative residual) while training", min=0)
    eval_max_iter: int = _field(30, "solver iteration cap of the implicit VM when testing", min=1)
    eval_tol: float = _field(1e-5, "solver tolerance (relative residual) when testing", min=0)

    def _check(self) -> None:
        _check_window(self, "vm")
        _check_lists(self, "archs", "transfers")
        if not self.hidden:
            raise ConfigError("vm.hidden must list at least one hidden width, e.g. [64, 32].", "vm.hidden")


@dataclasses.dataclass(frozen=True)
class SweepConfig(_Section):
    """Test-time iteration sweep of every implicit VM, explicit baselines, Lipschitz diagnostic."""

    _name = "sweep"

    iterations: tuple[int, ...] = _field((0, 1, 2, 4, 8, 16, 32, 64), "iteration counts k", min=0)
    methods: tuple[str, ...] = _field(("picard", "anderson"), "solvers swept", choices=METHODS)
    baseline_arch: str = _field(
        "din", "front end of the explicit baselines (same as the implicit VM's)", choices=("mlp", "din")
    )
    baseline_transfer: str = _field("loopfm+kd", "transfer variant of the explicit baselines", choices=TRANSFERS)
    baselines: tuple[tuple[int, ...], ...] = _field(
        ((32,), (32, 32), (32, 32, 32, 32), (128, 128)), "hidden widths of each explicit baseline", min=1
    )
    lipschitz_examples: int = _field(256, "test examples for the Lipschitz estimate", min=1)
    lipschitz_perturbations: int = _field(8, "random perturbations per example", min=1)
    lipschitz_scale: float = _field(1e-2, "perturbation norm relative to the input's norm", positive=True)
    timing_repeats: int = _field(
        3, "timed passes per k (median reported); timed: the implicit VMs with sweep.baseline_transfer", min=1
    )

    def _check(self) -> None:
        _check_lists(self, "methods")
        _check_lists(self, "iterations", unique=False)
        if list(self.iterations) != sorted(set(self.iterations)):
            raise ConfigError(
                f"sweep.iterations must be increasing without repeats, got {list(self.iterations)}.",
                "sweep.iterations",
            )
        empty = [i for i, widths in enumerate(self.baselines) if not widths]
        if empty:
            raise ConfigError(
                f"sweep.baselines[{empty[0]}] is empty; give each baseline its hidden widths, "
                "e.g. [32, 32] (or remove it).",
                "sweep.baselines",
            )


@dataclasses.dataclass(frozen=True)
class DSGDConfig(_Section):
    """Decentralized training of one VM (`implicit-rec train-decentralized`); data and model from [data], [vm]."""

    _name = "dsgd"

    agents: int = _field(6, "number of agents (JAX devices)", min=1)
    topology: str = _field("ceca-2p", "communication topology", choices=TOPOLOGIES)
    arch: str = _field("mlp", "architecture of the VM trained", choices=ARCHS)
    transfer: str = _field("none", "transfer variant of the VM trained", choices=TRANSFERS)
    shards: str = _field("iid", "how agents split the training rows", choices=SHARDINGS)
    steps: int = _field(400, "DSGD iterations", min=1)
    optimizer: str = _field("adam", "local update rule of every agent (plain DSGD: sgd)", choices=OPTIMIZERS)
    learning_rate: float = _field(3e-3, "learning rate of every agent", positive=True)
    batch_size: int = _field(64, "batch size of every agent", min=1)
    seed: int = _field(0, "seed of the model and the batch order", min=0)
    log_every: int = _field(10, "iterations between log records (consensus, loss, bytes)", min=1)
    eval_every: int = _field(100, "iterations between validation AUCs", min=1)
    eval_agent: int = _field(0, "agent whose own model is also evaluated", min=0)
    max_valid: int = _field(20000, "validation events used for the AUC", min=1)
    unroll_period: bool = _field(False, "one compiled call per period (static permutations, no lax.switch)")

    def _check(self) -> None:
        if self.eval_agent >= self.agents:
            raise ConfigError(
                f"dsgd.eval_agent must be < dsgd.agents={self.agents}, got {self.eval_agent}.", "dsgd.eval_agent"
            )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The whole configuration: one object per section."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    fm: FMConfig = dataclasses.field(default_factory=FMConfig)
    vm: VMConfig = dataclasses.field(default_factory=VMConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    dsgd: DSGDConfig = dataclasses.field(default_factory=DSGDConfig)

    def __post_init__(self):
        for f, tp in _typed_fields(type(self)):
            if not isinstance(getattr(self, f.name), tp):
                raise ConfigError(f"RunConfig.{f.name} must be a {tp.__name__}, got {getattr(self, f.name)!r}.")

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists, None as 'auto', sub-tables as dicts) — what ``config.toml`` holds."""
        return {s.name: _plain(getattr(self, s.name)) for s in dataclasses.fields(self)}

    def replace(self, **sections) -> RunConfig:
        return dataclasses.replace(self, **sections)


def _plain(v):
    """A config value as TOML holds it: None as 'auto', tuples as lists, sections as tables."""
    if v is None:
        return _AUTO
    if isinstance(v, _Section):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _closest(name: str, options, prefix: str = "") -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    if match:
        return f"; did you mean {prefix + match[0]!r}?"
    return f"; valid: {', '.join(prefix + o for o in options)}."


def _coerce(value: Any, tp, meta: dict, key: str) -> Any:
    """``value`` as type ``tp`` (lists as tuples, ints as floats), or ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None, int | dict[str, int] | None
        if value is None or (isinstance(value, str) and value == _AUTO):
            return None
        options = [a for a in args if a is not type(None)]
        tables = [a for a in options if typing.get_origin(a) is dict]
        chosen = tables[0] if tables and isinstance(value, Mapping) else next(a for a in options if a not in tables)
        return _coerce(value, chosen, meta, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}.")
        return {str(k): _coerce(v, args[1], meta, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}.")
        return tuple(_coerce(v, args[0], meta, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}.")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}.")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}.")
    choices = meta.get("choices")
    if choices and value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        raise ConfigError(
            f"{key}={value!r} is not valid; {f'did you mean {hint[0]!r}? ' if hint else ''}"
            f"choose one of {', '.join(choices)}."
        )
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key} must be >= {meta['min']}, got {value!r}.")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{key} must be <= {meta['max']}, got {value!r}.")
    if meta.get("below") is not None and value >= meta["below"]:
        raise ConfigError(f"{key} must be < {meta['below']}, got {value!r}.")
    if meta.get("positive") and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}.")
    return value


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}
DEFAULT = RunConfig()


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
    if cfg.sweep.baselines and cfg.sweep.baseline_transfer.endswith("kd"):
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


def parse_dataset(text: str, key: str = "data.dataset") -> tuple[str, str]:
    """``"SOURCE:PATH"`` -> (source, path); ``"synthetic"`` -> ("synthetic", "").

    The source is case-insensitive and may carry the BARS ``_x1`` suffix (``"TaobaoAd_x1:DIR"``); a
    ``~`` in the path is kept (expanded when the file is read). An unknown source is a ConfigError
    that suggests the closest one.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{key} must be a string SOURCE:PATH, got {text!r}.", key)
    name, _, path = text.partition(":")
    source = name.strip().lower()
    source = source[:-3] if source.endswith("_x1") else source
    if source not in SOURCES:
        hint = difflib.get_close_matches(source, SOURCES, n=1, cutoff=0.5)
        raise ConfigError(
            f"{key}={text!r}: unknown source {name.strip()!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else ";")
            + f" valid: {', '.join(SOURCES)} (as 'SOURCE:PATH' except 'synthetic').",
            key,
        )
    return source, path.strip()


def _expand_dataset(body: dict, places: dict) -> None:
    """Replace the shorthand ``dataset`` of a [data] table by ``source`` and ``path`` (in place)."""
    if "dataset" not in body:
        return
    both = [k for k in ("source", "path") if k in body]
    if both:
        raise ConfigError(
            f"data.dataset is shorthand for data.source and data.path; set either it or {', '.join(both)}, not both.",
            "data.dataset",
        )
    body["source"], body["path"] = parse_dataset(body.pop("dataset"))
    for k in ("data.source", "data.path"):
        if "data.dataset" in places:
            places.setdefault(k, places["data.dataset"])


def _place(places: dict, origin: str, key: str | None) -> str:
    """'FILE, line N: ' / '--set ...: ' / 'ORIGIN: ' for the problem with ``key`` (or its parents)."""
    while key:
        if key in places:
            where = places[key]
            return f"{origin}, line {where}: " if isinstance(where, int) else f"{where}: "
        key = key.rsplit(".", 1)[0] if "." in key else None
    return f"{origin}: "


def _build(cls, body, name: str, places: dict, origin: str):
    """The section ``cls`` from its table ``body``: unknown and renamed keys named, values checked."""
    if not isinstance(body, Mapping):
        raise ConfigError(f"{_place(places, origin, name)}[{name}] must be a table of keys.", name)
    fields = dict(_typed_fields(cls))
    by_name = {f.name: tp for f, tp in fields.items()}
    values = {}
    for key, value in body.items():
        full = f"{name}.{key}"
        if full in RENAMED:
            raise ConfigError(
                f"{_place(places, origin, full)}{full!r} was renamed; did you mean {RENAMED[full]!r}?", full
            )
        if key not in by_name:
            raise ConfigError(
                f"{_place(places, origin, full)}unknown key {full!r}{_closest(key, by_name, name + '.')}", full
            )
        sub = by_name[key]
        values[key] = _build(sub, value, full, places, origin) if _is_section(sub) else value
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{_place(places, origin, err.key or name)}{err}", err.key) from None


def from_dict(raw: dict, origin: str = "config", lines: dict | None = None, *, whole: bool = True) -> RunConfig:
    """Validated :class:`RunConfig` from a nested dict (``data.dataset`` shorthand allowed).

    ``lines`` maps 'section.key' to where it was set: a line number of the file ``origin``, or a
    label such as ``"--set vm.seeds=2"``; error messages start with it. ``whole=False`` skips the
    checks across sections (:func:`check_run`), for a file that later overrides may still complete.
    """
    places = dict(lines or {})
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin}: the configuration must be a table of sections.")
    sections = {}
    for name, body in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{_place(places, origin, name)}unknown section [{name}]{_closest(name, SECTIONS)}", name)
        if name == "data" and isinstance(body, Mapping):
            body = dict(body)
            try:
                _expand_dataset(body, places)
            except ConfigError as err:
                raise ConfigError(f"{_place(places, origin, err.key)}{err}", err.key) from None
        sections[name] = _build(SECTIONS[name], body, name, places, origin)
    cfg = RunConfig(**sections)
    if whole:
        check_run(cfg, origin)
    return cfg


def _key_lines(text: str) -> dict:
    """'section.key' -> line number, for error messages (simple TOML layouts)."""
    lines, section = {}, ""
    for i, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if s.startswith("[") and s.endswith("]"):
            section = s.strip("[] ")
            lines.setdefault(section, i)
        elif "=" in s:
            lines.setdefault(f"{section}.{s.split('=', 1)[0].strip()}", i)
    return lines


def _tables(cls=RunConfig, prefix: str = "") -> set[str]:
    """Every section and sub-table: {'data', 'data.options', 'fm', ...}."""
    out = set()
    for f, tp in _typed_fields(cls):
        if _is_section(tp):
            out |= {prefix + f.name} | _tables(tp, f"{prefix}{f.name}.")
    return out


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """'section.key=value' (or 'section.table.key=value') -> (key parts, value); the value is read
    as TOML, a bare word as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set vm.seeds=2.")
    path, value = (p.strip() for p in text.split("=", 1))
    parts = tuple(p.strip() for p in path.split("."))
    if not (len(parts) == 2 or (len(parts) == 3 and ".".join(parts[:2]) in _tables())):
        raise ConfigError(
            f"--set {text!r}: the key must be section.key (sections: {', '.join(SECTIONS)}) "
            f"or table.key for the sub-tables {', '.join(sorted(_tables() - set(SECTIONS)))}."
        )
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as err:
        if value[:1] in ("[", "{", '"', "'"):  # meant as a TOML value, not a bare word
            raise ConfigError(
                f"--set {text!r}: {value} is not a TOML value ({err}); quote strings, e.g. "
                '--set \'vm.archs=["mlp", "implicit"]\'.'
            ) from None
        parsed = value
    return parts, parsed


def _assign(raw: dict, parts: tuple[str, ...], value, label: str, places: dict) -> None:
    """Set ``raw[parts...] = value`` (an override or flag); ``data.dataset`` replaces source and path."""
    table = raw
    for i, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{label}: [{'.'.join(parts[: i + 1])}] is not a table.")
    key = ".".join(parts)
    places[key] = label
    if key == "data.dataset":
        try:
            table["source"], table["path"] = parse_dataset(value)
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}", err.key) from None
        places["data.source"] = places["data.path"] = label
        table.pop("dataset", None)
    else:
        table[parts[-1]] = value


def read_text_utf8(path: Path, what: str = "file") -> str:
    """The text of a UTF-8 file (a leading BOM dropped); ConfigError naming line, column and byte if not."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"{path}, line {line}, column {column}: byte 0x{data[err.start]:02x} is not valid "
            f"UTF-8{hint}; the {what} must be UTF-8 encoded: re-save it as UTF-8."
        ) from None


def check_data(data: DataConfig) -> None:
    """ConfigError unless ``data.path`` is what ``data.source`` reads and can be read, and
    ``data.cache_dir`` is not a file: an interaction log is a readable file, a BARS release a
    directory holding train.csv and test.csv. A ``~`` in the path is the home directory."""
    if data.cache_dir != _AUTO and Path(data.cache_dir).expanduser().exists():
        if not Path(data.cache_dir).expanduser().is_dir():
            raise ConfigError(
                f"data.cache_dir={data.cache_dir!r} is a file; point it at a directory (or 'auto').", "data.cache_dir"
            )
    if data.source == "synthetic":
        return
    path = Path(data.path).expanduser()
    reads = (
        "an interaction log (a CSV or parquet file)"
        if data.source == "interactions"
        else f"a directory holding {' and '.join(RELEASE_FILES)}"
    )
    what = f"data.source={data.source!r} reads {reads}"
    if not path.exists():
        raise ConfigError(f"data.path: {path} does not exist; {what}.", "data.path")
    if data.source == "interactions" and path.is_dir():
        raise ConfigError(f"data.path: {path} is a directory; {what}.", "data.path")
    if data.source != "interactions":
        if not path.is_dir():
            raise ConfigError(f"data.path: {path} is a file; {what}.", "data.path")
        missing = [name for name in RELEASE_FILES if not (path / name).is_file()]
        if missing:
            raise ConfigError(f"data.path: {path} has no {' and no '.join(missing)}; {what}.", "data.path")
    for file in [path] if path.is_file() else [path / name for name in RELEASE_FILES]:
        if not os.access(file, os.R_OK):
            raise ConfigError(f"data.path: {file} is not readable (permission denied).", "data.path")


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    check_paths: bool = False,
) -> RunConfig:
    """Defaults, then the TOML file at ``path``, then each ``section.key=value`` override, then ``flags``.

    flags: {'section.key': (flag, value)} set last, e.g. ``{"data.dataset": ("--dataset", "synthetic")}``;
      an error in one names the flag.
    check_paths: also run :func:`check_data` (the dataset's path exists and is readable).
    The checks across sections (:func:`check_run`) run once, on the final configuration.
    """
    raw: dict = {}
    places: dict = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(
                f"config file {path} is a directory; pass a TOML file (`implicit-rec config > run.toml` writes one)."
            )
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist.")
        try:
            text = read_text_utf8(path, "configuration file")
        except PermissionError:
            raise ConfigError(f"config file {path} is not readable (permission denied).") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        places = _key_lines(text)
        from_dict(raw, str(path), places, whole=False)  # validate with file positions
        if isinstance(raw.get("data"), dict):
            _expand_dataset(raw["data"], places)
    for item in overrides:
        parts, value = parse_override(item)
        _assign(raw, parts, value, f"--set {item}", places)
    for key, (flag, value) in (flags or {}).items():
        _assign(raw, tuple(key.split(".")), value, f"{flag} {value}", places)
    origin = (f"{path} with --set" if path is not None else "--set") if overrides or flags else str(path or "config")
    cfg = from_dict(raw, origin, places)
    if check_paths:
        try:
            check_data(cfg.data)
        except ConfigError as err:
            raise ConfigError(f"{_place(places, origin, err.key)}{err}", err.key) from None
    return cfg


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and ``--set KEY=VALUE`` (repeatable, ``dest="overrides"``) to ``parser``.

    Every entry point (``implicit-rec run``/``config``, ``train-decentralized``, the experiment
    scripts) takes these two and loads with :func:`config_from_args`, so precedence is the same
    everywhere: defaults < --config < --set < the entry point's own flags.
    """
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (see `implicit-rec config`)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help='override one key, e.g. --set vm.seeds=2 --set \'vm.archs=["mlp","implicit"]\' '
        "--set data.options.user_col=uid (repeatable)",
    )


def config_from_args(args: argparse.Namespace, flag_overrides: Mapping[str, str] | None = None) -> RunConfig:
    """The configuration of parsed arguments: defaults < ``args.config`` < ``args.overrides`` < flags.

    flag_overrides: {attribute of ``args``: 'section.key'} for the entry point's own flags, e.g.
      ``{"dataset": "data.dataset", "seeds": "vm.seeds"}``; a flag left at None is not applied, and
      an error in one names the flag (``--dataset ...: ...``).
    The dataset's path is checked (:func:`check_data`): a bad entry fails here, before the entry
    point writes anything.
    """
    flags = {}
    for attr, key in (flag_overrides or {}).items():
        value = getattr(args, attr, None)
        if value is not None:
            flags[key] = ("--" + attr.replace("_", "-"), value)
    return load_config(args.config, tuple(args.overrides), flags=flags, check_paths=True)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _toml_table(name: str, cls, values: dict, comments: bool) -> list[str]:
    out = [f"# {cls.__doc__.strip().splitlines()[0]}"] if comments else []
    out.append(f"[{name}]")
    subtables = []
    for f, tp in _typed_fields(cls):
        if _is_section(tp):
            subtables.append((f"{name}.{f.name}", tp))
            continue
        line = f"{f.name} = {_toml_value(values[f.name])}"
        if comments:
            notes = [" | ".join(f.metadata["choices"])] if f.metadata.get("choices") else []
            if f.metadata.get("sources"):
                notes.append(", ".join(f.metadata["sources"]))
            extra = f" ({'; '.join(notes)})" if notes else ""
            line = f"{line:<44} # {f.metadata['doc']}{extra}"
        out.append(line)
    out.append("")
    for sub, tp in subtables:
        out += _toml_table(sub, tp, values[sub.rsplit(".", 1)[1]], comments)
    return out


def to_toml(cfg: RunConfig, comments: bool = True) -> str:
    """The configuration as TOML (round-trips through :func:`load_config`)."""
    plain = cfg.to_dict()
    out = []
    for s in dataclasses.fields(cfg):
        out += _toml_table(s.name, SECTIONS[s.name], plain[s.name], comments)
    return "\n".join(out)


# -- the reference page (docs/configuration.md) --------------------------------------------------

REGENERATE = "implicit-rec config --markdown > docs/configuration.md"


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or 'auto'"
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"table of {_type_name(args[1])}"
    return tp.__name__


def _range_text(meta: Mapping) -> str:
    parts = []
    if meta.get("choices"):
        parts.append(", ".join(f"`{c}`" for c in meta["choices"]))
    if meta.get("min") is not None:
        parts.append(f">= {meta['min']}")
    if meta.get("max") is not None:
        parts.append(f"<= {meta['max']}")
    if meta.get("below") is not None:
        parts.append(f"< {meta['below']}")
    if meta.get("positive"):
        parts.append("> 0")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _loader_defaults(name: str) -> str:
    """'interactions: `"user_id"`; ...': the loaders' own defaults of one option."""
    import inspect

    from ..data import LOADERS  # the data package does not import this module at import time

    parts = []
    for source in LoaderOptions.__dataclass_fields__[name].metadata["sources"]:
        default = inspect.signature(LOADERS[source]).parameters[name].default
        shown = "unset" if default is None else _toml_value(_plain(default))
        parts.append(f"{source}: `{shown}`")
    return "; ".join(parts)


def markdown_reference() -> str:
    """docs/configuration.md: precedence, the glossary, then every section's keys (default, type,
    range or choices, meaning), generated from the dataclasses above."""
    from ..tables import markdown_table

    out = [
        "# Configuration reference",
        "",
        f"Generated from `implicit_rec/config.py`; regenerate with `{REGENERATE}`.",
        "",
        "Every job (`implicit-rec run`, `implicit-rec train-decentralized`, the experiment scripts) reads one",
        "configuration: a TOML file of the sections below. `implicit-rec config` prints it as commented TOML;",
        "save it, edit it and pass it back with `--config`.",
        "",
        "## Precedence",
        "",
        "defaults < `--config FILE` < `--set section.key=value` (in order; repeatable) < the command's own",
        "flags (`--dataset` = `data.dataset`, `--preset` = `data.preset`, `--seeds` = `vm.seeds`). `--set` reads",
        'the value as TOML (`--set \'vm.archs=["mlp", "implicit"]\'`); a bare word is a string',
        "(`--set fm.size=medium`); a sub-table key has three parts (`--set data.options.user_col=uid`).",
        "'auto' stands for a value derived at run time (TOML has no null). An unknown key, a wrong type or",
        "a value out of range is an error naming the key and where it was set; a renamed key names its new",
        "name. The checks across sections (label leakage between `fm.days`, `vm.days`, `fm.log_from_day`,",
        "`fm.out_of_fold`) run on the final configuration, and the dataset's path is checked before",
        "anything is written.",
        "",
        "## The dataset",
        "",
        '`data.dataset = "SOURCE:PATH"` (or `--dataset SOURCE:PATH`) is shorthand for `data.source` and',
        '`data.path`: `"synthetic"`, `"interactions:log.csv"`, `"taobaoad:DIR"`. The loader options go in',
        "`[data.options]`; each applies to the sources listed, and setting one for another source is an error:",
        "",
        "```toml",
        "[data]",
        'source = "interactions"',
        'path = "ratings.csv"',
        "",
        "[data.options]",
        'user_col = "uid"',
        'item_col = "movie"',
        'time_col = "ts"',
        'rating_col = "stars"',
        "rating_threshold = 4.0   # label = stars >= 4",
        "```",
        "",
        "## Glossary of setting names",
        "",
        "One name per idea, in every section, module and row of results:",
        "",
        markdown_table(["name", "meaning"], [(f"`{k}`", _cell(v)) for k, v in GLOSSARY.items()], align="ll"),
        "",
    ]
    if RENAMED:
        out += [
            "## Renamed keys",
            "",
            "Reading an old name is an error that names the new one.",
            "",
            markdown_table(["old", "new"], [(f"`{k}`", f"`{v}`") for k, v in RENAMED.items()], align="ll"),
            "",
        ]

    def section(name: str, cls) -> None:
        out.extend([f"## [{name}]", "", _cell(" ".join(cls.__doc__.split())), ""])
        rows, subtables = [], []
        for f, tp in _typed_fields(cls):
            if _is_section(tp):
                subtables.append((f"{name}.{f.name}", tp))
                continue
            if f.metadata.get("sources"):  # a loader option: its default per source it applies to
                default = f"auto ({_loader_defaults(f.name)})"
            else:
                default = f"`{_toml_value(_plain(getattr(cls(), f.name)))}`"
            doc = f.metadata["doc"]
            rows.append(
                (f"`{f.name}`", _cell(default), _cell(_type_name(tp)), _cell(_range_text(f.metadata)), _cell(doc))
            )
        out.extend([markdown_table(["key", "default", "type", "range", "meaning"], rows, align="lllll"), ""])
        for sub, tp in subtables:
            section(sub, tp)

    for s in dataclasses.fields(RunConfig):
        section(s.name, SECTIONS[s.name])
    return "\n".join(out)
