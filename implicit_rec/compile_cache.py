"""JAX's persistent compilation cache, on by default for the ``implicit-rec`` commands.

Most of a small run's time is XLA compilation; with the cache, a second run (or a resumed one)
loads the compiled programs from disk. The directory, first match wins:

1. ``JAX_COMPILATION_CACHE_DIR`` (or ``jax_compilation_cache_dir`` already set in this process):
   JAX's own setting is left exactly as the user made it, with JAX's own size and time settings;
2. ``$IMPLICIT_REC_JAX_CACHE`` -- a directory, or ``off`` to compile everything afresh
   (``off`` also switches off a cache set by 1., through ``jax_enable_compilation_cache``);
3. ``$XDG_CACHE_HOME/implicit-rec/jax``, else ``~/.cache/implicit-rec/jax``.

In 2. and 3. every program is kept (:data:`MIN_COMPILE_TIME_S` = 0: a run compiles hundreds of
small programs -- an initialiser per parameter shape, eager array operations -- each in 0.05-0.2 s,
and reads them back about 10x faster; measured: 120 such programs, 22 s of CPU compiled, 2.5 s
read from the cache). The directory is kept under :data:`MAX_SIZE_BYTES` by :func:`trim`, once when
:func:`enable` runs (least recently used entries first), and JAX is given no size limit of its own:
with one, JAX locks the directory and reads every entry's access-time file at *every* compilation
it writes (``jax._src.lru_cache``), which costs 0.5-0.7 s a program once the directory holds 8,000
entries (``python -m benchmarks.compile_cache``) and made the test suite several times slower
on a machine whose cache had grown. Without the lock, a process that reads an entry while another
process is still writing it (concurrent commands, ``train-decentralized --processes P``'s workers)
gets a warning from JAX ("Error reading persistent compilation cache entry") and compiles that
program itself: never a wrong program. The ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` and
``JAX_COMPILATION_CACHE_MAX_SIZE`` variables override both settings (a size limit of JAX's needs the
``filelock`` package). A cache that cannot be used (an unwritable directory) is not an error:
:func:`enable` warns (:class:`CompileCacheWarning`, naming the directory and the variable) and the
command runs without it. JAX treats the cache as trusted code, so the directory is created private
to the user (mode 0700).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

ENV = "IMPLICIT_REC_JAX_CACHE"
MIN_COMPILE_TIME_S = 0.0
MAX_SIZE_BYTES = 2 * 2**30
ENTRY_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"  # JAX's file names: <key>-cache, and <key>-atime with a size limit


class CompileCacheWarning(UserWarning):
    """The persistent compilation cache could not be used; the command compiles afresh."""


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The implicit-rec cache directory (rules 2 and 3 above); None when ``$IMPLICIT_REC_JAX_CACHE`` is ``off``."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value).expanduser().absolute()
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path(environ.get("HOME") or Path.home()) / ".cache"
    return base / "implicit-rec" / "jax"


def enable(environ: Mapping[str, str] | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache; call it before the first compilation.

    Returns the directory in use (the user's ``JAX_COMPILATION_CACHE_DIR`` when set), or None when
    the cache is off (``IMPLICIT_REC_JAX_CACHE=off``) or unusable (then a :class:`CompileCacheWarning`).
    """
    import jax

    environ = os.environ if environ is None else environ
    if environ.get(ENV, "").strip().lower() == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    user = environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir
    if user:
        return str(user)
    path = cache_dir(environ)
    source = f"${ENV}" if environ.get(ENV, "").strip() else f"the default (set ${ENV} to move it)"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        warnings.warn(
            f"compilation cache off: cannot write to {path}, {source} ({err.strerror or err}); "
            f"set {ENV} to a writable directory, or to off.",
            CompileCacheWarning,
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_enable_compilation_cache", True)  # an earlier `off` in this process is undone
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    ours = "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ  # else the user's limit: JAX evicts
    if ours:
        jax.config.update("jax_compilation_cache_max_size", -1)  # no limit of JAX's: no lock, no scan per write
    with contextlib.suppress(OSError):  # a directory another process is trimming too
        trim(path, MAX_SIZE_BYTES if ours else None)
    return str(path)


def trim(directory: str | os.PathLike, max_bytes: int | None = MAX_SIZE_BYTES) -> tuple[int, int]:
    """Delete the least recently used entries of a JAX cache directory until it holds at most ``max_bytes``
    (None: delete nothing), and give every entry kept an access-time file.

    An entry is JAX's ``<key>-cache`` file (with its ``<key>-atime`` file, if JAX wrote one); its last
    use is the later of the file's modification and access times (the kernel records a read's access
    time at least once a day under the usual ``relatime``). JAX writes no access-time file without a
    size limit, but with one it reads every entry's at each write and fails the write (a warning, the
    program not cached) where one is missing; so entries kept get one, holding their last use, for a
    size-limited JAX that opens the directory later (a ``JAX_COMPILATION_CACHE_MAX_SIZE`` of the user's,
    an older version of this package). Files that vanish meanwhile (another process trimming) are
    skipped. Returns (entries deleted, bytes freed). O(entries), once.
    """
    entries, stamped, total = [], set(), 0
    with os.scandir(directory) as listing:
        for entry in listing:
            if entry.name.endswith(ATIME_SUFFIX):
                stamped.add(entry.name.removesuffix(ATIME_SUFFIX))
            if not entry.name.endswith(ENTRY_SUFFIX):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            entries.append((max(st.st_mtime_ns, st.st_atime_ns), entry.name, st.st_size))
            total += st.st_size
    deleted = freed = 0
    for last_use, name, size in sorted(entries):
        key = name.removesuffix(ENTRY_SUFFIX)
        if max_bytes is not None and total - freed > max_bytes:
            for file in (name, key + ATIME_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, file))
            deleted, freed = deleted + 1, freed + size
        elif key not in stamped:  # JAX's format: nanoseconds, 8 bytes little-endian
            Path(directory, key + ATIME_SUFFIX).write_bytes(last_use.to_bytes(8, "little"))
    return deleted, freed
