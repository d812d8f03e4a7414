"""Transfer analysis: how much of the FM's advantage a VM captures with each transfer method.

For a metric M (AUC, or -logloss so that higher is better):
    gain        G(T) = M(VM + T) - M(VM)
    FM gain     Delta = M(FM) - M(VM)
    ratio       TR(T) = G(T) / Delta
    decomposition  G(kd+loopfm) = G(kd) + G(loopfm) + I   (I: interaction / overlap)
With several seeds, M(VM + T) and M(VM) are paired by seed index: ratios are reported per seed
(mean and std) and as the ratio of the mean gains. If Delta <= 0 (the FM is not better than the
base VM) ratios are NaN and a warning says why.
"""

from __future__ import annotations

import numpy as np

METRICS = ("auc", "logloss")


def _signed(metric: str, values) -> np.ndarray:
    v = np.atleast_1d(np.asarray(values, np.float64))
    return -v if metric == "logloss" else v  # M = -logloss: higher is better


def transfer_ratios(fm: dict, variants: dict[str, dict], base: str = "none") -> dict:
    """Gains and transfer ratios of every variant against ``variants[base]``.

    Args:
      fm: {"auc": float, "logloss": float} of the FM on the same test events.
      variants: variant name -> {"auc": value or per-seed list, "logloss": ...}; must include ``base``.
    Returns:
      {"<metric>": {"delta": ..., "variants": {name: {"gain", "gain_std", "ratio", "ratio_mean",
       "ratio_std"}}, "decomposition": {...} or None, "warning": str or None}} where metric is
       "auc" or "neg_logloss".
    """
    if base not in variants:
        raise ValueError(f"variants must include the base VM {base!r}; got {sorted(variants)}.")
    out = {}
    for metric in METRICS:
        name = "neg_logloss" if metric == "logloss" else metric
        base_v = _signed(metric, variants[base][metric])
        delta_seeds = _signed(metric, fm[metric])[0] - base_v
        delta = float(np.mean(delta_seeds))
        warning = None
        if delta <= 1e-12:
            warning = (f"the FM is not better than the base VM on {name} (Delta = {delta:.3g}); "
                       "transfer ratios are undefined")
        rows = {}
        for variant, values in variants.items():
            v = _signed(metric, values[metric])
            n = min(len(v), len(base_v))
            gains = v[:n] - base_v[:n]
            per_seed = gains / delta_seeds[:n] if warning is None else np.full(n, np.nan)
            rows[variant] = {"gain": float(np.mean(gains)), "gain_std": float(np.std(gains)),
                             "ratio": float(np.mean(gains) / delta) if warning is None else float("nan"),
                             "ratio_mean": float(np.mean(per_seed)), "ratio_std": float(np.std(per_seed))}
        out[name] = {"delta": delta, "variants": rows, "warning": warning,
                     "decomposition": decomposition(rows) if {"kd", "loopfm", "loopfm+kd"} <= set(rows) else None}
    return out


def decomposition(rows: dict) -> dict:
    """G(kd+loopfm) = G(kd) + G(loopfm) + I, from the gains of one metric."""
    g_kd, g_lf, g_both = rows["kd"]["gain"], rows["loopfm"]["gain"], rows["loopfm+kd"]["gain"]
    return {"kd": g_kd, "loopfm": g_lf, "loopfm+kd": g_both, "interaction": g_both - g_kd - g_lf}


def markdown_table(result: dict) -> str:
    """One table per metric: variant, gain, TR (ratio of mean gains), TR per seed mean +- std."""
    lines = []
    for metric, r in result.items():
        lines += [f"{metric}: FM gain Delta = {r['delta']:+.4f}" + (f" ({r['warning']})" if r["warning"] else ""),
                  "", "| variant | gain | TR | TR per seed |", "|---|---:|---:|---:|"]
        for name, v in r["variants"].items():
            lines.append(f"| {name} | {v['gain']:+.4f} ± {v['gain_std']:.4f} | {v['ratio']:.2f} | "
                         f"{v['ratio_mean']:.2f} ± {v['ratio_std']:.2f} |")
        if r["decomposition"]:
            d = r["decomposition"]
            lines += ["", f"G(loopfm+kd) {d['loopfm+kd']:+.4f} = G(kd) {d['kd']:+.4f} + G(loopfm) "
                          f"{d['loopfm']:+.4f} + I {d['interaction']:+.4f}"]
        lines.append("")
    return "\n".join(lines)
