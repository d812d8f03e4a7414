"""Errors in input data that point at the input: :class:`DataError` and the row locator :class:`Where`.

Bad input raises :class:`DataError` (a ``ValueError``) naming the file, the 1-based line (the header
is line 1; for parquet the 1-based data row) and the column. Nothing is skipped silently.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class DataError(ValueError):
    """Bad input data; ``file``, ``line`` (1-based, header = 1) and ``column`` say where."""

    def __init__(self, file, line: int | None, column: str | None, problem: str, unit: str = "line"):
        self.file, self.line, self.column, self.problem = str(file), line, column, problem
        where = [self.file]
        if line is not None:
            where.append(f"{unit} {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


@dataclasses.dataclass(frozen=True)
class Where:
    """Locates rows of a chunk in their file, for error messages.

    lines: (n,) 1-based line number of each row (CSV) or 1-based data row (parquet, unit="row").
    """

    file: str
    lines: np.ndarray
    unit: str = "line"

    def error(self, row: int, column: str | None, problem: str) -> DataError:
        return DataError(self.file, int(self.lines[row]), column, problem, self.unit)

    @classmethod
    def rows(cls, file, n: int, first: int = 1, unit: str = "row") -> Where:
        return cls(str(file), np.arange(first, first + n), unit)
