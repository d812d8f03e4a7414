"""The iteration state machine shared by every solver entry point.

Works on the flat view z: (B, D) (see ``_pytree.BatchedRavel``) and a map
``fn: (B, D) -> (B, D)`` that treats rows independently. One ``step`` advances
every unconverged row by one Picard or Anderson update; converged rows are
frozen bit-for-bit. ``run_while`` loops until every row has converged or
``max_iter`` steps (no reverse-mode autodiff, constant memory); ``run_scan``
takes a fixed number of steps (differentiable by unrolling, and able to emit a
readout of every iterate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._options import IterationConfig

# Added to ||f(z)|| in the relative residual so that a zero fixed point is reachable: 1e-12, or the
# dtype's smallest normal number where 1e-12 underflows (float16); see ``rel_eps``.
REL_EPS = 1e-12
# Anderson mixing weights whose l1 norm exceeds this are treated as ill-conditioned.
MAX_ALPHA_L1 = 1e4


class History(NamedTuple):
    """Anderson ring buffers over the last m iterates z_i, written at slot k % m (never rolled).

    ``mix`` holds the terms that the next iterate mixes, (1 - damping) z_i + damping f(z_i)
    (= f(z_i) undamped), so mixing is one batched contraction for any damping; ``g`` holds the
    residuals G_i = f(z_i) - z_i and ``gram`` their Gram matrix, updated by one row and column a step.
    """

    mix: jax.Array  # (B, m, D)
    g: jax.Array  # (B, m, D)
    gram: jax.Array  # (B, m, m), gram[b, i, j] = <g[b, i], g[b, j]>


class State(NamedTuple):
    k: jax.Array  # () int32, steps taken so far
    z: jax.Array  # (B, D) current iterate
    fz: jax.Array  # (B, D) f(z)
    residual: jax.Array  # (B,) stopping metric of z
    nstep: jax.Array  # (B,) int32 steps taken by each sample
    converged: jax.Array  # (B,) bool
    history: History | None
    trace: jax.Array | None  # (B, T) residual after each step


def rel_eps(dtype) -> float:
    """REL_EPS, raised to the smallest normal number of ``dtype`` if it would underflow there."""
    return max(REL_EPS, float(jnp.finfo(dtype).tiny))


def _row_norm(x: jax.Array) -> jax.Array:
    """Per-row Euclidean norm, computed as m ||x / m|| with m = max |x_i| so that it neither
    overflows (a diverging iterate must not look converged) nor underflows, and whose gradient
    at a zero row is 0 rather than NaN (double where). A row with NaN or inf gives NaN."""
    peak = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    zero = peak == 0
    safe_peak = jnp.where(zero, 1, peak)
    unit = jnp.where(zero, 1, x / safe_peak)
    return jnp.where(zero[..., 0], 0, safe_peak[..., 0] * jnp.sqrt(jnp.sum(unit * unit, axis=-1)))


def residual(z: jax.Array, fz: jax.Array, stop: str) -> jax.Array:
    """Per-row ||f(z) - z||, divided by (||f(z)|| + eps) when stop == "rel" (eps = ``rel_eps``).

    Differentiable everywhere, with gradient 0 at a row where f(z) - z = 0.
    """
    r = _row_norm(fz - z)
    if stop == "rel":
        r = r / (_row_norm(fz) + rel_eps(r.dtype))
    return r


def _stopping_metric(z, fz, stop):
    """The residual as the loop uses it: it only steers control flow, so it carries no gradient."""
    return residual(lax.stop_gradient(z), lax.stop_gradient(fz), stop)


def init(fn: Callable, z0: jax.Array, cfg: IterationConfig, trace_len: int = 0) -> State:
    fz = fn(z0)
    res = _stopping_metric(z0, fz, cfg.stop)
    batch, dim = z0.shape
    history = None
    if cfg.method == "anderson":
        m = cfg.memory
        history = History(
            jnp.zeros((batch, m, dim), z0.dtype),
            jnp.zeros((batch, m, dim), z0.dtype),
            jnp.zeros((batch, m, m), z0.dtype),
        )
    trace = jnp.zeros((batch, trace_len), res.dtype) if trace_len else None
    return State(jnp.zeros((), jnp.int32), z0, fz, res, jnp.zeros((batch,), jnp.int32), res <= cfg.tol, history, trace)


def solve_spd(a: jax.Array, b: jax.Array) -> jax.Array:
    """Solve a[i] x[i] = b[i] for a batch of small symmetric positive definite systems.

    a: (B, m, m), b: (B, m). Gaussian elimination without pivoting, unrolled over
    the (static, small) m so that it vectorizes over B: for the m <= 10 of
    Anderson it is several times faster than a batched LAPACK call on CPU. A
    singular or indefinite system yields non-finite entries, which callers check.
    """
    m = a.shape[-1]
    rows = [[a[:, i, j] for j in range(m)] for i in range(m)]
    rhs = [b[:, i] for i in range(m)]
    for p in range(m):
        inv = 1.0 / rows[p][p]
        for i in range(p + 1, m):
            factor = rows[i][p] * inv
            for j in range(p + 1, m):
                rows[i][j] = rows[i][j] - factor * rows[p][j]
            rhs[i] = rhs[i] - factor * rhs[p]
    x = [None] * m
    for i in reversed(range(m)):
        acc = rhs[i]
        for j in range(i + 1, m):
            acc = acc - rows[i][j] * x[j]
        x[i] = acc / rows[i][i]
    return jnp.stack(x, axis=-1)


def _anderson_candidate(s: State, g: jax.Array, cfg: IterationConfig):
    """Type-II Anderson mixing with per-row weights and a Picard fallback.

    With F_i = f(z_i) and G_i = f(z_i) - z_i for the last n <= m iterates, the
    weights solve  min ||sum_i a_i G_i||^2 + ridge sum_i ||G_i||^2 a_i^2  s.t. sum_i a_i = 1,
    i.e. a = w / sum(w) with (G G^T + ridge diag(G G^T)) w = 1 (a ridge relative to
    each residual's scale, so it stays meaningful as the residuals shrink). The next iterate
    is sum_i a_i (F_i - (1 - damping) G_i).
    A row whose weights are non-finite or larger than MAX_ALPHA_L1 in l1 norm
    takes a = e_newest instead, which is exactly the damped Picard step (decided
    without gradient, so the rejected weights never enter the backward pass).

    Cost per step beyond Picard: two writes of one (B, D) slot, one pass over the residual
    buffer for the new Gram row <G_i, g> (O(m D) per sample; the other entries are kept), an
    (m, m) solve per sample and one pass over the mixing buffer.
    """
    h = s.history
    m = cfg.memory
    slot = s.k % m
    mixed = s.fz if cfg.damping == 1.0 else s.fz - (1.0 - cfg.damping) * g
    mix_buf = lax.dynamic_update_index_in_dim(h.mix, mixed, slot, axis=1)
    g_buf = lax.dynamic_update_index_in_dim(h.g, g, slot, axis=1)
    row = jnp.einsum("bmd,bd->bm", g_buf, g)
    idx = jnp.arange(m)
    newest = idx == slot
    gram = lax.dynamic_update_index_in_dim(h.gram, row, slot, axis=1)
    gram = lax.dynamic_update_index_in_dim(gram, row, slot, axis=2)

    valid = idx < jnp.minimum(s.k + 1, m)  # slots are filled in order before they wrap
    picard = jnp.broadcast_to(newest.astype(gram.dtype), row.shape)
    # Jacobi-scaled system: S = D^-1/2 (G G^T) D^-1/2 + ridge I with D = diag(G G^T), then
    # w = D^-1/2 S^-1 D^-1/2 1. Equivalent to a ridge of ridge * ||G_i||^2 on each weight:
    # scale-free, and well conditioned in float32 even when old residuals dwarf new ones.
    system, scale = _scaled_system(gram, valid, cfg.ridge)
    # Double where: a row whose system cannot be solved (every residual zero, or a singular system,
    # possible only when ridge = 0) is found first, without gradient, and solved as the trivial
    # system I w = e_newest instead, which gives the Picard weights. Then no inf or NaN is formed on
    # a differentiated path and unrolled gradients of the whole batch stay finite (a where that
    # merely discards a NaN still propagates it backwards). With ridge > 0, S has eigenvalues
    # >= ridge, so only the all-zero rows need this.
    solvable = jnp.any(scale > 0, axis=-1)
    if cfg.ridge == 0:
        solvable &= _finite_weights(*lax.stop_gradient((system, scale)))
    system = jnp.where(solvable[:, None, None], system, jnp.eye(m, dtype=gram.dtype))
    scale = jnp.where(solvable[:, None], scale, picard)
    w = scale * solve_spd(system, scale)
    alpha = w / jnp.sum(w, axis=-1, keepdims=True)
    ok = jnp.all(jnp.isfinite(alpha), axis=-1) & (jnp.sum(jnp.abs(alpha), axis=-1) <= MAX_ALPHA_L1)
    alpha = jnp.where(ok[:, None], alpha, picard)

    z_new = jnp.einsum("bm,bmd->bd", alpha, mix_buf)
    return z_new, History(mix_buf, g_buf, gram)


def _scaled_system(gram: jax.Array, valid: jax.Array, ridge: float):
    """(S, d): the Jacobi-scaled ridge system and d = D^-1/2.

    A slot whose ||G_i||^2 is below sqrt(tiny) of the dtype (||G_i|| < 3e-10 in float32, where
    mixing is meaningless) gets d_i = 0, i.e. no weight: D^-1/2 and its derivative stay finite.
    """
    m = gram.shape[-1]
    sq = jnp.diagonal(gram, axis1=1, axis2=2)
    live = valid & (sq > float(jnp.finfo(gram.dtype).tiny) ** 0.5)
    scale = jnp.where(live, lax.rsqrt(jnp.where(live, sq, 1)), 0)
    pair = valid[:, None] & valid[None, :]
    scaled = jnp.where(pair, gram * scale[:, :, None] * scale[:, None, :], 0)
    return scaled + jnp.where(valid, ridge, 1.0)[:, None] * jnp.eye(m, dtype=gram.dtype), scale


def _finite_weights(system: jax.Array, scale: jax.Array) -> jax.Array:
    """(B,) whether w = d S^-1 d is finite with a nonzero sum (S may be singular when ridge = 0)."""
    w = scale * solve_spd(system, scale)
    return jnp.all(jnp.isfinite(w), axis=-1) & (jnp.sum(w, axis=-1) != 0)


def step(fn: Callable, cfg: IterationConfig, s: State) -> State:
    """One update of every unconverged row; converged rows keep their values exactly."""
    active = ~s.converged
    g = s.fz - s.z
    if cfg.method == "anderson":
        z_new, history = _anderson_candidate(s, g, cfg)
    else:
        z_new, history = s.z + cfg.damping * g, None
    keep = active[:, None]
    z = jnp.where(keep, z_new, s.z)
    fz = jnp.where(keep, fn(z), s.fz)
    res = jnp.where(active, _stopping_metric(z, fz, cfg.stop), s.residual)
    trace = s.trace
    if trace is not None:
        trace = lax.dynamic_update_index_in_dim(trace, res, s.k, axis=1)
    return State(
        s.k + 1, z, fz, res, s.nstep + active.astype(jnp.int32), s.converged | (res <= cfg.tol), history, trace
    )


def run_while(fn: Callable, z0: jax.Array, cfg: IterationConfig, record: bool = False) -> State:
    """Iterate until every row converged or cfg.max_iter steps; memory independent of steps."""
    s0 = init(fn, z0, cfg, cfg.max_iter if record else 0)

    def cond(s):
        return (s.k < cfg.max_iter) & ~jnp.all(s.converged)

    s = lax.while_loop(cond, lambda s: step(fn, cfg, s), s0)
    if s.trace is not None:  # steps skipped after an early exit keep the frozen residual
        cols = jnp.arange(cfg.max_iter)[None, :]
        s = s._replace(trace=jnp.where(cols < s.k, s.trace, s.residual[:, None]))
    return s


def run_scan(
    fn: Callable, z0: jax.Array, cfg: IterationConfig, steps: int, record: bool = False, readout: Callable | None = None
):
    """Take exactly ``steps`` steps with lax.scan (differentiable by unrolling).

    Returns (final state, stacked readout(z_k) for k = 1..steps or None).
    """
    s0 = init(fn, z0, cfg, steps if record else 0)

    def body(s, _):
        s = step(fn, cfg, s)
        return s, (readout(s.z) if readout is not None else None)

    return lax.scan(body, s0, None, length=steps)
