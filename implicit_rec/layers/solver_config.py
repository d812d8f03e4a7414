"""SolverConfig: the fixed-point solver settings of an implicit layer, validated when built."""

from __future__ import annotations

import dataclasses

import solvers


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Options passed to :func:`solvers.fixed_point` (see its docstring for their meaning).

    An implicit layer holds one for training and one for evaluation; evaluation
    may spend more iterations (``max_iter``) than training — the test-time
    compute knob — and can be replaced on a trained layer without retraining::

        layer.eval_solver = layer.eval_solver.replace(max_iter=100)

    Unknown fields and invalid values raise at construction.
    """

    method: str = "anderson"
    max_iter: int = 30
    tol: float = 1e-4
    stop: str = "rel"
    damping: float = 1.0
    memory: int = 5
    ridge: float = 1e-4
    grad: str = "ift"
    grad_max_iter: int | None = None
    grad_tol: float | None = None
    grad_fallback: str | None = None
    phantom_steps: int = 1

    def __post_init__(self):
        solvers.check_options(**self.as_kwargs())

    def as_kwargs(self) -> dict:
        return dataclasses.asdict(self)

    def iteration_options(self) -> dict:
        """The options of the iteration itself, as ``solvers.iterate`` takes them (no gradient settings)."""
        return {name: getattr(self, name) for name in ("method", "tol", "stop", "damping", "memory", "ridge")}

    def replace(self, **changes) -> SolverConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            solvers.check_options(**{k: changes[k] for k in unknown})  # raises with a suggestion
        return dataclasses.replace(self, **changes)
