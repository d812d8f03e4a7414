"""The LoopFM study: FM on an early window, historical store, VMs x transfer variants x seeds, transfer ratios.

Time discipline (defaults for the 8-day synthetic data): the FM trains on days 0-3 (its own
validation is the last 10% of that window) and then "goes live": it logs a representation for
every event from day 4 on. VMs train on days 4-6 (validation: the ``valid`` split at the end of
training time), everything is tested on day 7. A VM's LoopFM feature for an event at time t is the
same user's last L logged FM embeddings from events strictly before t; its KD target is the FM's
logged logit for that event (the FM never saw the VM window's labels). No label of the VM window
or the test day reaches any VM input.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from .. import metrics
from ..data.events import SPLITS, EventTable
from ..layers import SolverConfig
from ..models.foundation import FoundationModel
from ..models.training import TrainConfig, fit, predict
from ..models.vertical import ARCHS, TRANSFERS, VerticalModel, bce_with_logits, vm_loss
from .batches import table_batches, vm_batches
from .store import HistoricalStore


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    fm_days: tuple[int, int] = (0, 4)  # [start, end) days the FM trains on
    vm_days: tuple[int, int] = (4, 7)  # [start, end) days the VMs train on
    log_from_day: int | None = None  # first day the FM logs (default: end of fm_days); later = fresher FM
    fm_size: str = "small"
    fm_max_len: int = 100  # 4x the VMs' history
    vm_max_len: int = 25
    history_len: int = 20  # L: logged FM embeddings per LoopFM feature
    embedding: str = "interaction"  # or "item"
    store_dtype: str = "float16"
    archs: tuple[str, ...] = ARCHS
    transfers: tuple[str, ...] = TRANSFERS
    seeds: int = 1
    fm_train: TrainConfig = TrainConfig(epochs=3, batch_size=256, learning_rate=2e-3)
    vm_train: TrainConfig = TrainConfig(epochs=5, batch_size=256, learning_rate=3e-3)
    implicit_train_iters: int = 10
    implicit_eval_iters: int = 30
    kd_on_main: bool = False  # KD loss on the main head instead of an auxiliary head
    out_of_fold: int = 0  # K > 1: also log FM-window events, each by an FM trained on the other K-1 user folds
    vm_hidden: tuple[int, ...] = (64, 32)  # explicit VMs' MLP widths
    d_state: int = 32  # implicit VM's state size
    implicit_method: str = "anderson"


def window_rows(table: EventTable, split: str, days: tuple[int, int]) -> np.ndarray:
    day = np.asarray(table["day"])
    return np.flatnonzero((np.asarray(table["split"]) == SPLITS[split]) & (day >= days[0]) & (day < days[1]))


def fm_split(table: EventTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of the FM: ``rows`` in time order, the last 10% validation."""
    order = rows[np.argsort(np.asarray(table["time"][rows]), kind="stable")]
    cut = int(0.9 * len(order))
    return order[:cut], order[cut:]


def out_of_fold_rows(table: EventTable, cfg: StudyConfig) -> np.ndarray:
    """Rows :func:`build_store` logs out of fold: the FM window before ``log_from_day`` (K >= 2)."""
    if cfg.out_of_fold < 2:
        return np.zeros(0, np.int64)
    log_from = cfg.fm_days[1] if cfg.log_from_day is None else cfg.log_from_day
    day = np.asarray(table["day"])
    return np.flatnonzero((day >= cfg.fm_days[0]) & (day < log_from))


def logged_rows(table: EventTable, cfg: StudyConfig) -> np.ndarray:
    """(N,) bool: the events :func:`build_store` logs (from ``log_from_day`` on, plus the FM window
    before it with out-of-fold logging)."""
    log_from = cfg.fm_days[1] if cfg.log_from_day is None else cfg.log_from_day
    logged = np.asarray(table["day"]) >= log_from
    logged[out_of_fold_rows(table, cfg)] = True
    return logged


def _eval(probs: np.ndarray, table: EventTable, rows: np.ndarray) -> dict:
    return metrics.evaluate(np.asarray(table["label"][rows]), probs, np.asarray(table["user"][rows]))


def train_fm(
    table: EventTable, cfg: StudyConfig, log: Callable = print, rows: np.ndarray | None = None, **fit_options
) -> tuple[FoundationModel, dict]:
    """Train the FM on its window (or on ``rows``); the last 10% by time is its validation.

    ``fit_options`` (``checkpoint``, ``progress_bar``) go to :func:`fit`."""
    rows = window_rows(table, "train", cfg.fm_days) if rows is None else rows
    fm_train, fm_valid = fm_split(table, rows)
    fm = FoundationModel(
        table.schema, table.vocab_sizes, rngs=nnx.Rngs(cfg.fm_train.seed), size=cfg.fm_size, max_len=cfg.fm_max_len
    )
    convert = table_batches(table)

    def loss_fn(model, batch):
        out = model(batch)
        return bce_with_logits(out["logit"], batch["label"]), out

    history = fit(
        fm,
        loss_fn,
        convert,
        fm_train,
        fm_valid,
        np.asarray(table["label"][fm_valid]),
        np.asarray(table["user"][fm_valid]),
        cfg.fm_train,
        progress=lambda r: log(f"  FM epoch {r['epoch']}: loss {r['train_loss']:.4f} valid AUC {r['valid_auc']:.4f}"),
        **fit_options,
    )
    return fm, history


def build_store(fm: FoundationModel, table: EventTable, cfg: StudyConfig, log: Callable = print) -> HistoricalStore:
    """Log the FM's representation of every event from ``log_from_day`` on.

    With ``out_of_fold=K > 1`` the FM-window events are logged too: users are split into K folds
    and each fold's events are embedded by an FM trained on the other folds only, so no logged
    embedding was fitted on its own event's label.
    """
    log_from = cfg.fm_days[1] if cfg.log_from_day is None else cfg.log_from_day
    day = np.asarray(table["day"])
    parts = [(fm, np.flatnonzero(day >= log_from))]
    if cfg.out_of_fold > 1:
        window = out_of_fold_rows(table, cfg)
        train = window_rows(table, "train", cfg.fm_days)
        fold = np.asarray(table["user"]) % cfg.out_of_fold
        for k in range(cfg.out_of_fold):
            if not (fold[window] == k).any():
                continue  # a fold without users in the window has nothing to log
            log(f"  out-of-fold FM {k + 1}/{cfg.out_of_fold}")
            fm_k, _ = train_fm(table, cfg, log=lambda s: None, rows=train[fold[train] != k])
            parts.append((fm_k, window[fold[window] == k]))
    parts = [(m, r) for m, r in parts if len(r)]
    convert = table_batches(table)
    apply = nnx.jit(lambda fm, batch: fm(batch))
    stores = []
    for model, rows in parts:
        model.eval()
        stores.append(
            HistoricalStore.build(
                lambda r, m=model: apply(m, convert(r)),
                table,
                rows,
                kind=cfg.embedding,
                dtype=np.dtype(cfg.store_dtype),
            )
        )
    if len(stores) == 1:
        return stores[0]
    return HistoricalStore(
        table,
        np.concatenate([st.rows for st in stores]),
        np.concatenate([st.embeddings for st in stores]),
        np.concatenate([st.logits for st in stores]),
        cfg.embedding,
    )


def make_vm(
    table: EventTable,
    store: HistoricalStore,
    cfg: StudyConfig,
    arch: str,
    transfer: str,
    seed: int,
    hidden: tuple[int, ...] | None = None,
) -> VerticalModel:
    """A VM as the study builds it; ``hidden`` overrides ``cfg.vm_hidden`` (explicit baselines)."""
    return VerticalModel(
        table.schema,
        table.vocab_sizes,
        rngs=nnx.Rngs(seed),
        arch=arch,
        transfer=transfer,
        max_len=cfg.vm_max_len,
        fm_dim=store.dim,
        kd_on_main=cfg.kd_on_main,
        hidden=tuple(hidden or cfg.vm_hidden),
        d_state=cfg.d_state,
        train_solver=SolverConfig(method=cfg.implicit_method, max_iter=cfg.implicit_train_iters, tol=1e-4),
        eval_solver=SolverConfig(method=cfg.implicit_method, max_iter=cfg.implicit_eval_iters, tol=1e-5),
    )


def train_vm(table, store, cfg, arch, transfer, seed, log=print, hidden=None, **fit_options):
    """Train one VM; returns (model, fit history, batch function). ``fit_options`` go to :func:`fit`."""
    model = make_vm(table, store, cfg, arch, transfer, seed, hidden)
    make = vm_batches(table, store, cfg.history_len, transfer)
    train_rows = window_rows(table, "train", cfg.vm_days)
    valid_rows = table.rows("valid")
    tc = dataclasses.replace(cfg.vm_train, seed=seed)
    hist = fit(
        model,
        lambda m, b: vm_loss(m, b, tc.kd_weight),
        make,
        train_rows,
        valid_rows,
        np.asarray(table["label"][valid_rows]),
        np.asarray(table["user"][valid_rows]),
        tc,
        **fit_options,
    )
    return model, hist, make


def run_study(
    table: EventTable, cfg: StudyConfig = StudyConfig(), log: Callable = print, store_dir: str | None = None
) -> dict:
    """FM, store, every VM arch x transfer x seed; returns metrics on the test split.

    With ``store_dir`` the historical store is written there once (atomically) and its size on
    disk reported; every VM of the run reads the same store.
    """
    timing = {}
    t0 = time.perf_counter()
    log(f"FM ({cfg.fm_size}) on days {cfg.fm_days[0]}-{cfg.fm_days[1] - 1}")
    fm, fm_hist = train_fm(table, cfg, log)
    timing["fm_train_s"] = time.perf_counter() - t0
    test_rows = table.rows("test")
    convert = table_batches(table)
    fm_test = _eval(predict(fm, convert, test_rows), table, test_rows)
    n_params = lambda m: int(sum(np.prod(p.shape) for p in jax.tree.leaves(nnx.state(m, nnx.Param))))  # noqa: E731
    fm_result = {**fm_test, "params": n_params(fm), "size": cfg.fm_size, "history": fm_hist}
    log(f"FM test: AUC {fm_test['auc']:.4f} gAUC {fm_test['gauc']:.4f} logloss {fm_test['logloss']:.4f}")

    t1 = time.perf_counter()
    store = build_store(fm, table, cfg, log)
    timing["store_s"] = time.perf_counter() - t1
    store_info = {
        "events": int(len(store.rows)),
        "dim": store.dim,
        "kind": store.kind,
        "dtype": str(store.embeddings.dtype),
    }
    if store_dir is not None:
        store_info["bytes_on_disk"] = HistoricalStore.size_on_disk(store.save(store_dir))
        store_info["path"] = str(store_dir)
        log(
            f"store: {store_info['events']} logged events, {store_info['bytes_on_disk'] / 2**20:.1f} MiB at {store_dir}"
        )
    vms = []
    for arch in cfg.archs:
        for transfer in cfg.transfers:
            for seed in range(cfg.seeds):
                t2 = time.perf_counter()
                model, hist, make = train_vm(table, store, cfg, arch, transfer, seed, log)
                res = _eval(predict(model, make, test_rows), table, test_rows)
                vms.append(
                    {
                        "name": f"{arch}/{transfer}",
                        "arch": arch,
                        "transfer": transfer,
                        "seed": seed,
                        **res,
                        "params": n_params(model),
                        "epochs": hist["epochs_run"],
                        "seconds": time.perf_counter() - t2,
                    }
                )
                log(
                    f"VM {arch:>8} {transfer:>9} seed {seed}: AUC {res['auc']:.4f} gAUC {res['gauc']:.4f} "
                    f"logloss {res['logloss']:.4f}"
                )
    timing["total_s"] = time.perf_counter() - t0
    return {"fm": fm_result, "vms": vms, "timing": timing, "store": store_info}
