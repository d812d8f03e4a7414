"""The reference page docs/configuration.md, generated from the sections (``implicit-rec config --markdown``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping

from .fields import _is_section, _plain, _typed_fields
from .names import GLOSSARY, RENAMED, REPLACED
from .sections import SECTIONS, LoaderOptions, RunConfig
from .toml import _toml_value

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
    range or choices, meaning), generated from the section dataclasses."""
    from ..tables import markdown_table

    out = [
        "# Configuration reference",
        "",
        "Generated from `implicit_rec/config/sections.py` (the keys) and `names.py` (glossary, renamed keys);",
        f"regenerate with `{REGENERATE}`.",
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
    if REPLACED:
        out += [
            "## Replaced keys",
            "",
            "Keys removed for others of another meaning; reading one is an error that names them.",
            "",
            markdown_table(["old", "use instead"], [(f"`{k}`", _cell(v)) for k, v in REPLACED.items()], align="ll"),
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
