"""Test configuration.

Precision: JAX runs in its production default (x64 off, float32) unless a test asks otherwise:
  * ``@pytest.mark.x64`` (or ``pytestmark = pytest.mark.x64`` in a module) turns float64 on for
    that test, for checks that need tight tolerances (finite differences, exact consensus);
  * the ``precision`` fixture runs a test twice, once per dtype, with x64 switched to match, so
    the solver and layer tests exercise the float32 path users run as well as float64.

Lanes: ``@pytest.mark.slow`` marks tests that spawn processes, train FMs or run whole tiny pipelines.
``make test`` deselects them (``-m "not slow"``); ``make test-all`` runs everything.
"""

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py


def _set_x64(enabled: bool) -> bool:
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", enabled)
    return previous


@pytest.fixture(autouse=True)
def _x64_mode(request):
    """x64 on for tests marked ``x64`` (the ``precision`` fixture overrides per parameter)."""
    previous = _set_x64(request.node.get_closest_marker("x64") is not None)
    yield
    _set_x64(previous)


@pytest.fixture(params=["float32", "float64"])
def precision(request, _x64_mode):
    """The dtype under test; x64 is on exactly when it is float64."""
    _set_x64(request.param == "float64")
    return jnp.dtype(request.param)
