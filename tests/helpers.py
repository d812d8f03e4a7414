"""Small problems with known solutions, shared by the solver tests."""

import numpy as np
import jax.numpy as jnp


def contraction(d: int, norm: float, seed: int = 0, symmetric: bool = False, eigs=None) -> np.ndarray:
    """A (d, d) matrix with spectral norm `norm` (or symmetric with eigenvalues `eigs`)."""
    rng = np.random.default_rng(seed)
    if eigs is not None or symmetric:
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        eigs = np.linspace(-norm, norm, d) if eigs is None else np.asarray(eigs)
        return (q * eigs) @ q.T
    a = rng.normal(size=(d, d))
    return norm * a / np.linalg.norm(a, 2)


def affine(z, a, b):
    """f(z) = A z + b for a batch of row vectors z (B, d)."""
    return z @ a.T + b


def affine_solution(a, b):
    """Rows of (I - A)^{-1} b."""
    return np.linalg.solve(np.eye(a.shape[0]) - np.asarray(a), np.asarray(b).T).T


def as_dtype(x, dtype):
    return jnp.asarray(x, dtype=dtype)
