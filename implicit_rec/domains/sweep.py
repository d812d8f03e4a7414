"""Test-time-iteration sweep shared by the domain experiments: per-k table and its plot.

A trained implicit model is run once for K = max(ks) iterations (``solvers.iterate``
or ``ImplicitLayer.trajectory``); the readout at each k in ``ks`` gives a test error
and, on perturbed inputs, an empirical Lipschitz constant. The table rows are

    {"k": k, "error": e_k, "lipschitz_max": L_k^max, "lipschitz_mean": L_k^mean}

and :func:`plot_sweep` draws one column of them against k on a log2 axis
(k = 0 included: symlog with a linear part on [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from solvers._options import check_int

DEFAULT_KS = (0, 1, 2, 4, 8, 16, 32, 64)


def check_ks(ks: Sequence[int], name: str = "ks") -> tuple[int, ...]:
    """ks as a strictly increasing tuple of integers >= 0 (one clear error otherwise).

    Every entry must be an integer (NumPy integers too): 1.5 or True is an error, not truncated,
    and a string such as "012" is not a sequence of counts.
    """
    if isinstance(ks, (str, bytes)) or not isinstance(ks, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of integers such as (0, 1, 2, 4), got {ks!r}.")
    out = tuple(check_int(f"{name}[{i}]", k, 0) for i, k in enumerate(ks))
    if not out or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be a non-empty strictly increasing sequence of integers >= 0, got {ks!r}.")
    return out


def iteration_sweep(
    ks: Sequence[int],
    error_fn: Callable[[tuple], Sequence[float]],
    lipschitz_fn: Callable[[tuple], tuple] | None = None,
) -> list[dict]:
    """Rows {k, error, lipschitz_max, lipschitz_mean} for every k in ks.

    Args:
      ks: iteration counts, strictly increasing, >= 0.
      error_fn: ``error_fn(ks) -> (len(ks),)`` test errors at those iteration
        counts (compute them from one trajectory pass).
      lipschitz_fn: optional ``lipschitz_fn(ks) -> (max, mean)``, each (len(ks),),
        e.g. :func:`trajectory_lipschitz`; without it the Lipschitz entries are None.
    """
    ks = check_ks(ks)
    errors = np.asarray(error_fn(ks), dtype=float).reshape(-1)
    if errors.shape != (len(ks),):
        raise ValueError(f"error_fn returned {errors.shape[0]} values for {len(ks)} iteration counts.")
    lmax = lmean = [None] * len(ks)
    if lipschitz_fn is not None:
        lmax, lmean = (np.asarray(v, dtype=float).reshape(-1) for v in lipschitz_fn(ks))
        if lmax.shape != (len(ks),) or lmean.shape != (len(ks),):
            raise ValueError(f"lipschitz_fn must return (max, mean) with {len(ks)} values each.")
        lmax, lmean = lmax.tolist(), lmean.tolist()
    return [
        {"k": k, "error": float(e), "lipschitz_max": a, "lipschitz_mean": b}
        for k, e, a, b in zip(ks, errors, lmax, lmean)
    ]


def trajectory_lipschitz(traj_fn: Callable, x, deltas) -> tuple[jax.Array, jax.Array]:
    """Empirical Lipschitz constant of every readout of a trajectory, from one call of ``traj_fn``.

    ``traj_fn(x)`` returns an array (K, B, ...) — the model output after each of K
    iteration counts for a batch x (a pytree whose leaves have batch axis 0; samples
    must not interact). ``deltas`` has x's structure with an extra leading axis P.
    x and its P perturbed copies are stacked into one batch of (P + 1) B samples.
    The ratio for perturbation p, sample b and count k is
    ||traj_fn(x + d_p)[k, b] - traj_fn(x)[k, b]|| / ||d_p[b]|| (norm over all leaves
    of one sample), exactly that of ``solvers.empirical_lipschitz`` applied to the
    k-th readout. Returns (max, mean) over (p, b), each of shape (K,).
    """
    num_p = jax.tree.leaves(deltas)[0].shape[0]
    batch = jax.tree.leaves(x)[0].shape[0]
    stacked = jax.tree.map(lambda a, d: jnp.concatenate([a[None], a[None] + d]).reshape((-1,) + a.shape[1:]), x, deltas)
    out = traj_fn(stacked)
    out = out.reshape(out.shape[0], num_p + 1, batch, -1)  # (K, P + 1, B, ...)
    dnorm = jnp.sqrt(sum(jnp.sum(d.reshape(num_p, batch, -1) ** 2, axis=-1) for d in jax.tree.leaves(deltas)))
    ratios = jnp.linalg.norm(out[:, 1:] - out[:, :1], axis=-1) / dnorm[None]  # (K, P, B)
    return jnp.max(ratios, axis=(1, 2)), jnp.mean(ratios, axis=(1, 2))


def plot_sweep(
    rows: Sequence[Mapping],
    path,
    *,
    key: str = "error",
    ylabel: str | None = None,
    title: str = "",
    baselines: Mapping[str, tuple] | None = None,
    logy: bool = False,
    label: str = "implicit",
    series: Mapping[str, Sequence[Mapping]] | None = None,
) -> None:
    """Plot ``row[key]`` against k (log2 axis) and save a PNG to ``path``.

    Args:
      rows: sweep rows of one implicit model (or use ``series`` for several).
      key: the column to plot ("error", "lipschitz_max", "lipschitz_mean", ...).
      baselines: {name: (depth, value)} drawn as single points (explicit models).
      series: {label: rows} to draw several implicit models on one figure
        (``rows`` and ``label`` are then ignored; pass rows=None).
      logy: logarithmic y axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = dict(series) if series is not None else {label: rows}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, rs in curves.items():
        pts = [(r["k"], r[key]) for r in rs if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=name)
    for i, (name, (depth, value)) in enumerate((baselines or {}).items()):
        ax.scatter([depth], [value], marker="*s^Dv"[i % 5], s=90, zorder=3, label=name)
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xlabel("iterations k")
    ax.set_ylabel(ylabel or key)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_table(rows: Sequence[Mapping], *, baselines: Mapping[str, tuple] | None = None) -> str:
    """Markdown table k | error | Lipschitz max | Lipschitz mean (+ baselines as extra rows)."""
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    lines = ["| model | k | error | Lipschitz max | Lipschitz mean |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| implicit | {r['k']} | {fmt(r['error'])} | {fmt(r.get('lipschitz_max'))} | {fmt(r.get('lipschitz_mean'))} |"
        for r in rows
    ]
    for name, b in (baselines or {}).items():
        depth, err = b[0], b[1]
        lmax, lmean = (b[2], b[3]) if len(b) >= 4 else (None, None)
        lines.append(f"| {name} | {depth} | {fmt(err)} | {fmt(lmax)} | {fmt(lmean)} |")
    return "\n".join(lines)
