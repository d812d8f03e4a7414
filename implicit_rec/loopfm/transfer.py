r"""Transfer analysis: how much of the FM's advantage a vertical model (VM) captures per transfer method.

Working definitions (the paper's exact formula is not public; see notes/papers.md §1). For a metric
M where higher is better — M = AUC, and M = −logloss (reported as ``"neg_logloss"``):

.. math::
    G(T) = M(\mathrm{VM}+T) - M(\mathrm{VM}), \qquad
    \Delta = M(\mathrm{FM}) - M(\mathrm{VM}), \qquad
    \mathrm{TR}(T) = G(T) / \Delta,

and the gain decomposition

.. math::
    G(\mathrm{kd{+}loopfm}) = G(\mathrm{kd}) + G(\mathrm{loopfm}) + I,

where I > 0 means the two channels are complementary (super-additive) and I < 0 that they overlap.
Dividing by Δ gives the same identity in transfer-ratio units.

Variants are named ``"none"`` (the base VM), ``"kd"``, ``"loopfm"`` and ``"loopfm+kd"``
(``"kd+loopfm"`` is accepted as an alias in :func:`decomposition`); any other names get gains
and ratios too.

Seeds: every metric value may be a scalar or a per-seed list. Lists are paired by seed index with
the base VM (and with the FM when it also has per-seed values); a length-1 value is broadcast.
Two aggregates are reported:

* ``ratio`` — ratio of means, mean_s G_s / mean_s Δ_s (the headline number, stable when Δ is small);
* ``ratio_mean`` / ``ratio_std`` — mean and (population, ddof=0) std of the per-seed ratios G_s / Δ_s.

Δ ≤ 0: when the FM is not better than the base VM (|Δ| < ``tol`` = 1e-12 counts as zero) a transfer
ratio is meaningless, so ratios are NaN and the metric's ``warning`` says why; gains are still
reported. Seeds whose own Δ_s ≤ 0 get a NaN per-seed ratio, are left out of ``ratio_mean`` /
``ratio_std`` and are named in the warning.
"""

from __future__ import annotations

import math

import numpy as np

from ..tables import markdown_table

__all__ = ["transfer_ratios", "decomposition", "ratios_markdown"]

METRICS = {"auc": "auc", "logloss": "neg_logloss"}  # input key -> reported metric (higher is better)
BOTH = ("loopfm+kd", "kd+loopfm")


def _values(x, what: str) -> np.ndarray:
    """Per-seed values of one metric as a finite 1-D float array."""
    try:
        v = np.atleast_1d(np.asarray(x, np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number or a list of per-seed numbers; got {x!r}.") from None
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{what} must be a number or a non-empty 1-D list of per-seed numbers; got {x!r}.")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} contains NaN or infinite values: {x!r}.")
    return v


def _pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Pair per-seed arrays by index, broadcasting a single value."""
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        raise ValueError(
            f"{what}: cannot pair {len(a)} seeds with {len(b)} seeds "
            "(per-seed lists must have equal length, or one side a single value)."
        )
    return np.broadcast_arrays(a, b)


def _signed(metric: str, v: np.ndarray) -> np.ndarray:
    return -v if metric == "logloss" else v  # M = -logloss: higher is better


def _std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.std(x)) if x.size else float("nan")


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else float("nan")


def transfer_ratios(fm: dict, vm_results: dict[str, dict], base: str = "none", tol: float = 1e-12) -> dict:
    r"""Gains G(T) and transfer ratios TR(T) = G(T)/Δ of every variant against ``vm_results[base]``.

    Args:
      fm: ``{"auc": ..., "logloss": ...}`` of the FM on the same test events (scalars or per-seed lists).
      vm_results: variant name -> ``{"auc": ..., "logloss": ...}``, each a scalar or a per-seed list;
        must contain ``base``. Extra keys (e.g. ``"gauc"``) are ignored.
      base: the variant that is the plain VM.
      tol: |Δ| below this counts as zero.

    Returns:
      ``{"auc": R, "neg_logloss": R}`` with R =
      ``{"fm": mean M(FM), "base": mean M(VM), "delta": mean Δ, "delta_std": ..., "n_seeds": ...,
      "warning": str or None, "variants": {name: {"value", "gain", "gain_std", "gains", "ratio",
      "ratio_mean", "ratio_std", "ratios"}}, "decomposition": dict or None}`` — every value in M
      units (for neg_logloss, ``value`` is −logloss); ``gains`` / ``ratios`` are the per-seed lists.
      ``decomposition`` is filled when "kd", "loopfm" and "loopfm+kd" are all present.
    """
    if base not in vm_results:
        raise ValueError(f"vm_results must include the base VM {base!r}; got {sorted(vm_results)}.")
    out = {}
    for key, name in METRICS.items():
        if key not in fm:
            raise ValueError(f"fm has no {key!r} entry; got keys {sorted(fm)}.")
        for variant, res in vm_results.items():
            if key not in res:
                raise ValueError(f"vm_results[{variant!r}] has no {key!r} entry; got keys {sorted(res)}.")
        fm_v = _signed(key, _values(fm[key], f"fm[{key!r}]"))
        base_v = _signed(key, _values(vm_results[base][key], f"vm_results[{base!r}][{key!r}]"))
        fm_s, base_s = _pair(fm_v, base_v, f"{key} of the FM vs the base VM")
        delta_s = fm_s - base_s
        delta = float(np.mean(fm_v) - np.mean(base_v))
        warning = None
        if delta <= tol:
            how = "equal to" if abs(delta) <= tol else "worse than"
            warning = (
                f"the FM is {how} the base VM on {name} (Delta = {delta:.3g}); transfer ratios "
                "G/Delta are undefined and reported as NaN (gains are still valid)"
            )
            seed_ok = np.zeros(len(delta_s), bool)
        else:
            seed_ok = delta_s > tol
            if not seed_ok.all():
                bad = np.flatnonzero(~seed_ok).tolist()
                warning = (
                    f"Delta <= 0 on {name} for seed(s) {bad}; their per-seed ratios are NaN and "
                    "left out of ratio_mean / ratio_std"
                )
        rows = {}
        for variant, res in vm_results.items():
            v = _signed(key, _values(res[key], f"vm_results[{variant!r}][{key!r}]"))
            v_s, b_s = _pair(v, base_v, f"{key} of {variant!r} vs the base VM {base!r}")
            gains = v_s - b_s
            g_s, d_s = _pair(gains, delta_s, f"{key} of {variant!r} vs the FM")
            ok = np.broadcast_to(seed_ok, d_s.shape)
            ratios = np.where(ok, g_s / np.where(ok, d_s, 1.0), np.nan)  # never divides by Delta_s <= tol
            gain = float(np.mean(v) - np.mean(base_v))
            rows[variant] = {
                "value": float(np.mean(v)),
                "gain": gain,
                "gain_std": _std(gains),
                "gains": gains.tolist(),
                "ratio": gain / delta if delta > tol else float("nan"),
                "ratio_mean": _mean(ratios),
                "ratio_std": _std(ratios),
                "ratios": ratios.tolist(),
            }
        r = {
            "fm": float(np.mean(fm_v)),
            "base": float(np.mean(base_v)),
            "delta": delta,
            "delta_std": _std(delta_s),
            "n_seeds": int(len(delta_s)),
            "warning": warning,
            "variants": rows,
        }
        r["decomposition"] = (
            decomposition(r) if {"kd", "loopfm"} <= set(rows) and any(b in rows for b in BOTH) else None
        )
        out[name] = r
    return out


def decomposition(rows: dict, delta: float | None = None) -> dict:
    r"""Gain decomposition G(kd+loopfm) = G(kd) + G(loopfm) + I of one metric.

    Args:
      rows: either one metric's result from :func:`transfer_ratios` (a dict with ``"variants"`` and
        ``"delta"``) or a mapping variant -> ``{"gain": ..., optional "gains": per-seed list}`` with
        keys "kd", "loopfm" and "loopfm+kd" (or "kd+loopfm").
      delta: FM gain Δ to express the terms as ratios; taken from ``rows["delta"]`` when present.

    Returns:
      ``{"kd": G(kd), "loopfm": G(loopfm), "loopfm+kd": G(kd+loopfm), "interaction": I,
      "interaction_std": std over seeds of I_s (0 with one seed), "interaction_ratio": I/Δ
      (NaN when Δ <= 0 or unknown)}``.
    """
    if "variants" in rows:
        delta = rows.get("delta") if delta is None else delta
        rows = rows["variants"]
    both = next((b for b in BOTH if b in rows), None)
    missing = [k for k in ("kd", "loopfm") if k not in rows] + ([] if both else ["loopfm+kd"])
    if missing:
        raise ValueError(f"decomposition needs variants {missing}; got {sorted(rows)}.")
    g_kd, g_lf, g_both = (float(rows[k]["gain"]) for k in ("kd", "loopfm", both))
    inter = g_both - g_kd - g_lf
    if all("gains" in rows[k] for k in ("kd", "loopfm", both)):
        per = [np.asarray(rows[k]["gains"], np.float64) for k in ("kd", "loopfm", both)]
        try:
            a, b, c = np.broadcast_arrays(*per)
            inter_std = float(np.std(c - a - b))
        except ValueError:
            raise ValueError(f"decomposition: per-seed gains have different lengths {[len(p) for p in per]}.") from None
    else:
        inter_std = 0.0
    ok = delta is not None and math.isfinite(delta) and delta > 1e-12
    return {
        "kd": g_kd,
        "loopfm": g_lf,
        "loopfm+kd": g_both,
        "interaction": inter,
        "interaction_std": inter_std,
        "interaction_ratio": inter / delta if ok else float("nan"),
    }


def _f(x: float, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def ratios_markdown(result: dict) -> str:
    """Markdown report of :func:`transfer_ratios`: one table per metric, then the decomposition.

    Columns: variant, M (mean over seeds), gain ± std, TR (ratio of means), TR per seed mean ± std.
    NaN ratios print as "n/a"; a warning, if any, is printed under the metric's heading.
    """
    lines = []
    for metric, r in result.items():
        lines.append(
            f"**{metric}**: FM {_f(r['fm'], '.4f')}, base VM {_f(r['base'], '.4f')}, "
            f"FM gain Δ = {_f(r['delta'], '+.4f')} ({r['n_seeds']} seed(s))"
        )
        if r["warning"]:
            lines += ["", f"> warning: {r['warning']}"]
        rows = [
            (
                name,
                _f(v["value"], ".4f"),
                f"{_f(v['gain'], '+.4f')} ± {_f(v['gain_std'], '.4f')}",
                _f(v["ratio"], ".3f"),
                f"{_f(v['ratio_mean'], '.3f')} ± {_f(v['ratio_std'], '.3f')}",
            )
            for name, v in r["variants"].items()
        ]
        lines += ["", markdown_table(("variant", metric, "gain", "TR", "TR per seed"), rows)]
        d = r.get("decomposition")
        if d:
            lines += [
                "",
                f"G(loopfm+kd) {d['loopfm+kd']:+.4f} = G(kd) {d['kd']:+.4f} + G(loopfm) "
                f"{d['loopfm']:+.4f} + I {d['interaction']:+.4f} (± {d['interaction_std']:.4f}; "
                f"I/Δ = {_f(d['interaction_ratio'], '+.3f')})",
            ]
        lines.append("")
    return "\n".join(lines)
