"""Domain-agnostic fixed-point solvers with implicit differentiation (JAX and NumPy only).

Public API:
  fixed_point(f, z0, *args, ...) -> (z, SolverInfo)   batched Anderson / Picard solve
  check_options(**options)                            validate fixed_point options early
  iterate(f, z0, *args, steps, ...)                   readout of every iterate in one pass
  spectral_radius, jacobian_frobenius, empirical_lipschitz   diagnostics
"""

from .diagnostics import LipschitzEstimate, empirical_lipschitz, jacobian_frobenius, spectral_radius
from .fixed_point import SolverInfo, check_options, fixed_point
from .iterate import iterate

__all__ = [
    "fixed_point",
    "iterate",
    "SolverInfo",
    "check_options",
    "spectral_radius",
    "jacobian_frobenius",
    "empirical_lipschitz",
    "LipschitzEstimate",
]
