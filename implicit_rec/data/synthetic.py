"""The embedded default dataset: synthetic ad impressions with the TaobaoAd_x1 schema over 8 days.

Generative process (a plausible model of user behaviour; every method sees the same data):

1. **Catalogue.** C categories with latent vectors e_c in R^k; each brand belongs to one category,
   e_b = e_c + noise; each ad group has a brand (hence a category), a campaign, a customer
   (advertiser), a price (log-normal around its category's level) and a small quality term q_a.
2. **Users.** Profile fields (segment, group, gender, age, purchasing power, shopping level,
   occupation, new-user class). A long-term interest theta_u (a mixture component chosen by
   gender x age, plus individual noise) and a slowly drifting short-term part s_u(t), an
   Ornstein-Uhlenbeck process on a daily grid: theta_u(t) = theta_u + s_u(t).
3. **Behaviour log.** Each user browses at a personal rate from 30 days *before* the window until its
   end (so long histories exist on day 0). A behaviour picks a category with probability
   ~ softmax(theta_u(t) . e_c / tau + popularity), a brand of it ~ softmax(theta_u(t) . e_b / tau), and
   a type btag in {pv, cart, fav, buy}, with buying likelier for a high affinity.
4. **Impressions** (the events) at a personal rate over 8 days. Half of the candidate ads are
   retargeted (a category among the user's last 20 behaviours), half drawn by popularity. The
   click logit is
       -2.6 + 1.5 * cos(theta_u(t), e_ad)                 (current interest)
            + 1.2 * tanh(A_brand / 3) + 0.4 * tanh(A_cate / 10)   (long-range affinity)
            - 0.8 * [bought this category in the last 3 days]    (satiation)
            - 0.25 * z(price) * (purchasing power - 1)          (price sensitivity)
            + pid effect + user bias b_u + q_a,
   where A_brand / A_cate are exponentially decayed (30-day scale) counts of *all* the user's past
   behaviours on the candidate's brand / category — mostly older than the last 50 behaviours a
   compact model reads. The label is Bernoulli(sigmoid(logit)); labels never influence features.
5. **Features of an event**: profile and ad fields, the price (log1p), pid, the impression's btag
   context, and the behaviour sequences cate_his / brand_his / btag_his: the user's last
   ``max_len`` behaviours strictly before the impression, oldest first, pre-padded.

Days 0-6 are training (the last 10% of that time range is validation), day 7 is test. Vocabularies
are fitted on the training split only (0 = padding, 1 = OOV). Presets: ``tiny`` (tests, seconds),
``default`` (the main job), ``large`` (tens of millions of rows, written block by block to memory
maps, to exercise streaming and caching; give it a ``cache_dir``).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_directory
from .events import OOV, PAD, SPLITS, EventTable, Schema, write_meta

PROFILE = (
    "userid",
    "cms_segid",
    "cms_group_id",
    "final_gender_code",
    "age_level",
    "pvalue_level",
    "shopping_level",
    "occupation",
    "new_user_class_level",
)
ITEM = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand")
CONTEXT = ("pid", "btag")
SEQUENCES = (("cate_his", "cate_id"), ("brand_his", "brand"), ("btag_his", "btag"))
DAYS, PRIOR_DAYS, TEST_DAY = 8, 30, 7
SECONDS = 86_400


@dataclasses.dataclass(frozen=True)
class Preset:
    users: int
    categories: int
    brands: int
    ads: int
    behaviours_per_day: float
    impressions_per_day: float
    max_len: int


PRESETS = {
    "tiny": Preset(
        users=150, categories=20, brands=80, ads=300, behaviours_per_day=6.0, impressions_per_day=4.0, max_len=64
    ),
    "default": Preset(
        users=3000, categories=50, brands=300, ads=1000, behaviours_per_day=8.0, impressions_per_day=4.0, max_len=100
    ),
    "large": Preset(
        users=400_000,
        categories=200,
        brands=4000,
        ads=200_000,
        behaviours_per_day=8.0,
        impressions_per_day=6.0,
        max_len=32,
    ),
}


class _World:
    """Catalogue and population parameters shared by all users (drawn once from the seed)."""

    def __init__(self, p: Preset, rng: np.random.Generator, k: int = 8):
        self.k = k
        self.cate_vec = rng.normal(size=(p.categories, k))
        self.cate_pop = rng.normal(scale=0.5, size=p.categories)
        self.brand_cate = rng.integers(0, p.categories, p.brands)
        self.brand_vec = self.cate_vec[self.brand_cate] + 0.5 * rng.normal(size=(p.brands, k))
        self.ad_brand = rng.integers(0, p.brands, p.ads)
        self.ad_cate = self.brand_cate[self.ad_brand]
        self.ad_customer = rng.integers(0, max(2, p.ads // 8), p.ads)
        self.ad_campaign = rng.integers(0, max(2, p.ads // 3), p.ads)
        cate_price = rng.normal(3.5, 1.0, p.categories)
        self.ad_logprice = cate_price[self.ad_cate] + rng.normal(scale=0.4, size=p.ads)
        self.ad_quality = rng.normal(scale=0.3, size=p.ads)
        self.ad_pop = np.exp(rng.normal(scale=1.0, size=p.ads))
        self.ad_pop /= self.ad_pop.sum()
        self.ad_vec = self.brand_vec[self.ad_brand] + 0.3 * rng.normal(size=(p.ads, k))
        self.mixture = rng.normal(size=(2 * 7, k))  # interest components by gender x age
        self.pid_effect = np.array([0.0, -0.3])
        self.price_mu, self.price_sd = self.ad_logprice.mean(), self.ad_logprice.std()
        self.cate_members = [np.flatnonzero(self.ad_cate == c) for c in range(p.categories)]


def _softmax_sample(rng, logits):
    """One categorical draw per row of logits (R, K)."""
    g = rng.gumbel(size=logits.shape)
    return np.argmax(logits + g, axis=1)


def _simulate_user(u: int, p: Preset, w: _World, rng: np.random.Generator) -> dict:
    """All impressions of one user (raw ids, 0-based) with their features and labels."""
    gender, age = rng.integers(0, 2), rng.integers(0, 7)
    profile = dict(
        userid=u,
        cms_segid=rng.integers(0, 3),
        cms_group_id=gender * 6 + age // 2,
        final_gender_code=gender,
        age_level=age,
        pvalue_level=rng.integers(0, 3),
        shopping_level=rng.integers(0, 3),
        occupation=rng.integers(0, 2),
        new_user_class_level=rng.integers(0, 4),
    )
    theta = w.mixture[gender * 7 + age] + 0.8 * rng.normal(size=w.k)
    bias = rng.normal(scale=0.3)
    activity = np.exp(rng.normal(scale=0.5))
    # slowly drifting interest: OU process on a daily grid, linearly interpolated
    grid = np.arange(-PRIOR_DAYS, DAYS + 1)
    drift = np.zeros((len(grid), w.k))
    for i in range(1, len(grid)):
        drift[i] = 0.9 * drift[i - 1] + 0.35 * rng.normal(size=w.k)

    def interest(t):
        i = np.clip(np.floor(t).astype(int) + PRIOR_DAYS, 0, len(grid) - 2)
        frac = (t - np.floor(t))[:, None]
        return theta + (1 - frac) * drift[i] + frac * drift[i + 1]

    # behaviour log
    n_b = rng.poisson(p.behaviours_per_day * activity * (PRIOR_DAYS + DAYS))
    bt = np.sort(rng.uniform(-PRIOR_DAYS, DAYS, n_b))
    th_b = interest(bt)
    cate = _softmax_sample(rng, th_b @ w.cate_vec.T / 2.0 + w.cate_pop)
    brand = np.empty(n_b, np.int64)
    for c in np.unique(cate):
        rows = np.flatnonzero(cate == c)
        members = np.flatnonzero(w.brand_cate == c)
        if len(members) == 0:
            members = np.array([rng.integers(0, len(w.brand_cate))])
        brand[rows] = members[_softmax_sample(rng, th_b[rows] @ w.brand_vec[members].T / 2.0)]
    affinity = np.einsum("nk,nk->n", th_b, w.brand_vec[brand]) / np.sqrt(w.k)
    buy_p = 0.03 + 0.12 / (1 + np.exp(-affinity))
    btag = np.where(rng.uniform(size=n_b) < buy_p, 3, rng.choice(3, size=n_b, p=[0.85, 0.08, 0.07]))

    # impressions
    n_i = max(1, rng.poisson(p.impressions_per_day * activity * DAYS))
    it = np.sort(rng.uniform(0, DAYS, n_i))
    n_before = np.searchsorted(bt, it, side="left")  # behaviours strictly before each impression
    ads = rng.choice(len(w.ad_pop), size=n_i, p=w.ad_pop)
    for j in np.flatnonzero(rng.uniform(size=n_i) < 0.5):  # retargeting
        recent = cate[max(0, n_before[j] - 20) : n_before[j]]
        if len(recent):
            members = w.cate_members[rng.choice(recent)]
            if len(members):
                ads[j] = rng.choice(members)
    th_i = interest(it)
    ad_vec = w.ad_vec[ads]
    cos = np.einsum("nk,nk->n", th_i, ad_vec) / (np.linalg.norm(th_i, axis=1) * np.linalg.norm(ad_vec, axis=1))
    a_brand = np.empty(n_i)
    a_cate = np.empty(n_i)
    bought = np.empty(n_i)
    for j in range(n_i):
        m = n_before[j]
        decay = np.exp(-(it[j] - bt[:m]) / 30.0)
        a_brand[j] = decay @ (brand[:m] == w.ad_brand[ads[j]])
        a_cate[j] = decay @ (cate[:m] == w.ad_cate[ads[j]])
        recent = bt[:m] > it[j] - 3.0
        bought[j] = np.any(recent & (btag[:m] == 3) & (cate[:m] == w.ad_cate[ads[j]]))
    pid = rng.integers(0, 2, n_i)
    price_z = (w.ad_logprice[ads] - w.price_mu) / w.price_sd
    logit = (
        -2.6
        + 1.5 * cos
        + 1.2 * np.tanh(a_brand / 3.0)
        + 0.4 * np.tanh(a_cate / 10.0)
        - 0.8 * bought
        - 0.25 * price_z * (profile["pvalue_level"] - 1)
        + w.pid_effect[pid]
        + bias
        + w.ad_quality[ads]
    )
    label = (rng.uniform(size=n_i) < 1 / (1 + np.exp(-logit))).astype(np.float32)

    L = p.max_len
    seq_idx = n_before[:, None] - L + np.arange(L)[None, :]
    valid = seq_idx >= 0
    seq_idx = np.clip(seq_idx, 0, max(n_b - 1, 0))

    def history(values):
        if n_b == 0:
            return np.full((n_i, L), -1, np.int64)
        return np.where(valid, values[seq_idx], -1)

    out = {name: np.full(n_i, value, np.int64) for name, value in profile.items()}
    out.update(
        adgroup_id=ads,
        cate_id=w.ad_cate[ads],
        campaign_id=w.ad_campaign[ads],
        customer=w.ad_customer[ads],
        brand=w.ad_brand[ads],
        pid=pid,
        btag=rng.choice(4, size=n_i, p=[0.85, 0.06, 0.05, 0.04]),
        price=np.log1p(np.exp(w.ad_logprice[ads])).astype(np.float32),
        time=np.round(it * SECONDS).astype(np.int64),
        label=label,
        cate_his=history(cate),
        brand_his=history(brand),
        btag_his=history(btag),
    )
    return out


def _block_columns(parts: list[dict]) -> dict:
    """Concatenate simulated users and add the user, day and split columns (raw ids)."""
    cols = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    day = np.minimum(cols["time"] // SECONDS, DAYS - 1).astype(np.int16)
    split = np.where(day == TEST_DAY, SPLITS["test"], SPLITS["train"]).astype(np.int8)
    split[(split == SPLITS["train"]) & (cols["time"] >= 0.9 * TEST_DAY * SECONDS)] = SPLITS["valid"]
    for seq, _ in SEQUENCES:
        cols[seq] = cols[seq].astype(np.int32)  # raw ids are small; halves the streamed bytes
    cols.update(user=cols["userid"] + 2, day=day, split=split)
    return cols


def _vocab_members(schema: Schema) -> dict[str, list[str]]:
    """vocabulary (categorical column) -> the columns encoded with it (itself and its sequences)."""
    members = {c: [c] for c in schema.categorical}
    for seq, vocab in schema.sequences:
        members[vocab].append(seq)
    return members


def synthetic_events(
    preset: str = "default",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    block_users: int = 5000,
    progress_bar: Callable[..., Any] | None = None,
) -> EventTable:
    """Generate (or load from ``cache_dir``) the synthetic TaobaoAd-schema event table.

    Users are simulated in blocks of ``block_users`` and streamed to disk, so memory stays bounded
    for the ``large`` preset: pass 1 writes raw ids and marks the ids seen in training rows
    (the vocabularies), pass 2 re-encodes each column into its final memory-mapped .npy file.
    Without ``cache_dir`` the table is built in a temporary directory and loaded into memory.
    Deterministic by ``seed``: user u always draws from the u-th child of SeedSequence(seed).
    ``progress_bar``: a tqdm-like factory ``progress_bar(total=, desc=)``, advanced once per user.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    p = PRESETS[preset]
    name = f"synthetic-{preset}-seed{seed}"
    if cache_dir is not None:
        path = Path(cache_dir) / name
        if (path / "meta.json").is_file():
            return EventTable.load(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _generate(p, preset, seed, path, block_users, progress_bar)
    with tempfile.TemporaryDirectory() as tmp:
        table = _generate(p, preset, seed, Path(tmp) / name, block_users, progress_bar)
        return EventTable(
            table.schema, {k: np.array(v) for k, v in table.columns.items()}, table.vocab_sizes, table.name, table.info
        )


def _generate(
    p: Preset, preset: str, seed: int, path: Path, block_users: int, progress_bar: Callable[..., Any] | None = None
) -> EventTable:
    schema = Schema(
        categorical=PROFILE + ITEM + CONTEXT, item=ITEM, numeric=("price",), sequences=SEQUENCES, max_len=p.max_len
    )
    members = _vocab_members(schema)
    rng = np.random.default_rng(seed)
    world = _World(p, rng)
    user_seeds = np.random.SeedSequence(seed).spawn(p.users)
    with atomic_directory(path) as out, tempfile.TemporaryDirectory(dir=path.parent) as raw_dir:
        raw = Path(raw_dir)
        seen: dict[str, np.ndarray] = {}
        dtypes: dict[str, np.dtype] = {}
        rows = 0
        bar = progress_bar(total=p.users, desc=f"synthetic-{preset} users") if progress_bar else None
        for start in range(0, p.users, block_users):
            parts = []
            for u in range(start, min(start + block_users, p.users)):
                parts.append(_simulate_user(u, p, world, np.random.default_rng(user_seeds[u])))
                if bar is not None:
                    bar.update(1)
            cols = _block_columns(parts)
            train = cols["split"] == SPLITS["train"]
            for vocab, names in members.items():
                ids = np.concatenate([cols[n][train].ravel() for n in names])
                ids = ids[ids >= 0]
                mask = seen.setdefault(vocab, np.zeros(0, bool))
                if ids.size and ids.max() >= len(mask):
                    mask = np.concatenate([mask, np.zeros(ids.max() + 1 - len(mask), bool)])
                mask[ids] = True
                seen[vocab] = mask
            for k, v in cols.items():
                dtypes[k] = v.dtype
                with open(raw / k, "ab") as fh:
                    fh.write(np.ascontiguousarray(v).tobytes())
            rows += len(cols["label"])
        tables, sizes = {}, {}
        for vocab, mask in seen.items():
            known = np.flatnonzero(mask)
            sizes[vocab] = len(known) + 2
            tables[vocab] = known
        encoded_with = {n: v for v, names in members.items() for n in names}
        for k, dtype in dtypes.items():
            width = p.max_len if k in dict(SEQUENCES) else None
            shape = (rows, width) if width else (rows,)
            final_dtype = np.int32 if k in encoded_with else dtype
            dst = np.lib.format.open_memmap(out / f"{k}.npy", mode="w+", dtype=final_dtype, shape=shape)
            src = np.memmap(raw / k, dtype=dtype, mode="r", shape=shape)
            for s0 in range(0, rows, 1_000_000):
                chunk = np.asarray(src[s0 : s0 + 1_000_000])
                if k in encoded_with:
                    chunk = _encode(chunk, tables[encoded_with[k]])
                dst[s0 : s0 + len(chunk)] = chunk
            dst.flush()
            del dst, src
        if bar is not None:
            bar.close()
        write_meta(
            out,
            schema,
            sizes,
            sorted(dtypes),
            rows,
            f"synthetic-{preset}",
            {"source": "synthetic", "preset": preset, "seed": seed, "preset_params": dataclasses.asdict(p)},
        )
    return EventTable.load(path)


def _encode(raw_ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Raw ids -> 2.. for ids in ``known`` (sorted), OOV for others, PAD for -1 (sequence padding)."""
    pos = np.searchsorted(known, raw_ids)
    hit = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == raw_ids)
    out = np.where(hit, pos + 2, OOV)
    return np.where(raw_ids < 0, PAD, out).astype(np.int32)
