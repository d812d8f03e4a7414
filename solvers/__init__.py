"""Domain-agnostic fixed-point solvers with implicit differentiation (JAX and NumPy only).

Public API:
  fixed_point(f, z0, *args, ...) -> (z, SolverInfo)   batched Anderson / Picard solve
  check_options(**options)                            validate fixed_point options early
  adjoint_probe(B) -> AdjointInfo                     zeros whose gradient reports the ift adjoint solve
  iterate(f, z0, *args, steps, ...)                   readout of every iterate in one pass
  iterate_to(f, z0, *args, steps, ...)                readout of z_steps, steps a traced integer
  residual(z, fz, stop)                               the per-row residual of the stop rule
  spectral_radius, jacobian_frobenius, empirical_lipschitz, random_directions   diagnostics
"""

from ._loop import residual
from .diagnostics import (
    LipschitzEstimate,
    empirical_lipschitz,
    jacobian_frobenius,
    random_directions,
    spectral_radius,
)
from .fixed_point import AdjointInfo, SolverInfo, adjoint_probe, check_options, fixed_point
from .iterate import iterate, iterate_to

__all__ = [
    "fixed_point",
    "iterate",
    "iterate_to",
    "residual",
    "SolverInfo",
    "AdjointInfo",
    "adjoint_probe",
    "check_options",
    "spectral_radius",
    "jacobian_frobenius",
    "empirical_lipschitz",
    "random_directions",
    "LipschitzEstimate",
]
