r"""Paired bootstrap confidence intervals for model differences in AUC, gAUC and logloss. NumPy only.

A comparison of model ``a`` with model ``b`` on the same test events is the difference

.. math::
    \Delta = \frac1{S_a}\sum_{s} m(a_s) - \frac1{S_b}\sum_{s} m(b_s),

with ``m`` one of :mod:`implicit_rec.metrics`' AUC, gAUC or logloss (the point estimate calls those
functions) and :math:`a_s` the predictions of a's training seed s. The sign is always "a − b", also
for logloss, where lower is better: a negative logloss difference means ``a`` is better.

Its interval is a percentile interval of a *paired cluster bootstrap*: each replicate draws the U
test users with replacement (user u drawn :math:`k_u` times enters with all its events at integer
weight :math:`k_u`), and when a model has several seeds also draws that model's seeds with
replacement (independently for a and b: the training runs of two models are not paired). Both
models see the same user draw in a replicate — that is the pairing, which removes the variance the
two models share. Under weights the metrics are exactly those of the resampled data set:

* AUC: :func:`weighted_auc`, one sort per prediction vector, vectorised over replicates;
* gAUC: per-user AUCs do not change under the draw (copies of a user merge into one group with the
  same AUC), so a replicate is :math:`\sum_u k_u n_u \mathrm{AUC}_u / \sum_u k_u n_u` over the users
  with both classes, as :func:`implicit_rec.metrics.gauc` weights them;
* logloss: the weighted mean of the per-event losses, clipped as :func:`implicit_rec.metrics.logloss`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from implicit_rec import metrics

__all__ = [
    "METRICS",
    "MIN_BOOT",
    "Comparison",
    "ModelReplicates",
    "bootstrap_intervals",
    "paired_bootstrap",
    "paired_bootstraps",
    "weighted_auc",
]

METRICS = ("auc", "gauc", "logloss")
MIN_BOOT = 100  # fewer replicates put a handful of draws in each tail of the interval: noise, refused
_LOGLOSS_EPS = inspect.signature(metrics.logloss).parameters["eps"].default  # the clip metrics.logloss uses
_CHUNK_ELEMENTS = 1 << 22  # replicates per chunk (at most 64): about this many (replicate, event) entries at once


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``diff = metric(a) − metric(b)`` (seed means) with its ``level`` percentile bootstrap interval."""

    a: str
    b: str
    metric: str
    diff: float
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    seeds_a: int
    seeds_b: int

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0 (the sign of the difference is resolved at ``level``)."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict:
        """The fields as plain JSON types, plus ``resolved``."""
        out = dataclasses.asdict(self)
        for k in ("diff", "ci_low", "ci_high", "level"):
            out[k] = float(out[k])
        for k in ("n_boot", "seeds_a", "seeds_b"):
            out[k] = int(out[k])
        out["resolved"] = bool(self.resolved)
        return out

    def text(self, digits: int = 4) -> str:
        """``"+0.0123 [+0.0050, +0.0190]"``, with ``" (not resolved)"`` appended when the interval spans 0."""
        f = f"+.{int(digits)}f"
        s = f"{self.diff:{f}} [{self.ci_low:{f}}, {self.ci_high:{f}}]"
        return s if self.resolved else s + " (not resolved)"


# ---------------------------------------------------------------------------------------------- AUC


_BLOCK = 16  # prefix sums of negative weights: within blocks of this many by a matmul, then across blocks


@dataclasses.dataclass
class _AucPlan:
    """One score vector's sort, as the weighted AUC needs it, for weights given per row of a
    weight table ``k`` (U + 1, B) whose last row is 0 (rows: users in the bootstrap, events in
    :func:`weighted_auc`; columns: replicates).

    ``gather`` (nb * _BLOCK,): rows of ``k`` giving the negatives' weights in ascending score
    order, after one leading zero and padded with zeros; so the inclusive prefix sum at position t
    of the gathered row is the weight of the t lowest negatives. ``lo`` (P,): for each positive (in
    index order) the number of negatives scored strictly below it, ``hi`` (P,) at most as high
    (``None`` when no positive ties a negative). ``pos`` (P,): the positives' rows of ``k``.
    """

    gather: np.ndarray
    lo: np.ndarray
    hi: np.ndarray | None
    pos: np.ndarray

    @classmethod
    def build(cls, y: np.ndarray, s: np.ndarray, cols: np.ndarray, zero_col: int) -> _AucPlan:
        neg = np.flatnonzero(y == 0)
        neg = neg[np.argsort(s[neg], kind="stable")]
        neg_scores, pos_scores = s[neg], s[y == 1]
        lo = np.searchsorted(neg_scores, pos_scores, side="left")
        hi = np.searchsorted(neg_scores, pos_scores, side="right")
        n_blocks = -(-(len(neg) + 1) // _BLOCK)
        gather = np.full(n_blocks * _BLOCK, zero_col)
        gather[1 : len(neg) + 1] = cols[neg]
        return cls(gather, lo, None if np.array_equal(lo, hi) else hi, cols[y == 1])

    def auc(self, k: np.ndarray, den: np.ndarray) -> np.ndarray:
        r"""Weighted AUC (B,) of the weight columns ``k`` (U + 1, B), last row 0; ``den`` (B,):
        total positive × total negative weight.

        .. math:: \mathrm{AUC} = \frac{\sum_{i} w_i \tfrac12 (C_{lo_i} + C_{hi_i})}{\sum_i w_i \sum_j w_j},

        :math:`C_t` the weight of the t lowest negatives: prefix sums inside blocks of ``_BLOCK``
        rows (exact for integer weights, also in float32), block offsets by a cumulative sum over
        the blocks in float64, read only at the positives' counts. Rows are replicates' columns:
        every step moves contiguous rows of B values.
        """
        w = np.take(k, self.gather, axis=0).reshape(-1, _BLOCK, k.shape[1])
        for i in range(1, _BLOCK):
            w[:, i] += w[:, i - 1]
        totals = w[:, -1].astype(np.float64)
        offsets = np.zeros_like(totals)
        np.cumsum(totals[:-1], axis=0, out=offsets[1:])
        w = w.reshape(-1, k.shape[1])

        def prefix(t):
            return np.take(w, t, axis=0) + np.take(offsets, t // _BLOCK, axis=0)

        below = prefix(self.lo) if self.hi is None else 0.5 * (prefix(self.lo) + prefix(self.hi))
        num = np.einsum("pb,pb->b", np.take(k, self.pos, axis=0), below)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_auc(labels, scores, weights) -> float:
    r"""ROC AUC with non-negative event weights, ties counting 1/2:

    .. math::
        \mathrm{AUC}_w = \frac{\sum_{i:y_i=1}\sum_{j:y_j=0} w_i w_j
            \big[\mathbb 1(s_i > s_j) + \tfrac12 \mathbb 1(s_i = s_j)\big]}{\sum_{i:y_i=1} w_i \sum_{j:y_j=0} w_j}.

    With integer weights this is exactly :func:`implicit_rec.metrics.auc` of the data with event i
    repeated :math:`w_i` times; unit weights give ``metrics.auc``. One sort, O(n log n). ``labels``,
    ``scores`` and ``weights`` have equal shapes (flattened). NaN when either class has zero weight.
    """
    y, s, shape = metrics._check(labels, scores)
    w = metrics._as_float(weights, "weights")
    if w.shape != shape:
        raise ValueError(f"weights has shape {w.shape} but labels has shape {shape}; they must be equal.")
    w = w.ravel()
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative.")
    n = len(y)
    plan = _AucPlan.build(y, s, np.arange(n), zero_col=n)
    den = np.array([w[y == 1].sum() * w[y == 0].sum()])
    return float(plan.auc(np.r_[w, 0.0][:, None], den)[0])


def _user_auc(y: np.ndarray, s: np.ndarray, g: np.ndarray, n_users: int) -> np.ndarray:
    """Per-user AUC (U,) with ties 1/2, NaN for users without both classes (metrics.gauc's per-group term)."""
    order = np.lexsort((s, g))
    gs, ss, ys = g[order], s[order], y[order]
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    new_run = new_group | np.r_[True, ss[1:] != ss[:-1]]
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.r_[run_start, len(ss)])
    group_start_of = np.maximum.accumulate(np.where(new_group, np.arange(len(gs)), 0))
    ranks = np.repeat(run_start - group_start_of[run_start] + (run_len + 1) / 2.0, run_len)
    n = np.bincount(gs, minlength=n_users).astype(np.float64)
    n_pos = np.bincount(gs, weights=ys, minlength=n_users)
    n_neg = n - n_pos
    rank_sum = np.bincount(gs, weights=ranks * ys, minlength=n_users)
    ok = (n_pos > 0) & (n_neg > 0)
    out = np.full(n_users, np.nan)
    out[ok] = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return out


# ----------------------------------------------------------------------------------------- bootstrap


@dataclasses.dataclass
class _Data:
    """Validated test set: labels y (N,), user codes g (N,) in [0, U), per-user counts."""

    y: np.ndarray
    g: np.ndarray
    n_users: int
    n: np.ndarray  # events per user (U,)
    n_pos: np.ndarray  # positives per user (U,)


def _as_preds(preds, n: int, name: str, metric: str) -> np.ndarray:
    p = metrics._as_float(preds, name)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != n or p.shape[0] < 1:
        raise ValueError(
            f"{name} has shape {np.shape(preds)}; expected (N,) or (S, N) with N = {n} test events "
            "(one row per training seed)."
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if metric == "logloss" and np.any((p < 0) | (p > 1)):
        raise ValueError(f"{name} must be probabilities in [0, 1] for logloss; found [{p.min():.4g}, {p.max():.4g}].")
    return p


def _point(metric: str, d: _Data, p: np.ndarray) -> float:
    """Mean over seeds of the metrics-module value on all events."""
    if metric == "auc":
        vals = [metrics.auc(d.y, row) for row in p]
    elif metric == "gauc":
        vals = [metrics.gauc(d.y, row, d.g) for row in p]
    else:
        vals = [metrics.logloss(d.y, row) for row in p]
    return float(np.mean(vals))


class _Model:
    """What one model's replicates need, computed once per seed: AUC plans, per-user AUCs or losses."""

    def __init__(self, metric: str, d: _Data, p: np.ndarray):
        self.metric, self.d, self.n_seeds = metric, d, p.shape[0]
        if metric == "auc":
            self.plans = [_AucPlan.build(d.y, row, d.g, zero_col=d.n_users) for row in p]
        elif metric == "gauc":
            ok = (d.n_pos > 0) & (d.n_pos < d.n)  # users with both classes: depends on the labels only
            per_seed = np.stack([_user_auc(d.y, row, d.g, d.n_users) for row in p])  # (S, U)
            self.num = np.where(ok, d.n * np.nan_to_num(per_seed), 0.0)  # (S, U): n_u AUC_u on qualifying users
            self.den = np.where(ok, d.n, 0.0)  # (U,)
        else:
            q = np.clip(p, _LOGLOSS_EPS, 1 - _LOGLOSS_EPS)
            loss = -(d.y * np.log(q) + (1 - d.y) * np.log1p(-q))  # (S, N)
            self.num = np.stack([np.bincount(d.g, weights=row, minlength=d.n_users) for row in loss])  # (S, U)
            self.den = d.n

    def replicates(self, k: np.ndarray, k32: np.ndarray) -> np.ndarray:
        """(S, B) metric of each seed under each row of user multiplicities ``k`` (B, U) float64;
        ``k32``: its transpose with a zero row appended (U + 1, B), float32 (exact: small integers)."""
        if self.metric == "auc":
            den = (k @ self.d.n_pos) * (k @ (self.d.n - self.d.n_pos))
            return np.stack([plan.auc(k32, den) for plan in self.plans])
        den = k @ self.den
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (k @ self.num.T).T / np.where(den > 0, den, 1.0), np.nan)


def _validate(labels, users, metric, n_boot, level) -> _Data:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < MIN_BOOT:
        raise ValueError(f"n_boot must be an integer >= {MIN_BOOT} (replicates of the bootstrap); got {n_boot!r}.")
    if isinstance(level, bool) or not isinstance(level, float | int) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), e.g. 0.95; got {level!r}.")
    y = metrics._as_float(labels, "labels")
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,); got shape {y.shape}.")
    y, _, shape = metrics._check(y, np.zeros_like(y), "labels")
    g = metrics._check_groups(users, shape, "users")
    g = np.unique(g, return_inverse=True)[1].ravel()
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError(f"labels must contain both classes (found {n_pos} positives of {len(y)}); AUC is undefined.")
    n_users = int(g.max()) + 1
    n = np.bincount(g, minlength=n_users).astype(np.float64)
    npu = np.bincount(g, weights=y, minlength=n_users)
    if metric == "gauc" and not np.any((npu > 0) & (npu < n)):
        raise ValueError("users: no user has both a positive and a negative event; gAUC is undefined.")
    return _Data(y, g, n_users, n, npu)


def _user_draws(ss: np.random.SeedSequence, d: _Data, n_boot: int):
    """Chunks ``(slice, k, k32)`` of ``n_boot`` user draws with replacement: ``k`` (B, U) float64
    multiplicities of each user, ``k32`` its transpose with a zero row appended (U + 1, B) float32."""
    rng, u = np.random.default_rng(ss), d.n_users
    chunk = int(np.clip(_CHUNK_ELEMENTS // max(len(d.y), u), 1, 64))
    for start in range(0, n_boot, chunk):
        bc = min(chunk, n_boot - start)
        draws = rng.integers(0, u, size=(bc, u)) + (np.arange(bc) * u)[:, None]
        k = np.bincount(draws.ravel(), minlength=bc * u).reshape(bc, u).astype(np.float64)
        k32 = np.zeros((u + 1, bc), np.float32)
        k32[:u] = k.T
        yield slice(start, start + bc), k, k32


def _replicates(model: _Model, d: _Data, users_ss: np.random.SeedSequence, n_boot: int) -> list:
    """``(slice, (S, B) metric of each of model's seeds)`` per chunk of the ``n_boot`` user draws of
    ``users_ss``, each chunk's array as ``_Model.replicates`` returns it (its memory layout fixes the
    summation order of the seed averages below, so it is kept)."""
    return [(sl, model.replicates(k, k32)) for sl, k, k32 in _user_draws(users_ss, d, n_boot)]


def _check_finite(reps: np.ndarray, metric: str, n_boot: int) -> None:
    if not np.all(np.isfinite(reps)):
        bad = int(np.sum(~np.all(np.isfinite(reps.reshape(-1, n_boot)), axis=0)))
        raise ValueError(
            f"{metric} is undefined in {bad} of {n_boot} bootstrap replicates (a user draw without both classes): "
            "the test set has too few users; use more test users."
        )


def bootstrap_intervals(
    labels, users, preds, *, metric: str = "auc", n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> np.ndarray:
    """(M, 2) percentile intervals ``[low, high]`` of ``metric`` of each row of ``preds`` (M, N) (or (N,)).

    The cluster bootstrap of :func:`paired_bootstrap` for one model at a time: ``n_boot`` draws of
    the test users with replacement (the same draws for every row, and the draws
    :func:`paired_bootstrap` makes with the same ``seed``), each row's metric on every draw, and the
    ``(1 − level)/2`` and ``(1 + level)/2`` quantiles per row. Deterministic in ``seed``. Inputs as
    in :func:`paired_bootstrap` (the rows are separate models or settings here, not seeds).
    """
    d = _validate(labels, users, metric, n_boot, level)
    p = _as_preds(preds, len(d.y), "preds", metric)
    reps = np.empty((p.shape[0], n_boot))
    for sl, chunk in _replicates(_Model(metric, d, p), d, np.random.SeedSequence(seed).spawn(3)[0], n_boot):
        reps[:, sl] = chunk
    _check_finite(reps, metric, n_boot)
    return np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], axis=1).T


def paired_bootstrap(
    labels,
    users,
    preds_a,
    preds_b,
    *,
    metric: str = "auc",
    a: str = "a",
    b: str = "b",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> Comparison:
    """``metric(a) − metric(b)`` on the same test events with a paired cluster-bootstrap interval.

    ``labels`` (N,) 0/1 (both classes present); ``users`` (N,) user ids (any dtype, as metrics.gauc);
    ``preds_a`` (S_a, N) or (N,), ``preds_b`` (S_b, N) or (N,): one row per training seed (S_a and
    S_b may differ). Predictions must be finite; for ``logloss`` probabilities in [0, 1] (AUC and gAUC
    are rank metrics and accept any scores). ``metric`` in :data:`METRICS`.

    ``diff`` = mean over a's seeds of ``metrics.<metric>`` − the same for b, on all events (logloss
    too: negative means a has the lower loss). Interval: the ``(1 − level)/2`` and ``(1 + level)/2``
    quantiles of ``n_boot`` (>= :data:`MIN_BOOT`) replicate differences, each with one draw of users
    shared by both models and, if ``resample_seeds`` and S > 1, an independent draw of each model's
    seeds. Deterministic in ``seed``; the user draws do not depend on ``resample_seeds`` or on S.
    Raises ``ValueError`` if a replicate's metric is undefined (e.g. a draw without any user having
    both classes, for gAUC on a tiny test set). :func:`paired_bootstraps` makes many comparisons at once.
    """
    (c,) = paired_bootstraps(
        labels,
        users,
        {"preds_a": preds_a, "preds_b": preds_b},
        [("preds_a", "preds_b")],
        metric=metric,
        n_boot=n_boot,
        level=level,
        seed=seed,
        resample_seeds=resample_seeds,
    )
    return dataclasses.replace(c, a=str(a), b=str(b))


@dataclasses.dataclass
class ModelReplicates:
    """What :func:`paired_bootstraps` computes once per model and metric: the ``point`` metric (mean
    over seeds) and the (S, B_i) replicate metrics of each chunk of the user draws, in draw order
    (each chunk as computed: its memory layout fixes the summation order of the seed averages)."""

    point: float
    chunks: list[np.ndarray]

    def slices(self) -> list[tuple[slice, np.ndarray]]:
        """``(slice of the n_boot replicates, chunk)`` pairs."""
        out, at = [], 0
        for chunk in self.chunks:
            out.append((slice(at, at + chunk.shape[1]), chunk))
            at += chunk.shape[1]
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for ``np.savez`` (no pickle): ``point`` and ``chunk0``, ``chunk1``, ..."""
        return {"point": np.float64(self.point), **{f"chunk{i}": c for i, c in enumerate(self.chunks)}}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ModelReplicates:
        n = sum(1 for k in arrays if k.startswith("chunk"))
        return cls(float(arrays["point"]), [np.asarray(arrays[f"chunk{i}"]) for i in range(n)])


def _memo_key(base: hashlib.blake2b, p: np.ndarray) -> str:
    """The memo key of one model's replicates: the test set, metric, draws (``base``) and its predictions."""
    h = base.copy()
    h.update(f"{p.dtype}{p.shape}".encode())
    h.update(np.ascontiguousarray(p).view(np.uint8))
    return h.hexdigest()


def paired_bootstraps(
    labels,
    users,
    predictions: Mapping[str, Any],
    pairs: Sequence[tuple[str, str]],
    *,
    metric: str = "auc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
    memo: MutableMapping[str, ModelReplicates] | None = None,
) -> list[Comparison]:
    """:func:`paired_bootstrap` of every pair ``(a, b)`` of model names in ``predictions`` (name ->
    (S, N) or (N,) test predictions), in the order of ``pairs``; each result equals that pair's
    :func:`paired_bootstrap` with the same options (names ``a`` and ``b``).

    The work is per model, not per pair: every model's point metric and its (S, n_boot) replicate
    metrics under the user draws (the same draws for every pair: they depend on ``seed`` only) are
    computed once, one model at a time (memory: one model's sort plans), and a pair's replicate
    differences are then weighted sums of two such rows, summed chunk by chunk as one pair alone sums
    them (the results are bit-identical). A run comparing M models in P > M pairs
    pays M models' bootstrap, not 2P.

    ``memo``: a mapping that keeps each model's :class:`ModelReplicates` as it is computed, under a
    key (a BLAKE2b hex digest) of everything it depends on (labels, users, metric, ``n_boot``,
    ``seed`` and the model's predictions), and supplies the models it already holds: a long
    comparison interrupted after some models resumes after them (the pipeline keeps one on disk).
    """
    d = _validate(labels, users, metric, n_boot, level)
    names = list(dict.fromkeys(n for pair in pairs for n in pair))
    missing = [n for n in names if n not in predictions]
    if missing:
        raise ValueError(f"no predictions for {missing} (named in pairs); known: {sorted(predictions)}.")
    users_ss, seeds_a_ss, seeds_b_ss = np.random.SeedSequence(seed).spawn(3)
    base = hashlib.blake2b(f"paired-bootstrap-v1 {metric} {n_boot} {seed}".encode())
    if memo is not None:
        base.update(np.ascontiguousarray(d.y).view(np.uint8))
        base.update(np.ascontiguousarray(d.g).view(np.uint8))
    reps: dict[str, ModelReplicates] = {}
    for name in names:
        p = _as_preds(predictions[name], len(d.y), str(name), metric)
        key = _memo_key(base, p) if memo is not None else None
        found = memo.get(key) if memo is not None else None
        if found is None:
            found = ModelReplicates(
                _point(metric, d, p), [c for _, c in _replicates(_Model(metric, d, p), d, users_ss, n_boot)]
            )
            if memo is not None:
                memo[key] = found
        reps[name] = found

    def seed_weights(ss, n_seeds: int) -> np.ndarray:
        """(n_boot, S) weights averaging over seeds: uniform, or a multinomial seed draw / S."""
        if not resample_seeds or n_seeds == 1:
            return np.full((n_boot, n_seeds), 1.0 / n_seeds)
        return np.random.default_rng(ss).multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot) / n_seeds

    out = []
    for a, b in pairs:
        sa, sb = reps[a].chunks[0].shape[0], reps[b].chunks[0].shape[0]
        wa, wb = seed_weights(seeds_a_ss, sa), seed_weights(seeds_b_ss, sb)
        diffs = np.empty(n_boot)
        for (sl, ra), (_, rb) in zip(reps[a].slices(), reps[b].slices(), strict=True):
            diffs[sl] = np.einsum("sb,bs->b", ra, wa[sl]) - np.einsum("sb,bs->b", rb, wb[sl])
        _check_finite(diffs, metric, n_boot)
        lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
        out.append(
            Comparison(
                a=str(a),
                b=str(b),
                metric=metric,
                diff=float(reps[a].point - reps[b].point),
                ci_low=float(lo),
                ci_high=float(hi),
                level=float(level),
                n_boot=int(n_boot),
                seeds_a=sa,
                seeds_b=sb,
            )
        )
    return out
