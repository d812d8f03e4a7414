"""The embedded default dataset: synthetic ad impressions with the TaobaoAd_x1 schema over 10 days.

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
4. **Orders on another surface** (the marketplace): an independent Poisson process at
   ``orders_per_day`` (0.8) times the user's own log-normal activity, from 120 days before the window
   (the OU grid covers it), each picking a category and brand like a behaviour, from
   theta_u(t) + o_u: o_u ~ N(0, ORDER_SHIFT^2 I) is a personal purchase-interest offset that the
   user's ad browsing does not show (what one buys is not only what one browses). Only the
   foundation model reads them (``Schema.fm_sequences``): in production the FM sees the behaviours
   of other surfaces, the compact model of one surface does not. This stream is the FM's
   information edge.
5. **Impressions** (the events) at a personal rate over 10 days. Half of the candidate ads are
   retargeted (a category among the user's last 20 behaviours), half drawn by popularity. The
   click logit is logit_base + history_terms . HISTORY_WEIGHTS:
       logit_base = -3.7 + 1.5 * cos(theta_u(t), e_ad)          (current interest)
                    - 0.25 * z(price) * (purchasing power - 1)   (price sensitivity)
                    + pid effect + user bias b_u + q_a,
       + 1.2 * tanh(A_brand / 3) + 0.4 * tanh(A_cate / 10)       (long-range affinity)
       - 0.8 * [bought this category in the last 3 days]         (satiation)
       + 1.0 * tanh(O_brand / 2) + 1.5 * tanh(O_cate / 4)       (the marketplace orders)
   where A_brand / A_cate are exponentially decayed (30-day scale) counts of *all* the user's past
   behaviours on the candidate's brand / category — mostly older than the last 50 behaviours a
   compact model reads — and O_brand / O_cate the decayed (60-day scale) counts of all past orders of
   the candidate's brand / category (``history_terms``, shared with ``implicit_rec.ceiling``). The
   order weights and ORDER_SHIFT are set so that on ``default`` seed 0 the attainable AUC of the FM's
   window (100 behaviours, 100 orders) beats the VM's (25 behaviours, no orders) by about 0.05
   (``implicit_rec.ceiling``); the intercept keeps the test click rate near 0.155. The label is
   Bernoulli(sigmoid(logit)), drawn after every feature: labels never influence features.
6. **Features of an event**: profile and ad fields, the price (log1p), pid, the impression's btag
   context, the behaviour sequences cate_his / brand_his / btag_his (the user's last ``max_len``
   behaviours strictly before the impression, oldest first, pre-padded) and the order sequences
   order_cate_his / order_brand_his (the last ``max_len`` orders strictly before it, likewise).
7. **Oracle info arrays** (``table.info``, saved as ``info.<name>.npy``, never model inputs):
   ``click_prob`` (N,) the true click probability, ``logit_base`` (N,), ``his_age`` / ``order_age``
   (N, max_len) the age in days of each sequence entry (NaN at padding); ``info["btag_buy_id"]`` is
   the encoded btag of a purchase.

Days 0-6 are training (the last 10% of that time range is validation), days 7-9 are test (three
days: a test set large enough for paired AUC intervals of half-width about 0.004 or less).
Vocabularies are fitted on the training split only (0 = padding, 1 = OOV); the encoded columns are
stored in the narrowest signed type holding their vocabulary (``vocabulary.index_dtype``; batches
widen them to int32). Presets: ``tiny``
(tests, seconds),
``default`` (the main job), ``large`` (tens of millions of rows, written block by block to memory
maps, to exercise streaming and caching; give it a ``cache_dir``), ``multihop`` (default size, a
click that takes several steps to resolve; docs/multihop.md): a threshold cascade over a random
category graph (``category_graph``, drawn from its own RNG stream, so the other presets are
unchanged), seeded by the categories of the last 20 behaviours (S_h = S_{h-1} | {c : >= T
in-neighbours of c in S_{h-1}}, ``cascade_hops``), adds ``cascade_weight * cascade_gamma^hop`` of
the candidate's category to the logit; its oracle arrays ``cascade_hop`` (N,) and
``category_graph`` (V, V) (encoded ids) feed ``implicit_rec.ceiling.hop_ceilings``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no lock between processes generating the same table
    fcntl = None

from ..atomic import atomic_path
from .events import INFO_ARRAYS as INFO_KEY
from .events import OOV, PAD, SPLITS, EventTable, Schema, write_meta
from .vocabulary import index_dtype

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
ORDER_SEQUENCES = (("order_cate_his", "cate_id"), ("order_brand_his", "brand"))  # Schema.fm_sequences
DAYS, PRIOR_DAYS, ORDER_PRIOR_DAYS, TEST_DAY = 10, 30, 120, 7  # days TEST_DAY.. are the test split
SECONDS = 86_400
GENERATOR_VERSION = 5  # in cache directory names; bump when the generated data change
BUY = 3  # raw btag id of a purchase
INTERCEPT = -3.7
HISTORY_TERMS = ("brand_affinity", "cate_affinity", "bought_cate_3d", "order_brand", "order_cate")
HISTORY_WEIGHTS = np.array([1.2, 0.4, -0.8, 1.0, 1.5])  # the click logit's weights of history_terms' columns
ORDER_SHIFT = 1.0  # scale of a user's purchase-interest offset (what the orders show and browsing does not)
INFO_ARRAYS = ("click_prob", "logit_base", "his_age", "order_age")  # oracle arrays, never model inputs
CASCADE_INFO = ("cascade_hop", "category_graph")  # oracle arrays of a preset with cascade_weight > 0
CASCADE_SEED_LEN = 20  # the cascade's seed set: the categories of the last 20 behaviours (<= the VMs' window)
CASCADE_STREAM = 0xCA5CADE  # SeedSequence([seed, CASCADE_STREAM]) draws the category graph: no other draw moves
WIDE_INFO = ("info.his_age", "info.order_age")  # (N, max_len) info arrays


@dataclasses.dataclass(frozen=True)
class Preset:
    users: int
    categories: int
    brands: int
    ads: int
    behaviours_per_day: float
    impressions_per_day: float
    max_len: int
    orders_per_day: float = 0.8  # mean rate of marketplace orders (times the user's own activity)
    retarget_share: float = 0.5  # share of impressions whose candidate is retargeted (a recent category)
    intercept: float = INTERCEPT  # the click logit's constant
    history_scale: float = 1.0  # multiplies HISTORY_WEIGHTS in the click logit
    cascade_weight: float = 0.0  # w of the cascade term w * gamma^hop (0: no cascade, no graph)
    cascade_gamma: float = 0.8  # decay gamma of the cascade term per hop
    cascade_threshold: int = 2  # T: a category activates when >= T of its in-neighbours are active
    cascade_in_degree: int = 3  # in-neighbours of each category in the graph
    cascade_span: int = 0  # > 0: in-neighbours lie within this many places before a category on a random ring


_DEFAULT = Preset(
    users=3000, categories=50, brands=300, ads=1000, behaviours_per_day=8.0, impressions_per_day=4.0, max_len=100
)
PRESETS = {
    "tiny": Preset(
        users=150, categories=20, brands=80, ads=300, behaviours_per_day=6.0, impressions_per_day=4.0, max_len=64
    ),
    "default": _DEFAULT,
    "multihop": dataclasses.replace(  # the default's size and rates, with the cascade (docs/multihop.md)
        _DEFAULT,
        categories=28,
        retarget_share=0.0,
        intercept=-4.75,
        history_scale=0.5,
        cascade_weight=3.5,
        cascade_gamma=0.95,
        cascade_threshold=3,
        cascade_in_degree=4,
        cascade_span=7,
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
        brands_of = [np.flatnonzero(self.brand_cate == c) for c in range(p.categories)]
        self.cate_brands = np.full((p.categories, max(1, max(map(len, brands_of)))), -1, np.int64)
        for c, members in enumerate(brands_of):
            self.cate_brands[c, : len(members)] = members
        self.graph: np.ndarray | None = None  # the cascade's category graph (category_graph), if any


def _softmax_sample(rng, logits):
    """One categorical draw per row of logits (R, K)."""
    g = rng.gumbel(size=logits.shape)
    return np.argmax(logits + g, axis=1)


def _draw_items(rng: np.random.Generator, th: np.ndarray, w: _World) -> tuple[np.ndarray, np.ndarray]:
    """(category, brand) per row of interests th (R, k): c ~ softmax(th.e_c/2 + pop), b|c ~ softmax(th.e_b/2)."""
    cate = _softmax_sample(rng, th @ w.cate_vec.T / 2.0 + w.cate_pop)
    members = w.cate_brands[cate]  # (R, M) brands of each row's category, -1 padded
    logits = np.einsum("rk,rmk->rm", th, w.brand_vec[np.maximum(members, 0)]) / 2.0
    brand = members[np.arange(len(th)), _softmax_sample(rng, np.where(members >= 0, logits, -np.inf))]
    orphan = brand < 0  # a category without brands: any brand
    brand[orphan] = rng.integers(0, len(w.brand_cate), int(orphan.sum()))
    return cate, brand


def history_terms(
    cand_cate: np.ndarray,
    cand_brand: np.ndarray,
    his_cate: np.ndarray,
    his_brand: np.ndarray,
    his_buy: np.ndarray,
    his_age: np.ndarray,
    order_cate: np.ndarray,
    order_brand: np.ndarray,
    order_age: np.ndarray,
) -> np.ndarray:
    """The history-dependent terms of the click logit, (n, len(HISTORY_TERMS)) float64.

    Candidates (n,) against histories (n, L) (main stream: category, brand, is-a-purchase, age) and
    (n, M) (orders: category, brand, age); an entry counts where its age (days before the impression, > 0) is
    finite, and matches where its id equals the candidate's (callers make ids that must never match
    differ, e.g. padding and OOV). Columns, weighted in the click logit by ``HISTORY_WEIGHTS``:

        tanh(A_brand / 3), tanh(A_cate / 10), [bought the category in the last 3 days],
        tanh(O_brand / 2), tanh(O_cate / 4),

    A_x = sum over main-stream entries of x of exp(-age / 30), O_x = sum over orders of x of
    exp(-age / 60). The generator passes the whole history (raw ids), ``implicit_rec.ceiling`` a
    window of the table's encoded sequences: the functional forms live here only.
    """
    his_age = np.asarray(his_age, np.float64)
    order_age = np.asarray(order_age, np.float64)
    seen = np.isfinite(his_age)
    decay = np.where(seen, np.exp(-np.where(seen, his_age, 0.0) / 30.0), 0.0)
    same_cate = np.asarray(his_cate) == np.asarray(cand_cate)[:, None]
    a_brand = np.sum(decay * (np.asarray(his_brand) == np.asarray(cand_brand)[:, None]), axis=1)
    a_cate = np.sum(decay * same_cate, axis=1)
    recent = seen & (np.where(seen, his_age, np.inf) < 3.0)
    bought = np.any(recent & np.asarray(his_buy, bool) & same_cate, axis=1)
    ordered = np.isfinite(order_age)
    o_decay = np.where(ordered, np.exp(-np.where(ordered, order_age, 0.0) / 60.0), 0.0)
    o_brand = np.sum(o_decay * (np.asarray(order_brand) == np.asarray(cand_brand)[:, None]), axis=1)
    o_cate = np.sum(o_decay * (np.asarray(order_cate) == np.asarray(cand_cate)[:, None]), axis=1)
    return np.stack(
        [np.tanh(a_brand / 3.0), np.tanh(a_cate / 10.0), bought, np.tanh(o_brand / 2.0), np.tanh(o_cate / 4.0)],
        axis=1,
    )


def category_graph(p: Preset, seed: int) -> np.ndarray:
    """(C, C) bool adjacency of the cascade's category graph, ``graph[i, j]``: i is an in-neighbour of j.

    Each category gets ``cascade_in_degree`` distinct in-neighbours: uniformly among the others, or
    (``cascade_span`` > 0) among the ``cascade_span`` categories before it on a random ring, so that
    activation spreads as a front, about one place per hop. Drawn from SeedSequence([seed,
    CASCADE_STREAM]), a stream no other draw of the generator uses.
    """
    c, d, span = p.categories, p.cascade_in_degree, p.cascade_span
    most = span if span > 0 else c - 1
    if not 1 <= d <= most:
        raise ValueError(f"cascade_in_degree must lie in [1, {most}] (cascade_span, or categories - 1); got {d}.")
    if not 1 <= p.cascade_threshold <= d:
        raise ValueError(f"cascade_threshold must lie in [1, cascade_in_degree={d}]; got {p.cascade_threshold}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, CASCADE_STREAM]))
    ring = rng.permutation(c)
    graph = np.zeros((c, c), bool)
    for place, node in enumerate(ring):
        if span > 0:
            pool = ring[(place - 1 - np.arange(span)) % c]
        else:
            pool = np.delete(np.arange(c), node)
        graph[rng.choice(pool, size=d, replace=False), node] = True
    return graph


def cascade_hops(seeds: np.ndarray, graph: np.ndarray, threshold: int, max_hops: int | None = None) -> np.ndarray:
    """(n, V) int16 first-activation hop of every node under a threshold cascade; -1 = not active by ``max_hops``.

    seeds (n, L) node ids (< 0 = none), graph (V, V) bool with ``graph[i, j]``: i is an in-neighbour of j.
    S_0 = the row's seed ids; S_h = S_{h-1} | {j : |in(j) & S_{h-1}| >= threshold}; hop(j) = the
    first h with j in S_h. ``max_hops`` None runs to convergence (at most V - 1 hops).
    """
    seeds, graph = np.asarray(seeds), np.asarray(graph)
    if graph.ndim != 2 or graph.shape[0] != graph.shape[1] or graph.dtype != bool:
        raise ValueError(f"graph must be a square bool adjacency matrix; got {graph.dtype} of shape {graph.shape}.")
    if seeds.ndim != 2 or seeds.dtype.kind not in "iu":
        raise ValueError(
            f"seeds must be an (n, L) integer array of node ids; got {seeds.dtype} of shape {seeds.shape}."
        )
    v = graph.shape[0]
    if seeds.size and seeds.max() >= v:
        raise ValueError(f"seeds must be node ids below {v} (the graph's size); found {seeds.max()}.")
    for name, value in (("threshold", threshold), ("max_hops", max_hops)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    active = np.zeros((len(seeds), v), bool)
    row, col = np.nonzero(seeds >= 0)
    active[row, seeds[row, col]] = True
    hops = np.where(active, 0, -1).astype(np.int16)
    weights = graph.astype(np.float32)
    for h in range(1, (v if max_hops is None else max_hops) + 1):
        new = ~active & (active.astype(np.float32) @ weights >= threshold)
        if not new.any():
            break
        hops[new] = h
        active |= new
    return hops


def _ages(t_event: np.ndarray, t_hist: np.ndarray) -> np.ndarray:
    """(n, H) float32 ages t_event - t_hist in days, NaN where the entry is not strictly earlier."""
    age = (t_event[:, None] - t_hist[None, :]).astype(np.float32)
    return np.where(age > 0, age, np.float32(np.nan))


def _window(n_before: np.ndarray, length: int, n_total: int, values: np.ndarray, fill) -> np.ndarray:
    """(n, length) of the last ``length`` values before each index in n_before, oldest first, pre-padded."""
    idx = n_before[:, None] - length + np.arange(length)[None, :]
    if n_total == 0:
        return np.full((len(n_before), length), fill, values.dtype)
    return np.where(idx >= 0, values[np.clip(idx, 0, n_total - 1)], fill)


def _draw_labels(rng: np.random.Generator, prob: np.ndarray) -> np.ndarray:
    """Bernoulli(prob) labels, drawn after every feature (so a label can never shape a feature)."""
    return (rng.uniform(size=len(prob)) < prob).astype(np.float32)


def _simulate_user(u: int, p: Preset, w: _World, rng: np.random.Generator) -> tuple[dict, dict]:
    """All impressions of one user: (columns with raw ids, 0-based; info arrays) of its rows."""
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
    order_activity = np.exp(rng.normal(scale=0.5))
    # slowly drifting interest: OU process on a daily grid, linearly interpolated
    grid = np.arange(-ORDER_PRIOR_DAYS, DAYS + 1)
    noise = 0.35 * rng.normal(size=(len(grid), w.k))
    drift = np.zeros((len(grid), w.k))
    for i in range(1, len(grid)):
        drift[i] = 0.9 * drift[i - 1] + noise[i]

    def interest(t):
        i = np.clip(np.floor(t).astype(int) + ORDER_PRIOR_DAYS, 0, len(grid) - 2)
        frac = (t - np.floor(t))[:, None]
        return theta + (1 - frac) * drift[i] + frac * drift[i + 1]

    # behaviour log (this surface)
    n_b = rng.poisson(p.behaviours_per_day * activity * (PRIOR_DAYS + DAYS))
    bt = np.sort(rng.uniform(-PRIOR_DAYS, DAYS, n_b))
    th_b = interest(bt)
    cate, brand = _draw_items(rng, th_b, w)
    affinity = np.einsum("nk,nk->n", th_b, w.brand_vec[brand]) / np.sqrt(w.k)
    buy_p = 0.03 + 0.12 / (1 + np.exp(-affinity))
    btag = np.where(rng.uniform(size=n_b) < buy_p, BUY, rng.choice(3, size=n_b, p=[0.85, 0.08, 0.07]))
    # orders on another surface (the marketplace): only the FM sees them. What a user buys there
    # follows its interest plus a personal purchase-interest offset that its ad browsing does not show.
    order_shift = ORDER_SHIFT * rng.normal(size=w.k)
    n_o = rng.poisson(p.orders_per_day * order_activity * (ORDER_PRIOR_DAYS + DAYS))
    ot = np.sort(rng.uniform(-ORDER_PRIOR_DAYS, DAYS, n_o))
    order_cate, order_brand = _draw_items(rng, interest(ot) + order_shift, w)

    # impressions
    n_i = max(1, rng.poisson(p.impressions_per_day * activity * DAYS))
    it = np.sort(rng.uniform(0, DAYS, n_i))
    n_before = np.searchsorted(bt, it, side="left")  # behaviours strictly before each impression
    o_before = np.searchsorted(ot, it, side="left")  # orders strictly before each impression
    ads = rng.choice(len(w.ad_pop), size=n_i, p=w.ad_pop)
    for j in np.flatnonzero(rng.uniform(size=n_i) < p.retarget_share):  # retargeting
        recent = cate[max(0, n_before[j] - 20) : n_before[j]]
        if len(recent):
            members = w.cate_members[rng.choice(recent)]
            if len(members):
                ads[j] = rng.choice(members)
    th_i = interest(it)
    ad_vec = w.ad_vec[ads]
    cos = np.einsum("nk,nk->n", th_i, ad_vec) / (np.linalg.norm(th_i, axis=1) * np.linalg.norm(ad_vec, axis=1))
    pid = rng.integers(0, 2, n_i)
    ctx_btag = rng.choice(4, size=n_i, p=[0.85, 0.06, 0.05, 0.04])
    price_z = (w.ad_logprice[ads] - w.price_mu) / w.price_sd
    base = (
        p.intercept
        + 1.5 * cos
        - 0.25 * price_z * (profile["pvalue_level"] - 1)
        + w.pid_effect[pid]
        + bias
        + w.ad_quality[ads]
    ).astype(np.float32)
    his_age = _ages(it, bt)  # the whole history: every earlier behaviour and order
    order_age = _ages(it, ot)
    terms = history_terms(
        w.ad_cate[ads], w.ad_brand[ads], cate, brand, btag == BUY, his_age, order_cate, order_brand, order_age
    )
    logit = base.astype(np.float64) + terms @ (p.history_scale * HISTORY_WEIGHTS)
    if w.graph is not None:  # the cascade over the category graph, seeded by the last CASCADE_SEED_LEN behaviours
        hop = cascade_hops(_window(n_before, CASCADE_SEED_LEN, n_b, cate, -1), w.graph, p.cascade_threshold)
        hop = hop[np.arange(n_i), w.ad_cate[ads]]
        logit += p.cascade_weight * np.where(hop >= 0, p.cascade_gamma ** np.maximum(hop, 0), 0.0)
    prob = (1 / (1 + np.exp(-logit))).astype(np.float32)
    label = _draw_labels(rng, prob)

    L = p.max_len
    out = {name: np.full(n_i, value, np.int64) for name, value in profile.items()}
    out.update(
        adgroup_id=ads,
        cate_id=w.ad_cate[ads],
        campaign_id=w.ad_campaign[ads],
        customer=w.ad_customer[ads],
        brand=w.ad_brand[ads],
        pid=pid,
        btag=ctx_btag,
        price=np.log1p(np.exp(w.ad_logprice[ads])).astype(np.float32),
        time=np.round(it * SECONDS).astype(np.int64),
        label=label,
        cate_his=_window(n_before, L, n_b, cate, -1),
        brand_his=_window(n_before, L, n_b, brand, -1),
        btag_his=_window(n_before, L, n_b, btag, -1),
        order_cate_his=_window(o_before, L, n_o, order_cate, -1),
        order_brand_his=_window(o_before, L, n_o, order_brand, -1),
    )
    rows = np.arange(n_i)[:, None]
    info = {
        "click_prob": prob,
        "logit_base": base,
        "his_age": _window(n_before, L, n_b, np.arange(n_b), -1),
        "order_age": _window(o_before, L, n_o, np.arange(n_o), -1),
    }
    if w.graph is not None:
        info["cascade_hop"] = hop
    for key, ages in (("his_age", his_age), ("order_age", order_age)):
        idx = info[key]
        info[key] = np.where(idx >= 0, ages[rows, np.maximum(idx, 0)] if ages.shape[1] else np.nan, np.nan).astype(
            np.float32
        )
    return out, info


def _block_columns(parts: list[tuple[dict, dict]]) -> dict:
    """Concatenate simulated users and add the user, day and split columns (raw ids); info arrays as ``info.<name>``."""
    cols = {k: np.concatenate([part[k] for part, _ in parts]) for k in parts[0][0]}
    cols.update({f"info.{k}": np.concatenate([info[k] for _, info in parts]) for k in parts[0][1]})
    day = np.minimum(cols["time"] // SECONDS, DAYS - 1).astype(np.int16)
    split = np.where(day >= TEST_DAY, SPLITS["test"], SPLITS["train"]).astype(np.int8)
    split[(split == SPLITS["train"]) & (cols["time"] >= 0.9 * TEST_DAY * SECONDS)] = SPLITS["valid"]
    for seq, _ in SEQUENCES + ORDER_SEQUENCES:
        cols[seq] = cols[seq].astype(np.int32)  # raw ids are small; halves the streamed bytes
    cols.update(user=cols["userid"] + 2, day=day, split=split)
    return cols


def _vocab_members(schema: Schema) -> dict[str, list[str]]:
    """vocabulary (categorical column) -> the columns encoded with it (itself and its sequences)."""
    members = {c: [c] for c in schema.categorical}
    for seq, vocab in schema.all_sequences:
        members[vocab].append(seq)
    return members


def _simulate_block(p: Preset, world: _World, start: int, seeds: list, raw: bool = False) -> dict:
    """The columns of users ``start, start + 1, ...``, one per child seed in ``seeds``: the table's
    (:func:`_block_columns`), or with ``raw`` only what ``_simulate_user`` draws, concatenated."""
    parts = [_simulate_user(start + i, p, world, np.random.default_rng(ss)) for i, ss in enumerate(seeds)]
    if raw:
        return {k: np.concatenate([cols[k] for cols, _ in parts]) for k in parts[0][0]}
    return _block_columns(parts)


_WORKER: tuple[Preset, _World] | None = None  # a block worker's preset and world (sent once per process)


def _init_block_worker(p: Preset, world: _World) -> None:
    global _WORKER
    _WORKER = (p, world)


def _simulate_block_in_worker(start: int, seeds: list, raw: bool) -> dict:
    return _simulate_block(*_WORKER, start, seeds, raw)


def check_workers(workers) -> None:
    """Raise ValueError unless ``workers`` (processes simulating user blocks) is None or an integer >= 1."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1):
        raise ValueError(
            f"workers must be a positive integer or None (processes simulating user blocks); got {workers!r}."
        )


def _simulated_blocks(p: Preset, world: _World, blocks: list[tuple[int, list]], workers: int | None, raw: bool = False):
    """The columns of each block ``(first user, child seeds)`` (:func:`_simulate_block`), in order.

    With more than one worker (None: the CPUs this process may use), the blocks are simulated in
    ``spawn``ed processes (no fork of a process that may run JAX threads); at most ``workers + 1``
    finished or running blocks are held at a time, so memory grows by about one block per worker
    (the large preset's 5,000-user blocks: a few hundred MB each, plus each process's imports)."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(int(workers), len(blocks))
    if workers <= 1:
        yield from (_simulate_block(p, world, start, seeds, raw) for start, seeds in blocks)
        return
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_block_worker, initargs=(p, world)
    )
    try:
        pending = collections.deque()
        for start, seeds in blocks:
            pending.append(pool.submit(_simulate_block_in_worker, start, seeds, raw))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # on an error or an interrupt, blocks not yet started are dropped, not simulated
        pool.shutdown(wait=True, cancel_futures=True)


def synthetic_events(
    preset: str | Preset = "default",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    block_users: int = 5000,
    progress_bar: Callable[..., Any] | None = None,
    workers: int | None = 1,
) -> EventTable:
    """Generate (or load from ``cache_dir``) the synthetic TaobaoAd-schema event table.

    Users are simulated in blocks of ``block_users`` and streamed to disk, so memory stays bounded
    for the ``large`` preset: pass 1 writes raw ids and marks the ids seen in training rows
    (the vocabularies), pass 2 re-encodes each column into its final memory-mapped .npy file.
    With ``cache_dir`` the generation is resumable: it keeps its state in
    ``<table>.partial/`` beside the table after every block (:class:`_Partial`), and a call after an
    interruption (``kill -9`` included) continues from the last finished block, or the last finished
    column of pass 2, to the same table. Without ``cache_dir`` the table is built in a temporary
    directory and loaded into memory.
    Deterministic by ``seed``: user u always draws from the u-th child of SeedSequence(seed).
    ``progress_bar``: a tqdm-like factory ``progress_bar(total=, desc=)``, advanced once per block.
    ``workers``: processes simulating blocks side by side, at most one per block (None: the CPUs this
    process may use; 1, the default: this process only). The table is the same for any count: each
    user draws from its own seed, and blocks are written in user order. The processes are
    ``spawn``ed, so a script that asks for more than one must start from an
    ``if __name__ == "__main__":`` block (as ``implicit-rec run``, which passes None, does).
    ``preset``: a name in ``PRESETS`` or a custom ``Preset`` (named ``custom``; its cache directory
    carries a hash of the parameters). Cache directories carry ``GENERATOR_VERSION``, so a cache
    written by an older generator is never reused.
    """
    check_workers(workers)
    if isinstance(preset, Preset):
        p = preset
        digest = hashlib.sha256(json.dumps(dataclasses.asdict(p), sort_keys=True).encode()).hexdigest()[:12]
        preset, key = "custom", f"custom-{digest}"
    elif preset in PRESETS:
        p, key = PRESETS[preset], preset
    else:
        raise ValueError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(PRESETS)} or pass a Preset.")
    name = f"synthetic-{key}-seed{seed}-v{GENERATOR_VERSION}"
    if cache_dir is not None:
        path = Path(cache_dir) / name
        if (path / "meta.json").is_file():
            shutil.rmtree(path.parent / f"{path.name}.partial", ignore_errors=True)  # left if killed while publishing
            return EventTable.load(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _generate(p, preset, seed, path, block_users, progress_bar, workers)
    with tempfile.TemporaryDirectory() as tmp:
        table = _generate(p, preset, seed, Path(tmp) / name, block_users, progress_bar, workers)
        info = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in table.info.items()}
        return EventTable(
            table.schema, {k: np.array(v) for k, v in table.columns.items()}, table.vocab_sizes, table.name, info
        )


def _generate(
    p: Preset,
    preset: str,
    seed: int,
    path: Path,
    block_users: int,
    progress_bar: Callable[..., Any] | None = None,
    workers: int | None = 1,
) -> EventTable:
    """Write the table to ``path`` through its resumable partial directory (:class:`_Partial`)."""
    schema = Schema(
        categorical=PROFILE + ITEM + CONTEXT,
        item=ITEM,
        numeric=("price",),
        sequences=SEQUENCES,
        max_len=p.max_len,
        fm_sequences=ORDER_SEQUENCES,
    )
    members = _vocab_members(schema)
    rng = np.random.default_rng(seed)
    world = _World(p, rng)
    world.graph = category_graph(p, seed) if p.cascade_weight else None
    user_seeds = np.random.SeedSequence(seed).spawn(p.users)
    key = {"generator": GENERATOR_VERSION, "preset_params": dataclasses.asdict(p), "seed": seed}
    with _Partial.open(path, key) as part:
        if (path / "meta.json").is_file():  # another process finished it while this one waited for the lock
            shutil.rmtree(part.dir, ignore_errors=True)
            return EventTable.load(path)
        bar = progress_bar(total=p.users, desc=f"synthetic-{preset} users") if progress_bar else None
        if bar is not None and part.users_done:
            bar.update(part.users_done)
        blocks = [
            (start, user_seeds[start : start + block_users]) for start in range(part.users_done, p.users, block_users)
        ]
        for (_, seeds), cols in zip(blocks, _simulated_blocks(p, world, blocks, workers), strict=True):
            train = cols["split"] == SPLITS["train"]
            for vocab, names in members.items():
                ids = np.concatenate([cols[n][train].ravel() for n in names])
                ids = ids[ids >= 0]
                mask = part.seen.setdefault(vocab, np.zeros(0, bool))
                if ids.size and ids.max() >= len(mask):
                    mask = np.concatenate([mask, np.zeros(ids.max() + 1 - len(mask), bool)])
                mask[ids] = True
                part.seen[vocab] = mask
            part.append(cols, users=len(seeds))
            if bar is not None:
                bar.update(len(seeds))
        rows = part.rows
        tables, sizes = {}, {}
        for vocab, mask in part.seen.items():
            known = np.flatnonzero(mask)
            sizes[vocab] = len(known) + 2
            tables[vocab] = known
        encoded_with = {n: v for v, names in members.items() for n in names}
        out = part.final
        for k, dtype in part.dtypes.items():
            if k in part.encoded:  # written before an interruption
                continue
            width = p.max_len if k in dict(SEQUENCES + ORDER_SEQUENCES) or k in WIDE_INFO else None
            shape = (rows, width) if width else (rows,)
            final_dtype = index_dtype(sizes[encoded_with[k]]) if k in encoded_with else dtype
            dst = np.lib.format.open_memmap(out / f"{k}.npy", mode="w+", dtype=final_dtype, shape=shape)
            src = np.memmap(part.raw / k, dtype=dtype, mode="r", shape=shape)
            for s0 in range(0, rows, 1_000_000):
                chunk = np.asarray(src[s0 : s0 + 1_000_000])
                if k in encoded_with:
                    chunk = _encode(chunk, tables[encoded_with[k]])
                dst[s0 : s0 + len(chunk)] = chunk
            dst.flush()
            del dst, src
            part.mark_encoded(k)
        if bar is not None:
            bar.close()
        buy_id = int(_encode(np.array([BUY]), tables["btag"])[0])
        extra: dict[str, Any] = {INFO_KEY: list(INFO_ARRAYS)}
        if world.graph is not None:  # the graph over encoded category ids (rows / columns of PAD, OOV: empty)
            code = _encode(np.arange(p.categories), tables["cate_id"])
            graph = np.zeros((sizes["cate_id"],) * 2, bool)
            src, dst = np.nonzero(world.graph)
            known = (code[src] >= 2) & (code[dst] >= 2)
            graph[code[src[known]], code[dst[known]]] = True
            np.save(out / "info.category_graph.npy", graph, allow_pickle=False)
            extra = {
                INFO_KEY: list(INFO_ARRAYS + CASCADE_INFO),
                "cascade": {
                    "threshold": p.cascade_threshold,
                    "gamma": p.cascade_gamma,
                    "weight": p.cascade_weight,
                    "seed_len": CASCADE_SEED_LEN,
                },
            }
        write_meta(
            out,
            schema,
            sizes,
            sorted(k for k in part.dtypes if not k.startswith("info.")),
            rows,
            f"synthetic-{preset}",
            {
                "source": "synthetic",
                "preset": preset,
                "seed": seed,
                "preset_params": dataclasses.asdict(p),
                "btag_buy_id": buy_id,
                "history_weights": dict(zip(HISTORY_TERMS, (p.history_scale * HISTORY_WEIGHTS).tolist(), strict=True)),
                **extra,
            },
        )
        part.publish()
    return EventTable.load(path)


class _Partial:
    """The resumable state of one table being generated: ``<path>.partial/`` beside the table.

    - ``raw/<column>``: pass 1's raw columns, appended one block of users at a time;
    - ``state.npz``: after every block, the users and rows written, each raw file's byte length and
      dtype, the training ids seen per vocabulary (bool masks) and pass 2's finished columns, in one
      atomic write (JSON in a uint8 array, no pickle);
    - ``final/``: pass 2's ``.npy`` columns and ``meta.json``; renamed to ``path`` when complete.

    Opening it again after an interruption (even ``kill -9``) truncates each raw file to its recorded
    length, dropping a half-written block, and generation continues with the next user; since every
    user draws from its own seed, the table is the same as an uninterrupted one's (for any block size
    or worker count). A state written for other parameters (``key``) is discarded. An exclusive
    ``fcntl`` lock on ``lock`` makes a second process wait (and then find the table finished) rather
    than interleave its blocks.
    """

    def __init__(self, path: Path, key: dict):
        self.path, self.key = path, key
        self.dir = path.parent / f"{path.name}.partial"
        self.raw, self.final = self.dir / "raw", self.dir / "final"
        self.users_done, self.rows = 0, 0
        self.bytes: dict[str, int] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.seen: dict[str, np.ndarray] = {}
        self.encoded: list[str] = []

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path, key: dict):
        part = cls(path, key)
        part.dir.mkdir(parents=True, exist_ok=True)
        with open(part.dir / "lock", "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            if not (path / "meta.json").is_file():
                part._restore()
            yield part

    def _restore(self) -> None:
        if not self._read():
            (self.dir / "state.npz").unlink(missing_ok=True)
            shutil.rmtree(self.raw, ignore_errors=True)
            shutil.rmtree(self.final, ignore_errors=True)
            self.raw.mkdir()
            self.final.mkdir()
            return
        for name, size in self.bytes.items():
            os.truncate(self.raw / name, size)  # drops whatever an interrupted block appended

    def _read(self) -> bool:
        """Load ``state.npz`` into this object; False (nothing loaded) if absent, stale or inconsistent."""
        try:
            with np.load(self.dir / "state.npz", allow_pickle=False) as f:
                state = json.loads(f["state"].tobytes())
                seen = {k.removeprefix("seen."): f[k] for k in f.files if k.startswith("seen.")}
        except (OSError, ValueError, KeyError):
            return False
        if state.get("key") != json.loads(json.dumps(self.key)) or not self.final.is_dir():
            return False
        files = state["columns"]
        if any(not (self.raw / k).is_file() or (self.raw / k).stat().st_size < n for k, (_, n) in files.items()):
            return False
        self.users_done, self.rows, self.seen, self.encoded = state["users"], state["rows"], seen, state["encoded"]
        self.bytes = {k: n for k, (_, n) in files.items()}
        self.dtypes = {k: np.dtype(d) for k, (d, _) in files.items()}
        return True

    def _write(self) -> None:
        state = {
            "key": self.key,
            "users": self.users_done,
            "rows": self.rows,
            "columns": {k: [self.dtypes[k].str, n] for k, n in self.bytes.items()},
            "encoded": self.encoded,
        }
        arrays = {f"seen.{k}": v for k, v in self.seen.items()}
        with atomic_path(self.dir / "state.npz", suffix=".npz") as tmp:
            np.savez(tmp, state=np.frombuffer(json.dumps(state).encode(), np.uint8), **arrays)

    def append(self, cols: dict, users: int) -> None:
        """Append one block's raw columns, then record it (with the masks in ``seen``)."""
        for k, v in cols.items():
            data = np.ascontiguousarray(v)
            self.dtypes[k] = data.dtype
            with open(self.raw / k, "ab") as fh:
                fh.write(data.tobytes())
            self.bytes[k] = self.bytes.get(k, 0) + data.nbytes
        self.users_done += users
        self.rows += len(cols["label"])
        self._write()

    def mark_encoded(self, column: str) -> None:
        self.encoded.append(column)
        self._write()

    def publish(self) -> None:
        """Rename ``final/`` to the table's path and remove the partial directory."""
        if self.path.exists():  # a directory without meta.json: an incomplete table from elsewhere
            shutil.rmtree(self.path)
        os.replace(self.final, self.path)
        shutil.rmtree(self.dir, ignore_errors=True)


def _encode(raw_ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Raw ids -> 2.. for ids in ``known`` (sorted, non-negative), OOV for others, PAD for -1
    (sequence padding): one gather from a table over 0..max(known), not a search per id."""
    top = int(known[-1]) + 1 if len(known) else 0
    code = np.full(top + 1, OOV, np.int32)  # code[top]: every id above the known ones
    code[known] = np.arange(2, len(known) + 2, dtype=np.int32)
    return np.where(raw_ids < 0, np.int32(PAD), code[np.clip(raw_ids, 0, top)])
