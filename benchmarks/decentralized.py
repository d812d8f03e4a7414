"""Decentralized DSGD benchmark: collectives in the compiled step, compile count, step time, AUC.

    .venv/bin/python -m benchmarks.decentralized [--steps 400] [--repeats 30] [--quick]

Sets 8 virtual CPU devices before JAX starts. Measures, for the VM (mlp) on the synthetic default:
(1) per topology at n = 8 (and n = 6): collective-permute / all-reduce ops in the compiled step
and messages per branch; (2) XLA backend compiles during a run after the first step (0 = the
run compiles once); (3) median step time of ceca-2p and complete at n = 8, timed round-robin in
this process (ratio); (4) final validation AUC of ceca-2p and complete at n = 6 after ``--steps``
iterations. Writes benchmarks/results/decentralized.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, machine_info, median_times  # noqa: E402
from dsgd import DSGD, agent_mesh, count_collectives, make_topology, put_agents  # noqa: E402
from implicit_rec.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from implicit_rec.config import DataConfig, DSGDConfig, RunConfig  # noqa: E402
from implicit_rec.decentralized.problem import AgentSampler, shard_rows, vm_problem  # noqa: E402
from implicit_rec.decentralized.train import load_table, make_optimizer, run_decentralized  # noqa: E402
from implicit_rec.tables import markdown_table  # noqa: E402

COUNT_TOPOLOGIES = ("ceca-2p", "ceca-1p", "exp2-one-peer", "static-exp", "ring", "torus", "complete")


class CompileCounter:
    """Counts XLA backend compiles through jax.monitoring while ``active``."""

    def __init__(self):
        self.count, self.active = 0, False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kw):
        if self.active and "backend_compile" in event:
            self.count += 1


def engine_for(prob, table, name, n, cfg: DSGDConfig, period_batches: bool = False):
    """(engine, state, batch); with ``period_batches`` the batch is (n, τ, B, ...) for period_step."""
    mesh = agent_mesh(n)
    optimizer = make_optimizer(cfg.optimizer, cfg.learning_rate)
    eng = DSGD(make_topology(name, n), prob.loss, optimizer=optimizer, mesh=mesh)
    shards = shard_rows(table, prob.train_rows, n, "iid", 0)
    samplers = [AgentSampler(shards[i], cfg.batch_size, 0, i) for i in range(n)]
    if period_batches:
        tau = eng.topology.period
        local = {i: [prob.make_batch(samplers[i].next()) for _ in range(tau)] for i in range(n)}
        local = {i: {k: np.stack([b[k] for b in bs]) for k in bs[0]} for i, bs in local.items()}
    else:
        local = {i: prob.make_batch(samplers[i].next()) for i in range(n)}
    return eng, eng.init(prob.x0), put_agents(mesh, local, n)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--seeds", type=int, default=2, help="seeds (model init, shards, batches) per AUC run")
    p.add_argument("--quick", action="store_true", help="tiny preset, few steps (smoke run)")
    args = p.parse_args(argv)
    preset = "tiny" if args.quick else "default"
    steps = 20 if args.quick else args.steps
    run = RunConfig(data=DataConfig(preset=preset))  # the defaults of train-decentralized
    base = run.dsgd
    cache = "runs/cache"
    table = load_table(run, cache)
    prob = vm_problem(table, run)
    counter = CompileCounter()
    out = {
        "machine": machine_info(devices=len(jax.devices())),
        "preset": preset,
        "params": prob.dim,
        "optimizer": base.optimizer,
        "lr": base.learning_rate,
        "batch_per_agent": base.batch_size,
    }

    hlo = {}
    for n in (6, 8):
        for name in COUNT_TOPOLOGIES:
            try:
                eng, st, batch = engine_for(prob, table, name, n, base)
            except ValueError as e:  # e.g. ceca-1p needs even n
                hlo[f"{n}/{name}"] = {"error": str(e)}
                continue
            counts = count_collectives(eng.hlo_text(st, batch))
            hlo[f"{n}/{name}"] = {
                **counts,
                "branches": len(eng.perms),
                "messages_per_branch": [len(pm) for pm in eng.perms],
                "period": eng.topology.period,
                "bytes_per_agent_per_iter": eng.bytes_per_iteration(prob.dim),
            }
            print(n, name, hlo[f"{n}/{name}"], flush=True)
    out["hlo"] = hlo

    # compile count and step time at n = 8, ceca-2p vs complete, same process, round-robin
    engines = {name: engine_for(prob, table, name, 8, base) for name in ("ceca-2p", "complete")}
    engines["ceca-2p/period"] = engine_for(prob, table, "ceca-2p", 8, base, period_batches=True)
    tau = engines["ceca-2p/period"][0].topology.period
    states = {name: st for name, (_, st, _) in engines.items()}

    def advance(name):
        eng, _, batch = engines[name]
        if name.endswith("/period"):
            states[name], loss = eng.period_step(states[name], batch)
        else:
            states[name], loss = eng.step(states[name], batch)
        return loss

    for name in engines:
        advance(name)  # the first call compiles
    counter.active = True
    times = median_times({name: (lambda name=name: advance(name)) for name in engines}, repeats=args.repeats)
    counter.active = False
    times["ceca-2p/period"] /= tau  # per iteration
    out["step_time_n8"] = {
        "median_s": times,
        "ratio_ceca2p_over_complete": times["ceca-2p"] / times["complete"],
        "ratio_ceca2p_period_unrolled_over_complete": times["ceca-2p/period"] / times["complete"],
        "repeats": args.repeats,
        "backend_compiles_after_first_step": counter.count,
        "engine_compiles": {k: e.compiles for k, (e, _, _) in engines.items()},
    }
    print(out["step_time_n8"], flush=True)

    # final AUC at n = 6 on the synthetic default: ceca-2p vs all-reduce
    auc = {}
    for name in ("ceca-2p", "complete"):
        runs = []
        for seed in range(args.seeds):
            dsgd = dataclasses.replace(base, agents=6, topology=name, steps=steps, eval_every=steps, seed=seed)
            r = run_decentralized(run.replace(dsgd=dsgd), cache_dir=cache, progress=False)
            runs.append(
                {
                    "seed": seed,
                    "valid_auc_avg": r["final"]["valid_auc_avg"],
                    "test_auc_avg": r["final"]["test_auc_avg"],
                    "consensus": r["final"]["consensus"],
                    "compiles": r["compiles"],
                    "seconds_per_step": r["seconds_per_step"],
                }
            )
        auc[name] = {
            "runs": runs,
            **{k: float(np.mean([r[k] for r in runs])) for k in ("valid_auc_avg", "test_auc_avg", "seconds_per_step")},
        }
        print(name, auc[name], flush=True)
    auc["valid_auc_gap"] = auc["ceca-2p"]["valid_auc_avg"] - auc["complete"]["valid_auc_avg"]
    auc["per_seed_gaps"] = [
        a["valid_auc_avg"] - b["valid_auc_avg"] for a, b in zip(auc["ceca-2p"]["runs"], auc["complete"]["runs"])
    ]
    auc["steps"], auc["seeds"] = steps, args.seeds
    out["auc_n6"] = auc
    write_json_atomic(RESULTS / "decentralized.json", out)
    write_text_atomic(RESULTS / "decentralized.md", report(out))
    print(report(out))


def report(out: dict) -> str:
    lines = [
        "# Decentralized DSGD benchmark",
        "",
        f"VM mlp ({out['params']:,} params) on synthetic/{out['preset']}, local {out['optimizer']} "
        f"lr {out['lr']}, batch {out['batch_per_agent']} per agent; {out['machine']['cpu_count']} CPUs, "
        f"jax {out['machine']['jax']}, virtual CPU devices.",
        "",
    ]
    rows = []
    for key, h in out["hlo"].items():
        if "error" in h:
            rows.append([key, "–", "–", h["error"].split(";")[0], "–", "–", "–"])
            continue
        rows.append(
            [
                key,
                h["period"],
                h["branches"],
                h["messages_per_branch"],
                h["collective-permute"],
                h["all-reduce"],
                f"{h['bytes_per_agent_per_iter'] / 1024:.1f}",
            ]
        )
    header = [
        "n / topology",
        "period",
        "branches",
        "messages per branch",
        "collective-permute",
        "all-reduce",
        "KiB sent/agent/iter",
    ]
    lines.append(markdown_table(header, rows, align="lrrlrrr"))
    st = out["step_time_n8"]
    a = out["auc_n6"]
    lines += [
        "",
        f"Step time at n = 8 (median of {st['repeats']}, round-robin): ceca-2p "
        f"{st['median_s']['ceca-2p'] * 1e3:.1f} ms, complete (all-reduce) {st['median_s']['complete'] * 1e3:.1f} ms, "
        f"ratio {st['ratio_ceca2p_over_complete']:.3f}; ceca-2p with the period unrolled (`period_step`, "
        f"no `lax.switch`) {st['median_s']['ceca-2p/period'] * 1e3:.1f} ms per iteration, ratio "
        f"{st['ratio_ceca2p_period_unrolled_over_complete']:.3f}. XLA compiles after the first step: "
        f"{st['backend_compiles_after_first_step']}; engine compiles per run: {st['engine_compiles']}.",
        "",
        f"Final validation AUC at n = 6 after {a['steps']} iterations, mean of {a['seeds']} seeds: ceca-2p "
        f"{a['ceca-2p']['valid_auc_avg']:.4f}, complete {a['complete']['valid_auc_avg']:.4f} (gap "
        f"{a['valid_auc_gap']:+.4f}; per seed {', '.join(f'{g:+.4f}' for g in a['per_seed_gaps'])}); test AUC "
        f"{a['ceca-2p']['test_auc_avg']:.4f} vs {a['complete']['test_auc_avg']:.4f}. End-to-end seconds per "
        f"iteration including host batch building: {a['ceca-2p']['seconds_per_step']:.4f} vs "
        f"{a['complete']['seconds_per_step']:.4f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
