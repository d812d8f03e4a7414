"""``implicit-rec train-decentralized``: DSGD of a VM on N agents (JAX devices), one or more processes.

    implicit-rec train-decentralized --agents 6 --topology ceca-2p                  # 6 virtual CPU devices
    implicit-rec train-decentralized --agents 6 --processes 3                       # launches 3 local processes
    implicit-rec train-decentralized --agents 8 --processes 2 --coordinator H:P --process-id I   # per host
    implicit-rec train-decentralized --agents 6 --unroll-period    # one compiled call per CECA period

With ``--processes P`` and no ``--coordinator`` this process is a launcher: it prepares the data
cache (and the FM store for transfer variants), picks a free port on 127.0.0.1 and runs P worker
processes with ``agents / P`` CPU devices each. Workers join through
``jax.distributed.initialize``; the coordinator binds to 127.0.0.1 unless ``--coordinator-bind``
says otherwise (e.g. ``0.0.0.0:PORT`` for several hosts).

Errors a user can fix are raised as ``ConfigError`` (flags, configuration) or ``RunError`` (data,
devices) and reported by ``implicit_rec.cli.main`` as one line with exit status 2, also when this
module runs as ``python -m implicit_rec.decentralized.cli`` (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from .. import config as config_mod
from ..config import ConfigError
from ..models.vertical import ARCHS, TRANSFERS
from .problem import SHARDINGS, needs_store
from .topology import TOPOLOGIES
from .train import OPTIMIZERS, DecentralizedConfig

HELP = "train a vertical model with decentralized SGD (CECA and other gossip topologies) on N agents"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train-decentralized`` on an argparse subparsers object; sets ``func=run``."""
    d = DecentralizedConfig()
    p = subparsers.add_parser("train-decentralized", help=HELP, description=HELP)
    g = p.add_argument_group("agents and topology")
    g.add_argument("--agents", type=int, default=d.agents, help="number of agents (devices), default %(default)s")
    g.add_argument("--topology", choices=TOPOLOGIES, default=d.topology, help="default %(default)s")
    g.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes sharing the agents (agents %% processes == 0); default %(default)s",
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help="coordinator of a multi-process run")
    g.add_argument("--process-id", type=int, help="this process's index with --coordinator")
    g.add_argument(
        "--coordinator-bind",
        metavar="ADDR:PORT",
        help="address process 0 binds the coordinator to (default 127.0.0.1:PORT)",
    )
    g = p.add_argument_group("data and model (as in `implicit-rec run`; flags override --config/--set)")
    g.add_argument("--config", metavar="FILE", help="TOML run configuration of `implicit-rec run` ([data], [fm], [vm])")
    g.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one configuration key, e.g. --set vm.max_len=25 (repeatable)",
    )
    g.add_argument("--dataset", help=f"dataset spec (= data.dataset), default {d.dataset}")
    g.add_argument("--preset", help=f"synthetic preset (= data.preset), default {d.preset}")
    g.add_argument("--data-seed", type=int, help="synthetic data seed (= data.seed)")
    g.add_argument("--arch", choices=ARCHS, help=f"VM architecture (= the one entry of vm.archs), default {d.arch}")
    g.add_argument(
        "--transfer",
        choices=TRANSFERS,
        help=f"transfer variant (= the one entry of vm.transfers), default {d.transfer}; LoopFM/KD "
        "variants train the FM and log its store first (LoopFM study functions)",
    )
    g.add_argument("--shards", choices=SHARDINGS, default=d.shards, help="how agents split the training rows")
    g.add_argument("--cache-dir", help="dataset cache (default: <out>/../cache)")
    g.add_argument("--store", help="FM store directory for transfer variants (read if present, else written)")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--lr", type=float, help=f"learning rate (= vm.learning_rate), default {d.lr}")
    g.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="local update rule of every agent (DSGD: sgd)"
    )
    g.add_argument(
        "--batch-size",
        type=int,
        help=f"batch of every agent, default {d.batch_size} (a set vm.batch_size is split among agents)",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--unroll-period",
        action="store_true",
        help="one compiled call per period with static permutations (no lax.switch); same math",
    )
    g.add_argument("--log-every", type=int, default=d.log_every)
    g.add_argument("--eval-every", type=int, default=d.eval_every)
    g.add_argument("--eval-agent", type=int, default=d.eval_agent)
    g.add_argument("--out", default="runs/decentralized", help="output directory (metrics.json, curves.png)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)
    return p


def _run_config(args):
    """The `implicit-rec run` configuration (defaults < --config < --set)."""
    return config_mod.load_config(args.config, tuple(args.overrides))


def _one(name: str, flag, chosen: tuple, default_choice: tuple, fallback: str) -> str:
    """One arch/transfer: the flag, else the single entry the configuration sets, else ``fallback``."""
    if flag is not None:
        return flag
    if tuple(chosen) == tuple(default_choice):
        return fallback
    if len(chosen) != 1:
        raise ValueError(
            f"train-decentralized trains one VM: vm.{name}s lists {list(chosen)}; set it to one entry or pass --{name}."
        )
    return chosen[0]


def resolve(args) -> tuple[DecentralizedConfig, object]:
    """(DecentralizedConfig, RunConfig) from flags over --config/--set over defaults."""
    d = DecentralizedConfig()
    run_cfg = _run_config(args)
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(DecentralizedConfig)
        if getattr(args, f.name, None) is not None
    }
    from ..config import DEFAULT

    data, vm = run_cfg.data, run_cfg.vm
    values.setdefault("dataset", data.dataset)
    values.setdefault("preset", data.preset)
    values.setdefault("data_seed", data.seed)
    values["arch"] = _one("arch", args.arch, vm.archs, DEFAULT.vm.archs, d.arch)
    values["transfer"] = _one("transfer", args.transfer, vm.transfers, DEFAULT.vm.transfers, d.transfer)
    values.setdefault("lr", vm.learning_rate)
    if args.batch_size is None and vm.batch_size != DEFAULT.vm.batch_size:
        values["batch_size"] = max(1, vm.batch_size // args.agents)
    if args.cache_dir is None and data.cache_dir != "auto":
        args.cache_dir = data.cache_dir
    cfg = DecentralizedConfig(**values)
    cfg.check()
    return cfg, run_cfg


def study_config(run_cfg, table):
    """The LoopFM study settings (VM window, lengths, widths, FM) of the run configuration."""
    from ..loopfm.study import StudyConfig

    if run_cfg is None:
        return StudyConfig()
    from ..pipeline import study_config as from_run

    return from_run(run_cfg, table.schema.max_len)


def _host_port(flag: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port) with 1 <= port <= 65535, else a ConfigError naming ``flag``."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{flag} must be HOST:PORT with a port in 1..65535, got {value!r}.")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: other processes reach it through a non-loopback address
        return False


def _check_dir(flag: str, path) -> None:
    """A directory the run writes into may not exist yet, but neither it nor a parent may be a file."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{flag} {path}: {p} is a file, not a directory; pass a directory.")
            return


def _check_args(args) -> None:
    """Flag combinations (the values themselves are checked by ``DecentralizedConfig.check``)."""
    if args.agents < 1:
        raise ConfigError(f"--agents must be >= 1, got {args.agents}.")
    if args.processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {args.processes}.")
    if args.agents % args.processes:
        raise ConfigError(f"--agents {args.agents} is not divisible by --processes {args.processes}.")
    if args.coordinator is not None:
        if args.processes == 1:
            raise ConfigError(
                "--coordinator joins a multi-process run: pass --processes P > 1 (the same P "
                "in every process), or drop --coordinator."
            )
        host, _ = _host_port("--coordinator", args.coordinator)
        if args.process_id is None or not 0 <= args.process_id < args.processes:
            raise ConfigError(
                f"--process-id must be in [0, {args.processes}) with --coordinator, got {args.process_id}."
            )
        if args.coordinator_bind is not None:
            _host_port("--coordinator-bind", args.coordinator_bind)
        elif args.process_id == 0 and not _is_loopback(host):
            raise ConfigError(
                f"--coordinator {args.coordinator} is not a loopback address, but process 0 binds "
                "the coordinator to 127.0.0.1 by default: pass --coordinator-bind ADDR:PORT "
                "(e.g. 0.0.0.0:PORT) so the other processes can reach it."
            )
    elif args.process_id is not None:
        raise ConfigError("--process-id needs --coordinator.")
    elif args.coordinator_bind is not None:
        raise ConfigError("--coordinator-bind needs --coordinator (the launcher binds to 127.0.0.1).")


def run(args) -> int:
    """Entry point of the subcommand; raises ConfigError / RunError for ``implicit_rec.cli.main``."""
    from .topology import make_topology

    _check_args(args)
    try:
        cfg, run_cfg = resolve(args)
        make_topology(cfg.topology, cfg.agents)
    except ValueError as err:  # DecentralizedConfig.check and make_topology name the bad setting
        raise ConfigError(str(err)) from err
    if args.store is not None and not needs_store(cfg.transfer):
        raise ConfigError(
            f"--store is read only by the transfer variants kd, loopfm and loopfm+kd; "
            f"transfer is {cfg.transfer!r}: drop --store or pass --transfer."
        )
    for flag, path in (("--out", args.out), ("--cache-dir", args.cache_dir), ("--store", args.store)):
        if path is not None:  # before training, not when the results are written
            _check_dir(flag, path)
    args.no_progress = args.no_progress or args.quiet
    if args.cache_dir is None:
        args.cache_dir = str(Path(args.out).resolve().parent / "cache")
    try:
        if args.processes > 1 and args.coordinator is None:
            return launch(args, cfg, run_cfg)
        return worker(args, cfg, run_cfg)
    except ValueError as err:  # data spec, devices, shards: things the user can change
        from ..pipeline import RunError

        raise RunError(str(err)) from err


def worker(args, cfg: DecentralizedConfig, run_cfg=None) -> int:
    """Run as one process of the job (the only one when --processes 1)."""
    import jax

    local = cfg.agents // args.processes
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:
            jax.config.update("jax_num_cpu_devices", local)  # CPU devices; before the backend starts
        except RuntimeError:  # backend already initialized: agent_mesh reports missing devices
            pass
    if args.coordinator is not None and args.processes > 1:
        port = args.coordinator.rpartition(":")[2]
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.processes,
            process_id=args.process_id,
            coordinator_bind_address=args.coordinator_bind or f"127.0.0.1:{port}",
        )
    from .train import load_table, run_decentralized

    try:
        study = study_config(run_cfg, load_table(cfg, args.cache_dir))
        run_decentralized(
            cfg,
            out=args.out,
            cache_dir=args.cache_dir,
            store_dir=args.store,
            progress=not args.no_progress,
            study=study,
            log=(lambda *a: None) if args.quiet else print,
        )
    finally:
        if args.coordinator is not None and args.processes > 1:
            jax.distributed.shutdown()
    return 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def worker_argv(args, cfg: DecentralizedConfig, coordinator: str, process_id: int) -> list[str]:
    """The command line of one worker: the resolved options plus coordinator and id."""
    argv = [
        sys.executable,
        "-m",
        "implicit_rec.decentralized.cli",
        "--agents",
        str(args.agents),
        "--topology",
        args.topology,
        "--processes",
        str(args.processes),
        "--coordinator",
        coordinator,
        "--process-id",
        str(process_id),
        "--dataset",
        cfg.dataset,
        "--preset",
        cfg.preset,
        "--data-seed",
        str(cfg.data_seed),
        "--arch",
        cfg.arch,
        "--transfer",
        cfg.transfer,
        "--shards",
        cfg.shards,
        "--cache-dir",
        args.cache_dir,
        "--steps",
        str(args.steps),
        "--lr",
        repr(cfg.lr),
        "--optimizer",
        args.optimizer,
        "--batch-size",
        str(cfg.batch_size),
        "--seed",
        str(args.seed),
        "--log-every",
        str(args.log_every),
        "--eval-every",
        str(args.eval_every),
        "--eval-agent",
        str(args.eval_agent),
        "--out",
        args.out,
    ]
    if args.config:
        argv += ["--config", args.config]
    for item in args.overrides:
        argv += ["--set", item]
    if args.store:
        argv += ["--store", args.store]
    if args.quiet:
        argv.append("--quiet")
    if cfg.unroll_period:
        argv.append("--unroll-period")
    if args.no_progress or process_id:
        argv.append("--no-progress")
    return argv


def launch(args, cfg: DecentralizedConfig, run_cfg=None) -> int:
    """Prepare data (and the FM store), then run ``--processes`` workers on loopback; wait for all."""
    from .problem import fit_store, needs_store
    from .train import load_table

    table = load_table(cfg, args.cache_dir)  # fills the cache once, before the workers read it
    if needs_store(cfg.transfer):
        args.store = args.store or str(Path(args.out) / "store")
        if not (Path(args.store) / "meta.json").is_file():
            print("training the foundation model for the FM store (LoopFM study functions)")
            fit_store(table, study_config(run_cfg, table)).save(args.store)
    coordinator = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.setdefault("XLA_FLAGS", "")
    procs = [subprocess.Popen(worker_argv(args, cfg, coordinator, i), env=env) for i in range(args.processes)]
    rc = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                rc = failed[0].returncode
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                break
            time.sleep(0.2)
        for p in procs:
            p.wait()
            rc = rc or p.returncode
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    return rc


def main(argv=None) -> int:
    """``implicit-rec train-decentralized ARGV`` (the worker processes' entry point)."""
    from ..cli import main as cli_main

    return cli_main(["train-decentralized", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
