"""LoopFM transfer study: FM + every VM x transfer variant x seed on one dataset.

    python -m experiments.loopfm_transfer [--dataset synthetic] [--preset default] [--seeds 2]
        [--fm-size small[,medium,...]] [--archs mlp,din,implicit] [--history-len 20]
        [--embedding interaction|item] [--fm-days 0-3] [--vm-days 4-6] [--log-from-day D]
        [--kd-on-main] [--out-of-fold K] [--out runs/loopfm]

Writes OUT/metrics.json, OUT/report.md (variant x metric table with seed std, transfer ratios)
and OUT/auc_by_variant.png. The pipeline lives in ``implicit_rec.loopfm.study``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from implicit_rec import config
from implicit_rec.data import load_dataset
from implicit_rec.data.synthetic import PRESETS
from implicit_rec.loopfm import study, transfer
from implicit_rec.models.foundation import FM_SIZES
from implicit_rec.models.vertical import ARCHS

from ._args import directory, integer, names


def summarize(vms: list[dict]) -> dict:
    """name -> {metric: (mean, std, per-seed list)} over seeds."""
    out = {}
    for name in dict.fromkeys(v["name"] for v in vms):
        runs = [v for v in vms if v["name"] == name]
        out[name] = {
            m: {
                "mean": float(np.mean([r[m] for r in runs])),
                "std": float(np.std([r[m] for r in runs])),
                "seeds": [r[m] for r in runs],
            }
            for m in ("auc", "gauc", "logloss")
        }
        out[name]["params"] = runs[0]["params"]
    return out


def report(result: dict, summary: dict, ratios: dict) -> str:
    fm = result["fm"]
    lines = [
        "# LoopFM transfer study",
        "",
        f"FM ({fm['size']}, {fm['params']:,} params): AUC {fm['auc']:.4f}, gAUC {fm['gauc']:.4f}, "
        f"logloss {fm['logloss']:.4f}",
        "",
        "| VM | params | AUC | gAUC | logloss |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['params']:,} | {s['auc']['mean']:.4f} ± {s['auc']['std']:.4f} | "
            f"{s['gauc']['mean']:.4f} ± {s['gauc']['std']:.4f} | "
            f"{s['logloss']['mean']:.4f} ± {s['logloss']['std']:.4f} |"
        )
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


def _days(text: str) -> tuple[int, int]:
    """``"0-3"`` -> the day window [0, 4)."""
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and int(first) <= int(last)):
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST days with 0 <= FIRST <= LAST, e.g. 0-3, got {text!r}.")
    return int(first), int(last) + 1


def _out_of_fold(text: str) -> int:
    """0 (off) or K >= 2 folds."""
    k = integer(0)(text)
    if k == 1:
        raise argparse.ArgumentTypeError("expected 0 (off) or K >= 2 folds, got 1.")
    return k


def _leakage(args) -> list[str]:
    """The run configuration's leakage rules (``config.leakage_problems``) applied to this script's windows."""
    run = config.RunConfig()
    run = dataclasses.replace(
        run,
        fm=dataclasses.replace(run.fm, days=args.fm_days, log_from_day=args.log_from_day, out_of_fold=args.out_of_fold),
        vm=dataclasses.replace(run.vm, days=args.vm_days),
        sweep=dataclasses.replace(run.sweep, baselines=()),
    )
    return config.leakage_problems(run)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help="synthetic | taobaoad:DIR | kuaivideo:DIR | amazonelectronics:DIR | interactions:FILE",
    )
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=integer(1), default=1)
    parser.add_argument(
        "--fm-size",
        default="small",
        type=names(tuple(FM_SIZES)),
        help="one size or a comma list (small,medium,large): one study per FM size",
    )
    parser.add_argument("--archs", default="mlp,din,implicit", type=names(ARCHS))
    parser.add_argument("--fm-days", type=_days, default=(0, 4), help="e.g. 0-3")
    parser.add_argument("--vm-days", type=_days, default=(4, 7), help="e.g. 4-6")
    parser.add_argument(
        "--log-from-day",
        type=integer(0),
        default=None,
        help="first day the FM logs (default: after its window; earlier FM windows = staleness)",
    )
    parser.add_argument("--history-len", type=integer(1), default=20, help="L, logged embeddings per LoopFM feature")
    parser.add_argument("--embedding", default="interaction", choices=["interaction", "item"])
    parser.add_argument("--kd-on-main", action="store_true", help="KD loss on the main head")
    parser.add_argument(
        "--out-of-fold", type=_out_of_fold, default=0, help="K > 1: also log FM-window events out of fold"
    )
    parser.add_argument("--out", default="runs/loopfm", type=directory)
    args = parser.parse_args(argv)
    problems = _leakage(args)
    if problems:
        parser.error(
            "--fm-days/--vm-days/--log-from-day/--out-of-fold (fm.days, vm.days, fm.log_from_day, "
            "fm.out_of_fold in the run configuration's terms): " + "; ".join(problems)
        )
    out = Path(args.out)
    try:
        table = load_dataset(args.dataset, preset=args.preset, cache_dir=out.parent / "cache")
    except (ValueError, FileNotFoundError) as err:  # the loaders name the spec and what they expected
        parser.error(f"--dataset: {err}")
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for size in args.fm_size:
        cfg = study.StudyConfig(
            fm_size=size,
            fm_max_len=min(table.schema.max_len, 100),
            seeds=args.seeds,
            archs=tuple(args.archs),
            fm_days=args.fm_days,
            vm_days=args.vm_days,
            log_from_day=args.log_from_day,
            history_len=args.history_len,
            embedding=args.embedding,
            kd_on_main=args.kd_on_main,
            out_of_fold=args.out_of_fold,
        )
        result = study.run_study(table, cfg, store_dir=out / f"store-{size}")
        summary = summarize(result["vms"])
        ratios = {}
        for arch in cfg.archs:
            variants = {
                t: {m: summary[f"{arch}/{t}"][m]["seeds"] for m in ("auc", "logloss")}
                for t in cfg.transfers
                if f"{arch}/{t}" in summary
            }
            ratios[arch] = transfer.transfer_ratios(
                {"auc": result["fm"]["auc"], "logloss": result["fm"]["logloss"]}, variants
            )
        runs[size] = {
            "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
            **result,
            "summary": summary,
            "transfer_ratio": ratios,
        }
    payload = {"dataset": args.dataset, "preset": args.preset, "runs": runs}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    text = "\n".join(report(r, r["summary"], r["transfer_ratio"]) for r in runs.values())
    if len(runs) > 1:
        text += (
            "\n## Transfer ratio (AUC) by FM size\n\n"
            "| FM size | FM AUC | arch | kd | loopfm | loopfm+kd |\n|---|---:|---|---:|---:|---:|\n"
        )
        for size, r in runs.items():
            for arch, tr in r["transfer_ratio"].items():
                v = tr["auc"]["variants"]
                text += (
                    f"| {size} | {r['fm']['auc']:.4f} | {arch} | "
                    + " | ".join(f"{v[t]['ratio']:.2f}" if t in v else "-" for t in ("kd", "loopfm", "loopfm+kd"))
                    + " |\n"
                )
    (out / "report.md").write_text(text)
    last = list(runs.values())[-1]
    plot(last["summary"], last["fm"]["auc"], out / "auc_by_variant.png")
    print(text)
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'auc_by_variant.png'}")


if __name__ == "__main__":
    main()
