"""Gossip topologies as periodic schedules of one-peer (or few-peer) rounds.

A topology on ``n`` agents is a period of rounds. Agents keep ``variables`` model-sized vectors
(2 for CECA: x and x̂; 1 otherwise). In round r every agent i sends, for each message k, the
variable ``sent[k]`` along the permutation ``pairs[k]`` (a tuple of (source, destination) pairs,
one send and one receive per agent) and then, for every variable v,

    v_i ← keep[v] · v_i + Σ_k recv[v][k] · (received message k)_i.

``complete`` is exact averaging (an all-reduce) and has no pairs. CECA schedules (after the paper
"Communication-efficient topologies for decentralized learning with O(1) consensus rate"):
with b_1…b_τ the binary digits of n − 1 (MSB first, τ = bit length) and a counter m (0, then
m ← 2m + b), round r uses bit b = b_{r+1}:

    b = 1: send x along shift m + 1;  x ← ½x + ½r;  x̂ ← m/(2m+1) x̂ + (m+1)/(2m+1) r
    b = 0: send x̂ along shift m;      x ← (m+1)/(2m+1) x + m/(2m+1) r;  x̂ ← ½x̂ + ½r

so after one period every x_i is the exact mean. The 1-port variant pairs agents in a perfect
matching (odd i ↔ i + 2m + 1) instead of a shift and needs even n.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TOPOLOGIES = ("ceca-2p", "ceca-1p", "exp2-one-peer", "static-exp", "ring", "torus", "complete")
VARS = ("x", "xhat")


@dataclasses.dataclass(frozen=True)
class Round:
    """One gossip round: messages ``(pairs[k], sent[k])`` and per-variable weights."""

    pairs: tuple[tuple[tuple[int, int], ...], ...]  # per message: (source, destination) pairs
    sent: tuple[str, ...]  # per message: "x" or "xhat"
    keep: tuple[float, ...]  # per variable
    recv: tuple[tuple[float, ...], ...]  # per variable, per message


@dataclasses.dataclass(frozen=True)
class Topology:
    """A periodic gossip schedule on ``n`` agents (``rounds`` has length ``period``)."""

    name: str
    n: int
    rounds: tuple[Round, ...]
    variables: int = 1  # 2 for CECA (x, x̂)
    allreduce: bool = False  # "complete": exact mean by all-reduce, no pairs

    @property
    def period(self) -> int:
        return len(self.rounds)

    def round(self, k: int) -> Round:
        """The round used at iteration ``k`` (k mod period)."""
        return self.rounds[k % self.period]

    @property
    def messages_per_round(self) -> int:
        return max(len(r.pairs) for r in self.rounds)


def ceca_bits(n: int) -> list[int]:
    """Binary digits of n − 1, most significant first (integer bit operations; [] for n = 1)."""
    m = n - 1
    return [(m >> k) & 1 for k in range(m.bit_length() - 1, -1, -1)]


def _shift(n: int, s: int) -> tuple[tuple[int, int], ...]:
    return tuple((i, (i + s) % n) for i in range(n))


def _ceca(n: int, one_port: bool) -> tuple[Round, ...]:
    rounds, m = [], 0
    for b in ceca_bits(n):
        if one_port:  # odd i ↔ i + 2m + 1; each pair exchanges in both directions
            pairs = []
            for i in range(n):
                j = (i + 2 * m + 1) % n if i % 2 else (i - 2 * m - 1) % n
                pairs.append((j, i))  # i receives from its partner j
            pairs = tuple(sorted(pairs))
        else:
            pairs = _shift(n, m + 1 if b else m)
        d = 2 * m + 1
        if b:
            rounds.append(Round((pairs,), ("x",), (0.5, m / d), ((0.5,), ((m + 1) / d,))))
        else:
            rounds.append(Round((pairs,), ("xhat",), ((m + 1) / d, 0.5), ((m / d,), (0.5,))))
        m = 2 * m + b
    if not rounds:  # n = 1: nothing to exchange
        rounds.append(Round((), (), (1.0, 1.0), ((), ())))
    return tuple(rounds)


def _grid(n: int) -> tuple[int, int] | None:
    """The most square factorisation n = a·b with 2 <= a <= b, or None."""
    best = None
    for a in range(2, math.isqrt(n) + 1):
        if n % a == 0:
            best = (a, n // a)
    return best


def _uniform(shifts_pairs: list[tuple[tuple[int, int], ...]]) -> Round:
    w = 1.0 / (len(shifts_pairs) + 1)
    return Round(tuple(shifts_pairs), ("x",) * len(shifts_pairs), (w,), (tuple([w] * len(shifts_pairs)),))


def make_topology(name: str, n: int) -> Topology:
    """Build topology ``name`` (one of ``TOPOLOGIES``) on ``n`` agents.

    - ``ceca-2p``: any n >= 1, period τ = bit length of n − 1, exact mean after one period.
    - ``ceca-1p``: even n (or n = 1), same period, perfect matchings.
    - ``exp2-one-peer``: round k sends to i + 2^k mod n, weights ½, ½; period τ; exact only for
      n = 2^k.
    - ``static-exp``: every round sends to i + 2^k for all k < τ, uniform weights 1/(τ+1).
    - ``ring``: neighbours i ± 1, weights ⅓ (n >= 3; n = 2 has one neighbour).
    - ``torus``: a × b grid (most square factorisation, a, b >= 2), 4 neighbours, weights ⅕.
    - ``complete``: exact averaging by one all-reduce per iteration.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer number of agents, got {n!r}.")
    n = int(n)
    tau = (n - 1).bit_length()
    if name == "ceca-2p":
        return Topology(name, n, _ceca(n, one_port=False), variables=2)
    if name == "ceca-1p":
        if n % 2 and n != 1:
            raise ValueError(
                f"topology 'ceca-1p' needs an even number of agents, got n={n}; "
                "use 'ceca-2p', which is exact for any n."
            )
        return Topology(name, n, _ceca(n, one_port=True), variables=2)
    if name == "exp2-one-peer":
        if n == 1:
            return Topology(name, n, (Round((), (), (1.0,), ((),)),))
        return Topology(name, n, tuple(Round((_shift(n, 1 << k),), ("x",), (0.5,), ((0.5,),)) for k in range(tau)))
    if name == "static-exp":
        shifts = sorted({(1 << k) % n for k in range(tau)} - {0})
        return Topology(name, n, (_uniform([_shift(n, s) for s in shifts]),))
    if name == "ring":
        shifts = sorted({1 % n, (-1) % n} - {0})
        return Topology(name, n, (_uniform([_shift(n, s) for s in shifts]),))
    if name == "torus":
        grid = _grid(n)
        if grid is None:
            raise ValueError(f"topology 'torus' needs n = a*b with a, b >= 2, got n={n}; use 'ring' or 'ceca-2p'.")
        a, b = grid
        perms = []
        for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            # agent i = (row, col) = divmod(i, b) sends to (row + da, col + db)
            p = tuple((i, ((i // b + da) % a) * b + (i % b + db) % b) for i in range(n))
            if p not in perms:
                perms.append(p)
        return Topology(name, n, (_uniform(perms),))
    if name == "complete":
        return Topology(name, n, (Round((), (), (1.0 / n,), ((),)),), allreduce=True)
    raise ValueError(f"unknown topology {name!r}; choose one of {', '.join(TOPOLOGIES)}.")


def check_topology(topology) -> Topology:
    """``topology`` itself, or a TypeError saying how to build one (names are not accepted here)."""
    if not isinstance(topology, Topology):
        raise TypeError(f"topology must be a Topology, e.g. make_topology('ceca-2p', n), got {topology!r}.")
    return topology


def check_count(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (not a bool), else a ValueError naming ``name``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def message_sources(pairs: tuple[tuple[int, int], ...], n: int) -> np.ndarray:
    """src[i] = the agent that agent i receives from (each agent receives exactly once)."""
    src = np.full(n, -1)
    for s, d in pairs:
        src[d] = s
    return src
