"""CTR metrics: AUC (ties averaged), gAUC, logloss. NumPy only, vectorized, O(N log N).

All functions take array-likes of equal shape (they are flattened after the shape check), validate
them and raise ``ValueError`` naming the offending argument:

* ``labels`` must be 0 or 1 (bool, int or float);
* ``scores`` / ``probs`` must be finite; ``probs`` must also lie in [0, 1] for :func:`logloss`;
* ``groups`` / ``users`` must have the same shape as ``labels`` (any dtype; float ids must be finite).
"""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "gauc", "logloss", "evaluate"]


def _as_float(x, name: str) -> np.ndarray:
    try:
        return np.asarray(x, np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric: {e}") from None


def _check(labels, scores, name: str = "scores") -> tuple[np.ndarray, np.ndarray, tuple]:
    """Flattened float64 ``labels`` and ``scores`` after validation, and their common shape."""
    y, s = _as_float(labels, "labels"), _as_float(scores, name)
    if y.shape != s.shape:
        raise ValueError(f"labels has shape {y.shape} but {name} has shape {s.shape}; they must be equal.")
    shape = y.shape
    y, s = y.ravel(), s.ravel()
    if not np.all((y == 0) | (y == 1)):
        bad = y[(y != 0) & (y != 1)][0]
        raise ValueError(f"labels must be 0 or 1; found {bad!r}.")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return y, s, shape


def _check_groups(groups, shape: tuple, name: str) -> np.ndarray:
    g = np.asarray(groups)
    if g.shape != shape:
        raise ValueError(f"{name} has shape {g.shape} but labels has shape {shape}; they must be equal.")
    g = g.ravel()
    if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
        raise ValueError(f"{name} contains NaN or infinite ids.")
    if g.dtype.kind not in "biuf":  # strings / objects: factorize to integer codes
        g = np.unique(g, return_inverse=True)[1].ravel()
    return g


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; a run of tied values gets the mean of the ranks it spans."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels, scores) -> float:
    r"""ROC AUC via the Mann–Whitney U statistic, ties counting 1/2.

    .. math::
        \mathrm{AUC} = \frac{1}{P N}\sum_{i:y_i=1}\sum_{j:y_j=0}
            \big[\mathbb 1(s_i > s_j) + \tfrac12 \mathbb 1(s_i = s_j)\big]
          = \frac{R_+ - P(P+1)/2}{P N},

    with :math:`R_+` the sum of the (tie-averaged, 1-based) ranks of the positives among all
    scores, P positives and N negatives. One sort: O(n log n).

    Returns NaN when there are no positives or no negatives (AUC is undefined).
    """
    y, s, _ = _check(labels, scores)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels, scores, groups) -> float:
    r"""Group AUC: per-group AUC averaged with weights equal to the group's number of samples.

    .. math::
        \mathrm{gAUC} = \frac{\sum_{u \in Q} n_u \, \mathrm{AUC}_u}{\sum_{u \in Q} n_u},

    where :math:`n_u` counts *all* rows of group u and Q is the set of groups that contain both a
    positive and a negative; groups whose labels are all one class have no defined AUC and are
    skipped (they contribute neither to the numerator nor to the denominator).

    Vectorized: one ``lexsort`` by (group, score), tie-averaged ranks inside each group, and
    per-group sums with ``bincount`` — no Python loop over groups. ``groups`` may be ints, floats,
    strings or objects (non-numeric ids are factorized with ``np.unique``).

    Returns NaN when no group qualifies (including empty input).
    """
    y, s, shape = _check(labels, scores)
    g = _check_groups(groups, shape, "groups")
    if len(y) == 0:
        return float("nan")
    order = np.lexsort((s, g))
    gs, ss, ys = g[order], s[order], y[order]
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    new_run = new_group | np.r_[True, ss[1:] != ss[:-1]]  # runs of equal score inside a group
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.r_[run_start, len(ss)])
    group_start_of = np.maximum.accumulate(np.where(new_group, np.arange(len(gs)), 0))
    start_in_group = run_start - group_start_of[run_start]  # 0-based position of the run in its group
    ranks = np.repeat(start_in_group + (run_len + 1) / 2.0, run_len)  # tie-averaged 1-based rank
    gid = np.cumsum(new_group) - 1
    n = np.bincount(gid).astype(np.float64)
    n_pos = np.bincount(gid, weights=ys)
    n_neg = n - n_pos
    pos_rank_sum = np.bincount(gid, weights=ranks * ys)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    per_group = (pos_rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return float(np.sum(per_group * n[ok]) / np.sum(n[ok]))


def logloss(labels, probs, eps: float = 1e-7) -> float:
    r"""Mean binary cross-entropy with probabilities clipped to [eps, 1 − eps].

    .. math::
        \mathrm{LL} = -\frac1n \sum_i \big[y_i \log \tilde p_i + (1-y_i)\log(1-\tilde p_i)\big],
        \quad \tilde p_i = \mathrm{clip}(p_i, \epsilon, 1-\epsilon).

    ``probs`` must lie in [0, 1] (a logit passed by mistake is an error, not silently clipped).
    Returns NaN for empty input.
    """
    if not 0 <= eps < 0.5:
        raise ValueError(f"eps must lie in [0, 0.5); got {eps}.")
    y, p, _ = _check(labels, probs, "probs")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"probs must lie in [0, 1]; found values in [{p.min():.4g}, {p.max():.4g}].")
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def evaluate(labels, probs, users) -> dict:
    """``{"auc", "gauc", "logloss"}`` of predicted click probabilities; gAUC groups by ``users``.

    All inputs are validated (errors name ``labels``, ``probs`` or ``users``) before any metric runs.
    """
    y, p, shape = _check(labels, probs, "probs")
    g = _check_groups(users, shape, "users")
    ll = logloss(y, p)  # also checks probs in [0, 1]
    return {"auc": auc(y, p), "gauc": gauc(y, p, g), "logloss": ll}
