"""The parameter count of a Flax NNX module: the one counter every report uses."""

from __future__ import annotations

import jax
from flax import nnx


def count_params(module: nnx.Module) -> int:
    """Number of scalars in the module's ``nnx.Param`` variables (buffers and statistics excluded)."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(nnx.state(module, nnx.Param))))
