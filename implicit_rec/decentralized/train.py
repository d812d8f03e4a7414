"""Decentralized VM training run: data shards, DSGD engine, logging, metrics.json and plots.

Every ``log_every`` iterations (and at the end) one record is logged: consensus distance
(1/n) Σ_i ||x_i − x̄||², mean training loss since the last record, bytes sent per agent per
iteration; every ``eval_every`` iterations also the validation AUC of x̄ and of agent
``eval_agent``. Metrics are measured by separate compiled functions, so the training step keeps
its one message per agent. Only process 0 evaluates AUC and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax

from ..config import OPTIMIZERS
from ..data import load_dataset
from ..loopfm.store import HistoricalStore
from ..loopfm.study import StudyConfig
from ..models.vertical import ARCHS, TRANSFERS
from .engine import DSGD, Monitor, agent_mesh, count_collectives, put_agents
from .problem import SHARDINGS, AgentSampler, fit_store, needs_store, shard_rows, vm_problem
from .topology import TOPOLOGIES, make_topology

_TYPES = {"int": numbers.Integral, "float": numbers.Real, "str": str, "bool": bool}  # of DecentralizedConfig fields


@dataclasses.dataclass(frozen=True)
class DecentralizedConfig:
    agents: int = 6
    topology: str = "ceca-2p"
    dataset: str = "synthetic"
    preset: str = "default"
    data_seed: int = 0
    arch: str = "mlp"
    transfer: str = "none"
    steps: int = 400
    lr: float = 3e-3
    optimizer: str = "adam"  # local update rule u_i of every agent; plain DSGD is "sgd"
    batch_size: int = 64  # per agent
    shards: str = "iid"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_agent: int = 0
    max_valid: int = 20000
    unroll_period: bool = False  # one call per period (static permutations, no lax.switch)

    def check(self) -> None:
        """Raise ValueError naming the first field with a value the run cannot use."""
        for f in dataclasses.fields(self):  # f.type is the annotation's text (postponed annotations)
            value = getattr(self, f.name)
            if isinstance(value, bool) != (f.type == "bool") or not isinstance(value, _TYPES[f.type]):
                raise ValueError(f"{f.name} must be {'a number' if f.type == 'float' else f.type}, got {value!r}.")
        for name in ("agents", "steps", "batch_size", "log_every", "eval_every", "max_valid"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("seed", "data_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}.")
        for name, choices in (
            ("topology", TOPOLOGIES),
            ("arch", ARCHS),
            ("transfer", TRANSFERS),
            ("optimizer", OPTIMIZERS),
            ("shards", SHARDINGS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported; choose one of {', '.join(choices)}."
                )
        if not 0 <= self.eval_agent < self.agents:
            raise ValueError(f"eval_agent must be in [0, agents={self.agents}), got {self.eval_agent}.")


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    return {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=0.9),
        "adam": lambda: optax.adam(lr),
    }[name]()


def load_table(cfg: DecentralizedConfig, cache_dir: str | None):
    return load_dataset(cfg.dataset, preset=cfg.preset, seed=cfg.data_seed, cache_dir=cache_dir)


def run_decentralized(
    cfg: DecentralizedConfig,
    out: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    store_dir: str | None = None,
    log: Callable = print,
    progress: bool = True,
    study: StudyConfig | None = None,
) -> dict:
    """Train the VM with DSGD on ``cfg.agents`` devices; returns (and on process 0 writes) metrics.

    ``study`` holds the VM/FM settings shared with `implicit-rec run` (VM window, lengths, widths).
    """
    if not isinstance(cfg, DecentralizedConfig):
        raise TypeError(f"cfg must be a DecentralizedConfig, got {type(cfg).__name__}.")
    cfg.check()
    top = make_topology(cfg.topology, cfg.agents)  # validates topology / n before any work
    mesh = agent_mesh(cfg.agents)
    lead = jax.process_index() == 0
    say = log if lead else (lambda *_: None)
    t0 = time.perf_counter()
    table = load_table(cfg, cache_dir)
    study = StudyConfig() if study is None else study
    store = None
    if needs_store(cfg.transfer):
        if store_dir is not None and (Path(store_dir) / "meta.json").is_file():
            store = HistoricalStore.load(store_dir, table)
        elif jax.process_count() > 1:
            raise ValueError(
                f"transfer={cfg.transfer!r} in a multi-process run needs the FM store: "
                "pass --store DIR built once (a launcher run with --processes builds it)."
            )
        else:
            say("training the foundation model for the FM store (LoopFM study functions)")
            store = fit_store(table, study, say)
            if store_dir is not None:
                store.save(store_dir)
    prob = vm_problem(table, cfg.arch, cfg.transfer, cfg.seed, store, study, cfg.max_valid)
    engine = DSGD(top, prob.loss, optimizer=make_optimizer(cfg.optimizer, cfg.lr), mesh=mesh)
    shards = shard_rows(table, prob.train_rows, cfg.agents, cfg.shards, cfg.seed)
    devices = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    samplers = {i: AgentSampler(shards[i], cfg.batch_size, cfg.seed, i) for i in mine}

    def draw() -> dict:  # this process's agents' next batches (host arrays)
        return {i: prob.make_batch(samplers[i].next()) for i in mine}

    def put(local: dict):
        return put_agents(mesh, local, cfg.agents)

    def stacked(locals_: list[dict]):  # τ draws -> (n, τ, B, ...) for period_step
        return put({i: {k: np.stack([b[i][k] for b in locals_]) for k in locals_[0][i]} for i in mine})

    tau = top.period
    unroll = cfg.unroll_period and tau > 1
    monitor = Monitor(mesh)
    state = engine.init(prob.x0)
    pending = draw()  # the batches of the next iteration
    t_compile = time.perf_counter()
    if unroll:  # the period executable is the run's program; single steps only for a remainder
        hlo = count_collectives(engine.compile_period(state, stacked([pending] * tau)).as_text())
    else:
        engine.compile(state, put(pending))
        hlo = count_collectives(engine.hlo_text(state, put(pending)))
    compile_s = time.perf_counter() - t_compile
    bytes_sent = engine.bytes_per_iteration(prob.dim)
    say(
        f"{cfg.topology} on {cfg.agents} agents ({jax.process_count()} process(es)), period "
        f"{top.period}, D={prob.dim}, {bytes_sent / 1024:.1f} KiB sent per agent per iteration"
        + (", period unrolled" if unroll else "")
    )

    history, losses, train_s, k = [], [], 0.0, 0
    bar = _progress(cfg.steps, lead and progress)
    while k < cfg.steps:
        t1 = time.perf_counter()
        if unroll and k % tau == 0 and k + tau <= cfg.steps:
            draws = [pending] + [draw() for _ in range(tau - 1)]
            state, loss = engine.period_step(state, stacked(draws))
            done = tau
        else:
            state, loss = engine.step(state, put(pending))
            done = 1
        losses.append(loss)
        if k + done < cfg.steps:
            pending = draw()
        before, k = k, k + done
        if k // cfg.log_every > before // cfg.log_every or k == cfg.steps:
            xbar, consensus = monitor.consensus(state.x)
            train_s += time.perf_counter() - t1
            rec = {
                "step": k,
                "consensus": consensus,
                "train_loss": float(np.mean(np.concatenate([monitor.gather(v).ravel() for v in losses]))),
                "bytes_sent_per_agent": bytes_sent,
            }
            losses = []
            if k // cfg.eval_every > before // cfg.eval_every or k == cfg.steps:
                agent_x = monitor.agent(state.x, cfg.eval_agent)
                if lead:
                    rec["valid_auc_avg"] = prob.evaluate(xbar, prob.valid_rows)
                    rec[f"valid_auc_agent{cfg.eval_agent}"] = prob.evaluate(agent_x, prob.valid_rows)
            history.append(rec)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{rec['train_loss']:.4f}",
                    cons=f"{consensus:.2e}",
                    auc=f"{rec.get('valid_auc_avg', float('nan')):.4f}",
                )
        else:
            train_s += time.perf_counter() - t1
        if bar is not None:
            bar.update(done)
    if bar is not None:
        bar.close()
    xbar, consensus = monitor.consensus(state.x)
    result = {
        "config": dataclasses.asdict(cfg),
        "study": _jsonable(dataclasses.asdict(study)),
        "topology": {
            "name": top.name,
            "n": top.n,
            "period": top.period,
            "messages_per_round": top.messages_per_round,
            "allreduce": top.allreduce,
        },
        "processes": jax.process_count(),
        "params": prob.dim,
        "bytes_sent_per_agent_per_iteration": bytes_sent,
        "compiles": engine.compiles,
        "compiled_collectives": hlo,
        "branches": len(engine.perms),
        "compile_s": compile_s,
        "seconds_per_step": train_s / cfg.steps,
        "total_s": time.perf_counter() - t0,
        "history": history,
        "final": {"consensus": consensus, **{k: v for k, v in history[-1].items() if k.startswith("valid")}},
    }
    if lead:
        result["final"]["test_auc_avg"] = prob.evaluate(xbar, prob.test_rows)
        say(
            f"final: valid AUC (mean model) {result['final']['valid_auc_avg']:.4f}, agent "
            f"{cfg.eval_agent} {result['final'][f'valid_auc_agent{cfg.eval_agent}']:.4f}, test AUC "
            f"{result['final']['test_auc_avg']:.4f}, consensus {consensus:.3e}"
        )
        if out is not None:
            write_outputs(Path(out), result)
    result["x_mean"] = xbar
    return result


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="dsgd", unit="it", dynamic_ncols=True)


def write_atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(out: Path, result: dict) -> None:
    """metrics.json and curves.png (consensus distance and validation AUC vs iteration), atomically."""
    clean = {k: v for k, v in result.items() if k != "x_mean"}
    write_atomic_text(out / "metrics.json", json.dumps(clean, indent=2))
    plot_curves(
        {result["topology"]["name"]: result["history"]}, out / "curves.png", title=f"DSGD, n={result['topology']['n']}"
    )


def plot_curves(histories: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """Two panels: consensus distance (log) and validation AUC of the mean model vs iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, hist in histories.items():
        a.semilogy([r["step"] for r in hist], [max(r["consensus"], 1e-30) for r in hist], label=name)
        ev = [r for r in hist if "valid_auc_avg" in r]
        b.plot([r["step"] for r in ev], [r["valid_auc_avg"] for r in ev], marker="o", label=name)
    a.set(xlabel="iteration", ylabel="consensus distance (1/n) Σ||x_i − x̄||²", title=title)
    b.set(xlabel="iteration", ylabel="validation AUC (mean model)", title=title)
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
