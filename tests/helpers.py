"""Small problems with known solutions and comparison helpers, shared by the solver and layer tests."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from implicit_rec.layers import SolverConfig
from implicit_rec.models.vertical import VerticalModel, vm_loss


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


def loopfm_batches(table, history: int, fm_dim: int):
    """rows -> a VM batch of ``table`` with a LoopFM history (``history`` logged (fm_dim,) embeddings,
    their logits and their ads, the row's own candidate) and an FM logit: fixed functions of the row."""
    from implicit_rec.loopfm.batches import table_batches

    base = table_batches(table)

    def make(rows):
        rows = np.asarray(rows)
        batch = base(rows)
        r = np.sin(rows[:, None, None] * 0.37 + np.arange(history * fm_dim).reshape(1, history, fm_dim))
        batch["loopfm"] = r.astype(np.float32)
        batch["loopfm_mask"] = (rows[:, None] + np.arange(history)) % 3 != 0
        batch["loopfm_logit"] = np.cos(rows[:, None] + np.arange(history)).astype(np.float32)
        for c in table.schema.query_fields:
            batch[f"loopfm_{c}"] = np.where(batch["loopfm_mask"], batch[c][:, None], 0).astype(np.int32)
        batch["fm_logit"] = np.tanh(rows * 0.1).astype(np.float32)
        return batch

    return make


LOOPFM_TEST_SIZES = {"max_len": 8, "fm_dim": 6, "history_len": 4}  # what loopfm_batches(table, 4, 6) feeds


def implicit_vm(table, arch: str, transfer: str = "loopfm+kd", seed: int = 0, **options):
    """A small implicit VM ``arch`` of ``table`` (sizes ``LOOPFM_TEST_SIZES``; ``options`` go to
    ``VerticalModel``) whose cell's inner MLP output layer is non-zero (it starts at zero), so every
    path of the cell is exercised."""
    vm = VerticalModel(
        table.schema,
        table.vocab_sizes,
        rngs=nnx.Rngs(seed),
        arch=arch,
        transfer=transfer,
        **LOOPFM_TEST_SIZES,
        **options,
    )
    kernel = vm.core.cell.mlp_out.kernel
    kernel[...] = 0.1 * jax.random.normal(jax.random.key(seed), kernel[...].shape)
    return vm


def vm_gradients_ift_and_unrolled(vm, batch) -> dict:
    """The VM loss's parameter gradients with the implicit (IFT) backward pass of a tight Anderson
    solve, asserted equal to those of a 100-step unrolled Picard solve; returns the IFT ones."""

    def grads(solver):
        vm.core.train_solver = solver
        return nnx.to_pure_dict(_vm_grads(vm, batch))

    g_ift = grads(SolverConfig(method="anderson", max_iter=60, tol=1e-6))
    g_unroll = grads(SolverConfig(method="picard", max_iter=100, tol=1e-7, grad="unroll"))
    leaves_ift, leaves_unroll = jax.tree.leaves(g_ift), jax.tree.leaves(g_unroll)
    assert len(leaves_ift) == len(leaves_unroll)
    for a, b in zip(leaves_ift, leaves_unroll):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)
    return g_ift


@nnx.jit
def _vm_grads(vm, batch):
    return nnx.grad(lambda m: vm_loss(m, batch)[0])(vm)
