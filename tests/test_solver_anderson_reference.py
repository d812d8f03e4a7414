"""Anderson acceleration against a plain NumPy reference, iterate by iterate (float64).

The solver keeps its history in ring buffers with an incrementally updated Gram matrix and mixes
with one batched contraction; the reference recomputes everything from the explicit list of the
last m iterates of each sample, with the documented formulas: weights a = w / sum(w), where
(D^-1/2 G G^T D^-1/2 + ridge I) D^1/2 w = D^-1/2 1 with D = diag(G G^T), and the next iterate
sum_i a_i ((1 - damping) z_i + damping f(z_i)).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import affine, contraction

import solvers

pytestmark = pytest.mark.x64

TINY_SQRT = float(np.finfo(np.float64).tiny) ** 0.5


def reference_anderson(a, b, z0, steps, memory, ridge, damping):
    """Iterates z_0..z_steps, shape (steps + 1, B, D), of Anderson on f(z) = a z + b, row by row."""
    out = np.empty((steps + 1,) + z0.shape)
    for row in range(z0.shape[0]):
        f = lambda z: a @ z + b[row]  # noqa: E731
        z = z0[row].copy()
        fz = f(z)
        frozen = np.linalg.norm(fz - z) / (np.linalg.norm(fz) + 1e-12) <= 0.0  # tol = 0
        hist_f, hist_g = [], []
        out[0, row] = z
        for k in range(1, steps + 1):
            if not frozen:
                hist_f, hist_g = (hist_f + [fz])[-memory:], (hist_g + [fz - z])[-memory:]
                F, G = np.array(hist_f), np.array(hist_g)
                gram = G @ G.T
                sq = np.diag(gram)
                scale = np.where(sq > TINY_SQRT, 1 / np.sqrt(np.where(sq > TINY_SQRT, sq, 1)), 0)
                system = scale[:, None] * gram * scale[None, :] + ridge * np.eye(len(G))
                w = scale * np.linalg.solve(system, scale)
                alpha = w / w.sum()
                if not np.all(np.isfinite(alpha)) or np.abs(alpha).sum() > 1e4:
                    alpha = np.eye(len(G))[-1]
                z = alpha @ ((1 - damping) * (F - G) + damping * F)
                fz = f(z)
            out[k, row] = z
    return out


def _problem(d=8, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    a = contraction(d, 0.9, seed=seed)
    b = rng.normal(size=(batch, d))
    b[-1] = 0.0  # z0 = 0 is this row's fixed point: it is frozen from the start
    z0 = rng.normal(size=(batch, d))
    z0[-1] = 0.0
    return a, b, z0


@pytest.mark.parametrize(
    ("memory", "ridge", "damping"),
    [(3, 1e-4, 1.0), (2, 1e-2, 0.7), (5, 0.0, 1.0), (1, 1e-4, 0.5)],
)
def test_iterates_match_plain_numpy_anderson(memory, ridge, damping):
    """Every iterate z_0..z_K of each sample equals the reference, including after the ring wraps."""
    a, b, z0 = _problem()
    steps = 7  # > memory everywhere, so the ring buffer wraps, and the residuals stay far above round-off
    expected = reference_anderson(a, b, z0, steps, memory, ridge, damping)
    got = solvers.iterate(
        affine,
        jnp.asarray(z0),
        jnp.asarray(a),
        jnp.asarray(b),
        steps=steps,
        method="anderson",
        memory=memory,
        ridge=ridge,
        damping=damping,
        tol=0.0,
    )
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(np.asarray(got)[:, -1], 0.0)  # the frozen row never moves


def test_fixed_point_last_iterate_matches_reference():
    """fixed_point with max_iter=K returns the reference's z_K (the same loop as iterate)."""
    a, b, z0 = _problem(d=6, batch=3, seed=1)
    expected = reference_anderson(a, b, z0, 9, 4, 1e-3, 1.0)[-1]
    z, info = solvers.fixed_point(
        affine, jnp.asarray(z0), jnp.asarray(a), jnp.asarray(b), memory=4, ridge=1e-3, max_iter=9, tol=1e-300
    )
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(np.asarray(info.nstep), [9, 9, 0])


@pytest.mark.parametrize("m", [1, 2, 5, 8])
def test_solve_spd_matches_numpy_on_jacobi_scaled_and_ill_conditioned_systems(m):
    """The batched small SPD solve Anderson uses, against np.linalg.solve: well-conditioned systems
    and Jacobi-scaled Gram matrices of nearly collinear residuals plus a small ridge (the hard case)."""
    from solvers._loop import solve_spd

    rng = np.random.default_rng(m)
    g = rng.normal(size=(32, m, 7))
    g[16:] = g[16:, :1] + 1e-3 * g[16:]  # nearly collinear residuals: condition number ~1e6
    gram = g @ g.transpose(0, 2, 1)
    d = 1 / np.sqrt(np.diagonal(gram, axis1=1, axis2=2))
    a = d[:, :, None] * gram * d[:, None, :] + 1e-8 * np.eye(m)
    b = rng.normal(size=(32, m))
    want = np.linalg.solve(a, b[..., None])[..., 0]
    got = np.asarray(solve_spd(jnp.asarray(a), jnp.asarray(b)))
    scale = np.linalg.cond(a)[:, None] * np.abs(want).max(axis=1, keepdims=True)
    assert np.all(np.abs(got - want) <= 1e-12 * scale), np.max(np.abs(got - want) / scale)


def test_solve_spd_of_a_singular_system_is_not_finite():
    """A zero pivot must surface as a non-finite solution (the caller's cue to fall back to Picard)."""
    from solvers._loop import solve_spd

    a = jnp.asarray(np.ones((1, 3, 3)))  # rank 1
    got = np.asarray(solve_spd(a, jnp.ones((1, 3))))
    assert not np.all(np.isfinite(got))
