"""``implicit-rec train-decentralized``: DSGD of a VM on N agents (JAX devices), one or more processes.

    implicit-rec train-decentralized --agents 6 --topology ceca-2p                  # 6 virtual CPU devices
    implicit-rec train-decentralized --agents 6 --processes 3                       # launches 3 local processes
    implicit-rec train-decentralized --agents 8 --processes 2 --coordinator H:P --process-id I   # per host
    implicit-rec train-decentralized --agents 6 --unroll-period    # one compiled call per CECA period
    implicit-rec train-decentralized --config run.toml --set dsgd.steps=200 --lr 0.01

The settings are the run configuration's [dsgd] section (and [data], [fm], [vm]): defaults <
``--config FILE`` < ``--set section.key=value`` < the flags, each flag one key (``--lr`` sets
``dsgd.learning_rate``, ``--preset`` sets ``data.preset``; see :data:`FLAGS`).

With ``--processes P`` and no ``--coordinator`` this process is a launcher: it prepares the data
cache (and the FM store for transfer variants), picks a free port on 127.0.0.1 and runs P worker
processes with ``agents / P`` CPU devices each; it writes the effective configuration to
``OUT/config.toml`` and starts every worker with ``--config OUT/config.toml``, so all run the same. Workers join through
``jax.distributed.initialize``; the coordinator binds to 127.0.0.1 unless ``--coordinator-bind``
says otherwise (e.g. ``0.0.0.0:PORT`` for several hosts).

Errors a user can fix are raised as ``ConfigError`` (flags, configuration) or ``RunError`` (data,
devices) and reported by ``implicit_rec.cli.main`` as one line with exit status 2, also when this
module runs as ``python -m implicit_rec.decentralized.cli`` (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import config as config_mod
from ..config import ARCHS, DEFAULT, OPTIMIZERS, SHARDINGS, TRANSFERS, ConfigError, RunConfig
from ..processes import add_process_args, check_process_args, free_port, initialize_distributed, run_workers

HELP = "train a vertical model with decentralized SGD (CECA and other gossip topologies) on N agents"

# flag -> configuration key; a given flag overrides --config and --set
FLAGS = {
    "--agents": "dsgd.agents",
    "--topology": "dsgd.topology",
    "--arch": "dsgd.arch",
    "--transfer": "dsgd.transfer",
    "--shards": "dsgd.shards",
    "--steps": "dsgd.steps",
    "--optimizer": "dsgd.optimizer",
    "--lr": "dsgd.learning_rate",
    "--batch-size": "dsgd.batch_size",
    "--seed": "dsgd.seed",
    "--unroll-period": "dsgd.unroll_period",
    "--log-every": "dsgd.log_every",
    "--eval-every": "dsgd.eval_every",
    "--eval-agent": "dsgd.eval_agent",
    "--dataset": "data.dataset",
    "--preset": "data.preset",
    "--data-seed": "data.seed",
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _default(key: str):
    section, name = key.split(".")
    return getattr(getattr(DEFAULT, section), name)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train-decentralized`` on an argparse subparsers object; sets ``func=run``."""
    from dsgd import TOPOLOGIES

    p = subparsers.add_parser("train-decentralized", help=HELP, description=HELP)

    def key_flag(group, flag: str, help: str = "", **kw):  # a flag that sets a configuration key
        key = FLAGS[flag]
        text = f"{help}{'; ' if help else ''}= {key}, default {_default(key)}"
        group.add_argument(flag, default=None, help=text.replace("%", "%%"), **kw)

    g = p.add_argument_group("configuration (precedence: defaults < --config < --set < the flags below)")
    config_mod.add_config_args(g)
    g = p.add_argument_group("agents and topology")
    key_flag(g, "--agents", "number of agents (devices)", type=int)
    key_flag(g, "--topology", choices=TOPOLOGIES)
    add_process_args(g, "processes sharing the agents (agents %% processes == 0)")
    g = p.add_argument_group("data and model ([data] as in `implicit-rec run`, the VM's [vm] settings)")
    key_flag(g, "--dataset", "dataset spec")
    key_flag(g, "--preset", "synthetic preset")
    key_flag(g, "--data-seed", "synthetic data seed", type=int)
    key_flag(g, "--arch", "VM architecture", choices=ARCHS)
    key_flag(
        g,
        "--transfer",
        "transfer variant; LoopFM/KD variants train the FM and log its store first",
        choices=TRANSFERS,
    )
    key_flag(g, "--shards", "how agents split the training rows", choices=SHARDINGS)
    g.add_argument("--cache-dir", help="dataset cache (default: data.cache_dir, 'auto' = <out>/../cache)")
    g.add_argument("--store", help="FM store directory for transfer variants (read if present, else written)")
    g = p.add_argument_group("training")
    key_flag(g, "--steps", "DSGD iterations", type=int)
    key_flag(g, "--lr", "learning rate of every agent", type=float)
    key_flag(g, "--optimizer", "local update rule of every agent (DSGD: sgd)", choices=OPTIMIZERS)
    key_flag(g, "--batch-size", "batch of every agent", type=int)
    key_flag(g, "--seed", "seed of the model and the batch order", type=int)
    key_flag(
        g,
        "--unroll-period",
        "one compiled call per period with static permutations (no lax.switch); same math",
        action="store_true",
    )
    key_flag(g, "--log-every", type=int)
    key_flag(g, "--eval-every", type=int)
    key_flag(g, "--eval-agent", type=int)
    g.add_argument("--out", default="runs/decentralized", help="output directory (metrics.json, curves.png)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)
    return p


def resolve(args) -> RunConfig:
    """The run configuration: defaults < --config FILE < --set section.key=value < the flags (:data:`FLAGS`)."""
    return config_mod.config_from_args(args, {_dest(flag): key for flag, key in FLAGS.items()})


def _check_dir(flag: str, path) -> None:
    """A directory the run writes into may not exist yet, but neither it nor a parent may be a file."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{flag} {path}: {p} is a file, not a directory; pass a directory.")
            return


def _check_args(args, agents: int) -> None:
    """Flag combinations of a (multi-process) run of ``agents`` agents (the values: the configuration)."""
    if args.processes >= 1 and agents % args.processes:
        raise ConfigError(f"dsgd.agents={agents} (--agents) is not divisible by --processes {args.processes}.")
    check_process_args(args)


def run(args) -> int:
    """Entry point of the subcommand; raises ConfigError / RunError for ``implicit_rec.cli.main``."""
    from dsgd import make_topology

    if args.processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {args.processes}.")
    cfg = resolve(args)
    d = cfg.dsgd
    _check_args(args, d.agents)
    try:
        make_topology(d.topology, d.agents)
    except ValueError as err:  # names the topology and what to use instead
        raise ConfigError(f"dsgd.topology={d.topology!r} with dsgd.agents={d.agents}: {err}") from err
    if args.store is not None and d.transfer == "none":
        raise ConfigError(
            "--store is read only by the transfer variants kd, loopfm and loopfm+kd; "
            "dsgd.transfer is 'none': drop --store or pass --transfer."
        )
    if args.cache_dir is None and cfg.data.cache_dir != "auto":
        args.cache_dir = cfg.data.cache_dir
    for flag, path in (("--out", args.out), ("--cache-dir", args.cache_dir), ("--store", args.store)):
        if path is not None:  # before training, not when the results are written
            _check_dir(flag, path)
    args.no_progress = args.no_progress or args.quiet
    if args.cache_dir is None:
        args.cache_dir = str(Path(args.out).resolve().parent / "cache")
    try:
        if args.processes > 1 and args.coordinator is None:
            return launch(args, cfg)
        return worker(args, cfg)
    except ConfigError:
        raise
    except ValueError as err:  # data spec, devices, shards: things the user can change
        from ..pipeline import RunError  # (the error type implicit_rec.cli.main reports)

        raise RunError(str(err)) from err


def worker(args, cfg: RunConfig) -> int:
    """Run as one process of the job (the only one when --processes 1)."""
    import jax

    local = cfg.dsgd.agents // args.processes
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:
            jax.config.update("jax_num_cpu_devices", local)  # CPU devices; before the backend starts
        except RuntimeError:  # backend already initialized: agent_mesh reports missing devices
            pass
    if args.coordinator is not None and args.processes > 1:
        initialize_distributed(args.coordinator, args.processes, args.process_id, args.coordinator_bind)
    from .train import run_decentralized

    try:
        run_decentralized(
            cfg,
            out=args.out,
            cache_dir=args.cache_dir,
            store_dir=args.store,
            progress=not args.no_progress,
            log=(lambda *a: None) if args.quiet else print,
        )
    finally:
        if args.coordinator is not None and args.processes > 1:
            jax.distributed.shutdown()
    return 0


def worker_argv(args, config_path: Path, coordinator: str, process_id: int) -> list[str]:
    """The command line of one worker: the effective configuration file, coordinator and id."""
    argv = [
        sys.executable,
        "-m",
        "implicit_rec.decentralized.cli",
        "--config",
        str(config_path),
        "--processes",
        str(args.processes),
        "--coordinator",
        coordinator,
        "--process-id",
        str(process_id),
        "--cache-dir",
        args.cache_dir,
        "--out",
        args.out,
    ]
    if args.store:
        argv += ["--store", args.store]
    if args.quiet:
        argv.append("--quiet")
    if args.no_progress or process_id:
        argv.append("--no-progress")
    return argv


def launch(args, cfg: RunConfig) -> int:
    """Prepare data (and the FM store), write OUT/config.toml (the effective configuration), then
    run ``--processes`` workers on loopback with ``--config OUT/config.toml``; wait for all."""
    from ..atomic import write_text_atomic
    from .problem import fit_store, needs_store
    from .train import load_table

    table = load_table(cfg, args.cache_dir)  # fills the cache once, before the workers read it
    if needs_store(cfg.dsgd.transfer):
        args.store = args.store or str(Path(args.out) / "store")
        if not (Path(args.store) / "meta.json").is_file():
            print("training the foundation model for the FM store (LoopFM study functions)")
            fit_store(table, cfg).save(args.store)
    config_path = write_text_atomic(Path(args.out) / "config.toml", config_mod.to_toml(cfg))
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.setdefault("XLA_FLAGS", "")
    return run_workers([worker_argv(args, config_path, coordinator, i) for i in range(args.processes)], env)


def main(argv=None) -> int:
    """``implicit-rec train-decentralized ARGV`` (the worker processes' entry point)."""
    from ..cli import main as cli_main

    return cli_main(["train-decentralized", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
