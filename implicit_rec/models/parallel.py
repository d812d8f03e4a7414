"""Data-parallel training on a 1-D ``jax.sharding`` mesh: replicated model, batch split along its rows.

A mesh of N devices (local ones, or every process's under ``jax.distributed``) holds a copy of the
parameters and optimizer state on each device; a global batch of B rows is split into N slices of
B / N rows, one per device. The loss is the ``weight``-weighted mean over the *global* batch, so the
compiled step (the same module-level ``_train_step`` of :mod:`.training`; ``jit`` partitions it by
the input shardings) computes the same gradient as one device on the whole batch, up to the order
of the floating-point sums (XLA inserts the all-reduce).

Under ``jax.distributed`` every process runs the same program on the same data (same shuffling
seed); each builds the features of its own rows of every global batch only
(:func:`shard_batch`) and reads the replicated results locally.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def data_mesh(devices: int = 0) -> Mesh:
    """A 1-D mesh (axis ``"data"``) over the first ``devices`` of ``jax.devices()`` (0 = all of them;
    under ``jax.distributed``, every process's devices, which a mesh must then span).

    Devices are ordered by (process, id), so each process owns one contiguous block of every batch."""
    available = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    n = devices or len(available)
    if devices < 0 or n > len(available):
        raise ValueError(
            f"devices={devices} (fm.devices / vm.devices): JAX sees {len(available)} "
            f"{available[0].platform} device(s). On CPU, make N virtual devices with JAX_NUM_CPU_DEVICES=N "
            "(or XLA_FLAGS=--xla_force_host_platform_device_count=N) before JAX starts; 0 = every device."
        )
    if jax.process_count() > 1 and n != len(available):
        raise ValueError(
            f"devices={devices} (fm.devices / vm.devices): under jax.distributed the data mesh spans every "
            f"process's devices ({len(available)} in {jax.process_count()} processes); use 0 (all)."
        )
    return Mesh(np.array(available[:n]), (AXIS,))


def check_batch(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """A global batch must split evenly over the mesh's devices."""
    if batch_size % mesh.size:
        raise ValueError(
            f"{name}={batch_size} is not divisible by the {mesh.size} devices of the data mesh: "
            f"every device takes batch_size / devices rows; use a multiple of {mesh.size}."
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(module: nnx.Module, mesh: Mesh) -> None:
    """Put every variable of ``module`` (a model or an ``nnx.Optimizer``), in place, on every device of ``mesh``."""
    nnx.update(module, _put_replicated(nnx.state(module), mesh))


def unreplicate(module: nnx.Module) -> None:
    """Undo :func:`replicate` in place: each replicated variable becomes this process's first copy
    (an ordinary single-device array; under ``jax.distributed`` every process holds the same values)."""
    state = nnx.state(module)
    nnx.update(module, jax.tree.map(_local_copy, state))


def _local_copy(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 and x.is_fully_replicated:
        return x.addressable_data(0)
    return x


def process_rows(batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch of ``batch_size`` that this process's devices hold (one block)."""
    index = NamedSharding(mesh, P(AXIS)).addressable_devices_indices_map((batch_size,)).values()
    spans = sorted(s[0].indices(batch_size)[:2] for s in index)
    start, stop = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in spans) != stop - start:  # data_mesh orders devices by process
        raise ValueError("this process's devices do not hold one contiguous block of the batch; use data_mesh().")
    return slice(start, stop)


def shard_batch(make_batch: Callable, rows: np.ndarray, mesh: Mesh, weight: np.ndarray | None = None) -> dict:
    """The global batch of ``rows`` (B,) split along its rows over ``mesh``: this process builds
    ``make_batch`` of its own block of rows only (and its block of ``weight`` (B,))."""
    check_batch(len(rows), mesh)
    mine = process_rows(len(rows), mesh)
    local = make_batch(rows[mine])
    if weight is not None:
        local = {**local, "weight": weight[mine]}
    local = jax.tree.map(np.asarray, local)
    global_shape = jax.tree.map(lambda x: (len(rows),) + x.shape[1:], local)
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P(AXIS)), local, global_shape)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole value of ``x`` as numpy in every process (gathered from the other processes if needed)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def on_mesh(module: nnx.Module, mesh: Mesh) -> nnx.Module:
    """A copy of ``module`` replicated on ``mesh`` (``module`` itself is not moved; no copy is made of
    arrays already replicated there)."""
    graphdef, state = nnx.split(module)
    return nnx.merge(graphdef, _put_replicated(state, mesh))


def _put_replicated(tree, mesh: Mesh):
    """``jax.device_put(tree, replicated(mesh))``; under ``jax.distributed`` a process-local array is
    sent through the host (JAX moves no committed array across processes; every process holds the
    same value, as after :func:`unreplicate`)."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if not (isinstance(x, jax.Array) and x.is_fully_addressable):
            return jax.device_put(x, sharding)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(put, tree)
