"""The input pipeline of fit and predict: background prefetch, validation compiled ahead (issue 15)."""

import threading

import jax
import numpy as np
import pytest
from flax import nnx

from implicit_rec.models import training
from implicit_rec.models.prefetch import prefetch


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prefetch"]


def test_prefetch_yields_every_item_in_order_from_another_thread():
    main, producers = threading.get_ident(), set()

    def items():
        for i in range(100):
            producers.add(threading.get_ident())
            yield i

    assert list(prefetch(items(), depth=3)) == list(range(100))
    assert producers and main not in producers
    assert list(prefetch([])) == []
    assert not _prefetch_threads()


def test_prefetch_runs_at_most_depth_items_ahead():
    produced, depth = [], 2
    consumer = prefetch(((produced.append(i), i)[1] for i in range(50)), depth=depth)
    assert next(consumer) == 0
    deadline = threading.Event()
    deadline.wait(0.3)  # give the producer time to fill the buffer
    # the consumed item, the buffer, and one item that waits to enter it
    assert 1 + depth <= len(produced) <= 2 + depth
    assert list(consumer) == list(range(1, 50))


def test_prefetch_raises_the_producers_error_where_it_occurred():
    def items():
        yield 0
        yield 1
        raise ValueError("batch 2 is bad")

    got = []
    with pytest.raises(ValueError, match="batch 2 is bad"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [0, 1]
    assert not _prefetch_threads()


def test_closing_early_stops_the_producer():
    produced = []

    def forever():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    consumer = prefetch(forever(), depth=2)
    assert [next(consumer) for _ in range(3)] == [0, 1, 2]
    consumer.close()
    assert not _prefetch_threads()
    n = len(produced)
    threading.Event().wait(0.2)
    assert len(produced) == n <= 3 + 2 + 1


@pytest.mark.parametrize("depth", [0, -1, 1.5, True, "2"])
def test_prefetch_rejects_a_bad_depth(depth):
    with pytest.raises(ValueError, match=r"prefetch: depth must be an integer >= 1"):
        prefetch(range(3), depth=depth)


def test_prefetch_rejects_what_is_not_iterable():
    with pytest.raises(TypeError):
        prefetch(3)


# -- fit and predict -------------------------------------------------------------------------------

X = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.float32)
TRACES = {"call": 0}


class _DropScorer(nnx.Module):
    """A logistic model with dropout: eval() changes its structure (dropout off)."""

    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        self.linear = nnx.Linear(5, 1, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, batch):
        TRACES["call"] += 1
        return {"logit": self.linear(self.dropout(batch["x"]))[:, 0]}


def _batch(rows):
    return {"x": X[rows], "label": Y[rows]}


def _bce(model, batch):
    out = model(batch)
    logits, y, w = out["logit"], batch["label"], batch["weight"]
    losses = jax.numpy.maximum(logits, 0) - logits * y + jax.numpy.log1p(jax.numpy.exp(-abs(logits)))
    return jax.numpy.sum(w * losses) / jax.numpy.sum(w), out


def test_validation_is_compiled_ahead_on_a_clone_and_reused():
    model = _DropScorer(0)
    model.train()
    TRACES["call"] = 0
    thread = training._compile_ahead(model, _batch, np.arange(40, 64), monitor=None)
    thread.join()
    assert TRACES["call"] == 1  # the eval-mode forward pass, traced on the clone
    assert model.dropout.deterministic is False  # the model itself stays in training mode
    probs = training.predict(model, _batch, np.arange(40, 64))
    assert TRACES["call"] == 1  # predict reuses the program compiled ahead
    np.testing.assert_allclose(probs, jax.nn.sigmoid(model.linear(X[40:64])[:, 0]), rtol=1e-6)
    assert training._compile_ahead(model, _batch, np.arange(0), monitor=None) is None  # nothing to validate


def test_fit_reports_training_and_validation_seconds_per_epoch():
    rows = np.arange(64)
    config = training.TrainConfig(epochs=3, batch_size=16, patience=5)
    result = training.fit(_DropScorer(1), _bce, _batch, rows[:45], rows[45:], Y[45:], np.zeros(19, int), config)
    assert result["epochs_run"] == 3
    assert len(result["train_seconds"]) == len(result["valid_seconds"]) == 3
    assert all(s > 0 for s in result["train_seconds"] + result["valid_seconds"])
    assert result["examples_per_second"] > 0
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
