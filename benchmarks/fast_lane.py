"""Benchmark of the fast test lane (``make test``'s pytest command) against its 3-minute target.

Run from the repository root (about 2-3 minutes on 2 cores)::

    python -m benchmarks.fast_lane [--strict] [--note TEXT]

Runs ``python -m pytest -q -m "not slow" -n 2 --dist loadfile`` (the Makefile's ``test`` target
without its set-up) in a subprocess with the persistent compilation cache off, as CI's clean clone
has it, and records the wall and CPU seconds (``RUSAGE_CHILDREN`` around it), the test count and the
load averages. The target (issue 15) is the wall time of the lane: <= 180 s on a quiet 2-core
machine. Writes ``benchmarks/results/fast_lane.{json,md}`` with the ``targets`` list that
``benchmarks.summary`` prints; ``--strict`` exits with status 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.tables import markdown_table

from .common import RESULTS, children_cpu, machine_info

TARGET_WALL_S = 180.0
COMMAND = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-n", "2", "--dist", "loadfile"]


def measure() -> dict:
    load_before = os.getloadavg()
    env = {**os.environ, "IMPLICIT_REC_TEST_JAX_CACHE": "off"}
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(COMMAND, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail)}
    ok = proc.returncode == 0
    return {
        "command": " ".join(["python", *COMMAND[1:]]),
        "returncode": proc.returncode,
        "summary_line": tail,
        "counts": counts,
        "wall_s": wall,
        "cpu_s": cpu,
        "targets": [
            {
                "name": "fast test lane (make test's pytest), wall s",
                "value": wall,
                "target": f"<= {TARGET_WALL_S:.0f} s wall",
                "pass": ok and wall <= TARGET_WALL_S,
                **({} if ok else {"note": f"the lane failed (exit {proc.returncode}): {tail}"}),
            }
        ],
        "machine": machine_info(
            load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in os.getloadavg()]
        ),
    }


def markdown(r: dict, note: str = "") -> str:
    t = r["targets"][0]
    m = r["machine"]
    rows = [
        ("wall seconds", f"{r['wall_s']:.1f}"),
        ("CPU seconds (user + system)", f"{r['cpu_s']:.1f}"),
        ("pytest", r["summary_line"] or "-"),
        ("target", t["target"]),
        ("verdict", "PASS" if t["pass"] else "FAIL"),
    ]
    return (
        "# The fast test lane (`make test` without its set-up)\n\n"
        f"`{r['command']}`; {m['cpu_count']} CPUs, Python {m['python']}, JAX {m['jax']}; load average "
        f"(1, 5, 15 min) {', '.join(map(str, m['load_before']))} before, {', '.join(map(str, m['load_after']))} "
        f"after.{' ' + note if note else ''}\n\n" + markdown_table(("", "value"), rows) + "\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--note", default="", help="a sentence on the machine's state, added to the markdown")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when the target is missed")
    args = parser.parse_args(argv)
    result = measure()
    result["note"] = args.note
    text = markdown(result, args.note)
    write_json_atomic(RESULTS / "fast_lane.json", result)
    write_text_atomic(RESULTS / "fast_lane.md", text)
    print(text)
    if args.strict and not result["targets"][0]["pass"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
