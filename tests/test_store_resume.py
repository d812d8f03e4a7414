"""The store's logging pass on disk: HistoricalStore.build_parts(directory=...) resumes after an
interruption and ends as a saved store; study.build_store keys the record by the FMs' parameters."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.loopfm import study
from implicit_rec.loopfm.store import HistoricalStore

BATCH = 64


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


class Interrupted(Exception):
    pass


def _fake_fm(offset: float, dim: int = 16, calls: list | None = None, fail_after: int | None = None):
    """An 'FM' whose outputs are a known function of the rows; ``calls`` collects the rows of every
    call, and the call after ``fail_after`` calls raises (an interruption)."""
    calls = [] if calls is None else calls

    def apply(rows):
        if fail_after is not None and len(calls) >= fail_after:
            raise Interrupted
        calls.append(np.asarray(rows).copy())
        r = np.asarray(rows, np.float32)
        emb = r[:, None] * 1e-3 + offset + np.arange(dim, dtype=np.float32)[None, :] * 1e-2
        return {"logit": r * 1e-4 - offset, "interaction": emb, "item": -emb, "user": 2 * emb}

    return apply


def _parts(tiny):
    """Two parts of 300 and 600 rows (5 and 10 chunks of 64, each part's last one partial), any order."""
    a = np.arange(0, 900, 3)
    b = np.setdiff1d(np.arange(900), a)[::-1]
    return a, b


def _build(tiny, directory, fms, key="fms-v1", **kw):
    a, b = _parts(tiny)
    return HistoricalStore.build_parts(
        [(fms[0], a), (fms[1], b)], tiny, kind="item", batch_size=BATCH, directory=directory, key=key, **kw
    )


def _assert_same(store, reference):
    for name in ("rows", "embeddings", "logits"):
        got, want = np.asarray(getattr(store, name)), np.asarray(getattr(reference, name))
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(store.slot, reference.slot)


def test_on_disk_build_equals_in_memory_and_is_a_saved_store(tiny, tmp_path):
    reference = _build(tiny, None, [_fake_fm(0.0), _fake_fm(5.0)])
    built = _build(tiny, tmp_path / "store.partial", [_fake_fm(0.0), _fake_fm(5.0)])
    _assert_same(built, reference)
    assert sorted(p.name for p in (tmp_path / "store.partial").iterdir()) == [
        "embeddings.npy",
        "logits.npy",
        "meta.json",
        "rows.npy",
    ]  # the record is gone: the directory is a saved store
    assert isinstance(built.embeddings, np.memmap) and not built.embeddings.flags.writeable
    _assert_same(HistoricalStore.load(tmp_path / "store.partial", tiny), reference)
    saved = tmp_path / "saved"
    reference.save(saved)
    assert json.loads((saved / "meta.json").read_text()) == json.loads(
        (tmp_path / "store.partial/meta.json").read_text()
    )


@pytest.mark.parametrize("fail_after", [3, 7])  # inside the first part; inside the second (the first has 5 chunks)
def test_interrupted_build_resumes_after_the_last_record_and_equals_an_uninterrupted_one(tiny, tmp_path, fail_after):
    a, b = _parts(tiny)
    assert -(-len(a) // BATCH) == 5
    reference = _build(tiny, None, [_fake_fm(0.0), _fake_fm(5.0)])
    directory = tmp_path / "store.partial"
    first = []  # one list: the chunks of both parts in order
    with pytest.raises(Interrupted):
        _build(
            tiny,
            directory,
            [_fake_fm(0.0, calls=first, fail_after=fail_after), _fake_fm(5.0, calls=first, fail_after=fail_after)],
            checkpoint_seconds=0.0,  # a record after every chunk
        )
    state = json.loads((directory / "state.json").read_text())
    n_a = -(-len(a) // BATCH)
    expected = fail_after * BATCH if fail_after < n_a else len(a) + (fail_after - n_a) * BATCH
    assert state["done"] == expected and len(first) == fail_after
    second = []
    resumed = _build(tiny, directory, [_fake_fm(0.0, calls=second), _fake_fm(5.0, calls=second)])
    _assert_same(resumed, reference)
    # only the chunks not yet recorded were computed again
    assert len(second) == -(-len(a) // BATCH) + -(-len(b) // BATCH) - fail_after
    assert not (directory / "state.json").exists()


def test_record_runs_at_most_every_checkpoint_seconds(tiny, tmp_path):
    """With a long interval nothing after the start is recorded: a resume computes everything again."""
    directory = tmp_path / "store.partial"
    with pytest.raises(Interrupted):
        _build(tiny, directory, [_fake_fm(0.0, fail_after=4), _fake_fm(5.0, fail_after=4)], checkpoint_seconds=3600)
    assert json.loads((directory / "state.json").read_text())["done"] == 0


@pytest.mark.parametrize("change", ["key", "batch_size", "rows", "damaged", "truncated", "other_width"])
def test_a_record_of_something_else_or_a_damaged_one_starts_again(tiny, tmp_path, change):
    reference = _build(tiny, None, [_fake_fm(0.0), _fake_fm(5.0)])
    directory = tmp_path / "store.partial"
    with pytest.raises(Interrupted):
        _build(tiny, directory, [_fake_fm(0.0, fail_after=6), _fake_fm(5.0, fail_after=6)], checkpoint_seconds=0.0)
    a, b = _parts(tiny)
    calls = []
    fms = [_fake_fm(0.0, calls=calls), _fake_fm(5.0, calls=calls)]
    kw = {}
    if change == "key":
        kw["key"] = "fms-v2"  # other FM parameters
    elif change == "batch_size":
        kw["batch_size"] = 32
    elif change == "damaged":
        (directory / "state.json").write_text('{"identity": ')
    elif change == "truncated":
        with open(directory / "embeddings.npy", "r+b") as f:
            f.truncate(100)
    elif change == "other_width":  # a readable array of another shape under a matching record
        np.save(directory / "embeddings.npy", np.zeros((len(a) + len(b), 3), np.float16))
    if change == "rows":
        a = a[:-1]
        store = HistoricalStore.build_parts(
            [(fms[0], a), (fms[1], b)], tiny, kind="item", batch_size=BATCH, directory=directory, key="fms-v1"
        )
        expect = HistoricalStore.build_parts(
            [(_fake_fm(0.0), a), (_fake_fm(5.0), b)], tiny, kind="item", batch_size=BATCH
        )
        _assert_same(store, expect)
    else:
        if "batch_size" in kw:
            store = HistoricalStore.build_parts(
                [(fms[0], a), (fms[1], b)], tiny, kind="item", directory=directory, key="fms-v1", **kw
            )
        else:
            store = _build(tiny, directory, fms, **kw)
        _assert_same(store, reference)
    assert calls[0][0] == a[0]  # started from the first chunk
    assert sum(len(c) for c in calls) >= len(a) + len(b)


@pytest.mark.slow  # builds an FM and logs the tiny table four times
def test_build_store_keys_the_record_by_the_fms_parameters(tiny, tmp_path, monkeypatch):
    """study.build_store passes a digest of its FMs' parameters: the same FM resumes, another starts again."""
    from implicit_rec import config

    cfg = study.resolve(config.load_config(None, ("fm.max_len=64", "fm.out_of_fold=0")), tiny.schema.max_len)
    fm = study.make_fm(tiny, cfg.fm)
    keys = []
    real = HistoricalStore.build_parts

    def spy(*args, **kwargs):
        keys.append(kwargs["key"])
        return real(*args, **kwargs)

    monkeypatch.setattr(HistoricalStore, "build_parts", spy)
    on_disk = study.build_store(fm, tiny, cfg.fm, directory=tmp_path / "store.partial")
    in_memory = study.build_store(fm, tiny, cfg.fm)
    _assert_same(on_disk, in_memory)
    study.build_store(fm, tiny, cfg.fm, directory=tmp_path / "again")
    other = study.make_fm(tiny, cfg.fm)
    nnx.update(other, jax.tree.map(lambda x: x + 1e-3, nnx.state(other, nnx.Param)))  # another FM
    study.build_store(other, tiny, cfg.fm, directory=tmp_path / "other")
    assert keys[0] == keys[2] != keys[3] and keys[1] == "" and len(keys[0]) == 128
