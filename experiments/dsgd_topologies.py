"""DSGD topologies: the VM on JAX virtual devices, and convex least squares with many agents.

    python -m experiments.dsgd_topologies [--agents 5,6,8,12] [--topologies ceca-2p,ceca-1p,exp2-one-peer,ring,complete]
        [--config run.toml] [--set dsgd.steps=400] [--steps 400] [--optimizer adam --lr 0.003] [--preset default]
        [--skip-vm] [--skip-lsq] [--lsq-agents 258] [--lsq-steps 3000] [--out runs/dsgd_topologies]

The VM runs read the run configuration of ``implicit-rec train-decentralized`` (its [dsgd], [data],
[fm], [vm] sections): defaults < ``--config`` < ``--set`` < the flags (``--lr`` is
``dsgd.learning_rate``, ``--preset`` is ``data.preset``); ``--agents`` and ``--topologies`` list
the values of ``dsgd.agents`` and ``dsgd.topology`` to run.

Part 1 (device engine, one process, max(agents) virtual CPU devices): for each n and topology
(ceca-1p only for even n) the VM of ``implicit-rec run`` is trained by DSGD; OUT/vm_n{n}.png shows
consensus distance and validation AUC of the mean model vs iterations, OUT/report.md the final AUC
table. Part 2 (host reference ``gossip``): least squares with n agents, d = 10, 50 samples each,
heterogeneous local optima and noisy gradients g_i = ∇f_i(x_i) + σξ; relative error
(1/n) Σ ||x_i − x*||² / ||x*||² vs iterations for DSGD with each topology and centralized SGD
(OUT/least_squares.png). Everything goes to OUT/metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from ._args import directory, integer, integers, names, positive_float

LSQ_TOPOLOGIES = ("ceca-2p", "ceca-1p", "exp2-one-peer", "static-exp", "ring")


def least_squares_study(
    n: int = 258,
    d: int = 10,
    m: int = 50,
    steps: int = 3000,
    lr: float = 0.02,
    sigma: float = 0.5,
    seed: int = 0,
    topologies=LSQ_TOPOLOGIES,
    every: int = 10,
) -> dict:
    """Relative error curves of DSGD (reference gossip) per topology and of centralized SGD."""
    from dsgd import dsgd_reference, make_topology

    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, m, d))
    local_opt = rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))  # heterogeneous agents
    b = np.einsum("nmd,nd->nm", A, local_opt) + 0.1 * rng.normal(size=(n, m))
    x_star = np.linalg.lstsq(A.reshape(-1, d), b.reshape(-1), rcond=None)[0]
    scale = float(x_star @ x_star)

    def run(name: str) -> tuple[list[float], list[float]]:
        noise = np.random.default_rng(seed + 1)
        curve, curve_mean = [1.0], [1.0]

        def grad(k, X):
            g = np.einsum("nmd,nm->nd", A, np.einsum("nmd,nd->nm", A, X) - b) / m
            return g + sigma * noise.normal(size=X.shape)

        def record(k, X):
            if k % every == 0:
                curve.append(float(np.mean(np.sum((X - x_star) ** 2, axis=1)) / scale))
                curve_mean.append(float(np.sum((X.mean(0) - x_star) ** 2)) / scale)

        if name == "centralized":  # one model, gradient = mean of the n noisy local gradients
            x = np.zeros(d)
            for k in range(steps):
                x = x - lr * grad(k, np.broadcast_to(x, (n, d))).mean(0)
                record(k + 1, np.broadcast_to(x, (n, d)))
        else:
            dsgd_reference(make_topology(name, n), grad, np.zeros(d), lr, steps, callback=record)
        return curve, curve_mean

    names = [t for t in topologies if not (t == "ceca-1p" and n % 2)] + ["centralized"]
    runs = {name: run(name) for name in names}
    curves = {k: v[0] for k, v in runs.items()}
    means = {k: v[1] for k, v in runs.items()}
    tail = max(1, len(next(iter(curves.values()))) // 5)  # average over the last 20% (noise floor)
    return {
        "n": n,
        "d": d,
        "samples_per_agent": m,
        "steps": steps,
        "lr": lr,
        "sigma": sigma,
        "every": every,
        "curves": curves,
        "curves_mean_model": means,
        "final": {k: float(np.mean(v[-tail:])) for k, v in curves.items()},
        "final_mean_model": {k: float(np.mean(v[-tail:])) for k, v in means.items()},
    }


def plot_lsq(res: dict, path: Path) -> None:
    import matplotlib

    from implicit_rec.atomic import atomic_path

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in (
        (axes[0], "curves", "(1/n) Σ ||x_i − x*||² / ||x*||²"),
        (axes[1], "curves_mean_model", "||x̄ − x*||² / ||x*||²"),
    ):
        for name, curve in res[key].items():
            ax.semilogy(
                np.arange(len(curve)) * res["every"],
                curve,
                label=name,
                linestyle="--" if name == "centralized" else "-",
            )
        ax.set(
            xlabel="iteration",
            ylabel=label,
            title=f"least squares, n={res['n']}, d={res['d']}, {res['samples_per_agent']} samples/agent",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_results(out: Path, vm: dict, lsq, args) -> None:
    from implicit_rec.atomic import write_json_atomic, write_text_atomic

    write_json_atomic(out / "metrics.json", {"args": vars(args), "vm": vm, "least_squares": lsq})
    write_text_atomic(out / "report.md", report(vm, lsq, args))


def vm_study(agents: list[int], topologies: list[str], args, out: Path, base) -> dict:
    """DSGD of the VM for every (n, topology): ``base`` (a RunConfig) with dsgd.agents and dsgd.topology set."""
    from implicit_rec.decentralized.train import plot_curves, run_decentralized

    results = {}
    pairs = runs(agents, topologies)
    for n in dict.fromkeys(n for n, _ in pairs):
        hist = {}
        for top in [t for m, t in pairs if m == n]:
            cfg = base.replace(dsgd=dataclasses.replace(base.dsgd, agents=n, topology=top))
            print(f"== n={n} {top}", flush=True)
            r = run_decentralized(
                cfg, cache_dir=str(out.parent / "cache"), progress=False, log=lambda *a: print(*a, flush=True)
            )
            r.pop("x_mean")
            results[f"{n}/{top}"] = r
            hist[top] = r["history"]
            write_results(out, results, None, args)  # partial results survive an interrupted run
        plot_curves(hist, out / f"vm_n{n}.png", title=f"VM, n={n}")
    return results


def report(vm: dict, lsq: dict | None, args) -> str:
    from implicit_rec.tables import markdown_table

    lines = ["# DSGD topologies", ""]
    if vm:
        c = next(iter(vm.values()))["config"]  # the settings the VM runs used
        d = c["dsgd"]
        header = [
            "n",
            "topology",
            "valid AUC (mean model)",
            "valid AUC (agent 0)",
            "test AUC (mean)",
            "final consensus",
            "KiB sent/agent/iter",
            "s/iter",
        ]
        rows = []
        for key, r in vm.items():
            n, top = key.split("/")
            f = r["final"]
            rows.append(
                [
                    n,
                    top,
                    f"{f['valid_auc_avg']:.4f}",
                    f"{f['valid_auc_agent0']:.4f}",
                    f"{f['test_auc_avg']:.4f}",
                    f"{f['consensus']:.2e}",
                    f"{r['bytes_sent_per_agent_per_iteration'] / 1024:.1f}",
                    f"{r['seconds_per_step']:.3f}",
                ]
            )
        lines += [
            f"VM ({d['arch']}) on synthetic/{c['data']['preset']}, {d['steps']} iterations, local {d['optimizer']} "
            f"lr {d['learning_rate']}, batch {d['batch_size']} per agent, shards {d['shards']}.",
            "",
            markdown_table(header, rows, align="ll" + "r" * 6),
            "",
        ]
    if lsq:
        rows = [[k, f"{v:.3e}", f"{lsq['final_mean_model'][k]:.3e}"] for k, v in lsq["final"].items()]
        lines += [
            f"Least squares (host reference gossip): n={lsq['n']}, d={lsq['d']}, "
            f"{lsq['samples_per_agent']} samples/agent, σ={lsq['sigma']}, lr {lsq['lr']}, "
            f"{lsq['steps']} iterations; relative errors averaged over the last 20% of iterations.",
            "",
            markdown_table(["method", "(1/n) Σ ‖x_i − x*‖² / ‖x*‖²", "‖x̄ − x*‖² / ‖x*‖²"], rows),
            "",
        ]
    return "\n".join(lines)


def runs(agents: list[int], topologies: list[str]) -> list[tuple[int, str]]:
    """The (n, topology) pairs of part 1 (ceca-1p only for even n); ValueError if one cannot be built."""
    from dsgd import make_topology

    pairs = [(n, top) for n in agents for top in topologies if not (top == "ceca-1p" and n % 2)]
    for n, top in pairs:
        make_topology(top, n)
    if not pairs:
        raise ValueError(
            f"--topologies {','.join(topologies)} has no topology for --agents "
            f"{','.join(map(str, agents))} (ceca-1p needs an even n)."
        )
    return pairs


def main(argv=None) -> None:
    from dsgd import TOPOLOGIES
    from implicit_rec.config import ARCHS, OPTIMIZERS, SHARDINGS, ConfigError, add_config_args
    from implicit_rec.data.synthetic import PRESETS
    from implicit_rec.decentralized.cli import resolve

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", dest="agent_counts", default="5,6,8,12", type=integers(1), help="values of dsgd.agents")
    p.add_argument("--topologies", default="ceca-2p,ceca-1p,exp2-one-peer,ring,complete", type=names(TOPOLOGIES))
    add_config_args(p)
    p.add_argument("--preset", choices=sorted(PRESETS), help="= data.preset")
    p.add_argument("--arch", choices=ARCHS, help="= dsgd.arch")
    p.add_argument("--steps", type=integer(1), help="= dsgd.steps")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="= dsgd.optimizer")
    p.add_argument("--lr", type=positive_float, help="= dsgd.learning_rate")
    p.add_argument("--batch-size", type=integer(1), help="= dsgd.batch_size")
    p.add_argument("--shards", choices=SHARDINGS, help="= dsgd.shards")
    p.add_argument("--seed", type=integer(0), help="= dsgd.seed (and the least-squares seed)")
    p.add_argument("--log-every", type=integer(1), help="= dsgd.log_every")
    p.add_argument("--eval-every", type=integer(1), help="= dsgd.eval_every")
    p.add_argument("--skip-vm", action="store_true")
    p.add_argument("--skip-lsq", action="store_true")
    p.add_argument("--lsq-agents", type=integer(1), default=258)
    p.add_argument("--lsq-steps", type=integer(1), default=3000)
    p.add_argument("--out", default="runs/dsgd_topologies", type=directory)
    args = p.parse_args(argv)
    if args.skip_vm and args.skip_lsq:
        p.error("--skip-vm and --skip-lsq together leave nothing to run.")
    try:
        base = resolve(args)  # the same precedence as train-decentralized
    except ConfigError as err:
        p.error(str(err))
    agents, out = args.agent_counts, Path(args.out)
    if not args.skip_vm:
        try:
            runs(agents, args.topologies)
        except ValueError as err:  # e.g. torus on a prime n: before hours of the other runs
            p.error(str(err))
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_vm:  # virtual devices must be configured before JAX starts its backend
        import jax

        jax.config.update("jax_num_cpu_devices", max(agents))
    if args.skip_vm:  # keep the VM results of an earlier run in OUT
        old = out / "metrics.json"
        vm = json.loads(old.read_text()).get("vm", {}) if old.is_file() else {}
    else:
        vm = vm_study(agents, args.topologies, args, out, base)
    lsq = None
    if not args.skip_lsq:
        lsq = least_squares_study(n=args.lsq_agents, steps=args.lsq_steps, seed=base.dsgd.seed)
        plot_lsq(lsq, out / "least_squares.png")
    write_results(out, vm, lsq, args)
    print(report(vm, lsq, args))


if __name__ == "__main__":
    sys.exit(main())
