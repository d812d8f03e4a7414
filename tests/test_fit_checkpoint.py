"""``fit`` resumes exactly from its checkpoint, written at epoch ends and within epochs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec.checkpoint import CheckpointError, load_tree
from implicit_rec.models import training
from implicit_rec.models.training import TrainConfig, fit
from implicit_rec.models.vertical import bce_with_logits

N_TRAIN, N_VALID, BATCH = 44, 24, 8  # 6 batches an epoch, the last padded (4 real rows)
X = np.random.default_rng(0).normal(size=(N_TRAIN + N_VALID, 5)).astype(np.float32)
Y = (X @ np.linspace(-1, 1, 5) + 0.3 * np.random.default_rng(1).normal(size=len(X)) > 0).astype(np.float32)
CONFIG = TrainConfig(epochs=3, batch_size=BATCH, learning_rate=0.05, patience=3, seed=4)


class _Logit(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.hidden = nnx.Linear(5, 4, rngs=rngs)
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, batch):
        return {"logit": self.out(jnp.tanh(self.hidden(batch["x"])))[:, 0]}


class _Noisy(_Logit):
    """Draws from its RNG stream in training (as random-k training and start noise do): a resumed run
    must continue the stream where the checkpoint left it."""

    def __init__(self):
        super().__init__()
        self.noise, self.deterministic = nnx.Rngs(noise=1), False  # fit's train() / eval() set deterministic

    def __call__(self, batch):
        h = jnp.tanh(self.hidden(batch["x"]))
        if not self.deterministic:
            h = h + 0.5 * jax.random.normal(self.noise.noise(), h.shape)
        return {"logit": self.out(h)[:, 0]}


def _loss(model, batch):
    out = model(batch)
    return bce_with_logits(out["logit"], batch["label"], batch["weight"]), out


def _batch(rows):
    return {"x": jnp.asarray(X[rows]), "label": jnp.asarray(Y[rows])}


def _fit(n_train=N_TRAIN, train_rows=None, model_class=_Logit, config=CONFIG, **options):
    model = model_class()
    valid = np.arange(N_TRAIN, N_TRAIN + N_VALID)
    train_rows = np.arange(n_train) if train_rows is None else train_rows
    hist = fit(model, _loss, _batch, train_rows, valid, Y[valid], valid % 3, config, **options)
    return model, hist


def _params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def uninterrupted():
    return _fit()


def _interrupt_at_save(monkeypatch, n):
    """Make ``fit``'s n-th checkpoint write the last: the process 'dies' right after it."""
    real, calls = training.save_tree, {"n": 0}

    def save_then_die(path, tree):
        real(path, tree)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_tree", save_then_die)
    return calls


# With checkpoint_every=0 an epoch writes after its steps 1-5 (mid-epoch) and at its end: writes
# 1-5 are within epoch 1, 6 its end, 9 within epoch 2, 12 its end, 14 within epoch 3.
@pytest.mark.parametrize("last_write", [1, 3, 5, 6, 9, 12, 14])
def test_resuming_from_any_checkpoint_is_exact(uninterrupted, tmp_path, monkeypatch, last_write):
    ckpt = tmp_path / "model.train.msgpack"
    _interrupt_at_save(monkeypatch, last_write)
    with pytest.raises(KeyboardInterrupt):
        _fit(checkpoint=ckpt, checkpoint_every=0)
    monkeypatch.undo()
    meta = json.loads(load_tree(ckpt)["meta"])
    within = last_write % 6 != 0
    assert ("epoch_position" in meta) == within
    if within:
        assert meta["epoch_position"]["next_batch"] == last_write % 6
    model, hist = _fit(checkpoint=ckpt, checkpoint_every=None)
    ref_model, ref_hist = uninterrupted
    assert hist["history"] == ref_hist["history"]  # losses, validation metrics: the same floats
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(ref_model))


# Early stopping: valid AUC 1.0, 0.993, 0.986, so epoch 3 is the second without improvement (patience 2) and
# training stops there, with epoch 1's parameters; 6 writes an epoch (checkpoint_every=0).
NOISY = dataclasses.replace(CONFIG, learning_rate=0.2, epochs=4, patience=2)


@pytest.fixture(scope="module")
def noisy_uninterrupted():
    model, hist = _fit(model_class=_Noisy, config=NOISY)
    aucs = [r["valid_auc"] for r in hist["history"]]
    assert len(aucs) == 3 and np.argmax(aucs) == 0  # stopped early, and the best epoch is not the last
    return model, hist


@pytest.mark.parametrize("last_write", [3, 8, 12, 15, 18])
def test_resuming_a_model_that_draws_random_numbers_with_early_stopping_is_exact(
    noisy_uninterrupted, tmp_path, monkeypatch, last_write
):
    ckpt = tmp_path / "noisy.train.msgpack"
    _interrupt_at_save(monkeypatch, last_write)
    with pytest.raises(KeyboardInterrupt):
        _fit(model_class=_Noisy, config=NOISY, checkpoint=ckpt, checkpoint_every=0)
    monkeypatch.undo()
    model, hist = _fit(model_class=_Noisy, config=NOISY, checkpoint=ckpt, checkpoint_every=None)
    ref_model, ref_hist = noisy_uninterrupted
    assert hist["history"] == ref_hist["history"] and hist["best_valid_auc"] == ref_hist["best_valid_auc"]
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(ref_model))  # epoch 1's, restored


def test_epoch_end_checkpoints_only_unless_asked(tmp_path, monkeypatch):
    calls = _interrupt_at_save(monkeypatch, -1)  # never dies: counts the writes
    _fit(checkpoint=tmp_path / "a.msgpack", checkpoint_every=None)
    assert calls["n"] == CONFIG.epochs
    calls["n"] = 0
    _fit(checkpoint=tmp_path / "b.msgpack")  # the default: every 600 s of training, none in this short run
    assert calls["n"] == CONFIG.epochs
    calls["n"] = 0
    _fit(checkpoint=tmp_path / "c.msgpack", checkpoint_every=0)
    assert calls["n"] == CONFIG.epochs * 6  # 5 within each epoch (never after its last step) + its end
    assert "epoch_position" not in json.loads(load_tree(tmp_path / "c.msgpack")["meta"])


def test_a_mid_epoch_checkpoint_of_other_training_rows_is_refused(tmp_path, monkeypatch):
    ckpt = tmp_path / "vm.train.msgpack"
    _interrupt_at_save(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _fit(checkpoint=ckpt, checkpoint_every=0)
    monkeypatch.undo()
    before = ckpt.read_bytes()
    other_rows = np.r_[np.arange(1, N_TRAIN), 0]  # the same count, in another order
    for options in ({"n_train": 40}, {"train_rows": other_rows}, {"config": dataclasses.replace(CONFIG, batch_size=4)}):
        with pytest.raises(CheckpointError, match=r"vm\.train\.msgpack.*2 batches of 8 of 44 training rows.*delete"):
            _fit(checkpoint=ckpt, **options)
    assert ckpt.read_bytes() == before


def test_the_progress_bars_running_loss_is_the_mean_of_every_step_so_far():
    values = [jnp.float32(v) for v in np.random.default_rng(5).normal(size=45)]
    mean = training._RunningMean()
    for end in (1, 20, 21, 45):  # the bar's refreshes, each fetching only the steps added since the last
        assert mean.extend(values[:end]) == pytest.approx(np.mean(np.asarray(values[:end], np.float64)), rel=1e-12)
        assert mean.count == end
    assert np.isnan(training._RunningMean().extend([]))


def test_checkpoints_have_string_keys_that_strict_msgpack_readers_accept(tmp_path):
    """The optimizer's state has tuple entries (int keys in a pure dict); flax < 0.12.8 reads msgpack with
    strict map keys, where an int key is an error, so every key is written as a string."""
    import msgpack

    ckpt = tmp_path / "fm.train.msgpack"
    model, _ = _fit(checkpoint=ckpt)
    msgpack.unpackb(ckpt.read_bytes(), strict_map_key=True, raw=False, ext_hook=lambda code, data: None)
    _, hist = _fit(checkpoint=ckpt)  # resumes at the end: nothing left to train
    assert len(hist["history"]) == CONFIG.epochs and hist["train_seconds"] == []
