"""The configuration of ``implicit-rec run``: a TOML file with four sections, every key validated.

Sections and keys (defaults in :data:`DEFAULT`; ``implicit-rec config`` prints them as commented
TOML)::

    [data]   where the events come from
    [fm]     the foundation model, its training window and its logged embeddings
    [vm]     the vertical models: architectures x transfer variants x seeds, their training
    [sweep]  the test-time iteration sweep, the explicit baselines and the Lipschitz diagnostic

A file may set any subset of keys; ``--set section.key=value`` overrides a key after the file
(the value is read as a TOML value: ``--set vm.seeds=2``, ``--set 'vm.archs=["mlp","implicit"]'``;
a bare word is a string: ``--set fm.size=medium``). An unknown section or key, a value of the
wrong type or outside its allowed range is a :class:`ConfigError` that names the key (and the file
and line when it comes from a file) and suggests the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from pathlib import Path
from typing import Any, Optional

_AUTO = "auto"  # spelling of "None / derive it" in TOML, which has no null


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and what to do."""


def _field(default, doc: str, *, choices: Optional[tuple] = None, min: Optional[float] = None,
           max: Optional[float] = None):
    meta = {"doc": doc, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda d=default: tuple(
            tuple(v) if isinstance(v, list) else v for v in d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


ARCHS = ("mlp", "din", "implicit")
TRANSFERS = ("none", "kd", "loopfm", "loopfm+kd")
METHODS = ("picard", "anderson")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the events come from."""

    dataset: str = _field("synthetic", "synthetic | taobaoad:DIR | kuaivideo:DIR | "
                          "amazonelectronics:DIR | interactions:FILE")
    preset: str = _field("default", "size of the synthetic data (ignored for files)",
                         choices=("tiny", "default", "large"))
    seed: int = _field(0, "seed of the synthetic data", min=0)
    cache_dir: str = _field(_AUTO, "where prepared tables are cached; 'auto' = RUN/cache")


@dataclasses.dataclass(frozen=True)
class FMConfig:
    """The foundation model: trained on an early window, then it logs an embedding per event."""

    size: str = _field("small", "FM size", choices=("small", "medium", "large"))
    days: tuple[int, ...] = _field((0, 4), "[start, end) days the FM trains on")
    log_from_day: Optional[int] = _field(None, "first day the FM logs; 'auto' = end of fm.days", min=0)
    max_len: Optional[int] = _field(None, "behaviour-sequence length of the FM; 'auto' = min(100, data's)",
                                    min=1)
    embedding: str = _field("interaction", "logged representation", choices=("interaction", "item"))
    store_dtype: str = _field("float16", "dtype of the logged embeddings", choices=("float16", "float32"))
    out_of_fold: int = _field(0, "K > 1: also log FM-window events out of fold (K FMs)", min=0)
    epochs: int = _field(3, "training epochs (early stopping on validation AUC)", min=1)
    batch_size: int = _field(256, "training batch size", min=1)
    learning_rate: float = _field(2e-3, "Adam learning rate", min=0)
    patience: int = _field(2, "epochs without validation improvement before stopping", min=1)


@dataclasses.dataclass(frozen=True)
class VMConfig:
    """The vertical models: every arch x transfer x seed is trained and tested."""

    archs: tuple[str, ...] = _field(("din", "implicit"), "architectures", choices=ARCHS)
    transfers: tuple[str, ...] = _field(TRANSFERS, "transfer variants", choices=TRANSFERS)
    seeds: int = _field(1, "seeds per variant (mean and std are reported)", min=1)
    days: tuple[int, ...] = _field((4, 7), "[start, end) days the VMs train on")
    max_len: int = _field(25, "behaviour-sequence length of the VMs", min=1)
    history_len: int = _field(20, "L: logged FM embeddings per LoopFM feature", min=1)
    hidden: tuple[int, ...] = _field((64, 32), "hidden widths of the explicit VMs' MLP", min=1)
    d_state: int = _field(32, "state size of the implicit VM", min=1)
    epochs: int = _field(5, "training epochs (early stopping on validation AUC)", min=1)
    batch_size: int = _field(256, "training batch size", min=1)
    learning_rate: float = _field(3e-3, "Adam learning rate", min=0)
    patience: int = _field(2, "epochs without validation improvement before stopping", min=1)
    kd_weight: float = _field(1.0, "weight of the distillation loss", min=0)
    kd_on_main: bool = _field(False, "distill into the main head instead of an auxiliary head")
    implicit_method: str = _field("anderson", "solver of the implicit VM", choices=METHODS)
    implicit_train_iters: int = _field(10, "solver iterations while training", min=1)
    implicit_eval_iters: int = _field(30, "solver iterations when testing", min=1)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Test-time iteration sweep of every implicit VM, explicit baselines, Lipschitz diagnostic."""

    iterations: tuple[int, ...] = _field((0, 1, 2, 4, 8, 16, 32, 64), "iteration counts k", min=0)
    methods: tuple[str, ...] = _field(METHODS, "solvers swept", choices=METHODS)
    baseline_arch: str = _field("din", "front end of the explicit baselines (same as the implicit VM's)",
                                choices=("mlp", "din"))
    baseline_transfer: str = _field("loopfm+kd", "transfer variant of the explicit baselines",
                                    choices=TRANSFERS)
    baselines: tuple[tuple[int, ...], ...] = _field(((32,), (32, 32), (32, 32, 32, 32), (128, 128)),
                                                    "hidden widths of each explicit baseline", min=1)
    lipschitz_examples: int = _field(256, "test examples for the Lipschitz estimate", min=1)
    lipschitz_perturbations: int = _field(8, "random perturbations per example", min=1)
    lipschitz_scale: float = _field(1e-2, "perturbation norm relative to the input's norm", min=0)
    timing_repeats: int = _field(3, "timed passes per k (median reported); timed: the implicit VMs "
                                 "with sweep.baseline_transfer", min=1)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    fm: FMConfig = dataclasses.field(default_factory=FMConfig)
    vm: VMConfig = dataclasses.field(default_factory=VMConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists, None as 'auto') — what ``config.toml`` holds."""
        return {s.name: {f.name: _plain(getattr(getattr(self, s.name), f.name))
                         for f in dataclasses.fields(getattr(self, s.name))}
                for s in dataclasses.fields(self)}

    def replace(self, **sections) -> "RunConfig":
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
    if origin is typing.Union:  # Optional[X]
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
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}.")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(meta['choices'])}.")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key} must be >= {meta['min']}, got {value!r}.")
    return value


def _check_section(name: str, cfg) -> None:
    """Cross-field checks of one section."""
    if name in ("fm", "vm") and (len(cfg.days) != 2 or cfg.days[0] >= cfg.days[1]):
        raise ConfigError(f"{name}.days must be [start, end) with start < end, got {list(cfg.days)}.")
    if name == "sweep" and list(cfg.iterations) != sorted(set(cfg.iterations)):
        raise ConfigError(f"sweep.iterations must be increasing without repeats, got {list(cfg.iterations)}.")
    for field in ("archs", "transfers", "methods"):
        if hasattr(cfg, field) and not getattr(cfg, field):
            raise ConfigError(f"{name}.{field} must not be empty.")


def from_dict(raw: dict, origin: str = "config", lines: Optional[dict] = None) -> RunConfig:
    """Validated :class:`RunConfig` from a nested dict; ``lines`` maps 'section.key' to a line number."""
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
            raise ConfigError(f"{origin}: {err}") from None
    return RunConfig(**sections)


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
    section, key = path.split(".")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return section, key, parsed


def load_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] = ()) -> RunConfig:
    """Defaults, then the TOML file at ``path``, then each ``section.key=value`` override."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist.")
        text = path.read_text()
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        from_dict(raw, str(path), _key_lines(text))  # validate with file positions
    for item in overrides:
        section, key, value = parse_override(item)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {item!r}: [{section}] is not a table.")
        raw[section][key] = value
    return from_dict(raw, "--set" if overrides else str(path or "config"))


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
