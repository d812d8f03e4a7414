"""Streaming a CSV file with a header as chunks of named columns, with errors that name the line.

Every row must have as many fields as the header; a blank line, a file without data rows and bytes
that are not UTF-8 are :class:`~.errors.DataError` naming the file, line and column.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import DataError, Where


@dataclasses.dataclass
class Chunk:
    """Up to ``chunk_rows`` consecutive data rows: column name -> tuple of str cells."""

    cells: dict[str, tuple]
    where: Where

    def __len__(self) -> int:
        return len(self.where.lines)


def read_header(path: Path, expected: Sequence[str] = ()) -> list[str]:
    """The column names of a CSV file (line 1); errors for a missing or empty file.

    ``expected`` (the columns a loader needs) only makes the empty-file message more helpful.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, None, "is a directory; expected a CSV file.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            header = next(csv.reader(f), None)
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as e:
            raise DataError(path, 1, None, f"unreadable CSV header ({e}).") from None
    if not header or header == [""] * len(header):
        raise DataError(
            path,
            1,
            expected[0] if expected else None,
            "the file is empty; expected a header line naming the columns"
            + (f" {', '.join(expected)}." if expected else "."),
        )
    return [h.strip() for h in header]


def check_columns(path, header: Sequence[str], required: Sequence[str]) -> None:
    """Error naming the first required column the header lacks (or a duplicated name)."""
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(path, 1, name, "the header names this column twice.")
        seen.add(name)
    missing = [c for c in required if c not in seen]
    if missing:
        raise DataError(path, 1, missing[0], f"the header lacks required column(s) {missing}; it has {list(header)}.")


def read_csv_chunks(path, columns: Sequence[str], chunk_rows: int = 100_000) -> Iterator[Chunk]:
    """Stream a CSV with a header as chunks of the named columns (other columns are ignored).

    Every row must have as many fields as the header; a blank line is an error (never skipped).
    A file with a header but no data rows is an error.
    """
    path = Path(path)
    header = read_header(path, columns)
    check_columns(path, header, columns)
    index = [header.index(c) for c in columns]
    width = len(header)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            next(reader)
            rows, lines, total = [], [], 0
            for row in reader:
                if len(row) != width:
                    _width_error(path, reader.line_num, row, header)
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) == chunk_rows:
                    total += len(rows)
                    yield _chunk(path, rows, lines, columns, index)
                    rows, lines = [], []
        except UnicodeDecodeError:
            raise not_utf8(path, header) from None
        except csv.Error as e:
            raise DataError(path, reader.line_num, None, f"unreadable CSV ({e}).") from None
        if rows:
            total += len(rows)
            yield _chunk(path, rows, lines, columns, index)
    if total == 0:
        raise DataError(path, 2, columns[0] if columns else None, "the file has a header but no data rows.")


def not_utf8(path, header: Sequence[str] | None = None) -> DataError:
    """DataError at the first byte of ``path`` that is not UTF-8: line, CSV column and byte offset.

    The text decoder reads ahead, so the line a ``UnicodeDecodeError`` surfaces at is not the bad
    one; this rescans the file line by line in binary (only on this error path).
    """
    offset = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
                if header is None:  # line 1 decodes: it names the columns
                    header = [h.strip() for h in next(csv.reader([text.lstrip("\ufeff")]), [])]
            except UnicodeDecodeError as err:
                prefix = raw[: err.start].decode("utf-8").lstrip("\ufeff")
                field = len(next(csv.reader([prefix]), [""])) - 1 if prefix else 0
                column = header[field] if header is not None and field < len(header) else None
                hint = " (the file looks UTF-16)" if line_no == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
                return DataError(
                    path,
                    line_no,
                    column,
                    f"byte 0x{raw[err.start]:02x} at character "
                    f"{len(prefix) + 1} of the line (file offset {offset + err.start}) is not "
                    f"valid UTF-8{hint}; the file must be UTF-8 encoded: convert it, e.g. "
                    "`iconv -f latin1 -t utf-8`.",
                )
            offset += len(raw)
    return DataError(path, None, None, "is not valid UTF-8; the file must be UTF-8 encoded.")


def _width_error(path, line, row, header):
    if not row:
        raise DataError(path, line, header[0], "blank line; remove it (every line must be a data row).")
    column = header[len(row)] if len(row) < len(header) else "(extra field)"
    raise DataError(
        path,
        line,
        column,
        f"{len(row)} field(s), but the header has {len(header)}; is a value quoted wrongly or a delimiter missing?",
    )


def _chunk(path, rows, lines, columns, index) -> Chunk:
    fields = list(zip(*rows))
    return Chunk({c: fields[i] for c, i in zip(columns, index)}, Where(str(path), np.asarray(lines, np.int64)))


def scan_csv(path, block: int = 1 << 20) -> tuple[int, bool]:
    """(lines after the header, whether the file has a double quote), in one binary pass.

    Without quotes the line count is the exact number of data rows (no quoted newlines).
    """
    lines, last, quoted = 0, b"\n", False
    buf = bytearray(block)  # one buffer, refilled: no fresh pages per block
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buf):
            lines += buf.count(b"\n", 0, size)
            quoted = quoted or buf.find(b'"', 0, size) >= 0
            last = buf[size - 1 : size]
    return max(lines + (last != b"\n") - 1, 0), quoted


def file_signature(path) -> list | None:
    """[size, mtime_ns] of a file (None if it does not exist), for cache keys."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]
