"""Test-time iteration sweep of vertical models: quality, residual, cost and Lipschitz vs iterations.

An implicit VM is the map x -> z_k -> logit, x what its core reads (``VerticalModel.core_input``:
the front-end vector (B, width), or for ``"implicit-seq"`` a dict of it with the sequences it attends
to and their mask) and z_k the k-th solver iterate (B, d_state). For each k in ``iterations``
(one :meth:`ImplicitLayer.trajectory` pass gives every k) we report on the test rows: AUC with a
95% bootstrap interval over test users (``auc_ci_low``, ``auc_ci_high``:
:func:`implicit_rec.stats.bootstrap_intervals`, 500 draws, seed 0), gAUC, logloss, the mean
relative residual ||f(z_k) - z_k|| / ||f(z_k)||, the fraction with residual <= the evaluation
tolerance, the wall time to score the first ``timing_rows`` test rows with exactly k iterations
(median of repeats, front end included; :func:`score_at`, whose k is a traced argument: one
compilation per model structure and method times every k), and FLOPs per example (front end + k evaluations of the cell;
Anderson's O(m^2 d) mixing is not counted in FLOPs, it shows in the seconds). Explicit points carry
the same interval.

The empirical Lipschitz constant (the Implicit Models paper's diagnostic) of x -> z_k is
max / mean over test examples and random directions of ||z_k(x + d) - z_k(x)|| / ||d||, with
||d|| = scale * ||x|| per example (``solvers.empirical_lipschitz`` on the whole trajectory, one
call); only x's floating-point leaves are perturbed (a sequence mask stays as it is). Explicit VMs
are points: x -> last hidden layer.

Rows are typed (:class:`~implicit_rec.sweep_core.SweepRow`, :class:`LipschitzRow`,
:class:`ExplicitPoint`); their ``to_dict()`` is the ``metrics.json`` schema.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import solvers

from . import metrics, stats
from .models.training import PREDICT_BATCH, padded_chunks, predict
from .models.vertical import VerticalModel
from .sweep_core import SweepRow, check_iterations, sweep_rows

CI_LEVEL = 0.95  # the sweep's AUC intervals: the level of the run's comparisons (pipeline.compare)
CI_BOOT = 500  # user draws per interval (about 0.1 s per row on 41k test events)


@dataclasses.dataclass(frozen=True)
class LipschitzRow:
    """max / mean empirical Lipschitz ratio; ``method`` and ``iterations`` for a point of a sweep."""

    max: float
    mean: float
    method: str | None = None
    iterations: int | None = None

    def to_dict(self) -> dict:
        """{method, iterations, max, mean} for a sweep point, {max, mean} for an explicit VM."""
        out = {} if self.method is None else {"method": self.method}
        if self.iterations is not None:
            out["iterations"] = self.iterations
        return {**out, "max": self.max, "mean": self.mean}


@dataclasses.dataclass(frozen=True)
class ExplicitPoint:
    """An explicit VM on the sweep's axes: depth (hidden layers), quality metrics, seconds, flops."""

    depth: int
    metrics: Mapping[str, float]
    seconds: float
    flops: float

    def to_dict(self) -> dict:
        return {"depth": self.depth, **self.metrics, "seconds": self.seconds, "flops": self.flops}


_FLOPS: dict = {}


def _flops(model: VerticalModel, fn: Callable, key: str, *args) -> float:
    """FLOPs of ``fn(model, *args)``, counted once per (model structure, key, argument shapes)."""
    graphdef, state = nnx.split(model)
    shapes = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
    if (graphdef, key, shapes) not in _FLOPS:
        _FLOPS[graphdef, key, shapes] = xla_flops(
            lambda state, *a: fn(nnx.merge(graphdef, state, copy=True), *a), state, *args
        )
    return _FLOPS[graphdef, key, shapes]


def xla_flops(fn: Callable, *args) -> float:
    """XLA's FLOP count of ``jax.jit(fn)(*args)`` (loops counted once; use on loop-free code).

    Read from the lowered program (HLO cost analysis before optimisation): counting needs no
    compilation, which took seconds per model. The compiled program's count is the fallback where a
    backend analyses only compiled programs; both count the same dots and elementwise operations."""
    lowered = jax.jit(fn).lower(*args)
    flops = _cost_flops(lowered.cost_analysis())
    return flops if np.isfinite(flops) else _cost_flops(lowered.compile().cost_analysis())


def _cost_flops(cost) -> float:
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


_FEATURES = nnx.jit(lambda m, b: m.core_input(b))  # one function object: compiled once per model structure


def _chunks(rows: np.ndarray, chunk: int):
    """``(padded, n)`` per chunk of ``min(chunk, len(rows))`` entries (``training.padded_chunks``), so
    the jitted passes below compile once per model structure; ``n`` real entries come first."""
    return padded_chunks(rows, max(min(chunk, len(rows)), 1))


def vm_features(model: VerticalModel, make_batch: Callable, rows: np.ndarray, chunk: int = 4096):
    """What the core reads for ``rows`` (``VerticalModel.core_input``): x (N, width), or a pytree
    (a dict) of arrays with leading axis N."""
    model.eval()
    parts = [
        jax.tree.map(lambda a, n=n: np.asarray(a)[:n], _FEATURES(model, make_batch(part)))
        for part, n in _chunks(rows, chunk)
    ]
    return jax.tree.map(lambda *a: np.concatenate(a), *parts)


def _num_rows(x) -> int:
    """N of a pytree of arrays with leading axis N."""
    return len(jax.tree.leaves(x)[0])


def _take(x, index):
    """``x[index]`` on every leaf of a pytree, as JAX arrays."""
    return jax.tree.map(lambda a: jnp.asarray(a[index]), x)


def _median_seconds(fn: Callable, repeats: int, warm: bool = True) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after one untimed call (compilation) if ``warm``."""
    if warm:
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


_JITTED: dict = {}


def _pure(model: VerticalModel, fn: Callable, key: tuple) -> Callable:
    """``fn(model, *args)`` as a jitted pure function of ``args`` (the state is a jit argument).

    Compiled once per (model structure, ``key``): models of the same structure (other seeds) reuse it.
    """
    graphdef, state = nnx.split(model)
    if (graphdef, key) not in _JITTED:
        _JITTED[graphdef, key] = jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state, copy=True), *args))
    jitted = _JITTED[graphdef, key]
    return lambda *args: jitted(state, *args)


class ImplicitSweep(NamedTuple):
    """What :func:`implicit_sweep` returns: one row per k and the test probabilities (N,) float32
    at each k of ``keep`` that is in ``iterations``."""

    rows: list[SweepRow]
    predictions: dict[int, np.ndarray]


def score_at(model: VerticalModel, x, steps: int, method: str) -> jax.Array:
    """The logits (N,) of what the core reads, ``x``, after exactly ``steps`` solver iterations.

    Equal to ``model.core.trajectory(x, steps, readout=state_logit, method=method)[steps]``
    (``solvers.iterate_to`` with the layer's solver settings in force); ``steps`` is a traced
    argument, so one compiled function per (model structure, method) serves every k.
    """
    return _scorer(model, method)(x, jnp.asarray(steps, jnp.int32))


def _scorer(model: VerticalModel, method: str) -> Callable:
    """``(x, steps) -> logits`` of :func:`score_at`, jitted once per (model structure, method)."""
    return _pure(model, lambda m, x, steps: _logit_at(m, x, steps, method), ("score", method))


def _logit_at(m: VerticalModel, x, steps: jax.Array, method: str) -> jax.Array:
    f, z0, args = m.core.functional(x)
    options = {**m.core.solver.iteration_options(), "method": method}
    return solvers.iterate_to(f, z0, *args, steps=steps, readout=lambda z: m.state_logit(z, x), **options)


def auc_intervals(labels, users, probs: np.ndarray, *, n_boot: int = CI_BOOT, level: float = CI_LEVEL) -> np.ndarray:
    """(M, 2) bootstrap intervals of the test AUC of each row of ``probs`` (M, N)
    (:func:`implicit_rec.stats.bootstrap_intervals`, seed 0); NaN where a user draw has one class
    only (a tiny test set)."""
    try:
        return stats.bootstrap_intervals(labels, users, probs, n_boot=n_boot, level=level, seed=0)
    except ValueError as err:
        if "undefined" not in str(err):
            raise
        return np.full((len(probs), 2), np.nan)


def _with_interval(evaluation: Mapping[str, float], interval) -> dict:
    """The metrics with ``auc_ci_low`` / ``auc_ci_high`` right after ``auc``."""
    out = {}
    for name, value in evaluation.items():
        out[name] = value
        if name == "auc":
            out["auc_ci_low"], out["auc_ci_high"] = float(interval[0]), float(interval[1])
    return out


def implicit_sweep(
    model: VerticalModel,
    make_batch: Callable,
    rows: np.ndarray,
    labels: np.ndarray,
    users: np.ndarray,
    iterations: tuple[int, ...],
    method: str,
    *,
    repeats: int = 3,
    timing_rows: int = 0,
    chunk: int = 4096,
    keep: tuple[int, ...] = (),
    n_boot: int = CI_BOOT,
    level: float = CI_LEVEL,
) -> ImplicitSweep:
    """One row per k: auc with its bootstrap interval (auc_ci_low, auc_ci_high), gauc, logloss,
    residual, converged_fraction, seconds, flops; and the test probabilities at each k of ``keep``.

    ``seconds`` at k: the median of ``repeats`` timed passes of the front end plus
    :func:`score_at` with k iterations (one compilation for every k) on the first ``timing_rows``
    rows (0: all of them; see :func:`timed_rows`).
    """
    if not model.is_implicit:
        raise ValueError(f"implicit_sweep needs an implicit VM, got arch={model.arch!r}.")
    model.eval()
    iterations = check_iterations(iterations)
    K = max(iterations)
    tol = model.core.eval_solver.tol
    traj = _pure(
        model,
        lambda m, x: m.core.trajectory(x, steps=K, readout=lambda z: m.state_logit(z, x), method=method, residual=True),
        ("traj", K, method),
    )

    # streamed: the front end and the trajectory chunk by chunk, so what the core reads is in memory
    # for one chunk (and the timed rows) only, not for every test row (GBs on the large preset); of
    # the K + 1 iterates only the swept ones are kept
    timed = timed_rows(rows, timing_rows)
    ks = np.asarray(iterations)
    logits, resid, x_timed, kept = [], [], [], 0
    for part, n in _chunks(rows, chunk):
        x = _FEATURES(model, make_batch(part))
        lg, rs = traj(x)
        logits.append(np.asarray(lg)[ks, :n])
        resid.append(np.asarray(rs)[ks, :n])
        if kept < len(timed):
            x_timed.append(jax.tree.map(lambda a, n=n: np.asarray(a)[:n], x))
            kept += n
    logits, resid = np.concatenate(logits, 1), np.concatenate(resid, 1)  # (len(iterations), N)

    # cost: front end once, then the solve + head at each k
    front_s = _median_seconds(
        lambda: [_FEATURES(model, make_batch(part)) for part, _ in _chunks(timed, chunk)], repeats
    )
    front_flops, cell_flops, head_flops = implicit_flops(model, make_batch(rows[: min(len(rows), chunk)]))
    xs = jax.tree.map(lambda *a: jnp.asarray(np.concatenate(a)[: len(timed)]), *x_timed)
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))  # (len(iterations), N)
    intervals = auc_intervals(labels, users, probs, n_boot=n_boot, level=level)
    evals = [_with_interval(metrics.evaluate(labels, p, users), ci) for p, ci in zip(probs, intervals)]
    score = _scorer(model, method)
    seconds = [
        front_s + _median_seconds(lambda k=k: score(xs, jnp.int32(k)), repeats, warm=i == 0)
        for i, k in enumerate(iterations)
    ]
    rows_out = sweep_rows(
        iterations,
        {name: [e[name] for e in evals] for name in evals[0]},
        method=method,
        residual=resid.mean(axis=1),
        converged_fraction=(resid <= tol).mean(axis=1),
        seconds=seconds,
        flops=front_flops + ks * cell_flops + head_flops,
    )
    kept = {k: probs[i].astype(np.float32) for i, k in enumerate(iterations) if k in set(keep)}
    return ImplicitSweep(rows_out, kept)


def timed_rows(rows: np.ndarray, timing_rows: int) -> np.ndarray:
    """The rows whose scoring is timed: the first ``timing_rows`` (0: all).

    A timed pass runs exactly k iterations on every row (no early stop), so its time depends on the
    number of rows, not on which rows; a few thousand give a stable median at a fraction of the
    cost of scoring the whole test set ``repeats`` times at every k."""
    if timing_rows < 0:
        raise ValueError(f"timing_rows must be >= 0 (0 = all rows), got {timing_rows}.")
    return rows[:timing_rows] if timing_rows else rows


def implicit_flops(model: VerticalModel, sample: dict) -> tuple[float, float, float]:
    """FLOPs per example of an implicit VM on the batch ``sample``: (front end with the cell's
    ``prepare``, one cell application, readout and head); k iterations cost ``front + k * cell + head``."""
    model.eval()
    x = _FEATURES(model, sample)
    size = _num_rows(x)
    front = _flops(model, lambda m, b: m.core_input(b), "features", sample) / size
    prep = _flops(model, lambda m, x: m.core.functional(x)[1:], "prepare", x) / size
    cell = _flops(model, lambda m, x: _cell(m.core.functional(x)), "cell", x) / size - prep
    head = _flops(model, lambda m, x: m.state_logit(_cell(m.core.functional(x)), x), "head", x) / size - prep - cell
    return front + prep, cell, head


def forward_flops(model: VerticalModel, sample: dict, size: int) -> float:
    """FLOPs per example of a whole forward pass (front end, core, heads) on the batch ``sample`` of
    ``size`` rows; ``model`` may be abstract (``nnx.eval_shape``): only its shapes are read."""
    return _flops(model, lambda m, b: m(b)["logit"], "forward", sample) / size


def _cell(functional):
    """One application of the cell at the initial state."""
    f, z0, args = functional
    return f(z0, *args)


def explicit_point(
    model: VerticalModel,
    make_batch: Callable,
    rows: np.ndarray,
    labels: np.ndarray,
    users: np.ndarray,
    *,
    repeats: int = 3,
    timing_rows: int = 0,
    chunk: int = PREDICT_BATCH,
    probs: np.ndarray | None = None,
) -> ExplicitPoint:
    """An explicit VM on the sweep's axes: depth (hidden or encoder layers), metrics, seconds, flops.

    The probabilities and the timed passes are :func:`~implicit_rec.models.training.predict` in
    chunks of ``chunk`` rows: at its default, the forward pass that validated the model while it
    trained, already compiled in this process (or in the persistent cache). ``probs``: the model's
    probabilities on ``rows`` when they are known (a run saved them when it tested the model), so
    they are not computed again. ``seconds``: the median of ``repeats`` timed passes over the first
    ``timing_rows`` rows (0: all; :func:`timed_rows`)."""
    model.eval()
    computed = probs is None
    if computed:
        probs = predict(model, make_batch, rows, batch_size=chunk)
    elif np.shape(probs) != np.shape(rows):
        raise ValueError(f"explicit_point: probs has shape {np.shape(probs)}, rows {np.shape(rows)}.")
    flops = forward_flops(model, make_batch(rows[:chunk]), len(rows[:chunk]))
    # a computed pass above compiled (or loaded) the program: then the timed passes need no warm-up call
    timed = timed_rows(rows, timing_rows)
    seconds = _median_seconds(lambda: predict(model, make_batch, timed, batch_size=chunk), repeats, warm=not computed)
    evaluation = _with_interval(metrics.evaluate(labels, probs, users), auc_intervals(labels, users, probs[None])[0])
    return ExplicitPoint(len(model.core.layers), evaluation, seconds, flops)


def lipschitz_sweep(
    model: VerticalModel,
    x,
    iterations: tuple[int, ...],
    method: str,
    *,
    perturbations: int = 8,
    scale: float = 1e-2,
    seed: int = 0,
) -> list[LipschitzRow]:
    """One row per k: max and mean of ||z_k(x + d) - z_k(x)|| / ||d|| (x: what the core reads for n
    examples, :func:`vm_features`). d perturbs x's floating-point leaves, with ||d|| = scale * their
    norm; the other leaves (a sequence mask) stay fixed."""
    model.eval()
    iterations = check_iterations(iterations)
    moving, fixed, structure = _split_floating(x)
    deltas = solvers.random_directions(jax.random.key(seed), moving, perturbations, scale)
    steps = max(iterations)

    def ratios_of(m, moving, fixed, d):
        g = lambda v: m.core.trajectory(_join(structure, v, fixed), steps=steps, method=method)  # noqa: E731
        return solvers.empirical_lipschitz(g, moving, d, readout_axis=0, stacked=True).ratios

    ratios = _pure(model, ratios_of, ("lipschitz", steps, method, *structure))
    r = np.asarray(ratios(moving, fixed, deltas))  # (P, K + 1, n)
    return [LipschitzRow(float(r[:, k].max()), float(r[:, k].mean()), method, int(k)) for k in iterations]


def _split_floating(x) -> tuple[list, list, tuple]:
    """(x's floating-point leaves, its other leaves (a sequence mask), its structure) of a pytree x."""
    leaves, treedef = jax.tree.flatten(jax.tree.map(jnp.asarray, x))
    floating = tuple(bool(jnp.issubdtype(a.dtype, jnp.inexact)) for a in leaves)
    moving = [a for a, f in zip(leaves, floating) if f]
    fixed = [a for a, f in zip(leaves, floating) if not f]
    return moving, fixed, (treedef, floating)


def _join(structure: tuple, v: list, fixed: list):
    """The pytree of :func:`_split_floating` with floating leaves v, whose rows may be stacked copies
    of the n rows (``empirical_lipschitz(stacked=True)``): the fixed leaves are tiled to match."""
    treedef, floating = structure
    copies = v[0].shape[0] // fixed[0].shape[0] if fixed else 1
    tiled = iter([jnp.concatenate([a] * copies) for a in fixed])
    given = iter(v)
    return treedef.unflatten([next(given) if f else next(tiled) for f in floating])


def explicit_lipschitz(
    model: VerticalModel, x, *, perturbations: int = 8, scale: float = 1e-2, seed: int = 0
) -> LipschitzRow:
    """max / mean Lipschitz ratio of x -> last hidden layer of an explicit VM (``VerticalModel.hidden``;
    x as :func:`vm_features` gives it: only its floating-point leaves are perturbed)."""
    model.eval()
    moving, fixed, structure = _split_floating(x)
    deltas = solvers.random_directions(jax.random.key(seed), moving, perturbations, scale)

    def ratios_of(m, moving, fixed, d):
        g = lambda v: m.hidden(_join(structure, v, fixed))  # noqa: E731
        return solvers.empirical_lipschitz(g, moving, d, stacked=True).ratios

    r = np.asarray(_pure(model, ratios_of, ("lipschitz", *structure))(moving, fixed, deltas))
    return LipschitzRow(float(r.max()), float(r.mean()))
