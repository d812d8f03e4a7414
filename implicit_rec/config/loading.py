"""Reading a configuration: defaults < ``--config FILE`` < ``--set section.key=value`` < an entry point's flags.

``--set`` reads the value as TOML (``--set vm.seeds=2``, ``--set 'vm.archs=["mlp","implicit"]'``; a
bare word is a string: ``--set fm.size=medium``); a key of a sub-table has three parts
(``--set data.options.user_col=uid``). :func:`add_config_args` and :func:`config_from_args` give every
entry point these arguments and this order.

``data.dataset = "SOURCE:PATH"`` (and ``--dataset SOURCE:PATH``) is shorthand for ``data.source`` and
``data.path``: ``"interactions:log.csv"``, ``"taobaoad:DIR"``, ``"synthetic"``.

An unknown section or key is a :class:`~.fields.ConfigError` that names it (and the file and line, or
the ``--set`` / flag, it came from) and suggests the closest valid key; a renamed key names its new
name (:data:`~.names.RENAMED`). The dataset's path is checked (exists, right kind, readable) by
:func:`check_data`, before an entry point writes anything.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .fields import _AUTO, ConfigError, _closest, _is_section, _typed_fields
from .leakage import check_run
from .names import RELEASE_FILES, RENAMED, REPLACED, SOURCES
from .sections import SECTIONS, DataConfig, RunConfig


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
        if full in REPLACED:
            raise ConfigError(f"{_place(places, origin, full)}{full!r} was replaced by {REPLACED[full]}.", full)
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
