"""PDE domain: reference solver, Fourier layers, implicit FNO fixed point and gradients, the tiny study."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import domain_pde
from implicit_rec.domains import fourier, pde, pde_study
from implicit_rec.layers import SolverConfig
from implicit_rec.params import count_params


def _grid(n):
    t = np.arange(n) / n
    return np.meshgrid(t, t, indexing="ij")


# -- reference solver -------------------------------------------------------------------------------
def test_solver_recovers_discrete_manufactured_solution():
    x, y = _grid(32)
    u_star = np.stack([np.sin(2 * np.pi * x) * np.cos(4 * np.pi * y) + 0.5, 1.5 * np.cos(2 * np.pi * (x + y))])
    a = np.stack([np.exp(0.5 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y)), 0.2 + x * (1 - x)])
    f = pde.operator(u_star, a)
    u, info = pde.solve(a, f, tol=1e-12)
    np.testing.assert_allclose(u, u_star, atol=1e-9)
    assert np.all(info.residual <= 1e-12) and np.all(info.newton_steps >= 2)


def test_discretization_converges_at_second_order_to_the_continuous_solution():
    # u = sin(2 pi x) cos(2 pi y), a = exp(0.3 cos(2 pi x)):
    # -div(a grad u) = -a'(x) 2 pi cos(2 pi x) cos(2 pi y) + 8 pi^2 a u, a' = -0.6 pi sin(2 pi x) a.
    errors = []
    for n in (16, 32, 64):
        x, y = _grid(n)
        u = np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y)
        a = np.exp(0.3 * np.cos(2 * np.pi * x))
        da = -0.6 * np.pi * np.sin(2 * np.pi * x) * a
        f = -da * 2 * np.pi * np.cos(2 * np.pi * x) * np.cos(2 * np.pi * y) + 8 * np.pi**2 * a * u + u + u**3
        uh, _ = pde.solve(a[None], f[None])
        errors.append(np.abs(uh[0] - u).max())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.8), (errors, rates)


def test_solver_rejects_bad_input():
    a = np.ones((2, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        pde.solve(-a, a)
    with pytest.raises(ValueError, match="shape"):
        pde.solve(a, a[:, :4])


def test_grf_is_deterministic_with_unit_variance():
    g = pde.grf(np.random.default_rng(1), 400, 16)
    assert g.shape == (400, 16, 16)
    assert abs(g.var() - 1.0) < 0.1 and abs(g.mean()) < 0.1
    np.testing.assert_array_equal(g, pde.grf(np.random.default_rng(1), 400, 16))
    g0 = pde.grf(np.random.default_rng(2), 400, 16, zero_mean=True)
    assert abs(g0.var() - 1.0) < 0.1 and np.abs(g0.mean(axis=(1, 2))).max() < 1e-12


def test_dataset_is_deterministic_and_cached_as_npz(tmp_path):
    cfg = pde.PDEConfig(n=8, n_train=4, n_valid=2, n_test=2, seed=3)
    first = pde.make_dataset(cfg, tmp_path)
    files = list(tmp_path.iterdir())
    assert [p.name for p in files] == [f"pde-{cfg.key()}.npz"]
    with np.load(files[0], allow_pickle=False) as z:
        assert set(z.files) >= {"x_train", "u_train", "x_test", "u_test"}
    again = pde.make_dataset(cfg, tmp_path)  # from the cache
    fresh = pde.make_dataset(cfg)  # recomputed
    for key in ("x_train", "u_train", "x_valid", "u_valid", "x_test", "u_test"):
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(first[key], fresh[key])
    assert first["x_train"].shape == (4, 8, 8, 2) and first["u_test"].shape == (2, 8, 8)
    u = pde.solution_map(first["x_train"], cfg)
    a, f = pde.fields(first["x_train"], cfg)
    np.testing.assert_allclose(pde.operator(u, a), f, atol=1e-8 * np.abs(f).max())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n must be even"):
        pde.PDEConfig(n=9)
    with pytest.raises(ValueError, match="f_scale"):
        pde.PDEConfig(f_scale=0.0)


# -- Fourier layers ---------------------------------------------------------------------------------
@pytest.mark.x64
def test_spectral_conv_equals_direct_circular_convolution():
    n, m = 8, 3
    rng = np.random.default_rng(0)
    # a real kernel band-limited to |k_x|, |k_y| < m (kept by the layer), and its mode weights
    kh = np.fft.rfft2(rng.normal(size=(n, n)))
    keep = np.zeros_like(kh, dtype=bool)
    keep[:m, :m] = keep[n - m + 1 :, :m] = True
    kernel = np.fft.irfft2(np.where(keep, kh, 0), s=(n, n))
    kh = np.fft.rfft2(kernel)
    weight = np.concatenate([kh[:m, :m], kh[n - m :, :m]], axis=0)[:, :, None, None]
    v = rng.normal(size=(2, n, n))
    direct = np.zeros_like(v)
    for i in range(n):
        for j in range(n):
            direct += kernel[i, j] * np.roll(v, (i, j), axis=(1, 2))
    out = fourier.spectral_conv(jnp.asarray(v[..., None]), jnp.asarray(weight))[..., 0]
    np.testing.assert_allclose(out, direct, atol=1e-10)


@pytest.mark.x64
@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_models_are_equivariant_to_grid_shifts():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 2))
    shift = lambda v: jnp.roll(v, (3, -5), axis=(1, 2))  # noqa: E731
    implicit = fourier.ImplicitFNO(16, 2, 4, 4, rngs=nnx.Rngs(0), eval_solver=SolverConfig(max_iter=80, tol=1e-12))
    implicit.eval()
    for model in (implicit, fourier.ExplicitFNO(16, 2, 4, 4, rngs=nnx.Rngs(1), depth=2)):
        predict = nnx.jit(lambda m, v: m(v)[0])
        np.testing.assert_allclose(predict(model, shift(x)), shift(predict(model, x)), atol=1e-9)


def _dense(linear, n, c):
    """Matrix of a linear map on (n, n, c) fields, by applying it to the basis."""
    basis = jnp.eye(n * n * c).reshape(-1, n, n, c)
    return np.asarray(jax.jit(linear)(basis)).reshape(n * n * c, -1).T


@pytest.mark.x64
@pytest.mark.slow
def test_contraction_rescaling_bounds_the_operator_norm():
    n, width = 8, 3
    cell = fourier.FourierCell(n, 2, width, 3, rngs=nnx.Rngs(0), gamma=0.5)
    cell.spectral.real[...] = 20 * cell.spectral.real[...]  # far from contractive before rescaling
    r, w = cell.spectral.weight(), cell.pointwise.linear.kernel[...]
    raw = _dense(lambda v: fourier.spectral_conv(v, r) + v @ w, n, width)
    assert np.linalg.norm(raw, 2) <= float(fourier.operator_norm(r, w)) * (1 + 1e-9)
    assert np.linalg.norm(raw, 2) > 1.0
    r, w = cell.operator()
    eff = _dense(lambda v: fourier.spectral_conv(v, r) + v @ w, n, width)
    assert np.linalg.norm(eff, 2) <= 0.5 / 1.13 * (1 + 1e-9)


@pytest.mark.x64
@pytest.mark.slow
def test_implicit_fno_output_is_a_fixed_point_and_depth_one_equals_explicit():
    n, width = 8, 4
    x = jax.random.normal(jax.random.PRNGKey(1), (3, n, n, 2))
    model = fourier.ImplicitFNO(
        n, 2, width, 3, rngs=nnx.Rngs(0), gamma=None, eval_solver=SolverConfig(max_iter=200, tol=1e-10)
    )
    model.eval()
    z, info = nnx.jit(lambda m, v: m.layer(v))(model, x)
    ctx = model.layer.cell.prepare(x)
    np.testing.assert_allclose(model.layer.cell(z, ctx), z, atol=1e-8)
    assert bool(info.converged.all())
    explicit = fourier.ExplicitFNO(n, 2, width, 3, rngs=nnx.Rngs(5), depth=1)
    assert count_params(explicit) == count_params(model)
    explicit.lift, explicit.project = model.layer.cell.lift, model.project
    explicit.layers[0].spectral, explicit.layers[0].pointwise = model.layer.cell.spectral, model.layer.cell.pointwise
    np.testing.assert_allclose(model.trajectory(x, 1)[1], explicit(x)[0], atol=1e-10)


def _tiny_loss(grad, phantom_steps=1):
    """(loss(params), params) for a tiny implicit FNO in float64, solved to 1e-13."""
    n = 8
    x = jax.random.normal(jax.random.PRNGKey(2), (2, n, n, 2))
    target = jax.random.normal(jax.random.PRNGKey(3), (2, n, n))
    solver = SolverConfig(max_iter=200, tol=1e-13, grad=grad, phantom_steps=phantom_steps)
    model = fourier.ImplicitFNO(
        n, 2, 3, 2, rngs=nnx.Rngs(0), hidden=5, gamma=0.8, train_solver=solver, eval_solver=solver
    )
    model.eval()  # no step counter to update inside jax.grad
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

    def loss(params):
        pred, _ = nnx.merge(graphdef, params, rest)(x)
        return jnp.sum((pred - target) ** 2)

    return loss, params


def _directional(grads, direction):
    assert jax.tree.structure(grads) == jax.tree.structure(direction)
    return float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction))))


@pytest.mark.x64
@pytest.mark.slow
def test_implicit_fno_gradients_match_finite_differences():
    loss, params = _tiny_loss("ift")
    direction = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape, p.dtype), params)
    eps = 1e-5
    shifted = jax.jit(lambda s: loss(jax.tree.map(lambda p, d: p + s * d, params, direction)))
    numeric = (float(shifted(eps)) - float(shifted(-eps))) / (2 * eps)
    ift = _directional(jax.jit(jax.grad(loss))(params), direction)
    np.testing.assert_allclose(ift, numeric, rtol=1e-5)
    # phantom gradients: k damped steps truncate the Neumann series of the implicit gradient
    loss_p, _ = _tiny_loss("phantom", phantom_steps=12)
    phantom = _directional(jax.jit(jax.grad(loss_p))(params), direction)
    np.testing.assert_allclose(phantom, numeric, rtol=2e-2)


def test_bad_model_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="modes"):
        fourier.ImplicitFNO(8, 2, 4, 5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="gamma"):
        fourier.FourierCell(8, 2, 4, 2, rngs=nnx.Rngs(0), gamma=1.5)
    with pytest.raises(ValueError, match="activation"):
        fourier.ExplicitFNO(8, 2, 4, 2, rngs=nnx.Rngs(0), activation="relu6")
    with pytest.raises(ValueError, match="depth"):
        fourier.ExplicitFNO(8, 2, 4, 2, rngs=nnx.Rngs(0), depth=0)


@pytest.mark.slow
def test_iteration_sweep_rows_match_an_independent_picard_loop():
    """Sweep rows (error, residual, converged fraction) against z_{k+1} = f(z_k) written out by hand,
    with eval_tol between two samples' residuals at k = 4, so exactly half the samples count there."""
    n, batch, ks = 8, 6, (0, 1, 2, 4, 8)
    scales = jnp.array([0.3, 0.5, 1.0, 2.0, 4.0, 8.0])[:, None, None, None]
    x = scales * jax.random.normal(jax.random.PRNGKey(4), (batch, n, n, 2))
    u = jax.random.normal(jax.random.PRNGKey(5), (batch, n, n))
    model = fourier.ImplicitFNO(
        n,
        2,
        3,
        2,
        rngs=nnx.Rngs(0),
        hidden=5,
        gamma=0.9,
        eval_solver=SolverConfig(method="picard", max_iter=ks[-1], tol=1e-30),
    )  # never stops
    model.eval()
    cell, ctx = model.layer.cell, model.layer.cell.prepare(x)

    @jax.jit
    def picard(z):  # z_k -> (z_{k+1}, relative residual of z_k, error of z_k's prediction)
        fz = cell(z, ctx)
        residual = jnp.linalg.norm(fz - z, axis=-1) / jnp.linalg.norm(fz, axis=-1)
        return fz, residual, pde_study.relative_l2(model.readout(z), u)

    z = jnp.zeros((batch, model.layer.d_state))
    errors, residuals = [], []
    for _ in range(ks[-1] + 1):
        z, res, err = picard(z)
        residuals.append(np.asarray(res))
        errors.append(np.asarray(err))
    at4 = np.sort(residuals[4])
    assert at4[2] < 0.9 * at4[3], at4  # a clear gap to put the tolerance in
    eval_tol = float(np.sqrt(at4[2] * at4[3]))
    cfg = pde_study.PDEStudyConfig(
        n=n, iterations=ks, eval_tol=eval_tol, lipschitz_examples=2, lipschitz_perturbations=2
    )
    deltas = 1e-3 * np.asarray(jax.random.normal(jax.random.PRNGKey(6), (2, 2, n, n, 2)))
    rows = pde_study.iteration_sweep(model, {"x_test": np.asarray(x), "u_test": np.asarray(u)}, cfg, deltas, chunk=3)
    assert [r.iterations for r in rows] == list(ks)
    for row in rows:
        k = row.iterations
        assert row.metrics["error"] == pytest.approx(float(np.mean(errors[k])), rel=1e-4)
        assert row.residual == pytest.approx(float(np.mean(residuals[k])), rel=1e-4)
        assert row.converged_fraction == np.count_nonzero(residuals[k] <= eval_tol) / batch
    assert rows[ks.index(4)].converged_fraction == 0.5


# -- the study --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny study as users run it: float32 (x64 off), whatever test happens to come first."""
    out = tmp_path_factory.mktemp("pde") / "domain-pde"
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", False)
    try:
        assert domain_pde.main(["--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    finally:
        jax.config.update("jax_enable_x64", previous)
    return out, json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_tiny_study_writes_documented_outputs(tiny_run):
    out, metrics = tiny_run
    assert {"domain", "config", "dataset", "models", "sweep", "reference_solver", "timing", "plots"} <= set(metrics)
    assert {"n_train", "n_valid", "n_test", "grid", "solver_residual_max"} <= set(metrics["dataset"])
    for m in metrics["models"].values():
        assert {
            "params",
            "depth",
            "test_rel_l2",
            "valid_rel_l2",
            "lipschitz_max",
            "lipschitz_mean",
            "train_seconds",
        } <= set(m)
        assert np.isfinite(m["test_rel_l2"]) and m["lipschitz_max"] >= m["lipschitz_mean"] > 0
    models = metrics["models"]
    assert models["implicit FNO"]["params"] == models["FNO-1 (equal params)"]["params"]
    assert [r["iterations"] for r in metrics["sweep"]] == list(pde_study.PRESETS["tiny"].iterations)
    for row in metrics["sweep"]:
        assert {"iterations", "error", "lipschitz_max", "lipschitz_mean", "residual", "converged_fraction"} <= set(row)
    for name in pde_study.PLOTS + ("report.md",):
        assert (out / name).stat().st_size > 0
    assert "| implicit FNO |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_tiny_study_sweep_behaves(tiny_run):
    _, metrics = tiny_run
    rows = metrics["sweep"]
    assert rows[0]["lipschitz_max"] == 0.0  # k = 0: the prediction ignores the input
    assert rows[-1]["error"] < rows[0]["error"]
    assert rows[-1]["residual"] < 1e-2 * rows[1]["residual"]  # the iteration converges
    # k = 0: z = 0, so the relative residual ||f(0) - 0|| / ||f(0)|| is 1 and nothing has converged
    assert rows[0]["residual"] == pytest.approx(1.0, rel=1e-5) and rows[0]["converged_fraction"] == 0.0
    # the sweep's solver stops a sample at eval_tol and freezes it there: the fraction never drops
    fractions = [r["converged_fraction"] for r in rows]
    assert fractions == sorted(fractions)


def test_bad_preset_and_seed_give_clear_errors(capsys):
    with pytest.raises(SystemExit):
        domain_pde.main(["--preset", "huge", "--out", "unused"])
    assert "--preset 'huge' is not known" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed"):
        pde_study.STUDY.configure("tiny", seed=-1)
    with pytest.raises(SystemExit):
        domain_pde.main(["--preset", "tiny", "--seed", "-1", "--out", "unused"])
    assert "--seed" in capsys.readouterr().err


@pytest.mark.slow  # 10 s cold of compilation (the fast lane's 3 minutes are measured cold)
def test_training_and_chunked_evaluation_compile_once():
    """Two epochs compile the train step once; validation and a test set whose last chunk is short share
    one compiled forward (the short chunk is padded, without changing the real samples)."""
    cfg = pde_study.STUDY.configure("tiny", epochs=2, batch_size=4, train_max_iter=3, eval_max_iter=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(14, cfg.n, cfg.n, 2)).astype(np.float32)
    u = rng.normal(size=(14, cfg.n, cfg.n)).astype(np.float32)
    data = {"x_train": x[:8], "u_train": u[:8], "x_valid": x[8:12], "u_valid": u[8:12]}
    model = pde_study.build_models(cfg)["implicit FNO"][0]
    jax.clear_caches()
    fit = pde_study.fit(model, data, cfg)
    pred = pde_study.predict(model, x[:6], chunk=4)  # chunks of 4 and 2 (padded to 4)
    assert len(fit["history"]) == 2
    assert pde_study._train_step.jitted_fn._cache_size() == 1
    assert pde_study._predict.jitted_fn._cache_size() == 1
    np.testing.assert_allclose(pred, pde_study.predict(model, x[:6], chunk=6), rtol=1e-5, atol=1e-6)
