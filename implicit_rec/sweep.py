"""Test-time iteration sweep of vertical models: quality, residual, cost and Lipschitz vs iterations.

An implicit VM is the map x -> z_k -> logit, x the front-end vector (B, width) and z_k the k-th
solver iterate (B, d_state). For each k in ``iterations`` (one :meth:`ImplicitLayer.trajectory`
pass gives every k) we report on the test rows: AUC, gAUC, logloss, the mean relative residual
||f(z_k) - z_k|| / ||f(z_k)||, the fraction with residual <= the evaluation tolerance, the wall
time to score the test set with exactly k iterations (median of repeats, front end included),
and FLOPs per example (front end + k evaluations of the cell; Anderson's O(m^2 d) mixing is not
counted in FLOPs, it shows in the seconds).

The empirical Lipschitz constant (the Implicit Models paper's diagnostic) of x -> z_k is
max / mean over test examples and random directions of ||z_k(x + d) - z_k(x)|| / ||d||, with
||d|| = scale * ||x|| per example. Explicit VMs are points: x -> last hidden layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import metrics
from .models.vertical import VerticalModel


def count_params(model: nnx.Module) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


_FLOPS: dict = {}


def _flops(model: VerticalModel, fn: Callable, key: str, *args) -> float:
    """FLOPs of ``fn(model, *args)``, counted once per (model structure, key, argument shapes)."""
    graphdef, state = nnx.split(model)
    shapes = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
    if (graphdef, key, shapes) not in _FLOPS:
        _FLOPS[graphdef, key, shapes] = compiled_flops(
            lambda state, *a: fn(nnx.merge(graphdef, state, copy=True), *a), state, *args
        )
    return _FLOPS[graphdef, key, shapes]


def compiled_flops(fn: Callable, *args) -> float:
    """XLA's FLOP count of ``jax.jit(fn)(*args)`` (loops counted once; use on loop-free code)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


_FEATURES = nnx.jit(lambda m, b: m.features(b))  # one function object: compiled once per model structure


def vm_features(model: VerticalModel, make_batch: Callable, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Front-end vectors x (N, width) of ``rows``."""
    model.eval()
    parts = [np.asarray(_FEATURES(model, make_batch(rows[i : i + chunk]))) for i in range(0, len(rows), chunk)]
    return np.concatenate(parts)


def _median_seconds(fn: Callable, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
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
    chunk: int = 4096,
    timed: bool = True,
) -> list[dict]:
    """One row per k: auc, gauc, logloss, residual, converged_fraction, seconds, flops.

    ``timed=False`` skips the wall-time measurement (one compilation per k) and reports NaN seconds.
    """
    if model.arch != "implicit":
        raise ValueError(f"implicit_sweep needs an implicit VM, got arch={model.arch!r}.")
    model.eval()
    K = max(iterations)
    x = vm_features(model, make_batch, rows, chunk)
    tol = model.core.eval_solver.tol
    traj = _pure(
        model,
        lambda m, x: m.core.trajectory(x, steps=K, readout=lambda z: m.head(z)[:, 0], method=method, residual=True),
        ("traj", K, method),
    )

    logits, resid = [], []
    for i in range(0, len(x), chunk):
        lg, rs = traj(jnp.asarray(x[i : i + chunk]))
        logits.append(np.asarray(lg))
        resid.append(np.asarray(rs))
    logits, resid = np.concatenate(logits, 1), np.concatenate(resid, 1)  # (K + 1, N)

    # cost: front end once, then the solve + head at each k
    sample = make_batch(rows[: min(len(rows), chunk)])
    front_s = (
        _median_seconds(
            lambda: [_FEATURES(model, make_batch(rows[i : i + chunk])) for i in range(0, len(rows), chunk)], repeats
        )
        if timed
        else float("nan")
    )
    front_flops = _flops(model, lambda m, b: m.features(b), "features", sample) / len(rows[:chunk])
    xc = jnp.asarray(x[:chunk])
    prep_flops = _flops(model, lambda m, x: m.core.functional(x)[1:], "prepare", xc) / xc.shape[0]
    cell_flops = _flops(model, lambda m, x: _cell(m.core.functional(x)), "cell", xc) / xc.shape[0] - prep_flops
    front_flops += prep_flops
    head_flops = 2.0 * model.core.d_state
    xs = jnp.asarray(x)
    out = []
    for k in iterations:
        probs = 1.0 / (1.0 + np.exp(-logits[k].astype(np.float64)))
        ev = metrics.evaluate(labels, probs, users)

        seconds = float("nan")
        if timed:
            score = _pure(
                model,
                lambda m, x, k=k: m.core.trajectory(x, steps=k, readout=lambda z: m.head(z)[:, 0], method=method)[-1],
                ("score", k, method),
            )
            seconds = front_s + _median_seconds(lambda score=score: score(xs), repeats)
        out.append(
            {
                "method": method,
                "iterations": int(k),
                **ev,
                "residual": float(np.mean(resid[k])),
                "converged_fraction": float(np.mean(resid[k] <= tol)),
                "seconds": seconds,
                "flops": front_flops + k * cell_flops + head_flops,
            }
        )
    return out


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
    chunk: int = 4096,
) -> dict:
    """An explicit VM on the sweep's axes: depth (hidden layers), metrics, seconds, flops."""
    model.eval()
    fwd = nnx.jit(lambda m, b: jax.nn.sigmoid(m(b)["logit"]))
    probs = np.concatenate(
        [np.asarray(fwd(model, make_batch(rows[i : i + chunk]))) for i in range(0, len(rows), chunk)]
    )
    sample = make_batch(rows[:chunk])
    flops = _flops(model, lambda m, b: m(b)["logit"], "forward", sample) / len(rows[:chunk])
    seconds = _median_seconds(
        lambda: [fwd(model, make_batch(rows[i : i + chunk])) for i in range(0, len(rows), chunk)], repeats
    )
    return {
        "depth": len(model.core.layers),
        **metrics.evaluate(labels, probs, users),
        "seconds": seconds,
        "flops": flops,
    }


def _directions(x: jax.Array, perturbations: int, scale: float, key: jax.Array) -> jax.Array:
    """(P, n, width) random directions with ||d_i|| = scale * ||x_i||."""
    d = jax.random.normal(key, (perturbations,) + x.shape, x.dtype)
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    return d * scale * jnp.linalg.norm(x, axis=-1, keepdims=True)


def _ratios(g: Callable, x: jax.Array, deltas: jax.Array) -> jax.Array:
    """||g(x + d) - g(x)|| / ||d|| over the last axis of g's output; shape (P, ..., n).

    g is called once, on the stacked batch [x, x + d_1, ..., x + d_P] (g must act row-wise)."""
    P, n = deltas.shape[0], x.shape[0]
    out = g(jnp.concatenate([x[None], x[None] + deltas]).reshape((P + 1) * n, -1))
    out = out.reshape(out.shape[:-2] + (P + 1, n, out.shape[-1]))  # (..., P + 1, n, d)
    out = jnp.moveaxis(out, -3, 0)
    diff = jnp.linalg.norm(out[1:] - out[:1], axis=-1)  # (P, ..., n)
    dn = jnp.linalg.norm(deltas, axis=-1)  # (P, n)
    return diff / dn.reshape((P,) + (1,) * (diff.ndim - 2) + (n,))


def lipschitz_sweep(
    model: VerticalModel,
    x: np.ndarray,
    iterations: tuple[int, ...],
    method: str,
    *,
    perturbations: int = 8,
    scale: float = 1e-2,
    seed: int = 0,
) -> list[dict]:
    """One row per k: max and mean of ||z_k(x + d) - z_k(x)|| / ||d|| (x: (n, width) front-end vectors)."""
    model.eval()
    x = jnp.asarray(x)
    deltas = _directions(x, perturbations, scale, jax.random.key(seed))
    steps = max(iterations)
    ratios = _pure(
        model,
        lambda m, x, d: _ratios(lambda v: m.core.trajectory(v, steps=steps, method=method), x, d),
        ("lipschitz", steps, method),
    )
    r = np.asarray(ratios(x, deltas))  # (P, K + 1, n)
    return [
        {"method": method, "iterations": int(k), "max": float(r[:, k].max()), "mean": float(r[:, k].mean())}
        for k in iterations
    ]


def explicit_lipschitz(
    model: VerticalModel, x: np.ndarray, *, perturbations: int = 8, scale: float = 1e-2, seed: int = 0
) -> dict:
    """max / mean Lipschitz ratio of x -> last hidden layer of an explicit VM."""
    model.eval()
    x = jnp.asarray(x)
    deltas = _directions(x, perturbations, scale, jax.random.key(seed))
    r = np.asarray(
        _pure(model, lambda m, x, d: _ratios(lambda v: nnx.relu(m.core(v)), x, d), ("lipschitz",))(x, deltas)
    )
    return {"max": float(r.max()), "mean": float(r.mean())}
