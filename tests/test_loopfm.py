"""LoopFM pipeline on the tiny synthetic set: synthetic data, store, leakage, every VM variant."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from implicit_rec import config
from implicit_rec.data.events import SPLITS, EventTable, HistoryIndex
from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.loopfm import study
from implicit_rec.loopfm.batches import table_batches, vm_batches
from implicit_rec.loopfm.store import HistoricalStore
from implicit_rec.models.vertical import ARCHS, TRANSFERS, vm_loss

REAL_TRAIN_FM = study.train_fm
FAST = config.load_config(
    None,
    ("fm.max_len=64", "fm.epochs=1", "vm.epochs=1", "vm.history_len=8", "vm.train_max_iter=4", "vm.eval_max_iter=8"),
)


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


@pytest.fixture(scope="module")
def fast(tiny):
    """FAST resolved against the tiny data (fm.log_from_day, vm.max_len)."""
    return study.resolve(FAST, tiny.schema.max_len)


@pytest.fixture(scope="module")
def fm_and_store(tiny, fast):  # trains an FM: the tests using it are marked slow
    fm, _ = study.train_fm(tiny, fast.fm, log=lambda s: None)
    return fm, study.build_store(fm, tiny, fast.fm)


def test_resolve_fills_what_the_data_decides_and_nothing_else():
    cfg = config.load_config(None, ("vm.max_len=40", "fm.days=[1, 3]"))
    r = study.resolve(cfg, max_len=30)
    assert (r.fm.max_len, r.fm.log_from_day, r.vm.max_len) == (30, 3, 30)  # min(100, 30), fm.days[1], capped
    assert study.resolve(cfg, max_len=500).fm.max_len == study.FM_MAX_LEN and study.resolve(cfg, 500).vm.max_len == 40
    set_ = config.load_config(None, ("fm.max_len=12", "fm.log_from_day=5", "vm.days=[5, 7]"))
    assert (study.resolve(set_, 30).fm.max_len, study.resolve(set_, 30).fm.log_from_day) == (12, 5)
    assert r.replace(fm=cfg.fm, vm=cfg.vm) == cfg  # the other keys are untouched
    assert study.resolve(r, 30) == r  # idempotent
    with pytest.raises(ValueError, match="study.resolve"):
        study.logged_rows(synthetic_events("tiny", seed=0), cfg.fm)


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_make_vm_reads_the_solver_settings_of_the_vm_section(tiny, fast):
    vm = dataclasses.replace(fast.vm, method="picard", train_max_iter=3, train_tol=1e-3, eval_max_iter=7, eval_tol=1e-6)

    class Store:
        dim = 4

    model = study.make_vm(tiny, Store(), vm, "implicit", "none", seed=0)
    train, evaluate = model.core.train_solver, model.core.eval_solver
    assert (train.method, train.max_iter, train.tol) == ("picard", 3, 1e-3)
    assert (evaluate.method, evaluate.max_iter, evaluate.tol) == ("picard", 7, 1e-6)


def test_train_config_takes_the_sections_training_keys():
    tc = study.train_config(FAST.vm, seed=3)
    assert (tc.epochs, tc.batch_size, tc.learning_rate, tc.patience, tc.kd_weight, tc.seed) == (
        FAST.vm.epochs,
        FAST.vm.batch_size,
        FAST.vm.learning_rate,
        FAST.vm.patience,
        FAST.vm.kd_weight,
        3,
    )
    assert study.train_config(FAST.fm).learning_rate == FAST.fm.learning_rate


def test_synthetic_is_deterministic_and_well_formed(tiny):
    again = synthetic_events("tiny", seed=0, block_users=37)  # streamed in other blocks: same table
    other = synthetic_events("tiny", seed=1)
    for name in tiny.columns:
        np.testing.assert_array_equal(tiny[name], again[name])
    assert len(other) != len(tiny) or not np.array_equal(other["label"], tiny["label"])
    assert set(np.unique(tiny["split"])) == {0, 1, 2}
    assert np.all(tiny["day"][tiny["split"] == SPLITS["test"]] >= 7)  # days 7-9 are the test split
    assert set(np.unique(tiny["day"][tiny["split"] == SPLITS["test"]])) == {7, 8, 9}
    assert 0.03 < float(tiny["label"].mean()) < 0.4
    for seq, vocab in tiny.schema.sequences:
        assert tiny[seq].shape == (len(tiny), tiny.schema.max_len)
        assert int(tiny[seq].max()) < tiny.vocab_sizes[vocab]
        # pre-padded: once a position is filled, every later position is filled
        filled = tiny[seq] > 0
        assert np.all(np.diff(filled.astype(int), axis=1) >= 0)


def test_vocabularies_are_fitted_on_training_rows_only(tiny):
    train = tiny["split"] == SPLITS["train"]
    for col in ("adgroup_id", "userid"):
        train_ids = set(np.unique(tiny[col][train]))
        assert 1 not in train_ids  # OOV never occurs in training
        other = np.unique(tiny[col][~train])
        assert all(i == 1 or i in train_ids for i in other)


def test_event_table_cache_round_trip(tmp_path, tiny):
    path = tiny.save(tmp_path / "tiny")
    loaded = EventTable.load(path)
    assert isinstance(loaded["label"], np.memmap)
    for name in tiny.columns:
        np.testing.assert_array_equal(loaded[name], tiny[name])
    assert loaded.schema == tiny.schema and loaded.vocab_sizes == tiny.vocab_sizes


def test_history_index_is_point_in_time():
    users = np.array([5, 5, 5, 7, 5, 7, 5])
    times = np.array([1, 2, 2, 1, 4, 3, 5])
    got = HistoryIndex(users, times).lookup(np.arange(7), 3)
    expected = [[-1, -1, -1], [-1, -1, 0], [-1, -1, 0], [-1, -1, -1], [0, 1, 2], [-1, -1, 3], [1, 2, 4]]
    np.testing.assert_array_equal(got, expected)  # equal times are not "before"
    eligible = np.array([1, 0, 1, 1, 1, 1, 1], bool)
    got = HistoryIndex(users, times, eligible).lookup(np.array([4, 6]), 2)
    np.testing.assert_array_equal(got, [[0, 2], [2, 4]])


def _brute_force_history(users, times, eligible, row, length):
    """The same user's eligible events strictly before ``row``, the last ``length``, oldest first, -1 padded."""
    before = [j for j in range(len(users)) if users[j] == users[row] and times[j] < times[row] and eligible[j]]
    before = sorted(before, key=lambda j: (times[j], j))[-length:]
    return [-1] * (length - len(before)) + before


@pytest.mark.parametrize("seed", range(4))
def test_history_index_matches_brute_force_on_random_logs(seed):
    rng = np.random.default_rng(seed)
    n = 300
    users = rng.choice(np.array([3, 10, 11, 999, 5000, 7000], np.int32), n)  # sparse ids
    times = rng.integers(0, 40, n).astype(np.float64) + rng.choice([0.0, 0.5], n)  # ties within a user
    eligible = (rng.random(n) < 0.7) & (users != 999) & (users != 7000)  # users without eligible events
    index = HistoryIndex(users, times, eligible)
    assert np.shares_memory(index._users, users)  # an int column (a memory map) is read, not copied
    rows = rng.permutation(n)[:120]
    got = index.lookup(rows, 5)
    # equal times are ordered by row among earlier events; the index orders them by row too (stable sort)
    expected = [_brute_force_history(users, times, eligible, r, 5) for r in rows]
    np.testing.assert_array_equal(got, expected)


def _fake_fm(offset: float, dim: int = 256):
    """An 'FM' whose outputs are a known function of the rows (and of which FM it is)."""

    def apply(rows):
        rows = np.asarray(rows, np.float32)
        emb = rows[:, None] * 1e-3 + offset + np.arange(dim, dtype=np.float32)[None, :] * 1e-2
        return {"logit": rows * 1e-4 - offset, "interaction": emb, "item": -emb, "user": 2 * emb}

    return apply


def test_store_from_parts_logs_each_part_by_its_fm_in_place(tiny):
    """Out-of-fold logging: each part's rows by its own FM, written into arrays of the final size —
    the peak is the store, not chunk lists plus concatenations (per part and across parts)."""
    import tracemalloc

    n = len(tiny)
    a, b = np.arange(0, n, 3), np.setdiff1d(np.arange(n), np.arange(0, n, 3))[::-1]  # any order is kept
    parts = [(_fake_fm(0.0), a), (_fake_fm(5.0), b)]
    tracemalloc.start()
    store = HistoricalStore.build_parts(parts, tiny, kind="item", dtype=np.float32, batch_size=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows = np.concatenate([a, b])
    np.testing.assert_array_equal(store.rows, rows)
    for (apply, part), at in ((parts[0], 0), (parts[1], len(a))):
        got = slice(at, at + len(part))
        np.testing.assert_array_equal(store.embeddings[got], apply(part)["item"])
        np.testing.assert_array_equal(store.logits[got], apply(part)["logit"])
        np.testing.assert_array_equal(store.fm_logit(part), apply(part)["logit"])
    assert store.embeddings.dtype == np.float32 and store.kind == "item" and np.all(store.slot >= 0)
    # the (n, 256) float32 embeddings are most of the memory; a second copy of them would double it
    assert peak < 1.5 * store.embeddings.nbytes, (peak, store.embeddings.nbytes)
    one = HistoricalStore.build(_fake_fm(5.0), tiny, b, kind="item", dtype=np.float16, batch_size=64)
    np.testing.assert_array_equal(one.embeddings, parts[1][0](b)["item"].astype(np.float16))
    assert one.embeddings.dtype == np.float16 and np.all((one.slot >= 0) == np.isin(np.arange(n), b))
    with pytest.raises(ValueError, match="no rows to log"):
        HistoricalStore.build_parts([(_fake_fm(0.0), a[:0])], tiny)
    with pytest.raises(ValueError, match="kind='items' is not supported"):
        HistoricalStore.build_parts(parts, tiny, kind="items")


@pytest.mark.slow
def test_store_logs_what_logged_rows_says_and_reads_strictly_earlier(tiny, fast, fm_and_store, tmp_path):
    fm, store = fm_and_store
    assert fast.fm.out_of_fold == 2  # the default: the FM window is logged too, out of fold
    np.testing.assert_array_equal(store.slot >= 0, study.logged_rows(tiny, fast.fm))
    assert np.all(store.slot >= 0)  # every tiny event is in the FM window or on/after fm.log_from_day
    assert store.embeddings.dtype == np.float16
    rows = study.window_rows(tiny, "train", FAST.vm.days)
    prev = store.index.lookup(rows, FAST.vm.history_len)
    users, times = np.asarray(tiny["user"]), np.asarray(tiny["time"])
    has = prev >= 0
    assert has.any()
    assert np.all(users[np.where(has, prev, 0)][has] == np.repeat(users[rows], has.sum(1)))
    assert np.all(times[np.where(has, prev, 0)][has] < np.repeat(times[rows], has.sum(1)))
    emb, mask = store.history(rows[:10], FAST.vm.history_len)
    assert emb.shape == (10, FAST.vm.history_len, store.dim) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[~mask], 0.0)
    # without out-of-fold logging the FM logs only from fm.log_from_day (after its own window)
    in_sample_free = study.build_store(fm, tiny, dataclasses.replace(fast.fm, out_of_fold=0))
    assert np.all(tiny["day"][in_sample_free.rows] >= FAST.fm.days[1])
    np.testing.assert_array_equal(in_sample_free.slot >= 0, np.asarray(tiny["day"]) >= FAST.fm.days[1])
    with pytest.raises(KeyError):
        in_sample_free.fm_logit(np.flatnonzero(tiny["day"] < FAST.fm.days[1])[:3])
    later = np.flatnonzero(np.asarray(tiny["day"]) >= FAST.fm.days[1])  # logged by the same FM either way
    np.testing.assert_array_equal(in_sample_free.fm_logit(later), store.fm_logit(later))
    path = store.save(tmp_path / "store")
    again = HistoricalStore.load(path, tiny)
    assert isinstance(again.embeddings, np.memmap)  # read from disk by the batches, not loaded whole
    np.testing.assert_array_equal(again.history(rows[:10], 4)[0], store.history(rows[:10], 4)[0])
    assert HistoricalStore.size_on_disk(path) > store.embeddings.nbytes


@pytest.mark.slow
def test_no_leakage_permuting_later_labels_changes_no_vm_input(tiny, fast, fm_and_store):
    """Labels after the FM window reach no VM input: features, LoopFM history and KD targets."""
    _, store = fm_and_store
    rng = np.random.default_rng(0)
    columns = dict(tiny.columns)
    later = np.flatnonzero(np.asarray(tiny["day"]) >= FAST.fm.days[1])
    label = np.array(tiny["label"])
    label[later] = rng.permutation(label[later])
    label[later[:50]] = 1.0 - label[later[:50]]  # and flip some events' own labels
    columns["label"] = label
    permuted = dataclasses.replace(tiny, columns=columns)
    fm2, _ = study.train_fm(permuted, fast.fm, log=lambda s: None)
    store2 = study.build_store(fm2, permuted, fast.fm)
    rows = study.window_rows(tiny, "train", FAST.vm.days)[:300]
    make1 = vm_batches(tiny, store, FAST.vm.history_len, "loopfm+kd")
    make2 = vm_batches(permuted, store2, FAST.vm.history_len, "loopfm+kd")
    b1, b2 = make1(rows), make2(rows)
    for key in b1:
        if key != "label":
            np.testing.assert_array_equal(np.asarray(b1[key]), np.asarray(b2[key]), err_msg=key)
    assert not np.array_equal(np.asarray(b1["label"]), np.asarray(b2["label"]))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_vm_variant_trains_a_few_steps(tiny, fast, fm_and_store, arch):
    _, store = fm_and_store
    import optax

    rows = study.window_rows(tiny, "train", FAST.vm.days)[:256]
    # every transfer for one architecture; for the others the two that differ most: no FM input and
    # no KD term, both (kd and loopfm alone each build one of loopfm+kd's two changes)
    for transfer in TRANSFERS if arch == "din" else ("none", "loopfm+kd"):
        model = study.make_vm(tiny, store, fast.vm, arch, transfer, seed=0)
        batch = vm_batches(tiny, store, FAST.vm.history_len, transfer)(rows)
        opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

        @nnx.jit
        def step(model, opt, batch):
            (loss, _), grads = nnx.value_and_grad(lambda m, b: vm_loss(m, b), has_aux=True)(model, batch)
            opt.update(model, grads)
            return loss

        losses = [float(step(model, opt, batch)) for _ in range(8)]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (arch, transfer, losses)
        out = model(batch)
        assert out["logit"].shape == (len(rows),)
        if arch == "implicit":
            assert out["info"] is not None and float(out["info"].mean_nstep) > 0


@pytest.mark.slow
def test_out_of_fold_fms_are_kept_in_models_dir_and_not_trained_again(tiny, fast, fm_and_store, tmp_path, monkeypatch):
    fm, reference = fm_and_store
    quiet = lambda s: None  # noqa: E731
    first = study.build_store(fm, tiny, fast.fm, quiet, models_dir=tmp_path)
    # the parameters of each fold's FM stay; its training checkpoint is gone once it is saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fm-oof1.msgpack", "fm-oof2.msgpack"]
    for a, b in ((first, reference), (study.build_store(fm, tiny, fast.fm, quiet), reference)):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)  # training is deterministic
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("an out-of-fold FM was trained again")

    monkeypatch.setattr(study, "train_fm", no_training)
    again = study.build_store(fm, tiny, fast.fm, quiet, models_dir=tmp_path)
    reading = study.build_store(fm, tiny, fast.fm, quiet, models_dir=tmp_path, write=False)  # another process
    for store in (again, reading):
        for name in ("rows", "embeddings", "logits"):
            np.testing.assert_array_equal(getattr(store, name), getattr(first, name))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == saved
    monkeypatch.undo()
    reader = tmp_path / "reader"
    np.testing.assert_array_equal(
        study.build_store(fm, tiny, fast.fm, quiet, models_dir=reader, write=False).embeddings, first.embeddings
    )
    assert not reader.exists()  # write=False (a job's other processes) reads the directory, writes nothing


@pytest.mark.slow
def test_out_of_fold_store_logs_fm_window_without_own_labels(tiny, fast, monkeypatch):
    """Default (K = 2 folds): an FM-window event is embedded by an FM trained on the other folds only,
    and every VM event of the first VM day reads a full logged history from the FM window."""
    assert config.DEFAULT.fm.out_of_fold == 2 and fast.fm.out_of_fold == 2
    cfg = dataclasses.replace(fast.fm, max_len=32, batch_size=512)
    trained = []  # (model, the users of its training rows), for every FM build_store trains

    def recording_train_fm(table, fm, log=print, rows=None, **options):
        model, history = REAL_TRAIN_FM(table, fm, log=log, rows=rows, **options)
        rows = study.window_rows(table, "train", fm.days) if rows is None else rows
        trained.append((model, set(np.asarray(table["user"])[rows].tolist())))
        return model, history

    monkeypatch.setattr(study, "train_fm", recording_train_fm)
    fm, _ = study.train_fm(tiny, cfg, log=lambda s: None)
    store = study.build_store(fm, tiny, cfg, log=lambda s: None)
    assert len(trained) == 1 + cfg.out_of_fold and trained[0][0] is fm
    day, user = np.asarray(tiny["day"]), np.asarray(tiny["user"])
    window = np.flatnonzero(day < cfg.days[1])
    assert np.all(store.slot[window] >= 0)  # the FM window is logged too

    # provenance: the FM whose outputs a window event's logged logit is was not trained on its user
    convert = table_batches(tiny)
    logits = np.stack([np.asarray(study._fm_outputs(m, convert(window))["logit"]) for m, _ in trained])
    distance = np.abs(logits - store.fm_logit(window)[None])
    source = np.argmin(distance, axis=0)
    assert np.all(distance[source, np.arange(len(window))] < 1e-3 * (1 + np.abs(store.fm_logit(window))))
    assert not np.any(source == 0)  # never the main FM: it trained on every user of the window
    for k, (_, users) in enumerate(trained):
        assert not users & set(user[window[source == k]].tolist()), f"FM {k} logged events of its own users"

    # the first VM day: every training event reads a full history, min(L, its user's earlier events)
    # logged entries, and all of it from the FM window but the entries of that same day
    length = fast.vm.history_len
    rows = study.window_rows(tiny, "train", fast.vm.days)
    rows = rows[day[rows] == fast.vm.days[0]]
    times = np.asarray(tiny["time"])
    earlier = np.array([np.sum((user == user[r]) & (times < times[r])) for r in rows])
    same_day = np.array([np.sum((user == user[r]) & (times < times[r]) & (day >= cfg.days[1])) for r in rows])
    assert len(rows) and np.all(earlier > same_day)  # every tiny user of that day has FM-window events
    _, mask = store.history(rows, length)
    np.testing.assert_array_equal(mask.sum(1), np.minimum(earlier, length))
    prev = store.index.lookup(rows, length)
    from_window = (prev >= 0) & (day[np.clip(prev, 0, None)] < cfg.days[1])
    np.testing.assert_array_equal(from_window.sum(1), np.minimum(earlier, length) - np.minimum(same_day, length))
    assert np.mean(from_window.any(1)) > 0.5
    _, no_oof_mask = study.build_store(fm, tiny, dataclasses.replace(cfg, out_of_fold=0)).history(rows, length)
    assert no_oof_mask.sum() < mask.sum()  # without out-of-fold logging the first VM day sees far less

    # flipping every fold-0 label of the FM window changes no fold-0 embedding
    fold0 = window[user[window] % 2 == 0]
    columns = dict(tiny.columns)
    label = np.array(tiny["label"])
    label[fold0] = 1.0 - label[fold0]
    columns["label"] = label
    flipped = dataclasses.replace(tiny, columns=columns)
    fm2, _ = REAL_TRAIN_FM(flipped, cfg, log=lambda s: None)
    store2 = study.build_store(fm2, flipped, cfg, log=lambda s: None)
    np.testing.assert_array_equal(store.embeddings[store.slot[fold0]], store2.embeddings[store2.slot[fold0]])
    fold1 = window[user[window] % 2 == 1]  # ... while fold 1's, embedded by the FM trained on fold 0, change
    assert not np.array_equal(store.embeddings[store.slot[fold1]], store2.embeddings[store2.slot[fold1]])


@pytest.mark.slow
def test_experiment_script_runs_the_pipeline_stages_and_writes_report_metrics_and_plot(tmp_path):
    """The script's results are the pipeline's: the same VM results files, resumable; flags are keys."""
    import json

    from experiments import loopfm_transfer

    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--archs", "mlp", "--set", "vm.history_len=8", "--set", "fm.epochs=1"]
    argv += ["--set", "vm.epochs=1", "--out", str(out), "--quiet"]
    loopfm_transfer.main(argv)
    payload = json.loads((out / "metrics.json").read_text())
    run = payload["runs"]["small"]
    assert payload["config"]["vm"]["archs"] == ["mlp"] and payload["config"]["sweep"]["baseline_archs"] == []
    assert {v["transfer"] for v in run["vms"]} == set(TRANSFERS)
    for v in run["vms"]:  # each row is the pipeline's VMResult of that model
        assert json.loads((out / "small" / v["weights"]).with_suffix(".json").read_text()) == v
    assert set(run["transfer_ratio"]["mlp"]) == {"auc", "neg_logloss"}
    assert (out / "auc_by_variant.png").stat().st_size > 1000
    assert run["store"]["bytes_on_disk"] > 0 and (out / "small" / "store" / "embeddings.npy").is_file()
    assert "Transfer ratios" in (out / "report.md").read_text()
    before = (out / "metrics.json").read_text()
    loopfm_transfer.main(argv)  # a rerun loads every stage: the same results
    assert json.loads((out / "metrics.json").read_text())["runs"] == json.loads(before)["runs"]


def test_experiment_script_refuses_bad_keys_and_leaky_windows(capsys):
    from experiments import loopfm_transfer

    for argv, message in (
        (["--set", "vm.histroy_len=8"], "did you mean 'vm.history_len'"),
        (["--set", "fm.days=[0,5]", "--set", "fm.out_of_fold=0"], "overlaps vm.days"),
        (["--set", "fm.log_from_day=2"], "fm.log_from_day=2 is inside fm.days"),
        (["--seeds", "0"], "argument --seeds"),
        (["--fm-size", "tiny"], "not known"),
    ):
        with pytest.raises(SystemExit) as exc:
            loopfm_transfer.parse(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err, argv


def test_experiment_script_defaults_and_flags_are_keys(tmp_path):
    """The study's own defaults (5 seeds, no explicit baselines) sit under the run defaults; flags and
    --set override them, a config file too."""
    from experiments import loopfm_transfer

    args, cfg = loopfm_transfer.parse([])
    assert (cfg.vm.seeds, cfg.sweep.baseline_archs) == (5, ())
    assert cfg.fm.out_of_fold == 2 and config.DEFAULT.vm.seeds != 5  # the run's default is not the study's
    assert cfg.replace(vm=config.DEFAULT.vm, sweep=config.DEFAULT.sweep) == config.DEFAULT
    assert args.fm_size == [cfg.fm.size] and str(args.out) == "runs/loopfm"
    _, cfg = loopfm_transfer.parse(["--seeds", "2", "--archs", "mlp,din", "--fm-size", "small,medium"])
    assert (cfg.vm.seeds, cfg.vm.archs) == (2, ("mlp", "din"))
    _, cfg = loopfm_transfer.parse(["--set", "vm.seeds=3", "--set", "fm.out_of_fold=0"])
    assert (cfg.vm.seeds, cfg.fm.out_of_fold) == (3, 0)
    path = tmp_path / "c.toml"
    path.write_text("[vm]\nseeds = 4\n")
    _, cfg = loopfm_transfer.parse(["--config", str(path)])
    assert (cfg.vm.seeds, cfg.sweep.baseline_archs) == (4, ())  # the file's key wins, the other study default stays
    assert loopfm_transfer.parse(["--config", str(path), "--set", "vm.seeds=1"])[1].vm.seeds == 1
    path.write_text('[sweep]\nbaseline_archs = ["din"]\n')
    assert loopfm_transfer.parse(["--config", str(path)])[1].sweep.baseline_archs == ("din",)


def test_batches_stream_every_row_once_deterministically(tmp_path, tiny):
    from implicit_rec.data import batches

    table = EventTable.load(tiny.save(tmp_path / "t"))  # memory-mapped
    rows = tiny.rows("train")
    got = list(batches(table, rows, 100, shuffle=True, seed=3))
    again = list(batches(table, rows, 100, shuffle=True, seed=3))
    seen = np.concatenate([b["time"] for b in got])
    assert len(seen) == len(rows) and sorted(seen) == sorted(np.asarray(tiny["time"])[rows])
    np.testing.assert_array_equal(
        np.concatenate([b["label"] for b in again]), np.concatenate([b["label"] for b in got])
    )
    assert all(len(b["label"]) == 100 for b in got[:-1]) and got[0]["cate_his"].shape[1] == tiny.schema.max_len
    assert len(list(batches(table, rows, 100, drop_last=True))) == len(rows) // 100
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(table, rows, 0))
