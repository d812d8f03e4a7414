"""``iterate``: the readout of every iterate z_0..z_steps in one compiled pass; ``iterate_to``: the
readout of z_k alone, with k a traced argument (one compiled function for every k)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _loop
from ._options import check_batch_axis, check_int, check_output_like_input, make_config, reject_unknown_kwargs
from ._pytree import BatchedRavel

_OPTIONS = ("steps", "method", "readout", "tol", "stop", "batch_axis", "damping", "memory", "ridge")


def iterate(
    f: Callable,
    z0,
    *args,
    steps: int,
    method: str = "picard",
    readout: Callable | None = None,
    tol: float = 1e-4,
    stop: str = "rel",
    batch_axis: int | None = 0,
    damping: float = 1.0,
    memory: int = 5,
    ridge: float = 1e-4,
    **unknown,
):
    """Stacked ``readout(z_k)`` for k = 0..steps, computed in one ``lax.scan``.

    The iterates are exactly those of :func:`fixed_point` with the same options:
    ``iterate(...)[k]`` equals ``fixed_point(..., max_iter=k)[0]`` read out, so a
    test-time-iteration sweep measures every k for the cost of one solve.
    Samples whose residual reaches ``tol`` freeze as in ``fixed_point``
    (``tol=0`` never freezes a sample that is not exactly at its fixed point).
    The pass is differentiable (by unrolling).

    Args:
      f, z0, *args: as in :func:`fixed_point`.
      steps: number of iterations (>= 0).
      method: ``"picard"`` (default) or ``"anderson"``.
      readout: maps a state pytree (with its batch axis) to any pytree of
        arrays; default identity.
      tol, stop, batch_axis, damping, memory, ridge: as in :func:`fixed_point`.

    Returns:
      A pytree like ``readout(z0)`` whose leaves have a new leading axis of
      size ``steps + 1``.
    """
    reject_unknown_kwargs("iterate", unknown, _OPTIONS)
    cfg = make_config(
        method=method,
        max_iter=steps,
        tol=tol,
        stop=stop,
        damping=damping,
        memory=memory,
        ridge=ridge,
        max_iter_name="steps",
        allow_zero_tol=True,
    )
    readout, rav, flat_f = _prepare(f, z0, args, readout, batch_axis)
    first = readout(z0)
    if cfg.max_iter == 0:
        return jax.tree.map(lambda a: jnp.asarray(a)[None], first)
    _, rest = _loop.run_scan(flat_f, rav.ravel(z0), cfg, cfg.max_iter, readout=lambda zmat: readout(rav.unravel(zmat)))
    return jax.tree.map(lambda a, b: jnp.concatenate([jnp.asarray(a)[None], b], axis=0), first, rest)


def iterate_to(
    f: Callable,
    z0,
    *args,
    steps,
    method: str = "picard",
    readout: Callable | None = None,
    tol: float = 1e-4,
    stop: str = "rel",
    batch_axis: int | None = 0,
    damping: float = 1.0,
    memory: int = 5,
    ridge: float = 1e-4,
    **unknown,
):
    """``readout(z_steps)`` alone, with ``steps`` a Python or *traced* integer scalar (>= 0).

    The iterate is the one of :func:`iterate` with the same options (``iterate(..., steps=k)[k]``):
    exactly ``steps`` updates in a ``lax.while_loop`` whose trip count is data, samples reaching
    ``tol`` frozen as in :func:`fixed_point` (no early exit: a timing of it costs ``steps`` updates).
    Under ``jax.jit`` with ``steps`` an argument, one compilation serves every step count, e.g. to
    time a model at each k of a sweep. Not reverse-differentiable (use :func:`iterate`).

    Args:
      f, z0, *args, method, readout, tol, stop, batch_axis, damping, memory, ridge: as in :func:`iterate`.
      steps: integer scalar >= 0 (a traced value is not checked; a negative one takes no step).

    Returns:
      ``readout(z_steps)``, a pytree like ``readout(z0)``.
    """
    reject_unknown_kwargs("iterate_to", unknown, _OPTIONS)
    if isinstance(steps, (jax.Array, np.ndarray)):  # traced or concrete array: an integer scalar
        if steps.shape != () or not jnp.issubdtype(steps.dtype, jnp.integer):
            raise TypeError(f"steps must be an integer scalar, got an array of {steps.dtype}{list(steps.shape)}.")
    else:
        steps = check_int("steps", steps, 0)
    cfg = make_config(
        method=method,
        max_iter=1,  # unused: the trip count is ``steps``
        tol=tol,
        stop=stop,
        damping=damping,
        memory=memory,
        ridge=ridge,
        allow_zero_tol=True,
    )
    readout, rav, flat_f = _prepare(f, z0, args, readout, batch_axis)
    s = lax.while_loop(
        lambda s: s.k < steps, lambda s: _loop.step(flat_f, cfg, s), _loop.init(flat_f, rav.ravel(z0), cfg)
    )
    return readout(rav.unravel(s.z))


def _prepare(f: Callable, z0, args: tuple, readout: Callable | None, batch_axis: int | None):
    """The checked readout (identity by default), the state's ravel and f on the raveled state."""
    if readout is None:
        readout = lambda z: z  # noqa: E731
    elif not callable(readout):
        raise TypeError(f"readout must be callable, got {type(readout).__name__}.")
    rav = BatchedRavel.from_tree(z0, check_batch_axis(batch_axis))
    check_output_like_input(f, z0, args)

    def flat_f(zmat):
        return rav.ravel(f(rav.unravel(zmat), *args))

    return readout, rav, flat_f
