"""Host (numpy) reference of DSGD on a topology, for many agents on one device and for tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .gossip import apply_round
from .topology import Topology, check_count, check_topology


def dsgd_reference(
    topology: Topology,
    grad: Callable[[int, np.ndarray], np.ndarray],
    x0: np.ndarray,
    lr: float,
    steps: int,
    callback: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """DSGD with plain SGD: ``grad(k, P) -> (n, D)`` gradients at the evaluation points P (n, D).

    Iteration k: P = x (or x̂ when round k sends x̂); x ← x − γG, x̂ ← x̂ − γG; gossip round k.
    ``x0`` is (D,) (all agents equal) or (n, D). ``callback(k + 1, x)`` after every iteration.
    Returns x (n, D).
    """
    n = check_topology(topology).n
    check_count("steps", steps)
    if not np.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}.")
    x = np.broadcast_to(np.asarray(x0, np.float64), (n, np.shape(x0)[-1])).copy()
    state = (x, x.copy()) if topology.variables == 2 else (x,)
    for k in range(steps):
        rnd = topology.round(k)
        sends_xhat = topology.variables == 2 and rnd.sent and rnd.sent[0] == "xhat"
        g = grad(k, state[1] if sends_xhat else state[0])
        state = apply_round(topology, k, tuple(v - lr * g for v in state))
        if callback is not None:
            callback(k + 1, state[0])
    return state[0]
