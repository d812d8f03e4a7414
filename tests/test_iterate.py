"""solvers.iterate: one pass gives exactly the iterates of fixed_point at every k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import contraction, rtol_for

import solvers


def f(z, w, x):
    return jnp.tanh(z @ w.T + x)


@pytest.fixture
def problem(precision):
    w = jnp.asarray(contraction(6, 0.9, seed=0), precision)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6)), precision)
    return w, x


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_iterate_equals_fixed_point_truncated_at_k(problem, method):
    w, x = problem
    steps = 12
    z0 = jnp.zeros((4, 6), x.dtype)
    traj = solvers.iterate(f, z0, w, x, steps=steps, method=method, tol=1e-6)
    assert traj.shape == (steps + 1, 4, 6) and traj.dtype == x.dtype
    np.testing.assert_array_equal(traj[0], 0.0)
    for k in [1, 2, 5, steps]:
        zk, _ = solvers.fixed_point(f, z0, w, x, method=method, max_iter=k, tol=1e-6)
        np.testing.assert_allclose(traj[k], zk, rtol=0, atol=1e-3 * rtol_for(x.dtype))


def test_iterate_readout_and_pytree(problem):
    w, x = problem
    target = jnp.asarray(np.random.default_rng(2).normal(size=(4, 6)))

    def readout(z):
        return {"mse": jnp.mean((z["h"] - target) ** 2, axis=1), "first": z["h"][:, 0]}

    def g(z, w, x):
        return {"h": f(z["h"], w, x)}

    out = solvers.iterate(g, {"h": jnp.zeros((4, 6), x.dtype)}, w, x, steps=20, readout=readout, tol=0.0)
    assert out["mse"].shape == (21, 4) and out["first"].shape == (21, 4)
    z_star, _ = solvers.fixed_point(f, jnp.zeros((4, 6), x.dtype), w, x, tol=1e-12, max_iter=200)
    # the readout is the one of the states: recompute it from the plain trajectory
    states = solvers.iterate(f, jnp.zeros((4, 6), x.dtype), w, x, steps=20, tol=0.0)
    np.testing.assert_allclose(out["mse"], jnp.mean((states - target) ** 2, axis=2), rtol=rtol_for(x.dtype))
    err = np.abs(np.asarray(out["first"]) - np.asarray(z_star[:, 0])[None])
    assert err[-1].max() < err[1].max()  # iterates approach the fixed point


@pytest.mark.slow
def test_iterate_zero_steps_and_jit_and_grad(problem):
    w, x = problem
    z0 = jnp.zeros((4, 6), x.dtype)
    out0 = solvers.iterate(f, jnp.ones_like(z0), w, x, steps=0)
    np.testing.assert_array_equal(out0, jnp.ones((1, 4, 6)))
    jitted = jax.jit(lambda w, x: solvers.iterate(f, z0, w, x, steps=5))(w, x)
    np.testing.assert_allclose(jitted, solvers.iterate(f, z0, w, x, steps=5), atol=1e-3 * rtol_for(x.dtype))
    # differentiable by unrolling: equals grad of the unrolled fixed_point with the same step count
    g_iter = jax.grad(lambda w: jnp.sum(solvers.iterate(f, z0, w, x, steps=5, tol=0.0)[-1]))(w)
    g_unroll = jax.grad(
        lambda w: jnp.sum(solvers.fixed_point(f, z0, w, x, grad="unroll", method="picard", max_iter=5, tol=1e-30)[0])
    )(w)
    np.testing.assert_allclose(g_iter, g_unroll, rtol=rtol_for(x.dtype))


@pytest.mark.x64
@pytest.mark.slow
def test_iterate_gradient_matches_finite_differences():
    """The unrolled gradient of z_3 (Anderson, with a zero-step row frozen) is exact."""
    w = jnp.asarray(contraction(3, 0.8, seed=5))
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 3)))

    def value(w):
        return jnp.sum(jnp.sin(solvers.iterate(f, jnp.zeros((2, 3)), w, x, steps=3, method="anderson", tol=0.0)[-1]))

    got = jax.grad(value)(w)
    eps = 1e-6
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            e = jnp.zeros((3, 3)).at[i, j].set(eps)
            fd[i, j] = (value(w + e) - value(w - e)) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_iterate_to_a_traced_step_count_equals_iterate_with_one_compilation(problem, method):
    w, x = problem
    z0 = jnp.zeros((4, 6), x.dtype)
    traces = []

    def g(z, w, x):
        return {"h": f(z["h"], w, x)}

    def final(w, x, k):
        traces.append(1)
        return solvers.iterate_to(g, {"h": z0}, w, x, steps=k, method=method, tol=1e-3, readout=lambda z: z["h"][:, 0])

    jitted = jax.jit(final)
    traj = solvers.iterate(g, {"h": z0}, w, x, steps=9, method=method, tol=1e-3)
    for k in (0, 1, 2, 5, 9):
        np.testing.assert_allclose(jitted(w, x, jnp.int32(k)), traj["h"][k, :, 0], rtol=1e-6, atol=1e-7)
    assert len(traces) == 1  # every k ran through one compiled function
    # a Python integer works without jit too, and bad step counts are refused
    np.testing.assert_allclose(
        solvers.iterate_to(f, z0, w, x, steps=3, method=method, tol=1e-3), traj["h"][3], atol=1e-6
    )
    with pytest.raises(ValueError, match="steps must be >= 0"):
        solvers.iterate_to(f, z0, w, x, steps=-1)
    with pytest.raises(TypeError, match="steps must be an integer scalar"):
        solvers.iterate_to(f, z0, w, x, steps=jnp.ones(2, jnp.int32))
    with pytest.raises(TypeError, match="unknown keyword argument.*'max_iter'"):
        solvers.iterate_to(f, z0, w, x, steps=1, max_iter=3)
