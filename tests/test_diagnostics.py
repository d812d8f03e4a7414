"""Diagnostics against closed forms: spectral radius, Hutchinson Jacobian norm, empirical Lipschitz."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import contraction, rtol_for

import solvers


def linear(z, a):
    return z @ a.T


def test_spectral_radius_of_symmetric_linear_map():
    a = jnp.asarray(contraction(10, 0.0, seed=0, eigs=np.linspace(-0.3, 0.85, 10)))
    rho = solvers.spectral_radius(linear, jnp.zeros((3, 10)), a, iters=200)
    assert rho.shape == (3,)
    np.testing.assert_allclose(rho, 0.85, rtol=1e-3)


def test_spectral_radius_with_complex_dominant_pair():
    """A rotation-scaling block has eigenvalues 0.9 e^{+-i theta}; the geometric mean is robust to it."""
    c, s = 0.9 * np.cos(0.7), 0.9 * np.sin(0.7)
    a = np.zeros((4, 4))
    a[:2, :2] = [[c, -s], [s, c]]
    a[2:, 2:] = np.diag([0.3, -0.2])
    rho = solvers.spectral_radius(linear, jnp.zeros((2, 4)), jnp.asarray(a), iters=200)
    np.testing.assert_allclose(rho, 0.9, rtol=1e-3)


def test_spectral_radius_of_nonlinear_map_uses_the_local_jacobian():
    a = jnp.asarray(contraction(6, 0.0, seed=1, eigs=np.linspace(0.1, 0.8, 6)))
    z = jnp.full((1, 6), 3.0)  # tanh' is small there

    def g(z, a):
        return jnp.tanh(z) @ a.T

    jac = jax.jacobian(lambda v: g(v[None], a)[0])(z[0])
    expected = np.max(np.abs(np.linalg.eigvals(np.asarray(jac))))
    np.testing.assert_allclose(solvers.spectral_radius(g, z, a, iters=300), expected, rtol=1e-3)


def test_jacobian_frobenius_is_unbiased_and_differentiable():
    a = jnp.asarray(np.random.default_rng(2).normal(size=(5, 5)))
    est = solvers.jacobian_frobenius(linear, jnp.zeros((2, 5)), a, key=jax.random.PRNGKey(0), samples=4000)
    assert est.shape == (2,)
    np.testing.assert_allclose(est, float(jnp.sum(a**2)), rtol=0.05)

    # gradient w.r.t. the parameters equals that of the (fixed-noise) estimator, 2 A E[eps eps^T] ~ 2 A
    grad = jax.grad(
        lambda a: jnp.mean(
            solvers.jacobian_frobenius(linear, jnp.zeros((2, 5)), a, key=jax.random.PRNGKey(1), samples=4000)
        )
    )(a)
    np.testing.assert_allclose(grad, 2 * a, atol=0.25 * float(jnp.abs(a).max()))


def test_empirical_lipschitz_of_linear_map(precision):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4))
    u, s, vt = np.linalg.svd(a)
    x = jnp.asarray(rng.normal(size=(3, 4)), precision)
    deltas = jnp.asarray(rng.normal(size=(16, 3, 4)), precision) * 1e-1
    deltas = deltas.at[0].set(jnp.broadcast_to(1e-1 * vt[0], (3, 4)))  # the top right singular vector
    est = solvers.empirical_lipschitz(lambda x: x @ jnp.asarray(a, precision).T, x, deltas)
    assert est.ratios.shape == (16, 3)
    tol = rtol_for(precision)
    np.testing.assert_allclose(est.max, s[0], rtol=tol)
    assert s[-1] * (1 - tol) <= float(est.ratios.min()) and float(est.mean) < s[0]


@pytest.mark.slow
def test_empirical_lipschitz_grows_with_iterations_of_an_expansive_readout(precision):
    """Lip(z_t) of a contraction with input injection follows L (1 - mu^t) / (1 - mu) for linear maps."""
    mu = 0.8
    a = jnp.asarray(mu * np.eye(3), precision)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3)), precision)
    deltas = jnp.asarray(np.random.default_rng(5).normal(size=(4, 2, 3)), precision)
    for t in [1, 3, 10]:
        g = lambda x, t=t: solvers.iterate(lambda z, x: z @ a.T + x, jnp.zeros_like(x), x, steps=t, tol=0.0)[-1]
        est = solvers.empirical_lipschitz(g, x, deltas)
        np.testing.assert_allclose(est.max, (1 - mu**t) / (1 - mu), rtol=rtol_for(precision))


@pytest.mark.parametrize("stacked", [False, True])
def test_empirical_lipschitz_of_a_linear_map_is_its_gain_along_each_direction(stacked):
    x = jax.random.normal(jax.random.key(0), (5, 3))
    a = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
    d = solvers.random_directions(jax.random.key(1), x, 4, 0.1)
    np.testing.assert_allclose(
        jnp.linalg.norm(d, axis=-1), jnp.broadcast_to(0.1 * jnp.linalg.norm(x, axis=-1), (4, 5)), rtol=1e-5
    )
    est = solvers.empirical_lipschitz(lambda v: v @ a, x, d, stacked=stacked)
    assert est.ratios.shape == (4, 5) and est.max.shape == ()
    expected = jnp.linalg.norm(d @ a, axis=-1) / jnp.linalg.norm(d, axis=-1)
    np.testing.assert_allclose(est.ratios, expected, rtol=1e-5)
    np.testing.assert_allclose([est.max, est.mean], [expected.max(), expected.mean()], rtol=1e-5)


def test_random_directions_of_a_pytree_scale_each_sample_jointly():
    x = {"a": jnp.arange(6.0).reshape(2, 3) + 1.0, "b": jnp.ones((2, 3, 2))}
    d = solvers.random_directions(jax.random.key(3), x, 5, 0.5)
    assert d["a"].shape == (5, 2, 3) and d["b"].shape == (5, 2, 3, 2)
    norms = jnp.sqrt(jnp.sum(d["a"] ** 2, -1) + jnp.sum(d["b"] ** 2, (-2, -1)))
    xnorm = jnp.sqrt(jnp.sum(x["a"] ** 2, -1) + jnp.sum(x["b"] ** 2, (-2, -1)))
    np.testing.assert_allclose(norms, jnp.broadcast_to(0.5 * xnorm, (5, 2)), rtol=1e-5)


@pytest.mark.parametrize("stacked", [False, True])
def test_readout_axis_gives_the_contraction_bound_of_every_iterate(stacked):
    """z_t = mu z_{t-1} + x from z_0 = 0 is linear in x with gain (1 - mu^t) / (1 - mu), one call for all t."""
    mu, steps = 0.8, 10
    x = jax.random.normal(jax.random.key(4), (3, 2, 4))  # batch axis 1
    deltas = solvers.random_directions(jax.random.key(5), x, 3, 1e-2, batch_axis=1)

    def traj(x):  # (steps + 1, 3, B, 4): the readout axis first
        return solvers.iterate(lambda z, x: mu * z + x, jnp.zeros_like(x), x, steps=steps, tol=0.0, batch_axis=1)

    est = solvers.empirical_lipschitz(traj, x, deltas, batch_axis=1, readout_axis=0, stacked=stacked)
    assert est.ratios.shape == (3, steps + 1, 2) and est.max.shape == (steps + 1,)
    t = np.arange(steps + 1)
    np.testing.assert_allclose(est.max, (1 - mu**t) / (1 - mu), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(est.mean, (1 - mu**t) / (1 - mu), rtol=1e-4, atol=1e-6)
    # each readout equals the one-readout estimate of that iterate alone
    for k in (1, 4):
        one = solvers.empirical_lipschitz(lambda v, k=k: traj(v)[k], x, deltas, batch_axis=1)
        np.testing.assert_allclose(est.ratios[:, k], one.ratios, rtol=1e-5)


def test_stacked_evaluation_calls_g_once_on_the_whole_batch():
    calls = []

    def g(v):
        calls.append(v.shape)
        return jnp.tanh(v)

    x = jnp.ones((4, 3))
    solvers.empirical_lipschitz(g, x, solvers.random_directions(jax.random.key(0), x, 5, 0.1), stacked=True)
    assert calls == [(24, 3)]


def test_empirical_lipschitz_rejects_bad_input():
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"shape \(P,\) \+ x.shape"):
        solvers.empirical_lipschitz(jnp.tanh, x, jnp.ones((2, 4, 2)))
    with pytest.raises(TypeError, match="structure of x"):
        solvers.empirical_lipschitz(jnp.tanh, x, {"a": jnp.ones((2, 4, 3))})
    with pytest.raises(ValueError, match="stacked=True .* pass a batch_axis"):
        solvers.empirical_lipschitz(jnp.tanh, x, jnp.ones((2, 4, 3)), batch_axis=None, stacked=True)
    with pytest.raises(TypeError, match="readout_axis must be an integer"):
        solvers.empirical_lipschitz(jnp.tanh, x, jnp.ones((2, 4, 3)), readout_axis=0.5)
    with pytest.raises(ValueError, match="count must be >= 1"):
        solvers.random_directions(jax.random.key(0), x, 0, 0.1)
