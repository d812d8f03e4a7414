"""Typed pipeline stages: record round-trips, the metrics.json schema, the stage cache, compile-once steps."""

import dataclasses
import json
import typing

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from implicit_rec import config, metrics, pipeline, report
from implicit_rec.models import training
from implicit_rec.models.vertical import bce_with_logits

DATA = pipeline.DataSummary(
    spec="synthetic", name="synthetic-tiny", events=1000, test_events=100, duplicate_events=None
)
FM = pipeline.FMResult(
    auc=0.7,
    gauc=0.65,
    logloss=0.4,
    params=1234,
    size="small",
    seconds=3.5,
    examples_per_second=1e4,
    history=({"epoch": 1, "train_loss": 0.5, "valid_auc": 0.69},),
)
VMS = tuple(
    pipeline.VMResult(
        name=f"din/{t}",
        arch="din",
        transfer=t,
        seed=0,
        auc=auc,
        gauc=auc - 0.05,
        logloss=0.5,
        params=99,
        hidden=(64, 32),
        epochs=2,
        seconds=1.0,
        examples_per_second=5e3,
        weights=f"models/vm-din-{t}-s0.msgpack",
    )
    for t, auc in (("none", 0.6), ("kd", 0.62))
)
SWEEP_ROW = {
    "vm": "implicit/none",
    "seed": 0,
    "transfer": "none",
    "params": 50,
    "method": "picard",
    "iterations": 2,
    "auc": 0.6,
    "auc_ci_low": 0.58,
    "auc_ci_high": 0.62,
    "gauc": 0.55,
    "logloss": 0.5,
    "residual": 0.1,
    "converged_fraction": 0.0,
    "seconds": None,
    "flops": 1e4,
}
BASELINE = {
    "vm": "din-16/none",
    "seed": 0,
    "transfer": "none",
    "params": 80,
    "hidden": [16],
    "depth": 1,
    "auc": 0.6,
    "auc_ci_low": 0.59,
    "auc_ci_high": 0.61,
    "gauc": 0.55,
    "logloss": 0.5,
    "seconds": 0.01,
    "flops": 2e4,
    "lipschitz_max": 1.5,
    "lipschitz_mean": 0.7,
}
LIPSCHITZ = {"vm": "implicit/none", "seed": 0, "method": "picard", "iterations": 2, "max": 1.2, "mean": 0.6}


def metrics_record() -> pipeline.RunMetrics:
    cfg = config.DEFAULT
    return pipeline.RunMetrics(
        schema_version=report.SCHEMA_VERSION,
        dataset=DATA,
        config=cfg.to_dict(),
        versions={"jax": "0"},
        fm=FM,
        vms=VMS,
        baselines=(BASELINE,),
        transfer_ratio=pipeline.transfer_ratio(cfg.replace(vm=dataclasses.replace(cfg.vm, archs=("din",))), FM, VMS),
        sweep=(SWEEP_ROW,),
        lipschitz=(LIPSCHITZ,),
        timing=pipeline.Timing(
            stages_s={"data": 0.1}, examples_per_second={"din/none#s0": 5e3}, fm_examples_per_second=1e4, total_s=9.0
        ),
        store=pipeline.StoreInfo(events=500, dim=16, kind="interaction", dtype="float16", bytes_on_disk=4096),
    )


RECORDS = [DATA, FM, *VMS, pipeline.SweepResult((SWEEP_ROW,), (LIPSCHITZ,), (BASELINE,), 2.0), metrics_record()]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_records_round_trip_through_json(record):
    """from_dict(to_dict(r)) == r, also through a JSON text (what the run directory holds)."""
    d = record.to_dict()
    assert type(record).from_dict(d) == record
    assert type(record).from_dict(json.loads(json.dumps(d))) == record
    assert list(d) == [f.name for f in dataclasses.fields(record)]


def test_from_dict_names_unknown_missing_and_mistyped_keys():
    d = FM.to_dict()
    with pytest.raises(ValueError, match=r"FMResult has no key\(s\) \['aucc'\]"):
        pipeline.FMResult.from_dict({**d, "aucc": 0.7})
    with pytest.raises(ValueError, match=r"FMResult lacks the key\(s\) \['gauc'\]"):
        pipeline.FMResult.from_dict({k: v for k, v in d.items() if k != "gauc"})
    with pytest.raises(ValueError, match=r"FMResult.history must be a list"):
        pipeline.FMResult.from_dict({**d, "history": 3})
    with pytest.raises(ValueError, match="must be a JSON object"):
        pipeline.VMResult.from_dict([1, 2])
    assert pipeline.FMResult.from_dict({k: v for k, v in d.items() if k != "history"}).history == ()


def test_metrics_schema_is_the_records_fields():
    """Every key the report reads (METRICS_SCHEMA) is a field of the record that writes it."""
    fields = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
    hints = typing.get_type_hints(pipeline.RunMetrics)
    assert set(report.METRICS_SCHEMA) <= fields(pipeline.RunMetrics)
    for key, wanted in report.METRICS_SCHEMA.items():
        tp = hints[key]
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if isinstance(item, type) and issubclass(item, pipeline.Record):
            assert wanted <= fields(item), (key, wanted - fields(item))
    assert report.METRICS_SCHEMA["config"] <= set(config.DEFAULT.to_dict())
    m = metrics_record().to_dict()
    report.validate_metrics(m)
    assert m["schema_version"] == report.SCHEMA_VERSION
    broken = {**m, "vms": [{k: v for k, v in m["vms"][0].items() if k != "auc"}]}
    with pytest.raises(ValueError, match=r"vms\[0\] lacks \['auc'\]"):
        report.validate_metrics(broken)
    without_interval = {**m, "sweep": [{k: v for k, v in SWEEP_ROW.items() if k != "auc_ci_high"}]}
    with pytest.raises(ValueError, match=r"sweep\[0\] lacks \['auc_ci_high'\]"):
        report.validate_metrics(without_interval)


def test_report_reads_the_record_metrics(tmp_path):
    text = report.markdown(metrics_record().to_dict())
    assert "| din/kd | 99 | 0.6200 |" in text
    assert "| implicit/none | 0 | picard | 2 | 0.6000 | [0.5800, 0.6200] |" in text
    assert "| din-16/none | 80 | 1 | 0.6000 | [0.5900, 0.6100] |" in text
    assert "### din" in text  # transfer ratios of the arch with a plain VM


def test_cached_computes_once_then_loads_and_marks_the_stage(tmp_path):
    events = []
    run = pipeline.RunDir(tmp_path / "run", quiet=True, events=events.append)
    run.prepare(config.DEFAULT)
    calls = []

    def compute():
        calls.append(1)
        return FM

    path = run.out / "models" / "fm.json"
    first = run.cached(path, compute, *pipeline.record_file(pipeline.FMResult), stage="fm")
    again = run.cached(path, compute, *pipeline.record_file(pipeline.FMResult), stage="fm")
    assert first == again == FM and len(calls) == 1
    assert events == ["stage:fm"] and "fm" in run.state()["stages"]
    assert json.loads(path.read_text()) == FM.to_dict()
    run.cached(path, compute, *pipeline.record_file(pipeline.FMResult), event="model:fm", recompute=True)
    assert len(calls) == 2 and events == ["stage:fm", "model:fm"]
    path.write_text('{"auc": 0.5}')
    with pytest.raises(pipeline.RunError, match=r"fm.json in .*lacks the key.*remove .*run or rerun with --force"):
        run.cached(path, compute, *pipeline.record_file(pipeline.FMResult), stage="fm")
    path.write_text("{")
    with pytest.raises(pipeline.RunError, match=r"fm.json in .* is not valid JSON"):
        run.cached(path, compute, *pipeline.record_file(pipeline.FMResult), stage="fm")


# -- compile once -----------------------------------------------------------------------------

TRACES = {"call": 0, "loss": 0}


class Scorer(nnx.Module):
    def __init__(self, seed: int):
        self.linear = nnx.Linear(3, 1, rngs=nnx.Rngs(seed))

    def __call__(self, batch):
        TRACES["call"] += 1  # runs only while JAX traces
        return {"logit": self.linear(batch["x"])[:, 0]}


def bce(model, batch):
    TRACES["loss"] += 1
    out = model(batch)
    return bce_with_logits(out["logit"], batch["y"], batch["weight"]), out


X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.float32)


def batch_of(rows):
    return {"x": X[rows], "y": Y[rows]}


def test_predict_compiles_once_for_models_of_one_structure():
    TRACES.update(call=0)
    rows, other = np.arange(50), np.arange(7)  # partial last chunks of 18 and 7 rows
    models = Scorer(0), Scorer(1)
    a, b = (training.predict(m, batch_of, rows, batch_size=32) for m in models)
    c = training.predict(models[0], batch_of, other, batch_size=32)
    assert TRACES["call"] == 1  # one trace: other models, chunks and row counts reuse it
    for m, got, r in ((models[0], a, rows), (models[1], b, rows), (models[0], c, other)):
        np.testing.assert_allclose(got, jax.nn.sigmoid(m.linear(X[r])[:, 0]), rtol=1e-6)  # padding dropped
    assert not np.allclose(a, b)  # ... with each model's own parameters


def test_fit_compiles_its_step_once_across_calls():
    TRACES.update(call=0, loss=0)
    rows = np.arange(64)
    results = [
        training.fit(
            Scorer(seed),
            bce,
            batch_of,
            rows[:45],  # 16 + 16 + 13: the last batch is padded to 16 rows
            rows[45:],  # 19 validation rows, one padded chunk
            Y[45:],
            np.zeros(19, int),
            training.TrainConfig(epochs=2, batch_size=16),
        )
        for seed in (0, 1)
    ]
    assert TRACES["loss"] == 1  # the training step, traced in the first fit only
    assert TRACES["call"] == 2  # + the (eval-mode) validation forward pass
    assert results[0]["history"][0]["train_loss"] != results[1]["history"][0]["train_loss"]


def test_optimizer_state_is_built_by_one_program_per_model_structure(caplog):
    """Adam's zeros come from one jitted init per model structure, not a program per parameter shape."""
    import logging

    class Two(nnx.Module):
        def __init__(self, width):
            self.a, self.b = nnx.Linear(3, width, rngs=nnx.Rngs(0)), nnx.Linear(width, 1, rngs=nnx.Rngs(0))

    nnx.Optimizer(Two(5), training._adam(0.01), wrt=nnx.Param)  # compiles the init of this structure
    models = [Two(w) for w in (6, 7, 9)]  # new parameter shapes
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        opts = [nnx.Optimizer(m, training._adam(0.01), wrt=nnx.Param) for m in models]
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Finished XLA compilation")]
    assert len(compiled) == 3 and all("init_fn" in m for m in compiled)  # one per model, nothing per leaf
    state = nnx.state(opts[2])
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(state))  # zeros (and a zero count)


def test_fit_restores_the_parameters_of_its_best_epoch():
    """Validation labels are the opposite of the training rule, so validation AUC falls as the model
    learns: fit ends with the parameters it had after its first epoch (kept by reference: the arrays
    stay valid while training replaces them)."""
    after_epoch = []

    def snapshot(model):  # a monitor runs after each epoch's validation
        after_epoch.append(np.asarray(model.linear.kernel[...]).copy())
        return {}

    model = Scorer(2)
    config = training.TrainConfig(epochs=4, batch_size=16, learning_rate=0.05, patience=4)
    valid = np.arange(45, 64)
    result = training.fit(
        model, bce, batch_of, np.arange(45), valid, 1 - Y[valid], np.zeros(19, int), config, monitor=snapshot
    )
    aucs = [h["valid_auc"] for h in result["history"]]
    assert len(aucs) == 4 and int(np.argmax(aucs)) == 0 and aucs[0] > aucs[-1]
    np.testing.assert_array_equal(np.asarray(model.linear.kernel[...]), after_epoch[0])
    assert not np.array_equal(after_epoch[0], after_epoch[-1])


def test_padding_of_the_last_batch_changes_no_update():
    """fit (last batch padded, weight 0) reaches the parameters of plain Adam steps on the unpadded batches."""
    train, config = np.arange(45), training.TrainConfig(epochs=2, batch_size=16, patience=5, seed=3)
    model = Scorer(0)
    reference = nnx.clone(model)
    training.fit(model, bce, batch_of, train, np.arange(45, 64), Y[45:], np.zeros(19, int), config)

    opt = nnx.Optimizer(reference, optax.adam(config.learning_rate), wrt=nnx.Param)
    rng = np.random.default_rng(config.seed)
    history = []
    for _ in range(config.epochs):
        order = rng.permutation(train)
        for start in range(0, len(order), config.batch_size):
            batch = {**batch_of(order[start : start + config.batch_size]), "weight": None}
            grads = nnx.grad(lambda m, batch=batch: bce(m, batch)[0])(reference)
            opt.update(reference, grads)
        history.append(nnx.clone(reference))
    best = max(
        history,
        key=lambda m: metrics.evaluate(Y[45:], np.asarray(jax.nn.sigmoid(m.linear(X[45:])[:, 0])), np.zeros(19))["auc"],
    )
    np.testing.assert_allclose(model.linear.kernel[...], best.linear.kernel[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.linear.bias[...], best.linear.bias[...], rtol=1e-5, atol=1e-6)


def test_auc_vs_flops_draws_curves_with_bands_and_labelled_points(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        {**SWEEP_ROW, "vm": vm, "seed": seed, "iterations": k, "auc": auc + 0.01 * k, "flops": 1e4 * (k + 1)}
        | {"auc_ci_low": auc + 0.01 * k - 0.02, "auc_ci_high": auc + 0.01 * k + 0.02}
        for vm, auc in (("implicit/none", 0.6), ("implicit/kd", 0.62))
        for seed in (0, 1)
        for k in (0, 2, 4)
    ]
    m = dataclasses.replace(metrics_record(), sweep=tuple(rows)).to_dict()
    fig, ax = plt.subplots()
    report.plot_auc_vs_flops(ax, m, ["implicit/none", "implicit/kd"])
    curves = [line for line in ax.get_lines() if line.get_label().startswith("implicit")]
    assert [c.get_label() for c in curves] == ["implicit/none (picard)", "implicit/kd (picard)"]
    np.testing.assert_allclose(curves[0].get_xdata(), [1e4, 3e4, 5e4])  # one point per k
    np.testing.assert_allclose(curves[1].get_ydata(), [0.62, 0.64, 0.66])
    bands = [c for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)]
    assert len(bands) == 2
    np.testing.assert_allclose(bands[0].get_paths()[0].vertices[:, 1].min(), 0.58)  # the interval's low end
    labels = [t.get_text() for t in ax.texts]
    assert "din-16" in labels and "k=4" in labels  # baselines are labelled by name without the transfer
    assert len(ax.containers) == 1 and ax.containers[0].has_yerr  # the baseline with its interval
    plt.close(fig)
    written = report.write_report(m, tmp_path)
    assert (tmp_path / "auc_vs_compute.png") in written
    assert (tmp_path / "auc_vs_compute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_run_without_transfer_variants_draws_an_empty_ratio_plot_without_warnings(tmp_path):
    import warnings

    m = dataclasses.replace(metrics_record(), transfer_ratio={}).to_dict()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = report.write_report(m, tmp_path)
    # matplotlib warns on a legend without labelled artists; other warnings (e.g. pyparsing's
    # deprecations inside older matplotlib) are not this test's subject.
    legend_warnings = [w for w in caught if "artists with labels" in str(w.message)]
    assert legend_warnings == []
    assert (tmp_path / "transfer_ratio.png") in written


# -- a whole tiny run ---------------------------------------------------------------------------


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_tiny_run_writes_the_records_and_resumes_from_them(tmp_path, monkeypatch):
    cfg = config.load_config(
        None,
        (
            'data.preset="tiny"',
            "fm.epochs=1",
            "vm.epochs=1",
            'vm.archs=["implicit"]',
            'vm.transfers=["none", "loopfm"]',
            "sweep.iterations=[0, 2, 16]",
            'sweep.methods=["picard"]',
            'sweep.baseline_archs=["din"]',
            "sweep.baseline_depths=[1]",
            'sweep.baseline_match=["params"]',
            'sweep.match_arch="implicit"',
            'sweep.baseline_transfer="none"',
            "sweep.lipschitz_examples=8",
            "sweep.lipschitz_perturbations=1",
            "sweep.timing_repeats=1",
        ),
    )
    out = tmp_path / "run"
    result = pipeline.run(out, cfg, quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    report.validate_metrics(m)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731  (NaN == NaN)
    assert same(pipeline.RunMetrics.from_dict(m).to_dict(), m) and same(m, result["metrics"])
    assert pipeline.FMResult.from_dict(
        json.loads((out / "models" / "fm.json").read_text())
    ) == pipeline.FMResult.from_dict(m["fm"])
    assert m["store"]["bytes_on_disk"] > 0 and m["store"]["events"] > 0
    # the logging pass wrote store.partial/, published as store/ by a rename once complete
    assert sorted(p.name for p in (out / "store").iterdir()) == [
        "embeddings.npy",
        "logits.npy",
        "meta.json",
        "rows.npy",
    ]
    assert not (out / "store.partial").exists()
    assert all(np.isfinite(r["seconds"]) and r["auc_ci_low"] <= r["auc"] <= r["auc_ci_high"] for r in m["sweep"])
    at_k = [c for c in m["comparisons"] if c["a"].endswith("@k16")]
    assert {(c["a"], c["b"]) for c in at_k} == {
        (f"implicit/{t}@k16", f"implicit/{t}@k2") for t in ("none", "loopfm")
    }  # read from the sweep's predictions at k = 16 and 2
    assert len(list((out / "models").glob("vm-implicit-*.k16.test.npy"))) == 2
    state = json.loads((out / "run.json").read_text())
    state["status"] = "running"  # reopen it: every stage is loaded, none computed again
    (out / "run.json").write_text(json.dumps(state))
    events = []
    again = pipeline.run(out, cfg, quiet=True, events=events.append)
    assert events == ["stage:data"]
    drop = lambda d: {k: v for k, v in d.items() if k not in ("timing",)}  # noqa: E731
    assert same(drop(again["metrics"]), drop(m))

    # an interrupted sweep resumes after its last finished model: the second implicit VM fails once
    from implicit_rec import sweep as sweep_mod

    swept, real = [], sweep_mod.implicit_sweep

    def sweep_once(model, *args, **kwargs):
        if len(swept) == 1:
            raise Interrupted
        swept.append(model)
        return real(model, *args, **kwargs)

    (out / "sweep.json").unlink()
    state["status"] = "running"
    (out / "run.json").write_text(json.dumps(state))
    monkeypatch.setattr(sweep_mod, "implicit_sweep", sweep_once)
    with pytest.raises(Interrupted):
        pipeline.run(out, cfg, quiet=True)
    (kept,) = (out / "sweep.parts").iterdir()
    assert kept.name == "vm-implicit-none-s0.json"
    swept.clear()
    monkeypatch.setattr(sweep_mod, "implicit_sweep", lambda *a, **k: swept.append(a[0]) or real(*a, **k))
    resumed = pipeline.run(out, cfg, quiet=True)["metrics"]
    assert len(swept) == 1 and not (out / "sweep.parts").exists()  # only the VM not yet swept
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    for key in ("sweep", "lipschitz", "baselines"):
        assert same(untimed(resumed[key]), untimed(m[key])), key
