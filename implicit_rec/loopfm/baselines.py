"""Explicit baselines matched to an implicit VM's cost (``[sweep]`` ``baseline_*`` and ``match_*`` keys).

For each explicit arch A (``sweep.baseline_archs``), depth D (``sweep.baseline_depths``) and match m
(``sweep.baseline_match``) the baseline is the VM ``A`` of D layers whose width w is the one of a
small grid (:func:`width_grid`: 4..512, even for the transformer's two heads) with the cost closest
to the implicit VM ``sweep.match_arch`` (both with ``sweep.baseline_transfer``):

- ``"params"``: total trainable parameters (``params.count_params``; abstract models, nothing
  is initialised);
- ``"flops"``: FLOPs per example, the implicit VM's front end + k = ``sweep.match_iterations`` cell
  applications + head (``sweep.implicit_flops``, the sweep's own accounting) against the
  baseline's whole forward pass (``sweep.forward_flops``, XLA's count of the compiled program).

DIN (or MLP) baselines are the front end + an MLP of D hidden layers of width w; transformer
baselines are D encoder layers of width w (``models.stacks.TransformerStack``). Both costs grow with
w, so :func:`closest_width` bisects the grid (O(log n) evaluations, each cached).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np
from flax import nnx

from .. import sweep as sweep_mod
from ..config import SweepConfig, VMConfig
from ..data.events import EventTable
from ..models.vertical import SEQUENCE_HEADS
from ..params import count_params
from .batches import vm_batches
from .store import HistoricalStore
from .study import make_vm

MIN_WIDTH, MAX_WIDTH = 4, 512
SAMPLE_ROWS = 4096  # test rows of the batch the FLOPs are counted on (the sweep's chunk: the same programs)


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """One explicit baseline: its arch, depth D and chosen width, what it matches, and its costs."""

    arch: str
    depth: int
    width: int
    match: str  # "params" | "flops"
    params: int  # the baseline's trainable parameters
    flops: float  # its FLOPs per example (forward pass)
    target: float  # the matched implicit VM's parameters or FLOPs per example

    @property
    def tag(self) -> str:
        """``"din-d4@params"``: the model part of the baseline's name."""
        return f"{self.arch}-d{self.depth}@{self.match}"

    @property
    def hidden(self) -> tuple[int, ...] | None:
        """The MLP widths of an MLP / DIN baseline (D times w); None for the transformer."""
        return None if self.arch == "transformer" else (self.width,) * self.depth

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def width_grid(arch: str) -> tuple[int, ...]:
    """Candidate widths: 4..512, multiples of the attention heads for the transformer."""
    step = SEQUENCE_HEADS if arch == "transformer" else 1
    return tuple(range(MIN_WIDTH, MAX_WIDTH + 1, step))


def closest_width(cost: Callable[[int], float], target: float, grid: Sequence[int]) -> int:
    """The width of ``grid`` (increasing) whose ``cost`` is closest to ``target`` (ties: the smaller),
    for a cost increasing with the width: the first width costing >= target, then the nearer of it
    and its predecessor.

    Every probe builds a model, so the first width costing >= target is found by interpolation:
    the quadratic through the costs at the grid's ends and middle (parameter counts and FLOPs are
    quadratic in the width) predicts it, and two probes confirm it — it is the first such width
    exactly when its predecessor costs < target. Where the prediction misses (a cost that is not
    quadratic), bisection goes on from the bracket the probes established, so the result is always
    the one bisection gives; a quadratic cost takes 5 probes instead of about log2(len(grid)) + 3."""
    n = len(grid)
    if cost(grid[-1]) <= target:
        return grid[-1]
    if cost(grid[0]) >= target:
        return grid[0]
    lo, hi = 0, n - 1  # invariant: cost(grid[lo]) < target <= cost(grid[hi])
    mid = n // 2
    if 0 < mid < n - 1:
        lo, hi = (lo, mid) if cost(grid[mid]) >= target else (mid, hi)
        first = _predicted_first(cost, target, grid, (0, mid, n - 1), lo, hi)
        if first is not None and cost(grid[first]) >= target:  # confirm: its predecessor costs < target
            hi = first
            if hi - 1 > lo:
                lo, hi = (hi - 1, hi) if cost(grid[hi - 1]) < target else (lo, hi - 1)
        elif first is not None:  # predicted too low: is the next width the first?
            lo = first
            if lo + 1 < hi:
                lo, hi = (lo, lo + 1) if cost(grid[lo + 1]) >= target else (lo + 1, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if cost(grid[mid]) >= target else (mid, hi)
    below, above = cost(grid[lo]), cost(grid[hi])
    return grid[lo] if target - below <= above - target else grid[hi]


def _predicted_first(cost, target: float, grid, probes, lo: int, hi: int) -> int | None:
    """Index in (lo, hi] of the first width the quadratic through ``probes`` (indices) puts at >= target."""
    x = np.array([grid[i] for i in probes], np.float64)
    y = np.array([cost(grid[i]) for i in probes], np.float64)
    coef = np.polyfit(x, y, 2)
    widths = np.asarray(grid[lo + 1 : hi + 1], np.float64)
    above = np.nonzero(np.polyval(coef, widths) >= target)[0]
    return lo + 1 + int(above[0]) if len(above) else None


class CostModel:
    """Parameters and FLOPs per example of the VMs of one configuration, cached per (arch, depth, width)."""

    def __init__(self, table: EventTable, store: HistoricalStore, vm: VMConfig, transfer: str):
        self.table, self.store, self.vm, self.transfer = table, store, vm, transfer
        rows = table.rows("test")[:SAMPLE_ROWS]
        self.sample = vm_batches(table, store, vm.history_len, transfer)(rows)
        self.size = len(rows)

    def _model(self, arch: str, depth: int | None = None, width: int | None = None, abstract: bool = True):
        hidden = None if depth is None or arch == "transformer" else (width,) * depth
        build = functools.partial(
            make_vm, self.table, self.store, self.vm, arch, self.transfer, 0, hidden, depth=depth, width=width
        )
        model = nnx.eval_shape(build) if abstract else build()
        model.eval()
        return model

    @functools.cache  # noqa: B019 (one CostModel per run: the cache lives as long as it)
    def params(self, arch: str, depth: int | None = None, width: int | None = None) -> int:
        """Trainable parameters of the VM ``arch`` (explicit: of ``depth`` layers of ``width``)."""
        return count_params(self._model(arch, depth, width))

    @functools.cache  # noqa: B019
    def flops(self, arch: str, depth: int, width: int) -> float:
        """FLOPs per example of the explicit VM's forward pass (``sweep.forward_flops``)."""
        return sweep_mod.forward_flops(self._model(arch, depth, width), self.sample, self.size)

    def implicit_flops(self, arch: str, iterations: int) -> float:
        """FLOPs per example of the implicit VM ``arch`` at k = ``iterations`` (front + k cell + head)."""
        front, cell, head = sweep_mod.implicit_flops(self._model(arch, abstract=False), self.sample)
        return front + iterations * cell + head


def plan_baselines(
    table: EventTable, store: HistoricalStore, vm: VMConfig, sweep: SweepConfig, log: Callable = print
) -> tuple[BaselineSpec, ...]:
    """The baselines of ``sweep`` (``[vm]`` resolved), one per arch x depth x match, widths chosen."""
    if not sweep.baseline_archs:
        return ()
    costs = CostModel(table, store, vm, sweep.baseline_transfer)
    targets = {}
    if "params" in sweep.baseline_match:
        targets["params"] = float(costs.params(sweep.match_arch))
    if "flops" in sweep.baseline_match:
        targets["flops"] = costs.implicit_flops(sweep.match_arch, sweep.match_iterations)
        if not np.isfinite(targets["flops"]):
            raise ValueError(
                "XLA reports no FLOP count on this backend: sweep.baseline_match cannot include 'flops'; "
                'set sweep.baseline_match = ["params"].'
            )
    specs = []
    for arch in sweep.baseline_archs:
        for depth in sweep.baseline_depths:
            for match in sweep.baseline_match:
                cost = functools.partial(getattr(costs, match), arch, depth)
                width = closest_width(cost, targets[match], width_grid(arch))
                spec = BaselineSpec(
                    arch,
                    depth,
                    width,
                    match,
                    costs.params(arch, depth, width),
                    costs.flops(arch, depth, width),
                    targets[match],
                )
                log(
                    f"baseline {spec.tag}: width {width}, {spec.params:,} params, {spec.flops / 1e6:.3f} MFLOPs "
                    f"(target {sweep.match_arch}/{sweep.baseline_transfer}: {targets[match]:,.0f} {match})"
                )
                specs.append(spec)
    return tuple(specs)
