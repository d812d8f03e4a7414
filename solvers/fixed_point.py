"""``fixed_point``: batched fixed-point solves z* = f(z*, *args) with three gradient modes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import _loop
from ._options import (
    GRADS,
    IterationConfig,
    check_batch_axis,
    check_choice,
    check_float,
    check_int,
    check_output_like_input,
    make_config,
    reject_unknown_kwargs,
)
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
    trace: jax.Array | None = None


class AdjointInfo(NamedTuple):
    """Per-sample report of the adjoint solve of a ``grad="ift"`` backward pass.

    It is the cotangent of the ``adjoint_probe`` argument of :func:`fixed_point` (a gradient
    side channel: the forward pass ignores the probe, the backward pass returns this report as
    its "gradient"), so every field is a float array of the probe's shape, (B,) or ().
    Differentiating several solves that share one probe sums their reports.

    Attributes:
      solved: 1 for each sample whose adjoint was solved; all fields are 0 when no backward pass
        ran (z received no cotangent) or the mode has no adjoint (``"phantom"``, ``"unroll"``).
      residual: stopping metric of the adjoint fixed point u = (df/dz)^T u + z_bar at the end.
      nstep: adjoint iterations taken.
      converged: 1 where ``residual <= grad_tol``.
      fallback: 1 where the gradient came from ``grad_fallback`` instead of the adjoint.
    """

    solved: jax.Array
    residual: jax.Array
    nstep: jax.Array
    converged: jax.Array
    fallback: jax.Array


def adjoint_probe(batch_size: int | None = None, dtype=None) -> AdjointInfo:
    """Zeros to pass as ``fixed_point(..., adjoint_probe=)``; its gradient is an :class:`AdjointInfo`.

    ``batch_size=None`` gives the () fields for ``batch_axis=None``; ``dtype`` defaults to JAX's
    default float (it must be floating point).
    """
    shape = () if batch_size is None else (check_int("batch_size", batch_size, 0),)
    zeros = jnp.zeros(shape, dtype if dtype is not None else jnp.zeros(()).dtype)
    return AdjointInfo(zeros, zeros, zeros, zeros, zeros)


GRAD_FALLBACKS = ("phantom",)

_OPTIONS = (
    "method",
    "max_iter",
    "tol",
    "stop",
    "batch_axis",
    "damping",
    "memory",
    "ridge",
    "grad",
    "grad_max_iter",
    "grad_tol",
    "grad_fallback",
    "phantom_steps",
    "record",
)


def fixed_point(
    f: Callable,
    z0,
    *args,
    method: str = "anderson",
    max_iter: int = 50,
    tol: float = 1e-4,
    stop: str = "rel",
    batch_axis: int | None = 0,
    damping: float = 1.0,
    memory: int = 5,
    ridge: float = 1e-4,
    grad: str = "ift",
    grad_max_iter: int | None = None,
    grad_tol: float | None = None,
    grad_fallback: str | None = None,
    phantom_steps: int = 1,
    record: bool = False,
    adjoint_probe: AdjointInfo | None = None,
    **unknown,
):
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
      grad_fallback: ``None`` (default) or ``"phantom"`` (``"ift"`` only): samples whose adjoint
        solve did not reach ``grad_tol`` within ``grad_max_iter`` (including a diverging,
        non-finite one) take the ``"phantom"`` gradient (``phantom_steps`` damped steps at z*)
        instead of the unconverged adjoint; the others keep the implicit gradient. Without a
        fallback an unconverged adjoint is used as it stands: an approximate (and, if it
        diverged, non-finite) gradient for that sample only.
      phantom_steps: number of differentiable steps for ``"phantom"`` and its fallback.
      record: also return the per-step residual trace in ``info.trace``.
      adjoint_probe: an :class:`AdjointInfo` of zeros (``adjoint_probe(B)``) whose gradient
        reports the adjoint solve of the backward pass; it does not change z.

    Returns:
      ``(z, info)``: z has z0's structure; ``info`` is a :class:`SolverInfo`.
      Samples that converge are frozen: their value no longer changes while the
      others iterate; the loop ends when all converged or after ``max_iter``.
      Gradients w.r.t. z0 are zero for ``"ift"`` and ``"phantom"`` (the fixed
      point does not depend on the start) and exact for ``"unroll"``.
      A sample whose *forward* solve did not converge (``info.converged`` False) gets the
      ``"ift"`` / ``"phantom"`` formula evaluated at its last iterate, as if it were z*: an
      approximation whose error grows with ``info.residual``; check ``info`` (and the
      adjoint report) rather than trusting such gradients.

    Example:
      >>> A = 0.5 * jnp.eye(3)
      >>> z, info = fixed_point(lambda z, b: z @ A.T + b, jnp.zeros((4, 3)), jnp.ones((4, 3)))
      >>> # z ~= 2 everywhere; info.converged.all() == True
    """
    reject_unknown_kwargs("fixed_point", unknown, _OPTIONS)
    opts = _validated(
        method=method,
        max_iter=max_iter,
        tol=tol,
        stop=stop,
        batch_axis=batch_axis,
        damping=damping,
        memory=memory,
        ridge=ridge,
        grad=grad,
        grad_max_iter=grad_max_iter,
        grad_tol=grad_tol,
        grad_fallback=grad_fallback,
        phantom_steps=phantom_steps,
        record=record,
    )
    cfg, bwd_cfg, grad, record = opts.cfg, opts.bwd_cfg, opts.grad, opts.record
    rav = BatchedRavel.from_tree(z0, opts.batch_axis)
    check_output_like_input(f, z0, args)
    probe = _flat_probe(adjoint_probe, rav)

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
        z = _phantom(apply, s.z, params, cfg.damping, opts.phantom_steps)
    else:
        z, s = _solve_ift(apply, z0m, params, probe, cfg, bwd_cfg, opts, record)
    info = SolverInfo(
        rav.per_sample(s.residual),
        rav.per_sample(s.nstep),
        rav.per_sample(s.converged),
        None if s.trace is None else rav.per_sample(s.trace),
    )
    return rav.unravel(z), info


class _Options(NamedTuple):
    cfg: IterationConfig
    bwd_cfg: IterationConfig
    grad: str
    grad_fallback: str | None
    phantom_steps: int
    record: bool
    batch_axis: int | None


def _validated(
    *,
    method,
    max_iter,
    tol,
    stop,
    batch_axis,
    damping,
    memory,
    ridge,
    grad,
    grad_max_iter,
    grad_tol,
    grad_fallback,
    phantom_steps,
    record,
) -> _Options:
    cfg = make_config(method=method, max_iter=max_iter, tol=tol, stop=stop, damping=damping, memory=memory, ridge=ridge)
    bwd_cfg = cfg._replace(
        max_iter=cfg.max_iter if grad_max_iter is None else check_int("grad_max_iter", grad_max_iter, 1),
        tol=cfg.tol if grad_tol is None else check_float("grad_tol", grad_tol, low=0.0, low_inclusive=False),
    )
    if not isinstance(record, bool):
        raise TypeError(f"record must be True or False, got {record!r}.")
    grad = check_choice("grad", grad, GRADS)
    if grad_fallback is not None:
        check_choice("grad_fallback", grad_fallback, GRAD_FALLBACKS)
        if grad != "ift":
            raise ValueError(
                f"grad_fallback={grad_fallback!r} replaces an unconverged adjoint solve, "
                f"which only grad='ift' has (grad={grad!r}); drop grad_fallback."
            )
    return _Options(
        cfg,
        bwd_cfg,
        grad,
        grad_fallback,
        check_int("phantom_steps", phantom_steps, 1),
        record,
        check_batch_axis(batch_axis),
    )


def check_options(**options) -> None:
    """Validate ``fixed_point`` keyword options without solving anything.

    Raises the same TypeError / ValueError that ``fixed_point`` would, so that a
    configuration object can fail when it is built rather than at its first use.
    """
    reject_unknown_kwargs("fixed_point", options, _OPTIONS)
    defaults = {name: p.default for name, p in inspect.signature(fixed_point).parameters.items() if name in _OPTIONS}
    _validated(**{**defaults, **options})


def _flat_probe(probe: AdjointInfo | None, rav: BatchedRavel) -> AdjointInfo:
    """The probe with (B,) fields (zeros when None), checked against the batch."""
    shape = (rav.batch_size,) if rav.batched else ()
    if probe is None:
        return adjoint_probe(rav.batch_size, rav.dtype)
    if not isinstance(probe, AdjointInfo):
        raise TypeError(
            f"adjoint_probe must be an AdjointInfo (build it with "
            f"solvers.adjoint_probe(batch_size)), got {type(probe).__name__}."
        )
    for name, leaf in zip(AdjointInfo._fields, probe):
        if tuple(jnp.shape(leaf)) != shape or not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"adjoint_probe.{name} must be a float array of shape {shape} (one entry "
                f"per sample), got {jnp.result_type(leaf)}{tuple(jnp.shape(leaf))}; "
                f"use solvers.adjoint_probe({rav.batch_size if rav.batched else ''})."
            )
    return AdjointInfo(*(jnp.reshape(leaf, (rav.batch_size,)) for leaf in probe))


def _phantom(apply, z, params, damping, steps):
    """``steps`` damped differentiable applications of f from z (the phantom gradient's graph)."""
    for _ in range(steps):
        z = z + damping * (apply(z, params) - z)
    return z


def _solve_ift(apply, z0m, params, probe, cfg, bwd_cfg, opts, record):
    """Forward solve of z = apply(z, params) whose VJP solves the adjoint fixed point matrix-free.

    The VJP returns the adjoint's per-sample report as the cotangent of ``probe`` (the forward
    pass ignores probe), and, with ``grad_fallback="phantom"``, takes the phantom gradient for
    the rows whose adjoint did not converge.
    """

    @jax.custom_vjp
    def solve(z0m, p, probe):
        s = _loop.run_while(lambda z: apply(z, p), z0m, cfg, record)
        return s.z, s

    def solve_fwd(z0m, p, probe):
        z, s = solve(z0m, p, probe)
        return (z, s), (z, p, probe)

    def solve_bwd(res, cotangents):
        z_star, p, probe = res
        z_bar = cotangents[0]
        _, vjp_z = jax.vjp(lambda z: apply(z, p), z_star)
        adjoint = _loop.run_while(lambda u: vjp_z(u)[0] + z_bar, z_bar, bwd_cfg)
        _, vjp_p = jax.vjp(lambda q: apply(z_star, q), p)
        fallback = jnp.zeros_like(adjoint.converged)
        if opts.grad_fallback is None:
            (p_bar,) = vjp_p(adjoint.z)
        else:  # where, not a product: an unconverged adjoint may be inf or NaN
            fallback = ~adjoint.converged
            (p_bar,) = vjp_p(jnp.where(fallback[:, None], 0, adjoint.z))
            _, vjp_phantom = jax.vjp(lambda q: _phantom(apply, z_star, q, cfg.damping, opts.phantom_steps), p)
            (p_bar_phantom,) = vjp_phantom(jnp.where(fallback[:, None], z_bar, 0))
            p_bar = jax.tree.map(jnp.add, p_bar, p_bar_phantom)
        report = AdjointInfo(
            jnp.ones_like(adjoint.residual), adjoint.residual, adjoint.nstep, adjoint.converged, fallback
        )
        report = AdjointInfo(*(r.astype(q.dtype) for r, q in zip(report, probe)))
        return jnp.zeros_like(z_star), p_bar, report

    solve.defvjp(solve_fwd, solve_bwd)
    return solve(z0m, params, probe)
