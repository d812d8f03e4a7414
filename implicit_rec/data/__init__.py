"""Datasets as event tables: the synthetic default and loaders for public CTR benchmarks.

``load_dataset(spec)`` with spec one of:
  "synthetic"                 the embedded default (``preset`` tiny / default / large, ``seed``)
  "taobaoad:DIR", "kuaivideo:DIR", "amazonelectronics:DIR"   BARS x1 CSV releases
  "interactions:FILE"         a generic interaction log (CSV or parquet)
With ``cache_dir`` the encoded table is written once (memory-mapped .npy files) and reused; the
cache key covers the spec, the source files' sizes and modification times, and the options.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .events import EventTable, HistoryIndex, Schema, batches
from .sources import FORMATS, DataError, load_bars, load_interactions

__all__ = ["EventTable", "HistoryIndex", "Schema", "batches", "load_dataset", "load_bars",
           "load_interactions", "DataError", "DATASETS"]

DATASETS = ("synthetic", *FORMATS, "interactions")


def _cache_key(spec: str, files: list[Path], options: dict) -> str:
    stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
    digest = hashlib.sha256(json.dumps([spec, stamp, sorted(options.items())], default=str).encode())
    return digest.hexdigest()[:16]


def load_dataset(spec: str, *, cache_dir: str | os.PathLike | None = None, preset: str = "default",
                 seed: int = 0, **options) -> EventTable:
    """Load a dataset by spec (see module docstring); ``options`` go to the source's loader."""
    name, _, target = spec.partition(":")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
                         "(e.g. 'synthetic', 'taobaoad:/data/TaobaoAd_x1', 'interactions:log.csv').")
    if name == "synthetic":
        if options:
            raise TypeError(f"unknown option(s) for the synthetic dataset: {', '.join(sorted(options))}")
        from .synthetic import synthetic_events
        return synthetic_events(preset=preset, seed=seed, cache_dir=cache_dir)
    if not target:
        raise ValueError(f"dataset {name!r} needs a path: '{name}:PATH'.")
    path = Path(target)
    if name == "interactions":
        files, load = [path], lambda: load_interactions(path, **options)
    else:
        files, load = [path / "train.csv", path / "test.csv"], lambda: load_bars(name, path, **options)
    if cache_dir is None:
        return load()
    cached = Path(cache_dir) / f"{name}-{_cache_key(spec, files, options)}"
    if (cached / "meta.json").is_file():
        return EventTable.load(cached)
    return EventTable.load(load().save(cached))
