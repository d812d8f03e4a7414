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

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from ._options import IterationConfig

# Added to ||f(z)|| in the relative residual so that a zero fixed point is reachable.
REL_EPS = 1e-12
# Anderson mixing weights whose l1 norm exceeds this are treated as ill-conditioned.
MAX_ALPHA_L1 = 1e4


class History(NamedTuple):
    """Anderson ring buffers: the last m values of f(z) and of g = f(z) - z, and their Gram."""

    fz: jax.Array  # (B, m, D)
    g: jax.Array  # (B, m, D)
    gram: jax.Array  # (B, m, m), gram[b, i, j] = <g[b, i], g[b, j]>


class State(NamedTuple):
    k: jax.Array  # () int32, steps taken so far
    z: jax.Array  # (B, D) current iterate
    fz: jax.Array  # (B, D) f(z)
    residual: jax.Array  # (B,) stopping metric of z
    nstep: jax.Array  # (B,) int32 steps taken by each sample
    converged: jax.Array  # (B,) bool
    history: Optional[History]
    trace: Optional[jax.Array]  # (B, T) residual after each step


def residual(z: jax.Array, fz: jax.Array, stop: str) -> jax.Array:
    """Per-row ||f(z) - z||, divided by (||f(z)|| + eps) when stop == "rel"."""
    r = jnp.linalg.norm(fz - z, axis=-1)
    if stop == "rel":
        r = r / (jnp.linalg.norm(fz, axis=-1) + REL_EPS)
    return r


def init(fn: Callable, z0: jax.Array, cfg: IterationConfig, trace_len: int = 0) -> State:
    fz = fn(z0)
    res = residual(z0, fz, cfg.stop)
    batch, dim = z0.shape
    history = None
    if cfg.method == "anderson":
        m = cfg.memory
        history = History(jnp.zeros((batch, m, dim), z0.dtype), jnp.zeros((batch, m, dim), z0.dtype),
                          jnp.zeros((batch, m, m), z0.dtype))
    trace = jnp.zeros((batch, trace_len), res.dtype) if trace_len else None
    return State(jnp.zeros((), jnp.int32), z0, fz, res, jnp.zeros((batch,), jnp.int32),
                 res <= cfg.tol, history, trace)


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
    each residual's scale, so it stays meaningful as the residuals shrink). The next iterate is sum_i a_i (F_i - (1 - damping) G_i).
    A row whose weights are non-finite or larger than MAX_ALPHA_L1 in l1 norm
    takes a = e_newest instead, which is exactly the damped Picard step.
    """
    h = s.history
    m = cfg.memory
    slot = s.k % m
    fz_buf = lax.dynamic_update_index_in_dim(h.fz, s.fz, slot, axis=1)
    g_buf = lax.dynamic_update_index_in_dim(h.g, g, slot, axis=1)
    row = jnp.einsum("bmd,bd->bm", g_buf, g)
    gram = lax.dynamic_update_index_in_dim(h.gram, row, slot, axis=1)
    gram = lax.dynamic_update_index_in_dim(gram, row, slot, axis=2)

    idx = jnp.arange(m)
    valid = idx < jnp.minimum(s.k + 1, m)  # slots are filled in order before they wrap
    pair = valid[:, None] & valid[None, :]
    # Jacobi-scaled system: S = D^-1/2 (G G^T) D^-1/2 + ridge I with D = diag(G G^T), then
    # w = D^-1/2 S^-1 D^-1/2 1. Equivalent to a ridge of ridge * ||G_i||^2 on each weight:
    # scale-free, and well conditioned in float32 even when old residuals dwarf new ones.
    sq = jnp.diagonal(gram, axis1=1, axis2=2)
    inv_sqrt = jnp.where(valid, lax.rsqrt(jnp.maximum(sq, jnp.finfo(gram.dtype).tiny)), 0.0)
    scaled = jnp.where(pair, gram * inv_sqrt[:, :, None] * inv_sqrt[:, None, :], 0.0)
    system = scaled + jnp.where(valid, cfg.ridge, 1.0)[:, None] * jnp.eye(m, dtype=gram.dtype)
    w = inv_sqrt * solve_spd(system, inv_sqrt)
    alpha = w / jnp.sum(w, axis=-1, keepdims=True)
    ok = jnp.all(jnp.isfinite(alpha), axis=-1) & (jnp.sum(jnp.abs(alpha), axis=-1) <= MAX_ALPHA_L1)
    picard = (idx == slot).astype(alpha.dtype)
    alpha = jnp.where(ok[:, None], alpha, picard)

    z_new = jnp.einsum("bm,bmd->bd", alpha, fz_buf)
    if cfg.damping != 1.0:
        z_new = z_new - (1.0 - cfg.damping) * jnp.einsum("bm,bmd->bd", alpha, g_buf)
    return z_new, History(fz_buf, g_buf, gram)


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
    res = jnp.where(active, residual(z, fz, cfg.stop), s.residual)
    trace = s.trace
    if trace is not None:
        trace = lax.dynamic_update_index_in_dim(trace, res, s.k, axis=1)
    return State(s.k + 1, z, fz, res, s.nstep + active.astype(jnp.int32),
                 s.converged | (res <= cfg.tol), history, trace)


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


def run_scan(fn: Callable, z0: jax.Array, cfg: IterationConfig, steps: int, record: bool = False,
             readout: Optional[Callable] = None):
    """Take exactly ``steps`` steps with lax.scan (differentiable by unrolling).

    Returns (final state, stacked readout(z_k) for k = 1..steps or None).
    """
    s0 = init(fn, z0, cfg, steps if record else 0)

    def body(s, _):
        s = step(fn, cfg, s)
        return s, (readout(s.z) if readout is not None else None)

    return lax.scan(body, s0, None, length=steps)
