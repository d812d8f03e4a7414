"""Metric functions against hand-computed values and brute-force references."""

import numpy as np
import pytest

from implicit_rec import metrics


def brute_auc(y, s):
    """Pairwise definition: P(s_pos > s_neg) + 1/2 P(s_pos == s_neg)."""
    y, s = np.asarray(y), np.asarray(s, float)
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean()


def brute_gauc(y, s, g):
    y, s, g = map(np.asarray, (y, s, g))
    num = den = 0.0
    for u in np.unique(g):
        m = g == u
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * brute_auc(y[m], s[m])
            den += m.sum()
    return num / den


def test_auc_hand_computed_with_ties():
    # pairs (pos, neg): (.35,.1)=1 (.35,.4)=0 (.8,.1)=1 (.8,.4)=1 -> 3/4
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)  # all tied
    # one positive tied with one negative: (p>n1)=1, (p=n2)=1/2 -> 0.75
    assert metrics.auc([1, 0, 0], [0.6, 0.2, 0.6]) == pytest.approx(0.75)
    assert metrics.auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)
    assert metrics.auc([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2]) == 1.0
    assert metrics.auc([1, 0, 1, 0], [0.1, 0.9, 0.2, 0.8]) == 0.0
    assert metrics.auc(np.array([True, False]), [2.0, -1.0]) == 1.0  # bool labels, unbounded scores


def test_auc_nan_without_both_classes():
    assert np.isnan(metrics.auc([1, 1], [0.2, 0.3]))
    assert np.isnan(metrics.auc([0, 0, 0], [0.2, 0.3, 0.1]))
    assert np.isnan(metrics.auc([], []))


@pytest.mark.parametrize("seed", range(3))
def test_auc_matches_brute_force_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 600))
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 7, n) / 7.0  # 7 distinct values: heavy ties
    assert metrics.auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    s2 = rng.normal(size=n).astype(np.float32)  # no ties, float32 input
    assert metrics.auc(y, s2) == pytest.approx(brute_auc(y, s2), abs=1e-12)


def test_auc_invariant_to_monotone_transform_and_order():
    rng = np.random.default_rng(3)
    y, s = rng.integers(0, 2, 400), rng.integers(0, 10, 400) / 10
    perm = rng.permutation(400)
    assert metrics.auc(y, s) == pytest.approx(metrics.auc(y[perm], s[perm]), abs=1e-12)
    assert metrics.auc(y, s) == pytest.approx(metrics.auc(y, np.exp(3 * s) - 5), abs=1e-12)


def test_gauc_hand_computed_skips_single_class_users_and_weights_by_size():
    y = [1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1]
    s = [0.9, 0.1, 0.5, 0.4, 0.3, 0.2, 0.7, 0.8, 0.6, 0.6, 0.1]
    g = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4]
    # user 1 (n=3): pos .9 vs .1,.5 -> 1.0
    # user 2 (n=3): pos .4,.3 vs .2 -> 1.0
    # user 3 (n=4): pos .6 vs .7,.8,.6 -> (0 + 0 + 1/2)/3 = 1/6   (tie counts 1/2)
    # user 4 (n=1): only a positive -> skipped
    expected = (3 * 1.0 + 3 * 1.0 + 4 * (1 / 6)) / (3 + 3 + 4)
    assert metrics.gauc(y, s, g) == pytest.approx(expected)
    assert metrics.gauc(y, s, g) == pytest.approx(brute_gauc(y, s, g))
    # weighting by size differs from the unweighted mean of the per-user AUCs
    assert metrics.gauc(y, s, g) != pytest.approx((1.0 + 1.0 + 1 / 6) / 3)
    # adding a user with only negatives changes nothing
    assert metrics.gauc(y + [0, 0, 0], s + [0.9, 0.1, 0.5], g + [5, 5, 5]) == pytest.approx(expected)
    # a single group is the plain AUC
    assert metrics.gauc(y[:10], s[:10], [7] * 10) == pytest.approx(metrics.auc(y[:10], s[:10]))


def test_gauc_nan_when_no_group_qualifies():
    assert np.isnan(metrics.gauc([1, 0], [0.3, 0.2], [1, 2]))
    assert np.isnan(metrics.gauc([], [], []))


@pytest.mark.parametrize("seed", range(3))
def test_gauc_matches_brute_force_random(seed):
    rng = np.random.default_rng(10 + seed)
    n = 800
    y, s, g = rng.integers(0, 2, n), rng.integers(0, 5, n) / 5, rng.integers(0, 60, n)
    assert metrics.gauc(y, s, g) == pytest.approx(brute_gauc(y, s, g), abs=1e-12)
    # group ids as strings and as (non-contiguous) floats give the same answer
    assert metrics.gauc(y, s, np.char.add("u", g.astype(str))) == pytest.approx(brute_gauc(y, s, g), abs=1e-12)
    assert metrics.gauc(y, s, g * 1.5 - 7) == pytest.approx(brute_gauc(y, s, g), abs=1e-12)


def sorted_count_auc(y, s):
    """Independent reference for large inputs: for each positive, the negatives below it plus half
    the tied ones, counted with ``searchsorted`` on the sorted negatives."""
    y, s = np.asarray(y), np.asarray(s, np.float64)
    neg = np.sort(s[y == 0])
    pos = s[y == 1]
    below = np.searchsorted(neg, pos, side="left").astype(np.float64)
    tied = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (len(pos) * len(neg)))


def test_auc_and_gauc_on_large_input_match_a_counting_reference():
    """500k rows, heavy ties, P * N ~ 5e10 pairs (beyond int32): no overflow, exact values."""
    rng = np.random.default_rng(0)
    n, n_groups = 500_000, 40
    g = rng.integers(0, n_groups, n)
    y = (rng.random(n) < 0.2 + 0.01 * g).astype(np.int8)  # per-group positive rates differ
    # informative, with a group offset that tracks the group's positive rate; ~200 distinct values
    s = np.round((rng.random(n) + 0.3 * y + 0.02 * g) / 2.1, 2).astype(np.float32)
    out = metrics.evaluate(y, s, g)
    assert out["auc"] == pytest.approx(sorted_count_auc(y, s), abs=1e-9)
    per_group = [(np.sum(g == u), sorted_count_auc(y[g == u], s[g == u])) for u in range(n_groups)]
    expected = sum(n_u * a for n_u, a in per_group) / sum(n_u for n_u, _ in per_group)
    assert out["gauc"] == pytest.approx(expected, abs=1e-9)
    assert out["auc"] > out["gauc"] + 0.02  # the group offsets help the pooled AUC only


def test_logloss_hand_computed():
    assert metrics.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert metrics.logloss([1, 1, 0], [0.5, 0.5, 0.5]) == pytest.approx(np.log(2))
    # p = 0 for a positive is clipped to eps: loss = -log(eps) / 2
    assert metrics.logloss([1, 0], [0.0, 0.0], eps=1e-7) == pytest.approx(-np.log(1e-7) / 2, rel=1e-6)
    assert np.isfinite(metrics.logloss([1, 0], [0.0, 1.0]))
    assert np.isnan(metrics.logloss([], []))


def test_evaluate():
    out = metrics.evaluate([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.7], [1, 1, 2, 2])
    assert set(out) == {"auc", "gauc", "logloss"}
    assert out["auc"] == pytest.approx(0.75) and out["gauc"] == pytest.approx(0.5)
    assert out["logloss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6, 0.3])))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: metrics.auc([0, 1], [0.1]), r"labels has shape \(2,\) but scores has shape \(1,\)"),
        (lambda: metrics.auc([0, 1], [[0.1], [0.2]]), "scores has shape"),
        (lambda: metrics.auc([0, 2], [0.1, 0.2]), "labels must be 0 or 1"),
        (lambda: metrics.auc([0, np.nan], [0.1, 0.2]), "labels must be 0 or 1"),
        (lambda: metrics.auc(["a", "b"], [0.1, 0.2]), "labels must be numeric"),
        (lambda: metrics.auc([0, 1], [0.1, np.nan]), "scores contains NaN"),
        (lambda: metrics.auc([0, 1], [0.1, np.inf]), "scores contains NaN or infinite"),
        (lambda: metrics.logloss([0, 1], [0.1, 1.5]), r"probs must lie in \[0, 1\]"),
        (lambda: metrics.logloss([0, 1], [-0.1, 0.5]), r"probs must lie in \[0, 1\]"),
        (lambda: metrics.logloss([0, 1], [0.1, np.nan]), "probs contains NaN"),
        (lambda: metrics.logloss([0, 1], [0.1, 0.2], eps=0.7), "eps"),
        (lambda: metrics.gauc([0, 1], [0.1, 0.2], [1]), "groups has shape"),
        (lambda: metrics.gauc([0, 1], [0.1, 0.2], [1.0, np.nan]), "groups contains NaN"),
        (lambda: metrics.evaluate([0, 1], [0.1, 0.2], [1, 2, 3]), "users has shape"),
        (lambda: metrics.evaluate([0, 1], [0.1, 2.0], [1, 2]), "probs must lie"),
        (lambda: metrics.evaluate([0, 1], [0.1], [1, 2]), "probs has shape"),
    ],
)
def test_invalid_inputs_raise_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
