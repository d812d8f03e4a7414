"""Datasets as event tables: the synthetic default and loaders for public CTR benchmarks."""

from __future__ import annotations

from .events import EventTable, HistoryIndex, Schema, batches

__all__ = ["EventTable", "HistoryIndex", "Schema", "batches", "load_dataset"]


def load_dataset(spec: str, *, cache_dir=None, preset: str = "default", seed: int = 0, **options) -> EventTable:
    """Load a dataset by name: "synthetic" (see ``synthetic``)."""
    if spec == "synthetic":
        if options:
            raise TypeError(f"unknown option(s) for the synthetic dataset: {sorted(options)}")
        from .synthetic import synthetic_events
        return synthetic_events(preset=preset, seed=seed, cache_dir=cache_dir)
    raise ValueError(f"unknown dataset {spec!r}; valid: 'synthetic'")
