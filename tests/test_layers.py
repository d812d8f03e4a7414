"""Implicit layers: training, test-time iterations, gradients, contraction guarantee, save/restore."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_trees_close

from implicit_rec.checkpoint import load_module, restore_state, save_state
from implicit_rec.layers import ImplicitLayer, MLPCell, SequenceCell, SolverConfig, fixed_point_correction_loss

D_IN, D_STATE = 4, 16


class Regressor(nnx.Module):
    """ImplicitLayer followed by a linear readout."""

    def __init__(self, seed=0, **layer_kw):
        rngs = nnx.Rngs(seed, jacobian=seed + 1)
        self.layer = ImplicitLayer(MLPCell(D_STATE, D_IN, rngs=rngs), D_STATE, rngs=rngs, **layer_kw)
        self.head = nnx.Linear(D_STATE, 1, rngs=rngs)

    def __call__(self, x):
        z, info = self.layer(x)
        return self.head(z)[:, 0], info


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D_IN)).astype(np.float32)
    y = np.sin(x[:, 0] * 1.5) + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 3]
    return jnp.asarray(x), jnp.asarray(y.astype(np.float32))


def _train(model, steps, x, y, lr=3e-3):
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            pred, _ = model(x)
            return jnp.mean((pred - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    return [float(step(model, opt, x, y)) for _ in range(steps)]


def _mse(model, x, y):
    pred, _ = model(x)
    return float(jnp.mean((pred - y) ** 2))


@pytest.fixture(scope="module")
def trained():
    x, y = _data(256, 0)
    x_test, y_test = _data(256, 1)
    model = Regressor(train_solver=SolverConfig(max_iter=20, tol=1e-4))
    model.eval()
    before = _mse(model, x_test, y_test)
    model.train()
    losses = _train(model, 300, x, y)
    model.eval()
    return model, before, losses, (x_test, y_test)


@pytest.fixture
def trained_model(trained):
    """A private copy of the trained model (tests change its solver settings) and the test data."""
    model, _, _, test_data = trained
    return nnx.clone(model), test_data


def test_implicit_layer_trains_and_generalizes(trained):
    model, before, losses, (x_test, y_test) = trained
    assert losses[-1] < 0.2 * losses[0]
    assert _mse(model, x_test, y_test) < 0.35 * before  # held-out data, not the training batch


def test_eval_residual_falls_with_eval_iterations(trained_model):
    model, (x_test, _) = trained_model
    residuals = []
    for k in [1, 3, 10, 40]:
        model.layer.eval_solver = SolverConfig(method="picard", max_iter=k, tol=1e-12)
        _, info = model(x_test)
        residuals.append(float(info.mean_residual))
    assert all(a > b for a, b in zip(residuals, residuals[1:])), residuals
    assert residuals[-1] < 1e-3 * residuals[0]


def test_spectral_parameterization_bounds_contraction_after_training(trained_model):
    model, (x_test, _) = trained_model
    gamma = model.layer.cell.w.gamma
    w_eff = model.layer.cell.w.prepare()
    assert float(jnp.linalg.norm(w_eff, 2)) <= gamma * (1 + 1e-3)
    model.layer.eval_solver = SolverConfig(max_iter=60, tol=1e-6)
    assert float(model.layer.spectral_radius(x_test).max()) < gamma


@pytest.mark.slow
def test_spectral_bound_at_init_and_unconstrained_weights_can_exceed_it():
    rngs = nnx.Rngs(3)
    cell = MLPCell(D_STATE, D_IN, rngs=rngs, gamma=0.5)
    layer = ImplicitLayer(cell, D_STATE, rngs=rngs)
    x, _ = _data(64, 2)
    assert float(jnp.linalg.norm(cell.w.prepare(), 2)) <= 0.5 * (1 + 1e-3)
    assert float(layer.spectral_radius(x).max()) < 0.5
    plain = MLPCell(D_STATE, D_IN, rngs=nnx.Rngs(3), parameterization="none")
    plain.w.kernel[...] = 3.0 * plain.w.kernel[...]
    assert float(jnp.linalg.norm(plain.w.prepare(), 2)) > 1.0


@pytest.mark.slow
def test_trajectory_matches_truncated_solves(trained_model):
    model, (x_test, _) = trained_model
    layer = model.layer
    layer.eval_solver = SolverConfig(method="anderson", max_iter=8, tol=1e-5)
    traj = layer.trajectory(x_test, 8)
    assert traj.shape == (9,) + (x_test.shape[0], D_STATE)
    for k in [1, 4, 8]:
        z, _ = layer(x_test, solver=layer.eval_solver.replace(max_iter=k))
        np.testing.assert_allclose(traj[k], z, atol=1e-6)
    mse = layer.trajectory(x_test, 8, readout=lambda z: jnp.mean(z**2, axis=-1))
    assert mse.shape == (9, x_test.shape[0])


def test_trajectory_residuals_match_the_solver_and_functional_form(trained_model):
    model, (x_test, _) = trained_model
    layer = model.layer
    layer.eval_solver = SolverConfig(method="picard", max_iter=6, tol=1e-12)
    states, resid = layer.trajectory(x_test, 6, residual=True)
    for k in [1, 3, 6]:
        _, info = layer(x_test, solver=layer.eval_solver.replace(max_iter=k))
        np.testing.assert_allclose(resid[k], info.residual, rtol=1e-5, atol=1e-7)
    f, z0, args = layer.functional(x_test)  # the same map as a pure function
    np.testing.assert_allclose(f(states[2], *args), states[3], atol=1e-6)
    np.testing.assert_allclose(z0, states[0])


def _param_grads(model, x, y, solver):
    model.layer.train_solver = solver

    def loss_fn(model):
        pred, _ = model(x)
        return jnp.mean((pred - y) ** 2)

    return nnx.to_pure_dict(nnx.grad(loss_fn)(model))


@pytest.mark.slow
def test_ift_parameter_gradients_match_long_unroll():
    model = Regressor(seed=4)
    x, y = _data(64, 5)
    g_ift = _param_grads(model, x, y, SolverConfig(grad="ift", tol=1e-7, max_iter=200))
    g_unroll = _param_grads(model, x, y, SolverConfig(grad="unroll", method="picard", tol=1e-7, max_iter=200))
    g_phantom = _param_grads(model, x, y, SolverConfig(grad="phantom", phantom_steps=3, tol=1e-7, max_iter=200))
    leaves_ift, leaves_unroll = jax.tree.leaves(g_ift), jax.tree.leaves(g_unroll)
    assert len(leaves_ift) == len(leaves_unroll) >= 5  # W, U, b of the cell and the head
    for a, b in zip(leaves_ift, leaves_unroll):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)
    cell_ift = jax.tree.leaves(g_ift["layer"]["cell"])
    cell_ph = jax.tree.leaves(g_phantom["layer"]["cell"])
    assert all(float(jnp.abs(g).max()) > 0 for g in cell_ph)
    flat = lambda t: jnp.concatenate([g.ravel() for g in t])  # noqa: E731
    cos = jnp.dot(flat(cell_ift), flat(cell_ph)) / (jnp.linalg.norm(flat(cell_ift)) * jnp.linalg.norm(flat(cell_ph)))
    assert float(cos) > 0.9


def test_save_restore_round_trip(tmp_path, trained_model):
    model, (x_test, _) = trained_model
    path = save_state(model, tmp_path / "model.msgpack")
    fresh = Regressor(seed=123, train_solver=SolverConfig(max_iter=20, tol=1e-4))
    fresh.eval()
    model.layer.eval_solver = SolverConfig(max_iter=30)
    fresh.layer.eval_solver = SolverConfig(max_iter=30)
    assert not np.allclose(fresh(x_test)[0], model(x_test)[0])
    restore_state(fresh, path)
    # the round trip restores every value bit for bit ...
    assert_trees_close(
        nnx.to_pure_dict(nnx.state(fresh, nnx.Not(nnx.RngState))),
        nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState))),
        rtol=0,
        atol=0,
    )
    # ... and the predictions (float32 eager evaluations of the two modules may differ by an ulp)
    np.testing.assert_allclose(np.asarray(fresh(x_test)[0]), np.asarray(model(x_test)[0]), rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary behind


def test_load_module_builds_abstractly_and_restores_every_value(tmp_path, trained_model):
    """load_module draws no parameter (its initialisers are traced, not compiled or run), restores
    the saved state bit for bit, and gives concrete RNG streams (the module can train on)."""
    model, (x_test, y_test) = trained_model
    path = save_state(model, tmp_path / "model.msgpack")
    traced = []

    def build():
        module = Regressor(seed=5, train_solver=SolverConfig(max_iter=20, tol=1e-4))
        traced.append(isinstance(module.head.kernel[...], jax.core.Tracer))
        return module

    loaded = load_module(build, path)
    assert traced == [True]  # built once, under abstract tracing: no parameter was drawn
    assert_trees_close(
        nnx.to_pure_dict(nnx.state(loaded, nnx.Not(nnx.RngState))),
        nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState))),
        rtol=0,
        atol=0,
    )
    for leaf in jax.tree.leaves(nnx.state(loaded)):
        assert isinstance(leaf, jax.Array | np.ndarray), type(leaf)
    loaded.eval()
    model.layer.eval_solver = loaded.layer.eval_solver = SolverConfig(max_iter=30)
    np.testing.assert_allclose(np.asarray(loaded(x_test)[0]), np.asarray(model(x_test)[0]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="z0_proj"):
        load_module(lambda: Regressor(seed=0, z0="learned"), path)


def test_restore_rejects_mismatched_or_missing_checkpoints(tmp_path):
    small = Regressor(seed=0)
    path = save_state(small, tmp_path / "small.msgpack")
    other = Regressor(seed=0, z0="learned")
    with pytest.raises(ValueError, match="z0_proj"):
        restore_state(other, path)
    with pytest.raises(FileNotFoundError):
        restore_state(small, tmp_path / "missing.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"\x00\x01not msgpack")
    with pytest.raises(ValueError, match="junk.msgpack"):
        restore_state(small, tmp_path / "junk.msgpack")


def test_solver_config_validates_at_construction():
    with pytest.raises(TypeError, match="max_iters"):
        SolverConfig(max_iters=3)
    with pytest.raises(ValueError, match="method"):
        SolverConfig(method="newton")
    with pytest.raises(ValueError, match="tol must be > 0"):
        SolverConfig(tol=0)
    with pytest.raises(TypeError, match="did you mean 'max_iter'"):
        SolverConfig().replace(max_iters=3)
    base = SolverConfig()
    changed = base.replace(max_iter=7, grad_fallback="phantom")
    assert changed.max_iter == 7 and changed.grad_fallback == "phantom"
    assert base.max_iter == 30 and base.grad_fallback is None  # replace returns a new config
    with pytest.raises(dataclasses.FrozenInstanceError):  # a layer's config cannot change under it
        base.max_iter = 3
    with pytest.raises(ValueError, match="grad_fallback"):
        SolverConfig(grad="phantom", grad_fallback="phantom")


def test_layer_arguments_are_validated():
    rngs = nnx.Rngs(0)
    cell = MLPCell(D_STATE, D_IN, rngs=rngs)
    with pytest.raises(ValueError, match="z0"):
        ImplicitLayer(cell, D_STATE, rngs=rngs, z0="ones")
    with pytest.raises(TypeError, match="SolverConfig"):
        ImplicitLayer(cell, D_STATE, rngs=rngs, train_solver={"max_iter": 3})
    with pytest.raises(ValueError, match="parameterization"):
        MLPCell(D_STATE, D_IN, rngs=rngs, parameterization="orthogonal")
    with pytest.raises(ValueError, match="residual=True needs norm"):
        MLPCell(D_STATE, D_IN, rngs=rngs, residual=True)


def test_eval_solver_is_the_test_time_knob():
    model = Regressor(seed=6, train_solver=SolverConfig(method="picard", max_iter=3, tol=1e-10))
    x, _ = _data(32, 7)
    _, train_info = model(x)
    assert int(train_info.nstep.max()) == 3
    model.eval()
    model.layer.eval_solver = SolverConfig(method="picard", max_iter=25, tol=1e-10)
    _, eval_info = model(x)
    assert int(eval_info.nstep.max()) == 25
    model.train()
    assert int(model(x)[1].nstep.max()) == 3


@pytest.mark.slow
def test_warmup_uses_unrolled_iterations_then_switches():
    model = Regressor(seed=7, warmup_steps=2, warmup_iters=4, train_solver=SolverConfig(tol=1e-10, max_iter=30))
    x, y = _data(32, 8)
    nsteps = []
    for _ in range(3):
        _, info = model(x)
        nsteps.append(int(info.nstep.max()))
    assert nsteps[:2] == [4, 4] and nsteps[2] > 4
    _train(model, 2, x, y)  # the unrolled branch and the implicit branch both train under jit


@pytest.mark.slow
def test_regularizers_are_off_by_default_and_differentiable_when_on():
    x, y = _data(32, 9)
    plain = Regressor(seed=8)
    _, info = plain(x)
    assert info.jacobian_penalty is None and info.correction_states is None

    model = Regressor(seed=8, jacobian_penalty=True, jacobian_samples=2, correction_states=3)
    _, info = model(x)
    assert float(info.jacobian_penalty) > 0
    assert info.correction_states.shape == (3, 32, D_STATE)
    np.testing.assert_allclose(float(jnp.sum(info.correction_weights)), 1.0, rtol=1e-6)
    assert bool(jnp.all(jnp.diff(info.correction_weights) > 0))

    def loss_fn(model):
        pred, info = model(x)
        correction = fixed_point_correction_loss(info, lambda z: jnp.mean((model.head(z)[:, 0] - y) ** 2))
        return jnp.mean((pred - y) ** 2) + 0.1 * info.jacobian_penalty + correction

    grads = nnx.grad(loss_fn)(model)
    w_grad = nnx.to_pure_dict(grads)["layer"]["cell"]["w"]["kernel"]
    assert bool(jnp.isfinite(w_grad).all()) and float(jnp.abs(w_grad).max()) > 0
    model.eval()
    with pytest.raises(ValueError, match="correction_states"):
        fixed_point_correction_loss(model(x)[1], lambda z: jnp.sum(z))


def _sequence_batch(seed, batch=6, length=5, d_item=3, d_context=2):
    rng = np.random.default_rng(seed)
    seq = jnp.asarray(rng.normal(size=(batch, length, d_item)).astype(np.float32))
    mask = np.ones((batch, length), bool)
    mask[0, 3:] = False
    mask[1, :] = False  # a user without history
    ctx = jnp.asarray(rng.normal(size=(batch, d_context)).astype(np.float32))
    return {"sequence": seq, "mask": jnp.asarray(mask), "context": ctx}


def test_sequence_cell_step_is_the_docstring_formula():
    """One iteration equals the class docstring's formula written out in float64 NumPy: per head,
    softmax over the real events of (W_q z)_h . K_h / sqrt(d_h), weights times V_h, heads side by
    side; a user without events attends to nothing. Its gradient w.r.t. z matches finite differences."""
    cell = SequenceCell(8, 3, d_context=2, num_heads=2, rngs=nnx.Rngs(4))
    x = _sequence_batch(2)
    z = jnp.asarray(np.random.default_rng(3).normal(size=(6, 8)).astype(np.float32))
    ctx = cell.prepare(x)
    got = np.asarray(cell(z, ctx))

    def p(module, name):
        return np.asarray(getattr(module, name)[...], np.float64)

    f64 = {k: np.asarray(v, np.float64) for k, v in x.items() if k != "mask"}
    mask = np.asarray(x["mask"])
    q = np.asarray(z, np.float64) @ p(cell.query, "kernel")
    keys, values = f64["sequence"] @ p(cell.key, "kernel"), f64["sequence"] @ p(cell.value, "kernel")
    attended = np.zeros((6, 8))
    for h in (slice(0, 4), slice(4, 8)):
        scores = np.einsum("bc,blc->bl", q[:, h], keys[:, :, h]) / 2.0
        scores = np.where(mask, scores, -np.inf)
        peak = np.max(np.where(mask, scores, -1e300), axis=1, keepdims=True)
        e = np.where(mask, np.exp(scores - peak), 0.0)
        weights = e / np.maximum(e.sum(1, keepdims=True), 1e-300)
        attended[:, h] = np.einsum("bl,blc->bc", weights, values[:, :, h])
    w = np.asarray(ctx["w"], np.float64)  # the state map as prepare returns it (its parameterization applied)
    h = np.asarray(z, np.float64) @ w.T + attended @ p(cell.out, "kernel") + p(cell.out, "bias")
    h = h + f64["context"] @ p(cell.context, "kernel") + p(cell.context, "bias")
    hidden = np.asarray(jax.nn.gelu(jnp.asarray(h @ p(cell.mlp_in, "kernel") + p(cell.mlp_in, "bias"))), np.float64)
    want = np.tanh(h + hidden @ p(cell.mlp_out, "kernel") + p(cell.mlp_out, "bias"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(attended[1]).max() == 0  # the user without history

    direction = jnp.asarray(np.random.default_rng(5).normal(size=(6, 8)).astype(np.float32))
    loss = lambda z: jnp.sum(jnp.sin(3.0 * cell(z, ctx)))  # noqa: E731
    eps = 1e-3
    fd = (loss(z + eps * direction) - loss(z - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(jax.grad(loss)(z), direction), fd, rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_sequence_cell_solves_and_respects_the_mask():
    rngs = nnx.Rngs(9)
    cell = SequenceCell(8, 3, d_context=2, num_heads=2, rngs=rngs)
    layer = ImplicitLayer(cell, 8, rngs=rngs, train_solver=SolverConfig(max_iter=60, tol=1e-6))
    layer.eval()
    layer.eval_solver = SolverConfig(max_iter=60, tol=1e-6)
    x = _sequence_batch(0)
    z, info = layer(x)
    assert z.shape == (6, 8) and bool(jnp.isfinite(z).all()) and bool(info.converged.all())
    # padded events do not matter
    x2 = dict(x, sequence=x["sequence"].at[0, 3:].set(100.0).at[1].set(-7.0))
    np.testing.assert_allclose(layer(x2)[0], z, atol=1e-6)
    # attention without positions is invariant to the order of the events
    perm = jnp.asarray([2, 0, 1, 3, 4])
    x3 = dict(x, sequence=x["sequence"][:, perm], mask=x["mask"][:, perm])
    np.testing.assert_allclose(layer(x3)[0][2:], z[2:], atol=1e-5)
    # the events matter for a user with history
    x4 = dict(x, sequence=x["sequence"].at[2, 0].set(5.0))
    assert float(jnp.abs(layer(x4)[0][2] - z[2]).max()) > 1e-4


@pytest.mark.slow
def test_sequence_cell_gradients_reach_keys_values_and_queries():
    x = _sequence_batch(1)

    def grads(solver):
        rngs = nnx.Rngs(10)
        layer = ImplicitLayer(SequenceCell(8, 3, d_context=2, rngs=rngs), 8, train_solver=solver, rngs=rngs)
        return layer, nnx.to_pure_dict(nnx.grad(lambda layer: jnp.sum(layer(x)[0] ** 2))(layer))

    layer, g_ift = grads(SolverConfig(grad="ift", tol=1e-7, max_iter=200))
    _, g_unroll = grads(SolverConfig(grad="unroll", method="picard", tol=1e-7, max_iter=200))
    for name in ["query", "key", "value", "out", "context"]:  # the exact reference: a long unroll
        g = g_ift["cell"][name]["kernel"]
        assert float(jnp.abs(g).max()) > 0, name
        np.testing.assert_allclose(g, g_unroll["cell"][name]["kernel"], rtol=2e-3, atol=2e-5, err_msg=name)
    with pytest.raises(ValueError, match="'sequence'"):
        layer({"seq": x["sequence"], "mask": x["mask"]})
