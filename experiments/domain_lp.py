"""Linear programs: implicit vs explicit GNN, and test error / Lipschitz constant against iterations.

    python -m experiments.domain_lp [--preset tiny|default] [--out runs/domain-lp] [--seed 0]
        [--cache-dir runs/cache/lp] [--quiet]

Writes OUT/metrics.json, OUT/report.md (comparison with the paper's table, per-k sweep
tables), OUT/lp_error_vs_iterations.png and OUT/lp_lipschitz_vs_iterations.png, all at once
(atomic directory). The pipeline lives in ``implicit_rec.domains.lp``.

metrics.json keys: preset, config (every LPConfig field), dataset (train / val / test sizes,
draws, solved_fraction), baselines (greedy_box error), models ({implicit, explicit,
explicit_matched} -> d -> params, width, test_error, best_val_error, train_seconds, history;
explicit: depth, lipschitz_max / _mean; implicit: converged_fraction, mean_nstep), sweep (d ->
rows {k, error, lipschitz_max, lipschitz_mean}), paper (the paper's table), timing (data_s,
total_s, wall_s), plots (PNG names).
"""

from __future__ import annotations

import argparse
import json
import time

from implicit_rec.atomic import atomic_directory
from implicit_rec.domains import lp

from ._args import directory, integer, output_directory


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(lp.PRESETS))
    parser.add_argument("--out", default="runs/domain-lp", type=output_directory)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument(
        "--cache-dir", default="runs/cache/lp", type=directory, help="where generated LPs are cached (.npz)"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    cfg = lp.preset(args.preset, seed=args.seed)
    t0 = time.perf_counter()
    metrics = lp.run(cfg, cache_dir=args.cache_dir, log=log)
    metrics["preset"] = args.preset
    metrics["timing"]["wall_s"] = time.perf_counter() - t0
    with atomic_directory(args.out) as tmp:
        plots = lp.write_plots(metrics, tmp)
        metrics["plots"] = plots
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "report.md").write_text(lp.report_markdown(metrics))
    log(lp.report_markdown(metrics))
    log(f"wrote {args.out}/metrics.json, report.md, {', '.join(plots)}")
    return metrics


if __name__ == "__main__":
    main()
