"""Benchmark of the three domain studies at their default size (``make domains``), each from a cold cache.

Run from the repository root (long: minutes to tens of minutes per domain on 2 cores)::

    python -m benchmarks.domains [--only lp,deblur,pde] [--strict] [--note TEXT]

Each domain runs ``python -m experiments.domain_NAME --quiet --out DIR --cache-dir DIR`` in a
subprocess, one at a time, with ``IMPLICIT_REC_JAX_CACHE`` pointing at a new, empty directory (the
user's cache and any ``JAX_COMPILATION_CACHE_*`` settings are not used) and a new, empty data cache:
everything a first ``make domains`` does is timed (data generation, compilation, training, sweep,
report). Recorded per domain: wall seconds, CPU seconds (user + system, the ``RUSAGE_CHILDREN``
delta around the run), peak resident memory (``ru_maxrss`` of the child, from ``os.wait4``), the load
averages before and after, and the main metrics, so a speed change that moves the results shows.
Target (issue 15): each default run <= 15 minutes wall on a quiet 2-core machine. The verdict is on
the measured wall time; on a shared machine the wall also counts the time other processes held the
cores, so the CPU seconds are reported next to it (a single-threaded run on a quiet machine takes
about its CPU time). Writes ``benchmarks/results/domains.{json,md}`` (a run with ``--only`` keeps the
other domains' earlier entries); ``--strict`` exits with status 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.tables import markdown_table

from .common import JAX_CACHE_VARS, RESULTS, children_cpu, git_commit, machine_info

DOMAINS = ("lp", "deblur", "pde")
TARGET_WALL_S = 15 * 60.0


def headline(name: str, metrics: dict) -> dict:
    """The few numbers of a domain's metrics.json that a speed change must not move."""
    models = metrics.get("models", {})
    if name == "lp":
        return {
            f"{kind} d={d} test error": round(e["test_error"], 4)
            for kind in ("implicit", "explicit")
            for d, e in models.get(kind, {}).items()
        }
    if name == "deblur":
        out = {f"{k} PSNR": round(models[k]["psnr"], 2) for k in ("implicit", "explicit", "wiener") if k in models}
        out.update({f"unrolled {d} PSNR": round(u["psnr"], 2) for d, u in models.get("unrolled", {}).items()})
        return out
    return {f"{k} test rel. L2": round(m["test_rel_l2"], 4) for k, m in models.items()}


def run_domain(name: str, tmp: Path) -> dict:
    """One default run of domain ``name`` with an empty compilation cache and an empty data cache."""
    env = {k: v for k, v in os.environ.items() if k not in JAX_CACHE_VARS}
    env["IMPLICIT_REC_JAX_CACHE"] = str(tmp / f"jax-cache-{name}")
    out, log = tmp / f"domain-{name}", tmp / f"{name}.log"
    cmd = [sys.executable, "-m", f"experiments.domain_{name}", "--quiet", "--out", str(out)]
    cmd += ["--cache-dir", str(tmp / f"data-{name}")]
    load_before = os.getloadavg()
    cpu0, t0 = children_cpu(), time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{log.read_text()[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "command": f"python -m experiments.domain_{name} --out DIR",
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_over_wall": cpu / wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "timing": metrics.get("timing", {}),
        "results": headline(name, metrics),
        "target_wall_s": TARGET_WALL_S,
        "pass": wall <= TARGET_WALL_S,
    }


def targets(domains: dict) -> list[dict]:
    """The issue-15 targets: one per domain, on the measured wall time (null when not measured)."""
    out = []
    for name in DOMAINS:
        r = domains.get(name)
        entry = {"name": f"{name} default run, wall s", "target": f"<= {TARGET_WALL_S:.0f} s wall"}
        if r is None:
            out.append({**entry, "value": None, "pass": None, "note": "not measured (--only)"})
            continue
        entry.update(value=round(r["wall_s"], 1), **{"pass": r["pass"]})
        entry["note"] = (
            f"{r['cpu_s']:.0f} s CPU; load average {r['load_before'][0]:.1f} before, "
            f"{r['load_after'][0]:.1f} after on {os.cpu_count()} CPUs"
        )
        out.append(entry)
    return out


def markdown(r: dict, note: str = "") -> str:
    m = r["machine"]
    env = (
        f"{m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, JAX {m['jax']} ({m['backend']}); "
        "each domain from an empty compilation cache and an empty data cache, one at a time"
    )
    rows = []
    for name in DOMAINS:
        d = r["domains"].get(name)
        if d is None:
            rows.append((name, "-", "-", "-", "-", "-", "not measured"))
            continue
        rows.append(
            (
                name,
                f"{d['wall_s']:.0f}",
                f"{d['cpu_s']:.0f}",
                f"{d['peak_rss_mib']:.0f}",
                f"{', '.join(map(str, d['load_before']))} / {', '.join(map(str, d['load_after']))}",
                f"<= {d['target_wall_s']:.0f}",
                "PASS" if d["pass"] else "FAIL",
            )
        )
    table = markdown_table(
        ("domain", "wall s", "CPU s", "peak RSS MiB", "load avg before / after", "target, wall s", "verdict"),
        rows,
        align="lrrrlrl",
    )
    results = []
    for name, d in r["domains"].items():
        results.append(
            f"- **{name}** (commit {d.get('commit', r['commit'])[:8]}): "
            + ", ".join(f"{k} {v}" for k, v in d["results"].items())
        )
    return (
        f"# Domain studies at their default size (`make domains`), cold caches\n\n{env}."
        f"{' ' + note if note else ''}\n\n{table}\n\nResults of these runs:\n\n" + "\n".join(results) + "\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(DOMAINS), help="comma list of domains (default: all three)")
    parser.add_argument("--note", default="", help="a sentence on the machine's state, added to the markdown")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in names if n not in DOMAINS]
    if bad or not names:
        parser.error(f"--only {args.only!r}: choose from {', '.join(DOMAINS)} (comma-separated).")
    commit = git_commit()
    previous = RESULTS / "domains.json"
    domains = json.loads(previous.read_text()).get("domains", {}) if previous.exists() else {}
    with tempfile.TemporaryDirectory(prefix="domains-bench-") as tmp:
        for name in names:
            print(f"{name} ...", flush=True)
            domains[name] = {**run_domain(name, Path(tmp)), "commit": commit, "note": args.note}
            print(f"  {domains[name]['wall_s']:.0f} s wall, {domains[name]['cpu_s']:.0f} s CPU", flush=True)
    result = {
        "commit": commit,
        "domains": {n: domains[n] for n in DOMAINS if n in domains},
        "pass": all(domains[n]["pass"] for n in DOMAINS if n in domains),
        "machine": machine_info(),
    }
    result["targets"] = targets(result["domains"])
    text = markdown(result, args.note)
    write_json_atomic(RESULTS / "domains.json", result)
    write_text_atomic(RESULTS / "domains.md", text)
    print(text)
    if args.strict and not result["pass"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
