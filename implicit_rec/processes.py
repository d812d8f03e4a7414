"""Multi-process jobs joined by ``jax.distributed``: the flags, their checks, the launcher's pieces.

Shared by ``implicit-rec run`` (data-parallel FM and VM training over every process's devices) and
``implicit-rec train-decentralized`` (agents spread over processes). One command line, three roles:

* ``--processes 1`` (default): one ordinary process.
* ``--processes P`` without ``--coordinator``: a *launcher* on this host. It prepares what every
  worker reads, picks a free port on 127.0.0.1 and runs P workers (:func:`run_workers`).
* ``--processes P --coordinator HOST:PORT --process-id I``: worker I of a job, on any host
  (:func:`initialize_distributed`). Process 0 runs the coordinator, bound to 127.0.0.1 unless
  ``--coordinator-bind ADDR:PORT`` says otherwise (e.g. ``0.0.0.0:PORT`` for several hosts).

Nothing here binds a non-loopback address by default.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import subprocess
import time

from .config import ConfigError


def add_process_args(group, what: str) -> None:
    """``--processes``, ``--coordinator``, ``--process-id`` and ``--coordinator-bind`` on ``group``."""
    group.add_argument("--processes", type=int, default=1, help=f"{what}; default %(default)s")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="coordinator of a multi-process run")
    group.add_argument("--process-id", type=int, help="this process's index with --coordinator")
    group.add_argument(
        "--coordinator-bind",
        metavar="ADDR:PORT",
        help="address process 0 binds the coordinator to (default 127.0.0.1:PORT)",
    )


def host_port(flag: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port) with 1 <= port <= 65535, else a ConfigError naming ``flag``."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{flag} must be HOST:PORT with a port in 1..65535, got {value!r}.")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: other processes reach it through a non-loopback address
        return False


def check_process_args(args) -> None:
    """The combinations of the flags of :func:`add_process_args`; a ConfigError names the flag."""
    if args.processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {args.processes}.")
    if args.coordinator is not None:
        if args.processes == 1:
            raise ConfigError(
                "--coordinator joins a multi-process run: pass --processes P > 1 (the same P "
                "in every process), or drop --coordinator."
            )
        host, _ = host_port("--coordinator", args.coordinator)
        if args.process_id is None or not 0 <= args.process_id < args.processes:
            raise ConfigError(
                f"--process-id must be in [0, {args.processes}) with --coordinator, got {args.process_id}."
            )
        if args.coordinator_bind is not None:
            host_port("--coordinator-bind", args.coordinator_bind)
        elif args.process_id == 0 and not is_loopback(host):
            raise ConfigError(
                f"--coordinator {args.coordinator} is not a loopback address, but process 0 binds "
                "the coordinator to 127.0.0.1 by default: pass --coordinator-bind ADDR:PORT "
                "(e.g. 0.0.0.0:PORT) so the other processes can reach it."
            )
    elif args.process_id is not None:
        raise ConfigError("--process-id needs --coordinator.")
    elif args.coordinator_bind is not None:
        raise ConfigError("--coordinator-bind needs --coordinator (the launcher binds to 127.0.0.1).")


def initialize_distributed(coordinator: str, processes: int, process_id: int, bind: str | None = None) -> None:
    """Join a job of ``processes`` processes through ``jax.distributed.initialize`` (process 0 runs the
    coordinator, bound to ``bind``, default 127.0.0.1 and the port of ``coordinator``); CPU
    collectives: gloo. Call before anything starts JAX's backend."""
    import jax

    port = coordinator.rpartition(":")[2]
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=processes,
        process_id=process_id,
        coordinator_bind_address=bind or f"127.0.0.1:{port}",
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_workers(argvs: list[list[str]], env: dict | None = None, timeout: float | None = None) -> int:
    """Run one process per command line and wait for all; when one fails (or ``timeout`` seconds
    pass) the others are terminated. Returns the first non-zero exit status (-1: timed out), else 0."""
    procs = [subprocess.Popen(argv, env=env) for argv in argvs]
    rc, deadline = 0, None if timeout is None else time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            late = deadline is not None and time.monotonic() > deadline
            if failed or late:
                rc = failed[0].returncode if failed else -1
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


BARRIER_TIMEOUT_S = 7 * 24 * 3600  # a barrier waits for a stage one process computes (a sweep may take hours)
_BARRIERS = itertools.count()  # every process passes the same barriers in the same order


def barrier(name: str, failure: str | None = None, timeout_s: float = BARRIER_TIMEOUT_S) -> list[str]:
    """Wait until every process of the ``jax.distributed`` job reaches its next barrier; returns the
    failures reported at it, as "process I: message".

    A process whose step failed passes ``failure`` (one line), so the others can stop with it
    instead of waiting forever. Processes that reach differently named barriers (their steps went
    apart) get that as a failure too. The wait goes through the job's coordinator (its key-value
    store and barriers), not a device collective: XLA's CPU collectives give up after 30 minutes,
    while a stage that one process computes alone (the sweep) may take hours. A process that dies
    ends the job through the coordinator's heartbeat.
    """
    from jax._src import distributed  # the coordinator's client: the public API offers only device collectives

    state = distributed.global_state
    if state.client is None:
        raise RuntimeError("barrier() needs jax.distributed.initialize() first")
    key, me = f"implicit-rec/barrier/{next(_BARRIERS)}", state.process_id
    state.client.key_value_set(f"{key}/name/{me}", name)
    if failure is not None:
        state.client.key_value_set(f"{key}/failed/{me}", f"process {me}: {failure}")
    state.client.wait_at_barrier(key, int(timeout_s * 1000))
    failed = [value for _, value in state.client.key_value_dir_get(f"{key}/failed/")]
    names = {value for _, value in state.client.key_value_dir_get(f"{key}/name/")}
    if len(names) > 1:
        failed.append(f"the processes reached different steps ({', '.join(sorted(names))})")
    return failed
