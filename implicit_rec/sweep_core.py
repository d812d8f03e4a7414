"""The test-time iteration sweep's shared core: typed rows, the iteration-count check, table and plot.

A sweep runs a trained implicit model for K = max(iterations) solver iterations (one
``solvers.iterate`` / ``ImplicitLayer.trajectory`` pass) and reads it out at every k in
``iterations``. Each k gives one :class:`SweepRow`; the recommendation study
(:mod:`implicit_rec.sweep`) and the domains (:mod:`implicit_rec.domains`) build their rows with
:func:`sweep_rows` and write them with :meth:`SweepRow.to_dict`. :func:`plot_sweep` draws one
column against k on a log2 axis (k = 0 included: symlog, linear on [0, 1]); :func:`sweep_table`
writes the markdown table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from solvers._options import check_int

from .tables import markdown_table

DEFAULT_ITERATIONS = (0, 1, 2, 4, 8, 16, 32, 64)
OPTIONAL = ("residual", "converged_fraction", "seconds", "flops", "lipschitz_max", "lipschitz_mean")


def check_iterations(iterations: Sequence[int], name: str = "iterations") -> tuple[int, ...]:
    """``iterations`` as a strictly increasing tuple of integers >= 0 (one clear error otherwise).

    Every entry must be an integer (NumPy integers too): 1.5 or True is an error, not truncated,
    and a string such as "012" is not a sequence of counts.
    """
    if isinstance(iterations, (str, bytes)) or not isinstance(iterations, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of integers such as (0, 1, 2, 4), got {iterations!r}.")
    out = tuple(check_int(f"{name}[{i}]", k, 0) for i, k in enumerate(iterations))
    if not out or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(
            f"{name} must be a non-empty strictly increasing sequence of integers >= 0, got {iterations!r}."
        )
    return out


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One iteration count k of a sweep.

    ``metrics`` holds the quality measures at k in the order they are written (``auc``, ``gauc``,
    ``logloss``; ``error``; ``psnr`` ...); the other fields are None when a sweep does not measure
    them: ``residual`` mean relative residual ||f(z_k) - z_k|| / ||f(z_k)||, ``converged_fraction``
    share with residual <= the tolerance, ``seconds`` wall time at k, ``flops`` per example,
    ``lipschitz_max`` / ``lipschitz_mean`` the empirical Lipschitz constant of x -> readout(z_k).
    """

    iterations: int
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    method: str | None = None
    residual: float | None = None
    converged_fraction: float | None = None
    seconds: float | None = None
    flops: float | None = None
    lipschitz_max: float | None = None
    lipschitz_mean: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "iterations", check_int("SweepRow.iterations", self.iterations, 0))
        clash = sorted(set(self.metrics) & {f.name for f in dataclasses.fields(self)})
        if clash:
            raise ValueError(f"SweepRow.metrics may not hold the row's own fields {clash}; pass them as fields.")
        metrics = {str(k): float(v) for k, v in self.metrics.items()}
        object.__setattr__(self, "metrics", MappingProxyType(metrics))
        for name in OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    def to_dict(self) -> dict:
        """JSON-ready: ``method`` (if set), ``iterations``, the metrics, then the fields that are set."""
        out = {} if self.method is None else {"method": self.method}
        out["iterations"] = self.iterations
        out.update(self.metrics)
        out.update({name: getattr(self, name) for name in OPTIONAL if getattr(self, name) is not None})
        return out

    @classmethod
    def from_dict(cls, row: Mapping) -> SweepRow:
        """The inverse of :meth:`to_dict`: keys that are not fields are metrics."""
        if "iterations" not in row:
            raise KeyError(f"a sweep row needs an 'iterations' entry, got keys {sorted(row)}.")
        names = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
        return cls(
            metrics={k: v for k, v in row.items() if k not in names},
            **{k: v for k, v in row.items() if k in names},
        )

    def get(self, column: str) -> float | None:
        """The value of a field or a metric by name (None if the row does not have it)."""
        if column in self.metrics:
            return self.metrics[column]
        if column in OPTIONAL or column == "iterations":
            return getattr(self, column)
        return None


def _column(name: str, values, size: int) -> list:
    if values is None:
        return [None] * size
    values = np.asarray(values, dtype=float).reshape(-1)
    if values.shape != (size,):
        raise ValueError(f"sweep column {name!r} has {values.shape[0]} values for {size} iteration counts.")
    return values.tolist()


def sweep_rows(
    iterations: Sequence[int],
    metrics: Mapping[str, Sequence[float]],
    *,
    method: str | None = None,
    **columns: Sequence[float] | None,
) -> list[SweepRow]:
    """One :class:`SweepRow` per k from per-k columns, each with one value per iteration count.

    Args:
      iterations: iteration counts, strictly increasing, >= 0 (:func:`check_iterations`).
      metrics: {name: values} quality columns (``error``, ``auc`` ...), in the order they are written.
      method: the solver method of the sweep, if the rows should carry it.
      columns: any of ``residual``, ``converged_fraction``, ``seconds``, ``flops``, ``lipschitz_max``,
        ``lipschitz_mean`` (None or absent: not measured).
    """
    iterations = check_iterations(iterations)
    unknown = sorted(set(columns) - set(OPTIONAL))
    if unknown:
        raise TypeError(f"sweep_rows() got unknown column(s) {unknown}; the row fields are {list(OPTIONAL)}.")
    n = len(iterations)
    metric_cols = {name: _column(name, v, n) for name, v in metrics.items()}
    other = {name: _column(name, columns.get(name), n) for name in OPTIONAL}
    return [
        SweepRow(k, {name: col[i] for name, col in metric_cols.items()}, method, **{f: c[i] for f, c in other.items()})
        for i, k in enumerate(iterations)
    ]


def _value(row: SweepRow | Mapping, column: str):
    return row.get(column)


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def sweep_table(
    rows: Sequence[SweepRow | Mapping],
    columns: Mapping[str, str],
    *,
    formats: Mapping[str, str] | None = None,
    label: str | None = None,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """Markdown table: k, then ``columns`` ({column: title}) of every row.

    ``formats``: {column: format spec}, default ``.4g``; a missing or NaN value is ``-``.
    ``label`` adds a first "model" column naming the implicit model; ``baselines``
    ({name: {"iterations": depth, column: value}}) adds one row per explicit model (needs ``label``).
    """
    if baselines and label is None:
        raise ValueError("sweep_table: baselines need a label for the implicit model's rows.")
    formats = formats or {}
    header = (["model"] if label is not None else []) + ["k", *columns.values()]

    def line(name, row):
        cells = [_fmt(_value(row, c), formats.get(c, ".4g")) for c in columns]
        return ([name] if label is not None else []) + [_fmt(_value(row, "iterations"), "d"), *cells]

    body = [line(label, r) for r in rows] + [line(name, b) for name, b in (baselines or {}).items()]
    return markdown_table(header, body)


def plot_sweep(
    series: Mapping[str, Sequence[SweepRow | Mapping]],
    path,
    *,
    column: str,
    ylabel: str | None = None,
    title: str = "",
    baselines: Mapping[str, tuple[int, float]] | None = None,
    logy: bool = False,
) -> None:
    """Plot ``column`` of every series ({label: rows}) against k (symlog base 2) and save a PNG at ``path``.

    ``baselines``: {name: (depth, value)} drawn as single points (explicit models); ``logy``: log y axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, rows in series.items():
        pts = [(_value(r, "iterations"), _value(r, column)) for r in rows if _value(r, column) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=name)
    for i, (name, (depth, value)) in enumerate((baselines or {}).items()):
        if value is not None:
            ax.scatter([depth], [value], marker="*s^Dv"[i % 5], s=90, zorder=3, label=name)
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xlabel("iterations k")
    ax.set_ylabel(ylabel or column)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
