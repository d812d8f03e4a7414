"""Random linear programs with HiGHS labels, generated from a seed and cached as .npz (no pickle).

Each instance is

    min_x c^T x   s.t.   A_i x = b_i (equality rows),  A_i x <= b_i (inequality rows),  l <= x <= u

with A (m, n) holding ``nnz`` standard-normal values at random positions, each row
an equality with probability ``p_eq``, c ~ c_scale * U(-1, 1), b ~ U(-1, 1), and
(l, u) two draws of N(0, bound_std^2) sorted so that l <= u. The label y* is the
solution returned by ``scipy.optimize.linprog(method="highs")``; only instances
with status 0 (solved) are kept, so infeasible and unbounded draws are dropped.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ._checks import check_fields, check_int, integer, number

FIELDS = ("A", "eq", "b", "c", "l", "u", "y", "obj")


@dataclasses.dataclass(frozen=True)
class LPSpec:
    """Distribution of the random LPs (the paper's setting by default)."""

    m: int = 10
    n: int = 50
    nnz: int = 100
    p_eq: float = 0.3
    c_scale: float = 0.01
    bound_std: float = 10.0

    def __post_init__(self):
        check_fields(self, _SPEC_CHECKS)
        if self.nnz > self.m * self.n:
            raise ValueError(f"LPSpec.nnz={self.nnz} exceeds m * n = {self.m * self.n}; lower nnz.")

    def tag(self) -> str:
        return f"m{self.m}-n{self.n}-nnz{self.nnz}-peq{self.p_eq:g}-c{self.c_scale:g}-bd{self.bound_std:g}"


_SPEC_CHECKS = {
    "m": integer(1),
    "n": integer(1),
    "nnz": integer(1),
    "p_eq": number(0.0, inclusive=True, high=1.0),
    "c_scale": number(0.0),
    "bound_std": number(0.0),
}


def sample_lp(rng: np.random.Generator, spec: LPSpec) -> dict:
    """One random LP: A (m, n), eq (m,) bool, b (m,), c (n,), l (n,), u (n,), all float64."""
    a = np.zeros(spec.m * spec.n)
    a[rng.choice(spec.m * spec.n, size=spec.nnz, replace=False)] = rng.standard_normal(spec.nnz)
    eq = rng.random(spec.m) < spec.p_eq
    b = rng.uniform(-1.0, 1.0, spec.m)
    c = spec.c_scale * rng.uniform(-1.0, 1.0, spec.n)
    lu = np.sort(rng.normal(0.0, spec.bound_std, (spec.n, 2)), axis=1)
    return {"A": a.reshape(spec.m, spec.n), "eq": eq, "b": b, "c": c, "l": lu[:, 0], "u": lu[:, 1]}


def solve_lp(lp: dict):
    """``linprog`` (HiGHS) on one instance: returns (x, objective) or None unless status == 0."""
    try:
        from scipy.optimize import linprog
    except ImportError as err:
        raise ImportError(
            "the LP domain labels its LPs with scipy's HiGHS solver and needs the domains extra: "
            "pip install 'implicit-rec[domains]'"
        ) from err

    eq = lp["eq"]
    res = linprog(
        lp["c"],
        A_ub=lp["A"][~eq] if (~eq).any() else None,
        b_ub=lp["b"][~eq] if (~eq).any() else None,
        A_eq=lp["A"][eq] if eq.any() else None,
        b_eq=lp["b"][eq] if eq.any() else None,
        bounds=np.stack([lp["l"], lp["u"]], axis=1),
        method="highs",
    )
    return (res.x, float(res.fun)) if res.status == 0 else None


def generate(num: int, seed: int, spec: LPSpec = LPSpec()) -> tuple[dict, int]:
    """``num`` solved LPs stacked along axis 0 (keys ``FIELDS``) and the number of draws it took.

    Deterministic in (num, seed, spec): draws are taken one by one from
    ``np.random.default_rng(seed)`` and the unsolved ones skipped.
    """
    num, seed = check_int("num", num, 1), check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    kept, draws = [], 0
    while len(kept) < num:
        draws += 1
        if draws > 20 * num + 100:
            raise RuntimeError(f"only {len(kept)} of {draws} random LPs were solvable; check the spec {spec}.")
        lp = sample_lp(rng, spec)
        sol = solve_lp(lp)
        if sol is not None:
            kept.append({**lp, "y": sol[0], "obj": sol[1]})
    return {k: np.stack([d[k] for d in kept]) for k in FIELDS}, draws


def load_or_generate(
    num: int, seed: int, spec: LPSpec = LPSpec(), cache_dir: str | os.PathLike | None = None
) -> tuple[dict, int]:
    """:func:`generate`, cached as ``cache_dir/lp-<spec>-N<num>-s<seed>.npz`` when cache_dir is given."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"lp-{spec.tag()}-N{num}-s{seed}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in FIELDS}, int(f["draws"])
    data, draws = generate(num, seed, spec)
    if path is not None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, draws=np.asarray(draws), **data)
    return data, draws
