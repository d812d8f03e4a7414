"""LoopFM transfer study: FM + every VM x transfer variant x seed on one dataset.

    python -m experiments.loopfm_transfer [--dataset synthetic] [--preset default] [--seeds 2]
        [--fm-size medium] [--archs mlp,din,implicit] [--out runs/loopfm]

Writes OUT/metrics.json, OUT/report.md (variant x metric table with seed std, transfer ratios)
and OUT/auc_by_variant.png. The pipeline lives in ``implicit_rec.loopfm.study``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from implicit_rec.data import load_dataset
from implicit_rec.loopfm import study, transfer


def summarize(vms: list[dict]) -> dict:
    """name -> {metric: (mean, std, per-seed list)} over seeds."""
    out = {}
    for name in dict.fromkeys(v["name"] for v in vms):
        runs = [v for v in vms if v["name"] == name]
        out[name] = {m: {"mean": float(np.mean([r[m] for r in runs])), "std": float(np.std([r[m] for r in runs])),
                         "seeds": [r[m] for r in runs]} for m in ("auc", "gauc", "logloss")}
        out[name]["params"] = runs[0]["params"]
    return out


def report(result: dict, summary: dict, ratios: dict) -> str:
    fm = result["fm"]
    lines = ["# LoopFM transfer study", "",
             f"FM ({fm['size']}, {fm['params']:,} params): AUC {fm['auc']:.4f}, gAUC {fm['gauc']:.4f}, "
             f"logloss {fm['logloss']:.4f}", "",
             "| VM | params | AUC | gAUC | logloss |", "|---|---:|---:|---:|---:|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['params']:,} | {s['auc']['mean']:.4f} ± {s['auc']['std']:.4f} | "
                     f"{s['gauc']['mean']:.4f} ± {s['gauc']['std']:.4f} | "
                     f"{s['logloss']['mean']:.4f} ± {s['logloss']['std']:.4f} |")
    lines += ["", "## Transfer ratios", ""]
    for arch, r in ratios.items():
        lines += [f"### {arch}", "", transfer.markdown_table(r), ""]
    return "\n".join(lines) + "\n"


def plot(summary: dict, fm_auc: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(summary)
    means = [summary[n]["auc"]["mean"] for n in names]
    stds = [summary[n]["auc"]["std"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    ax.bar(range(len(names)), means, yerr=stds, color="tab:blue", alpha=0.8)
    ax.axhline(fm_auc, color="tab:red", linestyle="--", label="FM")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(min(means + [fm_auc]) - 0.02, max(means + [fm_auc]) + 0.01)
    ax.set_ylabel("test AUC")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--preset", default="default", choices=["tiny", "default", "large"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--fm-size", default="small", choices=["small", "medium", "large"])
    parser.add_argument("--archs", default="mlp,din,implicit")
    parser.add_argument("--out", default="runs/loopfm")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = load_dataset(args.dataset, preset=args.preset, cache_dir=out.parent / "cache")
    cfg = study.StudyConfig(fm_size=args.fm_size, fm_max_len=table.schema.max_len, seeds=args.seeds,
                            archs=tuple(args.archs.split(",")))
    result = study.run_study(table, cfg)
    summary = summarize(result["vms"])
    ratios = {}
    for arch in cfg.archs:
        variants = {t: {m: summary[f"{arch}/{t}"][m]["seeds"] for m in ("auc", "logloss")}
                    for t in cfg.transfers if f"{arch}/{t}" in summary}
        ratios[arch] = transfer.transfer_ratios({"auc": result["fm"]["auc"], "logloss": result["fm"]["logloss"]},
                                                variants)
    payload = {"dataset": args.dataset, "preset": args.preset,
               "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
               **result, "summary": summary, "transfer_ratio": ratios}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    (out / "report.md").write_text(report(result, summary, ratios))
    plot(summary, result["fm"]["auc"], out / "auc_by_variant.png")
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
