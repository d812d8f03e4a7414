"""A configuration as TOML text, with each key's doc as a comment (what ``implicit-rec config`` prints)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .fields import _is_section, _typed_fields
from .sections import SECTIONS, RunConfig


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
