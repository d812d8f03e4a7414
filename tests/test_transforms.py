"""fixed_point under jit, vmap and grad, and their compositions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import contraction, rtol_for, solve_tol

import solvers

B, D = 4, 6


def f(z, w, x):
    return jnp.tanh(z @ w.T + x)


@pytest.fixture
def problem(precision):
    w = jnp.asarray(contraction(D, 0.8, seed=0), precision)
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(3, B, D)), precision)  # 3 problems
    return w, xs


def solve(w, x, method="anderson", grad="ift"):
    return solvers.fixed_point(
        f, jnp.zeros((B, D), x.dtype), w, x, method=method, grad=grad, tol=solve_tol(x.dtype), max_iter=60
    )[0]


@pytest.mark.parametrize("method", ["anderson", "picard"])
def test_jit_matches_eager(problem, method):
    w, xs = problem
    eager = solve(w, xs[0], method)
    jitted = jax.jit(solve, static_argnums=2)(w, xs[0], method)
    np.testing.assert_allclose(jitted, eager, atol=rtol_for(w.dtype))


@pytest.mark.parametrize("method", ["anderson", "picard"])
@pytest.mark.slow
def test_vmap_matches_loop(problem, method):
    w, xs = problem
    batched = jax.vmap(lambda x: solve(w, x, method))(xs)
    for i in range(xs.shape[0]):
        np.testing.assert_allclose(batched[i], solve(w, xs[i], method), atol=rtol_for(w.dtype))


@pytest.mark.parametrize("grad", ["ift", "phantom", "unroll"])
@pytest.mark.slow
def test_grad_of_vmapped_solve_equals_sum_of_grads(problem, grad):
    w, xs = problem
    total = jax.grad(lambda w: jnp.sum(jax.vmap(lambda x: solve(w, x, grad=grad))(xs) ** 2))(w)
    parts = sum(jax.grad(lambda w: jnp.sum(solve(w, xs[i], grad=grad) ** 2))(w) for i in range(3))
    np.testing.assert_allclose(total, parts, rtol=rtol_for(w.dtype), atol=rtol_for(w.dtype))


@pytest.mark.slow
def test_vmap_of_grad_and_jit_of_grad(problem):
    w, xs = problem
    per = jax.jit(jax.vmap(jax.grad(lambda w, x: jnp.sum(solve(w, x) ** 2)), in_axes=(None, 0)))(w, xs)
    for i in range(3):
        np.testing.assert_allclose(
            per[i], jax.grad(lambda w: jnp.sum(solve(w, xs[i]) ** 2))(w), rtol=rtol_for(w.dtype), atol=rtol_for(w.dtype)
        )


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_vjp_with_explicit_cotangent(problem):
    w, xs = problem
    z, vjp = jax.vjp(lambda x: solve(w, x), xs[0])
    ct = jnp.ones_like(z)
    (x_bar,) = vjp(ct)
    expected = jax.grad(lambda x: jnp.sum(solve(w, x, grad="unroll")))(xs[0])
    np.testing.assert_allclose(x_bar, expected, rtol=10 * rtol_for(w.dtype), atol=rtol_for(w.dtype))
