"""Host reference for gossip: apply a topology's rounds to arrays of shape (n, ...) with numpy."""

from __future__ import annotations

import numpy as np

from .topology import VARS, Topology, check_count, check_topology, message_sources


def apply_round(topology: Topology, k: int, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """One round (iteration ``k``, round k mod period) on ``state`` = (x,) or (x, x̂), each (n, ...)."""
    check_topology(topology)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ValueError(f"k must be an integer iteration (round k mod period), got {k!r}.")
    if not isinstance(state, (tuple, list)) or len(state) != topology.variables:
        raise ValueError(
            f"state must be a tuple of {topology.variables} arrays for {topology.name!r}, "
            f"got {type(state).__name__} of length {len(state)}."
        )
    for v in state:
        if np.ndim(v) < 1 or np.shape(v)[0] != topology.n:
            raise ValueError(f"state arrays must have shape (n={topology.n}, ...), got {np.shape(v)}.")
    if topology.allreduce:
        return tuple(np.broadcast_to(v.mean(axis=0, keepdims=True), v.shape).copy() for v in state)
    rnd = topology.round(k)
    received = [state[VARS.index(var)][message_sources(pairs, topology.n)] for pairs, var in zip(rnd.pairs, rnd.sent)]
    out = []
    for v, value in enumerate(state):
        new = rnd.keep[v] * value
        for w, r in zip(rnd.recv[v], received):
            new = new + w * r
        out.append(new)
    return tuple(out)


def gossip_state(
    topology: Topology, state: tuple[np.ndarray, ...], num_rounds: int, start: int = 0
) -> tuple[np.ndarray, ...]:
    """Rounds ``start … start + num_rounds − 1`` applied to (x,) or (x, x̂)."""
    check_count("num_rounds", num_rounds)
    for k in range(start, start + num_rounds):
        state = apply_round(topology, k, state)
    return state


def gossip(topology: Topology, values, num_rounds: int | None = None) -> np.ndarray:
    """x after ``num_rounds`` rounds (default: one period) from x = x̂ = ``values`` of shape (n, ...)."""
    check_topology(topology)
    values = np.asarray(values)
    if values.ndim < 1 or values.shape[0] != topology.n:
        raise ValueError(f"values must have shape (n={topology.n}, ...), got {values.shape}.")
    num_rounds = check_count("num_rounds", topology.period if num_rounds is None else num_rounds)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ValueError(f"values must be numbers, got dtype {values.dtype}.")
    if not np.issubdtype(values.dtype, np.inexact):
        values = values.astype(np.float64)
    state = (values,) * topology.variables
    return gossip_state(topology, state, num_rounds)[0]


def mixing_matrix(topology: Topology, k: int) -> np.ndarray:
    """The (V·n, V·n) float64 matrix W of round k on the stacked variables [x; x̂] (V = variables)."""
    n, nv = topology.n, topology.variables
    eye = np.eye(n * nv)
    cols = apply_round(topology, k, tuple(eye[v * n : (v + 1) * n] for v in range(nv)))
    return np.concatenate(cols, axis=0)


def period_matrix(topology: Topology, start: int = 0) -> np.ndarray:
    """The (n, n) matrix mapping x to x after one period starting at round ``start``, with x̂ = x.

    For CECA the first round of a period overwrites x̂, so this is the period's effective mixing.
    """
    n, nv = check_topology(topology).n, topology.variables
    check_count("start", start)
    prod = np.eye(n * nv)
    for k in range(start, start + topology.period):
        prod = mixing_matrix(topology, k) @ prod
    lift = np.concatenate([np.eye(n)] * nv, axis=0)  # x̂ = x
    return prod[:n] @ lift
