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
    """Empirical Lipschitz ratios ||g(x + d) - g(x)|| / ||d||: their max, mean and all values (P, B)."""

    max: jax.Array
    mean: jax.Array
    ratios: jax.Array


def empirical_lipschitz(g: Callable, x, deltas, batch_axis: int | None = 0) -> LipschitzEstimate:
    """Empirical Lipschitz constant of g around x (the Implicit Models paper's diagnostic).

    Args:
      g: a map from a batched pytree x to a batched pytree (same batch axis).
      x: input pytree, each leaf with batch axis ``batch_axis`` of size B.
      deltas: P perturbations of x: x's structure with an extra leading axis P
        on every leaf.
    Returns:
      :class:`LipschitzEstimate` with ``ratios`` of shape (P, B) (per
      perturbation and sample; norms over all leaves of one sample) and their
      max and mean.
    """
    batch_axis = check_batch_axis(batch_axis)
    xin = BatchedRavel.from_tree(x, batch_axis, name="x")
    leaves = jax.tree.leaves(deltas)
    if jax.tree.structure(deltas) != jax.tree.structure(x):
        raise TypeError(
            "deltas must have the structure of x (with an extra leading axis P); "
            f"x is {jax.tree.structure(x)}, deltas is {jax.tree.structure(deltas)}."
        )
    num = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    for dl, xl in zip(leaves, jax.tree.leaves(x)):
        if tuple(dl.shape[1:]) != tuple(xl.shape):
            raise ValueError(
                f"each delta leaf must have shape (P,) + x.shape; got {dl.shape} for a leaf of x with shape {xl.shape}."
            )
    if len(num) != 1:
        raise ValueError(f"deltas disagree on the number of perturbations P: {sorted(num)}.")
    gx = g(x)
    gout = BatchedRavel.from_tree(gx, batch_axis, name="g(x)")
    base = gout.ravel(gx)

    def one(delta):
        gd = gout.ravel(g(jax.tree.map(jnp.add, x, delta)))
        return jnp.linalg.norm(gd - base, axis=-1) / jnp.linalg.norm(xin.ravel(delta), axis=-1)

    ratios = lax.map(one, deltas)
    if not xin.batched:
        ratios = ratios[:, 0]
    return LipschitzEstimate(jnp.max(ratios), jnp.mean(ratios), ratios)
