"""The one shape of a domain study: a frozen config with presets, a run, a markdown report, plots.

Every domain module defines ``STUDY = Study(name, config, presets, compute, report, plots)``:

- ``config``: a frozen dataclass whose fields are checked in ``__post_init__`` (``_checks``);
- ``presets``: {name: config}, at least ``"tiny"`` (seconds, for the tests) and ``"default"``;
- ``compute(config, *, cache_dir, log) -> Result``: data, training, the test-time iteration sweep;
  ``Result.metrics`` is JSON-ready (its ``"sweep"`` holds ``SweepRow.to_dict()`` rows),
  ``Result.arrays`` holds what only the plots need;
- ``report(result) -> str``: markdown; ``plots(result, directory) -> list of PNG names``.

:meth:`Study.configure` applies overrides (unknown or renamed keys are errors with a did-you-mean)
and :meth:`Study.run` computes and writes metrics.json, report.md and the plots into one directory,
atomically. ``python -m implicit_rec.domains NAME`` (:mod:`implicit_rec.domains.cli`) drives it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_directory, write_json_atomic, write_text_atomic
from ._checks import check_overrides

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Result:
    """What a study computed: ``metrics`` (written as metrics.json) and ``arrays`` for the plots."""

    metrics: dict
    arrays: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Study:
    """One domain study: see the module docstring."""

    name: str
    config: type
    presets: Mapping[str, Any]
    compute: Callable[..., Result]
    report: Callable[[Result], str]
    plots: Callable[[Result, Path], list[str]]

    def configure(self, preset: str = "default", **overrides) -> Any:
        """The named preset with field overrides; ``"field.sub"`` sets a field of a nested config."""
        if preset not in self.presets:
            raise ValueError(f"{self.name}: preset={preset!r} is not known; choose one of {sorted(self.presets)}.")
        base = self.presets[preset]
        top = {k: v for k, v in overrides.items() if "." not in k}
        nested: dict[str, dict] = {}
        for key, value in overrides.items():
            if "." in key:
                head, sub = key.split(".", 1)
                nested.setdefault(head, {})[sub] = value
        check_overrides(f"{self.name} config", self.config, {**top, **nested})
        for head, subs in nested.items():
            inner = top.get(head, getattr(base, head))
            if not dataclasses.is_dataclass(inner):
                raise TypeError(f"{self.name} config: {head!r} has no settings of its own; set {head}=VALUE.")
            check_overrides(f"{self.name} config {head}", type(inner), subs)
            top[head] = dataclasses.replace(inner, **subs)
        return dataclasses.replace(base, **top)

    def run(
        self, config: Any, out: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, log: Log | None = None
    ) -> Result:
        """``compute`` then write metrics.json, report.md and the plots into ``out`` (replaced atomically).

        ``cache_dir`` keeps generated data sets between runs (None: no cache).
        """
        if not isinstance(config, self.config):
            raise TypeError(
                f"{self.name}: config must be a {self.config.__name__} (STUDY.configure builds one), "
                f"got {type(config).__name__}."
            )
        t0 = time.perf_counter()
        result = self.compute(config, cache_dir=cache_dir, log=log or (lambda _: None))
        metrics = {"domain": self.name, **result.metrics}
        metrics.setdefault("timing", {})["wall_s"] = time.perf_counter() - t0
        with atomic_directory(out) as tmp:
            metrics["plots"] = list(self.plots(result, tmp))
            result = Result(metrics, result.arrays)
            write_json_atomic(tmp / "metrics.json", metrics)
            write_text_atomic(tmp / "report.md", self.report(result))
        return result
