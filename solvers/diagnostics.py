"""Diagnostics of a fixed-point map: spectral radius, Jacobian Frobenius norm, empirical Lipschitz."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._options import check_batch_axis, check_int, check_output_like_input
from ._pytree import BatchedRavel


def _flat_map(f, z, args, batch_axis):
    rav = BatchedRavel.from_tree(z, check_batch_axis(batch_axis))
    check_output_like_input(f, z, args)
    return rav, lambda zmat: rav.ravel(f(rav.unravel(zmat), *args))


def spectral_radius(
    f: Callable, z, *args, iters: int = 20, batch_axis: int | None = 0, key: jax.Array | None = None
) -> jax.Array:
    """Per-sample estimate of the spectral radius of J = df/dz at z.

    Power iteration on Jacobian-vector products: v_{t+1} = J v_t / ||J v_t||.
    The estimate is the geometric mean of the growth factors ||J v_t|| over the
    second half of the iterations, which is robust to the oscillation caused by
    a complex pair of dominant eigenvalues. A value below 1 means f is locally
    contractive around z (in the limit of many iterations).

    Returns an array of shape (B,) (shape () with ``batch_axis=None``).
    """
    iters = check_int("iters", iters, 2)
    rav, fn = _flat_map(f, z, args, batch_axis)
    zmat = lax.stop_gradient(rav.ravel(z))
    _, jvp = jax.linearize(fn, zmat)
    key = jax.random.PRNGKey(0) if key is None else key
    v = jax.random.normal(key, zmat.shape, zmat.dtype)
    v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    tiny = jnp.finfo(zmat.dtype).tiny

    def body(v, _):
        jv = jvp(v)
        growth = jnp.linalg.norm(jv, axis=-1)
        return jv / (growth[:, None] + tiny), jnp.log(growth + tiny)

    _, log_growth = lax.scan(body, v, None, length=iters)
    return rav.per_sample(jnp.exp(jnp.mean(log_growth[iters // 2 :], axis=0)))


def jacobian_frobenius(
    f: Callable, z, *args, key: jax.Array, samples: int = 1, batch_axis: int | None = 0
) -> jax.Array:
    """Hutchinson estimate of ||df/dz||_F^2 per sample, differentiable (a training penalty).

    E_eps ||eps^T J||^2 = ||J||_F^2 for eps ~ N(0, I); averaged over ``samples``
    draws, computed with vector-Jacobian products only. Returns shape (B,)
    (or () with ``batch_axis=None``). Divide by the state size for the
    per-dimension penalty used in DEQ practice.
    """
    samples = check_int("samples", samples, 1)
    rav, fn = _flat_map(f, z, args, batch_axis)
    fz, vjp = jax.vjp(fn, rav.ravel(z))
    eps = jax.random.normal(key, (samples,) + fz.shape, fz.dtype)
    sq = jax.vmap(lambda e: jnp.sum(vjp(e)[0] ** 2, axis=-1))(eps)
    return rav.per_sample(jnp.mean(sq, axis=0))


class LipschitzEstimate(NamedTuple):
    """Empirical Lipschitz ratios ||g(x + d) - g(x)|| / ||d||: their max, mean and all values.

    ``ratios`` has shape (P, B), or (P, K, B) with a readout axis of size K; ``max`` and ``mean``
    reduce over P and B: shape (), or (K,) with a readout axis.
    """

    max: jax.Array
    mean: jax.Array
    ratios: jax.Array


def _sample_norms(tree, batch_axis: int | None, lead: int) -> jax.Array:
    """Euclidean norm per (leading index, sample) over all leaves: (L, B) for leaves (L, ...) with
    the batch axis ``batch_axis`` in the remaining dimensions (B = 1 with ``batch_axis=None``)."""
    total = 0.0
    for leaf in jax.tree.leaves(tree):
        leaf = jnp.asarray(leaf)
        if batch_axis is None:
            leaf = leaf.reshape(lead, 1, -1)
        else:
            leaf = jnp.moveaxis(leaf, 1 + batch_axis % (leaf.ndim - 1), 1)
            leaf = leaf.reshape(leaf.shape[:2] + (-1,))
        total = total + jnp.sum(jnp.abs(leaf) ** 2, axis=-1)
    return jnp.sqrt(total)


def _leading(tree, axis: int | None):
    """Every leaf with ``axis`` moved to the front (or a new leading axis of size 1 when None)."""
    return jax.tree.map(lambda a: a[None] if axis is None else jnp.moveaxis(a, axis, 0), tree)


def _stack(x, deltas, batch_axis: int):
    """The batch [x, x + d_1, ..., x + d_P] along the batch axis: (P + 1) B samples, sample p B + b."""

    def one(a, d):
        a, d = jnp.moveaxis(a, batch_axis, 0), jnp.moveaxis(d, 1 + batch_axis % a.ndim, 1)
        both = jnp.concatenate([a[None], a[None] + d])
        return jnp.moveaxis(both.reshape((-1,) + a.shape[1:]), 0, batch_axis)

    return jax.tree.map(one, x, deltas)


def _unstack(out, batch_axis: int, num: int):
    """Leaves (K, (P + 1) B, ...) (batch axis ``batch_axis`` after K) -> (K (P + 1), B, ...)."""

    def one(a):
        a = jnp.moveaxis(a, 1 + batch_axis % (a.ndim - 1), 1)
        return a.reshape((a.shape[0] * num, a.shape[1] // num) + a.shape[2:])

    return jax.tree.map(one, out)


def empirical_lipschitz(
    g: Callable,
    x,
    deltas,
    batch_axis: int | None = 0,
    *,
    readout_axis: int | None = None,
    stacked: bool = False,
) -> LipschitzEstimate:
    """Empirical Lipschitz constant of g around x (the Implicit Models paper's diagnostic).

    For perturbation p and sample b the ratio is ||g(x + d_p)_b - g(x)_b|| / ||d_{p,b}||, the norms
    over all leaves of one sample. With ``readout_axis`` g returns several readouts per sample, e.g.
    the K iterates z_k of :func:`solvers.iterate` (leaves (K, B, ...)), and every readout gets its ratio.

    Args:
      g: a map from a batched pytree x to a batched pytree (same batch axis, after the readout axis
        is removed).
      x: input pytree, each leaf with batch axis ``batch_axis`` of size B.
      deltas: P perturbations of x: x's structure with an extra leading axis P on every leaf
        (:func:`random_directions` draws them with a norm relative to x).
      readout_axis: the axis of g's output leaves that indexes K readouts, or None.
      stacked: evaluate g once, on the batch [x, x + d_1, ..., x + d_P] of (P + 1) B samples
        (fast; g must treat samples independently, and x needs a batch axis), instead of P + 1 calls.
    Returns:
      :class:`LipschitzEstimate`: ``ratios`` (P, B), or (P, K, B) with ``readout_axis``; ``max`` and
      ``mean`` over perturbations and samples, shape () or (K,). Without a batch axis B is dropped.
    """
    batch_axis = check_batch_axis(batch_axis)
    if readout_axis is not None:
        readout_axis = check_int("readout_axis", readout_axis, -(2**31))
    BatchedRavel.from_tree(x, batch_axis, name="x")
    leaves = jax.tree.leaves(deltas)
    if jax.tree.structure(deltas) != jax.tree.structure(x):
        raise TypeError(
            "deltas must have the structure of x (with an extra leading axis P); "
            f"x is {jax.tree.structure(x)}, deltas is {jax.tree.structure(deltas)}."
        )
    for dl, xl in zip(leaves, jax.tree.leaves(x)):
        if tuple(dl.shape[1:]) != tuple(xl.shape):
            raise ValueError(
                f"each delta leaf must have shape (P,) + x.shape; got {dl.shape} for a leaf of x with shape {xl.shape}."
            )
    num = {leaf.shape[0] for leaf in leaves}
    if len(num) != 1:
        raise ValueError(f"deltas disagree on the number of perturbations P: {sorted(num)}.")
    (num,) = num
    if stacked and batch_axis is None:
        raise ValueError("stacked=True stacks the perturbed copies along the batch axis; pass a batch_axis.")
    dnorm = _sample_norms(deltas, batch_axis, num)  # (P, B)

    if stacked:
        out = _unstack(_leading(g(_stack(x, deltas, batch_axis)), readout_axis), batch_axis, num + 1)
        out = jax.tree.map(lambda a: a.reshape((-1, num + 1) + a.shape[1:]), out)  # (K, P + 1, B, ...)
        diff = jax.tree.map(lambda a: jnp.moveaxis(a[:, 1:] - a[:, :1], 1, 0), out)  # (P, K, B, ...)
        size = jax.tree.leaves(diff)[0].shape[1]
        moved = jax.tree.map(lambda a: a.reshape((num * size,) + a.shape[2:]), diff)
        ratios = _sample_norms(moved, 0, num * size).reshape(num, size, -1) / dnorm[:, None]
    else:
        base = _leading(g(x), readout_axis)

        def one(delta):
            gd = _leading(g(jax.tree.map(jnp.add, x, delta)), readout_axis)
            diff = jax.tree.map(jnp.subtract, gd, base)
            return _sample_norms(diff, batch_axis, jax.tree.leaves(diff)[0].shape[0])

        ratios = lax.map(one, deltas) / dnorm[:, None]  # (P, K, B)
    if readout_axis is None:
        ratios = ratios[:, 0]
    if batch_axis is None:
        ratios = ratios[..., 0]
    axes = (0,) if batch_axis is None else (0, ratios.ndim - 1)
    return LipschitzEstimate(jnp.max(ratios, axis=axes), jnp.mean(ratios, axis=axes), ratios)


def random_directions(key: jax.Array, x, count: int, scale: float, batch_axis: int = 0):
    """``count`` random perturbations of x with ||d_{p,b}|| = scale * ||x_b|| (norms over all leaves).

    Directions are uniform on the sphere of each sample (normalized Gaussians). Returns x's structure
    with a leading axis ``count`` on every leaf, ready for :func:`empirical_lipschitz`.
    """
    count = check_int("count", count, 1)
    batch_axis = check_int("batch_axis", check_batch_axis(batch_axis), -(2**31))
    leaves, treedef = jax.tree.flatten(x)
    keys = [key] if len(leaves) == 1 else list(jax.random.split(key, len(leaves)))
    d = treedef.unflatten([jax.random.normal(k, (count,) + a.shape, a.dtype) for k, a in zip(keys, leaves)])
    xnorm = _sample_norms(_leading(x, None), batch_axis, 1)[0]  # (B,)
    factor = scale * xnorm[None] / _sample_norms(d, batch_axis, count)  # (P, B)

    def rescale(a):
        shape = [1] * a.ndim
        shape[0], shape[1 + batch_axis % (a.ndim - 1)] = count, a.shape[1 + batch_axis % (a.ndim - 1)]
        return a * factor.reshape(shape).astype(a.dtype)

    return jax.tree.map(rescale, d)
