"""Every benchmark target with PASS/FAIL and its measured figure, from ``benchmarks/results/*.json``.

Run from the repository root (``make bench`` runs it last)::

    python -m benchmarks.summary [--strict]

Each benchmark writes a ``targets`` list into its JSON result: entries ``name`` (what is measured,
with its unit), ``value`` (the figure, or null), ``target`` (the limit as text, e.g. "<= 60 s CPU")
and ``pass`` (true, false, or null for a target that was skipped, with ``note`` saying why). This
prints them as one table, with the file and the commit each came from, and writes
``benchmarks/results/summary.{json,md}``. A result file without a ``targets`` list (a benchmark that
only measures) is listed as "measured, no target". ``--strict`` exits with status 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.tables import markdown_table

from .common import RESULTS

SKIP_FILES = {"summary.json"}


def verdict(entry: dict) -> str:
    """PASS, FAIL or SKIP of one target entry."""
    return {True: "PASS", False: "FAIL"}.get(entry.get("pass"), "SKIP")


def _figure(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def collect(results: Path = RESULTS) -> tuple[list[dict], list[str]]:
    """(one row per target of every result file, the files that report no target)."""
    rows, untargeted = [], []
    for path in sorted(results.glob("*.json")):
        if path.name in SKIP_FILES:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"{path}: not a readable JSON result ({err}); rerun its benchmark.") from None
        targets = data.get("targets") if isinstance(data, dict) else None
        if not targets:
            untargeted.append(path.name)
            continue
        for i, entry in enumerate(targets):
            if not isinstance(entry, dict) or "name" not in entry or "pass" not in entry:
                raise SystemExit(f"{path}: targets[{i}] needs the keys 'name' and 'pass' (got {entry!r}).")
            rows.append(
                {
                    "file": path.name,
                    "commit": str(data.get("commit", ""))[:8],
                    "name": entry["name"],
                    "value": entry.get("value"),
                    "target": entry.get("target", ""),
                    "verdict": verdict(entry),
                    "note": entry.get("note", ""),
                }
            )
    return rows, untargeted


def markdown(rows: list[dict], untargeted: list[str]) -> str:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("PASS", "FAIL", "SKIP")}
    table = markdown_table(
        ("verdict", "target", "measured", "limit", "result file", "note"),
        [(r["verdict"], r["name"], _figure(r["value"]), r["target"] or "-", r["file"], r["note"] or "") for r in rows],
    )
    measured_only = f"\nMeasured, no target: {', '.join(untargeted)}.\n" if untargeted else ""
    return (
        "# Benchmark targets (issue 15 and earlier)\n\n"
        f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} skipped; each figure is from the "
        "result file's last run (its markdown file says on which machine, load and commit).\n\n"
        + table
        + "\n"
        + measured_only
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    rows, untargeted = collect()
    text = markdown(rows, untargeted)
    write_json_atomic(RESULTS / "summary.json", {"targets": rows, "untargeted": untargeted})
    write_text_atomic(RESULTS / "summary.md", text)
    print(text)
    if args.strict and any(r["verdict"] == "FAIL" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
