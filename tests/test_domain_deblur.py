"""Deblurring domain: blur operator, proximal-gradient cell, data splits, and the tiny study end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import domain_deblur
from implicit_rec.domains import deblur, images, prox

SHAPE = (12, 10)


def _op(kind="gaussian", shape=SHAPE):
    param = 1.3 if kind == "gaussian" else 30.0
    return prox.BlurOperator.from_kernel(prox.make_kernel(kind, 5, param), shape)


def _random_step(seed=0, channels=3, layers=3, scale=0.01):
    """Cell parameters (float64) whose CNN is not zero (the last layer is initialised at zero)."""
    p = prox.init_step(jax.random.PRNGKey(seed), channels, layers, eta=0.9, lam=0.1, dtype=jnp.float64)
    w, b = p["cnn"][-1]
    p["cnn"][-1] = (scale * jax.random.normal(jax.random.PRNGKey(seed + 1), w.shape, w.dtype), b)
    return p


@pytest.mark.parametrize("kind", ["gaussian", "motion"])
@pytest.mark.x64
def test_blur_adjoint_and_constants(kind):
    op = _op(kind)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2,) + SHAPE), rng.normal(size=(2,) + SHAPE)
    lhs = float(jnp.sum(op.A(jnp.asarray(x)) * y))
    rhs = float(jnp.sum(x * op.AT(jnp.asarray(y))))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    # the kernel sums to 1, so A maps a constant image to itself (centring commutes with A)
    np.testing.assert_allclose(op.A(jnp.full(SHAPE, 0.3)), 0.3, atol=1e-12)


@pytest.mark.x64
def test_blur_matches_direct_circular_convolution():
    kernel = prox.make_kernel("motion", 5, 30.0)
    op = prox.BlurOperator.from_kernel(kernel, SHAPE)
    x = np.random.default_rng(1).normal(size=SHAPE)
    direct = np.zeros(SHAPE)
    for a in range(5):
        for b in range(5):  # y[i, j] = sum_ab k[a, b] x[i + 2 - a, j + 2 - b] (circular), centred kernel
            direct += kernel[a, b] * np.roll(x, (a - 2, b - 2), axis=(0, 1))
    np.testing.assert_allclose(op.A(jnp.asarray(x)), direct, atol=1e-12)


@pytest.mark.x64
def test_tikhonov_solves_normal_equations():
    op = _op()
    y = jnp.asarray(np.random.default_rng(2).normal(size=(3,) + SHAPE))
    x = op.tikhonov(y, 0.05)
    np.testing.assert_allclose(op.AT(op.A(x)) + 0.05 * x, op.AT(y), atol=1e-10)


@pytest.mark.x64
@pytest.mark.slow
def test_identity_denoiser_fixed_point_is_tikhonov():
    """With the CNN at its initialisation (last layer zero: D = identity) the cell's fixed point is
    (A^T A + lam I)^-1 A^T y."""
    op = _op()
    params = prox.init_step(jax.random.PRNGKey(0), 4, 3, eta=0.8, lam=0.07, dtype=jnp.float64)
    y = jnp.asarray(np.random.default_rng(3).normal(size=(2,) + SHAPE))
    z, info = deblur.implicit_apply(params, y, op, dict(method="anderson", max_iter=200, tol=1e-12))
    assert bool(jnp.all(info.converged))
    _, lam = prox.step_sizes(params)
    np.testing.assert_allclose(z, op.tikhonov(y, float(lam)), atol=1e-9)


@pytest.mark.x64
@pytest.mark.slow
def test_implicit_output_is_a_fixed_point():
    op = _op()
    params = _random_step()
    y = jnp.asarray(np.random.default_rng(4).normal(scale=0.3, size=(3,) + SHAPE))
    z, info = deblur.implicit_apply(params, y, op, dict(method="anderson", max_iter=300, tol=1e-10))
    assert bool(jnp.all(info.converged))
    fz = prox.prox_grad_cell(z, params, y, op)
    assert float(jnp.linalg.norm(fz - z) / jnp.linalg.norm(fz)) < 1e-9
    # Picard iterates approach the same point
    traj = deblur.trajectory(params, y, op, (0, 1, 200))
    np.testing.assert_allclose(traj[-1], z, atol=1e-6)
    np.testing.assert_allclose(traj[0], 0.0)


@pytest.mark.x64
@pytest.mark.slow
def test_implicit_gradient_matches_finite_differences():
    op = _op(shape=(6, 6))
    params = _random_step(seed=5, channels=2, layers=2)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(scale=0.3, size=(2, 6, 6)))
    y = op.A(x) + 0.01 * jnp.asarray(rng.normal(size=x.shape))
    opts = dict(method="anderson", max_iter=500, tol=1e-12, grad="ift")

    def loss(p):
        return jnp.sum((deblur.implicit_apply(p, y, op, opts)[0] - x) ** 2)

    grads = jax.grad(loss)(params)
    direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), params)
    assert jax.tree.structure(grads) == jax.tree.structure(direction)
    analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    h = 1e-5
    shift = lambda s: jax.tree.map(lambda a, d: a + s * d, params, direction)  # noqa: E731
    numeric = (loss(shift(h)) - loss(shift(-h))) / (2 * h)
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5)


@pytest.mark.slow
def test_unrolled_depth_one_is_the_explicit_model_and_params_scale_with_depth():
    cfg = deblur.PRESETS["tiny"]
    op = _op(shape=(8, 8))
    single = prox.init_step(jax.random.PRNGKey(0), cfg.channels, cfg.cnn_layers)
    y = jnp.asarray(np.random.default_rng(6).normal(size=(2, 8, 8)), jnp.float32)
    stacked = jax.tree.map(lambda a: a[None], single)
    np.testing.assert_allclose(deblur.unrolled_apply(stacked, y, op), deblur.explicit_apply(single, y, op), atol=1e-6)
    for d in (2, 4):
        assert prox.num_params(deblur.init_unrolled(jax.random.PRNGKey(1), d, cfg)) == d * prox.num_params(single)


def test_perturbations_have_the_requested_scale():
    op = _op(shape=(16, 16))
    d = deblur.perturbations(jax.random.PRNGKey(0), (4, 8, 16, 16), op, 0.01)
    rms = np.sqrt(np.mean(np.asarray(d) ** 2, axis=(2, 3)))
    np.testing.assert_allclose(rms[1::2], 0.01, rtol=1e-5)  # band-passed, normalised exactly
    np.testing.assert_allclose(rms[0::2], 0.01, rtol=0.3)  # white noise, in expectation


def test_splits_hold_out_whole_images():
    s = images.make_splits(
        size=16,
        n_train=40,
        n_val=20,
        n_test=12,
        seed=0,
        scale=0.25,
        train_images=("moon", "brick"),
        test_images=("camera",),
    )
    assert set(s.train_images).isdisjoint(s.test_images)
    assert s.sizes() == {"train": 40, "val": 20, "test": 12}
    assert set(images.TRAIN_IMAGES).isdisjoint(images.TEST_IMAGES)
    # validation crops come from rows the training crops never touch
    flat_train = {c.tobytes() for c in s.train}
    assert not any(c.tobytes() in flat_train for c in s.val)
    assert s.train.min() >= 0.0 and s.train.max() <= 1.0
    with pytest.raises(ValueError, match="disjoint"):
        images.make_splits(size=16, n_train=4, n_val=2, n_test=2, train_images=("moon",), test_images=("moon",))


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="preset"):
        deblur.STUDY.configure("huge")
    with pytest.raises(SystemExit) as exit_info:
        domain_deblur.main(["--preset", "huge", "--quiet"])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="kernel"):
        deblur.STUDY.configure("tiny", kernel="box")
    with pytest.raises(ValueError, match="z0"):
        deblur.STUDY.configure("tiny", z0="ones")
    with pytest.raises(ValueError, match="image"):
        images.load_gray("lena")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny study as users run it: float32 (x64 off), whatever test happens to come first."""
    out = tmp_path_factory.mktemp("deblur") / "run"
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", False)
    try:
        assert domain_deblur.main(["--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    finally:
        jax.config.update("jax_enable_x64", previous)
    return out, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_tiny_study_writes_documented_outputs(tiny_run):
    out, metrics = tiny_run
    for name in ("metrics.json", "report.md", *deblur.PLOTS):
        assert (out / name).stat().st_size > 0
    saved = metrics
    assert saved["plots"] == list(deblur.PLOTS)
    assert set(saved) >= {"domain", "config", "data", "models", "sweep", "timing"}
    assert set(saved["models"]) == {"blurred", "wiener", "implicit", "explicit", "unrolled"}
    cfg = deblur.PRESETS["tiny"]
    assert [r["iterations"] for r in saved["sweep"]] == list(cfg.iterations)
    for row in saved["sweep"]:
        assert set(row) == {
            "iterations",
            "psnr",
            "error",
            "lipschitz_max",
            "lipschitz_mean",
            "residual",
            "residual_max",
            "converged_fraction",
        }
        assert row["residual_max"] >= row["residual"]
    assert set(saved["models"]["unrolled"]) == {str(d) for d in cfg.depths}
    imp = saved["models"]["implicit"]
    assert imp["params"] == saved["models"]["explicit"]["params"]
    assert set(imp) >= {"psnr", "converged_fraction", "lipschitz_max", "eta", "lam"}
    assert saved["data"]["sizes"] == {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    assert set(saved["data"]["test_images"]).isdisjoint(saved["data"]["train_images"])
    report = (out / "report.md").read_text()
    for row in saved["sweep"]:
        assert f"| {row['iterations']} | {row['psnr']:.2f} | {row['lipschitz_max']:.3g} |" in report


@pytest.mark.slow
def test_tiny_study_behaviour(tiny_run):
    _, metrics = tiny_run
    m, rows = metrics["models"], metrics["sweep"]
    assert m["wiener"]["psnr"] > m["blurred"]["psnr"]
    assert m["implicit"]["converged_fraction"] == 1.0
    # z_0 = 0 is a constant map of y (Lipschitz 0); later iterates depend on y
    assert rows[0]["lipschitz_max"] == 0.0 and rows[-1]["lipschitz_max"] > 0.0
    # z_0 = 0: the relative residual ||f(0) - 0|| / ||f(0)|| is 1 on every image, none converged
    assert rows[0]["residual"] == pytest.approx(1.0, rel=1e-5) and rows[0]["converged_fraction"] == 0.0
    assert rows[-1]["psnr"] > rows[0]["psnr"] + 5.0
    assert rows[-1]["residual"] < rows[1]["residual"]


@pytest.mark.slow  # 11 s cold of compilation (the fast lane's 3 minutes are measured cold)
def test_training_compiles_one_step_per_model_kind():
    """Steps, validation passes and a second training with an equal (not the same) operator reuse one
    compiled train step and one validation program: the data are arguments, the operator a value-hashed
    static argument."""
    cfg = deblur.STUDY.configure("tiny", steps=4, eval_every=2, train_max_iter=3)
    prob = deblur.make_problem(cfg)
    params = prox.init_step(jax.random.PRNGKey(0), cfg.channels, cfg.cnn_layers, cfg.eta0, cfg.lam0)
    jax.clear_caches()
    _, hist = deblur.train("implicit", params, prob, cfg, jax.random.PRNGKey(1))
    again = deblur.Problem(_op_copy(prob.op), prob.kernel, prob.splits, prob.x, prob.y)
    deblur.train("implicit", params, again, cfg, jax.random.PRNGKey(2))
    assert len(hist["loss"]) == 4 and [s for s, _ in hist["val_psnr"]] == [2, 4]
    assert deblur._train_step._cache_size() == 1
    assert deblur._mean_psnr._cache_size() == 1
    with pytest.raises(ValueError, match="kind"):
        deblur.apply_model("cnn", params, prob.y["val"], prob.op, cfg, True)


def _op_copy(op):
    other = prox.BlurOperator(np.array(op.khat), tuple(op.shape))
    assert other is not op and other == op and hash(other) == hash(op)
    assert other != prox.BlurOperator(2 * np.array(op.khat), tuple(op.shape))
    return other
