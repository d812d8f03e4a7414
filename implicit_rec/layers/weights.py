"""State-to-state linear maps W with a chosen parameterization (the well-posedness knob).

The effective matrix is computed once per forward pass, outside the fixed-point
loop (``prepare``), and used inside it (``__call__``):

- ``"spectral"``: W = gamma * V / sigma(V), with sigma(V) estimated by power
  iteration (u, v held in a persistent ``PowerIterationState``; a few warm-started
  iterations per training call, as in spectral normalization). Then ||W||_2 = gamma
  up to the accuracy of the estimate, so z -> act(W z + c) is a gamma-contraction for
  a 1-Lipschitz act (tanh, relu): the fixed point exists, is unique, and Picard
  converges from any start. **Guarantees** a unique fixed point (up to the estimate).
- ``"weight"``: weight normalization, W = g * V / ||V||_row with a learned gain per
  row (DEQ practice). Keeps W well scaled; **encourages** but does not guarantee
  contraction.
- ``"none"``: W = V; nothing is guaranteed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

PARAMETERIZATIONS = ("spectral", "weight", "none")


def _norm_eps(v: jax.Array) -> jax.Array:
    """||v|| + eps, eps = 1e-12 or the dtype's smallest normal number where 1e-12 underflows."""
    return jnp.linalg.norm(v) + max(1e-12, float(jnp.finfo(v.dtype).tiny))


class PowerIterationState(nnx.Variable):
    """Non-trainable singular-vector estimate of spectral normalization."""


class StateLinear(nnx.Module):
    """z -> z W^T for a (d_out, d_in) matrix W under a contraction-oriented parameterization."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        rngs: nnx.Rngs,
        parameterization: str = "spectral",
        gamma: float = 0.9,
        power_iterations: int = 1,
        init_scale: float = 1.0,
        param_dtype=jnp.float32,
    ):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization={parameterization!r} is not supported; choose one of "
                f"{', '.join(repr(p) for p in PARAMETERIZATIONS)}."
            )
        if not 0.0 < gamma < 1.0 and parameterization == "spectral":
            raise ValueError(f"gamma must be in (0, 1) for a contraction, got {gamma}.")
        if power_iterations < 1:
            raise ValueError(f"power_iterations must be >= 1, got {power_iterations}.")
        self.parameterization = parameterization
        self.gamma = float(gamma)
        self.power_iterations = int(power_iterations)
        self.deterministic = False
        init = nnx.initializers.orthogonal(scale=init_scale)
        self.kernel = nnx.Param(init(rngs.params(), (d_out, d_in), param_dtype))
        if parameterization == "weight":
            self.gain = nnx.Param(jnp.full((d_out,), gamma, param_dtype))
        if parameterization == "spectral":
            u = jax.random.normal(rngs.params(), (d_out,), param_dtype)
            self.u = PowerIterationState(u / jnp.linalg.norm(u))
            self._power_iterate(50)  # start from a converged estimate

    def _power_iterate(self, iters: int):
        v_mat = jax.lax.stop_gradient(self.kernel[...])
        u = self.u[...]
        for _ in range(iters):
            v = v_mat.T @ u
            v = v / _norm_eps(v)
            u = v_mat @ v
            u = u / _norm_eps(u)
        self.u[...] = u
        return u, v

    def prepare(self) -> jax.Array:
        """The effective matrix W (d_out, d_in); updates the power-iteration state when training."""
        v_mat = self.kernel[...]
        if self.parameterization == "none":
            return v_mat
        if self.parameterization == "weight":
            return self.gain[...][:, None] * v_mat / jnp.linalg.norm(v_mat, axis=1, keepdims=True)
        if self.deterministic:
            u = self.u[...]
            v = jax.lax.stop_gradient(v_mat).T @ u
            v = v / _norm_eps(v)
        else:
            u, v = self._power_iterate(self.power_iterations)
        sigma = u @ v_mat @ v  # differentiable in V with u, v held fixed (Miyato et al.)
        return (self.gamma / sigma) * v_mat

    @staticmethod
    def apply(w: jax.Array, z: jax.Array) -> jax.Array:
        return z @ w.T
