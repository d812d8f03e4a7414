"""The ``implicit-rec`` command line.

    implicit-rec run [--config FILE] [--set section.key=value ...] [--dataset SPEC] [--preset NAME]
                     [--seeds N] [--out DIR] [--force] [--quiet] [--debug]
                     [--processes P [--coordinator HOST:PORT --process-id I [--coordinator-bind ADDR:PORT]]]
    implicit-rec sweep --run DIR          redo the test-time iteration sweep (and the report)
    implicit-rec report --run DIR         redraw report.md and the plots from metrics.json
    implicit-rec config [--config FILE] [--set ...]   print the effective configuration as TOML
    implicit-rec config --markdown        print the configuration reference (docs/configuration.md)
    implicit-rec train-decentralized ...  train a VM across agents (DSGD; see its --help)
    implicit-rec domain NAME ...          a domain study of the Implicit Models paper (see its --help)

Every command but ``config`` and ``report`` turns on JAX's persistent compilation cache first
(``implicit_rec.compile_cache``: ``$IMPLICIT_REC_JAX_CACHE``, else ``~/.cache/implicit-rec/jax``);
``--no-compile-cache`` (before or after the command's name) turns it off for the invocation and,
through ``IMPLICIT_REC_JAX_CACHE=off`` in the environment, for the processes it starts.

Errors a user can fix -- a bad argument (argparse's too), configuration key, data file or run
directory, or an operating-system error such as a missing or unreadable path -- print one line
``implicit-rec: error: ...`` and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from . import config as config_mod

EPILOG = """configuration: defaults < --config FILE < --set section.key=value < --dataset/--preset/--seeds.
`implicit-rec config` prints every key with its default and meaning; docs/configuration.md documents them."""

# The flags of `run` and `config` that set one configuration key (applied after --set).
FLAGS = {"dataset": "data.dataset", "preset": "data.preset", "seeds": "vm.seeds"}

# The commands that compile nothing (the others turn the persistent compilation cache on first).
NO_COMPILATION = frozenset({"config", "report"})
NO_CACHE_HELP = (
    "compile everything afresh: no persistent compilation cache for this command (and the processes "
    "it starts); the cache is in $IMPLICIT_REC_JAX_CACHE, else ~/.cache/implicit-rec/jax (docs/run.md)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"implicit-rec: error: {message} (see `{self.prog} --help`)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or log lines on the terminal (the run directory's log.txt still gets them)",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _config_args(parser: argparse.ArgumentParser) -> None:
    """--config, --set and the flags of :data:`FLAGS`."""
    config_mod.add_config_args(parser)
    parser.add_argument(
        "--dataset",
        metavar="SOURCE:PATH",
        help="synthetic | taobaoad:DIR | kuaivideo:DIR | amazonelectronics:DIR | interactions:FILE "
        "(= --set data.dataset=...: data.source and data.path)",
    )
    parser.add_argument(
        "--preset", help="tiny | default | large | multihop: the synthetic data (= data.preset; docs/multihop.md)"
    )
    parser.add_argument("--seeds", type=int, help="seeds per VM variant (= vm.seeds)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="implicit-rec",
        description="Implicit vertical models with LoopFM features: train, sweep the test-time iterations, report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--no-compile-cache", action="store_true", help=NO_CACHE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "run",
        help="the whole job: data, FM, store, VMs, sweep, report (resumable)",
        description="data -> FM -> historical store -> VMs (explicit and implicit x none / kd / "
        "loopfm / loopfm+kd) -> explicit baselines -> test-time iteration sweep -> report. "
        "Rerunning the same command resumes an interrupted run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_args(p)
    p.add_argument("--out", default="runs/main", metavar="DIR", help="run directory (default: runs/main)")
    p.add_argument("--force", action="store_true", help="overwrite a finished (or different) run in --out")
    _common(p)
    from .processes import add_process_args

    add_process_args(
        p.add_argument_group(
            "processes (jax.distributed): the FM and VMs train data-parallel over every process's devices "
            "where fm.devices / vm.devices = 0; process 0 writes --out, which every process must read"
        ),
        "processes of the run (P > 1 without --coordinator: launch P on this host)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "sweep",
        help="redo the test-time iteration sweep of a run and its report",
        description="Recompute the sweep (AUC, residual, timing, Lipschitz vs iterations) from the "
        "models saved in a run directory, with its saved configuration; then redraw the report.",
    )
    p.add_argument("--run", required=True, metavar="DIR", help="run directory of `implicit-rec run`")
    _common(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "report",
        help="redraw report.md and the plots of a finished run",
        description="Regenerate report.md and the PNG plots from DIR/metrics.json.",
    )
    p.add_argument("--run", required=True, metavar="DIR", help="run directory of `implicit-rec run`")
    _common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "config",
        help="print the effective configuration (defaults documented) as TOML",
        description="Print the configuration `run` would use, as commented TOML; save it, edit "
        "it and pass it back with --config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_args(p)
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the reference of every key as markdown instead (docs/configuration.md)",
    )
    _common(p)
    p.set_defaults(func=cmd_config)

    from .decentralized import cli as decentralized_cli
    from .domains import cli as domain_cli

    decentralized_cli.add_parser(sub)
    domain_cli.add_parser(sub)
    for command in sub.choices.values():  # also after the command's name (SUPPRESS: keeps a global one)
        command.add_argument("--no-compile-cache", action="store_true", default=argparse.SUPPRESS, help=NO_CACHE_HELP)
    return parser


def tune_allocator() -> bool:
    """``allocator.tune()`` (glibc keeps freed buffers for reuse; ``IMPLICIT_REC_MALLOC=system`` opts
    out), first thing in a command, before JAX starts its threads; a bad value is a ConfigError."""
    from . import allocator

    try:
        return allocator.tune()
    except ValueError as err:
        raise config_mod.ConfigError(str(err)) from None


def compile_cache(args) -> str | None:
    """Turn JAX's persistent compilation cache on for a command that compiles (off with --no-compile-cache).

    The flag sets ``IMPLICIT_REC_JAX_CACHE=off`` in this process's environment, so the worker processes
    of ``train-decentralized`` inherit it. A cache that cannot be used is a warning on stderr, not an
    error. Returns the directory in use, or None.
    """
    from . import compile_cache as cache_mod

    if args.command in NO_COMPILATION:
        return None
    if args.no_compile_cache:
        os.environ[cache_mod.ENV] = "off"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cache_mod.CompileCacheWarning)
        path = cache_mod.enable()
    for w in caught:
        if issubclass(w.category, cache_mod.CompileCacheWarning):
            print(f"implicit-rec: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return path


def effective_config(args) -> config_mod.RunConfig:
    """The configuration of `run` / `config`: defaults < --config < --set < --dataset/--preset/--seeds.

    The dataset's path is checked here, so a bad entry fails before anything is written.
    """
    return config_mod.config_from_args(args, FLAGS)


def cmd_config(args) -> int:
    if args.markdown:
        given = [f"--{flag}" for flag in ("config", *FLAGS) if getattr(args, flag) is not None]
        if given or args.overrides:
            raise config_mod.ConfigError(
                f"--markdown documents the defaults; drop {', '.join(given + ['--set'] * bool(args.overrides))}."
            )
        print(config_mod.markdown_reference(), end="")
        return 0
    print(config_mod.to_toml(effective_config(args)))
    return 0


def cmd_run(args) -> int:
    from .processes import check_process_args

    check_process_args(args)
    cfg = effective_config(args)
    if args.processes > 1:
        _check_spread(cfg, args.processes)
        if args.coordinator is None:
            return _launch_run(args, cfg)
    else:
        _cpu_devices(max(cfg.fm.devices, cfg.vm.devices))
    if args.coordinator is not None:
        import jax

        from .processes import initialize_distributed

        initialize_distributed(args.coordinator, args.processes, args.process_id, args.coordinator_bind)
        args.quiet = args.quiet or args.process_id > 0  # process 0 speaks for the run
        _check_batches(cfg, jax.device_count())  # the same in every process: all stop alike
    rc = _run_here(args, cfg)
    # After an error there is no shutdown: it would wait for the other processes (5 minutes) before
    # the error is printed; they stop at their next barrier, or through JAX's heartbeat.
    if args.coordinator is not None:
        jax.distributed.shutdown()
    return rc


def _run_here(args, cfg: config_mod.RunConfig) -> int:
    """The run in this process (one process of a multi-process run with --coordinator)."""
    from . import pipeline

    if not args.quiet:
        print(
            f"implicit-rec run -> {args.out}\n--- effective configuration ---\n"
            f"{config_mod.to_toml(cfg, comments=False)}--- versions ---\n"
            f"{json.dumps(pipeline.versions())}\n"
        )
    t0 = time.perf_counter()
    result = pipeline.run(args.out, cfg, force=args.force, quiet=args.quiet, command=sys.argv)
    if args.process_id in (None, 0):
        _summary(result, time.perf_counter() - t0)
    return 0


def _check_spread(cfg: config_mod.RunConfig, processes: int) -> None:
    """A multi-process run spreads a model's training over every process's devices (a key of 0);
    1 trains it in each process alone (the same model, P times). Other counts cannot span the job."""
    keys = {"fm.devices": cfg.fm.devices, "vm.devices": cfg.vm.devices}
    bad = [f"{k}={v}" for k, v in keys.items() if v not in (0, 1)]
    if bad:
        raise config_mod.ConfigError(
            f"--processes {processes}: {', '.join(bad)}; a multi-process run trains a model over every "
            "process's devices (0) or in each process alone (1)."
        )
    if all(v == 1 for v in keys.values()):
        raise config_mod.ConfigError(
            f"--processes {processes} with fm.devices=1 and vm.devices=1 would train every model in each "
            "process alone: set --set fm.devices=0 (and/or vm.devices=0) to train data-parallel over "
            "every process's devices, or drop --processes."
        )
    _check_batches(cfg, processes, "--processes")


def _check_batches(cfg: config_mod.RunConfig, devices: int, what: str = "the devices of the job") -> None:
    """A batch of a model spread over the job (``devices`` 0) splits evenly over its ``devices``."""
    for section, value in (("fm", cfg.fm), ("vm", cfg.vm)):
        if value.devices == 0 and value.batch_size % devices:
            raise config_mod.ConfigError(
                f"{section}.batch_size={value.batch_size} is not divisible by {what} ({devices}): every "
                f"device takes an equal share of each batch; use a multiple of {devices}."
            )


def _launch_run(args, cfg: config_mod.RunConfig) -> int:
    """``--processes P`` without ``--coordinator``: prepare the run directory and the dataset cache,
    then run P workers on loopback (``--config OUT/config.toml``; CPU devices, one each unless
    JAX_NUM_CPU_DEVICES says otherwise, as JAX_PLATFORMS is cpu unless set) and wait for all; process
    0 prints the run's summary."""
    from . import pipeline
    from .processes import free_port, run_workers

    pipeline.prepare(args.out, cfg, force=args.force, quiet=args.quiet, command=sys.argv)
    coordinator = f"127.0.0.1:{free_port()}"
    argvs = []
    for i in range(args.processes):
        argv = [sys.executable, "-m", "implicit_rec", "run", "--config", str(Path(args.out) / "config.toml")]
        argv += ["--out", str(args.out), "--processes", str(args.processes)]
        argv += ["--coordinator", coordinator, "--process-id", str(i)]
        argvs.append(argv + (["--quiet"] if args.quiet or i else []) + (["--debug"] if args.debug else []))
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")  # P processes on one host: CPU devices, not P claims on its GPUs
    rc = run_workers(argvs, env)
    if rc:
        raise pipeline.RunError(
            f"a worker of the {args.processes}-process run exited with status {rc} (its error is above); "
            "rerun the same command to resume."
        )
    return 0


def _cpu_devices(count: int) -> None:
    """Make ``count`` CPU devices for fm.devices / vm.devices > 1 (as train-decentralized does for its
    agents), unless the user chose a count (JAX_NUM_CPU_DEVICES, XLA_FLAGS) or JAX already started; on
    a GPU or TPU machine the extra CPU devices are unused."""
    if count <= 1 or "JAX_NUM_CPU_DEVICES" in os.environ or "device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", count)  # before the backend starts
    except RuntimeError:  # JAX already started (an in-process call): the mesh names the missing devices
        pass


def cmd_sweep(args) -> int:
    from . import pipeline

    t0 = time.perf_counter()
    _summary(pipeline.rerun_sweep(args.run, quiet=args.quiet), time.perf_counter() - t0)
    return 0


def cmd_report(args) -> int:
    from . import report
    from .pipeline import RunError

    if Path(args.run).exists() and not Path(args.run).is_dir():
        raise RunError(f"--run {args.run} is a file; pass the run directory of `implicit-rec run`.")
    path = Path(args.run) / "metrics.json"
    if not path.is_file():
        raise RunError(f"{path} does not exist; `implicit-rec run --out {args.run}` writes it.")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}.") from None
    try:
        written = report.write_report(metrics, args.run)
    except ValueError as err:
        raise RunError(str(err)) from None
    for p in written:
        print(p)
    return 0


def _summary(result: dict, seconds: float) -> None:
    m = result["metrics"]
    lines = ["", "=" * 72, f"FM ({m['fm']['size']}): test AUC {m['fm']['auc']:.4f}"]
    best = max(m["vms"], key=lambda v: v["auc"])
    lines.append(f"best VM: {best['name']} (seed {best['seed']}) AUC {best['auc']:.4f}, {best['params']:,} params")
    for vm in dict.fromkeys(r["vm"] for r in m["sweep"]):
        for method in dict.fromkeys(r["method"] for r in m["sweep"]):
            rows = [r for r in m["sweep"] if r["vm"] == vm and r["method"] == method and r["seed"] == 0]
            if rows:
                lines.append(
                    f"{vm:>22} {method:>8}: AUC "
                    + "  ".join(f"k={r['iterations']}:{r['auc']:.4f}" for r in rows[:: max(1, len(rows) // 5)])
                )
    lines.append(f"finished in {seconds:.0f} s; wrote:")
    lines += [f"  {p}" for p in result["files"]]
    lines.append("=" * 72)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (``--help`` still exits through SystemExit)."""
    from .checkpoint import CheckpointError
    from .pipeline import RunError, _oserror_text

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    try:
        tune_allocator()
        compile_cache(args)
        return args.func(args)
    except KeyboardInterrupt:
        print("implicit-rec: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    except (config_mod.ConfigError, RunError, CheckpointError, OSError) as err:
        if args.debug:
            raise
        print(f"implicit-rec: error: {_oserror_text(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
