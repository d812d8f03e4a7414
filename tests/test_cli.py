"""`implicit-rec`: configuration, command-line errors, the tiny end-to-end run, resume and report."""

import json
import shutil

import numpy as np
import pytest

from implicit_rec import cli, config, pipeline, report
from implicit_rec.models import training

# A small but complete job: every stage runs, the sweep covers the VM's evaluation budget (k = 4).
SMALL = (
    'data.preset="tiny"',
    "fm.epochs=1",
    "vm.epochs=2",
    'vm.archs=["din", "implicit"]',
    'vm.transfers=["none", "loopfm+kd"]',
    "vm.eval_max_iter=4",
    "sweep.iterations=[0, 1, 4, 8]",
    'sweep.methods=["picard", "anderson"]',
    'sweep.baseline_archs=["din"]',
    "sweep.baseline_depths=[1]",
    'sweep.baseline_match=["params"]',
    'sweep.match_arch="implicit"',
    "sweep.lipschitz_examples=32",
    "sweep.lipschitz_perturbations=2",
    "sweep.timing_repeats=1",
)


def small_config(**extra):
    return config.load_config(None, SMALL + tuple(f"{k}={v}" for k, v in extra.items()))


# -- configuration ------------------------------------------------------------------------------


def test_defaults_round_trip_through_toml(tmp_path):
    path = tmp_path / "c.toml"
    cfg = small_config()
    path.write_text(config.to_toml(cfg))
    assert config.load_config(path) == cfg
    assert config.load_config(None) == config.DEFAULT


def test_unknown_key_in_file_names_line_and_suggests(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[vm]\nseeds = 2\nepoch = 3\n")
    with pytest.raises(config.ConfigError, match=r"line 3: unknown key 'vm.epoch'; did you mean 'vm.epochs'"):
        config.load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("vm.seed=2", "did you mean 'vm.seeds'"),
        ("vmm.seeds=2", "unknown section \\[vmm\\]"),
        ("vm.seeds=two", "vm.seeds must be an integer"),
        ("vm.seeds=0", "vm.seeds must be >= 1"),
        ('vm.archs=["mlp", "cnn"]', "vm.archs\\[1\\]='cnn' is not valid"),
        ("fm.days=[4, 2]", "fm.days must be \\[start, end\\)"),
        ("sweep.iterations=[4, 2]", "increasing"),
        ("vm.seeds", "expected section.key=value"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load_config(None, (override,))


def test_override_values_are_toml_or_bare_strings():
    cfg = config.load_config(
        None, ("fm.size=medium", "vm.learning_rate=1e-3", "fm.log_from_day=5", "vm.days=[5, 7]", "vm.kd_on_main=true")
    )
    assert (cfg.fm.size, cfg.vm.learning_rate, cfg.fm.log_from_day, cfg.vm.days, cfg.vm.kd_on_main) == (
        "medium",
        1e-3,
        5,
        (5, 7),
        True,
    )


# -- command-line errors: one line, exit status 2 -------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--set", "vm.foo=1"], "unknown key 'vm.foo'"),
        (["run", "--dataset", "taobaoad:/nonexistent/dir", "--out", "{tmp}/a"], "data.path: /nonexistent/dir does not"),
        (["run", "--config", "{tmp}/missing.toml"], "does not exist"),
        (["run", "--out", "{tmp}/afile"], "is not a directory"),
        (["report", "--run", "{tmp}"], "metrics.json does not exist"),
        (["sweep", "--run", "{tmp}"], "not a run directory"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "afile").write_text("")
    code = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("implicit-rec: error:") and "\n" not in err and "Traceback" not in err
    assert message in err


def test_help_documents_every_command(capsys):
    for command in ("run", "sweep", "report", "config"):
        with pytest.raises(SystemExit) as exc:
            cli.main([command, "--help"])
        assert exc.value.code == 0
        assert "--quiet" in capsys.readouterr().out


# -- the job --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):  # a whole tiny pipeline: every test using it is marked slow
    out = tmp_path_factory.mktemp("run") / "main"
    pipeline.run(out, small_config(), quiet=True)
    return out


@pytest.mark.slow
def test_tiny_run_metrics_follow_the_schema(finished):
    m = json.loads((finished / "metrics.json").read_text())
    report.validate_metrics(m)
    assert {v["name"] for v in m["vms"]} == {"din/none", "din/loopfm+kd", "implicit/none", "implicit/loopfm+kd"}
    assert len(m["sweep"]) == 2 * 2 * 4  # implicit VMs x methods x k
    assert len(m["lipschitz"]) == 2 * 2 * 4
    n_test = m["dataset"]["test_events"]
    for vm in {r["vm"] for r in m["sweep"]}:
        for method in ("picard", "anderson"):
            rows = sorted(
                (r for r in m["sweep"] if r["vm"] == vm and r["method"] == method), key=lambda r: r["iterations"]
            )
            assert [r["iterations"] for r in rows] == [0, 1, 4, 8]
            # flops = front end + k * solver step + head: strictly increasing, step cost constant
            flops = np.array([r["flops"] for r in rows])
            step = np.diff(flops) / np.diff([0, 1, 4, 8])
            assert np.all(step > 0) and np.allclose(step, step[0], rtol=1e-9)
            # z_0 = 0 is not a fixed point; iterating reduces the mean residual
            assert rows[0]["converged_fraction"] == 0.0 and rows[-1]["residual"] < rows[0]["residual"]
            for r in rows:  # a fraction of the test events
                assert r["converged_fraction"] * n_test == pytest.approx(round(r["converged_fraction"] * n_test))
    assert m["dataset"]["duplicate_events"] is None  # the synthetic generator does not count them
    assert {p.name for p in finished.iterdir()} >= {
        "metrics.json",
        "report.md",
        "config.toml",
        "run.json",
        "log.txt",
        *report.PLOTS,
    }
    assert json.loads((finished / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_sweep_at_the_evaluation_budget_reproduces_the_vm(finished):
    """iterate(k) equals fixed_point(max_iter=k): at k = vm.eval_max_iter the sweep is the VM itself."""
    m = json.loads((finished / "metrics.json").read_text())
    for vm in (v for v in m["vms"] if v["arch"] == "implicit"):
        row = next(
            r for r in m["sweep"] if r["vm"] == vm["name"] and r["method"] == "anderson" and r["iterations"] == 4
        )
        assert row["auc"] == pytest.approx(vm["auc"], abs=1e-6)
        assert row["logloss"] == pytest.approx(vm["logloss"], abs=1e-5)
    k0 = [r for r in m["sweep"] if r["iterations"] == 0]
    assert all(r["auc"] == 0.5 for r in k0)  # z_0 = 0: every example gets the same score


@pytest.mark.slow
def test_finished_run_is_not_overwritten_without_force(finished, capsys):
    before = (finished / "metrics.json").read_text()
    code = cli.main(["run", "--out", str(finished), "--quiet", *sum((["--set", s] for s in SMALL), [])])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert (finished / "metrics.json").read_text() == before


@pytest.mark.slow
def test_report_regenerates_the_same_files(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    before = (copy / "report.md").read_text()
    for name in ("report.md",) + report.PLOTS:
        (copy / name).unlink()
    assert cli.main(["report", "--run", str(copy), "--quiet"]) == 0
    assert (copy / "report.md").read_text() == before
    assert all((copy / p).stat().st_size > 0 for p in report.PLOTS)


def _comparable(m: dict) -> dict:
    drop = {"seconds", "examples_per_second", "timing", "versions"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    return {
        "fm": {k: m["fm"][k] for k in ("auc", "gauc", "logloss")},
        "vms": strip(m["vms"]),
        "sweep": strip(m["sweep"]),
        "lipschitz": strip(m["lipschitz"]),
        "baselines": strip(m["baselines"]),
    }


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_metrics(finished, tmp_path, monkeypatch):
    """Kill right after the first epoch checkpoint of the second VM; the rerun skips the finished
    stages (data, FM, store, first VM) and continues that VM from its checkpoint."""
    out = tmp_path / "resumed"
    calls = {"n": 0}
    real_save = training.save_tree

    def save_then_die(path, tree):
        real_save(path, tree)
        calls["n"] += 1
        if calls["n"] == 4:  # FM epoch, VM 1 epochs 1-2, then VM 2 epoch 1
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_tree", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(out, small_config(), quiet=True)
    monkeypatch.setattr(training, "save_tree", real_save)
    assert list((out / "models").glob("*.train.msgpack")), "the interrupted VM left an epoch checkpoint"
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    events = []
    pipeline.run(out, small_config(), quiet=True, events=events.append)
    assert "stage:fm" not in events and "stage:store" not in events  # done before the interruption
    assert events.count("stage:sweep") == 1
    a = json.loads((finished / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    ca, cb = _comparable(a), _comparable(b)
    assert ca["fm"] == pytest.approx(cb["fm"], abs=1e-7)
    assert ca.keys() == cb.keys()
    for part in ("vms", "sweep", "lipschitz", "baselines"):
        assert len(ca[part]) == len(cb[part]) > 0, part
        for x, y in zip(ca[part], cb[part]):
            assert x.keys() == y.keys(), part
            for k in x:
                if isinstance(x[k], float):
                    assert np.isclose(x[k], y[k], rtol=1e-6, atol=1e-7, equal_nan=True), (part, x, k, y[k])
                else:
                    assert x[k] == y[k], (part, k)


@pytest.mark.slow
def test_sweep_command_recomputes_the_sweep_from_saved_models(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    before = json.loads((copy / "metrics.json").read_text())
    (copy / "sweep.json").unlink()
    assert cli.main(["sweep", "--run", str(copy), "--quiet"]) == 0
    after = json.loads((copy / "metrics.json").read_text())
    assert [r["auc"] for r in after["sweep"]] == pytest.approx([r["auc"] for r in before["sweep"]], abs=1e-7)
    assert [r["max"] for r in after["lipschitz"]] == pytest.approx([r["max"] for r in before["lipschitz"]], rel=1e-5)


@pytest.mark.slow
def test_the_sweep_reads_each_baselines_saved_test_predictions(finished, tmp_path, capsys):
    """A baseline's sweep point is scored from models/baseline-*.test.npy (its model stage's test), not
    by running the model over the test set again; a damaged file is one error saying what to do."""
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    before = json.loads((copy / "metrics.json").read_text())["baselines"]
    saved = sorted((copy / "models").glob("baseline-*.test.npy"))
    assert len(saved) == len(before) > 0
    for path in saved:
        np.save(path, 1.0 - np.load(path))  # reversed scores: AUC becomes 1 - AUC
    (copy / "sweep.json").unlink()
    assert cli.main(["sweep", "--run", str(copy), "--quiet"]) == 0
    after = json.loads((copy / "metrics.json").read_text())["baselines"]
    assert [r["auc"] for r in after] == pytest.approx([1 - r["auc"] for r in before], abs=1e-6)
    saved[0].write_bytes(b"not an npy file")
    (copy / "sweep.json").unlink()
    capsys.readouterr()
    assert cli.main(["sweep", "--run", str(copy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert saved[0].name in err and "delete it and rerun" in err and "Traceback" not in err
