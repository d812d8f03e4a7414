"""Bad input to the solvers raises ValueError / TypeError at call time, with a message naming the problem."""

import jax
import jax.numpy as jnp
import pytest

import solvers


def f(z, x):
    return 0.5 * z + x


Z = jnp.zeros((3, 2))
X = jnp.ones((3, 2))


@pytest.mark.parametrize(
    "kwargs,exc,fragment",
    [
        ({"method": "newton"}, ValueError, "'anderson', 'picard'"),
        ({"stop": "max"}, ValueError, "'rel', 'abs'"),
        ({"grad": "adjoint"}, ValueError, "'ift', 'phantom', 'unroll'"),
        ({"tol": 0.0}, ValueError, "tol must be > 0"),
        ({"tol": -1e-3}, ValueError, "tol must be > 0"),
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        ({"max_iter": 2.5}, TypeError, "max_iter must be an integer"),
        ({"memory": 0}, ValueError, "memory must be >= 1"),
        ({"damping": 0.0}, ValueError, "damping must be > 0"),
        ({"damping": 1.5}, ValueError, "damping"),
        ({"ridge": -1.0}, ValueError, "ridge must be >= 0"),
        ({"grad_max_iter": 0}, ValueError, "grad_max_iter must be >= 1"),
        ({"grad_tol": 0.0}, ValueError, "grad_tol must be > 0"),
        ({"grad_fallback": "unroll"}, ValueError, "grad_fallback='unroll' is not supported"),
        ({"phantom_steps": 0}, ValueError, "phantom_steps must be >= 1"),
        ({"record": "yes"}, TypeError, "record must be True or False"),
        ({"batch_axis": "0"}, TypeError, "batch_axis must be an int or None"),
        ({"max_iters": 10}, TypeError, "'max_iters' (did you mean 'max_iter'?)"),
        ({"tolerance": 1e-3}, TypeError, "unknown keyword argument"),
    ],
)
def test_bad_options(kwargs, exc, fragment):
    with pytest.raises(exc) as err:
        solvers.fixed_point(f, Z, X, **kwargs)
    assert fragment in str(err.value)


def test_traced_tol_is_rejected_with_explanation():
    with pytest.raises(TypeError, match="tol must be a Python number"):
        jax.jit(lambda t: solvers.fixed_point(f, Z, X, tol=t)[0])(1e-3)


def test_output_structure_mismatch_names_both_structures():
    with pytest.raises(TypeError, match="structure of z0"):
        solvers.fixed_point(lambda z, x: {"a": z}, Z, X)


def test_output_shape_mismatch_names_the_leaf():
    z0 = {"h": jnp.zeros((3, 2)), "c": jnp.zeros((3, 4))}
    with pytest.raises(ValueError, match=r"z0\['c'\].*\(3, 4\).*\(3, 2\)"):
        solvers.fixed_point(lambda z: {"h": z["h"], "c": z["c"][:, :2]}, z0)


def test_output_dtype_mismatch_names_the_leaf():
    with pytest.raises(TypeError, match=r"dtype of leaf z0.*float32.*float16"):
        solvers.fixed_point(lambda z: z.astype(jnp.float16), jnp.zeros((3, 2), jnp.float32))


def test_disagreeing_batch_sizes_are_listed():
    z0 = {"a": jnp.zeros((3, 2)), "b": jnp.zeros((4, 2))}
    with pytest.raises(ValueError, match=r"disagree on the batch size.*z0\['a'\]: 3.*z0\['b'\]: 4"):
        solvers.fixed_point(lambda z: z, z0)


def test_leaf_without_batch_axis():
    with pytest.raises(ValueError, match="no batch axis"):
        solvers.fixed_point(lambda z: z, {"a": jnp.zeros((3,)), "s": jnp.zeros(())})


def test_integer_state_is_rejected():
    with pytest.raises(TypeError, match="floating point"):
        solvers.fixed_point(lambda z: z, jnp.zeros((3, 2), jnp.int32))


def test_empty_state_and_non_callable():
    with pytest.raises(ValueError, match="no array leaves"):
        solvers.fixed_point(lambda z: z, {})
    with pytest.raises(TypeError, match="callable"):
        solvers.fixed_point("f", Z)


def test_iterate_and_diagnostics_validate_too():
    with pytest.raises(TypeError, match="'step' \\(did you mean 'steps'\\?\\)"):
        solvers.iterate(f, Z, X, steps=3, step=4)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        solvers.iterate(f, Z, X, steps=-1)
    with pytest.raises(TypeError, match="max_iter"):
        solvers.iterate(f, Z, X, steps=3, max_iter=4)
    with pytest.raises(ValueError, match="iters must be >= 2"):
        solvers.spectral_radius(f, Z, X, iters=1)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        solvers.jacobian_frobenius(f, Z, X, key=jax.random.PRNGKey(0), samples=0)
    with pytest.raises(ValueError, match=r"shape \(P,\) \+ x.shape"):
        solvers.empirical_lipschitz(lambda x: x, Z, jnp.zeros((4, 3, 3)))
