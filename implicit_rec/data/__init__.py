"""Datasets as event tables: the synthetic default and loaders for public CTR benchmarks.

``load_dataset(spec)`` with spec one of ``"synthetic"``, ``"taobaoad:DIR"``, ``"kuaivideo:DIR"``,
``"amazonelectronics:DIR"`` (each also accepted with an ``_x1`` suffix) or
``"interactions:FILE"``. With ``cache_dir`` the encoded table is written once to
``cache_dir/<key>`` (``.npy`` arrays, no pickle) and memory-mapped on later calls; the key hashes
the loader, the resolved path, the size and mtime of every input file and the options (defaults
filled in), so a changed file or option rebuilds. Array-valued ``info`` entries (KuaiVideo's
``item_visual_emb``) are stored beside the columns (see ``EventTable.save``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path

from .bars import VISUAL_FILE, load_amazonelectronics, load_kuaivideo, load_taobaoad
from .csv_reader import file_signature
from .errors import DataError
from .events import EventTable, HistoryIndex, Schema, batches
from .interactions import load_interactions
from .vocabulary import Vocab

__all__ = [
    "DATASETS",
    "DataError",
    "EventTable",
    "HistoryIndex",
    "Schema",
    "Vocab",
    "batches",
    "load_amazonelectronics",
    "load_dataset",
    "load_interactions",
    "load_kuaivideo",
    "load_taobaoad",
]

LOADERS: dict[str, Callable[..., EventTable]] = {
    "taobaoad": load_taobaoad,
    "kuaivideo": load_kuaivideo,
    "amazonelectronics": load_amazonelectronics,
    "interactions": load_interactions,
}
DATASETS = ("synthetic",) + tuple(LOADERS)
CACHE_VERSION = 1  # bump when an encoding changes, so old caches are not reused
NOT_IN_KEY = frozenset({"chunk_rows"})  # options that do not change the encoded table


def load_dataset(
    spec: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    preset: str = "default",
    seed: int = 0,
    progress_bar=None,
    **options,
) -> EventTable:
    """Load a dataset by spec (see the module docstring); ``options`` go to its loader.

    ``progress_bar``: a tqdm-like factory for the synthetic generator's progress (file loaders
    report nothing yet).

    ``preset`` and ``seed`` select the synthetic data and are ignored by the file loaders.
    Raises ValueError for an unknown dataset name and TypeError for an unknown option.
    """
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    name = name[:-3] if name.endswith("_x1") else name
    if name == "synthetic":
        if arg:
            raise ValueError(f"the synthetic dataset takes no path, got {spec!r}.")
        if options:
            raise TypeError(
                f"unknown option(s) {sorted(options)} for the synthetic dataset; it takes only preset and seed."
            )
        return _synthetic(cache_dir, preset, seed, progress_bar)
    if name not in LOADERS:
        raise ValueError(
            f"unknown dataset {name!r} in {spec!r}; valid: {', '.join(DATASETS)} (as 'name:PATH' except 'synthetic')."
        )
    if not arg:
        target = "FILE" if name == "interactions" else "DIR"
        raise ValueError(f"dataset {name!r} needs a path: '{name}:{target}'.")
    arg = os.path.expanduser(arg)  # the shell does not expand '~' after 'name:'
    if name != "interactions" and Path(arg).exists() and not Path(arg).is_dir():
        raise ValueError(f"{arg} is a file; dataset {name!r} reads a directory holding train.csv and test.csv.")
    loader = LOADERS[name]
    bound = _bind(loader, name, arg, options)
    if cache_dir is None:
        return loader(arg, **options)
    key = cache_key(name, arg, {k: v for k, v in bound.items() if k not in NOT_IN_KEY})
    path = Path(cache_dir) / key
    table = _try_load(path)
    if table is None:
        table = EventTable.load(loader(arg, **options).save(path))
    return table


def _bind(loader, name: str, arg: str, options: dict) -> dict:
    """All keyword options of ``loader`` with defaults filled in; TypeError names unknown ones."""
    params = inspect.signature(loader).parameters
    valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for dataset {name!r}; valid: {valid}.")
    bound = inspect.signature(loader).bind(arg, **options)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k in valid}


def cache_key(name: str, arg: str, options: dict) -> str:
    """``<name>-<path stem>-<hash of loader, path, input file sizes + mtimes, options>``."""
    path = Path(arg).expanduser().resolve()
    files = [path] if name == "interactions" else [path / "train.csv", path / "test.csv"]
    if name == "kuaivideo":
        files.append(path / VISUAL_FILE)
    payload = {
        "version": CACHE_VERSION,
        "loader": name,
        "path": str(path),
        "files": {f.name: file_signature(f) for f in files},
        "options": options,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()
    return f"{name}-{path.stem or 'data'}-{digest[:16]}"


def _synthetic(cache_dir, preset: str, seed: int, progress_bar=None) -> EventTable:
    from .synthetic import synthetic_events  # imported only when asked for

    return synthetic_events(preset=preset, seed=seed, cache_dir=cache_dir, progress_bar=progress_bar)


def _try_load(path: Path) -> EventTable | None:
    """The cached table at ``path``, or None if there is none (or it is incomplete / stale)."""
    if not (path / "meta.json").is_file():
        return None
    try:
        return EventTable.load(path)
    except (OSError, ValueError, KeyError):
        return None  # a damaged or old-format cache is rebuilt
