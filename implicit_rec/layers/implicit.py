"""ImplicitLayer: the fixed point z* = cell(z*, x) as an NNX module, with its training machinery."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

import solvers

from . import initializers
from .solver_config import SolverConfig

Z0_MODES = ("zeros", "learned")


class StepCounter(nnx.Variable):
    """Training calls seen so far (drives the unrolled warm-up); not trainable."""


class AdjointProbe(nnx.Variable):
    """Zeros (5,) whose gradient sums the layer's ``solvers.AdjointInfo`` over the batch.

    Its value never changes and never affects the output: it is the gradient side channel that
    carries the report of the implicit backward pass out of ``jax.grad``. Differentiate it along
    with the parameters, ``nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Any(nnx.Param,
    AdjointProbe)))``, and read the result with :func:`adjoint_report`. Under ``nnx.grad``'s
    default (parameters only) it is simply not differentiated.
    """


ADJOINT_FIELDS = solvers.AdjointInfo._fields  # solved, residual, nstep, converged, fallback


class LayerInfo(NamedTuple):
    """What an ImplicitLayer reports besides z*.

    residual, nstep, converged: per sample (B,), from the solver.
    converged_fraction, mean_nstep, mean_residual: scalars for logging.
    jacobian_penalty: scalar Hutchinson estimate of ||df/dz||_F^2 / d_state at z*
      (training with ``jacobian_penalty=True`` only; else None). Add
      ``weight * info.jacobian_penalty`` to the loss.
    correction_states: (N, B, d_state) states sampled along the solver trajectory,
      each passed through one differentiable (phantom) application of the cell;
      correction_weights (N,) increasing weights summing to 1 (training with
      ``correction_states=N > 0`` only). See ``fixed_point_correction_loss``.
    """

    residual: jax.Array
    nstep: jax.Array
    converged: jax.Array
    converged_fraction: jax.Array
    mean_nstep: jax.Array
    mean_residual: jax.Array
    jacobian_penalty: jax.Array | None = None
    correction_states: jax.Array | None = None
    correction_weights: jax.Array | None = None


class ImplicitLayer(nnx.Module):
    """z* = cell(z*, x), solved by ``solvers.fixed_point`` with the cell's parameters as explicit args.

    Args:
      cell: an NNX module with ``prepare(x) -> ctx`` and ``__call__(z, ctx) -> z``
        (see ``cells``); z has shape (B, d_state).
      d_state: state size.
      rngs: random streams (parameters of a learned initial state; the
        Hutchinson noise of the Jacobian penalty).
      train_solver, eval_solver: :class:`SolverConfig` used in training mode
        (``layer.train()``, the default) and evaluation mode (``layer.eval()``).
        Both are plain attributes: set ``layer.eval_solver`` on a trained layer to
        spend more (or fewer) iterations at test time, without retraining.
      z0: ``"zeros"`` or ``"learned"`` (z0 = tanh(A c) with c the cell's input injection).
        The fixed point does not depend on its start, so under ``grad="ift"`` / ``"phantom"``
        the loss gives A exactly zero gradient. A learned start is therefore fitted to the
        solution: in training, the backward pass adds to A's gradient that of the consistency
        term ``z0_weight / 2 * mean_b ||z0_b - sg(z*_b)||^2`` (sg = stop_gradient), in every
        gradient mode (under ``"unroll"`` and the warm-up it adds to the truncated solve's own
        z0 gradient). The forward values and the loss are unchanged; a start closer to z* needs
        fewer iterations.
      z0_weight: weight of that consistency term (``z0="learned"`` only; default 1.0).
      jacobian_penalty: compute the Jacobian Frobenius estimate in training (off by default).
      jacobian_samples: Hutchinson samples for it.
      correction_states: number N of trajectory states for the fixed-point
        correction loss in training (0 = off).
      warmup_steps, warmup_iters: the first ``warmup_steps`` training calls use
        ``warmup_iters`` unrolled iterations (grad="unroll") instead of the
        implicit solve (0 = off), as DEQ practitioners warm up.
      train_iterations: ``(lo, hi)`` turns on random-k training: every training call runs
        exactly k ~ Uniform{lo, ..., hi} iterations of the train solver's method from z0 (k drawn
        per call from the ``iterations`` stream of ``rngs``; samples that reach ``tol`` freeze, as
        in the solver) and differentiates z_k by the train solver's ``grad``: ``"unroll"``
        (backpropagation through the iterations; the pass always runs ``hi`` steps and reads
        z_k) or ``"phantom"`` (``phantom_steps`` damped differentiable applications of the
        cell from the stopped z_k). A model trained so sees every budget in the range and is
        read out at whatever k it is given (the Implicit Models paper's test-time compute);
        ``None`` (default) solves to ``tol`` within ``max_iter``.
      z0_noise: path independence (0 = off): in training, z0 + z0_noise * u with u ~ U(-1, 1)
        per sample and call (``start`` stream of ``rngs``), so the model learns a fixed point
        reached from any start rather than a path from one start.

    Calling ``layer(x)`` returns ``(z_star, LayerInfo)``. ``LayerInfo`` reports the forward
    solve; the implicit backward pass (the adjoint solve of ``grad="ift"``, and which samples
    took ``grad_fallback``) is reported through the gradient of the layer's
    :class:`AdjointProbe`, see :func:`adjoint_report` (``models.training.fit`` logs both).
    """

    def __init__(
        self,
        cell: nnx.Module,
        d_state: int,
        *,
        rngs: nnx.Rngs,
        train_solver: SolverConfig | None = None,
        eval_solver: SolverConfig | None = None,
        z0: str = "zeros",
        z0_weight: float | None = None,
        jacobian_penalty: bool = False,
        jacobian_samples: int = 1,
        correction_states: int = 0,
        warmup_steps: int = 0,
        warmup_iters: int = 6,
        train_iterations: tuple[int, int] | None = None,
        z0_noise: float = 0.0,
    ):
        if z0 not in Z0_MODES:
            raise ValueError(f"z0={z0!r} is not supported; choose 'zeros' or 'learned'.")
        if z0_weight is not None and z0 != "learned":
            raise ValueError(
                f"z0_weight={z0_weight!r} only applies to z0='learned' (the start is "
                f"{z0!r}); drop it or set z0='learned'."
            )
        z0_weight = 1.0 if z0_weight is None else z0_weight
        if isinstance(z0_weight, bool) or not isinstance(z0_weight, (int, float)) or not z0_weight >= 0:
            raise ValueError(f"z0_weight must be a number >= 0, got {z0_weight!r}.")
        for name, value, low in [
            ("jacobian_samples", jacobian_samples, 1),
            ("correction_states", correction_states, 0),
            ("warmup_steps", warmup_steps, 0),
            ("warmup_iters", warmup_iters, 1),
        ]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        for name, value in [("train_solver", train_solver), ("eval_solver", eval_solver)]:
            if value is not None and not isinstance(value, SolverConfig):
                raise TypeError(f"{name} must be a SolverConfig, got {type(value).__name__}.")
        train_iterations = _check_range(train_iterations)
        if train_iterations is not None and (train_solver or SolverConfig()).grad not in RANDOM_K_GRADS:
            raise ValueError(
                f"train_iterations={train_iterations} (random-k training) differentiates z_k by unrolling or "
                f"the phantom gradient; set train_solver.grad to 'unroll' or 'phantom' (got "
                f"{(train_solver or SolverConfig()).grad!r})."
            )
        if isinstance(z0_noise, bool) or not isinstance(z0_noise, (int, float)) or not z0_noise >= 0:
            raise ValueError(f"z0_noise must be a number >= 0, got {z0_noise!r}.")
        self.cell = cell
        self.d_state = d_state
        self.train_solver = train_solver or SolverConfig()
        self.eval_solver = eval_solver or self.train_solver
        self.z0_mode = z0
        self.z0_proj = initializers.linear(d_state, d_state, rngs=rngs) if z0 == "learned" else None
        self.z0_weight = float(z0_weight)
        self.jacobian_penalty = jacobian_penalty
        self.jacobian_samples = jacobian_samples
        self.correction_states = correction_states
        self.warmup_steps = warmup_steps
        self.warmup_iters = warmup_iters
        self.train_iterations = train_iterations
        self.z0_noise = float(z0_noise)
        self.steps = StepCounter(jnp.zeros((), jnp.int32))
        self.adjoint_probe = AdjointProbe(jnp.zeros((len(ADJOINT_FIELDS),), jnp.float32))
        self.rngs = rngs
        self.deterministic = False  # set by .train() / .eval()

    # -- pieces -------------------------------------------------------------------------------
    def _functional_cell(self):
        """(f, params) with f(z, params, ctx) a pure function of the cell's parameters."""
        graphdef, params, rest = nnx.split(self.cell, nnx.Param, ...)

        def f(z, params, ctx):
            return nnx.merge(graphdef, params, rest)(z, ctx)

        return f, params

    def _initial_state(self, ctx: dict) -> jax.Array:
        injection = ctx["injection"]
        if self.z0_proj is None:
            return jnp.zeros((injection.shape[0], self.d_state), injection.dtype)
        return jnp.tanh(self.z0_proj(injection))

    @property
    def solver(self) -> SolverConfig:
        """The settings in force: eval_solver after ``.eval()``, train_solver otherwise."""
        return self.eval_solver if self.deterministic else self.train_solver

    # -- forward ------------------------------------------------------------------------------
    def __call__(self, x: Any, *, solver: SolverConfig | None = None):
        """Solve for z*; ``solver`` overrides the mode's settings for this call."""
        config = solver or self.solver
        ctx = self.cell.prepare(x)
        f, params = self._functional_cell()
        z0 = self._initial_state(ctx)
        training = not self.deterministic
        if training and self.z0_noise > 0:
            z0 = z0 + self.z0_noise * jax.random.uniform(self.rngs.start(), z0.shape, z0.dtype, -1.0, 1.0)
        # per-sample probe: each sample's report is summed into the layer's (5,) probe gradient
        totals = self.adjoint_probe[...]
        probe = solvers.AdjointInfo(*(jnp.broadcast_to(totals[i], z0.shape[:1]) for i in range(len(ADJOINT_FIELDS))))

        def implicit(params, ctx, z0):
            return solvers.fixed_point(f, z0, params, ctx, adjoint_probe=probe, **config.as_kwargs())

        if training and self.warmup_steps > 0:

            def unrolled(params, ctx, z0):
                return solvers.fixed_point(
                    f, z0, params, ctx, **config.replace(grad="unroll", max_iter=self.warmup_iters).as_kwargs()
                )

            z, sinfo = jax.lax.cond(self.steps[...] < self.warmup_steps, unrolled, implicit, params, ctx, z0)
        elif training and self.train_iterations is not None:
            lo, hi = self.train_iterations
            k = jax.random.randint(self.rngs.iterations(), (), lo, hi + 1)
            z, sinfo = _random_k(f, z0, params, ctx, k, hi, config)
        else:
            z, sinfo = implicit(params, ctx, z0)
        if training:
            self.steps[...] = self.steps[...] + 1
            if self.z0_proj is not None:
                z = _fit_start(self.z0_weight, z, z0)

        info = LayerInfo(
            sinfo.residual,
            sinfo.nstep,
            sinfo.converged,
            jnp.mean(sinfo.converged.astype(z.dtype)),
            jnp.mean(sinfo.nstep.astype(z.dtype)),
            jnp.mean(sinfo.residual),
        )
        if training and self.jacobian_penalty:
            est = solvers.jacobian_frobenius(f, z, params, ctx, key=self.rngs.jacobian(), samples=self.jacobian_samples)
            info = info._replace(jacobian_penalty=jnp.mean(est) / self.d_state)
        if training and self.correction_states:
            info = info._replace(**self._correction(f, params, ctx, z0, config))
        return z, info

    def _correction(self, f, params, ctx, z0, config: SolverConfig) -> dict:
        """States at N evenly spaced iterations of a (gradient-free) Picard/Anderson run,
        each followed by one differentiable application of f; weights grow linearly."""
        steps = config.max_iter
        n = self.correction_states
        traj = solvers.iterate(
            f,
            jax.lax.stop_gradient(z0),
            jax.lax.stop_gradient(params),
            jax.lax.stop_gradient(ctx),
            steps=steps,
            **config.iteration_options(),
        )
        picks = jnp.linspace(steps / n, steps, n).round().astype(jnp.int32)
        states = jax.vmap(lambda zk: f(zk, params, ctx))(jax.lax.stop_gradient(traj[picks]))
        weights = jnp.arange(1, n + 1, dtype=states.dtype)
        return {"correction_states": states, "correction_weights": weights / jnp.sum(weights)}

    # -- analysis -----------------------------------------------------------------------------
    def trajectory(
        self, x: Any, steps: int, readout: Callable | None = None, method: str | None = None, residual: bool = False
    ) -> Any:
        """``readout(z_k)`` for k = 0..steps in one pass (leading axis steps + 1).

        Uses the current mode's solver settings (``method`` overrides the method);
        the iterates equal those of ``layer(x)`` with ``max_iter=k``. Does not update
        any state (no power-iteration step, no step count). With ``residual=True`` returns
        ``(readouts, residuals)``, residuals (steps + 1, B) measured as the solver's stop rule
        does (||f(z_k) - z_k||, relative to ||f(z_k)|| when ``stop="rel"``).
        """
        config = self.solver
        ctx = self._prepare_frozen(x)
        f, params = self._functional_cell()
        read = readout or (lambda z: z)
        if residual:

            def read(z, base=read):  # noqa: F811
                return base(z), solvers.residual(z, f(z, params, ctx), config.stop)

        return solvers.iterate(
            f,
            self._initial_state(ctx),
            params,
            ctx,
            steps=steps,
            readout=read,
            **{**config.iteration_options(), "method": method or config.method},
        )

    def functional(self, x: Any) -> tuple[Callable, jax.Array, tuple]:
        """``(f, z0, args)`` with ``solvers.fixed_point(f, z0, *args)`` solving this layer at ``x``.

        The cell as a pure function of (z, params, ctx), for custom analyses (cost, Jacobians);
        ``prepare`` runs in evaluation mode and no state is updated.
        """
        ctx = self._prepare_frozen(x)
        f, params = self._functional_cell()
        return f, self._initial_state(ctx), (params, ctx)

    def spectral_radius(self, x: Any, z: jax.Array | None = None, iters: int = 30) -> jax.Array:
        """Per-sample spectral radius of d cell / dz at z (default: the eval fixed point), shape (B,)."""
        ctx = self._prepare_frozen(x)
        f, params = self._functional_cell()
        if z is None:
            z, _ = solvers.fixed_point(f, self._initial_state(ctx), params, ctx, **self.eval_solver.as_kwargs())
        return solvers.spectral_radius(f, z, params, ctx, iters=iters)

    def _prepare_frozen(self, x: Any) -> dict:
        """cell.prepare in evaluation mode (no state updates), restoring the mode afterwards."""
        modes = {
            id(m): m.deterministic
            for _, m in nnx.iter_graph(self.cell)
            if isinstance(m, nnx.Module) and hasattr(m, "deterministic")
        }
        self.cell.eval()
        try:
            return self.cell.prepare(x)
        finally:
            for _, m in nnx.iter_graph(self.cell):
                if isinstance(m, nnx.Module) and id(m) in modes:
                    m.deterministic = modes[id(m)]


RANDOM_K_GRADS = ("unroll", "phantom")


def _check_range(value) -> tuple[int, int] | None:
    """``train_iterations`` as ``(lo, hi)`` with 1 <= lo <= hi, or None."""
    if value is None:
        return None
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 1 <= value[0] <= value[1]
    )
    if not ok:
        raise ValueError(f"train_iterations must be (lo, hi) integers with 1 <= lo <= hi, got {value!r}.")
    return int(value[0]), int(value[1])


def _random_k(f, z0, params, ctx, k, hi: int, config: SolverConfig):
    """z_k (B, d) after exactly k (traced, <= hi) iterations of ``config.method`` from z0, and its
    ``solvers.SolverInfo``-like report; differentiable by ``config.grad`` ("unroll" / "phantom")."""
    options = config.iteration_options()
    if config.grad == "unroll":
        z = solvers.iterate(f, z0, params, ctx, steps=hi, **options)[k]
    else:
        stop = jax.lax.stop_gradient
        z = stop(solvers.iterate(f, stop(z0), stop(params), stop(ctx), steps=hi, **options)[k])
        for _ in range(config.phantom_steps):
            z = z + config.damping * (f(z, params, ctx) - z)
    residual = solvers.residual(jax.lax.stop_gradient(z), jax.lax.stop_gradient(f(z, params, ctx)), config.stop)
    nstep = jnp.broadcast_to(k, residual.shape)
    return z, _RandomKInfo(residual, nstep, residual <= config.tol)


class _RandomKInfo(NamedTuple):
    residual: jax.Array
    nstep: jax.Array
    converged: jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fit_start(weight: float, z_star: jax.Array, z0: jax.Array) -> jax.Array:
    """Identity on z* (B, d); its VJP also gives z0 the gradient of
    weight / 2 * mean_b ||z0_b - sg(z*_b)||^2, the only signal a learned start gets from an
    implicit solve."""
    del z0
    return z_star


def _fit_start_fwd(weight, z_star, z0):
    return z_star, (z_star, z0)


def _fit_start_bwd(weight, res, z_bar):
    z_star, z0 = res
    return z_bar, (weight / max(z0.shape[0], 1)) * (z0 - z_star)


_fit_start.defvjp(_fit_start_fwd, _fit_start_bwd)


def adjoint_report(grads: nnx.State) -> dict:
    """Summary of the implicit backward passes behind ``grads`` (a State that includes the
    gradients of the :class:`AdjointProbe` variables), summed over every ImplicitLayer in it.

    Returns scalars: ``adjoint_samples`` (samples whose adjoint was solved; 0 when no layer
    used ``grad="ift"``), ``adjoint_converged_fraction``, ``adjoint_fallback_fraction`` (rows
    that took the ``grad_fallback`` gradient), ``adjoint_mean_residual`` and
    ``adjoint_mean_nstep``. The means are NaN when ``adjoint_samples`` is 0.
    """
    leaves = jax.tree.leaves(nnx.filter_state(grads, AdjointProbe))
    if not leaves:
        raise ValueError(
            "grads holds no AdjointProbe gradients: differentiate with argnums="
            "nnx.DiffState(0, nnx.Any(nnx.Param, AdjointProbe))."
        )
    totals = dict(zip(ADJOINT_FIELDS, sum(leaves)))
    samples = totals["solved"]
    return {
        "adjoint_samples": samples,
        "adjoint_converged_fraction": totals["converged"] / samples,
        "adjoint_fallback_fraction": totals["fallback"] / samples,
        "adjoint_mean_residual": totals["residual"] / samples,
        "adjoint_mean_nstep": totals["nstep"] / samples,
    }


def fixed_point_correction_loss(info: LayerInfo, loss_fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """sum_k w_k loss_fn(z_k) over the correction states of ``info`` (weights increase with k)."""
    if info.correction_states is None:
        raise ValueError(
            "info has no correction states: build the layer with correction_states=N > 0 and call it in training mode."
        )
    losses = jax.vmap(loss_fn)(info.correction_states)
    return jnp.sum(info.correction_weights * losses)
