"""Training with optax, early stopping on validation AUC that restores the best parameters."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import metrics


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 512
    learning_rate: float = 2e-3
    patience: int = 2  # epochs without validation improvement before stopping
    kd_weight: float = 1.0
    seed: int = 0


def _batches(rows: np.ndarray, size: int, rng: Optional[np.random.Generator]):
    rows = rng.permutation(rows) if rng is not None else rows
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def predict(model: nnx.Module, make_batch: Callable, rows: np.ndarray, batch_size: int = 2048,
            output: str = "logit") -> np.ndarray:
    """sigmoid of ``model(batch)[output]`` for every row (the model is put in eval mode)."""
    model.eval()

    @nnx.jit
    def forward(model, batch):
        return jax.nn.sigmoid(model(batch)[output])

    preds = [np.asarray(forward(model, make_batch(chunk))) for chunk in _batches(rows, batch_size, None)]
    return np.concatenate(preds) if preds else np.zeros(0, np.float32)


def fit(model: nnx.Module, loss_fn: Callable, make_batch: Callable, train_rows: np.ndarray,
        valid_rows: np.ndarray, valid_labels: np.ndarray, valid_users: np.ndarray,
        config: TrainConfig = TrainConfig(), progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Train ``model`` with Adam on ``loss_fn(model, batch) -> (loss, aux)``.

    After each epoch the validation AUC is computed; training stops after ``patience`` epochs
    without improvement and the parameters of the best epoch are restored. Returns the history.
    """
    opt = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, batch):
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(config.seed)
    best_auc, best_state, stale, history = -np.inf, None, 0, []
    for epoch in range(config.epochs):
        model.train()
        losses = [float(step(model, opt, make_batch(rows)))
                  for rows in _batches(train_rows, config.batch_size, rng)]
        probs = predict(model, make_batch, valid_rows)
        valid = metrics.evaluate(valid_labels, probs, valid_users)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **{f"valid_{k}": v for k, v in valid.items()}}
        history.append(record)
        if progress is not None:
            progress(record)
        if valid["auc"] > best_auc:
            best_auc, stale = valid["auc"], 0
            best_state = jax.tree.map(jnp.array, nnx.state(model))
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        nnx.update(model, best_state)
    model.eval()
    return {"history": history, "best_valid_auc": float(best_auc),
            "epochs_run": len(history)}
