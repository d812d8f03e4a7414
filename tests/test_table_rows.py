"""``fit`` pads large embedding tables to aligned row counts while it trains, and nothing else changes:
the same parameters bit for bit, the model's own shapes before and after, checkpoints without padding."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec.checkpoint import load_tree
from implicit_rec.models import parallel, table_rows
from implicit_rec.models.table_rows import ALIGN, MIN_ROWS, TableRows, aligned_rows
from implicit_rec.models.training import TrainConfig, fit
from implicit_rec.models.vertical import bce_with_logits

BIG, SMALL = MIN_ROWS + 1, 7  # the first table is padded (to 9 * ALIGN rows), the second is not
N_TRAIN, N_VALID = 60, 30
RNG = np.random.default_rng(0)
IDS = np.stack([RNG.integers(0, BIG, N_TRAIN + N_VALID), RNG.integers(0, SMALL, N_TRAIN + N_VALID)], 1)
IDS[:5, 0] = BIG - 1  # the last real row is trained: it must not be confused with the padding
Y = (RNG.random(N_TRAIN + N_VALID) < 0.3 + 0.4 * (IDS[:, 1] % 2)).astype(np.float32)
CONFIG = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, patience=2, seed=1)


class _Tables(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.big = nnx.Embed(BIG, 4, rngs=rngs)
        self.small = nnx.Embed(SMALL, 4, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, batch):
        h = jnp.concatenate([self.big(batch["ids"][:, 0]), self.small(batch["ids"][:, 1])], -1)
        return {"logit": self.out(jnp.tanh(h))[:, 0]}


def _loss(model, batch):
    out = model(batch)
    return bce_with_logits(out["logit"], batch["label"], batch["weight"]), out


def _batch(rows):
    return {"ids": jnp.asarray(IDS[rows]), "label": jnp.asarray(Y[rows])}


def _fit(**options):
    """(model, fit's result, the big table's rows as each epoch's validation saw them)."""
    model, seen = _Tables(), []

    def monitor(m):
        seen.append(m.big.embedding.shape[0])
        return {}

    valid = np.arange(N_TRAIN, N_TRAIN + N_VALID)
    hist = fit(model, _loss, _batch, np.arange(N_TRAIN), valid, Y[valid], valid % 4, CONFIG, monitor=monitor, **options)
    return model, hist, seen


def _params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_aligned_rows_pads_only_large_tables_to_a_multiple_of_every_split_up_to_8():
    assert aligned_rows(MIN_ROWS - 1) == MIN_ROWS - 1 and aligned_rows(5) == 5  # small tables: unchanged
    assert aligned_rows(MIN_ROWS) == MIN_ROWS  # already a multiple
    assert aligned_rows(MIN_ROWS + 1) == MIN_ROWS + ALIGN
    assert aligned_rows(400_001) == 400_680
    for rows in (MIN_ROWS + 1, 200_001, 400_001, 1_234_567):
        padded = aligned_rows(rows)
        assert rows <= padded < rows + ALIGN and padded - rows <= rows / 8
        assert all(padded % k == 0 for k in range(1, 9))


def test_table_rows_finds_the_large_tables_and_pads_and_trims_models_and_trees():
    model = _Tables()
    tables = TableRows.of(model)
    assert tables.tables == {("big", "embedding"): (BIG, aligned_rows(BIG))}
    before = _params(model)
    tables.pad_model(model)
    assert model.big.embedding.shape == (aligned_rows(BIG), 4) and model.small.embedding.shape == (SMALL, 4)
    np.testing.assert_array_equal(model.big.embedding[...][:BIG], before["big"]["embedding"])
    assert not np.any(model.big.embedding[...][BIG:])  # zero rows
    tables.trim_model(model)
    tables.trim_model(model)  # trimming a trimmed model changes nothing
    jax.tree.map(np.testing.assert_array_equal, _params(model), before)
    # a tree with the table under a longer path (an optimizer's moments) and other entries alone
    tree = {"opt_state": {0: {"mu": before, "count": np.int32(3)}}, "other": {"embedding": np.ones((BIG, 4))}}
    padded = tables.pad_tree(tree)
    assert padded["opt_state"][0]["mu"]["big"]["embedding"].shape == (aligned_rows(BIG), 4)
    assert padded["opt_state"][0]["mu"]["small"]["embedding"].shape == (SMALL, 4)
    assert padded["other"]["embedding"].shape == (BIG, 4)  # its path does not end with the table's
    back = tables.trim_tree(padded)
    jax.tree.map(np.testing.assert_array_equal, back, tree)
    assert not TableRows.of(nnx.Linear(MIN_ROWS + 1, 2, rngs=nnx.Rngs(0)))  # only embedding tables


@pytest.fixture(scope="module")
def unpadded():
    """The same training with the padding off (every table below the threshold)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(table_rows, "MIN_ROWS", 10**9)
        model, hist, seen = _fit()
    assert seen == [BIG, BIG]
    return model, hist


def test_fit_trains_padded_and_gives_the_unpadded_result_bit_for_bit(unpadded):
    model, hist, seen = _fit()
    assert seen == [aligned_rows(BIG)] * 2  # validation saw the padded table
    assert model.big.embedding.shape == (BIG, 4)  # the model's own shape again
    ref_model, ref_hist = unpadded
    assert hist["history"] == ref_hist["history"]
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(ref_model))


def test_checkpoints_hold_the_models_shapes_and_resume_exactly(unpadded, tmp_path, monkeypatch):
    from implicit_rec.models import training

    ckpt = tmp_path / "model.train.msgpack"
    real, calls = training.save_tree, []

    def save_then_die(path, tree):
        real(path, tree)
        calls.append(path)
        if len(calls) == 2:  # a mid-epoch write (epoch 1 has 4 steps: writes after steps 1, 2, 3, then its end)
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_tree", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _fit(checkpoint=ckpt, checkpoint_every=0)
    monkeypatch.undo()
    saved = load_tree(ckpt)
    assert json.loads(saved["meta"])["epoch_position"]["next_batch"] == 2
    assert np.shape(saved["model"]["big"]["embedding"]) == (BIG, 4)
    mu = saved["optimizer"]["opt_state"]["0"]["mu"]["big"]["embedding"]
    assert np.shape(mu) == (BIG, 4) and np.any(mu)
    model, hist, _ = _fit(checkpoint=ckpt, checkpoint_every=None)
    ref_model, ref_hist = unpadded
    assert hist["history"] == ref_hist["history"]
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(ref_model))


def test_an_error_during_fit_leaves_the_tables_at_their_own_shape():
    model = _Tables()

    def stop(record):
        raise RuntimeError("stop")

    valid = np.arange(N_TRAIN, N_TRAIN + N_VALID)
    with pytest.raises(RuntimeError, match="stop"):
        fit(model, _loss, _batch, np.arange(N_TRAIN), valid, Y[valid], valid % 4, CONFIG, progress=stop)
    assert model.big.embedding.shape == (BIG, 4)


def test_fit_on_a_mesh_pads_and_trims_its_replicated_tables(unpadded):
    model, hist, seen = _fit(mesh=parallel.data_mesh(1))
    assert seen == [aligned_rows(BIG)] * 2 and model.big.embedding.shape == (BIG, 4)
    assert hist["history"] == unpadded[1]["history"]
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(unpadded[0]))
