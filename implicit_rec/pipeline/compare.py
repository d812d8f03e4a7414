"""The paired comparisons of a run (``metrics.json`` ``comparisons``, the report's confidence intervals).

A comparison is a difference a − b of a test metric between two models scored on the same test
events, with a paired 95% bootstrap interval (:func:`implicit_rec.stats.paired_bootstrap`: test
users drawn with replacement, the same draw for both models, and each model's seeds drawn with
replacement when it has several). Which pairs a run compares (:func:`comparison_pairs`):

- every transfer variant against its plain VM (``din/loopfm`` − ``din/none``, ...);
- LoopFM alone against KD alone (``ARCH/loopfm`` − ``ARCH/kd``): what the feature path adds beyond
  distillation;
- every implicit VM against the explicit VM of the same transfer whose parameter count is closest
  (the arch's own VM or an explicit baseline) — implicit vs explicit at (nearly) equal parameters;
- every implicit VM at k = 16 solver iterations against itself at k = 2 (``NAME@k16`` −
  ``NAME@k2``, when both are in ``sweep.iterations``): what test-time iterations buy. Its
  predictions are the sweep's (``models/STEM.k16.test.npy``, written by the sweep stage, with the
  VM's evaluation method if the sweep runs it, else the sweep's first method), paired over test
  users and seeds like the others;
- the best implicit VM (by mean test AUC, at its evaluation setting) against every explicit
  baseline and every explicit VM of its transfer;
- the FM against the best VM (by mean test AUC).

A name ``NAME@kK`` is VM ``NAME`` at K iterations (:func:`at_iterations`, :func:`split_iterations`).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..stats import ModelReplicates, paired_bootstraps

N_BOOT = 1000  # bootstrap replicates per comparison
LEVEL = 0.95
METRICS = ("auc", "gauc")  # the metrics every pair is compared on
ITERATION_PAIR = (16, 2)  # NAME@k16 - NAME@k2; the sweep saves its test predictions at these k


def at_iterations(name: str, k: int) -> str:
    """``"NAME@kK"``: VM ``name`` read out after ``k`` solver iterations."""
    return f"{name}@k{int(k)}"


def split_iterations(name: str) -> tuple[str, int | None]:
    """``("NAME", K)`` of ``"NAME@kK"``; ``(name, None)`` for a plain model name."""
    base, sep, k = name.rpartition("@k")
    return (base, int(k)) if sep and k.isdigit() else (name, None)


def comparison_pairs(vms: Sequence, baselines: Sequence = (), iterations: Sequence[int] = ()) -> list[tuple[str, str]]:
    """(a, b) model names to compare, from the VM and baseline results (``VMResult``s; anything
    with ``name``, ``arch``, ``transfer``, ``params``, ``auc`` and ``is_implicit``) and the sweep's
    ``iterations``; "fm" is the FM, "NAME@kK" a VM at K iterations. No pair twice."""
    names = list(dict.fromkeys(v.name for v in vms))
    by_name = {n: [v for v in vms if v.name == n] for n in names}
    pairs: list[tuple[str, str]] = []
    archs = list(dict.fromkeys(v.arch for v in vms))
    for arch in archs:
        base = f"{arch}/none"
        variants = [n for n in names if by_name[n][0].arch == arch and n != base]
        if base in by_name:
            pairs += [(n, base) for n in variants]
        if f"{arch}/loopfm" in by_name and f"{arch}/kd" in by_name:
            pairs.append((f"{arch}/loopfm", f"{arch}/kd"))
    explicit = [v for v in list(vms) + list(baselines) if not v.is_implicit]
    for name in names:
        first = by_name[name][0]
        if not first.is_implicit:
            continue
        same = [v for v in explicit if v.transfer == first.transfer]
        if same:
            closest = min(same, key=lambda v: abs(math.log(v.params / first.params)))
            pairs.append((name, closest.name))
    implicit = [n for n in names if by_name[n][0].is_implicit]
    if set(ITERATION_PAIR) <= set(iterations):
        pairs += [tuple(at_iterations(n, k) for k in ITERATION_PAIR) for n in implicit]

    def mean_auc(n):
        return np.mean([v.auc for v in by_name[n]])

    if implicit:
        best = max(implicit, key=mean_auc)
        transfer = by_name[best][0].transfer
        others = [b.name for b in baselines if not b.is_implicit]
        others += [n for n in names if not by_name[n][0].is_implicit and by_name[n][0].transfer == transfer]
        pairs += [(best, n) for n in others]
    if names:
        pairs.append(("fm", max(names, key=mean_auc)))
    return list(dict.fromkeys(pairs))


def compare(
    labels: np.ndarray,
    users: np.ndarray,
    predictions: dict[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str] = METRICS,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
    memo: MutableMapping[str, ModelReplicates] | None = None,
) -> tuple[dict, ...]:
    """One row per pair and metric: ``{a, b, metric, diff, ci_low, ci_high, ...}`` (``Comparison.to_dict``).

    ``predictions``: model name -> (S, N) test probabilities, one row per seed, in the order of
    ``labels`` / ``users``. Each model's bootstrap replicates are computed once per metric and shared
    by its pairs (:func:`implicit_rec.stats.paired_bootstraps`), and kept in ``memo`` if given (a
    :class:`ReplicateFiles` makes the comparisons resumable per model)."""
    missing = sorted({n for pair in pairs for n in pair} - set(predictions))
    if missing:
        raise ValueError(f"no test predictions for {missing}; known: {sorted(predictions)}.")
    if not pairs:
        return ()
    per_metric = [
        paired_bootstraps(labels, users, predictions, pairs, metric=m, n_boot=n_boot, level=level, seed=seed, memo=memo)
        for m in metrics
    ]
    return tuple(c.to_dict() for row in zip(*per_metric) for c in row)


class ReplicateFiles(MutableMapping):
    """A memo for :func:`implicit_rec.stats.paired_bootstraps` on disk: one ``KEY.npz`` (no pickle)
    per model and metric in ``directory``, written atomically as each is computed. A file that
    cannot be read counts as absent (it is computed again)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise KeyError(key)
        return self.directory / f"{key}.npz"

    def __getitem__(self, key: str) -> ModelReplicates:
        try:
            with np.load(self._path(key), allow_pickle=False) as arrays:
                return ModelReplicates.from_arrays(arrays)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise KeyError(key) from None

    def __setitem__(self, key: str, value: ModelReplicates) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path(key)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **value.to_arrays())

    def __delitem__(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return (p.stem for p in sorted(self.directory.glob("*.npz")))

    def __len__(self) -> int:
        return sum(1 for _ in self)
