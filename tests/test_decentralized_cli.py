"""train-decentralized: argument errors, and a 3-process loopback run equal to the 1-process run."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from implicit_rec import processes
from implicit_rec.cli import main
from implicit_rec.config import ConfigError
from implicit_rec.decentralized.cli import FLAGS, add_parser, resolve

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv):
    parser = argparse.ArgumentParser(prog="implicit-rec")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["train-decentralized"] + argv)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--agents", "7", "--topology", "ceca-1p"], "ceca-2p"),
        (["--agents", "6", "--processes", "4"], "--processes"),
        (["--agents", "0"], "--agents"),
        (["--agents", "4", "--processes", "2", "--coordinator", "nohost"], "--coordinator"),
        (["--agents", "4", "--processes", "2", "--coordinator", "127.0.0.1:1234"], "--process-id"),
        (["--steps", "0"], "--steps 0: dsgd.steps must be >= 1"),
        (["--lr", "-1"], "--lr -1.0: dsgd.learning_rate must be > 0"),
        (["--agents", "4", "--eval-agent", "4"], "dsgd.eval_agent must be < dsgd.agents=4"),
    ],
)
def test_bad_arguments_give_one_clear_error(argv, message, capsys):
    assert main(["train-decentralized", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("implicit-rec: error:") and message in err and err.count("\n") == 1


def test_parser_registers_subcommand_with_defaults():
    args = _parse([])
    assert args.topology is None and args.processes == 1 and args.coordinator is None  # the key's value stays
    assert resolve(args).dsgd.topology == "ceca-2p"
    with pytest.raises(SystemExit):
        _parse(["--topology", "star"])


def _cli(tmp_path, out, *extra):
    # one thread per process, and a cheap LLVM pipeline: compile time dominates these tiny runs
    flags = (
        "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    )
    env = dict(
        os.environ,
        XLA_FLAGS=flags,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
    )
    argv = [
        sys.executable,
        "-m",
        "implicit_rec.decentralized.cli",
        "--agents",
        "6",
        "--topology",
        "ceca-2p",
        "--preset",
        "tiny",
        "--steps",
        "4",
        "--batch-size",
        "16",
        "--log-every",
        "2",
        "--eval-every",
        "4",
        "--out",
        str(tmp_path / out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        *extra,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / out / "metrics.json").read_text())


@pytest.mark.slow
def test_three_process_loopback_run_matches_single_process(tmp_path):
    single = _cli(tmp_path, "single")
    multi = _cli(tmp_path, "multi", "--processes", "3")
    assert single["processes"] == 1 and multi["processes"] == 3
    assert single["compiles"] == multi["compiles"] == 1
    assert multi["compiled_collectives"]["all-reduce"] == 0
    assert [h["step"] for h in single["history"]] == [h["step"] for h in multi["history"]] == [2, 4]
    for a, b in zip(single["history"], multi["history"]):
        assert b["consensus"] == pytest.approx(a["consensus"], rel=1e-5)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    assert multi["final"]["valid_auc_avg"] == pytest.approx(single["final"]["valid_auc_avg"], abs=1e-6)
    last = multi["history"][-1]  # the logged quantities
    assert {"consensus", "train_loss", "valid_auc_avg", "valid_auc_agent0", "bytes_sent_per_agent"} <= set(last)
    assert last["bytes_sent_per_agent"] == 4 * multi["params"]  # one float32 model per agent per iteration
    assert (tmp_path / "multi" / "curves.png").stat().st_size > 0


def test_run_configuration_feeds_the_subcommand(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[data]\npreset = "tiny"\n[dsgd]\narch = "din"\nlearning_rate = 0.01\nbatch_size = 20\n')
    cfg = resolve(_parse(["--config", str(path), "--set", "dsgd.transfer=kd"]))
    d = cfg.dsgd
    assert (cfg.data.preset, d.arch, d.transfer, d.learning_rate, d.batch_size) == ("tiny", "din", "kd", 0.01, 20)
    d = resolve(_parse(["--config", str(path), "--arch", "mlp", "--lr", "0.1", "--batch-size", "8"])).dsgd
    assert (d.arch, d.learning_rate, d.batch_size) == ("mlp", 0.1, 8)  # flags win over the file
    d = resolve(_parse([])).dsgd
    assert (d.arch, d.transfer, d.batch_size, d.learning_rate) == ("mlp", "none", 64, 3e-3)


def test_precedence_defaults_file_set_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[dsgd]\nsteps = 3\n")
    assert resolve(_parse([])).dsgd.steps == 400  # the default
    assert resolve(_parse(["--config", str(path)])).dsgd.steps == 3
    assert resolve(_parse(["--config", str(path), "--set", "dsgd.steps=4"])).dsgd.steps == 4
    assert resolve(_parse(["--config", str(path), "--set", "dsgd.steps=4", "--steps", "5"])).dsgd.steps == 5
    assert resolve(_parse(["--steps", "5", "--set", "dsgd.steps=4"])).dsgd.steps == 5  # flags win wherever written


@pytest.mark.parametrize(
    "argv, key, value",
    [
        (["--lr", "0.25"], "dsgd.learning_rate", 0.25),
        (["--preset", "tiny"], "data.preset", "tiny"),
        (["--data-seed", "3"], "data.seed", 3),
        (["--unroll-period"], "dsgd.unroll_period", True),
        (["--batch-size", "7"], "dsgd.batch_size", 7),
        (["--topology", "ring"], "dsgd.topology", "ring"),
    ],
)
def test_each_flag_sets_its_configuration_key(argv, key, value):
    section, name = key.split(".")
    cfg = resolve(_parse(argv))
    assert getattr(getattr(cfg, section), name) == value
    assert FLAGS[argv[0]] == key
    others = cfg.to_dict()
    default = resolve(_parse([])).to_dict()
    others[section].pop(name), default[section].pop(name)
    assert others == default  # the flag touched its key only


def test_dataset_flag_sets_the_data_source_and_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("user,item,time,label\n")
    cfg = resolve(_parse(["--dataset", "interactions:x.csv"]))
    assert (cfg.data.source, cfg.data.path, cfg.data.dataset) == ("interactions", "x.csv", "interactions:x.csv")
    assert cfg.replace(data=resolve(_parse([])).data) == resolve(_parse([]))  # nothing else changed


def test_every_flag_names_a_configuration_key():
    from implicit_rec.config import DEFAULT

    for flag, key in FLAGS.items():
        section, name = key.split(".")
        assert hasattr(getattr(DEFAULT, section), name), (flag, key)
        assert _parse([]).__dict__[flag.lstrip("-").replace("-", "_")] is None  # unset flags leave the key alone


def test_unknown_dsgd_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'dsgd.step'; did you mean 'dsgd.steps'\?"):
        resolve(_parse(["--set", "dsgd.step=3"]))
    path = tmp_path / "run.toml"
    path.write_text("[dsgd]\nlearning_rat = 0.1\n")
    with pytest.raises(ConfigError, match=r"line 2: unknown key 'dsgd.learning_rat'; did you mean 'dsgd.learning_r"):
        resolve(_parse(["--config", str(path)]))


def test_launcher_hands_workers_the_effective_configuration(tmp_path, monkeypatch):
    """Workers get --config OUT/config.toml, which resolves to the launcher's configuration."""
    import implicit_rec.decentralized.cli as dcli
    import implicit_rec.decentralized.train as train

    path = tmp_path / "run.toml"
    path.write_text('[data]\npreset = "tiny"\n[dsgd]\nsteps = 3\n')
    argv = ["--config", str(path), "--set", "dsgd.optimizer=sgd", "--lr", "0.5", "--agents", "4", "--processes", "2"]
    argv += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    args = _parse(argv)
    cfg = resolve(args)
    started = []

    class Proc:
        returncode = 0

        def __init__(self, argv, env):
            started.append(argv)

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(train, "load_table", lambda run, cache_dir: None)
    monkeypatch.setattr(processes.subprocess, "Popen", Proc)
    assert dcli.launch(args, cfg) == 0
    assert len(started) == 2
    for i, worker in enumerate(started):
        wargs = _parse(worker[3:])
        assert wargs.process_id == i and wargs.processes == 2
        assert resolve(wargs) == cfg
    assert (cfg.dsgd.steps, cfg.dsgd.optimizer, cfg.dsgd.learning_rate, cfg.dsgd.agents) == (3, "sgd", 0.5, 4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "dsgd.arch=resnet"], "dsgd.arch='resnet' is not valid"),
        (["--set", "vm.lerning_rate=0.1"], "vm.learning_rate"),
        (["--set", "dsgd.lr=0.1"], "dsgd.learning_rate"),
        (["--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_configuration_is_one_clear_error(argv, message, capsys):
    assert main(["train-decentralized", *argv]) == 2
    assert message in capsys.readouterr().err
