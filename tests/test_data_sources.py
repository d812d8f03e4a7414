"""BARS x1 and interaction-log loaders on small fixture files in the published formats."""

import numpy as np
import pytest

from implicit_rec.data import DataError, EventTable, load_dataset
from implicit_rec.data.events import OOV, SPLITS

TAOBAO_HEADER = ("clk,btag_his,cate_his,brand_his,userid,cms_segid,cms_group_id,final_gender_code,age_level,"
                 "pvalue_level,shopping_level,occupation,new_user_class_level,adgroup_id,cate_id,campaign_id,"
                 "customer,brand,price,pid,btag")


def taobao_row(clk, cate_his, user, adgroup, cate, price="12.5", brand_his=None, btag_his=None):
    n = len(cate_his.split("^")) if cate_his else 0
    brand_his = brand_his if brand_his is not None else "^".join(["7"] * n)
    btag_his = btag_his if btag_his is not None else "^".join(["1"] * n)
    return f"{clk},{btag_his},{cate_his},{brand_his},{user},0,1,1,2,1,3,0,2,{adgroup},{cate},55,66,7,{price},430548_1007,1"


def write_taobao(tmp_path, train_rows, test_rows):
    d = tmp_path / "taobao"
    d.mkdir(exist_ok=True)
    (d / "train.csv").write_text("\n".join([TAOBAO_HEADER] + train_rows) + "\n")
    (d / "test.csv").write_text("\n".join([TAOBAO_HEADER] + test_rows) + "\n")
    return d


@pytest.fixture
def taobao(tmp_path):
    train = [taobao_row(i % 2, "^".join(str(3 + (j % 4)) for j in range(i % 6)), 100 + i % 5, 900 + i % 3, 3 + i % 4)
             for i in range(40)]
    test = [taobao_row(1, "3^4^99", 100, 905, 99), taobao_row(0, "", 999, 900, 3)]
    return write_taobao(tmp_path, train, test)


def test_taobaoad_encoding_splits_and_vocab(taobao):
    t = load_dataset(f"taobaoad:{taobao}", min_count=1, max_len=4)
    assert len(t) == 42
    assert (t["split"] == SPLITS["test"]).sum() == 2 and (t["split"] == SPLITS["valid"]).sum() == 4
    assert t["day"][0] == 0 and t["day"][39] == 6 and np.all(np.diff(t["day"][:40]) >= 0)
    assert np.all(t["day"][40:] == 7)
    # ids seen only in test (adgroup 905, cate 99) map to OOV; the cate sequence shares cate_id's vocab
    assert t["adgroup_id"][40] == OOV and t["cate_id"][40] == OOV
    assert t["cate_his"][40, -1] == OOV and t["cate_his"][40, -3] == t["cate_id"][0]
    assert t["cate_his"][40, 0] == 0  # pre-padded: 3 ids in a length-4 row
    np.testing.assert_array_equal(t["cate_his"][41], 0)  # empty sequence
    np.testing.assert_allclose(t["price"][0], np.log1p(12.5), rtol=1e-6)
    assert t.schema.item == ("adgroup_id", "cate_id", "campaign_id", "customer", "brand")


def test_sequences_keep_the_last_max_len_ids(tmp_path):
    d = write_taobao(tmp_path, [taobao_row(1, "3^4^5^6^7", 1, 1, 3), taobao_row(0, "3", 2, 2, 4)] * 5,
                     [taobao_row(1, "", 1, 1, 3)])
    t = load_dataset(f"taobaoad:{d}", min_count=1, max_len=3)
    # vocabulary of cate_id (scalars 3, 4 and history ids 3..7, sorted): 3->2, 4->3, 5->4, 6->5, 7->6
    assert t["cate_id"][0] == 2 and t["cate_id"][1] == 3
    np.testing.assert_array_equal(t["cate_his"][0], [4, 5, 6])  # the newest three: 5, 6, 7
    np.testing.assert_array_equal(t["cate_his"][1], [0, 0, 2])


def test_min_count_maps_rare_ids_to_oov(taobao):
    t = load_dataset(f"taobaoad:{taobao}", min_count=100)
    assert np.all(t["adgroup_id"] == OOV)


def test_cache_round_trip_and_rebuild_on_new_options(taobao, tmp_path):
    a = load_dataset(f"taobaoad:{taobao}", cache_dir=tmp_path / "cache", min_count=1)
    b = load_dataset(f"taobaoad:{taobao}", cache_dir=tmp_path / "cache", min_count=1)
    assert isinstance(b["label"], np.memmap)
    for k in a.columns:
        np.testing.assert_array_equal(a[k], b[k])
    c = load_dataset(f"taobaoad:{taobao}", cache_dir=tmp_path / "cache", min_count=100)
    assert not np.array_equal(a["adgroup_id"], c["adgroup_id"])
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_kuaivideo_and_amazon_formats(tmp_path):
    k = tmp_path / "kuai"
    k.mkdir()
    head = "timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items"
    rows = [f"{100 - i},{i % 3},{i % 4},{i % 2},0,0,{'1^2' if i % 2 else ''},3" for i in range(20)]
    (k / "train.csv").write_text("\n".join([head] + rows) + "\n")
    (k / "test.csv").write_text("\n".join([head, "200,1,2,1,0,0,1,"]) + "\n")
    t = load_dataset(f"kuaivideo:{k}", min_count=1)
    assert t["time"][0] == 100 and t.schema.sequences == (("pos_items", "item_id"), ("neg_items", "item_id"))
    # validation = the latest 10% of training rows by timestamp (rows 0, 1 have times 100, 99)
    assert set(np.flatnonzero(t["split"] == SPLITS["valid"])) == {0, 1}
    assert t["day"][0] == 6 and t["day"][19] == 0  # windows follow time, not row order
    a = tmp_path / "amazon"
    a.mkdir()
    head = "label,user_id,item_id,cate_id,item_history,cate_history"
    (a / "train.csv").write_text("\n".join([head, "1,1,5,2,3^4,1^1", "0,1,6,2,3^4^5,1^1^2"]) + "\n")
    (a / "test.csv").write_text("\n".join([head, "1,1,7,3,3^4^5^6,1^1^2^2"]) + "\n")
    t = load_dataset(f"amazonelectronics:{a}", valid_fraction=0.0)
    assert t.vocab_sizes["item_id"] == 2 + 4  # 3, 4, 5, 6 seen in training rows (scalars and histories)
    assert t["item_id"][2] == OOV


@pytest.mark.parametrize("mutate,fragment", [
    (lambda rows: rows[:1], "no rows"),
    (lambda rows: [rows[0].replace("clk,", "click,")] + rows[1:], "missing column(s) clk"),
    (lambda rows: rows + ["1,2,3"], "line 4: expected 21 fields, found 3"),
    (lambda rows: rows + [taobao_row("yes", "3", 1, 1, 3)], "line 4: column 'clk': label 'yes'"),
    (lambda rows: rows + [taobao_row("2", "3", 1, 1, 3)], "line 4: column 'clk': label must be 0 or 1"),
    (lambda rows: rows + [taobao_row("1", "3", 1, 1, 3, price="nan")], "line 4: column 'price'"),
    (lambda rows: rows + [taobao_row("1", "3", 1, 1, 3, price="cheap")], "line 4: column 'price'"),
    (lambda rows: rows + [taobao_row("1", "3^^5", 1, 1, 3)], "line 4: column 'cate_his': malformed sequence"),
    (lambda rows: rows + [taobao_row("1", "3^x^5", 1, 1, 3)], "not an integer"),
])
def test_bad_input_names_file_line_and_column(tmp_path, mutate, fragment):
    good = [taobao_row(1, "3", 1, 1, 3), taobao_row(0, "4", 2, 2, 4)]
    d = write_taobao(tmp_path, good, good)
    (d / "train.csv").write_text("\n".join(mutate([TAOBAO_HEADER] + good)) + "\n")
    with pytest.raises(DataError) as err:
        load_dataset(f"taobaoad:{d}", min_count=1)
    assert "train.csv" in str(err.value) and fragment in str(err.value)


def test_empty_file_and_bad_specs(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "train.csv").write_text("")
    (d / "test.csv").write_text("")
    with pytest.raises(DataError, match="line 1: the file is empty"):
        load_dataset(f"taobaoad:{d}")
    with pytest.raises(ValueError, match="unknown dataset 'criteo'"):
        load_dataset("criteo:/x")
    with pytest.raises(TypeError, match="min_cnt"):
        load_dataset(f"taobaoad:{d}", min_cnt=3)
    with pytest.raises(TypeError, match="unknown option"):
        load_dataset("synthetic", max_len=3)


def test_interactions_histories_are_strictly_earlier(tmp_path):
    f = tmp_path / "log.csv"
    rows = ["user_id,item_id,timestamp,rating,genre"]
    events = [("a", "x", 1, 5), ("a", "y", 2, 1), ("a", "z", 2, 4), ("a", "x", 3, 5), ("b", "y", 1, 2),
              ("b", "x", 4, 5), ("a", "w", 5, 3), ("b", "z", 6, 4), ("a", "y", 7, 5), ("b", "y", 8, 1)]
    rows += [f"{u},{i},{t},{r},g{t % 2}" for u, i, t, r in events]
    f.write_text("\n".join(rows) + "\n")
    t = load_dataset(f"interactions:{f}", rating="rating", rating_threshold=4, categorical=("genre",),
                     max_len=3, valid_fraction=0.2, test_fraction=0.2)
    np.testing.assert_array_equal(t["label"], [1, 0, 1, 1, 0, 1, 0, 1, 1, 0])
    item = {name: t["item_id"][i] for i, (_, name, _, _) in enumerate(events) if t["item_id"][i] > 1}
    # event 3 (a, x, t=3): earlier events of a are x@1, y@2, z@2 -> all three
    np.testing.assert_array_equal(t["item_his"][3], [item["x"], item["y"], item["z"]])
    # events 1 and 2 share t=2: neither sees the other
    np.testing.assert_array_equal(t["item_his"][1], [0, 0, item["x"]])
    np.testing.assert_array_equal(t["item_his"][2], [0, 0, item["x"]])
    assert list(np.flatnonzero(t["split"] == SPLITS["test"])) == [8, 9]
    assert list(np.flatnonzero(t["split"] == SPLITS["valid"])) == [6, 7]
    assert isinstance(t, EventTable)
    f.write_text("user_id,item_id,timestamp,rating\na,x,1,5\na,y,oops,5\n")
    with pytest.raises(DataError, match=r"log.csv: line 3: column 'timestamp'"):
        load_dataset(f"interactions:{f}", rating="rating", rating_threshold=4)
