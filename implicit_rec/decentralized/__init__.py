"""Decentralized training of a vertical model (VM) with DSGD: the recommendation adapter of ``dsgd``.

``problem`` turns the VM into a flat-parameter problem with per-agent data shards, ``train`` runs
it on the ``dsgd`` engine (the [dsgd], [data], [fm], [vm] sections of the run configuration),
``cli`` is ``implicit-rec train-decentralized``.

The generic engine and the topologies live in the top-level package ``dsgd`` (JAX, NumPy, optax
only). The names below are re-exported from it for compatibility with code written against
``implicit_rec.decentralized``; new code imports them from ``dsgd``.
"""

from dsgd import (
    TOPOLOGIES,
    Round,
    Topology,
    apply_round,
    ceca_bits,
    gossip,
    gossip_state,
    make_topology,
    mixing_matrix,
    period_matrix,
)

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
