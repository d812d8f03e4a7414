"""Test configuration: float64 is enabled so gradient checks can be tight; float32 cases pass dtypes explicitly."""

import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py
jax.config.update("jax_enable_x64", True)
