"""Small problems with known solutions and comparison helpers, shared by the solver and layer tests."""

import jax
import jax.numpy as jnp
import numpy as np


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


def rtol_for(dtype) -> float:
    """A comparison tolerance for results of well-conditioned solves carried out in ``dtype``."""
    return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 2e-4


def solve_tol(dtype) -> float:
    """A solver stopping tolerance reachable in ``dtype``."""
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def assert_trees_close(actual, expected, rtol, atol=0.0):
    """Same tree structure (checked first, so a missing or extra leaf fails), then leaves close."""
    actual_def, expected_def = jax.tree.structure(actual), jax.tree.structure(expected)
    assert actual_def == expected_def, f"tree structures differ:\n{actual_def}\nvs\n{expected_def}"
    for path_leaf, other in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
        path, leaf = path_leaf
        assert np.shape(leaf) == np.shape(other), f"{jax.tree_util.keystr(path)}: shapes differ"
        np.testing.assert_allclose(
            np.asarray(leaf), np.asarray(other), rtol=rtol, atol=atol, err_msg=f"leaf {jax.tree_util.keystr(path)}"
        )
