"""The run directory: ``run.json``, ``config.toml``, ``log.txt`` and the one stage cache (:meth:`RunDir.cached`).

A problem the user can fix (a damaged file, a finished run, another configuration) is a
:class:`RunError` naming the file and how to recover.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from .. import config as config_mod
from ..atomic import write_json_atomic, write_text_atomic
from ..config import RunConfig


class RunError(RuntimeError):
    """A problem the user can fix (bad path, finished run, changed config); printed as one line."""


R = TypeVar("R")


class RunDir:
    """A run directory: ``run.json``, ``log.txt``, the stage cache and the ``events`` hook.

    ``events(name)`` is called after each stage is marked done (``"stage:NAME"``) and after each
    model is saved (``"model:STEM"``); tests interrupt runs there. ``bar`` is a tqdm factory or None.

    A run of several processes (``jax.distributed``; :mod:`implicit_rec.processes`) shares one run
    directory, on a file system every process reads. Process 0 is the *writer*: it alone writes
    files. ``sync(name, failure)`` is a barrier of every process (:func:`implicit_rec.processes.barrier`;
    none in a run of one process) that returns the failures other processes reported at it. A stage
    that trains (``collective=True`` in :meth:`cached`) is computed by every process in step, since
    its steps all-reduce across them; any other stage is computed by the writer alone, and the other
    processes load its file after the barrier. An error in a step one process does alone reaches
    every process at the next barrier (as a RunError naming the process and the error).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        quiet: bool = False,
        events: Callable[[str], None] | None = None,
        writer: bool = True,
        sync: Callable[[str, str | None], list[str]] | None = None,
    ) -> None:
        self.out, self.quiet = Path(out), quiet
        self.events = events or (lambda name: None)
        self.writer = writer
        self._sync = sync
        self.created = False  # whether this invocation made the directory (removed if the run is refused)
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm

    def prepare(self, cfg: RunConfig, *, force: bool = False, command: list | None = None) -> None:
        """Create (or reopen to resume) the directory of a run of ``cfg``; RunError if it holds
        a finished run or another configuration. The other processes of a multi-process run wait
        for the writer's directory, then every process checks its configuration."""
        self.step("prepare", lambda: self._prepare(cfg, force, command))
        self.step("config", lambda: self._check_config(cfg), here=True)

    def _prepare(self, cfg: RunConfig, force: bool, command: list | None) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} exists and is not a directory.")
        if force and out.exists():
            shutil.rmtree(out)
        state = self.state()
        if state.get("status") == "finished":
            raise RunError(f"{out} holds a finished run; use --force to overwrite it or choose another --out.")
        self.created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise RunError(f"cannot write to the output directory {out}: {err.strerror or err}.") from None
        if not self._check_config(cfg):
            write_text_atomic(out / "config.toml", config_mod.to_toml(cfg))
        if not state:
            state = {"versions": versions(), "command": command or sys.argv, "status": "running", "stages": {}}
            self.save_state(state)

    def _check_config(self, cfg: RunConfig) -> bool:
        """Whether the directory has a config.toml; RunError if it is damaged or another configuration."""
        out, saved = self.out, self.out / "config.toml"
        if not saved.is_file():
            if not self.writer:
                raise RunError(f"{out} has no config.toml: process 0 of this run writes it; pass the same --out.")
            return False
        try:
            before = config_mod.load_config(saved).to_dict()
        except config_mod.ConfigError as err:
            raise RunError(
                f"the run directory's config.toml is damaged ({err}); remove {out} or rerun with --force to start over."
            ) from None
        diff = _first_difference(before, cfg.to_dict())
        if diff:
            raise RunError(
                f"{out} holds an unfinished run with another configuration ({diff}); "
                "rerun with the same settings to resume, or use --force to start over."
            )
        return True

    def state(self) -> dict:
        """run.json ({} before the first write); RunError if it is damaged."""
        path = self.out / "run.json"
        if not path.is_file():
            return {}
        state = read_json(path)
        if not isinstance(state.get("status"), str) or not isinstance(state.get("stages"), dict):
            raise RunError(
                f"run.json in {self.out} lacks its 'status' or 'stages' entry: the run directory is "
                f"damaged; remove {self.out} or rerun with --force to start over."
            )
        return state

    def save_state(self, state: dict) -> None:
        if self.writer:
            write_json_atomic(self.out / "run.json", state)

    def mark_done(self, stage: str, seconds: float) -> None:
        """Record the stage's time in run.json (this invocation's: a resumed stage is timed again)."""
        if not self.writer:
            return
        state = self.state()
        state["stages"][stage] = seconds
        self.save_state(state)
        self.events(f"stage:{stage}")

    def log(self, line: str) -> None:
        if self.writer:
            with open(self.out / "log.txt", "a") as fh:
                fh.write(line + "\n")
        if not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(line)

    def sync(self, name: str, failure: str | None = None) -> None:
        """The barrier ``name`` of every process (nothing in a run of one process); a process that
        failed passes its ``failure``; the others raise a RunError naming it."""
        if self._sync is None:
            return
        failed = self._sync(name, failure)
        if failed and failure is None:
            raise RunError(f"another process of this run failed: {'; '.join(failed)}")

    def step(self, name: str, fn: Callable[[], R], *, here: bool | None = None) -> R | None:
        """``fn()`` in the processes where ``here`` (default: the writer), then the barrier ``name``:
        an error in ``fn`` is raised here and reported to the other processes at the barrier."""
        value = None
        if self.writer if here is None else here:
            try:
                value = fn()
            except BaseException as err:
                self.sync(name, f"{type(err).__name__}: {err}")
                raise
        self.sync(name)
        return value

    def writer_first(self, name: str, fn: Callable[[], R]) -> R:
        """``fn()`` in the writer, then (after the barrier ``name``) in the other processes: for a step
        that may write a file the others then read (the dataset cache). Errors reach every process."""
        value = self.step(name, fn)
        other = self.step(f"{name}: others", fn, here=not self.writer)
        return value if self.writer else other

    def model_paths(self, stem: str) -> tuple[Path, Path, Path]:
        """(parameters .msgpack, result .json, epoch checkpoint .train.msgpack) of model ``stem``."""
        base = self.out / "models" / stem
        return base.with_suffix(".msgpack"), base.with_suffix(".json"), base.with_suffix(".train.msgpack")

    def cached(
        self,
        path: Path,
        compute: Callable[[], R],
        load: Callable[[Path], R],
        save: Callable[[R, Path], None],
        *,
        stage: str | None = None,
        event: str | None = None,
        recompute: bool = False,
        collective: bool = False,
    ) -> R:
        """``load(path)`` if a finished stage left ``path``; else ``compute()``, ``save`` it to ``path``
        (atomically: present means complete), mark ``stage`` done in run.json and signal ``event``.

        In a multi-process run (see the class) every process looks for ``path`` before the first
        barrier, which no process passes before all have looked, so all decide alike. With
        ``collective`` every process computes (the stage trains across them; an error there ends the
        job through JAX's heartbeat), else only the writer does and the others load its file after the
        second barrier."""
        done = path.exists() and not recompute
        self.sync(f"{path.name}: check")
        if done:
            return self.step(f"{path.name}: loaded", lambda: load(path), here=True)
        t0 = time.perf_counter()
        value = compute() if collective else None

        def write() -> R:
            out = value if collective else compute()
            save(out, path)
            if stage is not None:
                self.mark_done(stage, time.perf_counter() - t0)
            if event is not None:
                self.events(event)
            return out

        written = self.step(f"{path.name}: saved", write)
        if collective:
            return value
        loaded = self.step(f"{path.name}: loaded", lambda: load(path), here=not self.writer)
        return written if self.writer else loaded


def record_file(cls: type[R]) -> tuple[Callable[[Path], R], Callable[[R, Path], None]]:
    """(load, save) of a :class:`Record` as a JSON file; a damaged file is a RunError saying how to recover."""

    def load(path: Path) -> R:
        try:
            return cls.from_dict(read_json(path))
        except (TypeError, ValueError) as err:
            raise RunError(f"{path.name} in {path.parent}: {err}; {_RECOVER.format(run=_run_of(path))}") from None

    def save(value: R, path: Path) -> None:
        write_json_atomic(path, value.to_dict())

    return load, save


_RECOVER = "the run directory is damaged; remove {run} or rerun with --force to start over."


def _run_of(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "models" else path.parent


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("implicit-rec", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _first_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diff = _first_difference(va, vb, f"{prefix}{key}.")
            if diff:
                return diff
        elif va != vb:
            return f"{prefix}{key}: {va!r} in the run directory, {vb!r} now"
    return None


def read_json(path: Path, *, expect: type = dict):
    """The JSON value in ``path``; RunError naming the file, the position and how to recover."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problem = f"is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
    except UnicodeDecodeError as err:
        problem = f"is not UTF-8 text (byte {err.start})"
    else:
        if isinstance(value, expect):
            return value
        problem = f"holds a JSON {type(value).__name__}, not an object"
    raise RunError(f"{path.name} in {path.parent} {problem}: {_RECOVER.format(run=_run_of(path))}")


def _oserror_text(err: Exception) -> str:
    """'PATH: reason' for an OSError (whose str() is '[Errno 20] ...'), str(err) otherwise."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror.lower()}."
    return str(err)
