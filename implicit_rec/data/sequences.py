"""Behaviour sequences: ``^``-joined cells split into padded (n, max_len) blocks of raw tokens.

Sequences are ``^``-joined non-negative integers; the empty string is the empty sequence; an empty
token ("3^^5", a leading or trailing ``^``) or a token that is not a non-negative integer ("3^x^5",
"-1") is a :class:`~.errors.DataError`. A sequence keeps its **last** ``max_len`` tokens and is
pre-padded with ``PAD_TOKEN``, so the newest token is in the last column.

:func:`token_runs` is the fast core: it parses the cells of a byte buffer (e.g. a pyarrow
binary column's data) with whole-array operations into flat tokens and cell offsets (padded by
:func:`pad_runs`; :func:`tokens_from_buffer` does both) and returns None for anything irregular, so
that callers can fall back to :func:`split_sequences`, whose errors name the bad cell.
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


def tokens_from_buffer(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray | None:
    """(n, max_len) int32 raw tokens of the cells ``data[starts[i]:ends[i]]``, or None.

    data: uint8 bytes; the cells must be consecutive (``starts[i + 1] == ends[i]``), as in a pyarrow
    string column. Same result as :func:`split_sequences` (last ``max_len`` tokens, pre-padded with
    ``PAD_TOKEN``); None where that would raise, or a token has more than 8 digits (see
    :func:`token_runs`).
    """
    offsets = np.concatenate([np.asarray(starts[:1] if len(starts) else [0], np.int64), np.asarray(ends, np.int64)])
    runs = token_runs(data, offsets, max_len)
    return None if runs is None else pad_runs(*runs, max_len, PAD_TOKEN)


RUN_BYTES = 1 << 18  # bytes of cells parsed at once by token_runs (keeps its temporaries in cache)


def token_runs(data: np.ndarray, offsets: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, ends): the kept tokens of consecutive cells, flat, and where each cell's tokens are.

    data: uint8 bytes; cell i is ``data[offsets[i]:offsets[i + 1]]`` (a pyarrow string or binary
    column's buffers). values: int32, cell by cell, each cell's last ``max_len`` tokens in order;
    ends: (n + 1,) int64 from 0, cell i's tokens are ``values[ends[i]:ends[i + 1]]``. None where
    :func:`split_sequences` would raise (a byte that is neither a digit nor ``^``, an empty token)
    or a token has more than 8 digits.
    Every token ends at a terminator (a ``^`` or its cell's end); a token of L digits is read as one
    little-endian word starting at its first digit, shifted so that the digits fill its top L bytes,
    and converted by SWAR: three mask-multiply-shift steps combine digit pairs, quads and octets
    (32-bit words and two steps when every token has at most 4 digits).
    """
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    lo, hi = int(offsets[0]), int(offsets[-1])
    cuts = [0, n]
    if hi - lo > RUN_BYTES:  # groups of about RUN_BYTES bytes (whole cells)
        cuts = np.unique(np.concatenate([[0], np.searchsorted(offsets, np.arange(lo, hi, RUN_BYTES)[1:]), [n]]))
    values, counts = [], []
    for a, z in zip(cuts[:-1], cuts[1:]):
        runs = _token_runs(data, offsets[a : z + 1], max_len)
        if runs is None:
            return None
        values.append(runs[0])
        counts.append(runs[1])
    counts = counts[0] if len(counts) == 1 else np.concatenate(counts)
    ends = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=ends[1:])
    return (values[0] if len(values) == 1 else np.concatenate(values)), ends


def _token_runs(data: np.ndarray, offsets: np.ndarray, max_len: int):
    lo = int(offsets[0])
    b = data[lo : int(offsets[-1])]
    m = len(b)
    cs, ce = offsets[:-1] - lo, offsets[1:] - lo
    term = np.zeros(m + 1, bool)  # token terminators: the separators, then the cells' ends
    np.equal(b, ord(SEP), out=term[:m])
    if np.count_nonzero((b - np.uint8(ord("0"))) > 9) != np.count_nonzero(term):
        return None  # a byte that is neither a digit nor a separator
    full = ce > cs
    if np.any(b[cs[full]] == ord(SEP)):
        return None  # a leading separator (merged below with the previous cell's end)
    term[ce[full]] = True
    end = np.flatnonzero(term)
    total = np.searchsorted(end, ce, "right")  # tokens in cells 0..i
    count = total.copy()
    count[1:] -= total[:-1]
    n_tok = len(end)
    if n_tok == 0:
        return np.zeros(0, np.int32), count
    length = np.empty_like(end)  # end[i] - end[i - 1] - 1, but a cell's first token starts right at its start
    length[0] = end[0]
    np.subtract(end[1:], end[:-1], out=length[1:])
    length[1:] -= 1
    length[(total - count)[full][1:]] += 1
    if length.min() < 1 or length.max() > 8:
        return None  # an empty token (a stray separator), or too many digits
    width = 4 if length.max() <= 4 else 8
    start = end - length
    padded = np.zeros(m + width, np.uint8)
    padded[:m] = b
    word = np.take(np.ndarray((m,), f"<u{width}", padded, strides=(1,)), start)
    length -= width
    np.negative(length, out=length)
    length <<= 3
    word <<= length.astype(word.dtype)  # the digits in the top bytes, the last one in the top byte
    word &= int("0F" * width, 16)  # digits '0'..'9' -> 0..9, shifted-in zero bytes stay zero
    word *= 10 << 8 | 1
    word >>= 8
    word &= int("00FF" * (width // 2), 16)
    word *= 100 << 16 | 1
    word >>= 16
    if width == 8:
        word &= 0x0000FFFF0000FFFF
        word *= 10000 << 32 | 1
        word >>= 32
    values = word.astype(np.int32)
    if count.max() > max_len:  # keep the last max_len of each cell
        values = values[np.arange(n_tok) >= np.repeat(total - np.minimum(count, max_len), count)]
        np.minimum(count, max_len, out=count)
    return values, count


def pad_runs(values: np.ndarray, ends: np.ndarray, max_len: int, fill: int) -> np.ndarray:
    """(n, max_len): row i is ``fill``, then its <= max_len ``values[ends[i]:ends[i + 1]]`` (see :func:`token_runs`)."""
    counts = np.diff(ends)
    out = np.full((len(counts), max_len), fill, values.dtype)
    out[np.arange(max_len) >= (max_len - counts)[:, None]] = values
    return out


def _token_error(values, where, column, row, token, why="is not a non-negative integer id"):
    raise where.error(
        row,
        column,
        f"token {token!r} in sequence {values[row][:80]!r} {why}; tokens "
        f"must be non-negative integers joined by {SEP!r}.",
    )
