"""The LoopFM study's steps: FM on an early window, its historical store, VMs x transfer variants x seeds.

They take the ``[fm]`` / ``[vm]`` sections of a run configuration resolved against the data
(:func:`resolve`); ``implicit_rec.pipeline`` runs them as resumable stages.

Time discipline (defaults for the 8-day synthetic data): the FM trains on days 0-3 (its own
validation is the last 10% of that window) and then "goes live": it logs a representation for
every event from day 4 on. VMs train on days 4-6 (validation: the ``valid`` split at the end of
training time), everything is tested on days 7-9. A VM's LoopFM feature for an event at time t is the
same user's last L logged FM embeddings from events strictly before t; its KD target is the FM's
logged logit for that event (the FM never saw the VM window's labels). No label of the VM window
or the test day reaches any VM input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ..checkpoint import load_module, save_state
from ..config import FMConfig, RunConfig, VMConfig
from ..data.events import SPLITS, EventTable
from ..layers import SolverConfig
from ..models.foundation import FoundationModel
from ..models.training import ConvergenceMonitor, TrainConfig, fit
from ..models.vertical import VerticalModel, bce_with_logits, vm_loss
from .batches import table_batches, vm_batches
from .store import HistoricalStore

FM_MAX_LEN = 100  # fm.max_len = "auto": min(FM_MAX_LEN, the data's sequence length)


def resolve(cfg: RunConfig, max_len: int) -> RunConfig:
    """``cfg`` with the values derived from the data filled in (the one place they are computed).

    ``fm.max_len = "auto"`` becomes ``min(100, max_len)``, ``vm.max_len`` is capped at ``max_len``
    (the data's behaviour-sequence length) and ``fm.log_from_day = "auto"`` becomes ``fm.days[1]``.
    The functions below take the sections of a resolved configuration.
    """
    fm, vm = cfg.fm, cfg.vm
    fm = dataclasses.replace(
        fm,
        max_len=min(FM_MAX_LEN, max_len) if fm.max_len is None else fm.max_len,
        log_from_day=fm.days[1] if fm.log_from_day is None else fm.log_from_day,
    )
    return cfg.replace(fm=fm, vm=dataclasses.replace(vm, max_len=min(vm.max_len, max_len)))


def _resolved(fm: FMConfig) -> FMConfig:
    if fm.max_len is None or fm.log_from_day is None:
        raise ValueError(
            "fm.max_len or fm.log_from_day is 'auto': pass the [fm] section of "
            "study.resolve(cfg, table.schema.max_len)."
        )
    return fm


def train_config(section: FMConfig | VMConfig, seed: int = 0) -> TrainConfig:
    """The :class:`TrainConfig` of a model section: its keys of the same name, and ``seed``."""
    keys = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(section)}
    return TrainConfig(**{k: getattr(section, k) for k in keys}, seed=seed)


def window_rows(table: EventTable, split: str, days: tuple[int, int]) -> np.ndarray:
    day = np.asarray(table["day"])
    return np.flatnonzero((np.asarray(table["split"]) == SPLITS[split]) & (day >= days[0]) & (day < days[1]))


def fm_split(table: EventTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of the FM: ``rows`` in time order, the last 10% validation."""
    order = rows[np.argsort(np.asarray(table["time"][rows]), kind="stable")]
    cut = int(0.9 * len(order))
    return order[:cut], order[cut:]


def out_of_fold_rows(table: EventTable, fm: FMConfig) -> np.ndarray:
    """Rows :func:`build_store` logs out of fold: the FM window before ``fm.log_from_day`` (K >= 2)."""
    if fm.out_of_fold < 2:
        return np.zeros(0, np.int64)
    day = np.asarray(table["day"])
    return np.flatnonzero((day >= fm.days[0]) & (day < _resolved(fm).log_from_day))


def logged_rows(table: EventTable, fm: FMConfig) -> np.ndarray:
    """(N,) bool: the events :func:`build_store` logs (from ``fm.log_from_day`` on, plus the FM window
    before it with out-of-fold logging)."""
    logged = np.asarray(table["day"]) >= _resolved(fm).log_from_day
    logged[out_of_fold_rows(table, fm)] = True
    return logged


def make_fm(table: EventTable, fm: FMConfig) -> FoundationModel:
    """The FM of the ``[fm]`` section (seed 0)."""
    return FoundationModel(
        table.schema, table.vocab_sizes, rngs=nnx.Rngs(0), size=fm.size, max_len=_resolved(fm).max_len
    )


def fm_loss(model: FoundationModel, batch: dict):
    """(binary cross-entropy of the FM's logit, weighted by ``batch["weight"]`` when present; outputs)."""
    out = model(batch)
    return bce_with_logits(out["logit"], batch["label"], batch.get("weight")), out


@dataclasses.dataclass(frozen=True)
class VMLoss:
    """``vm_loss`` with fixed weights; hashable, so ``fit`` compiles its step once per weight set."""

    kd_weight: float
    jacobian_weight: float = 0.0
    correction_weight: float = 0.0

    @classmethod
    def of(cls, vm: VMConfig) -> VMLoss:
        """The loss of the ``[vm]`` section (KD, Jacobian penalty, fixed-point correction weights)."""
        return cls(vm.kd_weight, vm.jacobian_weight, vm.correction_weight if vm.correction_states else 0.0)

    def __call__(self, model: VerticalModel, batch: dict):
        return vm_loss(model, batch, self.kd_weight, self.jacobian_weight, self.correction_weight)


def train_fm(
    table: EventTable, fm: FMConfig, log: Callable = print, rows: np.ndarray | None = None, **fit_options
) -> tuple[FoundationModel, dict]:
    """Train the FM of the (resolved) ``[fm]`` section on its window (or on ``rows``); the last 10%
    by time is its validation. ``fit_options`` (``checkpoint``, ``write_checkpoint``, ``progress_bar``)
    go to :func:`fit`."""
    rows = window_rows(table, "train", fm.days) if rows is None else rows
    fm_train, fm_valid = fm_split(table, rows)
    model = make_fm(table, fm)
    history = fit(
        model,
        fm_loss,
        table_batches(table),
        fm_train,
        fm_valid,
        np.asarray(table["label"][fm_valid]),
        np.asarray(table["user"][fm_valid]),
        train_config(fm),
        progress=lambda r: log(f"  FM epoch {r['epoch']}: loss {r['train_loss']:.4f} valid AUC {r['valid_auc']:.4f}"),
        **fit_options,
    )
    return model, history


@nnx.jit
def _fm_outputs(fm: FoundationModel, batch: dict) -> dict:
    """The FM's outputs (logit, interaction and item embeddings) of a batch."""
    return fm(batch)


def build_store(
    model: FoundationModel,
    table: EventTable,
    fm: FMConfig,
    log: Callable = print,
    *,
    models_dir: str | os.PathLike | None = None,
    write: bool = True,
    directory: str | os.PathLike | None = None,
) -> HistoricalStore:
    """Log the representation of every event from ``fm.log_from_day`` on by ``model``, the FM of ``fm``.

    With ``out_of_fold=K > 1`` the FM-window events are logged too: users are split into K folds
    and each fold's events are embedded by an FM trained on the other folds only, so no logged
    embedding was fitted on its own event's label.

    ``models_dir``: the out-of-fold FMs are resumable there. Fold k's FM trains with the epoch (and
    mid-epoch) checkpoint ``fm-oof{k}.train.msgpack`` and its parameters are saved as
    ``fm-oof{k}.msgpack``, which a later call loads instead of training again (``write=False``:
    read them but write nothing, as the processes of a job other than its writer).

    ``directory``: the logging pass writes the store there and resumes there after an interruption
    (:meth:`HistoricalStore.build_parts`; its record is keyed by a digest of the FMs' parameters);
    the finished directory is a saved store.
    """
    day = np.asarray(table["day"])
    parts = [(model, np.flatnonzero(day >= _resolved(fm).log_from_day))]
    if fm.out_of_fold > 1:
        window = out_of_fold_rows(table, fm)
        train = window_rows(table, "train", fm.days)
        fold = np.asarray(table["user"]) % fm.out_of_fold
        for k in range(fm.out_of_fold):
            if not (fold[window] == k).any():
                continue  # a fold without users in the window has nothing to log
            log(f"  out-of-fold FM {k + 1}/{fm.out_of_fold}")
            fm_k = _out_of_fold_fm(table, fm, train[fold[train] != k], k + 1, models_dir, write)
            parts.append((fm_k, window[fold[window] == k]))
    parts = [(m, r) for m, r in parts if len(r)]
    convert = table_batches(table)
    for m, _ in parts:
        m.eval()
    return HistoricalStore.build_parts(
        [(lambda r, m=m: _fm_outputs(m, convert(r)), rows) for m, rows in parts],
        table,
        kind=fm.embedding,
        dtype=np.dtype(fm.store_dtype),
        directory=directory,
        key=_parameters_digest([m for m, _ in parts]) if directory is not None else "",
    )


def _parameters_digest(models: list[nnx.Module]) -> str:
    """BLAKE2b of the models' parameters (in order): what identifies a resumed logging pass's FMs."""
    h = hashlib.blake2b()
    for model in models:
        for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
            a = np.ascontiguousarray(leaf)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.view(np.uint8))
    return h.hexdigest()


def _out_of_fold_fm(
    table: EventTable, fm: FMConfig, rows: np.ndarray, k: int, models_dir: str | os.PathLike | None, write: bool
) -> FoundationModel:
    """The FM of ``fm`` trained on ``rows`` (out-of-fold FM ``k``), loaded from ``models_dir`` when saved there."""
    if models_dir is None:
        return train_fm(table, fm, log=lambda s: None, rows=rows)[0]
    weights = Path(models_dir) / f"fm-oof{k}.msgpack"
    if weights.is_file():
        model = load_module(lambda: make_fm(table, fm), weights)
        model.eval()
        return model
    ckpt = weights.with_suffix(".train.msgpack")
    model, _ = train_fm(table, fm, log=lambda s: None, rows=rows, checkpoint=ckpt, write_checkpoint=write)
    if write:
        save_state(model, weights)
        ckpt.unlink(missing_ok=True)
    return model


def make_vm(
    table: EventTable,
    store: HistoricalStore,
    vm: VMConfig,
    arch: str,
    transfer: str,
    seed: int,
    hidden: tuple[int, ...] | None = None,
    *,
    depth: int | None = None,
    width: int | None = None,
) -> VerticalModel:
    """The VM ``arch`` / ``transfer`` of the (resolved) ``[vm]`` section; ``hidden`` overrides
    ``vm.hidden`` (explicit baselines), ``depth`` / ``width`` set the transformer's layers (default:
    ``VerticalModel``'s). Only ``store.dim`` is read."""
    stack = {k: v for k, v in (("depth", depth), ("width", width)) if v is not None}
    return VerticalModel(
        table.schema,
        table.vocab_sizes,
        rngs=nnx.Rngs(seed),
        arch=arch,
        transfer=transfer,
        max_len=vm.max_len,
        fm_dim=store.dim,
        history_len=vm.history_len,
        kd_on_main=vm.kd_on_main,
        hidden=tuple(hidden or vm.hidden),
        d_state=vm.d_state,
        node_dim=vm.node_dim,
        graph_field=vm.graph_field,
        train_solver=SolverConfig(method=vm.method, max_iter=vm.train_max_iter, tol=vm.train_tol, grad=vm.train_grad),
        eval_solver=SolverConfig(method=vm.method, max_iter=vm.eval_max_iter, tol=vm.eval_tol),
        parameterization=vm.parameterization,
        gamma=vm.gamma,
        layer_options=layer_options(vm),
        **stack,
    )


def layer_options(vm: VMConfig) -> dict:
    """``ImplicitLayer`` keyword arguments of the ``[vm]`` section: the training for test-time compute."""
    return {
        "z0": vm.z0,
        "z0_noise": vm.z0_noise,
        "train_iterations": tuple(vm.train_iterations) if vm.train_iterations is not None else None,
        "jacobian_penalty": vm.jacobian_weight > 0,
        "correction_states": vm.correction_states,
        "warmup_steps": vm.warmup_steps,
        "warmup_iters": vm.warmup_iters,
    }


MONITOR_ROWS = 512  # validation rows of the per-epoch convergence monitor of an implicit VM


def train_vm(
    table: EventTable,
    store: HistoricalStore,
    vm: VMConfig,
    arch: str,
    transfer: str,
    seed: int,
    hidden: tuple[int, ...] | None = None,
    *,
    depth: int | None = None,
    width: int | None = None,
    **fit_options,
) -> tuple[VerticalModel, dict, Callable]:
    """Train one VM of ``vm`` on ``vm.days`` (``hidden``, ``depth``, ``width``: :func:`make_vm`); returns
    (model, fit history, batch function).

    ``fit_options`` (``checkpoint``, ``write_checkpoint``, ``progress_bar``, ``progress``, ``monitor``)
    go to :func:`fit`; an implicit VM's history records its convergence per epoch (:class:`ConvergenceMonitor` on
    ``MONITOR_ROWS`` validation rows) unless ``monitor`` is given."""
    model = make_vm(table, store, vm, arch, transfer, seed, hidden, depth=depth, width=width)
    make = vm_batches(table, store, vm.history_len, transfer)
    train_rows = window_rows(table, "train", vm.days)
    valid_rows = table.rows("valid")
    if model.is_implicit and "monitor" not in fit_options:
        sample = np.sort(np.random.default_rng(0).permutation(valid_rows)[:MONITOR_ROWS])
        fit_options["monitor"] = ConvergenceMonitor(make(sample))
    hist = fit(
        model,
        VMLoss.of(vm),
        make,
        train_rows,
        valid_rows,
        np.asarray(table["label"][valid_rows]),
        np.asarray(table["user"][valid_rows]),
        train_config(vm, seed),
        **fit_options,
    )
    return model, hist, make
