"""Blur operators (circular convolution by FFT) and the learned proximal-gradient cell for deblurring.

Images are arrays (B, H, W) (or (H, W)). The forward model is y = A x + noise with A a
circular convolution with a known kernel k: A x = F^-1(K * F x), K = F(k centred at (0, 0)),
so A^T x = F^-1(conj(K) * F x) exactly.

The cell (one proximal-gradient step with a learned denoiser D in place of the prox)::

    f(z; y) = D( z - eta * (A^T(A z - y) + lam * z) )

is the step of 1/2 ||A z - y||^2 + lam/2 ||z||^2 followed by D(v) = v - CNN(v) (a residual
CNN of 3x3 convolutions). Images are centred (x - 1/2, so lam shrinks towards mid-grey;
A preserves constants because sum(k) = 1). With lam = 0 it is exactly z <- D(z - eta A^T(Az - y)).
With CNN = 0 (D = identity) the fixed point solves (A^T A + lam I) z = A^T y, the Tikhonov
solution, and the map is a contraction with modulus max_w |1 - eta (|K_w|^2 + lam)| < 1.
eta = softplus(.) and lam = softplus(.) are learned and positive.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

KERNELS = ("gaussian", "motion")


# -- blur kernels and the operator --------------------------------------------------------------
def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Isotropic Gaussian (size, size), sum 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd integer >= 1, got {size}.")
    if sigma <= 0:
        raise ValueError(f"blur sigma must be > 0, got {sigma}.")
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def motion_kernel(size: int, angle_deg: float) -> np.ndarray:
    """Linear motion blur: a line of length ``size`` through the centre at ``angle_deg``, sum 1
    (drawn with bilinear weights on a 4x supersampled segment)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd integer >= 1, got {size}.")
    k = np.zeros((size, size))
    c = size // 2
    t = np.linspace(-c, c, 4 * size)
    a = np.deg2rad(angle_deg)
    for x, y in zip(c + t * np.cos(a), c - t * np.sin(a)):
        i0, j0 = int(np.floor(y)), int(np.floor(x))
        for i, wi in ((i0, 1 - (y - i0)), (i0 + 1, y - i0)):
            for j, wj in ((j0, 1 - (x - j0)), (j0 + 1, x - j0)):
                if 0 <= i < size and 0 <= j < size:
                    k[i, j] += wi * wj
    return k / k.sum()


def make_kernel(kind: str, size: int, param: float) -> np.ndarray:
    """``kind`` "gaussian" (param = sigma) or "motion" (param = angle in degrees)."""
    if kind == "gaussian":
        return gaussian_kernel(size, param)
    if kind == "motion":
        return motion_kernel(size, param)
    raise ValueError(f"kernel={kind!r} is not supported; choose one of {', '.join(map(repr, KERNELS))}.")


@dataclasses.dataclass(frozen=True)
class BlurOperator:
    """Circular convolution A on (..., H, W) images; ``khat`` = F(kernel centred at pixel (0, 0)), (H, W//2+1).

    Hashable by value (shape and the bytes of ``khat``), so it can be a static argument of a jitted
    function: equal operators share one compiled program.
    """

    khat: np.ndarray
    shape: tuple

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, BlurOperator)
            and tuple(self.shape) == tuple(other.shape)
            and np.array_equal(self.khat, other.khat)
        )

    def __hash__(self) -> int:
        return hash((tuple(self.shape), np.asarray(self.khat).tobytes()))

    @classmethod
    def from_kernel(cls, kernel: np.ndarray, shape: tuple) -> BlurOperator:
        kernel = np.asarray(kernel, dtype=np.float64)
        h, w = shape
        if kernel.ndim != 2 or kernel.shape[0] > h or kernel.shape[1] > w:
            raise ValueError(f"kernel of shape {kernel.shape} does not fit images of shape {shape}.")
        pad = np.zeros((h, w))
        pad[: kernel.shape[0], : kernel.shape[1]] = kernel
        pad = np.roll(pad, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), axis=(0, 1))
        return cls(np.fft.rfft2(pad), (h, w))

    def _apply(self, x, khat):
        return jnp.fft.irfft2(jnp.fft.rfft2(x) * khat.astype(_complex(x.dtype)), s=self.shape).astype(x.dtype)

    def A(self, x):
        """A x: blur."""
        return self._apply(x, self.khat)

    def AT(self, x):
        """A^T x: correlation with the kernel (the exact adjoint)."""
        return self._apply(x, np.conj(self.khat))

    def tikhonov(self, y, lam: float):
        """argmin_x ||A x - y||^2 + lam ||x||^2 = F^-1(conj(K) Y / (|K|^2 + lam)) (Wiener filter
        with a flat signal-to-noise ratio)."""
        filt = np.conj(self.khat) / (np.abs(self.khat) ** 2 + lam)
        return self._apply(y, filt)


def _complex(dtype):
    return jnp.complex128 if dtype == jnp.float64 else jnp.complex64


# -- the residual CNN denoiser ------------------------------------------------------------------
def init_cnn(key: jax.Array, channels: int, layers: int, dtype=jnp.float32) -> list:
    """Parameters [(w, b)] of ``layers`` 3x3 convolutions 1 -> C -> ... -> C -> 1 (HWIO weights).

    He initialisation; the last layer starts at zero so that D = identity at initialisation.
    """
    if layers < 2:
        raise ValueError(f"cnn_layers must be >= 2, got {layers}.")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}.")
    dims = [1] + [channels] * (layers - 1) + [1]
    keys = jax.random.split(key, layers)
    params = []
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        std = np.sqrt(2.0 / (9 * cin))
        w = (std * jax.random.normal(keys[i], (3, 3, cin, cout), dtype)).astype(dtype)
        if i == layers - 1:
            w = jnp.zeros_like(w)
        params.append((w, jnp.zeros((cout,), dtype)))
    return params


def cnn(params: list, v: jax.Array) -> jax.Array:
    """The CNN on images v (B, H, W) -> (B, H, W): conv-ReLU-...-conv, zero padding."""
    h = v[..., None]
    for i, (w, b) in enumerate(params):
        h = lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h[..., 0]


def denoise(params: list, v: jax.Array) -> jax.Array:
    """D(v) = v - CNN(v) (the CNN predicts the noise/artefact to remove)."""
    return v - cnn(params, v)


def num_params(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


# -- the proximal-gradient cell -----------------------------------------------------------------
def init_step(
    key: jax.Array, channels: int, layers: int, eta: float = 1.0, lam: float = 0.05, dtype=jnp.float32
) -> dict:
    """Parameters of one cell: {"cnn": [...], "eta": s, "lam": s} with eta = softplus(s_eta) etc."""
    if eta <= 0 or lam <= 0:
        raise ValueError(f"eta and lam must start > 0, got eta={eta}, lam={lam}.")
    inv = lambda v: jnp.asarray(np.log(np.expm1(v)), dtype)  # noqa: E731  softplus^-1
    return {"cnn": init_cnn(key, channels, layers, dtype), "eta": inv(eta), "lam": inv(lam)}


def step_sizes(params: dict):
    """(eta, lam), both positive."""
    return jax.nn.softplus(params["eta"]), jax.nn.softplus(params["lam"])


def gradient_step(z, y, op: BlurOperator, eta, lam):
    """z - eta (A^T(A z - y) + lam z)."""
    return z - eta * (op.AT(op.A(z) - y) + lam * z)


def prox_grad_cell(z, params: dict, y, op: BlurOperator, denoiser=None):
    """f(z; y) = D(z - eta (A^T(A z - y) + lam z)); ``denoiser(params, v)`` defaults to :func:`denoise`.

    z, y: (B, H, W) centred images. Returns (B, H, W).
    """
    eta, lam = step_sizes(params)
    v = gradient_step(z, y, op, eta, lam)
    return denoise(params["cnn"], v) if denoiser is None else denoiser(params, v)
