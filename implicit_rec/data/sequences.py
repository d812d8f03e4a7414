"""Behaviour sequences: ``^``-joined cells split into padded (n, max_len) blocks of raw tokens.

Sequences are ``^``-joined non-negative integers; the empty string is the empty sequence; an empty
token ("3^^5", a leading or trailing ``^``) or a token that is not a non-negative integer ("3^x^5",
"-1") is a :class:`~.errors.DataError`. A sequence keeps its **last** ``max_len`` tokens and is
pre-padded with ``PAD_TOKEN``, so the newest token is in the last column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import Where

SEP = "^"
PAD_TOKEN = -1  # raw value of a padded sequence position (tokens are >= 0)
MAX_DIGITS = 18  # longest integer token (fits int64)


def split_sequences(values: Sequence[str], max_len: int, where: Where, column: str) -> np.ndarray:
    """(n, max_len) int64 raw tokens of ``^``-joined cells, last ``max_len`` kept, pre-padded.

    Padding is ``PAD_TOKEN`` (-1). Vectorized over the whole chunk: the cells are joined into one
    byte buffer; tokens are the runs between separators, read digit position by digit position.
    """
    n = len(values)
    out = np.full((n, max_len), PAD_TOKEN, np.int64)
    if n == 0:
        return out
    values = ["" if v is None else v for v in values]
    joined = SEP.join(values)
    if not joined.isascii():
        row = next(i for i, v in enumerate(values) if not v.isascii())
        raise where.error(
            row,
            column,
            f"sequence {values[row][:80]!r} contains non-ASCII characters; "
            "tokens must be non-negative integers joined by '^'.",
        )
    b = np.frombuffer(joined.encode("ascii"), np.uint8)
    lens = np.fromiter(map(len, values), np.int64, n)
    row_start = np.concatenate([[0], np.cumsum(lens[:-1] + 1)])
    is_sep = b == ord(SEP)
    bad = ~is_sep & ((b < ord("0")) | (b > ord("9")))
    sep_pos = np.flatnonzero(is_sep)
    seg_start = np.concatenate([[0], sep_pos + 1])
    seg_end = np.concatenate([sep_pos, [len(b)]])
    joiner = np.zeros(len(b) + 1, bool)  # the separators that join cells, not tokens
    joiner[row_start[1:] - 1] = True
    seg_row = np.concatenate([[0], np.cumsum(joiner[sep_pos])])
    if bad.any():
        seg = int(np.searchsorted(seg_start, np.argmax(bad), side="right") - 1)
        _token_error(values, where, column, int(seg_row[seg]), joined[seg_start[seg] : seg_end[seg]])
    seg_len = seg_end - seg_start
    keep = lens[seg_row] > 0  # an empty cell is one empty segment: the empty sequence
    if (keep & (seg_len == 0)).any():
        row = int(seg_row[np.argmax(keep & (seg_len == 0))])
        raise where.error(
            row,
            column,
            f"sequence {values[row][:80]!r} has an empty token (a stray "
            f"{SEP!r}); join non-empty ids with a single {SEP!r}.",
        )
    if (seg_len > MAX_DIGITS).any():
        seg = int(np.argmax(seg_len > MAX_DIGITS))
        _token_error(
            values,
            where,
            column,
            int(seg_row[seg]),
            joined[seg_start[seg] : seg_end[seg]],
            f"has more than {MAX_DIGITS} digits",
        )
    start, length = seg_start[keep], seg_len[keep]
    digits = int(length.max(initial=0))
    dtype = np.int32 if digits <= 9 else np.int64  # 9 digits always fit int32
    tokens = np.zeros(len(start), dtype)
    last_byte = len(b) - 1
    for k in range(digits):  # one pass per digit position (<= 18)
        digit = b[np.minimum(start + k, last_byte)].astype(dtype) - ord("0")
        tokens = np.where(length > k, tokens * 10 + digit, tokens)
    tok_row = seg_row[keep]
    count = np.bincount(tok_row, minlength=n)
    last = np.cumsum(count)[tok_row] - 1  # index of the row's last token
    col = max_len - 1 - (last - np.arange(len(tokens)))
    kept = col >= 0
    out.ravel()[tok_row[kept] * max_len + col[kept]] = tokens[kept]
    return out


def _token_error(values, where, column, row, token, why="is not a non-negative integer id"):
    raise where.error(
        row,
        column,
        f"token {token!r} in sequence {values[row][:80]!r} {why}; tokens "
        f"must be non-negative integers joined by {SEP!r}.",
    )
