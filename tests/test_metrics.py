"""Metric functions against hand-computed values and a brute-force reference."""

import numpy as np
import pytest

from implicit_rec import metrics


def brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean()


def test_auc_hand_computed_with_ties():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # one positive tied with one negative: pairs (p1>n1)=1, (p1=n2)=0.5 -> 0.75
    assert metrics.auc([1, 0, 0], [0.6, 0.2, 0.6]) == pytest.approx(0.75)
    assert np.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_auc_matches_brute_force_with_many_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 7, 500) / 7.0
    assert metrics.auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)


def test_gauc_skips_single_class_users_and_weights_by_size():
    y = [1, 0, 0, 1, 1, 0, 1, 0, 0]
    s = [0.9, 0.1, 0.5, 0.4, 0.3, 0.2, 0.7, 0.8, 0.6]
    g = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    # user 1: pos .9 vs .1,.5 -> 1.0; user 2: pos .4,.3 vs .2 -> 1.0; user 3: pos .7 vs .8,.6 -> 0.5
    assert metrics.gauc(y, s, g) == pytest.approx((3 * 1.0 + 3 * 1.0 + 3 * 0.5) / 9)
    y2 = y + [1, 1]
    s2 = s + [0.1, 0.2]
    g2 = g + [4, 4]  # single-class user is skipped
    assert metrics.gauc(y2, s2, g2) == pytest.approx(metrics.gauc(y, s, g))
    rng = np.random.default_rng(1)
    yy, ss, gg = rng.integers(0, 2, 300), rng.integers(0, 5, 300) / 5, rng.integers(0, 20, 300)
    expected_num, expected_den = 0.0, 0
    for u in np.unique(gg):
        m = gg == u
        if 0 < yy[m].sum() < m.sum():
            expected_num += m.sum() * brute_auc(yy[m], ss[m])
            expected_den += m.sum()
    assert metrics.gauc(yy, ss, gg) == pytest.approx(expected_num / expected_den, abs=1e-12)
    assert np.isnan(metrics.gauc([1, 0], [0.3, 0.2], [1, 2]))


def test_logloss_hand_computed_and_evaluate():
    assert metrics.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert np.isfinite(metrics.logloss([1, 0], [0.0, 1.0]))  # clipped
    out = metrics.evaluate([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.7], [1, 1, 2, 2])
    assert set(out) == {"auc", "gauc", "logloss"}
    assert out["auc"] == pytest.approx(0.75) and out["gauc"] == pytest.approx(0.5)


@pytest.mark.parametrize("call,match", [
    (lambda: metrics.auc([0, 1], [0.1]), "labels has 2 entries"),
    (lambda: metrics.auc([0, 2], [0.1, 0.2]), "labels must be 0 or 1"),
    (lambda: metrics.auc([0, 1], [0.1, np.nan]), "NaN"),
    (lambda: metrics.logloss([0, 1], [0.1, 1.5]), r"\[0, 1\]"),
    (lambda: metrics.gauc([0, 1], [0.1, 0.2], [1]), "groups has 1"),
])
def test_invalid_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
