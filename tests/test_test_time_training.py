"""Training for test-time compute: random-k iterations, random starts (path independence), and the
[vm] keys that select them, the fixed-point-correction loss and the Jacobian penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec.config import ConfigError, RunConfig, VMConfig, from_dict
from implicit_rec.config.names import PARAMETERIZATIONS, Z0_MODES
from implicit_rec.layers import ImplicitLayer, MLPCell, SolverConfig, weights
from implicit_rec.layers import implicit as implicit_mod

D, D_IN, B = 6, 5, 4


def _layer(
    seed=0, train_iterations=None, grad="unroll", method="picard", max_iter=8, parameterization="spectral", **options
) -> ImplicitLayer:
    cell = MLPCell(D, D_IN, parameterization=parameterization, rngs=nnx.Rngs(seed))
    solver = SolverConfig(method=method, max_iter=max_iter, tol=1e-12, grad=grad)
    return ImplicitLayer(
        cell, D, rngs=nnx.Rngs(seed), train_solver=solver, train_iterations=train_iterations, **options
    )


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(3), (B, D_IN))


@nnx.jit
def _call(layer, x):
    return layer(x)


@nnx.jit
def _loss_and_grads(layer, x):
    def loss(layer):
        z, _ = layer(x)
        return jnp.sum(jnp.sin(z))

    return nnx.value_and_grad(loss)(layer)


@pytest.mark.slow  # 10 s cold of compilation (the fast lane's 3 minutes are measured cold)
def test_random_k_runs_a_k_drawn_per_call_from_the_range_and_returns_that_iterate(x):
    layer = _layer(train_iterations=(2, 6))
    seen = set()
    for _ in range(25):
        z, info = _call(layer, x)
        k = np.asarray(info.nstep)
        assert np.all(k == k[0]) and 2 <= k[0] <= 6  # one k per call, in the range
        seen.add(int(k[0]))
        layer.eval()
        ref = layer.trajectory(x, steps=int(k[0]))[-1]  # the same iterates at the eval settings
        layer.train()
        assert layer.eval_solver == layer.train_solver
        np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-6)
    assert len(seen) >= 3  # k really varies between calls


@pytest.mark.parametrize("grad", ["unroll", "phantom"])
def test_random_k_values_and_gradients_equal_the_solver_run_for_exactly_k(x, grad):
    """With lo = hi = k the draw is k: value and gradient equal solvers.fixed_point(max_iter=k, grad=...)."""
    k = 4
    random_k = _layer(train_iterations=(k, k), grad=grad)
    fixed = _layer(grad=grad, max_iter=k)  # same seed: same parameters
    (v1, g1), (v2, g2) = _loss_and_grads(random_k, x), _loss_and_grads(fixed, x)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert any(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(g1))


def test_random_k_needs_an_unrolled_or_phantom_gradient():
    with pytest.raises(ValueError, match="train_solver.grad to 'unroll' or 'phantom'"):
        _layer(train_iterations=(1, 4), grad="ift")
    for bad in [(0, 3), (4, 2), (1,), (1.0, 3), "1,3"]:
        with pytest.raises(ValueError, match="train_iterations must be"):
            _layer(train_iterations=bad)


def test_random_starts_change_the_path_in_training_only_and_not_the_fixed_point(x):
    layer = _layer(z0_noise=0.5, grad="unroll", max_iter=2)
    z_a, _ = _call(layer, x)
    z_b, _ = _call(layer, x)
    assert float(jnp.abs(z_a - z_b).max()) > 1e-3  # two calls, two starts, two 2-step iterates
    # without noise, two training calls start at the same z0. A stateless W: the spectral one takes a
    # power-iteration step on every training call, which may move W in its last bit (it did on one CPU)
    quiet = _layer(z0_noise=0.0, grad="unroll", max_iter=2, parameterization="weight")
    z_q, _ = _call(quiet, x)
    np.testing.assert_allclose(_call(quiet, x)[0], z_q)
    # converged: the start no longer matters (the cell is a 0.9-contraction)
    long = _layer(z0_noise=0.5, grad="unroll", max_iter=200)
    np.testing.assert_allclose(_call(long, x)[0], _call(long, x)[0], atol=1e-5)
    layer.eval()  # evaluation starts at z0 exactly
    np.testing.assert_allclose(_call(layer, x)[0], _call(layer, x)[0])
    with pytest.raises(ValueError, match="z0_noise must be a number >= 0"):
        _layer(z0_noise=-1.0)


def test_the_config_names_match_the_layers():
    assert PARAMETERIZATIONS == weights.PARAMETERIZATIONS
    assert Z0_MODES == implicit_mod.Z0_MODES


def test_vm_keys_for_test_time_training_are_validated():
    cfg = from_dict({"vm": {"train_iterations": [2, 12], "train_grad": "phantom", "z0_noise": 0.3}})
    assert cfg.vm.train_iterations == (2, 12)
    with pytest.raises(ConfigError, match="vm.train_grad"):
        from_dict({"vm": {"train_iterations": [2, 12]}})  # ift with random-k
    with pytest.raises(ConfigError, match="vm.train_iterations"):
        from_dict({"vm": {"train_iterations": [12, 2], "train_grad": "unroll"}})
    with pytest.raises(ConfigError, match="vm.train_iterations"):
        from_dict({"vm": {"train_iterations": [0, 2], "train_grad": "unroll"}})
    with pytest.raises(ConfigError, match="vm.gamma"):
        from_dict({"vm": {"gamma": 1.0}})
    with pytest.raises(ConfigError, match="vm.parameterization"):
        from_dict({"vm": {"parameterization": "orthogonal"}})
    assert isinstance(RunConfig().vm, VMConfig) and RunConfig().vm.train_iterations is None
