"""A sample whose residual is exactly zero must not poison the gradients of its batch (issue 11.1).

With a tanh cell, an all-zero input row started at z0 = 0 is already at its fixed point: its
residual is exactly 0 and Anderson's Gram matrix for that row is all zeros. The forward pass
freezes such a row; the backward pass must stay finite too, and the other rows' gradients must
be those of the batch without that row.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, contraction, rtol_for

import solvers

D = 5


def f(z, w, x):
    return jnp.tanh(z @ w.T + x)


def _problem(dtype):
    w = jnp.asarray(contraction(D, 0.7, seed=0), dtype)
    x = np.random.default_rng(1).normal(size=(4, D))
    x[2] = 0.0  # f(0) = tanh(0) = 0: the row starts at its fixed point
    probe = jnp.asarray(np.random.default_rng(2).normal(size=(4, D)), dtype)
    return w, jnp.asarray(x, dtype), probe


def _solve(w, x, entry, grad=None, ridge=1e-4):
    if entry == "iterate":
        return solvers.iterate(f, jnp.zeros_like(x), w, x, steps=8, method="anderson", tol=1e-6, memory=2, ridge=ridge)[
            -1
        ]
    z, _ = solvers.fixed_point(f, jnp.zeros_like(x), w, x, grad=grad, tol=1e-6, max_iter=8, memory=2, ridge=ridge)
    return z


def _check_gradients(dtype, **solve_kw):
    w, x, probe = _problem(dtype)

    def loss(w, x, probe):
        return jnp.sum(jnp.sin(_solve(w, x, **solve_kw)) * probe)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))  # one compilation per batch size
    g_w, g_x = grads(w, x, probe)
    assert bool(jnp.isfinite(g_w).all()) and bool(jnp.isfinite(g_x).all())
    keep = np.array([0, 1, 3])
    ref_w, ref_x = grads(w, x[keep], probe[keep])
    tol = rtol_for(dtype)
    # the zero row sits at z* = 0, where sin(z*) * probe contributes nothing to dW
    np.testing.assert_allclose(g_w, ref_w, rtol=tol, atol=tol)
    np.testing.assert_allclose(g_x[keep], ref_x, rtol=tol, atol=tol)


@pytest.mark.slow
def test_unrolled_anderson_gradient_ignores_a_zero_residual_row(precision):
    """fixed_point(grad="unroll") with Anderson: was NaN for every parameter."""
    _check_gradients(precision, entry="fixed_point", grad="unroll")


@pytest.mark.parametrize(
    "solve_kw",
    [
        {"entry": "iterate"},
        {"entry": "fixed_point", "grad": "unroll", "ridge": 0.0},
        {"entry": "fixed_point", "grad": "ift"},
        {"entry": "fixed_point", "grad": "phantom"},
    ],
    ids=["iterate", "unroll-ridge0", "ift", "phantom"],
)
def test_other_differentiated_paths_ignore_a_zero_residual_row(solve_kw):
    """iterate under jax.grad, a ridge-free system (singular for the zero row), ift and phantom."""
    _check_gradients(jnp.float32, **solve_kw)


@pytest.mark.slow
def test_zero_residual_is_finite_and_differentiable(precision):
    """solvers.residual at z = f(z) = 0: value 0, gradient 0 (not NaN) in both stop rules."""
    z = jnp.zeros((2, 3), precision)
    for stop in ["rel", "abs"]:
        assert_trees_close(solvers.residual(z, z, stop), jnp.zeros(2, precision), rtol=0, atol=0)
        g = jax.grad(lambda z: jnp.sum(solvers.residual(z, 0.5 * z, stop)))(z)
        assert_trees_close(g, jnp.zeros_like(z), rtol=0, atol=0)


def test_residual_of_a_huge_iterate_does_not_overflow(precision):
    """||f(z)||^2 overflows long before ||f(z)|| does; a diverging row must not read as converged."""
    big = float(jnp.finfo(precision).max) ** 0.5 * 4
    z = jnp.full((1, 3), big, precision)
    np.testing.assert_allclose(solvers.residual(z, 2 * z, "rel"), [0.5], rtol=1e-6)
    np.testing.assert_allclose(solvers.residual(z, 2 * z, "abs"), [big * 3**0.5], rtol=1e-6)
    assert bool(jnp.isnan(solvers.residual(z, jnp.full_like(z, jnp.inf), "rel")).all())
