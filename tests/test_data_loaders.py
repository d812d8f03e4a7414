"""Loaders of the BARS x1 releases and of generic interaction logs, vocabularies, caching, bad input.

Fixture files are written with tmp_path in exactly the BARS formats (shared/notes/datasets.md).
"""

import collections
import os
import sys
import types

import numpy as np
import pytest

from implicit_rec.data import (
    DataError,
    EventTable,
    bars,
    load_amazonelectronics,
    load_dataset,
    load_interactions,
    load_kuaivideo,
    load_taobaoad,
    sequences,
)
from implicit_rec.data.cells import MISSING
from implicit_rec.data.errors import Where
from implicit_rec.data.sequences import PAD_TOKEN, split_sequences
from implicit_rec.data.vocabulary import TokenCounter, fit_vocab, fit_vocab_from, index_dtype, narrowest_int

TAOBAO_HEADER = (
    "clk,btag_his,cate_his,brand_his,userid,cms_segid,cms_group_id,final_gender_code,"
    "age_level,pvalue_level,shopping_level,occupation,new_user_class_level,adgroup_id,"
    "cate_id,campaign_id,customer,brand,price,pid,btag"
).split(",")
KUAI_HEADER = "timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items".split(",")
AMAZON_HEADER = "label,user_id,item_id,cate_id,item_history,cate_history".split(",")


def write_csv(path, header, rows):
    """Rows are dicts (missing keys -> defaults by the caller) written in header order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(r[c]) for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def taobao_row(**kw):
    row = dict(
        clk=0,
        btag_his="",
        cate_his="",
        brand_his="",
        userid=1,
        cms_segid=0,
        cms_group_id=1,
        final_gender_code=1,
        age_level=2,
        pvalue_level=1,
        shopping_level=3,
        occupation=0,
        new_user_class_level=2,
        adgroup_id=500,
        cate_id=10,
        campaign_id=900,
        customer=33,
        brand=100,
        price=1.5,
        pid=1,
        btag=1,
    )
    row.update(kw)
    return row


def write_taobao(d, train, test):
    write_csv(d / "train.csv", TAOBAO_HEADER, train)
    write_csv(d / "test.csv", TAOBAO_HEADER, test)
    return d


def small_taobao(d, n_train=20, n_test=5):
    train = [
        taobao_row(
            clk=i % 2,
            userid=1 + i % 3,
            cate_id=10 + i % 2,
            brand=100 + i % 4,
            cate_his="^".join(str(10 + j % 2) for j in range(i % 5)),
            brand_his="^".join(str(100 + j % 4) for j in range(i % 5)),
            btag_his="^".join("1" for _ in range(i % 5)),
            price=i,
        )
        for i in range(n_train)
    ]
    test = [taobao_row(clk=i % 2, userid=1 + i % 3, cate_his="10^11") for i in range(n_test)]
    return write_taobao(d, train, test)


def kuai_row(**kw):
    row = dict(timestamp=0, user_id=1, item_id=5, is_click=0, is_like=0, is_follow=0, pos_items="", neg_items="")
    row.update(kw)
    return row


def amazon_row(**kw):
    row = dict(label=1, user_id=1, item_id=5, cate_id=2, item_history="", cate_history="")
    row.update(kw)
    return row


# -- vocabulary ---------------------------------------------------------------------------------


def test_vocab_sorted_keys_pad_oov_and_min_count():
    v = fit_vocab_from(np.array([30, 10, 10, 20, 10]), np.array([[PAD_TOKEN, 20, 30]]), min_count=2)
    assert v.keys.tolist() == [10, 20, 30] and v.counts.tolist() == [3, 2, 2] and v.size == 5
    assert v.encode(np.array([10, 20, 30, 40])).tolist() == [2, 3, 4, 1]
    assert v.encode_sequences(np.array([[PAD_TOKEN, 30, 99]])).tolist() == [[0, 4, 1]]
    assert fit_vocab_from(np.array([30, 10, 10]), min_count=2).keys.tolist() == [10]


def test_counter_mixes_dense_sparse_and_strings():
    c = TokenCounter()
    c.add(np.array([5, 1 << 40, 5, MISSING]))
    c.add(np.array([1 << 40, 3]))
    keys, counts = c.result()
    assert keys.tolist() == [MISSING, 3, 5, 1 << 40] and counts.tolist() == [1, 1, 2, 2]
    s = TokenCounter()
    s.add(np.array(["b", "a", "b"]))
    v = fit_vocab(s, 2)
    assert v.encode(np.array(["a", "b", "zz"])).tolist() == [1, 2, 1]


def test_split_sequences_truncates_to_last_and_prepads():
    w = Where.rows("mem", 4)
    out = split_sequences(("1^2^3^4^5", "7", "", "123456789012^0"), 3, w, "s")
    assert out.tolist() == [[3, 4, 5], [-1, -1, 7], [-1, -1, -1], [-1, 123456789012, 0]]


def _cells_buffer(cells):
    """(uint8 buffer, (n + 1,) offsets) of consecutive cells, after 3 bytes that belong to no cell."""
    data = np.frombuffer(("999" + "".join(cells)).encode(), np.uint8)
    return data, 3 + np.concatenate([[0], np.cumsum([len(c) for c in cells])])


@pytest.mark.parametrize("run_bytes", [1 << 18, 5])  # one group, or a group every few cells
def test_token_runs_agree_with_split_sequences(monkeypatch, run_bytes):
    monkeypatch.setattr(sequences, "RUN_BYTES", run_bytes)
    cells = ["1^2^3^4^5", "7", "", "", "12345678^0^99999", "42", "", "3^3"]
    values, ends = sequences.token_runs(*_cells_buffer(cells), 3)
    assert ends.tolist() == [0, 3, 4, 4, 4, 7, 8, 8, 10] and values.dtype == np.int32
    assert values.tolist() == [3, 4, 5, 7, 12345678, 0, 99999, 42, 3, 3]  # the last 3 of each cell
    expected = split_sequences(cells, 3, Where.rows("mem", len(cells)), "s")
    np.testing.assert_array_equal(sequences.pad_runs(values, ends, 3, PAD_TOKEN), expected)
    assert sequences.token_runs(*_cells_buffer(["", ""]), 3)[1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("bad", ["1^^2", "^1", "1^", "1^x", "-1", "123456789", " 1"])
def test_token_runs_none_where_the_exact_parser_must_speak(bad):
    assert sequences.token_runs(*_cells_buffer(["5^6", bad, "7"]), 4) is None
    if bad != "123456789":  # more than 8 digits: only the exact parser reads it
        with pytest.raises(DataError, match="row 2, column 's'"):
            split_sequences(["5^6", bad, "7"], 4, Where.rows("mem", 3), "s")


def test_encode_sequences_in_place_and_counter_of_small_ids():
    v = fit_vocab_from(np.array([3, 1, 3, 5]), min_count=1)
    raw = np.array([[PAD_TOKEN, 3, 4], [1, 5, 1 << 30]], np.int32)
    expected = v.encode_sequences(raw)
    assert expected.tolist() == [[0, 3, 1], [2, 4, 1]]
    assert v.encode_sequences(raw, out=raw) is raw and raw.tolist() == expected.tolist()
    c = TokenCounter()
    c.add(np.array([4, 2, 4], np.int32))  # all small and >= 0: one bincount
    c.add(np.array([4, -7]))
    assert [k.tolist() for k in c.result()] == [[-7, 2, 4], [1, 1, 3]]


def test_narrowest_types_of_values_and_vocabularies():
    assert [index_dtype(n) for n in (1, 128, 129, 32768, 32769)] == [np.int8, np.int8, np.int16, np.int16, np.int32]
    assert narrowest_int(-1, 127) == np.int8 and narrowest_int(-129, 0) == np.int16
    assert narrowest_int(0, 1 << 31) == np.int64


def test_encode_sequences_of_narrow_raw_into_a_narrow_out():
    v = fit_vocab_from(np.arange(120), min_count=1)  # 122 indices: int8
    raw = np.array([[PAD_TOKEN, 0, 127], [119, 126, 5]], np.int8)  # 127 + 2 would overflow int8
    out = np.empty_like(raw)
    assert v.encode_sequences(raw, out=out) is out
    assert out.tolist() == [[0, 2, 1], [121, 1, 7]] == v.encode_sequences(raw.astype(np.int32)).tolist()


# blocks of raw tokens (padded with PAD_TOKEN), then blocks of tokens encoded before they are written
SEQ_CASES = {
    "int8 in place": ([range(0, 40), range(40, 90)], [range(0, 100)]),
    "raw widens mid-file, index narrower": ([range(0, 40), [70_000, 3], range(200, 210)], [range(0, 300)]),
    "index wider than raw at the first encoded block": ([range(0, 120), range(0, 20)], [range(0, 127)]),
    "index wider than raw at finish": ([range(0, 120), range(0, 126)], []),
    "raw wider from the start": ([[1 << 20, 5, 6], range(40_000, 40_100)], [range(0, 9)]),
}


@pytest.mark.parametrize("case", SEQ_CASES)
def test_history_file_stores_the_narrowest_index_type_and_encodes_like_int32(tmp_path, monkeypatch, case):
    monkeypatch.setattr(bars, "BLOCK", 7)  # many blocks: rows move down across block borders
    raw_tokens, encoded_tokens = SEQ_CASES[case]
    rng = np.random.default_rng(0)
    L = 4

    def rows(tokens):
        block = rng.choice(np.asarray(list(tokens), np.int32), size=(len(tokens) // 3 + 2, L))
        block[rng.random(block.shape) < 0.3] = PAD_TOKEN
        return block

    raw_blocks = [rows(t) for t in raw_tokens]
    known = np.unique(np.concatenate([b[b != PAD_TOKEN] for b in raw_blocks]))
    v = fit_vocab_from(known[known < 130], np.arange(127), min_count=1)  # >= 129 indices: int16
    if case.startswith("int8") or "narrower" in case or "from the start" in case:
        v = fit_vocab_from(known[: len(known) // 2], min_count=1)  # <= 128 indices: int8
    encoded_blocks = [v.encode_sequences(rows(t)) for t in encoded_tokens]
    f = bars._SeqFile(tmp_path / "h.npy", L)
    for b in raw_blocks:
        f.append_raw(b)
    for b in encoded_blocks:
        f.append_encoded(b, v.index_dtype)
    got = np.load(f.finish(v), allow_pickle=False)
    expected = np.concatenate([v.encode_sequences(b) for b in raw_blocks] + encoded_blocks)
    assert got.dtype == v.index_dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert (tmp_path / "h.npy").stat().st_size == bars.HEADER_BYTES + expected.size * got.itemsize


@pytest.mark.parametrize("arrow", [True, False])
def test_taobaoad_histories_with_a_wide_raw_id_mid_file_match_the_int32_encoding(tmp_path, monkeypatch, arrow):
    """Raw brand ids widen int8 -> int32 in the middle of the training rows; the brand vocabulary
    (min_count 2) drops the wide id, so the stored histories are int8 and moved down in place."""
    monkeypatch.setattr(bars, "BLOCK", 5)
    monkeypatch.setattr(bars, "ARROW_BLOCK_BYTES", 1 << 10)  # several pyarrow batches
    if not arrow:
        for name in ("pyarrow", "pyarrow.csv", "pyarrow.compute"):
            monkeypatch.setitem(sys.modules, name, None)
    rng = np.random.default_rng(1)

    def history(i):
        tokens = rng.integers(100, 110, size=rng.integers(0, 8))
        return "^".join(str(t) for t in ([*tokens, 1 << 20] if i == 33 else tokens))

    train = [taobao_row(userid=1 + i % 5, brand=100 + i % 10, brand_his=history(i)) for i in range(60)]
    test = [taobao_row(userid=1 + i % 5, brand_his=history(i)) for i in range(12)]
    t = load_taobaoad(write_taobao(tmp_path, train, test), min_count=2, max_len=5, chunk_rows=7)
    assert (bars._arrow_csv() is not None) == arrow
    n_fit = 60 - round(0.1 * 60)
    counts = collections.Counter(r["brand"] for r in train[:n_fit])
    for r in train[:n_fit]:
        counts.update(int(x) for x in str(r["brand_his"]).split("^")[-5:] if x)
    keys = sorted(k for k, c in counts.items() if c >= 2)
    assert 1 << 20 not in keys and t.vocab_sizes["brand"] == len(keys) + 2
    expected = np.zeros((72, 5), np.int32)
    for i, r in enumerate(train + test):
        tokens = [int(x) for x in str(r["brand_his"]).split("^")[-5:] if x]
        expected[i, 5 - len(tokens) :] = [keys.index(x) + 2 if x in keys else 1 for x in tokens] if tokens else []
    assert t["brand_his"].dtype == np.int8 and t["brand"].dtype == np.int8
    np.testing.assert_array_equal(t["brand_his"], expected)


def test_append_file_holds_exactly_the_bytes_written(tmp_path):
    f = bars._AppendFile(tmp_path / "x")
    chunks = [np.arange(k, dtype=np.int64) for k in (1, 3000, 0, 70_000)]  # 8 B, an empty write, past 64 KiB
    for c in chunks:
        f.write(c)
    f.close()
    np.testing.assert_array_equal(np.fromfile(tmp_path / "x", np.int64), np.concatenate(chunks))


@pytest.mark.parametrize("rows, valid_fraction", [(1000, 0.1), (7, 0.25), (5, 0.0), (3, 0.1)])
def test_row_order_closed_forms_are_the_time_sorts(rows, valid_fraction):
    """Without a timestamp (time = row order) split and day follow tail_by_time / time_windows."""
    raw = types.SimpleNamespace(file_rows=[rows, 4], rows=rows + 4)
    order = bars._RowOrder(raw, valid_fraction, 7)
    time = np.arange(rows + 4)
    split = np.where(time < rows, 0, 2)
    split[bars.tail_by_time(time, np.flatnonzero(split == 0), valid_fraction)] = 1
    np.testing.assert_array_equal(order.block("split", 0, rows + 4), split)
    np.testing.assert_array_equal(order.block("day", 2, rows + 4), bars.assign_days(time, split, 7)[2:])
    assert order.counts == bars.split_counts(split) and order.train().tolist() == (split == 0).tolist()
    assert time[2:][order.test(2, rows + 4)].tolist() == list(range(rows, rows + 4))  # the test file's rows


def test_raw_store_keeps_int64_in_the_narrowest_type_until_a_value_needs_wider(tmp_path):
    store = bars._RawStore(tmp_path)
    chunks = [np.array([5, -3]), np.array([], np.int64), np.array([300]), np.array([MISSING, 1 << 40]), np.array([7])]
    store.append("c", chunks[0])
    assert store.dtypes["c"] == np.int8  # an eighth of the bytes on disk
    for c, dtype in zip(chunks[1:], (np.int8, np.int16, np.int64, np.int64)):
        store.append("c", c)
        assert store.dtypes["c"] == dtype  # rewritten wider when 300, then MISSING arrived
    for got in (np.concatenate(list(store.blocks("c", rows=3))), store.read("c")):
        assert got.dtype == np.int64 and got.tolist() == np.concatenate(chunks).tolist()
    store.close()


def test_dense_user_ids_by_table_or_unique(tmp_path, monkeypatch):
    store = bars._RawStore(tmp_path)
    ids = np.array([7, 3, 7, 1 << 20, 3, 0])
    store.append("u", ids[:4])
    store.append("u", ids[4:])
    monkeypatch.setattr(bars, "BLOCK", 4)
    by_table = np.concatenate(list(bars._dense_id_blocks(store, "u")))
    monkeypatch.setattr(bars, "DENSE_ID_LIMIT", 8)  # 2^20 is past it: np.unique
    by_unique = np.concatenate(list(bars._dense_id_blocks(store, "u")))
    store.close()
    assert by_table.tolist() == by_unique.tolist() == bars.dense_ids(ids).tolist() == [4, 3, 4, 5, 3, 2]


# -- TaobaoAd -----------------------------------------------------------------------------------


def test_taobaoad_schema_and_vocab_fitted_on_train_only(tmp_path):
    train = [taobao_row(userid=1, cate_id=10, cate_his="10^11", adgroup_id=500 + i) for i in range(9)]
    train.append(taobao_row(userid=2, cate_id=55, adgroup_id=777))  # last row -> validation only
    test = [taobao_row(userid=3, cate_id=99, cate_his="99^10^55", adgroup_id=500)]
    t = load_taobaoad(write_taobao(tmp_path, train, test), min_count=1)
    assert isinstance(t, EventTable) and len(t) == 11
    assert t.schema.item == ("adgroup_id", "cate_id", "campaign_id", "customer", "brand")
    assert t.schema.numeric == ("price",) and t.schema.max_len == 50
    assert dict(t.schema.sequences) == {"cate_his": "cate_id", "brand_his": "brand", "btag_his": "btag"}
    assert t["split"].tolist() == [0] * 9 + [1, 2]
    cate = t["cate_id"]
    assert cate[0] == 2 and cate[9] == 1 and cate[10] == 1  # 55 only in valid, 99 only in test -> OOV
    assert t["cate_his"][10, -3:].tolist() == [1, 2, 1]  # 99 OOV, 10 known, 55 OOV
    assert t["cate_his"][0, -2:].tolist() == [2, 3]  # 11 is known only through the sequence
    assert t.vocab_sizes["cate_id"] == 4  # pad, oov, 10, 11
    assert t["adgroup_id"][10] == 2  # adgroup 500 was in train
    assert t["user"].tolist() == [2] * 9 + [3, 4]  # grouping key: every user distinct, never OOV
    assert t["userid"][9] == 1 and t["userid"][10] == 1  # the feature is OOV outside train
    assert t["price"].dtype == np.float32 and np.allclose(t["price"], np.log1p(1.5))
    assert t["label"].dtype == np.float32
    assert t["cate_his"].dtype == t["cate_id"].dtype == np.int8  # the narrowest type for 4 indices
    assert t.take(np.arange(3))["cate_his"].dtype == np.int32  # batches widen it
    assert t.info["numeric_transforms"] == {"price": "log1p"}


def test_taobaoad_min_count_counts_shared_sequences(tmp_path):
    train = [taobao_row(cate_id=10) for _ in range(3)]  # 10 x3
    train += [taobao_row(cate_id=11), taobao_row(cate_id=11)]  # 11 x2
    train += [taobao_row(cate_id=12, cate_his="12^12")]  # 12 x1 as a cell + 2 in its sequence
    train += [taobao_row(cate_id=10)] * 4  # padding rows that end up in validation/train
    d = write_taobao(tmp_path, train, [taobao_row(cate_id=12), taobao_row(cate_id=11)])
    t = load_taobaoad(d, min_count=3, valid_fraction=0.0)
    assert t["cate_id"][:7].tolist() == [2, 2, 2, 1, 1, 3, 2] and t["cate_his"][5, -2:].tolist() == [3, 3]
    assert t["cate_id"][-2:].tolist() == [3, 1]
    assert t.vocab_sizes["cate_id"] == 4
    # per-column override: cate_id keeps every id, other columns the default
    t = load_taobaoad(d, min_count={"cate_id": 1}, valid_fraction=0.0)
    assert t.vocab_sizes["cate_id"] == 5 and t.info["min_count"]["brand"] == 10
    with pytest.raises(ValueError, match="unknown column"):
        load_taobaoad(d, min_count={"cate": 1})


def test_taobaoad_sequences_truncated_to_last_max_len_and_prepadded(tmp_path):
    train = [taobao_row(cate_id=c) for c in range(1, 8)]
    train += [taobao_row(cate_his="1^2^3^4^5^6^7", brand_his="100", btag_his="")]
    d = write_taobao(tmp_path, train, [taobao_row()])
    t = load_taobaoad(d, min_count=1, max_len=4, valid_fraction=0.0)
    assert t["cate_his"].shape == (9, 4)
    assert t["cate_his"][7].tolist() == [5, 6, 7, 8]  # raw 4..7 -> indices 5..8 (1..7 -> 2..8)
    assert t["brand_his"][7].tolist() == [0, 0, 0, 2]
    assert t["btag_his"][7].tolist() == [0, 0, 0, 0]


def test_taobaoad_splits_and_days(tmp_path):
    d = small_taobao(tmp_path, n_train=20, n_test=5)
    t = load_taobaoad(d, min_count=1)
    split, day = t["split"], t["day"]
    assert split.tolist() == [0] * 18 + [1] * 2 + [2] * 5
    assert t["time"].tolist() == list(range(25))
    assert day[20:].tolist() == [7] * 5
    assert np.all(np.diff(day[:20]) >= 0) and set(day[:20].tolist()) == set(range(7))
    assert np.bincount(day[:20]).max() - np.bincount(day[:20]).min() <= 1
    t3 = load_taobaoad(d, min_count=1, valid_fraction=0.25, n_train_days=3)
    assert (t3["split"] == 1).sum() == 5 and t3["day"].max() == 3 and t3.info["rows"]["test"] == 5


def test_taobaoad_empty_categorical_cell_is_its_own_value(tmp_path):
    train = [taobao_row(pvalue_level="") for _ in range(3)] + [taobao_row(pvalue_level=2)]
    t = load_taobaoad(write_taobao(tmp_path, train, [taobao_row(pvalue_level="")]), min_count=1, valid_fraction=0.0)
    assert t["pvalue_level"].tolist() == [2, 2, 2, 3, 2]  # '' sorts first, then 2
    assert t.info["missing_cells"] == {"pvalue_level": 4}


# -- KuaiVideo ----------------------------------------------------------------------------------


def test_kuaivideo_time_order_shared_item_vocab_and_unused_labels(tmp_path):
    train = [
        kuai_row(
            timestamp=t,
            user_id=1 + t % 2,
            item_id=10 + t % 3,
            is_click=t % 2,
            is_like=1,
            pos_items="10^11",
            neg_items="12^13",
        )
        for t in (5, 1, 9, 3, 7, 2, 8, 4, 6, 0)
    ]
    test = [kuai_row(timestamp=20, item_id=13, pos_items="13^10")]
    write_csv(tmp_path / "train.csv", KUAI_HEADER, train)
    write_csv(tmp_path / "test.csv", KUAI_HEADER, test)
    t = load_kuaivideo(tmp_path, min_count=1, max_len=3)
    assert t["time"].tolist() == list(range(10)) + [20]  # stored sorted by time within each file
    assert t["split"].tolist() == [0] * 9 + [1, 2]  # the latest train row is validation
    assert t["label"][:10].tolist() == [float(x % 2) for x in range(10)]
    assert t.vocab_sizes["item_id"] == 6  # 10, 11, 12 as cells, 13 only in neg_items
    assert t["pos_items"][0].tolist() == [0, 2, 3] and t["neg_items"][0].tolist() == [0, 4, 5]
    assert t["item_id"][10] == 5 and t["pos_items"][10].tolist() == [0, 5, 2]
    assert "is_like" not in t.columns and t.info["unused_columns"] == ["is_like", "is_follow"]
    assert "item_visual_emb" not in t.info


def write_kuai(d, n=12):
    train = [kuai_row(timestamp=t, user_id=1 + t % 3, item_id=10 + t % 4, pos_items="10^11") for t in range(n)]
    write_csv(d / "train.csv", KUAI_HEADER, train)
    write_csv(d / "test.csv", KUAI_HEADER, [kuai_row(timestamp=n, item_id=99)])
    return d


def test_kuaivideo_visual_embeddings_by_encoded_item(tmp_path):
    import h5py  # in the test extra: a missing install must fail, not skip

    d = write_kuai(tmp_path)
    with h5py.File(d / "item_visual_emb_dim64.h5", "w") as f:
        f["key"] = np.array([11, 10, 99, 12])
        f["value"] = np.arange(4 * 64, dtype=np.float32).reshape(4, 64)
    t = load_kuaivideo(d, min_count=1)
    emb = t.info["item_visual_emb"]
    assert emb.shape == (t.vocab_sizes["item_id"], 64) and emb.dtype == np.float32
    assert np.all(emb[:2] == 0)  # padding, OOV (99 is test-only -> OOV -> no row)
    assert emb[2, 0] == 64 and emb[3, 1] == 1 and emb[4, 0] == 192  # 10, 11, 12 by encoded index
    assert np.all(emb[5] == 0) and t.info["item_visual_emb_missing"] == 1  # 13 has no vector
    assert "item_visual_emb" not in load_kuaivideo(d, min_count=1, visual_embeddings=False).info


def test_kuaivideo_visual_embeddings_need_h5py(tmp_path, monkeypatch):
    d = write_kuai(tmp_path)
    (d / "item_visual_emb_dim64.h5").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        load_kuaivideo(d, min_count=1)
    with pytest.raises(FileNotFoundError, match="visual_embeddings=True"):
        load_kuaivideo(write_kuai(tmp_path / "other"), visual_embeddings=True)


# -- AmazonElectronics --------------------------------------------------------------------------


def test_amazonelectronics_histories_share_item_and_category_vocabs(tmp_path):
    train = [
        amazon_row(
            user_id=u,
            item_id=100 + k,
            cate_id=k % 2,
            item_history="^".join(str(100 + j) for j in range(k)),
            cate_history="^".join(str(j % 2) for j in range(k)),
        )
        for u in (1, 2)
        for k in range(1, 6)
    ]
    test = [
        amazon_row(
            user_id=1, item_id=107, cate_id=1, item_history="100^101^102^103^104^105^106", cate_history="0^1^0^1^0^1"
        )
    ]
    write_csv(tmp_path / "train.csv", AMAZON_HEADER, train)
    write_csv(tmp_path / "test.csv", AMAZON_HEADER, test)
    t = load_amazonelectronics(tmp_path)
    assert t.schema.item == ("item_id", "cate_id") and t.schema.max_len == 100
    assert t.info["min_count"]["item_id"] == 1
    assert t["item_id"][-1] == 1  # 107 only in test
    # items 100..105 occur in train rows (cells or histories) -> 2..7; 106 only in test -> OOV
    assert t["item_history"][-1, -8:].tolist() == [0, 2, 3, 4, 5, 6, 7, 1]
    assert t["cate_history"][-1, -2:].tolist() == [2, 3]
    assert t["split"].tolist() == [0] * 9 + [1, 2]


# -- interactions -------------------------------------------------------------------------------


def write_log(path, rows, header=("user_id", "item_id", "timestamp", "label")):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def test_interactions_histories_strictly_earlier_and_equal_times(tmp_path):
    rows = [
        ("u1", "a", 10, 1),
        ("u1", "b", 20, 0),
        ("u1", "c", 20, 1),
        ("u1", "d", 30, 1),
        ("u2", "a", 15, 1),
        ("u2", "e", 25, 0),
        ("u1", "e", 5, 0),
    ]
    t = load_interactions(write_log(tmp_path / "log.csv", rows), max_len=3, test_fraction=0.0, valid_fraction=0.0)
    assert t["time"].tolist() == [5, 10, 15, 20, 20, 25, 30]  # stored in time order
    item = dict(zip(["a", "b", "c", "d", "e"], range(2, 7)))  # sorted text ids
    his = {int(r): t["item_id_his"][r].tolist() for r in range(len(t))}
    by_time_item = {(int(t["time"][r]), int(t["item_id"][r])): his[r] for r in range(len(t))}
    assert by_time_item[(5, item["e"])] == [0, 0, 0]
    assert by_time_item[(20, item["b"])] == [0, item["e"], item["a"]]  # not c: same timestamp
    assert by_time_item[(20, item["c"])] == [0, item["e"], item["a"]]  # not b
    assert by_time_item[(30, item["d"])] == [item["a"], item["b"], item["c"]]  # last 3, newest last
    assert by_time_item[(25, item["e"])] == [0, 0, item["a"]]  # only u2's own events
    assert t.schema.sequences == (("item_id_his", "item_id"),)
    pos = load_interactions(tmp_path / "log.csv", max_len=3, history="positive", test_fraction=0.0, valid_fraction=0.0)
    assert pos["item_id_his"][6].tolist() == [0, item["a"], item["c"]]  # labels 1 only (e, b are 0)


def test_interactions_labels_never_leak_into_features(tmp_path):
    rows = [(f"u{t % 2}", "a", t, t // 2 % 2) for t in range(6)]  # two users, both labels each
    a = load_interactions(write_log(tmp_path / "a.csv", rows), test_fraction=0.0, valid_fraction=0.0)
    flipped = [(u, i, t, 1 - y) for u, i, t, y in rows]
    b = load_interactions(write_log(tmp_path / "b.csv", flipped), test_fraction=0.0, valid_fraction=0.0)
    for c in ("item_id", "item_id_his", "user_id", "user", "time", "day", "split"):
        np.testing.assert_array_equal(a[c], b[c])


def test_interactions_rating_threshold_splits_and_extra_categoricals(tmp_path):
    rows = [(f"u{i % 4}", f"m{i % 7}", 1000 + i, i % 5 + 0.5, f"g{i % 3}", f"d{i % 2}") for i in range(40)]
    f = write_log(tmp_path / "ratings.csv", rows, ("user_id", "item_id", "timestamp", "rating", "genre", "device"))
    with pytest.raises(DataError, match="rating_threshold"):
        load_interactions(f)
    t = load_interactions(f, rating_threshold=3.0, item_categorical=("genre",), categorical=("device",))
    assert t["label"].tolist() == [float(i % 5 + 0.5 >= 3.0) for i in range(40)]
    assert t["split"].tolist() == [0] * 32 + [1] * 4 + [2] * 4
    assert t["day"][:36].max() == 6 and t["day"][36:].tolist() == [7] * 4
    assert t.schema.categorical == ("user_id", "item_id", "genre", "device")
    assert t.schema.item == ("item_id", "genre")
    assert dict(t.schema.sequences) == {"item_id_his": "item_id", "genre_his": "genre"}
    assert t["genre_his"][4].tolist()[-1] == t["genre"][0]  # u0's previous event is row 0


def test_interactions_ties_never_straddle_the_test_cut(tmp_path):
    rows = [(f"u{i}", "a", 1 if i < 6 else 2, i % 2) for i in range(10)]
    t = load_interactions(write_log(tmp_path / "ties.csv", rows), test_fraction=0.1, valid_fraction=0.0)
    assert t["split"].tolist() == [0] * 6 + [2] * 4


def test_interactions_parquet_matches_csv(tmp_path):
    import pyarrow as pa  # in the test extra (parquet is optional for users): a missing install must fail, not skip
    import pyarrow.parquet as pq

    rows = [(f"u{i % 3}", f"i{i % 5}", 100 + i // 2, i % 2) for i in range(30)]
    csv_table = load_interactions(write_log(tmp_path / "log.csv", rows))
    cols = list(zip(*rows))
    pq.write_table(
        pa.table(
            {"user_id": list(cols[0]), "item_id": list(cols[1]), "timestamp": list(cols[2]), "label": list(cols[3])}
        ),
        tmp_path / "log.parquet",
    )
    pq_table = load_interactions(tmp_path / "log.parquet")
    for c in csv_table.columns:
        np.testing.assert_array_equal(csv_table[c], pq_table[c])
    bad = pa.table({"user_id": ["u1", "u2"], "item_id": ["a", None], "timestamp": [1, 2], "label": [1, 0]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet, row 2, column 'item_id'"):
        load_interactions(tmp_path / "bad.parquet")


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "log.parquet"
    path.write_bytes(b"PAR1")
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # import pyarrow raises ImportError
    expected = r"log\.parquet: reading parquet needs the parquet extra: pip install 'implicit-rec\[parquet\]'"
    with pytest.raises(ImportError, match=expected):
        load_interactions(path)
    csv_path = write_log(tmp_path / "log.csv", [("u0", "a", 1, 1), ("u1", "b", 2, 0)])
    assert len(load_interactions(csv_path, test_fraction=0.5, valid_fraction=0.0)["label"]) == 2  # CSV needs no pyarrow


# -- load_dataset and the cache -----------------------------------------------------------------


def test_load_dataset_cache_round_trip_and_rebuilds(tmp_path):
    d = small_taobao(tmp_path / "taobao")
    cache = tmp_path / "cache"
    first = load_dataset(f"taobaoad:{d}", cache_dir=cache, min_count=1)
    (entry,) = list(cache.iterdir())
    second = load_dataset(f"taobaoad:{d}", cache_dir=cache, min_count=1)
    assert isinstance(second["cate_his"], np.memmap) and list(cache.iterdir()) == [entry]
    direct = load_taobaoad(d, min_count=1)
    for c in direct.columns:
        np.testing.assert_array_equal(second[c], direct[c])
        assert second[c].dtype == direct[c].dtype
    assert second.schema == direct.schema and second.vocab_sizes == direct.vocab_sizes
    assert second.info["rows"] == direct.info["rows"] == first.info["rows"]
    load_dataset(f"taobaoad_x1:{d}", cache_dir=cache, min_count=1, chunk_rows=7)  # same key
    assert len(list(cache.iterdir())) == 1
    load_dataset(f"taobaoad:{d}", cache_dir=cache, min_count=2)  # changed option -> rebuilt
    assert len(list(cache.iterdir())) == 2
    write_taobao(d, [taobao_row(cate_id=50)] * 5, [taobao_row()])  # changed file -> rebuilt
    os.utime(d / "train.csv", ns=(1, 1))
    changed = load_dataset(f"taobaoad:{d}", cache_dir=cache, min_count=1)
    assert len(changed) == 6 and len(list(cache.iterdir())) == 3


def test_load_dataset_cache_keeps_visual_embeddings(tmp_path):
    import h5py  # in the test extra: a missing install must fail, not skip

    d = write_kuai(tmp_path / "kuai")
    with h5py.File(d / "item_visual_emb_dim64.h5", "w") as f:
        f["key"], f["value"] = np.array([10, 11]), np.ones((2, 64), np.float32)
    a = load_dataset(f"kuaivideo:{d}", cache_dir=tmp_path / "c", min_count=1)
    b = load_dataset(f"kuaivideo:{d}", cache_dir=tmp_path / "c", min_count=1)
    assert isinstance(b.info["item_visual_emb"], np.memmap)
    np.testing.assert_array_equal(a.info["item_visual_emb"], b.info["item_visual_emb"])


def test_load_dataset_synthetic_is_imported_lazily(tmp_path, monkeypatch):
    table = load_taobaoad(small_taobao(tmp_path / "t"), min_count=1)
    calls = []

    def with_cache(preset="default", seed=0, cache_dir=None, progress_bar=None, workers=1):
        calls.append((preset, seed, cache_dir, progress_bar, workers))
        return table

    fake = types.ModuleType("implicit_rec.data.synthetic")
    fake.synthetic_events = with_cache
    monkeypatch.setitem(sys.modules, "implicit_rec.data.synthetic", fake)
    assert load_dataset("synthetic", preset="tiny", seed=3, cache_dir=tmp_path) is table
    assert calls == [("tiny", 3, tmp_path, None, 1)]  # the generator caches (and streams) itself; one process


def test_load_dataset_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="valid: synthetic, taobaoad, kuaivideo, amazonelectronics, interactions"):
        load_dataset("criteo:/x")
    with pytest.raises(TypeError, match="min_cnt"):
        load_dataset(f"taobaoad:{tmp_path}", min_cnt=3)
    with pytest.raises(TypeError, match="max_len"):
        load_dataset("synthetic", max_len=3)
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("kuaivideo")
    f = write_log(tmp_path / "log.csv", [("u", "a", 1, 1), ("u", "b", 2, 0), ("v", "a", 3, 1)])
    t = load_dataset(f"interactions:{f}", preset="ignored", test_fraction=0.0, valid_fraction=0.0)
    assert len(t) == 3


# -- bad input: every message names the file, the line and the column ---------------------------


def _taobao_case(tmp_path, train=None, test=None, raw_train=None, raw_test=None):
    d = tmp_path / "bad"
    write_taobao(d, train or [taobao_row() for _ in range(3)], test or [taobao_row()])
    if raw_train is not None:
        (d / "train.csv").write_text(raw_train)
    if raw_test is not None:
        (d / "test.csv").write_text(raw_test)
    return d


HEAD = ",".join(TAOBAO_HEADER)
GOOD = ",".join(str(taobao_row()[c]) for c in TAOBAO_HEADER)
TAOBAO_CASES = {
    "missing column": (dict(raw_train=HEAD.replace(",price", "") + "\n"), "train.csv", 1, "price"),
    "empty file": (dict(raw_train=""), "train.csv", 1, "clk"),
    "header only": (dict(raw_train=HEAD + "\n"), "train.csv", 2, "clk"),
    "non-numeric label": (dict(train=[taobao_row(), taobao_row(clk="yes")]), "train.csv", 3, "clk"),
    "NaN label": (dict(train=[taobao_row(), taobao_row(), taobao_row(clk="nan")]), "train.csv", 4, "clk"),
    "empty label": (dict(test=[taobao_row(clk="")]), "test.csv", 2, "clk"),
    "label 2": (dict(train=[taobao_row(clk=2)]), "train.csv", 2, "clk"),
    "non-numeric price": (dict(train=[taobao_row(), taobao_row(price="cheap")]), "train.csv", 3, "price"),
    "negative price": (dict(test=[taobao_row(), taobao_row(price=-1)]), "test.csv", 3, "price"),
    "non-integer token": (dict(train=[taobao_row(cate_his="3^x^5")]), "train.csv", 2, "cate_his"),
    "stray delimiter": (dict(train=[taobao_row(), taobao_row(brand_his="3^^5")]), "train.csv", 3, "brand_his"),
    "trailing delimiter": (dict(test=[taobao_row(btag_his="1^")]), "test.csv", 2, "btag_his"),
    "non-integer id": (dict(train=[taobao_row(adgroup_id="ad7")]), "train.csv", 2, "adgroup_id"),
    "empty user": (dict(train=[taobao_row(userid="")]), "train.csv", 2, "userid"),
    "short row": (dict(raw_train=HEAD + "\n" + GOOD + "\n" + GOOD.rsplit(",", 2)[0] + "\n"), "train.csv", 3, "pid"),
    "blank line": (dict(raw_train=HEAD + "\n" + GOOD + "\n\n" + GOOD + "\n"), "train.csv", 3, "clk"),
}


@pytest.mark.parametrize("case", list(TAOBAO_CASES))
def test_taobaoad_bad_input_names_file_line_and_column(tmp_path, case):
    kwargs, file, line, column = TAOBAO_CASES[case]
    with pytest.raises(DataError) as err:
        load_taobaoad(_taobao_case(tmp_path, **kwargs), min_count=1)
    message = str(err.value)
    assert file in message and f"line {line}," in message + "," and f"column {column!r}" in message, message
    assert isinstance(err.value, ValueError)
    assert (err.value.line, err.value.column) == (line, column)


def test_kuaivideo_and_amazon_bad_input(tmp_path):
    write_csv(tmp_path / "k" / "train.csv", KUAI_HEADER, [kuai_row(), kuai_row(timestamp="soon")])
    write_csv(tmp_path / "k" / "test.csv", KUAI_HEADER, [kuai_row()])
    with pytest.raises(DataError, match=r"train\.csv, line 3, column 'timestamp'"):
        load_kuaivideo(tmp_path / "k")
    write_csv(tmp_path / "a" / "train.csv", AMAZON_HEADER, [amazon_row(item_history="1^2^-3")])
    write_csv(tmp_path / "a" / "test.csv", AMAZON_HEADER, [amazon_row()])
    with pytest.raises(DataError, match=r"train\.csv, line 2, column 'item_history'"):
        load_amazonelectronics(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_amazonelectronics(tmp_path / "nowhere")


INTERACTION_CASES = {
    "empty timestamp": ([("u", "a", 1, 1), ("u", "b", "", 1)], None, 3, "timestamp"),
    "bad timestamp": ([("u", "a", 1, 1), ("u", "b", "x", 1)], None, 3, "timestamp"),
    "bad label": ([("u", "a", 1, "1"), ("u", "b", 2, "maybe")], None, 3, "label"),
    "empty item": ([("u", "", 1, 1)], None, 2, "item_id"),
    "bad rating": ([("u", "a", 1, "4.5"), ("u", "b", 2, "NaN")], 4.0, 3, "rating"),
}


@pytest.mark.parametrize("case", list(INTERACTION_CASES))
def test_interactions_bad_input_names_file_line_and_column(tmp_path, case):
    rows, threshold, line, column = INTERACTION_CASES[case]
    header = ("user_id", "item_id", "timestamp", "rating" if threshold else "label")
    f = write_log(tmp_path / "events.csv", rows, header)
    with pytest.raises(DataError) as err:
        load_interactions(f, rating_threshold=threshold)
    assert "events.csv" in str(err.value) and f"line {line}," in str(err.value)
    assert f"column {column!r}" in str(err.value)


def test_interactions_missing_column(tmp_path):
    f = write_log(tmp_path / "events.csv", [("u", "a", 1)], ("user_id", "item_id", "label"))
    with pytest.raises(DataError, match=r"events\.csv, line 1, column 'timestamp'"):
        load_interactions(f)
