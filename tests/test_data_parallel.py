"""Data-parallel ``fit`` on a ``jax.sharding`` mesh gives one device's result at the same global batch.

Multi-device runs need virtual CPU devices configured before JAX starts, and this pytest process
has JAX running: they run this file as a script in a subprocess (``JAX_NUM_CPU_DEVICES``), which
trains on a few batches of the tiny synthetic data and writes the parameters and losses to .npz.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BATCH = 48  # global batch: 4 devices x 12 rows, 2 x 24; 50 is divisible by neither
ROWS = 2 * BATCH + 20  # two full batches and a padded one: the weight column crosses device slices

STEPS, LR = 3, 3e-3  # one epoch of ROWS rows: 3 Adam steps
# Parameters after STEPS steps, 1 vs N devices: the two programs differ only in the order of the
# float32 sums (per-device partial sums, then an all-reduce), ~1e-7 relative per gradient entry.
# Adam divides by sqrt(v) + 1e-8, so an entry whose gradient is of the order of 1e-8 can move by a
# visible fraction of a step (each moves a parameter by ~LR at most): the tolerance is 1e-2 of LR
# per step (measured: <= 6e-6 on the FM, 6e-8 on the VM), while a wrong split (rows lost or counted
# twice, the padding weighted, a per-device mean) changes the updates by O(LR).
PARAM_ATOL = 1e-2 * LR * STEPS
# softmax(q . (k + b)) does not depend on the attention's key bias b (it adds q . b to every logit
# of a query): its gradient is zero up to rounding, which Adam turns into steps of up to LR. These
# entries are rounding noise in both runs; they are held to Adam's bound, STEPS * LR from the start.
ZERO_GRADIENT = ("attn/key/bias",)
LOSS_RTOL = 1e-5  # the loss of a step is a mean of float32 terms: rounding only


def _env(devices: int) -> dict:
    """A subprocess with ``devices`` virtual CPU devices, one thread and a cheap LLVM pipeline (compile
    time dominates these tiny runs; the 1- and N-device programs are compiled with the same flags)."""
    flags = (
        "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    )
    return dict(
        os.environ,
        XLA_FLAGS=flags,
        JAX_NUM_CPU_DEVICES=str(devices),
        JAX_PLATFORMS="cpu",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )


def _run(args: list[str], devices: int, tmp_path: Path, timeout: int = 240) -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        env=_env(devices),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _assert_same(one: dict, many: dict) -> None:
    params = sorted(k for k in one if k.startswith("param/"))
    assert params and params == sorted(k for k in many if k.startswith("param/"))
    moved = 0
    for k in params:
        if k.endswith(ZERO_GRADIENT):
            start = one["init/" + k[len("param/") :]]
            assert np.abs(many[k] - start).max() <= STEPS * LR and np.abs(one[k] - start).max() <= STEPS * LR
            continue
        np.testing.assert_allclose(many[k], one[k], rtol=0, atol=PARAM_ATOL, err_msg=k)
        moved += int(np.any(one[k] != one["init/" + k[len("param/") :]]))
    assert moved > len(params) // 2  # training did move the parameters being compared
    np.testing.assert_allclose(many["losses"], one["losses"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(many["valid"], one["valid"], rtol=0, atol=1e-5)


@pytest.mark.slow  # a subprocess that compiles the VM's step 3 times, the FM's twice
def test_four_devices_train_like_one_at_the_same_global_batch(tmp_path):
    _run(["--out", str(tmp_path)], devices=4, tmp_path=tmp_path)
    for model, counts in (("vm", (2, 4)), ("fm", (4,))):
        one = dict(np.load(tmp_path / f"{model}-1.npz"))
        for n in counts:
            _assert_same(one, dict(np.load(tmp_path / f"{model}-{n}.npz")))
    errors = (tmp_path / "errors.txt").read_text().splitlines()
    assert errors[0].startswith("batch_size (fm.batch_size / vm.batch_size)=50 is not divisible by the 4 devices")
    assert errors[1].startswith("devices=8 (fm.devices / vm.devices): JAX sees 4 cpu device(s)")


@pytest.mark.slow  # two processes joined by jax.distributed (gloo), each compiling the step (~40 s)
def test_two_processes_train_like_one_device(tmp_path):
    from implicit_rec.processes import free_port, run_workers

    _run(["--out", str(tmp_path), "--only", "vm"], devices=1, tmp_path=tmp_path)
    coordinator = f"127.0.0.1:{free_port()}"
    me = [sys.executable, str(Path(__file__).resolve()), "--out", str(tmp_path), "--only", "vm"]
    argvs = [[*me, "--coordinator", coordinator, "--processes", "2", "--process-id", str(i)] for i in range(2)]
    assert run_workers(argvs, _env(devices=2), timeout=240) == 0
    one = dict(np.load(tmp_path / "vm-1.npz"))
    for i in range(2):  # every process ends with the same (unreplicated) model
        _assert_same(one, dict(np.load(tmp_path / f"vm-4-process{i}.npz")))


# A whole `implicit-rec run` of the FM, its store and one implicit LoopFM VM, with a short sweep.
RUN_KEYS = (
    'data.preset="tiny"',
    "fm.epochs=1",
    "vm.epochs=1",
    "fm.max_len=16",
    "vm.max_len=16",
    'vm.archs=["implicit"]',
    'vm.transfers=["loopfm"]',
    "sweep.iterations=[0, 2]",
    'sweep.methods=["picard"]',
    "sweep.baseline_archs=[]",
    "sweep.baseline_depths=[]",
    "sweep.lipschitz_examples=8",
    "sweep.lipschitz_perturbations=1",
    "sweep.timing_repeats=1",
)


def _cli(args: list[str], timeout: int = 420) -> None:
    env = _env(devices=1)
    del env["JAX_NUM_CPU_DEVICES"]  # one device per process: the run's own choice
    proc = subprocess.run(
        [sys.executable, "-m", "implicit_rec", "--no-compile-cache", "run", "--quiet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow  # a one-process run, then a two-process run of the same configuration (~3 min)
def test_a_two_process_run_trains_like_one_process_and_process_0_writes_the_run(tmp_path):
    sets = [a for k in RUN_KEYS for a in ("--set", k)]
    _cli([*sets, "--out", str(tmp_path / "one")])
    spread = [*sets, "--set", "fm.devices=0", "--set", "vm.devices=0", "--processes", "2"]
    _cli([*spread, "--out", str(tmp_path / "two")])
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert json.loads((tmp_path / "two" / "run.json").read_text())["status"] == "finished"
    # the same models up to the order of float32 sums: test predictions, AUCs, epochs
    for name in ("fm", "vm-implicit-loopfm-s0"):
        a, b = (np.load(tmp_path / d / "models" / f"{name}.test.npy") for d in ("one", "two"))
        np.testing.assert_allclose(a, b, atol=1e-4)  # measured: 1e-7 (FM), 2e-6 (VM)
    assert abs(one["fm"]["auc"] - two["fm"]["auc"]) < 1e-3
    assert [v["name"] for v in one["vms"]] == [v["name"] for v in two["vms"]]
    assert all(abs(a["auc"] - b["auc"]) < 1e-3 for a, b in zip(one["vms"], two["vms"]))
    assert [len(r) for r in (one["sweep"], two["sweep"])] == [2, 2]
    # one writer: a single log of the run, no leftovers of the other process
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "jax.distributed: 2 processes, 2 devices" in log
    assert log.count("FM test: AUC") == 1 and not list((tmp_path / "two").rglob("*.tmp*"))


def test_a_multi_process_run_must_spread_a_model_and_split_its_batches(tmp_path):
    from implicit_rec.cli import main

    out = str(tmp_path / "run")
    cases = [
        ((), "fm.devices=1 and vm.devices=1 would train every model in each process alone"),
        (("--set", "fm.devices=2"), "fm.devices=2; a multi-process run trains a model over every"),
        (
            ("--set", "vm.devices=0", "--set", "vm.batch_size=255"),
            "vm.batch_size=255 is not divisible by --processes (2)",
        ),
        (("--set", "vm.devices=0", "--process-id", "1"), "--process-id needs --coordinator"),
    ]
    for extra, message in cases:
        err = _stderr_of(main, ["run", "--quiet", "--processes", "2", "--out", out, *extra])
        assert message in err, err
    assert not Path(out).exists()


def _stderr_of(fn, argv) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert fn(argv) == 2
    return buf.getvalue()


def test_a_data_mesh_is_refused_more_devices_than_jax_sees():
    from implicit_rec.models import parallel

    with pytest.raises(ValueError, match="devices=99 .*JAX_NUM_CPU_DEVICES"):
        parallel.data_mesh(99)
    mesh = parallel.data_mesh(1)
    parallel.check_batch(7, mesh)  # one device takes any batch
    assert mesh.axis_names == ("data",) and mesh.size == 1


def test_the_model_sections_devices_reach_fit_and_must_divide_the_batch():
    from implicit_rec import config
    from implicit_rec.loopfm import study

    cfg = config.load_config(None, ("fm.devices=4", "vm.devices=0"))
    assert (study.train_config(cfg.fm).devices, study.train_config(cfg.vm, seed=1).devices) == (4, 0)
    assert study.train_config(config.DEFAULT.fm).devices == 1  # the default: one device, no mesh
    with pytest.raises(config.ConfigError, match="vm.batch_size=256 is not divisible by vm.devices=3"):
        config.load_config(None, ("vm.devices=3",))
    with pytest.raises(config.ConfigError, match="fm.batch_size=100 is not divisible by fm.devices=8"):
        config.load_config(None, ("fm.devices=8", "fm.batch_size=100"))


def test_a_batch_is_split_in_blocks_of_rows_and_the_features_built_per_block():
    from implicit_rec.models import parallel

    mesh = parallel.data_mesh(1)
    assert parallel.process_rows(12, mesh) == slice(0, 12)  # the only process holds every row
    seen = []

    def make(rows):
        seen.append(rows.copy())
        return {"x": rows[:, None] * np.ones((1, 3)), "label": rows.astype(np.float32)}

    rows = np.array([5, 3, 9, 9])
    batch = parallel.shard_batch(make, rows, mesh, weight=np.array([1, 1, 1, 0], np.float32))
    assert sorted(batch) == ["label", "weight", "x"] and batch["x"].shape == (4, 3)
    np.testing.assert_array_equal(parallel.to_host(batch["label"]), rows)
    np.testing.assert_array_equal(parallel.to_host(batch["weight"]), [1, 1, 1, 0])
    assert len(seen) == 1 and list(seen[0]) == [5, 3, 9, 9]


# --- the subprocess -------------------------------------------------------------------------------


def _flat_params(model) -> dict:
    from flax import nnx

    def flat(tree, prefix=""):
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": np.asarray(v)})
        return out

    return flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _train(model: str, devices: int | None) -> dict:
    """Parameters before / after one epoch on ROWS rows in batches of BATCH; the epoch's mean loss and
    validation AUC; predictions. ``vm``: a DIN VM through ``fit(mesh=data_mesh(devices))`` (None: no
    mesh); ``fm``: ``study.train_fm`` with ``fm.devices = devices`` (None: 1), as ``implicit-rec run``."""
    import jax
    from flax import nnx

    from implicit_rec import config
    from implicit_rec.data.synthetic import synthetic_events
    from implicit_rec.loopfm import study
    from implicit_rec.loopfm.batches import table_batches
    from implicit_rec.models import parallel, training
    from implicit_rec.models.vertical import VerticalModel

    table = synthetic_events("tiny", seed=0)
    keys = ("fm.max_len=16", "vm.max_len=16", "fm.epochs=1", f"fm.batch_size={BATCH}", f"fm.learning_rate={LR}")
    cfg = study.resolve(config.load_config(None, keys), table.schema.max_len)
    make, valid = table_batches(table), table.rows("valid")[:64]
    mesh = None if devices is None else parallel.data_mesh(devices)
    if model == "fm":
        fm = dataclasses.replace(cfg.fm, devices=1 if devices is None else devices)
        init = _flat_params(study.make_fm(table, fm))
        rows = study.window_rows(table, "train", fm.days)[: ROWS * 10 // 9 + 1]  # ROWS train, 10% validation
        net, hist = study.train_fm(table, fm, log=lambda s: None, rows=rows)
    else:
        net = VerticalModel(table.schema, table.vocab_sizes, rngs=nnx.Rngs(0), arch="din", max_len=16)
        init = _flat_params(net)
        rows = study.window_rows(table, "train", cfg.vm.days)[:ROWS]
        hist = training.fit(
            net,
            study.VMLoss.of(cfg.vm),
            make,
            rows,
            valid,
            np.asarray(table["label"][valid]),
            np.asarray(table["user"][valid]),
            training.TrainConfig(epochs=1, batch_size=BATCH, learning_rate=LR),
            mesh=mesh,
        )
    # fit leaves the model on one local device: ordinary arrays for what follows a training
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(nnx.state(net)) if hasattr(x, "sharding"))
    out = {f"param/{k}": v for k, v in _flat_params(net).items()}
    out.update({f"init/{k}": v for k, v in init.items()})
    out["losses"] = np.array([hist["history"][0]["train_loss"], hist["best_valid_auc"]])
    out["valid"] = training.predict(net, make, valid, batch_size=40, mesh=mesh)  # 40 -> 40 or 44 rows a chunk
    return out


def _bad_sizes() -> list[str]:
    """The errors of a batch that does not split over 4 devices, and of more devices than there are."""
    from implicit_rec.models import training

    rows = np.arange(8)
    errors = []
    for cfg in (training.TrainConfig(batch_size=50, devices=4), training.TrainConfig(devices=8)):
        try:
            training.fit(None, None, None, rows, rows, rows, rows, cfg)
            errors.append("no error")
        except ValueError as err:
            errors.append(str(err).replace("\n", " "))
    return errors


def _main(argv=None) -> None:
    p = argparse.ArgumentParser(description="the subprocess of the data-parallel tests")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--only", choices=("vm", "fm"))
    p.add_argument("--coordinator")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    args = p.parse_args(argv)
    import jax

    if args.coordinator:  # one process of a jax.distributed job: the mesh spans every process's devices
        from implicit_rec.decentralized.cli import initialize_distributed

        initialize_distributed(args.coordinator, args.processes, args.process_id)
        out = _train(args.only, 0)
        np.savez(args.out / f"{args.only}-{jax.device_count()}-process{args.process_id}.npz", **out)
        jax.distributed.shutdown()
        return
    n = jax.device_count()
    for model in (args.only,) if args.only else ("vm", "fm"):
        np.savez(args.out / f"{model}-1.npz", **_train(model, None))
        for d in (2, 4) if model == "vm" and n >= 4 else (4,) if n >= 4 else ():
            np.savez(args.out / f"{model}-{d}.npz", **_train(model, d))
    if n >= 4:
        (args.out / "errors.txt").write_text("\n".join(_bad_sizes()) + "\n")


if __name__ == "__main__":
    _main()


@pytest.mark.parametrize(("count", "env", "expected"), [(3, {}, 3), (1, {}, 1), (3, {"JAX_NUM_CPU_DEVICES": "2"}, 2)])
def test_run_makes_the_cpu_devices_its_config_asks_for(count, env, expected):
    """`implicit-rec run` with fm/vm.devices = N > 1 makes N CPU devices before JAX starts, unless the
    user set a count (which wins)."""
    code = f"from implicit_rec import cli; cli._cpu_devices({count}); import jax; print(jax.device_count())"
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == str(expected)
