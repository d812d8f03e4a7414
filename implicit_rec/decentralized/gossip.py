"""Host reference for gossip: apply a topology's rounds to arrays of shape (n, ...) with numpy."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .topology import VARS, Topology, message_sources


def apply_round(topology: Topology, k: int, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """One round (iteration ``k``, round k mod period) on ``state`` = (x,) or (x, x̂), each (n, ...)."""
    if len(state) != topology.variables:
        raise ValueError(f"state must hold {topology.variables} arrays for {topology.name!r}, "
                         f"got {len(state)}.")
    if topology.allreduce:
        return tuple(np.broadcast_to(v.mean(axis=0, keepdims=True), v.shape).copy() for v in state)
    rnd = topology.round(k)
    received = [state[VARS.index(var)][message_sources(pairs, topology.n)]
                for pairs, var in zip(rnd.pairs, rnd.sent)]
    out = []
    for v, value in enumerate(state):
        new = rnd.keep[v] * value
        for w, r in zip(rnd.recv[v], received):
            new = new + w * r
        out.append(new)
    return tuple(out)


def gossip_state(topology: Topology, state: tuple[np.ndarray, ...], num_rounds: int,
                 start: int = 0) -> tuple[np.ndarray, ...]:
    """Rounds ``start … start + num_rounds − 1`` applied to (x,) or (x, x̂)."""
    for k in range(start, start + num_rounds):
        state = apply_round(topology, k, state)
    return state


def gossip(topology: Topology, values, num_rounds: Optional[int] = None) -> np.ndarray:
    """x after ``num_rounds`` rounds (default: one period) from x = x̂ = ``values`` of shape (n, ...)."""
    values = np.asarray(values)
    if values.ndim < 1 or values.shape[0] != topology.n:
        raise ValueError(f"values must have shape (n={topology.n}, ...), got {values.shape}.")
    num_rounds = topology.period if num_rounds is None else num_rounds
    if num_rounds < 0:
        raise ValueError(f"num_rounds must be >= 0, got {num_rounds}.")
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    state = (values,) * topology.variables
    return gossip_state(topology, state, num_rounds)[0]


def mixing_matrix(topology: Topology, k: int) -> np.ndarray:
    """The (V·n, V·n) float64 matrix W of round k on the stacked variables [x; x̂] (V = variables)."""
    n, nv = topology.n, topology.variables
    eye = np.eye(n * nv)
    cols = apply_round(topology, k, tuple(eye[v * n:(v + 1) * n] for v in range(nv)))
    return np.concatenate(cols, axis=0)


def period_matrix(topology: Topology, start: int = 0) -> np.ndarray:
    """The (n, n) matrix mapping x to x after one period starting at round ``start``, with x̂ = x.

    For CECA the first round of a period overwrites x̂, so this is the period's effective mixing.
    """
    n, nv = topology.n, topology.variables
    prod = np.eye(n * nv)
    for k in range(start, start + topology.period):
        prod = mixing_matrix(topology, k) @ prod
    lift = np.concatenate([np.eye(n)] * nv, axis=0)  # x̂ = x
    return prod[:n] @ lift
