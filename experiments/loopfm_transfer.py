"""LoopFM transfer study: FM + every VM arch x transfer variant x seed, one study per FM size.

    python -m experiments.loopfm_transfer [--config run.toml] [--set section.key=value ...]
        [--dataset synthetic] [--preset default] [--seeds 5] [--archs mlp,din,implicit]
        [--fm-size small[,medium,...]] [--out runs/loopfm] [--force] [--quiet]

The configuration is the one of ``implicit-rec run`` (``implicit_rec.config``): defaults, then the
TOML file, then each ``--set`` (e.g. ``--set fm.days=[0,4] --set vm.days=[4,7]``: half-open day
windows, ``--set fm.log_from_day=5``, ``--set vm.history_len=8``). The convenience flags are keys:
``--dataset`` = data.dataset, ``--preset`` = data.preset, ``--seeds`` = vm.seeds, ``--archs`` =
vm.archs, ``--fm-size`` = fm.size (a comma list: one study per size). The study trains no explicit
baselines (``sweep.baseline_archs = []``) and 5 seeds per variant by default (``vm.seeds = 5``) — study
defaults that come after the run's defaults and before the TOML file and ``--set``; every
variant is compared with its base VM, LoopFM alone with KD alone, and the FM with the best VM as
paired differences with 95% bootstrap intervals (``implicit_rec.pipeline.compare``).

Each study runs the stages of ``implicit_rec.pipeline`` (data checks, FM, store, VMs) in OUT/SIZE/
(resumable: a rerun reuses the trained models). Writes, atomically, OUT/metrics.json, OUT/report.md
(variant x metric table with seed std, transfer ratios, and by FM size) and OUT/auc_by_variant.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np

from implicit_rec import config, pipeline
from implicit_rec import report as report_mod
from implicit_rec.atomic import atomic_path, write_json_atomic, write_text_atomic
from implicit_rec.loopfm.transfer import ratios_markdown
from implicit_rec.models.foundation import FM_SIZES
from implicit_rec.tables import markdown_table

from ._args import directory, integer, names

# The study's own defaults, applied before --config / --set (as keys, so they show in config.toml).
STUDY_DEFAULTS = ("sweep.baseline_archs=[]", "vm.seeds=5")


def _file_keys(path) -> set[str]:
    """The 'section.key's a TOML configuration file sets; empty if it cannot be read (the loader says why)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()
    return {f"{section}.{key}" for section, body in raw.items() if isinstance(body, dict) for key in body}


def study_defaults(config_file) -> list[str]:
    """``STUDY_DEFAULTS`` less the keys ``config_file`` sets: defaults < study defaults < --config < --set."""
    given = _file_keys(config_file) if config_file else set()
    return [item for item in STUDY_DEFAULTS if item.split("=", 1)[0] not in given]


def summarize(vms: list[dict]) -> dict:
    """name -> {metric: {mean, std, seeds}, params} over seeds."""
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


def report(run: dict) -> str:
    """The markdown of one FM size's study."""
    fm, summary = run["fm"], run["summary"]
    ceiling = run.get("ceiling")
    fm_ceiling, vm_ceiling = (
        (ceiling["fm_window"]["auc"], ceiling["vm_window"]["auc"]) if ceiling and ceiling["available"] else (None, None)
    )

    rows = [
        (
            name,
            f"{s['params']:,}",
            f"{s['auc']['mean']:.4f} ± {s['auc']['std']:.4f}",
            report_mod.share_text(s["auc"]["mean"], vm_ceiling),
            *(f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m in ("gauc", "logloss")),
        )
        for name, s in summary.items()
    ]
    lines = [
        f"# LoopFM transfer study: FM {fm['size']}",
        "",
        *report_mod.ceiling_lines(ceiling),
        f"FM ({fm['size']}, {fm['params']:,} params): AUC {fm['auc']:.4f} "
        f"(share {report_mod.share_text(fm['auc'], fm_ceiling)}), "
        f"gAUC {fm['gauc']:.4f}, "
        f"logloss {fm['logloss']:.4f}; store: {run['store']['events']:,} logged events, "
        f"{run['store']['bytes_on_disk'] / 2**20:.1f} MiB",
        "",
        markdown_table(("VM", "params", "AUC", "share", "gAUC", "logloss"), rows),
        "",
        *report_mod.comparison_lines(run.get("comparisons", [])),
        "## Transfer ratios",
        "",
    ]
    for arch, r in run["transfer_ratio"].items():
        lines += [f"### {arch}", "", ratios_markdown(r), ""]
    return "\n".join(lines) + "\n"


def by_size(runs: dict) -> str:
    """Transfer ratio (AUC) of each arch and variant by FM size."""
    rows = []
    for size, r in runs.items():
        for arch, tr in r["transfer_ratio"].items():
            v = tr["auc"]["variants"]
            ratios = (f"{v[t]['ratio']:.2f}" if t in v else "-" for t in ("kd", "loopfm", "loopfm+kd"))
            rows.append((size, f"{r['fm']['auc']:.4f}", arch, *ratios))
    header = ("FM size", "FM AUC", "arch", "kd", "loopfm", "loopfm+kd")
    return "## Transfer ratio (AUC) by FM size\n\n" + markdown_table(header, rows, align="lrlrrr") + "\n"


def plot(summary: dict, fm_auc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names_ = list(summary)
    means = [summary[n]["auc"]["mean"] for n in names_]
    stds = [summary[n]["auc"]["std"] for n in names_]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names_)), 4))
    ax.bar(range(len(names_)), means, yerr=stds, color="tab:blue", alpha=0.8)
    ax.axhline(fm_auc, color="tab:red", linestyle="--", label="FM")
    ax.set_xticks(range(len(names_)), names_, rotation=45, ha="right")
    ax.set_ylim(min(means + [fm_auc]) - 0.02, max(means + [fm_auc]) + 0.01)
    ax.set_ylabel("test AUC")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def parse(argv=None) -> tuple[argparse.Namespace, config.RunConfig]:
    """The arguments and the study's configuration (flags mapped onto keys, before --set)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config.add_config_args(parser)
    parser.add_argument("--dataset", help="data.dataset")
    parser.add_argument("--preset", help="data.preset")
    parser.add_argument("--seeds", type=integer(1), help="vm.seeds")
    parser.add_argument("--archs", type=names(config.ARCHS), help="vm.archs, a comma list")
    parser.add_argument(
        "--fm-size", type=names(tuple(FM_SIZES)), help="fm.size; a comma list (small,medium): one study per size"
    )
    parser.add_argument("--out", default="runs/loopfm", type=directory)
    parser.add_argument("--force", action="store_true", help="start the studies' run directories over")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    args = parser.parse_args(argv)
    args.overrides = [*study_defaults(args.config), *args.overrides]
    fm_sizes, args.fm_size = args.fm_size, args.fm_size[0] if args.fm_size else None
    flags = {"dataset": "data.dataset", "preset": "data.preset", "seeds": "vm.seeds", "archs": "vm.archs"}
    try:
        cfg = config.config_from_args(args, {**flags, "fm_size": "fm.size"})
    except config.ConfigError as err:
        parser.error(str(err))
    args.fm_size = fm_sizes or [cfg.fm.size]
    for size in args.fm_size[1:]:  # the leakage checks of every study's configuration
        try:
            config.check_run(cfg.replace(fm=dataclasses.replace(cfg.fm, size=size)))
        except config.ConfigError as err:
            parser.error(str(err))
    return args, cfg


def study(out: Path, cfg: config.RunConfig, *, force: bool = False, quiet: bool = False) -> dict:
    """One FM size: the pipeline's LoopFM stages in ``out``; returns its JSON-ready results."""
    run = pipeline.RunDir(out, quiet=quiet)
    run.prepare(cfg, force=force)
    models = pipeline.loopfm_stages(run, cfg)
    vms = [v.to_dict() for v in models.vms]
    return {
        "run_dir": str(out),
        "data": models.data.to_dict(),
        "fm": models.fm.to_dict(),
        "store": models.store_info.to_dict(),
        "vms": vms,
        "summary": summarize(vms),
        "transfer_ratio": pipeline.transfer_ratio(cfg, models.fm, models.vms),
        "ceiling": models.ceiling.to_dict(),
        "comparisons": list(pipeline.comparison_stage(run, models, ())),
    }


def main(argv=None) -> None:
    args, cfg = parse(argv)
    out = Path(args.out)
    if cfg.data.cache_dir == "auto":  # one prepared table for every FM size
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, cache_dir=str(out / "cache")))
    runs, created = {}, not out.exists()
    try:
        for size in args.fm_size:
            sized = cfg.replace(fm=dataclasses.replace(cfg.fm, size=size))
            runs[size] = study(out / size, sized, force=args.force, quiet=args.quiet)
    except pipeline.RunError as err:  # the data or the run directory refused: one line, status 2
        print(f"loopfm_transfer: error: {err}", file=sys.stderr)
        if created:  # refused before any model was trained: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise SystemExit(2) from None
    first = next(iter(runs.values()))
    payload = {"dataset": first["data"], "config": cfg.to_dict(), "runs": runs}
    write_json_atomic(out / "metrics.json", payload)
    text = "\n".join(report(r) for r in runs.values())
    if len(runs) > 1:
        text += "\n" + by_size(runs)
    write_text_atomic(out / "report.md", text)
    last = list(runs.values())[-1]
    plot(last["summary"], last["fm"]["auc"], out / "auc_by_variant.png")
    if not args.quiet:
        print(text)
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'auc_by_variant.png'}")


if __name__ == "__main__":
    main()
