"""Edge batches (issue 11.5): an empty batch, as a last partial batch can be, and float16 zero fixed points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import solvers
from implicit_rec.layers import ImplicitLayer, MLPCell


def f(z, w, x):
    return jnp.tanh(z @ w.T + x)


W = 0.5 * jnp.eye(3)


@pytest.mark.parametrize("method", ["anderson", "picard"])
@pytest.mark.parametrize("grad", ["ift", "phantom", "unroll"])
@pytest.mark.slow
def test_fixed_point_of_an_empty_batch(method, grad):
    x = jnp.zeros((0, 3))
    z, info = solvers.fixed_point(f, jnp.zeros((0, 3)), W, x, method=method, grad=grad, max_iter=5, record=True)
    assert z.shape == (0, 3)
    assert info.residual.shape == info.nstep.shape == info.converged.shape == (0,)
    assert info.trace.shape == (0, 5)
    g = jax.grad(
        lambda w: jnp.sum(solvers.fixed_point(f, jnp.zeros((0, 3)), w, x, method=method, grad=grad, max_iter=5)[0])
    )(W)
    np.testing.assert_array_equal(g, 0.0)  # an empty sum has a zero gradient


def test_iterate_of_an_empty_batch():
    out = solvers.iterate(f, jnp.zeros((0, 3)), W, jnp.zeros((0, 3)), steps=4, method="anderson")
    assert out.shape == (5, 0, 3)


def test_implicit_layer_on_an_empty_batch():
    rngs = nnx.Rngs(0)
    layer = ImplicitLayer(MLPCell(4, 2, rngs=rngs), 4, rngs=rngs, z0="learned")
    for mode in [layer.train, layer.eval]:
        mode()
        z, info = layer(jnp.zeros((0, 2)))
        assert z.shape == (0, 4) and info.converged.shape == (0,)
        # means over no samples are NaN, as numpy's are; a logger must expect them
        assert info.mean_residual.shape == ()
    assert layer.trajectory(jnp.zeros((0, 2)), 3).shape == (4, 0, 4)


@pytest.mark.parametrize("method", ["anderson", "picard"])
@pytest.mark.slow
def test_float16_zero_fixed_point_has_zero_relative_residual(method):
    """1e-12 underflows in float16; the eps of the relative residual follows the dtype."""
    z0 = jnp.zeros((2, 3), jnp.float16)
    z, info = solvers.fixed_point(lambda z: 0.5 * z, z0, method=method, stop="rel", tol=1e-2)
    np.testing.assert_array_equal(np.asarray(info.residual), 0.0)
    assert bool(info.converged.all()) and int(info.nstep.max()) == 0
    np.testing.assert_array_equal(np.asarray(solvers.residual(z0, z0, "rel")), 0.0)
    traj = solvers.iterate(
        lambda z: 0.5 * z, z0, steps=2, method=method, tol=1e-2, readout=lambda z: solvers.residual(z, 0.5 * z, "rel")
    )
    np.testing.assert_array_equal(np.asarray(traj), 0.0)


@pytest.mark.slow
def test_float16_solve_reaches_its_fixed_point():
    x = jnp.asarray([[0.5, -0.25, 0.0]], jnp.float16)
    z, info = solvers.fixed_point(
        f, jnp.zeros((1, 3), jnp.float16), W.astype(jnp.float16), x, method="picard", tol=1e-2, max_iter=50
    )
    assert z.dtype == jnp.float16 and bool(info.converged.all())
    assert bool(jnp.isfinite(info.residual).all())
