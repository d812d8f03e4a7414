"""implicit_rec.ceiling: the closed form of the true logit, the logistic fit, Bayes and window ceilings, bad input."""

import dataclasses

import numpy as np
import pytest

from implicit_rec import ceiling
from implicit_rec.data.synthetic import HISTORY_WEIGHTS, Preset, synthetic_events
from implicit_rec.metrics import evaluate

# every user's whole behaviour and order history fits in max_len, and the catalogue is small enough that
# every id is seen in training (no OOV): the full windows are the generator's whole histories
WHOLE = Preset(
    users=40, categories=4, brands=8, ads=30, behaviours_per_day=1.0, impressions_per_day=2.0, max_len=200,
    orders_per_day=0.3,
)  # fmt: skip


@pytest.fixture(scope="module")
def whole():
    return synthetic_events(WHOLE, seed=0)


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


def test_full_windows_reproduce_the_true_logit(whole):
    for seq, _ in whole.schema.all_sequences:
        assert np.all(np.asarray(whole[seq])[:, 0] == 0), f"{seq}: a history is longer than max_len"
        assert not np.any(np.asarray(whole[seq]) == 1), f"{seq}: an OOV id"
    L = whole.schema.max_len
    rows = np.arange(len(whole))
    x = ceiling.window_terms(whole, rows, L, L)
    assert x.shape == (len(whole), len(ceiling.WINDOW_FEATURES))
    np.testing.assert_array_equal(x[:, 0], whole.info["logit_base"])
    assert np.mean(x[:, 4] > 0.1) > 0.5  # the order term is live
    p = np.asarray(whole.info["click_prob"], np.float64)
    np.testing.assert_allclose(x[:, 0] + x[:, 1:] @ HISTORY_WEIGHTS, np.log(p / (1 - p)), atol=1e-4)


def test_windows_only_see_their_entries(tiny):
    rows = np.arange(0, len(tiny), 5)
    none = ceiling.window_terms(tiny, rows, 0, 0)
    np.testing.assert_array_equal(none[:, 1:], 0.0)
    short, full = ceiling.window_terms(tiny, rows, 5, 0), ceiling.window_terms(tiny, rows, 64, 64)
    np.testing.assert_array_equal(short[:, 4], 0.0)  # no orders in the window
    assert np.all(short[:, 1] <= full[:, 1]) and np.any(short[:, 1] < full[:, 1])  # fewer matches, less affinity
    assert np.any(full[:, 4] > 0)


def test_window_terms_in_blocks_equal_one_pass_and_bound_the_memory(tiny):
    """The terms are per row, so blocks give the same array; a block's intermediates, not all rows',
    are in memory at once (whole, the large preset's training rows took more than 24 GB)."""
    import tracemalloc

    rows = np.arange(len(tiny))[::-1]  # any order: blocks keep it
    whole = ceiling.window_terms(tiny, rows, 32, 32, chunk_rows=len(rows))
    peaks = {}
    for chunk in (len(rows), 7, 256):
        tracemalloc.start()
        x = ceiling.window_terms(tiny, rows, 32, 32, chunk_rows=chunk)
        peaks[chunk] = tracemalloc.get_traced_memory()[1] - x.nbytes
        tracemalloc.stop()
        np.testing.assert_array_equal(x, whole)
    assert peaks[256] < peaks[len(rows)] / 10, peaks
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_rows must be an integer >= 1"):
            ceiling.window_terms(tiny, rows, 4, 0, chunk_rows=bad)


def test_fit_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40_000, 3))
    w = np.array([1.0, -2.0, 0.5, -1.0])  # intercept last
    y = (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-(x @ w[:3] + w[3])))).astype(float)
    np.testing.assert_allclose(ceiling.fit_logistic(x, y), w, atol=0.06)


def test_bayes_is_the_metrics_of_click_prob(tiny):
    rows = tiny.rows("test")
    expected = evaluate(tiny["label"][rows], tiny.info["click_prob"][rows], tiny["user"][rows])
    assert ceiling.bayes(tiny, rows) == expected
    assert expected["auc"] > 0.6


def test_ceilings_report_and_order(tiny):
    c = ceiling.ceilings(tiny, 64, 16)
    assert set(c) == {"bayes", "fm_window", "vm_window", "procedure", "fm_len", "vm_len"}
    assert (c["fm_len"], c["vm_len"]) == (64, 16)
    assert c["fm_window"] == ceiling.window_ceiling(tiny, 64, 64)
    assert c["vm_window"] == ceiling.window_ceiling(tiny, 16, 0)
    for part in ("bayes", "fm_window", "vm_window"):
        assert set(c[part]) == {"auc", "gauc", "logloss"} and 0.5 < c[part]["auc"] < 1


def test_no_click_prob_no_ceiling(tiny):
    real = dataclasses.replace(tiny, info={k: v for k, v in tiny.info.items() if k != "click_prob"})
    assert ceiling.ceilings(real, 64, 16) is None


def test_share_of_lift():
    assert ceiling.share_of_lift(0.6, 0.7) == pytest.approx(0.5)
    assert ceiling.share_of_lift(0.7, 0.7) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ceiling_auc must be a finite AUC above 0.5"):
        ceiling.share_of_lift(0.6, 0.5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: ceiling.window_terms(t, [0, 1], -1, 0), r"main_len must lie in \[0, 64\]"),
        (lambda t: ceiling.window_terms(t, [0, 1], 4, 65), r"order_len must lie in \[0, 64\] .*got 65"),
        (lambda t: ceiling.window_terms(t, [0, 1], 2.5, 0), "main_len must be an integer"),
        (lambda t: ceiling.window_terms(t, [0, len(t)], 4, 4), r"rows must lie in \[0, \d+\)"),
        (lambda t: ceiling.window_terms(t, [-1], 4, 4), r"rows must lie in"),
        (lambda t: ceiling.bayes(t, [0.5, 1.0]), "rows must be a 1-D array of integer row indices"),
        (lambda t: ceiling.ceilings(t, 100, 4), r"fm_len must lie in \[0, 64\]"),
        (lambda t: ceiling.ceilings(t, 8, -2), r"vm_len must lie in"),
    ],
)
def test_bad_arguments_name_the_problem(tiny, call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny)


def test_oracle_terms_are_required(tiny):
    bare = dataclasses.replace(tiny, info={})
    with pytest.raises(ValueError, match="has no info arrays"):
        ceiling.window_terms(bare, [0], 4, 0)
    with pytest.raises(ValueError, match="labels must be 0 or 1 and contain both classes"):
        ceiling.fit_logistic(np.zeros((3, 1)), np.zeros(3))


@pytest.mark.slow
def test_default_preset_fm_window_beats_vm_window():
    table = synthetic_events("default", seed=0)
    c = ceiling.ceilings(table, 100, 25)
    fm, vm, bayes = c["fm_window"]["auc"], c["vm_window"]["auc"], c["bayes"]["auc"]
    assert fm - vm >= 0.03
    assert vm <= fm <= bayes + 0.01
