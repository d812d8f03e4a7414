"""ImplicitLayer(z0="learned") is trained (issue 11.4): the exact gradient of z* w.r.t. its start is zero
under ift and phantom, so the layer fits z0 to the solution by the consistency term
z0_weight / 2 * mean_b ||z0_b - sg(z*_b)||^2, whose gradient it adds in the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_trees_close

from implicit_rec.layers import ImplicitLayer, MLPCell, SolverConfig

D_IN, D_STATE = 3, 6


def _layer(grad, **kw):
    rngs = nnx.Rngs(0)
    return ImplicitLayer(
        MLPCell(D_STATE, D_IN, rngs=rngs),
        D_STATE,
        rngs=rngs,
        z0="learned",
        train_solver=SolverConfig(grad=grad, tol=1e-5, max_iter=40),
        **kw,
    )


def _x(seed=0, n=16):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, D_IN)).astype(np.float32))


@pytest.mark.parametrize("grad", ["ift", "phantom"])
@pytest.mark.slow
def test_learned_start_gets_the_consistency_gradient(grad):
    layer = _layer(grad, z0_weight=0.5)
    x = _x()
    probe = jnp.asarray(np.random.default_rng(1).normal(size=(16, D_STATE)).astype(np.float32))
    grads = nnx.grad(lambda layer: jnp.sum(layer(x)[0] * probe))(layer)
    got = nnx.to_pure_dict(grads)["z0_proj"]

    layer.eval()  # the same solve, without the training side effects, for the reference
    z_star, _ = layer(x, solver=layer.train_solver)
    ctx = layer.cell.prepare(x)

    def consistency(proj):
        z0 = jnp.tanh(proj(ctx["injection"]))
        return 0.5 * 0.5 * jnp.mean(jnp.sum((z0 - z_star) ** 2, axis=-1))

    expected = nnx.to_pure_dict(nnx.grad(consistency)(layer.z0_proj))
    assert float(jnp.abs(expected["kernel"]).max()) > 1e-3  # z0 is not already the solution
    assert_trees_close(got, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_learned_start_moves_toward_the_solution_under_training():
    layer = _layer("ift")
    x = _x(2, n=32)
    before = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(layer.z0_proj)))

    def distance():
        layer.eval()
        z_star, _ = layer(x, solver=layer.train_solver)
        z0 = jnp.tanh(layer.z0_proj(layer.cell.prepare(x)["injection"]))
        layer.train()
        return float(jnp.mean(jnp.sum((z0 - z_star) ** 2, axis=-1)))

    start = distance()
    opt = nnx.Optimizer(layer, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(layer, opt):
        grads = nnx.grad(lambda layer: jnp.mean(layer(x)[0] ** 2))(layer)
        opt.update(layer, grads)

    for _ in range(30):
        step(layer, opt)
    after = nnx.to_pure_dict(nnx.state(layer.z0_proj))
    assert not np.allclose(after["kernel"], before["kernel"])
    assert distance() < 0.5 * start


def test_zero_start_has_no_consistency_weight():
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match="z0_weight"):
        ImplicitLayer(MLPCell(D_STATE, D_IN, rngs=rngs), D_STATE, rngs=rngs, z0_weight=1.0)
    with pytest.raises(ValueError, match="z0_weight"):
        _layer("ift", z0_weight=-1.0)
