"""train-decentralized: argument errors, and a 3-process loopback run equal to the 1-process run."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from implicit_rec.cli import main
from implicit_rec.decentralized.cli import add_parser, resolve

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
        (["--steps", "0"], "steps"),
        (["--lr", "-1"], "lr"),
        (["--agents", "4", "--eval-agent", "4"], "eval_agent"),
    ],
)
def test_bad_arguments_give_one_clear_error(argv, message, capsys):
    assert main(["train-decentralized", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("implicit-rec: error:") and message in err and err.count("\n") == 1


def test_parser_registers_subcommand_with_defaults():
    args = _parse([])
    assert args.topology == "ceca-2p" and args.processes == 1 and args.coordinator is None
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
    path.write_text('[data]\npreset = "tiny"\n[vm]\narchs = ["din"]\nlearning_rate = 0.01\nbatch_size = 120\n')
    cfg, run_cfg = resolve(_parse(["--config", str(path), "--set", 'vm.transfers=["kd"]']))
    assert (cfg.preset, cfg.arch, cfg.transfer, cfg.lr, cfg.batch_size) == ("tiny", "din", "kd", 0.01, 20)
    assert run_cfg.vm.archs == ("din",)
    cfg, _ = resolve(_parse(["--config", str(path), "--arch", "mlp", "--lr", "0.1", "--batch-size", "8"]))
    assert (cfg.arch, cfg.lr, cfg.batch_size) == ("mlp", 0.1, 8)  # flags win over the file
    cfg, _ = resolve(_parse([]))
    assert (cfg.arch, cfg.transfer, cfg.batch_size) == ("mlp", "none", 64)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", 'vm.archs=["mlp","din"]'], "--arch"),
        (["--set", "vm.lerning_rate=0.1"], "vm.learning_rate"),
        (["--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_configuration_is_one_clear_error(argv, message, capsys):
    assert main(["train-decentralized", *argv]) == 2
    assert message in capsys.readouterr().err
