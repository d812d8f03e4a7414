"""A steady nonlinear elliptic PDE on the periodic unit square, its reference solver and data set.

Problem (periodic, [0, 1)^2, an N x N grid with spacing h = 1/N):

    A(u; a) := -div(a grad u) + u + u^3 = f,      a = exp(sigma_a * xi),  f = f_scale * phi,

with the input field x = (xi, phi) (two unit-variance Gaussian random fields, phi with
mean zero: a mean forcing would only add a near-constant offset to u) and the
solution u. Discretization: conservative 5-point finite volumes with arithmetic face
coefficients a_{i+1/2,j} = (a_{i,j} + a_{i+1,j}) / 2.

Well-posedness: A(.; a) is the gradient of the strictly convex energy
E(u) = sum_ij [ (1/2) a|grad u|^2 + u^2/2 + u^4/4 - f u ], so the solution is unique.

Why the solution map x -> u is locally but not globally Lipschitz: linearizing,
J_u du = df + div(da grad u) with J_u = -div(a grad .) + 1 + 3u^2 >= 1, so
||du|| <= ||df|| + ||J_u^{-1} div(da grad u)||. The f-part is globally 1-Lipschitz, but
da = a * sigma_a * dxi, so the xi-part grows with max a = exp(sigma_a max xi) and with
|grad u| (which grows with ||f||): bounded on bounded sets of inputs, unbounded globally.

Reference solver (NumPy, float64, batched): Newton's method on A(u) = f whose linear
systems J_u v = r are solved by conjugate gradients preconditioned with the FFT
inverse of the constant-coefficient operator  mean(a) (-Delta_h) + mean(1 + 3u^2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..atomic import atomic_path
from ._checks import check_fields, check_float, check_int, integer, number


# -- random fields ----------------------------------------------------------------------------------
def grf(
    rng: np.random.Generator, count: int, n: int, tau: float = 3.0, alpha: float = 2.0, zero_mean: bool = False
) -> np.ndarray:
    """``count`` periodic Gaussian random fields on an n x n grid, shape (count, n, n), unit variance.

    Covariance (tau^2 + 4 pi^2 |k|^2)^(-alpha) in Fourier space (k integer wave numbers):
    white noise filtered by s_k = (tau^2 + 4 pi^2 |k|^2)^(-alpha/2), scaled so that every
    grid value has variance 1 (mean of s_k^2 = 1). ``zero_mean``: s_0 = 0 (every field has mean 0).
    """
    k = np.fft.fftfreq(n, d=1.0 / n)
    s = (tau**2 + 4 * np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)) ** (-alpha / 2)
    if zero_mean:
        s[0, 0] = 0.0
    s = s / np.sqrt(np.mean(s**2))
    white = rng.standard_normal((count, n, n))
    return np.real(np.fft.ifft2(np.fft.fft2(white) * s))


# -- discrete operator ------------------------------------------------------------------------------
def _faces(a: np.ndarray):
    """Face coefficients (a_{i+1/2,j}, a_{i,j+1/2}) of cell values a (..., n, n)."""
    return 0.5 * (a + np.roll(a, -1, axis=-2)), 0.5 * (a + np.roll(a, -1, axis=-1))


def diffusion(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """-div(a grad u) on the periodic grid, (..., n, n) -> (..., n, n)."""
    n = u.shape[-1]
    ax, ay = _faces(a)
    fx = ax * (np.roll(u, -1, axis=-2) - u)  # flux through face i+1/2
    fy = ay * (np.roll(u, -1, axis=-1) - u)
    return -(fx - np.roll(fx, 1, axis=-2) + fy - np.roll(fy, 1, axis=-1)) * n**2


def operator(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """A(u; a) = -div(a grad u) + u + u^3, shapes (..., n, n)."""
    return diffusion(u, a) + u + u**3


def _laplace_symbol(n: int) -> np.ndarray:
    """Eigenvalues of -Delta_h (5-point, periodic) on the rfft2 grid, shape (n, n//2 + 1)."""
    kx = np.arange(n)[:, None]
    ky = np.arange(n // 2 + 1)[None, :]
    return 4 * n**2 * (np.sin(np.pi * kx / n) ** 2 + np.sin(np.pi * ky / n) ** 2)


class SolveInfo(NamedTuple):
    """Per-sample diagnostics of :func:`solve`: relative residual ||A(u) - f|| / ||f||, Newton steps."""

    residual: np.ndarray
    newton_steps: np.ndarray
    cg_steps: int


def solve(
    a: np.ndarray, f: np.ndarray, *, tol: float = 1e-10, max_newton: int = 30, cg_tol: float = 1e-3, max_cg: int = 200
) -> tuple[np.ndarray, SolveInfo]:
    """Solve -div(a grad u) + u + u^3 = f for a batch, shapes (B, n, n) -> u (B, n, n) float64.

    Newton from the solution of the linear problem -div(a grad u) + u = f (both by
    preconditioned CG); inner CG stops at a residual ``cg_tol`` times the Newton
    residual (inexact Newton), Newton at ||A(u) - f|| <= tol ||f|| per sample.
    """
    tol, cg_tol = (
        check_float("tol", tol, low=0.0, low_inclusive=False),
        check_float("cg_tol", cg_tol, low=0.0, low_inclusive=False),
    )
    max_newton, max_cg = check_int("max_newton", max_newton, 1), check_int("max_cg", max_cg, 1)
    a = np.asarray(a, np.float64)
    f = np.asarray(f, np.float64)
    if a.ndim != 3 or a.shape != f.shape or a.shape[1] != a.shape[2]:
        raise ValueError(f"a and f must both have shape (B, n, n); got {a.shape} and {f.shape}.")
    for name, value in (("a", a), ("f", f)):
        bad = np.argwhere(~np.isfinite(value))
        if bad.size:
            idx = tuple(int(i) for i in bad[0])
            raise ValueError(f"{name} must be finite everywhere, but {name}{list(idx)} = {value[idx]}.")
    if np.any(a <= 0):
        raise ValueError("the coefficient a must be positive everywhere.")
    n = a.shape[-1]
    lap = _laplace_symbol(n)
    abar = a.mean(axis=(1, 2))[:, None, None]
    fnorm = np.linalg.norm(f.reshape(len(f), -1), axis=1) + 1e-300
    cg_total = 0

    def pcg(apply, rhs, shift, rtol):
        """Batched preconditioned CG for apply(v) = rhs (SPD), preconditioner (abar lap + shift)^-1."""
        nonlocal cg_total
        sym = abar * lap + shift[:, None, None]
        prec = lambda r: np.fft.irfft2(np.fft.rfft2(r) / sym, s=(n, n))  # noqa: E731
        dot = lambda p, q: np.sum(p * q, axis=(1, 2))  # noqa: E731
        v = np.zeros_like(rhs)
        r = rhs.copy()
        stop = rtol * np.sqrt(dot(rhs, rhs))
        zr = prec(r)
        p = zr.copy()
        rz = dot(r, zr)
        for _ in range(max_cg):
            active = np.sqrt(dot(r, r)) > stop
            if not active.any():
                break
            cg_total += 1
            ap = apply(p)
            alpha = np.where(active, rz / np.where(active, dot(p, ap), 1.0), 0.0)[:, None, None]
            v = v + alpha * p
            r = r - alpha * ap
            zr = prec(r)
            rz_new = dot(r, zr)
            beta = np.where(active, rz_new / np.where(active, rz, 1.0), 0.0)[:, None, None]
            p = zr + beta * p
            rz = rz_new
        return v

    ones = np.ones(len(a))
    u = pcg(lambda v: diffusion(v, a) + v, f, ones, 1e-6)
    steps = np.zeros(len(a), np.int64)
    for _ in range(max_newton):
        res = f - operator(u, a)
        rel = np.linalg.norm(res.reshape(len(a), -1), axis=1) / fnorm
        active = rel > tol
        if not active.any():
            break
        steps += active
        c = 1.0 + 3.0 * u**2
        du = pcg(lambda v, c=c: diffusion(v, a) + c * v, res, c.mean(axis=(1, 2)), cg_tol)
        u = u + active[:, None, None] * du
    res = f - operator(u, a)
    rel = np.linalg.norm(res.reshape(len(a), -1), axis=1) / fnorm
    return u, SolveInfo(rel, steps, cg_total)


# -- the data set -----------------------------------------------------------------------------------
DATA_VERSION = 2  # part of the cache key: bump when the generator changes


@dataclasses.dataclass(frozen=True)
class PDEConfig:
    """Problem and data-set settings; the cache key is a hash of all fields.

    n: grid size; sigma_a: log-coefficient amplitude; f_scale: forcing amplitude;
    tau, alpha: GRF spectrum; n_train / n_valid / n_test: split sizes; seed: data seed.
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

    def __post_init__(self):
        check_fields(self, _CONFIG_CHECKS)
        if self.n % 2:
            raise ValueError(f"PDEConfig.n must be even, got {self.n}.")

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "version": DATA_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_CONFIG_CHECKS = {
    "n": integer(4),
    "sigma_a": number(0.0),
    "f_scale": number(0.0),
    "tau": number(0.0),
    "alpha": number(0.0),
    "n_train": integer(1),
    "n_valid": integer(1),
    "n_test": integer(1),
    "seed": integer(0),
}


def fields(x: np.ndarray, config: PDEConfig) -> tuple[np.ndarray, np.ndarray]:
    """(a, f) from input fields x (B, n, n, 2) = (xi, phi): a = exp(sigma_a xi), f = f_scale phi."""
    x = np.asarray(x, np.float64)
    return np.exp(config.sigma_a * x[..., 0]), config.f_scale * x[..., 1]


def solution_map(x: np.ndarray, config: PDEConfig) -> np.ndarray:
    """The true input -> solution map x (B, n, n, 2) -> u (B, n, n), by :func:`solve`."""
    u, _ = solve(*fields(x, config))
    return u


SPLITS = ("train", "valid", "test")


def make_dataset(config: PDEConfig, cache_dir: str | Path | None = None) -> dict:
    """Inputs and reference solutions, deterministic in ``config`` (and cached as .npz if asked).

    Returns {"x_<split>": (B, n, n, 2) float32, "u_<split>": (B, n, n) float32} for the
    splits train / valid / test, plus "residual_max" (largest relative solver residual)
    and "key" (the config hash naming the cache file ``pde-<key>.npz``).
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"pde-{config.key()}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return {
                    **{k: z[k] for k in z.files if k != "residual_max"},
                    "residual_max": float(z["residual_max"]),
                    "key": config.key(),
                }
    rng = np.random.default_rng(config.seed)
    sizes = [config.n_train, config.n_valid, config.n_test]
    total = sum(sizes)
    x = np.stack(
        [
            grf(rng, total, config.n, config.tau, config.alpha),
            grf(rng, total, config.n, config.tau, config.alpha, zero_mean=True),
        ],
        axis=-1,
    )
    u, info = solve(*fields(x, config))
    if info.residual.max() > 1e-8:
        raise RuntimeError(f"the reference solver did not converge (residual {info.residual.max():.2e}).")
    data, start = {}, 0
    for split, size in zip(SPLITS, sizes):
        data[f"x_{split}"] = x[start : start + size].astype(np.float32)
        data[f"u_{split}"] = u[start : start + size].astype(np.float32)
        start += size
    data["residual_max"] = float(info.residual.max())
    if path is not None:  # readers never see half a file
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **data)
    return {**data, "key": config.key()}
