"""Behaviour sequences: ``^``-joined cells split into padded (n, max_len) blocks of raw tokens.

Sequences are ``^``-joined non-negative integers; the empty string is the empty sequence; an empty
token ("3^^5", a leading or trailing ``^``) or a token that is not a non-negative integer ("3^x^5",
"-1") is a :class:`~.errors.DataError`. A sequence keeps its **last** ``max_len`` tokens and is
pre-padded with ``PAD_TOKEN``, so the newest token is in the last column.

:func:`tokens_from_buffer` is the fast core: it parses the cells of a byte buffer (e.g. a pyarrow
string column's data) with whole-array operations and returns None for anything irregular, so that
callers can fall back to :func:`split_sequences`, whose errors name the bad cell.
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
    text = "".join(values)
    if text.isascii():
        lens = np.fromiter(map(len, values), np.int64, n)
        ends = np.cumsum(lens)
        fast = tokens_from_buffer(np.frombuffer(text.encode("ascii"), np.uint8), ends - lens, ends, max_len)
        if fast is not None:
            return fast.astype(np.int64)
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


def tokens_from_buffer(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int, separators: np.ndarray | None = None
) -> np.ndarray | None:
    """(n, max_len) int32 raw tokens (int64 if one needs it) of the cells ``data[starts[i]:ends[i]]``.

    data: uint8 bytes; the cells must be consecutive (``starts[i + 1] == ends[i]``), as in a pyarrow
    string column. Same result as :func:`split_sequences` (last ``max_len`` tokens, pre-padded with
    ``PAD_TOKEN``); None where that would raise (a byte that is neither a digit nor ``^``, an empty
    token) or a token has more than 8 digits. Each token is read as one little-endian 64-bit word
    and converted by SWAR: ((w - '0'*8) << 8 (8 - len)), then pairs, quads and octets of digits are
    combined with three multiply-shift-mask steps (32-bit words and two steps when every token has
    at most 4 digits). ``separators``: the number of ``^`` in each cell, if known (e.g. from
    ``pyarrow.compute.count_substring``).
    """
    n = len(starts)
    if n == 0:
        return np.full((0, max_len), PAD_TOKEN, np.int32)
    lo = int(starts[0])
    b = data[lo : int(ends[-1])]
    sep = np.flatnonzero(b == ord(SEP))
    if np.count_nonzero((b - np.uint8(ord("0"))) > 9) != len(sep):
        return None
    cs, ce = np.asarray(starts, np.int64) - lo, np.asarray(ends, np.int64) - lo
    full = ce > cs
    if separators is None:
        separators = np.searchsorted(sep, ce) - np.searchsorted(sep, cs)
    count = separators + full  # tokens per cell
    total = np.cumsum(count)
    n_tok = int(total[-1])
    if n_tok == 0:
        return np.full((n, max_len), PAD_TOKEN, np.int32)
    first = np.zeros(n_tok, bool)
    first[(total - count)[full]] = True
    start = np.empty(n_tok, np.int64)
    start[first] = cs[full]
    start[~first] = sep + 1
    length = np.empty(n_tok, np.int64)
    length[:-1] = start[1:] - 1
    length[(total - 1)[full]] = ce[full]
    length -= start
    if length.min() < 1 or length.max() > 8:
        return None
    word = _digits(b, start, length)
    dest = np.arange(n_tok, dtype=np.int64) + np.repeat(np.arange(1, n + 1, dtype=np.int64) * max_len - total, count)
    if count.max() > max_len:  # keep the last max_len of each cell
        keep = dest >= np.repeat(np.arange(n, dtype=np.int64) * max_len, count)
        dest, word = dest[keep], word[keep]
    out = np.full((n, max_len), PAD_TOKEN, np.int64 if word.max(initial=0) > np.iinfo(np.int32).max else np.int32)
    out.ravel()[dest] = word
    return out


def _digits(b: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Values of the digit runs ``b[start:start + length]`` (1 <= length <= 8) by SWAR on machine words."""
    short = length.max() <= 4
    u, width = (np.uint32, 4) if short else (np.uint64, 8)
    padded = np.zeros(len(b) + width, np.uint8)
    padded[: len(b)] = b
    word = np.ndarray((len(b),), dtype=f"<u{width}", buffer=padded, strides=(1,))[start]
    word -= u(int("30" * width, 16))  # no borrow reaches the token's bytes: they are digits, the low bytes
    word <<= u(8 * width) - (length.astype(u) << u(3))  # the last digit in the top byte, zeros below
    word = (word * u(10) + (word >> u(8))) & u(int("00FF" * (width // 2), 16))
    word = (word * u(100) + (word >> u(16))) & u(int("0000FFFF" * (width // 4), 16))
    if not short:
        word = (word * u(10000) + (word >> u(32))) & u(0xFFFFFFFF)
    return word


def _token_error(values, where, column, row, token, why="is not a non-negative integer id"):
    raise where.error(
        row,
        column,
        f"token {token!r} in sequence {values[row][:80]!r} {why}; tokens "
        f"must be non-negative integers joined by {SEP!r}.",
    )
