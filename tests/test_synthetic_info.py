"""The synthetic table's FM-only order stream and oracle info arrays: shapes, timing, no leakage into inputs."""

import dataclasses
import json

import numpy as np
import pytest

from implicit_rec.data import synthetic
from implicit_rec.data.events import EventTable, Schema, batches
from implicit_rec.data.synthetic import INFO_ARRAYS, ORDER_SEQUENCES, synthetic_events
from implicit_rec.data.vocabulary import index_dtype
from implicit_rec.loopfm.batches import table_batches


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


def test_orders_are_fm_sequences_with_their_own_vocabulary_rules(tiny):
    assert tiny.schema.fm_sequences == ORDER_SEQUENCES
    assert not set(dict(ORDER_SEQUENCES)) & set(dict(tiny.schema.sequences))  # not in the main stream
    for seq, vocab in tiny.schema.fm_sequences:
        col = np.asarray(tiny[seq])
        assert col.shape == (len(tiny), tiny.schema.max_len) and col.dtype == index_dtype(tiny.vocab_sizes[vocab])
        assert int(col.max()) < tiny.vocab_sizes[vocab]
        assert np.all(np.diff((col > 0).astype(int), axis=1) >= 0)  # pre-padded
    assert (np.asarray(tiny["order_brand_his"]) > 0).mean() > 0.5  # most users have many orders
    batch = table_batches(tiny)(np.arange(5))
    assert all(batch[c].dtype == np.int32 for c in tiny.index_columns)  # stored narrow, batched as int32
    assert tiny["cate_his"].dtype.itemsize < 4


def test_info_arrays_are_not_columns_and_have_their_shapes(tiny):
    n, L = len(tiny), tiny.schema.max_len
    for name in INFO_ARRAYS:
        assert name in tiny.info and name not in tiny.columns
        assert tiny.info[name].dtype == np.float32
    assert tiny.info["click_prob"].shape == tiny.info["logit_base"].shape == (n,)
    assert tiny.info["his_age"].shape == tiny.info["order_age"].shape == (n, L)
    p = tiny.info["click_prob"]
    assert np.all((p > 0) & (p < 1))
    # the labels are Bernoulli(click_prob): the mean probability matches the click rate
    assert abs(float(p.mean()) - float(np.mean(tiny["label"]))) < 0.02


@pytest.mark.parametrize(("age", "seq"), [("his_age", "cate_his"), ("order_age", "order_brand_his")])
def test_ages_are_nan_exactly_at_padding_positive_and_oldest_first(tiny, age, seq):
    ages, ids = tiny.info[age], np.asarray(tiny[seq])
    np.testing.assert_array_equal(np.isnan(ages), ids == 0)
    seen = ages[~np.isnan(ages)]
    assert seen.min() > 0  # strictly before the impression
    diffs = np.diff(ages, axis=1)
    assert np.all(diffs[~np.isnan(diffs)] <= 0)  # oldest first: ages fall towards the newest entry
    assert float(np.nanmax(ages)) > 8  # histories reach before the 8-day window


def test_permuting_every_info_array_changes_no_model_input(tiny):
    rng = np.random.default_rng(0)
    info = dict(tiny.info)
    for name in INFO_ARRAYS:
        info[name] = np.asarray(tiny.info[name])[rng.permutation(len(tiny))]
        assert not np.array_equal(info[name], tiny.info[name], equal_nan=True)
    permuted = dataclasses.replace(tiny, info=info)
    rows = np.arange(0, len(tiny), 7)
    b1, b2 = table_batches(tiny)(rows), table_batches(permuted)(rows)
    assert {"order_cate_his", "order_brand_his"} <= set(b1) and not set(INFO_ARRAYS) & set(b1)
    for key in b1:
        np.testing.assert_array_equal(b1[key], b2[key], err_msg=key)
    for c1, c2 in zip(batches(tiny, rows, 64), batches(permuted, rows, 64), strict=True):
        assert set(c1) == set(tiny.columns)
        for key in c1:
            np.testing.assert_array_equal(c1[key], c2[key], err_msg=key)


def test_labels_never_influence_features_or_info(tiny, monkeypatch):
    """Every label flipped at the draw: every other column and every info array stays the same."""
    original = synthetic._draw_labels
    monkeypatch.setattr(synthetic, "_draw_labels", lambda rng, prob: 1.0 - original(rng, prob))
    other = synthetic_events("tiny", seed=0)
    np.testing.assert_array_equal(other["label"], 1.0 - np.asarray(tiny["label"]))
    for name in tiny.columns:
        if name != "label":
            np.testing.assert_array_equal(other[name], tiny[name], err_msg=name)
    for name in INFO_ARRAYS:
        np.testing.assert_array_equal(other.info[name], tiny.info[name], err_msg=name)


def test_info_is_deterministic_by_seed_and_survives_a_cache_round_trip(tiny, tmp_path):
    again = synthetic_events("tiny", seed=0, block_users=41)
    for name in INFO_ARRAYS:
        np.testing.assert_array_equal(again.info[name], tiny.info[name], err_msg=name)
    loaded = EventTable.load(tiny.save(tmp_path / "t"))
    assert loaded.schema == tiny.schema
    for name in INFO_ARRAYS:
        np.testing.assert_array_equal(loaded.info[name], tiny.info[name], err_msg=name)
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert set(INFO_ARRAYS) <= set(meta["info"]["info_arrays"]) and "click_prob" not in meta["columns"]


def test_schema_serialises_fm_sequences_and_reads_old_meta():
    schema = Schema(("a", "b"), ("b",), sequences=(("a_his", "a"),), max_len=4, fm_sequences=(("b_o", "b"),))
    assert Schema.from_json(json.loads(json.dumps(schema.to_json()))) == schema
    old = {k: v for k, v in schema.to_json().items() if k != "fm_sequences"}
    assert Schema.from_json(old).fm_sequences == ()
    assert schema.all_sequences == (("a_his", "a"), ("b_o", "b"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(fm_sequences=(("b_o", "zz"),)), "fm_sequences entry 'b_o' shares vocabulary 'zz'"),
        (dict(fm_sequences=(("a_his", "a"),)), r"schema names \['a_his'\] more than once"),
    ],
)
def test_schema_rejects_bad_fm_sequences(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schema(("a", "b"), ("b",), sequences=(("a_his", "a"),), max_len=4, **kwargs)


def test_event_table_checks_fm_sequence_columns():
    schema = Schema(("a",), ("a",), max_len=3, fm_sequences=(("a_o", "a"),))
    cols = {k: np.zeros(2, np.int64) for k in ("user", "time", "day", "split", "label", "a")}
    with pytest.raises(ValueError, match=r"lacks columns \['a_o'\]"):
        EventTable(schema, cols, {"a": 3})
    with pytest.raises(ValueError, match=r"sequence column 'a_o' must have shape \(N, 3\)"):
        EventTable(schema, {**cols, "a_o": np.zeros((2, 2), np.int32)}, {"a": 3})


@pytest.mark.slow  # spawns two processes that import the package
def test_blocks_simulated_in_worker_processes_give_the_same_table():
    p = dataclasses.replace(synthetic.PRESETS["tiny"], users=90)
    one = synthetic_events(p, seed=2, block_users=20)  # 5 blocks, this process
    two = synthetic_events(p, seed=2, block_users=20, workers=2)
    assert len(one.columns["label"]) > 500
    assert one.columns.keys() == two.columns.keys() and one.vocab_sizes == two.vocab_sizes
    for k, v in one.columns.items():
        np.testing.assert_array_equal(v, two.columns[k], err_msg=k)
    for k, v in one.info.items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(two.info[k]), err_msg=k)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2", np.int64(0)])
def test_workers_must_be_a_positive_integer_or_none(workers):
    with pytest.raises(ValueError, match="workers must be a positive integer or None"):
        synthetic_events("tiny", workers=workers)


def test_block_columns_are_the_same_for_any_block_size_in_one_process():
    p = dataclasses.replace(synthetic.PRESETS["tiny"], users=30)
    for workers in (None, 1, np.int64(3)):
        synthetic.check_workers(workers)  # accepted
    world = synthetic._World(p, np.random.default_rng(1))
    seeds = np.random.SeedSequence(1).spawn(p.users)

    def blocks(size, raw):
        chunks = [(s, seeds[s : s + size]) for s in range(0, p.users, size)]
        parts = list(synthetic._simulated_blocks(p, world, chunks, workers=1, raw=raw))
        return {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}

    whole, split = blocks(30, False), blocks(7, False)  # one block; five, the last of 2 users
    assert whole.keys() == split.keys() and "info.click_prob" in whole and "split" in whole
    for k, v in whole.items():
        np.testing.assert_array_equal(v, split[k], err_msg=k)
    raw = blocks(7, True)  # what the simulation draws: no info arrays, no derived columns
    assert not any(k.startswith("info.") for k in raw) and "split" not in raw
    np.testing.assert_array_equal(raw["time"], whole["time"])
