"""The sweep core (typed rows, iteration counts, table, plot) and the recommendation adapter's rows."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from implicit_rec.sweep import ExplicitPoint, LipschitzRow, xla_flops
from implicit_rec.sweep_core import SweepRow, check_iterations, plot_sweep, sweep_rows, sweep_table


def test_xla_flops_count_a_matrix_product():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert xla_flops(lambda a, b: a @ b, a, b) == 2 * 8 * 16 * 4


def test_xla_flops_of_the_lowered_program_match_the_compiled_count():
    """Counted before compilation, the FLOPs equal XLA's count on the compiled program."""
    import jax

    def net(w1, w2, x):
        return jnp.sum(jnp.tanh(jnp.maximum(x @ w1, 0.0) @ w2) * 2.0 + x[:, :4])

    args = (jnp.ones((16, 32)), jnp.ones((32, 4)), jnp.ones((8, 16)))
    cost = jax.jit(net).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    assert xla_flops(net, *args) == pytest.approx(cost["flops"])


def test_rows_round_trip_through_json_with_the_recommendation_keys():
    rows = sweep_rows(
        (0, 2, 8),
        {"auc": [0.5, 0.7, 0.75], "gauc": [0.5, 0.6, 0.65], "logloss": [0.69, 0.5, 0.45]},
        method="picard",
        residual=[1.0, 0.1, 0.001],
        converged_fraction=[0.0, 0.25, 1.0],
        seconds=[0.1, float("nan"), 0.3],
        flops=np.array([10.0, 30.0, 90.0]),
    )
    d = rows[1].to_dict()
    assert list(d) == [
        "method",
        "iterations",
        "auc",
        "gauc",
        "logloss",
        "residual",
        "converged_fraction",
        "seconds",
        "flops",
    ]
    assert d["iterations"] == 2 and d["auc"] == 0.7 and d["flops"] == 30.0 and np.isnan(d["seconds"])
    back = [SweepRow.from_dict(json.loads(json.dumps(r.to_dict()))) for r in rows]
    assert [b.to_dict()["auc"] for b in back] == [0.5, 0.7, 0.75]
    assert back[2] == rows[2] and back[2].get("logloss") == 0.45 and back[2].get("lipschitz_max") is None


def test_domain_rows_carry_iterations_error_and_lipschitz_only():
    rows = sweep_rows((0, 1), {"error": [0.4, 0.2]}, lipschitz_max=[0.0, 2.0], lipschitz_mean=[0.0, 1.5])
    assert rows[1].to_dict() == {"iterations": 1, "error": 0.2, "lipschitz_max": 2.0, "lipschitz_mean": 1.5}
    assert SweepRow.from_dict(rows[1].to_dict()) == rows[1]


def test_rows_reject_bad_input():
    with pytest.raises(ValueError, match="'lipschitz_max' has 1 values for 2 iteration counts"):
        sweep_rows((0, 1), {"error": [0.4, 0.2]}, lipschitz_max=[1.0])
    with pytest.raises(TypeError, match=r"unknown column\(s\) \['lipschitz'\]"):
        sweep_rows((0, 1), {"error": [0.4, 0.2]}, lipschitz=[1.0, 2.0])
    with pytest.raises(ValueError, match="iterations must be a non-empty strictly increasing"):
        sweep_rows((2, 1), {"error": [0.4, 0.2]})
    with pytest.raises(ValueError, match="may not hold the row's own fields"):
        SweepRow(1, {"residual": 0.1})
    with pytest.raises(KeyError, match="'iterations'"):
        SweepRow.from_dict({"k": 1, "error": 0.1})


@pytest.mark.parametrize(
    "bad, error, words",
    [
        ([0, 1.5], TypeError, ["iterations[1]", "1.5"]),
        ("012", TypeError, ["iterations", "'012'"]),
        ([True, 2], TypeError, ["iterations[0]"]),
        ([], ValueError, ["non-empty"]),
        ([0, 0], ValueError, ["strictly increasing"]),
        ([-1, 2], ValueError, ["iterations[0]", ">= 0"]),
    ],
)
def test_check_iterations_names_the_bad_entry(bad, error, words):
    with pytest.raises(error) as info:
        check_iterations(bad)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_check_iterations_normalizes_numpy_integers():
    assert check_iterations(np.arange(3)) == (0, 1, 2) and type(check_iterations(np.arange(3))[0]) is int


def test_table_and_plot(tmp_path):
    rows = sweep_rows((0, 4), {"error": [0.5, 0.25]}, lipschitz_max=[0.0, 3.0], lipschitz_mean=[0.0, 1.0])
    cols = {"error": "error", "lipschitz_max": "Lipschitz max", "lipschitz_mean": "Lipschitz mean"}
    table = sweep_table(rows, cols, label="implicit", baselines={"explicit": {"iterations": 4, "error": 0.3}})
    lines = table.splitlines()
    assert lines[0] == "| model | k | error | Lipschitz max | Lipschitz mean |"
    assert lines[3] == "| implicit | 4 | 0.25 | 3 | 1 |"
    assert lines[4] == "| explicit | 4 | 0.3 | - | - |"
    plain = sweep_table([r.to_dict() for r in rows], {"error": "test error"}, formats={"error": ".2f"})
    assert plain.splitlines()[2:] == ["| 0 | 0.50 |", "| 4 | 0.25 |"]
    with pytest.raises(ValueError, match="baselines need a label"):
        sweep_table(rows, cols, baselines={"explicit": {"iterations": 4}})
    path = tmp_path / "p.png"
    plot_sweep({"implicit": rows}, path, column="error", baselines={"explicit": (4, 0.3)}, logy=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(tmp_path.iterdir()) == [path]


def test_recommendation_lipschitz_and_explicit_rows_keep_their_keys():
    assert LipschitzRow(2.0, 1.0, "anderson", 4).to_dict() == {
        "method": "anderson",
        "iterations": 4,
        "max": 2.0,
        "mean": 1.0,
    }
    assert LipschitzRow(2.0, 1.0).to_dict() == {"max": 2.0, "mean": 1.0}
    point = ExplicitPoint(2, {"auc": 0.7, "gauc": 0.6, "logloss": 0.5}, 0.1, 100.0)
    assert list(point.to_dict()) == ["depth", "auc", "gauc", "logloss", "seconds", "flops"]


# -- the recommendation sweep on a tiny implicit VM ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vm():
    from flax import nnx

    from implicit_rec.data.synthetic import synthetic_events
    from implicit_rec.layers import SolverConfig
    from implicit_rec.loopfm.batches import table_batches
    from implicit_rec.models.vertical import VerticalModel

    table = synthetic_events("tiny", seed=0)
    solver = SolverConfig(method="anderson", max_iter=30, tol=1e-3)
    vm = VerticalModel(
        table.schema, table.vocab_sizes, rngs=nnx.Rngs(0), arch="implicit", max_len=8, d_state=8, eval_solver=solver
    )
    vm.eval()
    rows = table.rows("test")[:600]
    return vm, table_batches(table), rows, np.asarray(table["label"][rows]), np.asarray(table["user"][rows])


@pytest.mark.parametrize("method", ["anderson", "picard"])
def test_the_timed_score_at_k_equals_the_trajectory_at_k_with_one_compilation(tiny_vm, method):
    from implicit_rec import sweep as sweep_mod

    vm, make, rows, _, _ = tiny_vm
    x = sweep_mod._take(sweep_mod.vm_features(vm, make, rows[:64]), slice(None))
    traj = vm.core.trajectory(x, steps=6, readout=lambda z: vm.head(z)[:, 0], method=method)
    for key in [key for key in sweep_mod._JITTED if key[1] == ("score", method)]:
        del sweep_mod._JITTED[key]  # other tests of this process may have scored other models and shapes
    before = sweep_mod._scorer(vm, method)
    for k in (0, 1, 3, 6):
        np.testing.assert_allclose(sweep_mod.score_at(vm, x, k, method), traj[k], rtol=1e-5, atol=1e-6)
    assert sweep_mod._scorer(vm, method) is not before  # a new closure over the state ...
    assert len([key for key in sweep_mod._JITTED if key[1] == ("score", method)]) == 1  # ... of one jitted function
    jitted = next(f for key, f in sweep_mod._JITTED.items() if key[1] == ("score", method))
    assert jitted._cache_size() == 1  # every k ran through one compilation
    assert not np.allclose(traj[1], traj[6])  # the k's differ: the check has teeth


@pytest.mark.slow  # compiles the trajectory, the scorer and the FLOP counts (about 10 s cold)
def test_implicit_sweep_times_every_k_and_brackets_the_auc(tiny_vm):
    from implicit_rec import metrics
    from implicit_rec import sweep as sweep_mod

    vm, make, rows, labels, users = tiny_vm
    out = sweep_mod.implicit_sweep(
        vm, make, rows, labels, users, (0, 2, 4), "anderson", repeats=1, keep=(2, 3), n_boot=200
    )
    assert [r.iterations for r in out.rows] == [0, 2, 4] and set(out.predictions) == {2}
    for r in out.rows:
        d = r.to_dict()
        assert list(d)[2:5] == ["auc", "auc_ci_low", "auc_ci_high"]
        assert np.isfinite(d["seconds"]) and d["seconds"] > 0
        if r.iterations:
            assert d["auc_ci_low"] < d["auc"] < d["auc_ci_high"]
    p2 = out.predictions[2]
    assert p2.dtype == np.float32 and p2.shape == (len(rows),)
    assert metrics.auc(labels, p2) == pytest.approx(out.rows[1].get("auc"), abs=1e-6)
    scored = []  # rows of every timed score_at pass
    scorer = sweep_mod._scorer

    def spy(model, method):
        score = scorer(model, method)
        return lambda x, k: scored.append(sweep_mod._num_rows(x)) or score(x, k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_mod, "_scorer", spy)
        again = sweep_mod.implicit_sweep(
            vm, make, rows, labels, users, (0, 2, 4), "anderson", repeats=1, timing_rows=16, n_boot=200
        )
    assert set(scored) == {16} and len(rows) > 16  # only the first 16 rows were timed ...
    assert [r.metrics for r in again.rows] == [r.metrics for r in out.rows]  # ... every row was scored; deterministic


@pytest.mark.slow  # compiles the trajectory and the scorer at two chunk sizes
def test_implicit_sweep_streams_chunks_and_equals_one_pass(tiny_vm):
    """The front end and the trajectory run chunk by chunk (what the core reads is never held for every
    row: GBs on the large preset); the timed rows (100: across a chunk boundary) are kept from the
    first chunks. The result is the one-chunk pass's, up to float rounding."""
    from implicit_rec import sweep as sweep_mod

    vm, make, rows, labels, users = tiny_vm
    features, seen = sweep_mod._FEATURES, []

    def spy(model, batch):
        x = features(model, batch)
        seen.append(sweep_mod._num_rows(x))
        return x

    timed = []
    scorer = sweep_mod._scorer

    def timed_spy(model, method):
        score = scorer(model, method)
        return lambda x, k: timed.append(sweep_mod._num_rows(x)) or score(x, k)

    args = (vm, make, rows, labels, users, (0, 3), "anderson")
    kwargs = {"repeats": 1, "timing_rows": 100, "keep": (3,), "n_boot": 100}
    whole = sweep_mod.implicit_sweep(*args, chunk=len(rows), **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_mod, "_FEATURES", spy)
        mp.setattr(sweep_mod, "_scorer", timed_spy)
        chunked = sweep_mod.implicit_sweep(*args, chunk=64, **kwargs)
    assert len(rows) % 64 and set(seen) == {64} and len(seen) >= -(-len(rows) // 64)  # chunks only
    assert set(timed) == {100}
    for a, b in zip(chunked.rows, whole.rows):  # other batch shapes, other programs: equal up to rounding
        assert dict(a.metrics) == pytest.approx(dict(b.metrics), rel=1e-6)
    np.testing.assert_allclose(chunked.predictions[3], whole.predictions[3], rtol=1e-6, atol=1e-7)


def test_timed_rows_are_the_first_rows_and_zero_means_all():
    from implicit_rec.sweep import timed_rows

    rows = np.arange(100, 110)
    assert timed_rows(rows, 3).tolist() == [100, 101, 102]
    assert timed_rows(rows, 0).tolist() == rows.tolist() == timed_rows(rows, 50).tolist()
    with pytest.raises(ValueError, match="timing_rows must be >= 0"):
        timed_rows(rows, -1)


@pytest.mark.slow  # compiles an explicit VM's forward pass and its FLOP count
def test_explicit_point_takes_known_probabilities_instead_of_scoring_again(tiny_vm):
    from flax import nnx

    from implicit_rec import sweep as sweep_mod
    from implicit_rec.data.synthetic import synthetic_events
    from implicit_rec.loopfm.batches import table_batches
    from implicit_rec.models import training
    from implicit_rec.models.vertical import VerticalModel

    table = synthetic_events("tiny", seed=0)
    din = VerticalModel(table.schema, table.vocab_sizes, rngs=nnx.Rngs(0), arch="din", max_len=8, hidden=(8,))
    _, _, rows, labels, users = tiny_vm
    make = table_batches(table)
    scored = sweep_mod.explicit_point(din, make, rows, labels, users, repeats=1, timing_rows=64)
    predicted = []

    def spy(model, make_batch, rows, **options):
        predicted.append(len(rows))
        return training.predict(model, make_batch, rows, **options)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_mod, "predict", spy)
        given = sweep_mod.explicit_point(
            din, make, rows, labels, users, repeats=1, timing_rows=64, probs=training.predict(din, make, rows)
        )
    assert set(predicted) == {64}  # only the timed passes (and their warm-up) ran the model
    assert dict(given.metrics) == dict(scored.metrics) and (given.depth, given.flops) == (scored.depth, scored.flops)
    with pytest.raises(ValueError, match=r"probs has shape \(10,\), rows \(600,\)"):
        sweep_mod.explicit_point(din, make, rows, labels, users, probs=np.zeros(10))
