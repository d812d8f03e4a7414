"""Report of an ``implicit-rec run``: ``report.md`` and the plots, drawn from ``metrics.json`` alone.

``metrics.json`` schema (version :data:`SCHEMA_VERSION`; :func:`validate_metrics` checks it)::

    dataset         {spec, name, events, test_events}
    config          the effective configuration (as config.toml)
    versions        package versions
    fm              {auc, gauc, logloss, params, size, seconds, examples_per_second}
    vms             [{name, arch, transfer, seed, auc, gauc, logloss, params, epochs, seconds,
                      examples_per_second, hidden, weights, history}]   history: per-epoch records; an
                                                      implicit VM's add eval_converged_fraction,
                                                      eval_mean_nstep, spectral_radius_mean / _max
    baselines       [{vm, seed, transfer, params, hidden, arch, width, match, target, depth, auc, auc_ci_low,
                      auc_ci_high, gauc, logloss, seconds, flops, lipschitz_max, lipschitz_mean}]
                    explicit VMs on the sweep's axes (width chosen to match the sweep.match_arch VM's
                    params or FLOPs: target)
    transfer_ratio  {arch: {"auc" | "neg_logloss": implicit_rec.loopfm.transfer.transfer_ratios(...)}}
    sweep           [{vm, seed, transfer, params, method, iterations, auc, auc_ci_low, auc_ci_high,
                      gauc, logloss, residual, converged_fraction, seconds, flops}]
                                                                 one row per implicit VM x method x k
    lipschitz       [{vm, seed, method, iterations, max, mean}]
    timing          {stages_s: {stage: seconds}, examples_per_second: {vm#seed: ...},
                     fm_examples_per_second, total_s}
    store           {events, dim, kind, dtype, bytes_on_disk}    the FM's historical store (optional)
    ceiling         {available, bayes: {auc, gauc, logloss}, fm_window: {...}, vm_window: {...},
                     fm_len, vm_len, procedure, reason}          what the data allow (implicit_rec.ceiling)
    comparisons     [{a, b, metric, diff, ci_low, ci_high, level, n_boot, seeds_a, seeds_b}]
                    paired differences a - b with bootstrap intervals (implicit_rec.pipeline.compare)

Every AUC table shows the *share of attainable lift* (AUC - 0.5) / (ceiling - 0.5), the ceiling
being the window ceiling of the model's own history length (FM window for the FM, VM window for
the VMs); real data have no ceiling and the report says so.

The entries are the ``to_dict`` of ``implicit_rec.pipeline.RunMetrics`` and its stage records
(``fm`` is an ``FMResult``, which also carries the FM's per-epoch ``history``); :data:`METRICS_SCHEMA`
lists the keys the report reads, and ``tests/test_stages.py`` checks them against those records.

``seconds`` in the sweep (every sweep row has it): median wall time to score the first
``sweep.timing_rows`` test rows at k iterations;
``flops``: per example; ``auc_ci_low`` / ``auc_ci_high``: the AUC's 95% bootstrap interval over test
users (see :mod:`implicit_rec.sweep`). Version 2 added the intervals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import ceiling
from .atomic import atomic_path, write_text_atomic
from .loopfm.transfer import ratios_markdown
from .tables import markdown_table

SCHEMA_VERSION = 2  # 2: auc_ci_low / auc_ci_high in the sweep and baselines rows
METRICS_SCHEMA = {
    "dataset": {"spec", "name", "events", "test_events"},
    "config": {"data", "fm", "vm", "sweep"},
    "fm": {"auc", "gauc", "logloss", "params"},
    "vms": {"name", "arch", "transfer", "auc", "gauc", "logloss", "params", "seed", "examples_per_second"},
    "baselines": {
        "vm",
        "depth",
        "params",
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "gauc",
        "logloss",
        "flops",
        "seconds",
        "lipschitz_max",
    },
    "transfer_ratio": set(),
    "sweep": {
        "vm",
        "method",
        "iterations",
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "gauc",
        "logloss",
        "residual",
        "converged_fraction",
        "seconds",
        "flops",
    },
    "lipschitz": {"vm", "iterations", "max", "mean"},
    "timing": {"stages_s", "examples_per_second", "total_s"},
}
PLOTS = (
    "auc_vs_iterations.png",
    "auc_vs_compute.png",
    "auc_vs_params.png",
    "residual_vs_iterations.png",
    "lipschitz_vs_iterations.png",
    "transfer_ratio.png",
)


def validate_metrics(m: dict) -> None:
    """Raise ValueError naming the first missing key of :data:`METRICS_SCHEMA`."""
    for key, fields in METRICS_SCHEMA.items():
        if key not in m:
            raise ValueError(f"metrics.json has no {key!r} entry.")
        items = m[key] if isinstance(m[key], list) else [m[key]]
        for i, item in enumerate(items):
            missing = fields - set(item)
            if missing:
                raise ValueError(f"metrics.json: {key}[{i}] lacks {sorted(missing)}.")


def _f(x, fmt=".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _interval(row: dict) -> str:
    """``[low, high]`` of a row's AUC interval; n/a when the row has none."""
    lo, hi = row.get("auc_ci_low"), row.get("auc_ci_high")
    return "n/a" if lo is None or hi is None or not math.isfinite(lo) else f"[{lo:.4f}, {hi:.4f}]"


def _mean_std(rows: list[dict], key: str) -> str:
    v = np.asarray([r[key] for r in rows], float)
    return f"{v.mean():.4f} ± {v.std():.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def share_of_lift(auc: float, ceiling_auc: float | None) -> float | None:
    """(AUC - 0.5) / (ceiling - 0.5): the share of the attainable lift above chance; None without a ceiling."""
    if ceiling_auc is None or ceiling_auc <= 0.5:
        return None
    return ceiling.share_of_lift(auc, ceiling_auc)


def _ceiling_auc(m: dict, window: str) -> float | None:
    c = m.get("ceiling")
    return c[window]["auc"] if c and c.get("available") else None


def share_text(auc: float, ceiling_auc: float | None) -> str:
    """The share of attainable lift as '83%', or 'n/a' without a ceiling."""
    share = share_of_lift(auc, ceiling_auc)
    return "n/a" if share is None else f"{100 * share:.0f}%"


def ceiling_lines(c: dict | None) -> list[str]:
    """Markdown lines of a run's ``ceiling`` entry (a table of the Bayes and window ceilings)."""
    if not c:
        return ["No ceiling: this run was made before ceilings were computed.", ""]
    if not c.get("available"):
        return [f"No ceiling: {c.get('reason') or 'real data'} — shares of attainable lift are n/a.", ""]
    rows = [
        (
            name,
            length,
            f"{c[key]['auc']:.4f}",
            f"{c[key]['gauc']:.4f}",
            f"{c[key]['logloss']:.4f}",
        )
        for name, key, length in (
            ("Bayes (true click probability)", "bayes", "all"),
            ("FM window", "fm_window", c["fm_len"]),
            ("VM window", "vm_window", c["vm_len"]),
        )
    ]
    hops = c.get("hops") or {}
    lines = [
        "## What the data allow (test split)",
        "",
        markdown_table(("ceiling", "history", "AUC", "gAUC", "logloss"), rows),
        "",
        f"Window ceilings: {c['procedure']}",
        "",
    ]
    if hops:
        h = sorted(hops, key=int)
        lines += [
            "Depth ceilings (`ceiling.hops`): the oracle that resolves h steps of the data's cascade "
            "(docs/multihop.md):",
            "",
            markdown_table(("h", *h), [("AUC", *(f"{hops[x]:.4f}" for x in h))]),
            "",
        ]
    return lines


def comparison_lines(comparisons: list[dict]) -> list[str]:
    """Markdown lines of a run's ``comparisons``: a − b, its interval and whether it is resolved."""
    rows = [
        (
            c["a"],
            c["b"],
            c["metric"],
            f"{c['diff']:+.4f}",
            f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
            "yes" if c["ci_low"] > 0 or c["ci_high"] < 0 else "not resolved",
        )
        for c in comparisons
    ]
    if not rows:
        return []
    level = comparisons[0]["level"]
    return [
        "## Comparisons",
        "",
        f"Paired differences a − b on the test split with {100 * level:.0f}% bootstrap intervals (test "
        "users drawn with replacement, the same draw for both models, and seeds drawn with replacement "
        "when there are several); 'not resolved' when the interval spans 0.",
        "",
        markdown_table(("a", "b", "metric", "a − b", "95% interval", "resolved"), rows),
        "",
    ]


def markdown(m: dict) -> str:
    fm, cfg = m["fm"], m["config"]
    fm_ceiling, vm_ceiling = _ceiling_auc(m, "fm_window"), _ceiling_auc(m, "vm_window")
    out = [
        f"# implicit-rec run: {m['dataset']['name']}",
        "",
        f"{m['dataset']['events']:,} events, {m['dataset']['test_events']:,} test events; "
        f"{cfg['vm']['seeds']} seed(s) per VM (mean ± std over seeds). Share = share of the attainable "
        "AUC lift, (AUC − 0.5) / (window ceiling − 0.5).",
        "",
        *ceiling_lines(m.get("ceiling")),
        f"**FM** ({fm['size']}, {fm['params']:,} parameters): AUC {fm['auc']:.4f} "
        f"(share {share_text(fm['auc'], fm_ceiling)} of its window's lift), gAUC {fm['gauc']:.4f}, "
        f"logloss {fm['logloss']:.4f}",
        "",
        "## Vertical models",
        "",
    ]
    vm_rows = []
    for name in dict.fromkeys(v["name"] for v in m["vms"]):
        rows = [v for v in m["vms"] if v["name"] == name]
        vm_rows.append(
            (
                name,
                f"{rows[0]['params']:,}",
                _mean_std(rows, "auc"),
                share_text(float(np.mean([r["auc"] for r in rows])), vm_ceiling),
                _mean_std(rows, "gauc"),
                _mean_std(rows, "logloss"),
                f"{np.mean([r['examples_per_second'] for r in rows]):,.0f}",
            )
        )
    out += [markdown_table(("VM", "params", "AUC", "share", "gAUC", "logloss", "train ex/s"), vm_rows), ""]
    out += comparison_lines(m.get("comparisons", []))
    out += ["", "## Transfer ratios (TR = gain / FM gain over the plain VM)", ""]
    for arch, tr in m["transfer_ratio"].items():
        out += [f"### {arch}", "", ratios_markdown(tr), ""]
    sweep_rows = [
        (
            r["vm"],
            r["seed"],
            r["method"],
            r["iterations"],
            f"{r['auc']:.4f}",
            _interval(r),
            share_text(r["auc"], vm_ceiling),
            f"{r['gauc']:.4f}",
            f"{r['logloss']:.4f}",
            f"{r['residual']:.2e}",
            f"{r['converged_fraction']:.2f}",
            _f(r["seconds"], ".3f"),
            f"{r['flops'] / 1e6:.3f}",
        )
        for r in m["sweep"]
    ]
    baseline_rows = [
        (
            b["vm"],
            f"{b['params']:,}",
            b["depth"],
            f"{b['auc']:.4f}",
            _interval(b),
            share_text(b["auc"], vm_ceiling),
            f"{b['gauc']:.4f}",
            f"{b['logloss']:.4f}",
            f"{b['seconds']:.3f}",
            f"{b['flops'] / 1e6:.3f}",
            f"{b['lipschitz_max']:.3f}",
            f"{b['lipschitz_mean']:.3f}",
        )
        for b in m["baselines"]
    ]
    lipschitz_rows = [
        (r["vm"], r["seed"], r["method"], r["iterations"], f"{r['max']:.3f}", f"{r['mean']:.3f}")
        for r in m["lipschitz"]
    ]
    out += [
        "## Test-time iteration sweep",
        "",
        "Implicit VMs at k solver iterations (metrics on the test split; AUC 95% = bootstrap interval "
        "over test users; residual = mean relative residual; seconds = median wall time to score the "
        "test set, front end included; FLOPs per example).",
        "",
        markdown_table(
            (
                "VM",
                "seed",
                "method",
                "k",
                "AUC",
                "AUC 95%",
                "share",
                "gAUC",
                "logloss",
                "residual",
                "converged",
                "seconds",
                "MFLOPs",
            ),
            sweep_rows,
            align="lrlrrrrrrrrrr",
        ),
        "",
        "Explicit baselines (same front end and transfer; depth = hidden layers):",
        "",
        markdown_table(
            (
                "VM",
                "params",
                "depth",
                "AUC",
                "AUC 95%",
                "share",
                "gAUC",
                "logloss",
                "seconds",
                "MFLOPs",
                "Lipschitz max",
                "mean",
            ),
            baseline_rows,
        ),
        "",
        "Empirical Lipschitz constant of x -> z_k (perturbations of the front-end vector):",
        "",
        markdown_table(("VM", "seed", "method", "k", "max", "mean"), lipschitz_rows, align="lrlrrr"),
    ]
    t = m["timing"]
    timing_rows = [(k, f"{v:.1f}") for k, v in t["stages_s"].items()]
    timing_rows.append(("total (this invocation)", f"{t['total_s']:.1f}"))
    out += ["", "## Timing", "", markdown_table(("stage", "seconds"), timing_rows), "", "## Plots", ""]
    out += [f"![{p[:-4]}]({p})" for p in PLOTS]
    return "\n".join(out) + "\n"


def _curves(m: dict, key: str, source: str = "sweep"):
    """(vm, method) -> (k array, mean over seeds of key); NaN where a row lacks it."""
    groups: dict = {}
    for r in m[source]:
        value = r.get(key)
        groups.setdefault((r["vm"], r["method"]), {}).setdefault(r["iterations"], []).append(
            np.nan if value is None else value
        )
    return {g: (np.array(sorted(d)), np.array([np.mean(d[k]) for k in sorted(d)])) for g, d in groups.items()}


def _style(vm: str, method: str, names: list[str]):
    import matplotlib.pyplot as plt

    color = plt.get_cmap("tab10")(names.index(vm) % 10)
    return {"color": color, "linestyle": "-" if method == "anderson" else "--", "marker": "o", "markersize": 3}


def plot_auc_vs_flops(ax, m: dict, names: list[str]) -> None:
    """Test AUC against FLOPs per example on ``ax``: each implicit VM (and method) a curve over k
    (the first of each VM labelled with k) in a band of its 95% interval (means over seeds), each explicit baseline a
    labelled point (means over its seeds) with its interval as an error bar; the axis spans k >= 1."""
    auc, low, high = _curves(m, "auc"), _curves(m, "auc_ci_low"), _curves(m, "auc_ci_high")
    labelled = set()  # k is written beside the first curve of each VM only
    for (vm, method), (k, flops) in _curves(m, "flops").items():
        style = _style(vm, method, names)
        ax.plot(flops, auc[vm, method][1], label=f"{vm} ({method})", **style)
        band = low[vm, method][1], high[vm, method][1]
        if np.isfinite(band).all():
            ax.fill_between(flops, *band, color=style["color"], alpha=0.15, linewidth=0)
        for x, y, it in zip(flops, auc[vm, method][1], k) if vm not in labelled else ():
            ax.annotate(f"k={it}", (x, y), fontsize=5, xytext=(2, -7), textcoords="offset points")
        labelled.add(vm)
    swept = [r["auc"] for r in m["sweep"] if r["iterations"] > 0]
    floor = min(swept) - 0.02 if swept else -np.inf
    by: dict = {}
    for b in m["baselines"]:
        by.setdefault(b["vm"], []).append(b)
    shown, gone = list(swept), []
    for name, rows in by.items():  # one point per baseline: means over its seeds
        x, y = (float(np.mean([r[key] for r in rows])) for key in ("flops", "auc"))
        lo, hi = (float(np.mean([r.get(key, np.nan) for r in rows])) for key in ("auc_ci_low", "auc_ci_high"))
        if y < floor:  # a failed training would squash the axis: named in the title instead
            gone.append(name.split("/")[0])
            continue
        shown.append(y)
        err = [[y - lo], [hi - y]] if np.isfinite([lo, hi]).all() else None
        ax.errorbar(x, y, yerr=err, fmt="s", color="black", capsize=3, markersize=4, zorder=3)
        ax.annotate(name.split("/")[0], (x, y), fontsize=5, xytext=(4, 3), textcoords="offset points")
    if shown:  # k = 0 (often a constant score) stays below the axis
        ax.set_ylim(bottom=min(shown) - 0.01, top=max(shown) + 0.005)
    if gone:
        ax.set_title(f"off the axis (mean AUC below {floor:.3f}): {', '.join(gone)}", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per example (implicit: k iterations; band and bars: 95% interval)")
    ax.set_ylabel("test AUC")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_all(m: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["vm"] for r in m["sweep"]))
    paths = []

    def save(fig, name):
        fig.tight_layout()
        path = out / name
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
        paths.append(path)

    def iteration_axis(ax):
        ax.set_xscale("symlog", base=2, linthresh=1)
        ax.set_xlim(left=-0.1)
        ax.set_xlabel("test-time iterations k (explicit: depth)")

    def baseline_points(ax, key, x="depth", keep=lambda y: True):
        """One point per baseline (mean over its seeds), labelled; those ``keep`` rejects are left out."""
        by: dict = {}
        for b in m["baselines"]:
            by.setdefault(b["vm"], []).append(b)
        for name, rows in by.items():
            bx, by_ = rows[0][x], float(np.mean([r[key] for r in rows]))
            if keep(by_):
                ax.scatter(bx, by_, marker="s", color="black", zorder=3)
                ax.annotate(name.split("/")[0], (bx, by_), fontsize=5, xytext=(3, 3), textcoords="offset points")

    for key, name, ylabel, log in (
        ("auc", "auc_vs_iterations.png", "test AUC", False),
        ("residual", "residual_vs_iterations.png", "mean relative residual", True),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (vm, method), (k, v) in _curves(m, key).items():
            ax.plot(k, v, label=f"{vm} ({method})", **_style(vm, method, names))
        if key == "auc":
            hops = ((m.get("ceiling") or {}).get("hops")) or {}
            if hops:  # the oracle that resolves h steps of the data's cascade, drawn at k = h
                h = sorted(hops, key=int)
                ax.plot([int(x) for x in h], [hops[x] for x in h], "k:", marker="^", label="h-step oracle (k = h)")
            swept = [r["auc"] for r in m["sweep"] if r["iterations"] > 0]
            # the axis spans the swept k >= 1, the oracle and the baselines near them; k = 0 (often a
            # constant score) and a baseline far below (a failed training) are named, not drawn
            floor = min(swept) - 0.02 if swept else -np.inf
            baseline_points(ax, "auc", keep=lambda y, floor=floor: y >= floor)
            shown = swept + list(hops.values()) + [b["auc"] for b in m["baselines"] if b["auc"] >= floor]
            if shown:
                ax.set_ylim(bottom=min(shown) - 0.01, top=max(shown) + 0.005)
                low = [r["auc"] for r in m["sweep"] if r["auc"] < min(shown) - 0.01]
                gone = sorted({b["vm"].split("/")[0] for b in m["baselines"] if b["auc"] < floor})
                notes = [f"k = 0 (AUC {min(low):.3f}-{max(low):.3f})"] if low else []
                notes += [f"{name} (mean AUC below {floor:.3f})" for name in gone]
                if notes:
                    ax.set_title("off the axis: " + "; ".join(notes), fontsize=8)
        if log:
            ax.set_yscale("log")
        iteration_axis(ax)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        save(fig, name)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_auc_vs_flops(ax, m, names)
    save(fig, "auc_vs_compute.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, marker in ((m["vms"], "o"), (m["baselines"], "s")):
        by = {}
        for v in group:
            by.setdefault(v.get("name", v.get("vm")), []).append(v)
        for name, rows in by.items():
            x, y = rows[0]["params"], np.mean([r["auc"] for r in rows])
            ax.scatter(x, y, marker=marker, color="tab:red" if "implicit" in name else "tab:blue")
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test AUC")
    ax.grid(alpha=0.3)
    save(fig, "auc_vs_params.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (vm, method), (k, v) in _curves(m, "max", "lipschitz").items():
        ax.plot(k, v, label=f"{vm} ({method}) max", **_style(vm, method, names))
    for (vm, method), (k, v) in _curves(m, "mean", "lipschitz").items():
        ax.plot(k, v, alpha=0.5, **{**_style(vm, method, names), "marker": "x"})
    baseline_points(ax, "lipschitz_max")
    iteration_axis(ax)
    ax.set_ylabel("empirical Lipschitz of x -> z_k (max; x marks: mean)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, "lipschitz_vs_iterations.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    archs = list(m["transfer_ratio"])
    variants = [
        v
        for v in ("kd", "loopfm", "loopfm+kd")
        if any(v in tr["auc"]["variants"] for tr in m["transfer_ratio"].values())
    ]
    width = 0.8 / max(len(variants), 1)
    for j, variant in enumerate(variants):
        vals = [m["transfer_ratio"][a]["auc"]["variants"].get(variant, {}).get("ratio", float("nan")) for a in archs]
        ax.bar(np.arange(len(archs)) + j * width, vals, width, label=variant)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(archs)) + width * (len(variants) - 1) / 2, archs)
    ax.set_ylabel("transfer ratio (AUC)")
    if variants:
        ax.legend(fontsize=8)
    else:  # e.g. vm.transfers = ["none"]: nothing to compare with the plain VM
        ax.text(0.5, 0.5, "no transfer variant besides none", ha="center", va="center", transform=ax.transAxes)
    save(fig, "transfer_ratio.png")
    return paths


def write_report(m: dict, out: str | Path) -> list[Path]:
    """Write report.md and the PNG plots into ``out``; returns the paths written."""
    out = Path(out)
    validate_metrics(m)
    paths = plot_all(m, out)
    write_text_atomic(out / "report.md", markdown(m))
    return [out / "report.md", *paths]
