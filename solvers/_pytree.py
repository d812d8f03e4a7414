"""Batched pytrees viewed as a (B, D) matrix: one row of D numbers per sample.

The solvers work on this flat view so that norms, Anderson mixing and freezing
are per-sample row operations, whatever the structure of the user's state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchedRavel:
    """Maps a batched pytree to a (B, D) matrix and back.

    Every leaf is moved so that its batch axis comes first, reshaped to (B, -1)
    and concatenated along axis 1 in the leaves' common dtype. With
    ``batch_axis=None`` the whole pytree is one problem (B = 1).
    """

    treedef: Any
    shapes: tuple  # leaf shapes with the batch axis moved to the front
    dtypes: tuple
    sizes: tuple  # per-sample sizes of the leaves
    batch_axes: tuple  # normalized batch axis of each leaf, or None
    batch_size: int
    dtype: Any

    @classmethod
    def from_tree(cls, tree, batch_axis, name: str = "z0") -> BatchedRavel:
        leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
        if not leaves_with_path:
            raise ValueError(f"{name} has no array leaves; pass at least one floating-point array.")
        shapes, dtypes, sizes, axes, batch_sizes = [], [], [], [], []
        for path, leaf in leaves_with_path:
            where = name + jax.tree_util.keystr(path)
            if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
                raise TypeError(
                    f"{where} is a {type(leaf).__name__}, not an array; "
                    "every leaf of the state must be a JAX or NumPy array."
                )
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                raise TypeError(
                    f"{where} has dtype {leaf.dtype}; the state must be floating point "
                    "(cast it, e.g. z0.astype(jnp.float32))."
                )
            shape = tuple(leaf.shape)
            if batch_axis is None:
                axes.append(None)
                shapes.append(shape)
                sizes.append(int(np.prod(shape, dtype=np.int64)))
            else:
                if len(shape) == 0 or not -len(shape) <= batch_axis < len(shape):
                    raise ValueError(
                        f"{where} has shape {shape}, which has no batch axis {batch_axis}; "
                        "give every leaf a batch axis, or pass batch_axis=None to "
                        "treat the whole state as one problem."
                    )
                axis = batch_axis % len(shape)
                moved = (shape[axis],) + shape[:axis] + shape[axis + 1 :]
                axes.append(axis)
                shapes.append(moved)
                sizes.append(int(np.prod(moved[1:], dtype=np.int64)))
                batch_sizes.append((where, shape[axis]))
            dtypes.append(leaf.dtype)
        if batch_sizes and len({b for _, b in batch_sizes}) > 1:
            listing = ", ".join(f"{w}: {b}" for w, b in batch_sizes)
            raise ValueError(
                f"the leaves of {name} disagree on the batch size along axis "
                f"{batch_axis} ({listing}); every leaf needs the same batch size."
            )
        batch_size = batch_sizes[0][1] if batch_sizes else 1
        return cls(
            treedef, tuple(shapes), tuple(dtypes), tuple(sizes), tuple(axes), batch_size, jnp.result_type(*dtypes)
        )

    @property
    def batched(self) -> bool:
        return self.batch_axes[0] is not None

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def ravel(self, tree) -> jax.Array:
        """Pytree with the stored layout -> (B, D) array."""
        leaves = self.treedef.flatten_up_to(tree)
        rows = []
        for leaf, axis, size in zip(leaves, self.batch_axes, self.sizes):
            leaf = jnp.asarray(leaf)
            if axis is None:
                rows.append(leaf.reshape(1, size).astype(self.dtype))
            else:  # explicit sizes: reshape(0, -1) of an empty batch is ambiguous
                rows.append(jnp.moveaxis(leaf, axis, 0).reshape(self.batch_size, size).astype(self.dtype))
        return rows[0] if len(rows) == 1 else jnp.concatenate(rows, axis=1)

    def unravel(self, mat: jax.Array):
        """(B, D) array -> pytree with the stored layout, shapes and dtypes."""
        leaves, start = [], 0
        for shape, dtype, size, axis in zip(self.shapes, self.dtypes, self.sizes, self.batch_axes):
            block = mat[:, start : start + size]
            start += size
            leaf = block.reshape(shape).astype(dtype)
            if axis is not None:
                leaf = jnp.moveaxis(leaf, 0, axis)
            leaves.append(leaf)
        return self.treedef.unflatten(leaves)

    def per_sample(self, x: jax.Array) -> jax.Array:
        """(B,) per-sample values -> (B,) when batched, scalar () otherwise."""
        return x if self.batched else x[0]
