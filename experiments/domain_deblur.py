"""Deblurring study (Implicit Models paper, image reconstruction): implicit vs explicit vs unrolled.

    python -m experiments.domain_deblur [--preset tiny|default] [--out DIR] [--seed N] [--quiet]

Writes DIR/metrics.json, DIR/report.md, DIR/psnr_vs_iterations.png, DIR/lipschitz_vs_iterations.png
and DIR/examples.png (default DIR: runs/domain-deblur). The study lives in
``implicit_rec.domains.deblur``.

metrics.json keys: domain; config (DeblurConfig fields); data {sizes {train, val, test},
train_images, test_images, crop, scale, kernel {kind, size, param}, noise, source};
models {blurred, wiener {lam}, implicit {converged_fraction, mean_nstep, max_residual, eta, lam,
solver}, explicit, unrolled {"1".."16"}} each with params and psnr (test, dB), all but blurred
also lipschitz_max / lipschitz_mean, the learned ones and wiener val_psnr; sweep [{k, psnr, error (test MSE),
lipschitz_max, lipschitz_mean, residual_mean, residual_max, converged_fraction}]; timing {train_implicit_s,
train_explicit_s,
train_unrolled_s, sweep_s, total_s}.
"""

from __future__ import annotations

import argparse

from implicit_rec.domains import deblur

from ._args import integer, output_directory


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=deblur.PRESETS)
    parser.add_argument("--out", default="runs/domain-deblur", type=output_directory)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cfg = deblur.preset(args.preset, seed=args.seed)
    log = None if args.quiet else (lambda s: print(s, flush=True))
    metrics, arrays = deblur.run(cfg, log=log)
    out = deblur.write_outputs(args.out, metrics, arrays)
    if not args.quiet:
        print(deblur.report(metrics))
        print(f"wrote {', '.join(str(out / f) for f in deblur.OUTPUT_FILES)}")
    return metrics


if __name__ == "__main__":
    main()
