"""Export synthetic impressions as a BARS TaobaoAd_x1 release: ``DIR/train.csv`` and ``DIR/test.csv``.

The files have the real release's header, column order and cell formats (``shared/notes/datasets.md``):
raw integer ids, ``^``-joined histories of at most ``max_len`` ids (oldest first, no padding),
``price`` with two decimals, no timestamp column, rows in time order (ties by user). The events are
the synthetic generator's (:mod:`~implicit_rec.data.synthetic`, same seeds: user ``u`` draws from
the ``u``-th child of ``SeedSequence(seed)``) before any encoding: ids are the generator's raw ids
(0-based). ``train.csv`` holds the generator's training days (0-6; its validation slice included),
``test.csv`` its test days (7-9). The marketplace orders (``fm_sequences``) and the oracle info
arrays are not written: the real release has neither.

Memory is bounded: users are simulated in blocks; each block's rows are formatted as CSV lines
(vectorized) and appended to per-time-bucket temporary files; each bucket is then sorted by
(time, user) and appended to its output file. Deterministic for a seed (independent of the block size).

Command line: ``python -m implicit_rec.data.bars_export --rows 3000000 --out DIR [--seed 0] [--workers N]``
(users simulated on every CPU unless ``--workers`` says otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..atomic import atomic_directory
from . import synthetic as syn

SEQUENCES = ("btag_his", "cate_his", "brand_his")
HEADER = ("clk", *SEQUENCES, *syn.PROFILE, *syn.ITEM, "price", *syn.CONTEXT)  # the release's column order
# the preset of --rows exports: the default's behaviour rate, a larger catalogue and 40
# impressions per user-day (fewer users per row keeps the generator at ~30 us of CPU per row)
SCALED = syn.Preset(
    users=1, categories=100, brands=1000, ads=20_000, behaviours_per_day=8.0, impressions_per_day=40.0, max_len=50
)
META = "export.json"


def preset_for_rows(rows: int, base: syn.Preset = SCALED) -> syn.Preset:
    """``base`` with enough users for about ``rows`` impressions (the count is random: within a few percent)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}.")
    per_user = base.impressions_per_day * syn.DAYS * math.exp(0.5**2 / 2)  # E[activity] = exp(sigma^2 / 2)
    return dataclasses.replace(base, users=max(1, math.ceil(rows / per_user)))


def simulate_blocks(
    p: syn.Preset, seed: int, block_users: int = 64, workers: int | None = 1
) -> Iterator[dict[str, np.ndarray]]:
    """The generator's raw impressions, ``block_users`` users at a time (user-major, time order per user).

    Each block: the columns of ``synthetic._simulate_user`` (raw 0-based ids, ``-1``-pre-padded
    (n, p.max_len) windows, ``price`` = log1p(price)) plus ``logprice`` (n,) log of the raw price.
    ``workers``: processes simulating blocks, as ``synthetic.synthetic_events``'s (1: this process;
    None: every CPU; more than one needs an ``if __name__ == "__main__":`` script); the blocks are
    the same for any count.
    """
    if block_users < 1:
        raise ValueError(f"block_users must be >= 1, got {block_users}.")
    syn.check_workers(workers)
    world = syn._World(p, np.random.default_rng(seed))
    world.graph = syn.category_graph(p, seed) if p.cascade_weight else None
    user_seeds = np.random.SeedSequence(seed).spawn(p.users)
    blocks = [(start, user_seeds[start : start + block_users]) for start in range(0, p.users, block_users)]
    for cols in syn._simulated_blocks(p, world, blocks, workers, raw=True):
        cols["logprice"] = world.ad_logprice[cols["adgroup_id"]]
        yield cols


class _Pieces:
    """Text of every cell value: integers 0..V-1, then one price per ad, then the empty string."""

    def __init__(self, n_ints: int, logprice: np.ndarray):
        texts = [str(i).encode() for i in range(n_ints)] + [b"%.2f" % np.exp(x) for x in logprice] + [b""]
        self.price0, self.empty = n_ints, len(texts) - 1
        self.length = np.fromiter(map(len, texts), np.int64, len(texts))
        self.bytes = np.frombuffer(np.array(texts, dtype=f"S{max(self.length)}").tobytes(), np.uint8).reshape(
            len(texts), -1
        )


def format_rows(cols: dict[str, np.ndarray], pieces: _Pieces, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 CSV bytes of the rows, (n,) int64 byte length of each line), vectorized.

    Every row is a fixed grid of slots (one per scalar cell, ``max_len`` per history); a slot is a
    piece of text and the separator after it (``^``, ``,`` or a newline); unused history slots are skipped.
    """
    n = len(cols["clk"])
    slots, active, seps = [], [], []
    for name in HEADER:
        if name in SEQUENCES:
            w = cols[name][:, -max_len:]
            if w.shape[1] < max_len:
                w = np.pad(w, ((0, 0), (max_len - w.shape[1], 0)), constant_values=-1)
            on = w >= 0
            on[:, -1] = True  # an empty history is the empty cell: its separator still follows
            slots.append(np.where(on, w, pieces.empty))
            active.append(on)
            seps += [ord("^")] * (max_len - 1) + [ord(",")]
        else:
            v = pieces.price0 + cols["adgroup_id"] if name == "price" else cols[name]
            slots.append(np.asarray(v, np.int64).reshape(n, 1))
            active.append(np.ones((n, 1), bool))
            seps.append(ord(","))
    seps[-1] = ord("\n")
    width = len(seps)
    on = np.flatnonzero(np.concatenate(active, axis=1).ravel())
    piece = np.concatenate(slots, axis=1).ravel()[on]
    sep = np.asarray(seps, np.uint8)[on % width]
    text_len = pieces.length[piece]
    end = np.cumsum(text_len + 1)
    start = end - text_len - 1
    out = np.empty(int(end[-1]) if len(end) else 0, np.uint8)
    for k in range(pieces.bytes.shape[1]):
        m = text_len > k
        out[start[m] + k] = pieces.bytes[piece[m], k]
    out[end - 1] = sep
    return out, np.bincount(on // width, weights=text_len + 1, minlength=n).astype(np.int64)


def export_taobaoad(
    out,
    *,
    rows: int | None = None,
    preset: str | syn.Preset = "default",
    seed: int = 0,
    max_len: int = 50,
    block_users: int = 64,
    buckets_per_day: int = 24,
    workers: int | None = 1,
) -> dict:
    """Write synthetic impressions as a TaobaoAd_x1 release in directory ``out`` (atomically).

    ``rows``: about this many rows from :func:`preset_for_rows` (then ``preset`` is ignored); else
    ``preset`` (a name in ``synthetic.PRESETS`` or a ``Preset``). Histories keep their last
    ``max_len`` ids. ``workers``: processes simulating the users (:func:`simulate_blocks`; the file is
    the same for any count). Returns the summary that is also written to ``out/export.json``.
    """
    if rows is not None:
        p, name = preset_for_rows(rows), "scaled"
    elif isinstance(preset, syn.Preset):
        p, name = preset, "custom"
    elif preset in syn.PRESETS:
        p, name = syn.PRESETS[preset], preset
    else:
        raise ValueError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(syn.PRESETS)}.")
    if max_len < 1 or buckets_per_day < 1:
        raise ValueError(f"max_len and buckets_per_day must be >= 1, got {max_len} and {buckets_per_day}.")
    world = syn._World(p, np.random.default_rng(seed))
    pieces = _Pieces(max(p.users, p.ads, p.brands, p.categories, 16), world.ad_logprice)
    width = syn.SECONDS // buckets_per_day
    n_buckets = syn.DAYS * buckets_per_day
    out = Path(out)
    with atomic_directory(out) as tmp:
        parts = tmp / "buckets"
        parts.mkdir()
        handles: dict[int, tuple] = {}
        try:
            for cols in simulate_blocks(p, seed, block_users, workers):
                bucket = np.minimum(cols["time"] // width, n_buckets - 1)
                order = np.argsort(bucket, kind="stable")
                cols = {k: v[order] for k, v in cols.items()}
                cols["clk"] = cols["label"].astype(np.int64)
                text, lengths = format_rows(cols, pieces, max_len)
                ends = np.cumsum(lengths)
                cuts = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
                for b in np.flatnonzero(np.diff(cuts)):
                    lo, hi = cuts[b], cuts[b + 1]
                    if b not in handles:
                        handles[b] = (open(parts / f"{b}.csv", "wb"), open(parts / f"{b}.idx", "wb"))
                    byte_lo = ends[lo - 1] if lo else 0
                    handles[b][0].write(text[byte_lo : ends[hi - 1]].tobytes())
                    side = np.stack([cols["time"][lo:hi], cols["userid"][lo:hi], lengths[lo:hi]], axis=1)
                    handles[b][1].write(np.ascontiguousarray(side, np.int64).tobytes())
        finally:
            for fh in handles.values():
                fh[0].close(), fh[1].close()
        counts = {"train": 0, "test": 0}
        files = {k: open(tmp / f"{k}.csv", "wb") for k in counts}
        try:
            for fh in files.values():
                fh.write((",".join(HEADER) + "\n").encode())
            for b in sorted(handles):
                text = np.fromfile(parts / f"{b}.csv", np.uint8)
                time, user, lengths = np.fromfile(parts / f"{b}.idx", np.int64).reshape(-1, 3).T
                order = np.lexsort((user, time))
                starts = np.cumsum(lengths) - lengths
                new_starts = np.cumsum(lengths[order]) - lengths[order]
                index = np.repeat(starts[order] - new_starts, lengths[order]) + np.arange(len(text))
                split = "test" if b // buckets_per_day >= syn.TEST_DAY else "train"
                files[split].write(text[index].tobytes())
                counts[split] += len(order)
                (parts / f"{b}.csv").unlink(), (parts / f"{b}.idx").unlink()
        finally:
            for fh in files.values():
                fh.close()
        parts.rmdir()
        summary = {
            "format": "TaobaoAd_x1",
            "rows": counts,
            "seed": seed,
            "preset": name,
            "preset_params": dataclasses.asdict(p),
            "max_len": max_len,
            "generator_version": syn.GENERATOR_VERSION,
            "bytes": {k: os.path.getsize(tmp / f"{k}.csv") for k in counts},
        }
        (tmp / META).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the release directory to write (train.csv, test.csv)")
    parser.add_argument("--rows", type=int, default=None, help="about this many rows (a scaled catalogue)")
    parser.add_argument("--preset", default="default", help="a synthetic preset, when --rows is not given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=50, help="longest history written (the release's 50)")
    parser.add_argument("--workers", type=int, default=None, help="processes simulating users (default: every CPU)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    summary = export_taobaoad(
        args.out, rows=args.rows, preset=args.preset, seed=args.seed, max_len=args.max_len, workers=args.workers
    )
    print(json.dumps({k: summary[k] for k in ("rows", "bytes", "preset", "seed")}))


if __name__ == "__main__":
    main()
