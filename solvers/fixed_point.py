"""``fixed_point``: batched fixed-point solves z* = f(z*, *args) with three gradient modes."""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from . import _loop
from ._options import (GRADS, IterationConfig, check_batch_axis, check_choice, check_float,
                       check_int, check_output_like_input, make_config, reject_unknown_kwargs)
from ._pytree import BatchedRavel


class SolverInfo(NamedTuple):
    """Per-sample diagnostics of a solve (a pytree; not differentiable).

    Shapes are (B,) for a batched solve and () with ``batch_axis=None``.

    Attributes:
      residual: the stopping metric at the returned z (relative or absolute).
      nstep: iterations taken by the sample (0 if z0 already satisfied ``tol``).
      converged: whether ``residual <= tol``.
      trace: with ``record=True``, the residual after each step, shape (B, max_iter);
        steps after a sample froze repeat its final residual. ``None`` otherwise.
    """

    residual: jax.Array
    nstep: jax.Array
    converged: jax.Array
    trace: Optional[jax.Array] = None


_OPTIONS = ("method", "max_iter", "tol", "stop", "batch_axis", "damping", "memory", "ridge", "grad",
            "grad_max_iter", "grad_tol", "phantom_steps", "record")


def fixed_point(f: Callable, z0, *args, method: str = "anderson", max_iter: int = 50,
                tol: float = 1e-4, stop: str = "rel", batch_axis: Optional[int] = 0,
                damping: float = 1.0, memory: int = 5, ridge: float = 1e-4, grad: str = "ift",
                grad_max_iter: Optional[int] = None, grad_tol: Optional[float] = None,
                phantom_steps: int = 1, record: bool = False, **unknown):
    r"""Solve z = f(z, *args) for every sample of a batch.

    Args:
      f: ``f(z, *args) -> z``, returning a pytree with z's structure, shapes and dtypes.
        Samples must not interact (row b of the output depends only on row b of z),
        which is what a batched model layer does. Extra static configuration is
        best bound with ``functools.partial``; values closed over by ``f`` are
        differentiated too.
      z0: initial state, a pytree of floating arrays; each leaf has the batch
        axis ``batch_axis`` of the same size B (``batch_axis=None``: one problem).
      *args: pytrees of arrays passed to f; gradients flow to them.
      method: ``"anderson"`` (type-II Anderson acceleration, safeguarded) or
        ``"picard"`` (z <- (1 - damping) z + damping f(z)).
      max_iter: maximum number of iterations (f is evaluated at most max_iter + 1 times).
      tol: per-sample stopping tolerance (> 0).
      stop: ``"rel"``: ||f(z) - z|| / (||f(z)|| + eps) <= tol with eps = 1e-12 (the smallest
        normal number where 1e-12 underflows, float16); ``"abs"``: ||f(z) - z|| <= tol.
        Norms are Euclidean over all leaves of one sample.
      damping: beta in (0, 1]; Anderson mixes sum_i a_i ((1 - beta) z_i + beta f(z_i)).
      memory: Anderson history size m.
      ridge: Anderson Tikhonov term, relative to the largest squared residual in
        the history (scale-free).
      grad: ``"ift"`` implicit differentiation (adjoint fixed point
        u = (df/dz)^T u + g solved matrix-free with the same method; memory does
        not grow with iterations), ``"phantom"`` (``phantom_steps`` damped
        differentiable applications of f at the solution; 1 = Jacobian-free
        gradient) or ``"unroll"`` (backpropagation through all ``max_iter``
        iterations; memory grows with them).
      grad_max_iter, grad_tol: adjoint solve settings for ``"ift"`` (default:
        ``max_iter``, ``tol``).
      phantom_steps: number of differentiable steps for ``"phantom"``.
      record: also return the per-step residual trace in ``info.trace``.

    Returns:
      ``(z, info)``: z has z0's structure; ``info`` is a :class:`SolverInfo`.
      Samples that converge are frozen: their value no longer changes while the
      others iterate; the loop ends when all converged or after ``max_iter``.
      Gradients w.r.t. z0 are zero for ``"ift"`` and ``"phantom"`` (the fixed
      point does not depend on the start) and exact for ``"unroll"``.

    Example:
      >>> A = 0.5 * jnp.eye(3)
      >>> z, info = fixed_point(lambda z, b: z @ A.T + b, jnp.zeros((4, 3)), jnp.ones((4, 3)))
      >>> # z ~= 2 everywhere; info.converged.all() == True
    """
    reject_unknown_kwargs("fixed_point", unknown, _OPTIONS)
    opts = _validated(method=method, max_iter=max_iter, tol=tol, stop=stop, batch_axis=batch_axis,
                      damping=damping, memory=memory, ridge=ridge, grad=grad,
                      grad_max_iter=grad_max_iter, grad_tol=grad_tol, phantom_steps=phantom_steps,
                      record=record)
    cfg, bwd_cfg, grad, record = opts.cfg, opts.bwd_cfg, opts.grad, opts.record
    rav = BatchedRavel.from_tree(z0, opts.batch_axis)
    check_output_like_input(f, z0, args)

    def flat_f(zmat, *a):
        return rav.ravel(f(rav.unravel(zmat), *a))

    # Hoist the tracers f closes over into explicit inputs: every mode then differentiates them
    # like *args, and the gradient-free solves can cut them off with stop_gradient.
    fn, consts = jax.closure_convert(flat_f, rav.ravel(z0), *args)
    params = (tuple(args), tuple(consts))

    def apply(z, p):
        return fn(z, *p[0], *p[1])

    z0m = rav.ravel(z0)
    if grad == "unroll":
        s, _ = _loop.run_scan(lambda z: apply(z, params), z0m, cfg, cfg.max_iter, record)
        z = s.z
    elif grad == "phantom":
        frozen = lax.stop_gradient((z0m, params))
        s = _loop.run_while(lambda z: apply(z, frozen[1]), frozen[0], cfg, record)
        z = s.z
        for _ in range(opts.phantom_steps):
            z = z + cfg.damping * (apply(z, params) - z)
    else:
        z, s = _solve_ift(apply, z0m, params, cfg, bwd_cfg, record)
    info = SolverInfo(rav.per_sample(s.residual), rav.per_sample(s.nstep),
                      rav.per_sample(s.converged),
                      None if s.trace is None else rav.per_sample(s.trace))
    return rav.unravel(z), info


class _Options(NamedTuple):
    cfg: IterationConfig
    bwd_cfg: IterationConfig
    grad: str
    phantom_steps: int
    record: bool
    batch_axis: Optional[int]


def _validated(*, method, max_iter, tol, stop, batch_axis, damping, memory, ridge, grad, grad_max_iter,
               grad_tol, phantom_steps, record) -> _Options:
    cfg = make_config(method=method, max_iter=max_iter, tol=tol, stop=stop, damping=damping,
                      memory=memory, ridge=ridge)
    bwd_cfg = cfg._replace(
        max_iter=cfg.max_iter if grad_max_iter is None else check_int("grad_max_iter", grad_max_iter, 1),
        tol=cfg.tol if grad_tol is None else check_float("grad_tol", grad_tol, low=0.0,
                                                         low_inclusive=False))
    if not isinstance(record, bool):
        raise TypeError(f"record must be True or False, got {record!r}.")
    return _Options(cfg, bwd_cfg, check_choice("grad", grad, GRADS),
                    check_int("phantom_steps", phantom_steps, 1), record, check_batch_axis(batch_axis))


def check_options(**options) -> None:
    """Validate ``fixed_point`` keyword options without solving anything.

    Raises the same TypeError / ValueError that ``fixed_point`` would, so that a
    configuration object can fail when it is built rather than at its first use.
    """
    reject_unknown_kwargs("fixed_point", options, _OPTIONS)
    defaults = {name: p.default for name, p in inspect.signature(fixed_point).parameters.items()
                if name in _OPTIONS}
    _validated(**{**defaults, **options})


def _solve_ift(apply, z0m, params, cfg, bwd_cfg, record):
    """Forward solve of z = apply(z, params) whose VJP solves the adjoint fixed point matrix-free."""

    @jax.custom_vjp
    def solve(z0m, p):
        s = _loop.run_while(lambda z: apply(z, p), z0m, cfg, record)
        return s.z, s

    def solve_fwd(z0m, p):
        z, s = solve(z0m, p)
        return (z, s), (z, p)

    def solve_bwd(res, cotangents):
        z_star, p = res
        z_bar = cotangents[0]
        _, vjp_z = jax.vjp(lambda z: apply(z, p), z_star)
        adjoint = _loop.run_while(lambda u: vjp_z(u)[0] + z_bar, z_bar, bwd_cfg)
        _, vjp_p = jax.vjp(lambda q: apply(z_star, q), p)
        (p_bar,) = vjp_p(adjoint.z)
        return jnp.zeros_like(z_star), p_bar

    solve.defvjp(solve_fwd, solve_bwd)
    return solve(z0m, params)
