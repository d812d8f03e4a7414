"""implicit-rec: implicit layers, LoopFM vertical models and decentralized training (recommendation side).

Built on the domain-agnostic ``solvers`` package. Subpackages arrive with their issues.
"""

__version__ = "0.1.0"

from .jax_compat import backport as _backport_tracer_attributes

_backport_tracer_attributes()  # linear-time getattr(tracer, "sharding") on JAX <= 0.10 (jax_compat)
