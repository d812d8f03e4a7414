"""The PDE domain study: train an implicit FNO and explicit FNOs, sweep test-time iterations, report.

``STUDY`` is the domain's :class:`~implicit_rec.domains.study.Study` (``python -m implicit_rec.domains
pde``): ``run(config)`` returns a :class:`~implicit_rec.domains.study.Result` (JSON-ready metrics and
the arrays of the example panel), ``report`` the markdown, ``plots`` the PNGs. Metric: relative L2
error ||u_hat - u|| / ||u|| per test sample, averaged. Model selection (best epoch) uses the
validation split only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import solvers

from ..atomic import atomic_path
from ..layers import SolverConfig
from ..params import count_params
from ..sweep_core import DEFAULT_ITERATIONS, SweepRow, plot_sweep, sweep_rows, sweep_table
from ..tables import markdown_table
from . import pde
from ._checks import check_fields, choice, integer, iteration_counts, number, optional
from .fourier import ExplicitFNO, ImplicitFNO
from .study import Result, Study


@dataclasses.dataclass(frozen=True)
class PDEStudyConfig:
    """Data, model, training and sweep settings of one PDE study (presets in :data:`PRESETS`).

    Data (:meth:`data_config`, a :class:`pde.PDEConfig`): n grid size, sigma_a, f_scale, tau, alpha,
    n_train / n_valid / n_test; seed seeds the data and the models.
    width / modes / hidden: FNO channels, kept Fourier modes per axis, readout MLP width;
    wide_width: channels of the wider explicit FNO; deep_depth: layers of the deeper one;
    gamma: contraction bound of the implicit block (None: unconstrained, selected on the
    validation split over 0.9, see the README notes); train/eval_max_iter, train/eval_tol:
    Anderson settings; grad: "ift" or "phantom"; epochs, batch_size, learning_rate: Adam
    with cosine decay and global-norm clipping 1; iterations: sweep iteration counts;
    lipschitz_examples / lipschitz_perturbations / lipschitz_scale: test samples B, perturbations
    P per sample and their RMS size (GRF-shaped perturbations of both input channels).
    """

    n: int = 32
    sigma_a: float = 0.6
    f_scale: float = 200.0
    tau: float = 3.0
    alpha: float = 2.0
    n_train: int = 1000
    n_valid: int = 100
    n_test: int = 200
    seed: int = 0
    width: int = 16
    modes: int = 8
    hidden: int = 64
    wide_width: int = 32
    deep_depth: int = 4
    gamma: float | None = None
    train_max_iter: int = 24
    train_tol: float = 1e-3
    eval_max_iter: int = 64
    eval_tol: float = 1e-5
    grad: str = "ift"
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 3e-3
    iterations: tuple = DEFAULT_ITERATIONS
    lipschitz_examples: int = 32
    lipschitz_perturbations: int = 4
    lipschitz_scale: float = 0.05

    def __post_init__(self):
        check_fields(self, _STUDY_CHECKS)
        self.data_config()  # the data checks (n even, ...)

    def data_config(self) -> pde.PDEConfig:
        """The data-set settings (their hash names the cache file)."""
        names = [f.name for f in dataclasses.fields(pde.PDEConfig)]
        return pde.PDEConfig(**{name: getattr(self, name) for name in names})


GRADS = ("ift", "phantom")
_STUDY_CHECKS = {
    **{name: (lambda name_, value: value) for name in ("n", "sigma_a", "f_scale", "tau", "alpha")},
    "n_train": integer(1),
    "n_valid": integer(1),
    "n_test": integer(1),
    "seed": integer(0),
    "width": integer(1),
    "modes": integer(1),
    "hidden": integer(1),
    "wide_width": integer(1),
    "deep_depth": integer(1),
    "gamma": optional(number(0.0, high=1.0, high_inclusive=False)),
    "train_max_iter": integer(1),
    "train_tol": number(0.0),
    "eval_max_iter": integer(1),
    "eval_tol": number(0.0),
    "grad": choice(*GRADS),
    "epochs": integer(1),
    "batch_size": integer(1),
    "learning_rate": number(0.0),
    "iterations": iteration_counts,
    "lipschitz_examples": integer(1),
    "lipschitz_perturbations": integer(1),
    "lipschitz_scale": number(0.0),
}


PRESETS = {
    "tiny": PDEStudyConfig(
        n=16,
        n_train=48,
        n_valid=16,
        n_test=16,
        width=6,
        modes=4,
        hidden=16,
        wide_width=10,
        deep_depth=2,
        train_max_iter=12,
        eval_max_iter=16,
        epochs=3,
        batch_size=16,
        iterations=(0, 1, 2, 4, 8, 16),
        lipschitz_examples=4,
        lipschitz_perturbations=2,
    ),
    "default": PDEStudyConfig(),
    # ablation: the default with a contractive implicit block (unique fixed point guaranteed)
    "contractive": PDEStudyConfig(gamma=0.9),
}


def relative_l2(pred: jax.Array, true: jax.Array) -> jax.Array:
    """Per-sample ||pred - true|| / ||true|| over the grid, (B, n, n) -> (B,)."""
    axes = tuple(range(1, true.ndim))
    return jnp.sqrt(jnp.sum((pred - true) ** 2, axis=axes) / jnp.sum(true**2, axis=axes))


def build_models(cfg: PDEStudyConfig) -> dict:
    """name -> (model, depth): the implicit FNO and the explicit FNOs (equal params, deeper, wider)."""
    n, seed, common = cfg.n, cfg.seed, dict(c_in=2, modes=cfg.modes, hidden=cfg.hidden)
    train = SolverConfig(max_iter=cfg.train_max_iter, tol=cfg.train_tol, grad=cfg.grad)
    evals = SolverConfig(max_iter=cfg.eval_max_iter, tol=cfg.eval_tol)
    return {
        "implicit FNO": (
            ImplicitFNO(
                n,
                width=cfg.width,
                rngs=nnx.Rngs(seed),
                gamma=cfg.gamma,
                train_solver=train,
                eval_solver=evals,
                **common,
            ),
            None,
        ),
        "FNO-1 (equal params)": (ExplicitFNO(n, width=cfg.width, rngs=nnx.Rngs(seed), **common), 1),
        f"FNO-{cfg.deep_depth} (deeper)": (
            ExplicitFNO(n, width=cfg.width, depth=cfg.deep_depth, rngs=nnx.Rngs(seed), **common),
            cfg.deep_depth,
        ),
        f"FNO-1 wide (width {cfg.wide_width})": (
            ExplicitFNO(n, width=cfg.wide_width, rngs=nnx.Rngs(seed), **common),
            1,
        ),
    }


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@nnx.jit
def _predict(model, x):
    return model(x)[0]


EVAL_CHUNK = 100


def predict(model: nnx.Module, x: np.ndarray, chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Predictions (B, n, n) of ``model`` (eval mode) in chunks of ``min(chunk, B)`` samples, the last one
    padded with copies of its first sample: one compiled program for every chunk. Samples are solved
    independently (the solver freezes each converged row), so the padding does not change the others."""
    model.eval()
    size = min(chunk, len(x))
    out = []
    for s in _chunks(len(x), size):
        idx = np.arange(s.start, s.start + size)
        out.append(np.asarray(_predict(model, jnp.asarray(x[np.where(idx < len(x), idx, s.start)]))))
    return np.concatenate(out)[: len(x)]


def evaluate(model: nnx.Module, x: np.ndarray, u: np.ndarray, chunk: int = EVAL_CHUNK) -> float:
    """Mean relative L2 error of ``model`` (eval mode) on (x, u)."""
    return float(jnp.mean(relative_l2(jnp.asarray(predict(model, x, chunk)), jnp.asarray(u))))


@nnx.jit
def _train_step(model: nnx.Module, opt: nnx.Optimizer, xb: jax.Array, ub: jax.Array):
    """One Adam step on the mean relative L2 loss of a batch: (loss, mean solver steps)."""

    def loss_fn(model):
        pred, info = model(xb)
        nstep = jnp.zeros(()) if info is None else info.mean_nstep
        return jnp.mean(relative_l2(pred, ub)), nstep

    (loss, nstep), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    opt.update(model, grads)
    return loss, nstep


def fit(model: nnx.Module, data: dict, cfg: PDEStudyConfig, log: Callable[[str], None] | None = None) -> dict:
    """Adam on the mean relative L2 loss; restores the epoch with the best validation error."""
    x, u = data["x_train"], data["u_train"]
    steps_per_epoch = max(1, len(x) // cfg.batch_size)
    schedule = optax.cosine_decay_schedule(cfg.learning_rate, cfg.epochs * steps_per_epoch)
    opt = nnx.Optimizer(model, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule)), wrt=nnx.Param)

    rng = np.random.default_rng(cfg.seed)
    best, best_state, history, start = np.inf, None, [], time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(x))
        out = [
            _train_step(model, opt, jnp.asarray(x[idx]), jnp.asarray(u[idx]))
            for idx in (order[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(steps_per_epoch))
        ]
        losses, nsteps = np.asarray(out, dtype=float).T
        valid = evaluate(model, data["x_valid"], data["u_valid"])
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "valid_rel_l2": valid,
                "mean_solver_steps": float(np.mean(nsteps)),
            }
        )
        if log is not None:
            log(
                f"  epoch {epoch + 1:3d}  train {np.mean(losses):.4f}  valid {valid:.4f}  "
                f"solver steps {np.mean(nsteps):.1f}  ({time.perf_counter() - start:.0f}s)"
            )
        if valid < best:
            best, best_state = valid, jax.tree.map(jnp.array, nnx.state(model))
    nnx.update(model, best_state)
    model.eval()
    return {
        "history": history,
        "valid_rel_l2": best,
        "steps": cfg.epochs * steps_per_epoch,
        "train_seconds": time.perf_counter() - start,
    }


# -- test-time-iteration sweep ----------------------------------------------------------------------
def _trajectory(model: ImplicitFNO, x: jax.Array, steps: int, residual: bool = False):
    """Predictions (steps+1, B, n, n) after k = 0..steps eval-solver iterations from z = 0
    (and the relative residual ||f(z_k) - z_k|| / ||f(z_k)||, (steps+1, B), if ``residual``)."""
    layer, cfg = model.layer, model.layer.eval_solver
    ctx = layer.cell.prepare(x)
    f = lambda z, ctx: layer.cell(z, ctx)  # noqa: E731

    def readout(z):
        pred = model.readout(z)
        if not residual:
            return pred
        fz = f(z, ctx)
        return pred, jnp.linalg.norm(fz - z, axis=-1) / (jnp.linalg.norm(fz, axis=-1) + 1e-12)

    z0 = jnp.zeros((x.shape[0], layer.d_state), x.dtype)
    return solvers.iterate(
        f,
        z0,
        ctx,
        steps=steps,
        method=cfg.method,
        readout=readout,
        tol=cfg.tol,
        stop=cfg.stop,
        damping=cfg.damping,
        memory=cfg.memory,
        ridge=cfg.ridge,
    )


@nnx.jit(static_argnums=(2,))
def _sweep_errors(model, xu, steps):
    x, u = xu
    preds, res = _trajectory(model, x, steps, residual=True)
    return jax.vmap(lambda p: relative_l2(p, u))(preds), res


@nnx.jit(static_argnums=(3,))
def _sweep_lipschitz(model, x, deltas, steps):
    est = solvers.empirical_lipschitz(lambda xx: _trajectory(model, xx, steps), x, deltas, readout_axis=0, stacked=True)
    return est.max, est.mean


@nnx.jit
def _explicit_lipschitz(model, x, deltas):
    est = solvers.empirical_lipschitz(lambda xx: model(xx)[0], x, deltas)
    return est.max, est.mean


def perturbations(cfg: PDEStudyConfig, count: int) -> np.ndarray:
    """P GRF-shaped perturbations of ``count`` inputs, (P, count, n, n, 2), RMS ``lipschitz_scale``
    (drawn like the inputs: the phi channel has mean zero)."""
    data_cfg = cfg.data_config()
    rng = np.random.default_rng(data_cfg.seed + 10_000)
    p = cfg.lipschitz_perturbations
    d = np.stack(
        [
            pde.grf(rng, p * count, data_cfg.n, data_cfg.tau, data_cfg.alpha, zero_mean=zero_mean)
            for zero_mean in (False, True)
        ],
        -1,
    )
    return (cfg.lipschitz_scale * d).reshape(p, count, data_cfg.n, data_cfg.n, 2).astype(np.float32)


def reference_lipschitz(data_cfg: pde.PDEConfig, x: np.ndarray, deltas: np.ndarray) -> dict:
    """Empirical Lipschitz (max, mean) of the true solution map (reference solver) on the same perturbations."""
    base = pde.solution_map(x, data_cfg)
    ratios = [
        np.linalg.norm((pde.solution_map(x + d, data_cfg) - base).reshape(len(x), -1), axis=1)
        / np.linalg.norm(d.reshape(len(x), -1).astype(np.float64), axis=1)
        for d in deltas
    ]
    return {"lipschitz_max": float(np.max(ratios)), "lipschitz_mean": float(np.mean(ratios))}


def iteration_sweep(
    model: ImplicitFNO, data: dict, cfg: PDEStudyConfig, deltas: np.ndarray, chunk: int = 50
) -> list[SweepRow]:
    """Sweep rows (iterations, error, residual, converged_fraction, lipschitz_max, lipschitz_mean)."""
    ks = cfg.iterations
    steps = ks[-1]
    model.eval()
    x, u = data["x_test"], data["u_test"]
    errs, res = zip(
        *[_sweep_errors(model, (jnp.asarray(x[s]), jnp.asarray(u[s])), steps) for s in _chunks(len(x), chunk)]
    )
    errs, res = np.concatenate(errs, axis=1), np.concatenate(res, axis=1)  # (steps+1, B)
    xl = jnp.asarray(x[: cfg.lipschitz_examples])
    lmax, lmean = _sweep_lipschitz(model, xl, jnp.asarray(deltas), steps)
    idx = np.asarray(ks)
    return sweep_rows(
        ks,
        {"error": errs.mean(axis=1)[idx]},
        residual=res[idx].mean(axis=1),
        converged_fraction=(res[idx] <= cfg.eval_tol).mean(axis=1),
        lipschitz_max=np.asarray(lmax)[idx],
        lipschitz_mean=np.asarray(lmean)[idx],
    )


# -- the whole study --------------------------------------------------------------------------------
def run(
    cfg: PDEStudyConfig, *, cache_dir: str | Path | None = None, log: Callable[[str], None] | None = None
) -> Result:
    """Data, training of every model, sweep, Lipschitz estimates: the metrics and the example panel."""
    data_cfg = cfg.data_config()
    log = log or (lambda _: None)
    t0, cpu0 = time.perf_counter(), time.process_time()
    data = pde.make_dataset(data_cfg, cache_dir)
    t_data = time.perf_counter() - t0
    log(
        f"data: {data_cfg.n_train}/{data_cfg.n_valid}/{data_cfg.n_test} samples on a {data_cfg.n}^2 grid "
        f"({t_data:.1f}s, solver residual <= {data['residual_max']:.1e})"
    )
    deltas = perturbations(cfg, cfg.lipschitz_examples)
    x_lip = data["x_test"][: cfg.lipschitz_examples]
    models, results = build_models(cfg), {}
    for name, (model, depth) in models.items():
        log(f"{name}: {count_params(model):,} params")
        train = fit(model, data, cfg, log=log)
        lmax, lmean = (None, None)
        if depth is not None:
            lmax, lmean = (float(v) for v in _explicit_lipschitz(model, jnp.asarray(x_lip), jnp.asarray(deltas)))
        results[name] = {
            "params": count_params(model),
            "depth": depth,
            "test_rel_l2": evaluate(model, data["x_test"], data["u_test"]),
            "valid_rel_l2": train["valid_rel_l2"],
            "lipschitz_max": lmax,
            "lipschitz_mean": lmean,
            "steps": train["steps"],
            "train_seconds": train["train_seconds"],
            "history": train["history"],
        }
        log(f"  test rel L2 {results[name]['test_rel_l2']:.4f}")
    implicit = models["implicit FNO"][0]
    t1 = time.perf_counter()
    rows = iteration_sweep(implicit, data, cfg, deltas)
    reference = reference_lipschitz(data_cfg, x_lip, deltas)
    t_sweep = time.perf_counter() - t1
    results["implicit FNO"]["depth"] = cfg.eval_max_iter
    results["implicit FNO"]["lipschitz_max"] = rows[-1].lipschitz_max
    results["implicit FNO"]["lipschitz_mean"] = rows[-1].lipschitz_mean
    example = {
        "x": data["x_test"][0],
        "u": data["u_test"][0],
        "pred": predict(implicit, data["x_test"][:EVAL_CHUNK])[0],  # the shape evaluate compiled
    }
    metrics = {
        "config": dataclasses.asdict(cfg),
        "dataset": {
            "grid": data_cfg.n,
            "n_train": data_cfg.n_train,
            "n_valid": data_cfg.n_valid,
            "n_test": data_cfg.n_test,
            "solver_residual_max": data["residual_max"],
            "cache_key": data["key"],
        },
        "models": results,
        "sweep": [r.to_dict() for r in rows],
        "reference_solver": reference,
        "timing": {
            "data_seconds": t_data,
            "sweep_seconds": t_sweep,
            "total_seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - cpu0,
        },
    }
    return Result(metrics, example)


# -- outputs ----------------------------------------------------------------------------------------
def _baselines(result: dict, key: str) -> dict:
    return {
        name: (m["depth"], m[key])
        for name, m in result["models"].items()
        if name != "implicit FNO" and m[key] is not None
    }


def report(result: Result) -> str:
    """Markdown: model table (params, test error, Lipschitz) and the sweep table."""
    m = result.metrics
    ref = m["reference_solver"]
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    models = [
        [name, f"{r['params']:,}", r["depth"], f"{r['test_rel_l2']:.4f}", f"{r['valid_rel_l2']:.4f}"]
        + [fmt(r["lipschitz_max"]), fmt(r["lipschitz_mean"])]
        for name, r in m["models"].items()
    ]
    models.append(
        ["reference solver (true map)", "-", "-", 0, 0, fmt(ref["lipschitz_max"]), fmt(ref["lipschitz_mean"])]
    )
    header = [
        "model",
        "params",
        "depth / iterations",
        "test rel. L2",
        "valid rel. L2",
        "Lipschitz max",
        "Lipschitz mean",
    ]
    t = m["timing"]
    lines = [
        "# Steady nonlinear PDE: implicit vs explicit FNO",
        "",
        "-div(a grad u) + u + u^3 = f on a periodic {0}x{0} grid; input (log a / sigma_a, f / f_scale); "
        "test relative L2 error.".format(m["dataset"]["grid"]),
        "",
        markdown_table(header, models),
        "",
        "## Implicit FNO against test-time iterations k",
        "",
        sweep_table(
            m["sweep"],
            {
                "error": "test rel. L2",
                "lipschitz_max": "Lipschitz max",
                "lipschitz_mean": "Lipschitz mean",
                "residual": "residual",
                "converged_fraction": "converged",
            },
            formats={"error": ".4f", "residual": ".2e", "converged_fraction": ".2f"},
        ),
        "",
        f"Wall time {t['total_seconds']:.0f}s (data {t['data_seconds']:.0f}s, "
        f"sweep {t['sweep_seconds']:.0f}s); process CPU time {t['cpu_seconds']:.0f}s.",
    ]
    return "\n".join(lines) + "\n"


def _plot_lipschitz(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, style in (("lipschitz_max", "o-"), ("lipschitz_mean", "s--")):
        rows = result["sweep"]
        ax.plot([r["iterations"] for r in rows], [r[key] for r in rows], style, label=f"implicit ({key[10:]})")
    for i, (name, (depth, value)) in enumerate(_baselines(result, "lipschitz_max").items()):
        ax.scatter([depth], [value], marker="*^Dv"[i % 4], s=90, zorder=3, label=f"{name} (max)")
    ref = result["reference_solver"]["lipschitz_max"]
    ax.axhline(ref, color="k", linestyle=":", label="reference solver (max)")
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xlim(left=-0.3)
    ax.set_xlabel("iterations k")
    ax.set_ylabel("empirical Lipschitz constant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _plot_example(example: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("input xi (log a)", example["x"][..., 0]),
        ("input phi (f)", example["x"][..., 1]),
        ("implicit FNO", example["pred"]),
        ("reference solution", example["u"]),
        ("error", example["pred"] - example["u"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
    for ax, (title, img) in zip(axes, panels):
        im = ax.imshow(np.asarray(img).T, origin="lower", cmap="RdBu_r" if title == "error" else "viridis")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


PLOTS = ("error_vs_iterations.png", "lipschitz_vs_iterations.png", "example.png")


def plots(result: Result, out) -> list[str]:
    """:data:`PLOTS` in the directory ``out``: error and Lipschitz constant against k, an example."""
    metrics, out = result.metrics, Path(out)
    plot_sweep(
        {"implicit FNO": metrics["sweep"]},
        out / PLOTS[0],
        column="error",
        ylabel="test relative L2 error",
        baselines=_baselines(metrics, "test_rel_l2"),
        logy=True,
        title="PDE: error vs test-time iterations",
    )
    _plot_lipschitz(metrics, out / PLOTS[1])
    _plot_example(result.arrays, out / PLOTS[2])
    return list(PLOTS)


STUDY = Study("pde", PDEStudyConfig, PRESETS, run, report, plots)
