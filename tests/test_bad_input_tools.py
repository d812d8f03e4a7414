"""Bad input to train-decentralized, the experiment scripts and the decentralized API (issue 11).

Every case runs in-process and stops before any training: a user error is exit status 2 with one
line naming the flag (``implicit-rec: error: ...`` for train-decentralized, argparse's
``error: argument --FLAG: ...`` for the experiment scripts). The heavy entry points are replaced by
a stub that fails the test if validation lets a bad case through.
"""

from pathlib import Path

import numpy as np
import pytest

import implicit_rec.decentralized.cli as dcli
from dsgd import agent_mesh, dsgd_reference, gossip, make_topology, mixing_matrix, period_matrix
from experiments import domain_deblur, domain_lp, domain_pde, dsgd_topologies, loopfm_transfer, solver_demo
from implicit_rec.config import DSGDConfig, RunConfig
from implicit_rec.decentralized.problem import AgentSampler, shard_rows
from implicit_rec.decentralized.train import run_decentralized


class Started(Exception):
    """Raised by the stubs: validation passed and real work would start."""


def _started(*args, **kwargs):
    raise Started


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    return {
        "FILE": str(tmp_path / "file.txt"),
        "UNDER_FILE": str(tmp_path / "file.txt" / "sub"),
        "DIR": str(tmp_path / "precious"),
        "MISSING": str(tmp_path / "missing.toml"),
        "NEW": str(tmp_path / "new"),
    }


def _argv(argv, paths):
    return [paths.get(a, a) for a in argv]


def _one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


# -- implicit-rec train-decentralized -------------------------------------------------------------
C = ["--agents", "4", "--processes", "2"]

DECENTRALIZED_ERRORS = [
    (["--agents", "7", "--topology", "ceca-1p"], "ceca-2p"),
    (["--agents", "0"], "--agents 0: dsgd.agents must be >= 1"),
    (["--processes", "0"], "--processes must be >= 1"),
    (["--agents", "6", "--processes", "4"], "not divisible by --processes"),
    (["--agents", "5", "--topology", "torus"], "torus"),
    (C + ["--coordinator", "nohost"], "--coordinator must be HOST:PORT"),
    (C + ["--coordinator", "127.0.0.1:99999", "--process-id", "0"], "port in 1..65535"),
    (C + ["--coordinator", "127.0.0.1:0", "--process-id", "0"], "port in 1..65535"),
    (C + ["--coordinator", "10.1.2.3:1234", "--process-id", "0"], "--coordinator-bind"),
    (C + ["--coordinator", "127.0.0.1:1234", "--process-id", "2"], "--process-id must be in [0, 2)"),
    (
        C + ["--coordinator", "127.0.0.1:1234", "--process-id", "0", "--coordinator-bind", "garbage"],
        "--coordinator-bind must be HOST:PORT",
    ),
    (C + ["--coordinator-bind", "0.0.0.0:1234"], "--coordinator-bind needs --coordinator"),
    (["--process-id", "0"], "--process-id needs --coordinator"),
    (["--agents", "4", "--coordinator", "127.0.0.1:1234", "--process-id", "0"], "--processes P > 1"),
    (["--set", "nosuch.key=1"], "unknown section [nosuch]"),
    (["--set", "dsgd.arch=nope"], "dsgd.arch='nope' is not valid"),
    (["--set", "dsgd.stesp=3"], "did you mean 'dsgd.steps'"),
    (["--config", "MISSING"], "does not exist"),
    (["--steps", "0"], "--steps 0: dsgd.steps must be >= 1"),
    (["--lr", "nan"], "--lr nan: dsgd.learning_rate must be a finite number"),
    (["--lr", "inf"], "--lr inf: dsgd.learning_rate must be a finite number"),
    (["--eval-agent", "6"], "dsgd.eval_agent must be < dsgd.agents=6"),
    (["--seed", "-1"], "--seed -1: dsgd.seed must be >= 0"),
    (["--data-seed", "-1"], "--data-seed -1: data.seed must be >= 0"),
    (["--preset", "huge"], "data.preset='huge' is not valid"),
    (["--out", "FILE"], "--out"),
    (["--out", "UNDER_FILE"], "is a file, not a directory"),
    (["--cache-dir", "FILE"], "--cache-dir"),
    (["--store", "NEW"], "--store is read only by the transfer variants"),
]


@pytest.mark.parametrize("argv, message", DECENTRALIZED_ERRORS)
def test_train_decentralized_bad_flags_exit_2_with_one_line(argv, message, paths, monkeypatch, capsys):
    monkeypatch.setattr(dcli, "worker", _started)
    monkeypatch.setattr(dcli, "launch", _started)
    assert dcli.main(_argv(argv, paths)) == 2
    assert message in _one_error_line(capsys.readouterr().err, "implicit-rec: error:")


@pytest.mark.parametrize("argv", [["--topology", "star"], ["--shards", "random"], ["--agents", "x"], ["--bogus"]])
def test_train_decentralized_unparsable_flags_are_argparse_errors(argv, capsys):
    assert dcli.main(argv) == 2
    message = _one_error_line(capsys.readouterr().err, "implicit-rec: error:")
    assert argv[0].lstrip("-") in message and "--help" in message


@pytest.mark.parametrize("argv, message", [(["--dataset", "nonsense"], "unknown source 'nonsense'")])
def test_train_decentralized_bad_data_spec_is_one_line(argv, message, tmp_path, monkeypatch, capsys):
    """Checked by the data loader in the worker, before any device work (the mesh is stubbed)."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # leave JAX's devices alone
    monkeypatch.setattr("implicit_rec.decentralized.train.agent_mesh", _started)
    assert dcli.main(argv + ["--cache-dir", str(tmp_path / "cache")]) == 2
    assert message in _one_error_line(capsys.readouterr().err, "implicit-rec: error:")


@pytest.mark.parametrize(
    "argv",
    [
        ["--agents", "1"],
        C + ["--coordinator", "10.1.2.3:1234", "--process-id", "1"],  # only process 0 binds
        C + ["--coordinator", "10.1.2.3:1234", "--process-id", "0", "--coordinator-bind", "0.0.0.0:1234"],
        C + ["--coordinator", "localhost:1234", "--process-id", "0"],
    ],
)
def test_train_decentralized_good_flags_reach_the_worker(argv, monkeypatch):
    monkeypatch.setattr(dcli, "worker", _started)
    with pytest.raises(Started):
        dcli.main(argv)


# -- experiment scripts ------------------------------------------------------------------------------
@pytest.fixture
def stubbed(monkeypatch):
    from implicit_rec.domains.study import Study
    from implicit_rec.pipeline import stages

    monkeypatch.setattr(Study, "run", _started)  # every domain: after its configuration is checked
    monkeypatch.setattr(stages, "fm_stage", _started)  # loopfm_transfer: after the data checks (loopfm_stages calls it)
    monkeypatch.setattr(dsgd_topologies, "vm_study", _started)
    monkeypatch.setattr(dsgd_topologies, "least_squares_study", _started)


DOMAIN = [domain_lp, domain_deblur, domain_pde]
EXPERIMENT_ERRORS = [
    *[(m, ["--preset", "huge"], "--preset") for m in DOMAIN],
    *[(m, ["--preset", "tiny", "--seed", "-1"], "argument --seed: expected an integer >= 0") for m in DOMAIN],
    *[(m, ["--preset", "tiny", "--out", "FILE"], "argument --out") for m in DOMAIN],
    *[(m, ["--preset", "tiny", "--out", "UNDER_FILE"], "is a file, not a directory") for m in DOMAIN],
    *[(m, ["--preset", "tiny", "--out", "DIR"], "not an earlier output") for m in DOMAIN],
    (domain_lp, ["--preset", "tiny", "--cache-dir", "FILE"], "argument --cache-dir"),
    (dsgd_topologies, ["--agents", "0"], "argument --agents: expected an integer >= 1"),
    (dsgd_topologies, ["--agents", "a,b"], "argument --agents"),
    (dsgd_topologies, ["--topologies", "star"], "argument --topologies: 'star' not known"),
    (dsgd_topologies, ["--agents", "5", "--topologies", "torus"], "torus"),
    (dsgd_topologies, ["--agents", "5", "--topologies", "ceca-1p"], "even n"),
    (dsgd_topologies, ["--preset", "huge"], "argument --preset"),
    (dsgd_topologies, ["--arch", "nope"], "argument --arch"),
    (dsgd_topologies, ["--steps", "0"], "argument --steps"),
    (dsgd_topologies, ["--optimizer", "lbfgs"], "argument --optimizer"),
    (dsgd_topologies, ["--lr", "-1"], "argument --lr: expected a finite number > 0"),
    (dsgd_topologies, ["--shards", "x"], "argument --shards"),
    (dsgd_topologies, ["--lsq-agents", "-1", "--skip-vm"], "argument --lsq-agents"),
    (dsgd_topologies, ["--skip-vm", "--skip-lsq"], "nothing to run"),
    (dsgd_topologies, ["--skip-vm", "--out", "FILE"], "argument --out"),
    (loopfm_transfer, ["--seeds", "0"], "argument --seeds"),
    (loopfm_transfer, ["--fm-size", "gigantic"], "argument --fm-size"),
    (loopfm_transfer, ["--archs", "nope"], "argument --archs"),
    (loopfm_transfer, ["--set", "fm.days=[5, 2]"], "fm.days must be [start, end)"),
    (loopfm_transfer, ["--set", "vm.history_len=0"], "vm.history_len must be >= 1"),
    (loopfm_transfer, ["--set", "fm.out_of_fold=1"], "fm.out_of_fold=1 is not a fold count"),
    (loopfm_transfer, ["--set", "fm.log_from_day=-5"], "fm.log_from_day must be >= 0"),
    (loopfm_transfer, ["--out", "FILE"], "argument --out"),
    (loopfm_transfer, ["--dataset", "nonsense", "--out", "NEW"], "unknown source 'nonsense'"),
    (loopfm_transfer, ["--set", "fm.days=[0, 6]", "--set", "vm.days=[4, 7]", "--set", "fm.out_of_fold=0"], "overlaps"),
    (loopfm_transfer, ["--set", "fm.log_from_day=2"], "fm.log_from_day=2 is inside fm.days"),
    (solver_demo, ["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize(
    "script, argv, message",
    EXPERIMENT_ERRORS,
    ids=[f"{s.__name__.split('.')[-1]}:{' '.join(a)}" for s, a, _ in EXPERIMENT_ERRORS],
)
def test_experiment_bad_flags_exit_2_before_any_work(script, argv, message, paths, stubbed, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.main(_argv(argv, paths))
    assert exit_.value.code == 2
    assert message in _one_error_line(capsys.readouterr().err, "")
    assert Path(paths["DIR"], "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("script", DOMAIN)
def test_experiment_out_may_be_new_or_an_earlier_output(script, tmp_path, stubbed):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "metrics.json").write_text("{}")
    for out in (tmp_path / "new", earlier):
        with pytest.raises(Started):
            script.main(["--preset", "tiny", "--out", str(out), "--quiet"])


# -- decentralized Python API --------------------------------------------------------------------
TOP = make_topology("ceca-2p", 4)
API_ERRORS = [
    (lambda: gossip("ceca-2p", np.ones(4)), TypeError, "topology must be a Topology"),
    (lambda: gossip(TOP, np.ones(4), num_rounds=1.5), ValueError, "num_rounds must be an integer"),
    (lambda: gossip(TOP, ["a"] * 4), ValueError, "values must be numbers"),
    (lambda: mixing_matrix(TOP, 0.5), ValueError, "k must be an integer"),
    (lambda: period_matrix(TOP, start="0"), ValueError, "start must be an integer"),
    (lambda: dsgd_reference(TOP, lambda k, x: x, np.zeros(2), 0.1, -3), ValueError, "steps must be"),
    (lambda: dsgd_reference(TOP, lambda k, x: x, np.zeros(2), -0.1, 3), ValueError, "lr must be"),
    (lambda: agent_mesh(0), ValueError, "agents must be an integer >= 1"),
    (lambda: AgentSampler(np.arange(0), 4, 0, 0), ValueError, "empty shard"),  # next() looped forever
    (lambda: AgentSampler(np.arange(5), 0, 0, 0), ValueError, "batch_size"),
    (lambda: shard_rows(None, np.arange(3), 5, "iid", 0), ValueError, "3 training rows"),
    (lambda: run_decentralized(RunConfig(dsgd=DSGDConfig(agents="6"))), ValueError, "dsgd.agents must be an integer"),
    (lambda: run_decentralized(RunConfig(dsgd=DSGDConfig(arch="nope"))), ValueError, "dsgd.arch='nope'"),
    (lambda: run_decentralized(RunConfig(dsgd=DSGDConfig(unroll_period=1))), ValueError, "dsgd.unroll_period must be"),
    (lambda: run_decentralized(RunConfig(dsgd=DSGDConfig(agents=2, eval_agent=2))), ValueError, "dsgd.eval_agent"),
    (lambda: run_decentralized(RunConfig(dsgd=DSGDConfig(agents=5, topology="torus"))), ValueError, "torus"),
    (lambda: DSGDConfig(bogus=1), TypeError, "bogus"),
    (lambda: run_decentralized({"agents": 2}), TypeError, "must be a RunConfig"),
]


@pytest.mark.parametrize("call, error, message", API_ERRORS, ids=[m for _, _, m in API_ERRORS])
def test_decentralized_api_rejects_bad_arguments(call, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(")):
        call()


def test_apply_round_checks_state_shapes():
    from dsgd import apply_round

    with pytest.raises(ValueError, match=r"shape \(n=4"):
        apply_round(TOP, 0, (np.ones(3), np.ones(3)))  # was an IndexError
    x = np.arange(4.0)
    assert np.allclose(gossip(TOP, x), x.mean())  # a good call still averages exactly
