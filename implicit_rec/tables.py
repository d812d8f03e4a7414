"""Markdown tables: the one helper every report uses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A GitHub markdown table; cells are written with ``str`` (format numbers before).

    Args:
      header: column titles.
      rows: one sequence of cells per row, as long as ``header``.
      align: one character per column, ``l`` (left) or ``r`` (right); default: first column
        left, the others right.
    Returns:
      The table, lines joined by newlines (no trailing newline).
    """
    header = [str(h) for h in header]
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one 'l' or 'r' per column ({len(header)}), got {align!r}.")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    for i, row in enumerate(rows):
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {i} has {len(cells)} cells for {len(header)} columns: {cells}.")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
