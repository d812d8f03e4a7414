"""Deblurring study: implicit proximal-gradient model vs explicit and unrolled CNNs, and its k-sweep.

Data: y = A x + sigma * eps on centred grayscale crops x - 1/2 (``images``), A a known circular
blur (``prox.BlurOperator``). Models (all built from ``prox.prox_grad_cell`` f(z; theta, y)):

- implicit: x_hat = z*, z* = f(z*; theta, y), Anderson forward, implicit (IFT) backward;
- explicit: x_hat = f(z_0; theta, y), one application of the same cell (same parameters);
- unrolled depth L: z_{l+1} = f(z_l; theta_l, y), untied theta_1..theta_L (L x params);

all from z_0 = 0 (``z0="zero"``, mid-grey; the setting of the paper's bound
Lip(z_k) <= L (1 - mu^k) / (1 - mu), which needs a constant start) or z_0 = y (``z0="blurred"``);
- Wiener/Tikhonov: x_hat = (A^T A + lam I)^-1 A^T y with lam tuned on the validation split.

Sweep: the trained implicit cell's Picard iterates z_k, k in ``iterations``, give test PSNR(k) and the
empirical Lipschitz constant of y -> z_k(y) (perturbations of y: white Gaussian noise and the same noise
band-passed to the frequencies the blur attenuates to 2-30 %, where deblurring amplifies), in one pass each.
``STUDY`` is the domain's :class:`~implicit_rec.domains.study.Study` (``python -m implicit_rec.domains
deblur``): ``run(config)`` returns a :class:`~implicit_rec.domains.study.Result` (metrics and the example
images), ``report`` the markdown, ``plots`` the PNGs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import solvers

from ..atomic import atomic_path
from ..sweep_core import DEFAULT_ITERATIONS, plot_sweep, sweep_rows, sweep_table
from ..tables import markdown_table
from . import images, prox
from ._checks import check_fields, choice, integer, integers, iteration_counts, number
from .study import Result, Study

Z0_MODES = ("zero", "blurred")


@dataclasses.dataclass(frozen=True)
class DeblurConfig:
    """All settings of one study (presets in :data:`PRESETS`)."""

    size: int = 32  # crop side (pixels)
    scale: float = 0.5  # rescale the photographs before cropping
    n_train: int = 4096
    n_val: int = 256
    n_test: int = 384
    kernel: str = "gaussian"  # "gaussian" | "motion"
    kernel_size: int = 9
    kernel_param: float = 1.6  # Gaussian sigma, or motion angle in degrees
    noise: float = 0.01  # sigma of the additive Gaussian noise (images in [0, 1])
    channels: int = 16
    cnn_layers: int = 4
    eta0: float = 1.0
    lam0: float = 0.05
    steps: int = 300  # training steps per model
    batch_size: int = 16
    learning_rate: float = 2e-3
    eval_every: int = 100  # validation PSNR (model selection) every this many steps
    train_max_iter: int = 25  # Anderson iterations (forward and adjoint) in training
    train_tol: float = 1e-3
    eval_max_iter: int = 100
    eval_tol: float = 1e-4
    depths: tuple = (1, 2, 4, 8, 16)
    iterations: tuple = DEFAULT_ITERATIONS
    lipschitz_examples: int = 32  # test crops used for the Lipschitz estimate
    lipschitz_perturbations: int = 4
    lipschitz_scale: float = 1e-2  # per-pixel std of the perturbations of y
    examples: int = 6
    z0: str = "zero"  # "zero" | "blurred": the start z_0 of every model
    seed: int = 0

    def __post_init__(self):
        check_fields(self, _DEBLUR_CHECKS)
        if self.kernel_size % 2 == 0 or self.kernel_size > self.size:
            raise ValueError(
                f"DeblurConfig.kernel_size must be odd and at most size={self.size}, got {self.kernel_size}."
            )
        if self.kernel == "gaussian" and self.kernel_param <= 0:
            raise ValueError(
                f"DeblurConfig.kernel_param is the blur sigma of the gaussian kernel and must be > 0, "
                f"got {self.kernel_param}."
            )


_DEBLUR_CHECKS = {
    "size": integer(1),
    "scale": number(0.0),
    "n_train": integer(1),
    "n_val": integer(1),
    "n_test": integer(1),
    "kernel": choice(*prox.KERNELS),
    "kernel_size": integer(1),
    "kernel_param": number(-math.inf),
    "noise": number(0.0, inclusive=True),
    "channels": integer(1),
    "cnn_layers": integer(2),
    "eta0": number(0.0),
    "lam0": number(0.0),
    "steps": integer(1),
    "batch_size": integer(1),
    "learning_rate": number(0.0),
    "eval_every": integer(1),
    "train_max_iter": integer(1),
    "train_tol": number(0.0),
    "eval_max_iter": integer(1),
    "eval_tol": number(0.0),
    "depths": integers(1),
    "iterations": iteration_counts,
    "lipschitz_examples": integer(1),
    "lipschitz_perturbations": integer(1),
    "lipschitz_scale": number(0.0),
    "examples": integer(1),
    "z0": choice(*Z0_MODES),
    "seed": integer(0),
}


PRESETS = {
    # "default": about 10 minutes on 2 CPU cores (benchmarks/results/domains.md); "tiny": seconds, for the tests
    "tiny": DeblurConfig(
        size=16,
        n_train=96,
        n_val=16,
        n_test=24,
        channels=4,
        cnn_layers=2,
        steps=12,
        batch_size=8,
        eval_every=6,
        train_max_iter=15,
        eval_max_iter=30,
        depths=(1, 2),
        iterations=(0, 1, 2, 4, 8),
        lipschitz_examples=6,
        lipschitz_perturbations=2,
        examples=3,
    ),
    "default": DeblurConfig(),
}


# -- problem -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Problem:
    """Blur operator and the clean/blurred crop arrays (centred: pixel - 1/2), float32."""

    op: prox.BlurOperator
    kernel: np.ndarray
    splits: images.CropSplits
    x: dict  # split -> (N, H, W) clean, centred
    y: dict  # "val", "test" -> (N, H, W) blurred + noise, centred (train noise is drawn per step)


def make_problem(cfg: DeblurConfig, dtype=jnp.float32) -> Problem:
    kernel = prox.make_kernel(cfg.kernel, cfg.kernel_size, cfg.kernel_param)
    op = prox.BlurOperator.from_kernel(kernel, (cfg.size, cfg.size))
    splits = images.make_splits(
        size=cfg.size, n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.seed, scale=cfg.scale
    )
    x = {s: jnp.asarray(getattr(splits, s) - 0.5, dtype) for s in ("train", "val", "test")}
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 1000), 2)
    y = {s: blur_and_noise(op, x[s], cfg.noise, k) for s, k in zip(("val", "test"), keys)}
    return Problem(op, kernel, splits, x, y)


def blur_and_noise(op: prox.BlurOperator, x, noise: float, key):
    """y = A x + noise * eps."""
    return op.A(x) + noise * jax.random.normal(key, x.shape, x.dtype)


def psnr(x_hat, x) -> jax.Array:
    """Per-image PSNR (dB) of centred images with pixels clipped to [0, 1]: 10 log10(1 / MSE); shape (N,)."""
    err = jnp.clip(x_hat + 0.5, 0.0, 1.0) - (x + 0.5)
    return -10.0 * jnp.log10(jnp.mean(err**2, axis=(-2, -1)) + 1e-12)


# -- models ------------------------------------------------------------------------------------
def cell_fn(op: prox.BlurOperator) -> Callable:
    """f(z, params, y) for the solvers."""
    return functools.partial(prox.prox_grad_cell, op=op)


def solver_options(cfg: DeblurConfig, train: bool) -> dict:
    if train:
        return dict(method="anderson", max_iter=cfg.train_max_iter, tol=cfg.train_tol, grad="ift")
    return dict(method="anderson", max_iter=cfg.eval_max_iter, tol=cfg.eval_tol, grad="ift")


def initial_state(y, z0: str):
    """z_0: zeros (mid-grey) or the blurred input itself."""
    return jnp.zeros_like(y) if z0 == "zero" else y


def implicit_apply(params, y, op, options: dict, z0: str = "zero"):
    """(z*, SolverInfo): the fixed point of the cell."""
    return solvers.fixed_point(cell_fn(op), initial_state(y, z0), params, y, **options)


def explicit_apply(params, y, op, z0: str = "zero"):
    """One application of the cell from z_0."""
    return prox.prox_grad_cell(initial_state(y, z0), params, y, op)


def unrolled_apply(stacked, y, op, z0: str = "zero"):
    """Untied stack: params with a leading depth axis, applied in order from z_0.

    A Python loop, not ``lax.scan``: XLA:CPU runs convolutions inside a loop body about 10x
    slower than unrolled ones (measured: depth-4 training step 0.71 s vs 0.054 s).
    """
    z = initial_state(y, z0)
    for layer in range(jax.tree.leaves(stacked)[0].shape[0]):
        z = prox.prox_grad_cell(z, jax.tree.map(lambda a, layer=layer: a[layer], stacked), y, op)
    return z


def init_unrolled(key, depth: int, cfg: DeblurConfig, dtype=jnp.float32):
    layers = [
        prox.init_step(k, cfg.channels, cfg.cnn_layers, cfg.eta0, cfg.lam0, dtype) for k in jax.random.split(key, depth)
    ]
    return jax.tree.map(lambda *a: jnp.stack(a), *layers)


def trajectory(params, y, op, iterations, z0: str = "zero"):
    """Picard iterates z_k for k in ``iterations``, (len(iterations), B, H, W)."""
    traj = solvers.iterate(
        cell_fn(op), initial_state(y, z0), params, y, steps=max(iterations), method="picard", tol=0.0
    )
    return traj[np.asarray(iterations)]


def perturbations(key, shape, op: prox.BlurOperator, scale: float, dtype=jnp.float32):
    """P = shape[0] perturbations (P, B, H, W) with per-pixel RMS ``scale``: even p white Gaussian
    noise, odd p the same kind of noise restricted to the band 0.02 <= |K| <= 0.3 of the blur."""
    white = jax.random.normal(key, shape, dtype)
    mask = ((np.abs(op.khat) >= 0.02) & (np.abs(op.khat) <= 0.3)).astype(np.float64)
    if mask.sum() == 0:  # no such band (very mild blur): fall back to white noise
        mask = np.ones_like(mask)
    band = jnp.fft.irfft2(jnp.fft.rfft2(white) * mask.astype(np.complex64), s=op.shape).astype(dtype)
    band = band / jnp.sqrt(jnp.mean(band**2, axis=(-2, -1), keepdims=True))
    odd = (jnp.arange(shape[0]) % 2 == 1).reshape((-1,) + (1,) * (len(shape) - 1))
    return scale * jnp.where(odd, band, white)


# -- training ----------------------------------------------------------------------------------
MODEL_KINDS = ("implicit", "explicit", "unrolled")


def apply_model(kind: str, params, y, op: prox.BlurOperator, cfg: DeblurConfig, train: bool):
    """x_hat (B, H, W) of model ``kind`` (:data:`MODEL_KINDS`); the implicit one with the training or
    evaluation solver settings."""
    if kind == "implicit":
        return implicit_apply(params, y, op, solver_options(cfg, train), cfg.z0)[0]
    if kind == "explicit":
        return explicit_apply(params, y, op, cfg.z0)
    if kind == "unrolled":
        return unrolled_apply(params, y, op, cfg.z0)
    raise ValueError(f"kind={kind!r} is not known; choose one of {', '.join(MODEL_KINDS)}.")


def optimizer(cfg: DeblurConfig) -> optax.GradientTransformation:
    """Adam with cosine decay (to 0.1 of ``learning_rate`` over ``steps``) after global-norm clipping at 1."""
    sched = optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps, alpha=0.1)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


@functools.partial(jax.jit, static_argnames=("kind", "op", "cfg"))
def _train_step(params, state, key, x_train, *, kind: str, op: prox.BlurOperator, cfg: DeblurConfig):
    """One Adam step on the MSE of a batch of ``batch_size`` training crops with fresh noise: (params, state, loss).

    The data are arguments, not constants of the program; one compilation per (kind, operator, config).
    """
    k1, k2 = jax.random.split(key)
    x = x_train[jax.random.randint(k1, (cfg.batch_size,), 0, x_train.shape[0])]
    y = blur_and_noise(op, x, cfg.noise, k2)
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((apply_model(kind, p, y, op, cfg, True) - x) ** 2))(params)
    updates, state = optimizer(cfg).update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


@functools.partial(jax.jit, static_argnames=("kind", "op", "cfg", "train"))
def _mean_psnr(params, y, x, *, kind: str, op: prox.BlurOperator, cfg: DeblurConfig, train: bool):
    return jnp.mean(psnr(apply_model(kind, params, y, op, cfg, train), x))


def train(kind: str, params, prob: Problem, cfg: DeblurConfig, key, log: Callable | None = None):
    """Adam (cosine decay, clip 1.0) on the MSE of model ``kind`` vs x, fresh noise every step; the
    validation PSNR uses the training solver settings.

    Returns (best params by validation PSNR, history dict).
    """
    state = optimizer(cfg).init(params)
    static = dict(kind=kind, op=prob.op, cfg=cfg)
    best, best_psnr, hist = params, -np.inf, {"loss": [], "val_psnr": []}
    for i, k in enumerate(jax.random.split(key, cfg.steps)):
        params, state, loss = _train_step(params, state, k, prob.x["train"], **static)
        hist["loss"].append(float(loss))
        if (i + 1) % cfg.eval_every == 0 or i + 1 == cfg.steps:
            v = float(_mean_psnr(params, prob.y["val"], prob.x["val"], train=True, **static))
            hist["val_psnr"].append((i + 1, v))
            if log:
                log(f"  step {i + 1:5d}  loss {np.mean(hist['loss'][-cfg.eval_every :]):.2e}  val PSNR {v:.2f}")
            if v > best_psnr:
                best, best_psnr = params, v
    hist["best_val_psnr"] = best_psnr
    return best, hist


# -- evaluation (one compiled program per model kind and operator) -----------------------------
@functools.partial(jax.jit, static_argnames=("op", "cfg"))
def _implicit_eval(params, y, *, op: prox.BlurOperator, cfg: DeblurConfig):
    """(z*, SolverInfo) with the evaluation solver settings."""
    return implicit_apply(params, y, op, solver_options(cfg, False), cfg.z0)


@functools.partial(jax.jit, static_argnames=("kind", "op", "cfg"))
def _apply_eval(params, y, *, kind: str, op: prox.BlurOperator, cfg: DeblurConfig):
    return apply_model(kind, params, y, op, cfg, False)


@functools.partial(jax.jit, static_argnames=("op", "ks", "z0"))
def _sweep_trajectory(params, y, x, *, op: prox.BlurOperator, ks: tuple, z0: str):
    """Of the Picard iterates z_k, k in ``ks``: mean PSNR (K,), MSE (K,) and relative residual (K, N)."""
    traj = trajectory(params, y, op, ks, z0)  # (K, N, H, W)
    psnr_k = jax.vmap(lambda z: jnp.mean(psnr(z, x)))(traj)
    mse_k = jnp.mean((traj - x) ** 2, axis=(1, 2, 3))
    fz = jax.vmap(lambda z: cell_fn(op)(z, params, y))(traj)
    flat = lambda a: a.reshape(len(ks), y.shape[0], -1)  # noqa: E731
    res = jnp.linalg.norm(flat(fz - traj), axis=-1) / (jnp.linalg.norm(flat(fz), axis=-1) + 1e-12)
    return psnr_k, mse_k, res


@functools.partial(jax.jit, static_argnames=("op", "ks", "z0"))
def _sweep_lipschitz(params, y, deltas, *, op: prox.BlurOperator, ks: tuple, z0: str):
    est = solvers.empirical_lipschitz(
        lambda yy: trajectory(params, yy, op, ks, z0), y, deltas, readout_axis=0, stacked=True
    )
    return est.max, est.mean


@functools.partial(jax.jit, static_argnames=("kind", "op", "cfg"))
def _model_lipschitz(params, y, deltas, *, kind: str, op: prox.BlurOperator, cfg: DeblurConfig):
    """(max, mean) empirical Lipschitz constant of y -> x_hat for a trained model (evaluation settings)."""
    est = solvers.empirical_lipschitz(lambda yy: apply_model(kind, params, yy, op, cfg, False), y, deltas)
    return est.max, est.mean


@functools.partial(jax.jit, static_argnames=("op", "lam"))
def _wiener_lipschitz(y, deltas, *, op: prox.BlurOperator, lam: float):
    est = solvers.empirical_lipschitz(lambda yy: op.tikhonov(yy, lam), y, deltas)
    return est.max, est.mean


def tune_wiener(prob: Problem, grid=None) -> tuple[float, float]:
    """(lam, validation PSNR) of the best Tikhonov filter on a log grid."""
    grid = np.logspace(-5, 0, 26) if grid is None else grid
    scores = [float(jnp.mean(psnr(prob.op.tikhonov(prob.y["val"], lam), prob.x["val"]))) for lam in grid]
    i = int(np.argmax(scores))
    return float(grid[i]), scores[i]


# -- the study ---------------------------------------------------------------------------------
def run(cfg: DeblurConfig, *, cache_dir=None, log: Callable | None = None) -> Result:
    """Train every model, evaluate on the test crops, sweep k: metrics and the example images.

    ``cache_dir`` is unused (the crops come from scikit-image's bundled photographs)."""
    log = log or (lambda s: None)
    t_start = time.perf_counter()
    timing = {}
    prob = make_problem(cfg)
    op, xt, yt, z0 = prob.op, prob.x["test"], prob.y["test"], cfg.z0
    key = jax.random.PRNGKey(cfg.seed)
    k_imp, k_exp, k_unr, k_lip, k_train = jax.random.split(key, 5)
    models = {"blurred": {"params": 0, "psnr": float(jnp.mean(psnr(yt, xt)))}}
    lam, val_psnr = tune_wiener(prob)
    models["wiener"] = {
        "params": 0,
        "lam": lam,
        "val_psnr": val_psnr,
        "psnr": float(jnp.mean(psnr(op.tikhonov(yt, lam), xt))),
    }
    log(f"blurred {models['blurred']['psnr']:.2f} dB, Wiener (lam={lam:.1e}) {models['wiener']['psnr']:.2f} dB")

    # implicit
    t0 = time.perf_counter()
    p_imp = prox.init_step(k_imp, cfg.channels, cfg.cnn_layers, cfg.eta0, cfg.lam0)
    log(f"implicit ({prox.num_params(p_imp)} params)")
    p_imp, hist_imp = train("implicit", p_imp, prob, cfg, jax.random.fold_in(k_train, 0), log)
    timing["train_implicit_s"] = time.perf_counter() - t0
    z_imp, info = _implicit_eval(p_imp, yt, op=op, cfg=cfg)
    eval_opts = solver_options(cfg, False)
    eta, lam_imp = prox.step_sizes(p_imp)
    models["implicit"] = {
        "params": prox.num_params(p_imp),
        "psnr": float(jnp.mean(psnr(z_imp, xt))),
        "converged_fraction": float(jnp.mean(info.converged)),
        "mean_nstep": float(jnp.mean(info.nstep)),
        "max_residual": float(jnp.max(info.residual)),
        "eta": float(eta),
        "lam": float(lam_imp),
        "val_psnr": hist_imp["best_val_psnr"],
        "train_seconds": timing["train_implicit_s"],
        "solver": {k: v for k, v in eval_opts.items() if k != "grad"},
    }

    # explicit (= unrolled depth 1)
    t0 = time.perf_counter()
    p_exp = prox.init_step(k_exp, cfg.channels, cfg.cnn_layers, cfg.eta0, cfg.lam0)
    log(f"explicit ({prox.num_params(p_exp)} params)")
    p_exp, hist_exp = train("explicit", p_exp, prob, cfg, jax.random.fold_in(k_train, 1), log)
    z_exp = _apply_eval(p_exp, yt, kind="explicit", op=op, cfg=cfg)
    models["explicit"] = {
        "params": prox.num_params(p_exp),
        "psnr": float(jnp.mean(psnr(z_exp, xt))),
        "val_psnr": hist_exp["best_val_psnr"],
        "train_seconds": time.perf_counter() - t0,
    }
    timing["train_explicit_s"] = models["explicit"]["train_seconds"]

    # unrolled untied stacks (depth 1 is the explicit model, trained once)
    unrolled, p_unr = {}, {}
    for d in cfg.depths:
        if d == 1:
            p_unr[1] = jax.tree.map(lambda a: a[None], p_exp)
            unrolled["1"] = {
                "params": models["explicit"]["params"],
                "psnr": models["explicit"]["psnr"],
                "val_psnr": models["explicit"]["val_psnr"],
                "same_as": "explicit",
            }
            continue
        t0 = time.perf_counter()
        p = init_unrolled(jax.random.fold_in(k_unr, d), d, cfg)
        log(f"unrolled depth {d} ({prox.num_params(p)} params)")
        p, hist = train("unrolled", p, prob, cfg, jax.random.fold_in(k_train, 10 + d), log)
        p_unr[d] = p
        unrolled[str(d)] = {
            "params": prox.num_params(p),
            "psnr": float(jnp.mean(psnr(_apply_eval(p, yt, kind="unrolled", op=op, cfg=cfg), xt))),
            "val_psnr": hist["best_val_psnr"],
            "train_seconds": time.perf_counter() - t0,
        }
    models["unrolled"] = unrolled
    timing["train_unrolled_s"] = sum(u.get("train_seconds", 0.0) for u in unrolled.values())

    # sweep: PSNR, residual and Lipschitz at each k, from Picard iterates of the implicit cell
    t0 = time.perf_counter()
    ks = cfg.iterations
    psnr_k, mse_k, res = (np.asarray(a) for a in _sweep_trajectory(p_imp, yt, xt, op=op, ks=ks, z0=z0))
    n_lip = min(cfg.lipschitz_examples, len(xt))
    y_lip = yt[:n_lip]
    deltas = perturbations(k_lip, (cfg.lipschitz_perturbations,) + y_lip.shape, op, cfg.lipschitz_scale, y_lip.dtype)
    lip = _sweep_lipschitz(p_imp, y_lip, deltas, op=op, ks=ks, z0=z0)
    rows = sweep_rows(
        ks,
        {"error": mse_k, "psnr": psnr_k},
        residual=res.mean(axis=1),
        converged_fraction=(res <= cfg.eval_tol).mean(axis=1),
        lipschitz_max=lip[0],
        lipschitz_mean=lip[1],
    )
    residual_max = res.max(axis=1)

    def lip_of(est):
        return {"lipschitz_max": float(est[0]), "lipschitz_mean": float(est[1])}

    models["implicit"].update(lip_of(_model_lipschitz(p_imp, y_lip, deltas, kind="implicit", op=op, cfg=cfg)))
    models["explicit"].update(lip_of(_model_lipschitz(p_exp, y_lip, deltas, kind="explicit", op=op, cfg=cfg)))
    models["wiener"].update(lip_of(_wiener_lipschitz(y_lip, deltas, op=op, lam=lam)))
    for d, p in p_unr.items():
        same = {k: models["explicit"][k] for k in ("lipschitz_max", "lipschitz_mean")}
        if d != 1:
            same = lip_of(_model_lipschitz(p, y_lip, deltas, kind="unrolled", op=op, cfg=cfg))
        models["unrolled"][str(d)].update(same)
    timing["sweep_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start

    metrics = {
        "domain": "deblur",
        "config": dataclasses.asdict(cfg),
        "data": {
            "sizes": prob.splits.sizes(),
            "train_images": list(prob.splits.train_images),
            "test_images": list(prob.splits.test_images),
            "crop": cfg.size,
            "scale": cfg.scale,
            "kernel": {"kind": cfg.kernel, "size": cfg.kernel_size, "param": cfg.kernel_param},
            "noise": cfg.noise,
            "source": "skimage.data (bundled with scikit-image)",
        },
        "models": models,
        "sweep": [{**r.to_dict(), "residual_max": float(m)} for r, m in zip(rows, residual_max)],
        "timing": timing,
    }
    n_ex = min(cfg.examples, len(xt))
    arrays = {
        "blurred": np.asarray(yt[:n_ex]),
        "implicit": np.asarray(z_imp[:n_ex]),
        "explicit": np.asarray(z_exp[:n_ex]),
        "wiener": np.asarray(op.tikhonov(yt[:n_ex], lam)),
        "truth": np.asarray(xt[:n_ex]),
        "kernel": prob.kernel,
    }
    return Result(metrics, arrays)


# -- outputs -----------------------------------------------------------------------------------
def report(result: Result) -> str:
    """Markdown: the model comparison and the k-sweep."""
    metrics = result.metrics
    m = metrics["models"]

    def lip(d):
        return f"{d['lipschitz_max']:.3g} / {d['lipschitz_mean']:.3g}" if "lipschitz_max" in d else "-"

    data = metrics["data"]
    imp = m["implicit"]
    lines = [
        "# Deblurring: implicit vs explicit proximal-gradient CNN",
        "",
        f"{data['kernel']['kind']} blur (size {data['kernel']['size']}, param {data['kernel']['param']}), "
        f"noise sigma {data['noise']}, {data['crop']}x{data['crop']} crops; "
        f"train/val/test {data['sizes']['train']}/{data['sizes']['val']}/{data['sizes']['test']}; "
        f"test images: {', '.join(data['test_images'])}.",
        "",
        markdown_table(
            ["model", "params", "depth / iterations", "test PSNR (dB)", "Lipschitz max / mean"],
            [
                ["blurred input", 0, "-", f"{m['blurred']['psnr']:.2f}", "-"],
                [
                    f"Wiener / Tikhonov (lam={m['wiener']['lam']:.1e})",
                    0,
                    "closed form",
                    f"{m['wiener']['psnr']:.2f}",
                    lip(m["wiener"]),
                ],
                [
                    "explicit (cell once)",
                    f"{m['explicit']['params']:,}",
                    1,
                    f"{m['explicit']['psnr']:.2f}",
                    lip(m["explicit"]),
                ],
                *[
                    ["unrolled untied", f"{u['params']:,}", d, f"{u['psnr']:.2f}", lip(u)]
                    for d, u in m["unrolled"].items()
                ],
                [
                    f"**implicit** (Anderson, tol {imp['solver']['tol']:g}, <= {imp['solver']['max_iter']} its)",
                    f"{imp['params']:,}",
                    f"{imp['mean_nstep']:.1f} mean, {100 * imp['converged_fraction']:.0f}% converged",
                    f"**{imp['psnr']:.2f}**",
                    lip(imp),
                ],
            ],
            align="lrlrr",
        ),
        "",
        f"Test-time iterations of the trained implicit cell (Picard iterates z_k from z_0 = "
        f"{'0' if metrics['config']['z0'] == 'zero' else 'y'}):",
        "",
        sweep_table(
            [{**r, "converged_fraction": 100 * r["converged_fraction"]} for r in metrics["sweep"]],
            {
                "psnr": "test PSNR (dB)",
                "lipschitz_max": "Lipschitz max",
                "lipschitz_mean": "Lipschitz mean",
                "residual": "relative residual (mean)",
                "converged_fraction": "converged (%)",
            },
            formats={"psnr": ".2f", "lipschitz_max": ".3g", "lipschitz_mean": ".3g", "residual": ".2e"},
        ),
    ]
    t = metrics["timing"]
    lines += [
        "",
        f"Learned step eta = {imp['eta']:.3f}, lam = {imp['lam']:.2e}. "
        f"Wall time {t['total_s']:.0f} s (implicit training {t['train_implicit_s']:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


def plot_psnr(metrics: dict, path) -> None:
    """PSNR vs k (implicit), unrolled stacks as points at their depth, Wiener and blurred as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, rows = metrics["models"], metrics["sweep"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([r["iterations"] for r in rows], [r["psnr"] for r in rows], marker="o", label="implicit (iterate k)")
    ax.axhline(
        m["implicit"]["psnr"],
        color="tab:blue",
        ls=":",
        lw=1,
        label=f"implicit (Anderson, <= {m['implicit']['solver']['max_iter']} its)",
    )
    ds = sorted(int(d) for d in m["unrolled"])
    ax.scatter(
        ds,
        [m["unrolled"][str(d)]["psnr"] for d in ds],
        marker="s",
        color="tab:orange",
        zorder=3,
        label="unrolled untied (depth)",
    )
    ax.scatter([1], [m["explicit"]["psnr"]], marker="*", s=120, color="tab:red", zorder=4, label="explicit")
    ax.axhline(m["wiener"]["psnr"], color="tab:green", ls="--", label="Wiener / Tikhonov")
    ax.axhline(m["blurred"]["psnr"], color="gray", ls="-.", label="blurred input")
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xlim(left=-0.3)
    lo = min(m["blurred"]["psnr"], *(r["psnr"] for r in rows if r["iterations"] > 0)) - 1
    ax.set_ylim(bottom=lo)
    ax.set_xlabel("iterations k (depth for unrolled)")
    ax.set_ylabel("test PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_examples(arrays: dict, path) -> None:
    """Strip: blurred / Wiener / explicit / implicit / truth, one row per test crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["blurred", "wiener", "explicit", "implicit", "truth"]
    n = len(arrays["truth"])
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n), squeeze=False)
    for i in range(n):
        for j, c in enumerate(cols):
            axes[i, j].imshow(np.clip(arrays[c][i] + 0.5, 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(c, fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


PLOTS = ("psnr_vs_iterations.png", "lipschitz_vs_iterations.png", "examples.png")


def plots(result: Result, out) -> list[str]:
    """:data:`PLOTS` in the directory ``out``: PSNR and Lipschitz constant against k, example crops."""
    metrics, m = result.metrics, result.metrics["models"]
    plot_psnr(metrics, f"{out}/{PLOTS[0]}")
    base = {f"unrolled d={d}": (int(d), u["lipschitz_max"]) for d, u in m["unrolled"].items()}
    base["Wiener"] = (max(r["iterations"] for r in metrics["sweep"]), m["wiener"]["lipschitz_max"])
    plot_sweep(
        {"implicit": metrics["sweep"]},
        f"{out}/{PLOTS[1]}",
        column="lipschitz_max",
        ylabel="empirical Lipschitz (max) of y -> z_k",
        baselines=base,
        logy=True,
        title="deblurring: Lipschitz vs iterations",
    )
    plot_examples(result.arrays, f"{out}/{PLOTS[2]}")
    return list(PLOTS)


STUDY = Study("deblur", DeblurConfig, PRESETS, run, report, plots)
