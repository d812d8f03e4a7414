"""Message passing over the bipartite constraint/variable graph of a batch of LPs (dense, jit-friendly).

A batch of LPs with m constraints and n variables is a dict of arrays

    A (B, m, n) edge weights (zero = no edge), b (B, m), eq (B, m) in {0, 1},
    c (B, n), l (B, n), u (B, n)

Constraint nodes carry (b_i, eq_i), variable nodes (c_j, l_j, u_j). With Â = A / ||A||_2
(per instance, so ||Â||_2 = 1) one block maps hidden states h_W (B, m, d), h_V (B, n, d) to

    h_W <- tanh(h_W S_ww + Â h_V S_wv + e_W),     h_V <- tanh(h_V S_vv + Â^T h_W S_vw + e_V)

with injections e_W = E_w [b, eq], e_V = E_v [c, l, u]. The readout is
ŷ_j = l_j + (u_j - l_j) sigmoid(r(h_V_j)) (r a small MLP), so ŷ always satisfies l <= ŷ <= u.
With ``feedback=True`` the block also reads the current solution estimate ŷ = readout(h_V):
constraint nodes get r = A ŷ - b (with |r|, relu(r)), variable nodes ŷ - l, u - ŷ and A^T r
(:func:`feedback_features`), each through a learned (d, 3) matrix U added before the tanh —
the state then carries a solution estimate that the iteration corrects, like a
primal-dual method.

- :class:`BipartiteCell` is that block weight-tied, for an ``ImplicitLayer``: S_ww, S_vv
  are spectrally normalized to gamma_self and S_wv, S_vw to gamma_msg, so the block is
  Lipschitz in (h_W, h_V) with constant <= gamma_self + gamma_msg ||Â||_2 = gamma_self +
  gamma_msg. Without feedback and with that sum < 1 the fixed point exists, is unique,
  and Picard converges for every input (guaranteed). The feedback path is not
  normalized, so with it (or a sum >= 1) contraction is only encouraged: check the
  solver residuals (``LayerInfo.converged``).
- :class:`ExplicitGNN` is ``depth`` untied copies of the block (plain weights), the baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from implicit_rec.layers import ImplicitLayer, SolverConfig, StateLinear, initializers
from solvers._options import check_int

INPUT_KEYS = ("A", "b", "eq", "c", "l", "u")


def check_inputs(x: dict, m: int | None = None, n: int | None = None) -> None:
    """One clear error for a malformed LP batch: keys ``INPUT_KEYS``, A (B, m, n) (of the model's m, n
    when given), b / eq (B, m), c / l / u (B, n)."""
    if not isinstance(x, dict) or set(x) != set(INPUT_KEYS):
        got = sorted(x) if isinstance(x, dict) else type(x).__name__
        missing = [k for k in INPUT_KEYS if isinstance(x, dict) and k not in x]
        hint = f" (missing {', '.join(map(repr, missing))})" if missing else ""
        raise ValueError(
            f"LP input must be a dict with keys {list(INPUT_KEYS)}, got {got}{hint}; "
            "lp.to_inputs builds one from raw LP arrays."
        )
    a_shape = tuple(getattr(x["A"], "shape", ()))
    want = f"(B, {'m' if m is None else m}, {'n' if n is None else n})"
    if len(a_shape) != 3 or (m is not None and a_shape[1] != m) or (n is not None and a_shape[2] != n):
        raise ValueError(f"LP input 'A' must have shape {want}, got {a_shape}.")
    bsz, m, n = a_shape
    for key, shape in (("b", (bsz, m)), ("eq", (bsz, m)), ("c", (bsz, n)), ("l", (bsz, n)), ("u", (bsz, n))):
        if tuple(x[key].shape) != shape:
            raise ValueError(
                f"LP input {key!r} must have shape {shape} to match A {a_shape}, got {tuple(x[key].shape)}."
            )


def normalized_adjacency(a: jax.Array) -> jax.Array:
    """Â = A / ||A||_2 per instance (B, m, n); an all-zero A stays zero."""
    sigma = jnp.linalg.norm(a, ord=2, axis=(-2, -1))
    return a / jnp.maximum(sigma, 1e-6)[:, None, None]


class Encoders(nnx.Module):
    """Node features -> injections e_W (B, m, d), e_V (B, n, d), and the box readout."""

    def __init__(self, d: int, *, rngs: nnx.Rngs):
        self.con = initializers.linear(2, d, rngs=rngs)
        self.var = initializers.linear(3, d, rngs=rngs)
        self.read_hidden = initializers.linear(d, d, rngs=rngs)
        self.read_out = initializers.linear(d, 1, rngs=rngs)

    def inject(self, x: dict) -> tuple[jax.Array, jax.Array]:
        e_w = self.con(jnp.stack([x["b"], x["eq"]], axis=-1))
        e_v = self.var(jnp.stack([x["c"], x["l"], x["u"]], axis=-1))
        return e_w, e_v

    def readout(self, h_v: jax.Array, x: dict) -> jax.Array:
        """ŷ (B, n) = l + (u - l) sigmoid(r(h_V)): inside the box by construction."""
        s = self.read_out(jnp.tanh(self.read_hidden(h_v)))[..., 0]
        return x["l"] + (x["u"] - x["l"]) * jax.nn.sigmoid(s)


def feedback_features(y_hat: jax.Array, x: dict) -> tuple[jax.Array, jax.Array]:
    """Features of the current solution estimate ŷ (B, n): per constraint r, |r|, relu(r) with
    r = A ŷ - b (B, m, 3); per variable ŷ - l, u - ŷ, (A^T r)_j (B, n, 3)."""
    r = jnp.einsum("bmn,bn->bm", x["A"], y_hat) - x["b"]
    f_w = jnp.stack([r, jnp.abs(r), jax.nn.relu(r)], axis=-1)
    f_v = jnp.stack([y_hat - x["l"], x["u"] - y_hat, jnp.einsum("bmn,bm->bn", x["A"], r)], axis=-1)
    return f_w, f_v


def _block(h_w, h_v, a_hat, e_w, e_v, s_ww, s_wv, s_vv, s_vw, fb=None):
    """One message-passing step (Jacobi: both node types read the previous states).

    ``fb = (f_w, f_v, U_w, U_v)`` adds the solution-estimate features f_w U_w^T, f_v U_v^T.
    """
    pre_w = h_w @ s_ww.T + jnp.einsum("bmn,bnd->bmd", a_hat, h_v) @ s_wv.T + e_w
    pre_v = h_v @ s_vv.T + jnp.einsum("bmn,bmd->bnd", a_hat, h_w) @ s_vw.T + e_v
    if fb is not None:
        f_w, f_v, u_w, u_v = fb
        pre_w, pre_v = pre_w + f_w @ u_w.T, pre_v + f_v @ u_v.T
    return jnp.tanh(pre_w), jnp.tanh(pre_v)


class BipartiteCell(nnx.Module):
    """The weight-tied block as an ImplicitLayer cell; state z (B, (m + n) d) = [h_W, h_V] flattened."""

    def __init__(
        self, d: int, *, rngs: nnx.Rngs, gamma_self: float = 0.45, gamma_msg: float = 0.45, feedback: bool = False
    ):
        check_int("d", d, 1)
        self.d = d
        self.enc = Encoders(d, rngs=rngs)
        self.feedback = feedback
        if feedback:
            self.u_w, self.u_v = (
                nnx.Param(0.1 * jax.random.normal(rngs.params(), (d, 3), jnp.float32)) for _ in range(2)
            )
        kw = dict(rngs=rngs, parameterization="spectral")
        self.s_ww, self.s_vv = (StateLinear(d, d, gamma=gamma_self, **kw) for _ in range(2))
        self.s_wv, self.s_vw = (StateLinear(d, d, gamma=gamma_msg, **kw) for _ in range(2))

    def prepare(self, x: dict) -> dict:
        e_w, e_v = self.enc.inject(x)
        bsz = e_w.shape[0]
        return {
            "a_hat": normalized_adjacency(x["A"]),
            "e_w": e_w,
            "e_v": e_v,
            "x": x,
            "mats": tuple(s.prepare() for s in (self.s_ww, self.s_wv, self.s_vv, self.s_vw)),
            "injection": jnp.concatenate([e_w.reshape(bsz, -1), e_v.reshape(bsz, -1)], axis=1),
        }

    def split(self, z: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
        """z (B, (m + n) d) -> h_W (B, m, d), h_V (B, n, d)."""
        bsz = z.shape[0]
        return z[:, : m * self.d].reshape(bsz, m, self.d), z[:, m * self.d :].reshape(bsz, -1, self.d)

    def __call__(self, z: jax.Array, ctx: dict) -> jax.Array:
        h_w, h_v = self.split(z, ctx["e_w"].shape[1])
        fb = None
        if self.feedback:
            fb = (*feedback_features(self.enc.readout(h_v, ctx["x"]), ctx["x"]), self.u_w[...], self.u_v[...])
        new_w, new_v = _block(h_w, h_v, ctx["a_hat"], ctx["e_w"], ctx["e_v"], *ctx["mats"], fb=fb)
        return jnp.concatenate([new_w.reshape(z.shape[0], -1), new_v.reshape(z.shape[0], -1)], axis=1)


class ImplicitGNN(nnx.Module):
    """ŷ = readout(h_V*) at the fixed point of :class:`BipartiteCell` (Anderson forward, IFT backward).

    ``model(x)`` returns (ŷ (B, n), LayerInfo); ``model.trajectory(x, steps, method)`` returns ŷ
    after every iteration k = 0..steps, shape (steps + 1, B, n).
    """

    def __init__(
        self,
        d: int,
        m: int,
        n: int,
        *,
        rngs: nnx.Rngs,
        gamma_self: float = 0.45,
        gamma_msg: float = 0.45,
        feedback: bool = False,
        train_solver: SolverConfig = SolverConfig(max_iter=30, tol=1e-4),
        eval_solver: SolverConfig = SolverConfig(max_iter=60, tol=1e-5),
    ):
        for name, value in (("d", d), ("m", m), ("n", n)):
            check_int(name, value, 1)
        self.m, self.n = m, n
        self.cell = BipartiteCell(d, rngs=rngs, gamma_self=gamma_self, gamma_msg=gamma_msg, feedback=feedback)
        self.layer = ImplicitLayer(
            self.cell, (m + n) * d, rngs=rngs, train_solver=train_solver, eval_solver=eval_solver
        )

    def __call__(self, x: dict):
        check_inputs(x, self.m, self.n)
        z, info = self.layer(x)
        return self.cell.enc.readout(self.cell.split(z, self.m)[1], x), info

    def trajectory(self, x: dict, steps: int, method: str = "picard") -> jax.Array:
        """ŷ after k = 0..steps iterations of ``method`` from z = 0, shape (steps + 1, B, n)."""
        check_inputs(x, self.m, self.n)
        readout = lambda z: self.cell.enc.readout(self.cell.split(z, self.m)[1], x)  # noqa: E731
        return self.layer.trajectory(x, steps, readout=readout, method=method)


class ExplicitGNN(nnx.Module):
    """``depth`` untied blocks from h = 0 (plain weights), then the same readout: ŷ (B, n)."""

    def __init__(self, d: int, *, rngs: nnx.Rngs, depth: int = 4, feedback: bool = False):
        for name, value in (("d", d), ("depth", depth)):
            check_int(name, value, 1)
        self.d, self.depth, self.feedback = d, depth, feedback
        self.enc = Encoders(d, rngs=rngs)
        init = nnx.initializers.orthogonal(scale=0.5)
        self.mats = nnx.List([nnx.Param(init(rngs.params(), (4, d, d), jnp.float32)) for _ in range(depth)])
        if feedback:
            self.fb = nnx.List(
                [nnx.Param(0.1 * jax.random.normal(rngs.params(), (2, d, 3), jnp.float32)) for _ in range(depth)]
            )

    def __call__(self, x: dict):
        check_inputs(x)
        e_w, e_v = self.enc.inject(x)
        a_hat = normalized_adjacency(x["A"])
        h_w, h_v = jnp.zeros_like(e_w), jnp.zeros_like(e_v)
        for t, mats in enumerate(self.mats):
            fb = None
            if self.feedback:
                fb = (*feedback_features(self.enc.readout(h_v, x), x), *self.fb[t][...])
            h_w, h_v = _block(h_w, h_v, a_hat, e_w, e_v, *mats[...], fb=fb)
        return self.enc.readout(h_v, x), None
