"""The sweep core (typed rows, iteration counts, table, plot) and the recommendation adapter's rows."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from implicit_rec.sweep import ExplicitPoint, LipschitzRow, compiled_flops
from implicit_rec.sweep_core import SweepRow, check_iterations, plot_sweep, sweep_rows, sweep_table


def test_compiled_flops_count_a_matrix_product():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert compiled_flops(lambda a, b: a @ b, a, b) == 2 * 8 * 16 * 4


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
