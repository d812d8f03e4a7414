"""Test configuration.

Precision: JAX runs in its production default (x64 off, float32) unless a test asks otherwise:
  * ``@pytest.mark.x64`` (or ``pytestmark = pytest.mark.x64`` in a module) turns float64 on for
    that test, for checks that need tight tolerances (finite differences, exact consensus);
  * the ``precision`` fixture runs a test twice, once per dtype, with x64 switched to match, so
    the solver and layer tests exercise the float32 path users run as well as float64 (the
    float64 half is marked slow: the fast lane runs the production float32 path).
Module-scoped fixtures are set up before the per-test switch, so one that needs a precision sets it
itself (see the finite-difference fixtures) rather than inheriting whatever the previous test left.

Lanes: ``@pytest.mark.slow`` marks tests that spawn processes, train FMs or run whole tiny pipelines.
``make test`` deselects them (``-m "not slow"``); ``make test-all`` runs everything.

Compilation cache: tests share JAX's persistent compilation cache (most of the suite's time is XLA
compilation), in ``$IMPLICIT_REC_TEST_JAX_CACHE`` or ``~/.cache/implicit-rec/jax-tests``; set
``IMPLICIT_REC_TEST_JAX_CACHE=off`` to compile everything afresh. Subprocesses inherit it through
the environment. As for the commands (``implicit_rec.compile_cache``), JAX gets no size limit: with
one it locks the directory and reads every entry's access-time file at each program it writes (69
tests that wrote 630 programs into a cache of 8,700 entries took 336 s instead of 31 s). The session
trims the directory to ``TEST_CACHE_BYTES`` once when it starts.
"""

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from implicit_rec import compile_cache

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py

TEST_CACHE_BYTES = 4 * 2**30

# Tests compile far more than they compute, so XLA:CPU's LLVM pipeline runs at -O1 here, not its default
# -O2 (read when the backend starts, i.e. at the first computation; subprocesses inherit it). Measured on
# test_loopfm.py + test_baselines.py with the cache off, side by side: 8% less CPU; -O0 saved 11% but made
# the FM trainings up to 2x slower. The flags change no float semantics (XLA:CPU has fast-math off), and a
# user's XLA_FLAGS that set the level win. Benchmarks run at the default.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()

_cache = os.environ.get("IMPLICIT_REC_TEST_JAX_CACHE", str(Path.home() / ".cache" / "implicit-rec" / "jax-tests"))
if _cache == "off":
    os.environ.setdefault("IMPLICIT_REC_JAX_CACHE", "off")  # the CLI's own default cache stays off too
else:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # as the CLI: small programs too
    # No size limit of JAX's: no lock and no scan of the directory per write. A worker that reads an entry
    # another is still writing gets JAX's warning and compiles the program itself.
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")
    if "PYTEST_XDIST_WORKER" not in os.environ:  # once per session, in the controlling process
        os.makedirs(os.environ["JAX_COMPILATION_CACHE_DIR"], exist_ok=True)
        compile_cache.trim(os.environ["JAX_COMPILATION_CACHE_DIR"], TEST_CACHE_BYTES)
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
    )
    jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program after each test module (``jax.clear_caches``).

    The library compiles once: its jitted steps live at module level and keep their executables for
    the life of the process, and every XLA:CPU executable holds memory mappings. In the one long
    pytest process of ``make test-all`` the mappings passed the kernel's ``vm.max_map_count``
    (65,530) and XLA aborted or segfaulted in ``test_loopfm.py`` while compiling or (de)serialising
    a program (measured: up to 15,700 mappings within one module, about 1,400 after clearing). A test
    module rarely reuses another's programs.
    """
    yield
    jax.clear_caches()


def _set_x64(enabled: bool) -> bool:
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", enabled)
    return previous


@pytest.fixture(autouse=True)
def _x64_mode(request):
    """x64 on for tests marked ``x64`` (the ``precision`` fixture overrides per parameter)."""
    previous = _set_x64(request.node.get_closest_marker("x64") is not None)
    yield
    _set_x64(previous)


@pytest.fixture(params=["float32", pytest.param("float64", marks=pytest.mark.slow)])
def precision(request, _x64_mode):
    """The dtype under test; x64 is on exactly when it is float64 (that half runs in test-all)."""
    _set_x64(request.param == "float64")
    return jnp.dtype(request.param)
