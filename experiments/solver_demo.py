"""Solver demo (what `make demo` runs until the LoopFM pipeline lands).

Solves a batch of DEQ problems z = tanh(W z + U x + b) (B = 256, d = 64) with
Picard and Anderson and prints a convergence table: residual after k
iterations (median over the batch), iterations to reach the tolerance, and wall
time of the jit-compiled solve.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import solvers

B, D, TOL = 256, 64, 1e-4


def make_problem(max_eig: float, seed: int = 0):
    """W = Q diag(lambda) Q^T with eigenvalues in [0, max_eig]; small inputs keep tanh near-linear,
    so the slowest mode really contracts by max_eig per Picard step."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    w = (q * np.linspace(0.0, max_eig, D)) @ q.T
    u = rng.normal(size=(D, D)) / np.sqrt(D)
    x = 0.02 * rng.normal(size=(B, D))
    return tuple(jnp.asarray(a, jnp.float32) for a in (w, u, np.zeros(D), x))


def deq(z, w, u, b, x):
    return jnp.tanh(z @ w.T + x @ u.T + b)


def run(method: str, problem, max_iter: int):
    solve = jax.jit(
        lambda *p: solvers.fixed_point(
            deq, jnp.zeros((B, D), jnp.float32), *p, method=method, tol=TOL, max_iter=max_iter, record=True
        )
    )
    jax.block_until_ready(solve(*problem))  # compile
    start = time.perf_counter()
    z, info = jax.block_until_ready(solve(*problem))
    return info, time.perf_counter() - start


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)  # --help; no options
    checkpoints = [1, 5, 10, 20, 50, 100, 300]
    print(f"Batched DEQ solves: B={B}, d={D}, stop when ||f(z)-z||/||f(z)|| <= {TOL:g} per sample\n")
    header = f"{'problem':<22}{'method':<10}" + "".join(f"{'k=' + str(k):>10}" for k in checkpoints)
    header += f"{'iters (mean/max)':>18}{'converged':>11}{'time':>10}"
    print(header)
    print("-" * len(header))
    for name, max_eig in [("easy  (max eig 0.90)", 0.90), ("hard  (max eig 0.97)", 0.97)]:
        problem = make_problem(max_eig)
        for method in ["picard", "anderson"]:
            info, seconds = run(method, problem, max_iter=max(checkpoints))
            med = np.median(np.asarray(info.trace), axis=0)
            cells = "".join(f"{med[k - 1]:>10.1e}" for k in checkpoints)
            nstep = np.asarray(info.nstep)
            print(
                f"{name:<22}{method:<10}{cells}{f'{nstep.mean():.1f} / {nstep.max()}':>18}"
                f"{np.mean(np.asarray(info.converged)):>10.0%}{seconds * 1e3:>8.1f}ms"
            )
    print(
        "\nResidual columns are the median relative residual after k iterations "
        "(a converged sample keeps its final value)."
    )


if __name__ == "__main__":
    main()
