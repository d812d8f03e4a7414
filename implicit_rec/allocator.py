"""glibc ``malloc`` settings for the ``implicit-rec`` commands: freed buffers are kept and reused.

XLA's CPU runtime allocates each compiled program's temporary buffer with ``malloc`` when the
program runs and frees it when it returns. glibc serves a block above its mmap threshold (at most
32 MiB, however it is set) with a fresh ``mmap`` and returns it with ``munmap`` on ``free``, so the
kernel faults in and zeroes every 4 KiB page of the buffer again on every step. A training step of
the default run's depth-8 transformer baseline has a 126 MiB temporary buffer: 32k page faults per
step. On the 2-core build machine, 50 such steps took 5.41 s wall and 8.39 s CPU, 3.33 s of it in
the kernel; tuned, 4.08 s wall and 5.76 s CPU, 0.30 s in the kernel (``python -m
benchmarks.allocator``, ``benchmarks/results/allocator.md``). A warm ``run --preset tiny`` took 78 s
CPU untuned and 65 s tuned (3 and 2 runs; docs/run.md).

:func:`tune` asks glibc (``mallopt``) to serve every block from one heap and keep what is freed:

- ``M_ARENA_MAX = 1``: every thread allocates from the main heap, which has no size cap (a thread
  arena's heaps hold at most 64 MiB, so larger blocks would still be mapped afresh);
- ``M_MMAP_MAX = 0``: no block is served by its own ``mmap``;
- ``M_TRIM_THRESHOLD = TRIM_THRESHOLD_BYTES`` (1 GiB): free memory at the top of the heap goes back
  to the kernel only beyond this.

The cost is memory that stays mapped after it is freed: up to 1 GiB at the heap's top, and freed
blocks inside the heap, which later allocations reuse (as glibc already does for small blocks).
Threads that allocated before :func:`tune` keep their arenas, so the commands call it first, before
JAX starts its thread pool. On other C libraries (macOS, musl) it does nothing. Set
``IMPLICIT_REC_MALLOC=system`` to leave ``malloc`` as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Mapping

ENV = "IMPLICIT_REC_MALLOC"
TRIM_THRESHOLD_BYTES = 2**30
# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def tune(environ: Mapping[str, str] | None = None) -> bool:
    """Apply the settings above; True when glibc accepted them all, False when nothing was done
    (not glibc, or ``IMPLICIT_REC_MALLOC=system``). Any other value of the variable is an error."""
    environ = os.environ if environ is None else environ
    choice = environ.get(ENV, "tuned")
    if choice not in ("tuned", "system"):
        raise ValueError(f"{ENV}={choice!r}: expected 'tuned' (the default) or 'system'.")
    if choice == "system" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
