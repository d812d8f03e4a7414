"""The vertical model (VM) as a decentralized problem: flat parameters, per-agent shards, batches.

The model's other state is not gossiped: each loss call starts from the initial state (a
spectral cap re-estimates sigma(W) with ``POWER_ITERATIONS`` power iterations per call, from
the initial vector), draws its random numbers (random-k, random starts, the Jacobian noise)
from ``(seed, agent, step)`` and sets the warm-up step counter to the agent's step, both
carried by the batch (:func:`training_batch`).

Parameters are one flat float32 vector x (D,) (``jax.flatten_util.ravel_pytree`` of the VM's
``nnx.Param`` state) so a gossip message is one buffer. Agent i trains on its shard S_i of the VM
training window: ``iid`` (a random partition of the rows) or ``by-user`` (users split into n
groups: heterogeneous data). Its batch at iteration k depends only on (seed, i, k), so a
multi-process run sees exactly the batches of a single-process run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from dsgd import check_count

from .. import metrics
from ..config import SHARDINGS, RunConfig
from ..data.events import EventTable
from ..layers.implicit import StepCounter
from ..layers.weights import StateLinear
from ..loopfm import study
from ..loopfm.batches import vm_batches
from ..loopfm.store import HistoricalStore
from ..models.training import pad_rows


def shard_rows(table: EventTable, rows: np.ndarray, n: int, how: str, seed: int) -> list[np.ndarray]:
    """Split ``rows`` among n agents: ``iid`` random partition, ``by-user`` disjoint user groups."""
    if how not in SHARDINGS:
        raise ValueError(f"shards={how!r} is not supported; choose one of {', '.join(SHARDINGS)}.")
    n = check_count("n", n, minimum=1)
    if len(rows) < n:
        raise ValueError(f"{len(rows)} training rows cannot give each of n={n} agents a shard; use fewer agents.")
    rng = np.random.default_rng([seed, 7])
    if how == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(rows), n)]
    users = np.asarray(table["user"])[rows]
    uniq = rng.permutation(np.unique(users))
    group = np.empty(int(uniq.max()) + 1, np.int64)
    group[uniq] = np.arange(len(uniq)) * n // len(uniq)  # n contiguous groups of shuffled users
    shards = [rows[group[users] == i] for i in range(n)]
    if any(len(s) == 0 for s in shards):
        raise ValueError(f"shards='by-user' left an agent without rows ({len(uniq)} users, n={n}).")
    return shards


class AgentSampler:
    """Agent i's batch at iteration k: rows of its shard, reshuffled every pass (seeded by seed, i)."""

    def __init__(self, shard: np.ndarray, batch_size: int, seed: int, agent: int):
        if len(shard) == 0:  # next() would loop forever
            raise ValueError(f"agent {agent} has an empty shard; every agent needs training rows.")
        check_count("batch_size", batch_size, minimum=1)
        self.shard, self.batch_size = shard, batch_size
        self.rng = np.random.default_rng([seed, 1000 + agent])
        self.order, self.pos = self.rng.permutation(shard), 0
        self.draws = 0  # batches drawn so far

    def next(self) -> np.ndarray:
        self.draws += 1
        out = []
        need = self.batch_size
        while need:
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(self.shard), 0
            take = self.order[self.pos : self.pos + need]
            self.pos += len(take)
            need -= len(take)
            out.append(take)
        return np.concatenate(out)


@dataclasses.dataclass
class VMProblem:
    """Flat-parameter VM: ``loss(x, batch)``, ``predict(x, rows)``, batch builder, shards."""

    table: EventTable
    arch: str
    transfer: str
    x0: np.ndarray  # (D,) float32
    loss: Callable  # (x (D,), training_batch(...)) -> scalar, train mode
    forward: Callable  # jitted (x, batch) -> probabilities, eval mode
    make_batch: Callable  # rows -> dict of numpy arrays
    train_rows: np.ndarray
    valid_rows: np.ndarray
    test_rows: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.x0.size)

    def evaluate(self, x: np.ndarray, rows: np.ndarray, chunk: int = 2048) -> float:
        """AUC of the model with flat parameters ``x`` on ``rows`` (on this process's first device).

        Rows go in chunks of one fixed size (the last one padded), so ``forward`` compiles once.
        """
        dev = jax.local_devices()[0]
        xd = jax.device_put(np.asarray(x, np.float32), dev)
        probs = []
        for s in range(0, len(rows), chunk):
            part = rows[s : s + chunk]
            padded = pad_rows(part, chunk)
            probs.append(np.asarray(self.forward(xd, jax.device_put(self.make_batch(padded), dev)))[: len(part)])
        return metrics.auc(np.asarray(self.table["label"][rows]), np.concatenate(probs))


def needs_store(transfer: str) -> bool:
    return transfer != "none"


def fit_store(table: EventTable, run: RunConfig, log: Callable = print) -> HistoricalStore:
    """Train the foundation model on its window ([fm]) and log its store (the LoopFM study's functions)."""
    fm_cfg = study.resolve(run, table.schema.max_len).fm
    fm, _ = study.train_fm(table, fm_cfg, log)
    return study.build_store(fm, table, fm_cfg, log)


def vm_problem(table: EventTable, run: RunConfig, store: HistoricalStore | None = None) -> VMProblem:
    """The VM ``run.dsgd.arch`` / ``transfer`` / ``seed`` of the LoopFM study ([vm]) on the VM window.

    A transfer other than "none" needs the FM's ``store``; validation uses at most ``run.dsgd.max_valid``
    rows (a seeded sample).
    """
    d = run.dsgd
    if needs_store(d.transfer) and store is None:
        raise ValueError(f"dsgd.transfer={d.transfer!r} needs the FM's historical store; pass store=.")
    vm_cfg = study.resolve(run, table.schema.max_len).vm
    train_rows = study.window_rows(table, "train", tuple(vm_cfg.days))
    model = study.make_vm(table, store if store is not None else _NoStore(), vm_cfg, d.arch, d.transfer, d.seed)
    for _, module in nnx.iter_graph(model):
        if isinstance(module, StateLinear):  # sigma(W) re-estimated from the initial vector every call
            module.power_iterations = POWER_ITERATIONS
    model.train()
    graph_train, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    graph_eval, _, _ = nnx.split(model, nnx.Param, ...)
    flat, unravel = ravel_pytree(params)
    vm_loss_fn = study.VMLoss.of(vm_cfg)

    def loss(x, batch):
        batch = dict(batch)
        seed, agent, step = batch.pop(STEP_KEY)
        m = nnx.merge(graph_train, unravel(x), rest, copy=True)  # the state updates stay in this call
        nnx.reseed(m, default=jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), agent), step))
        for _, module in nnx.iter_graph(m):
            if isinstance(module, StepCounter):  # the warm-up counts the agent's steps
                module[...] = step.astype(module[...].dtype)
        return vm_loss_fn(m, batch)[0]

    @jax.jit
    def forward(x, batch):
        m = nnx.merge(graph_eval, unravel(x), rest, copy=True)
        return jax.nn.sigmoid(m(batch)["logit"])

    make_batch = vm_batches(table, store, run.vm.history_len, d.transfer)

    valid = table.rows("valid")
    if len(valid) > d.max_valid:
        valid = np.sort(np.random.default_rng(d.seed).choice(valid, d.max_valid, replace=False))
    return VMProblem(
        table,
        d.arch,
        d.transfer,
        np.asarray(flat, np.float32),
        loss,
        forward,
        make_batch,
        train_rows,
        valid,
        table.rows("test"),
    )


POWER_ITERATIONS = 10  # per call, from the initial singular vector (the estimate is not gossiped)
STEP_KEY = "step_key"  # (seed, agent, step) uint32 of a training batch: its random draws and step count


def training_batch(batch: dict, seed: int, agent: int, step: int) -> dict:
    """``batch`` with its ``STEP_KEY``: what ``VMProblem.loss`` needs besides the rows."""
    return {**batch, STEP_KEY: np.asarray([seed, agent, step], np.uint32)}


class _NoStore:
    """Stands in for the store when transfer="none": make_vm reads only ``dim`` (LoopFM projection)."""

    dim = 1
