"""The implicit backward pass reports its adjoint solve and can fall back to phantom steps (issue 11.3).

Diagnostics leave the custom-VJP backward pass through a gradient side channel: the cotangent of
``adjoint_probe`` (zeros, an input of the solve that the forward pass ignores) is the per-sample
AdjointInfo of the adjoint solve.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, rtol_for, solve_tol

import solvers

# row 0 contracts fast (0.1), row 1 slowly (0.95): with 8 adjoint steps only row 0 converges
SCALE = jnp.asarray([[0.1], [0.95]])


def f(z, x):
    return SCALE.astype(z.dtype) * jnp.tanh(z) + x


X = jnp.asarray([[0.3, -0.2, 0.5], [0.4, 0.1, -0.3]])
PROBE = jnp.asarray([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]])


def _grads(dtype, **kw):
    kw = {"method": "picard", "tol": solve_tol(dtype), "max_iter": 2000, "grad_tol": 1e-5, **kw}
    x, probe = X.astype(dtype), PROBE.astype(dtype)

    def loss(x, adj):
        z, _ = solvers.fixed_point(f, jnp.zeros_like(x), x, adjoint_probe=adj, **kw)
        return jnp.sum(jnp.sin(z) * probe)

    return jax.grad(loss, argnums=(0, 1))(x, solvers.adjoint_probe(2, dtype))


@pytest.mark.slow
def test_adjoint_solve_is_reported(precision):
    g_x, stats = _grads(precision, grad_max_iter=8)
    assert isinstance(stats, solvers.AdjointInfo)
    np.testing.assert_array_equal(stats.solved, [1.0, 1.0])
    np.testing.assert_array_equal(stats.converged, [1.0, 0.0])
    np.testing.assert_array_equal(stats.fallback, [0.0, 0.0])
    np.testing.assert_array_equal(stats.nstep, [float(stats.nstep[0]), 8.0])
    assert float(stats.residual[0]) <= 1e-5 < float(stats.residual[1])
    assert bool(jnp.isfinite(g_x).all())


def test_converged_adjoint_gives_the_exact_gradient_and_full_report(precision):
    """Row-wise closed form: z* = s tanh(z*) + x, dz*/dx = 1 / (1 - s (1 - tanh(z*)^2))."""
    tol = solve_tol(precision)
    g_x, stats = _grads(precision, grad_max_iter=2000, grad_tol=tol)
    np.testing.assert_array_equal(stats.converged, [1.0, 1.0])
    z, _ = solvers.fixed_point(
        f, jnp.zeros_like(X.astype(precision)), X.astype(precision), method="picard", tol=tol, max_iter=2000
    )
    expected = jnp.cos(z) * PROBE.astype(precision) / (1 - SCALE * (1 - jnp.tanh(z) ** 2))
    np.testing.assert_allclose(g_x, expected, rtol=20 * rtol_for(precision))


@pytest.mark.slow
def test_phantom_fallback_replaces_only_the_unconverged_rows(precision):
    kw = dict(phantom_steps=3, damping=0.7)
    # the adjoint is damped too: rates 0.37 (row 0) and ~0.9 (row 1) per step
    g_fb, stats = _grads(precision, grad_max_iter=20, grad_fallback="phantom", **kw)
    np.testing.assert_array_equal(stats.fallback, [0.0, 1.0])
    g_ift, _ = _grads(precision, grad_max_iter=20, **kw)
    g_phantom, _ = _grads(precision, grad="phantom", **kw)
    # phantom differentiates at its output z* + damped steps, equal to z* up to the forward tol
    tol = 20 * rtol_for(precision)
    np.testing.assert_allclose(g_fb[0], g_ift[0], rtol=tol, atol=tol)  # its adjoint converged
    np.testing.assert_allclose(g_fb[1], g_phantom[1], rtol=tol, atol=tol)
    assert not np.allclose(g_ift[1], g_phantom[1], rtol=1e-2)  # the two really differ there


def test_fallback_keeps_gradients_finite_when_the_adjoint_diverges():
    """u = 2 u + g diverges under Picard; its rows fall back, the others keep the ift gradient."""
    scale = jnp.asarray([[0.5], [2.0]])

    def g(z, x):  # linear: Picard's forward solve of row 1 diverges too, so start at the solution
        return scale * z + x

    x = jnp.ones((2, 3))
    z_star = x / (1 - scale)

    def loss(x, adj, fallback):
        z, _ = solvers.fixed_point(
            g, z_star, x, method="picard", max_iter=200, tol=1e-6, grad_fallback=fallback, adjoint_probe=adj
        )
        return jnp.sum(z)

    probe = solvers.adjoint_probe(2)
    g_none, stats = jax.grad(loss, argnums=(0, 1))(x, probe, None)
    assert not bool(jnp.isfinite(g_none[1]).all()) and float(stats.converged[1]) == 0.0
    g_fb, stats = jax.grad(loss, argnums=(0, 1))(x, probe, "phantom")
    np.testing.assert_allclose(g_fb[0], 2.0, rtol=1e-5)  # (1 - 0.5)^-1
    np.testing.assert_allclose(g_fb[1], 1.0, rtol=1e-6)  # one phantom step: d f / d x = 1
    np.testing.assert_array_equal(stats.fallback, [0.0, 1.0])


@pytest.mark.parametrize("grad", ["phantom", "unroll"])
def test_modes_without_an_adjoint_solve_leave_the_probe_at_zero(grad):
    _, stats = _grads(jnp.float32, grad=grad, max_iter=50)
    assert_trees_close(stats, solvers.adjoint_probe(2), rtol=0, atol=0)


def test_probe_and_fallback_are_validated():
    with pytest.raises(ValueError, match="grad_fallback"):
        solvers.fixed_point(f, jnp.zeros((2, 3)), X, grad_fallback="unroll")
    with pytest.raises(ValueError, match="grad_fallback.*grad='ift'"):
        solvers.fixed_point(f, jnp.zeros((2, 3)), X, grad="phantom", grad_fallback="phantom")
    with pytest.raises(TypeError, match="adjoint_probe"):
        solvers.fixed_point(f, jnp.zeros((2, 3)), X, adjoint_probe=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"adjoint_probe.*\(2,\)"):
        solvers.fixed_point(f, jnp.zeros((2, 3)), X, adjoint_probe=solvers.adjoint_probe(3))
