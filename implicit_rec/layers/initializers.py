"""Parameter initializers that compile once per power of two, with exactly the values of JAX's.

``jax.random.normal(key, shape)`` is a program compiled for its ``shape``; a model whose
embedding tables and layers have a dozen different shapes compiles a dozen samplers, and then a
multiply and a broadcast per shape (about 0.3 s each on a 2-core CPU: 5-7 s to build one DIN in
a fresh process, 35 s of a cold tiny run). Here every draw is a flat one of the next power of two
of its size, cut to the size and reshaped on the host. With JAX's partitionable threefry (the
default since JAX 0.5) element ``i`` of a draw depends only on the key and ``i``, so the first
``n`` values of a longer flat draw are the draw of any shape with ``n`` entries, in row-major
order: the parameters are bit for bit those of ``jax.nn.initializers`` (a test checks it, on the
oldest and the newest JAX this project supports), and the scale is applied by float32 multiplies
on the host, in the order this JAX applies them on the device. Host
arrays go to the device by ``jax.device_put`` (``jnp.asarray`` of a NumPy array compiles a copy
program per shape in JAX 0.10).

``linear``, ``embed`` and ``layer_norm`` build Flax's ``nnx.Linear``, ``nnx.Embed`` and
``nnx.LayerNorm`` with these initializers (Flax's defaults otherwise); keyword arguments pass
through, so an explicit ``kernel_init`` still wins.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from jax._src.nn import initializers as _jax_initializers  # only to tell which normal formula this JAX uses

Initializer = Callable[..., jax.Array]
TRUNCATED_NORMAL_STDDEV = 0.87962566103423978  # of a standard normal truncated to (-2, 2), as in JAX


def bucket(size: int) -> int:
    """The flat size drawn for ``size`` values: the next power of two, at least 64."""
    return max(64, 1 << max(size - 1, 0).bit_length())


def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """``jax.nn.initializers.variance_scaling`` for ``mode`` fan_in / fan_out / fan_avg and a (truncated)
    normal ``distribution``, drawn at a bucketed flat size (see the module docstring); the same values."""
    if mode not in ("fan_in", "fan_out", "fan_avg") or distribution not in ("truncated_normal", "normal"):
        raise ValueError(f"unsupported variance scaling {mode!r} / {distribution!r}; use jax.nn.initializers.")

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        if len(shape) < 2 or not np.issubdtype(dtype, np.floating) or math.prod(shape) == 0:
            reference = jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis)
            return reference(key, shape, dtype)
        receptive = math.prod(shape) / shape[in_axis] / shape[out_axis]  # JAX's _compute_fans, no batch axes
        fan_in, fan_out = shape[in_axis] * receptive, shape[out_axis] * receptive
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        stddev = np.sqrt(np.asarray(scale / denominator, dtype))  # float32 ops, correctly rounded, like XLA's
        size, flat = math.prod(shape), bucket(math.prod(shape))
        if distribution == "truncated_normal":
            stddev = stddev / np.asarray(TRUNCATED_NORMAL_STDDEV, dtype)
            draw = jax.random.truncated_normal(key, -2, 2, (flat,), dtype)
        else:  # JAX's normal is sqrt(2) erf_inv(u); the order of the two products depends on the version
            draw = _erf_inv_uniform(key, flat, dtype)
        # Under a trace (jit, nnx.eval_shape) the same in jnp. Asked first, not by catching np.asarray's
        # TracerArrayConversionError: that error's message walks the whole trace so far, which made
        # building a VM under nnx.eval_shape take 0.3 s (the baseline plan builds dozens).
        traced = isinstance(draw, jax.core.Tracer)
        values = draw[:size].reshape(shape) if traced else np.asarray(draw)[:size].reshape(shape)
        if distribution == "normal":
            sqrt2 = np.asarray(np.sqrt(2), dtype)
            return _placed((sqrt2 * stddev) * values if _PRESCALED_NORMAL else (sqrt2 * values) * stddev)
        return _placed(values * stddev)

    return init


# Newer JAX (0.12) scales its normal draws as (sqrt(2) * scale) * erf_inv(u), older (0.10) as
# (sqrt(2) * erf_inv(u)) * scale: float32 products that differ in the last bit. Match this JAX.
_PRESCALED_NORMAL = hasattr(_jax_initializers, "_scaled_normal")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _erf_inv_uniform(key: jax.Array, size: int, dtype) -> jax.Array:
    """(size,) erf_inv of uniform(nextafter(-1, 0), 1) draws: JAX's standard normal over sqrt(2)."""
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    return lax.erf_inv(jax.random.uniform(key, (size,), dtype, lo, np.array(1.0, dtype)))


def _placed(values) -> jax.Array:
    """A host array on the device (``jax.device_put``: no program per shape); traced values as they are."""
    return jax.device_put(values) if isinstance(values, np.ndarray | np.generic) else values


def lecun_normal() -> Initializer:
    """Flax's default ``nnx.Linear`` kernel initializer (truncated normal, variance 1 / fan_in)."""
    return variance_scaling(1.0, "fan_in", "truncated_normal")


def embed_normal() -> Initializer:
    """Flax's default ``nnx.Embed`` initializer (normal, variance 1 / features)."""
    return variance_scaling(1.0, "fan_in", "normal", out_axis=0)


def zeros(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Zeros, built on the host (no program per shape)."""
    del key
    return jax.device_put(np.zeros(shape, dtype))


def ones(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Ones, built on the host (no program per shape)."""
    del key
    return jax.device_put(np.ones(shape, dtype))


def linear(in_features: int, out_features: int, **kwargs) -> nnx.Linear:
    """``nnx.Linear`` with Flax's default initial values, drawn by :func:`lecun_normal` and :func:`zeros`."""
    return nnx.Linear(in_features, out_features, **{"kernel_init": lecun_normal(), "bias_init": zeros, **kwargs})


def embed(num_embeddings: int, features: int, **kwargs) -> nnx.Embed:
    """``nnx.Embed`` with Flax's default initial values, drawn by :func:`embed_normal`."""
    return nnx.Embed(num_embeddings, features, **{"embedding_init": embed_normal(), **kwargs})


def layer_norm(num_features: int, **kwargs) -> nnx.LayerNorm:
    """``nnx.LayerNorm`` with its scale and bias built on the host (:func:`ones`, :func:`zeros`)."""
    return nnx.LayerNorm(num_features, **{"scale_init": ones, "bias_init": zeros, **kwargs})
