"""The BARS TaobaoAd_x1 exporter (synthetic events as train.csv / test.csv) and the loader's two readers.

Round trip: a small export loaded with ``load_taobaoad`` gives back the generator's events (labels,
ids after vocabulary mapping, histories' order and pre-padding, the train / test split); the
pyarrow reader and the csv-module reader give identical tables.
"""

import sys

import numpy as np
import pytest

from implicit_rec.data import bars, load_taobaoad
from implicit_rec.data import synthetic as syn
from implicit_rec.data.bars_export import HEADER, export_taobaoad, preset_for_rows, simulate_blocks

SMALL = syn.dataclasses.replace(syn.PRESETS["tiny"], users=40)  # ~1,800 rows; windows of 64, written as 50


def _events(p, seed=0):
    """The generator's raw events in the file's order (time, then user)."""
    cols = {}
    for block in simulate_blocks(p, seed, block_users=7):
        for k, v in block.items():
            cols.setdefault(k, []).append(v)
    cols = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((cols["userid"], cols["time"]))
    return {k: v[order] for k, v in cols.items()}


def _expected_index(raw, known):
    """Encoded ids: 2.. for known raw ids in sorted order, 1 (OOV) for others, 0 for padding (-1)."""
    pos = np.minimum(np.searchsorted(known, raw), len(known) - 1)
    out = np.where(known[pos] == raw, pos + 2, 1)
    return np.where(raw < 0, 0, out)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("bars") / "taobaoad"
    summary = export_taobaoad(out, preset=SMALL, seed=3, block_users=9)
    return out, summary, _events(SMALL, seed=3)


def test_export_round_trips_through_the_loader(exported):
    out, summary, ev = exported
    header = (out / "train.csv").read_text().splitlines()[0]
    assert header == ",".join(HEADER) and header.startswith("clk,btag_his,cate_his,brand_his,userid,")
    table, vocabs = bars.build_release(bars.TAOBAOAD, out, min_count=1, max_len=50, valid_fraction=0.1, n_train_days=7)
    n = len(ev["label"])
    test = ev["time"] >= syn.TEST_DAY * syn.SECONDS
    assert len(table) == n == sum(summary["rows"].values()) and summary["rows"]["test"] == int(test.sum())
    assert np.all(np.diff(ev["time"]) >= 0) and not test[: summary["rows"]["train"]].any()  # time order
    np.testing.assert_array_equal(table["label"], ev["label"])
    np.testing.assert_array_equal(table["split"] == 2, test)
    np.testing.assert_allclose(table["price"], ev["price"], atol=5e-3)  # two decimals of the raw price
    train = np.asarray(table["split"]) == 0
    windows = {s: ev[s][:, -50:] for s, _ in bars.TAOBAOAD.sequences}
    for c in bars.TAOBAOAD.categorical:  # vocabularies: the ids of training rows, cells and shared histories
        ids = [ev[c][train]] + [windows[s][train].ravel() for s, v in bars.TAOBAOAD.sequences if v == c]
        known = np.unique(np.concatenate(ids))
        known = known[known >= 0]
        np.testing.assert_array_equal(vocabs[c].keys, known)
        np.testing.assert_array_equal(table[c], _expected_index(ev[c], known), err_msg=c)
    for s, v in bars.TAOBAOAD.sequences:  # last 50 entries, oldest first, pre-padded with 0
        np.testing.assert_array_equal(table[s], _expected_index(windows[s], vocabs[v].keys), err_msg=s)
    assert np.array_equal(np.asarray(table["user"]) - 2, np.unique(ev["userid"], return_inverse=True)[1].ravel())


def test_export_is_the_synthetic_generators_data(exported):
    """Same events as ``synthetic_events`` of the same preset and seed (its table, in the file's order)."""
    _, _, ev = exported
    table = syn.synthetic_events(SMALL, seed=3)
    order = np.lexsort((np.asarray(table["user"]), np.asarray(table["time"])))
    np.testing.assert_array_equal(np.asarray(table["label"])[order], ev["label"])
    np.testing.assert_array_equal(np.asarray(table["time"])[order], ev["time"])
    np.testing.assert_array_equal(np.asarray(table["split"])[order] == 2, ev["time"] >= syn.TEST_DAY * syn.SECONDS)


def test_export_is_deterministic_and_independent_of_the_block_size(exported, tmp_path):
    out, _, _ = exported
    again = export_taobaoad(tmp_path / "again", preset=SMALL, seed=3, block_users=40, buckets_per_day=5)
    for name in ("train.csv", "test.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    other = export_taobaoad(tmp_path / "other", preset=SMALL, seed=4)
    assert (
        other["rows"] != again["rows"]
        or (tmp_path / "other" / "test.csv").read_bytes() != (out / "test.csv").read_bytes()
    )


@pytest.mark.slow  # spawns two processes that import the package
def test_export_is_the_same_from_worker_processes(exported, tmp_path):
    out, _, _ = exported
    export_taobaoad(tmp_path / "two", preset=SMALL, seed=3, block_users=6, workers=2)  # 7 blocks, 2 processes
    for name in ("train.csv", "test.csv"):
        assert (tmp_path / "two" / name).read_bytes() == (out / name).read_bytes()


def test_export_arguments(tmp_path):
    p = preset_for_rows(100_000)
    assert p.max_len == 50 and 200 <= p.users <= 230
    with pytest.raises(ValueError, match="rows must be >= 1"):
        preset_for_rows(0)
    with pytest.raises(ValueError, match="unknown synthetic preset 'huge'"):
        export_taobaoad(tmp_path / "x", preset="huge")
    with pytest.raises(ValueError, match="block_users must be >= 1"):
        next(simulate_blocks(SMALL, 0, block_users=0))
    with pytest.raises(ValueError, match="workers must be a positive integer or None"):
        next(simulate_blocks(SMALL, 0, workers=0))


def _same_tables(a, b):
    assert a.vocab_sizes == b.vocab_sizes
    assert {k: v for k, v in a.info.items() if k != "files"} == {k: v for k, v in b.info.items() if k != "files"}
    for c in a.columns:
        np.testing.assert_array_equal(a[c], b[c], err_msg=c)
        assert a[c].dtype == b[c].dtype


def test_loader_without_pyarrow_gives_the_same_table(exported, monkeypatch):
    out, _, _ = exported

    def no_fallback(*args):
        raise AssertionError("the pyarrow reader fell back to the csv module")

    with monkeypatch.context() as m:
        m.setattr(bars, "_csv_chunks", no_fallback)
        fast = load_taobaoad(out, min_count=2)
    assert isinstance(fast["cate_his"], np.memmap) and not fast["cate_his"].flags.writeable  # memory-mapped
    for name in ("pyarrow", "pyarrow.csv", "pyarrow.compute"):
        monkeypatch.setitem(sys.modules, name, None)
    assert bars._arrow_csv() is None
    _same_tables(load_taobaoad(out, min_count=2), fast)


def test_readers_agree_on_wide_ids_quotes_and_small_chunks(tmp_path, monkeypatch):
    """int64 history tokens (stored raw, then encoded), a quoted file (csv module only), tiny batches."""
    rows = [
        f"{i % 2},1^2,{10 + i % 3}^{(1 << 40) if i == 3 else 11},100^101,{1 + i % 4},0,1,1,2,,3,0,2,{500 + i},"
        f"{10 + i % 2},900,33,100,{i}.5,1,1"
        for i in range(30)
    ]
    header = ",".join(HEADER)
    d = tmp_path / "wide"
    d.mkdir()
    (d / "train.csv").write_text("\n".join([header] + rows[:25]) + "\n")
    (d / "test.csv").write_text("\n".join([header] + rows[25:]) + "\n")
    monkeypatch.setattr(bars, "ARROW_BLOCK_BYTES", 1 << 10)  # many small batches
    fast = load_taobaoad(d, min_count=1, max_len=3)
    assert fast["cate_his"][3, -1] == fast.vocab_sizes["cate_id"] - 1  # 2^40: the largest known raw id
    assert fast.info["missing_cells"] == {"pvalue_level": 30}
    quoted = tmp_path / "quoted"
    quoted.mkdir()
    (quoted / "train.csv").write_text("\n".join([header] + [r.replace(",1^2,", ',"1^2",', 1) for r in rows[:25]]))
    (quoted / "test.csv").write_text((d / "test.csv").read_text())
    _same_tables(load_taobaoad(quoted, min_count=1, max_len=3, chunk_rows=4), fast)
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)
    _same_tables(load_taobaoad(d, min_count=1, max_len=3, chunk_rows=7), fast)
