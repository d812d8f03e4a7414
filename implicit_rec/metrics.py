"""CTR metrics: AUC (ties averaged), gAUC, logloss. NumPy, vectorized, O(N log N)."""

from __future__ import annotations

import numpy as np


def _check(labels, scores, name="scores"):
    labels = np.asarray(labels, np.float64).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels has {labels.size} entries but {name} has {scores.size}.")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1.")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return labels, scores


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels, scores) -> float:
    """ROC AUC = P(score of a random positive > a random negative), ties counting 1/2 (Mann-Whitney).

    NaN when there are no positives or no negatives.
    """
    y, s = _check(labels, scores)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels, scores, groups) -> float:
    """Per-group AUC weighted by the group's number of samples; groups with one class are skipped.

    NaN when no group has both classes.
    """
    y, s = _check(labels, scores)
    g = np.asarray(groups).ravel()
    if g.shape != y.shape:
        raise ValueError(f"groups has {g.size} entries but labels has {y.size}.")
    if len(y) == 0:
        return float("nan")
    # rank scores within groups: sort by (group, score), average ties inside each (group, score) run
    order = np.lexsort((s, g))
    gs, ss, ys = g[order], s[order], y[order]
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    new_run = new_group | np.r_[True, ss[1:] != ss[:-1]]
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], len(ss)]
    group_start_of = np.maximum.accumulate(np.where(new_group, np.arange(len(gs)), 0))
    start_in_group = run_start - group_start_of[run_start]
    avg_rank = (2 * start_in_group + (run_end - run_start) + 1) / 2.0
    ranks = np.repeat(avg_rank, run_end - run_start)
    gid = np.cumsum(new_group) - 1
    n = np.bincount(gid)
    n_pos = np.bincount(gid, weights=ys)
    n_neg = n - n_pos
    pos_rank_sum = np.bincount(gid, weights=ranks * ys)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    per_group = (pos_rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return float(np.sum(per_group * n[ok]) / np.sum(n[ok]))


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
    y, p = _check(labels, probs, "probs")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probs must lie in [0, 1].")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def evaluate(labels, probs, users) -> dict:
    """{"auc", "gauc" (grouped by users), "logloss"} of predicted click probabilities."""
    return {"auc": auc(labels, probs), "gauc": gauc(labels, probs, users), "logloss": logloss(labels, probs)}
