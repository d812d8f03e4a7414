"""The cost of writing one entry into JAX's persistent compilation cache, with and without JAX's size limit.

Run from the repository root (about a minute)::

    python -m benchmarks.compile_cache

With a size limit (``jax_compilation_cache_max_size`` > 0) JAX's ``LRUCache`` takes a file lock
around every read and write and, at every write, lists the directory and reads every entry's
access-time file to decide what to evict: the cost of each newly compiled program grows with the
number of entries already cached. ``implicit_rec.compile_cache`` gives JAX no limit (-1: no lock, no
scan) and keeps the directory under its size once per command (``compile_cache.trim``). This fills
temporary cache directories with N entries of 16 KiB (the size of a small program; with their
access-time files, as JAX writes them; one directory per mode) and times ``LRUCache.put`` of new
entries in both modes, round-robin, and one ``trim`` of the N entries. Medians. No target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from jax._src.lru_cache import LRUCache

from implicit_rec import compile_cache
from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.tables import markdown_table

from .common import RESULTS, machine_info

SIZES = (1_000, 4_000, 16_000)
ENTRY_BYTES = 16 * 2**10
LIMIT = 4 * 2**30  # the test suite's former limit; nothing is evicted at these sizes


def _fill(directory: Path, n: int) -> None:
    payload = os.urandom(ENTRY_BYTES)
    stamp = time.time_ns().to_bytes(8, "little")
    for i in range(n):
        (directory / f"jit_f-{i:064x}{compile_cache.ENTRY_SUFFIX}").write_bytes(payload)
        (directory / f"jit_f-{i:064x}{compile_cache.ATIME_SUFFIX}").write_bytes(stamp)


def run(puts: int) -> dict:
    rows = []
    payload = os.urandom(ENTRY_BYTES)
    for n in SIZES:
        with tempfile.TemporaryDirectory() as limited, tempfile.TemporaryDirectory() as unlimited:
            for tmp in (limited, unlimited):  # one each: JAX's eviction needs every entry's access-time file
                _fill(Path(tmp), n)
            caches = {
                "size limit (JAX locks and scans)": LRUCache(limited, max_size=LIMIT),
                "no limit": LRUCache(unlimited, max_size=-1),
            }
            times = {name: [] for name in caches}
            for i in range(puts):
                for name, cache in caches.items():
                    t0 = time.perf_counter()
                    cache.put(f"new-{i}", payload)
                    times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            compile_cache.trim(unlimited, max_bytes=2**62)  # lists and stats every entry, deletes nothing
            trim_s = time.perf_counter() - t0
        ms = {name: 1e3 * statistics.median(ts) for name, ts in times.items()}
        rows.append({"entries": n, "put_ms": ms, "trim_ms": 1e3 * trim_s})
    return {"puts": puts, "entry_bytes": ENTRY_BYTES, "machine": machine_info(), "rows": rows}


def markdown(report: dict) -> str:
    names = list(report["rows"][0]["put_ms"])
    rows = [
        [f"{r['entries']:,}"] + [f"{r['put_ms'][n]:.2f}" for n in names] + [f"{r['trim_ms']:.0f}"]
        for r in report["rows"]
    ]
    m = report["machine"]
    return "\n".join(
        [
            "# Writing one entry into JAX's persistent compilation cache: with and without JAX's size limit",
            "",
            f"`LRUCache.put` of a {report['entry_bytes'] // 1024} KiB entry into a directory holding N entries, "
            f"medians of {report['puts']} round-robin puts; and one `compile_cache.trim` pass over the N entries. "
            f"{m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, JAX {m['jax']}; load average after "
            f"{report['load_average'][0]:.2f}" + (f"; {report['note']}" if report["note"] else "") + ".",
            "",
            markdown_table(["entries N"] + [f"ms per put, {n}" for n in names] + ["ms, one trim pass"], rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=15)
    parser.add_argument("--note", default="", help="how quiet the machine was (recorded with the results)")
    args = parser.parse_args(argv)
    report = {**run(args.puts), "note": args.note, "load_average": os.getloadavg()}
    write_json_atomic(RESULTS / "compile_cache.json", report)
    text = markdown(report)
    write_text_atomic(RESULTS / "compile_cache.md", text)
    print(text)


if __name__ == "__main__":
    main()
