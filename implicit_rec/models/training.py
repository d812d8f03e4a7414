"""Training with optax, early stopping on validation AUC that restores the best parameters."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import solvers

from .. import metrics
from ..checkpoint import CheckpointError, conform, load_tree, save_tree
from ..layers import AdjointProbe, LayerInfo
from . import parallel
from .prefetch import prefetch
from .table_rows import TableRows


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 512
    learning_rate: float = 2e-3
    patience: int = 2  # epochs without validation improvement before stopping
    kd_weight: float = 1.0
    seed: int = 0
    devices: int = 1  # data-parallel over this many devices (parallel.data_mesh; 0 = all); 1 = one device


def pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` (n,) with n <= size, padded to (size,) by repeating its last entry: every chunk of a
    pass then has one shape, so a jitted function compiles once (drop the padding's outputs)."""
    n = len(rows)
    if n > size:
        raise ValueError(f"pad_rows: {n} rows do not fit in a batch of {size}.")
    return np.pad(rows, (0, size - n), mode="edge") if 0 < n < size else rows


def padded_chunks(rows: np.ndarray, size: int):
    """Chunks of ``size`` rows, the last padded (:func:`pad_rows`); yields ``(rows, n_real)``."""
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        yield pad_rows(chunk, size), len(chunk)


def padding_weight(n_real: int, size: int) -> np.ndarray:
    """(size,) float32: 1 for the ``n_real`` real rows of a padded batch, 0 for the padding."""
    return (np.arange(size) < n_real).astype(np.float32)


PREDICT_BATCH = 2048  # rows per chunk of predict (and of fit's validation)


def predict(
    model: nnx.Module,
    make_batch: Callable,
    rows: np.ndarray,
    batch_size: int = PREDICT_BATCH,
    output: str = "logit",
    mesh: jax.sharding.Mesh | None = None,
) -> np.ndarray:
    """sigmoid of ``model(batch)[output]`` for every row (the model is put in eval mode).

    The forward pass is compiled once per model structure and ``output`` (models of the same
    structure share it): the last chunk is padded to ``batch_size`` rows and the padding dropped.
    Chunks are built on a background thread (:func:`~implicit_rec.models.prefetch.prefetch`) and
    dispatched without waiting for the previous result.
    ``mesh`` (:func:`.parallel.data_mesh`): each chunk is split over its devices (``batch_size``
    rounded up to a multiple of their count), a replicated copy of the model runs on every device."""
    model.eval()
    if mesh is None:
        chunks = prefetch((make_batch(chunk), n) for chunk, n in padded_chunks(rows, batch_size))
        preds = [(_probabilities(model, batch, output), n) for batch, n in chunks]
    else:
        copy, size = parallel.on_mesh(model, mesh), -(-batch_size // mesh.size) * mesh.size
        chunks = prefetch((parallel.shard_batch(make_batch, chunk, mesh), n) for chunk, n in padded_chunks(rows, size))
        preds = [(_probabilities(copy, batch, output), n) for batch, n in chunks]
    return np.concatenate([parallel.to_host(p)[:n] for p, n in preds]) if preds else np.zeros(0, np.float32)


@nnx.jit(static_argnames="output")
def _probabilities(model: nnx.Module, batch: dict, output: str) -> jax.Array:
    """(B,) sigmoid of ``model(batch)[output]``."""
    return jax.nn.sigmoid(model(batch)[output])


@functools.cache
def _adam(learning_rate: float) -> optax.GradientTransformation:
    """One Adam per learning rate: the transformation is part of the optimizer's graph, so a new one
    per ``fit`` would compile the step again. Its ``init`` is jitted: one program per model
    structure instead of one ``zeros_like`` per parameter shape."""
    tx = optax.adam(learning_rate)
    return tx._replace(init=jax.jit(tx.init))


_WRT = nnx.DiffState(0, nnx.Any(nnx.Param, AdjointProbe))  # parameters and the solver reports


@nnx.jit(static_argnames="loss_fn")
def _train_step(model: nnx.Module, opt: nnx.Optimizer, batch: dict, loss_fn: Callable) -> tuple[jax.Array, jax.Array]:
    """One optimizer step on ``loss_fn(model, batch) -> (loss, aux)``; returns (loss, solver totals).

    ``loss_fn`` is static: the step compiles once per loss function, model structure and batch shape."""
    (loss, aux), grads = nnx.value_and_grad(loss_fn, argnums=_WRT, has_aux=True)(model, batch)
    opt.update(model, nnx.filter_state(grads, nnx.Param))
    return loss, _solver_totals(aux, grads, batch["weight"])


def fit(
    model: nnx.Module,
    loss_fn: Callable,
    make_batch: Callable,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    valid_labels: np.ndarray,
    valid_users: np.ndarray,
    config: TrainConfig = TrainConfig(),
    progress: Callable[[dict], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress_bar: Callable[..., Any] | None = None,
    monitor: Callable[[nnx.Module], dict] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    write_checkpoint: bool = True,
    checkpoint_every: float | None = 600.0,
) -> dict:
    """Train ``model`` with Adam on ``loss_fn(model, batch) -> (loss, aux)``.

    ``loss_fn`` is a static argument of the compiled step: pass a module-level function or a
    hashable callable that compares equal when it computes the same loss (e.g. a frozen
    dataclass), so a second ``fit`` of a model of the same structure reuses the compiled step;
    a new lambda per call compiles again.

    Every batch has ``config.batch_size`` rows, so the step compiles once: the last, partial batch
    of an epoch is padded by repeating its last row, and every batch carries ``batch["weight"]``
    (B,), 1 for real rows and 0 for the padding. ``loss_fn`` must be the ``weight``-weighted mean
    over the batch (as :func:`~implicit_rec.models.vertical.bce_with_logits` with ``weight=``);
    the padding then changes neither the loss nor its gradient.

    After each epoch the validation AUC is computed; training stops after ``patience`` epochs
    without improvement and the parameters of the best epoch are restored. Returns the history,
    with ``examples_per_second`` (the training loops after the first, compiling step) and, per epoch
    of this call, ``train_seconds`` and ``valid_seconds`` (wall; compilation included).

    The input pipeline keeps the device busy: batches are built on a background thread
    (:func:`~implicit_rec.models.prefetch.prefetch`), steps are dispatched without waiting for the
    previous loss (read once per epoch), the step's graph traversal is cached per epoch
    (``nnx.cached_partial``), and, without a mesh, the validation programs (predict's forward pass
    and a :class:`ConvergenceMonitor`) are compiled on another thread while the first epoch trains,
    on a clone of the model in eval mode. Validation runs at the model's evaluation settings (for an
    implicit VM its ``eval_solver``): early stopping then selects the model as it is tested.

    Large embedding tables train padded: every ``nnx.Embed`` of at least ``table_rows.MIN_ROWS``
    rows gets zero rows up to a multiple of ``table_rows.ALIGN`` for the duration of the call
    (:mod:`.table_rows`: XLA:CPU's element-wise passes, Adam's among them, are several times slower
    over a leading dimension that does not split evenly over its threads). No id reaches the
    padding, so the result is bit for bit that of the unpadded model; the model has its own shapes
    again when ``fit`` returns or raises, and checkpoints hold those shapes. Validation inside
    ``fit`` (and ``monitor``) sees the padded tables.

    Solver health is logged per epoch when the model has implicit layers (``LayerInfo`` in the
    loss's aux, ``AdjointProbe`` variables in the model): ``train_converged_fraction`` and
    ``train_mean_nstep`` of the forward solves, and, for ``grad="ift"``, the adjoint solves of
    the backward passes: ``adjoint_converged_fraction``, ``adjoint_fallback_fraction``,
    ``adjoint_mean_residual``, ``adjoint_mean_nstep`` (means over the epoch's samples).

    ``monitor(model) -> dict`` (model in eval mode): extra per-epoch entries of the record, e.g.
    :func:`convergence_monitor`'s fixed-point health at the evaluation settings.

    ``checkpoint``: a file written atomically after every epoch (model, optimizer, best
    parameters, history, shuffling RNG, the draws of the model's RNG streams) and, within an epoch,
    after the first step that ends ``checkpoint_every`` seconds after the last write (None: at
    epoch ends only; 0: after every step), with the epoch's position (its shuffling RNG, the next
    batch, the losses so far; refused for other training rows or batch size); when it exists,
    training resumes where it was written (after its last epoch, or at its batch of the epoch) and
    reaches exactly the result of an uninterrupted run. ``write_checkpoint=False`` resumes from
    it but never writes it: under ``jax.distributed`` with a path every process shares, process 0
    writes it (``implicit-rec run --processes``); with a path of each process's own, all write.
    ``progress_bar``: a tqdm-like factory
    ``progress_bar(total=, desc=, leave=)`` whose bars get ``update``, ``set_postfix`` and ``close``.

    Data parallel (:mod:`.parallel`): ``mesh`` (or ``config.devices != 1``, which builds
    ``parallel.data_mesh(config.devices)``) replicates the model and optimizer on the mesh's N
    devices and splits every batch of ``config.batch_size`` rows (a multiple of N) over them; the
    validation pass runs on the mesh too. The step is the same weighted mean over the global batch,
    so the result is one device's up to float rounding. Under ``jax.distributed`` every process calls
    ``fit`` with the same arguments and builds only its own rows of each batch; the model is left
    on one local device of each process (all hold the same values). Without a mesh nothing changes.
    """
    if mesh is None and config.devices != 1:
        mesh = parallel.data_mesh(config.devices)
    if mesh is not None:
        parallel.check_batch(config.batch_size, mesh, "batch_size (fm.batch_size / vm.batch_size)")
    tables = TableRows.of(model)
    tables.pad_model(model)
    try:
        opt = nnx.Optimizer(model, _adam(config.learning_rate), wrt=nnx.Param)
        rng = np.random.default_rng(config.seed)
        best_auc, best_state, stale, history = -np.inf, None, 0, []
        examples, seconds, partial = 0, 0.0, None
        if checkpoint is not None and Path(checkpoint).is_file():
            try:
                saved = load_tree(checkpoint)
                meta = json.loads(saved["meta"])
                _restore(model, tables.pad_tree(saved["model"]), checkpoint)
                _restore(opt, tables.pad_tree(saved["optimizer"]), checkpoint)
                if meta["has_best"]:
                    best_state = _restore(nnx.state(model, _KEEP), tables.pad_tree(saved["best"]), checkpoint)
                best_auc, stale, history = meta["best_auc"], meta["stale"], meta["history"]
                examples, seconds = meta["examples"], meta["seconds"]
                if "rng_counts" in saved:  # the draws of the model's RNG streams so far (random k, start noise)
                    _restore(model, saved["rng_counts"], checkpoint, nnx.RngCount)
                partial = _EpochPosition.restore(meta, saved, train_rows, config.batch_size)
            except (ValueError, KeyError, TypeError) as err:  # damaged, truncated or of another model
                raise CheckpointError(
                    f"cannot resume from the training checkpoint {checkpoint} ({err}); delete that file to "
                    "train this model again from its first epoch."
                ) from None
            rng.bit_generator.state = meta["rng"]
        if mesh is not None:
            parallel.replicate(model, mesh)
            parallel.replicate(opt, mesh)
        n_batches = -(-len(train_rows) // config.batch_size)
        more = len(history) < config.epochs and stale < config.patience
        ahead = _compile_ahead(model, make_batch, valid_rows, monitor) if more and mesh is None else None
        train_seconds, valid_seconds, first_step = [], [], True

        def write(position: _EpochPosition | None, examples: int, seconds: float) -> None:
            meta = {"has_best": best_state is not None, "best_auc": float(best_auc), "stale": stale, "history": history}
            meta |= {"examples": examples, "seconds": seconds, "rng": rng.bit_generator.state}
            tree = {"model": _pure(nnx.state(model, _KEEP)), "optimizer": _pure(nnx.state(opt, _KEEP))}
            tree["best"] = _pure(best_state) if best_state is not None else {}
            tree = tables.trim_tree(tree)  # the model's own table shapes: the file does not depend on the padding
            tree["rng_counts"] = _pure(nnx.state(model, nnx.RngCount))  # keys are rebuilt from the seeds
            if position is not None:
                meta["epoch_position"], tree["epoch"] = position.saved(train_rows, config.batch_size)
            save_tree(checkpoint, {**tree, "meta": json.dumps(meta)})

        for epoch in range(len(history), config.epochs):
            if stale >= config.patience:
                break
            t_epoch = time.perf_counter()
            model.train()
            bar = (
                progress_bar(total=n_batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
                if progress_bar is not None
                else None
            )
            step = nnx.cached_partial(_train_step, model, opt)
            if partial is None:  # a new epoch: its shuffling starts from the RNG as it is now
                position = _EpochPosition(rng.bit_generator.state, 0, [], [])
            else:  # the epoch a mid-epoch checkpoint was written in, from its next batch
                position, partial = partial, None
                rng.bit_generator.state = position.rng
                if bar is not None:
                    bar.update(position.next_batch)
            order = rng.permutation(train_rows)
            batches = prefetch(
                (n_real, _train_batch(make_batch, rows, padding_weight(n_real, len(rows)), mesh))
                for rows, n_real in padded_chunks(order[position.next_batch * config.batch_size :], config.batch_size)
            )
            losses, totals = position.losses, position.totals
            shown = _RunningMean()  # the bar's epoch loss, fetched incrementally (a refetch of all is O(steps^2))
            t0, timed, saved_at = time.perf_counter(), 0, time.perf_counter()
            for i, (n_real, batch) in enumerate(batches, start=position.next_batch):
                loss, batch_totals = step(batch, loss_fn)
                losses.append(loss)
                totals.append(batch_totals)
                if first_step:  # the first step of this call compiles
                    jax.block_until_ready(loss)
                    t0, first_step = time.perf_counter(), False
                else:
                    timed += n_real
                if bar is not None:
                    bar.update(1)
                    if i % 20 == 0:
                        bar.set_postfix(loss=f"{shown.extend(losses):.4f}")
                due = checkpoint_every is not None and time.perf_counter() - saved_at >= checkpoint_every
                if checkpoint is not None and write_checkpoint and due and i + 1 < n_batches:
                    position = dataclasses.replace(position, next_batch=i + 1)
                    write(position, examples + timed, seconds + time.perf_counter() - t0)
                    saved_at = time.perf_counter()
            losses = np.asarray(jax.device_get(losses), np.float64)  # waits for the last step
            totals = np.sum(np.asarray(jax.device_get(totals), np.float64), axis=0) if totals else 0.0
            if timed:
                seconds += time.perf_counter() - t0
                examples += timed
            if bar is not None:
                bar.close()
            t_valid = time.perf_counter()
            train_seconds.append(t_valid - t_epoch)
            if ahead is not None:
                ahead.join()
                ahead = None
            probs = predict(model, make_batch, valid_rows, mesh=mesh)
            valid = metrics.evaluate(valid_labels, probs, valid_users)
            record = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                **_solver_log(totals),
                **{f"valid_{k}": v for k, v in valid.items()},
                **(monitor(model) if monitor is not None else {}),
            }
            valid_seconds.append(time.perf_counter() - t_valid)
            history.append(record)
            if progress is not None:
                progress(record)
            if valid["auc"] > best_auc:
                best_auc, stale = valid["auc"], 0
                # A snapshot by reference: JAX arrays are immutable and no step donates its inputs, so the
                # arrays stay valid as training replaces them (copying compiled a program per shape).
                best_state = jax.tree.map(lambda x: x, nnx.state(model, _KEEP))
            else:
                stale += 1
            if checkpoint is not None and write_checkpoint:
                write(None, examples, seconds)
        if best_state is not None:
            nnx.update(model, best_state)
        if mesh is not None:
            parallel.unreplicate(model)
        model.eval()
        return {
            "history": history,
            "best_valid_auc": float(best_auc),
            "epochs_run": len(history),
            "examples_per_second": examples / seconds if seconds > 0 else float("nan"),
            "train_seconds": train_seconds,
            "valid_seconds": valid_seconds,
        }
    finally:
        tables.trim_model(model)


class _RunningMean:
    """Mean of a growing list of (device) scalars, fetching only the entries added since the last call."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def extend(self, values: list) -> float:
        self.total += float(np.sum(np.asarray(jax.device_get(values[self.count :]), np.float64)))
        self.count = len(values)
        return self.total / self.count if self.count else float("nan")


@dataclasses.dataclass(frozen=True)
class _EpochPosition:
    """Where an epoch of :func:`fit` is: the shuffling RNG's state before the epoch's permutation,
    the index of its next batch and the (device) losses and solver totals of the batches before."""

    rng: dict
    next_batch: int
    losses: list
    totals: list

    def saved(self, train_rows: np.ndarray, batch_size: int) -> tuple[dict, dict]:
        """(meta entries, arrays) of a mid-epoch checkpoint of training on ``train_rows``."""
        meta = {"rng": self.rng, "next_batch": self.next_batch, "batch_size": batch_size}
        meta |= {"rows": len(train_rows), "rows_digest": _digest(train_rows)}
        arrays = {
            "losses": np.asarray(jax.device_get(self.losses), np.float32),
            "totals": np.asarray(jax.device_get(self.totals), np.float32),
        }
        return meta, arrays

    @classmethod
    def restore(cls, meta: dict, saved: dict, train_rows: np.ndarray, batch_size: int) -> _EpochPosition | None:
        """The position saved with ``meta`` / ``saved`` (None: the checkpoint is at an epoch's end);
        ValueError when it was written for other training rows or another batch size."""
        at = meta.get("epoch_position")
        if at is None:
            return None
        n_done, n_rows = len(saved["epoch"]["losses"]), len(train_rows)
        same = (at["rows"], at["batch_size"], at["rows_digest"]) == (n_rows, batch_size, _digest(train_rows))
        if not same or n_done != at["next_batch"] or n_done * batch_size >= n_rows:
            raise ValueError(
                f"its epoch position ({at['next_batch']} batches of {at['batch_size']} of {at['rows']} training "
                f"rows, digest {at['rows_digest']}) does not fit {n_rows} rows in batches of {batch_size} "
                f"(digest {_digest(train_rows)})"
            )
        totals = np.asarray(saved["epoch"]["totals"])
        return cls(at["rng"], n_done, list(np.asarray(saved["epoch"]["losses"])), list(totals))


def _digest(rows: np.ndarray) -> str:
    """A short hash of the training rows (their ids, in order): a checkpoint's epoch position fits them only."""
    return hashlib.blake2b(np.ascontiguousarray(rows, np.int64).tobytes(), digest_size=8).hexdigest()


def _train_batch(make_batch: Callable, rows: np.ndarray, weight: np.ndarray, mesh: jax.sharding.Mesh | None) -> dict:
    """The training batch of ``rows`` with its padding ``weight``, split over ``mesh`` when given."""
    if mesh is None:
        return {**make_batch(rows), "weight": weight}
    return parallel.shard_batch(make_batch, rows, mesh, weight)


def _compile_ahead(
    model: nnx.Module, make_batch: Callable, rows: np.ndarray, monitor: Callable | None
) -> threading.Thread | None:
    """Compile fit's validation programs on a background thread, on a clone of ``model`` in eval mode:
    predict's forward pass (a chunk of ``PREDICT_BATCH`` rows) and a :class:`ConvergenceMonitor`'s
    program (other monitors are not called here). XLA compiles a program on one core, so this
    overlaps the first epoch's training, whose step compiles on the other. An error is dropped here:
    the same call in ``fit`` raises it. Returns the thread (join it before validating), or None
    without validation rows."""
    if len(rows) == 0:
        return None
    clone = nnx.clone(model)
    batch = make_batch(pad_rows(np.asarray(rows[:PREDICT_BATCH]), PREDICT_BATCH))

    def compile_validation() -> None:
        try:
            clone.eval()
            jax.block_until_ready(_probabilities(clone, batch, "logit"))
            if isinstance(monitor, ConvergenceMonitor):
                monitor(clone)
        except Exception:  # raised again, in the caller's thread, by the validation it prepares
            pass

    thread = threading.Thread(target=compile_validation, name="compile-validation", daemon=True)
    thread.start()
    return thread


_KEEP = nnx.Not(nnx.RngState)


@dataclasses.dataclass(frozen=True, eq=False)
class ConvergenceMonitor:
    """Per-epoch fixed-point health of a model's implicit core on a fixed sample of rows, at the
    evaluation solver settings: ``eval_converged_fraction``, ``eval_mean_nstep`` and the spectral
    radius of d cell / dz at z* (``spectral_radius_mean`` / ``_max`` over the sample; < 1 means
    locally contractive). The model must have ``core_input(batch)`` and an ``ImplicitLayer`` ``core``.
    """

    batch: dict

    def __call__(self, model: nnx.Module) -> dict:
        model.eval()
        out = _convergence(model, self.batch)
        return {name: float(v) for name, v in zip(_CONVERGENCE, out)}


_CONVERGENCE = ("eval_converged_fraction", "eval_mean_nstep", "spectral_radius_mean", "spectral_radius_max")


@nnx.jit
def _convergence(model: nnx.Module, batch: dict) -> tuple[jax.Array, ...]:
    x = model.core_input(batch)
    z, info = model.core(x)
    rho = model.core.spectral_radius(x, z)
    return info.converged_fraction, info.mean_nstep, jnp.mean(rho), jnp.max(rho)


_TOTALS = (
    "samples",
    "converged",
    "nstep",
    "adjoint_solved",
    "adjoint_converged",
    "adjoint_fallback",
    "adjoint_residual",
    "adjoint_nstep",
)


def _solver_totals(aux, grads, weight: jax.Array) -> jax.Array:
    """Batch sums (len(_TOTALS),) of the forward solves (every LayerInfo in ``aux``; per-sample
    reports of shape (B,) count real rows only, by ``weight``) and of the adjoint solves (the
    gradients of the AdjointProbe variables, see ``layers.adjoint_report``; these include the
    padding rows of an epoch's last batch, whose zero cotangent is solved at once)."""
    infos = [x for x in jax.tree.leaves(aux, is_leaf=lambda x: isinstance(x, LayerInfo)) if isinstance(x, LayerInfo)]

    def per_sample(v):
        v = jnp.asarray(v, jnp.float32)
        return v * weight if v.shape == weight.shape else v

    forward = [sum(jnp.sum(per_sample(getattr(i, name))) for i in infos) for name in ("converged", "nstep")]
    samples = sum(jnp.sum(per_sample(jnp.ones(i.converged.shape))) for i in infos)
    probes = jax.tree.leaves(nnx.filter_state(grads, AdjointProbe))
    adj = dict(zip(solvers.AdjointInfo._fields, sum(probes) if probes else jnp.zeros(5)))
    return jnp.stack(
        [
            jnp.asarray(v, jnp.float32)
            for v in (
                samples,
                *forward,
                adj["solved"],
                adj["converged"],
                adj["fallback"],
                adj["residual"],
                adj["nstep"],
            )
        ]
    )


def _solver_log(totals) -> dict:
    """Epoch means of the solver statistics; keys only for the solves that ran."""
    if np.ndim(totals) == 0:  # no batches
        return {}
    t = dict(zip(_TOTALS, (float(v) for v in totals)))
    out = {}
    if t["samples"] > 0:
        out.update(train_converged_fraction=t["converged"] / t["samples"], train_mean_nstep=t["nstep"] / t["samples"])
    if t["adjoint_solved"] > 0:
        solved = t["adjoint_solved"]
        out.update(
            adjoint_converged_fraction=t["adjoint_converged"] / solved,
            adjoint_fallback_fraction=t["adjoint_fallback"] / solved,
            adjoint_mean_residual=t["adjoint_residual"] / solved,
            adjoint_mean_nstep=t["adjoint_nstep"] / solved,
        )
    return out


def _pure(state) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(state))


def _restore(target, pure: dict, where, what=_KEEP):
    """Load a pure dict into a module / optimizer (in place; its ``what`` variables) or a State (returned)."""
    state = target if isinstance(target, nnx.State) else nnx.state(target, what)
    pure = conform(nnx.to_pure_dict(state), pure, str(where))
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
    if not isinstance(target, nnx.State):
        nnx.update(target, state)
    return state
