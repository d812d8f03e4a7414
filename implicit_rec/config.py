"""The configuration of every job (``implicit-rec run``, ``train-decentralized``, the experiment
scripts): a TOML file with five sections, every key validated and defined once, here.

Sections and keys (defaults in :data:`DEFAULT`; ``implicit-rec config`` prints them as commented
TOML)::

    [data]   where the events come from
    [fm]     the foundation model, its training window and its logged embeddings
    [vm]     the vertical models: architectures x transfer variants x seeds, their training
    [sweep]  the test-time iteration sweep, the explicit baselines and the Lipschitz diagnostic
    [dsgd]   decentralized training of one VM across agents (``implicit-rec train-decentralized``)

A file may set any subset of keys; ``--set section.key=value`` overrides a key after the file
(the value is read as a TOML value: ``--set vm.seeds=2``, ``--set 'vm.archs=["mlp","implicit"]'``;
a bare word is a string: ``--set fm.size=medium``). An unknown section or key, a value of the
wrong type or outside its allowed range is a :class:`ConfigError` that names the key (and the file
and line when it comes from a file) and suggests the closest valid key. Float keys must be finite
(``nan`` and ``inf`` are TOML numbers, never a useful setting).

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

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from dsgd.topology import TOPOLOGIES
from solvers._options import METHODS as SOLVER_METHODS

_AUTO = "auto"  # spelling of "None / derive it" in TOML, which has no null


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and what to do."""


def _field(
    default,
    doc: str,
    *,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    positive: bool = False,
):
    """A config field; ``min`` is inclusive, ``positive`` means ``> 0`` (for rates and scales)."""
    meta = {"doc": doc, "choices": choices, "min": min, "max": max, "positive": positive}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(
            default_factory=lambda d=default: tuple(tuple(v) if isinstance(v, list) else v for v in d), metadata=meta
        )
    return dataclasses.field(default=default, metadata=meta)


ARCHS = ("mlp", "din", "implicit")  # VM architectures
TRANSFERS = ("none", "kd", "loopfm", "loopfm+kd")  # how a VM uses the FM
METHODS = SOLVER_METHODS  # fixed-point solvers
OPTIMIZERS = ("sgd", "momentum", "adam")  # local update rule of every DSGD agent
SHARDINGS = ("iid", "by-user")  # how DSGD agents split the training rows

# Keys that were renamed: old -> new. Reading an old key is an error that names the new one.
RENAMED = {
    "vm.implicit_method": "vm.method",
    "vm.implicit_train_iters": "vm.train_max_iter",
    "vm.implicit_eval_iters": "vm.eval_max_iter",
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the events come from."""

    dataset: str = _field(
        "synthetic", "synthetic | taobaoad:DIR | kuaivideo:DIR | amazonelectronics:DIR | interactions:FILE"
    )
    preset: str = _field(
        "default", "size of the synthetic data (ignored for files)", choices=("tiny", "default", "large")
    )
    seed: int = _field(0, "seed of the synthetic data", min=0)
    cache_dir: str = _field(_AUTO, "where prepared tables are cached; 'auto' = RUN/cache")


@dataclasses.dataclass(frozen=True)
class FMConfig:
    """The foundation model: trained on an early window, then it logs an embedding per event."""

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


@dataclasses.dataclass(frozen=True)
class VMConfig:
    """The vertical models: every arch x transfer x seed is trained and tested."""

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


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Test-time iteration sweep of every implicit VM, explicit baselines, Lipschitz diagnostic."""

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


@dataclasses.dataclass(frozen=True)
class DSGDConfig:
    """Decentralized training of one VM (`implicit-rec train-decentralized`); data and model from [data], [vm]."""

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


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    fm: FMConfig = dataclasses.field(default_factory=FMConfig)
    vm: VMConfig = dataclasses.field(default_factory=VMConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    dsgd: DSGDConfig = dataclasses.field(default_factory=DSGDConfig)

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists, None as 'auto') — what ``config.toml`` holds."""
        return {
            s.name: {
                f.name: _plain(getattr(getattr(self, s.name), f.name))
                for f in dataclasses.fields(getattr(self, s.name))
            }
            for s in dataclasses.fields(self)
        }

    def replace(self, **sections) -> RunConfig:
        return dataclasses.replace(self, **sections)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}
DEFAULT = RunConfig()


def _plain(v):
    if v is None:
        return _AUTO
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _closest(name: str, options, prefix: str = "") -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    if match:
        return f"; did you mean {prefix + match[0]!r}?"
    return f"; valid: {', '.join(prefix + o for o in options)}."


def _coerce(value: Any, tp, meta: dict, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value == _AUTO or value is None:
            return None
        return _coerce(value, args[0], meta, key)
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
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(meta['choices'])}.")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key} must be >= {meta['min']}, got {value!r}.")
    if meta.get("positive") and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}.")
    return value


def _check_section(name: str, cfg) -> None:
    """Cross-field checks of one section."""
    if name in ("fm", "vm") and (len(cfg.days) != 2 or cfg.days[0] >= cfg.days[1]):
        raise ConfigError(f"{name}.days must be [start, end) with start < end, got {list(cfg.days)}.")
    for field in ("archs", "transfers", "methods", "iterations"):
        values = getattr(cfg, field, None)
        if values is None:
            continue
        if not values:
            raise ConfigError(f"{name}.{field} must not be empty.")
        repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
        if repeated and field != "iterations":
            raise ConfigError(f"{name}.{field} lists {', '.join(map(repr, repeated))} more than once.")
    if name == "sweep" and list(cfg.iterations) != sorted(set(cfg.iterations)):
        raise ConfigError(f"sweep.iterations must be increasing without repeats, got {list(cfg.iterations)}.")
    if name == "sweep":
        empty = [i for i, widths in enumerate(cfg.baselines) if not widths]
        if empty:
            raise ConfigError(
                f"sweep.baselines[{empty[0]}] is empty; give each baseline its hidden widths, "
                "e.g. [32, 32] (or remove it)."
            )
    if name == "vm" and not cfg.hidden:
        raise ConfigError("vm.hidden must list at least one hidden width, e.g. [64, 32].")
    if name == "dsgd" and cfg.eval_agent >= cfg.agents:
        raise ConfigError(f"dsgd.eval_agent must be < dsgd.agents={cfg.agents}, got {cfg.eval_agent}.")
    if name == "fm" and cfg.out_of_fold == 1:
        raise ConfigError("fm.out_of_fold=1 is not a fold count: use 0 (off) or K >= 2 folds.")


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


def from_dict(raw: dict, origin: str = "config", lines: dict | None = None, *, whole: bool = True) -> RunConfig:
    """Validated :class:`RunConfig` from a nested dict; ``lines`` maps 'section.key' to a line number.

    ``whole=False`` skips the checks across sections (:func:`check_run`), for a file that later
    overrides may still complete.
    """
    where = lambda key: f"{origin}, line {lines[key]}: " if lines and key in lines else f"{origin}: "  # noqa: E731
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the configuration must be a table of sections.")
    sections = {}
    for name, body in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{where(name)}unknown section [{name}]{_closest(name, SECTIONS)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{where(name)}[{name}] must be a table of keys.")
        cls = SECTIONS[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in body.items():
            full = f"{name}.{key}"
            if full in RENAMED:
                raise ConfigError(f"{where(full)}{full!r} was renamed; did you mean {RENAMED[full]!r}?")
            if key not in fields:
                raise ConfigError(f"{where(full)}unknown key {full!r}{_closest(key, fields, name + '.')}")
            try:
                values[key] = _coerce(value, hints[key], fields[key].metadata, full)
            except ConfigError as err:
                raise ConfigError(f"{where(full)}{err}") from None
        sections[name] = cls(**values)
        try:
            _check_section(name, sections[name])
        except ConfigError as err:
            raise ConfigError(f"{where(name)}{err}") from None
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


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, value); value read as TOML, a bare word as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set vm.seeds=2.")
    path, value = (p.strip() for p in text.split("=", 1))
    if path.count(".") != 1:
        raise ConfigError(f"--set {text!r}: the key must be section.key (sections: {', '.join(SECTIONS)}).")
    section, key = (p.strip() for p in path.split("."))
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as err:
        if value[:1] in ("[", "{", '"', "'"):  # meant as a TOML value, not a bare word
            raise ConfigError(
                f"--set {text!r}: {value} is not a TOML value ({err}); quote strings, e.g. "
                '--set \'vm.archs=["mlp", "implicit"]\'.'
            ) from None
        parsed = value
    return section, key, parsed


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


def load_config(path: str | Path | None = None, overrides: tuple[str, ...] = ()) -> RunConfig:
    """Defaults, then the TOML file at ``path``, then each ``section.key=value`` override.

    The checks across sections (:func:`check_run`) run once, on the final configuration.
    """
    raw: dict = {}
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
        from_dict(raw, str(path), _key_lines(text), whole=False)  # validate with file positions
    for item in overrides:
        section, key, value = parse_override(item)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {item!r}: [{section}] is not a table.")
        raw[section][key] = value
    origin = (f"{path} with --set" if path is not None else "--set") if overrides else str(path or "config")
    return from_dict(raw, origin)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def to_toml(cfg: RunConfig, comments: bool = True) -> str:
    """The configuration as TOML (round-trips through :func:`load_config`)."""
    out = []
    plain = cfg.to_dict()
    for s in dataclasses.fields(cfg):
        cls = SECTIONS[s.name]
        if comments:
            out.append(f"# {cls.__doc__.strip().splitlines()[0]}")
        out.append(f"[{s.name}]")
        for f in dataclasses.fields(cls):
            line = f"{f.name} = {_toml_value(plain[s.name][f.name])}"
            if comments:
                extra = f" ({' | '.join(f.metadata['choices'])})" if f.metadata.get("choices") else ""
                line = f"{line:<44} # {f.metadata['doc']}{extra}"
            out.append(line)
        out.append("")
    return "\n".join(out)
