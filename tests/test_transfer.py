"""Transfer ratios and the gain decomposition on hand-computed numbers."""

import numpy as np
import pytest

from implicit_rec.loopfm import decomposition, ratios_markdown, transfer_ratios

FM = {"auc": 0.70, "logloss": 0.40}
VARIANTS = {
    "none": {"auc": 0.60, "logloss": 0.50},
    "kd": {"auc": 0.62, "logloss": 0.48},
    "loopfm": {"auc": 0.65, "logloss": 0.47},
    "loopfm+kd": {"auc": 0.66, "logloss": 0.45},
}


def test_auc_gains_ratios_and_decomposition():
    r = transfer_ratios(FM, VARIANTS)
    assert set(r) == {"auc", "neg_logloss"}
    a = r["auc"]
    assert a["delta"] == pytest.approx(0.10) and a["warning"] is None
    v = a["variants"]
    assert v["none"]["gain"] == pytest.approx(0.0) and v["none"]["ratio"] == pytest.approx(0.0)
    assert v["kd"]["gain"] == pytest.approx(0.02) and v["kd"]["ratio"] == pytest.approx(0.2)
    assert v["loopfm"]["gain"] == pytest.approx(0.05) and v["loopfm"]["ratio"] == pytest.approx(0.5)
    assert v["loopfm+kd"]["gain"] == pytest.approx(0.06) and v["loopfm+kd"]["ratio"] == pytest.approx(0.6)
    d = a["decomposition"]
    # 0.06 = 0.02 + 0.05 + I  ->  I = -0.01 (overlap), I/Delta = -0.1
    assert d["kd"] == pytest.approx(0.02) and d["loopfm"] == pytest.approx(0.05)
    assert d["loopfm+kd"] == pytest.approx(0.06)
    assert d["interaction"] == pytest.approx(-0.01) and d["interaction_ratio"] == pytest.approx(-0.1)


def _reference(fm, variants, key):
    """Gains, per-seed ratios and ratio of means of one metric, written out seed by seed."""
    sign = -1.0 if key == "logloss" else 1.0
    seeds = len(variants["none"][key])
    fm_s = [sign * fm[key][s] for s in range(seeds)]
    base_s = [sign * variants["none"][key][s] for s in range(seeds)]
    delta_s = [fm_s[s] - base_s[s] for s in range(seeds)]
    out = {}
    for name, res in variants.items():
        gains = [sign * res[key][s] - base_s[s] for s in range(seeds)]
        out[name] = {
            "gains": gains,
            "ratios": [gains[s] / delta_s[s] for s in range(seeds)],
            "ratio": (sum(gains) / seeds) / (sum(delta_s) / seeds),
        }
    inter_s = [out["loopfm+kd"]["gains"][s] - out["kd"]["gains"][s] - out["loopfm"]["gains"][s] for s in range(seeds)]
    return out, inter_s, sum(delta_s) / seeds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ratios_match_a_seed_by_seed_reference_and_are_affine_invariant(seed):
    """Random per-seed results against a loop-by-loop computation of G_s, Δ_s, G_s/Δ_s and
    mean G / mean Δ; then TR is unchanged by a positive affine change of units M -> a M + b
    (gains scale by a), and the FM itself, entered as a variant, transfers all of Δ (TR = 1)."""
    rng = np.random.default_rng(seed)
    seeds = 4
    fm = {"auc": list(0.80 + 0.02 * rng.random(seeds)), "logloss": list(0.30 + 0.02 * rng.random(seeds))}
    variants = {
        name: {"auc": list(0.60 + 0.15 * rng.random(seeds)), "logloss": list(0.35 + 0.15 * rng.random(seeds))}
        for name in ("none", "kd", "loopfm", "loopfm+kd")
    }
    result = transfer_ratios(fm, variants)
    for key, name in (("auc", "auc"), ("logloss", "neg_logloss")):
        ref, inter_s, delta = _reference(fm, variants, key)
        r = result[name]
        assert r["warning"] is None and r["delta"] == pytest.approx(delta)
        for variant, want in ref.items():
            got = r["variants"][variant]
            assert got["gains"] == pytest.approx(want["gains"])
            assert got["ratios"] == pytest.approx(want["ratios"])
            assert got["ratio"] == pytest.approx(want["ratio"])
            assert got["ratio_mean"] == pytest.approx(np.mean(want["ratios"]))
            assert got["ratio_std"] == pytest.approx(np.std(want["ratios"]))
        d = r["decomposition"]
        assert d["interaction"] == pytest.approx(np.mean(inter_s))
        assert d["interaction_std"] == pytest.approx(np.std(inter_s))
        assert d["interaction_ratio"] == pytest.approx(np.mean(inter_s) / delta)

    scale, shift = 3.0, -0.25
    affine = lambda res: {k: [scale * v + shift for v in vals] for k, vals in res.items()}  # noqa: E731
    moved = transfer_ratios(affine(fm), {k: affine(v) for k, v in variants.items()})
    for name in ("auc", "neg_logloss"):
        for variant, row in result[name]["variants"].items():
            assert moved[name]["variants"][variant]["ratio"] == pytest.approx(row["ratio"])
            assert moved[name]["variants"][variant]["ratios"] == pytest.approx(row["ratios"])
            assert moved[name]["variants"][variant]["gain"] == pytest.approx(scale * row["gain"])
        assert moved[name]["decomposition"]["interaction_ratio"] == pytest.approx(
            result[name]["decomposition"]["interaction_ratio"]
        )

    with_fm = transfer_ratios(fm, {**variants, "fm": fm})
    for name in ("auc", "neg_logloss"):
        fm_row = with_fm[name]["variants"]["fm"]
        assert fm_row["ratio"] == pytest.approx(1.0) and fm_row["ratios"] == pytest.approx([1.0] * seeds)
        assert with_fm[name]["variants"]["none"]["ratio"] == 0.0


def test_neg_logloss_direction_lower_logloss_is_positive_gain():
    nl = transfer_ratios(FM, VARIANTS)["neg_logloss"]
    assert nl["fm"] == pytest.approx(-0.40) and nl["base"] == pytest.approx(-0.50)
    assert nl["delta"] == pytest.approx(0.10)  # FM logloss 0.40 < VM 0.50 -> positive Delta
    assert nl["variants"]["kd"]["gain"] == pytest.approx(0.02)
    assert nl["variants"]["loopfm"]["ratio"] == pytest.approx(0.3)
    assert nl["variants"]["loopfm+kd"]["gain"] == pytest.approx(0.05)
    assert nl["variants"]["loopfm+kd"]["ratio"] == pytest.approx(0.5)
    assert nl["decomposition"]["interaction"] == pytest.approx(0.05 - 0.02 - 0.03)
    # a variant whose logloss got worse has a negative gain and ratio
    worse = transfer_ratios(FM, {"none": VARIANTS["none"], "bad": {"auc": 0.6, "logloss": 0.52}})
    assert worse["neg_logloss"]["variants"]["bad"]["gain"] == pytest.approx(-0.02)
    assert worse["neg_logloss"]["variants"]["bad"]["ratio"] == pytest.approx(-0.2)
    assert worse["auc"]["decomposition"] is None  # kd / loopfm missing


def test_per_seed_ratios_pair_seeds_by_index():
    variants = {
        "none": {"auc": [0.60, 0.62], "logloss": [0.5, 0.5]},
        "kd": {"auc": [0.63, 0.63], "logloss": [0.49, 0.48]},
    }
    r = transfer_ratios(FM, variants)
    a = r["auc"]["variants"]["kd"]
    # FM 0.70 broadcast: Delta_s = 0.10, 0.08; G_s = 0.03, 0.01 -> ratios 0.3, 0.125
    assert a["gains"] == pytest.approx([0.03, 0.01])
    assert a["ratios"] == pytest.approx([0.3, 0.125])
    assert a["ratio_mean"] == pytest.approx((0.3 + 0.125) / 2)
    assert a["ratio_std"] == pytest.approx(np.std([0.3, 0.125]))
    assert a["ratio"] == pytest.approx(0.02 / 0.09)  # ratio of means
    assert a["gain_std"] == pytest.approx(0.01)
    assert r["auc"]["delta_std"] == pytest.approx(0.01) and r["auc"]["n_seeds"] == 2
    nl = r["neg_logloss"]["variants"]["kd"]
    assert nl["ratios"] == pytest.approx([0.1, 0.2]) and nl["ratio_std"] == pytest.approx(0.05)


def test_per_seed_fm_paired_and_decomposition_std():
    fm = {"auc": [0.70, 0.74], "logloss": [0.40, 0.40]}
    variants = {
        "none": {"auc": [0.60, 0.64], "logloss": [0.5, 0.5]},
        "kd": {"auc": [0.62, 0.65], "logloss": [0.48, 0.48]},
        "loopfm": {"auc": [0.65, 0.68], "logloss": [0.47, 0.47]},
        "loopfm+kd": {"auc": [0.66, 0.70], "logloss": [0.45, 0.45]},
    }
    a = transfer_ratios(fm, variants)["auc"]
    assert a["delta"] == pytest.approx(0.10) and a["delta_std"] == pytest.approx(0.0)
    assert a["variants"]["kd"]["ratios"] == pytest.approx([0.2, 0.1])
    d = a["decomposition"]
    # I_s = 0.06-0.02-0.05 = -0.01 and 0.06-0.01-0.04 = 0.01
    assert d["interaction"] == pytest.approx(0.0, abs=1e-12)
    assert d["interaction_std"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="cannot pair 3 seeds with 2"):
        transfer_ratios({"auc": [0.7, 0.7, 0.7], "logloss": 0.4}, variants)
    with pytest.raises(ValueError, match="'kd'.*cannot pair"):
        transfer_ratios(FM, {**variants, "kd": {"auc": [0.6, 0.6, 0.6], "logloss": 0.5}})


def test_fm_not_better_gives_nan_ratios_with_warning():
    r = transfer_ratios({"auc": 0.55, "logloss": 0.45}, VARIANTS)
    a = r["auc"]
    assert "worse than" in a["warning"] and np.isnan(a["variants"]["kd"]["ratio"])
    assert np.isnan(a["variants"]["kd"]["ratio_mean"]) and np.isnan(a["decomposition"]["interaction_ratio"])
    assert a["variants"]["kd"]["gain"] == pytest.approx(0.02)  # gains still reported
    assert r["neg_logloss"]["warning"] is None  # logloss: FM 0.45 < VM 0.50 is still better
    # Delta == 0 (within 1e-12) is not divided by
    eq = transfer_ratios({"auc": 0.60, "logloss": 0.50 + 1e-14}, VARIANTS)
    for m in ("auc", "neg_logloss"):
        assert "equal to" in eq[m]["warning"]
        assert all(np.isnan(v["ratio"]) and np.isnan(v["ratio_mean"]) for v in eq[m]["variants"].values())
    text = ratios_markdown(eq)
    assert "warning" in text and "n/a" in text


def test_seed_with_nonpositive_delta_is_excluded_from_per_seed_stats():
    variants = {
        "none": {"auc": [0.60, 0.70], "logloss": [0.5, 0.5]},
        "kd": {"auc": [0.62, 0.71], "logloss": [0.49, 0.49]},
    }
    a = transfer_ratios({"auc": 0.70, "logloss": 0.4}, variants)["auc"]
    assert "seed(s) [1]" in a["warning"]
    kd = a["variants"]["kd"]
    assert kd["ratios"][0] == pytest.approx(0.2) and np.isnan(kd["ratios"][1])
    assert kd["ratio_mean"] == pytest.approx(0.2) and kd["ratio_std"] == pytest.approx(0.0)
    assert kd["ratio"] == pytest.approx(0.015 / 0.05)  # ratio of means still defined


def test_input_validation():
    with pytest.raises(ValueError, match="base VM 'none'"):
        transfer_ratios(FM, {"kd": VARIANTS["kd"]})
    with pytest.raises(ValueError, match="fm has no 'logloss'"):
        transfer_ratios({"auc": 0.7}, VARIANTS)
    with pytest.raises(ValueError, match=r"vm_results\['kd'\] has no 'auc'"):
        transfer_ratios(FM, {**VARIANTS, "kd": {"logloss": 0.4}})
    with pytest.raises(ValueError, match=r"vm_results\['kd'\]\['auc'\] contains NaN"):
        transfer_ratios(FM, {**VARIANTS, "kd": {"auc": [0.6, float("nan")], "logloss": 0.4}})
    with pytest.raises(ValueError, match="decomposition needs variants"):
        decomposition({"kd": {"gain": 0.1}})


def test_decomposition_from_gains_and_alias():
    d = decomposition({"kd": {"gain": 0.02}, "loopfm": {"gain": 0.05}, "kd+loopfm": {"gain": 0.08}}, delta=0.1)
    assert d["interaction"] == pytest.approx(0.01) and d["interaction_ratio"] == pytest.approx(0.1)
    assert d["interaction_std"] == 0.0
    assert np.isnan(
        decomposition({"kd": {"gain": 0.0}, "loopfm": {"gain": 0.0}, "loopfm+kd": {"gain": 0.0}})["interaction_ratio"]
    )


def test_ratios_markdown():
    text = ratios_markdown(transfer_ratios(FM, VARIANTS))
    assert "**auc**" in text and "**neg_logloss**" in text
    assert "| loopfm+kd | 0.6600 | +0.0600 ± 0.0000 | 0.600 | 0.600 ± 0.000 |" in text
    assert "I -0.0100" in text and "I/Δ = -0.100" in text
