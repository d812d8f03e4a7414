"""Peak memory of assembling a historical store of the ``large`` preset's size, in memory and on disk.

Run from the repository root (about two minutes on 2 cores; 13 GB free memory and 4 GB of free disk
in the temporary directory are plenty)::

    python -m benchmarks.store_memory [--rows 27176115] [--users 400000] [--dim 64]

The store stage of ``implicit-rec run --preset large`` held the most memory of its stages (14.6 GB
anonymous before ``HistoricalStore.build_parts`` wrote the outputs in place). This repeats its
assembly without the FM: in a child process (so ``ru_maxrss`` is its own) a stand-in table of
``--rows`` events (random users, sorted times: the two columns a store reads) is split as the
default configuration logs it — the events from ``fm.log_from_day`` on by the FM, the FM window's
by two out-of-fold FMs (``fm.out_of_fold = 2``, users split by parity) — and
``HistoricalStore.build_parts`` runs over the three parts with a constant ``fm_apply`` returning
``--dim`` float32 outputs (stored as float16, the default ``fm.store_dtype``). The defaults are the
large run's: 27,176,115 events, all logged, d = 64 (a 3,628 MiB store).

Two modes, each in its own child process, side by side: ``memory`` (the arrays in memory, as a
library caller without ``directory`` gets them) and ``disk`` (``directory=``: memory-mapped ``.npy``
files and the resume record, as the run's store stage builds it since commit 8e8d7ab).

Reported per mode: the seconds, the resident memory before the assembly (the stand-in table), the
peak resident memory (``ru_maxrss``: it counts the memory-mapped files' pages too, which are page
cache the kernel can write back and drop), the peak anonymous memory (``RssAnon``, sampled every
50 ms), the assembly's increment and that increment over the store's own size. Target: the peak RSS
of the run's mode (``disk``) under the issue's 16 GB for the large run (a part of that target: the
FM's forward and the rest of the run are not here). Writes ``benchmarks/results/store_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

NAME = "store_memory"
LARGE_ROWS, LARGE_USERS, LARGE_DIM = 27_176_115, 400_000, 64
DAYS, LOG_FROM_DAY, FOLDS, BATCH = 8, 4, 2, 2048
LIMIT_MIB = 16 * 1024


MODES = ("memory", "disk")
RUN_MODE = "disk"  # how the run's store stage builds the store


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class _PeakAnon:
    """The peak of ``RssAnon`` while the block runs, sampled every ``every`` seconds on a thread."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_mib("RssAnon"))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_mib("RssAnon"))


class _StandInTable:
    """The columns a store reads (``user``, ``time``) and a length, as an ``EventTable`` has them."""

    def __init__(self, rows: int, users: int):
        rng = np.random.default_rng(0)
        self.columns = {"user": rng.integers(0, users, rows), "time": np.sort(rng.integers(0, DAYS * 86_400, rows))}

    def __len__(self) -> int:
        return len(self.columns["user"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


def child(rows: int, users: int, dim: int, mode: str) -> dict:
    """One assembly in this process (``mode``: in ``memory`` or on ``disk``); its figures."""
    from implicit_rec.loopfm.store import HistoricalStore

    table = _StandInTable(rows, users)
    day = table["time"] // 86_400
    logged, window = np.flatnonzero(day >= LOG_FROM_DAY), np.flatnonzero(day < LOG_FROM_DAY)
    fold = table["user"][window] % FOLDS
    parts = [logged] + [window[fold == k] for k in range(FOLDS)]
    outputs = {"logit": np.zeros(BATCH, np.float32), "interaction": np.ones((BATCH, dim), np.float32)}
    before, anon_before = _status_mib("VmRSS"), _status_mib("RssAnon")
    with tempfile.TemporaryDirectory(prefix="store_memory") as tmp:
        directory = os.path.join(tmp, "store.partial") if mode == "disk" else None
        t0 = time.perf_counter()
        with _PeakAnon() as anon:
            store = HistoricalStore.build_parts(
                [(lambda r: outputs, p) for p in parts], table, batch_size=BATCH, directory=directory
            )
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store_mib = sum(a.nbytes for a in (store.embeddings, store.rows, store.logits)) / 2**20
        del store  # unmap before the directory goes
    return {
        "mode": mode,
        "rows": rows,
        "users": users,
        "dim": dim,
        "parts": [len(p) for p in parts],
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "anon_before_mib": anon_before,
        "peak_anon_mib": anon.peak,
        "increment_mib": peak - before,
        "store_mib": store_mib,
        "increment_over_store": (peak - before) / store_mib,
    }


def markdown(r: dict) -> str:
    from implicit_rec.tables import markdown_table

    rows = [
        (
            m["mode"],
            f"{m['rows']:,}",
            " + ".join(f"{p:,}" for p in m["parts"]),
            m["dim"],
            f"{m['store_mib']:,.0f}",
            f"{m['seconds']:.1f}",
            f"{m['rss_before_mib']:,.0f}",
            f"{m['peak_rss_mib']:,.0f}",
            f"{m['peak_anon_mib']:,.0f}",
            f"{m['increment_mib']:,.0f}",
            f"{m['increment_over_store']:.2f}",
        )
        for m in r["measured"]
    ]
    table = markdown_table(
        (
            "mode",
            "events",
            "parts",
            "d",
            "store MiB",
            "seconds",
            "RSS before MiB",
            "peak RSS MiB",
            "peak anonymous MiB",
            "RSS increment MiB",
            "increment / store",
        ),
        rows,
    )
    t = r["targets"][0]
    verdict = {True: "PASS", False: "FAIL"}.get(t["pass"], f"not judged ({t['note']})")
    return (
        f"# Store assembly of {r['measured'][0]['rows']:,} events (commit {r['commit'][:8]})\n\n"
        f"`{r['command']}`; {r['machine']['cpu_count']} CPUs, {r['machine']['platform']}. A constant FM: the "
        "assembly, not the FM's forward; each mode in its own process (see the module docstring). The peak RSS "
        "counts the pages of memory-mapped files (the disk mode's store), which the kernel can write back and "
        "drop; the anonymous memory is what only swap could free.\n\n"
        f"{table}\n\n"
        f"Target: {t['name']}: {t['value']:,.0f} MiB ({t['target']}): {verdict}.\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=LARGE_ROWS, help="events of the stand-in table")
    parser.add_argument("--users", type=int, default=LARGE_USERS, help="users of the stand-in table")
    parser.add_argument("--dim", type=int, default=LARGE_DIM, help="embedding dimension of the store")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rows", "users", "dim"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.child:
        print(json.dumps(child(args.rows, args.users, args.dim, args.child)))
        return
    from implicit_rec.atomic import write_json_atomic, write_text_atomic

    from .common import RESULTS, git_commit, machine_info

    measured = []
    for mode in MODES:
        cmd = [sys.executable, "-m", f"benchmarks.{NAME}", "--child", mode]
        cmd += ["--rows", str(args.rows), "--users", str(args.users), "--dim", str(args.dim)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        measured.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    run_mode = next(m for m in measured if m["mode"] == RUN_MODE)
    memory = next(m for m in measured if m["mode"] == "memory")
    peak = run_mode["peak_rss_mib"]
    result = {
        "command": " ".join(["python -m benchmarks." + NAME, *(argv if argv is not None else sys.argv[1:])]),
        "commit": git_commit(),
        "measured": measured,
        "machine": machine_info(load=[round(x, 2) for x in os.getloadavg()]),
        "targets": [
            {
                "name": "store assembly at the given size as the run builds it (on disk), peak RSS MiB (constant FM)",
                "value": peak,
                "target": f"<= {LIMIT_MIB} MiB (the large run's 16 GB)",
                "pass": bool(peak <= LIMIT_MIB) if args.rows == LARGE_ROWS else None,
                "note": (
                    f"peak anonymous {run_mode['peak_anon_mib']:,.0f} MiB on disk, "
                    f"{memory['peak_anon_mib']:,.0f} MiB in memory (peak RSS {memory['peak_rss_mib']:,.0f} MiB); "
                    f"the store is {run_mode['store_mib']:,.0f} MiB"
                    + ("" if args.rows == LARGE_ROWS else f"; {args.rows:,} rows, not the large preset's: not judged")
                ),
            }
        ],
    }
    text = markdown(result)
    write_json_atomic(RESULTS / f"{NAME}.json", result)
    write_text_atomic(RESULTS / f"{NAME}.md", text)
    print(text)


if __name__ == "__main__":
    main()
