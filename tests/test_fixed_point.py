"""Forward behaviour of solvers.fixed_point: closed forms, acceleration, per-sample freezing, safeguards."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import affine, affine_solution, contraction, rtol_for, solve_tol

import solvers

METHODS = ["anderson", "picard"]
STOPS = ["rel", "abs"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.slow
def test_affine_contraction_matches_closed_form(method, stop, precision):
    dtype = precision
    tol, atol = (1e-11, 1e-9) if dtype == jnp.float64 else (1e-6, 2e-5)
    a = contraction(8, 0.8, seed=1)
    b = np.random.default_rng(2).normal(size=(5, 8))
    z, info = solvers.fixed_point(
        affine,
        jnp.zeros((5, 8), dtype),
        jnp.asarray(a, dtype),
        jnp.asarray(b, dtype),
        method=method,
        stop=stop,
        tol=tol,
        max_iter=500,
    )
    assert z.dtype == dtype
    np.testing.assert_allclose(z, affine_solution(a, b), atol=atol)
    assert info.converged.shape == (5,) and bool(info.converged.all())
    assert info.nstep.dtype == jnp.int32 and bool((info.nstep > 0).all())
    assert float(info.residual.max()) <= tol


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_pytree_state_and_batch_axis(method, precision):
    """A dict state whose leaves have the batch on axis 1 is solved leaf by leaf."""
    a = jnp.asarray(contraction(6, 0.7, seed=3), precision)
    b = jnp.asarray(np.random.default_rng(4).normal(size=(4, 6)), precision)
    exact = affine_solution(a, b)

    def f(state, a, b):  # state["u"]: (2, B), state["v"]: (4, B); together a (B, 6) vector
        z = jnp.concatenate([state["u"].T, state["v"].T], axis=1)
        out = affine(z, a, b)
        return {"u": out[:, :2].T, "v": out[:, 2:].T}

    z0 = {"u": jnp.zeros((2, 4), precision), "v": jnp.zeros((4, 4), precision)}
    z, info = solvers.fixed_point(f, z0, a, b, method=method, tol=solve_tol(precision), max_iter=300, batch_axis=1)
    atol = 10 * rtol_for(precision)
    np.testing.assert_allclose(z["u"], exact[:, :2].T, atol=atol)
    np.testing.assert_allclose(z["v"], exact[:, 2:].T, atol=atol)
    assert info.nstep.shape == (4,)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_batch_axis_none_treats_the_pytree_as_one_problem(method, precision):
    a = contraction(5, 0.6, seed=5)
    b = np.random.default_rng(6).normal(size=(5,))
    z, info = solvers.fixed_point(
        lambda z, a, b: a @ z + b,
        jnp.zeros(5, precision),
        jnp.asarray(a, precision),
        jnp.asarray(b, precision),
        method=method,
        tol=solve_tol(precision),
        max_iter=300,
        batch_axis=None,
        record=True,
    )
    np.testing.assert_allclose(z, np.linalg.solve(np.eye(5) - a, b), atol=10 * rtol_for(precision))
    assert info.residual.shape == () and info.nstep.shape == () and info.converged.shape == ()
    assert info.trace.shape == (300,)


@pytest.mark.x64
@pytest.mark.slow
def test_anderson_needs_far_fewer_iterations_on_ill_conditioned_contraction():
    a = contraction(32, 0.99, seed=7, eigs=np.linspace(0.0, 0.99, 32))
    b = np.random.default_rng(8).normal(size=(6, 32))
    kw = dict(tol=1e-10, max_iter=5000)
    za, ia = solvers.fixed_point(affine, jnp.zeros((6, 32)), a, b, method="anderson", **kw)
    zp, ip = solvers.fixed_point(affine, jnp.zeros((6, 32)), a, b, method="picard", **kw)
    assert bool(ia.converged.all()) and bool(ip.converged.all())
    exact = affine_solution(a, b)
    np.testing.assert_allclose(za, exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(zp, exact, rtol=1e-5, atol=1e-5)
    assert int(ia.nstep.max()) * 5 < int(ip.nstep.min()), (ia.nstep, ip.nstep)


@pytest.mark.parametrize("method", METHODS)
def test_converged_samples_are_frozen_bit_for_bit(method, precision):
    """Row 0 meets the loose abs tol at once; its map keeps moving it (z <- 0.5 z + 1 from
    z0 = 2 - 1e-3) while row 1 iterates for many steps. Frozen, it keeps z0 exactly; not frozen,
    it would drift to its fixed point 2 (1e-3 away, far above float32 resolution)."""
    rate = jnp.asarray([[0.5], [0.99]], precision)

    def f(z):
        return rate * z + 1.0

    z0 = jnp.asarray([[2.0 - 1e-3] * 3, [0.0] * 3], precision)
    tol = 1e-2  # row 0: ||f(z0) - z0|| = 0.5e-3 * sqrt(3) < tol; row 1 needs several steps
    z, info = solvers.fixed_point(f, z0, method=method, stop="abs", tol=tol, max_iter=40, record=True)
    assert int(info.nstep[0]) == 0 and bool(info.converged[0])
    assert int(info.nstep[1]) >= 2  # each step would move an unfrozen row 0 by half its gap
    np.testing.assert_array_equal(np.asarray(z[0]), np.asarray(z0[0]))
    # the trace of a frozen sample stays at its final residual
    assert np.all(np.asarray(info.trace[0]) == float(info.residual[0]))
    # the same steps taken by iterate freeze it too, and tol=0 (no freezing) does move it
    traj = solvers.iterate(f, z0, steps=10, method=method, stop="abs", tol=tol)
    np.testing.assert_array_equal(np.asarray(traj[:, 0]), np.broadcast_to(np.asarray(z0[0]), (11, 3)))
    moving = solvers.iterate(f, z0, steps=10, method=method, stop="abs", tol=0.0)
    assert float(jnp.abs(moving[-1, 0, 0] - z0[0, 0])) > 5e-4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_fast_sample_freezes_while_slow_sample_continues(method, precision):
    """Per-sample stopping: a sample that converges first keeps its value while the other iterates."""
    scale = jnp.asarray([0.1, 0.95], precision)[:, None]  # contraction factor per sample

    def f(z, b):
        return scale * jnp.tanh(z) + b

    b = jnp.ones((2, 3), precision)
    tol = 1e-9 if precision == jnp.float64 else 1e-6
    z, info = solvers.fixed_point(
        f, jnp.zeros((2, 3), precision), b, method=method, tol=tol, max_iter=1000, record=True
    )
    assert int(info.nstep[0]) < int(info.nstep[1])
    k0 = int(info.nstep[0])
    # after sample 0 froze its recorded residual never changes
    assert np.all(np.asarray(info.trace[0, k0 - 1 :]) == float(info.residual[0]))
    # and its value is the one it had when it converged: the truncated solve at k0 gives it
    z_k0, _ = solvers.fixed_point(f, jnp.zeros((2, 3), precision), b, method=method, tol=tol, max_iter=k0)
    np.testing.assert_array_equal(np.asarray(z[0]), np.asarray(z_k0[0]))
    np.testing.assert_allclose(f(z, b), z, atol=100 * tol)


def test_max_iter_stops_unconverged_samples_and_reports_them(precision):
    a = contraction(4, 0.99, seed=11, eigs=[0.99, 0.5, 0.2, 0.0])
    b = np.ones((2, 4))
    a, b = jnp.asarray(a, precision), jnp.asarray(b, precision)
    z, info = solvers.fixed_point(affine, jnp.zeros((2, 4), precision), a, b, method="picard", max_iter=3, tol=1e-10)
    assert not bool(info.converged.any())
    assert np.all(np.asarray(info.nstep) == 3)
    # the reported residual is that of the returned iterate
    z, fz = np.asarray(z, np.float64), np.asarray(affine(z, a, b), np.float64)
    rel = np.linalg.norm(fz - z, axis=1) / np.linalg.norm(fz, axis=1)
    np.testing.assert_allclose(info.residual, rel, rtol=rtol_for(precision))


def test_damped_picard_is_the_relaxed_iteration(precision):
    a = jnp.asarray(contraction(3, 0.5, seed=12), precision)
    b = jnp.asarray([[1.0, -2.0, 0.5]], precision)
    z1, _ = solvers.fixed_point(
        affine, jnp.zeros((1, 3), precision), a, b, method="picard", damping=0.5, max_iter=1, tol=1e-14
    )
    np.testing.assert_array_equal(z1, 0.5 * b)  # 0.5 * 0 + 0.5 * (A 0 + b), exact in binary
    z2, _ = solvers.fixed_point(
        affine, jnp.zeros((1, 3), precision), a, b, method="picard", damping=0.5, max_iter=2, tol=1e-14
    )
    np.testing.assert_allclose(z2, 0.5 * z1 + 0.5 * affine(z1, a, b), rtol=rtol_for(precision))


@pytest.mark.parametrize("damping", [1.0, 0.6])
def test_anderson_with_damping_converges(damping, precision):
    a = contraction(10, 0.9, seed=13)
    b = np.random.default_rng(14).normal(size=(3, 10))
    z, info = solvers.fixed_point(
        affine,
        jnp.zeros((3, 10), precision),
        jnp.asarray(a, precision),
        jnp.asarray(b, precision),
        damping=damping,
        tol=solve_tol(precision),
        max_iter=400,
    )
    assert bool(info.converged.all())
    np.testing.assert_allclose(z, affine_solution(a, b), atol=100 * rtol_for(precision))


@pytest.mark.x64
@pytest.mark.slow
def test_anderson_safeguard_falls_back_to_picard_instead_of_nan():
    """With ridge=0 a constant map makes every Anderson system singular; the solve must not produce NaN."""
    c = jnp.arange(12.0).reshape(3, 4)
    z, info = solvers.fixed_point(
        lambda z, c: c + 0.0 * z, jnp.ones((3, 4)), c, ridge=0.0, stop="abs", tol=1e-30, max_iter=10
    )
    assert bool(jnp.isfinite(z).all())
    np.testing.assert_array_equal(np.asarray(z), np.asarray(c))

    # duplicated directions: a map that is the identity on half of the coordinates
    def f(z):
        return jnp.concatenate([z[:, :2], 0.5 * z[:, 2:] + 1.0], axis=1)

    z, info = solvers.fixed_point(f, jnp.zeros((2, 4)), ridge=0.0, memory=4, stop="abs", tol=1e-12, max_iter=60)
    assert bool(jnp.isfinite(z).all())
    zp, _ = solvers.fixed_point(f, jnp.zeros((2, 4)), method="picard", stop="abs", tol=1e-12, max_iter=60)
    np.testing.assert_allclose(z, zp, atol=1e-9)


def test_anderson_nan_only_where_picard_is_nan(precision):
    """A sample whose map is NaN stays NaN; its neighbours in the batch are unaffected."""
    bad = jnp.asarray([[0.0], [jnp.nan], [0.0]], precision)

    def f(z, bad):
        return 0.5 * z + 1.0 + bad

    z, info = solvers.fixed_point(f, jnp.zeros((3, 2), precision), bad, tol=solve_tol(precision), max_iter=100)
    assert bool(jnp.isnan(z[1]).all())
    np.testing.assert_allclose(np.asarray(z)[[0, 2]], 2.0, atol=10 * rtol_for(precision))
    assert bool(info.converged[0]) and bool(info.converged[2]) and not bool(info.converged[1])


def test_record_trace_matches_nstep_and_final_residual():
    a = contraction(6, 0.8, seed=15)
    b = np.random.default_rng(16).normal(size=(4, 6))
    z, info = solvers.fixed_point(affine, jnp.zeros((4, 6)), a, b, method="picard", tol=1e-6, max_iter=80, record=True)
    assert info.trace.shape == (4, 80)
    np.testing.assert_allclose(info.trace[:, -1], info.residual)
    for i in range(4):
        k = int(info.nstep[i])
        assert float(info.trace[i, k - 1]) <= 1e-6 < float(info.trace[i, k - 2])
    _, no_trace = solvers.fixed_point(affine, jnp.zeros((4, 6)), a, b)
    assert no_trace.trace is None
