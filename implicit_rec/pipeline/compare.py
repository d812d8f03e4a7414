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
- the FM against the best VM (by mean test AUC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..stats import paired_bootstrap

N_BOOT = 1000  # bootstrap replicates per comparison
LEVEL = 0.95
METRICS = ("auc", "gauc")  # the metrics every pair is compared on


def comparison_pairs(vms: Sequence, baselines: Sequence = ()) -> list[tuple[str, str]]:
    """(a, b) model names to compare, from the VM and baseline results (``VMResult``s); "fm" is the FM."""
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
    if names:
        best = max(names, key=lambda n: np.mean([v.auc for v in by_name[n]]))
        pairs.append(("fm", best))
    return pairs


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
) -> tuple[dict, ...]:
    """One row per pair and metric: ``{a, b, metric, diff, ci_low, ci_high, ...}`` (``Comparison.to_dict``).

    ``predictions``: model name -> (S, N) test probabilities, one row per seed, in the order of
    ``labels`` / ``users``."""
    missing = sorted({n for pair in pairs for n in pair} - set(predictions))
    if missing:
        raise ValueError(f"no test predictions for {missing}; known: {sorted(predictions)}.")
    rows = []
    for a, b in pairs:
        for metric in metrics:
            c = paired_bootstrap(
                labels,
                users,
                predictions[a],
                predictions[b],
                metric=metric,
                a=a,
                b=b,
                n_boot=n_boot,
                level=level,
                seed=seed,
            )
            rows.append(c.to_dict())
    return tuple(rows)
