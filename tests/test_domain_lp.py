"""Linear-program domain: HiGHS labels, the implicit GNN's fixed point and gradients, the sweep, the script."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.optimize import linprog

import solvers
from experiments import domain_lp
from implicit_rec.domains import gnn, lp, lp_data
from implicit_rec.layers import SolverConfig
from implicit_rec.params import count_params


@pytest.fixture(scope="module")
def lps():
    data, draws = lp_data.generate(12, seed=3)
    return data, draws


def test_labels_are_feasible_and_optimal(lps):
    data, draws = lps
    assert draws >= 12 and data["A"].shape == (12, 10, 50) and data["y"].shape == (12, 50)
    for i in range(12):
        a, b, eq, y = data["A"][i], data["b"][i], data["eq"][i], data["y"][i]
        assert np.count_nonzero(a) == 100
        ax = a @ y
        np.testing.assert_allclose(ax[eq], b[eq], atol=1e-7)
        assert np.all(ax[~eq] <= b[~eq] + 1e-7)
        assert np.all(data["l"][i] <= y + 1e-9) and np.all(y <= data["u"][i] + 1e-9)
        assert data["c"][i] @ y == pytest.approx(data["obj"][i], abs=1e-9)
        # an independent solver (interior point) reaches the same optimal value
        ref = linprog(
            data["c"][i],
            A_ub=a[~eq],
            b_ub=b[~eq],
            A_eq=a[eq] if eq.any() else None,
            b_eq=b[eq] if eq.any() else None,
            bounds=np.stack([data["l"][i], data["u"][i]], 1),
            method="highs-ipm",
        )
        assert ref.status == 0 and ref.fun == pytest.approx(data["obj"][i], abs=1e-6)


def test_generation_is_deterministic_and_cached_without_pickle(tmp_path, lps):
    first, draws = lp_data.load_or_generate(12, 3, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and draws == lps[1]
    with np.load(files[0], allow_pickle=False) as f:
        assert set(lp_data.FIELDS) <= set(f.files)
    again, _ = lp_data.load_or_generate(12, 3, cache_dir=tmp_path)
    for key in lp_data.FIELDS:
        np.testing.assert_array_equal(first[key], lps[0][key])
        np.testing.assert_array_equal(again[key], lps[0][key])


def test_spec_and_preset_errors_name_the_argument():
    with pytest.raises(ValueError, match="nnz"):
        lp_data.LPSpec(nnz=1000)
    with pytest.raises(ValueError, match="preset"):
        lp.STUDY.configure("huge")
    with pytest.raises(ValueError, match="keys"):
        gnn.check_inputs({"A": np.zeros((1, 2, 3))})


def _inputs(lps, count=4, dtype=jnp.float64):
    data = {k: v[:count] for k, v in lps[0].items()}
    return lp.to_inputs(data, lp_data.LPSpec(), dtype)


def _model(d=4, feedback=True, **kw):
    model = gnn.ImplicitGNN(
        d, 10, 50, rngs=nnx.Rngs(0), eval_solver=SolverConfig(max_iter=300, tol=1e-11), feedback=feedback, **kw
    )
    model = jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, model)
    model.eval()
    return model


@pytest.mark.x64
@pytest.mark.slow
def test_implicit_gnn_fixed_point_and_box_readout(lps):
    x, _ = _inputs(lps)
    model = _model()
    z, info = model.layer(x)
    assert bool(info.converged.all())
    fz = model.cell(z, model.cell.prepare(x))
    assert float(jnp.max(jnp.linalg.norm(fz - z, axis=1) / jnp.linalg.norm(z, axis=1))) < 1e-9
    y_hat, _ = model(x)
    assert bool(jnp.all((x["l"] <= y_hat) & (y_hat <= x["u"])))
    # the Picard trajectory starts at the readout of z = 0 and reaches the same fixed point
    traj = model.trajectory(x, 200)
    np.testing.assert_allclose(traj[0], model.cell.enc.readout(jnp.zeros((4, 50, 4)), x), atol=1e-12)
    np.testing.assert_allclose(traj[-1], y_hat, atol=1e-8)


@pytest.mark.x64
@pytest.mark.slow
def test_implicit_gnn_gradients_match_finite_differences(lps):
    x, y = _inputs(lps, count=2)
    model = _model()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        mdl = nnx.merge(graphdef, p, rest)
        return jnp.mean(lp.relative_error(mdl(x)[0], y, 10.0))

    grads = jax.jit(jax.grad(loss))(params)
    loss = jax.jit(loss)
    leaves, treedef = jax.tree.flatten(params)
    assert jax.tree.structure(grads) == treedef
    gleaves = jax.tree.leaves(grads)
    rng = np.random.default_rng(0)
    for idx in (0, len(leaves) // 2, len(leaves) - 1):
        direction = jnp.asarray(rng.normal(size=leaves[idx].shape))
        shifted = lambda h: jax.tree.unflatten(  # noqa: E731
            treedef, [v + h * direction if i == idx else v for i, v in enumerate(leaves)]
        )
        eps = 1e-5
        fd = (loss(shifted(eps)) - loss(shifted(-eps))) / (2 * eps)
        assert float(jnp.sum(gleaves[idx] * direction)) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)


@pytest.mark.slow
def test_explicit_gnn_runs_to_depth_and_rejects_bad_depth(lps):
    x, _ = _inputs(lps, dtype=jnp.float32)
    model = gnn.ExplicitGNN(8, rngs=nnx.Rngs(0), depth=4)
    y_hat, _ = model(x)
    assert y_hat.shape == (4, 50) and len(model.mats) == 4
    assert count_params(model) > count_params(gnn.ImplicitGNN(8, 10, 50, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="depth"):
        gnn.ExplicitGNN(8, rngs=nnx.Rngs(0), depth=0)


@pytest.mark.slow
def test_sweep_lipschitz_is_the_empirical_lipschitz_of_each_iterate(lps):
    """The sweep's one-call Lipschitz estimate equals solvers.empirical_lipschitz of each z_k's readout."""
    cfg = lp.STUDY.configure(
        "tiny", iterations=(0, 1, 3), sweep_method="picard", lipschitz_examples=3, lipschitz_perturbations=2
    )
    model = lp.build("implicit", 4, cfg, 0)
    model.eval()
    x, y = _inputs(lps, 3, jnp.float32)
    rows = lp.sweep_implicit(model, x, y, cfg)
    assert [r.iterations for r in rows] == [0, 1, 3]
    x_lip, deltas = lp.lipschitz_inputs(x, cfg)
    graphdef, state = nnx.split(model)
    for row in rows:  # k = 0 too: the box readout of z_0 = 0 still depends on l and u
        ref = solvers.empirical_lipschitz(  # P + 1 separate calls of z_k's readout alone
            lambda v, k=row.iterations: nnx.merge(graphdef, state).trajectory(v, k)[-1], x_lip, deltas
        )
        assert row.lipschitz_max == pytest.approx(float(ref.max), rel=1e-4)
        assert row.lipschitz_mean == pytest.approx(float(ref.mean), rel=1e-4)
        err = float(jnp.mean(lp.relative_error(model.trajectory(x, row.iterations)[-1], y, cfg.spec.bound_std)))
        assert row.metrics["error"] == pytest.approx(err, rel=1e-5)


@pytest.mark.slow
def test_tiny_experiment_writes_documented_outputs(tmp_path):
    out = tmp_path / "lp"
    assert (
        domain_lp.main(["--preset", "tiny", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"domain", "config", "dataset", "baselines", "models", "sweep", "paper", "timing", "plots"} <= set(metrics)
    cfg = lp.PRESETS["tiny"]
    ds = metrics["dataset"]
    n_val = round(cfg.val_fraction * cfg.n_train)
    assert (ds["train"], ds["val"], ds["test"]) == (cfg.n_train - n_val, n_val, cfg.n_test)
    assert ds["solved_fraction"] == pytest.approx((cfg.n_train + cfg.n_test) / (ds["train_draws"] + ds["test_draws"]))
    # the greedy box baseline, recomputed in float64 from the cached test LPs
    test_lps, test_draws = lp_data.load_or_generate(cfg.n_test, 2 * cfg.seed + 1, cfg.spec, tmp_path / "cache")
    assert test_draws == ds["test_draws"]
    greedy = np.where(test_lps["c"] > 0, test_lps["l"], test_lps["u"])
    greedy_error = np.mean(
        np.linalg.norm(greedy - test_lps["y"], axis=1) / (np.linalg.norm(test_lps["y"], axis=1) + 1.0)
    )
    assert metrics["baselines"]["greedy_box"] == pytest.approx(greedy_error, rel=1e-5)
    for kind in ("implicit", "explicit"):
        for d in cfg.dims:
            entry = metrics["models"][kind][str(d)]
            assert entry["width"] == d and entry["params"] == count_params(lp.build(kind, d, cfg, cfg.seed))
            # one validation pass (epoch 2 of 2); the restored parameters are those of the best one
            assert [h["epoch"] for h in entry["history"]] == [2]
            assert entry["best_val_error"] == min(h["val_error"] for h in entry["history"])
    for d in cfg.dims:
        rows = metrics["sweep"][str(d)]
        assert [r["iterations"] for r in rows] == list(cfg.iterations)
        assert all(r["lipschitz_max"] >= r["lipschitz_mean"] > 0 for r in rows)
        assert "lipschitz_max" in metrics["models"]["explicit"][str(d)]
    for name in metrics["plots"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # the report shows the computed numbers: ours next to the paper's row, the baseline and the sweep
    report = (out / "report.md").read_text()
    paper = {kind: dict(zip(lp.PAPER["dims"], lp.PAPER[kind])) for kind in ("explicit", "implicit")}
    for d in cfg.dims:
        ours = [metrics["models"][kind][str(d)] for kind in ("explicit", "implicit")]
        assert (
            f"| {d} | {paper['explicit'][d]} | {paper['implicit'][d]} | "
            + " | ".join(f"{e['test_error']:.3f} ({e['params']:,} p)" for e in ours)
            + " |"
        ) in report
        for r in metrics["sweep"][str(d)]:
            assert f"| implicit | {r['iterations']} | {r['error']:.4g} | {r['lipschitz_max']:.4g} |" in report
    assert f"{metrics['baselines']['greedy_box']:.3f}." in report
    assert list(tmp_path.glob("lp.tmp*")) == []


def test_bad_preset_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        domain_lp.main(["--preset", "huge"])
    assert "--preset" in capsys.readouterr().err


@pytest.mark.slow  # 14 s cold of compilation (the fast lane's 3 minutes are measured cold)
def test_training_and_chunked_prediction_compile_once(lps):
    """Three epochs (validation after each) compile the train step once, and validation and a test pass
    whose last chunk is short share one compiled forward: the short chunk is padded, without changing
    the real rows."""
    cfg = lp.STUDY.configure("tiny", epochs=3, eval_every=1, batch_size=4, train_max_iter=4, eval_max_iter=6)
    x, y = _inputs(lps, 12, jnp.float32)
    model = lp.build("implicit", 2, cfg, 0)
    jax.clear_caches()
    lp.train(model, lp.take(x, slice(0, 8)), y[:8], lp.take(x, slice(8, 12)), y[8:], cfg)
    x_te = lp.take(x, slice(0, 6))
    y_hat, info = lp.predict(model, x_te, batch=4, with_info=True)  # chunks of 4 and 2 (padded to 4)
    assert lp._train_step.jitted_fn._cache_size() == 1
    assert lp._forward.jitted_fn._cache_size() == 1
    whole, info_whole = lp.predict(model, x_te, batch=6, with_info=True)
    assert y_hat.shape == (6, 50)
    np.testing.assert_allclose(y_hat, whole, rtol=1e-5, atol=1e-6)
    assert info == pytest.approx(info_whole)


def test_matched_width_is_built_abstractly(caplog):
    """The matched width search draws and compiles nothing, and picks the widest explicit GNN within the budget."""
    cfg = lp.PRESETS["tiny"]
    budget = count_params(lp.build("implicit", 8, cfg, 0))
    jax.clear_caches()
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        width = lp.matched_width(budget, cfg)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling")] == []
    assert count_params(lp.build("explicit", width, cfg, 0)) <= budget
    assert count_params(lp.build("explicit", width + 1, cfg, 0)) > budget
