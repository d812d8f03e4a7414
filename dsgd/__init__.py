"""Decentralized SGD (DSGD) on gossip topologies: a generic engine (JAX, NumPy and optax only).

n agents each hold a parameter vector x_i (D,) and a local objective F_i. One iteration k is a
local update followed by one gossip round r = k mod τ of a periodic topology (period τ):

    u_i, s_i = optimizer(∇F_i(p_i; ξ_i), s_i)        p_i: the variable round r sends (x_i or x̂_i)
    x_i ← x_i + u_i  (and x̂_i ← x̂_i + u_i)
    v_i ← keep[v] · v_i + Σ_k recv[v][k] · m_k,i     for every variable v, messages m_k of round r

so over one period x ← W_τ ··· W_1 x with W_r the round's (V·n, V·n) mixing matrix. CECA
schedules (``ceca-2p``, ``ceca-1p``) send one message per agent per round and reach the exact mean
x̄ = (1/n) Σ_i x_i after τ = ⌈log2 n⌉ rounds for any n; ``complete`` is the all-reduce mean.

Public API:
  make_topology(name, n) -> Topology             one of TOPOLOGIES; Topology, Round, ceca_bits
  gossip, gossip_state, apply_round               NumPy reference of the rounds on (n, ...) arrays
  mixing_matrix(top, k), period_matrix(top)       W_k and the period's effective (n, n) mixing
  dsgd_reference(top, grad, x0, lr, steps)        NumPy DSGD with plain SGD (many agents, one device)
  DSGD(top, loss_fn, optimizer=, mesh=)           the device engine: one agent per JAX device,
                                                  gossip by jax.lax.ppermute in one jax.shard_map
  agent_mesh, put_agents, Monitor, count_collectives   mesh, sharded inputs, consensus, HLO counts
"""

from .engine import DSGD, DSGDState, Monitor, agent_mesh, count_collectives, put_agents
from .gossip import apply_round, gossip, gossip_state, mixing_matrix, period_matrix
from .reference import dsgd_reference
from .topology import TOPOLOGIES, Round, Topology, ceca_bits, check_count, check_topology, make_topology

__all__ = [
    "DSGD",
    "DSGDState",
    "Monitor",
    "Round",
    "TOPOLOGIES",
    "Topology",
    "agent_mesh",
    "apply_round",
    "ceca_bits",
    "check_count",
    "check_topology",
    "count_collectives",
    "dsgd_reference",
    "gossip",
    "gossip_state",
    "make_topology",
    "mixing_matrix",
    "period_matrix",
    "put_agents",
]
