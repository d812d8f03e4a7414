"""Shared benchmark utilities: round-robin timing, compiled memory, machine description.

Result files are written with ``implicit_rec.atomic``; tables with ``implicit_rec.tables.markdown_table``.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax

RESULTS = Path(__file__).resolve().parent / "results"


# JAX cache settings a user may have exported: a benchmark that times compilation uses only its own cache.
JAX_CACHE_VARS = (
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_COMPILATION_CACHE_MAX_SIZE",
)


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far (``RUSAGE_CHILDREN``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_times(thunks: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Warm up every thunk, then time them round-robin; median seconds per thunk.

    Round-robin repeats in one process make the alternatives see the same machine
    noise, so their ratios are meaningful on a shared machine.
    """
    for fn in thunks.values():
        jax.block_until_ready(fn())
    samples = {name: [] for name in thunks}
    for _ in range(repeats):
        for name, fn in thunks.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def compiled_temp_bytes(fn: Callable, *args) -> int:
    """XLA's temporary buffer size for jit(fn)(*args): deterministic, compiled only."""
    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def git_commit() -> str:
    """The checked-out commit (``git rev-parse HEAD``), or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info(**extra) -> dict:
    return dict(
        platform=platform.platform(),
        python=sys.version.split()[0],
        jax=jax.__version__,
        backend=jax.default_backend(),
        cpu_count=os.cpu_count(),
        **extra,
    )
