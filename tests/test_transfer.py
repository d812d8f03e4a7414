"""Transfer ratios and the gain decomposition on hand-computed numbers."""

import numpy as np
import pytest

from implicit_rec.loopfm.transfer import markdown_table, transfer_ratios

FM = {"auc": 0.70, "logloss": 0.40}
VARIANTS = {"none": {"auc": 0.60, "logloss": 0.50}, "kd": {"auc": 0.62, "logloss": 0.48},
            "loopfm": {"auc": 0.65, "logloss": 0.47}, "loopfm+kd": {"auc": 0.66, "logloss": 0.45}}


def test_ratios_and_decomposition():
    r = transfer_ratios(FM, VARIANTS)
    auc = r["auc"]
    assert auc["delta"] == pytest.approx(0.10)
    assert auc["variants"]["kd"]["ratio"] == pytest.approx(0.2)
    assert auc["variants"]["loopfm"]["ratio"] == pytest.approx(0.5)
    assert auc["variants"]["none"]["ratio"] == pytest.approx(0.0)
    d = auc["decomposition"]
    assert d["interaction"] == pytest.approx(0.06 - 0.02 - 0.05)
    # -logloss: lower logloss is a positive gain
    nl = r["neg_logloss"]
    assert nl["delta"] == pytest.approx(0.10)
    assert nl["variants"]["loopfm+kd"]["gain"] == pytest.approx(0.05)
    assert nl["variants"]["loopfm+kd"]["ratio"] == pytest.approx(0.5)
    assert "loopfm+kd" in markdown_table(r)


def test_per_seed_ratios_pair_seeds():
    variants = {"none": {"auc": [0.60, 0.62], "logloss": [0.5, 0.5]},
                "kd": {"auc": [0.63, 0.63], "logloss": [0.49, 0.48]}}
    r = transfer_ratios(FM, variants)["auc"]
    # deltas per seed 0.10, 0.08; gains 0.03, 0.01 -> ratios 0.3, 0.125
    assert r["variants"]["kd"]["ratio_mean"] == pytest.approx((0.3 + 0.125) / 2)
    assert r["variants"]["kd"]["ratio_std"] == pytest.approx(np.std([0.3, 0.125]))
    assert r["variants"]["kd"]["ratio"] == pytest.approx(0.02 / 0.09)


def test_fm_not_better_gives_nan_with_warning():
    r = transfer_ratios({"auc": 0.55, "logloss": 0.6}, VARIANTS)
    assert r["auc"]["warning"] and np.isnan(r["auc"]["variants"]["kd"]["ratio"])
    with pytest.raises(ValueError, match="base VM"):
        transfer_ratios(FM, {"kd": VARIANTS["kd"]})
