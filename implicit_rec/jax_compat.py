"""Linear-time ``getattr(tracer, "sharding", None)`` on JAX releases where it is quadratic.

On JAX up to 0.10.x, a tracer's ``sharding`` and ``device`` properties raise ``AttributeError`` (so
that ``hasattr`` / ``getattr(x, name, default)`` work), but they build the error message first, and
its last part (``Tracer._origin_msg``) walks every equation traced so far. Flax NNX probes
``value.sharding`` on every assignment to a ``Variable`` (``Variable.set_value``): each parameter a
model creates under ``nnx.eval_shape`` or ``nnx.jit``, each RNG-stream count, each optimizer update.
So tracing a model costs time quadratic in its size. JAX fixed this upstream (jax-ml/jax#40041: the
messages no longer walk the trace; JAX 0.12 has it).

:func:`backport` gives the installed JAX the fixed properties when (and only when) its own still
call ``_origin_msg``: the same ``AttributeError``, with the same first sentence, without the walk.
The only visible difference is a shorter message when user code reads ``x.sharding`` of a tracer
directly. ``import implicit_rec`` calls it once.

Measured on a warm ``implicit-rec run --preset tiny`` (2 cores, JAX 0.10.2): about 12% of the
sampled run time was spent in ``_origin_msg`` (py-spy), from parameter creation in the baseline
plan's abstract builds and in each VM's init, and from ``Optimizer.update`` in every traced train
step (figures: docs/run.md).
"""

from __future__ import annotations

from jax._src import core

PROBED = ("sharding", "device")  # the properties getattr/hasattr probe, which raise AttributeError


def _quadratic(name: str) -> bool:
    """Whether ``core.Tracer.<name>`` builds its error message with ``_origin_msg`` (the trace walk)."""
    prop = getattr(core.Tracer, name, None)
    fget = getattr(prop, "fget", None)
    return fget is not None and "_origin_msg" in fget.__code__.co_names


def _raise_unavailable(name: str) -> property:
    def unavailable(self):
        raise AttributeError(f"The {name!r} attribute is not available on {self._error_repr()}.")

    unavailable.__name__ = name
    return property(unavailable, doc=f"Not available on a tracer: AttributeError (``{name}``).")


def backport() -> tuple[str, ...]:
    """Replace the quadratic tracer properties of :data:`PROBED`; the names replaced (idempotent)."""
    patched = tuple(name for name in PROBED if _quadratic(name))
    for name in patched:
        setattr(core.Tracer, name, _raise_unavailable(name))
    return patched
