"""Decentralized VM training run: data shards, DSGD engine, logging, metrics.json and plots.

The run reads the [dsgd] section of the run configuration (agents, topology, the VM's arch and
transfer, the optimizer and its schedule), [data] for the events and [fm]/[vm] for the model
(through the LoopFM study's functions). Every ``dsgd.log_every`` iterations (and at the end) one
record is logged: consensus distance (1/n) Σ_i ||x_i − x̄||², mean training loss since the last
record, bytes sent per agent per iteration; every ``dsgd.eval_every`` iterations also the
validation AUC of x̄ and of agent ``dsgd.eval_agent``. Metrics are measured by separate compiled
functions, so the training step keeps its one message per agent. Only process 0 evaluates AUC and
writes files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax

from dsgd import DSGD, Monitor, agent_mesh, count_collectives, make_topology, put_agents

from ..atomic import atomic_path, write_json_atomic
from ..config import ConfigError, RunConfig, from_dict
from ..data import load_data
from ..loopfm.store import HistoricalStore
from .problem import AgentSampler, fit_store, needs_store, shard_rows, training_batch, vm_problem


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """The local update rule of every agent (dsgd.optimizer: one of config.OPTIMIZERS)."""
    return {
        "sgd": lambda: optax.sgd(learning_rate),
        "momentum": lambda: optax.sgd(learning_rate, momentum=0.9),
        "adam": lambda: optax.adam(learning_rate),
    }[name]()


def load_table(run: RunConfig, cache_dir: str | None):
    """The event table of ``run.data`` (``cache_dir`` where ``data.cache_dir`` is 'auto')."""
    return load_data(run.data, default_cache_dir=cache_dir)


def check_config(run) -> RunConfig:
    """``run`` if it is a valid RunConfig (every key checked as when read from TOML), else an error."""
    if not isinstance(run, RunConfig):
        raise TypeError(
            f"run must be a RunConfig (implicit_rec.config.load_config or RunConfig(dsgd=DSGDConfig(...))), "
            f"got {type(run).__name__}."
        )
    return from_dict(run.to_dict(), "RunConfig", whole=False)


def run_decentralized(
    run: RunConfig,
    out: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    store_dir: str | None = None,
    log: Callable = print,
    progress: bool = True,
) -> dict:
    """Train the VM of ``run.dsgd`` with DSGD on ``run.dsgd.agents`` devices; returns (and on
    process 0 writes to ``out``) the metrics.

    ``cache_dir`` holds the prepared data; ``store_dir`` the FM store of transfer variants (read if
    present, else trained and written there).
    """
    run = check_config(run)
    cfg = run.dsgd
    try:
        top = make_topology(cfg.topology, cfg.agents)  # validates topology / n before any work
    except ValueError as err:
        raise ConfigError(f"dsgd.topology={cfg.topology!r} with dsgd.agents={cfg.agents}: {err}") from err
    t0 = time.perf_counter()
    table = load_table(run, cache_dir)  # data problems before device work
    mesh = agent_mesh(cfg.agents)
    lead = jax.process_index() == 0
    say = log if lead else (lambda *_: None)
    store = None
    if needs_store(cfg.transfer):
        if store_dir is not None and (Path(store_dir) / "meta.json").is_file():
            store = HistoricalStore.load(store_dir, table)
        elif jax.process_count() > 1:
            raise ValueError(
                f"dsgd.transfer={cfg.transfer!r} in a multi-process run needs the FM store: "
                "pass --store DIR built once (a launcher run with --processes builds it)."
            )
        else:
            say("training the foundation model for the FM store (LoopFM study functions)")
            store = fit_store(table, run, say)
            if store_dir is not None:
                store.save(store_dir)
    prob = vm_problem(table, run, store)
    engine = DSGD(top, prob.loss, optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate), mesh=mesh)
    shards = shard_rows(table, prob.train_rows, cfg.agents, cfg.shards, cfg.seed)
    devices = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    samplers = {i: AgentSampler(shards[i], cfg.batch_size, cfg.seed, i) for i in mine}

    def draw() -> dict:  # this process's agents' next batches (host arrays)
        out = {}
        for i in mine:
            rows = samplers[i].next()
            out[i] = training_batch(prob.make_batch(rows), cfg.seed, i, samplers[i].draws - 1)
        return out

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
        "config": run.to_dict(),
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


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="dsgd", unit="it", dynamic_ncols=True)


def write_outputs(out: Path, result: dict) -> None:
    """metrics.json and curves.png (consensus distance and validation AUC vs iteration), atomically."""
    clean = {k: v for k, v in result.items() if k != "x_mean"}
    write_json_atomic(out / "metrics.json", clean)
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
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
