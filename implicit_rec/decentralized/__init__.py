"""Decentralized DSGD on JAX devices with CECA and other gossip topologies.

``make_topology`` / ``gossip`` / ``mixing_matrix`` are pure numpy (the host reference);
``engine`` runs DSGD on a 1-D device mesh with ``jax.lax.ppermute`` inside ``jax.shard_map``.
"""

from .gossip import apply_round, gossip, gossip_state, mixing_matrix, period_matrix
from .topology import TOPOLOGIES, Round, Topology, ceca_bits, make_topology

__all__ = [
    "TOPOLOGIES",
    "Round",
    "Topology",
    "apply_round",
    "ceca_bits",
    "gossip",
    "gossip_state",
    "make_topology",
    "mixing_matrix",
    "period_matrix",
]
