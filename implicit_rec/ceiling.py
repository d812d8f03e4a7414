"""The attainable AUC of a synthetic table: what a model could reach at best, given what it reads.

A synthetic table (``implicit_rec.data.synthetic``) carries the true click probability and the oracle
terms of its click logit as info arrays (never model inputs): ``click_prob`` (N,), ``logit_base``
(N,) (the part of the true logit that depends on no behaviour history), and ``his_age`` /
``order_age`` (N, max_len), the age in days of each entry of the main and order sequences (NaN at
padding). Three ceilings, all on the test split:

1. **Bayes**: the metrics of ``click_prob`` itself; no model can beat it in expectation.
2. **Window ceilings**: a model that reads only the last ``main_len`` main behaviours and the last
   ``order_len`` orders cannot know the history terms over older entries. Given the true latent
   terms, with history only over the window, the features are

       x = [logit_base, history_terms(window)]          (see ``synthetic.history_terms``)

   computed from the table's encoded sequences (ids >= 2 only: PAD = 0 and OOV = 1 never match)
   and the age arrays. A logistic regression p = sigmoid(x . w + b) (Newton / IRLS, L2 of 1e-6 per
   row) is fitted on the train split's labels and evaluated on the test split. With full windows
   it recovers the generator's weights; with a short window it learns how much the window's partial
   sums say about the whole-history terms.
3. ``ceilings`` reports Bayes, the FM's window (``fm_len`` main behaviours and ``fm_len`` orders
   when the table has ``fm_sequences``) and the VM's (``vm_len`` main behaviours, no orders).
4. **Hop ceilings** (tables with a cascade, the ``multihop`` preset; docs/multihop.md): a model that
   resolves only h steps of the category cascade. The cascade is recomputed with
   ``synthetic.cascade_hops`` from the table's own encoded sequences (the last ``seed_len`` of
   ``cate_his``) and stored ``category_graph``; the features are

       x_h = [logit_base, history_terms(whole window), gamma^hop * [0 <= hop <= h]]

   with the same logistic fit. ``ceilings`` adds ``hops``: {"1": AUC, "2": ..., "4": ..., "8": ...}.

``share_of_lift(auc, ceiling) = (auc - 0.5) / (ceiling - 0.5)``: the part of the attainable lift
over a random ranking that a model achieved. Real data has no ``click_prob``: no ceiling.
"""

from __future__ import annotations

import numpy as np

from .data.events import SPLITS, EventTable
from .data.synthetic import HISTORY_TERMS, ORDER_SEQUENCES, cascade_hops, history_terms
from .metrics import evaluate

__all__ = [
    "WINDOW_FEATURES",
    "HOPS",
    "bayes",
    "window_terms",
    "fit_logistic",
    "window_ceiling",
    "cascade_hop",
    "hop_ceilings",
    "ceilings",
    "share_of_lift",
]

WINDOW_FEATURES = ("logit_base",) + HISTORY_TERMS  # the columns of window_terms
MAIN = ("cate_his", "brand_his", "btag_his")
ORDERS = tuple(name for name, _ in ORDER_SEQUENCES)  # (order_cate_his, order_brand_his)
PROCEDURE = (
    "logistic regression on [logit_base, history terms over the window] (true latent terms, history only "
    "over the window), fitted on the train split's labels, evaluated on the test split; bayes = click_prob"
)
CHUNK_ROWS = 1 << 18  # rows per block of window_terms (about 1.7 KiB a row at windows of 32 and 32: 450 MiB)
HOPS = (1, 2, 4, 8)  # the cascade depths of ``ceilings``' hop ceilings
HOP_PROCEDURE = (
    "; hops: the same fit on [logit_base, history terms over the whole window, gamma^hop * [hop <= h]], the "
    "category cascade recomputed from cate_his and category_graph and truncated after h steps"
)


def _check_rows(table: EventTable, rows) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (rows.dtype.kind in "iu" or rows.size == 0):
        raise ValueError(f"rows must be a 1-D array of integer row indices; got {rows.dtype} of shape {rows.shape}.")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(table)):
        raise ValueError(
            f"rows must lie in [0, {len(table)}) (the table's rows); found values in [{rows.min()}, {rows.max()}]."
        )
    return rows


def _need_info(table: EventTable, names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in table.info]
    if missing:
        raise ValueError(
            f"table {table.name!r} has no info arrays {missing}: only synthetic tables carry the true click "
            "probability and the oracle terms (regenerate an older synthetic cache)."
        )


def _check_len(table: EventTable, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer number of sequence entries; got {value!r}.")
    if not 0 <= value <= table.schema.max_len:
        raise ValueError(f"{name} must lie in [0, {table.schema.max_len}] (the table's max_len); got {value}.")
    return int(value)


def bayes(table: EventTable, rows) -> dict:
    """``{"auc", "gauc", "logloss"}`` of the true click probability on ``rows`` (gAUC by user)."""
    _need_info(table, ("click_prob",))
    rows = _check_rows(table, rows)
    labels = np.asarray(table["label"][rows])
    return evaluate(labels, np.asarray(table.info["click_prob"][rows], np.float64), np.asarray(table["user"][rows]))


def window_terms(table: EventTable, rows, main_len: int, order_len: int, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """(n, len(WINDOW_FEATURES)) float64: [logit_base, history_terms over the window] of ``rows``.

    The window is the last ``main_len`` entries of the main sequences and the last ``order_len``
    of the order sequences (0 = none). Ids < 2 (padding, OOV) never match a candidate.
    Computed ``chunk_rows`` rows at a time (the terms are per row): the (chunk, window) intermediates
    of a block, not of all ``rows``, are in memory at once (on the ``large`` preset's 19M training
    rows whole, they took more than 24 GB).
    """
    main_len = _check_len(table, "main_len", main_len)
    order_len = _check_len(table, "order_len", order_len)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an integer >= 1; got {chunk_rows!r}.")
    if order_len and not set(ORDERS) <= set(table.columns):
        raise ValueError(f"order_len={order_len} but table {table.name!r} has no order sequences {list(ORDERS)}.")
    _need_info(table, ("logit_base", "his_age", "order_age", "btag_buy_id"))
    rows = _check_rows(table, rows)
    out = np.empty((len(rows), len(WINDOW_FEATURES)), np.float64)
    for start in range(0, len(rows), chunk_rows):
        block = rows[start : start + chunk_rows]
        out[start : start + len(block)] = _window_block(table, block, main_len, order_len)
    return out


def _window_block(table: EventTable, rows: np.ndarray, main_len: int, order_len: int) -> np.ndarray:
    """:func:`window_terms` of one block of (checked) ``rows``."""
    L = table.schema.max_len

    def ids(name, start, missing):  # encoded ids of the window; PAD / OOV replaced so they never match
        block = np.asarray(table[name][rows, start:]) if start < L else np.zeros((len(rows), 0), np.int32)
        return np.where(block >= 2, block, missing)

    cand_cate, cand_brand = (np.where((c := np.asarray(table[n][rows])) >= 2, c, -2) for n in ("cate_id", "brand"))
    m0, o0 = L - main_len, L - order_len
    his_age = np.asarray(table.info["his_age"][rows, m0:], np.float64)
    his_buy = np.asarray(table["btag_his"][rows, m0:]) == int(table.info["btag_buy_id"])
    if order_len:
        order_cate, order_brand = ids(ORDERS[0], o0, -1), ids(ORDERS[1], o0, -1)
        order_age = np.asarray(table.info["order_age"][rows, o0:], np.float64)
    else:
        order_cate = order_brand = np.full((len(rows), 0), -1)
        order_age = np.zeros((len(rows), 0))
    terms = history_terms(
        cand_cate,
        cand_brand,
        ids("cate_his", m0, -1),
        ids("brand_his", m0, -1),
        his_buy,
        his_age,
        order_cate,
        order_brand,
        order_age,
    )
    return np.column_stack([np.asarray(table.info["logit_base"][rows], np.float64), terms])


def fit_logistic(features, labels, l2: float = 1e-6, max_iter: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Coefficients (F + 1,) of p = sigmoid(features @ w + b), intercept b last, by Newton / IRLS.

    Minimises mean logloss + l2/2 * ||w||^2 (the intercept is not penalised); features (n, F),
    labels (n,) in {0, 1}. Stops when the largest Newton step is below ``tol``.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"features must be (n, F) and labels (n,); got {x.shape} and {y.shape}.")
    if not np.all((y == 0) | (y == 1)) or len(np.unique(y)) < 2:
        raise ValueError("labels must be 0 or 1 and contain both classes.")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinite values.")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0; got {l2}.")
    x = np.column_stack([x, np.ones(len(x))])
    n, f = x.shape
    penalty = np.full(f, l2)
    penalty[-1] = 1e-12  # the intercept: free (a hair of ridge keeps the Hessian invertible)
    w = np.zeros(f)
    w[-1] = np.log(y.mean() / (1 - y.mean()))
    for _ in range(max_iter):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) / n + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / n + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < tol:
            break
    return w


def _predict(features: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(features @ coef[:-1] + coef[-1])))


def window_ceiling(table: EventTable, main_len: int, order_len: int) -> dict:
    """``{"auc", "gauc", "logloss"}`` on the test split of the logistic fit on window_terms (train split)."""
    train = np.flatnonzero(np.asarray(table["split"]) == SPLITS["train"])
    test = np.flatnonzero(np.asarray(table["split"]) == SPLITS["test"])
    if not len(train) or not len(test):
        raise ValueError(f"table {table.name!r} needs train and test rows for a window ceiling.")
    coef = fit_logistic(window_terms(table, train, main_len, order_len), np.asarray(table["label"][train]))
    probs = _predict(window_terms(table, test, main_len, order_len), coef)
    return evaluate(np.asarray(table["label"][test]), probs, np.asarray(table["user"][test]))


def cascade_hop(table: EventTable, rows, max_hops: int | None = None) -> np.ndarray:
    """(n,) int16 first-activation hop of each row's candidate category (-1 = not by ``max_hops``).

    Recomputed with ``synthetic.cascade_hops`` from the last ``seed_len`` entries of ``cate_his``
    (ids < 2 are no seed) over the stored ``category_graph`` with the table's threshold: equal to
    the generator's ``cascade_hop`` (truncated at ``max_hops``) when every category is in the vocabulary.
    """
    _need_info(table, ("category_graph", "cascade"))
    rows = _check_rows(table, rows)
    meta = table.info["cascade"]
    start = table.schema.max_len - int(meta["seed_len"])
    seeds = np.asarray(table["cate_his"][rows, start:]).astype(np.int64)
    graph = np.asarray(table.info["category_graph"], bool)
    hops = cascade_hops(np.where(seeds >= 2, seeds, -1), graph, int(meta["threshold"]), max_hops)
    cand = np.asarray(table["cate_id"][rows]).astype(np.int64)
    return np.where(cand >= 2, hops[np.arange(len(rows)), cand], -1).astype(np.int16)


def hop_ceilings(table: EventTable, hops=HOPS) -> dict:
    """{str(h): {"auc", "gauc", "logloss"}} on the test split of a model resolving h cascade steps.

    Logistic fit (train split) on [window_terms over the whole window, gamma^hop * [0 <= hop <= h]],
    the hop of :func:`cascade_hop` truncated at h. ``hops``: positive integers.
    """
    hops = tuple(hops) if isinstance(hops, (list, tuple)) else hops
    if (
        not isinstance(hops, tuple)
        or not hops
        or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hops)
    ):
        raise ValueError(f"hops must be a non-empty list of positive integers (cascade steps); got {hops!r}.")
    _need_info(table, ("category_graph", "cascade"))
    split = np.asarray(table["split"])
    train, test = np.flatnonzero(split == SPLITS["train"]), np.flatnonzero(split == SPLITS["test"])
    if not len(train) or not len(test):
        raise ValueError(f"table {table.name!r} needs train and test rows for a hop ceiling.")
    L, orders = table.schema.max_len, table.schema.max_len if table.schema.fm_sequences else 0
    gamma = float(table.info["cascade"]["gamma"])
    out = {}
    x_train, x_test = window_terms(table, train, L, orders), window_terms(table, test, L, orders)
    hop_train, hop_test = cascade_hop(table, train, max(hops)), cascade_hop(table, test, max(hops))
    y_train = np.asarray(table["label"][train])

    def term(hop, h):
        return np.where((hop >= 0) & (hop <= h), gamma ** np.maximum(hop, 0), 0.0)

    for h in sorted(set(int(h) for h in hops)):
        coef = fit_logistic(np.column_stack([x_train, term(hop_train, h)]), y_train)
        probs = _predict(np.column_stack([x_test, term(hop_test, h)]), coef)
        out[str(h)] = evaluate(np.asarray(table["label"][test]), probs, np.asarray(table["user"][test]))
    return out


def ceilings(table: EventTable, fm_len: int, vm_len: int) -> dict | None:
    """Bayes, FM-window and VM-window ceilings on the test split, or None without ``click_prob``.

    FM window: ``fm_len`` main behaviours and ``fm_len`` orders (0 if the table has no
    ``fm_sequences``); VM window: ``vm_len`` main behaviours, no orders. A table with a category
    cascade (``category_graph``) adds ``hops``: {str(h): test AUC of hop_ceilings} for h in ``HOPS``.
    """
    if "click_prob" not in table.info:
        return None
    fm_len = _check_len(table, "fm_len", fm_len)
    vm_len = _check_len(table, "vm_len", vm_len)
    fm_orders = fm_len if table.schema.fm_sequences else 0
    found = {
        "bayes": bayes(table, table.rows("test")),
        "fm_window": window_ceiling(table, fm_len, fm_orders),
        "vm_window": window_ceiling(table, vm_len, 0),
        "procedure": PROCEDURE,
        "fm_len": fm_len,
        "vm_len": vm_len,
    }
    if "category_graph" in table.info:
        found["hops"] = {h: c["auc"] for h, c in hop_ceilings(table).items()}
        found["procedure"] = PROCEDURE + HOP_PROCEDURE
    return found


def share_of_lift(auc: float, ceiling_auc: float) -> float:
    """(auc - 0.5) / (ceiling_auc - 0.5): the share of the attainable AUC lift a model achieved."""
    if not np.isfinite(ceiling_auc) or ceiling_auc <= 0.5:
        raise ValueError(f"ceiling_auc must be a finite AUC above 0.5; got {ceiling_auc}.")
    return float((auc - 0.5) / (ceiling_auc - 0.5))
