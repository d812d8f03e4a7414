"""Benchmark of ``solvers.fixed_point`` against jaxopt and optimistix on batched DEQ solves.

Run from the repository root::

    python -m benchmarks.solvers [--quick]

Writes ``benchmarks/results/solvers.json`` and ``benchmarks/results/solvers.md`` and
prints the markdown. Needs the optional competitors: ``pip install -e .[bench]``.

What is measured (float32, B = 1024 samples, d = 128, relative tolerance 1e-4):

* Problems: f(z, x) = tanh(z W^T + x U^T + b), solved for every sample.
  - easy: random Gaussian W rescaled to spectral norm 0.9 (Picard: ~a dozen steps);
  - hard: W = Q diag(lambda) Q^T with lambda evenly spaced in [0, 0.97] and small
    inputs, so tanh stays near-linear and Picard needs hundreds of steps.
* Speed: for each (problem, solver) the median wall time of a jitted, warmed-up
  forward solve and of forward + backward (jax.grad of sum(z* * A) w.r.t. W, U, b).
  Solvers: this library's Anderson and Picard (stop="rel", grad="ift"); jaxopt
  AndersonAcceleration (history 5, ridge 1e-4) and FixedPointIteration with
  implicit_diff=True; optimistix FixedPointIteration with its default
  ImplicitAdjoint. Competitors are vmapped over the batch so that, like ours,
  every sample stops on its own. Their stopping rules are absolute, so their
  tolerance is 1e-4 * median ||f(z*)|| from a reference solve (see ``notes``).
  The final relative residual ||f(z) - z|| / ||f(z)|| is recomputed here for every
  solver. Repeats run round-robin over all solvers; medians are reported.
* Memory: XLA's compiled temporary bytes of the jitted gradient for grad="ift"
  vs grad="unroll" at max_iter = 10, 100, 1000 (compiled only, never run).
* Anderson overhead: per-iteration time of our Anderson minus our Picard on the
  hard problem (tol=1e-9 so nothing stops early; per-iteration time is the
  difference quotient between two max_iter values), as a fraction of one f
  evaluation timed by a jitted lax.fori_loop of f.
* Targets are evaluated and reported as PASS/FAIL; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import solvers
from implicit_rec.atomic import write_json_atomic, write_text_atomic
from implicit_rec.tables import markdown_table

from .common import RESULTS, machine_info, median_times

B, D, TOL, MAX_ITER = 1024, 128, 1e-4, 1000
JAXOPT_HISTORY, JAXOPT_RIDGE = 5, 1e-4
HARD_X_SCALE = 0.003  # keeps |z*| <= ~0.1, i.e. tanh' >= 0.99: near-linear, slow for Picard
OVERHEAD_ITERS = (10, 60)
OVERHEAD_TARGET = 0.25  # Anderson-minus-Picard time per iteration, as a fraction of one f evaluation
MEMORY_ITERS = (10, 100, 1000)
INSTALL_HINT = "the solver benchmark needs jaxopt and optimistix: pip install -e .[bench]"


# ----------------------------------------------------------------------------- problems


def deq(z, x, W, U, b):
    """One DEQ layer; works on a single sample (d,) or a batch (B, d)."""
    return jnp.tanh(z @ W.T + x @ U.T + b)


def make_problem(name: str, seed: int = 0) -> dict:
    """Parameters (W, U, b), inputs x, start z0 and loss weights A of one problem."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((D, D)) / np.sqrt(D)
    if name == "easy":
        W = rng.standard_normal((D, D))
        W *= 0.9 / np.linalg.norm(W, 2)
        x, b = rng.standard_normal((B, D)), 0.1 * rng.standard_normal(D)
    else:
        Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
        W = (Q * np.linspace(0.0, 0.97, D)) @ Q.T
        x, b = HARD_X_SCALE * rng.standard_normal((B, D)), np.zeros(D)
    A = rng.standard_normal((B, D))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return dict(params=(f32(W), f32(U), f32(b)), x=f32(x), z0=jnp.zeros((B, D), jnp.float32), A=f32(A))


def rel_residual(z, x, params):
    """Per-sample ||f(z) - z|| / (||f(z)|| + 1e-12), the same metric for every solver."""
    fz = deq(z, x, *params)
    return jnp.linalg.norm(fz - z, axis=-1) / (jnp.linalg.norm(fz, axis=-1) + 1e-12)


def reference_scale(prob: dict) -> np.ndarray:
    """Per-sample ||f(z*)|| from a tight solve: converts relative tolerance to absolute."""
    z, _ = jax.jit(lambda p, x, z0: solvers.fixed_point(deq, z0, x, *p, max_iter=MAX_ITER, tol=1e-6))(
        prob["params"], prob["x"], prob["z0"]
    )
    return np.asarray(jnp.linalg.norm(deq(z, prob["x"], *prob["params"]), axis=-1))


# ----------------------------------------------------------------------------- solvers
# Each solver is solve(params, x, z0) -> (z, per-sample iteration counts).


def ours(method: str) -> Callable:
    def solve(params, x, z0):
        z, info = solvers.fixed_point(
            deq, z0, x, *params, method=method, max_iter=MAX_ITER, tol=TOL, stop="rel", grad="ift"
        )
        return z, info.nstep

    return solve


def _import_jaxopt():
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*JAXopt is no longer maintained.*")
            import jaxopt
    except ImportError as e:
        raise SystemExit(f"{e}: {INSTALL_HINT}") from e
    return jaxopt


def _import_optimistix():
    try:
        import optimistix
    except ImportError as e:
        raise SystemExit(f"{e}: {INSTALL_HINT}") from e
    return optimistix


def jaxopt_solver(kind: str, abs_tol: float) -> Callable:
    jaxopt = _import_jaxopt()
    if kind == "anderson":
        solver = jaxopt.AndersonAcceleration(
            fixed_point_fun=deq,
            history_size=JAXOPT_HISTORY,
            ridge=JAXOPT_RIDGE,
            tol=abs_tol,
            maxiter=MAX_ITER,
            implicit_diff=True,
        )
    else:
        solver = jaxopt.FixedPointIteration(fixed_point_fun=deq, tol=abs_tol, maxiter=MAX_ITER, implicit_diff=True)

    def solve(params, x, z0):
        out = jax.vmap(lambda z0_b, x_b: solver.run(z0_b, x_b, *params))(z0, x)
        return out.params, out.state.iter_num

    return solve


def optimistix_solver(abs_tol: float) -> Callable:
    optx = _import_optimistix()
    # optimistix scales errors elementwise by atol + rtol * |f_i|; rtol = 0 with the
    # two-norm gives exactly the absolute criterion ||f(z) - z|| < abs_tol used for jaxopt.
    solver = optx.FixedPointIteration(rtol=0.0, atol=abs_tol, norm=optx.two_norm)

    def solve(params, x, z0):
        def one(z0_b, x_b):
            sol = optx.fixed_point(
                lambda z, a: deq(z, *a), solver, z0_b, (x_b, *params), max_steps=MAX_ITER, throw=False
            )
            return sol.value, sol.stats["num_steps"]

        return jax.vmap(one)(z0, x)

    return solve


def all_solvers(abs_tol: float) -> dict[str, Callable]:
    return {
        "ours anderson": ours("anderson"),
        "ours picard": ours("picard"),
        "jaxopt anderson": jaxopt_solver("anderson", abs_tol),
        "jaxopt picard": jaxopt_solver("picard", abs_tol),
        "optimistix picard": optimistix_solver(abs_tol),
    }


# ----------------------------------------------------------------------------- timing


def bench_problem(name: str, repeats: int) -> dict:
    """Forward and forward+backward times, iterations and residuals of every solver."""
    prob = make_problem(name)
    p, x, z0, A = prob["params"], prob["x"], prob["z0"], prob["A"]
    scale = reference_scale(prob)
    abs_tol = TOL * float(np.median(scale))
    thunks, checks = {}, {}
    for sname, solve in all_solvers(abs_tol).items():
        fwd = jax.jit(solve)
        grad = jax.jit(jax.grad(lambda q, s=solve: jnp.sum(s(q, x, z0)[0] * A)))
        thunks[(sname, "fwd")] = lambda fwd=fwd: fwd(p, x, z0)
        thunks[(sname, "fwd+bwd")] = lambda grad=grad: grad(p)
        checks[sname] = fwd
    times = median_times(thunks, repeats)
    solvers_out = {}
    for sname, fwd in checks.items():
        z, iters = fwd(p, x, z0)
        res = rel_residual(z, x, p)
        solvers_out[sname] = dict(
            fwd_ms=1e3 * times[(sname, "fwd")],
            fwd_bwd_ms=1e3 * times[(sname, "fwd+bwd")],
            iters_max=int(jnp.max(iters)),
            iters_mean=float(jnp.mean(iters)),
            rel_residual_max=float(jnp.max(res)),
            rel_residual_median=float(jnp.median(res)),
            frac_within_tol=float(jnp.mean(res <= TOL)),
        )
    add_speedups(solvers_out)
    return dict(
        abs_tol_competitors=abs_tol,
        ref_norm_fz={"min": float(scale.min()), "median": float(np.median(scale)), "max": float(scale.max())},
        solvers=solvers_out,
    )


def add_speedups(rows: dict) -> None:
    """fwd+bwd time of each competitor divided by ours (> 1: ours is faster)."""
    competitors = [n for n in rows if not n.startswith("ours")]
    best = min(competitors, key=lambda n: rows[n]["fwd_bwd_ms"])
    for name, row in rows.items():
        if name.startswith("ours"):
            row["speedup_vs_best_competitor"] = rows[best]["fwd_bwd_ms"] / row["fwd_bwd_ms"]
            row["best_competitor"] = best
            for c in ("jaxopt anderson", "optimistix picard"):
                row[f"speedup_vs_{c.replace(' ', '_')}"] = rows[c]["fwd_bwd_ms"] / row["fwd_bwd_ms"]


# ----------------------------------------------------------------------------- memory


def backward_temp_bytes(grad: str, max_iter: int, prob: dict) -> tuple[int, float]:
    """Compiled temp bytes of the jitted gradient (never executed), and compile seconds."""
    x, z0, A = prob["x"], prob["z0"], prob["A"]

    def loss(params):
        z, _ = solvers.fixed_point(deq, z0, x, *params, method="anderson", max_iter=max_iter, tol=1e-30, grad=grad)
        return jnp.sum(z * A)

    t0 = time.perf_counter()
    compiled = jax.jit(jax.grad(loss)).lower(prob["params"]).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes), time.perf_counter() - t0


def bench_memory(quick: bool) -> list[dict]:
    prob = make_problem("easy")
    rows = []
    for grad in ("ift", "unroll"):
        for n in MEMORY_ITERS:
            if quick and grad == "unroll" and n == max(MEMORY_ITERS):
                continue
            temp, secs = backward_temp_bytes(grad, n, prob)
            rows.append(dict(grad=grad, max_iter=n, batch=B, temp_bytes=temp, temp_mib=temp / 2**20, compile_s=secs))
    return rows


# ----------------------------------------------------------------------------- overhead


def bench_overhead(repeats: int) -> dict:
    """Anderson-minus-Picard time per iteration, relative to one f evaluation."""
    prob = make_problem("hard")
    p, x, z0 = prob["params"], prob["x"], prob["z0"]
    n1, n2 = OVERHEAD_ITERS
    thunks, nsteps = {}, {}
    for n in (n1, n2):
        for method in ("anderson", "picard"):
            fn = jax.jit(
                lambda p, x, z0, m=method, n=n: solvers.fixed_point(deq, z0, x, *p, method=m, max_iter=n, tol=1e-9)
            )
            thunks[(method, n)] = lambda fn=fn: fn(p, x, z0)
            nsteps[(method, n)] = fn
        f_loop = jax.jit(lambda p, x, z0, n=n: lax.fori_loop(0, n, lambda _, z: deq(z, x, *p), z0))
        thunks[("f", n)] = lambda f_loop=f_loop: f_loop(p, x, z0)
    t = median_times(thunks, repeats)
    per_iter = {k: (t[(k, n2)] - t[(k, n1)]) / (n2 - n1) for k in ("anderson", "picard", "f")}
    no_early_stop = all(int(jnp.min(fn(p, x, z0)[1].nstep)) == n for (_, n), fn in nsteps.items())
    fraction = (per_iter["anderson"] - per_iter["picard"]) / per_iter["f"]
    return dict(
        iters=[n1, n2],
        repeats=repeats,
        no_early_stop=no_early_stop,
        anderson_per_iter_us=1e6 * per_iter["anderson"],
        picard_per_iter_us=1e6 * per_iter["picard"],
        f_eval_us=1e6 * per_iter["f"],
        overhead_fraction=fraction,
        target_fraction=OVERHEAD_TARGET,
        **{"pass": bool(fraction <= OVERHEAD_TARGET)},
    )


# ----------------------------------------------------------------------------- report


def evaluate_targets(problems: dict, memory: list, overhead: dict) -> list[dict]:
    def fb(prob, solver):
        return problems[prob]["solvers"][solver]["fwd_bwd_ms"]

    def best(prob, ours_side):
        rows = problems[prob]["solvers"]
        return min(r["fwd_bwd_ms"] for n, r in rows.items() if n.startswith("ours") == ours_side)

    hard_ours, easy_ours = best("hard", True), best("easy", True)
    ift = {r["max_iter"]: r["temp_bytes"] for r in memory if r["grad"] == "ift"}
    ift_ratio = ift[max(ift)] / max(ift[min(ift)], 1)
    picard_steps = problems["hard"]["solvers"]["ours picard"]["iters_max"]
    targets = [
        (
            "hard: ours fwd+bwd >= 2x faster than jaxopt anderson (speedup)",
            fb("hard", "jaxopt anderson") / hard_ours,
            lambda v: v >= 2.0,
        ),
        (
            "hard: ours fwd+bwd faster than optimistix (speedup)",
            fb("hard", "optimistix picard") / hard_ours,
            lambda v: v > 1.0,
        ),
        (
            "easy: best of ours fwd+bwd not slower than best competitor (speedup)",
            best("easy", False) / easy_ours,
            lambda v: v >= 1.0,
        ),
        (
            f"anderson per-iteration overhead <= {100 * OVERHEAD_TARGET:.0f}% of one f evaluation",
            overhead["overhead_fraction"],
            lambda v: v <= OVERHEAD_TARGET,
        ),
        (
            f"ift backward temp memory at max_iter={max(ift)} within 10% of max_iter={min(ift)} (ratio)",
            ift_ratio,
            lambda v: v <= 1.10,
        ),
        ("sanity: picard needs >= 150 steps on the hard problem (max steps)", picard_steps, lambda v: v >= 150),
    ]
    return [dict(name=n, value=float(v), **{"pass": bool(ok(v))}) for n, v, ok in targets]


def _fmt_x(row, key):
    return f"{row[key]:.2f}x" if key in row else "-"


def markdown(report: dict) -> str:
    lines = [
        "# Fixed-point solver benchmark",
        "",
        f"B={B}, d={D}, float32, relative tol {TOL:g}; medians of "
        f"{report['config']['repeats']} round-robin repeats; "
        f"{report['machine']['platform']}, {report['machine']['cpu_count']} CPUs, "
        f"jax {report['machine']['jax']}.",
        "",
        markdown_table(
            [
                "problem",
                "solver",
                "fwd ms",
                "fwd+bwd ms",
                "iters max / mean",
                "max rel residual",
                "speedup vs best comp.",
                "vs jaxopt anderson",
                "vs optimistix",
            ],
            [
                [
                    pname,
                    sname,
                    f"{r['fwd_ms']:.1f}",
                    f"{r['fwd_bwd_ms']:.1f}",
                    f"{r['iters_max']} / {r['iters_mean']:.1f}",
                    f"{r['rel_residual_max']:.2e}",
                    _fmt_x(r, "speedup_vs_best_competitor"),
                    _fmt_x(r, "speedup_vs_jaxopt_anderson"),
                    _fmt_x(r, "speedup_vs_optimistix_picard"),
                ]
                for pname, prob in report["problems"].items()
                for sname, r in prob["solvers"].items()
            ],
            align="ll" + "r" * 7,
        ),
        "",
        "Competitor absolute tolerance = 1e-4 x median ||f(z*)|| of a reference solve: "
        + ", ".join(f"{k} {v['abs_tol_competitors']:.3g}" for k, v in report["problems"].items())
        + ". "
        + report["config"]["notes"]["tolerance"],
        "",
        markdown_table(
            ["grad", "max_iter", "backward temp MiB", "compile s"],
            [[r["grad"], r["max_iter"], f"{r['temp_mib']:.1f}", f"{r['compile_s']:.1f}"] for r in report["memory"]],
        ),
    ]
    o = report["anderson_overhead"]
    lines += [
        "",
        f"Anderson overhead: {'PASS' if o['pass'] else 'FAIL'} ({100 * o['overhead_fraction']:.1f}% of f, "
        f"target <= {100 * o['target_fraction']:.0f}%): {o['anderson_per_iter_us']:.0f} us/iter vs Picard "
        f"{o['picard_per_iter_us']:.0f} us/iter; one f evaluation {o['f_eval_us']:.0f} us "
        f"(hard problem, iterations {o['iters'][0]}->{o['iters'][1]}, no early stop: {o['no_early_stop']}).",
        "",
        "Targets:",
        "",
    ]
    for t in report["targets"]:
        lines.append(f"- {'PASS' if t['pass'] else 'FAIL'}: {t['name']}: {t['value']:.3g}")
    return "\n".join(lines) + "\n"


def competitor_versions() -> dict:
    import importlib.metadata as md

    return dict(jaxopt=md.version("jaxopt"), optimistix=md.version("optimistix"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, no 1000-iteration unroll memory (smoke run)"
    )
    args = parser.parse_args(argv)
    repeats, overhead_repeats = (3, 5) if args.quick else (7, 21)
    _import_jaxopt(), _import_optimistix()  # fail early with the install hint
    t0 = time.perf_counter()
    problems = {name: bench_problem(name, repeats) for name in ("easy", "hard")}
    memory = bench_memory(args.quick)
    overhead = bench_overhead(overhead_repeats)
    report = dict(
        machine=machine_info(**competitor_versions()),
        config=dict(
            batch=B,
            dim=D,
            dtype="float32",
            tol=TOL,
            stop="rel",
            max_iter=MAX_ITER,
            repeats=repeats,
            quick=args.quick,
            hard_x_scale=HARD_X_SCALE,
            hard_eigenvalues="linspace(0, 0.97, d)",
            easy_spectral_norm=0.9,
            jaxopt_anderson=dict(history_size=JAXOPT_HISTORY, ridge=JAXOPT_RIDGE, implicit_diff=True),
            notes=dict(
                tolerance="jaxopt (||f(z)-z|| <= tol) and optimistix (rtol=0, atol=tol, "
                "two_norm: ||f(z)-z|| < tol) stop on an absolute residual; tol = "
                "1e-4 x median per-sample ||f(z*)|| of a reference solve, so "
                "samples with smaller ||f(z*)|| stop slightly above relative "
                "1e-4. optimistix's rtol scales each element by |f_i|, a much "
                "stricter elementwise rule, hence rtol=0.",
                batching="competitors are jax.vmap-ed per-sample solves (per-sample stopping, like ours)",
                iterations="as reported by each solver (ours: info.nstep; jaxopt: "
                "state.iter_num; optimistix: stats['num_steps'])",
                gradients="ours grad='ift'; jaxopt implicit_diff=True (default normal-CG "
                "solve); optimistix default ImplicitAdjoint",
                memory="anderson, easy-problem shapes, tol=1e-30; compiled only",
            ),
        ),
        problems=problems,
        memory=memory,
        anderson_overhead=overhead,
        targets=evaluate_targets(problems, memory, overhead),
    )
    report["runtime_s"] = time.perf_counter() - t0
    md = markdown(report)
    write_json_atomic(RESULTS / "solvers.json", report)
    write_text_atomic(RESULTS / "solvers.md", md)
    print(md)
    print(f"total runtime {report['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
