"""RunDir in a run of several processes: one writer, the same barriers in every process, failures
reported to all. Two threads stand in for two jax.distributed processes; their barrier is a
``threading.Barrier`` that records the names and failures the way ``processes.barrier`` does."""

from __future__ import annotations

import threading
import time

import pytest

from implicit_rec.pipeline import RunDir, RunError


class FakeJob:
    """A barrier of ``n`` threads: every call is recorded per process; failures are returned to all."""

    def __init__(self, n: int = 2):
        self.barrier = threading.Barrier(n, timeout=20)
        self.names: dict[int, list[str]] = {i: [] for i in range(n)}
        self.failures: list[list[str]] = []
        self.lock = threading.Lock()

    def sync_of(self, process: int):
        def sync(name: str, failure: str | None = None) -> list[str]:
            index = len(self.names[process])
            self.names[process].append(name)
            with self.lock:
                while len(self.failures) <= index:
                    self.failures.append([])
                if failure is not None:
                    self.failures[index].append(f"process {process}: {failure}")
            self.barrier.wait()
            return list(self.failures[index])

        return sync


def run_processes(job: FakeJob, body) -> dict[int, object]:
    """``body(process)`` in one thread per process; returns each one's result or exception."""
    out: dict[int, object] = {}

    def target(i):
        try:
            out[i] = body(i)
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            out[i] = err

    threads = [threading.Thread(target=target, args=(i,)) for i in job.names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_every_process_passes_the_same_barriers_though_the_writer_saves_before_the_other_looks(tmp_path):
    job, saves, computed = FakeJob(), [], {0: [], 1: []}

    def body(i):
        run = RunDir(tmp_path, quiet=True, writer=i == 0, sync=job.sync_of(i))
        values = []
        for name, collective in (("ceiling.json", False), ("fm.json", True), ("sweep.json", False)):
            if i == 1:
                time.sleep(0.2)  # the other process is slow: the writer has saved before it looks

            def compute(name=name):
                computed[i].append(name)
                return {"name": name}

            values.append(
                run.cached(
                    tmp_path / name,
                    compute,
                    lambda p: {"name": p.name, "loaded": True},
                    lambda v, p: (saves.append((i, p.name)), p.write_text("{}")),
                    collective=collective,
                )
            )
        return values

    out = run_processes(job, body)
    assert job.names[0] == job.names[1] and len(job.names[0]) == 8  # check, saved (and loaded) per stage
    assert saves == [(0, "ceiling.json"), (0, "fm.json"), (0, "sweep.json")]  # one writer
    assert computed == {0: ["ceiling.json", "fm.json", "sweep.json"], 1: ["fm.json"]}  # collective: both
    assert [v.get("loaded", False) for v in out[1]] == [True, False, True]  # the others load the writer's file


def test_a_stage_the_writer_computes_alone_that_fails_stops_every_process(tmp_path):
    job = FakeJob()

    def body(i):
        run = RunDir(tmp_path, quiet=True, writer=i == 0, sync=job.sync_of(i))

        def compute():
            raise ValueError("disk full")

        return run.cached(tmp_path / "sweep.json", compute, lambda p: None, lambda v, p: None)

    out = run_processes(job, body)
    assert isinstance(out[0], ValueError)  # the writer raises its own error
    assert isinstance(out[1], RunError) and "process 0: ValueError: disk full" in str(out[1])


def test_another_configuration_in_one_process_stops_the_writer_too(tmp_path):
    from implicit_rec import config

    job = FakeJob()
    cfgs = {0: config.DEFAULT, 1: config.load_config(None, ("vm.epochs=2",))}

    def body(i):
        RunDir(tmp_path / "run", quiet=True, writer=i == 0, sync=job.sync_of(i)).prepare(cfgs[i])

    out = run_processes(job, body)
    assert isinstance(out[1], RunError) and "another configuration (vm.epochs" in str(out[1])
    assert isinstance(out[0], RunError) and "process 1: RunError:" in str(out[0])
    assert job.names[0] == job.names[1] == ["prepare", "config"]


def test_one_process_run_dir_has_no_barrier_and_writes(tmp_path):
    run = RunDir(tmp_path, quiet=True)
    run.sync("anything", None)  # a no-op
    assert run.cached(tmp_path / "a.json", lambda: 1, lambda p: 2, lambda v, p: p.write_text("1")) == 1
    assert run.cached(tmp_path / "a.json", lambda: 1, lambda p: 2, lambda v, p: None) == 2


def test_a_process_that_cannot_read_the_writers_file_stops_the_writer_too(tmp_path):
    job = FakeJob()

    def body(i):
        run = RunDir(tmp_path, quiet=True, writer=i == 0, sync=job.sync_of(i))

        def load(path):
            if i == 1:
                raise OSError("stale file handle")
            return "loaded"

        first = run.cached(tmp_path / "ceiling.json", lambda: "computed", load, lambda v, p: p.write_text("{}"))
        return first, run.cached(tmp_path / "sweep.json", lambda: "computed", load, lambda v, p: None)

    out = run_processes(job, body)
    assert isinstance(out[1], OSError)
    assert isinstance(out[0], RunError) and "process 1: OSError: stale file handle" in str(out[0])


def test_the_coordinator_barrier_needs_jax_distributed():
    from implicit_rec import processes

    with pytest.raises(RuntimeError, match="jax.distributed.initialize"):
        processes.barrier("x")


BARRIER_SCRIPT = """
import sys
from implicit_rec import processes
me = int(sys.argv[2])
processes.initialize_distributed(sys.argv[1], 2, me)
print(processes.barrier("same"))
print(processes.barrier("fail", "ValueError: boom" if me == 1 else None))
print(processes.barrier(f"step {me}", timeout_s=60))
"""


def test_the_coordinator_barrier_carries_failures_and_names_different_steps(tmp_path):
    """Two real jax.distributed processes on loopback (no compilation): the coordinator's barrier."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from implicit_rec.processes import free_port

    coordinator = f"127.0.0.1:{free_port()}"
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BARRIER_SCRIPT, coordinator, str(i)], env=env, stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].splitlines() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    for lines in outs:
        assert lines[0] == "[]"
        assert lines[1] == "['process 1: ValueError: boom']"
        assert lines[2] == "['the processes reached different steps (step 0, step 1)']"
