"""Bucketed initializers: JAX's values bit for bit, one compiled sampler per power of two."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec.layers import initializers

SHAPES = [(1, 1), (17, 33), (1002, 8), (5, 7, 3), (4001, 16)]
CASES = [
    (initializers.lecun_normal, lambda: jax.nn.initializers.lecun_normal()),
    (initializers.embed_normal, lambda: jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)),
    (
        lambda: initializers.variance_scaling(2.0, "fan_avg", "truncated_normal"),
        lambda: jax.nn.initializers.variance_scaling(2.0, "fan_avg", "truncated_normal"),
    ),
    (
        lambda: initializers.variance_scaling(0.5, "fan_out", "normal"),
        lambda: jax.nn.initializers.variance_scaling(0.5, "fan_out", "normal"),
    ),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_values_equal_jax_initializers_bit_for_bit(shape, case):
    ours, reference = (make() for make in CASES[case])
    key = jax.random.key(case)
    got, expected = ours(key, shape), reference(key, shape)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_modules_equal_flax_defaults_and_explicit_initializers_still_win():
    pairs = [
        (initializers.linear(7, 3, rngs=nnx.Rngs(4)), nnx.Linear(7, 3, rngs=nnx.Rngs(4))),
        (initializers.embed(1002, 8, rngs=nnx.Rngs(4)), nnx.Embed(1002, 8, rngs=nnx.Rngs(4))),
        (initializers.layer_norm(6, rngs=nnx.Rngs(4)), nnx.LayerNorm(6, rngs=nnx.Rngs(4))),
    ]
    for ours, flax_default in pairs:
        a, b = nnx.state(ours, nnx.Param), nnx.state(flax_default, nnx.Param)
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    ones = initializers.linear(2, 2, rngs=nnx.Rngs(0), kernel_init=nnx.initializers.ones_init())
    assert np.all(np.asarray(ones.kernel[...]) == 1.0)


def test_abstract_and_traced_construction_give_the_same_shapes_and_values():
    shape = nnx.eval_shape(lambda: initializers.linear(5, 9, rngs=nnx.Rngs(1)))
    assert shape.kernel.shape == (5, 9)
    traced = jax.jit(lambda key: initializers.lecun_normal()(key, (5, 9)))(jax.random.key(1))
    expected = jax.nn.initializers.lecun_normal()(jax.random.key(1), (5, 9))
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(expected))


def test_one_sampler_compiles_per_power_of_two(caplog):
    init = initializers.lecun_normal()
    init(jax.random.key(0), (4096 + 1, 1))  # compiles the 8192-value sampler
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        for shape in [(4097, 1), (100, 50), (64, 128), (2, 4096)]:  # 4097 .. 8192 values: one bucket
            jax.block_until_ready(init(jax.random.key(1), shape))
    compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    assert compiled == []
    assert [initializers.bucket(n) for n in (1, 64, 65, 4097, 8192)] == [64, 64, 128, 8192, 8192]


def test_unsupported_modes_are_refused_and_1d_shapes_fall_back_to_jax():
    with pytest.raises(ValueError, match="unsupported variance scaling 'fan_geo_avg'"):
        initializers.variance_scaling(1.0, "fan_geo_avg", "normal")
    init = initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0)
    expected = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0)(jax.random.key(2), (7,))
    np.testing.assert_array_equal(np.asarray(init(jax.random.key(2), (7,))), np.asarray(expected))
    assert initializers.zeros(None, (2, 3)).dtype == jnp.float32 and not np.any(initializers.zeros(None, (2, 3)))

    def outcome(init):  # an empty shape is JAX's own business: a (0, 4) array, or (JAX 0.10) an error
        try:
            return init(jax.random.key(0), (0, 4)).shape
        except ZeroDivisionError:
            return "ZeroDivisionError"

    assert outcome(initializers.lecun_normal()) == outcome(jax.nn.initializers.lecun_normal())
