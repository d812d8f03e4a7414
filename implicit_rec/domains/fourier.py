"""Fourier neural operators on a periodic n x n grid: spectral convolution, Fourier layers, implicit FNO.

Fields are channels-last, v: (B, n, n, c). A Fourier layer is

    v -> act(K v + W v + b),   (K v)^_k = R_k^T v^_k for the kept modes k, 0 otherwise,

with R_k (c_in, c_out) complex for |k_x| < m, 0 <= k_y < m (``modes`` = m; the rfft2
half-plane) and W a pointwise (c_in, c_out) matrix.

Implicit FNO (weight-tied block with input injection u = lift(x)):

    z* = act(L(z* + u) + b),   L = K + W,   u_hat = project(z*),

solved by ``solvers.fixed_point`` through :class:`~implicit_rec.layers.ImplicitLayer`.
With ``gamma`` set, L is rescaled so that ||L||_2 = max_k ||R_k + W||_2 (Parseval; W
alone on the dropped modes) is at most gamma / Lip(act): the block is then a
gamma-contraction in z (unique fixed point, Anderson/Picard converge from z = 0).
Applied once from z = 0 the block is the one-layer FNO act(L u + b) with the same
parameters: the explicit model of equal parameters is :class:`ExplicitFNO` with depth 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from solvers._options import check_int

from ..layers import ImplicitLayer, SolverConfig, initializers

ACTIVATIONS = {"gelu": (jax.nn.gelu, 1.13), "tanh": (jnp.tanh, 1.0)}  # (function, Lipschitz bound)


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def check_modes(n: int, modes: int) -> None:
    """A grid of size n keeps modes m with 1 <= m and 2m <= n (rows -m..m-1 do not overlap)."""
    if not isinstance(modes, int) or modes < 1 or 2 * modes > n:
        raise ValueError(f"modes must be an integer with 1 <= modes <= n/2 = {n // 2}, got {modes!r}.")


def check_sizes(**sizes: int) -> None:
    """Every keyword an integer >= 1 (grid size, channels, widths)."""
    for name, value in sizes.items():
        check_int(name, value, 1)


def check_field(x: jax.Array, n: int, c_in: int) -> None:
    """x must be channels-last fields (B, n, n, c_in) on the model's grid."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4 or shape[1:] != (n, n, c_in):
        raise ValueError(
            f"the model expects input fields of shape (B, {n}, {n}, {c_in}) (batch, grid, grid, channels), got {shape}."
        )


def spectral_conv(v: jax.Array, weight: jax.Array) -> jax.Array:
    """K v for fields v (B, n, n, c_in) and complex mode weights (2m, m, c_in, c_out) -> (B, n, n, c_out).

    Mode rows 0..m-1 of ``weight`` act on k_x = 0..m-1, rows m..2m-1 on k_x = -m..-1;
    columns on k_y = 0..m-1. The other modes are dropped (truncation).
    """
    n = v.shape[1]
    m = weight.shape[1]
    check_modes(n, m)
    vh = jnp.fft.rfft2(v, axes=(1, 2))
    kept = jnp.concatenate([vh[:, :m, :m], vh[:, n - m :, :m]], axis=1)  # (B, 2m, m, c_in)
    mixed = jnp.einsum("bxyi,xyio->bxyo", kept, weight)
    out = jnp.zeros(vh.shape[:3] + (weight.shape[-1],), mixed.dtype)
    out = out.at[:, :m, :m].set(mixed[:, :m]).at[:, n - m :, :m].set(mixed[:, m:])
    return jnp.fft.irfft2(out, s=(n, n), axes=(1, 2)).astype(v.dtype)


def operator_norm(weight: jax.Array, w: jax.Array) -> jax.Array:
    """||K + W||_2 on real periodic fields: max over kept modes of ||R_k + W||_2 and ||W||_2."""
    per_mode = jnp.linalg.svd(weight + w.astype(weight.dtype), compute_uv=False)[..., 0]
    return jnp.maximum(jnp.max(per_mode), jnp.linalg.svd(w, compute_uv=False)[0])


class SpectralConv2d(nnx.Module):
    """Learned spectral convolution v -> K v (see :func:`spectral_conv`); v (B, n, n, c_in)."""

    def __init__(self, c_in: int, c_out: int, modes: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        if not isinstance(modes, int) or modes < 1:
            raise ValueError(f"modes must be an integer >= 1, got {modes!r}.")
        scale = 1.0 / (c_in * c_out) ** 0.5 / modes
        shape = (2 * modes, modes, c_in, c_out)
        self.modes = modes
        self.real = nnx.Param(scale * jax.random.normal(rngs.params(), shape, param_dtype))
        self.imag = nnx.Param(scale * jax.random.normal(rngs.params(), shape, param_dtype))

    def weight(self) -> jax.Array:
        """Complex mode weights (2m, m, c_in, c_out)."""
        return jax.lax.complex(self.real[...], self.imag[...])

    def __call__(self, v: jax.Array) -> jax.Array:
        return spectral_conv(v, self.weight())


class Pointwise(nnx.Module):
    """Per-grid-point linear map (B, n, n, c_in) -> (B, n, n, c_out) (a 1x1 convolution)."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs, bias: bool = True):
        self.linear = initializers.linear(c_in, c_out, use_bias=bias, rngs=rngs)

    def __call__(self, v: jax.Array) -> jax.Array:
        return self.linear(v)


class FourierLayer(nnx.Module):
    """One explicit Fourier layer v -> act(K v + W v + b), (B, n, n, c_in) -> (B, n, n, c_out)."""

    def __init__(self, c_in: int, c_out: int, modes: int, *, rngs: nnx.Rngs, activation: str = "gelu"):
        self.act = _activation(activation)[0]
        self.spectral = SpectralConv2d(c_in, c_out, modes, rngs=rngs)
        self.pointwise = Pointwise(c_in, c_out, rngs=rngs)

    def __call__(self, v: jax.Array) -> jax.Array:
        return self.act(self.spectral(v) + self.pointwise(v))


class Projection(nnx.Module):
    """Pointwise MLP readout (B, n, n, width) -> (B, n, n): Linear, GELU, Linear."""

    def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = Pointwise(width, hidden, rngs=rngs)
        self.out = Pointwise(hidden, 1, rngs=rngs)

    def __call__(self, v: jax.Array) -> jax.Array:
        return self.out(jax.nn.gelu(self.hidden(v)))[..., 0]


class FourierCell(nnx.Module):
    """The weight-tied block z -> act(L(z + u) + b) as an ImplicitLayer cell; state z flat (B, n*n*width).

    ``prepare(x)`` lifts x (B, n, n, c_in) to u = lift(x) (B, n, n, width) and forms the
    (rescaled, if ``gamma``) operator L once; ``__call__(z, ctx)`` applies the block.
    """

    def __init__(
        self,
        n: int,
        c_in: int,
        width: int,
        modes: int,
        *,
        rngs: nnx.Rngs,
        activation: str = "gelu",
        gamma: float | None = 0.9,
    ):
        check_sizes(n=n, c_in=c_in, width=width)
        check_modes(n, modes)
        if gamma is not None and not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1) (or None for no contraction bound), got {gamma!r}.")
        self.n, self.c_in, self.width = n, c_in, width
        self.act, self.act_lipschitz = _activation(activation)
        self.gamma = gamma
        self.lift = Pointwise(c_in, width, rngs=rngs)
        self.spectral = SpectralConv2d(width, width, modes, rngs=rngs)
        self.pointwise = Pointwise(width, width, rngs=rngs)

    def operator(self) -> tuple[jax.Array, jax.Array]:
        """(R, W) of L after the contraction rescaling: ||L|| <= gamma / Lip(act)."""
        r, w = self.spectral.weight(), self.pointwise.linear.kernel[...]
        if self.gamma is None:
            return r, w
        bound = self.gamma / self.act_lipschitz
        scale = jnp.minimum(1.0, bound / operator_norm(r, w))
        return r * scale.astype(r.dtype), w * scale

    def prepare(self, x: jax.Array) -> dict:
        check_field(x, self.n, self.c_in)
        u = self.lift(x)
        r, w = self.operator()
        return {"injection": u.reshape(u.shape[0], -1), "r": r, "w": w, "b": self.pointwise.linear.bias[...]}

    def __call__(self, z: jax.Array, ctx: dict) -> jax.Array:
        shape = (z.shape[0], self.n, self.n, self.width)
        y = z.reshape(shape) + ctx["injection"].reshape(shape)
        out = self.act(spectral_conv(y, ctx["r"]) + y @ ctx["w"] + ctx["b"])
        return out.reshape(z.shape)


class ImplicitFNO(nnx.Module):
    """x (B, n, n, c_in) -> u (B, n, n): lift, weight-tied Fourier block to a fixed point, project.

    Solver settings are those of :class:`~implicit_rec.layers.ImplicitLayer` (``train_solver``
    for training, ``eval_solver`` after ``.eval()``); ``self.layer.trajectory`` gives every
    iterate. Calling returns ``(u, LayerInfo)``.
    """

    def __init__(
        self,
        n: int,
        c_in: int,
        width: int,
        modes: int,
        *,
        rngs: nnx.Rngs,
        hidden: int = 64,
        activation: str = "gelu",
        gamma: float | None = 0.9,
        train_solver: SolverConfig | None = None,
        eval_solver: SolverConfig | None = None,
    ):
        check_sizes(n=n, c_in=c_in, width=width, hidden=hidden)
        self.n, self.width = n, width
        cell = FourierCell(n, c_in, width, modes, rngs=rngs, activation=activation, gamma=gamma)
        self.layer = ImplicitLayer(cell, n * n * width, rngs=rngs, train_solver=train_solver, eval_solver=eval_solver)
        self.project = Projection(width, hidden, rngs=rngs)

    def readout(self, z: jax.Array) -> jax.Array:
        """Flat states (B, n*n*width) -> predictions (B, n, n)."""
        return self.project(z.reshape(z.shape[0], self.n, self.n, self.width))

    def __call__(self, x: jax.Array):
        z, info = self.layer(x)
        return self.readout(z), info

    def trajectory(self, x: jax.Array, steps: int) -> jax.Array:
        """Predictions after k = 0..steps iterations of the eval solver, shape (steps + 1, B, n, n)."""
        return self.layer.trajectory(x, steps, readout=self.readout)


class ExplicitFNO(nnx.Module):
    """x (B, n, n, c_in) -> u (B, n, n): lift, ``depth`` untied Fourier layers, project.

    Depth 1 with the implicit model's width and modes has exactly its parameters (and
    computes its block once from z = 0, without the contraction rescaling).
    """

    def __init__(
        self,
        n: int,
        c_in: int,
        width: int,
        modes: int,
        *,
        rngs: nnx.Rngs,
        depth: int = 1,
        hidden: int = 64,
        activation: str = "gelu",
    ):
        check_sizes(n=n, c_in=c_in, width=width, hidden=hidden, depth=depth)
        check_modes(n, modes)
        self.n, self.c_in, self.depth = n, c_in, depth
        self.lift = Pointwise(c_in, width, rngs=rngs)
        self.layers = nnx.List(
            [FourierLayer(width, width, modes, rngs=rngs, activation=activation) for _ in range(depth)]
        )
        self.project = Projection(width, hidden, rngs=rngs)

    def __call__(self, x: jax.Array):
        check_field(x, self.n, self.c_in)
        v = self.lift(x)
        for layer in self.layers:
            v = layer(v)
        return self.project(v), None
