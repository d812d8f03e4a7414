"""jax_compat: probing a tracer's ``sharding`` / ``device`` does not walk the trace (any JAX release)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax._src import core
from jax._src.interpreters import partial_eval as pe

import implicit_rec  # noqa: F401  (importing the package applies the backport)
from implicit_rec import jax_compat


@pytest.fixture
def origin_walks(monkeypatch):
    """Counts calls of the trace walk that made the probes quadratic."""
    calls = []
    walk = pe.DynamicJaxprTracer._origin_msg

    def counted(self):
        calls.append(1)
        return walk(self)

    monkeypatch.setattr(pe.DynamicJaxprTracer, "_origin_msg", counted)
    return calls


@pytest.mark.parametrize("name", jax_compat.PROBED)
def test_probing_a_tracer_does_not_walk_the_trace(origin_walks, name):
    seen = {}

    @jax.jit
    def f(x):
        y = jnp.sin(x) * 2 + 1
        seen["getattr"] = getattr(y, name, "absent")
        seen["hasattr"] = hasattr(y, name)
        with pytest.raises(AttributeError, match=name):
            getattr(y, name)
        return y

    f(jnp.ones(3))
    assert seen == {"getattr": "absent", "hasattr": False}
    assert origin_walks == []


def test_nnx_parameter_creation_under_eval_shape_does_not_walk_the_trace(origin_walks):
    """Flax NNX probes ``value.sharding`` on every Variable assignment (the quadratic case)."""
    model = nnx.eval_shape(lambda: nnx.Sequential(*(nnx.Linear(4, 4, rngs=nnx.Rngs(0)) for _ in range(3))))
    assert [tuple(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param))] == [(4,), (4, 4)] * 3
    assert origin_walks == []


def test_backport_is_idempotent_and_leaves_no_quadratic_property():
    assert jax_compat.backport() == ()  # the package import already replaced what needed it
    assert not any(jax_compat._quadratic(name) for name in jax_compat.PROBED)


def test_detection_reads_the_property_code(monkeypatch):
    class Quadratic:
        @property
        def sharding(self):
            raise AttributeError(f"unavailable{self._origin_msg()}")

        @property
        def device(self):
            raise AttributeError("unavailable")

    monkeypatch.setattr(core, "Tracer", Quadratic)
    assert jax_compat._quadratic("sharding") and not jax_compat._quadratic("device")
    assert jax_compat.backport() == ("sharding",)
    assert not jax_compat._quadratic("sharding")
    with pytest.raises(AttributeError, match="The 'sharding' attribute is not available on"):
        Quadratic.sharding.fget(type("T", (), {"_error_repr": lambda self: "a tracer"})())
