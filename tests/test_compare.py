"""The run's paired comparisons (pipeline.compare) and the report's shares of attainable lift."""

import dataclasses

import numpy as np
import pytest

from implicit_rec import metrics, pipeline, report
from implicit_rec.config import ARCHS
from implicit_rec.pipeline import compare


def _vm(name: str, params: int, auc: float, seed: int = 0, hidden=(64, 32)) -> pipeline.VMResult:
    arch, transfer = name.split("/")
    return pipeline.VMResult(
        name=name,
        arch=arch if arch in ARCHS else arch.split("-")[0],  # "din-8": an explicit baseline
        transfer=transfer,
        seed=seed,
        auc=auc,
        gauc=auc,
        logloss=0.4,
        params=params,
        hidden=None if arch.startswith("implicit") else hidden,
        epochs=1,
        seconds=1.0,
        examples_per_second=1.0,
        weights=f"models/{name.replace('/', '-')}-s{seed}.msgpack",
    )


def test_pairs_cover_variants_loopfm_vs_kd_equal_params_and_fm_vs_best():
    vms = [
        _vm(f"{arch}/{t}", params, auc)
        for arch, params in (("din", 1000), ("implicit", 500))
        for t, auc in (("none", 0.60), ("kd", 0.61), ("loopfm", 0.62), ("loopfm+kd", 0.63))
    ]
    vms.append(_vm("din/loopfm+kd", 1000, 0.70, seed=1))  # a second seed lifts din/loopfm+kd's mean
    baselines = [_vm("din-8/loopfm+kd", 480, 0.6, hidden=(8,)), _vm("din-64x64/loopfm+kd", 5000, 0.6)]
    pairs = compare.comparison_pairs(vms, baselines)
    for arch in ("din", "implicit"):
        for t in ("kd", "loopfm", "loopfm+kd"):
            assert (f"{arch}/{t}", f"{arch}/none") in pairs
        assert (f"{arch}/loopfm", f"{arch}/kd") in pairs
    # implicit vs the explicit model of its transfer with the nearest parameter count
    assert ("implicit/loopfm+kd", "din-8/loopfm+kd") in pairs
    assert ("implicit/none", "din/none") in pairs  # no baseline of that transfer: the arch's own VM
    assert pairs[-1] == ("fm", "din/loopfm+kd")  # best by mean AUC over seeds
    # the best implicit VM (implicit/loopfm+kd, 0.63) against every baseline and the explicit VM of its transfer
    assert [p for p in pairs if p[0] == "implicit/loopfm+kd" and p[1].startswith("din")] == [
        ("implicit/loopfm+kd", "din-8/loopfm+kd"),
        ("implicit/loopfm+kd", "din-64x64/loopfm+kd"),
        ("implicit/loopfm+kd", "din/loopfm+kd"),
    ]
    assert len(pairs) == len(set(pairs)) == 2 * 4 + 4 + 2 + 1  # the nearest-parameter pair is not repeated
    assert not any("@k" in a for a, _ in pairs)  # no sweep iterations given: no NAME@kK pairs


def test_pairs_of_iterations_and_of_the_best_implicit_vm():
    vms = [
        _vm("din/none", 1000, 0.60),
        _vm("din/kd", 1000, 0.64),
        _vm("implicit/none", 500, 0.61),
        _vm("implicit/none", 500, 0.63, seed=1),  # mean 0.62: the best implicit VM
        _vm("implicit/kd", 500, 0.615),
    ]
    baselines = [_vm("din-8/kd", 480, 0.6, hidden=(8,)), _vm("din-d4@params/none", 520, 0.6, hidden=(16,) * 4)]
    pairs = compare.comparison_pairs(vms, baselines, iterations=(0, 1, 2, 4, 8, 16, 32))
    assert ("implicit/none@k16", "implicit/none@k2") in pairs and ("implicit/kd@k16", "implicit/kd@k2") in pairs
    assert not any(a.startswith("din") and "@k" in a for a, _ in pairs)  # explicit VMs have no iterations
    assert ("implicit/none", "din-8/kd") in pairs and ("implicit/none", "din-d4@params/none") in pairs
    assert ("implicit/none", "din/none") in pairs and ("implicit/none", "din/kd") not in pairs  # same transfer only
    assert ("implicit/kd", "din-d4@params/none") not in pairs  # only the best implicit VM meets every baseline
    assert pairs[-1] == ("fm", "din/kd") and len(pairs) == len(set(pairs))
    without_2 = compare.comparison_pairs(vms, baselines, iterations=(0, 4, 16))
    assert not any("@k" in a for a, _ in without_2)  # k = 2 not swept: no iteration pair
    assert compare.split_iterations("implicit/none@k16") == ("implicit/none", 16)
    assert compare.split_iterations("din-d4@params/none") == ("din-d4@params/none", None)
    assert compare.split_iterations(compare.at_iterations("a/b", 2)) == ("a/b", 2)


class _Table:
    """What the comparison stage reads of the event table: every event is a test event."""

    def __init__(self, labels: np.ndarray, users: np.ndarray):
        self.labels, self.users = labels, users

    def rows(self, split):
        return np.arange(self.users.size)

    def __getitem__(self, column):
        return {"label": self.labels, "user": self.users}[column]


def _comparison_run(tmp_path, seed: int, vms: tuple):
    """``(run, models, save)``: a run directory; the stage's models, ``vms`` and a test set of 200 users x
    5 events labelled from a latent score; ``save(path, noise)`` saves that score plus noise as predictions."""
    from types import SimpleNamespace

    from implicit_rec import config

    run = pipeline.RunDir(tmp_path / "run", quiet=True)
    run.prepare(config.DEFAULT)
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(200), 5)
    score = rng.normal(size=users.size)
    labels = (rng.uniform(size=users.size) < 1 / (1 + np.exp(-2 * score))).astype(float)

    def save(path, noise):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, (1 / (1 + np.exp(-(score + noise * rng.normal(size=score.size))))).astype(np.float32))

    return run, SimpleNamespace(vms=vms, table=_Table(labels, users)), save


def test_the_comparison_stage_reads_the_sweeps_predictions_at_k(tmp_path):
    from implicit_rec.pipeline.stages import predictions_path

    vms = (_vm("din/none", 100, 0.6), _vm("implicit/none", 50, 0.6))
    run, models, save = _comparison_run(tmp_path, 0, vms)
    labels = models.table.labels
    save(predictions_path(run.model_paths("fm")[0]), 0.5)
    for v in vms:
        save(predictions_path(run.out / v.weights), 1.0)
    implicit = run.out / vms[1].weights
    save(predictions_path(implicit, 16), 0.2)  # many iterations: close to the truth
    with pytest.raises(pipeline.RunError, match=r"k2.test.npy is missing.*implicit-rec sweep --run"):
        pipeline.comparison_stage(run, models, (), (0, 2, 16))
    save(predictions_path(implicit, 2), 3.0)  # two iterations: far off
    rows = pipeline.comparison_stage(run, models, (), (0, 2, 16))
    at_k = [r for r in rows if r["a"] == "implicit/none@k16"]
    assert [(r["b"], r["metric"]) for r in at_k] == [("implicit/none@k2", "auc"), ("implicit/none@k2", "gauc")]
    k16, k2 = (np.load(predictions_path(implicit, k)) for k in (16, 2))
    assert at_k[0]["diff"] == pytest.approx(metrics.auc(labels, k16) - metrics.auc(labels, k2))
    assert at_k[0]["ci_low"] > 0
    assert pipeline.comparison_stage(run, models, (), (0, 2, 16)) == rows  # cached
    save(predictions_path(implicit, 2), 0.1)
    redone = pipeline.comparison_stage(run, models, (), (0, 2, 16), recompute=True)  # a redone sweep
    assert next(r for r in redone if r["a"] == "implicit/none@k16")["diff"] < 0


def test_the_sequence_reading_implicit_vm_is_compared_like_the_implicit_vm():
    vms = [
        _vm(f"{arch}/{t}", params, 0.6)
        for arch, params in (("din", 1000), ("implicit-seq", 900))
        for t in ("none", "kd")
    ]
    pairs = compare.comparison_pairs(vms, [_vm("din-8/kd", 880, 0.6, hidden=(8,))])
    assert ("implicit-seq/kd", "implicit-seq/none") in pairs
    assert ("implicit-seq/kd", "din-8/kd") in pairs  # the explicit model of its transfer nearest in parameters
    assert ("implicit-seq/none", "din/none") in pairs
    assert not any(a.startswith("din") and b.startswith("implicit") for a, b in pairs)  # never the explicit side


def test_pairs_without_a_plain_vm_or_implicit_vm():
    pairs = compare.comparison_pairs([_vm("din/kd", 10, 0.6), _vm("din/loopfm", 10, 0.61)])
    assert pairs == [("din/loopfm", "din/kd"), ("fm", "din/loopfm")]
    assert compare.comparison_pairs([]) == []


def test_compare_rows_are_metric_differences_with_intervals():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(300), 10)
    score = rng.normal(size=users.size)
    labels = (rng.uniform(size=users.size) < 1 / (1 + np.exp(-2 * score))).astype(float)
    good = 1 / (1 + np.exp(-(score + 0.3 * rng.normal(size=(2, users.size)))))
    bad = 1 / (1 + np.exp(-(score + 1.5 * rng.normal(size=(1, users.size)))))
    rows = compare.compare(labels, users, {"good": good, "bad": bad}, [("good", "bad")], ("auc", "gauc"), n_boot=200)
    assert [(r["a"], r["b"], r["metric"]) for r in rows] == [("good", "bad", "auc"), ("good", "bad", "gauc")]
    auc = lambda p: metrics.auc(labels, p)  # noqa: E731
    assert rows[0]["diff"] == pytest.approx(np.mean([auc(g) for g in good]) - auc(bad[0]))
    for r in rows:
        assert r["ci_low"] <= r["diff"] <= r["ci_high"] and r["ci_low"] > 0  # a clear gap is resolved
        assert (r["seeds_a"], r["seeds_b"], r["level"]) == (2, 1, 0.95)
    with pytest.raises(ValueError, match=r"no test predictions for \['fm'\]"):
        compare.compare(labels, users, {"good": good}, [("fm", "good")])


def test_share_of_lift():
    assert report.share_of_lift(0.65, 0.8) == pytest.approx(0.5)
    assert report.share_of_lift(0.8, 0.8) == pytest.approx(1.0)
    assert report.share_of_lift(0.5, 0.8) == 0.0
    assert report.share_of_lift(0.7, None) is None and report.share_of_lift(0.7, 0.5) is None


def _metrics(ceiling, comparisons=()):
    from test_stages import metrics_record

    return dataclasses.replace(metrics_record(), ceiling=ceiling, comparisons=tuple(comparisons)).to_dict()


CEILING = pipeline.CeilingResult(
    available=True,
    bayes={"auc": 0.8, "gauc": 0.78, "logloss": 0.35},
    fm_window={"auc": 0.76, "gauc": 0.74, "logloss": 0.37},
    vm_window={"auc": 0.7, "gauc": 0.69, "logloss": 0.39},
    fm_len=100,
    vm_len=25,
    procedure="a logistic regression on the true terms",
)


def test_report_shows_ceilings_shares_and_intervals():
    row = {
        "a": "din/kd",
        "b": "din/none",
        "metric": "auc",
        "diff": 0.02,
        "ci_low": -0.001,
        "ci_high": 0.04,
        "level": 0.95,
        "n_boot": 1000,
        "seeds_a": 1,
        "seeds_b": 1,
    }
    m = _metrics(CEILING, [row, {**row, "ci_low": 0.01}])
    assert pipeline.RunMetrics.from_dict(m).ceiling == CEILING
    text = report.markdown(m)
    assert "| Bayes (true click probability) | all | 0.8000 |" in text
    assert "| VM window | 25 | 0.7000 |" in text
    # din/none AUC 0.60 with VM-window ceiling 0.70: half the lift; FM 0.70 of the FM window's 0.76
    assert "| din/none | 99 | 0.6000 | 50% |" in text and "(share 77% of its window's lift)" in text
    assert "| din/kd | din/none | auc | +0.0200 | [-0.0010, +0.0400] | not resolved |" in text
    assert "| din/kd | din/none | auc | +0.0200 | [+0.0100, +0.0400] | yes |" in text


def test_report_of_real_data_says_there_is_no_ceiling():
    text = report.markdown(_metrics(pipeline.CeilingResult(available=False, reason="real data")))
    assert "No ceiling: real data" in text and "| din/none | 99 | 0.6000 | n/a |" in text
    assert "No ceiling" in report.markdown(_metrics(None))  # a run from before ceilings


def test_report_shows_the_depth_ceilings_and_draws_the_h_step_oracle(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    hops = {"1": 0.71, "2": 0.73, "4": 0.76, "8": 0.79}
    m = _metrics(dataclasses.replace(CEILING, hops=hops))
    text = report.markdown(m)
    assert "Depth ceilings" in text and "| AUC | 0.7100 | 0.7300 | 0.7600 | 0.7900 |" in text
    assert "Depth ceilings" not in report.markdown(_metrics(CEILING))
    report.write_report(m, tmp_path)
    assert (tmp_path / "auc_vs_iterations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replicate_files_round_trip_bit_identically_and_a_damaged_file_is_absent(tmp_path):
    from implicit_rec import stats

    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(80), 6)
    score = rng.normal(size=users.size)
    labels = (rng.uniform(size=users.size) < 1 / (1 + np.exp(-2 * score))).astype(float)
    preds = {
        "a": 1 / (1 + np.exp(-(score[None] + rng.normal(size=(3, score.size))))),  # three seeds
        "b": 1 / (1 + np.exp(-(score + 2 * rng.normal(size=score.size)))),
    }
    files = compare.ReplicateFiles(tmp_path / "parts")
    for metric in stats.METRICS:
        plain = stats.paired_bootstraps(labels, users, preds, [("a", "b")], metric=metric, n_boot=150)
        first = stats.paired_bootstraps(labels, users, preds, [("a", "b")], metric=metric, n_boot=150, memo=files)
        again = stats.paired_bootstraps(labels, users, preds, [("a", "b")], metric=metric, n_boot=150, memo=files)
        assert plain == first == again
    assert len(files) == 6 and sorted(p.suffix for p in (tmp_path / "parts").iterdir()) == [".npz"] * 6
    key = next(iter(files))
    held = files[key]
    assert all(np.array_equal(c, d) for c, d in zip(files[key].chunks, held.chunks, strict=True))
    path = tmp_path / "parts" / f"{key}.npz"
    path.write_bytes(path.read_bytes()[:100])  # a damaged file: absent, computed again
    assert key not in files and files.get(key) is None
    del files[next(iter(files))]
    assert len(files) == 5
    with pytest.raises(KeyError):
        files["../escape"]


def test_an_interrupted_comparison_stage_resumes_after_its_last_model(tmp_path, monkeypatch):
    from implicit_rec import stats
    from implicit_rec.pipeline.stages import predictions_path

    vms = tuple(_vm(f"din/{t}", 100, 0.6 + 0.01 * i) for i, t in enumerate(("none", "kd", "loopfm")))
    run, models, save = _comparison_run(tmp_path, 1, vms)
    save(predictions_path(run.model_paths("fm")[0]), 0.5)
    for i, v in enumerate(vms):
        save(predictions_path(run.out / v.weights), 1.0 + i)
    reference = pipeline.comparison_stage(run, models, ())
    assert not (run.out / "comparisons.parts").exists()  # removed once comparisons.json is written
    (run.out / "comparisons.json").unlink()
    built, real = [], stats._Model

    class Interrupted(Exception):
        pass

    class FailingThird(real):
        def __init__(self, metric, d, p):
            if len(built) == 2:
                raise Interrupted
            built.append(metric)
            super().__init__(metric, d, p)

    monkeypatch.setattr(stats, "_Model", FailingThird)
    with pytest.raises(Interrupted):
        pipeline.comparison_stage(run, models, ())
    assert len(list((run.out / "comparisons.parts").iterdir())) == 2
    monkeypatch.setattr(stats, "_Model", lambda *a: built.append(a[0]) or real(*a))
    built.clear()
    assert pipeline.comparison_stage(run, models, ()) == reference  # bit-identical
    assert (
        len(built) == 4 * len(compare.METRICS) - 2
    )  # the four models (fm and three VMs) per metric, less the two kept
    assert not (run.out / "comparisons.parts").exists()
