"""Gradients of solvers.fixed_point in every mode against finite differences and closed forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, contraction

import solvers

# finite-difference and closed-form references need float64; the float32 path is checked below
# against them and, for every mode, in test_solver_*.py under the precision fixture
pytestmark = pytest.mark.x64

B, D = 3, 5


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "W": jnp.asarray(contraction(D, 0.6, seed=seed)),
        "inner": (jnp.asarray(rng.normal(size=(D,))), {"scale": jnp.asarray(0.7)}),
    }
    x = jnp.asarray(rng.normal(size=(B, D)))
    probe = jnp.asarray(rng.normal(size=(B, D)))
    return params, x, probe


def f(z, params, x):
    """A nonlinear contraction with parameters in a nested pytree."""
    bias, rest = params["inner"]
    return rest["scale"] * jnp.tanh(z @ params["W"].T + x + bias)


def loss(params, x, probe, *, grad, z0=None, max_iter=300, **kw):
    z0 = jnp.zeros((B, D)) if z0 is None else z0
    z, _ = solvers.fixed_point(f, z0, params, x, grad=grad, tol=1e-13, max_iter=max_iter, **kw)
    return jnp.sum(jnp.sin(z) * probe)


def _central_fd(fun, tree, eps=1e-6):
    """Central finite differences of scalar fun at every entry of every leaf of tree."""
    fun = jax.jit(fun)  # compiled once, evaluated 2 * size times
    leaves, treedef = jax.tree.flatten(tree)
    grads = []
    for i, leaf in enumerate(leaves):
        flat = np.asarray(leaf, dtype=np.float64).ravel()
        g = np.zeros_like(flat)
        for j in range(flat.size):

            def at(delta):
                moved = flat.copy()
                moved[j] += delta
                new = list(leaves)
                new[i] = jnp.asarray(moved.reshape(np.shape(leaf)))
                return float(fun(jax.tree.unflatten(treedef, new)))

            g[j] = (at(eps) - at(-eps)) / (2 * eps)
        grads.append(g.reshape(np.shape(leaf)))
    return jax.tree.unflatten(treedef, grads)


@pytest.fixture(scope="module")
def fd_reference():
    # module-scoped fixtures are set up before the per-test x64 switch: turn it on here
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        params, x, probe = _problem()
        fd_params = _central_fd(lambda p: loss(p, x, probe, grad="ift"), params)
        fd_x = _central_fd(lambda xx: loss(params, xx, probe, grad="ift"), x)
    finally:
        jax.config.update("jax_enable_x64", previous)
    return params, x, probe, fd_params, fd_x


@pytest.mark.parametrize("method", ["anderson", "picard"])
@pytest.mark.slow
def test_ift_gradient_matches_finite_differences(fd_reference, method):
    params, x, probe, fd_params, fd_x = fd_reference
    g_params, g_x = jax.grad(functools.partial(loss, grad="ift", method=method), argnums=(0, 1))(params, x, probe)
    assert_trees_close(g_params, fd_params, rtol=1e-6, atol=1e-9)
    assert_trees_close(g_x, fd_x, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_unroll_gradient_matches_finite_differences(fd_reference):
    params, x, probe, fd_params, fd_x = fd_reference
    g_params, g_x = jax.grad(functools.partial(loss, grad="unroll"), argnums=(0, 1))(params, x, probe)
    assert_trees_close(g_params, fd_params, rtol=1e-6, atol=1e-9)
    assert_trees_close(g_x, fd_x, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_phantom_gradient_converges_to_the_implicit_gradient(fd_reference):
    """Many damped phantom steps approach the exact gradient; one step is the Jacobian-free gradient."""
    params, x, probe, fd_params, _ = fd_reference
    g_many = jax.grad(functools.partial(loss, grad="phantom", phantom_steps=60))(params, x, probe)
    assert_trees_close(g_many, fd_params, rtol=1e-6, atol=1e-9)

    # phantom_steps=1, damping=1: d/dtheta of f(z*, theta) with z* held fixed
    g_one = jax.grad(functools.partial(loss, grad="phantom", phantom_steps=1))(params, x, probe)
    z_star, _ = solvers.fixed_point(f, jnp.zeros((B, D)), params, x, tol=1e-13, max_iter=300)
    jfb = jax.grad(lambda p: jnp.sum(jnp.sin(f(z_star, p, x)) * probe))(params)
    assert_trees_close(g_one, jfb, rtol=1e-8, atol=1e-12)
    # and it differs from the exact gradient (the test would pass vacuously otherwise)
    assert not np.allclose(g_one["W"], fd_params["W"], rtol=1e-3)


@pytest.mark.slow
def test_unroll_gradient_wrt_z0_matches_finite_differences():
    """Unrolled backprop is exact for a truncated solve, including its dependence on z0."""
    params, x, probe = _problem(seed=1)
    z0 = jnp.asarray(np.random.default_rng(3).normal(size=(B, D)))

    def short(z0):
        z, _ = solvers.fixed_point(f, z0, params, x, grad="unroll", tol=1e-30, max_iter=4)
        return jnp.sum(jnp.sin(z) * probe)

    assert_trees_close(jax.grad(short)(z0), _central_fd(short, z0), rtol=1e-6, atol=1e-9)
    # ift treats the solution as independent of z0
    g_ift = jax.grad(lambda z0: loss(params, x, probe, grad="ift", z0=z0))(z0)
    np.testing.assert_array_equal(np.asarray(g_ift), 0.0)


@pytest.mark.slow
def test_ift_gradient_for_linear_problem_is_closed_form():
    """z* = (I - A)^{-1} b, so d(c . z*)/db = (I - A)^{-T} c."""
    a = jnp.asarray(contraction(4, 0.9, seed=5))
    b = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4)))
    c = jnp.asarray(np.random.default_rng(7).normal(size=(2, 4)))

    def value(b):
        z, _ = solvers.fixed_point(lambda z, b: z @ a.T + b, jnp.zeros((2, 4)), b, tol=1e-13, max_iter=500)
        return jnp.sum(z * c)

    expected = np.linalg.solve(np.eye(4) - np.asarray(a).T, np.asarray(c).T).T
    np.testing.assert_allclose(jax.grad(value)(b), expected, rtol=1e-9)


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_ift_differentiates_closed_over_values():
    """Arrays that f closes over (here a traced W inside jax.grad) receive their gradient too."""
    params, x, probe = _problem(seed=2)

    def closed(w):
        p = {"W": w, "inner": params["inner"]}
        z, _ = solvers.fixed_point(lambda z, x: f(z, p, x), jnp.zeros((B, D)), x, tol=1e-13, max_iter=300)
        return jnp.sum(jnp.sin(z) * probe)

    explicit = jax.grad(lambda p: loss(p, x, probe, grad="ift"))(params)["W"]
    np.testing.assert_allclose(jax.grad(closed)(params["W"]), explicit, rtol=1e-9)


def test_ift_with_integer_arguments():
    """Non-differentiable (integer) args pass through the custom VJP."""
    table = jnp.asarray(np.random.default_rng(8).normal(size=(6, D)))
    idx = jnp.asarray([0, 3, 5])

    def g(z, table, idx):
        return 0.5 * jnp.tanh(z) + table[idx]

    def value(table):
        z, _ = solvers.fixed_point(g, jnp.zeros((3, D)), table, idx, tol=1e-13, max_iter=200)
        return jnp.sum(z**2)

    got = jax.grad(value)(table)
    np.testing.assert_allclose(got, _central_fd(value, table), rtol=1e-6, atol=1e-9)
    assert float(jnp.abs(got[1]).max()) == 0.0  # rows that were not looked up get no gradient


@pytest.mark.slow
def test_ift_memory_does_not_grow_with_iterations():
    """Compiled temp memory of the IFT backward is flat in max_iter; unrolling grows."""
    params, x, probe = _problem()

    def temp_bytes(grad, max_iter):
        fn = jax.jit(
            jax.grad(
                lambda p: jnp.sum(
                    solvers.fixed_point(f, jnp.zeros((B, D)), p, x, grad=grad, max_iter=max_iter, tol=1e-30)[0] * probe
                )
            )
        )
        return fn.lower(params).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes("ift", 10) == temp_bytes("ift", 200)
    assert temp_bytes("unroll", 200) > 5 * temp_bytes("unroll", 10)


@pytest.mark.parametrize("grad", ["ift", "phantom", "unroll"])
@pytest.mark.slow
def test_float32_gradients_are_finite_and_close(grad):
    params, x, probe = _problem()
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)

    def loss32(p):
        z, _ = solvers.fixed_point(
            f,
            jnp.zeros((B, D), jnp.float32),
            p,
            x.astype(jnp.float32),
            grad=grad,
            tol=1e-6,
            max_iter=100,
            phantom_steps=30,
        )
        return jnp.sum(jnp.sin(z) * probe.astype(jnp.float32))

    g32 = jax.grad(loss32)(p32)
    g64 = jax.grad(functools.partial(loss, grad="ift"))(params, x, probe)
    assert g32["W"].dtype == jnp.float32
    assert_trees_close(g32, g64, rtol=1e-3, atol=1e-4)


@pytest.mark.x64
@pytest.mark.parametrize("grad", ["phantom", "unroll"])
@pytest.mark.slow
def test_closed_over_values_are_differentiated_in_every_mode(grad):
    """A traced W that f closes over gets the gradient it gets as an explicit argument (was a
    while_loop reverse-mode error for phantom)."""
    params, x, probe = _problem(seed=2)
    kw = dict(grad=grad, phantom_steps=2, damping=0.8, max_iter=40)

    def closed(w):
        p = {"W": w, "inner": params["inner"]}
        z, _ = solvers.fixed_point(lambda z, x: f(z, p, x), jnp.zeros((B, D)), x, tol=1e-13, **kw)
        return jnp.sum(jnp.sin(z) * probe)

    explicit = jax.grad(lambda p: loss(p, x, probe, **kw))(params)["W"]
    np.testing.assert_allclose(jax.grad(closed)(params["W"]), explicit, rtol=1e-9, atol=1e-12)
