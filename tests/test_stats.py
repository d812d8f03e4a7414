"""Paired bootstrap intervals: weighted AUC against brute force, invariants, pairing, coverage, bad input."""

import json
import math

import numpy as np
import pytest

from implicit_rec import metrics, stats


def brute_weighted_auc(y, s, w):
    y, s, w = np.asarray(y), np.asarray(s, float), np.asarray(w, float)
    pos, neg = y == 1, y == 0
    d = s[pos][:, None] - s[neg][None, :]
    pair = (d > 0) + 0.5 * (d == 0)
    return float((w[pos][:, None] * w[neg][None, :] * pair).sum() / (w[pos].sum() * w[neg].sum()))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def population(rng, n_users, per_user, d_a=1.0, d_b=0.8, noise=0.5):
    """Users with an offset c_u on both models' scores, labels at rate 0.3, correlated model noise."""
    g = np.repeat(np.arange(n_users), per_user)
    n = len(g)
    y = (rng.random(n) < 0.3).astype(np.int8)
    c = rng.normal(size=n_users)[g]
    z = rng.normal(size=n)
    sa = c + d_a * y + z + noise * rng.normal(size=n)
    sb = c + d_b * y + z + noise * rng.normal(size=n)
    return y, g, sigmoid(sa), sigmoid(sb)


@pytest.mark.parametrize("seed", range(3))
def test_weighted_auc_matches_pairwise_reference_with_ties_and_integer_weights(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 6, n) / 6.0  # heavy ties
    w = rng.integers(0, 4, n)
    assert stats.weighted_auc(y, s, w) == pytest.approx(brute_weighted_auc(y, s, w), abs=1e-12)
    # integer weights = the data with each event repeated w times
    rep = np.repeat(np.arange(n), w)
    assert stats.weighted_auc(y, s, w) == pytest.approx(metrics.auc(y[rep], s[rep]), abs=1e-12)
    assert stats.weighted_auc(y, s, np.ones(n)) == pytest.approx(metrics.auc(y, s), abs=1e-12)
    s2 = rng.normal(size=n)  # no ties, real weights
    w2 = rng.random(n)
    assert stats.weighted_auc(y, s2, w2) == pytest.approx(brute_weighted_auc(y, s2, w2), abs=1e-12)


def test_weighted_auc_edge_cases():
    assert stats.weighted_auc([1, 0], [0.3, 0.3], [2, 5]) == 0.5
    assert stats.weighted_auc([1, 0, 0], [0.9, 0.1, 0.95], [1, 3, 1]) == pytest.approx(0.75)
    assert math.isnan(stats.weighted_auc([1, 0], [0.3, 0.1], [1, 0]))  # no negative weight
    assert math.isnan(stats.weighted_auc([1, 1], [0.3, 0.1], [1, 1]))


@pytest.mark.parametrize("metric", stats.METRICS)
def test_bootstrap_replicates_equal_metrics_on_the_resampled_data(metric):
    """The vectorised replicate is metrics.<metric> of the data set with user u's events repeated k_u times."""
    rng = np.random.default_rng(5)
    y, g, pa, _ = population(rng, 40, 15)
    pa = np.round(pa, 2)  # ties
    d = stats._validate(y, g, metric, 100, 0.95)
    model = stats._Model(metric, d, np.stack([pa, pa[::-1]]))
    k = rng.multinomial(40, np.full(40, 1 / 40), size=3).astype(np.float64)
    k32 = np.zeros((41, 3), np.float32)
    k32[:40] = k.T
    got = model.replicates(k, k32)
    for s, p in enumerate([pa, pa[::-1]]):
        for b in range(3):
            rows = np.repeat(np.arange(len(y)), k[b][g].astype(int))
            ref = {"auc": metrics.auc, "logloss": metrics.logloss}.get(metric)
            want = ref(y[rows], p[rows]) if ref else metrics.gauc(y[rows], p[rows], g[rows])
            assert got[s, b] == pytest.approx(want, abs=1e-12)


def test_point_estimate_equals_metrics_differences_and_seed_means():
    rng = np.random.default_rng(1)
    y, g, pa, pb = population(rng, 60, 20)
    pa3 = np.stack([pa, sigmoid(np.log(pa / (1 - pa)) + 0.2), pa**1.1])
    for metric in stats.METRICS:
        c = stats.paired_bootstrap(y, g, pa3, pb, metric=metric, n_boot=100)
        want = np.mean([metrics.evaluate(y, p, g)[metric] for p in pa3]) - metrics.evaluate(y, pb, g)[metric]
        assert c.diff == pytest.approx(want, abs=1e-12)
        assert (c.seeds_a, c.seeds_b, c.metric) == (3, 1, metric)
        assert c.ci_low <= c.ci_high


def test_identical_models_swap_and_monotone_transform():
    rng = np.random.default_rng(2)
    y, g, pa, pb = population(rng, 80, 20)
    for metric in stats.METRICS:
        c = stats.paired_bootstrap(y, g, pa, pa, metric=metric, n_boot=200)
        assert (c.diff, c.ci_low, c.ci_high) == (0.0, 0.0, 0.0) and not c.resolved
        ab = stats.paired_bootstrap(y, g, pa, pb, metric=metric, n_boot=200, seed=4)
        ba = stats.paired_bootstrap(y, g, pb, pa, metric=metric, n_boot=200, seed=4, a="b", b="a")
        assert ba.diff == pytest.approx(-ab.diff, abs=1e-12)
        assert (ba.ci_low, ba.ci_high) == pytest.approx((-ab.ci_high, -ab.ci_low), abs=1e-12)
    # a monotone transform of a's scores (a constant added to its logits) leaves the AUC comparisons unchanged
    shifted = sigmoid(np.log(pa / (1 - pa)) + 0.7)
    for metric in ("auc", "gauc"):
        c0 = stats.paired_bootstrap(y, g, pa, pb, metric=metric, n_boot=200)
        c1 = stats.paired_bootstrap(y, g, shifted, pb, metric=metric, n_boot=200)
        assert (c1.diff, c1.ci_low, c1.ci_high) == pytest.approx((c0.diff, c0.ci_low, c0.ci_high), abs=1e-12)
    # ... but not the logloss
    c0 = stats.paired_bootstrap(y, g, pa, pb, metric="logloss", n_boot=100)
    c1 = stats.paired_bootstrap(y, g, shifted, pb, metric="logloss", n_boot=100)
    assert abs(c1.diff - c0.diff) > 1e-3


def test_pairing_narrows_the_interval_of_correlated_models():
    """Same user draw for both models vs independent draws (computed here by brute force)."""
    rng = np.random.default_rng(3)
    y, g, pa, pb = population(rng, 100, 20, noise=0.3)
    paired = stats.paired_bootstrap(y, g, pa, pb, n_boot=300, seed=1)
    users = np.unique(g)
    members = [np.flatnonzero(g == u) for u in users]

    def resampled_auc(p, draw_rng):
        rows = np.concatenate([members[u] for u in draw_rng.integers(0, len(users), len(users))])
        return metrics.auc(y[rows], p[rows])

    r1, r2 = np.random.default_rng(10), np.random.default_rng(11)
    unpaired = np.array([resampled_auc(pa, r1) - resampled_auc(pb, r2) for _ in range(300)])
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert paired.ci_high - paired.ci_low < 0.5 * (hi - lo)
    assert lo < paired.diff < hi and paired.ci_low < paired.diff < paired.ci_high


@pytest.mark.parametrize("metric", ["auc", "gauc"])
def test_coverage_of_a_known_difference(metric):
    r"""Scores s = c_u + d * y + e with e ~ N(0, 1.25) and c_u ~ N(0, 1) per user: pooled AUC is
    Phi(d / sqrt(2 (1 + 1.25))) (pairs across users), the within-user AUC Phi(d / sqrt(2 * 1.25)),
    which gAUC estimates without bias. 60 fresh test sets of 200 users x 20 events, n_boot = 200.
    Nominal coverage 0.95: 60 repetitions miss about 3 times; at least 51 covered (P[Bin(60, .05) >= 10]
    < 0.3 %), and the mean half-width must match 1.96 x the spread of the estimates across repetitions
    (intervals too wide by half, or too narrow, fail).
    """
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    var = 2 * (1 + 1.25) if metric == "auc" else 2 * 1.25
    truth = phi(1.0 / math.sqrt(var)) - phi(0.8 / math.sqrt(var))
    rng = np.random.default_rng(123)
    covered, diffs, half = 0, [], []
    for rep in range(60):
        y, g, pa, pb = population(rng, 200, 20)
        c = stats.paired_bootstrap(y, g, pa, pb, metric=metric, n_boot=200, seed=rep)
        covered += c.ci_low <= truth <= c.ci_high
        diffs.append(c.diff)
        half.append((c.ci_high - c.ci_low) / 2)
    assert covered >= 51, covered
    assert abs(np.mean(diffs) - truth) < 2.5 * np.std(diffs) / math.sqrt(60)
    assert 0.75 < np.mean(half) / (1.96 * np.std(diffs)) < 1.33


def test_seed_resampling_widens_and_seed_determinism():
    rng = np.random.default_rng(4)
    y, g, pa, pb = population(rng, 100, 20)
    la, lb = np.log(pa / (1 - pa)), np.log(pb / (1 - pb))
    # seed-to-seed variation of both models
    pa3 = sigmoid(la[None] + 0.6 * rng.normal(size=(3, len(y))))
    pb3 = sigmoid(lb[None] + 0.6 * rng.normal(size=(3, len(y))))
    on = stats.paired_bootstrap(y, g, pa3, pb3, n_boot=300, seed=7)
    off = stats.paired_bootstrap(y, g, pa3, pb3, n_boot=300, seed=7, resample_seeds=False)
    assert on.diff == off.diff
    assert on.ci_high - on.ci_low >= off.ci_high - off.ci_low
    assert stats.paired_bootstrap(y, g, pa3, pb3, n_boot=300, seed=7) == on
    assert stats.paired_bootstrap(y, g, pa3, pb3, n_boot=300, seed=8) != on
    # identical seed rows: the seed draw is a no-op and S = 3 gives the S = 1 interval
    one = stats.paired_bootstrap(y, g, pa, pb, n_boot=300, seed=7)
    three = stats.paired_bootstrap(y, g, np.stack([pa] * 3), pb, n_boot=300, seed=7)
    assert (three.diff, three.ci_low, three.ci_high) == pytest.approx((one.diff, one.ci_low, one.ci_high), abs=1e-12)
    assert (three.seeds_a, one.seeds_a) == (3, 1)


def _count_models(monkeypatch) -> list:
    """Make ``stats._Model`` record the shape of every model's predictions it is built for; the record."""
    built, real = [], stats._Model

    class Counting(real):
        def __init__(self, metric, d, p):
            built.append(p.shape)
            super().__init__(metric, d, p)

    monkeypatch.setattr(stats, "_Model", Counting)
    return built


@pytest.mark.parametrize("metric", stats.METRICS)
def test_many_pairs_compute_each_models_replicates_once_and_equal_one_pair_calls(metric, monkeypatch):
    rng = np.random.default_rng(5)
    y, g, pa, pb = population(rng, 60, 10)
    la = np.log(pa / (1 - pa))
    preds = {
        "a": pa,
        "b": pb,
        "c3": sigmoid(la[None] + 0.5 * rng.normal(size=(3, len(y)))),  # three seeds
        "d": sigmoid(la + 0.3 * rng.normal(size=len(y))),
        "unused": np.full(len(y), np.nan),  # never named in a pair: never read
    }
    pairs = [("a", "b"), ("c3", "b"), ("a", "c3"), ("d", "a"), ("b", "d")]
    built = _count_models(monkeypatch)
    many = stats.paired_bootstraps(y, g, preds, pairs, metric=metric, n_boot=200, seed=3)
    assert len(built) == 4  # a, b, c3, d: once each, for five pairs
    built.clear()
    one_by_one = [
        stats.paired_bootstrap(y, g, preds[a], preds[b], metric=metric, a=a, b=b, n_boot=200, seed=3) for a, b in pairs
    ]
    assert len(built) == 2 * len(pairs)
    assert many == one_by_one
    assert [(c.seeds_a, c.seeds_b) for c in many] == [(1, 1), (3, 1), (1, 3), (1, 1), (1, 1)]
    # each pair is a true difference: swapping a and b negates it, with the same user draws
    ab, ba = stats.paired_bootstraps(y, g, preds, [("a", "d"), ("d", "a")], metric=metric, n_boot=200, seed=3)
    assert (ab.diff, ab.ci_low, ab.ci_high) == pytest.approx((-ba.diff, -ba.ci_high, -ba.ci_low), abs=1e-12)
    with pytest.raises(ValueError, match=r"no predictions for \['e'\] \(named in pairs\)"):
        stats.paired_bootstraps(y, g, preds, [("a", "e")], metric=metric, n_boot=200)
    with pytest.raises(ValueError, match="unused contains NaN"):
        stats.paired_bootstraps(y, g, preds, [("unused", "a")], metric=metric, n_boot=200)


def test_comparison_text_dict_and_resolved():
    c = stats.Comparison("fm", "vm", "auc", 0.0123, 0.005, 0.019, 0.95, 1000, 1, 3)
    assert c.resolved and c.text() == "+0.0123 [+0.0050, +0.0190]"
    d = stats.Comparison("fm", "vm", "logloss", -0.002, -0.004, 0.001, 0.95, 1000, 1, 3)
    assert not d.resolved and d.text(3) == "-0.002 [-0.004, +0.001] (not resolved)"
    assert stats.Comparison("a", "b", "auc", -0.01, -0.02, -0.001, 0.9, 100, 1, 1).resolved
    out = c.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert out["resolved"] is True and out["n_boot"] == 1000 and out["a"] == "fm"
    rng = np.random.default_rng(0)
    y, g, pa, pb = population(rng, 30, 10)
    real = stats.paired_bootstrap(y, g, pa, pb, n_boot=100).to_dict()
    assert json.loads(json.dumps(real)) == real and all(type(real[k]) is float for k in ("diff", "ci_low"))


def _ok():
    rng = np.random.default_rng(0)
    y, g, pa, pb = population(rng, 30, 10)
    return y, g, pa, pb


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(labels=np.r_[2, np.zeros(299)]), "labels must be 0 or 1"),
        (dict(labels=np.zeros(300)), "labels must contain both classes"),
        (dict(labels=np.zeros((2, 150))), "labels must be 1-D"),
        (dict(users=np.zeros(299)), "users has shape"),
        (dict(preds_a=np.full(299, 0.5)), "preds_a has shape"),
        (dict(preds_b=np.full((2, 299), 0.5)), "preds_b has shape"),
        (dict(preds_b=np.full((1, 2, 300), 0.5)), "preds_b has shape"),
        (dict(preds_a=np.r_[np.nan, np.full(299, 0.5)]), "preds_a contains NaN"),
        (dict(preds_b=np.r_[np.inf, np.full(299, 0.5)]), "preds_b contains NaN or infinite"),
        (dict(preds_a=np.full(300, 1.5), metric="logloss"), "preds_a must be probabilities"),
        (dict(metric="mse"), "metric must be one of auc, gauc, logloss"),
        (dict(level=1.0), "level must be a number in"),
        (dict(level=0), "level must be a number in"),
        (dict(n_boot=0), "n_boot must be an integer >= 100"),
        (dict(n_boot=99), "n_boot must be an integer >= 100"),
        (dict(n_boot=100.0), "n_boot must be an integer"),
        (dict(users=np.arange(300), metric="gauc"), "users: no user has both"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(change, match):
    y, g, pa, pb = _ok()
    kw = dict(labels=y, users=g, preds_a=pa, preds_b=pb, n_boot=100)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        stats.paired_bootstrap(**kw)


def test_bad_calls():
    y, g, pa, pb = _ok()
    with pytest.raises(TypeError):
        stats.paired_bootstrap(y, g, pa, pb, n_bot=1000)  # unknown keyword
    with pytest.raises(TypeError):
        stats.paired_bootstrap(y, g, pa, pb, "auc")  # options are keyword-only
    # too few users: replicates without a user having both classes
    yy, gg = np.r_[1, 0, np.zeros(40)], np.r_[0, 0, np.arange(1, 41)]
    with pytest.raises(ValueError, match="undefined in .* bootstrap replicates"):
        stats.paired_bootstrap(yy, gg, np.linspace(0, 1, 42), np.full(42, 0.5), metric="gauc", n_boot=100)
    with pytest.raises(ValueError, match="weights has shape"):
        stats.weighted_auc([0, 1], [0.1, 0.2], [1])
    with pytest.raises(ValueError, match="weights must be finite and non-negative"):
        stats.weighted_auc([0, 1], [0.1, 0.2], [1, -1])
    with pytest.raises(ValueError, match="scores contains NaN"):
        stats.weighted_auc([0, 1], [0.1, np.nan], [1, 1])


def test_bootstrap_intervals_bracket_the_metric_are_deterministic_and_share_paired_draws():
    rng = np.random.default_rng(7)
    y, g, a, b = population(rng, 200, 8)
    preds = np.stack([a, b])
    ci = stats.bootstrap_intervals(y, g, preds, n_boot=200)
    assert ci.shape == (2, 2)
    for row, (lo, hi) in zip(preds, ci):
        assert lo < metrics.auc(y, row) < hi and hi - lo < 0.2
    np.testing.assert_array_equal(ci, stats.bootstrap_intervals(y, g, preds, n_boot=200))  # fixed seed
    assert not np.array_equal(ci, stats.bootstrap_intervals(y, g, preds, n_boot=200, seed=1))
    # a constant score has AUC 1/2 on every draw: the paired difference's interval is this one shifted
    flat = stats.paired_bootstrap(y, g, a, np.zeros_like(a), n_boot=200)
    np.testing.assert_allclose([flat.ci_low, flat.ci_high], ci[0] - 0.5, atol=1e-12)
    np.testing.assert_allclose(stats.bootstrap_intervals(y, g, a, n_boot=200), ci[:1])  # (N,) is one row
    with pytest.raises(ValueError, match="n_boot must be an integer >= 100"):
        stats.bootstrap_intervals(y, g, preds, n_boot=10)


@pytest.mark.parametrize("metric", stats.METRICS)
def test_memo_keeps_each_models_replicates_and_a_rerun_reads_them_with_identical_results(metric, monkeypatch):
    rng = np.random.default_rng(6)
    y, g, pa, pb = population(rng, 60, 10)
    la = np.log(pa / (1 - pa))
    preds = {"a": pa, "b": pb, "c3": sigmoid(la[None] + 0.5 * rng.normal(size=(3, len(y))))}
    pairs = [("a", "b"), ("c3", "b"), ("a", "c3")]
    plain = stats.paired_bootstraps(y, g, preds, pairs, metric=metric, n_boot=200, seed=3)
    memo = {}
    assert stats.paired_bootstraps(y, g, preds, pairs, metric=metric, n_boot=200, seed=3, memo=memo) == plain
    assert len(memo) == 3 and all(len(k) == 128 for k in memo)
    assert {v.chunks[0].shape[0] for v in memo.values()} == {1, 3}  # one row per seed
    built = _count_models(monkeypatch)
    assert stats.paired_bootstraps(y, g, preds, pairs, metric=metric, n_boot=200, seed=3, memo=memo) == plain
    assert built == []  # every model read from the memo
    # the key covers the predictions, the draws' seed, n_boot and the test set: nothing stale is read
    changed = {**preds, "b": np.clip(pb + 0.01, 0, 1)}
    stats.paired_bootstraps(y, g, changed, pairs, metric=metric, n_boot=200, seed=3, memo=memo)
    assert len(built) == 1 and len(memo) == 4
    built.clear()
    other_seed = stats.paired_bootstraps(y, g, preds, pairs, metric=metric, n_boot=200, seed=4, memo=memo)
    assert len(built) == 3 and other_seed == stats.paired_bootstraps(
        y, g, preds, pairs, metric=metric, n_boot=200, seed=4
    )
    built.clear()
    stats.paired_bootstraps(y, g, preds, pairs, metric=metric, n_boot=300, seed=3, memo=memo)
    stats.paired_bootstraps(
        y[::-1], g, {k: v[..., ::-1] for k, v in preds.items()}, pairs, metric=metric, n_boot=200, seed=3, memo=memo
    )
    assert len(built) == 6
