"""Peak memory of assembling a historical store of the ``large`` preset's size.

Run from the repository root (about a minute on 2 cores; 13 GB free memory is plenty)::

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

Reported: the seconds, the resident memory before the assembly (the stand-in table), the peak, the
assembly's increment and that increment over the store's own size. Target: the peak under the
issue's 16 GB for the large run (a part of that target: the FM's forward and the rest of the run
are not here). Writes ``benchmarks/results/store_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

NAME = "store_memory"
LARGE_ROWS, LARGE_USERS, LARGE_DIM = 27_176_115, 400_000, 64
DAYS, LOG_FROM_DAY, FOLDS, BATCH = 8, 4, 2, 2048
LIMIT_MIB = 16 * 1024


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class _StandInTable:
    """The columns a store reads (``user``, ``time``) and a length, as an ``EventTable`` has them."""

    def __init__(self, rows: int, users: int):
        rng = np.random.default_rng(0)
        self.columns = {"user": rng.integers(0, users, rows), "time": np.sort(rng.integers(0, DAYS * 86_400, rows))}

    def __len__(self) -> int:
        return len(self.columns["user"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


def child(rows: int, users: int, dim: int) -> dict:
    """One assembly in this process; its figures."""
    from implicit_rec.loopfm.store import HistoricalStore

    table = _StandInTable(rows, users)
    day = table["time"] // 86_400
    logged, window = np.flatnonzero(day >= LOG_FROM_DAY), np.flatnonzero(day < LOG_FROM_DAY)
    fold = table["user"][window] % FOLDS
    parts = [logged] + [window[fold == k] for k in range(FOLDS)]
    outputs = {"logit": np.zeros(BATCH, np.float32), "interaction": np.ones((BATCH, dim), np.float32)}
    before = _rss_mib()
    t0 = time.perf_counter()
    store = HistoricalStore.build_parts([(lambda r: outputs, p) for p in parts], table, batch_size=BATCH)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store_mib = sum(a.nbytes for a in (store.embeddings, store.rows, store.logits)) / 2**20
    return {
        "rows": rows,
        "users": users,
        "dim": dim,
        "parts": [len(p) for p in parts],
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "increment_mib": peak - before,
        "store_mib": store_mib,
        "increment_over_store": (peak - before) / store_mib,
    }


def markdown(r: dict) -> str:
    from implicit_rec.tables import markdown_table

    m = r["measured"]
    table = markdown_table(
        (
            "events",
            "parts",
            "d",
            "store MiB",
            "seconds",
            "RSS before MiB",
            "peak RSS MiB",
            "increment MiB",
            "increment / store",
        ),
        [
            (
                f"{m['rows']:,}",
                " + ".join(f"{p:,}" for p in m["parts"]),
                m["dim"],
                f"{m['store_mib']:,.0f}",
                f"{m['seconds']:.1f}",
                f"{m['rss_before_mib']:,.0f}",
                f"{m['peak_rss_mib']:,.0f}",
                f"{m['increment_mib']:,.0f}",
                f"{m['increment_over_store']:.2f}",
            )
        ],
    )
    t = r["targets"][0]
    verdict = {True: "PASS", False: "FAIL"}.get(t["pass"], f"not judged ({t['note']})")
    return (
        f"# Store assembly of {m['rows']:,} events (commit {r['commit'][:8]})\n\n"
        f"`{r['command']}`; {r['machine']['cpu_count']} CPUs, {r['machine']['platform']}. A constant FM: the "
        "assembly, not the FM's forward (see the module docstring).\n\n"
        f"{table}\n\n"
        f"Target: {t['name']}: {t['value']:,.0f} MiB ({t['target']}): {verdict}.\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=LARGE_ROWS, help="events of the stand-in table")
    parser.add_argument("--users", type=int, default=LARGE_USERS, help="users of the stand-in table")
    parser.add_argument("--dim", type=int, default=LARGE_DIM, help="embedding dimension of the store")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rows", "users", "dim"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.child:
        print(json.dumps(child(args.rows, args.users, args.dim)))
        return
    from implicit_rec.atomic import write_json_atomic, write_text_atomic

    from .common import RESULTS, git_commit, machine_info

    cmd = [sys.executable, "-m", f"benchmarks.{NAME}", "--child"]
    cmd += ["--rows", str(args.rows), "--users", str(args.users), "--dim", str(args.dim)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    commit = git_commit()
    peak = measured["peak_rss_mib"]
    result = {
        "command": " ".join(["python -m benchmarks." + NAME, *(argv if argv is not None else sys.argv[1:])]),
        "commit": commit,
        "measured": measured,
        "machine": machine_info(load=[round(x, 2) for x in os.getloadavg()]),
        "targets": [
            {
                "name": "store assembly at the given size, peak RSS MiB (constant FM)",
                "value": peak,
                "target": f"<= {LIMIT_MIB} MiB (the large run's 16 GB)",
                "pass": bool(peak <= LIMIT_MIB) if args.rows == LARGE_ROWS else None,
                "note": (
                    f"increment {measured['increment_mib']:,.0f} MiB = {measured['increment_over_store']:.2f}x the "
                    f"{measured['store_mib']:,.0f} MiB store"
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
