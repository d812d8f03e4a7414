"""Linear programs: implicit vs explicit GNN on random LPs, and the test-time-iteration sweep.

Pipeline (:func:`run`): generate (or load cached) LPs with HiGHS labels (``lp_data``),
hold out a validation split of the training LPs, train for each embedding size d an
:class:`~implicit_rec.domains.gnn.ImplicitGNN` and an
:class:`~implicit_rec.domains.gnn.ExplicitGNN` (depth 4, same width; optionally a
second one narrowed to the implicit model's parameter count) with Adam, keep the
parameters with the best validation error, then on the test set report

    error(ŷ) = mean_b ||ŷ_b - y*_b|| / (||y*_b|| + 1)            (original units)

and, for the implicit models, the error and empirical Lipschitz constant after
k = 0, 1, 2, 4, ... solver iterations (``iterations``; Anderson as in evaluation by default,
so the last k reproduces the fixed point, or Picard). Model inputs are scaled:
c / c_scale, and b, l, u, ŷ, y* / bound_std; the Lipschitz
constants are measured in these units, perturbing A's nonzeros, b, c, l, u by
``lipschitz_scale`` relative noise (delta = eps |x| xi, xi ~ N(0, 1)).

``STUDY`` is the domain's :class:`~implicit_rec.domains.study.Study` (``python -m implicit_rec.domains lp``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import solvers

from ..params import count_params
from ..sweep_core import DEFAULT_ITERATIONS, SweepRow, plot_sweep, sweep_rows, sweep_table
from ..tables import markdown_table
from . import gnn, lp_data
from ._checks import boolean, check_fields, choice, instance, integer, integers, iteration_counts, number
from .study import Result, Study

PAPER = {"dims": [4, 8, 16, 32], "explicit": [0.397, 0.273, 0.283, 0.318], "implicit": [0.218, 0.177, 0.152, 0.156]}
PERTURBED = ("A", "b", "c", "l", "u")


@dataclasses.dataclass(frozen=True)
class LPConfig:
    """Everything the LP experiment depends on (presets in :data:`PRESETS`)."""

    n_train: int = 2500  # solved training LPs, validation split included
    n_test: int = 1000
    val_fraction: float = 0.1
    dims: tuple = (4, 8, 16, 32)
    depth: int = 4  # explicit GNN layers
    gamma_self: float = 0.1  # spectral norm of the implicit block's self weights
    gamma_msg: float = 0.89  # ... and of its message weights (sum < 1: contraction without feedback)
    feedback: bool = True  # feed features of the current estimate ŷ (A ŷ - b, box slack) into each block
    matched_explicit: bool = True  # also train an explicit GNN narrowed to the implicit parameter count
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3
    eval_every: int = 2
    train_max_iter: int = 30  # Anderson iterations in training (IFT backward)
    eval_max_iter: int = 60
    iterations: tuple = DEFAULT_ITERATIONS
    sweep_method: str = "anderson"  # iterations of the sweep: the eval solver's method, or "picard"
    lipschitz_examples: int = 200  # test LPs for the Lipschitz estimate
    lipschitz_perturbations: int = 8
    lipschitz_scale: float = 1e-2
    spec: lp_data.LPSpec = lp_data.LPSpec()
    seed: int = 0

    def __post_init__(self):
        check_fields(self, _LP_CHECKS)
        n_val = max(1, int(round(self.val_fraction * self.n_train)))
        if n_val >= self.n_train:
            raise ValueError(
                f"LPConfig.val_fraction={self.val_fraction} holds out {n_val} of n_train="
                f"{self.n_train} LPs, leaving no training LPs; lower val_fraction or raise n_train."
            )
        if self.lipschitz_examples > self.n_test:
            raise ValueError(
                f"LPConfig.lipschitz_examples={self.lipschitz_examples} exceeds n_test={self.n_test}: the "
                "Lipschitz estimate uses test LPs; lower lipschitz_examples or raise n_test."
            )


SWEEP_METHODS = ("anderson", "picard")
_OPEN_UNIT = number(0.0, high=1.0, high_inclusive=False)
_LP_CHECKS = {
    "n_train": integer(2),
    "n_test": integer(1),
    "val_fraction": _OPEN_UNIT,
    "dims": integers(1),
    "depth": integer(1),
    "gamma_self": _OPEN_UNIT,
    "gamma_msg": _OPEN_UNIT,
    "feedback": boolean,
    "matched_explicit": boolean,
    "epochs": integer(1),
    "batch_size": integer(1),
    "learning_rate": number(0.0),
    "eval_every": integer(1),
    "train_max_iter": integer(1),
    "eval_max_iter": integer(1),
    "iterations": iteration_counts,
    "sweep_method": choice(*SWEEP_METHODS),
    "lipschitz_examples": integer(1),
    "lipschitz_perturbations": integer(1),
    "lipschitz_scale": number(0.0),
    "spec": instance(lp_data.LPSpec),
    "seed": integer(0),
}


PRESETS = {
    # tiny: n_val = n_test = (lipschitz_perturbations + 1) * lipschitz_examples: one compiled forward serves all
    "tiny": LPConfig(
        n_train=24,
        n_test=8,
        val_fraction=1 / 3,
        dims=(4, 8),
        epochs=2,
        batch_size=8,
        eval_every=2,
        train_max_iter=8,
        eval_max_iter=20,
        iterations=(0, 1, 2, 4),
        lipschitz_examples=4,
        lipschitz_perturbations=1,
        matched_explicit=False,
    ),
    "default": LPConfig(),
}


# -- data ----------------------------------------------------------------------------------------
def to_inputs(data: dict, spec: lp_data.LPSpec, dtype=jnp.float32) -> tuple[dict, jax.Array]:
    """Raw LP arrays (``lp_data.FIELDS``) -> (model input dict, target y* / bound_std (B, n)).

    Inputs: A, eq as they are; b, l, u, y* divided by bound_std (so A y = b still holds); c / c_scale.
    """
    x = {
        "A": data["A"],
        "b": data["b"] / spec.bound_std,
        "eq": data["eq"].astype(float),
        "c": data["c"] / spec.c_scale,
        "l": data["l"] / spec.bound_std,
        "u": data["u"] / spec.bound_std,
    }
    return ({k: jnp.asarray(v, dtype) for k, v in x.items()}, jnp.asarray(data["y"] / spec.bound_std, dtype))


def take(x, idx):
    return jax.tree.map(lambda a: a[idx], x)


def relative_error(y_hat: jax.Array, y: jax.Array, scale: float) -> jax.Array:
    """Per instance ||ŷ - y|| / (||y|| + 1) in original units (inputs scaled by 1 / scale), shape (B,)."""
    return (scale * jnp.linalg.norm(y_hat - y, axis=-1)) / (scale * jnp.linalg.norm(y, axis=-1) + 1.0)


def greedy_box_baseline(data: dict) -> np.ndarray:
    """x_j = l_j if c_j > 0 else u_j: the optimum when the constraints are dropped, shape (B, n)."""
    return np.where(data["c"] > 0, data["l"], data["u"])


# -- models --------------------------------------------------------------------------------------
def build(kind: str, d: int, cfg: LPConfig, seed: int) -> nnx.Module:
    """``"implicit"`` or ``"explicit"`` GNN of embedding size d."""
    rngs = nnx.Rngs(seed)
    if kind == "implicit":
        from implicit_rec.layers import SolverConfig

        return gnn.ImplicitGNN(
            d,
            cfg.spec.m,
            cfg.spec.n,
            rngs=rngs,
            gamma_self=cfg.gamma_self,
            gamma_msg=cfg.gamma_msg,
            feedback=cfg.feedback,
            train_solver=SolverConfig(max_iter=cfg.train_max_iter, tol=1e-4),
            eval_solver=SolverConfig(max_iter=cfg.eval_max_iter, tol=1e-5),
        )
    if kind == "explicit":
        return gnn.ExplicitGNN(d, rngs=rngs, depth=cfg.depth, feedback=cfg.feedback)
    raise ValueError(f"kind={kind!r} is not known; choose 'implicit' or 'explicit'.")


def matched_width(target_params: int, cfg: LPConfig) -> int:
    """Largest explicit width whose parameter count does not exceed ``target_params`` (at least 1).

    The candidates are built abstractly (``nnx.eval_shape``): nothing is drawn or compiled.
    """
    best = 1
    for d in range(1, 257):
        if count_params(nnx.eval_shape(lambda d=d: build("explicit", d, cfg, 0))) > target_params:
            break
        best = d
    return best


@nnx.jit
def _forward(model: nnx.Module, x: dict):
    return model(x)


def eval_batch(cfg: LPConfig) -> int:
    """The chunk size of :func:`predict` in a study: the validation set in one chunk (at most 500), so
    validation and test share one compiled forward per model."""
    return min(500, max(1, int(round(cfg.val_fraction * cfg.n_train))))


def _padded(x: dict, start: int, batch: int) -> dict:
    """Rows start..start+batch of x; a short last chunk is padded with copies of its first row, so
    every chunk has one shape (one compiled program). Rows are solved independently (the solver
    freezes each converged row), so the padding does not change the real rows."""
    idx = np.arange(start, start + batch)
    return take(x, np.where(idx < x["A"].shape[0], idx, start))


def predict(model: nnx.Module, x: dict, batch: int = 500, with_info: bool = False):
    """ŷ (B, n) in evaluation mode, in chunks of ``batch`` rows (the last one padded to ``batch``);
    with_info: also the implicit model's solver summary {"converged_fraction", "mean_nstep"} (None for
    an explicit model)."""
    model.eval()
    total = x["A"].shape[0]
    batch = min(batch, total)
    outs = [_forward(model, _padded(x, s, batch)) for s in range(0, total, batch)]
    y_hat = jnp.concatenate([o[0] for o in outs])[:total]
    if not with_info:
        return y_hat
    if outs[0][1] is None:
        return y_hat, None
    conv = jnp.concatenate([o[1].converged for o in outs])[:total].astype(float)
    nstep = jnp.concatenate([o[1].nstep for o in outs])[:total].astype(float)
    return y_hat, {"converged_fraction": float(jnp.mean(conv)), "mean_nstep": float(jnp.mean(nstep))}


@nnx.jit
def _train_step(model: nnx.Module, opt: nnx.Optimizer, xb: dict, yb: jax.Array, scale: float) -> jax.Array:
    """One Adam step on the mean relative error of a batch."""
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(relative_error(m(xb)[0], yb, scale)))(model)
    opt.update(model, grads)
    return loss


def train(
    model: nnx.Module,
    x_tr: dict,
    y_tr: jax.Array,
    x_va: dict,
    y_va: jax.Array,
    cfg: LPConfig,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Adam on the mean relative error; restores the parameters of the best validation error."""
    scale = cfg.spec.bound_std
    size = y_tr.shape[0]
    bsz = min(cfg.batch_size, size)
    steps_per_epoch = size // bsz
    schedule = optax.cosine_decay_schedule(cfg.learning_rate, max(1, cfg.epochs * steps_per_epoch), 0.05)
    opt = nnx.Optimizer(model, optax.adam(schedule), wrt=nnx.Param)

    rng = np.random.default_rng(cfg.seed)
    best, best_state, history = np.inf, None, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(size)
        losses = [
            float(_train_step(model, opt, take(x_tr, order[i : i + bsz]), y_tr[order[i : i + bsz]], scale))
            for i in range(0, steps_per_epoch * bsz, bsz)
        ]
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            val = float(jnp.mean(relative_error(predict(model, x_va, eval_batch(cfg)), y_va, scale)))
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_error": val})
            log(f"    epoch {epoch:3d}  train {np.mean(losses):.4f}  val {val:.4f}")
            if val < best:
                best, best_state = val, jax.tree.map(jnp.array, nnx.state(model))
    nnx.update(model, best_state)
    model.eval()
    return {"history": history, "best_val_error": best}


# -- sweep ---------------------------------------------------------------------------------------
def perturbations(x: dict, count: int, eps: float, key: jax.Array) -> dict:
    """``count`` relative perturbations of A's nonzeros, b, c, l, u (eq untouched): leaves (P,) + shape."""
    keys = jax.random.split(key, len(PERTURBED))
    out = {}
    for k, name in zip(keys, PERTURBED):
        xi = jax.random.normal(k, (count,) + x[name].shape, x[name].dtype)
        out[name] = eps * jnp.abs(x[name])[None] * xi
    out["eq"] = jnp.zeros((count,) + x["eq"].shape, x["eq"].dtype)
    return out


@nnx.jit(static_argnums=(2, 3))
def _trajectory(model: gnn.ImplicitGNN, x: dict, iterations: tuple, method: str) -> jax.Array:
    """ŷ after k solver iterations for every k in ``iterations``, shape (len(iterations), B, n)."""
    return model.trajectory(x, iterations[-1], method=method)[jnp.asarray(iterations)]


@nnx.jit(static_argnums=(3, 4))
def _trajectory_lipschitz(model: gnn.ImplicitGNN, x: dict, deltas: dict, iterations: tuple, method: str):
    est = solvers.empirical_lipschitz(
        lambda v: model.trajectory(v, iterations[-1], method=method)[jnp.asarray(iterations)],
        x,
        deltas,
        readout_axis=0,
        stacked=True,
    )
    return est.max, est.mean


@nnx.jit
def _explicit_lipschitz(model: nnx.Module, x: dict, deltas: dict):
    est = solvers.empirical_lipschitz(lambda v: model(v)[0], x, deltas, stacked=True)
    return est.max, est.mean


def lipschitz_inputs(x_te: dict, cfg: LPConfig) -> tuple[dict, dict]:
    """The test LPs of the Lipschitz estimate and their perturbations (the same for every model)."""
    x_lip = take(x_te, slice(0, cfg.lipschitz_examples))
    return x_lip, perturbations(
        x_lip, cfg.lipschitz_perturbations, cfg.lipschitz_scale, jax.random.PRNGKey(cfg.seed + 7)
    )


def sweep_implicit(model: gnn.ImplicitGNN, x_te: dict, y_te: jax.Array, cfg: LPConfig) -> list[SweepRow]:
    """Rows (iterations, error, lipschitz_max, lipschitz_mean) on the test set, one trajectory pass each."""
    model.eval()
    out = _trajectory(model, x_te, cfg.iterations, cfg.sweep_method)
    errors = jnp.mean(jax.vmap(lambda o: relative_error(o, y_te, cfg.spec.bound_std))(out), axis=1)
    lmax, lmean = _trajectory_lipschitz(model, *lipschitz_inputs(x_te, cfg), cfg.iterations, cfg.sweep_method)
    return sweep_rows(cfg.iterations, {"error": errors}, lipschitz_max=lmax, lipschitz_mean=lmean)


def explicit_lipschitz(model: nnx.Module, x_te: dict, cfg: LPConfig) -> tuple[float, float]:
    """(max, mean) ``solvers.empirical_lipschitz`` of a (non-iterative) model's ŷ, the sweep's perturbations."""
    model.eval()
    return tuple(float(v) for v in _explicit_lipschitz(model, *lipschitz_inputs(x_te, cfg)))


def _fit_and_evaluate(kind: str, width: int, splits: tuple, cfg: LPConfig, log: Callable) -> dict:
    """Train one model and evaluate it on the test set (the implicit one with its sweep)."""
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits
    model = build("implicit" if kind == "implicit" else "explicit", width, cfg, cfg.seed)
    params = count_params(model)
    log(f"  {kind} width {width} ({params:,} params)")
    t0 = time.perf_counter()
    fit = train(model, x_tr, y_tr, x_va, y_va, cfg, log)
    t_train = time.perf_counter() - t0
    y_hat, solver = predict(model, x_te, eval_batch(cfg), with_info=True)
    test_err = float(jnp.mean(relative_error(y_hat, y_te, cfg.spec.bound_std)))
    entry = {
        "width": width,
        "params": params,
        "test_error": test_err,
        "best_val_error": fit["best_val_error"],
        "train_seconds": t_train,
        "history": fit["history"],
    }
    t0 = time.perf_counter()
    if kind == "implicit":
        entry.update(solver, sweep=sweep_implicit(model, x_te, y_te, cfg))
    else:
        lmax, lmean = explicit_lipschitz(model, x_te, cfg)
        entry.update(depth=cfg.depth, lipschitz_max=lmax, lipschitz_mean=lmean)
    entry["eval_seconds"] = time.perf_counter() - t0
    log(f"    test error {test_err:.4f}  ({t_train:.0f}s training)")
    return entry


# -- the experiment ------------------------------------------------------------------------------
def run(cfg: LPConfig, *, cache_dir: str | None = None, log: Callable[[str], None] = print) -> Result:
    """Train and evaluate every model of ``cfg``; the metrics are JSON-ready (sweep rows as dicts)."""
    t_start = time.perf_counter()
    spec, scale = cfg.spec, cfg.spec.bound_std
    train_raw, train_draws = lp_data.load_or_generate(cfg.n_train, 2 * cfg.seed, spec, cache_dir)
    test_raw, test_draws = lp_data.load_or_generate(cfg.n_test, 2 * cfg.seed + 1, spec, cache_dir)
    t_data = time.perf_counter() - t_start
    n_val = max(1, int(round(cfg.val_fraction * cfg.n_train)))
    x_all, y_all = to_inputs(train_raw, spec)
    perm = np.random.default_rng(cfg.seed).permutation(cfg.n_train)
    x_va, y_va = take(x_all, perm[:n_val]), y_all[perm[:n_val]]
    x_tr, y_tr = take(x_all, perm[n_val:]), y_all[perm[n_val:]]
    x_te, y_te = to_inputs(test_raw, spec)
    log(
        f"LPs: {cfg.n_train - n_val} train / {n_val} val / {cfg.n_test} test "
        f"({cfg.n_train + cfg.n_test} solved of {train_draws + test_draws} draws, {t_data:.1f}s)"
    )
    greedy = float(jnp.mean(relative_error(jnp.asarray(greedy_box_baseline(test_raw)) / scale, y_te, scale)))

    models, sweeps, timing = {"implicit": {}, "explicit": {}}, {}, {"data_s": t_data}
    if cfg.matched_explicit:
        models["explicit_matched"] = {}
    by_width = {}  # explicit width -> entry: a matched explicit GNN of a width already trained is reused
    for d in cfg.dims:
        runs = [("implicit", d), ("explicit", d)]
        for kind, width in runs + ([("explicit_matched", None)] if cfg.matched_explicit else []):
            if width is None:
                width = matched_width(models["implicit"][str(d)]["params"], cfg)
            if kind != "implicit" and width in by_width:
                models[kind][str(d)] = {**by_width[width], "same_model_as": f"explicit d={width}"}
                log(f"  {kind} d={d}: width {width}, the explicit d={width} model")
                continue
            entry = _fit_and_evaluate(kind, width, (x_tr, y_tr, x_va, y_va, x_te, y_te), cfg, log)
            if kind == "implicit":
                sweeps[str(d)] = [r.to_dict() for r in entry.pop("sweep")]
            else:
                by_width[width] = entry
            models[kind][str(d)] = entry
    timing["total_s"] = time.perf_counter() - t_start
    metrics = {
        "config": dataclasses.asdict(cfg),
        "dataset": {
            "train": cfg.n_train - n_val,
            "val": n_val,
            "test": cfg.n_test,
            "train_draws": train_draws,
            "test_draws": test_draws,
            "solved_fraction": (cfg.n_train + cfg.n_test) / (train_draws + test_draws),
        },
        "baselines": {"greedy_box": greedy},
        "models": models,
        "sweep": sweeps,
        "paper": PAPER,
        "timing": timing,
    }
    return Result(metrics)


# -- report --------------------------------------------------------------------------------------
def comparison_table(metrics: dict) -> str:
    """Markdown: test error per embedding size, ours next to the paper's, with parameter counts."""
    mods = metrics["models"]
    matched = "explicit_matched" in mods
    header = ["d", "explicit (paper)", "implicit (paper)", "explicit (ours)", "implicit (ours)"]
    if matched:
        header.append("explicit, matched params (ours)")

    def cell(e: dict) -> str:
        return f"{e['test_error']:.3f} ({e['params']:,} p)"

    rows = []
    for d in metrics["config"]["dims"]:
        key = str(d)
        paper = (dict(zip(PAPER["dims"], PAPER["explicit"])).get(d), dict(zip(PAPER["dims"], PAPER["implicit"])).get(d))
        row = [d, "-" if paper[0] is None else paper[0], "-" if paper[1] is None else paper[1]]
        row += [cell(mods["explicit"][key]), cell(mods["implicit"][key])]
        if matched:
            e = mods["explicit_matched"][key]
            row.append(f"{e['test_error']:.3f} ({e['params']:,} p, width {e['width']})")
        rows.append(row)
    return markdown_table(header, rows, align="r" * len(header))


def report(result: Result) -> str:
    """report.md: comparison table, per-k sweep tables, dataset and timing."""
    metrics = result.metrics
    ds, cfg = metrics["dataset"], metrics["config"]
    lines = [
        "# Linear programs: implicit vs explicit GNN",
        "",
        f"Random LPs ({cfg['spec']['m']} constraints x {cfg['spec']['n']} variables, "
        f"{cfg['spec']['nnz']} nonzeros): {ds['train']} train / {ds['val']} val / {ds['test']} test "
        f"({100 * ds['solved_fraction']:.0f}% of draws solvable). Metric: mean ||ŷ - y*|| / (||y*|| + 1) "
        "on the test set; p = trainable parameters.",
        "",
        comparison_table(metrics),
        "",
        f"Greedy box baseline (x_j = l_j if c_j > 0 else u_j, constraints ignored): "
        f"{metrics['baselines']['greedy_box']:.3f}.",
        "",
    ]
    columns = {"error": "error", "lipschitz_max": "Lipschitz max", "lipschitz_mean": "Lipschitz mean"}
    for d, rows in metrics["sweep"].items():
        ex = metrics["models"]["explicit"][d]
        im = metrics["models"]["implicit"][d]
        baseline = {"iterations": ex["depth"], "error": ex["test_error"]}
        baseline.update(lipschitz_max=ex["lipschitz_max"], lipschitz_mean=ex["lipschitz_mean"])
        lines += [
            f"## Test-time iterations, d = {d}",
            "",
            f"Evaluation solve (Anderson, at most {cfg['eval_max_iter']} iterations, tol 1e-5): "
            f"{100 * im.get('converged_fraction', float('nan')):.0f}% of test LPs converged, "
            f"{im.get('mean_nstep', float('nan')):.1f} iterations on average. Sweep iterations: "
            f"{cfg['sweep_method']}.",
            "",
            sweep_table(rows, columns, label="implicit", baselines={f"explicit (depth {ex['depth']})": baseline}),
            "",
        ]
    lines.append(f"Total time {metrics['timing']['total_s']:.0f} s.")
    return "\n".join(lines) + "\n"


PLOTS = ("lp_error_vs_iterations.png", "lp_lipschitz_vs_iterations.png")


def plots(result: Result, out_dir) -> list[str]:
    """:data:`PLOTS` in out_dir: test error and Lipschitz constant against k; returns the names."""
    metrics = result.metrics
    series = {f"implicit d={d}": rows for d, rows in metrics["sweep"].items()}
    ex = metrics["models"]["explicit"]
    for column, fname, ylabel, bkey in (
        ("error", PLOTS[0], "test error", "test_error"),
        ("lipschitz_max", PLOTS[1], "empirical Lipschitz (max)", "lipschitz_max"),
    ):
        baselines = {f"explicit d={d} (depth {e['depth']})": (e["depth"], e[bkey]) for d, e in ex.items()}
        plot_sweep(
            series,
            f"{out_dir}/{fname}",
            column=column,
            ylabel=ylabel,
            baselines=baselines,
            logy=column != "error",
            title="LP: implicit GNN vs test-time iterations",
        )
    return list(PLOTS)


STUDY = Study("lp", LPConfig, PRESETS, run, report, plots)
