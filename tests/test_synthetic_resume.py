"""Resumable synthetic generation: an interrupted table (any pass, kill -9 included) continues to the same table."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from implicit_rec.data import synthetic
from implicit_rec.data.events import EventTable
from implicit_rec.data.synthetic import synthetic_events

P = dataclasses.replace(synthetic.PRESETS["tiny"], users=40)
SEED = 3


class Stop(Exception):
    pass


def stop_after(updates: int):
    """A progress-bar factory whose ``update`` raises at its ``updates``-th call (after that many blocks)."""

    class Bar:
        calls = 0

        def __init__(self, total, desc):
            pass

        def update(self, n):
            Bar.calls += 1
            if Bar.calls == updates:
                raise Stop

        def close(self):
            pass

    return Bar


def table_dir(cache: Path) -> Path:
    (path,) = [p for p in cache.iterdir() if not p.name.endswith(".partial")]
    return path


def partial_dir(cache: Path) -> Path:
    (path,) = cache.glob("*.partial")
    return path


def state(cache: Path) -> dict:
    with np.load(partial_dir(cache) / "state.npz", allow_pickle=False) as f:
        return json.loads(f["state"].tobytes())


def assert_same_table(a: EventTable, b: EventTable):
    assert a.columns.keys() == b.columns.keys() and a.vocab_sizes == b.vocab_sizes
    for k, v in a.columns.items():
        assert v.dtype == b.columns[k].dtype, k
        np.testing.assert_array_equal(v, b.columns[k], err_msg=k)
    assert a.info.keys() == b.info.keys()
    for k, v in a.info.items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(b.info[k]), err_msg=k)


@pytest.fixture(scope="module")
def ref_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ref")
    synthetic_events(P, seed=SEED, cache_dir=cache, block_users=10)
    return cache


@pytest.fixture(scope="module")
def reference(ref_cache):
    return synthetic_events(P, seed=SEED, cache_dir=ref_cache)


def counting_blocks(monkeypatch) -> list:
    """Record ``(first user, users)`` of every block simulated from now on."""
    calls = []
    simulate = synthetic._simulate_block

    def counted(p, world, start, seeds, raw=False):
        calls.append((start, len(seeds)))
        return simulate(p, world, start, seeds, raw)

    monkeypatch.setattr(synthetic, "_simulate_block", counted)
    return calls


def test_interrupted_blocks_resume_to_the_same_table_for_another_block_size(tmp_path, reference, monkeypatch):
    with pytest.raises(Stop):
        synthetic_events(P, seed=SEED, cache_dir=tmp_path, block_users=10, progress_bar=stop_after(3))
    assert not any((p / "meta.json").exists() for p in tmp_path.iterdir())  # nothing published
    s = state(tmp_path)
    assert s["users"] == 30 and s["encoded"] == []
    raw = partial_dir(tmp_path) / "raw"
    dtype, size = s["columns"]["label"]
    assert (raw / "label").stat().st_size == size == s["rows"] * np.dtype(dtype).itemsize
    for name in ("label", "cate_his"):  # a block half-appended when the process died
        with open(raw / name, "ab") as fh:
            fh.write(b"\x07" * 13)
    calls = counting_blocks(monkeypatch)
    table = synthetic_events(P, seed=SEED, cache_dir=tmp_path, block_users=7)
    assert calls == [(30, 7), (37, 3)]  # only the users not yet written
    assert_same_table(table, reference)
    assert not list(tmp_path.glob("*.partial"))
    assert_same_table(EventTable.load(table_dir(tmp_path)), reference)


def test_interrupted_encoding_resumes_after_its_last_finished_column(tmp_path, reference, monkeypatch):
    marked = []
    original = synthetic._Partial.mark_encoded

    def mark_three(self, column):
        if len(marked) == 3:
            raise Stop
        marked.append(column)
        original(self, column)

    monkeypatch.setattr(synthetic._Partial, "mark_encoded", mark_three)
    with pytest.raises(Stop):
        synthetic_events(P, seed=SEED, cache_dir=tmp_path, block_users=10)
    assert state(tmp_path)["encoded"] == marked and state(tmp_path)["users"] == P.users
    monkeypatch.setattr(synthetic._Partial, "mark_encoded", original)
    written = []
    open_memmap = np.lib.format.open_memmap

    def spy(filename, *args, **kwargs):
        if kwargs.get("mode") == "w+":
            written.append(Path(filename).stem)
        return open_memmap(filename, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", spy)
    monkeypatch.setattr(synthetic, "_simulate_block", lambda *a, **k: pytest.fail("pass 1 was finished"))
    table = synthetic_events(P, seed=SEED, cache_dir=tmp_path, block_users=10)
    assert written and not set(written) & set(marked)
    assert set(written) | set(marked) >= set(reference.columns)
    assert_same_table(table, reference)


def rewrite_state(cache: Path, edit) -> None:
    path = partial_dir(cache) / "state.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    s = json.loads(arrays["state"].tobytes())
    edit(s)
    arrays["state"] = np.frombuffer(json.dumps(s).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "damage",
    ["other generator", "raw file short", "state unreadable"],
)
def test_a_stale_or_damaged_state_starts_again_from_the_first_user(tmp_path, reference, damage, monkeypatch):
    with pytest.raises(Stop):
        synthetic_events(P, seed=SEED, cache_dir=tmp_path, block_users=10, progress_bar=stop_after(2))
    part = partial_dir(tmp_path)
    if damage == "other generator":
        rewrite_state(tmp_path, lambda s: s["key"].update(generator=-1))
    elif damage == "raw file short":
        os.truncate(part / "raw" / "cate_his", 5)
    else:
        (part / "state.npz").write_bytes(b"not a zip file")
    calls = counting_blocks(monkeypatch)
    table = synthetic_events(P, seed=SEED, cache_dir=tmp_path, block_users=10)
    assert [start for start, _ in calls] == [0, 10, 20, 30]
    assert_same_table(table, reference)


def test_a_second_caller_waits_for_the_lock_and_loads_the_finished_table(tmp_path, ref_cache, reference, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    name = table_dir(ref_cache).name
    part = tmp_path / f"{name}.partial"
    part.mkdir()
    result = {}
    with open(part / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process is generating this table
        monkeypatch.setattr(synthetic, "_simulate_block", lambda *a, **k: pytest.fail("generated twice"))
        waiter = threading.Thread(target=lambda: result.update(table=synthetic_events(P, SEED, cache_dir=tmp_path)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # waiting for the lock
        (tmp_path / name).mkdir()  # the other process publishes its table, then releases the lock
        for f in (ref_cache / name).iterdir():
            (tmp_path / name / f.name).write_bytes(f.read_bytes())
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert_same_table(result["table"], reference)
    assert not part.exists()


@pytest.mark.slow  # a subprocess that imports the package
def test_kill_9_during_generation_resumes_to_the_same_table(tmp_path, reference):
    script = f"""
import dataclasses, time
from implicit_rec.data import synthetic

class Slow:
    def __init__(self, total, desc): pass
    def update(self, n): time.sleep(0.3)
    def close(self): pass

p = dataclasses.replace(synthetic.PRESETS["tiny"], users={P.users})
synthetic.synthetic_events(p, seed={SEED}, cache_dir={str(tmp_path)!r}, block_users=4, progress_bar=Slow)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            parts = list(tmp_path.glob("*.partial"))
            if parts and (parts[0] / "state.npz").exists() and state(tmp_path)["users"] >= 12:
                break
            assert proc.poll() is None, "the generator finished or failed before it was killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = state(tmp_path)["users"]
    assert 12 <= done < P.users
    table = synthetic_events(P, seed=SEED, cache_dir=tmp_path, block_users=4)
    assert_same_table(table, reference)
