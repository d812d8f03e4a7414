"""ImplicitLayer reports its implicit backward pass and can fall back to phantom steps (issue 11.3)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_trees_close

from implicit_rec.checkpoint import CheckpointError
from implicit_rec.layers import AdjointProbe, ImplicitLayer, MLPCell, SolverConfig, adjoint_report
from implicit_rec.models.training import TrainConfig, fit

D_IN, D_STATE, B = 3, 6, 8
WRT = nnx.DiffState(0, nnx.Any(nnx.Param, AdjointProbe))


def _layer(**solver):
    rngs = nnx.Rngs(0)
    cell = MLPCell(D_STATE, D_IN, rngs=rngs, gamma=0.95)
    return ImplicitLayer(cell, D_STATE, rngs=rngs, train_solver=SolverConfig(tol=1e-5, max_iter=60, **solver))


X = jnp.asarray(np.random.default_rng(0).normal(size=(B, D_IN)).astype(np.float32))
PROBE = jnp.asarray(np.random.default_rng(1).normal(size=(B, D_STATE)).astype(np.float32))


def _loss(layer):
    return jnp.sum(jnp.sin(layer(X)[0]) * PROBE)


def _grads(layer):
    return nnx.grad(_loss, argnums=WRT)(layer)


@pytest.mark.slow
def test_converged_adjoint_is_reported():
    report = adjoint_report(_grads(_layer(grad_tol=1e-4)))
    assert float(report["adjoint_samples"]) == B
    assert float(report["adjoint_converged_fraction"]) == 1.0
    assert float(report["adjoint_fallback_fraction"]) == 0.0
    assert 0 < float(report["adjoint_mean_residual"]) <= 1e-4
    assert float(report["adjoint_mean_nstep"]) >= 1


@pytest.mark.slow
def test_unconverged_adjoint_is_reported_and_falls_back_to_phantom():
    budget = dict(grad_max_iter=1, grad_tol=1e-7, phantom_steps=2)
    report = adjoint_report(_grads(_layer(**budget)))
    assert float(report["adjoint_converged_fraction"]) == 0.0
    grads = _grads(_layer(grad_fallback="phantom", **budget))
    report = adjoint_report(grads)
    assert float(report["adjoint_fallback_fraction"]) == 1.0
    phantom = nnx.grad(_loss)(_layer(grad="phantom", phantom_steps=2))
    # every row fell back: the parameter gradients are phantom's (up to the forward tolerance)
    assert_trees_close(
        nnx.to_pure_dict(nnx.filter_state(grads, nnx.Param)), nnx.to_pure_dict(phantom), rtol=2e-3, atol=1e-5
    )


def test_phantom_mode_reports_no_adjoint_and_the_probe_never_changes():
    layer = _layer(grad="phantom")
    report = adjoint_report(_grads(layer))
    assert float(report["adjoint_samples"]) == 0 and np.isnan(float(report["adjoint_mean_residual"]))
    np.testing.assert_array_equal(layer.adjoint_probe[...], 0.0)
    with pytest.raises(ValueError, match="AdjointProbe"):
        adjoint_report(nnx.grad(_loss)(layer))


class _Scorer(nnx.Module):
    def __init__(self, **solver):
        self.layer = _layer(**solver)
        self.head = nnx.Linear(D_STATE, 1, rngs=nnx.Rngs(1))

    def __call__(self, batch):
        z, info = self.layer(batch["x"])
        return {"logit": self.head(z)[:, 0], "info": info}


def test_fit_logs_forward_and_adjoint_solver_health():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, D_IN)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)

    def make_batch(rows):
        return {"x": jnp.asarray(x[rows]), "y": jnp.asarray(y[rows])}

    def loss_fn(model, batch):
        out = model(batch)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(out["logit"], batch["y"])), out

    model = _Scorer(grad_max_iter=2, grad_tol=1e-7, grad_fallback="phantom")
    rows = np.arange(64)
    result = fit(
        model,
        loss_fn,
        make_batch,
        rows[:48],
        rows[48:],
        y[48:],
        np.zeros(16, int),
        TrainConfig(epochs=1, batch_size=16),
    )
    record = result["history"][0]
    assert record["train_converged_fraction"] == 1.0 and record["train_mean_nstep"] >= 1
    assert record["adjoint_converged_fraction"] == 0.0  # 2 adjoint steps cannot reach 1e-7
    assert record["adjoint_fallback_fraction"] == 1.0
    assert record["adjoint_mean_nstep"] == 2.0 and record["adjoint_mean_residual"] > 1e-7


@pytest.mark.parametrize("content", [b"\x00\x01 not msgpack", b""])
def test_fit_refuses_a_damaged_epoch_checkpoint_and_says_how_to_recover(tmp_path, content):
    x = np.random.default_rng(3).normal(size=(32, D_IN)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    ckpt = tmp_path / "vm.train.msgpack"
    ckpt.write_bytes(content)
    rows = np.arange(32)
    with pytest.raises(CheckpointError, match=r"vm\.train\.msgpack.*delete that file"):
        fit(
            _Scorer(),
            lambda m, b: (jnp.mean(m(b)["logit"]), m(b)),
            lambda r: {"x": jnp.asarray(x[r])},
            rows[:16],
            rows[16:],
            y[16:],
            np.zeros(16, int),
            TrainConfig(epochs=1, batch_size=16),
            checkpoint=ckpt,
        )
    assert ckpt.read_bytes() == content  # nothing is deleted behind the user's back
