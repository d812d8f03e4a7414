"""DSGD topologies: the VM on JAX virtual devices, and convex least squares with many agents.

    python -m experiments.dsgd_topologies [--agents 5,6,8,12] [--topologies ceca-2p,ceca-1p,exp2-one-peer,ring,complete]
        [--steps 400] [--optimizer adam --lr 0.003] [--preset default] [--skip-vm] [--skip-lsq]
        [--lsq-agents 258] [--lsq-steps 3000] [--out runs/dsgd_topologies]

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
import json
import os
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
    from implicit_rec.decentralized import make_topology
    from implicit_rec.decentralized.reference import dsgd_reference

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
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_results(out: Path, vm: dict, lsq, args) -> None:
    result = {"args": vars(args), "vm": vm, "least_squares": lsq}
    for name, text in (("metrics.json", json.dumps(result, indent=2)), ("report.md", report(vm, lsq, args))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def vm_study(agents: list[int], topologies: list[str], args, out: Path) -> dict:
    from implicit_rec.decentralized.train import DecentralizedConfig, plot_curves, run_decentralized

    results = {}
    pairs = runs(agents, topologies)
    for n in dict.fromkeys(n for n, _ in pairs):
        hist = {}
        for top in [t for m, t in pairs if m == n]:
            cfg = DecentralizedConfig(
                agents=n,
                topology=top,
                preset=args.preset,
                arch=args.arch,
                steps=args.steps,
                lr=args.lr,
                optimizer=args.optimizer,
                batch_size=args.batch_size,
                shards=args.shards,
                seed=args.seed,
                log_every=args.log_every,
                eval_every=args.eval_every,
            )
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
    lines = ["# DSGD topologies", ""]
    if vm:
        c = next(iter(vm.values()))["config"]  # the settings the VM runs used
        lines += [
            f"VM ({c['arch']}) on synthetic/{c['preset']}, {c['steps']} iterations, local {c['optimizer']} "
            f"lr {c['lr']}, batch {c['batch_size']} per agent, shards {c['shards']}.",
            "",
            "| n | topology | valid AUC (mean model) | valid AUC (agent 0) | test AUC (mean) | "
            "final consensus | KiB sent/agent/iter | s/iter |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for key, r in vm.items():
            n, top = key.split("/")
            f = r["final"]
            lines.append(
                f"| {n} | {top} | {f['valid_auc_avg']:.4f} | {f['valid_auc_agent0']:.4f} | "
                f"{f['test_auc_avg']:.4f} | {f['consensus']:.2e} | "
                f"{r['bytes_sent_per_agent_per_iteration'] / 1024:.1f} | {r['seconds_per_step']:.3f} |"
            )
        lines.append("")
    if lsq:
        lines += [
            f"Least squares (host reference gossip): n={lsq['n']}, d={lsq['d']}, "
            f"{lsq['samples_per_agent']} samples/agent, σ={lsq['sigma']}, lr {lsq['lr']}, "
            f"{lsq['steps']} iterations; relative errors averaged over the last 20% of iterations.",
            "",
            "| method | (1/n) Σ ‖x_i − x*‖² / ‖x*‖² | ‖x̄ − x*‖² / ‖x*‖² |",
            "|---|---:|---:|",
        ]
        lines += [f"| {k} | {v:.3e} | {lsq['final_mean_model'][k]:.3e} |" for k, v in lsq["final"].items()]
        lines.append("")
    return "\n".join(lines)


def runs(agents: list[int], topologies: list[str]) -> list[tuple[int, str]]:
    """The (n, topology) pairs of part 1 (ceca-1p only for even n); ValueError if one cannot be built."""
    from implicit_rec.decentralized import make_topology

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
    from implicit_rec.data.synthetic import PRESETS
    from implicit_rec.decentralized import TOPOLOGIES
    from implicit_rec.decentralized.problem import SHARDINGS
    from implicit_rec.decentralized.train import OPTIMIZERS
    from implicit_rec.models.vertical import ARCHS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", default="5,6,8,12", type=integers(1))
    p.add_argument("--topologies", default="ceca-2p,ceca-1p,exp2-one-peer,ring,complete", type=names(TOPOLOGIES))
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--arch", default="mlp", choices=ARCHS)
    p.add_argument("--steps", type=integer(1), default=400)
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    p.add_argument("--lr", type=positive_float, default=3e-3)
    p.add_argument("--batch-size", type=integer(1), default=64)
    p.add_argument("--shards", default="iid", choices=SHARDINGS)
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--log-every", type=integer(1), default=10)
    p.add_argument("--eval-every", type=integer(1), default=100)
    p.add_argument("--skip-vm", action="store_true")
    p.add_argument("--skip-lsq", action="store_true")
    p.add_argument("--lsq-agents", type=integer(1), default=258)
    p.add_argument("--lsq-steps", type=integer(1), default=3000)
    p.add_argument("--out", default="runs/dsgd_topologies", type=directory)
    args = p.parse_args(argv)
    if args.skip_vm and args.skip_lsq:
        p.error("--skip-vm and --skip-lsq together leave nothing to run.")
    agents, out = args.agents, Path(args.out)
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
        vm = vm_study(agents, args.topologies, args, out)
    lsq = None
    if not args.skip_lsq:
        lsq = least_squares_study(n=args.lsq_agents, steps=args.lsq_steps, seed=args.seed)
        plot_lsq(lsq, out / "least_squares.png")
    write_results(out, vm, lsq, args)
    print(report(vm, lsq, args))


if __name__ == "__main__":
    sys.exit(main())
