"""The sweep's Lipschitz ratios and FLOP counts against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_rec.sweep import _directions, _ratios, compiled_flops


@pytest.mark.slow
def test_ratios_of_a_linear_map_are_its_gain_along_each_direction():
    x = jax.random.normal(jax.random.key(0), (5, 3))
    A = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
    d = _directions(x, 4, 0.1, jax.random.key(1))
    np.testing.assert_allclose(
        jnp.linalg.norm(d, axis=-1), jnp.broadcast_to(0.1 * jnp.linalg.norm(x, axis=-1), (4, 5)), rtol=1e-5
    )
    r = _ratios(lambda v: v @ A, x, d)
    assert r.shape == (4, 5)
    np.testing.assert_allclose(r, jnp.linalg.norm(d @ A, axis=-1) / jnp.linalg.norm(d, axis=-1), rtol=1e-5)
    assert float(r.max()) <= 3.0 + 1e-5 and float(r.min()) >= 1.0 - 1e-5
    # a stacked output (K, n, d): ratios per k, here gains 1x and 2x the map's
    r2 = _ratios(lambda v: jnp.stack([v @ A, 2 * v @ A]), x, d)
    assert r2.shape == (4, 2, 5)
    np.testing.assert_allclose(r2[:, 1], 2 * r2[:, 0], rtol=1e-5)


def test_compiled_flops_count_a_matrix_product():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert compiled_flops(lambda a, b: a @ b, a, b) == 2 * 8 * 16 * 4
