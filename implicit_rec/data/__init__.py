"""Datasets as event tables: the synthetic default and loaders for public CTR benchmarks.

``load_data(data)`` loads the ``[data]`` section of the configuration (:class:`~implicit_rec.config.DataConfig`:
``source`` one of ``synthetic``, ``taobaoad``, ``kuaivideo``, ``amazonelectronics``, ``interactions``;
``path`` the file or directory it reads; ``options`` the loader's keyword options).
``load_dataset("SOURCE:PATH", **options)`` is the same from the one-string form (``"synthetic"``,
``"taobaoad:DIR"``, ``"interactions:FILE"``; the BARS names also with an ``_x1`` suffix). With a cache
directory the encoded table is written once to ``cache_dir/<key>`` (``.npy`` arrays, no pickle) and
memory-mapped on later calls; the key hashes the loader, the resolved path, the size and mtime of
every input file and the options (defaults filled in), so a changed file or option rebuilds.
Array-valued ``info`` entries (KuaiVideo's ``item_visual_emb``) are stored beside the columns (see
``EventTable.save``).
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
    "LOADERS",
    "DataError",
    "EventTable",
    "HistoryIndex",
    "Schema",
    "Vocab",
    "batches",
    "load_amazonelectronics",
    "load_data",
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
CACHE_VERSION = 1  # bump when an encoding changes, so old caches are not reused
NOT_IN_KEY = frozenset({"chunk_rows"})  # options that do not change the encoded table


def load_data(
    data, *, default_cache_dir: str | os.PathLike | None = None, progress_bar=None, workers: int | None = 1
) -> EventTable:
    """The event table of the ``[data]`` section ``data`` (a :class:`~implicit_rec.config.DataConfig`).

    Args:
      data: source, path, synthetic preset and seed, cache directory and loader options (only the
        options that are set are passed; the others keep the loader's default).
      default_cache_dir: where to cache when ``data.cache_dir`` is 'auto' (``implicit-rec run``
        passes RUN/cache); None: no cache. An explicit ``data.cache_dir`` wins.
      progress_bar: a tqdm-like factory for the synthetic generator's progress (the file loaders
        report nothing yet).
      workers: processes of the synthetic generator (``synthetic_events``'s ``workers``: 1 this
        process, None every CPU; more than one needs an ``if __name__ == "__main__":`` script).
    Raises:
      ConfigError (a ValueError) if the path is not what the source reads (``config.check_data``);
      DataError (a ValueError) naming file, line and column for bad content; ValueError for
      option values the loader refuses.
    """
    from ..config import _AUTO, check_data  # imported here: the data package does not need JAX

    check_data(data)
    cache_dir = default_cache_dir if data.cache_dir == _AUTO else data.cache_dir
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
    if data.source == "synthetic":
        return _synthetic(cache_dir, data.preset, data.seed, progress_bar, workers)
    loader, path, options = LOADERS[data.source], os.path.expanduser(data.path), data.options.given()
    if cache_dir is None:
        return loader(path, **options)
    bound = _bind(loader, path, options)
    entry = Path(cache_dir) / cache_key(data.source, path, {k: v for k, v in bound.items() if k not in NOT_IN_KEY})
    table = _try_load(entry)
    if table is None:
        table = EventTable.load(loader(path, **options).save(entry))
    return table


def load_dataset(
    spec: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    preset: str = "default",
    seed: int = 0,
    progress_bar=None,
    **options,
) -> EventTable:
    """:func:`load_data` from the one-string form ``"SOURCE:PATH"``; ``options`` go to the loader.

    ``preset`` and ``seed`` select the synthetic data and are ignored by the file loaders.
    Raises ValueError (ConfigError) for an unknown source or a bad path, and TypeError for an
    option the source's loader does not take.
    """
    from ..config import DataConfig, LoaderOptions, parse_dataset

    source, path = parse_dataset(spec, "dataset")
    valid = [f for f, meta in LoaderOptions.__dataclass_fields__.items() if source in meta.metadata["sources"]]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for dataset {source!r}; valid: {valid}.")
    synthetic = {"preset": preset, "seed": seed} if source == "synthetic" else {}
    data = DataConfig(source=source, path=path, options=LoaderOptions(**options), **synthetic)
    return load_data(data, default_cache_dir=cache_dir, progress_bar=progress_bar)


def _bind(loader, arg: str, options: dict) -> dict:
    """All keyword options of ``loader`` with defaults filled in (the cache key)."""
    params = inspect.signature(loader).parameters
    valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
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


def _synthetic(cache_dir, preset: str, seed: int, progress_bar=None, workers: int | None = 1) -> EventTable:
    from .synthetic import synthetic_events  # imported only when asked for

    return synthetic_events(preset=preset, seed=seed, cache_dir=cache_dir, progress_bar=progress_bar, workers=workers)


def _try_load(path: Path) -> EventTable | None:
    """The cached table at ``path``, or None if there is none (or it is incomplete / stale)."""
    if not (path / "meta.json").is_file():
        return None
    try:
        return EventTable.load(path)
    except (OSError, ValueError, KeyError):
        return None  # a damaged or old-format cache is rebuilt
