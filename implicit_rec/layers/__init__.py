"""Implicit layers in Flax NNX: weight-tied cells solved to a fixed point by ``solvers``."""

from .cells import GraphCell, MLPCell, SequenceCell
from .implicit import AdjointProbe, ImplicitLayer, LayerInfo, adjoint_report, fixed_point_correction_loss
from .solver_config import SolverConfig
from .weights import PARAMETERIZATIONS, PowerIterationState, StateLinear

__all__ = [
    "ImplicitLayer",
    "AdjointProbe",
    "adjoint_report",
    "LayerInfo",
    "MLPCell",
    "GraphCell",
    "SequenceCell",
    "SolverConfig",
    "StateLinear",
    "PowerIterationState",
    "PARAMETERIZATIONS",
    "fixed_point_correction_loss",
]
